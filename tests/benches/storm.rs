//! Reconnect storm: many light simulated agents on one hub with its embedded
//! broker over TLS, then a broker restart, and the time until every agent
//! has resynced.
//!
//! Each simulated agent speaks the real protocol with the real agent's
//! parts: credentials from the join endpoint (one bootstrap token, one join
//! per node), MQTT options from `spoke_agent::sync::mqtt_options` (client
//! id, keepalive, clean session, last will, TLS with the hub's CA), and the
//! agent's own event-loop driver `spoke_agent::sync::drive`, whose jittered
//! exponential back-off is what spreads the storm. Only the handler is
//! light: on each connect it subscribes, publishes `online`, says `hello`
//! (revision, node info, status digest, lease) and says it again after 5 s
//! (doubling) until the hub answers, as the real handler does; it applies
//! the answer's revision and acks it. No redb, no wasmtime.
//!
//! The broker restart: the embedded broker lives in the hub's process, so
//! restarting the broker is restarting the hub (`kill -9`, start again with
//! the same data dir and ports). Every session, subscription and in-flight
//! message is lost at once, and the hub, its broker and its sync worker must
//! take the whole fleet back together, which is the worst case of both.
//!
//! Printed: time until all have resynced (goal ≤ 60 s), extra reconnects
//! after each agent's first connect following the restart (a client-id
//! takeover loop would show there; goal 0), hub RSS and CPU at steady state
//! with every node connected beside the same hub with none, and the hub's
//! view at the end (nodes Ready and in sync).
//!
//! `SPOKE_BENCH_AGENTS` sets the fleet size (default 1000). Binaries from
//! `SPOKE_BIN_DIR` (e.g. target/release) or next to the bench.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use spoke_agent::sync::{Connection, Inbound};
use spoke_api::auth::{JOIN_PATH, JoinResponse};
use spoke_api::protocol::{Down, NodeInfo, ONLINE, Up, status_digest, topic};
use spoke_e2e::Hub;
use tokio::sync::mpsc;

/// What one simulated agent has seen; times in ns since the bench started.
#[derive(Default)]
struct Seen {
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// When the hub last answered a hello.
    answered: AtomicU64,
    /// The revision applied.
    applied: AtomicU64,
}

struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The real agent's hello retry: 5 s, doubling, at most 5 min.
const HELLO_RETRY: Duration = spoke_agent::sync::HELLO_RETRY;

async fn sim_agent(join: JoinResponse, ca: String, seen: Arc<Seen>, clock: Arc<Clock>) {
    let name = join.node_name.clone();
    let mut conn = Connection::parse_url(&join.broker_url).expect("broker URL");
    conn.username = Some(join.username);
    conn.password = Some(join.password);
    conn.ca_pem = Some(ca);
    let options = spoke_agent::sync::mqtt_options(&conn, &name, Duration::from_secs(60));
    // The real agent's request queue, socket settings and driver.
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    spoke_agent::sync::tune(&mut eventloop);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(spoke_agent::sync::drive(eventloop, tx));
    let node: NodeInfo = spoke_agent::node::info(
        110,
        &spoke_agent::node::Thresholds::default(),
        &spoke_agent::node::Readings::default(),
        Vec::new(),
    );
    let hello = |applied: u64| Up::Hello {
        applied_revision: applied,
        node: node.clone(),
        pods: Vec::new(),
        status_digest: Some(status_digest(&[])),
        lease_seconds: Some(3600),
    };
    let publish = |up: Up| {
        let _ = client.try_publish(topic::up(&name), QoS::AtLeastOnce, false, up.encode());
    };
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let at = retry.map(|(at, _)| at);
        let wait = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {
                if let Some((_, d)) = retry {
                    publish(hello(seen.applied.load(Ordering::SeqCst)));
                    let d = (d * 2).min(spoke_agent::sync::HELLO_RETRY_MAX);
                    retry = Some((tokio::time::Instant::now() + d, d));
                }
            }
            msg = rx.recv() => match msg {
                None => return,
                Some(Inbound::Connected) => {
                    seen.connects.fetch_add(1, Ordering::SeqCst);
                    for t in [topic::down(&name), topic::module(&name)] {
                        let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                    }
                    let _ = client.try_publish(topic::presence(&name), QoS::AtLeastOnce, true, ONLINE.to_vec());
                    publish(hello(seen.applied.load(Ordering::SeqCst)));
                    retry = Some((tokio::time::Instant::now() + HELLO_RETRY, HELLO_RETRY));
                }
                Some(Inbound::Disconnected) => {
                    seen.disconnects.fetch_add(1, Ordering::SeqCst);
                    retry = None;
                }
                Some(Inbound::Message { payload, .. }) => {
                    let revision = match Down::decode(&payload) {
                        Ok(Down::Desired { revision, .. }) | Ok(Down::Delta { revision, .. }) => Some(revision),
                        Ok(Down::UpToDate { .. }) => None,
                        _ => continue,
                    };
                    retry = None;
                    if let Some(r) = revision
                        && r > seen.applied.load(Ordering::SeqCst)
                    {
                        seen.applied.store(r, Ordering::SeqCst);
                        publish(Up::Ack { applied_revision: r });
                    }
                    seen.answered.store(clock.now(), Ordering::SeqCst);
                }
            }
        }
    }
}

/// CPU time (user + system) of a process, from /proc, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Hub CPU (share of one core) and RSS over `window`.
async fn hub_load(hub: &Hub, window: Duration) -> (f64, u64) {
    let pid = hub.proc.pid();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    (cpu, hub.proc.rss_kib().unwrap_or(0))
}

/// Waits until every agent's hello was answered after `since` (ns), and
/// returns when the last one was, printing progress.
async fn all_answered(
    seen: &[Arc<Seen>],
    since: u64,
    clock: &Clock,
    limit: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + limit;
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let done = seen
            .iter()
            .filter(|s| s.answered.load(Ordering::SeqCst) > since)
            .count();
        if done == seen.len() {
            return seen.iter().map(|s| s.answered.load(Ordering::SeqCst)).max();
        }
        if Instant::now() > deadline {
            eprintln!("only {done} of {} resynced within {limit:?}", seen.len());
            return None;
        }
        if Instant::now() > next_report {
            eprintln!(
                "  {:.1} s: {done} of {} resynced",
                (clock.now() - since) as f64 / 1e9,
                seen.len()
            );
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nodes the hub shows Ready, and Ready with `status.sync` in sync.
async fn hub_view(hub: &Hub) -> (usize, usize, usize) {
    let list: Value = hub.client().get("/api/v1/nodes").await.expect("list nodes");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let ready = |n: &Value| {
        n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let in_sync = |n: &Value| {
        let s = &n["status"]["sync"];
        s["appliedRevision"].as_u64().is_some() && s["appliedRevision"] == s["desiredRevision"]
    };
    (
        items.len(),
        items.iter().filter(|n| ready(n)).count(),
        items.iter().filter(|n| ready(n) && in_sync(n)).count(),
    )
}

/// Waits until the hub shows all `n` nodes Ready and in sync; returns how
/// long that took, or `None` after `limit`.
async fn hub_caught_up(hub: &Hub, n: usize, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let (_, ready, in_sync) = hub_view(hub).await;
        if ready == n && in_sync == n {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not within the limit".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("SPOKE_BENCH_AGENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let clock = Arc::new(Clock(Instant::now()));
    let mut hub = Hub::start().await;
    let ca = std::fs::read_to_string(hub.ca_path()).expect("the hub's CA");

    let (idle_cpu, idle_rss) = hub_load(&hub, Duration::from_secs(10)).await;

    // Credentials for every node, from the join endpoint, 8 joins at a time.
    let t = Instant::now();
    let joiner = hub.client_with(Some(&hub.bootstrap_token));
    let mut joins = Vec::with_capacity(n);
    let names: Vec<String> = (0..n).map(|i| format!("storm-{i:04}")).collect();
    for chunk in names.chunks(8) {
        let answers = futures_join(chunk.iter().map(|name| {
            let joiner = joiner.clone();
            let name = name.clone();
            async move {
                let answer = joiner
                    .create(JOIN_PATH, &json!({"nodeName": name}))
                    .await
                    .expect("join");
                serde_json::from_value::<JoinResponse>(answer).expect("join answer")
            }
        }))
        .await;
        joins.extend(answers);
    }
    let join_time = t.elapsed();

    // The fleet comes up, a millisecond apart.
    let seen: Vec<Arc<Seen>> = (0..n).map(|_| Arc::new(Seen::default())).collect();
    let t0 = clock.now();
    for (join, s) in joins.into_iter().zip(&seen) {
        tokio::spawn(sim_agent(join, ca.clone(), s.clone(), clock.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = all_answered(&seen, t0, &clock, Duration::from_secs(300))
        .await
        .expect("the fleet to connect");
    let cold = Duration::from_nanos(first - t0);
    let cold_caught_up = hub_caught_up(&hub, n, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (steady_cpu, steady_rss) = hub_load(&hub, Duration::from_secs(20)).await;
    let connects_before: Vec<u64> = seen
        .iter()
        .map(|s| s.connects.load(Ordering::SeqCst))
        .collect();

    // The broker restarts (with its hub).
    let kill = clock.now();
    hub.restart().await;
    let hub_up = Duration::from_nanos(clock.now() - kill);
    let last = all_answered(&seen, kill, &clock, Duration::from_secs(600)).await;
    let storm = last.map(|l| Duration::from_nanos(l - kill));
    // Answers spread: when the median agent had resynced.
    let mut answered: Vec<u64> = seen
        .iter()
        .map(|s| s.answered.load(Ordering::SeqCst).saturating_sub(kill))
        .collect();
    answered.sort();
    let median = Duration::from_nanos(answered[answered.len() / 2]);
    let storm_caught_up = hub_caught_up(&hub, n, Duration::from_secs(300)).await;
    // A takeover loop keeps kicking and reconnecting: watch a while longer.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let extra: u64 = seen
        .iter()
        .zip(&connects_before)
        .map(|(s, before)| (s.connects.load(Ordering::SeqCst) - before).saturating_sub(1))
        .sum();
    let not_reconnected = seen
        .iter()
        .zip(&connects_before)
        .filter(|(s, before)| s.connects.load(Ordering::SeqCst) == **before)
        .count();
    let (nodes, ready, in_sync) = hub_view(&hub).await;
    // Sessions that ended after they had begun (the broker published the
    // last will): connects given up by the client, or taken over.
    let wills = hub.proc.output().matches("agent disconnected").count();
    let (after_cpu, after_rss) = hub_load(&hub, Duration::from_secs(10)).await;

    println!(
        "\nSpoke reconnect storm: {n} simulated agents (one process), hub with embedded broker over TLS\n"
    );
    println!("| figure | value | goal / baseline |");
    println!("|---|---|---|");
    println!(
        "| {n} joins (POST {JOIN_PATH}, 8 at a time) | {:.1} s ({:.1} ms each) | |",
        join_time.as_secs_f64(),
        join_time.as_secs_f64() * 1e3 / n as f64
    );
    println!(
        "| cold start: first connect until every hello is answered | {:.1} s | |",
        cold.as_secs_f64()
    );
    println!(
        "| then until the hub shows every Node Ready and in sync | {} more | |",
        secs(cold_caught_up)
    );
    println!(
        "| hub down (kill -9) until its API answers again | {:.1} s | |",
        hub_up.as_secs_f64()
    );
    match storm {
        Some(s) => println!(
            "| broker restart: kill until every agent has resynced | {:.1} s (median agent {:.1} s) | ≤ 60 s |",
            s.as_secs_f64(),
            median.as_secs_f64()
        ),
        None => println!(
            "| broker restart: kill until every agent has resynced | not all within 600 s | ≤ 60 s |"
        ),
    }
    println!(
        "| then until the hub shows every Node Ready and in sync | {} more | |",
        secs(storm_caught_up)
    );
    println!(
        "| reconnects beyond each agent's first after the restart (takeover loops), over the storm + 15 s | {extra} | 0 |"
    );
    println!("| agents that never reconnected | {not_reconnected} | 0 |");
    println!(
        "| sessions that ended after the restart (last wills the hub saw: connects given up or taken over) | {wills} | |"
    );
    println!(
        "| hub's view after the storm: nodes / Ready / Ready and in sync | {nodes} / {ready} / {in_sync} | {n} / {n} / {n} |"
    );
    println!(
        "| hub RSS, {n} nodes connected (steady, before the restart) | {:.1} MiB | 0 nodes: {:.1} MiB |",
        steady_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0
    );
    println!(
        "| hub CPU, {n} nodes connected and in sync, 20 s window | {:.1} % of a core | 0 nodes: {:.1} % |",
        steady_cpu * 100.0,
        idle_cpu * 100.0
    );
    println!(
        "| hub RSS / CPU after the storm, in sync again (10 s window) | {:.1} MiB / {:.1} % | |",
        after_rss as f64 / 1024.0,
        after_cpu * 100.0
    );
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
