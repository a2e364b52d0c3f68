//! The scheduler: binds each unscheduled pod to a Ready node.
//!
//! [`pick`] is a pure function of the pod, the nodes and the pods already
//! bound; [`run`] feeds it from the store and binds with a compare-and-swap
//! write, so two passes can never double-book a pod. This is the minimal
//! placement (ready, schedulable, nodeSelector, pod count; fewest pods
//! wins); filters and scores grow here.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::{Recorder, Type};
use crate::store::{self, Store, revision_of};

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Chooses a node for `pod`, or says why none fits, in Kubernetes' words:
/// `0/3 nodes are available: 1 node(s) were not ready, 2 node(s) didn't match Pod's node affinity/selector.`
pub fn pick(
    pod: &Value,
    nodes: &[Value],
    bound: &HashMap<String, usize>,
) -> Result<String, String> {
    let empty = serde_json::Map::new();
    let selector = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut best: Option<(usize, &str)> = None;
    for node in nodes {
        let Some(name) = str_at(node, "/metadata/name") else {
            continue;
        };
        let labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let count = bound.get(name).copied().unwrap_or(0);
        let max_pods = str_at(node, "/status/allocatable/pods")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let reason = if !is_ready(node) {
            Some("node(s) were not ready")
        } else if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
            Some("node(s) were unschedulable")
        } else if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else if count >= max_pods {
            Some("Too many pods")
        } else {
            None
        };
        match reason {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                if best.is_none_or(|(c, n)| (count, name) < (c, n)) {
                    best = Some((count, name));
                }
            }
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_string()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let mut msg = format!("0/{} nodes are available", nodes.len());
            if !detail.is_empty() {
                msg.push_str(": ");
                msg.push_str(&detail.join(", "));
            }
            msg.push('.');
            Err(msg)
        }
    }
}

/// Schedules pending pods whenever pods or nodes change, and every few
/// seconds anyway (level-triggered: a missed event only delays a pod).
pub async fn run(store: Store) {
    let recorder = Recorder::new(store.clone(), "spoke-scheduler");
    let mut events = store.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) if e.key.starts_with("nodes/")
                    || (e.key.starts_with("pods/") && str_at(&e.object, "/spec/nodeName").is_none()) => {}
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            _ = tick.tick() => {}
        }
        if let Err(e) = pass(&store, &recorder).await {
            tracing::error!(error = %e, "scheduling pass failed");
        }
    }
}

/// One scheduling pass over every unbound pod.
pub async fn pass(store: &Store, recorder: &Recorder) -> Result<(), store::Error> {
    let (pods, _) = store.list(&store::prefix("pods", None)).await?;
    let (nodes, _) = store.list(&store::prefix("nodes", None)).await?;
    let mut bound: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        let finished = matches!(str_at(p, "/status/phase"), Some("Succeeded" | "Failed"));
        if let (Some(n), false) = (str_at(p, "/spec/nodeName"), finished) {
            *bound.entry(n.to_string()).or_default() += 1;
        }
    }
    for pod in pods
        .iter()
        .filter(|p| str_at(p, "/spec/nodeName").is_none())
    {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let (Some(ns), Some(name)) = (
            str_at(pod, "/metadata/namespace"),
            str_at(pod, "/metadata/name"),
        ) else {
            continue;
        };
        let key = store::key("pods", Some(ns), name);
        let now = crate::api::now();
        let next = match pick(pod, &nodes, &bound) {
            Ok(node) => {
                *bound.entry(node.clone()).or_default() += 1;
                tracing::info!(pod = %key, node = %node, "scheduled");
                let mut next = pod.clone();
                next["spec"]["nodeName"] = json!(node);
                next["status"] = json!({"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "True", "lastTransitionTime": now}]});
                next
            }
            Err(why) => {
                let cond = pod.pointer("/status/conditions/0");
                if cond.and_then(|c| c.get("message")).and_then(Value::as_str) == Some(why.as_str())
                {
                    continue;
                }
                tracing::info!(pod = %key, reason = %why, "cannot schedule yet");
                let mut next = pod.clone();
                next["status"] = json!({"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": why, "lastTransitionTime": now}]});
                next
            }
        };
        match store.update(&key, next, revision_of(pod)).await {
            Ok(stored) => {
                let cond = stored.pointer("/status/conditions/0");
                let field = |f: &str| cond.and_then(|c| c.get(f)).and_then(Value::as_str);
                match (
                    field("status"),
                    stored.pointer("/spec/nodeName").and_then(Value::as_str),
                ) {
                    (Some("True"), Some(node)) => {
                        let msg = format!("Successfully assigned {ns}/{name} to {node}");
                        recorder
                            .record(&stored, Type::Normal, "Scheduled", &msg)
                            .await;
                    }
                    _ => {
                        let msg = field("message").unwrap_or("");
                        recorder
                            .record(&stored, Type::Warning, "FailedScheduling", msg)
                            .await;
                    }
                }
            }
            Err(store::Error::Conflict | store::Error::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels},
               "status": {"allocatable": {"pods": "2"},
                          "conditions": [{"type": "Ready", "status": if ready {"True"} else {"Unknown"}}]}})
    }

    #[test]
    fn picks_the_ready_node_with_fewest_pods() {
        let nodes = [
            node("a", true, json!({})),
            node("b", true, json!({})),
            node("c", false, json!({})),
        ];
        let bound = HashMap::from([("a".to_string(), 1)]);
        assert_eq!(pick(&json!({"spec": {}}), &nodes, &bound), Ok("b".into()));
    }

    #[test]
    fn honours_node_selector_and_pod_capacity() {
        let nodes = [
            node("a", true, json!({"site": "farm"})),
            node("b", true, json!({"site": "mill"})),
        ];
        let pod = json!({"spec": {"nodeSelector": {"site": "farm"}}});
        assert_eq!(pick(&pod, &nodes, &HashMap::new()), Ok("a".into()));
        let full = HashMap::from([("a".to_string(), 2)]);
        assert_eq!(
            pick(&pod, &nodes, &full),
            Err("0/2 nodes are available: 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector.".into())
        );
    }

    #[test]
    fn says_why_when_nothing_fits() {
        assert_eq!(
            pick(&json!({}), &[], &HashMap::new()),
            Err("0/0 nodes are available.".into())
        );
        let nodes = [node("a", false, json!({}))];
        assert_eq!(
            pick(&json!({}), &nodes, &HashMap::new()),
            Err("0/1 nodes are available: 1 node(s) were not ready.".into())
        );
    }
}
