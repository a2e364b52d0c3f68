//! Node lifecycle end to end: a hub, two real agents running the hello
//! module, one of them reaching the hub's broker through a TCP proxy that
//! the test can cut, as a board's link would be. Its agent process keeps
//! running (and keeps running its pods) while the link is down. Also
//! `spoke cordon`, `uncordon` and `drain` as a user runs them.

use std::time::Duration;

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::proxy::TcpProxy;
use spoke_e2e::{Hub, example_wasm, node_ready, tail};

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Tolerates an unreachable or not-ready node for 2 s only, so that the
/// test need not wait Kubernetes' default 300 s.
fn short_tolerations() -> Value {
    json!([
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
    ])
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
           "spec": {"containers": [{"name": "main", "image": "hello:v1"}],
                    "tolerations": short_tolerations()}})
}

async fn pods_of(c: &Client, app: &str) -> Vec<Value> {
    let list: Value = c
        .get(&format!("{PODS}?labelSelector=app%3D{app}"))
        .await
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn name_of(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap_or("")
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
}

/// `startedAt` and `restartCount` of the pod's container: the same pair
/// later means the pod was not restarted.
fn incarnation(p: &Value) -> (Value, Value) {
    let c = &p["status"]["containerStatuses"][0];
    (
        c["state"]["running"]["startedAt"].clone(),
        c["restartCount"].clone(),
    )
}

fn has_taint(node: &Value, key: &str, effect: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == key && t["effect"] == effect))
}

async fn wait_until<T>(hub: &Hub, what: &str, check: impl AsyncFn() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for: {what}\n--- hub log ---\n{}",
                tail(&hub.proc.output(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_node_cut_off_past_the_toleration_loses_only_replicated_pods_and_stops_stale_copies_on_return()
 {
    let hub = Hub::start_opts(None, &["--node-grace", "1s"]).await;
    let link = TcpProxy::start(hub.mqtt_url.split("://").nth(1).unwrap()).await;
    let _a1 = hub.agent_via("edge-1", &link.url_like(&hub.mqtt_url), &[]);
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();

    // Everything starts on edge-1: edge-2 is cordoned while it is placed.
    let out = hub.spoke(&["cordon", "edge-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node/edge-2 cordoned"
    );
    c.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await
    .unwrap();
    // The DaemonSet's and the bare pod's own short tolerations would get
    // them evicted in Kubernetes; on the edge they stay.
    c.create(
        "/apis/apps/v1/namespaces/default/daemonsets",
        &json!({"metadata": {"name": "daemon"}, "spec": {
            "selector": {"matchLabels": {"app": "daemon"}}, "template": template("daemon")}}),
    )
    .await
    .unwrap();
    let mut solo = template("solo");
    solo["metadata"]["name"] = json!("solo");
    solo["spec"]["nodeName"] = json!("edge-1");
    c.create(PODS, &solo).await.unwrap();

    let (web_before, daemon_before, solo_before) = wait_until(&hub, "pods running", async || {
        let web = pods_of(&c, "web").await;
        let daemon = pods_of(&c, "daemon").await;
        let solo = pods_of(&c, "solo").await;
        let on1 = |ps: &[Value]| -> Option<Value> {
            ps.iter()
                .find(|p| node_of(p) == "edge-1" && running(p))
                .cloned()
        };
        let all_web = web.len() == 2 && web.iter().all(|p| node_of(p) == "edge-1" && running(p));
        let daemons_up = daemon.iter().filter(|p| running(p)).count() == 2;
        (all_web && daemons_up).then_some(())?;
        Some((web, on1(&daemon)?, on1(&solo)?))
    })
    .await;
    let out = hub.spoke(&["uncordon", "edge-2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The link goes down; the agent keeps running.
    link.cut();
    let node = wait_until(&hub, "edge-1 NotReady and tainted", async || {
        let n: Value = c.get("/api/v1/nodes/edge-1").await.ok()?;
        (node_ready(&n) == Some("Unknown")
            && has_taint(&n, "node.kubernetes.io/unreachable", "NoExecute")
            && has_taint(&n, "node.kubernetes.io/unreachable", "NoSchedule"))
        .then_some(n)
    })
    .await;
    let taint = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .unwrap();
    assert!(taint["timeAdded"].is_string(), "{taint}");

    // Past the toleration, the Deployment's pods run on edge-2 ...
    wait_until(&hub, "web replaced on edge-2", async || {
        let web = pods_of(&c, "web").await;
        let live: Vec<&Value> = web.iter().filter(|p| running(p)).collect();
        (live.len() == 2 && live.iter().all(|p| node_of(p) == "edge-2")).then_some(())
    })
    .await;
    // ... while the old ones wait, being deleted, for their board.
    for old in &web_before {
        let p: Value = c
            .get(&format!("{PODS}/{}", name_of(old)))
            .await
            .expect("the old copy stays until its board confirms it stopped");
        assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    }
    // The DaemonSet's pod and the bare pod were not deleted.
    for kept in [&daemon_before, &solo_before] {
        let p: Value = c.get(&format!("{PODS}/{}", name_of(kept))).await.unwrap();
        assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
    }
    let events: Value = c.get("/api/v1/namespaces/default/events").await.unwrap();
    let evicted: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "TaintManagerEviction")
        .filter_map(|e| e["involvedObject"]["name"].as_str())
        .collect();
    assert_eq!(evicted.len(), 2, "{events}");
    assert!(evicted.iter().all(|n| n.starts_with("web-")), "{evicted:?}");

    // The link comes back: the stale copies stop on edge-1 and go; the
    // DaemonSet's pod and the bare pod ran throughout.
    link.heal();
    hub.wait_node_ready("edge-1").await;
    wait_until(&hub, "stale web copies gone", async || {
        for old in &web_before {
            let got = c.get::<Value>(&format!("{PODS}/{}", name_of(old))).await;
            if !matches!(&got, Err(e) if e.code() == Some(404)) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let node: Value = wait_until(&hub, "taints removed", async || {
        let n: Value = c.get("/api/v1/nodes/edge-1").await.ok()?;
        n["spec"]["taints"].is_null().then_some(n)
    })
    .await;
    assert!(node["spec"]["unschedulable"].is_null(), "{node}");
    for before in [&daemon_before, &solo_before] {
        let p: Value = c.get(&format!("{PODS}/{}", name_of(before))).await.unwrap();
        assert_eq!(p["metadata"]["uid"], before["metadata"]["uid"]);
        assert!(running(&p), "{p}");
        assert_eq!(incarnation(&p), incarnation(before), "restarted: {p}");
    }
    let web = pods_of(&c, "web").await;
    assert_eq!(web.len(), 2, "{web:?}");
    assert!(web.iter().all(|p| node_of(p) == "edge-2" && running(p)));
}

#[tokio::test]
async fn cordon_and_drain_move_replicated_pods_and_refuse_what_they_must() {
    let hub = Hub::start().await;
    let _a1 = hub.agent("edge-1", &[]);
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();

    // Errors: unknown nodes, with kubectl's words and a failing exit code.
    for verb in ["cordon", "uncordon", "drain"] {
        let out = hub.spoke(&[verb, "nope"]);
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("nodes \"nope\" not found"), "{verb}: {err}");
    }
    let out = hub.spoke(&["drain"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing node name is a usage error"
    );

    // Cordon keeps the scheduler away; uncordon lets it back.
    let out = hub.spoke(&["cordon", "edge-1"]);
    assert!(out.status.success());
    let out = hub.spoke(&["cordon", "edge-1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node/edge-1 already cordoned"
    );
    let n: Value = c.get("/api/v1/nodes/edge-1").await.unwrap();
    assert_eq!(n["spec"]["unschedulable"], true);
    c.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await
    .unwrap();
    wait_until(&hub, "web on edge-2 only", async || {
        let web = pods_of(&c, "web").await;
        (web.len() == 2 && web.iter().all(|p| node_of(p) == "edge-2" && running(p))).then_some(())
    })
    .await;
    let n: Value = c.get("/api/v1/nodes/edge-1").await.unwrap();
    assert!(
        has_taint(&n, "node.kubernetes.io/unschedulable", "NoSchedule"),
        "{n}"
    );
    let out = hub.spoke(&["uncordon", "edge-1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node/edge-1 uncordoned"
    );
    wait_until(&hub, "cordon taint gone", async || {
        let n: Value = c.get("/api/v1/nodes/edge-1").await.ok()?;
        (n["spec"]["unschedulable"].is_null() && n["spec"]["taints"].is_null()).then_some(())
    })
    .await;

    // A DaemonSet and a bare pod join the Deployment on edge-2.
    c.create(
        "/apis/apps/v1/namespaces/default/daemonsets",
        &json!({"metadata": {"name": "daemon"}, "spec": {
            "selector": {"matchLabels": {"app": "daemon"}}, "template": template("daemon")}}),
    )
    .await
    .unwrap();
    let mut solo = template("solo");
    solo["metadata"]["name"] = json!("solo");
    solo["spec"]["nodeName"] = json!("edge-2");
    c.create(PODS, &solo).await.unwrap();
    let daemon_before = wait_until(&hub, "daemon and solo running", async || {
        let d = pods_of(&c, "daemon").await;
        let s = pods_of(&c, "solo").await;
        (d.iter().filter(|p| running(p)).count() == 2 && s.iter().all(running) && s.len() == 1)
            .then_some(())?;
        d.into_iter().find(|p| node_of(p) == "edge-2")
    })
    .await;

    // Without --ignore-daemonsets and --force, drain refuses and evicts nothing.
    let out = hub.spoke(&["drain", "edge-2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"),
        "{err}"
    );
    let out = hub.spoke(&["drain", "edge-2", "--ignore-daemonsets"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "cannot delete Pods that declare no controller (use --force to override): default/solo"
        ),
        "{err}"
    );
    let n: Value = c.get("/api/v1/nodes/edge-2").await.unwrap();
    assert_eq!(
        n["spec"]["unschedulable"], true,
        "a refused drain still cordons"
    );
    assert_eq!(
        pods_of(&c, "web")
            .await
            .iter()
            .filter(|p| running(p))
            .count(),
        2
    );

    // With both, it evicts the Deployment's pods and the bare pod, waits
    // for them to stop, and leaves the DaemonSet's pod running.
    let out = hub.spoke(&[
        "drain",
        "edge-2",
        "--ignore-daemonsets",
        "--force",
        "--timeout",
        "90s",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("evicting pod default/solo"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("node/edge-2 drained"),
        "{stdout}"
    );
    assert!(
        stderr.contains("Warning: ignoring DaemonSet-managed Pods: default/"),
        "{stderr}"
    );
    assert!(stderr.contains("Warning: deleting Pods that declare no controller: default/solo"));
    let got = c.get::<Value>(&format!("{PODS}/solo")).await;
    assert!(
        matches!(got, Err(e) if e.code() == Some(404)),
        "solo is gone"
    );
    wait_until(&hub, "web re-created on edge-1", async || {
        let web = pods_of(&c, "web").await;
        let live: Vec<&Value> = web.iter().filter(|p| running(p)).collect();
        (live.len() == 2 && live.iter().all(|p| node_of(p) == "edge-1")).then_some(())
    })
    .await;
    let d: Value = c
        .get(&format!("{PODS}/{}", name_of(&daemon_before)))
        .await
        .unwrap();
    assert!(running(&d), "{d}");
    assert_eq!(incarnation(&d), incarnation(&daemon_before));

    // The eviction subresource checks what it is given.
    let web = pods_of(&c, "web").await;
    let name = name_of(&web[0]);
    let err = c
        .create(
            &format!("{PODS}/{name}/eviction"),
            &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(400));
    assert!(err.to_string().contains("does not match"), "{err}");
    let err = c
        .create(
            &format!("{PODS}/ghost/eviction"),
            &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "ghost"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404));
}

#[tokio::test]
async fn new_pods_tolerate_unreachable_nodes_for_300_seconds_unless_they_say() {
    let hub = Hub::start().await;
    let c = hub.client();
    let mut plain = template("a");
    plain["metadata"]["name"] = json!("plain");
    // Bound, so that no scheduler pass writes it meanwhile.
    plain["spec"]["nodeName"] = json!("pi");
    plain["spec"].as_object_mut().unwrap().remove("tolerations");
    let p = c.create(PODS, &plain).await.unwrap();
    let mut tols = p["spec"]["tolerations"].as_array().unwrap().clone();
    tols.sort_by_key(|t| t["key"].to_string());
    assert_eq!(
        tols,
        [
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        ]
    );
    // An update that leaves them out (an apply of the same manifest) keeps
    // them, and the spec does not change.
    let mut again: Value = c.get(&format!("{PODS}/plain")).await.unwrap();
    again["spec"].as_object_mut().unwrap().remove("tolerations");
    let after = c.replace(&format!("{PODS}/plain"), &again).await.unwrap();
    assert_eq!(after["metadata"]["generation"], p["metadata"]["generation"]);
    assert_eq!(after["spec"], p["spec"]);

    // A pod's own toleration is kept as it is.
    let mut own = template("a");
    own["metadata"]["name"] = json!("own");
    let p = c.create(PODS, &own).await.unwrap();
    assert_eq!(p["spec"]["tolerations"], short_tolerations());
}

/// Real kubectl 1.20 (`SPOKE_KUBECTL`, which `scripts/test` sets, as for
/// tests/tests/kubectl.rs) cordons, drains and uncordons a board.
#[tokio::test]
async fn kubectl_cordons_drains_and_uncordons_a_board() {
    let kubectl = std::env::var("SPOKE_KUBECTL").unwrap_or_else(|_| {
        panic!("set SPOKE_KUBECTL to a kubectl 1.20 binary (scripts/test unpacks Debian's kubernetes-client)")
    });
    let hub = Hub::start().await;
    let _a1 = hub.agent("edge-1", &[]);
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    let cache = tempfile::tempdir().unwrap();
    let config = hub.config_path();
    let k = |args: &[&str]| {
        std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .expect("run kubectl")
    };
    c.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await
    .unwrap();
    c.create(
        "/apis/apps/v1/namespaces/default/daemonsets",
        &json!({"metadata": {"name": "daemon"}, "spec": {
            "selector": {"matchLabels": {"app": "daemon"}}, "template": template("daemon")}}),
    )
    .await
    .unwrap();
    wait_until(&hub, "web and daemon running", async || {
        let web = pods_of(&c, "web").await;
        let d = pods_of(&c, "daemon").await;
        (web.iter().filter(|p| running(p)).count() == 2
            && d.iter().filter(|p| running(p)).count() == 2)
            .then_some(())
    })
    .await;

    let out = k(&["cordon", "edge-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Value = c.get("/api/v1/nodes/edge-1").await.unwrap();
    assert_eq!(n["spec"]["unschedulable"], true, "{n}");
    let out = k(&["drain", "edge-1"]);
    assert!(
        !out.status.success(),
        "DaemonSet pods need --ignore-daemonsets: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = k(&["drain", "edge-1", "--ignore-daemonsets", "--timeout=90s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl 1.20 reuses its last printer's verb and says "node/edge-1
    // deleted" where later versions say "drained": the node is still there.
    assert!(stdout.contains("pod/web-"), "{stdout}");
    assert!(!stdout.contains("pod/daemon-"), "{stdout}");
    wait_until(&hub, "web on edge-2 only", async || {
        let web = pods_of(&c, "web").await;
        (web.len() == 2 && web.iter().all(|p| node_of(p) == "edge-2" && running(p))).then_some(())
    })
    .await;
    let d = pods_of(&c, "daemon").await;
    assert_eq!(d.iter().filter(|p| running(p)).count(), 2, "{d:?}");
    let out = k(&["uncordon", "edge-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Value = c.get("/api/v1/nodes/edge-1").await.unwrap();
    assert!(n["spec"]["unschedulable"].is_null(), "{n}");
}

fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// An agent whose disk threshold no disk can meet (100% free) reports
/// DiskPressure; the hub shows it with the kubelet's reason, the node gets
/// the `disk-pressure:NoSchedule` taint, and a new pod is not scheduled
/// there. A board with the default thresholds reports no pressure and its
/// allocatable memory is its capacity less `memory.available` (100Mi).
#[tokio::test]
async fn an_agent_under_its_disk_threshold_reports_disk_pressure_and_gets_tainted() {
    let hub = Hub::start().await;
    let _pressed = hub.agent(
        "pressed",
        &[
            "--eviction-hard",
            "nodefs.available<100%,memory.available<1Ki",
        ],
    );
    let _calm = hub.agent("calm", &[]);
    hub.wait_node_ready("pressed").await;
    hub.wait_node_ready("calm").await;
    let c = hub.client();

    let node = wait_until(&hub, "DiskPressure on pressed and its taint", async || {
        let n: Value = c.get("/api/v1/nodes/pressed").await.ok()?;
        has_taint(&n, "node.kubernetes.io/disk-pressure", "NoSchedule").then_some(n)
    })
    .await;
    let disk = condition(&node, "DiskPressure").expect("DiskPressure reported");
    assert_eq!(disk["status"], "True", "{disk}");
    assert_eq!(disk["reason"], "KubeletHasDiskPressure", "{disk}");
    assert!(
        disk["message"]
            .as_str()
            .unwrap()
            .contains("nodefs.available"),
        "{disk}"
    );
    let memory = condition(&node, "MemoryPressure").expect("MemoryPressure reported");
    assert_eq!(memory["status"], "False", "{memory}");
    assert_eq!(memory["reason"], "KubeletHasSufficientMemory");
    assert_eq!(node_ready(&node), Some("True"));
    assert!(!has_taint(
        &node,
        "node.kubernetes.io/memory-pressure",
        "NoSchedule"
    ));
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        env!("CARGO_PKG_VERSION")
    );

    // A joined Node is unreachable (tainted) until its board says hello;
    // the node controller lifts that on its next pass after the hello,
    // which may come a moment after `pressed` got its taint.
    let calm = wait_until(&hub, "calm without taints", async || {
        let n: Value = c.get("/api/v1/nodes/calm").await.ok()?;
        n["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
            .then_some(n)
    })
    .await;
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let cond = condition(&calm, type_).unwrap_or_else(|| panic!("{type_} on calm: {calm}"));
        assert_eq!(cond["status"], "False", "{cond}");
    }
    let units = |q: &Value| {
        spoke_api::quantity::Quantity(q.as_str().unwrap().to_string())
            .to_units()
            .unwrap()
    };
    let st = &calm["status"];
    assert_eq!(
        units(&st["capacity"]["memory"]) - units(&st["allocatable"]["memory"]),
        100 << 20
    );
    assert_eq!(st["allocatable"]["pods"], st["capacity"]["pods"]);

    // What a person sees.
    let out = hub.spoke(&["describe", "node", "pressed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("node.kubernetes.io/disk-pressure:NoSchedule"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("DiskPressure"))
        .unwrap_or_else(|| panic!("no DiskPressure line: {text}"));
    assert!(
        line.contains("True") && line.contains("KubeletHasDiskPressure"),
        "{line}"
    );
    let out = hub.spoke(&["get", "node", "pressed", "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("type: DiskPressure"), "{yaml}");

    // The scheduler keeps new pods off it.
    c.create(
        PODS,
        &json!({"metadata": {"name": "placed"},
        "spec": {"containers": [{"name": "main", "image": "hello:v1"}]}}),
    )
    .await
    .unwrap();
    let placed = wait_until(&hub, "the pod to be scheduled", async || {
        let p: Value = c.get(&format!("{PODS}/placed")).await.ok()?;
        (!node_of(&p).is_empty()).then_some(p)
    })
    .await;
    assert_eq!(node_of(&placed), "calm");
}
