//! The scheduler: binds each unscheduled pod to a node.
//!
//! [`pick`] is a pure function of the pod and a [`Cluster`] (the nodes and
//! the pods already bound to them): [`filters`] drop the nodes the pod
//! cannot run on, [`scores`] rank the rest, and ties go to the node whose
//! name sorts first. [`run`] feeds it from the store and binds with a
//! compare-and-swap write, so two passes can never double-book a pod.

pub mod filters;
pub mod scores;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use spoke_api::core::{Node, Pod, Taint};

use crate::events::{Recorder, Type};
use crate::store::{self, Store, revision_of};

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// What a pod asks for: milli-cpu and bytes of memory, summed over its
/// containers' `resources.requests` (an unparsable quantity counts as 0;
/// validation refuses those at admission).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Request {
    pub cpu_milli: u64,
    pub memory: u64,
}

impl Request {
    pub fn of(pod: &Pod) -> Request {
        let mut r = Request::default();
        for c in &pod.spec.containers {
            let req = &c.resources.requests;
            r.cpu_milli += req.get("cpu").and_then(|q| q.to_milli().ok()).unwrap_or(0);
            r.memory += req
                .get("memory")
                .and_then(|q| q.to_units().ok())
                .unwrap_or(0);
        }
        r
    }

    /// The request as scores see it: Kubernetes counts a pod that asks for
    /// nothing as 100m cpu and 200Mi memory, so such pods still spread out.
    pub fn for_scoring(self) -> Request {
        Request {
            cpu_milli: if self.cpu_milli == 0 {
                100
            } else {
                self.cpu_milli
            },
            memory: if self.memory == 0 {
                200 << 20
            } else {
                self.memory
            },
        }
    }
}

/// A bound pod as the filters and scores see it.
#[derive(Debug, Clone)]
pub struct BoundPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// One node and what is already bound to it.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    pub unschedulable: bool,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `status.allocatable`; `None` where the node does not say (no limit).
    pub alloc_cpu_milli: Option<u64>,
    pub alloc_memory: Option<u64>,
    pub alloc_pods: Option<u64>,
    /// Sums over bound, unfinished pods.
    pub used: Request,
    /// The same with [`Request::for_scoring`] defaults.
    pub used_for_scoring: Request,
    pub pod_count: u64,
    /// Module images of bound pods: the agent has them cached.
    pub images: HashSet<String>,
    /// Bound pods per controller owner uid.
    pub owners: HashMap<String, u32>,
    /// `(protocol, port)` that bound pods listen on. Pods on a board share
    /// its address (`--pod-address`), so a `containerPort` is a host port.
    pub ports: HashSet<(String, i32)>,
    pub pods: Vec<BoundPod>,
}

/// The nodes and their bound pods, built once per pass; [`Cluster::assume`]
/// adds each placement so the next pod of the same pass sees it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub nodes: Vec<NodeState>,
}

/// The uid of the pod's controller (`ownerReferences[].controller: true`).
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Cluster {
    /// Builds the view from nodes and pods; pods without a node, finished
    /// pods and pods bound to unknown nodes are left out. Nodes are kept in
    /// name order, which is also the tie-break.
    pub fn new(nodes: &[Node], pods: &[Pod]) -> Cluster {
        let mut states: Vec<NodeState> = nodes
            .iter()
            .filter(|n| !n.metadata.name.is_empty())
            .map(|n| {
                let alloc = n.status.as_ref().map(|s| &s.allocatable);
                let q = |k: &str| alloc.and_then(|a| a.get(k));
                NodeState {
                    name: n.metadata.name.clone(),
                    ready: n.ready_status() == "True",
                    unschedulable: n.spec.unschedulable,
                    labels: n.metadata.labels.clone(),
                    taints: n.spec.taints.clone(),
                    alloc_cpu_milli: q("cpu").and_then(|q| q.to_milli().ok()),
                    alloc_memory: q("memory").and_then(|q| q.to_units().ok()),
                    alloc_pods: q("pods").and_then(|q| q.to_units().ok()),
                    ..Default::default()
                }
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        let mut cluster = Cluster { nodes: states };
        for pod in pods {
            if finished(pod) {
                continue;
            }
            if let Some(i) = pod.spec.node_name.as_deref().and_then(|n| cluster.index(n)) {
                cluster.assume(i, pod);
            }
        }
        cluster
    }

    /// Position of the node called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// Counts `pod` as bound to node `i`.
    pub fn assume(&mut self, i: usize, pod: &Pod) {
        let req = Request::of(pod);
        let n = &mut self.nodes[i];
        n.used.cpu_milli += req.cpu_milli;
        n.used.memory += req.memory;
        let scored = req.for_scoring();
        n.used_for_scoring.cpu_milli += scored.cpu_milli;
        n.used_for_scoring.memory += scored.memory;
        n.pod_count += 1;
        for c in &pod.spec.containers {
            if !n.images.contains(&c.image) {
                n.images.insert(c.image.clone());
            }
        }
        if let Some(uid) = controller_uid(pod) {
            *n.owners.entry(uid.to_string()).or_default() += 1;
        }
        n.ports.extend(pod_ports(pod));
        n.pods.push(BoundPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone(),
        });
    }
}

/// `(protocol, port)` of every declared `containerPort`; the protocol
/// defaults to TCP, as in Kubernetes.
pub fn pod_ports(pod: &Pod) -> impl Iterator<Item = (String, i32)> + '_ {
    pod.spec.containers.iter().flat_map(|c| {
        c.ports.iter().map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP").to_string();
            (protocol, p.container_port)
        })
    })
}

/// Chooses a node for `pod` (its index in `cluster.nodes`), or says why
/// none fits, in Kubernetes' words:
/// `0/5 nodes are available: 3 Insufficient memory, 2 node(s) had untolerated taint {k: v}.`
pub fn pick(pod: &Pod, cluster: &Cluster) -> Result<usize, String> {
    let ctx = filters::Context::new(pod, cluster);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        match ctx.check(node) {
            Ok(()) => feasible.push(i),
            Err(why) => {
                for r in why {
                    *reasons.entry(r.to_string()).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let mut msg = format!("0/{} nodes are available", cluster.nodes.len());
        if !detail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&detail.join(", "));
        }
        msg.push('.');
        return Err(msg);
    }
    Ok(scores::best(pod, cluster, &ctx, &feasible))
}

/// Schedules pending pods whenever pods or nodes change, and every few
/// seconds anyway (level-triggered: a missed event only delays a pod).
pub async fn run(store: Store) {
    let recorder = Recorder::new(store.clone(), "spoke-scheduler");
    let mut events = store.subscribe();
    // Node writes that change nothing a filter or score reads (revisions,
    // leases, heartbeats) do not start a pass.
    let mut facts = crate::controllers::nodes::Facts::default();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) if (e.key.starts_with("nodes/") && facts.changed(&e))
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
    // Nothing waits for a node: no need to read and decode every Node (a
    // fleet of 1,000 nodes made this pass, run on every Node write and
    // every 2 s, the hub's main cost when idle).
    let waiting = |p: &Value| {
        p.pointer("/spec/nodeName").is_none_or(Value::is_null)
            && p.pointer("/metadata/deletionTimestamp").is_none()
    };
    if !pods.iter().any(waiting) {
        return Ok(());
    }
    let (nodes, _) = store.list(&store::prefix("nodes", None)).await?;
    let nodes: Vec<Node> = nodes
        .into_iter()
        .filter_map(|n| serde_json::from_value(n).ok())
        .collect();
    // A stored pod passed admission, so it decodes; one that does not is
    // left alone rather than scheduled half-understood.
    let typed: Vec<Option<Pod>> = pods
        .iter()
        .map(|p| serde_json::from_value(p.clone()).ok())
        .collect();
    let bound: Vec<Pod> = typed
        .iter()
        .flatten()
        .filter(|p| p.spec.node_name.is_some())
        .cloned()
        .collect();
    let mut cluster = Cluster::new(&nodes, &bound);
    // Decide every placement first (in memory, each counted before the
    // next pick), then write them all at once: awaited one by one, each a
    // durable commit plus its event, the writes held a fleet of 10,000
    // nodes to about 10 pods a second; written together, the store's group
    // commit flushes many in one go. A conflict leaves that pod for the
    // next pass.
    let mut decided = Vec::new();
    for (pod, typed) in pods.iter().zip(&typed) {
        let Some(typed) = typed else { continue };
        if typed.spec.node_name.is_some() || typed.metadata.deletion_timestamp.is_some() {
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
        let next = match pick(typed, &cluster) {
            Ok(i) => {
                cluster.assume(i, typed);
                let node = &cluster.nodes[i].name;
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
        decided.push((key, next, revision_of(pod)));
    }
    let writes = decided
        .into_iter()
        .map(|(key, next, expected)| bind(store, recorder, key, next, expected));
    for result in futures_util::future::join_all(writes).await {
        result?;
    }
    Ok(())
}

/// Writes one pod's placement (or why it has none) and records the event.
async fn bind(
    store: &Store,
    recorder: &Recorder,
    key: String,
    next: Value,
    expected: Option<u64>,
) -> Result<(), store::Error> {
    match store.update(&key, next, expected).await {
        Ok(stored) => {
            let cond = stored.pointer("/status/conditions/0");
            let field = |f: &str| cond.and_then(|c| c.get(f)).and_then(Value::as_str);
            let (ns, name) = (
                str_at(&stored, "/metadata/namespace").unwrap_or_default(),
                str_at(&stored, "/metadata/name").unwrap_or_default(),
            );
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
            Ok(())
        }
        Err(store::Error::Conflict | store::Error::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
