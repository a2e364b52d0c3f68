//! The `web` example component serving HTTP, measured in-process on the
//! agent's own `Runtime` (real wasmtime, the real component from
//! `examples/out/web.wasm`, its socket rules applied), beside the same
//! HTTP code (`spoke_guest::http`) built natively and serving from a
//! thread: the baseline of the same run.
//!
//! - start to serving: from `Runtime::run` (compiled code cached) until
//!   the first `GET /` is answered;
//! - one `GET /` on a new connection each time (the server closes it), by
//!   one client thread: latency p50/p99 and requests per second.
//!
//! Prints a table; no assertions: read the ratio, not the time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spoke_agent::pods::logs::PodLog;
use spoke_agent::runtime::{NetPolicy, Origin, RunSpec, Runtime};
use spoke_e2e::free_port;
use spoke_e2e::stats::{Figure, quick};
use spoke_guest::http::{self, Request, Response};

const REQUESTS: usize = 2000;

/// GETs per server: fewer with `scripts/bench --quick`.
fn requests() -> usize {
    if quick() { REQUESTS / 5 } else { REQUESTS }
}

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Latencies of `REQUESTS` sequential GETs, sorted, and the wall time.
fn drive(addr: SocketAddr) -> (Vec<Duration>, Duration) {
    let mut took = Vec::with_capacity(requests());
    let start = Instant::now();
    for _ in 0..requests() {
        let t = Instant::now();
        let answer = get(addr).expect("GET");
        assert!(answer.ends_with("web v1\n"), "{answer}");
        took.push(t.elapsed());
    }
    let wall = start.elapsed();
    took.sort();
    (took, wall)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints the row and returns its figures: start (ms), GET p50 and p99
/// (µs), GET/s.
fn row(what: &str, start: Duration, took: &[Duration], wall: Duration) -> [f64; 4] {
    let figures = [
        start.as_secs_f64() * 1e3,
        percentile(took, 0.5).as_secs_f64() * 1e6,
        percentile(took, 0.99).as_secs_f64() * 1e6,
        took.len() as f64 / wall.as_secs_f64(),
    ];
    println!(
        "| {what} | {:.2} ms | {:.0} µs | {:.0} µs | {:.0} |",
        figures[0], figures[1], figures[2], figures[3]
    );
    figures
}

fn main() {
    let wasm = spoke_e2e::example_wasm("web");
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(Runtime::new(&dir.path().join("compiled")).unwrap());
    // Compile once so the measured start loads cached code, as an agent does.
    drop(runtime.load("web", &wasm).unwrap());
    let (loaded, origin) = runtime.load("web", &wasm).unwrap();
    assert_eq!(origin, Origin::Cache);
    let log = PodLog::open(&dir.path().join("logs"), "bench", "web").unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(spoke_agent::runtime::TOKIO_EVENT_INTERVAL)
        .build()
        .unwrap();

    println!("| server | start to serving | GET p50 | GET p99 | GET/s |");
    println!("|---|---|---|---|---|");

    // Native baseline: the same spoke_guest::http code on a thread.
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Instant::now();
    let listener = spoke_guest::net::TcpListener::bind_addr(addr).unwrap();
    std::thread::spawn(move || {
        http::serve_on(&listener, |_: &Request| Response::text(200, "web v1\n")).unwrap();
    });
    let start = loop {
        if get(addr).is_ok() {
            break t.elapsed();
        }
    };
    let (took, wall) = drive(addr);
    let native = row("native (same HTTP code)", start, &took, wall);

    // The component, under its socket rules.
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let spec = RunSpec {
        argv: vec!["web".into()],
        env: vec![("PORT".into(), port.to_string())],
        memory_limit: Some(16 << 20),
        cpu_limit_milli: None,
        mounts: vec![],
        stdout: log.stream("stdout"),
        stderr: log.stream("stderr"),
        stop: Default::default(),
        network: NetPolicy {
            listen_ports: vec![port],
            ..Default::default()
        },
        who: "bench/web/web".into(),
    };
    let stop = spec.stop.clone();
    let t = Instant::now();
    let serving = {
        let (runtime, loaded) = (runtime.clone(), loaded.clone());
        rt.spawn(async move { runtime.run(&loaded, spec).await })
    };
    let start = loop {
        if get(addr).is_ok() {
            break t.elapsed();
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    let (took, wall) = drive(addr);
    let component = row("web component (wasmtime)", start, &took, wall);
    let names = [
        ("start to serving", "ms"),
        ("GET p50, new connection each", "µs"),
        ("GET p99, new connection each", "µs"),
        ("GET/s, one client", "/s"),
    ];
    for (i, (name, unit)) in names.iter().enumerate() {
        Figure::new("net", &format!("web component: {name}"), component[i], unit)
            .baseline("native server, same HTTP code", native[i])
            .emit();
    }
    stop.raise();
    let outcome = rt.block_on(serving).unwrap();
    println!("\ncomponent ended: {outcome:?}");
}
