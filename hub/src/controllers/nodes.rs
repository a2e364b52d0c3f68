//! The node lifecycle controller: keeps the taints that say what state a
//! node is in in step with its `Ready` condition and `spec.unschedulable`,
//! and evicts pods from nodes with `NoExecute` taints once their
//! tolerations run out, as Kubernetes' node lifecycle controller and taint
//! manager do.
//!
//! The edge's difference: a board that lost its link is not dead. Only pods
//! of ReplicaSets (so Deployments) and Jobs are evicted because their node is
//! unreachable or not ready: their controllers re-create them elsewhere.
//! DaemonSet pods and bare pods stay bound and keep running on the board.
//!
//! An evicted pod is marked for deletion, not removed: its board still runs
//! it and learns of the deletion when it reconnects, then stops it and the
//! pod goes (Kubernetes leaves such pods `Terminating` the same way). Its
//! controller does not wait for that: pods being deleted do not count toward
//! replicas. Pods being deleted on a node that no longer exists (a Node
//! object deleted by hand) are removed at once, as Kubernetes' pod garbage
//! collector does.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_api::core::{Pod, Taint, taints};

use super::pods;
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::{self, Store};

/// Taints this controller owns: it adds and removes them; others are left
/// as users wrote them.
const MANAGED: [&str; 6] = [
    taints::NOT_READY,
    taints::UNREACHABLE,
    taints::UNSCHEDULABLE,
    taints::MEMORY_PRESSURE,
    taints::DISK_PRESSURE,
    taints::PID_PRESSURE,
];

/// Pressure conditions and the `NoSchedule` taint each puts on the node
/// while `True` (Kubernetes' taint-nodes-by-condition).
const PRESSURE: [(&str, &str); 3] = [
    ("MemoryPressure", taints::MEMORY_PRESSURE),
    ("DiskPressure", taints::DISK_PRESSURE),
    ("PIDPressure", taints::PID_PRESSURE),
];

/// Kinds whose pods are re-created elsewhere when evicted.
const REPLICATED: [&str; 2] = ["ReplicaSet", "Job"];

/// The status of the node's condition `type_`; one never reported is `Unknown`.
fn condition_status<'a>(node: &'a Value, type_: &str) -> &'a str {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
}

/// The node's `Ready` condition status; a node that never said is `Unknown`.
fn ready_status(node: &Value) -> &str {
    condition_status(node, "Ready")
}

/// The managed taints (key, effect) a node should carry by its state:
/// `not-ready` when `Ready` is `False`, `unreachable` when it is `Unknown`
/// (each as `NoSchedule` and `NoExecute`), `unschedulable:NoSchedule`
/// when cordoned, and `memory-pressure`, `disk-pressure` or `pid-pressure`
/// (`NoSchedule`) while that pressure condition is `True`.
pub fn wanted_taints(node: &Value) -> Vec<(&'static str, &'static str)> {
    let mut want = Vec::new();
    let condition = match ready_status(node) {
        "True" => None,
        "False" => Some(taints::NOT_READY),
        _ => Some(taints::UNREACHABLE),
    };
    if let Some(key) = condition {
        want.push((key, "NoSchedule"));
        want.push((key, "NoExecute"));
    }
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        want.push((taints::UNSCHEDULABLE, "NoSchedule"));
    }
    for (condition, key) in PRESSURE {
        if condition_status(node, condition) == "True" {
            want.push((key, "NoSchedule"));
        }
    }
    want
}

/// The node's taints with the managed ones brought in line with `want`:
/// missing ones are added (`NoExecute` ones with `timeAdded` = `now`, as
/// Kubernetes writes it only for those), ones no longer wanted removed,
/// present ones kept with their time. `None` when nothing changes.
pub fn reconcile_taints(
    current: &[Taint],
    want: &[(&str, &str)],
    now: SystemTime,
) -> Option<Vec<Taint>> {
    let wanted = |t: &Taint| want.contains(&(t.key.as_str(), t.effect.as_str()));
    let mut next: Vec<Taint> = current
        .iter()
        .filter(|t| !MANAGED.contains(&t.key.as_str()) || wanted(t))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !next.iter().any(|t| t.key == *key && t.effect == *effect) {
            next.push(Taint {
                key: key.to_string(),
                value: String::new(),
                effect: effect.to_string(),
                time_added: (*effect == "NoExecute").then(|| pods::rfc3339(now)),
            });
        }
    }
    (next != current).then_some(next)
}

/// What the controllers and the scheduler read of each Node, remembered
/// per node so that a write that changes none of it wakes nobody.
///
/// Why: the sync worker writes a Node for every revision an agent is sent
/// or acknowledges, and for every lease renewal. With 10,000 boards that is
/// tens of writes a second even when nothing changes, and each woke a full
/// pass of the workload controllers (every Node and every Pod read and
/// decoded) and of the scheduler. What they decide on is the node's labels,
/// spec (taints, unschedulable), allocatable resources, condition statuses
/// and whether it is being deleted; not heartbeat times, leases or the sync
/// revisions.
///
/// Caveat: a node seen for the first time counts as changed, so a hub that
/// starts wakes once per node (the passes coalesce them).
#[derive(Debug, Default)]
pub struct Facts {
    seen: HashMap<String, u64>,
}

impl Facts {
    /// Whether `event` changes what the controllers read: always for kinds
    /// other than Node and for deletions, else when the node's facts differ
    /// from the last seen.
    pub fn changed(&mut self, event: &store::Event) -> bool {
        if !event.key.starts_with("nodes/") {
            return true;
        }
        if event.type_ == store::EventType::Deleted {
            self.seen.remove(&event.key);
            return true;
        }
        let print = fingerprint(&event.object);
        self.seen.insert(event.key.clone(), print) != Some(print)
    }
}

/// A hash of what [`Facts`] tracks of one Node.
fn fingerprint(node: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let conditions: Vec<(&Value, &Value)> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| (&c["type"], &c["status"])).collect())
        .unwrap_or_default();
    let facts = json!([
        node.pointer("/metadata/labels"),
        node.pointer("/metadata/deletionTimestamp"),
        node.get("spec"),
        node.pointer("/status/allocatable"),
        node.pointer("/status/capacity"),
        conditions
            .iter()
            .map(|(t, s)| json!([t, s]))
            .collect::<Vec<_>>(),
    ]);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    facts.to_string().hash(&mut h);
    h.finish()
}

fn taints_of(node: &Value) -> Vec<Taint> {
    node.pointer("/spec/taints")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default()
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    s.and_then(|s| humantime::parse_rfc3339(s).ok())
}

/// Whether the taint says the node is unreachable or not ready (as opposed
/// to one a user put there).
fn connectivity(t: &Taint) -> bool {
    t.key == taints::UNREACHABLE || t.key == taints::NOT_READY
}

/// Whether the pod's controller re-creates it elsewhere.
fn replicated(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .any(|o| o.controller == Some(true) && REPLICATED.contains(&o.kind.as_str()))
}

/// When a pod on a node with `taints` must be evicted, by Kubernetes' taint
/// manager rules: at once if a `NoExecute` taint is not tolerated; else
/// after the smallest `tolerationSeconds` of the tolerations used, counted
/// from when the last of those taints appeared (or the pod was created, if
/// later); never when none of them sets a limit. Unreachable and not-ready
/// taints count only for pods of ReplicaSets and Jobs.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: SystemTime) -> Option<SystemTime> {
    let replicated = replicated(pod);
    let mut start = parse_time(pod.metadata.creation_timestamp.as_deref());
    let mut seconds: Option<i64> = None;
    let mut any = false;
    for t in taints
        .iter()
        .filter(|t| t.effect == "NoExecute" && (replicated || !connectivity(t)))
    {
        any = true;
        let used: Vec<_> = pod
            .spec
            .tolerations
            .iter()
            .filter(|tol| tol.tolerates(t))
            .collect();
        if used.is_empty() {
            return Some(now);
        }
        for s in used.iter().filter_map(|tol| tol.toleration_seconds) {
            seconds = Some(seconds.map_or(s, |m| m.min(s)));
        }
        let added = parse_time(t.time_added.as_deref()).unwrap_or(now);
        start = Some(start.map_or(added, |s| s.max(added)));
    }
    if !any {
        return None;
    }
    let s = seconds?;
    Some(start.unwrap_or(now) + Duration::from_secs(s.max(0) as u64))
}

/// One pass: taints of every node, then evictions. Returns when the next
/// toleration runs out, if one will.
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let mut by_node: HashMap<String, Vec<Taint>> = HashMap::new();
    for node in pods::list_all(store, "nodes").await? {
        let name = pods::name(&node).to_string();
        let mut current = taints_of(&node);
        if reconcile_taints(&current, &wanted_taints(&node), now).is_some() {
            current = set_taints(store, &name, now).await?.unwrap_or(current);
        }
        by_node.insert(name, current);
    }
    let mut next: Option<SystemTime> = None;
    for p in pods::list_all(store, "pods").await? {
        let Some(node) = p.pointer("/spec/nodeName").and_then(Value::as_str) else {
            continue;
        };
        let Some(taints) = by_node.get(node) else {
            if pods::deleting(&p) {
                force_delete(store, &p, node).await?;
            }
            continue;
        };
        if !pods::is_active(&p) || !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        let Ok(pod) = serde_json::from_value::<Pod>(p.clone()) else {
            continue;
        };
        match eviction_time(&pod, taints, now) {
            Some(t) if t <= now => {
                tracing::info!(pod = pods::name(&p), node, "evicting pod from tainted node");
                pods::delete(store, "pods", &p).await?;
                let msg = format!(
                    "Marking for deletion Pod {}/{}",
                    pods::namespace(&p),
                    pods::name(&p)
                );
                rec.record(&p, Type::Normal, "TaintManagerEviction", &msg)
                    .await;
            }
            Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
            None => {}
        }
    }
    Ok(next)
}

/// Writes the node's managed taints, recomputed from the stored node so a
/// concurrent write is not lost. Returns the taints now stored.
async fn set_taints(
    store: &Store,
    name: &str,
    now: SystemTime,
) -> Result<Option<Vec<Taint>>, Error> {
    let key = store::key("nodes", None, name);
    let written = store
        .modify(&key, |cur| {
            let taints = reconcile_taints(&taints_of(cur), &wanted_taints(cur), now)?;
            let mut next = cur.clone();
            if taints.is_empty() {
                next["spec"].as_object_mut().map(|s| s.remove("taints"));
            } else {
                next["spec"]["taints"] = serde_json::to_value(&taints).ok()?;
            }
            Some(next)
        })
        .await;
    match written {
        Ok(Some(node)) => {
            tracing::info!(node = name, taints = ?wanted_taints(&node), "node taints updated");
            Ok(Some(taints_of(&node)))
        }
        Ok(None) | Err(store::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes a pod being deleted whose node no longer exists: no agent will
/// ever report it stopped.
async fn force_delete(store: &Store, pod: &Value, node: &str) -> Result<(), Error> {
    tracing::info!(
        pod = pods::name(pod),
        node,
        "removing a pod being deleted on a node that no longer exists"
    );
    let rt = spoke_api::resource::ResourceType::lookup("pods")
        .ok_or_else(|| Error::Internal("pods are not a known kind".into()))?;
    let opts = crate::api::DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    match crate::api::delete_object(
        store,
        rt,
        Some(pods::namespace(pod)),
        pods::name(pod),
        &opts,
    )
    .await
    {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn node(ready: Option<&str>, unschedulable: bool) -> Value {
        let mut n = json!({"metadata": {"name": "pi"}, "spec": {"unschedulable": unschedulable}});
        if let Some(r) = ready {
            n["status"] = json!({"conditions": [{"type": "Ready", "status": r}]});
        }
        n
    }

    #[test]
    fn taints_follow_the_ready_condition_and_cordon() {
        let cases = [
            (node(Some("True"), false), vec![]),
            (
                node(Some("Unknown"), false),
                vec![
                    (taints::UNREACHABLE, "NoSchedule"),
                    (taints::UNREACHABLE, "NoExecute"),
                ],
            ),
            (
                node(None, false),
                vec![
                    (taints::UNREACHABLE, "NoSchedule"),
                    (taints::UNREACHABLE, "NoExecute"),
                ],
            ),
            (
                node(Some("False"), true),
                vec![
                    (taints::NOT_READY, "NoSchedule"),
                    (taints::NOT_READY, "NoExecute"),
                    (taints::UNSCHEDULABLE, "NoSchedule"),
                ],
            ),
            (
                node(Some("True"), true),
                vec![(taints::UNSCHEDULABLE, "NoSchedule")],
            ),
        ];
        for (i, (n, want)) in cases.iter().enumerate() {
            assert_eq!(&wanted_taints(n), want, "case {i}");
        }
    }

    #[test]
    fn pressure_conditions_that_are_true_add_their_no_schedule_taints() {
        let mut n = node(Some("True"), false);
        n["status"]["conditions"] = json!([
            {"type": "Ready", "status": "True"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "DiskPressure", "status": "True"},
            {"type": "PIDPressure", "status": "True"},
        ]);
        assert_eq!(
            wanted_taints(&n),
            [
                (taints::DISK_PRESSURE, "NoSchedule"),
                (taints::PID_PRESSURE, "NoSchedule")
            ]
        );
        // Unknown (the agent is away) is not pressure; unreachable says it.
        n["status"]["conditions"][0]["status"] = json!("Unknown");
        n["status"]["conditions"][2]["status"] = json!("Unknown");
        assert_eq!(
            wanted_taints(&n),
            [
                (taints::UNREACHABLE, "NoSchedule"),
                (taints::UNREACHABLE, "NoExecute"),
                (taints::PID_PRESSURE, "NoSchedule")
            ]
        );
        // Cleared: the controller removes the taint it owns.
        let current = vec![Taint {
            key: taints::DISK_PRESSURE.into(),
            value: String::new(),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let next = reconcile_taints(&current, &[], at("2026-11-30T20:00:00Z"));
        assert_eq!(next, Some(vec![]));
    }

    #[test]
    fn managed_taints_are_added_with_their_time_and_removed_others_kept() {
        let now = at("2026-11-30T20:00:00Z");
        let user = Taint {
            key: "site".into(),
            value: "lab".into(),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let want = [
            (taints::UNREACHABLE, "NoSchedule"),
            (taints::UNREACHABLE, "NoExecute"),
        ];
        let added = reconcile_taints(std::slice::from_ref(&user), &want, now).unwrap();
        assert_eq!(added.len(), 3);
        assert_eq!(added[0], user);
        assert_eq!(added[1].time_added, None, "NoSchedule taints carry no time");
        assert_eq!(added[2].time_added.as_deref(), Some("2026-11-30T20:00:00Z"));
        // Unchanged state: nothing to write, and the time is kept.
        let later = now + Duration::from_secs(60);
        assert_eq!(reconcile_taints(&added, &want, later), None);
        // Ready again: only the user's taint stays.
        assert_eq!(reconcile_taints(&added, &[], later), Some(vec![user]));
    }

    fn pod(owner: Option<&str>, tolerations: Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "creationTimestamp": "2026-11-30T19:00:00Z"},
                           "spec": {"containers": [], "tolerations": tolerations}});
        if let Some(kind) = owner {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": kind, "name": "o", "uid": "u", "controller": true}]);
        }
        serde_json::from_value(p).unwrap()
    }

    fn default_tolerations(seconds: i64) -> Value {
        json!([
            {"key": taints::NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
            {"key": taints::UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
        ])
    }

    #[test]
    fn only_replicated_pods_are_evicted_for_unreachability_after_their_toleration() {
        let added = "2026-11-30T20:00:00Z";
        let now = at("2026-11-30T20:00:10Z");
        let unreachable = [Taint {
            key: taints::UNREACHABLE.into(),
            value: String::new(),
            effect: "NoExecute".into(),
            time_added: Some(added.into()),
        }];
        let t300 = Some(at(added) + Duration::from_secs(300));
        let cases = [
            (
                "ReplicaSet pod, default toleration",
                pod(Some("ReplicaSet"), default_tolerations(300)),
                t300,
            ),
            (
                "Job pod, 5 s",
                pod(Some("Job"), default_tolerations(5)),
                Some(at(added) + Duration::from_secs(5)),
            ),
            (
                "ReplicaSet pod without toleration",
                pod(Some("ReplicaSet"), json!([])),
                Some(now),
            ),
            ("bare pod", pod(None, default_tolerations(300)), None),
            ("bare pod without toleration", pod(None, json!([])), None),
            ("DaemonSet pod", pod(Some("DaemonSet"), json!([])), None),
            (
                "tolerates forever",
                pod(
                    Some("ReplicaSet"),
                    json!([{"key": taints::UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
                ),
                None,
            ),
        ];
        for (what, p, want) in cases {
            assert_eq!(eviction_time(&p, &unreachable, now), want, "{what}");
        }
    }

    #[test]
    fn a_users_noexecute_taint_evicts_every_pod_that_does_not_tolerate_it() {
        let now = at("2026-11-30T20:00:10Z");
        let user = [Taint {
            key: "maintenance".into(),
            value: String::new(),
            effect: "NoExecute".into(),
            time_added: Some("2026-11-30T20:00:00Z".into()),
        }];
        assert_eq!(eviction_time(&pod(None, json!([])), &user, now), Some(now));
        assert_eq!(
            eviction_time(&pod(Some("DaemonSet"), json!([])), &user, now),
            Some(now)
        );
        let tolerant = pod(None, json!([{"key": "maintenance", "operator": "Exists"}]));
        assert_eq!(eviction_time(&tolerant, &user, now), None);
        // NoSchedule taints evict nothing.
        let soft = [Taint {
            effect: "NoSchedule".into(),
            ..user[0].clone()
        }];
        assert_eq!(eviction_time(&pod(None, json!([])), &soft, now), None);
    }
}
