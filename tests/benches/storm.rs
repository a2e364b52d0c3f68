//! Reconnect storm: many light simulated agents (`spoke_e2e::fleet`) on one
//! hub, then a broker restart, and the time until every agent has resynced.
//!
//! Two brokers (`--broker embedded`, the default, or `--broker mosquitto`;
//! or `SPOKE_BENCH_BROKER`):
//!
//! - embedded: the broker lives in the hub's process, so restarting the
//!   broker is restarting the hub (`kill -9`, start again with the same data
//!   dir and ports). Every session, subscription and in-flight message is
//!   lost at once, and the hub, its broker and its sync worker must take the
//!   whole fleet back together, which is the worst case of both.
//! - mosquitto: Debian's Mosquitto over TLS with the hub's password and ACL
//!   files (`Hub::start_with_mosquitto`); Mosquitto is killed (`kill -9`)
//!   and started again with the same config and port, without persistence,
//!   while the hub stays up: the hub is one more client that loses its
//!   session and must reconnect and resubscribe with the fleet.
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
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spoke_api::auth::JOIN_PATH;
use spoke_e2e::fleet::{self, Clock, load, secs};
use spoke_e2e::stats::Figure;
use spoke_e2e::{Hub, Mosquitto};

/// The broker the storm runs against, from `--broker NAME` or
/// `SPOKE_BENCH_BROKER`.
fn broker_kind() -> String {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args
        .iter()
        .position(|a| a == "--broker")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--broker=").map(str::to_string))
        });
    let kind = from_args
        .or_else(|| std::env::var("SPOKE_BENCH_BROKER").ok())
        .unwrap_or_else(|| "embedded".into());
    assert!(
        kind == "embedded" || kind == "mosquitto",
        "--broker must be embedded or mosquitto, not {kind:?}"
    );
    kind
}

#[tokio::main]
async fn main() {
    let n = fleet::agents_from_env(1000);
    let kind = broker_kind();
    let nofile = fleet::raise_open_files(4 * n as u64 + 4096);
    let clock = Arc::new(Clock::new());
    let (mut hub, mut mosquitto): (Hub, Option<Mosquitto>) = if kind == "mosquitto" {
        let (hub, m) = Hub::start_with_mosquitto(true).await;
        (hub, Some(m))
    } else {
        (Hub::start().await, None)
    };
    let ca = std::fs::read_to_string(hub.ca_path()).expect("the hub's CA");

    let (idle_cpu, idle_rss) = load(&hub.proc, Duration::from_secs(10)).await;

    // Credentials for every node, from the join endpoint, 8 joins at a time.
    let t = Instant::now();
    let joins = fleet::join_fleet(&hub, "storm", 0..n, 8).await;
    let join_time = t.elapsed();

    // The fleet comes up, a millisecond apart.
    let t0 = clock.now();
    let seen = fleet::start_fleet(joins, Some(ca), &clock, Duration::from_millis(1)).await;
    let first = fleet::all_answered(&seen, t0, &clock, Duration::from_secs(300))
        .await
        .expect("the fleet to connect");
    let cold = Duration::from_nanos(first - t0);
    let cold_caught_up = fleet::hub_caught_up(&hub, n, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (steady_cpu, steady_rss) = load(&hub.proc, Duration::from_secs(20)).await;
    let connects_before: Vec<u64> = seen
        .iter()
        .map(|s| s.connects.load(Ordering::SeqCst))
        .collect();
    let wills_before = hub.proc.output().matches("agent disconnected").count();

    // The broker restarts (with its hub, when it is the hub's own).
    let kill = clock.now();
    match mosquitto.as_mut() {
        Some(m) => m.restart().await,
        None => hub.restart().await,
    }
    let broker_up = Duration::from_nanos(clock.now() - kill);
    let last = fleet::all_answered(&seen, kill, &clock, Duration::from_secs(600)).await;
    let storm = last.map(|l| Duration::from_nanos(l - kill));
    // Answers spread: when the median agent had resynced.
    let mut answered: Vec<u64> = seen
        .iter()
        .map(|s| s.answered.load(Ordering::SeqCst).saturating_sub(kill))
        .collect();
    answered.sort();
    let median = Duration::from_nanos(answered[answered.len() / 2]);
    let storm_caught_up = fleet::hub_caught_up(&hub, n, Duration::from_secs(300)).await;
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
    let (nodes, ready, in_sync) = fleet::hub_view(&hub).await;
    // Sessions that ended after they had begun (the broker published the
    // last will): connects given up by the client, or taken over. The
    // embedded broker's hub is a new process with a new log.
    let wills = hub.proc.output().matches("agent disconnected").count()
        - if mosquitto.is_some() { wills_before } else { 0 };
    let (after_cpu, after_rss) = load(&hub.proc, Duration::from_secs(10)).await;

    let (broker_name, restart_what) = match kind.as_str() {
        "mosquitto" => ("Mosquitto over TLS (hub stays up)", "Mosquitto"),
        _ => ("hub with embedded broker over TLS", "hub"),
    };
    println!(
        "\nSpoke reconnect storm: {n} simulated agents (one process), {broker_name}; open-file limit {nofile}\n"
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
        "| {restart_what} down (kill -9) until it answers again | {:.1} s | |",
        broker_up.as_secs_f64()
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
    if let Some(m) = &mosquitto
        && let Some(rss) = m.proc.rss_kib()
    {
        println!(
            "| Mosquitto RSS after the storm | {:.1} MiB | |",
            rss as f64 / 1024.0
        );
    }

    let b = "storm";
    let name = |what: &str| format!("{what} ({kind}, {n} agents)");
    let resync = storm.map_or(f64::NAN, |s| s.as_secs_f64());
    Figure::new(b, &name("broker restart: all agents resynced"), resync, "s")
        .goal("≤ 60 s")
        .emit();
    Figure::new(
        b,
        &name("broker restart: median agent resynced"),
        median.as_secs_f64(),
        "s",
    )
    .emit();
    Figure::new(
        b,
        &name("takeover reconnects after restart"),
        extra as f64,
        "",
    )
    .goal("0")
    .emit();
    Figure::new(
        b,
        &name("agents not reconnected"),
        not_reconnected as f64,
        "",
    )
    .goal("0")
    .emit();
    Figure::new(
        b,
        &name("nodes Ready and in sync after the storm"),
        in_sync as f64,
        "",
    )
    .goal(&format!("{n}"))
    .emit();
    Figure::new(
        b,
        &name("hub RSS, fleet connected"),
        steady_rss as f64 / 1024.0,
        "MiB",
    )
    .baseline("same hub, 0 nodes", idle_rss as f64 / 1024.0)
    .emit();
    Figure::new(
        b,
        &name("hub CPU, fleet connected"),
        steady_cpu * 100.0,
        "%",
    )
    .baseline("same hub, 0 nodes", idle_cpu * 100.0)
    .emit();
}
