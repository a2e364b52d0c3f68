//! What HTTPS and the token check cost an API request, measured against real
//! hub processes on loopback, in one run:
//!
//! - the default hub: TLS, a token lookup (one store read + sha256) and an
//!   audit line per request;
//! - beside it, a hub started with `--insecure-http`: the same token lookup
//!   and audit line, no TLS;
//! - and `GET /version` on the default hub, which skips the token check and
//!   the audit log: the floor of one request through TLS and the router.
//!
//! Run with `scripts/bench` (release binaries) or, for a quick look,
//! `cargo test -p spoke-e2e --bench auth` (debug build of our crates). Prints
//! a table; no assertions: read the ratios, not the times.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::Hub;
use spoke_e2e::stats::{Figure, ms, percentile};

const REQUESTS: usize = 500;
const CREATES: usize = 200;
const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}})
}

/// Runs `request` `n` times, one after another, and returns the sorted times.
async fn timed<F, Fut>(n: usize, mut request: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        request(i).await;
        times.push(start.elapsed());
    }
    times.sort();
    times
}

struct Row {
    what: &'static str,
    /// The figure's name in the results table.
    short: &'static str,
    https: Vec<Duration>,
    plain: Vec<Duration>,
}

#[tokio::main]
async fn main() {
    let secure = Hub::start().await;
    let plain = Hub::start_opts(None, &["--insecure-http"]).await;
    let hubs = [&secure, &plain];
    for hub in hubs {
        let c = hub.client();
        for i in 0..10 {
            c.create(PODS, &pod(&format!("seed-{i}")))
                .await
                .expect("seed pod");
        }
    }

    let mut rows = Vec::new();
    let mut per_hub = Vec::new();
    for hub in hubs {
        let c = hub.client();
        per_hub.push(
            timed(REQUESTS, |_| {
                let c = c.clone();
                async move {
                    c.get::<Value>("/version").await.expect("version");
                }
            })
            .await,
        );
    }
    rows.push(Row {
        what: "GET /version, kept-alive connection (no token check, no audit)",
        short: "GET /version, kept-alive",
        plain: per_hub.pop().expect("plain"),
        https: per_hub.pop().expect("https"),
    });

    for hub in hubs {
        let c = hub.client();
        per_hub.push(
            timed(REQUESTS, |_| {
                let c = c.clone();
                async move {
                    c.get::<Value>(PODS).await.expect("list");
                }
            })
            .await,
        );
    }
    rows.push(Row {
        what: "GET pods (10), kept-alive connection (token check + audit line)",
        short: "GET pods (10), kept-alive",
        plain: per_hub.pop().expect("plain"),
        https: per_hub.pop().expect("https"),
    });

    for hub in hubs {
        let target = hub.target();
        let mut times = Vec::with_capacity(REQUESTS / 5);
        for _ in 0..REQUESTS / 5 {
            // A fresh client: a new connection (and TLS handshake), as each
            // `spoke` command pays.
            let c = Client::for_target(&target).expect("client");
            let start = Instant::now();
            c.get::<Value>(PODS).await.expect("list");
            times.push(start.elapsed());
        }
        times.sort();
        per_hub.push(times);
    }
    rows.push(Row {
        what: "GET pods on a new connection (connect + handshake + request)",
        short: "GET pods, new connection",
        plain: per_hub.pop().expect("plain"),
        https: per_hub.pop().expect("https"),
    });

    for hub in hubs {
        let c = hub.client();
        per_hub.push(
            timed(CREATES, |i| {
                let c = c.clone();
                async move {
                    c.create(PODS, &pod(&format!("bench-{i}")))
                        .await
                        .expect("create");
                }
            })
            .await,
        );
    }
    rows.push(Row {
        what: "POST pod (create: durable store write + audit line)",
        short: "POST pod (create)",
        plain: per_hub.pop().expect("plain"),
        https: per_hub.pop().expect("https"),
    });

    println!("\nSpoke API security cost (loopback; HTTPS hub vs --insecure-http hub, same run)\n");
    println!("| request | HTTPS p50 | HTTPS p99 | plain HTTP p50 | plain HTTP p99 | p50 ratio |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let (hp50, hp99) = (percentile(&r.https, 0.5), percentile(&r.https, 0.99));
        let (pp50, pp99) = (percentile(&r.plain, 0.5), percentile(&r.plain, 0.99));
        println!(
            "| {} | {} | {} | {} | {} | {:.2}× |",
            r.what,
            ms(hp50),
            ms(hp99),
            ms(pp50),
            ms(pp99),
            hp50.as_secs_f64() / pp50.as_secs_f64()
        );
        for (q, https, plain) in [("p50", hp50, pp50), ("p99", hp99, pp99)] {
            Figure::ms("auth", &format!("{}, HTTPS {q}", r.short), https)
                .baseline_ms(&format!("plain HTTP {q}"), plain)
                .emit();
        }
    }
    let floor = percentile(&rows[0].https, 0.5);
    let list = percentile(&rows[1].https, 0.5);
    println!(
        "\nToken check + audit line + list handler over the /version floor (HTTPS, p50): {}",
        ms(list.saturating_sub(floor))
    );
    Figure::ms(
        "auth",
        "GET pods (10) over the /version floor, HTTPS p50",
        list,
    )
    .baseline_ms("GET /version p50", floor)
    .emit();
}
