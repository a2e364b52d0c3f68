//! Scores: rank the nodes that passed the filters. Each score is 0..=100
//! over the feasible nodes; their sum decides, and ties go to the node
//! whose name sorts first (the cluster keeps nodes in name order).

use spoke_api::core::Pod;

use super::filters::Context;
use super::{Cluster, NodeState, controller_uid};

/// Free share after placing the pod, 0..=100 (100 where unlimited).
fn free_pct(alloc: Option<u64>, used: u64, want: u64) -> i64 {
    match alloc {
        Some(a) if a > 0 => {
            let after = used.saturating_add(want).min(a);
            ((a - after) as u128 * 100 / a as u128) as i64
        }
        _ => 100,
    }
}

/// Free cpu and memory shares after placing the pod, with the scoring
/// defaults for pods that request nothing.
fn free(ctx: &Context, n: &NodeState) -> (i64, i64) {
    let want = ctx.request.for_scoring();
    let used = n.used_for_scoring;
    (
        free_pct(n.alloc_cpu_milli, used.cpu_milli, want.cpu_milli),
        free_pct(n.alloc_memory, used.memory, want.memory),
    )
}

/// Least allocated: prefers nodes with the most cpu and memory left.
pub fn least_allocated(ctx: &Context, n: &NodeState) -> i64 {
    let (cpu, mem) = free(ctx, n);
    (cpu + mem) / 2
}

/// Balanced allocation: prefers nodes whose cpu and memory fill evenly.
pub fn balanced(ctx: &Context, n: &NodeState) -> i64 {
    let (cpu, mem) = free(ctx, n);
    100 - (cpu - mem).abs()
}

/// Share of the pod's module images the node already holds, 0..=50: a
/// cached module saves a download, but should not outweigh a full node.
pub fn image_locality(pod: &Pod, n: &NodeState) -> i64 {
    let all = pod.spec.containers.len() as i64;
    if all == 0 {
        return 0;
    }
    let have = pod
        .spec
        .containers
        .iter()
        .filter(|c| n.images.contains(&c.image))
        .count() as i64;
    have * 50 / all
}

/// Sum of the weights of preferred node-affinity terms the node matches.
pub fn preferred_affinity(pod: &Pod, n: &NodeState) -> i64 {
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .map_or(0, |na| {
            na.preferred_during_scheduling_ignored_during_execution
                .iter()
                .filter(|p| p.preference.matches(&n.labels))
                .map(|p| i64::from(p.weight))
                .sum()
        })
}

/// Raw "fewer is better" counts, normalized to 100 for the smallest.
fn inverse(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&c| if max == 0 { 100 } else { (max - c) * 100 / max })
        .collect()
}

/// Raw "more is better" values, normalized to 100 for the largest.
fn direct(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|&c| if max <= 0 { 0 } else { c * 100 / max })
        .collect()
}

/// Every score of every feasible node, in `feasible` order, for tests and
/// for [`best`].
pub fn totals(pod: &Pod, cluster: &Cluster, ctx: &Context, feasible: &[usize]) -> Vec<i64> {
    let nodes: Vec<&NodeState> = feasible.iter().map(|&i| &cluster.nodes[i]).collect();
    let owner = controller_uid(pod);
    let same_workload: Vec<i64> = nodes
        .iter()
        .map(|n| {
            owner
                .and_then(|u| n.owners.get(u))
                .map_or(0, |&c| i64::from(c))
        })
        .collect();
    let prefer_no: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.taints
                .iter()
                .filter(|t| {
                    t.effect == "PreferNoSchedule"
                        && !pod.spec.tolerations.iter().any(|tol| tol.tolerates(t))
                })
                .count() as i64
        })
        .collect();
    let soft_spread: Vec<i64> = nodes
        .iter()
        .map(|n| {
            ctx.spreads
                .iter()
                .filter(|s| s.constraint.when_unsatisfiable == "ScheduleAnyway")
                .map(|s| {
                    n.labels
                        .get(&s.constraint.topology_key)
                        .and_then(|d| s.counts.get(d.as_str()).copied())
                        // A node outside every domain is the worst place.
                        .unwrap_or(s.counts.values().copied().max().unwrap_or(0) + 1)
                })
                .sum()
        })
        .collect();
    let affinity: Vec<i64> = nodes.iter().map(|n| preferred_affinity(pod, n)).collect();
    let (same_workload, prefer_no, soft_spread, affinity) = (
        inverse(&same_workload),
        inverse(&prefer_no),
        inverse(&soft_spread),
        direct(&affinity),
    );
    nodes
        .iter()
        .enumerate()
        .map(|(k, n)| {
            least_allocated(ctx, n)
                + balanced(ctx, n)
                + image_locality(pod, n)
                + 2 * same_workload[k]
                + 2 * soft_spread[k]
                + 2 * affinity[k]
                + prefer_no[k]
        })
        .collect()
}

/// The feasible node with the highest total; the first by name on a tie.
pub fn best(pod: &Pod, cluster: &Cluster, ctx: &Context, feasible: &[usize]) -> usize {
    let totals = totals(pod, cluster, ctx, feasible);
    let mut best = 0;
    for k in 1..feasible.len() {
        if totals[k] > totals[best] {
            best = k;
        }
    }
    feasible[best]
}
