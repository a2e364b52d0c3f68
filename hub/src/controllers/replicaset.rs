//! The ReplicaSet controller: keeps `spec.replicas` active pods that match
//! the selector, created from the template with an owner reference; adopts
//! matching orphans and releases pods that stop matching; reports
//! `replicas`, `readyReplicas`, `availableReplicas` (ready for
//! `minReadySeconds`) and `observedGeneration`.

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::pods;
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::Store;

/// At most this many pods are created or deleted per ReplicaSet per pass,
/// so that a typo of `replicas: 10000` does not block the controller.
const BURST: usize = 100;

/// The order in which surplus pods go, as Kubernetes ranks them: unscheduled
/// before scheduled, Pending before Unknown before Running, not ready before
/// ready, ready for less time before longer, more restarts before fewer,
/// newer before older.
pub fn deletion_order(a: &Value, b: &Value) -> Ordering {
    let scheduled = |p: &Value| {
        p.pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some()
    };
    let phase_rank = |p: &Value| match p.pointer("/status/phase").and_then(Value::as_str) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let restarts = |p: &Value| -> i64 {
        p.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
            .unwrap_or(0)
    };
    let created = |p: &Value| pods::time_at(p, "/metadata/creationTimestamp");
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(pods::is_ready(a).cmp(&pods::is_ready(b)))
        // Ready more recently goes first (later time first).
        .then(pods::ready_since(b).cmp(&pods::ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
        .then(pods::name(b).cmp(pods::name(a)))
}

/// What one pass should do to a ReplicaSet's pods: how many to create, or
/// which to delete (already in deletion order).
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    Create(usize),
    Delete(Vec<&'a Value>),
    Nothing,
}

/// The pure decision: `active` pods against `want` replicas.
pub fn plan<'a>(want: i32, active: &[&'a Value]) -> Step<'a> {
    let want = want.max(0) as usize;
    match active.len().cmp(&want) {
        Ordering::Less => Step::Create((want - active.len()).min(BURST)),
        Ordering::Greater => {
            let mut sorted = active.to_vec();
            sorted.sort_by(|a, b| deletion_order(a, b));
            sorted.truncate((active.len() - want).min(BURST));
            Step::Delete(sorted)
        }
        Ordering::Equal => Step::Nothing,
    }
}

/// The status a ReplicaSet reports for its active pods.
pub fn status(rs: &Value, active: &[&Value], now: SystemTime) -> Value {
    let min_ready = min_ready(rs);
    let sel_labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(|l| l.as_object().cloned())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let l = pods::labels(p);
            sel_labels
                .iter()
                .all(|(k, v)| l.get(k).map(String::as_str) == v.as_str())
        })
        .count();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    let mut st = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    if let Some(c) = rs
        .pointer("/status/conditions")
        .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
    {
        st["conditions"] = c.clone();
    }
    st
}

fn min_ready(obj: &Value) -> Duration {
    Duration::from_secs(
        obj.pointer("/spec/minReadySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    )
}

/// One pass over every ReplicaSet. Returns when a pass should come again
/// at the latest (a pod becomes available after `minReadySeconds`).
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let all = pods::list_all(store, "replicasets").await?;
    let mut next: Option<SystemTime> = None;
    for rs in all {
        match reconcile(store, rec, &rs, now).await {
            Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(replicaset = pods::name(&rs), error = %e, "reconcile failed; will retry")
            }
        }
    }
    Ok(next)
}

/// Moves one ReplicaSet one step toward its `replicas`.
pub async fn reconcile(
    store: &Store,
    rec: &Recorder,
    rs: &Value,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let ns = pods::namespace(rs);
    let candidates = pods::list(store, "pods", ns).await?;
    let owned = pods::claim(store, "pods", rs, candidates).await?;
    let active: Vec<&Value> = owned.iter().filter(|p| pods::is_active(p)).collect();
    if !pods::deleting(rs) {
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1) as i32;
        match plan(want, &active) {
            Step::Create(n) => {
                pods::create_from_template(store, rec, rs, n as u32).await?;
            }
            Step::Delete(victims) => {
                for p in victims {
                    pods::delete(store, "pods", p).await?;
                    rec.record(
                        rs,
                        Type::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {}", pods::name(p)),
                    )
                    .await;
                }
            }
            Step::Nothing => {}
        }
    }
    pods::write_status(store, "replicasets", rs, status(rs, &active, now)).await?;
    // Come back when a ready pod crosses minReadySeconds.
    let min_ready = min_ready(rs);
    Ok(active
        .iter()
        .filter(|p| !pods::is_available(p, min_ready, now))
        .filter_map(|p| pods::available_at(p, min_ready))
        .min())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Value {
        let mut p = json!({"metadata": {"name": name, "creationTimestamp": created},
            "spec": {}, "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                            "lastTransitionTime": created}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    }

    #[test]
    fn surplus_pods_go_unscheduled_then_not_ready_then_newest_first() {
        let a = pod(
            "running-old",
            Some("n1"),
            "Running",
            true,
            "2026-01-01T00:00:00Z",
        );
        let b = pod(
            "running-new",
            Some("n1"),
            "Running",
            true,
            "2026-01-02T00:00:00Z",
        );
        let c = pod(
            "not-ready",
            Some("n2"),
            "Running",
            false,
            "2026-01-01T00:00:00Z",
        );
        let d = pod(
            "unscheduled",
            None,
            "Pending",
            false,
            "2026-01-01T00:00:00Z",
        );
        let e = pod(
            "pending",
            Some("n2"),
            "Pending",
            false,
            "2026-01-01T00:00:00Z",
        );
        let active = [&a, &b, &c, &d, &e];
        let names = |want: i32| match plan(want, &active) {
            Step::Delete(v) => v
                .iter()
                .map(|p| pods::name(p).to_string())
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names(4), ["unscheduled"]);
        assert_eq!(names(2), ["unscheduled", "pending", "not-ready"]);
        assert_eq!(
            names(0),
            [
                "unscheduled",
                "pending",
                "not-ready",
                "running-new",
                "running-old"
            ]
        );
        assert_eq!(plan(5, &active), Step::Nothing);
        assert_eq!(plan(8, &active), Step::Create(3));
        assert_eq!(plan(100_000, &[]), Step::Create(BURST));
    }
}
