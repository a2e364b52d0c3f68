//! Network faults on a real link (issue 9): the agent runs in a network
//! namespace of its own, joined to the hub by a veth pair, and nftables in
//! that namespace drops every packet (a partition) or 30 % of them (a lossy
//! link) while the desired state changes. No proxy: the agent's own TCP,
//! TLS and MQTT stacks meet the loss, and no packet goes anywhere but
//! between the two ends of the veth pair.
//!
//! Needs root, iproute2 and nftables (CI runs as root; scripts/test
//! installs both). `SPOKE_SOAK=1` partitions for 10 minutes instead of 30 s.
//!
//! What counts as "exactly once" here is read from the agent's own log: it
//! logs `starting pod ... uid=U generation=G` once per instance it starts,
//! `stopping pod` once per instance it stops, and `applying desired state
//! revision=R` once per revision it commits; and from each pod's log, where
//! the agent writes an `instance` marker line whenever an instance of a
//! container starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::netns::Netns;
use spoke_e2e::{
    Agent, Hub, Lcg, alive, bin, eventually, example_wasm, live_pods, node_ready, tail,
};

const NODE: &str = "edge-nf";
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const MERGE: &str = "application/merge-patch+json";

fn soak() -> bool {
    std::env::var_os("SPOKE_SOAK").is_some()
}

/// A hub on the host end of a fresh namespace link and an agent inside the
/// namespace. Fields drop in order: the agent is killed first, then the
/// hub, then the namespace and its link go.
struct Board {
    agent: Agent,
    hub: Hub,
    ns: Netns,
}

impl Board {
    /// A short node grace, so that the hub marks the node unreachable (and
    /// taints it) early in the partition: the partition is then one the
    /// hub's node lifecycle controller has seen, not only the agent.
    async fn start(agent_extra: &[&str]) -> Board {
        let ns = Netns::create();
        let hub = Hub::start_at(ns.host_ip, &["--node-grace", "2s"]).await;
        let launcher = ns.launcher(&bin("spoke-agent"));
        let launcher: Vec<&str> = launcher.iter().map(String::as_str).collect();
        let agent = hub.agent_launched(&launcher, NODE, agent_extra);
        hub.wait_node_ready(NODE).await;
        hub.push(&example_wasm("hello"), "hello:v1");
        hub.push(&example_wasm("config-demo"), "config-demo:v1");
        Board { agent, hub, ns }
    }

    fn pod_log(&self, pod: &str) -> String {
        pod_log(&self.agent.data_dir, pod)
    }

    /// The agent's and the hub's last lines, for a failure message.
    fn logs(&self) -> String {
        format!(
            "--- agent log ---\n{}\n--- hub log ---\n{}",
            tail(&self.agent.proc.output(), 60),
            tail(&self.hub.proc.output(), 30)
        )
    }
}

fn pod_log(data_dir: &Path, pod: &str) -> String {
    std::fs::read_to_string(data_dir.join(format!("logs/default_{pod}.log"))).unwrap_or_default()
}

/// Instance markers (`<time> instance <container>`) in a pod's log: one
/// per container instance the agent started.
fn instance_markers(log: &str) -> usize {
    log.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("instance"))
        .count()
}

/// The `count=N` values the hello guest printed, in order.
fn counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.rsplit_once("count=")?.1.trim().parse().ok())
        .collect()
}

/// The value of `key=` in a tracing line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// `(pod, uid, generation)` of every `starting pod` line in `log`.
fn starts(log: &str) -> Vec<(String, String, u64)> {
    log.lines()
        .filter(|l| l.contains("starting pod"))
        .filter_map(|l| {
            Some((
                field(l, "pod")?.trim_start_matches("default/").to_string(),
                field(l, "uid")?.to_string(),
                field(l, "generation")?.parse().ok()?,
            ))
        })
        .collect()
}

/// The pods named in `stopping pod` lines of `log`.
fn stops(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("stopping pod"))
        .filter_map(|l| Some(field(l, "pod")?.trim_start_matches("default/").to_string()))
        .collect()
}

/// The revisions of `applying desired state` lines, in log order.
fn applied_revisions(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("applying desired state"))
        .filter_map(|l| field(l, "revision")?.parse().ok())
        .collect()
}

fn times(what: &[String], name: &str) -> usize {
    what.iter().filter(|n| *n == name).count()
}

/// The revision the agent acknowledged, once it equals the hub's desired
/// revision for the node and the node is Ready.
async fn synced_revision(c: &Client) -> Option<u64> {
    let node: Value = c.get(&format!("/api/v1/nodes/{NODE}")).await.ok()?;
    let sync = &node["status"]["sync"];
    let applied = sync["appliedRevision"].as_u64()?;
    (node_ready(&node) == Some("True") && Some(applied) == sync["desiredRevision"].as_u64())
        .then_some(applied)
}

async fn get(c: &Client, path: &str) -> Option<Value> {
    c.get(path).await.ok()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["metadata"]["deletionTimestamp"].is_null()
        && !p["status"]["containerStatuses"][0]["state"]["running"].is_null()
}

/// uid, `startedAt` and `restartCount`: the same triple later means the
/// same instance, never restarted.
fn incarnation(p: &Value) -> (Value, Value, Value) {
    let c = &p["status"]["containerStatuses"][0];
    (
        p["metadata"]["uid"].clone(),
        c["state"]["running"]["startedAt"].clone(),
        c["restartCount"].clone(),
    )
}

fn hello_pod(name: &str, greeting: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"role": "hello"}},
           "spec": {"terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "main", "image": "hello:v1",
                                    "env": [{"name": "GREETING", "value": greeting}]}]}})
}

/// A pod reading ConfigMap `config` (as files, updated in place) and a
/// Secret: the config-demo example.
fn config_pod(name: &str, config: &str) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "demo", "image": "config-demo:v1",
                        "env": [
                            {"name": "DEMO_GREETING", "valueFrom": {"configMapKeyRef": {"name": config, "key": "greeting"}}},
                            {"name": "DEMO_TOKEN", "valueFrom": {"secretKeyRef": {"name": "demo-secret", "key": "api-token"}}}],
                        "volumeMounts": [{"name": "config", "mountPath": "/config"}]}],
                    "volumes": [{"name": "config", "configMap": {"name": config}}]}})
}

async fn config_objects(c: &Client, config: &str, greeting: &str) {
    c.create(
        "/api/v1/namespaces/default/secrets",
        &json!({"metadata": {"name": "demo-secret"}, "stringData": {"api-token": "t0ken"}}),
    )
    .await
    .unwrap();
    c.create(
        CONFIGMAPS,
        &json!({"metadata": {"name": config}, "data": {"greeting": greeting, "color": "green"}}),
    )
    .await
    .unwrap();
}

/// The greetings config-demo logged (`{"msg":"config","greeting":...}`), in order.
fn greetings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let json: Value = serde_json::from_str(l.splitn(3, ' ').nth(2)?).ok()?;
            (json["msg"] == "config").then(|| json["greeting"].as_str().map(str::to_string))?
        })
        .collect()
}

/// A Deployment of hello pods labelled `app=NAME`. Its pods tolerate an
/// unreachable or not-ready node for ever, as DaemonSet pods do: a board
/// that is away for the whole soak keeps them (with Kubernetes' default of
/// 300 s they would be evicted and re-created elsewhere).
fn deployment(name: &str, replicas: u64) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"terminationGracePeriodSeconds": 2,
                              "tolerations": [
                                  {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
                                  {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}],
                              "containers": [{"name": "main", "image": "hello:v1",
                                              "env": [{"name": "GREETING", "value": name}]}]}}}})
}

async fn names(c: &Client, selector: &str) -> BTreeSet<String> {
    live_pods(c, selector)
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Whether a TCP connection from inside `ns` to `ip:port` opens within 2 s.
fn connects(ns: &Netns, ip: std::net::Ipv4Addr, port: u16) -> bool {
    std::process::Command::new(&ns.launcher(Path::new("timeout"))[0])
        .args(["netns", "exec", &ns.name, "timeout", "2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_cut_link_carries_nothing_until_healed_and_the_namespace_goes_with_its_handle() {
    let ns = Netns::create();
    let listener = std::net::TcpListener::bind((ns.host_ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(connects(&ns, ns.host_ip, port), "the link carries");
    ns.cut();
    assert!(
        !connects(&ns, ns.host_ip, port),
        "a cut link carries nothing"
    );
    assert!(ns.dropped() > 0);
    ns.heal();
    assert!(
        connects(&ns, ns.host_ip, port),
        "a healed link carries again"
    );
    // Gone even when the test holding it panics.
    let (name, host_if) = (ns.name.clone(), ns.host_if.clone());
    let ended = std::panic::catch_unwind(move || {
        let _ns = ns;
        panic!("deliberate panic: the namespace must go all the same");
    });
    assert!(ended.is_err());
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&name));
    let link = std::process::Command::new("ip")
        .args(["link", "show", &host_if])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!link.success(), "{host_if} left behind");
}

#[tokio::test]
async fn a_partitioned_board_keeps_its_pods_running_and_applies_each_change_once_after_heal() {
    let partition = if soak() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(30)
    };
    // The shortest keepalive the agent takes: both ends find the dead link
    // within seconds, so the agent reconnects and resumes after the heal
    // (instead of its TCP connection simply surviving a short cut).
    let b = Board::start(&["--keepalive", "5s"]).await;
    let (hub, c) = (&b.hub, b.hub.client());

    // Before: pods that must ride the partition out untouched, a pod that
    // will be deleted and one whose spec will change while the board is
    // away, a pod reading a ConfigMap that will change twice, and a
    // Deployment that will be scaled up.
    config_objects(&c, "demo-config", "v1").await;
    for (name, greeting) in [("keep", "keep"), ("doomed", "doomed"), ("swap", "old")] {
        c.create(PODS, &hello_pod(name, greeting)).await.unwrap();
    }
    c.create(PODS, &config_pod("cfg", "demo-config"))
        .await
        .unwrap();
    c.create(DEPLOYS, &deployment("web", 2)).await.unwrap();
    let web_before = eventually(Duration::from_secs(60), "2 web pods", || async {
        let n = names(&c, "app%3Dweb").await;
        (n.len() == 2).then_some(n)
    })
    .await;
    let steady: Vec<String> = ["keep", "cfg", "swap", "doomed"]
        .into_iter()
        .map(String::from)
        .chain(web_before.iter().cloned())
        .collect();
    let mut before = BTreeMap::new();
    for name in &steady {
        let p = hub.wait_pod(name, "Running", running).await;
        before.insert(name.clone(), incarnation(&p));
    }
    eventually(Duration::from_secs(30), "keep to count to 3", || async {
        (counts(&b.pod_log("keep")).len() >= 3).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "cfg to log greeting v1",
        || async { (greetings(&b.pod_log("cfg")) == ["v1"]).then_some(()) },
    )
    .await;
    let rev_before = eventually(Duration::from_secs(30), "the board in sync", || {
        synced_revision(&c)
    })
    .await;

    // The partition.
    let log_at_cut = b.agent.proc.output().len();
    let count_at_cut = *counts(&b.pod_log("keep")).last().unwrap();
    let cut_at = Instant::now();
    b.ns.cut();
    eventually(
        Duration::from_secs(60),
        "the hub to mark the board unreachable (Ready Unknown, unreachable:NoExecute taint)",
        || async {
            let node = get(&c, &format!("/api/v1/nodes/{NODE}")).await?;
            let tainted = node["spec"]["taints"].as_array()?.iter().any(|t| {
                t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
            });
            (node_ready(&node) == Some("Unknown") && tainted).then_some(())
        },
    )
    .await;
    let unreachable_after = cut_at.elapsed();

    // Changes while the board is away, spread over the partition.
    let step = partition / 10;
    let pause = || tokio::time::sleep(step);
    // 1. A pod bound to the board at create: in its desired state at once.
    let mut fresh_a = hello_pod("fresh-a", "fresh-a");
    fresh_a["spec"]["nodeName"] = json!(NODE);
    c.create(PODS, &fresh_a).await.unwrap();
    pause().await;
    // 2. A deletion.
    c.delete(&format!("{PODS}/doomed"), None).await.unwrap();
    pause().await;
    // 3. A changed spec (generation 2): the one restart a change may cause.
    c.patch(
        &format!("{PODS}/swap"),
        MERGE,
        &json!({"spec": {"containers": [{"name": "main", "image": "hello:v1",
                  "env": [{"name": "GREETING", "value": "new"}]}]}}),
    )
    .await
    .unwrap();
    pause().await;
    // 4. A scaled Deployment: the new replica cannot be scheduled to the
    //    tainted board and waits, Pending, for the heal.
    c.patch(
        &format!("{DEPLOYS}/web"),
        MERGE,
        &json!({"spec": {"replicas": 3}}),
    )
    .await
    .unwrap();
    pause().await;
    // 5, 6. Two ConfigMap writes: only the last one matters to the pod.
    for v in ["v2", "v3"] {
        c.patch(
            &format!("{CONFIGMAPS}/demo-config"),
            MERGE,
            &json!({"data": {"greeting": v}}),
        )
        .await
        .unwrap();
        pause().await;
    }
    // 7. A pod for the scheduler: Pending until the board is back.
    c.create(PODS, &hello_pod("fresh-b", "fresh-b"))
        .await
        .unwrap();
    let rest = partition.saturating_sub(cut_at.elapsed());
    tokio::time::sleep(rest).await;

    // Still cut off: the hub saw nothing of the board, and yet the pods ran.
    let node: Value = c.get(&format!("/api/v1/nodes/{NODE}")).await.unwrap();
    assert_eq!(
        node_ready(&node),
        Some("Unknown"),
        "still partitioned: {node}"
    );
    let dropped = b.ns.dropped();
    assert!(dropped > 0, "the cut dropped no packet");
    let count_at_heal = *counts(&b.pod_log("keep")).last().unwrap();
    assert!(
        count_at_heal > count_at_cut,
        "keep printed nothing while the board was cut off ({count_at_cut} → {count_at_heal})"
    );
    for name in &steady {
        let p: Value = c.get(&format!("{PODS}/{name}")).await.unwrap();
        assert_eq!(
            incarnation(&p).0,
            before[name].0,
            "{name} was replaced during the partition"
        );
        if name != "doomed" {
            assert!(
                p["metadata"]["deletionTimestamp"].is_null(),
                "{name} was evicted during the partition: {p}\n{}",
                b.logs()
            );
        }
    }

    // Heal, and wait for every change to land.
    b.ns.heal();
    let healed_at = Instant::now();
    let rev_after = eventually(Duration::from_secs(120), "the board back in sync", || {
        synced_revision(&c)
    })
    .await;
    let resynced_after = healed_at.elapsed();
    let wait = Duration::from_secs(90);
    eventually(
        wait,
        "doomed gone from the hub (the agent said it stopped)",
        || async {
            c.get::<Value>(&format!("{PODS}/doomed"))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    for name in ["fresh-a", "fresh-b"] {
        let p = hub.wait_pod(name, "Running on the board", running).await;
        assert_eq!(p["spec"]["nodeName"], NODE);
    }
    hub.wait_pod("swap", "Running generation 2 (greeting new)", |p| {
        running(p) && p["metadata"]["generation"] == 2 && {
            let log = b.pod_log("swap");
            log.lines()
                .last()
                .is_some_and(|l| l.contains("new from a Wasm pod"))
        }
    })
    .await;
    eventually(wait, "3 web pods Running", || async {
        let pods = live_pods(&c, "app%3Dweb").await;
        (pods.len() == 3 && pods.iter().all(running)).then_some(())
    })
    .await;
    eventually(wait, "cfg to see greeting v3", || async {
        (greetings(&b.pod_log("cfg")).last().map(String::as_str) == Some("v3")).then_some(())
    })
    .await;
    // Settled: in sync at the same revision after all that.
    let rev_final = eventually(Duration::from_secs(60), "the board in sync", || {
        synced_revision(&c)
    })
    .await;
    assert!(rev_final >= rev_after && rev_after > rev_before);

    // Nothing that was running was restarted or replaced: same uid, same
    // start, same restart count, one instance marker; the counter of keep
    // went on from where it was, never starting again at 1.
    for name in steady
        .iter()
        .filter(|n| !["swap", "doomed"].contains(&n.as_str()))
    {
        let p: Value = c.get(&format!("{PODS}/{name}")).await.unwrap();
        assert_eq!(
            incarnation(&p),
            before[name],
            "{name} restarted\n{}",
            b.logs()
        );
        assert!(running(&p), "{name} not running: {p}");
        assert_eq!(
            instance_markers(&b.pod_log(name)),
            1,
            "{name}: more than one instance\n{}",
            b.pod_log(name)
        );
    }
    let keep = counts(&b.pod_log("keep"));
    assert!(
        keep.windows(2).all(|w| w[1] == w[0] + 1) && keep[0] == 1,
        "keep's counter did not run on: {keep:?}"
    );
    assert!(*keep.last().unwrap() > count_at_heal);
    let cfg_seen = greetings(&b.pod_log("cfg"));
    let order = ["v1", "v2", "v3"];
    let positions: Vec<usize> = cfg_seen
        .iter()
        .map(|g| order.iter().position(|o| o == g).expect("a known greeting"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "cfg saw its ConfigMap out of order: {cfg_seen:?}"
    );
    let hub_log = hub.proc.output();
    assert!(
        !hub_log.contains("evicting pod"),
        "the hub evicted a pod\n{}",
        b.logs()
    );

    // Each change landed once, and in order: from the cut on, the agent
    // started each new instance once and nothing else, stopped the deleted
    // pod and swap's old instance once each, and committed strictly
    // increasing revisions, the last one the hub's.
    let agent_log = b.agent.proc.output();
    let since_cut = &agent_log[log_at_cut..];
    let started = starts(since_cut);
    let started_names: Vec<String> = started.iter().map(|s| s.0.clone()).collect();
    let web_new: Vec<String> = names(&c, "app%3Dweb")
        .await
        .difference(&web_before)
        .cloned()
        .collect();
    assert_eq!(web_new.len(), 1, "one new web pod");
    let mut expected: Vec<String> = vec!["fresh-a".into(), "fresh-b".into(), "swap".into()];
    expected.extend(web_new.iter().cloned());
    let mut got = started_names.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got,
        expected,
        "instances started after the cut\n{}",
        tail(since_cut, 80)
    );
    assert!(started.iter().any(|s| s.0 == "swap" && s.2 == 2));
    let stopped = stops(since_cut);
    assert_eq!(
        times(&stopped, "doomed"),
        1,
        "doomed stopped once: {stopped:?}"
    );
    assert_eq!(
        times(&stopped, "swap"),
        1,
        "swap's old instance stopped once: {stopped:?}"
    );
    assert_eq!(stopped.len(), 2, "nothing else stopped: {stopped:?}");
    assert_eq!(
        instance_markers(&b.pod_log("swap")),
        2,
        "swap: one instance per generation"
    );
    let revisions = applied_revisions(&agent_log);
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions committed out of order or twice: {revisions:?}"
    );
    assert_eq!(revisions.last(), Some(&rev_final));
    assert!(alive(b.agent.proc.pid()), "the agent process ended");
    println!(
        "partition {partition:?}: {dropped} packets dropped; unreachable after {unreachable_after:?}; \
         back in sync {resynced_after:?} after the heal; revisions {rev_before} → {rev_final}, \
         committed after the cut: {:?}",
        applied_revisions(since_cut)
    );
}

/// The module at `path` with a custom section of `bytes` appended: it
/// runs the same, under another digest.
fn with_custom_section(path: &Path, bytes: usize) -> Vec<u8> {
    let mut wasm = std::fs::read(path).unwrap();
    let name = b"spoke-padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    // Not all zeros, so that no layer on the way can squeeze it.
    let mut rng = Lcg(7);
    payload.extend((0..bytes).map(|_| rng.below(256) as u8));
    wasm.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend(payload);
    wasm
}

/// What a change to the stream did.
enum Change {
    Create,
    Update,
    Delete,
    Config,
    Scale,
}

#[tokio::test]
async fn a_board_losing_30_percent_of_its_packets_stays_in_sync_through_a_stream_of_changes() {
    // The shortest keepalive: pings that time out on the lossy link end
    // the connection, so resume under loss is part of what is tested.
    let b = Board::start(&["--keepalive", "5s"]).await;
    let (hub, c) = (&b.hub, b.hub.client());
    // Updates switch pods to hello:v2, a module the board has not got: it
    // fetches its 300 KiB in chunks over the lossy link.
    let padded = tempfile::tempdir().unwrap();
    let v2 = padded.path().join("hello-v2.wasm");
    std::fs::write(&v2, with_custom_section(&example_wasm("hello"), 300 * 1024)).unwrap();
    hub.push(&v2, "hello:v2");
    config_objects(&c, "loss-config", "g0").await;
    c.create(PODS, &config_pod("cfg", "loss-config"))
        .await
        .unwrap();
    c.create(DEPLOYS, &deployment("lw", 1)).await.unwrap();
    let cfg_before = incarnation(&hub.wait_pod("cfg", "Running", running).await);
    eventually(Duration::from_secs(60), "the lw pod Running", || async {
        let pods = live_pods(&c, "app%3Dlw").await;
        (pods.len() == 1 && pods.iter().all(running)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "the board in sync", || {
        synced_revision(&c)
    })
    .await;
    let log_at_loss = b.agent.proc.output().len();

    b.ns.lossy(30);
    let started_at = Instant::now();
    // 30 changes: 12 creates, 6 spec updates, 6 deletes (some of pods the
    // board may not have started yet), 3 ConfigMap writes, 3 scalings.
    use Change::*;
    let pattern = [
        Create, Create, Update, Delete, Create, Config, Create, Update, Delete, Scale,
    ];
    let mut rng = Lcg(0x10_55);
    // The model: live bare pods and their greeting version (= generation).
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut greeting = 0;
    let replicas_steps = [3, 1, 2];
    let mut replicas = 1;
    let mut scaled = 0;
    for i in 0..30 {
        let pick = |rng: &mut Lcg, live: &BTreeMap<String, u64>| {
            let n = rng.below(live.len() as u64) as usize;
            live.keys().nth(n).cloned()
        };
        match pattern[i % pattern.len()] {
            Create => {
                let name = format!("s{i:02}");
                c.create(PODS, &hello_pod(&name, &format!("{name}-1")))
                    .await
                    .unwrap();
                live.insert(name, 1);
            }
            Update => {
                let name = pick(&mut rng, &live).expect("a live pod");
                let version = live[&name] + 1;
                c.patch(
                    &format!("{PODS}/{name}"),
                    MERGE,
                    &json!({"spec": {"containers": [{"name": "main", "image": "hello:v2",
                              "env": [{"name": "GREETING", "value": format!("{name}-{version}")}]}]}}),
                )
                .await
                .unwrap();
                live.insert(name, version);
            }
            Delete => {
                let name = pick(&mut rng, &live).expect("a live pod");
                c.delete(&format!("{PODS}/{name}"), None).await.unwrap();
                live.remove(&name);
                deleted.push(name);
            }
            Config => {
                greeting += 1;
                c.patch(
                    &format!("{CONFIGMAPS}/loss-config"),
                    MERGE,
                    &json!({"data": {"greeting": format!("g{greeting}")}}),
                )
                .await
                .unwrap();
            }
            Scale => {
                replicas = replicas_steps[scaled];
                scaled += 1;
                c.patch(
                    &format!("{DEPLOYS}/lw"),
                    MERGE,
                    &json!({"spec": {"replicas": replicas}}),
                )
                .await
                .unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
    }
    let changes_took = started_at.elapsed();

    // Converged with the loss still on: the hub's pods are the model's,
    // each Running on the board with its last spec; deleted ones are gone
    // (the board said they stopped); the Deployment has its count; the
    // ConfigMap's last value reached the pod; the board acknowledged the
    // hub's revision.
    let limit = Duration::from_secs(240);
    let deadline = Instant::now() + limit;
    let want: BTreeSet<String> = live.keys().cloned().collect();
    let final_greeting = format!("g{greeting}");
    let revision = loop {
        let mut missing = Vec::new();
        let hello = live_pods(&c, "role%3Dhello").await;
        let have: BTreeSet<String> = hello
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        if have != want {
            missing.push(format!("live pods {have:?}, want {want:?}"));
        }
        for p in &hello {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            let Some(version) = live.get(name) else {
                continue;
            };
            let current = format!("{name}-{version} from a Wasm pod");
            let printed = b
                .pod_log(name)
                .lines()
                .last()
                .is_some_and(|l| l.contains(&current));
            if !running(p) || p["metadata"]["generation"] != *version || !printed {
                missing.push(format!("{name} at generation {version}"));
            }
        }
        for name in &deleted {
            if c.get::<Value>(&format!("{PODS}/{name}")).await.is_ok() {
                missing.push(format!("{name} still on the hub"));
            }
        }
        let lw = live_pods(&c, "app%3Dlw").await;
        if lw.len() != replicas || !lw.iter().all(running) {
            missing.push(format!("lw: {} pods, want {replicas} Running", lw.len()));
        }
        if greetings(&b.pod_log("cfg")).last() != Some(&final_greeting) {
            missing.push(format!("cfg at {final_greeting}"));
        }
        let synced = synced_revision(&c).await;
        if synced.is_none() {
            missing.push("the board in sync".into());
        }
        if let (true, Some(revision)) = (missing.is_empty(), synced) {
            break revision;
        }
        if Instant::now() > deadline {
            panic!(
                "not converged after {limit:?} on the lossy link: {missing:#?}\n{}",
                b.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let converged_after = started_at.elapsed();
    let dropped = b.ns.dropped();
    assert!(dropped > 0, "the lossy link dropped no packet");
    b.ns.heal();

    // Nothing twice: each (pod, uid, generation) started at most once and
    // every live pod's last generation exactly once; revisions committed in
    // increasing order, the last one the hub's; cfg never restarted.
    let agent_log = b.agent.proc.output();
    let since = &agent_log[log_at_loss..];
    let started = starts(since);
    let mut seen = BTreeSet::new();
    for s in &started {
        assert!(
            seen.insert(s.clone()),
            "{s:?} started twice\n{}",
            tail(since, 80)
        );
    }
    for (name, version) in &live {
        assert_eq!(
            started
                .iter()
                .filter(|s| &s.0 == name && s.2 == *version)
                .count(),
            1,
            "{name} generation {version} started once"
        );
        let markers = instance_markers(&b.pod_log(name));
        assert!(
            (1..=*version as usize).contains(&markers),
            "{name}: {markers} instances for {version} generations"
        );
    }
    let revisions = applied_revisions(&agent_log);
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions committed out of order or twice: {revisions:?}"
    );
    assert_eq!(revisions.last(), Some(&revision));
    let cfg = c.get::<Value>(&format!("{PODS}/cfg")).await.unwrap();
    assert_eq!(incarnation(&cfg), cfg_before, "cfg restarted");
    assert_eq!(instance_markers(&b.pod_log("cfg")), 1);
    let reconnects = since.matches("connected to the hub").count();
    let pull_failures = since.matches("image pull failed").count();
    println!(
        "30% loss both ways: 30 changes in {changes_took:?}, converged {converged_after:?} after the first; \
         {dropped} packets dropped; {} revisions committed; {reconnects} reconnects; \
         {pull_failures} failed tries to pull hello:v2",
        applied_revisions(since).len()
    );
}
