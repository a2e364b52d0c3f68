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
use spoke_agent::runtime::{NetPolicy, RunSpec, Runtime};
use spoke_e2e::free_port;
use spoke_guest::http::{self, Request, Response};

const REQUESTS: usize = 2000;

fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Latencies of `REQUESTS` sequential GETs, sorted, and the wall time.
fn drive(addr: SocketAddr) -> (Vec<Duration>, Duration) {
    let mut took = Vec::with_capacity(REQUESTS);
    let start = Instant::now();
    for _ in 0..REQUESTS {
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

fn row(what: &str, start: Duration, took: &[Duration], wall: Duration) {
    println!(
        "| {what} | {:.2} ms | {:.0} µs | {:.0} µs | {:.0} |",
        start.as_secs_f64() * 1e3,
        percentile(took, 0.5).as_secs_f64() * 1e6,
        percentile(took, 0.99).as_secs_f64() * 1e6,
        REQUESTS as f64 / wall.as_secs_f64()
    );
}

fn main() {
    let wasm = spoke_e2e::example_wasm("web");
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(Runtime::new(&dir.path().join("compiled")).unwrap());
    // Compile once so the measured start loads cached code, as an agent does.
    drop(runtime.load("web", &wasm).unwrap());
    let loaded = Arc::new(runtime.load("web", &wasm).unwrap());
    assert!(loaded.from_cache);
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
    row("native (same HTTP code)", start, &took, wall);

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
    row("web component (wasmtime)", start, &took, wall);
    stop.raise();
    let outcome = rt.block_on(serving).unwrap();
    println!("\ncomponent ended: {outcome:?}");
}
