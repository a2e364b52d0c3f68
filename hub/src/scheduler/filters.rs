//! Filters: whether a pod may run on a node, and if not, why, in the words
//! Kubernetes uses in its `FailedScheduling` events.

use std::collections::HashMap;
use std::fmt;

use spoke_api::core::{NodeSelectorTerm, Pod, Taint, TopologySpreadConstraint};
use spoke_api::selector::Selector;

use super::{Cluster, NodeState, Request};

/// Why one node was filtered out. A node can fail several resource checks
/// at once; the other filters stop at the first failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason<'a> {
    NotReady,
    Unschedulable,
    Affinity,
    Taint(&'a Taint),
    Ports,
    Cpu,
    Memory,
    Pods,
    Spread,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Affinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Taint(t) => write!(
                f,
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            ),
            Reason::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::Cpu => f.write_str("Insufficient cpu"),
            Reason::Memory => f.write_str("Insufficient memory"),
            Reason::Pods => f.write_str("Too many pods"),
            Reason::Spread => f.write_str("node(s) didn't match pod topology spread constraints"),
        }
    }
}

/// A `DoNotSchedule` spread constraint with its matching-pod counts per
/// domain, computed once per pod.
pub struct Spread<'a> {
    pub constraint: &'a TopologySpreadConstraint,
    pub counts: HashMap<&'a str, i64>,
    pub min: i64,
}

/// What the filters need from the pod, prepared once per pick.
pub struct Context<'a> {
    pub pod: &'a Pod,
    pub request: Request,
    required: Option<&'a [NodeSelectorTerm]>,
    /// Spread constraints (both kinds) with their counts.
    pub spreads: Vec<Spread<'a>>,
}

/// The pod's topology spread selector; an absent one matches no pod, a
/// broken one (refused at admission) also none.
fn spread_selector(c: &TopologySpreadConstraint) -> Option<Selector> {
    c.label_selector.as_ref().and_then(|s| s.to_selector().ok())
}

impl<'a> Context<'a> {
    pub fn new(pod: &'a Pod, cluster: &'a Cluster) -> Context<'a> {
        let required = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice());
        let mut ctx = Context {
            pod,
            request: Request::of(pod),
            required,
            spreads: Vec::new(),
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        for c in &pod.spec.topology_spread_constraints {
            let sel = spread_selector(c);
            let mut counts: HashMap<&str, i64> = HashMap::new();
            // Domains are those of nodes the pod could otherwise run on by
            // its selector and affinity, as in Kubernetes.
            for n in cluster.nodes.iter().filter(|n| ctx.matches_node(n)) {
                let Some(domain) = n.labels.get(&c.topology_key) else {
                    continue;
                };
                let here = sel.as_ref().map_or(0, |s| {
                    n.pods
                        .iter()
                        .filter(|p| p.namespace == ns && s.matches(&p.labels))
                        .count() as i64
                });
                *counts.entry(domain.as_str()).or_default() += here;
            }
            let min = counts.values().copied().min().unwrap_or(0);
            ctx.spreads.push(Spread {
                constraint: c,
                counts,
                min,
            });
        }
        ctx
    }

    /// `nodeSelector` and required node affinity.
    fn matches_node(&self, node: &NodeState) -> bool {
        let sel = &self.pod.spec.node_selector;
        if !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v)) {
            return false;
        }
        self.required
            .is_none_or(|terms| terms.iter().any(|t| t.matches(&node.labels)))
    }

    /// The first taint with `effect` that the pod does not tolerate.
    pub fn untolerated<'n>(&self, node: &'n NodeState, effect: &str) -> Option<&'n Taint> {
        node.taints.iter().find(|t| {
            t.effect == effect && !self.pod.spec.tolerations.iter().any(|tol| tol.tolerates(t))
        })
    }

    /// Whether the pod may run on `node`, or the reasons it may not.
    pub fn check<'n>(&self, node: &'n NodeState) -> Result<(), Vec<Reason<'n>>> {
        if !node.ready {
            return Err(vec![Reason::NotReady]);
        }
        if node.unschedulable {
            return Err(vec![Reason::Unschedulable]);
        }
        if !self.matches_node(node) {
            return Err(vec![Reason::Affinity]);
        }
        if let Some(t) = self
            .untolerated(node, "NoSchedule")
            .or_else(|| self.untolerated(node, "NoExecute"))
        {
            return Err(vec![Reason::Taint(t)]);
        }
        if super::pod_ports(self.pod).any(|p| node.ports.contains(&p)) {
            return Err(vec![Reason::Ports]);
        }
        let mut short = Vec::new();
        let over = |alloc: Option<u64>, used: u64, want: u64| {
            alloc.is_some_and(|a| used.saturating_add(want) > a)
        };
        if self.request.cpu_milli > 0
            && over(
                node.alloc_cpu_milli,
                node.used.cpu_milli,
                self.request.cpu_milli,
            )
        {
            short.push(Reason::Cpu);
        }
        if self.request.memory > 0 && over(node.alloc_memory, node.used.memory, self.request.memory)
        {
            short.push(Reason::Memory);
        }
        if over(node.alloc_pods, node.pod_count, 1) {
            short.push(Reason::Pods);
        }
        if !short.is_empty() {
            return Err(short);
        }
        for s in &self.spreads {
            if s.constraint.when_unsatisfiable != "DoNotSchedule" {
                continue;
            }
            let fits = node
                .labels
                .get(&s.constraint.topology_key)
                .is_some_and(|d| {
                    let here = s.counts.get(d.as_str()).copied().unwrap_or(0);
                    here + 1 - s.min <= i64::from(s.constraint.max_skew)
                });
            if !fits {
                return Err(vec![Reason::Spread]);
            }
        }
        Ok(())
    }
}
