//! Runtime figures, measured in-process on the agent's own `Runtime` (real
//! wasmtime, real WAT guests, the agent's tokio settings):
//!
//! - CPU containment: the latency of a well-behaved pod's work — from the
//!   moment its timer was due until its unit of work is done, measured by
//!   the guest itself with WASI's monotonic clock — alone, beside spinning
//!   neighbours held to a CPU limit, and (for reference) beside spinning
//!   neighbours without a limit.
//!
//! Prints a table; no assertions: read the ratio, not the time.

use std::sync::Arc;
use std::time::Duration;

use spoke_agent::pods::logs::{PodLog, message_of};
use spoke_agent::runtime::{RunSpec, Runtime};

/// Rounds of sleep + work the well-behaved guest does per scenario.
const ROUNDS: u32 = 500;
/// Its sleep between rounds.
const SLEEP_NS: u64 = 2_000_000;
/// Iterations of its unit of work (a fraction of a millisecond).
const WORK: u32 = 300_000;

const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;

/// Sleeps, works, then prints (in hex) the nanoseconds from when its sleep
/// was due to end until the work was done; `ROUNDS` times.
fn worker_wat() -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "0123456789abcdef")
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 400)))
    (i64.load (i32.const 400)))
  (func (export "_start")
    (local $i i32) (local $k i32) (local $acc i32) (local $t0 i64) (local $d i64)
    ;; one subscription at 128 (8-aligned): the monotonic clock, relative, SLEEP_NS
    (i32.store8 (i32.const 136) (i32.const 0))
    (i32.store (i32.const 144) (i32.const 1))
    (i64.store (i32.const 152) (i64.const {SLEEP_NS}))
    (i64.store (i32.const 160) (i64.const 0))
    (i32.store16 (i32.const 168) (i32.const 0))
    ;; one iovec at 0: 16 hex digits and a newline at 200
    (i32.store (i32.const 0) (i32.const 200))
    (i32.store (i32.const 4) (i32.const 17))
    (i32.store8 (i32.const 216) (i32.const 10))
    (loop $rounds
      (local.set $t0 (call $now))
      (drop (call $poll (i32.const 128) (i32.const 512) (i32.const 1) (i32.const 600)))
      (local.set $k (i32.const 0))
      (loop $work
        (local.set $acc (i32.add (local.get $acc) (i32.mul (local.get $k) (local.get $k))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $work (i32.lt_u (local.get $k) (i32.const {WORK}))))
      (local.set $d (i64.sub (i64.sub (call $now) (local.get $t0)) (i64.const {SLEEP_NS})))
      (local.set $k (i32.const 0))
      (loop $hex
        (i32.store8
          (i32.sub (i32.const 215) (local.get $k))
          (i32.load8_u (i32.add (i32.const 300)
            (i32.wrap_i64 (i64.and
              (i64.shr_u (local.get $d) (i64.extend_i32_u (i32.mul (local.get $k) (i32.const 4))))
              (i64.const 15))))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br_if $hex (i32.lt_u (local.get $k) (i32.const 16))))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $rounds (i32.lt_u (local.get $i) (i32.const {ROUNDS}))))
    (i32.store (i32.const 700) (local.get $acc))))"#
    )
}

fn spec(log: &Arc<PodLog>, cpu: Option<u64>) -> RunSpec {
    RunSpec {
        argv: vec!["main".into()],
        env: vec![],
        memory_limit: None,
        cpu_limit_milli: cpu,
        mounts: vec![],
        stdout: log.stream("stdout"),
        stderr: log.stream("stderr"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Runs the worker to its end beside `spinners` spinning guests with
/// `cpu` as their limit; returns its sorted latencies.
async fn scenario(
    runtime: &Arc<Runtime>,
    dir: &std::path::Path,
    name: &str,
    spinners: usize,
    cpu: Option<u64>,
) -> Vec<Duration> {
    let worker = runtime
        .load("worker", &dir.join("worker.wasm"))
        .expect("worker");
    let spin = Arc::new(runtime.load("spin", &dir.join("spin.wasm")).expect("spin"));
    let mut tasks = Vec::new();
    for i in 0..spinners {
        let (runtime, spin) = (runtime.clone(), spin.clone());
        let log = PodLog::open(&dir.join("logs"), name, &format!("spin-{i}")).expect("log");
        tasks.push(tokio::spawn(async move {
            runtime.run(&spin, spec(&log, cpu)).await
        }));
    }
    // Let the spinners get going.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = PodLog::open(&dir.join("logs"), name, "worker").expect("log");
    let outcome = runtime.run(&worker, spec(&log, None)).await;
    assert_eq!(outcome, spoke_agent::runtime::Outcome::Exited(0));
    for t in tasks {
        t.abort();
        let _ = t.await;
    }
    log.flush();
    let mut latencies: Vec<Duration> = log
        .tail(usize::MAX)
        .expect("read log")
        .iter()
        .map(|l| {
            let nanos = u64::from_str_radix(message_of(l), 16).expect("hex line");
            Duration::from_nanos(nanos)
        })
        .collect();
    assert_eq!(latencies.len(), ROUNDS as usize);
    latencies.sort();
    latencies
}

fn main() {
    // Built as the agent builds its runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(spoke_agent::runtime::TOKIO_EVENT_INTERVAL)
        .build()
        .expect("tokio");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("worker.wasm"),
            wat::parse_str(worker_wat()).expect("worker wat"),
        )
        .expect("write");
        std::fs::write(
            dir.path().join("spin.wasm"),
            wat::parse_str(SPIN).expect("spin wat"),
        )
        .expect("write");
        let runtime = Arc::new(Runtime::new(&dir.path().join("compiled")).expect("runtime"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

        let alone = scenario(&runtime, dir.path(), "alone", 0, None).await;
        let rows = [
            ("1 spinner at 200m", 1, Some(200)),
            (
                "one spinner per core at 200m",
                cores,
                Some(200),
            ),
            ("1 spinner at 500m", 1, Some(500)),
            ("one spinner per core, no limit (reference)", cores, None),
        ];
        println!(
            "\nSpoke runtime benchmark: CPU containment ({ROUNDS} rounds of a {} ms sleep then ~work; {cores} cores)\n",
            SLEEP_NS as f64 / 1e6
        );
        println!("latency = from when the guest's timer was due until its work was done\n");
        println!("| neighbours | p50 | p99 | p50 ratio | p99 ratio |");
        println!("|---|---|---|---|---|");
        let (a50, a99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
        println!("| none (baseline) | {} | {} | 1.00× | 1.00× |", ms(a50), ms(a99));
        for (what, n, cpu) in rows {
            let l = scenario(&runtime, dir.path(), &what.replace([' ', ','], "-"), n, cpu).await;
            let (p50, p99) = (percentile(&l, 0.5), percentile(&l, 0.99));
            println!(
                "| {what} | {} | {} | {:.2}× | {:.2}× |",
                ms(p50),
                ms(p99),
                p50.as_secs_f64() / a50.as_secs_f64(),
                p99.as_secs_f64() / a99.as_secs_f64()
            );
        }
    });
}
