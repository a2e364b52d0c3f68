//! The DaemonSet controller: one pod on every node the template's
//! `nodeSelector`, required node affinity and tolerations admit, including
//! nodes that join later. Pods are created bound (`spec.nodeName`),
//! bypassing the scheduler, as Kubernetes does, and carry Kubernetes'
//! DaemonSet tolerations: not-ready and unreachable `NoExecute` (no time
//! limit) and the `NoSchedule` node-state taints, cordon included. A node
//! that goes NotReady gets no new pod (its `NoSchedule` taint) but keeps
//! the one it has: a board that loses its link is not dead. A node with a
//! `NoExecute` taint the pod does not tolerate loses it. `RollingUpdate`
//! replaces out-of-date pods at most `maxUnavailable` at a time (delete,
//! then create); `OnDelete` waits for the user to delete them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_api::apps::IntOrString;
use spoke_api::core::{PodSpec, Taint, Toleration, taints};

use super::{deployment, pods};
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::Store;

/// The label with the hash of the template a pod was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations Kubernetes gives every DaemonSet pod (beside the
/// template's own): (key, effect); `NoExecute` ones have no time limit.
const DAEMON_TOLERATIONS: [(&str, &str); 6] = [
    (taints::NOT_READY, "NoExecute"),
    (taints::UNREACHABLE, "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    (taints::UNSCHEDULABLE, "NoSchedule"),
];

/// The template's pod spec with the DaemonSet tolerations added where the
/// template has none for the same key and effect.
fn with_daemon_tolerations(mut spec: Value) -> Value {
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    if let Some(tols) = spec["tolerations"].as_array_mut() {
        for (key, effect) in DAEMON_TOLERATIONS {
            if !tols
                .iter()
                .any(|t| t["key"] == key && t["effect"] == effect)
            {
                tols.push(json!({"key": key, "operator": "Exists", "effect": effect}));
            }
        }
    }
    spec
}

/// Where the DaemonSet's pods belong, as Kubernetes decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// A pod should run here.
    Run,
    /// No new pod here, but one already here stays (an untolerated
    /// `NoSchedule` taint: not ready, unreachable, a user's taint).
    Keep,
    /// No pod here (selector or affinity do not match, or an untolerated
    /// `NoExecute` taint).
    No,
}

/// Whether pods with `spec` (tolerations already completed) belong on `node`.
pub fn fit(spec: &PodSpec, node: &Value) -> Fit {
    let labels = pods::labels(node);
    let selected = spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affine = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| t.matches(&labels)));
    if !selected || !affine {
        return Fit::No;
    }
    let node_taints: Vec<Taint> = node
        .pointer("/spec/taints")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let tolerated = |t: &Taint| {
        spec.tolerations
            .iter()
            .any(|tol: &Toleration| tol.tolerates(t))
    };
    let untolerated = |effect: &str| {
        node_taints
            .iter()
            .any(|t| t.effect == effect && !tolerated(t))
    };
    if untolerated("NoExecute") {
        Fit::No
    } else if untolerated("NoSchedule") {
        Fit::Keep
    } else {
        Fit::Run
    }
}

/// One pass over every DaemonSet.
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let nodes = pods::list_all(store, "nodes").await?;
    let mut next: Option<SystemTime> = None;
    for ds in pods::list_all(store, "daemonsets").await? {
        match reconcile(store, rec, &ds, &nodes, now).await {
            Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(daemonset = pods::name(&ds), error = %e, "reconcile failed; will retry")
            }
        }
    }
    Ok(next)
}

/// Moves one DaemonSet one step.
pub async fn reconcile(
    store: &Store,
    rec: &Recorder,
    ds: &Value,
    nodes: &[Value],
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let ns = pods::namespace(ds);
    let candidates = pods::list(store, "pods", ns).await?;
    let owned = pods::claim(store, "pods", ds, candidates).await?;
    let mut template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = deployment::template_hash(&template);
    template["spec"] = with_daemon_tolerations(template["spec"].take());
    let spec: PodSpec = serde_json::from_value(template["spec"].clone()).unwrap_or_default();
    let min_ready = Duration::from_secs(
        ds.pointer("/spec/minReadySeconds")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    let mut by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in owned.iter().filter(|p| pods::is_active(p)) {
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str) {
            by_node.entry(n).or_default().push(p);
        }
    }
    // A node whose old pod is still stopping gets its new one after.
    let stopping: std::collections::HashSet<&str> = owned
        .iter()
        .filter(|p| pods::deleting(p))
        .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
        .collect();
    let updated = |p: &Value| pods::labels(p).get(HASH_LABEL) == Some(&hash);
    let available = |p: &Value| pods::is_available(p, min_ready, now);
    let deleting = pods::deleting(ds);

    let (mut desired, mut current, mut misscheduled, mut ready, mut up_to_date, mut avail) =
        (0, 0, 0, 0, 0, 0);
    let mut to_create: Vec<&str> = Vec::new();
    let mut to_delete: Vec<&Value> = Vec::new();
    // Out-of-date pods on Ready nodes, candidates for the rolling update.
    let mut old: Vec<&Value> = Vec::new();
    for node in nodes {
        let name = pods::name(node);
        let here = by_node.get(name).cloned().unwrap_or_default();
        let fit = fit(&spec, node);
        let should_run = fit == Fit::Run;
        if fit == Fit::No {
            misscheduled += usize::from(!here.is_empty());
            to_delete.extend(here);
            continue;
        }
        if should_run {
            desired += 1;
        }
        let Some(first) = here
            .iter()
            .min_by_key(|p| pods::time_at(p, "/metadata/creationTimestamp"))
            .copied()
        else {
            if should_run && !stopping.contains(name) {
                to_create.push(name);
            }
            continue;
        };
        // One pod per node: extras go.
        to_delete.extend(here.iter().filter(|p| !std::ptr::eq(**p, first)));
        if !should_run {
            // Not ready, unreachable or an untolerated NoSchedule taint:
            // keep what runs there, count nothing.
            continue;
        }
        current += 1;
        ready += usize::from(pods::is_ready(first));
        avail += usize::from(available(first));
        if updated(first) {
            up_to_date += 1;
        } else {
            old.push(first);
        }
    }
    let rolling = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        != Some("OnDelete");
    if rolling && !deleting {
        let max_unavailable = ds
            .pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable")
            .and_then(|v| serde_json::from_value::<IntOrString>(v.clone()).ok())
            .unwrap_or(IntOrString::Int(1))
            .scaled(desired as i32, false)
            .unwrap_or(1)
            .max(1) as usize;
        let unavailable = desired - avail;
        // Old pods that are not available cost nothing to replace.
        let (down, up): (Vec<&Value>, Vec<&Value>) = old.into_iter().partition(|p| !available(p));
        to_delete.extend(down);
        let budget = max_unavailable.saturating_sub(unavailable);
        to_delete.extend(up.into_iter().take(budget));
    }
    if !deleting {
        for node in to_create {
            let mut t = template.clone();
            t["spec"]["nodeName"] = json!(node);
            let prefix = format!("{}-", pods::name(ds));
            match pods::create_owned(
                store,
                "pods",
                ds,
                &t,
                pods::Name::Generate(&prefix),
                &[(HASH_LABEL, &hash)],
            )
            .await
            {
                Ok(p) => {
                    rec.record(
                        ds,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {} on node {node}", pods::name(&p)),
                    )
                    .await
                }
                Err(e) => {
                    rec.record(
                        ds,
                        Type::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    )
                    .await;
                    return Err(e);
                }
            }
        }
        for p in to_delete {
            pods::delete(store, "pods", p).await?;
            rec.record(
                ds,
                Type::Normal,
                "SuccessfulDelete",
                &format!("Deleted pod: {}", pods::name(p)),
            )
            .await;
        }
    }
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": up_to_date,
        "numberAvailable": avail,
        "numberUnavailable": desired.saturating_sub(avail),
        "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    pods::write_status(store, "daemonsets", ds, status).await?;
    Ok(owned
        .iter()
        .filter(|p| pods::is_active(p) && !available(p))
        .filter_map(|p| pods::available_at(p, min_ready))
        .min())
}
