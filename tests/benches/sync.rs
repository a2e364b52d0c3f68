//! Edge sync figures, counted at TCP: the agent (joined, over TLS) reaches
//! the hub's embedded broker through a counting proxy
//! ([`spoke_e2e::proxy::TcpProxy`]), so every byte of its MQTT connection,
//! both directions, is seen (TCP payload: TLS records included, IP/TCP
//! headers not; `benches/idle.rs` measures those for an idle node).
//!
//! - resync after an outage (the proxy cuts the link, heals it): bytes and
//!   time from the agent's first byte after the heal until the link is
//!   quiet again, with 0 pods, with 100 unchanged pods, and with 100 pods
//!   changed during the outage, beside the encoded size of those changes
//!   (the pods and uids the hub's delta carries, as JSON) measured in the
//!   same run.
//!
//! Prints a table; no assertions.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use spoke_api::protocol::{Down, topic};
use spoke_e2e::proxy::TcpProxy;
use spoke_e2e::stats::{Figure, quick};
use spoke_e2e::{Hub, eventually, example_wasm};
use tokio::sync::mpsc;

const NODE: &str = "bench-1";
const PODS: usize = 100;
/// With `scripts/bench --quick`.
const QUICK_PODS: usize = 20;

/// Subscribes, on the broker itself (as the hub's user, over TLS), to the
/// node's `down` topic.
async fn observer(hub: &Hub) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let mut conn = spoke_agent::sync::Connection::parse_url(&hub.mqtt_url).unwrap();
    conn.ca_pem = Some(std::fs::read_to_string(hub.ca_path()).unwrap());
    let mut o = MqttOptions::new("bench-observer", conn.host.clone(), conn.port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    o.set_credentials("_spoke-hub", hub.mqtt_hub_password());
    spoke_agent::identity::set_tls(&mut o, &conn);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(topic::down(NODE), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
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
    ready.await.unwrap();
    rx
}

fn pod(name: &str, greeting: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "hello:v1",
                    "env": [{"name": "GREETING", "value": greeting}],
                    "resources": {"limits": {"memory": "32Mi"}}}]}})
}

async fn node_sync(hub: &Hub) -> Option<(u64, u64)> {
    let node: Value = hub
        .client()
        .get(&format!("/api/v1/nodes/{NODE}"))
        .await
        .ok()?;
    let s = &node["status"]["sync"];
    Some((
        s["desiredRevision"].as_u64()?,
        s["appliedRevision"].as_u64()?,
    ))
}

async fn wait_in_sync(hub: &Hub) {
    eventually(Duration::from_secs(120), "the node in sync", || async {
        let (d, a) = node_sync(hub).await?;
        (d == a).then_some(())
    })
    .await;
}

/// Waits until nothing has crossed the proxy for `quiet`, and returns
/// (bytes up, bytes down, time from the first to the last byte).
async fn until_quiet(proxy: &TcpProxy, quiet: Duration) -> (u64, u64, Duration) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some((first, last)) = proxy.activity()
            && last.elapsed() >= quiet
        {
            let (up, down) = proxy.bytes();
            return (up, down, last - first);
        }
    }
}

struct Resync {
    label: String,
    up: u64,
    down: u64,
    time: Duration,
    /// What the hub answered, and the encoded size of the changes it carried.
    answer: String,
    changes: usize,
    message: usize,
}

/// Cuts the link, runs `during`, heals it and measures the resync.
async fn outage<F, Fut>(
    label: &str,
    hub: &Hub,
    proxy: &TcpProxy,
    downs: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    during: F,
) -> Resync
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    proxy.cut();
    // The broker notices at once (the TCP connection is closed) and the
    // hub hears the last will; let the agent's backoff settle a little.
    tokio::time::sleep(Duration::from_secs(2)).await;
    during().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while downs.try_recv().is_ok() {}
    proxy.reset();
    proxy.heal();
    let (up, down, time) = until_quiet(proxy, Duration::from_secs(3)).await;
    wait_in_sync(hub).await;
    let mut answer = String::new();
    let (mut changes, mut message) = (0, 0);
    while let Ok(m) = downs.try_recv() {
        match Down::decode(&m) {
            Ok(Down::Delta { pods, deleted, .. }) => {
                answer = "delta".into();
                message += m.len();
                changes += pods
                    .iter()
                    .map(|p| serde_json::to_vec(p).unwrap().len())
                    .sum::<usize>()
                    + deleted.iter().map(|u| u.len() + 3).sum::<usize>();
            }
            Ok(Down::Desired { pods, .. }) => {
                answer = "snapshot".into();
                message += m.len();
                changes += pods
                    .iter()
                    .map(|p| serde_json::to_vec(p).unwrap().len())
                    .sum::<usize>();
            }
            Ok(Down::UpToDate { .. }) => {
                answer = "upToDate".into();
                message += m.len();
            }
            _ => {}
        }
    }
    Resync {
        label: label.into(),
        up,
        down,
        time,
        answer,
        changes,
        message,
    }
}

#[tokio::main]
async fn main() {
    let hub = Hub::start().await;
    let proxy = TcpProxy::start(hub.mqtt_url.split("://").nth(1).unwrap()).await;
    let mut downs = observer(&hub).await;
    let _agent = hub.agent_via(NODE, &proxy.url_like(&hub.mqtt_url), &[]);
    hub.wait_node_ready(NODE).await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let client = hub.client();
    let pods = "/api/v1/namespaces/default/pods";

    wait_in_sync(&hub).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let n = if quick() { QUICK_PODS } else { PODS };
    let mut results = Vec::new();
    results.push(outage("0 pods, 0 changed", &hub, &proxy, &mut downs, || async {}).await);

    for i in 0..n {
        client
            .create(pods, &pod(&format!("p{i}"), "v1"))
            .await
            .expect("create");
    }
    eventually(Duration::from_secs(300), "every pod Running", || async {
        let list: Value = client.get(pods).await.ok()?;
        let running = list["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (running == n).then_some(())
    })
    .await;
    wait_in_sync(&hub).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    results.push(
        outage(
            &format!("{n} pods, 0 changed"),
            &hub,
            &proxy,
            &mut downs,
            || async {},
        )
        .await,
    );
    results.push(
        outage(
            &format!("{n} pods, {n} changed (spec update)"),
            &hub,
            &proxy,
            &mut downs,
            || async {
                for i in 0..n {
                    let patch = json!({"spec": {"containers": [{"name": "main", "image": "hello:v1",
                        "env": [{"name": "GREETING", "value": "v2"}],
                        "resources": {"limits": {"memory": "32Mi"}}}]}});
                    client
                        .patch(
                            &format!("{pods}/p{i}"),
                            "application/merge-patch+json",
                            &patch,
                        )
                        .await
                        .expect("patch");
                }
            },
        )
        .await,
    );

    println!(
        "\nSpoke edge sync benchmark (embedded broker over TLS, TCP payload bytes through a counting proxy)\n"
    );
    println!(
        "| outage, then | hub answered | bytes down (hub→agent) | bytes up (agent→hub) | total | encoded changes | down : changes | time, first→last byte |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &results {
        let ratio = if r.changes > 0 {
            format!("{:.2}×", r.down as f64 / r.changes as f64)
        } else {
            "".into()
        };
        println!(
            "| {} | {} ({} B message) | {} B | {} B | {} B | {} B | {} | {:.1} ms |",
            r.label,
            r.answer,
            r.message,
            r.down,
            r.up,
            r.up + r.down,
            r.changes,
            ratio,
            r.time.as_secs_f64() * 1e3
        );
        let name = |what: &str| format!("resync after an outage, {}: {what}", r.label);
        if r.changes > 0 {
            Figure::new("sync", &name("bytes down"), r.down as f64, "B")
                .baseline("encoded size of the changes", r.changes as f64)
                .goal("≤ 1.1× the changes")
                .emit();
            Figure::new(
                "sync",
                &name("bytes, both directions"),
                (r.up + r.down) as f64,
                "B",
            )
            .emit();
        } else {
            Figure::new(
                "sync",
                &name("bytes, both directions"),
                (r.up + r.down) as f64,
                "B",
            )
            .goal("≤ 1 KiB")
            .emit();
            Figure::new(
                "sync",
                &name("the hub's answer, MQTT payload"),
                r.message as f64,
                "B",
            )
            .emit();
        }
        Figure::ms("sync", &name("time, first → last byte"), r.time).emit();
    }
}
