//! A fleet on one hub: many light simulated agents (`spoke_e2e::fleet`,
//! default 10,000) on one hub with its embedded broker over TLS; the hub's
//! RSS and CPU at steady state, and apply→Running under pod churn.
//!
//! Steps, all in one run on one machine:
//!
//! 1. The hub with 0 nodes: RSS and CPU over the window (the baseline).
//! 2. 10 nodes join and their agents connect; bare pods are created one at
//!    a time, 2 a second, and apply→Running is measured on this nearly idle
//!    hub (the baseline).
//! 3. The rest of the fleet joins (the join endpoint, 8 at a time) and
//!    connects, ramped (`SPOKE_BENCH_RAMP_MS` apart,
//!    default 2 ms), until every hello is answered and the hub shows every
//!    Node Ready and in sync; then the hub's RSS and CPU over the window at
//!    steady state.
//! 4. Churn: bare pods (no controller: each create is one scheduling
//!    decision and one delta to one board) are created at 20 a second for
//!    `SPOKE_BENCH_CHURN_SECS` (default 60), each by its own request, and the
//!    scheduler spreads them over the fleet. apply→Running: from the
//!    create's acknowledgement to the watch event that shows the pod
//!    `Running` (reported by its simulated agent, written by the hub's sync
//!    worker). Hub CPU over the churn.
//! 5. The pods are deleted (8 requests at a time) and the time until the
//!    hub has removed them all (each board reports its pod gone) is printed.
//!
//! `SPOKE_BENCH_AGENTS` (default 10000), `SPOKE_BENCH_WINDOW_SECS` (default
//! 60). Binaries from `SPOKE_BIN_DIR` (e.g. target/release) or next to the
//! bench.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::fleet::{self, Clock, load, secs};
use spoke_e2e::stats::{Figure, ms, percentile};
use spoke_e2e::{Hub, Proc};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"bench": "fleet"}},
           "spec": {"containers": [{"name": "main", "image": "hello:v1"}]}})
}

/// When each pod was acknowledged and when a watch first showed it Running.
#[derive(Default)]
struct Times {
    created: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// Follows pod events from `rv` and records when each pod is first seen
/// Running, until the process ends.
async fn follow_running(client: Client, rv: String, times: Arc<Mutex<Times>>) {
    let mut watch = client.watch(PODS, Some(&rv)).await.expect("watch pods");
    while let Some(event) = watch.next().await {
        let Ok(e) = event else {
            eprintln!("watch error: {event:?}");
            return;
        };
        if e["object"]["status"]["phase"] != "Running" {
            continue;
        }
        if let Some(name) = e["object"]["metadata"]["name"].as_str() {
            let mut t = times.lock().unwrap();
            if !t.running.contains_key(name) {
                t.running.insert(name.to_string(), Instant::now());
            }
        }
    }
    eprintln!("the pod watch ended");
}

/// Creates `count` pods named `{prefix}-{i}` at `rate` a second (each by its
/// own request, so a slow answer does not slow the rate), waits until all
/// are Running (or `limit`), and returns the apply→Running samples, sorted,
/// the create latencies, sorted, and how many never ran.
async fn churn(
    client: &Client,
    times: &Arc<Mutex<Times>>,
    prefix: &str,
    count: usize,
    rate: f64,
    limit: Duration,
) -> (Vec<Duration>, Vec<Duration>, usize) {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (client, times) = (client.clone(), times.clone());
        let name = format!("{prefix}-{i:05}");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            client.create(PODS, &pod(&name)).await.expect("create pod");
            let acked = Instant::now();
            times.lock().unwrap().created.insert(name, acked);
            acked - t
        }));
    }
    let mut creates = Vec::with_capacity(count);
    for t in tasks {
        creates.push(t.await.expect("create task"));
    }
    creates.sort();
    let deadline = Instant::now() + limit;
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    loop {
        let done = {
            let t = times.lock().unwrap();
            names.iter().filter(|n| t.running.contains_key(*n)).count()
        };
        if done == count || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = times.lock().unwrap();
    let mut samples: Vec<Duration> = names
        .iter()
        .filter_map(|n| Some(*t.running.get(n)? - *t.created.get(n)?))
        .collect();
    samples.sort();
    let missing = count - samples.len();
    (samples, creates, missing)
}

/// Deletes the pods named `{prefix}-{i}`, 8 at a time, and waits until the
/// hub has removed them all; returns how long that took.
async fn delete_all(client: &Client, prefix: &str, count: usize) -> Option<Duration> {
    let t = Instant::now();
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    for chunk in names.chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|n| {
                let client = client.clone();
                let path = format!("{PODS}/{n}");
                tokio::spawn(async move {
                    let _ = client.delete(&path, None).await;
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        let list: Value = client
            .get(&format!("{PODS}?labelSelector=bench%3Dfleet"))
            .await
            .expect("list pods");
        let left = list["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| {
                        p["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(prefix))
                    })
                    .count()
            })
            .unwrap_or(0);
        if left == 0 {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn cpu_pct(cpu: f64) -> String {
    format!("{:.1} %", cpu * 100.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `p50 / p99` of sorted samples, or what is missing.
fn p50_p99(s: &[Duration]) -> String {
    if s.is_empty() {
        return "no samples".into();
    }
    format!("{} / {}", ms(percentile(s, 0.5)), ms(percentile(s, 0.99)))
}

fn p_ms(s: &[Duration], p: f64) -> f64 {
    if s.is_empty() {
        f64::NAN
    } else {
        percentile(s, p).as_secs_f64() * 1e3
    }
}

fn threads(proc: &Proc) -> String {
    std::fs::read_to_string(format!("/proc/{}/status", proc.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() {
    let n = fleet::agents_from_env(10_000);
    let window = Duration::from_secs(env_u64("SPOKE_BENCH_WINDOW_SECS", 60));
    let churn_secs = env_u64("SPOKE_BENCH_CHURN_SECS", 60);
    let ramp = Duration::from_millis(env_u64("SPOKE_BENCH_RAMP_MS", 2));
    const RATE: f64 = 20.0;
    const BASE_AGENTS: usize = 10;
    const BASE_PODS: usize = 40;
    let nofile = fleet::raise_open_files(4 * n as u64 + 4096);
    // Over TLS the embedded broker costs the hub three descriptors a board
    // (the board's socket, and both ends of the relay to the broker): use
    // plain MQTT when the open-file limit (which this process cannot raise
    // past its hard limit) does not allow that, or when SPOKE_BENCH_TLS=0.
    let tls = match std::env::var("SPOKE_BENCH_TLS").ok().as_deref() {
        Some("0") => false,
        Some(_) => true,
        None => nofile >= 3 * n as u64 + 2048,
    };
    let clock = Arc::new(Clock::new());
    let hub = if tls {
        Hub::start().await
    } else {
        Hub::start_opts(None, &["--mqtt-insecure"]).await
    };
    let transport = if tls {
        "MQTT over TLS"
    } else {
        "plain MQTT (--mqtt-insecure: the open-file limit is too low for TLS)"
    };
    let ca = std::fs::read_to_string(hub.ca_path()).ok();
    let client = hub.client();

    // 1. The hub with no nodes.
    eprintln!("hub with 0 nodes: {window:?} window");
    let (idle_cpu, idle_rss) = load(&hub.proc, window).await;

    // 2. A handful of nodes and apply→Running at a low rate, on a hub that
    // knows no other node yet (each joined node is a Node object that the
    // node controller and the scheduler go through).
    let base_n = BASE_AGENTS.min(n);
    let joins = fleet::join_fleet(&hub, "fleet", 0..base_n, 8).await;
    let t0 = clock.now();
    let mut seen = fleet::start_fleet(joins, ca.clone(), &clock, ramp).await;
    fleet::all_answered(&seen, t0, &clock, Duration::from_secs(120))
        .await
        .expect("the first agents to connect");
    fleet::hub_caught_up(&hub, seen.len(), Duration::from_secs(120))
        .await
        .expect("the first nodes Ready");
    // Joined Nodes start unreachable (tainted) until their board says
    // hello; the baseline starts once the node controller has lifted the
    // taints of the boards that did.
    for i in 0..BASE_AGENTS.min(n) {
        let path = format!("/api/v1/nodes/fleet-{i:05}");
        spoke_e2e::eventually(
            Duration::from_secs(120),
            "the first nodes untainted",
            || {
                let (client, path) = (client.clone(), path.clone());
                async move {
                    let node: Value = client.get(&path).await.ok()?;
                    let tainted = node["spec"]["taints"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty());
                    (!tainted).then_some(())
                }
            },
        )
        .await;
    }
    let list: Value = client.get(PODS).await.expect("list pods");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list revision")
        .to_string();
    let times = Arc::new(Mutex::new(Times::default()));
    tokio::spawn(follow_running(client.clone(), rv, times.clone()));
    eprintln!("baseline: {BASE_PODS} pods at 2/s on {} nodes", seen.len());
    let (base, base_creates, base_missing) = churn(
        &client,
        &times,
        "base",
        BASE_PODS,
        2.0,
        Duration::from_secs(60),
    )
    .await;
    let base_deleted = delete_all(&client, "base", BASE_PODS).await;

    // Credentials for the rest of the fleet.
    let t = Instant::now();
    let rest = fleet::join_fleet(&hub, "fleet", base_n..n, 8).await;
    let join_time = t.elapsed();
    eprintln!("{} joins in {join_time:?}", n - base_n);

    // 3. The whole fleet, then steady state.
    eprintln!("{} more agents, {ramp:?} apart", rest.len());
    let t0 = clock.now();
    let more = fleet::start_fleet(rest, ca, &clock, ramp).await;
    seen.extend(more);
    let connected = fleet::all_answered(&seen, 0, &clock, Duration::from_secs(900))
        .await
        .map(|last| Duration::from_nanos(last.saturating_sub(t0)));
    let caught_up = fleet::hub_caught_up(&hub, n, Duration::from_secs(600)).await;
    eprintln!(
        "fleet connected in {}, hub caught up {} later",
        secs(connected),
        secs(caught_up)
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("steady state: {window:?} window");
    let (steady_cpu, steady_rss) = load(&hub.proc, window).await;
    let hub_threads = threads(&hub.proc);
    let bench_rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);

    // 4. Churn at 20 pods/s.
    let count = (churn_secs as f64 * RATE) as usize;
    eprintln!("churn: {count} pods at {RATE}/s");
    let c0 = fleet::cpu_seconds(hub.proc.pid());
    let t = Instant::now();
    let (samples, creates, missing) = churn(
        &client,
        &times,
        "churn",
        count,
        RATE,
        Duration::from_secs(300),
    )
    .await;
    let churn_cpu = (fleet::cpu_seconds(hub.proc.pid()) - c0) / t.elapsed().as_secs_f64();
    let churn_rss = hub.proc.rss_kib().unwrap_or(0);
    let running_agents = seen
        .iter()
        .filter(|s| s.pods.load(std::sync::atomic::Ordering::SeqCst) > 0)
        .count();

    // 5. And they go.
    let c0 = fleet::cpu_seconds(hub.proc.pid());
    let t = Instant::now();
    let deleted = delete_all(&client, "churn", count).await;
    let delete_cpu = (fleet::cpu_seconds(hub.proc.pid()) - c0) / t.elapsed().as_secs_f64();
    let (nodes, ready, in_sync) = fleet::hub_view(&hub).await;

    println!(
        "\nSpoke fleet: {n} simulated agents (one process) on one hub with its embedded broker, {transport}; open-file limit {nofile}\n"
    );
    println!("| figure | value | baseline |");
    println!("|---|---|---|");
    println!(
        "| {} joins (8 at a time) | {:.1} s | |",
        n - base_n,
        join_time.as_secs_f64()
    );
    println!(
        "| fleet connect ({} agents, {ramp:?} apart): until every hello is answered | {} | |",
        n - BASE_AGENTS.min(n),
        secs(connected)
    );
    println!(
        "| then until the hub shows every Node Ready and in sync | {} more | |",
        secs(caught_up)
    );
    println!(
        "| hub RSS, {n} nodes connected, steady | {} | 0 nodes: {} |",
        mib(steady_rss),
        mib(idle_rss)
    );
    println!(
        "| hub CPU, {n} nodes connected, steady ({window:?} window) | {} of a core | 0 nodes: {} |",
        cpu_pct(steady_cpu),
        cpu_pct(idle_cpu)
    );
    println!("| hub threads, steady | {hub_threads} | |");
    println!(
        "| apply→Running p50 / p99, {count} bare pods at {RATE}/s over {n} nodes | {} | {BASE_PODS} pods at 2/s on {} nodes: {} |",
        p50_p99(&samples),
        BASE_AGENTS.min(n),
        p50_p99(&base)
    );
    println!(
        "| create (API acknowledged) p50 / p99, under churn | {} | at 2/s: {} |",
        p50_p99(&creates),
        p50_p99(&base_creates)
    );
    println!("| pods not Running within the limit | {missing} | {base_missing} |");
    println!(
        "| simulated agents running a pod after the churn (the scheduler's spread) | {running_agents} | |"
    );
    println!(
        "| hub CPU / RSS during the churn | {} / {} | |",
        cpu_pct(churn_cpu),
        mib(churn_rss)
    );
    println!(
        "| delete all {count} (8 requests at a time) until the hub has removed them | {} (hub CPU {}) | {BASE_PODS}: {} |",
        secs(deleted),
        cpu_pct(delete_cpu),
        secs(base_deleted)
    );
    println!(
        "| hub's view at the end: nodes / Ready / Ready and in sync | {nodes} / {ready} / {in_sync} | {n} / {n} / {n} |"
    );
    println!(
        "| bench process RSS ({n} simulated agents) | {} | |",
        mib(bench_rss)
    );

    let b = "fleet";
    let name = |what: &str| format!("{what} ({n} agents)");
    Figure::new(
        b,
        &name("hub RSS, steady"),
        steady_rss as f64 / 1024.0,
        "MiB",
    )
    .baseline("same hub, 0 nodes", idle_rss as f64 / 1024.0)
    .emit();
    Figure::new(b, &name("hub CPU, steady"), steady_cpu * 100.0, "%")
        .baseline("same hub, 0 nodes", idle_cpu * 100.0)
        .emit();
    Figure::new(
        b,
        &name("apply→Running p50, 20 pods/s churn"),
        p_ms(&samples, 0.5),
        "ms",
    )
    .baseline("2 pods/s on 10 nodes", p_ms(&base, 0.5))
    .emit();
    Figure::new(
        b,
        &name("apply→Running p99, 20 pods/s churn"),
        p_ms(&samples, 0.99),
        "ms",
    )
    .baseline("2 pods/s on 10 nodes", p_ms(&base, 0.99))
    .emit();
    Figure::new(b, &name("hub CPU, 20 pods/s churn"), churn_cpu * 100.0, "%")
        .baseline("same hub, steady", steady_cpu * 100.0)
        .emit();
    Figure::new(
        b,
        &name("fleet connect"),
        connected.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
    )
    .emit();
    Figure::new(b, &name("pods not Running"), missing as f64, "")
        .goal("0")
        .emit();
}
