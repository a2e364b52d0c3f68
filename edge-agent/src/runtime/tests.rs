//! Runtime tests with WAT fixtures.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use super::*;
use crate::pods::logs::{PodLog, message_of};

struct Fixture {
    dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    log: Arc<PodLog>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(Runtime::new(&dir.path().join("compiled")).unwrap());
    let log = PodLog::open(&dir.path().join("logs"), "default", "p").unwrap();
    Fixture { dir, runtime, log }
}

impl Fixture {
    fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Arc<Loaded>, Error> {
        let path = self.dir.path().join(format!("{name}.wasm"));
        fs::write(&path, bytes).unwrap();
        self.runtime.load(name, &path).map(|(loaded, _)| loaded)
    }

    fn load_wat(&self, name: &str, wat: &str) -> Arc<Loaded> {
        self.load_bytes(name, &wat::parse_str(wat).unwrap())
            .unwrap()
    }

    fn spec(&self, memory_limit: Option<u64>) -> RunSpec {
        RunSpec {
            argv: vec!["main".into()],
            env: vec![],
            memory_limit,
            cpu_limit_milli: None,
            mounts: vec![],
            stdout: self.log.stream("stdout"),
            stderr: self.log.stream("stderr"),
            stop: Default::default(),
            network: Default::default(),
            who: "default/p/main".into(),
        }
    }
}

const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\npartial")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 23))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const EXIT_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

const UNREACHABLE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable))"#;

const MEMORY_BOMB: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop (drop (memory.grow (i32.const 1))) (br 0))))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop (br 0))))"#;

#[tokio::test]
async fn a_module_printing_to_stdout_has_its_output_in_the_log() {
    let f = fixture();
    let loaded = f.load_wat("hello", HELLO);
    let outcome = f.runtime.run(&loaded, f.spec(None)).await;
    assert_eq!(outcome, Outcome::Exited(0));
    let lines = f.log.tail(10).unwrap();
    let messages: Vec<&str> = lines.iter().map(|l| message_of(l)).collect();
    assert_eq!(messages, ["hello from wasm", "partial"], "{lines:?}");
    assert!(lines[0].contains(" stdout "));
}

#[tokio::test]
async fn proc_exit_3_gives_exit_code_3() {
    let f = fixture();
    let loaded = f.load_wat("exit3", EXIT_3);
    assert_eq!(
        f.runtime.run(&loaded, f.spec(None)).await,
        Outcome::Exited(3)
    );
}

#[tokio::test]
async fn unreachable_traps_with_a_message() {
    let f = fixture();
    let loaded = f.load_wat("trap", UNREACHABLE);
    match f.runtime.run(&loaded, f.spec(None)).await {
        Outcome::Trapped(m) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn a_memory_bomb_with_a_one_mebibyte_limit_is_oom_killed() {
    let f = fixture();
    let loaded = f.load_wat("bomb", MEMORY_BOMB);
    let limit = spoke_api::quantity::Quantity::from("1Mi")
        .to_units()
        .unwrap();
    match f.runtime.run(&loaded, f.spec(Some(limit))).await {
        Outcome::OomKilled(m) => assert!(m.contains("1048576"), "{m}"),
        other => panic!("expected OOMKilled, got {other:?}"),
    }
}

#[tokio::test]
async fn a_module_whose_initial_memory_exceeds_the_limit_is_oom_killed() {
    let f = fixture();
    let loaded = f.load_wat(
        "big",
        r#"(module (memory (export "memory") 32) (func (export "_start")))"#,
    );
    let outcome = f.runtime.run(&loaded, f.spec(Some(1 << 20))).await;
    assert!(matches!(outcome, Outcome::OomKilled(_)), "{outcome:?}");
}

#[test]
fn an_infinite_loop_can_be_stopped_while_another_task_makes_progress() {
    // One thread, so the neighbour only runs if the guest yields; built like
    // the agent's runtime (see TOKIO_EVENT_INTERVAL) so timers keep firing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(TOKIO_EVENT_INTERVAL)
        .build()
        .unwrap();
    rt.block_on(async {
        let f = fixture();
        let loaded = f.load_wat("spin", SPIN);
        let runtime = f.runtime.clone();
        let spec = f.spec(None);
        let spinning = tokio::spawn(async move { runtime.run(&loaded, spec).await });

        let ticks = Arc::new(AtomicUsize::new(0));
        let counter = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ticks.load(Ordering::Relaxed) < 20 {
            assert!(
                Instant::now() < deadline,
                "the spinning guest starved other tasks ({} ticks)",
                ticks.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!spinning.is_finished());

        spinning.abort();
        let stopped = tokio::time::timeout(Duration::from_secs(2), spinning).await;
        match stopped {
            Ok(Err(e)) => assert!(e.is_cancelled()),
            other => panic!("the spinning guest did not stop: {other:?}"),
        }
        counter.abort();
    });
}

/// Sleeps 1 ms in `poll_oneoff` three times, then exits.
const SLEEP_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    ;; one subscription at 0: the monotonic clock, relative, 1 ms
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000))
    (loop $again
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 3))))))"#;

#[test]
fn a_guests_timers_and_tasks_are_the_reactors_not_the_callers() {
    // A runtime with no timer and no IO driver of its own: the guest's
    // sleeps (and the task that copies its output) only work because they
    // are registered with the runtime's reactor thread (runtime/reactor.rs).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let f = fixture();
    let sleeper = f.load_wat("sleep", SLEEP_3);
    let hello = f.load_wat("hello", HELLO);
    rt.block_on(async {
        assert_eq!(
            f.runtime.run(&sleeper, f.spec(None)).await,
            Outcome::Exited(0)
        );
        let mut limited = f.spec(None);
        // 1m: its bucket is 0.1 ms, so the CPU limit waits on a timer too.
        limited.cpu_limit_milli = Some(1);
        assert_eq!(f.runtime.run(&sleeper, limited).await, Outcome::Exited(0));
        assert_eq!(
            f.runtime.run(&hello, f.spec(None)).await,
            Outcome::Exited(0)
        );
    });
    let lines = f.log.tail(10).unwrap();
    assert!(
        lines.iter().any(|l| message_of(l) == "hello from wasm"),
        "{lines:?}"
    );
}

#[test]
fn invalid_bytes_are_an_invalid_image_with_the_compilers_message() {
    let f = fixture();
    match f.load_bytes("junk", b"this is not wasm") {
        Err(Error::Invalid(m)) => assert!(!m.is_empty()),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("junk compiled"),
    }
    // Imports that WASI does not provide cannot be linked: also invalid.
    let bytes = wat::parse_str(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#)
        .unwrap();
    match f.load_bytes("unlinkable", &bytes) {
        Err(Error::Invalid(m)) => assert!(m.contains("nope"), "{m}"),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("an unknown import linked"),
    }
}

#[tokio::test]
async fn compiled_code_is_cached_and_reused() {
    let f = fixture();
    let wasm = f.dir.path().join("cached.wasm");
    fs::write(&wasm, wat::parse_str(EXIT_3).unwrap()).unwrap();
    let (first, origin) = f.runtime.load("cached", &wasm).unwrap();
    assert_eq!(origin, Origin::Compiled);
    let entry = f.runtime.compiled_path("cached").expect("a cache entry");

    // The wasm file is gone: only memory can satisfy the second load while
    // the first is held, and only the cache once it is dropped.
    fs::remove_file(&wasm).unwrap();
    let (again, origin) = f.runtime.load("cached", &wasm).unwrap();
    assert_eq!(origin, Origin::Shared);
    assert!(Arc::ptr_eq(&first, &again));
    drop((first, again));
    let (second, origin) = f.runtime.load("cached", &wasm).unwrap();
    assert_eq!(origin, Origin::Cache);
    assert_eq!(
        f.runtime.run(&second, f.spec(None)).await,
        Outcome::Exited(3)
    );

    // A damaged cache entry is replaced by recompiling. (Written beside and
    // renamed, as the agent does: truncating a file that a loaded module has
    // mapped would crash the process with SIGBUS.)
    drop(second);
    let garbage = f.dir.path().join("garbage");
    fs::write(&garbage, b"garbage").unwrap();
    fs::rename(&garbage, &entry).unwrap();
    fs::write(&wasm, wat::parse_str(EXIT_3).unwrap()).unwrap();
    let (_, origin) = f.runtime.load("cached", &wasm).unwrap();
    assert_eq!(origin, Origin::Compiled);
}

#[tokio::test]
async fn a_start_sweeps_temporary_and_old_format_compiled_files() {
    let f = fixture();
    drop(f.load_wat("m", EXIT_3));
    let entry = f.runtime.compiled_path("m").unwrap();
    let compiled = entry.parent().unwrap();
    // What a `kill -9` mid-write leaves, and an entry an older agent named.
    let torn = compiled.join(format!("m.module.tmp{}-0", std::process::id()));
    let old = compiled.join("m.cwasm");
    fs::write(&torn, b"\x7fELF half").unwrap();
    fs::copy(&entry, &old).unwrap();

    // The agent starts again.
    let runtime = Runtime::new(compiled).unwrap();
    assert!(!torn.exists());
    assert!(!old.exists());
    assert!(entry.exists());
    let (loaded, origin) = runtime.load("m", &f.dir.path().join("m.wasm")).unwrap();
    assert_eq!(origin, Origin::Cache);
    assert_eq!(runtime.run(&loaded, f.spec(None)).await, Outcome::Exited(3));
}

#[test]
fn components_are_told_apart_from_core_modules() {
    assert!(!is_component(&wat::parse_str("(module)").unwrap()));
    assert!(is_component(b"\0asm\x0d\x00\x01\x00"));
    assert!(!is_component(b"\0as"));
}

#[tokio::test]
async fn a_component_runs_through_wasi_cli_run() {
    // The smallest command component: exports wasi:cli/run returning ok.
    let wat = r#"(component
      (core module $m (func (export "run") (result i32) i32.const 0))
      (core instance $i (instantiate $m))
      (func $run (result (result)) (canon lift (core func $i "run")))
      (instance $run-inst (export "run" (func $run)))
      (export "wasi:cli/run@0.2.0" (instance $run-inst))
    )"#;
    let f = fixture();
    let bytes = wat::parse_str(wat).unwrap();
    assert!(is_component(&bytes));
    let loaded = f.load_bytes("component", &bytes).unwrap();
    assert_eq!(
        f.runtime.run(&loaded, f.spec(None)).await,
        Outcome::Exited(0)
    );
}

#[tokio::test]
async fn the_real_hello_guest_prints_and_exits_when_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/out/hello.wasm");
    if !path.exists() {
        eprintln!("note: {} is missing; skipping", path.display());
        return;
    }
    let f = fixture();
    let (loaded, _) = f.runtime.load("hello-real", &path).unwrap();
    let mut spec = f.spec(None);
    spec.env = vec![
        ("HELLO_LINES".into(), "2".into()),
        ("HELLO_EXIT_CODE".into(), "4".into()),
    ];
    let outcome = tokio::time::timeout(Duration::from_secs(30), f.runtime.run(&loaded, spec))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(4));
    let lines = f.log.tail(100).unwrap();
    assert!(
        lines.iter().any(|l| l.contains("count=")),
        "no count= line in {lines:?}"
    );
}

/// CPU time (user + system) of the calling thread, from /proc (Linux), in
/// clock ticks of 10 ms.
fn thread_cpu_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which is in parentheses): state is the
    // 3rd field of the whole line, utime the 14th, stime the 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Spins the SPIN guest for `wall` on a thread of its own with `cpu` as its
/// limit, and returns the fraction of one CPU that thread used.
fn spin_share(cpu: Option<u64>, wall: Duration) -> f64 {
    let f = fixture();
    let loaded = f.load_wat("spin", SPIN);
    let mut spec = f.spec(None);
    spec.cpu_limit_milli = cpu;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let before = thread_cpu_ticks();
        let start = Instant::now();
        rt.block_on(async {
            let run = f.runtime.run(&loaded, spec);
            assert!(tokio::time::timeout(wall, run).await.is_err());
        });
        let ticks = thread_cpu_ticks() - before;
        ticks as f64 / 100.0 / start.elapsed().as_secs_f64()
    })
    .join()
    .unwrap()
}

#[test]
fn a_spinning_guest_is_held_to_its_cpu_limit() {
    let share = spin_share(Some(200), Duration::from_secs(2));
    // Loose bounds: the machine is shared and ticks are coarse.
    assert!(share < 0.4, "200m used {:.0}% of a CPU", share * 100.0);
    assert!(
        share > 0.02,
        "200m used only {:.0}% of a CPU",
        share * 100.0
    );
}

/// Guests that go wrong in each way a Wasm program can, and the words the
/// outcome's message must contain.
const TRAPS: [(&str, &str, &str); 5] = [
    (
        "stack-overflow",
        r#"(module (memory (export "memory") 1)
          (func $f (param i64) (result i64) (i64.add (call $f (local.get 0)) (i64.const 1)))
          (func (export "_start") (drop (call $f (i64.const 0)))))"#,
        "call stack exhausted",
    ),
    ("unreachable", UNREACHABLE, "unreachable"),
    (
        "divide-by-zero",
        r#"(module (memory (export "memory") 1)
          (global $zero (mut i32) (i32.const 0))
          (func (export "_start") (drop (i32.div_s (i32.const 7) (global.get $zero)))))"#,
        "integer divide by zero",
    ),
    (
        "out-of-bounds",
        r#"(module (memory (export "memory") 1)
          (func (export "_start") (drop (i32.load (i32.const 70000)))))"#,
        "out of bounds memory access",
    ),
    (
        "table-out-of-bounds",
        r#"(module (memory (export "memory") 1) (table 1 funcref)
          (type $t (func))
          (func (export "_start") (call_indirect (type $t) (i32.const 5))))"#,
        "undefined element",
    ),
];

#[tokio::test]
async fn each_kind_of_trap_ends_the_instance_with_a_message_naming_it() {
    let f = fixture();
    for (name, wat, words) in TRAPS {
        let loaded = f.load_wat(name, wat);
        match f.runtime.run(&loaded, f.spec(Some(16 << 20))).await {
            Outcome::Trapped(m) => {
                assert!(m.starts_with("wasm trap: "), "{name}: {m}");
                assert!(!m.contains("wasm trap: wasm trap"), "{name}: {m}");
                assert!(m.contains(words), "{name}: {m}");
                assert!(m.len() <= 1024, "{name}: {} bytes", m.len());
            }
            other => panic!("{name}: expected a trap, got {other:?}"),
        }
    }
    // The runtime is still fine afterwards.
    let loaded = f.load_wat("exit3", EXIT_3);
    assert_eq!(
        f.runtime.run(&loaded, f.spec(None)).await,
        Outcome::Exited(3)
    );
}

/// A real example component from `examples/out` (built by
/// `examples/build.sh`), or `None` with a note when it is missing.
fn example_component(f: &Fixture, name: &str) -> Option<Arc<Loaded>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/out/{name}.wasm"));
    if !path.exists() {
        eprintln!(
            "note: {} is missing (run examples/build.sh); skipping",
            path.display()
        );
        return None;
    }
    assert!(
        is_component(&fs::read(&path).unwrap()),
        "{name}.wasm is not a component"
    );
    Some(f.runtime.load(name, &path).unwrap().0)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1; the status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn a_component_serves_its_declared_port_over_loopback() {
    let f = fixture();
    let Some(loaded) = example_component(&f, "web") else {
        return;
    };
    let port = free_port();
    let mut spec = f.spec(None);
    spec.env = vec![
        ("PORT".into(), port.to_string()),
        ("WEB_VERSION".into(), "v7".into()),
    ];
    spec.network = NetPolicy {
        listen_ports: vec![port],
        ..Default::default()
    };
    let stop = spec.stop.clone();
    let runtime = f.runtime.clone();
    let probe_spec = spec.clone();
    let loaded = Arc::new(loaded);
    let serving = tokio::spawn({
        let loaded = loaded.clone();
        async move { runtime.run(&loaded, spec).await }
    });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        match http_get(addr, "/").await {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the component never answered on {addr}: {e}"),
        }
    };
    assert_eq!((status, body.as_str()), (200, "web v7\n"));
    assert_eq!(http_get(addr, "/nope").await.unwrap().0, 404);
    // The exec hook runs in a second instance that asks the first one
    // over loopback (its own declared port).
    f.runtime
        .probe(&loaded, &probe_spec, "healthz")
        .await
        .unwrap();
    // Asked to stop, the server returns and the program exits 0.
    stop.raise();
    let outcome = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(0));
    // Once it is gone, the hook fails and says why.
    let err = f
        .runtime
        .probe(&loaded, &probe_spec, "healthz")
        .await
        .unwrap_err();
    assert!(
        err.contains("healthz returned 1") && err.contains("/healthz"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_cannot_listen_on_an_undeclared_port() {
    let f = fixture();
    let Some(loaded) = example_component(&f, "netcheck") else {
        return;
    };
    let (declared, other) = (free_port(), free_port());
    let mut spec = f.spec(None);
    spec.argv = vec![
        "netcheck".into(),
        format!("listen:{other}"),
        format!("listen:{declared}"),
    ];
    spec.network = NetPolicy {
        listen_ports: vec![declared],
        ..Default::default()
    };
    let outcome = f.runtime.run(&loaded, spec).await;
    let lines = f.log.tail(100).unwrap();
    assert_eq!(outcome, Outcome::Exited(1), "{lines:?}");
    let has = |s: &str| lines.iter().any(|l| message_of(l).starts_with(s));
    assert!(
        has(&format!(
            "listen:{other} failed: bind 0.0.0.0:{other}: access-denied"
        )),
        "{lines:?}"
    );
    assert!(has(&format!("listen:{declared} ok")), "{lines:?}");
    // The pod's log says what was refused and why.
    assert!(
        has(&format!(
            "spoke-agent: listen on 0.0.0.0:{other} denied: port {other} is not declared"
        )),
        "{lines:?}"
    );
}

#[tokio::test]
async fn outbound_connections_follow_the_pods_egress_rules() {
    let f = fixture();
    let Some(loaded) = example_component(&f, "netcheck") else {
        return;
    };
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let denied = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, d) = (allowed.local_addr().unwrap(), denied.local_addr().unwrap());
    let accepted = tokio::spawn(async move { allowed.accept().await.map(|(_, peer)| peer) });
    let mut spec = f.spec(None);
    spec.argv = vec![
        "netcheck".into(),
        format!("connect:{a}"),
        format!("connect:{d}"),
    ];
    spec.network = NetPolicy {
        egress: vec![
            spoke_api::net::EgressRule::parse(&format!("127.0.0.1:{}", a.port())).unwrap(),
        ],
        ..Default::default()
    };
    let outcome = f.runtime.run(&loaded, spec).await;
    let lines = f.log.tail(100).unwrap();
    assert_eq!(outcome, Outcome::Exited(1), "{lines:?}");
    let has = |s: &str| lines.iter().any(|l| message_of(l).starts_with(s));
    assert!(has(&format!("connect:{a} ok")), "{lines:?}");
    assert!(
        has(&format!("connect:{d} failed: connect {d}: access-denied")),
        "{lines:?}"
    );
    assert!(
        has(&format!(
            "spoke-agent: connect to {d} denied: not allowed by the pod's spec.egress (127.0.0.1/32:{})",
            a.port()
        )),
        "{lines:?}"
    );
    // The allowed connection really reached the test's listener.
    tokio::time::timeout(Duration::from_secs(5), accepted)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The denied listener never saw a connection.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), denied.accept())
            .await
            .is_err()
    );

    // Without any rule (the default), a component has no TCP at all.
    let mut spec = f.spec(None);
    spec.argv = vec!["netcheck".into(), format!("connect:{a}")];
    assert_eq!(f.runtime.run(&loaded, spec).await, Outcome::Exited(1));
    let lines = f.log.tail(100).unwrap();
    let has = |s: &str| lines.iter().any(|l| message_of(l).starts_with(s));
    assert!(
        has(&format!("connect:{a} failed: connect {a}: access-denied")),
        "{lines:?}"
    );
    assert!(
        has(&format!(
            "spoke-agent: connect to {a} denied: not allowed by the pod's spec.egress (empty)"
        )),
        "{lines:?}"
    );
}

/// The nice value of each of this process's threads (`/proc`, field 19).
fn thread_nices() -> Vec<i32> {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).ok()?;
            // The command name, in parentheses, may hold spaces.
            let fields = &stat[stat.rfind(')')? + 2..];
            fields.split(' ').nth(16)?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_runs_below_the_agents_priority() {
    let f = fixture();
    let base = rustix::process::getpriority_process(None).unwrap();
    let lowered = (base + priority::DEFAULT_GUEST_NICE).min(19);
    let loaded = f.load_wat("spin", SPIN);
    let runtime = f.runtime.clone();
    let spec = f.spec(None);
    let spinning = tokio::spawn(async move { runtime.run(&loaded, spec).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        if thread_nices().contains(&lowered) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    spinning.abort();
    let _ = spinning.await;
    // Where the process may not put a thread back (no root, no
    // RLIMIT_NICE), guests stay at the agent's priority.
    assert_eq!(
        seen,
        f.runtime.priority.lowers(),
        "a thread at nice {lowered} while a guest spins"
    );
}
