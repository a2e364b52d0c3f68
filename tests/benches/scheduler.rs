//! How fast the pure scheduler places pods over 1,000 nodes, beside a
//! same-run baseline: one pass over the node list per pod that reads one
//! label of each node (the least any scheduler that looks at every node
//! for every pod does).
//!
//! The fleet: 1,000 nodes over 10 zones, amd64 and arm64, 10% with a
//! `NoSchedule` taint, 5% with `PreferNoSchedule`, 3% not Ready, 2%
//! cordoned, and 10 bound pods each from 50 ReplicaSets using 20 modules.
//! The pods placed: 2,000, a mix of plain pods with requests, nodeSelector on
//! the architecture, required and preferred node affinity, tolerations and
//! topology spread (both kinds); each placement is counted before the next,
//! as in one scheduling pass.
//!
//! Run with `scripts/bench` or `cargo bench -p spoke-e2e --bench scheduler`.
//! Prints; asserts nothing (the goal is ≥ 1,000 pods/s on this machine).

use std::hint::black_box;
use std::time::Instant;

use serde_json::{Value, json};
use spoke_api::core::{Node, Pod};
use spoke_e2e::stats::Figure;
use spoke_hub::scheduler::{Cluster, pick};

const NODES: usize = 1_000;
const BOUND_PER_NODE: usize = 10;
const PODS: usize = 2_000;

fn node(i: usize) -> Node {
    let mut taints = Vec::new();
    if i % 10 == 3 {
        taints.push(json!({"key": "dedicated", "value": "camera", "effect": "NoSchedule"}));
    }
    if i % 20 == 7 {
        taints.push(json!({"key": "battery", "value": "low", "effect": "PreferNoSchedule"}));
    }
    let ready = if i % 33 == 5 { "Unknown" } else { "True" };
    serde_json::from_value(json!({
        "metadata": {"name": format!("board-{i:04}"), "labels": {
            "kubernetes.io/arch": if i.is_multiple_of(3) { "amd64" } else { "arm64" },
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": format!("board-{i:04}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 10),
            "site": format!("site-{}", i % 40),
            "cores": (2 + i % 4 * 2).to_string()}},
        "spec": {"unschedulable": i % 50 == 11, "taints": taints},
        "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": ready}]}}))
    .expect("node")
}

fn pod(i: usize, shape: usize) -> Pod {
    let rs = i % 50;
    let mut spec = json!({"containers": [{"name": "c", "image": format!("app-{}:1", i % 20),
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]});
    match shape % 6 {
        1 => spec["nodeSelector"] = json!({"kubernetes.io/arch": "arm64"}),
        2 => {
            spec["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["3"]},
                                          {"key": "site", "operator": "NotIn", "values": ["site-1", "site-2"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 30, "preference": {"matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-1", "zone-2"]}]}}]}})
        }
        3 => {
            spec["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "camera", "effect": "NoSchedule"}])
        }
        4 => {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": format!("rs-{rs}")}}}])
        }
        5 => {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 2,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": format!("rs-{rs}")}}}])
        }
        _ => {}
    }
    let p: Value = json!({"metadata": {"name": format!("p-{i}"), "namespace": "default",
        "labels": {"app": format!("rs-{rs}")},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": format!("rs-{rs}"), "uid": format!("uid-{rs}"), "controller": true}]},
        "spec": spec});
    serde_json::from_value(p).expect("pod")
}

fn main() {
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    let bound: Vec<Pod> = (0..NODES * BOUND_PER_NODE)
        .map(|i| {
            let mut p = pod(i, 0);
            p.spec.node_name = Some(format!("board-{:04}", i % NODES));
            p
        })
        .collect();
    let pending: Vec<Pod> = (0..PODS)
        .map(|i| pod(NODES * BOUND_PER_NODE + i, i))
        .collect();

    let start = Instant::now();
    let base = Cluster::new(&nodes, &bound);
    let build = start.elapsed();

    // Baseline: visit every node once per pod and read one label.
    let mut cluster = base.clone();
    let start = Instant::now();
    for p in &pending {
        let want = p.metadata.labels.get("app");
        let hits = cluster
            .nodes
            .iter()
            .filter(|n| n.labels.get("site") == want)
            .count();
        black_box(hits);
    }
    let baseline = start.elapsed();

    let start = Instant::now();
    let (mut placed, mut refused) = (0usize, 0usize);
    for p in &pending {
        match pick(p, &cluster) {
            Ok(i) => {
                cluster.assume(i, p);
                placed += 1;
            }
            Err(_) => refused += 1,
        }
    }
    let scheduling = start.elapsed();

    let per_s = |d: std::time::Duration| PODS as f64 / d.as_secs_f64();
    println!(
        "scheduler: {PODS} pods over {NODES} nodes with {} bound pods",
        bound.len()
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| build the cluster summary once per pass | {:.1} ms |",
        build.as_secs_f64() * 1e3
    );
    println!(
        "| pick + assume | {:.0} pods/s ({:.0} µs/pod; {placed} placed, {refused} refused) |",
        per_s(scheduling),
        scheduling.as_secs_f64() * 1e6 / PODS as f64
    );
    println!(
        "| baseline: visit each node once per pod, read one label | {:.0} pods/s ({:.0} µs/pod) |",
        per_s(baseline),
        baseline.as_secs_f64() * 1e6 / PODS as f64
    );
    println!(
        "| ratio scheduling / baseline | {:.1}× |",
        scheduling.as_secs_f64() / baseline.as_secs_f64()
    );
    Figure::new(
        "scheduler",
        &format!("pick + assume, {PODS} pods over {NODES} nodes"),
        per_s(scheduling),
        "pods/s",
    )
    .baseline(
        "visit each node once per pod, read one label",
        per_s(baseline),
    )
    .goal("≥ 1,000 pods/s")
    .emit();
    Figure::ms(
        "scheduler",
        "build the cluster summary (once per pass)",
        build,
    )
    .emit();
}
