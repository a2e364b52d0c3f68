//! ConfigMaps and Secrets reach pods on the board: as environment
//! variables, and as read-only files updated in place without a restart.
//! Real hub and agent processes, real Wasm, over loopback.

use std::path::Path;

use serde_json::{Value, json};
use spoke_e2e::{Hub, container, example_wasm};

/// The value the test looks for in the hub's and the agent's logs.
const SECRET: &str = "sup3r-s3cret-value-7781";

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn apply(hub: &Hub, manifest: &Value) {
    let text = manifest.to_string();
    let out = hub.apply(&text);
    assert!(out.status.success(), "apply: {}\n{text}", stderr(&out));
}

fn push_wat(hub: &Hub, wat: &str, reference: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.wasm");
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    hub.push(&path, reference);
}

fn pod_log(data_dir: &Path, pod: &str) -> String {
    std::fs::read_to_string(data_dir.join(format!("logs/default_{pod}.log"))).unwrap_or_default()
}

/// WASI imports of the fixtures; `$open_data` opens data.txt in the first
/// preopen (fd 3) with `oflags` and `rights`, the fd goes to [16].
const IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "data.txt")
  (func $check (param $errno i32) (if (local.get $errno) (then (call $exit (local.get $errno)))))
  (func $open_data (param $oflags i32) (param $rights i64)
    (call $check (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 8) (local.get $oflags)
      (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 16))))
"#;

/// Prints data.txt of its first mount every 500 ms, forever (re-opening it
/// each time, so it sees a replaced file); exits with the WASI errno when
/// it cannot read it.
fn watcher() -> String {
    format!(
        r#"(module {IMPORTS}
  (func (export "_start")
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536) (i64.const 500000000))
    (i64.store (i32.const 544) (i64.const 0))
    (i32.store16 (i32.const 552) (i32.const 0))
    (loop $again
      (call $open_data (i32.const 0) (i64.const 0x2))
      (i32.store (i32.const 0) (i32.const 1000)) (i32.store (i32.const 4) (i32.const 4096))
      (call $check (call $read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))
      (i32.store (i32.const 4) (i32.load (i32.const 8)))
      (call $check (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (drop (call $close (i32.load (i32.const 16))))
      (drop (call $poll (i32.const 512) (i32.const 600) (i32.const 1) (i32.const 700)))
      (br $again))))"#
    )
}

/// Tries to write data.txt in its first mount; exits with the WASI errno
/// when it cannot, 0 when it could.
fn writer() -> String {
    format!(
        r#"(module {IMPORTS}
  (data (i32.const 200) "overwritten\n")
  (func (export "_start")
    (call $open_data (i32.const 9) (i64.const 0x40))
    (i32.store (i32.const 0) (i32.const 200)) (i32.store (i32.const 4) (i32.const 12))
    (call $check (call $write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
}

fn config_map(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn pod(name: &str, restart: &str, volumes: Value, container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": restart, "volumes": volumes, "containers": [container]}})
}

#[tokio::test]
async fn config_maps_and_secrets_reach_pods_as_env_and_read_only_files_updated_in_place() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    push_wat(&hub, &watcher(), "watcher:v1");
    push_wat(&hub, &writer(), "writer:v1");

    apply(
        &hub,
        &config_map(
            "app",
            json!({"greeting": "bonjour", "data.txt": "version one\n"}),
        ),
    );
    apply(
        &hub,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                "stringData": {"greeting": SECRET}}),
    );

    // env from a ConfigMap key and from a Secret key.
    let env_from = |kind: &str, name: &str| {
        json!({"name": "main", "image": "hello:v1", "env": [
            {"name": "GREETING", "valueFrom": {kind: {"name": name, "key": "greeting"}}}]})
    };
    apply(
        &hub,
        &pod(
            "env-cm",
            "Always",
            json!([]),
            env_from("configMapKeyRef", "app"),
        ),
    );
    apply(
        &hub,
        &pod(
            "env-secret",
            "Always",
            json!([]),
            env_from("secretKeyRef", "creds"),
        ),
    );
    // A configMap volume read in a loop, and one written to.
    let volume = json!([{"name": "config", "configMap": {"name": "app"}}]);
    let mount = json!([{"name": "config", "mountPath": "/config"}]);
    apply(
        &hub,
        &pod(
            "watch",
            "Always",
            volume.clone(),
            json!({"name": "main", "image": "watcher:v1", "volumeMounts": mount}),
        ),
    );
    apply(
        &hub,
        &pod(
            "ro-write",
            "Never",
            volume,
            json!({"name": "main", "image": "writer:v1", "volumeMounts": mount}),
        ),
    );

    spoke_e2e::eventually(
        std::time::Duration::from_secs(60),
        "both env pods to print their greeting, and the watcher the file",
        || async {
            (pod_log(&agent.data_dir, "env-cm").contains("bonjour from a Wasm pod")
                && pod_log(&agent.data_dir, "env-secret")
                    .contains(&format!("{SECRET} from a Wasm pod"))
                && pod_log(&agent.data_dir, "watch").contains("version one"))
            .then_some(())
        },
    )
    .await;

    // The volume is read-only: the write fails inside the guest (WASI errno).
    let p = hub
        .wait_pod("ro-write", "Failed", |p| p["status"]["phase"] == "Failed")
        .await;
    let code = container(&p)["state"]["terminated"]["exitCode"]
        .as_i64()
        .unwrap();
    assert!(code > 1, "exit code {code}: {p}");

    // An update reaches the running pod's file, without a restart.
    apply(
        &hub,
        &config_map(
            "app",
            json!({"greeting": "bonjour", "data.txt": "version two\n"}),
        ),
    );
    spoke_e2e::eventually(
        std::time::Duration::from_secs(60),
        "the watcher to print the new file",
        || async {
            pod_log(&agent.data_dir, "watch")
                .contains("version two")
                .then_some(())
        },
    )
    .await;
    let p = hub
        .wait_pod("watch", "Running", |p| p["status"]["phase"] == "Running")
        .await;
    assert_eq!(container(&p)["restartCount"], 0, "{p}");
    assert!(container(&p)["state"]["running"].is_object(), "{p}");

    // A missing ConfigMap: CreateContainerConfigError naming it, until it exists.
    apply(
        &hub,
        &pod(
            "waits",
            "Always",
            json!([]),
            env_from("configMapKeyRef", "later"),
        ),
    );
    let p = hub
        .wait_pod("waits", "CreateContainerConfigError", |p| {
            container(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await;
    let message = container(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("\"later\""), "{p}");
    apply(&hub, &config_map("later", json!({"greeting": "finally"})));
    hub.wait_pod("waits", "Running", |p| p["status"]["phase"] == "Running")
        .await;
    spoke_e2e::eventually(
        std::time::Duration::from_secs(30),
        "the late pod to print the late greeting",
        || async {
            pod_log(&agent.data_dir, "waits")
                .contains("finally from a Wasm pod")
                .then_some(())
        },
    )
    .await;

    // The secret's value is in no log of the hub or the agent.
    for (who, text) in [("hub", hub.proc.output()), ("agent", agent.proc.output())] {
        assert!(!text.is_empty(), "{who} wrote no log");
        assert!(!text.contains(SECRET), "the {who} logged the secret value");
    }
}
