//! Foundation figures, measured against real processes on loopback:
//!
//! - apply→Running latency over 100 pods whose module is already cached on
//!   the board, beside its floor measured in the same run: one redb commit +
//!   one wasmtime instantiate of the same module + one MQTT round trip
//!   through the same broker;
//! - the agent's idle RSS with 0 pods, and its binary size.
//!
//! Run with `scripts/bench` (release binaries). Prints a table; no
//! assertions: these machines are noisy, so read the ratio, not the time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spoke_e2e::stats::{Figure, median, ms, percentile, quick, redb_commits};
use spoke_e2e::{Hub, bin, example_wasm};

const PODS: usize = 100;
/// With `scripts/bench --quick`.
const QUICK_PODS: usize = 20;
const FLOOR_SAMPLES: usize = 200;

fn redb_commit(dir: &std::path::Path) -> Duration {
    median(redb_commits(dir, FLOOR_SAMPLES))
}

async fn wasmtime_instantiate(wasm: &[u8]) -> Duration {
    use wasmtime::{Config, Engine, Linker, Module, Store};
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::p1::WasiP1Ctx;
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).expect("engine");
    let module = Module::new(&engine, wasm).expect("module");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).expect("link");
    let pre = linker.instantiate_pre(&module).expect("pre");
    let mut samples = Vec::new();
    for _ in 0..FLOOR_SAMPLES {
        let t = Instant::now();
        let ctx = WasiCtxBuilder::new().env("GREETING", "x").build_p1();
        let mut store = Store::new(&engine, ctx);
        store.set_epoch_deadline(1);
        pre.instantiate_async(&mut store)
            .await
            .expect("instantiate");
        samples.push(t.elapsed());
    }
    median(samples)
}

async fn mqtt_round_trip(hub: &Hub) -> Duration {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    // A node of its own: the broker lets a node publish only to its own
    // topics, so the floor is a QoS 1 publish and its PUBACK (client →
    // broker → client, over TLS as the agents do).
    let creds: spoke_api::auth::JoinResponse = serde_json::from_value(
        hub.client_with(Some(&hub.bootstrap_token))
            .create(
                spoke_api::auth::JOIN_PATH,
                &serde_json::json!({"nodeName": "bench-floor"}),
            )
            .await
            .expect("join"),
    )
    .expect("join answer");
    let mut conn = spoke_agent::sync::Connection::parse_url(&creds.broker_url).expect("url");
    conn.ca_pem = creds.ca_pem.clone();
    let mut opts = MqttOptions::new("spoke-agent-bench-floor", conn.host.clone(), conn.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_credentials(creds.username.clone(), creds.password.clone());
    spoke_agent::identity::set_tls(&mut opts, &conn);
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    // As the hub and the agent do.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.expect("poll") {
            break;
        }
    }
    let topic = spoke_api::protocol::topic::up("bench-floor");
    let mut samples = Vec::new();
    for _ in 0..FLOOR_SAMPLES {
        let t = Instant::now();
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                r#"{"type":"ack","appliedRevision":0}"#,
            )
            .await
            .expect("publish");
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("poll") {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    median(samples)
}

/// Creates a pod and waits, on a watch opened before the create, until the
/// hub shows it Running.
async fn create_and_wait_running(client: &spoke_client::Client, name: &str) -> Duration {
    let pods = "/api/v1/namespaces/default/pods";
    let list: Value = client.get(pods).await.expect("list");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list revision")
        .to_string();
    let mut watch = client.watch(pods, Some(&rv)).await.expect("watch");
    let t = Instant::now();
    client.create(pods, &pod(name)).await.expect("create");
    loop {
        let e = watch.next().await.expect("watch open").expect("event");
        if e["object"]["metadata"]["name"] == name && e["object"]["status"]["phase"] == "Running" {
            return t.elapsed();
        }
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "main", "image": "hello:v1",
                    "resources": {"limits": {"memory": "32Mi"}}}]}})
}

#[tokio::main]
async fn main() {
    let hub = Hub::start().await;
    let client = hub.client();
    let wasm_path = example_wasm("hello");
    let wasm = std::fs::read(&wasm_path).expect("hello.wasm");

    // Idle agent: connected, registered, no pods.
    let idle = hub.agent("idle-1", &[]);
    hub.wait_node_ready("idle-1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = idle.proc.rss_kib().unwrap_or(0);
    drop(idle);

    let agent = hub.agent("bench-1", &[]);
    // Only bench-1 may take pods: wait until idle-1 is gone from scheduling
    // by deleting its node.
    let _ = client.delete("/api/v1/nodes/idle-1", None).await;
    hub.wait_node_ready("bench-1").await;
    hub.push(&wasm_path, "hello:v1");

    // Warm-up: the module is fetched and compiled once, then cached.
    let first = create_and_wait_running(&client, "warmup").await;
    // The agent logs how long compiling took.
    let compile_ms = agent
        .proc
        .output()
        .lines()
        .find(|l| l.contains("compiled module"))
        .and_then(|l| l.split("ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "?".into());
    client
        .delete("/api/v1/namespaces/default/pods/warmup", Some(0))
        .await
        .expect("delete");

    let pods = if quick() { QUICK_PODS } else { PODS };
    let mut latencies = Vec::with_capacity(pods);
    for i in 0..pods {
        let name = format!("bench-{i}");
        latencies.push(create_and_wait_running(&client, &name).await);
        client
            .delete(&format!("/api/v1/namespaces/default/pods/{name}"), Some(0))
            .await
            .expect("delete");
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let agent_rss_after = agent.proc.rss_kib().unwrap_or(0);

    let dir = tempfile::tempdir().expect("tempdir");
    let commit = redb_commit(dir.path());
    let instantiate = wasmtime_instantiate(&wasm).await;
    let rtt = mqtt_round_trip(&hub).await;
    let floor = commit + instantiate + rtt;

    // The agent as shipped is built with its own profile (release-agent in
    // Cargo.toml): measure that one when it was built next to the others.
    let shipped = bin("spoke-agent")
        .parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("release-agent/spoke-agent"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| bin("spoke-agent"));
    let agent_size = std::fs::metadata(&shipped).map(|m| m.len()).unwrap_or(0);
    println!("\nSpoke foundation benchmark ({pods} pods, module cached, loopback)\n");
    println!("| figure | value | floor / reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| apply→Running p50 | {} | floor {} (redb commit {} + wasmtime instantiate {} + MQTT round trip {}) | {:.1}× |",
        ms(p50),
        ms(floor),
        ms(commit),
        ms(instantiate),
        ms(rtt),
        p50.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "| apply→Running p99 | {} | floor {} | {:.1}× |",
        ms(p99),
        ms(floor),
        p99.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "| agent idle RSS, 0 pods | {:.1} MiB | goal ≤ 16 MiB | |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| agent RSS after {pods} pods came and went | {:.1} MiB | | |",
        agent_rss_after as f64 / 1024.0
    );
    println!(
        "| first pod of a new module (fetch + compile), apply→Running | {} | of which compiling {compile_ms} ms | |",
        ms(first)
    );
    println!(
        "| agent binary ({}) | {:.1} MiB ({agent_size} bytes) | goal ≤ 15 MiB | |",
        shipped.display(),
        agent_size as f64 / (1024.0 * 1024.0)
    );

    let mib = |kib: u64| kib as f64 / 1024.0;
    let floor_name = "floor: redb commit + wasmtime instantiate + MQTT round trip";
    Figure::ms("foundation", "apply→Running p50", p50)
        .baseline_ms(floor_name, floor)
        .emit();
    Figure::ms("foundation", "apply→Running p99", p99)
        .baseline_ms(floor_name, floor)
        .emit();
    Figure::ms("foundation", "floor: redb commit (1 KiB, durable)", commit).emit();
    Figure::ms(
        "foundation",
        "floor: wasmtime instantiate (hello)",
        instantiate,
    )
    .emit();
    Figure::ms("foundation", "floor: MQTT QoS 1 round trip (TLS)", rtt).emit();
    Figure::ms(
        "foundation",
        "first pod of a new module (fetch + compile), apply→Running",
        first,
    )
    .emit();
    Figure::new("foundation", "agent idle RSS, 0 pods", mib(idle_rss), "MiB")
        .goal("≤ 16 MiB")
        .emit();
    Figure::new(
        "foundation",
        &format!("agent RSS after {pods} pods came and went"),
        mib(agent_rss_after),
        "MiB",
    )
    .emit();
    let profile = shipped
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    Figure::new(
        "foundation",
        &format!("agent binary, stripped (profile {profile})"),
        agent_size as f64 / (1024.0 * 1024.0),
        "MiB",
    )
    .goal("≤ 15 MiB")
    .emit();
}
