//! `spoke config view|current-context|get-contexts|use-context`: the
//! kubeconfig-shaped file, read and edited as YAML so that keys this CLI
//! does not know (written by kubectl, say) survive an edit.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use serde_yaml::Value;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print the config file (tokens and keys shown as REDACTED unless --raw).
    View {
        #[arg(long)]
        raw: bool,
        /// Only what the current (or --context) context uses.
        #[arg(long)]
        minify: bool,
    },
    /// Print the name of the current context.
    CurrentContext,
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Make NAME the current context.
    UseContext { name: String },
}

fn load(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid config file", path.display()))
}

fn named<'a>(config: &'a Value, list: &str) -> Vec<&'a Value> {
    config[list].as_sequence().into_iter().flatten().collect()
}

fn context_names(config: &Value) -> Vec<String> {
    named(config, "contexts")
        .into_iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

pub fn run(path: Option<PathBuf>, context: Option<&str>, command: Command) -> anyhow::Result<()> {
    let path = path
        .or_else(spoke_client::kubeconfig::default_path)
        .ok_or_else(|| anyhow!("no config file: pass --kubeconfig FILE or set SPOKE_CONFIG"))?;
    let mut config = load(&path)?;
    let current = context
        .map(String::from)
        .or_else(|| config["current-context"].as_str().map(String::from));
    match command {
        Command::View { raw, minify } => {
            if minify {
                let name = current.ok_or_else(|| anyhow!("current-context is not set"))?;
                config = minified(&config, &name)?;
            }
            if !raw {
                redact(&mut config);
            }
            print!("{}", serde_yaml::to_string(&config)?);
        }
        Command::CurrentContext => {
            println!(
                "{}",
                current.ok_or_else(|| anyhow!("current-context is not set"))?
            );
        }
        Command::GetContexts => {
            let mut rows = vec![
                ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for c in named(&config, "contexts") {
                let name = c["name"].as_str().unwrap_or("");
                let ctx = &c["context"];
                let s = |k: &str| ctx[k].as_str().unwrap_or("").to_string();
                let mark = if current.as_deref() == Some(name) {
                    "*"
                } else {
                    ""
                };
                rows.push(vec![
                    mark.into(),
                    name.into(),
                    s("cluster"),
                    s("user"),
                    s("namespace"),
                ]);
            }
            print!("{}", crate::get::align(&rows));
        }
        Command::UseContext { name } => {
            let names = context_names(&config);
            if !names.contains(&name) {
                return Err(anyhow!(
                    "no context exists with the name \"{name}\" (contexts: {})",
                    names.join(", ")
                ));
            }
            config["current-context"] = Value::String(name.clone());
            std::fs::write(&path, serde_yaml::to_string(&config)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("Switched to context \"{name}\".");
        }
    }
    Ok(())
}

/// Only the context `name`, its cluster and its user.
fn minified(config: &Value, name: &str) -> anyhow::Result<Value> {
    let ctx = named(config, "contexts")
        .into_iter()
        .find(|c| c["name"].as_str() == Some(name))
        .ok_or_else(|| anyhow!("context \"{name}\" not found in the config file"))?
        .clone();
    let keep = |list: &str, want: &Value| -> Value {
        Value::Sequence(
            named(config, list)
                .into_iter()
                .filter(|x| &x["name"] == want)
                .cloned()
                .collect(),
        )
    };
    let mut out = config.clone();
    out["clusters"] = keep("clusters", &ctx["context"]["cluster"]);
    out["users"] = keep("users", &ctx["context"]["user"]);
    out["contexts"] = Value::Sequence(vec![ctx]);
    out["current-context"] = Value::String(name.to_string());
    Ok(out)
}

/// Hides secrets as kubectl does: tokens and keys become `REDACTED`, CA
/// data `DATA+OMITTED`.
fn redact(config: &mut Value) {
    if let Some(users) = config["users"].as_sequence_mut() {
        for u in users {
            if let Some(m) = u["user"].as_mapping_mut() {
                for key in ["token", "client-key-data", "password"] {
                    if m.contains_key(key) {
                        m.insert(key.into(), "REDACTED".into());
                    }
                }
                if m.contains_key("client-certificate-data") {
                    m.insert("client-certificate-data".into(), "DATA+OMITTED".into());
                }
            }
        }
    }
    if let Some(clusters) = config["clusters"].as_sequence_mut() {
        for c in clusters {
            if let Some(m) = c["cluster"].as_mapping_mut()
                && m.contains_key("certificate-authority-data")
            {
                m.insert("certificate-authority-data".into(), "DATA+OMITTED".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: v1
kind: Config
current-context: a
clusters:
- name: ca
  cluster: {server: 'https://a:6443', certificate-authority-data: QUJD}
- name: cb
  cluster: {server: 'https://b:6443'}
contexts:
- name: a
  context: {cluster: ca, user: ua}
- name: b
  context: {cluster: cb, user: ub, namespace: edge}
users:
- name: ua
  user: {token: secret-a}
- name: ub
  user: {token: secret-b}
";

    #[test]
    fn view_hides_secrets_and_minify_keeps_one_context() {
        let mut c: Value = serde_yaml::from_str(CONFIG).unwrap();
        let mut m = minified(&c, "b").unwrap();
        assert_eq!(context_names(&m), ["b"]);
        assert_eq!(m["clusters"][0]["name"].as_str(), Some("cb"));
        assert_eq!(m["users"][0]["user"]["token"].as_str(), Some("secret-b"));
        redact(&mut m);
        assert_eq!(m["users"][0]["user"]["token"].as_str(), Some("REDACTED"));
        redact(&mut c);
        let text = serde_yaml::to_string(&c).unwrap();
        assert!(
            !text.contains("secret-a") && text.contains("DATA+OMITTED"),
            "{text}"
        );
        assert!(minified(&c, "nope").is_err());
    }
}
