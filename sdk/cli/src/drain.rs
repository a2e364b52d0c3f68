//! `spoke cordon`, `spoke uncordon` and `spoke drain`: take a board out of
//! service and back, with kubectl's rules and words.
//!
//! Drain cordons the node, then evicts (through the pods' `eviction`
//! subresource) every pod on it that may go: pods of DaemonSets are refused
//! unless `--ignore-daemonsets` (then left running), pods with no
//! controller unless `--force` (nothing would re-create them), pods with an
//! `emptyDir` unless `--delete-emptydir-data` (its data goes with them).
//! When any pod is refused, nothing is evicted and the node stays cordoned.
//! It then waits until the evicted pods are gone (stopped on the board).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::Subcommand;
use serde_json::{Value, json};
use spoke_client::Client;

#[derive(Subcommand)]
pub enum Command {
    /// Mark a node unschedulable: no new pods are placed on it.
    Cordon {
        /// Node name.
        node: String,
    },
    /// Mark a node schedulable again.
    Uncordon {
        /// Node name.
        node: String,
    },
    /// Cordon a node and evict its pods, so their controllers run them
    /// elsewhere; waits until they have stopped on the board.
    Drain {
        /// Node name.
        node: String,
        /// Leave DaemonSet pods running instead of refusing to drain.
        #[arg(long)]
        ignore_daemonsets: bool,
        /// Also delete pods that no controller manages (they are not
        /// re-created anywhere).
        #[arg(long)]
        force: bool,
        /// Also evict pods with emptyDir volumes (their data is lost).
        #[arg(long, alias = "delete-local-data")]
        delete_emptydir_data: bool,
        /// Seconds each pod is given to stop (default: the pod's own).
        #[arg(long)]
        grace_period: Option<i64>,
        /// How long to wait for the pods to be gone, such as 90s or 5m;
        /// 0 waits for ever.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Runs one of the node commands.
pub async fn run(client: &Client, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Cordon { node } => cordon(client, &node, true).await?,
        Command::Uncordon { node } => cordon(client, &node, false).await?,
        Command::Drain {
            node,
            ignore_daemonsets,
            force,
            delete_emptydir_data,
            grace_period,
            timeout,
        } => {
            let rules = Rules {
                ignore_daemonsets,
                force,
                delete_emptydir_data,
            };
            return drain(client, &node, &rules, grace_period, timeout).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn node_path(node: &str) -> String {
    format!("/api/v1/nodes/{node}")
}

/// Reads a node, with kubectl's words when it does not exist.
async fn get_node(client: &Client, node: &str) -> anyhow::Result<Value> {
    match client.get::<Value>(&node_path(node)).await {
        Err(e) if e.code() == Some(404) => Err(anyhow!("nodes \"{node}\" not found")),
        other => Ok(other?),
    }
}

/// Sets or clears `spec.unschedulable`, saying what changed.
async fn cordon(client: &Client, node: &str, on: bool) -> anyhow::Result<()> {
    let current = get_node(client, node).await?;
    let is_on = current.pointer("/spec/unschedulable") == Some(&json!(true));
    let word = if on { "cordoned" } else { "uncordoned" };
    if is_on == on {
        println!("node/{node} already {word}");
        return Ok(());
    }
    let patch = json!({"spec": {"unschedulable": if on { json!(true) } else { Value::Null }}});
    client
        .patch(&node_path(node), "application/merge-patch+json", &patch)
        .await?;
    println!("node/{node} {word}");
    Ok(())
}

/// What drain may evict.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub ignore_daemonsets: bool,
    pub force: bool,
    pub delete_emptydir_data: bool,
}

/// What drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Evict,
    /// Evicted, with a warning (kubectl's words).
    EvictWarn(&'static str),
    /// Left alone, with a warning.
    Skip(&'static str),
    /// Drain is refused because of this pod (kubectl's words).
    Refuse(&'static str),
}

fn controller_kind(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == json!(true))
        .and_then(|r| r["kind"].as_str())
}

/// Decides one pod's fate by kubectl's filters, in kubectl's order.
pub fn verdict(pod: &Value, rules: &Rules) -> Verdict {
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let kind = controller_kind(pod);
    if kind == Some("DaemonSet") {
        return if rules.ignore_daemonsets {
            Verdict::Skip("ignoring DaemonSet-managed Pods")
        } else {
            Verdict::Refuse(
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
            )
        };
    }
    if finished {
        return Verdict::Evict;
    }
    let empty_dir = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vs| vs.iter().any(|v| v.get("emptyDir").is_some()));
    if empty_dir && !rules.delete_emptydir_data {
        return Verdict::Refuse(
            "cannot delete Pods with local storage (use --delete-emptydir-data to override)",
        );
    }
    if kind.is_none() {
        return if rules.force {
            Verdict::EvictWarn("deleting Pods that declare no controller")
        } else {
            Verdict::Refuse(
                "cannot delete Pods that declare no controller (use --force to override)",
            )
        };
    }
    Verdict::Evict
}

fn full_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default"),
        pod.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

/// Groups pod names under each message, as kubectl prints them:
/// `message: ns/a, ns/b`.
fn grouped(items: &[(&'static str, String)]) -> Vec<String> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (msg, pod) in items {
        match out.iter_mut().find(|(m, _)| m == msg) {
            Some((_, pods)) => pods.push(pod),
            None => out.push((msg, vec![pod])),
        }
    }
    out.into_iter()
        .map(|(m, pods)| format!("{m}: {}", pods.join(", ")))
        .collect()
}

async fn drain(
    client: &Client,
    node: &str,
    rules: &Rules,
    grace_period: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    cordon(client, node, true).await?;
    let list: Value = client
        .get(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
        ))
        .await?;
    let pods = list["items"].as_array().cloned().unwrap_or_default();
    let mut evict = Vec::new();
    let (mut warnings, mut refusals) = (Vec::new(), Vec::new());
    for pod in &pods {
        match verdict(pod, rules) {
            Verdict::Evict => evict.push(pod),
            Verdict::EvictWarn(w) => {
                warnings.push((w, full_name(pod)));
                evict.push(pod);
            }
            Verdict::Skip(w) => warnings.push((w, full_name(pod))),
            Verdict::Refuse(r) => refusals.push((r, full_name(pod))),
        }
    }
    if !refusals.is_empty() {
        eprintln!(
            "error: unable to drain node \"{node}\" due to error: {}",
            grouped(&refusals).join(", ")
        );
        eprintln!("There are pending nodes to be drained:\n {node}");
        return Ok(ExitCode::FAILURE);
    }
    for w in grouped(&warnings) {
        eprintln!("Warning: {w}");
    }
    let mut waiting = Vec::new();
    for pod in evict {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        println!("evicting pod {ns}/{name}");
        let mut eviction = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns},
        });
        if let Some(g) = grace_period {
            eviction["deleteOptions"] = json!({"gracePeriodSeconds": g});
        }
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}/eviction");
        match client.create(&path, &eviction).await {
            Ok(_) => waiting.push((ns, name, pod["metadata"]["uid"].clone())),
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(anyhow!("cannot evict pod {ns}/{name}: {e}")),
        }
    }
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for (ns, name, uid) in waiting {
            let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
            match client.get::<Value>(&path).await {
                Err(e) if e.code() == Some(404) => println!("pod/{name} evicted"),
                Ok(p) if p["metadata"]["uid"] != uid => println!("pod/{name} evicted"),
                Err(e) => return Err(e.into()),
                Ok(_) => still.push((ns, name, uid)),
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
            let names: Vec<String> = waiting
                .iter()
                .map(|(ns, n, _)| format!("{ns}/{n}"))
                .collect();
            eprintln!(
                "error: unable to drain node \"{node}\": timed out after {} waiting for pods to stop on the node (is it connected?): {}",
                humantime::format_duration(timeout),
                names.join(", ")
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("node/{node} drained");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(owner: Option<&str>, phase: &str, empty_dir: bool) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                           "spec": {"containers": []}, "status": {"phase": phase}});
        if let Some(k) = owner {
            p["metadata"]["ownerReferences"] =
                json!([{"kind": k, "name": "o", "uid": "u", "controller": true}]);
        }
        if empty_dir {
            p["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
        }
        p
    }

    #[test]
    fn drain_decides_each_pod_as_kubectl_does() {
        let none = Rules::default();
        let all = Rules {
            ignore_daemonsets: true,
            force: true,
            delete_emptydir_data: true,
        };
        let rs = pod(Some("ReplicaSet"), "Running", false);
        let ds = pod(Some("DaemonSet"), "Running", false);
        let bare = pod(None, "Running", false);
        let bare_done = pod(None, "Succeeded", false);
        let scratch = pod(Some("ReplicaSet"), "Running", true);
        assert_eq!(verdict(&rs, &none), Verdict::Evict);
        assert!(
            matches!(verdict(&ds, &none), Verdict::Refuse(m) if m.contains("--ignore-daemonsets"))
        );
        assert!(matches!(verdict(&ds, &all), Verdict::Skip(_)));
        assert!(matches!(verdict(&bare, &none), Verdict::Refuse(m) if m.contains("--force")));
        assert!(matches!(verdict(&bare, &all), Verdict::EvictWarn(_)));
        assert_eq!(verdict(&bare_done, &none), Verdict::Evict);
        assert!(
            matches!(verdict(&scratch, &none), Verdict::Refuse(m) if m.contains("--delete-emptydir-data"))
        );
        assert_eq!(verdict(&scratch, &all), Verdict::Evict);
    }

    #[test]
    fn messages_group_pods_under_one_reason() {
        let items = [
            ("a", "ns/x".to_string()),
            ("b", "ns/y".into()),
            ("a", "ns/z".into()),
        ];
        assert_eq!(grouped(&items), ["a: ns/x, ns/z", "b: ns/y"]);
    }
}
