//! Hub API write figures (issue 3), against a real hub process over HTTPS:
//!
//! - create throughput and latency with 1 and with 16 concurrent clients
//!   (closed loop: each client sends its next create when the last is
//!   answered);
//! - latency at a steady 500 creates/s (open loop: requests leave on a
//!   schedule whether or not earlier ones were answered);
//! - beside them, the raw redb single-commit rate on the same disk, measured
//!   in the same run, and the ratio.
//!
//! Goals: single-object p99 ≤ 20 ms at 500 writes/s, and throughput ≥ 0.5×
//! the raw commit rate. Run with `scripts/bench`; prints, asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use spoke_client::Client;
use spoke_e2e::Hub;
use spoke_e2e::stats::{Figure, ms, percentile, quick, redb_commits};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn create(client: &Client, name: String) -> Duration {
    let obj = json!({"metadata": {"name": name, "labels": {"bench": "api"}},
                     "data": {"payload": "x".repeat(512)}});
    let t = Instant::now();
    client.create(CMS, &obj).await.expect("create");
    t.elapsed()
}

/// `clients` tasks each making `per_client` creates back to back; returns
/// every latency and the wall time.
async fn closed_loop(
    client: &Client,
    tag: &str,
    clients: usize,
    per_client: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_client);
            for i in 0..per_client {
                out.push(create(&client, format!("{tag}-{c}-{i}")).await);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let wall = start.elapsed();
    all.sort();
    (all, wall)
}

/// Creates sent at `rate` per second for `seconds`; returns the latencies.
async fn open_loop(client: &Client, rate: u64, seconds: u64) -> Vec<Duration> {
    let client = Arc::new(client.clone());
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        tick.tick().await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            create(&client, format!("open-{i}")).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.expect("request task"));
    }
    all.sort();
    all
}

#[tokio::main]
async fn main() {
    let hub = Hub::start().await;
    let client = hub.client();
    // Warm-up: connections, TLS sessions, the store file.
    closed_loop(&client, "warm", 4, 50).await;

    let dir = tempfile::tempdir_in(hub.data_dir()).expect("tempdir on the hub's disk");
    let mut commits = redb_commits(dir.path(), 1000);
    let commit_wall: Duration = commits.iter().sum();
    commits.sort();
    let raw_rate = commits.len() as f64 / commit_wall.as_secs_f64();

    // `scripts/bench --quick`: a fifth of the creates, one second open loop.
    let (creates, open_secs) = if quick() { (200, 1) } else { (1000, 4) };
    let (one, one_wall) = closed_loop(&client, "c1", 1, creates).await;
    let (many, many_wall) = closed_loop(&client, "c16", 16, creates / 8).await;
    let open = open_loop(&client, 500, open_secs).await;

    let rate = |n: usize, wall: Duration| n as f64 / wall.as_secs_f64();
    let (r1, r16) = (rate(one.len(), one_wall), rate(many.len(), many_wall));
    println!("\nSpoke hub API writes (ConfigMap creates over HTTPS, loopback)\n");
    println!("| figure | value | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| raw redb commit rate (1 KiB, durable) | {raw_rate:.0} /s | p50 {} p99 {} | |",
        ms(percentile(&commits, 0.5)),
        ms(percentile(&commits, 0.99)),
    );
    for (label, lat, r) in [("1 client", &one, r1), ("16 clients", &many, r16)] {
        println!(
            "| creates/s, {label} | {r:.0} /s | raw commits {raw_rate:.0} /s | {:.2}× |",
            r / raw_rate
        );
        println!(
            "| create latency p50 / p99, {label} | {} / {} | | |",
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.99))
        );
    }
    println!(
        "| create latency at 500/s open loop, p50 / p99 | {} / {} | goal p99 ≤ 20 ms | |",
        ms(percentile(&open, 0.5)),
        ms(percentile(&open, 0.99))
    );

    let (c50, c99) = (percentile(&commits, 0.5), percentile(&commits, 0.99));
    Figure::new(
        "api",
        "raw redb commit rate (1 KiB, durable)",
        raw_rate,
        "/s",
    )
    .emit();
    for (label, lat, r) in [("1 client", &one, r1), ("16 clients", &many, r16)] {
        Figure::new("api", &format!("creates/s, {label}"), r, "/s")
            .baseline("raw redb commits/s", raw_rate)
            .goal("≥ 0.5× raw commits")
            .emit();
        Figure::ms("api", &format!("create p50, {label}"), percentile(lat, 0.5))
            .baseline_ms("raw redb commit p50", c50)
            .emit();
        Figure::ms(
            "api",
            &format!("create p99, {label}"),
            percentile(lat, 0.99),
        )
        .baseline_ms("raw redb commit p99", c99)
        .emit();
    }
    Figure::ms(
        "api",
        "create p50 at 500/s open loop",
        percentile(&open, 0.5),
    )
    .baseline_ms("raw redb commit p50", c50)
    .emit();
    Figure::ms(
        "api",
        "create p99 at 500/s open loop",
        percentile(&open, 0.99),
    )
    .baseline_ms("raw redb commit p99", c99)
    .goal("≤ 20 ms")
    .emit();
}
