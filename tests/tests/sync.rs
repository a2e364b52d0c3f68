//! Edge sync end to end: partitions with changes, replays, malformed input,
//! with real agent processes against the embedded broker and Mosquitto.

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use spoke_api::protocol::{MAX_MESSAGE_BYTES, topic};
use spoke_e2e::proxy::TcpProxy;
use spoke_e2e::{
    Agent, Hub, Mosquitto, alive, container, eventually, example_wasm, node_ready, pod_manifest,
    tail,
};
use tokio::sync::mpsc;

const NODE: &str = "edge-1";

/// How the agent reaches the broker, and how the test cuts it off.
enum Link {
    /// Embedded broker behind a proxy that the test cuts.
    Proxy(TcpProxy),
    /// Mosquitto, which the test stops and starts again.
    Mosquitto(Mosquitto),
}

impl Link {
    async fn cut(&mut self) {
        match self {
            Link::Proxy(p) => p.cut(),
            Link::Mosquitto(m) => m.stop(),
        }
    }
    async fn heal(&mut self) {
        match self {
            Link::Proxy(p) => p.heal(),
            Link::Mosquitto(m) => m.restart().await,
        }
    }
}

/// A hub and one agent, connected through a link the test can cut.
async fn setup(mosquitto: bool) -> (Hub, Agent, Link) {
    if mosquitto {
        let broker = Mosquitto::start().await;
        let hub = Hub::start_with(Some(&broker.url)).await;
        let agent = hub.agent(NODE, &[]);
        hub.wait_node_ready(NODE).await;
        (hub, agent, Link::Mosquitto(broker))
    } else {
        let hub = Hub::start().await;
        let target = hub.mqtt_url.split("://").nth(1).unwrap().to_string();
        let proxy = TcpProxy::start(&target).await;
        let agent = hub.agent_via(NODE, &proxy.url_like(&hub.mqtt_url), &[]);
        hub.wait_node_ready(NODE).await;
        (hub, agent, Link::Proxy(proxy))
    }
}

/// An MQTT client of the test's own, on the broker itself (not through the
/// proxy), that records what arrives on `topics`.
async fn observer(hub: &Hub, topics: &[String]) -> (AsyncClient, mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut conn = spoke_agent::sync::Connection::parse_url(&hub.mqtt_url).unwrap();
    let mut o = MqttOptions::new("sync-test-observer", conn.host.clone(), conn.port);
    o.set_max_packet_size(4 * MAX_MESSAGE_BYTES, 4 * MAX_MESSAGE_BYTES);
    // On the embedded broker, as the hub's own user (over TLS with its CA);
    // the test's Mosquitto takes anonymous clients.
    if hub.data_dir().join("mqtt-hub.password").exists() {
        o.set_credentials("_spoke-hub", hub.mqtt_hub_password());
        conn.ca_pem = Some(std::fs::read_to_string(hub.ca_path()).unwrap());
        spoke_agent::identity::set_tls(&mut o, &conn);
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let sub = client.clone();
    let topics = topics.to_vec();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in &topics {
                        sub.subscribe(t.clone(), QoS::AtLeastOnce).await.unwrap();
                    }
                    if topics.is_empty()
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("observer subscribed")
        .unwrap();
    (client, rx)
}

fn log_path(agent: &Agent, pod: &str) -> PathBuf {
    agent.data_dir.join(format!("logs/default_{pod}.log"))
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// (startedAt, restartCount) of a pod's container.
async fn instance(hub: &Hub, pod: &str) -> (Value, Value) {
    let p: Value = hub
        .client()
        .get(&format!("/api/v1/namespaces/default/pods/{pod}"))
        .await
        .unwrap();
    let c = container(&p);
    (
        c["state"]["running"]["startedAt"].clone(),
        c["restartCount"].clone(),
    )
}

async fn instances(hub: &Hub) -> Vec<(Value, Value)> {
    let mut v = Vec::new();
    for name in ["keep", "new", "upd"] {
        v.push(instance(hub, name).await);
    }
    v
}

async fn running(hub: &Hub, pod: &str) -> Value {
    hub.wait_pod(pod, "Running", |p| p["status"]["phase"] == "Running")
        .await
}

async fn pod_names(hub: &Hub) -> Vec<String> {
    let list: Value = hub
        .client()
        .get("/api/v1/namespaces/default/pods")
        .await
        .unwrap();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn apply(hub: &Hub, manifest: &str) {
    let out = hub.apply(manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until a pod's log file stops growing (its instance is stopped).
async fn stopped(path: PathBuf, what: &str) {
    eventually(Duration::from_secs(60), what, || {
        let path = path.clone();
        async move {
            let before = read(&path).len();
            tokio::time::sleep(Duration::from_millis(2500)).await;
            (read(&path).len() == before).then_some(())
        }
    })
    .await;
}

/// Publishes a malformed payload to the agent's `down` topic and waits for
/// the agent to log it: every message published before it has then been
/// handled (one connection, QoS 1, in order).
async fn barrier(client: &AsyncClient, agent: &Agent, n: usize) {
    client
        .publish(
            topic::down(NODE),
            QoS::AtLeastOnce,
            false,
            b"{barrier".to_vec(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the agent to handle the barrier",
        || async {
            (agent
                .proc
                .output()
                .matches("bad message from the hub dropped")
                .count()
                >= n)
                .then_some(())
        },
    )
    .await;
}

async fn partition_with_changes_converges_exactly_and_replays_change_nothing(mosquitto: bool) {
    let (hub, agent, mut link) = setup(mosquitto).await;
    let (recorder, mut downs) = observer(&hub, &[topic::down(NODE)]).await;
    hub.push(&example_wasm("hello"), "hello:v1");
    for name in ["keep", "upd", "del", "gone"] {
        apply(
            &hub,
            &pod_manifest(name, "hello:v1", "Always", &[("GREETING", "v1")]),
        );
    }
    for name in ["keep", "upd", "del", "gone"] {
        running(&hub, name).await;
    }
    let keep_before = instance(&hub, "keep").await;
    // A pod that ends on its own about 20 s from now: while the link is down.
    apply(
        &hub,
        &pod_manifest("ends", "hello:v1", "Never", &[("HELLO_LINES", "20")]),
    );
    running(&hub, "ends").await;

    // The link goes down.
    link.cut().await;
    eventually(
        Duration::from_secs(30),
        "the agent to lose the broker",
        || async {
            agent
                .proc
                .output()
                .contains("lost the connection to the hub's broker")
                .then_some(())
        },
    )
    .await;

    // While it is down: a pod is created, one updated, one deleted (it
    // waits as Terminating for its node), one removed at once.
    apply(
        &hub,
        &pod_manifest("new", "hello:v1", "Always", &[("GREETING", "v1")]),
    );
    apply(
        &hub,
        &pod_manifest("upd", "hello:v1", "Always", &[("GREETING", "v2")]),
    );
    let c = hub.client();
    c.delete("/api/v1/namespaces/default/pods/del", None)
        .await
        .unwrap();
    c.delete("/api/v1/namespaces/default/pods/gone", Some(0))
        .await
        .unwrap();
    assert_eq!(pod_names(&hub).await, ["del", "ends", "keep", "new", "upd"]);
    // None of it reached the board.
    assert!(!log_path(&agent, "new").exists());
    assert!(!read(&log_path(&agent, "upd")).contains("v2 from"));
    // On the board, a status changes that the hub cannot hear about now.
    eventually(
        Duration::from_secs(60),
        "ends to end on the board",
        || async {
            read(&log_path(&agent, "ends"))
                .contains("done after")
                .then_some(())
        },
    )
    .await;
    let ends: Value = c.get("/api/v1/namespaces/default/pods/ends").await.unwrap();
    assert_eq!(ends["status"]["phase"], "Running", "ended before the cut");

    link.heal().await;

    // It converges to exactly the desired set.
    running(&hub, "new").await;
    eventually(
        Duration::from_secs(60),
        "upd to run its new spec",
        || async {
            read(&log_path(&agent, "upd"))
                .contains("v2 from a Wasm pod")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "del to be stopped and removed",
        || async { (pod_names(&hub).await == ["ends", "keep", "new", "upd"]).then_some(()) },
    )
    .await;
    // What changed on the board while away reached the hub (the agent's
    // hello carries only a digest of its statuses: the hub asked for them).
    hub.wait_pod("ends", "Succeeded", |p| p["status"]["phase"] == "Succeeded")
        .await;
    assert!(
        !log_path(&agent, "del").exists(),
        "a deleted pod's log goes with it"
    );
    stopped(
        log_path(&agent, "gone"),
        "the force-deleted pod to stop on the board",
    )
    .await;
    // keep did not change, so it was not restarted.
    assert_eq!(instance(&hub, "keep").await, keep_before);
    assert_eq!(
        read(&log_path(&agent, "keep")).matches("count=1\n").count(),
        1
    );
    // The agent resumed with a delta, not a full snapshot.
    let hub_log = hub.proc.output();
    assert!(
        hub_log
            .lines()
            .any(|l| l.contains("agent resumed") && l.contains("answer=\"delta\"")),
        "{}",
        tail(&hub_log, 30)
    );

    // Every desired-state message of the test, replayed: nothing changes.
    let mut recorded = Vec::new();
    while let Ok(m) = downs.try_recv() {
        recorded.push(m);
    }
    assert!(recorded.len() >= 3, "recorded {} messages", recorded.len());
    let before = instances(&hub).await;
    let logs_before = read(&log_path(&agent, "upd"));
    let gone_log = read(&log_path(&agent, "gone"));
    for m in &recorded {
        recorder
            .publish(topic::down(NODE), QoS::AtLeastOnce, false, m.clone())
            .await
            .unwrap();
    }
    barrier(&recorder, &agent, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(instances(&hub).await, before);
    assert_eq!(pod_names(&hub).await, ["ends", "keep", "new", "upd"]);
    assert!(!log_path(&agent, "del").exists());
    assert_eq!(read(&log_path(&agent, "gone")), gone_log, "gone came back");
    let upd_log = read(&log_path(&agent, "upd"));
    assert!(upd_log.starts_with(&logs_before) && !upd_log[logs_before.len()..].contains("v1 from"));
    assert_eq!(
        read(&log_path(&agent, "keep")).matches("count=1\n").count(),
        1
    );
    drop(link);
}

#[tokio::test]
async fn partition_with_changes_converges_exactly_with_the_embedded_broker() {
    partition_with_changes_converges_exactly_and_replays_change_nothing(false).await;
}

#[tokio::test]
async fn partition_with_changes_converges_exactly_with_mosquitto() {
    partition_with_changes_converges_exactly_and_replays_change_nothing(true).await;
}

async fn malformed_and_oversized_payloads_are_dropped(mosquitto: bool) {
    let (hub, agent, _link) = setup(mosquitto).await;
    hub.push(&example_wasm("hello"), "hello:v1");
    apply(&hub, &pod_manifest("keep", "hello:v1", "Always", &[]));
    running(&hub, "keep").await;
    let before = instance(&hub, "keep").await;
    let node_before: Value = hub
        .client()
        .get(&format!("/api/v1/nodes/{NODE}"))
        .await
        .unwrap();

    let (client, _) = observer(&hub, &[]).await;
    let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
    let bad: [&[u8]; 6] = [
        b"{",
        &[0xff, 0xfe, 0x00, 0x01],
        b"{\"type\":\"desired\",\"revision\":-1,\"pods\":[]}",
        b"{\"type\":\"delta\",\"fromRevision\":\"x\",\"revision\":99}",
        b"{\"type\":\"hello\",\"appliedRevision\":1e99}",
        &huge,
    ];
    for payload in bad {
        for t in [topic::up(NODE), topic::down(NODE)] {
            client
                .publish(t, QoS::AtLeastOnce, false, payload.to_vec())
                .await
                .unwrap();
        }
    }
    // Strangers on the presence topic the hub reads, too.
    client
        .publish(
            topic::presence(NODE),
            QoS::AtLeastOnce,
            false,
            b"\xffmaybe".to_vec(),
        )
        .await
        .unwrap();
    barrier(&client, &agent, bad.len() + 1).await;
    eventually(
        Duration::from_secs(30),
        "the hub to drop every bad message",
        || async {
            let log = hub.proc.output();
            (log.matches("malformed message from agent dropped").count() >= bad.len()
                && log.contains("malformed presence payload dropped"))
            .then_some(())
        },
    )
    .await;
    let agent_log = agent.proc.output();
    assert!(
        agent_log.contains("exceeds the limit"),
        "{}",
        tail(&agent_log, 20)
    );
    assert!(!agent_log.contains("panicked") && !hub.proc.output().contains("panicked"));
    assert!(alive(agent.proc.pid()) && alive(hub.proc.pid()));

    // Nothing changed: same pod instance, node still Ready, same revisions.
    assert_eq!(instance(&hub, "keep").await, before);
    hub.wait_node_ready(NODE).await;
    let node: Value = hub
        .client()
        .get(&format!("/api/v1/nodes/{NODE}"))
        .await
        .unwrap();
    assert_eq!(
        node["metadata"]["annotations"], node_before["metadata"]["annotations"],
        "revisions moved"
    );
    // The link still works: a new pod arrives.
    apply(&hub, &pod_manifest("after", "hello:v1", "Always", &[]));
    running(&hub, "after").await;
}

#[tokio::test]
async fn malformed_and_oversized_payloads_are_dropped_with_the_embedded_broker() {
    malformed_and_oversized_payloads_are_dropped(false).await;
}

#[tokio::test]
async fn malformed_and_oversized_payloads_are_dropped_with_mosquitto() {
    malformed_and_oversized_payloads_are_dropped(true).await;
}

/// Waits until the node's status shows its agent has acknowledged the
/// hub's revision, and returns that revision.
async fn in_sync(hub: &Hub) -> u64 {
    eventually(
        Duration::from_secs(60),
        "the node to show it is in sync",
        || async {
            let node: Value = hub
                .client()
                .get(&format!("/api/v1/nodes/{NODE}"))
                .await
                .ok()?;
            let sync = &node["status"]["sync"];
            let applied = sync["appliedRevision"].as_u64()?;
            (applied > 0 && Some(applied) == sync["desiredRevision"].as_u64()).then_some(applied)
        },
    )
    .await
}

async fn hub_restart_keeps_nodes_ready_and_status_shows_the_acknowledged_revision(mosquitto: bool) {
    // A short grace, so that a flap would show within the test.
    let grace = if mosquitto { "3s" } else { "15s" };
    let broker = if mosquitto {
        Some(Mosquitto::start().await)
    } else {
        None
    };
    let mut hub = Hub::start_opts(
        broker.as_ref().map(|b| b.url.as_str()),
        &["--node-grace", grace],
    )
    .await;
    let mut agent = hub.agent(NODE, &[]);
    hub.wait_node_ready(NODE).await;
    hub.push(&example_wasm("hello"), "hello:v1");
    apply(&hub, &pod_manifest("keep", "hello:v1", "Always", &[]));
    running(&hub, "keep").await;
    let first = in_sync(&hub).await;
    let yaml = String::from_utf8_lossy(&hub.spoke(&["get", "nodes", NODE, "-o", "yaml"]).stdout)
        .to_string();
    assert!(
        yaml.contains(&format!("appliedRevision: {first}"))
            && yaml.contains(&format!("desiredRevision: {first}")),
        "{yaml}"
    );

    hub.restart().await;
    // For longer than the grace, the node never leaves Ready.
    let window = humantime::parse_duration(grace).unwrap() + Duration::from_secs(5);
    let end = tokio::time::Instant::now() + window;
    let mut seen = 0;
    while tokio::time::Instant::now() < end {
        if let Ok(node) = hub
            .client()
            .get::<Value>(&format!("/api/v1/nodes/{NODE}"))
            .await
        {
            assert_eq!(
                node_ready(&node),
                Some("True"),
                "node flapped after a hub restart: {node}"
            );
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen > 10);
    // The pod was not restarted, and the node is in sync again.
    assert_eq!(
        read(&log_path(&agent, "keep")).matches("count=1\n").count(),
        1
    );
    assert!(in_sync(&hub).await >= first);

    // The same check does see a node that is really gone.
    agent.proc.kill();
    eventually(
        window + Duration::from_secs(60),
        "the node to become NotReady",
        || async {
            let node: Value = hub
                .client()
                .get(&format!("/api/v1/nodes/{NODE}"))
                .await
                .ok()?;
            (node_ready(&node) == Some("Unknown")).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn hub_restart_keeps_nodes_ready_with_the_embedded_broker() {
    hub_restart_keeps_nodes_ready_and_status_shows_the_acknowledged_revision(false).await;
}

#[tokio::test]
async fn hub_restart_keeps_nodes_ready_with_mosquitto() {
    hub_restart_keeps_nodes_ready_and_status_shows_the_acknowledged_revision(true).await;
}

/// The Node of `name`, with its Ready condition's status and message.
async fn readiness(hub: &Hub, name: &str) -> Option<(Value, String, String)> {
    let node: Value = hub
        .client()
        .get(&format!("/api/v1/nodes/{name}"))
        .await
        .ok()?;
    let cond = node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    let status = cond["status"].as_str()?.to_string();
    let message = cond["message"].as_str().unwrap_or_default().to_string();
    Some((node, status, message))
}

/// A link that goes silent without closing (half-open TCP: no FIN, no
/// RST, so no last will at once) is found two ways: by the broker's
/// keepalive timeout (then the last will, then the grace period), and, for a
/// board whose keepalive is long, by its lease running out while the broker
/// still shows it online. Either way the node becomes NotReady, and Ready
/// again when the link is back.
#[tokio::test]
async fn a_silently_dead_link_makes_the_node_not_ready_by_keepalive_or_by_lease() {
    let hub = Hub::start_opts(None, &["--node-grace", "2s"]).await;
    let target = hub.mqtt_url.split("://").nth(1).unwrap().to_string();
    // Short keepalive, long lease: the broker's timeout finds the dead link.
    let ka_link = TcpProxy::start(&target).await;
    let _ka = hub.agent_via(
        "edge-ka",
        &ka_link.url_like(&hub.mqtt_url),
        &["--keepalive", "5s", "--lease-duration", "1h"],
    );
    // Long keepalive, short lease (renewed every second): the lease finds it.
    let lease_link = TcpProxy::start(&target).await;
    let _lease = hub.agent_via(
        "edge-lease",
        &lease_link.url_like(&hub.mqtt_url),
        &["--keepalive", "60s", "--lease-duration", "4s"],
    );
    hub.wait_node_ready("edge-ka").await;
    hub.wait_node_ready("edge-lease").await;

    // The hub records each renewal on the Node, as Kubernetes' node Lease does.
    let (node, _, _) = readiness(&hub, "edge-lease").await.unwrap();
    assert_eq!(node["status"]["lease"]["leaseDurationSeconds"], 4, "{node}");
    let first = node["status"]["lease"]["renewTime"].clone();
    assert!(first.is_string(), "{node}");
    eventually(Duration::from_secs(30), "a lease renewal", || async {
        let (node, _, _) = readiness(&hub, "edge-lease").await?;
        let renewed = &node["status"]["lease"]["renewTime"];
        (renewed.is_string() && *renewed != first).then_some(())
    })
    .await;
    let (node, _, _) = readiness(&hub, "edge-ka").await.unwrap();
    assert_eq!(
        node["status"]["lease"]["leaseDurationSeconds"], 3600,
        "{node}"
    );

    ka_link.stall();
    lease_link.stall();
    let stalled = std::time::Instant::now();
    let mut found = [None, None];
    let deadline = stalled + Duration::from_secs(60);
    while found.iter().any(Option::is_none) {
        assert!(
            std::time::Instant::now() < deadline,
            "not both NotReady: {found:?}\n{}",
            tail(&hub.proc.output(), 30)
        );
        for (i, name) in ["edge-ka", "edge-lease"].into_iter().enumerate() {
            if found[i].is_none()
                && let Some((_, status, message)) = readiness(&hub, name).await
                && status == "Unknown"
            {
                found[i] = Some((stalled.elapsed(), message));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [Some((ka_after, ka_why)), Some((lease_after, lease_why))] = found else {
        unreachable!()
    };
    println!("NotReady after a stall: by keepalive {ka_after:?}, by lease {lease_after:?}");
    assert!(ka_why.contains("disconnected"), "{ka_why}");
    assert!(lease_why.contains("lease"), "{lease_why}");

    // Back: the keepalive board notices its dead connection by itself and
    // reconnects; the other's connection is closed for it (its own 60 s
    // keepalive would take minutes).
    ka_link.heal();
    lease_link.cut();
    lease_link.heal();
    hub.wait_node_ready("edge-ka").await;
    hub.wait_node_ready("edge-lease").await;
}

/// A `node` message (what an agent sends when a pressure condition comes
/// or goes) updates the Node's conditions and the hub's taints by
/// condition, both ways. Sent here on the broker as the agent would.
#[tokio::test]
async fn a_node_message_updates_conditions_and_taints_both_ways() {
    let (hub, _agent, _link) = setup(false).await;
    let (client, _) = observer(&hub, &[]).await;
    let node = |disk: &str| {
        let mut info = spoke_api::protocol::NodeInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        info.capacity
            .insert("pods".into(), spoke_api::quantity::Quantity("5".into()));
        info.conditions.push(spoke_api::protocol::NodeCondition {
            type_: "DiskPressure".into(),
            status: disk.into(),
            reason: if disk == "True" {
                "KubeletHasDiskPressure".into()
            } else {
                String::new()
            },
            message: if disk == "True" {
                "nodefs.available 1Mi".into()
            } else {
                String::new()
            },
        });
        spoke_api::protocol::Up::Node { node: info }.encode()
    };
    let c = hub.client();
    let path = format!("/api/v1/nodes/{NODE}");
    for (disk, tainted) in [("True", true), ("False", false)] {
        client
            .publish(topic::up(NODE), QoS::AtLeastOnce, false, node(disk))
            .await
            .unwrap();
        let n: Value = eventually(
            Duration::from_secs(30),
            &format!("DiskPressure {disk} and the taint {tainted}"),
            || {
                let (c, path) = (c.clone(), path.clone());
                async move {
                    let n: Value = c.get(&path).await.ok()?;
                    let cond = n["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "DiskPressure")?
                        .clone();
                    let has = n["spec"]["taints"].as_array().is_some_and(|ts| {
                        ts.iter()
                            .any(|t| t["key"] == "node.kubernetes.io/disk-pressure")
                    });
                    (cond["status"] == disk && has == tainted).then_some(n)
                }
            },
        )
        .await;
        assert_eq!(n["status"]["capacity"]["pods"], "5");
        assert_eq!(n["status"]["allocatable"]["pods"], "5");
        let cond = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "DiskPressure")
            .unwrap();
        let reason = if disk == "True" {
            "KubeletHasDiskPressure"
        } else {
            "KubeletHasNoDiskPressure"
        };
        assert_eq!(cond["reason"], reason, "{cond}");
    }

    // A description the hub cannot trust (an architecture that is no label
    // value) is refused whole: neither its condition nor its label lands.
    let mut bad: Value = serde_json::from_slice(&node("True")).unwrap();
    let arch = bad
        .pointer_mut("/node/architecture")
        .expect("the node message carries the architecture");
    *arch = json!("amd64 evil");
    client
        .publish(
            topic::up(NODE),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&bad).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n: Value = c.get(&path).await.unwrap();
    let disk = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DiskPressure")
        .unwrap();
    assert_eq!(disk["status"], "False", "{n}");
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/arch"], "amd64",
        "{n}"
    );
    assert!(
        hub.proc.output().contains("invalid description"),
        "the hub says why it refused"
    );
}
