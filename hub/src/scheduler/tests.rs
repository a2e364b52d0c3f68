use serde_json::{Value, json};
use spoke_api::core::{Node, Pod};

use super::*;

/// A table row: what it shows, nodes, bound pods, the pod, the outcome.
type Case<'a, W> = (&'a str, Vec<Node>, Vec<Pod>, Pod, W);

fn node(name: &str, extra: Value) -> Node {
    let mut n = json!({"metadata": {"name": name, "labels": {}},
        "status": {"allocatable": {"pods": "10", "cpu": "2", "memory": "1Gi"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    merge(&mut n, extra);
    serde_json::from_value(n).unwrap()
}

fn pod(spec: Value) -> Pod {
    let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "app:1"}]}});
    merge(&mut p, spec);
    serde_json::from_value(p).unwrap()
}

/// JSON merge patch, so each table row states only what differs.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn bound(to: &str, extra: Value) -> Pod {
    let mut p = pod(extra);
    p.spec.node_name = Some(to.into());
    p
}

fn other_image(mut spec: Value) -> Value {
    let resources = spec.pointer("/spec/containers/0/resources").cloned();
    let mut c = json!({"name": "c", "image": "other:1"});
    if let Some(r) = resources {
        c["resources"] = r;
    }
    merge(&mut spec, json!({"spec": {"containers": [c]}}));
    spec
}

fn pick_name(pod: &Pod, nodes: &[Node], bound: &[Pod]) -> Result<String, String> {
    let cluster = Cluster::new(nodes, bound);
    pick(pod, &cluster).map(|i| cluster.nodes[i].name.clone())
}

fn requests(cpu: &str, mem: &str) -> Value {
    json!({"spec": {"containers": [{"name": "c", "image": "app:1",
        "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
}

#[test]
fn filters_say_why_each_node_was_refused() {
    let taint = json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}});
    let cases: Vec<Case<Result<&str, &str>>> = vec![
        (
            "not ready and cordoned nodes are skipped",
            vec![
                node(
                    "a",
                    json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                ),
                node("b", json!({"spec": {"unschedulable": true}})),
                node("c", json!({})),
            ],
            vec![],
            pod(json!({})),
            Ok("c"),
        ),
        (
            "nothing fits: reasons in aggregate",
            vec![
                node(
                    "a",
                    json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                ),
                node("b", json!({"spec": {"unschedulable": true}})),
            ],
            vec![],
            pod(json!({})),
            Err("0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable."),
        ),
        (
            "memory of bound pods plus this pod must fit",
            vec![
                node("a", json!({})),
                node("b", json!({})),
                node("c", json!({})),
            ],
            vec![
                bound("a", requests("100m", "800Mi")),
                bound("b", requests("100m", "800Mi")),
            ],
            pod(requests("100m", "300Mi")),
            Ok("c"),
        ),
        (
            "the issue's example message",
            vec![
                node("a", json!({})),
                node("b", json!({})),
                node("c", json!({})),
                node("d", taint.clone()),
                node("e", taint.clone()),
            ],
            vec![
                bound("a", requests("100m", "800Mi")),
                bound("b", requests("100m", "800Mi")),
                bound("c", requests("100m", "800Mi")),
            ],
            pod(requests("100m", "300Mi")),
            Err(
                "0/5 nodes are available: 3 Insufficient memory, 2 node(s) had untolerated taint {k: v}.",
            ),
        ),
        (
            "cpu and memory short on one node count both",
            vec![node("a", json!({}))],
            vec![bound("a", requests("1900m", "800Mi"))],
            pod(requests("200m", "300Mi")),
            Err("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."),
        ),
        (
            "finished pods free their resources",
            vec![node("a", json!({}))],
            vec![{
                let mut p = bound("a", requests("1900m", "800Mi"));
                p.status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
                p
            }],
            pod(requests("200m", "300Mi")),
            Ok("a"),
        ),
        (
            "pod count",
            vec![node("a", json!({"status": {"allocatable": {"pods": "1"}}}))],
            vec![bound("a", json!({}))],
            pod(json!({})),
            Err("0/1 nodes are available: 1 Too many pods."),
        ),
        (
            "nodeSelector on the arch label",
            vec![
                node(
                    "a",
                    json!({"metadata": {"labels": {"kubernetes.io/arch": "amd64"}}}),
                ),
                node(
                    "b",
                    json!({"metadata": {"labels": {"kubernetes.io/arch": "arm64"}}}),
                ),
            ],
            vec![],
            pod(json!({"spec": {"nodeSelector": {"kubernetes.io/arch": "arm64"}}})),
            Ok("b"),
        ),
        (
            "nodeSelector matches nothing",
            vec![node(
                "a",
                json!({"metadata": {"labels": {"kubernetes.io/os": "linux"}}}),
            )],
            vec![],
            pod(json!({"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}})),
            Err("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."),
        ),
        (
            "untolerated taint",
            vec![node("a", taint.clone())],
            vec![],
            pod(json!({})),
            Err("0/1 nodes are available: 1 node(s) had untolerated taint {k: v}."),
        ),
        (
            "Equal toleration",
            vec![node("a", taint.clone())],
            vec![],
            pod(
                json!({"spec": {"tolerations": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
            ),
            Ok("a"),
        ),
        (
            "Equal toleration with another value does not tolerate",
            vec![node("a", taint.clone())],
            vec![],
            pod(json!({"spec": {"tolerations": [{"key": "k", "value": "w"}]}})),
            Err("0/1 nodes are available: 1 node(s) had untolerated taint {k: v}."),
        ),
        (
            "Exists without key tolerates everything",
            vec![node(
                "a",
                json!({"spec": {"taints": [
                {"key": "k", "value": "v", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
            )],
            vec![],
            pod(json!({"spec": {"tolerations": [{"operator": "Exists"}]}})),
            Ok("a"),
        ),
        (
            "NoExecute taint filters",
            vec![node(
                "a",
                json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
            )],
            vec![],
            pod(
                json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}}),
            ),
            Err(
                "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.",
            ),
        ),
        (
            "PreferNoSchedule does not filter",
            vec![node(
                "a",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}}),
            )],
            vec![],
            pod(json!({})),
            Ok("a"),
        ),
    ];
    for (what, nodes, bound, pod, want) in cases {
        let got = pick_name(&pod, &nodes, &bound);
        assert_eq!(got, want.map(String::from).map_err(String::from), "{what}");
    }
}

#[test]
fn required_node_affinity_operators() {
    let nodes = [
        node(
            "a",
            json!({"metadata": {"labels": {"site": "farm", "cores": "4"}}}),
        ),
        node(
            "b",
            json!({"metadata": {"labels": {"site": "mill", "cores": "8"}}}),
        ),
        node("c", json!({"metadata": {"labels": {"cores": "x"}}})),
    ];
    let cases = [
        (
            json!({"key": "site", "operator": "In", "values": ["mill", "barn"]}),
            Ok("b"),
        ),
        (
            json!({"key": "site", "operator": "NotIn", "values": ["farm", "mill"]}),
            Ok("c"),
        ),
        (json!({"key": "site", "operator": "Exists"}), Ok("a")),
        (json!({"key": "site", "operator": "DoesNotExist"}), Ok("c")),
        (
            json!({"key": "cores", "operator": "Gt", "values": ["4"]}),
            Ok("b"),
        ),
        (
            json!({"key": "cores", "operator": "Lt", "values": ["8"]}),
            Ok("a"),
        ),
        (
            json!({"key": "cores", "operator": "Gt", "values": ["8"]}),
            Err("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."),
        ),
    ];
    for (expr, want) in cases {
        let p = pod(json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expr.clone()]}]}}}}}));
        // Spread the other nodes' load so scores do not decide for the filter.
        assert_eq!(
            pick_name(&p, &nodes, &[]),
            want.map(String::from).map_err(String::from),
            "{expr}"
        );
    }
    // Terms are ORed.
    let p = pod(json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "site", "operator": "In", "values": ["nowhere"]}]},
            {"matchExpressions": [{"key": "cores", "operator": "In", "values": ["x"]}]}]}}}}}));
    assert_eq!(pick_name(&p, &nodes, &[]), Ok("c".into()));
}

fn owned(by: &str, extra: Value) -> Value {
    let mut v = json!({"metadata": {"labels": {"app": "web"}, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": by, "uid": by, "controller": true}]}});
    merge(&mut v, extra);
    v
}

#[test]
fn scores_rank_feasible_nodes() {
    let plain = || vec![node("a", json!({})), node("b", json!({}))];
    let cases: Vec<Case<&str>> = vec![
        (
            "a tie goes to the first name",
            plain(),
            vec![],
            pod(json!({})),
            "a",
        ),
        (
            "pods that request nothing still spread",
            plain(),
            vec![bound("a", other_image(json!({})))],
            pod(json!({})),
            "b",
        ),
        (
            "least allocated",
            plain(),
            vec![bound("a", other_image(requests("500m", "256Mi")))],
            pod(requests("100m", "100Mi")),
            "b",
        ),
        (
            "balanced allocation: cpu-heavy node gets the memory-heavy pod",
            plain(),
            vec![
                bound("a", other_image(requests("1", "100Mi"))),
                bound("b", other_image(requests("500m", "356Mi"))),
            ],
            pod(requests("0", "512Mi")),
            "a",
        ),
        (
            "pods of one workload spread over nodes",
            plain(),
            vec![bound("a", owned("rs1", json!({})))],
            pod(owned("rs1", json!({}))),
            "b",
        ),
        (
            "the node that holds the module wins",
            plain(),
            vec![bound("b", json!({}))],
            pod(json!({})),
            "b",
        ),
        (
            "preferred node affinity weights",
            vec![
                node("a", json!({"metadata": {"labels": {"site": "farm"}}})),
                node(
                    "b",
                    json!({"metadata": {"labels": {"site": "mill", "solar": "yes"}}}),
                ),
            ],
            vec![],
            pod(json!({"spec": {"affinity": {"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [{"key": "site", "operator": "In", "values": ["farm"]}]}},
                    {"weight": 80, "preference": {"matchExpressions": [{"key": "solar", "operator": "Exists"}]}}]}}}})),
            "b",
        ),
        (
            "PreferNoSchedule lowers the score",
            vec![
                node(
                    "a",
                    json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
                ),
                node("b", json!({})),
            ],
            vec![],
            pod(json!({})),
            "b",
        ),
    ];
    for (what, nodes, bound, pod, want) in cases {
        assert_eq!(pick_name(&pod, &nodes, &bound), Ok(want.into()), "{what}");
    }
}

fn zoned() -> Vec<Node> {
    vec![
        node("a1", json!({"metadata": {"labels": {"zone": "a"}}})),
        node("a2", json!({"metadata": {"labels": {"zone": "a"}}})),
        node("b1", json!({"metadata": {"labels": {"zone": "b"}}})),
        node("x", json!({})),
    ]
}

fn spread(when: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}}}]}})
}

#[test]
fn topology_spread_do_not_schedule_filters_by_skew() {
    let web = || json!({"metadata": {"labels": {"app": "web"}}});
    // Zone a holds 1 web pod, b none: a is at the skew limit, and the
    // unlabelled node is outside every domain.
    let got = pick_name(
        &pod(spread("DoNotSchedule")),
        &zoned(),
        &[bound("a1", web())],
    );
    assert_eq!(got, Ok("b1".into()));
    let full = [bound("a1", web()), bound("b1", web()), bound("b1", web())];
    let cluster = Cluster::new(&zoned(), &full);
    let p = pod(json!({"metadata": {"labels": {"app": "web"}}, "spec": {
        "nodeSelector": {"zone": "b"},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}));
    // With the selector, zone b is the only domain, so the skew is 0.
    assert_eq!(
        pick(&p, &cluster).map(|i| cluster.nodes[i].name.clone()),
        Ok("b1".into())
    );
    let mut unselected = pod(spread("DoNotSchedule"));
    unselected.spec.node_selector.clear();
    let got = pick_name(&unselected, &zoned(), &full).unwrap();
    assert!(
        got.starts_with('a'),
        "zone a has 1, b has 2: only a is within skew, got {got}"
    );
    let one_zone = [node("x", json!({}))];
    assert_eq!(
        pick_name(&pod(spread("DoNotSchedule")), &one_zone, &[]),
        Err(
            "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints."
                .into()
        )
    );
}

#[test]
fn topology_spread_schedule_anyway_only_scores() {
    let web = || json!({"metadata": {"labels": {"app": "web"}}});
    let bound = [bound("a1", web()), bound("a1", web()), bound("b1", web())];
    let only_a = [zoned()[0].clone()];
    // ScheduleAnyway never filters, even beyond the skew.
    assert_eq!(
        pick_name(&pod(spread("ScheduleAnyway")), &only_a, &bound[..2]),
        Ok("a1".into())
    );
    // Among several nodes, the emptier zone wins even though a2 is empty.
    assert_eq!(
        pick_name(&pod(spread("ScheduleAnyway")), &zoned()[..3], &bound[..2]),
        Ok("b1".into())
    );
}

#[test]
fn one_pass_spreads_replicas_as_it_assumes_them() {
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(n, json!({})))
        .collect();
    let mut cluster = Cluster::new(&nodes, &[]);
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = pod(owned("rs1", json!({})));
        let i = pick(&p, &cluster).unwrap();
        cluster.assume(i, &p);
        got.push(cluster.nodes[i].name.clone());
    }
    got.sort();
    assert_eq!(got, ["n1", "n2", "n3"]);
}

fn listening(port: i32, protocol: Option<&str>) -> Value {
    let mut p = json!({"containerPort": port});
    if let Some(proto) = protocol {
        p["protocol"] = json!(proto);
    }
    json!({"spec": {"containers": [{"name": "c", "image": "app:1", "ports": [p]}]}})
}

#[test]
fn a_port_taken_on_a_board_keeps_a_second_listener_off_it() {
    let nodes = vec![node("a", json!({})), node("b", json!({}))];
    // a already runs a pod on 8080/TCP: the next one goes to b.
    let on_a = vec![bound("a", listening(8080, None))];
    assert_eq!(
        pick_name(&pod(listening(8080, Some("TCP"))), &nodes, &on_a),
        Ok("b".to_string())
    );
    // Another port, or the same number over UDP, does not collide.
    assert_eq!(
        pick_name(&pod(listening(9090, None)), &nodes, &on_a),
        Ok("a".to_string())
    );
    assert_eq!(
        pick_name(&pod(listening(8080, Some("UDP"))), &nodes, &on_a),
        Ok("a".to_string())
    );
    // A finished pod no longer holds its port.
    let mut done = bound("a", listening(8080, None));
    done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    assert_eq!(
        pick_name(&pod(listening(8080, None)), &nodes, &[done]),
        Ok("a".to_string())
    );
    // Both boards taken: Kubernetes' words.
    let both = vec![
        bound("a", listening(8080, None)),
        bound("b", listening(8080, None)),
    ];
    assert_eq!(
        pick_name(&pod(listening(8080, None)), &nodes, &both),
        Err("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.".to_string())
    );
    // Within one pass, a placement holds its port for the next pick.
    let mut cluster = Cluster::new(&nodes, &[]);
    let first = pick(&pod(listening(80, None)), &cluster).unwrap();
    cluster.assume(first, &pod(listening(80, None)));
    let second = pick(&pod(listening(80, None)), &cluster).unwrap();
    assert_ne!(first, second);
}
