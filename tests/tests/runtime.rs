//! The agent's runtime end to end: limits, traps and volumes of real Wasm
//! pods, run by a real agent process for a real hub, over loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spoke_e2e::{Hub, container, eventually, example_wasm};

/// A guest that spins forever.
const SPIN: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))"#;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Compiles `wat` and pushes it to the hub as `reference`.
fn push_wat(hub: &Hub, wat: &str, reference: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.wasm");
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    hub.push(&path, reference);
}

fn apply(hub: &Hub, manifest: &str) {
    let out = hub.apply(manifest);
    assert!(out.status.success(), "apply: {}\n{manifest}", stderr(&out));
}

/// CPU time (user + system) a process has used, in seconds, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, in 10 ms ticks.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Lines of a pod's log file on the board so far.
fn log_lines(data_dir: &Path, pod: &str) -> usize {
    std::fs::read_to_string(data_dir.join(format!("logs/default_{pod}.log")))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_spinning_pod_is_held_to_its_cpu_limit_while_a_neighbour_keeps_printing() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    push_wat(&hub, SPIN, "spin:v1");
    hub.push(&example_wasm("hello"), "hello:v1");
    apply(
        &hub,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: spin}\nspec:\n  containers:\n    - name: main\n      image: spin:v1\n      resources: {limits: {cpu: 200m}}\n",
    );
    apply(
        &hub,
        &spoke_e2e::pod_manifest("hello", "hello:v1", "Always", &[]),
    );
    for name in ["spin", "hello"] {
        hub.wait_pod(name, "Running", |p| p["status"]["phase"] == "Running")
            .await;
    }

    let pid = agent.proc.pid();
    let (cpu0, lines0, t0) = (
        cpu_seconds(pid),
        log_lines(&agent.data_dir, "hello"),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    // The whole agent, spinner included: without the limit this is a whole
    // CPU (100%). The bound is loose (2× the limit): the machine is shared.
    assert!(
        share < 0.4,
        "the agent used {:.0}% of a CPU with a 200m spinner",
        share * 100.0
    );
    // hello prints a line a second; its log is flushed once a second.
    let printed = log_lines(&agent.data_dir, "hello") - lines0;
    assert!(printed >= 2, "the neighbour printed {printed} lines in 4 s");
    let spin: Value = hub
        .client()
        .get("/api/v1/namespaces/default/pods/spin")
        .await
        .unwrap();
    assert!(container(&spin)["state"]["running"].is_object(), "{spin}");
}

#[tokio::test]
async fn traps_and_memory_bombs_end_with_a_reason_and_restart_with_backoff() {
    let hub = Hub::start().await;
    let _agent = hub.agent(
        "edge-1",
        &[
            "--restart-backoff-initial",
            "1s",
            "--restart-backoff-max",
            "2s",
        ],
    );
    hub.wait_node_ready("edge-1").await;
    push_wat(
        &hub,
        r#"(module (memory (export "memory") 1) (global $zero (mut i32) (i32.const 0))
             (func (export "_start") (drop (i32.div_u (i32.const 1) (global.get $zero)))))"#,
        "divide:v1",
    );
    push_wat(
        &hub,
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop (drop (memory.grow (i32.const 1))) (br 0))))"#,
        "bomb:v1",
    );
    apply(
        &hub,
        &spoke_e2e::pod_manifest("divide", "divide:v1", "Always", &[]),
    );
    apply(
        &hub,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bomb}\nspec:\n  restartPolicy: Never\n  containers:\n    - name: main\n      image: bomb:v1\n      resources: {limits: {memory: 2Mi}}\n",
    );

    // The trap restarts, again and again, each time after a back-off.
    let pod = hub
        .wait_pod("divide", "two restarts after a trap", |p| {
            container(p)["restartCount"].as_i64() >= Some(2)
        })
        .await;
    let last = &container(&pod)["lastState"]["terminated"];
    assert_eq!(last["reason"], "Error", "{pod}");
    assert_eq!(last["exitCode"], 1, "{pod}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(message.contains("integer divide by zero"), "{pod}");
    hub.wait_pod("divide", "CrashLoopBackOff", |p| {
        container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;

    let bomb = hub
        .wait_pod("bomb", "Failed", |p| p["status"]["phase"] == "Failed")
        .await;
    let t = &container(&bomb)["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{bomb}");
    assert_eq!(t["exitCode"], 137, "{bomb}");
    assert!(
        t["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2097152"),
        "{bomb}"
    );

    // The agent is unharmed: a good pod still runs and prints.
    hub.push(&example_wasm("hello"), "hello:v1");
    apply(
        &hub,
        &spoke_e2e::pod_manifest("hello", "hello:v1", "Always", &[]),
    );
    eventually(Duration::from_secs(30), "hello's log", || async {
        let out = hub.spoke(&["logs", "hello"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("count=")
            .then_some(())
    })
    .await;
}

/// WASI imports the volume fixtures use.
const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "data.txt")
  (func $check (param $errno i32) (if (local.get $errno) (then (call $exit (local.get $errno)))))
  ;; opens data.txt in the first preopen (fd 3) with `oflags` and `rights`
  ;; (fd_read 0x2, fd_write 0x40); the fd goes to [16]
  (func $open_data (param $oflags i32) (param $rights i64)
    (call $check (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 8) (local.get $oflags)
      (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 16))))
"#;

/// Writes "hello from a volume\n" to data.txt in its first mount; exits
/// with the WASI errno when it cannot.
fn writer() -> String {
    format!(
        r#"(module {IMPORTS}
  (data (i32.const 200) "hello from a volume\n")
  (func (export "_start")
    (call $open_data (i32.const 9) (i64.const 0x40)) ;; O_CREAT | O_TRUNC, fd_write
    (i32.store (i32.const 0) (i32.const 200)) (i32.store (i32.const 4) (i32.const 20))
    (call $check (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

/// Prints data.txt of its first mount; exits with the WASI errno
/// when it cannot read it, and with EAGAIN (6) when it is empty: a writer
/// beside it may have created the file and not yet written to it.
fn reader() -> String {
    format!(
        r#"(module {IMPORTS}
  (func (export "_start")
    (call $open_data (i32.const 0) (i64.const 0x2))
    (i32.store (i32.const 0) (i32.const 1000)) (i32.store (i32.const 4) (i32.const 4096))
    (call $check (call $read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eqz (i32.load (i32.const 8))) (then (call $exit (i32.const 6))))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (call $check (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

/// Writes 2 MiB to fill.bin in its first mount, then sleeps forever.
fn filler() -> String {
    format!(
        r#"(module {IMPORTS}
  (data (i32.const 100) "fill.bin")
  (func (export "_start") (local $i i32)
    (call $open_data (i32.const 9) (i64.const 0x40))
    (i32.store (i32.const 0) (i32.const 0)) (i32.store (i32.const 4) (i32.const 65536))
    (loop $fill
      (call $check (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 32))))
    ;; one relative clock subscription of 1 s at 512 (8-aligned), forever
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 1000000000))
    (i64.store (i32.const 544) (i64.const 0))
    (i32.store16 (i32.const 552) (i32.const 0))
    (loop $sleep
      (drop (call $poll (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 700)))
      (br $sleep))))"#
    )
}

/// Waits until pod `name` waits with `reason`; the pod and the message.
async fn waiting(hub: &Hub, name: &str, reason: &str) -> (Value, String) {
    let pod = hub
        .wait_pod(name, reason, |p| {
            container(p)["state"]["waiting"]["reason"] == reason
        })
        .await;
    let message = container(&pod)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (pod, message)
}

async fn create_pod(hub: &Hub, pod: Value) -> Value {
    hub.client()
        .create("/api/v1/namespaces/default/pods", &pod)
        .await
        .unwrap_or_else(|e| panic!("create {pod}: {e}"))
}

/// A pod of `containers` (name, image, mounts) with `volumes`.
fn volume_pod(
    name: &str,
    restart: &str,
    volumes: Value,
    containers: &[(&str, &str, Value)],
) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, image, mounts)| json!({"name": n, "image": image, "volumeMounts": mounts}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": restart, "volumes": volumes, "containers": containers}})
}

fn pod_log(data_dir: &Path, pod: &str) -> String {
    std::fs::read_to_string(data_dir.join(format!("logs/default_{pod}.log"))).unwrap_or_default()
}

#[tokio::test]
async fn an_empty_dir_is_shared_by_containers_and_removed_with_the_pod() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &["--restart-backoff-initial", "500ms"]);
    hub.wait_node_ready("edge-1").await;
    push_wat(&hub, &writer(), "writer:v1");
    push_wat(&hub, &reader(), "reader:v1");

    // The reader fails (no file yet) until the writer has written, then
    // prints what the other container wrote.
    let created = create_pod(
        &hub,
        volume_pod(
            "shared",
            "OnFailure",
            json!([{"name": "cache", "emptyDir": {}}]),
            &[
                (
                    "writer",
                    "writer:v1",
                    json!([{"name": "cache", "mountPath": "/cache"}]),
                ),
                (
                    "reader",
                    "reader:v1",
                    json!([{"name": "cache", "mountPath": "/cache", "readOnly": true}]),
                ),
            ],
        ),
    )
    .await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    hub.wait_pod("shared", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await;
    eventually(Duration::from_secs(10), "the reader's output", || async {
        pod_log(&agent.data_dir, "shared")
            .contains("hello from a volume")
            .then_some(())
    })
    .await;
    let file = agent.data_dir.join(format!("volumes/{uid}/cache/data.txt"));
    assert!(file.exists(), "{}", file.display());

    let out = hub.spoke(&["delete", "pod", "shared"]);
    assert!(out.status.success(), "delete: {}", stderr(&out));
    let dir = agent.data_dir.join(format!("volumes/{uid}"));
    eventually(
        Duration::from_secs(10),
        "the emptyDir to be removed",
        || async { (!dir.exists()).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn host_paths_mount_only_under_allowed_prefixes_and_read_only_mounts_refuse_writes() {
    let hub = Hub::start().await;
    let base = std::fs::canonicalize(hub.dir.path()).unwrap();
    let (allowed, outside) = (base.join("allowed"), base.join("outside"));
    std::fs::create_dir_all(allowed.join("data")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(allowed.join("data/data.txt"), "from the host\n").unwrap();
    std::fs::write(outside.join("data.txt"), "secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    let agent = hub.agent("edge-1", &["--allow-host-path", allowed.to_str().unwrap()]);
    hub.wait_node_ready("edge-1").await;
    push_wat(&hub, &writer(), "writer:v1");
    push_wat(&hub, &reader(), "reader:v1");

    let host = |name: &str, path: &std::path::PathBuf, image: &str, read_only: bool| {
        volume_pod(
            name,
            "Never",
            json!([{"name": "data", "hostPath": {"path": path}}]),
            &[(
                "main",
                image,
                json!([{"name": "data", "mountPath": "/data", "readOnly": read_only}]),
            )],
        )
    };
    create_pod(
        &hub,
        host("inside", &allowed.join("data"), "reader:v1", true),
    )
    .await;
    create_pod(&hub, host("outside", &outside, "reader:v1", true)).await;
    create_pod(
        &hub,
        host("escape", &allowed.join("escape"), "reader:v1", true),
    )
    .await;
    create_pod(
        &hub,
        host("ro-write", &allowed.join("data"), "writer:v1", true),
    )
    .await;

    hub.wait_pod("inside", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the host file in the log",
        || async {
            pod_log(&agent.data_dir, "inside")
                .contains("from the host")
                .then_some(())
        },
    )
    .await;

    for (name, path) in [("outside", &outside), ("escape", &allowed.join("escape"))] {
        let (pod, message) = waiting(&hub, name, "CreateContainerConfigError").await;
        assert!(
            message.contains(path.to_str().unwrap())
                && message.contains("not allowed")
                && message.contains(allowed.to_str().unwrap()),
            "{name}: {message}"
        );
        assert_eq!(container(&pod)["restartCount"], 0, "{pod}");
        assert!(!pod_log(&agent.data_dir, name).contains("secret"));
    }

    // Writing through a readOnly mount fails inside the guest (it exits
    // with the WASI errno), and the host file is untouched.
    let pod = hub
        .wait_pod("ro-write", "Failed", |p| p["status"]["phase"] == "Failed")
        .await;
    let code = container(&pod)["state"]["terminated"]["exitCode"]
        .as_i64()
        .unwrap();
    assert!(code > 1, "exit code {code}: {pod}");
    assert!(
        container(&pod)["state"]["terminated"]["message"].is_null(),
        "{pod}"
    );
    assert_eq!(
        std::fs::read_to_string(allowed.join("data/data.txt")).unwrap(),
        "from the host\n"
    );
}

#[tokio::test]
async fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    let hub = Hub::start().await;
    let _agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    push_wat(&hub, &filler(), "filler:v1");
    create_pod(
        &hub,
        volume_pod(
            "filler",
            "Always",
            json!([{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]),
            &[(
                "main",
                "filler:v1",
                json!([{"name": "scratch", "mountPath": "/scratch"}]),
            )],
        ),
    )
    .await;
    let pod = hub
        .wait_pod("filler", "Evicted", |p| p["status"]["reason"] == "Evicted")
        .await;
    assert_eq!(pod["status"]["phase"], "Failed", "{pod}");
    let message = pod["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"scratch\" exceeds the limit \"1Mi\""),
        "{message}"
    );
    let t = &container(&pod)["state"]["terminated"];
    assert_eq!(t["exitCode"], 137, "{pod}");
    assert_eq!(
        container(&pod)["restartCount"],
        0,
        "evicted is final: {pod}"
    );
}

/// A guest that sleeps forever (an hour at a time), as idle pods do.
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

/// What a 64-bit Raspberry Pi kernel gives a process: a 39-bit address space.
const PI_ADDRESS_SPACE: u64 = 1 << 39;

/// Limits the running process `pid`'s address space (`ulimit -v`).
fn limit_address_space(pid: u32, bytes: u64) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--as={bytes}:{bytes}"))
        .output()
        .expect("prlimit (util-linux) is installed");
    assert!(out.status.success(), "prlimit: {}", stderr(&out));
}

#[tokio::test]
async fn a_thousand_idle_pods_fit_in_a_39_bit_address_space() {
    // With wasmtime's defaults (4 GiB + 32 MiB of guard reserved per linear
    // memory) about 120 pods would fit in 512 GiB.
    const PODS: usize = 1000;
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &["--max-pods", "2000"]);
    limit_address_space(agent.proc.pid(), PI_ADDRESS_SPACE);
    hub.wait_node_ready("edge-1").await;
    push_wat(&hub, IDLE, "idle:v1");
    let client = hub.client();
    for i in 0..PODS {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("idle-{i}")},
            "spec": {"containers": [{"name": "main", "image": "idle:v1",
                     "resources": {"limits": {"memory": "4Mi"}}}]}});
        client
            .create("/api/v1/namespaces/default/pods", &pod)
            .await
            .unwrap();
    }
    let running = |pods: &Value| {
        pods["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| container(p)["state"]["running"].is_object())
                    .count()
            })
            .unwrap_or(0)
    };
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        last = client.get("/api/v1/namespaces/default/pods").await.unwrap();
        if running(&last) == PODS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let not_running: Vec<&Value> = last["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !container(p)["state"]["running"].is_object())
        .take(3)
        .collect();
    assert!(
        not_running.is_empty(),
        "{} of {PODS} pods running; e.g. {not_running:?}\n--- agent log ---\n{}",
        running(&last),
        spoke_e2e::tail(&agent.proc.output(), 30)
    );
    let vm = std::fs::read_to_string(format!("/proc/{}/status", agent.proc.pid())).unwrap();
    let vm_size = vm.lines().find(|l| l.starts_with("VmSize:")).unwrap_or("");
    eprintln!(
        "{PODS} idle pods: agent {vm_size}, RSS {:?} KiB",
        agent.proc.rss_kib()
    );
}

/// A module that traps at once.
const UNREACHABLE: &str =
    r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;

/// A module that recurses without end.
const RECURSE: &str = r#"(module (memory (export "memory") 1)
  (func $f (param i64) (result i64) (i64.add (call $f (local.get 0)) (i64.const 1)))
  (func (export "_start") (drop (call $f (i64.const 0)))))"#;

/// A module that asks for a function no runtime provides.
const MISSING_IMPORT: &str = r#"(module (import "env" "launch_missiles" (func))
  (memory (export "memory") 1) (func (export "_start") (call 0)))"#;

fn never_pod(name: &str, image: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: main\n      image: {image}\n      resources: {resources}\n"
    )
}

#[tokio::test]
async fn hostile_modules_end_with_a_reason_while_the_agent_and_a_neighbour_carry_on() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    apply(
        &hub,
        &spoke_e2e::pod_manifest("hello", "hello:v1", "Always", &[]),
    );
    let before = hub
        .wait_pod("hello", "Running", |p| p["status"]["phase"] == "Running")
        .await;

    // Not Wasm at all: the hub refuses to store it, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "#!/bin/sh\necho this is not wasm\n").unwrap();
    let out = hub.spoke(&["push", text.to_str().unwrap(), "text:v1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a WebAssembly module"),
        "{}",
        stderr(&out)
    );
    // The magic number and then garbage passes the hub; the agent cannot compile it.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0\xff\xff\xff\xff garbage").unwrap();
    hub.push(&garbage, "garbage:v1");
    push_wat(&hub, SPIN, "spin:v1");
    push_wat(&hub, RECURSE, "recurse:v1");
    push_wat(&hub, UNREACHABLE, "trap:v1");
    push_wat(&hub, MISSING_IMPORT, "import:v1");
    push_wat(
        &hub,
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (loop (drop (memory.grow (i32.const 1))) (br 0))))"#,
        "bomb:v1",
    );
    for (name, resources) in [
        ("spin", "{limits: {cpu: 100m}}"),
        ("bomb", "{limits: {memory: 2Mi}}"),
        ("recurse", "{}"),
        ("trap", "{}"),
        ("import", "{}"),
        ("garbage", "{}"),
    ] {
        apply(&hub, &never_pod(name, &format!("{name}:v1"), resources));
    }

    let terminated = |p: &Value| container(p)["state"]["terminated"].clone();
    let bomb = hub
        .wait_pod("bomb", "Failed", |p| p["status"]["phase"] == "Failed")
        .await;
    assert_eq!(terminated(&bomb)["reason"], "OOMKilled", "{bomb}");
    for (name, words) in [("recurse", "call stack exhausted"), ("trap", "unreachable")] {
        let pod = hub
            .wait_pod(name, "Failed", |p| p["status"]["phase"] == "Failed")
            .await;
        let t = terminated(&pod);
        assert_eq!(t["reason"], "Error", "{pod}");
        assert!(
            t["message"].as_str().unwrap_or_default().contains(words),
            "{name}: {pod}"
        );
    }
    for (name, words) in [("import", "launch_missiles"), ("garbage", "")] {
        let (pod, message) = waiting(&hub, name, "InvalidImage").await;
        assert!(
            !message.is_empty() && message.contains(words),
            "{name}: {pod}"
        );
        assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    }
    // The spinner runs on, held to its limit, until it is deleted: then it
    // is stopped (it never reads its closed stdin) and goes.
    let spin = hub
        .wait_pod("spin", "Running", |p| p["status"]["phase"] == "Running")
        .await;
    assert!(container(&spin)["state"]["running"].is_object(), "{spin}");
    let out = hub.spoke(&["delete", "pod", "spin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let client = hub.client();
    eventually(Duration::from_secs(60), "spin deleted", || async {
        client
            .get::<Value>("/api/v1/namespaces/default/pods/spin")
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // The neighbour never noticed: same instance, no restart, still printing.
    let after: Value = client
        .get("/api/v1/namespaces/default/pods/hello")
        .await
        .unwrap();
    assert_eq!(after["status"]["phase"], "Running", "{after}");
    assert_eq!(
        container(&after)["restartCount"],
        container(&before)["restartCount"],
        "{after}"
    );
    assert_eq!(
        container(&after)["state"]["running"]["startedAt"],
        container(&before)["state"]["running"]["startedAt"],
        "{after}"
    );
    let lines = log_lines(&agent.data_dir, "hello");
    eventually(Duration::from_secs(30), "hello still printing", || async {
        (log_lines(&agent.data_dir, "hello") > lines).then_some(())
    })
    .await;
    assert!(
        !agent.proc.output().contains("panicked"),
        "{}",
        spoke_e2e::tail(&agent.proc.output(), 40)
    );
}
