//! Graceful termination and probes end to end: a real hub, a real agent
//! process and real Wasm guests over loopback.

use serde_json::{Value, json};
use spoke_e2e::{Hub, container};

/// Reads stdin until end of file (the agent's stop signal), then creates
/// `stopped` in its first preopen and returns (exit code 0). Exports
/// `healthz` (always 1: unhealthy) and `ready` (0 once `ready` exists in its
/// first preopen).
const GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 96) "ready")
  (data (i32.const 112) "stopped")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 64))
    (block $eof
      (loop $more
        (br_if $eof (i32.ne (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
                            (i32.const 0)))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (br $more)))
    ;; oflags 1 = O_CREAT; rights 64 = fd_write
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 112) (i32.const 7) (i32.const 1)
      (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 32))))
  (func (export "healthz") (result i32) (i32.const 1))
  (func (export "ready") (result i32)
    (call $open (i32.const 3) (i32.const 0) (i32.const 96) (i32.const 5) (i32.const 0)
      (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))))"#;

const PODS: &str = "/api/v1/namespaces/default/pods";

fn push_guest(hub: &Hub) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guest.wasm");
    std::fs::write(&path, wat::parse_str(GUEST).unwrap()).unwrap();
    hub.push(&path, "guest:v1");
}

async fn create(hub: &Hub, pod: Value) {
    hub.client()
        .create(PODS, &pod)
        .await
        .unwrap_or_else(|e| panic!("create {pod}: {e}"));
}

/// Waits (up to a minute) until the pod `name` is gone from the API.
async fn wait_removed(hub: &Hub, name: &str, what: &str) {
    let client = hub.client();
    let path = format!("{PODS}/{name}");
    spoke_e2e::eventually(std::time::Duration::from_secs(60), what, || {
        let (client, path) = (client.clone(), path.clone());
        async move { client.get::<Value>(&path).await.is_err().then_some(()) }
    })
    .await;
}

fn condition(pod: &Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_deleted_pod_sees_its_stdin_close_and_is_removed_once_it_exited() {
    let hub = Hub::start().await;
    let host = tempfile::tempdir().unwrap();
    let prefix = host.path().to_str().unwrap();
    let _agent = hub.agent("edge-1", &["--allow-host-path", prefix]);
    hub.wait_node_ready("edge-1").await;
    push_guest(&hub);
    let out = host.path().join("out");
    // A grace period far longer than the test waits: the pod can only go
    // away in time if the guest noticed the signal and exited.
    create(
        &hub,
        json!({"metadata": {"name": "polite"}, "spec": {
            "terminationGracePeriodSeconds": 3600,
            "volumes": [{"name": "out", "hostPath": {"path": out, "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "main", "image": "guest:v1",
                "volumeMounts": [{"name": "out", "mountPath": "/out"}]}]}}),
    )
    .await;
    hub.wait_pod("polite", "Running", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    assert!(!out.join("stopped").exists());

    hub.client()
        .delete(&format!("{PODS}/polite"), None)
        .await
        .unwrap();
    wait_removed(&hub, "polite", "the pod removed").await;
    assert!(
        out.join("stopped").exists(),
        "the guest did not run after its stdin closed"
    );
}

#[tokio::test]
async fn delete_with_a_grace_period_overrides_the_pods_own() {
    let hub = Hub::start().await;
    let _agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    // Spins and never reads stdin: only the grace period stops it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.wasm");
    std::fs::write(
        &path,
        wat::parse_str(r#"(module (func (export "_start") (loop (br 0))))"#).unwrap(),
    )
    .unwrap();
    hub.push(&path, "spin:v1");
    create(
        &hub,
        json!({"metadata": {"name": "stubborn"}, "spec": {
            "terminationGracePeriodSeconds": 3600,
            "containers": [{"name": "main", "image": "spin:v1",
                "resources": {"limits": {"cpu": "100m"}}}]}}),
    )
    .await;
    hub.wait_pod("stubborn", "Running", |p| {
        container(p)["state"]["running"].is_object()
    })
    .await;
    // `kubectl delete --grace-period=2`: the agent stops it after 2 s, not
    // after the hour the pod asks for.
    let out = hub.spoke(&[
        "delete",
        "pod",
        "stubborn",
        "--grace-period",
        "2",
        "--wait=false",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_removed(
        &hub,
        "stubborn",
        "the pod removed after its 2 s deletion grace",
    )
    .await;
}

#[tokio::test]
async fn probes_gate_readiness_and_restart_an_unhealthy_container() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &["--restart-backoff-initial", "500ms"]);
    hub.wait_node_ready("edge-1").await;
    push_guest(&hub);
    let probe = |export: &str| json!({"exec": {"command": [export]}, "periodSeconds": 1, "failureThreshold": 1});
    create(
        &hub,
        json!({"metadata": {"name": "gated"}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "volumes": [{"name": "state", "emptyDir": {}}],
            "containers": [{"name": "main", "image": "guest:v1",
                "readinessProbe": probe("ready"),
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]}}),
    )
    .await;
    create(
        &hub,
        json!({"metadata": {"name": "sick"}, "spec": {
            "containers": [{"name": "main", "image": "guest:v1", "livenessProbe": probe("healthz")}]}}),
    )
    .await;

    // Readiness: running but not ready until its probe finds the file.
    let pod = hub
        .wait_pod("gated", "running", |p| {
            container(p)["state"]["running"].is_object()
        })
        .await;
    assert_eq!(container(&pod)["ready"], false, "{pod}");
    assert_eq!(condition(&pod, "Ready"), "False", "{pod}");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let state = agent.data_dir.join("volumes").join(uid).join("state");
    std::fs::write(state.join("ready"), b"").unwrap();
    hub.wait_pod("gated", "Ready", |p| condition(p, "Ready") == "True")
        .await;
    std::fs::remove_file(state.join("ready")).unwrap();
    let pod = hub
        .wait_pod("gated", "not Ready again", |p| {
            condition(p, "Ready") == "False"
        })
        .await;
    assert_eq!(container(&pod)["restartCount"], 0, "{pod}");

    // Liveness: restarted, and the last state says why.
    let pod = hub
        .wait_pod("sick", "restarted", |p| {
            container(p)["restartCount"].as_i64() >= Some(1)
        })
        .await;
    let last = &container(&pod)["lastState"]["terminated"];
    assert_eq!(
        last["message"], "Liveness probe failed: healthz returned 1",
        "{pod}"
    );
    // It saw its stdin close and exited by itself.
    assert_eq!(last["exitCode"], 0, "{pod}");
}

#[tokio::test]
async fn a_probe_without_a_handler_is_refused_naming_the_field() {
    let hub = Hub::start().await;
    let out = hub.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: main\n      image: guest:v1\n      livenessProbe: {periodSeconds: 0}\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.containers[0].livenessProbe"), "{err}");
    assert!(
        err.contains("spec.containers[0].livenessProbe.periodSeconds"),
        "{err}"
    );
}
