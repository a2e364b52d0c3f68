//! `spoke rollout status|history|undo|restart|pause|resume` for
//! Deployments, as kubectl does them: status follows the Deployment's
//! status until the rollout is complete (exit 1 when it stalls past its
//! progress deadline or the timeout); undo writes an older ReplicaSet's
//! template back; restart stamps the template so that every pod is
//! replaced.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};
use spoke_api::resource::ResourceType;
use spoke_client::Client;

use crate::get::qualified;

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

#[derive(clap::Subcommand)]
pub enum Command {
    /// Follow a rollout until it completes; exit 1 if it stalls.
    Status {
        /// deployment/NAME (or `deployment NAME`).
        target: Vec<String>,
        /// Give up after this long (such as 90s or 5m); 0 waits forever.
        #[arg(long, default_value = "0s")]
        timeout: String,
        /// Print the current state once instead of following it.
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
    },
    /// List the revisions of a Deployment.
    History { target: Vec<String> },
    /// Roll back to the previous revision (or --to-revision).
    Undo {
        target: Vec<String>,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Replace every pod of a Deployment, one step at a time.
    Restart { target: Vec<String> },
    /// Hold a Deployment's rollouts (scaling still happens).
    Pause { target: Vec<String> },
    /// Let a paused Deployment roll out again.
    Resume { target: Vec<String> },
}

/// `deployment/web` or `deployment web` → the Deployment's path and name.
fn deployment(target: &[String]) -> anyhow::Result<(&'static ResourceType, String)> {
    let (kind, name) = match target {
        [one] if one.contains('/') => one.split_once('/').expect("checked"),
        [kind, name] => (kind.as_str(), name.as_str()),
        _ => return Err(anyhow!("say which Deployment: deployment/NAME")),
    };
    let rt = crate::lookup(kind)?;
    if rt.kind != "Deployment" {
        return Err(anyhow!(
            "rollout is supported for deployments only, not {}",
            rt.plural
        ));
    }
    Ok((rt, name.to_string()))
}

async fn read(client: &Client, rt: &ResourceType, ns: &str, name: &str) -> anyhow::Result<Value> {
    client
        .get(&rt.object_path(Some(ns), name))
        .await
        .map_err(|e| match e.code() {
            Some(404) => anyhow!(crate::not_found(rt, Some(ns), name)),
            _ => e.into(),
        })
}

pub async fn run(client: &Client, ns: &str, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Status {
            target,
            timeout,
            watch,
        } => {
            let (rt, name) = deployment(&target)?;
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| anyhow!("--timeout {timeout}: {e} (write it as 90s or 5m)"))?;
            status(client, rt, ns, &name, timeout, watch).await
        }
        Command::History { target } => {
            let (rt, name) = deployment(&target)?;
            let d = read(client, rt, ns, &name).await?;
            let mut revisions: Vec<(i64, String)> = owned_replicasets(client, ns, &d)
                .await?
                .iter()
                .map(|rs| {
                    let a = &rs["metadata"]["annotations"];
                    (
                        a[REVISION]
                            .as_str()
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(0),
                        a[CHANGE_CAUSE].as_str().unwrap_or("<none>").to_string(),
                    )
                })
                .collect();
            revisions.sort();
            println!("{}", qualified(rt, &name));
            let mut rows = vec![vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()]];
            rows.extend(revisions.into_iter().map(|(r, c)| vec![r.to_string(), c]));
            print!("{}", crate::get::align(&rows));
            Ok(ExitCode::SUCCESS)
        }
        Command::Undo {
            target,
            to_revision,
        } => {
            let (rt, name) = deployment(&target)?;
            undo(client, rt, ns, &name, to_revision).await?;
            println!("{} rolled back", qualified(rt, &name));
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { target } => {
            let (rt, name) = deployment(&target)?;
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT: spoke_now(),
            }}}}});
            merge(client, rt, ns, &name, &patch).await?;
            println!("{} restarted", qualified(rt, &name));
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { target } => {
            pause(client, ns, &target, true).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { target } => {
            pause(client, ns, &target, false).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pause` (or `resume` when `pause` is false).
async fn pause(client: &Client, ns: &str, target: &[String], pause: bool) -> anyhow::Result<()> {
    let (rt, name) = deployment(target)?;
    let d = read(client, rt, ns, &name).await?;
    let already = d.pointer("/spec/paused") == Some(&json!(true));
    let (verb, done) = if pause {
        ("paused", already)
    } else {
        ("resumed", !already)
    };
    if done {
        return Err(anyhow!("{} is already {verb}", qualified(rt, &name)));
    }
    merge(client, rt, ns, &name, &json!({"spec": {"paused": pause}})).await?;
    println!("{} {verb}", qualified(rt, &name));
    Ok(())
}

fn spoke_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

async fn merge(
    client: &Client,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    patch: &Value,
) -> anyhow::Result<Value> {
    client
        .patch(
            &rt.object_path(Some(ns), name),
            "application/merge-patch+json",
            patch,
        )
        .await
        .map_err(|e| match e.code() {
            Some(404) => anyhow!(crate::not_found(rt, Some(ns), name)),
            _ => e.into(),
        })
}

/// The ReplicaSets a Deployment owns.
async fn owned_replicasets(client: &Client, ns: &str, d: &Value) -> anyhow::Result<Vec<Value>> {
    let uid = d["metadata"]["uid"].as_str().unwrap_or("");
    let rs = ResourceType::lookup("replicasets").expect("known kind");
    let list: Value = client.get(&rs.collection_path(Some(ns))).await?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .cloned()
        .collect())
}

async fn undo(
    client: &Client,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    to_revision: i64,
) -> anyhow::Result<()> {
    let mut d = read(client, rt, ns, name).await?;
    let current: i64 = d["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let revision_of = |rs: &Value| -> i64 {
        rs["metadata"]["annotations"][REVISION]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    let sets = owned_replicasets(client, ns, &d).await?;
    let target = if to_revision > 0 {
        sets.iter()
            .find(|rs| revision_of(rs) == to_revision)
            .ok_or_else(|| anyhow!("unable to find the specified revision {to_revision}"))?
    } else {
        sets.iter()
            .filter(|rs| revision_of(rs) < current)
            .max_by_key(|rs| revision_of(rs))
            .ok_or_else(|| anyhow!("no rollout history found for deployment \"{name}\""))?
    };
    let mut template = target["spec"]["template"].clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    d["spec"]["template"] = template;
    client.replace(&rt.object_path(Some(ns), name), &d).await?;
    Ok(())
}

/// Where a rollout stands, from the Deployment alone (kubectl's rules).
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still going; the line to print.
    Waiting(String),
    Done(String),
    /// Stalled past its progress deadline.
    Failed(String),
}

pub fn progress(d: &Value) -> Progress {
    let name = d["metadata"]["name"].as_str().unwrap_or("");
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    if int("/metadata/generation") > int("/status/observedGeneration") {
        return Progress::Waiting(format!(
            "Waiting for deployment \"{name}\" spec update to be observed..."
        ));
    }
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"));
    if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Progress::Failed(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let updated = int("/status/updatedReplicas");
    let total = int("/status/replicas");
    let available = int("/status/availableReplicas");
    if updated < want {
        Progress::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated..."
        ))
    } else if total > updated {
        Progress::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
            total - updated
        ))
    } else if available < updated {
        Progress::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
        ))
    } else {
        Progress::Done(format!("deployment \"{name}\" successfully rolled out"))
    }
}

async fn status(
    client: &Client,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    timeout: Duration,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let mut last = String::new();
    loop {
        let d = read(client, rt, ns, name).await?;
        match progress(&d) {
            Progress::Done(line) => {
                println!("{line}");
                return Ok(ExitCode::SUCCESS);
            }
            Progress::Failed(line) => {
                eprintln!("error: {line}");
                return Ok(ExitCode::FAILURE);
            }
            Progress::Waiting(line) => {
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if !watch {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!(
                "error: timed out waiting for the rollout of deployment \"{name}\" after {}",
                humantime::format_duration(timeout)
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn progress_follows_kubectls_steps() {
        let w = |s: &str| Progress::Waiting(s.to_string());
        assert_eq!(
            progress(&d(2, json!({"observedGeneration": 1}))),
            w("Waiting for deployment \"web\" spec update to be observed...")
        );
        assert_eq!(
            progress(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4})
            )),
            w(
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
            )
        );
        assert_eq!(
            progress(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4})
            )),
            w(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
            )
        );
        assert_eq!(
            progress(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})
            )),
            w(
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
            )
        );
        assert_eq!(
            progress(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            Progress::Done("deployment \"web\" successfully rolled out".into())
        );
        let stalled = d(
            2,
            json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(
            progress(&stalled),
            Progress::Failed("deployment \"web\" exceeded its progress deadline".into())
        );
    }
}
