//! `spoke`: the command line for a Spoke hub, with kubectl's verbs and habits.

mod apply;
mod config;
mod create;
mod describe;
mod drain;
mod edit;
mod get;
mod jsonpath;
mod manifest;
mod progress;
mod rollout;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use spoke_api::resource::ResourceType;
use spoke_client::Client;
use spoke_client::kubeconfig::{self, KubeConfig};

/// spoke controls a fleet of edge boards running Wasm pods, through a spoke-hub.
///
/// It finds the hub from --server, $SPOKE_SERVER, or the config file that
/// spoke-hub writes ($SPOKE_CONFIG or ~/.spoke/config).
#[derive(Parser)]
#[command(name = "spoke", version)]
struct Cli {
    /// Address of the hub's API (overrides the config file).
    #[arg(long, global = true, env = "SPOKE_SERVER")]
    server: Option<String>,
    /// Bearer token for the hub.
    #[arg(long, global = true, env = "SPOKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Config file (kubeconfig-shaped).
    #[arg(long, global = true, env = "SPOKE_CONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// PEM file of the CA that signed the hub's certificate (overrides the
    /// config file's).
    #[arg(long, global = true, value_name = "FILE")]
    certificate_authority: Option<PathBuf>,
    /// Do not verify the hub's certificate (for experiments only).
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    /// Namespace (default: the context's, else "default").
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a Wasm module to the hub's module store and tag it.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Reference to give it, such as hello:v1.
        reference: String,
        /// Print only the digest, and no progress bar.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create or update objects from manifest files (YAML or JSON; several
    /// documents per file; a directory; or - for standard input).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// List or show objects, as kubectl does.
    Get(get::Args),
    /// Print a pod's log (read from its board through the hub).
    Logs {
        pod: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
        /// Keep printing new lines until the pod finishes or is deleted.
        #[arg(short, long)]
        follow: bool,
        /// Only lines newer than this, such as 30s, 5m or 1h30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_since, conflicts_with = "since_time")]
        since: Option<u64>,
        /// Only lines written at or after this RFC 3339 time
        /// (2026-01-02T15:04:05Z).
        #[arg(long, value_name = "TIME")]
        since_time: Option<String>,
        /// The log of the previous instance of the container (before its
        /// last restart).
        #[arg(short, long)]
        previous: bool,
        /// The container whose previous instance --previous shows (default:
        /// the pod's first). A pod's containers share one log, so without
        /// --previous every container's lines are shown.
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Delete objects by kind and name, or those in manifest files.
    Delete {
        /// Kind and names: `pod hello`, or `pod/hello`.
        args: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Seconds the pod is given to stop; 0 removes it at once.
        #[arg(long)]
        grace_period: Option<i64>,
        /// Do not wait for pods to stop on their board.
        #[arg(long)]
        wait: Option<bool>,
        /// Delete the objects of KIND that match this label selector.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Delete every object of KIND in the namespace.
        #[arg(long)]
        all: bool,
    },
    /// Show objects in detail, with their recent events.
    Describe {
        /// KIND [NAME...] or KIND/NAME.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Create objects from manifest files (an existing one is an error), or
    /// a Deployment from a module.
    #[command(args_conflicts_with_subcommands = true)]
    Create {
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        #[command(subcommand)]
        what: Option<create::What>,
    },
    /// Set the replicas of a Deployment or ReplicaSet.
    Scale {
        /// KIND/NAME or KIND NAME.
        #[arg(required = true)]
        target: Vec<String>,
        #[arg(long)]
        replicas: i64,
    },
    /// Change a field of an object.
    Set {
        #[command(subcommand)]
        what: SetCommand,
    },
    /// Add (KEY=VALUE) or remove (KEY-) labels of an object.
    Label {
        /// KIND/NAME or KIND NAME, then KEY=VALUE or KEY-.
        #[arg(required = true)]
        args: Vec<String>,
        /// Allow changing a label that has a value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Add (KEY=VALUE) or remove (KEY-) annotations of an object.
    Annotate {
        /// KIND/NAME or KIND NAME, then KEY=VALUE or KEY-.
        #[arg(required = true)]
        args: Vec<String>,
        /// Allow changing an annotation that has a value.
        #[arg(long)]
        overwrite: bool,
    },
    /// Follow, list, undo, restart, pause or resume Deployment rollouts.
    Rollout {
        #[command(subcommand)]
        command: rollout::Command,
    },
    /// Read the config file, or switch its current context.
    Config {
        #[command(subcommand)]
        command: config::Command,
    },
    /// Print a shell completion script: `source <(spoke completion bash)`.
    Completion { shell: clap_complete::Shell },
    /// Print the CLI's and the hub's versions.
    Version,
    /// Print where the hub is.
    ClusterInfo,
    /// Create, list and revoke bearer tokens (cluster admins only).
    Token {
        #[command(subcommand)]
        command: token::Command,
    },
    #[command(flatten)]
    Node(drain::Command),
}

#[derive(Subcommand)]
enum SetCommand {
    /// Set container modules: `spoke set image deploy/web web=hello:v2`.
    Image {
        /// KIND/NAME or KIND NAME, then CONTAINER=MODULE ... (`*` for all).
        #[arg(required = true)]
        args: Vec<String>,
    },
}

/// Connection settings resolved from flags, environment and config file.
struct Ctx {
    client: Client,
    namespace: String,
}

fn connect(cli: &Cli) -> anyhow::Result<Ctx> {
    let from_file = match (
        &cli.server,
        cli.kubeconfig.clone().or_else(kubeconfig::default_path),
    ) {
        (Some(_), _) | (None, None) => None,
        (None, Some(path)) if !path.exists() && cli.kubeconfig.is_none() => {
            return Err(anyhow!(
                "no hub configured: start spoke-hub (it writes {}), or pass --server URL",
                path.display()
            ));
        }
        (None, Some(path)) => {
            let cfg = KubeConfig::load(&path).map_err(|e| anyhow!(e))?;
            Some(cfg.target(cli.context.as_deref()).map_err(|e| anyhow!(e))?)
        }
    };
    let server = cli
        .server
        .clone()
        .or_else(|| from_file.as_ref().map(|t| t.server.clone()))
        .ok_or_else(|| anyhow!("no hub configured: pass --server URL"))?;
    let token = cli
        .token
        .clone()
        .or_else(|| from_file.as_ref().and_then(|t| t.token.clone()));
    let namespace = cli
        .namespace
        .clone()
        .or_else(|| from_file.as_ref().and_then(|t| t.namespace.clone()))
        .unwrap_or_else(|| "default".to_string());
    let mut tls = from_file.map(|t| t.tls).unwrap_or_default();
    if let Some(file) = &cli.certificate_authority {
        tls.ca_pem =
            Some(std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?);
    }
    tls.insecure_skip_verify |= cli.insecure_skip_tls_verify;
    Ok(Ctx {
        client: Client::with_tls(&server, token, &tls)?,
        namespace,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "spoke", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Config { command } => {
            config::run(cli.kubeconfig.clone(), cli.context.as_deref(), command)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Command::Version = cli.command {
        println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
        if let Ok(ctx) = connect(&cli)
            && let Ok(v) = ctx.client.get::<serde_json::Value>("/version").await
        {
            println!(
                "Server Version: {}",
                v["gitVersion"].as_str().unwrap_or("unknown")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let ctx = connect(&cli)?;
    match cli.command {
        Command::Version | Command::Completion { .. } | Command::Config { .. } => {
            unreachable!("handled above")
        }
        Command::Describe { args } => describe::run(&ctx.client, &ctx.namespace, &args).await?,
        Command::Create { files, what } => match what {
            Some(what) => create::run(&ctx.client, &ctx.namespace, what).await?,
            None if files.is_empty() => {
                return Err(anyhow!(
                    "say what to create: spoke create -f FILE, or spoke create deployment NAME --image=MODULE"
                ));
            }
            None => return create::from_files(&ctx.client, &ctx.namespace, &files).await,
        },
        Command::Scale { target, replicas } => {
            edit::scale(&ctx.client, &ctx.namespace, &target, replicas).await?
        }
        Command::Set {
            what: SetCommand::Image { args },
        } => edit::set_image(&ctx.client, &ctx.namespace, &args).await?,
        Command::Label { args, overwrite } => {
            edit::metadata(
                &ctx.client,
                &ctx.namespace,
                &args,
                edit::Meta::Labels,
                overwrite,
            )
            .await?
        }
        Command::Annotate { args, overwrite } => {
            edit::metadata(
                &ctx.client,
                &ctx.namespace,
                &args,
                edit::Meta::Annotations,
                overwrite,
            )
            .await?
        }
        Command::Rollout { command } => {
            return rollout::run(&ctx.client, &ctx.namespace, command).await;
        }
        Command::ClusterInfo => {
            ctx.client.get::<serde_json::Value>("/version").await?;
            println!("Spoke hub is running at {}", ctx.client.server());
        }
        Command::Push {
            file,
            reference,
            quiet,
        } => {
            use std::io::IsTerminal as _;
            let size = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            // Streamed from disk, so the bar shows what really left.
            let bar = std::sync::Arc::new(progress::Bar::new(
                &reference,
                size,
                !quiet && std::io::stderr().is_terminal(),
            ));
            let sent = bar.clone();
            let info = ctx
                .client
                .push_module_file(&file, Some(&reference), move |n| sent.update(n))
                .await;
            bar.finish();
            let info = info?;
            if quiet {
                println!("{}", info.digest);
            } else {
                println!("{reference} pushed: {} ({size} bytes)", info.digest);
            }
        }
        Command::Apply { files } => return apply::apply(&ctx.client, &ctx.namespace, &files).await,
        Command::Node(command) => return drain::run(&ctx.client, command).await,
        Command::Token { command } => {
            token::run(&ctx.client, command, cli.namespace.as_deref()).await?
        }
        Command::Get(args) => get::run(&ctx.client, &ctx.namespace, args).await?,
        Command::Logs {
            pod,
            tail,
            follow,
            since,
            since_time,
            previous,
            container,
        } => {
            let options = spoke_client::LogOptions {
                tail_lines: tail,
                since_seconds: since,
                since_time,
                previous,
                container,
            };
            let pods = lookup("pods")?;
            let missing = |e: spoke_client::Error| match e.code() {
                Some(404) => anyhow!(not_found(pods, Some(&ctx.namespace), &pod)),
                _ => e.into(),
            };
            if follow {
                use std::io::Write as _;
                let mut log = ctx
                    .client
                    .follow_pod_logs(&ctx.namespace, &pod, &options)
                    .await
                    .map_err(missing)?;
                while let Some(text) = log.next().await {
                    print!("{}", text?);
                    std::io::stdout().flush()?;
                }
            } else {
                let text = ctx
                    .client
                    .pod_logs(&ctx.namespace, &pod, &options)
                    .await
                    .map_err(missing)?;
                print!("{text}");
            }
        }
        Command::Delete {
            args,
            files,
            grace_period,
            wait,
            selector,
            all,
        } => {
            let mut targets = Vec::new();
            if let ([kind], true) = (args.as_slice(), selector.is_some() || all) {
                for kind in kind.split(',').filter(|k| !k.is_empty()) {
                    let rt = lookup(kind)?;
                    let ns = rt.namespaced.then_some(ctx.namespace.as_str());
                    let mut path = rt.collection_path(ns);
                    if let Some(sel) = &selector {
                        path.push_str(&format!("?labelSelector={}", get::encode(sel)));
                    }
                    let list: serde_json::Value = ctx.client.get(&path).await?;
                    for item in list["items"].as_array().into_iter().flatten() {
                        let name = item["metadata"]["name"].as_str().unwrap_or("");
                        targets.push((rt, ctx.namespace.clone(), name.to_string()));
                    }
                }
                if targets.is_empty() {
                    eprintln!("No resources found");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            for doc in manifest::read_all(&files)? {
                let doc = doc.map_err(|e| anyhow!(e))?;
                targets.push((doc.rt, doc.namespace(&ctx.namespace), doc.name()));
            }
            match args.as_slice() {
                [] => {}
                [_] if selector.is_some() || all => {}
                [one] if one.contains('/') => {
                    let (kind, name) = one.split_once('/').expect("checked");
                    let rt = lookup(kind)?;
                    targets.push((rt, ctx.namespace.clone(), name.to_string()));
                }
                [kind, names @ ..] if !names.is_empty() => {
                    let rt = lookup(kind)?;
                    for n in names {
                        targets.push((rt, ctx.namespace.clone(), n.clone()));
                    }
                }
                _ => {
                    return Err(anyhow!(
                        "say what to delete: spoke delete pod NAME, or -f FILE"
                    ));
                }
            }
            if targets.is_empty() {
                return Err(anyhow!(
                    "say what to delete: spoke delete pod NAME, or -f FILE"
                ));
            }
            let mut failed = false;
            for (rt, ns, name) in targets {
                let ns = rt.namespaced.then_some(ns.as_str());
                match ctx
                    .client
                    .delete(&rt.object_path(ns, &name), grace_period)
                    .await
                {
                    Ok(_) => {
                        println!("{} deleted", quoted(rt, &name));
                        if wait.unwrap_or(true) {
                            wait_gone(&ctx.client, rt, ns, &name).await?;
                        }
                    }
                    Err(e) => {
                        let e = match e.code() {
                            Some(404) => anyhow!(not_found(rt, ns, &name)),
                            _ => e.into(),
                        };
                        eprintln!("{}", report(&e));
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a duration (`30s`, `5m`, `1h30m`) as whole seconds, rounded
/// up as kubectl does; at least one second.
fn parse_since(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (use a duration such as 30s, 5m or 1h30m)"))?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

fn lookup(kind: &str) -> anyhow::Result<&'static ResourceType> {
    ResourceType::lookup(kind).ok_or_else(|| {
        let known: Vec<&str> = spoke_api::resource::RESOURCES
            .iter()
            .map(|r| r.plural)
            .collect();
        anyhow!(
            "the server doesn't have a resource type \"{kind}\" (known: {})",
            known.join(", ")
        )
    })
}

/// What the hub refused, printed as kubectl prints it:
/// `Error from server (NotFound): pods "x" not found in namespace "y"`.
#[derive(Debug)]
pub(crate) struct FromServer {
    reason: String,
    message: String,
}

impl std::fmt::Display for FromServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error from server ({}): {}", self.reason, self.message)
    }
}

impl std::error::Error for FromServer {}

/// The line printed for an error: kubectl's `Error from server (REASON):`
/// for what the hub refused, `error: ...` (with its causes) for the rest,
/// such as an unreachable hub or a bad flag.
fn report(e: &anyhow::Error) -> String {
    if e.chain().count() == 1 {
        if let Some(s) = e.downcast_ref::<FromServer>() {
            return s.to_string();
        }
        if let Some(spoke_client::Error::Api(status)) = e.downcast_ref::<spoke_client::Error>()
            && !status.reason.is_empty()
        {
            return format!("Error from server ({}): {status}", status.reason);
        }
    }
    format!("error: {e:#}")
}

/// kubectl's wording for a missing object: `pods "x" not found in namespace "y"`.
pub(crate) fn not_found(rt: &ResourceType, ns: Option<&str>, name: &str) -> FromServer {
    let message = match ns.filter(|_| rt.namespaced) {
        Some(ns) => format!("{} \"{name}\" not found in namespace \"{ns}\"", rt.plural),
        None => format!("{} \"{name}\" not found", rt.plural),
    };
    FromServer {
        reason: "NotFound".into(),
        message,
    }
}

/// `deployment.apps "web"`, as kubectl names an object in what it did.
fn quoted(rt: &ResourceType, name: &str) -> String {
    if rt.group.is_empty() {
        format!("{} \"{name}\"", rt.singular)
    } else {
        format!("{}.{} \"{name}\"", rt.singular, rt.group)
    }
}

/// Waits (as kubectl does) until a deleted object is really gone: for a pod
/// on a board, until its agent has stopped it.
async fn wait_gone(
    client: &Client,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match client
            .get::<serde_json::Value>(&rt.object_path(ns, name))
            .await
        {
            Err(e) if e.code() == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) if tokio::time::Instant::now() > deadline => {
                return Err(anyhow!(
                    "timed out waiting for {}/{name} to stop on its node (is the node connected?)",
                    rt.singular
                ));
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_kubectl_durations_as_whole_seconds() {
        assert_eq!(parse_since("30s"), Ok(30));
        assert_eq!(parse_since("5m"), Ok(300));
        assert_eq!(parse_since("1h30m"), Ok(5400));
        assert_eq!(parse_since("1500ms"), Ok(2));
        assert!(parse_since("0s").unwrap_err().contains("greater than 0"));
        assert!(
            parse_since("soon")
                .unwrap_err()
                .contains("30s, 5m or 1h30m")
        );
    }
}
