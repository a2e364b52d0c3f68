//! Runtime figures, measured in-process on the agent's own `Runtime` (real
//! wasmtime, real WAT guests, the agent's tokio settings):
//!
//! - CPU containment: the latency of a well-behaved pod's work — from the
//!   moment its timer was due until its unit of work is done, measured by
//!   the guest itself with WASI's monotonic clock — alone, beside spinning
//!   neighbours held to a CPU limit, and (for reference) beside spinning
//!   neighbours without a limit. In the same run, the same with guests at
//!   the agent's own priority (`--guest-nice 0`), and the floor this
//!   machine's kernel sets: native threads doing the same (a thread sleeping
//!   2 ms then working, beside threads spinning for the limit's share of
//!   every 100 ms).
//!
//! - Density: a real hub and agent process, the agent's address space
//!   limited to 512 GiB (a 64-bit Pi's 39 bits, via `prlimit`), 1,000 idle
//!   pods (a guest sleeping in `poll_oneoff`): the agent's RSS with none and
//!   with all of them, per pod, and its virtual size.
//!
//! - Cold start: a pod's module loaded from the agent's compiled-code cache
//!   (`Runtime::load`, as for the first pod of a module after a reboot) and
//!   run to its end (`Runtime::run`: store, WASI context with its log
//!   streams, limits, instantiate, `_start`), beside raw wasmtime
//!   instantiating the same module already in memory and calling `_start`
//!   with its stdout in a file, as `wasmtime run m.wasm > out` would
//!   (goal ≤ 3×). A second row starts a pod of a module another pod already
//!   holds (shared in memory, as replicas on one board are).
//!
//! Prints tables; no assertions: read the ratio, not the time. An argument
//! `cpu`, `density` or `coldstart` runs only that part (`cargo bench --bench runtime --
//! cpu`).

use std::sync::Arc;
use std::time::Duration;

use spoke_agent::pods::logs::{PodLog, message_of};
use spoke_agent::runtime::{Origin, Outcome, Priority, RunSpec, Runtime};
use spoke_e2e::stats::{Figure, quick};

/// Rounds of sleep + work the well-behaved guest does per block (one run
/// alone or beside spinners; see [`BLOCKS`]).
const ROUNDS: u32 = 250;
/// Its sleep between rounds.
const SLEEP_NS: u64 = 2_000_000;
/// Iterations of its unit of work (about 0.1 ms in the guest).
const WORK: u32 = 300_000;
/// Iterations of the native threads' unit of work: about the guest's 0.1 ms
/// with an optimisation barrier on every iteration (~2.3 ns each here).
const NATIVE_WORK: u32 = WORK / 7;

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
        stop: Default::default(),
        network: Default::default(),
        who: "bench/p/main".into(),
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
    let (worker, _) = runtime
        .load("worker", &dir.join("worker.wasm"))
        .expect("worker");
    let (spin, _) = runtime.load("spin", &dir.join("spin.wasm")).expect("spin");
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
    assert_eq!(outcome, Outcome::Exited(0));
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

/// The native floor: a thread sleeping `SLEEP_NS` then doing about the
/// guest's work, `ROUNDS` times, beside `spinners` threads each spinning
/// for `cpu`'s share of every 100 ms (all of it without a limit), as a
/// pod's CPU bucket lets it; returns its sorted latencies.
fn native_scenario(spinners: usize, cpu: Option<u64>) -> Vec<Duration> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let stop = Arc::new(AtomicBool::new(false));
    let period = Duration::from_millis(100);
    let on = period * cpu.map_or(1000, |m| m.min(1000) as u32) / 1000;
    let threads: Vec<_> = (0..spinners)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Out of phase, as pods started at different times are.
                std::thread::sleep(period * i as u32 / spinners.max(1) as u32);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let end = Instant::now() + on;
                    while Instant::now() < end {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    if on < period {
                        std::thread::sleep(period - on);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let sleep = Duration::from_nanos(SLEEP_NS);
    let mut latencies: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t0 = Instant::now();
            std::thread::sleep(sleep);
            let mut acc = 0u32;
            for k in 0..NATIVE_WORK {
                acc = std::hint::black_box(acc.wrapping_add(k.wrapping_mul(k)));
            }
            std::hint::black_box(acc);
            t0.elapsed().saturating_sub(sleep)
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    latencies.sort();
    latencies
}

const DENSITY_PODS: usize = 1000;

const IDLE: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (loop $sleep
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $sleep))))"#;

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn density() {
    use serde_json::{Value, json};
    let hub = spoke_e2e::Hub::start().await;
    let agent = hub.agent("dense-1", &["--max-pods", "2000"]);
    let pid = agent.proc.pid();
    let limit = 1u64 << 39;
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--as={limit}:{limit}"))
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "prlimit failed");
    hub.wait_node_ready("dense-1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("idle.wasm");
    std::fs::write(&path, wat::parse_str(IDLE).expect("wat")).expect("write");
    hub.push(&path, "idle:v1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = proc_status_kib(pid, "VmRSS:");
    let client = hub.client();
    let pods = "/api/v1/namespaces/default/pods";
    // `scripts/bench --quick`: a tenth of the pods.
    let n = if quick() {
        DENSITY_PODS / 10
    } else {
        DENSITY_PODS
    };
    for i in 0..n {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("idle-{i}")},
            "spec": {"containers": [{"name": "main", "image": "idle:v1",
                     "resources": {"limits": {"memory": "4Mi"}}}]}});
        client.create(pods, &pod).await.expect("create");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut running = 0;
    while std::time::Instant::now() < deadline {
        let list: Value = client.get(pods).await.expect("list");
        running = list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
                    .count()
            })
            .unwrap_or(0);
        if running == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the logs flush and allocations settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = proc_status_kib(pid, "VmRSS:");
    let vm = proc_status_kib(pid, "VmSize:");
    println!("\nSpoke runtime benchmark: density ({n} idle pods, agent under ulimit -v 512 GiB)\n");
    println!("| figure | value | goal |");
    println!("|---|---|---|");
    println!("| pods Running | {running} of {n} | all |");
    println!("| agent RSS, 0 pods | {:.1} MiB | |", rss0 as f64 / 1024.0);
    println!("| agent RSS, {n} pods | {:.1} MiB | |", rss as f64 / 1024.0);
    let per_pod = rss.saturating_sub(rss0) as f64 / n as f64;
    println!("| RSS per pod | {per_pod:.0} KiB | ≤ 256 KiB |");
    println!(
        "| agent virtual size | {:.1} GiB of 512 GiB | |",
        vm as f64 / (1024.0 * 1024.0)
    );
    let f = |name: &str, value: f64, unit: &str| Figure::new("runtime", name, value, unit);
    f(&format!("density: pods Running of {n}"), running as f64, "")
        .goal(&format!("all {n}"))
        .emit();
    f("density: agent RSS, 0 pods", rss0 as f64 / 1024.0, "MiB").emit();
    f(
        &format!("density: agent RSS, {n} idle pods"),
        rss as f64 / 1024.0,
        "MiB",
    )
    .emit();
    f("density: RSS per idle pod", per_pod, "KiB")
        .goal("≤ 256 KiB")
        .emit();
    f(
        "density: agent virtual size (limit 512 GiB)",
        vm as f64 / (1024.0 * 1024.0),
        "GiB",
    )
    .emit();
}

fn main() {
    // Built as the agent builds its runtime.
    let rt = spoke_agent::runtime::tokio_runtime().expect("tokio");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only = |part: &str| {
        let parts = ["cpu", "density", "coldstart"];
        let chosen: Vec<&String> = args
            .iter()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        chosen.is_empty() || chosen.iter().any(|a| *a == part)
    };
    rt.block_on(async {
        if only("cpu") {
            containment().await;
        }
        if only("coldstart") {
            cold_start().await;
        }
        if only("density") {
            density().await;
        }
    });
}

/// Writes one line and returns, with a Rust program's 17 pages of memory.
const HELLO_ONCE: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (data (i32.const 64) "hello from a cold start\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

async fn cold_start() {
    let samples = if quick() { 50 } else { 500 };
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = wat::parse_str(HELLO_ONCE).expect("wat");
    let path = dir.path().join("hello.wasm");
    std::fs::write(&path, &wasm).expect("write");
    let runtime = Runtime::new(&dir.path().join("compiled")).expect("runtime");
    // The first load compiles and caches; every timed one reads the cache.
    let (compiled, origin) = runtime.load("hello", &path).expect("compile");
    assert_eq!(origin, Origin::Compiled);
    drop(compiled);
    let log = PodLog::open(&dir.path().join("logs"), "bench", "cold").expect("log");
    // Each sample: load + run, the load coming from `expect`.
    let starts = async |expect: Origin| {
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let t = std::time::Instant::now();
            let (loaded, origin) = runtime.load("hello", &path).expect("load");
            let outcome = runtime.run(&loaded, spec(&log, None)).await;
            times.push(t.elapsed());
            assert_eq!(origin, expect);
            assert_eq!(outcome, Outcome::Exited(0));
        }
        times
    };
    let mut from_disk = starts(Origin::Cache).await;
    // Another pod of a module a running pod holds.
    let held = runtime.load("hello", &path).expect("load");
    let mut shared = starts(Origin::Shared).await;
    drop(held);
    let mut raw = raw_instantiate_and_start(&wasm, &dir.path().join("raw.out"), samples).await;
    for v in [&mut from_disk, &mut shared, &mut raw] {
        v.sort();
    }
    let (r50, r99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    println!(
        "\nSpoke runtime benchmark: pod cold start with compiled code cached ({samples} starts)\n"
    );
    println!("| | p50 | p99 | p50 ratio | p99 ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw wasmtime: instantiate + _start (module in memory, stdout to a file) | {} | {} | 1.00× | 1.00× |",
        ms(r50),
        ms(r99)
    );
    let rows = [
        (
            "first pod of a module: load from the compiled cache + run",
            "pod cold start (cached code)",
            &from_disk,
        ),
        (
            "another pod of a module in memory: run",
            "pod start (module shared in memory)",
            &shared,
        ),
    ];
    for (what, name, sorted) in rows {
        let (p50, p99) = (percentile(sorted, 0.5), percentile(sorted, 0.99));
        println!(
            "| {what} | {} | {} | {:.2}× | {:.2}× |",
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / r50.as_secs_f64(),
            p99.as_secs_f64() / r99.as_secs_f64()
        );
        Figure::ms("runtime", &format!("{name} p50"), p50)
            .baseline_ms("raw wasmtime instantiate + start p50", r50)
            .goal("≤ 3× baseline")
            .emit();
        Figure::ms("runtime", &format!("{name} p99"), p99)
            .baseline_ms("raw wasmtime instantiate + start p99", r99)
            .goal("≤ 3× baseline")
            .emit();
    }
}

/// The same module with bare wasmtime: compiled once, then per sample a
/// store and WASI context (stdout appended to `out`), instantiate, `_start`
/// and dropping the store.
async fn raw_instantiate_and_start(
    wasm: &[u8],
    out: &std::path::Path,
    samples: usize,
) -> Vec<Duration> {
    use wasmtime::{Config, Engine, Linker, Module, Store};
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::cli::OutputFile;
    use wasmtime_wasi::p1::WasiP1Ctx;
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).expect("engine");
    let module = Module::new(&engine, wasm).expect("module");
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).expect("link");
    let pre = linker.instantiate_pre(&module).expect("pre");
    let file = std::fs::File::create(out).expect("raw stdout");
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = std::time::Instant::now();
        let stdout = OutputFile::new(file.try_clone().expect("dup"));
        let ctx = WasiCtxBuilder::new().stdout(stdout).build_p1();
        let mut store = Store::new(&engine, ctx);
        store.set_epoch_deadline(1);
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start");
        start.call_async(&mut store, ()).await.expect("run");
        // Torn down within the time, as the pod's instance is.
        drop(store);
        times.push(t.elapsed());
    }
    times
}

/// Blocks per scenario: each block runs the worker alone, then beside the
/// spinners, for each subject in turn, and the figures are taken over all
/// blocks' rounds pooled. This machine's own hiccups (a 4 ms p99 for a
/// native thread's 2 ms sleep, alone) come and go over seconds; interleaving
/// short blocks spreads them evenly over the two sides of a ratio, and
/// pooling gives p99 from thousands of rounds, not from five.
const BLOCKS: usize = 12;

/// Who runs the well-behaved work and the spinners.
#[derive(Clone, Copy)]
enum Subject {
    /// The agent's runtime as it ships: spinning guests below the agent's priority.
    Spoke,
    /// Guests at the agent's priority (`--guest-nice 0`).
    SamePriority,
    /// Native threads: the kernel's floor on this machine.
    Native,
}

const SUBJECTS: [(Subject, &str); 3] = [
    (Subject::Spoke, "Spoke"),
    (Subject::SamePriority, "Spoke, --guest-nice 0"),
    (Subject::Native, "native threads"),
];

async fn containment() {
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
    let compiled = dir.path().join("compiled");
    let spoke = Arc::new(Runtime::new(&compiled).expect("runtime"));
    let same = Arc::new(
        Runtime::new(&compiled)
            .expect("runtime")
            .with_priority(Priority::SAME),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = [
        ("1 spinner at 200m", 1, Some(200)),
        ("one spinner per core at 200m", cores, Some(200)),
        ("1 spinner at 500m", 1, Some(500)),
        ("one spinner per core, no limit (reference)", cores, None),
    ];
    let run = |subject: Subject, tag: String, n: usize, cpu: Option<u64>| {
        let (spoke, same, dir) = (spoke.clone(), same.clone(), dir.path().to_path_buf());
        async move {
            match subject {
                Subject::Spoke => scenario(&spoke, &dir, &tag, n, cpu).await,
                Subject::SamePriority => scenario(&same, &dir, &tag, n, cpu).await,
                Subject::Native => tokio::task::spawn_blocking(move || native_scenario(n, cpu))
                    .await
                    .expect("native scenario"),
            }
        }
    };
    let blocks = if quick() { 2 } else { BLOCKS };
    // Per row and subject: the latencies alone and beside the spinners,
    // per block.
    type Blocks = Vec<(Vec<Duration>, Vec<Duration>)>;
    let mut results: Vec<Vec<Blocks>> = vec![vec![Vec::new(); SUBJECTS.len()]; rows.len()];
    for (i, (what, n, cpu)) in rows.iter().enumerate() {
        for block in 0..blocks {
            for (k, (subject, _)) in SUBJECTS.iter().enumerate() {
                let tag = format!("{}-{k}-{block}", what.replace([' ', ','], "-"));
                let alone = run(*subject, format!("alone-{tag}"), 0, None).await;
                let beside = run(*subject, tag, *n, *cpu).await;
                results[i][k].push((alone, beside));
            }
        }
    }
    println!(
        "\nSpoke runtime benchmark: CPU containment ({blocks} interleaved blocks of {ROUNDS} rounds alone and beside spinners: a {} ms sleep, then ~0.1 ms of work; {cores} cores)\n",
        SLEEP_NS as f64 / 1e6
    );
    println!(
        "latency = from when the timer was due until the work was done; pooled over the blocks\n"
    );
    println!(
        "| neighbours | subject | alone p50 | alone p99 | beside p50 | beside p99 | p50 ratio | p99 ratio | p99 ratio, even / odd blocks |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // The rounds alone and beside the spinners of some blocks, each sorted.
    let pooled = |blocks: &[&(Vec<Duration>, Vec<Duration>)]| {
        let mut alone: Vec<Duration> = blocks.iter().flat_map(|b| b.0.iter().copied()).collect();
        let mut beside: Vec<Duration> = blocks.iter().flat_map(|b| b.1.iter().copied()).collect();
        alone.sort();
        beside.sort();
        [alone, beside]
    };
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    // The tail's shape, printed after the table.
    let mut shapes = Vec::new();
    for ((what, _, cpu), by_subject) in rows.iter().zip(results) {
        for ((subject, who), blocks) in SUBJECTS.iter().zip(by_subject) {
            let all: Vec<_> = blocks.iter().collect();
            let [alone, beside] = pooled(&all);
            let (a50, a99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
            let (b50, b99) = (percentile(&beside, 0.5), percentile(&beside, 0.99));
            let cells: Vec<String> = [&alone, &beside]
                .iter()
                .flat_map(|v| [0.9, 0.95, 0.99, 0.999].map(|q| ms(percentile(v, q))))
                .collect();
            shapes.push(format!("| {what} | {who} | {} |", cells.join(" | ")));
            let half = |parity: usize| {
                let part: Vec<_> = blocks.iter().skip(parity).step_by(2).collect();
                let [alone, beside] = pooled(&part);
                ratio(percentile(&beside, 0.99), percentile(&alone, 0.99))
            };
            println!(
                "| {what} | {who} | {} | {} | {} | {} | {:.2}× | **{:.2}×** | {:.2}× / {:.2}× |",
                ms(a50),
                ms(a99),
                ms(b50),
                ms(b99),
                ratio(b50, a50),
                ratio(b99, a99),
                half(0),
                half(1),
            );
            let name = |q: &str| format!("cpu: well-behaved {q}, {what}, {who}");
            Figure::ms("runtime", &name("p50"), b50)
                .baseline_ms("alone p50", a50)
                .emit();
            let f99 = Figure::ms("runtime", &name("p99"), b99).baseline_ms("alone p99", a99);
            match (subject, cpu) {
                (Subject::Spoke, Some(_)) => f99.goal("≤ 1.10× alone").emit(),
                _ => f99.emit(),
            }
        }
    }
    println!("\nThe tail, pooled: alone p90 / p95 / p99 / p99.9, then beside the spinners\n");
    println!("| neighbours | subject | p90 | p95 | p99 | p99.9 | beside p90 | p95 | p99 | p99.9 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for line in shapes {
        println!("{line}");
    }
}
