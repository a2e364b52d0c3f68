//! Bytes at the IP layer of an idle node with 0 pods: MQTT over TLS to the
//! hub's embedded broker, beside the same agent over plain MQTT (the bare
//! TCP floor of a keepalive) in the same run. Measured from the kernel's
//! counters of the agent's own socket (`ss -tinp`, see
//! [`spoke_e2e::tcpinfo`]): payload + segments × (IPv4 + TCP headers with
//! the options negotiated), both directions.
//!
//! Short run (default, ~40 s; 15 s windows with `scripts/bench --quick`): agents with a 5 s keepalive, so that the
//! window holds several pings, and one with a lease renewed every 5 s; the
//! cost per ping and per renewal is measured, and the cost at the default
//! settings (`--keepalive 60s`, `--lease-duration 1h`: a renewal every
//! 15 min) is computed from those. Long run: `scripts/bench --soak` (an
//! hour) or `SPOKE_BENCH_IDLE_SECS=3600 cargo bench -p spoke-e2e --bench
//! idle` runs agents with their defaults for that window and reports what
//! they actually used.
//!
//! Prints a table; no assertions.

use std::time::{Duration, Instant};

use spoke_e2e::stats::{Figure, quick, soak};
use spoke_e2e::tcpinfo::{self, Counters};
use spoke_e2e::{Agent, Hub};

/// One agent to watch: which socket, and what it is set to.
struct Watched {
    label: &'static str,
    agent: Agent,
    port: u16,
    /// Events per window that the figure is divided by: (what, period).
    per: Option<(&'static str, Duration)>,
}

fn port_of(url: &str) -> u16 {
    spoke_api::broker::BrokerUrl::parse(url).unwrap().port
}

async fn counters(w: &Watched) -> Counters {
    for _ in 0..100 {
        if let Some(c) = tcpinfo::connection(w.agent.proc.pid(), w.port) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no single MQTT connection of {} found with ss", w.label);
}

#[tokio::main]
async fn main() {
    let long: Option<u64> = std::env::var("SPOKE_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .or(soak().then_some(3600));
    let short = if quick() { 15 } else { 30 };
    let window = Duration::from_secs(long.unwrap_or(short));
    let tls = Hub::start().await;
    let plain = Hub::start_opts(None, &["--mqtt-insecure"]).await;
    let fast: &[&str] = &["--keepalive", "5s", "--lease-duration", "1h"];
    let mut watched = Vec::new();
    if long.is_some() {
        watched.push(Watched {
            label: "TLS, defaults (keepalive 60 s, lease renewed every 15 min)",
            agent: tls.agent("idle-tls", &[]),
            port: port_of(&tls.mqtt_url),
            per: None,
        });
        watched.push(Watched {
            label: "plain MQTT, defaults",
            agent: plain.agent("idle-plain", &[]),
            port: port_of(&plain.mqtt_url),
            per: None,
        });
    } else {
        watched.push(Watched {
            label: "TLS, keepalive 5 s",
            agent: tls.agent("idle-tls", fast),
            port: port_of(&tls.mqtt_url),
            per: Some(("ping", Duration::from_secs(5))),
        });
        watched.push(Watched {
            label: "plain MQTT (floor), keepalive 5 s",
            agent: plain.agent("idle-plain", fast),
            port: port_of(&plain.mqtt_url),
            per: Some(("ping", Duration::from_secs(5))),
        });
        // A renewal every 5 s keeps the link busy, so no ping is sent.
        watched.push(Watched {
            label: "TLS, lease renewed every 5 s, keepalive 60 s",
            agent: tls.agent(
                "idle-lease",
                &["--keepalive", "60s", "--lease-duration", "20s"],
            ),
            port: port_of(&tls.mqtt_url),
            per: Some(("renewal", Duration::from_secs(5))),
        });
    }
    for (hub, name) in [(&tls, "idle-tls"), (&plain, "idle-plain")] {
        hub.wait_node_ready(name).await;
    }
    if long.is_none() {
        tls.wait_node_ready("idle-lease").await;
    }
    // Let the hello, the answer and the acks go by.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut before = Vec::new();
    for w in &watched {
        before.push(counters(w).await);
    }
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for (w, b) in watched.iter().zip(&before) {
        let after = counters(w).await;
        assert_eq!(
            after.local_port, b.local_port,
            "{} reconnected during the window",
            w.label
        );
        let (payload, segments, ip) = b.since(&after);
        // Links that negotiate TCP timestamps (most do; loopback in some
        // sandboxes does not) carry 12 more bytes a segment.
        let ip_ts = payload + segments * 52;
        rows.push((w, payload, segments, ip, after.header_bytes(), ip_ts));
    }

    println!(
        "\nSpoke idle node, 0 pods, {secs:.0} s window, kernel counters of the agent's socket (ss -tinp)\n"
    );
    println!(
        "| connection | TCP payload | segments | header B/segment (as negotiated) | IP-layer bytes | B/s | B/hour | B/s with timestamps (52 B/segment) | per event (with timestamps) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut per_event = std::collections::HashMap::new();
    // B/s as negotiated and with timestamps, by row.
    let mut rates = Vec::new();
    for (w, payload, segments, ip, header, ip_ts) in &rows {
        let rate = *ip as f64 / secs;
        let rate_ts = *ip_ts as f64 / secs;
        rates.push((rate, rate_ts));
        let event = match w.per {
            Some((what, period)) => {
                let each = rate * period.as_secs_f64();
                let each_ts = rate_ts * period.as_secs_f64();
                per_event.insert((w.label.starts_with("TLS"), what), (each, each_ts));
                format!("{each:.0} B ({each_ts:.0} B) per {what}")
            }
            None => String::new(),
        };
        println!(
            "| {} | {payload} B | {segments} | {header} | {ip} B | {rate:.2} | {:.0} | {rate_ts:.2} | {event} |",
            w.label,
            rate * 3600.0
        );
    }
    let figure = |name: String, value: f64, unit: &str| Figure::new("idle", &name, value, unit);
    if long.is_some() {
        // Rows: TLS defaults, plain defaults.
        for (i, ts) in [(0, ""), (1, ", with TCP timestamps")] {
            let pick = |r: (f64, f64)| if i == 0 { r.0 } else { r.1 };
            figure(
                format!("idle node at defaults over {secs:.0} s, TLS, IP-layer B/s{ts}"),
                pick(rates[0]),
                "B/s",
            )
            .baseline("plain MQTT at defaults", pick(rates[1]))
            .goal("≤ 4 B/s")
            .emit();
        }
    }
    if long.is_none() {
        // Rows: TLS keepalive 5 s, plain keepalive 5 s, TLS lease every 5 s.
        figure("TLS, keepalive 5 s, IP-layer B/s".into(), rates[0].0, "B/s")
            .baseline("plain MQTT, keepalive 5 s", rates[1].0)
            .emit();
        let ping_tls = per_event[&(true, "ping")];
        let ping_plain = per_event[&(false, "ping")];
        let renewal = per_event[&(true, "renewal")];
        println!("\nAt other settings, from the per-event costs above (B/s at the IP layer):\n");
        println!(
            "| keepalive | lease renewal | TLS | TLS with timestamps | plain MQTT floor (pings only) | floor with timestamps | half-open link → NotReady (1.5 × keepalive + 40 s grace) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for keepalive in [30u64, 60, 120, 300] {
            // A renewal resets the keepalive timer, so it replaces a ping
            // rather than adding to it; adding both overstates slightly.
            let k = keepalive as f64;
            println!(
                "| {keepalive} s | every 15 min (lease 1 h) | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} s |",
                ping_tls.0 / k + renewal.0 / 900.0,
                ping_tls.1 / k + renewal.1 / 900.0,
                ping_plain.0 / k,
                ping_plain.1 / k,
                1.5 * k + 40.0
            );
        }
        figure("bytes per keepalive ping, TLS".into(), ping_tls.0, "B")
            .baseline("plain MQTT ping", ping_plain.0)
            .emit();
        figure("bytes per lease renewal, TLS".into(), renewal.0, "B").emit();
        for (ts, tls, plain) in [
            (
                "",
                ping_tls.0 / 60.0 + renewal.0 / 900.0,
                ping_plain.0 / 60.0,
            ),
            (
                ", with TCP timestamps",
                ping_tls.1 / 60.0 + renewal.1 / 900.0,
                ping_plain.1 / 60.0,
            ),
        ] {
            figure(
                format!("idle node at defaults (keepalive 60 s, renewal every 15 min), TLS, IP-layer B/s{ts}, from the per-event costs"),
                tls,
                "B/s",
            )
            .baseline("plain MQTT pings only, keepalive 60 s", plain)
            .goal("≤ 4 B/s")
            .emit();
        }
    }
}
