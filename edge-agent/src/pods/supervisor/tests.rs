//! Supervisor tests: real wasmtime, WAT fixtures, no hub.

use std::time::Instant;

use spoke_api::core::{Container as SpecContainer, PodSpec, ResourceRequirements};
use spoke_api::protocol::DesiredPod;
use spoke_api::protocol::PodReport;

use super::*;
use crate::modules::{Outbox, Store, digest_of};

struct Fixture {
    _dir: tempfile::TempDir,
    supervisor: Arc<Supervisor>,
    changes: mpsc::UnboundedReceiver<Change>,
    state: Arc<State>,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::open(&dir.path().join("state.redb")).unwrap());
    let runtime = Arc::new(Runtime::new(&dir.path().join("compiled")).unwrap());
    let store = Store::new(&dir.path().join("modules"));
    // Never connected: every pull that needs the hub fails fast.
    let (outbox, _rx) = Outbox::new();
    let fetcher = Arc::new(Fetcher::new(store.clone(), outbox));
    let (supervisor, changes) = Supervisor::new(
        runtime,
        fetcher,
        state.clone(),
        Settings {
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
            },
            logs_dir: dir.path().join("logs"),
            volumes: crate::pods::volumes::Volumes::new(&dir.path().join("volumes"), &[]),
            pod_address: None,
        },
    );
    Fixture {
        _dir: dir,
        supervisor,
        changes,
        state,
        store,
    }
}

impl Fixture {
    /// Stores a WAT module in the cache and returns its digest.
    fn module(&self, wat: &str) -> String {
        let bytes = wat::parse_str(wat).unwrap();
        let digest = digest_of(&bytes);
        self.store.put(&digest, &bytes).unwrap();
        digest
    }

    /// Waits for a status report satisfying `pred`.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Change) -> bool) -> Change {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.changes.recv()).await {
                Ok(Some(c)) if pred(&c) => return c,
                Ok(Some(_)) => {}
                Ok(None) => panic!("change channel closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

impl Fixture {
    /// Waits until the supervisor has let go of every pod (stopping is
    /// asynchronous).
    async fn wait_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.supervisor.pods.lock().await.is_empty() {
            assert!(Instant::now() < deadline, "pods still supervised");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the status of container 0 to satisfy `pred`.
    async fn wait_container(
        &mut self,
        what: &str,
        pred: impl Fn(&spoke_api::core::ContainerStatus, &PodReport) -> bool,
    ) -> PodReport {
        let change = self
            .wait_for(what, |c| match c {
                Change::Updated(r) => r
                    .status
                    .container_statuses
                    .first()
                    .is_some_and(|cs| pred(cs, r)),
                Change::Gone(_) => false,
            })
            .await;
        match change {
            Change::Updated(r) => r,
            Change::Gone(_) => unreachable!(),
        }
    }
}

fn pod(name: &str, image: &str, policy: &str) -> DesiredPod {
    DesiredPod {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        spec: PodSpec {
            containers: vec![SpecContainer {
                name: "main".into(),
                image: image.into(),
                ..Default::default()
            }],
            restart_policy: Some(policy.into()),
            ..Default::default()
        },
        deleting: false,
        grace_period_seconds: None,
        config_maps: Default::default(),
        secrets: Default::default(),
    }
}

fn phase(c: &Change) -> Option<&str> {
    match c {
        Change::Updated(r) => r.status.phase.as_deref(),
        Change::Gone(_) => None,
    }
}

const EXIT_3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

const PRINT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "first\nsecond\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const SPIN: &str = r#"(module (func (export "_start") (loop (br 0))))"#;

#[tokio::test]
async fn a_pod_exiting_3_with_restart_policy_never_fails_with_exit_code_3() {
    let mut f = fixture();
    let digest = f.module(EXIT_3);
    f.supervisor
        .reconcile(vec![pod("exit", &digest, "Never")])
        .await;
    let Change::Updated(report) = f
        .wait_for("phase Failed", |c| phase(c) == Some("Failed"))
        .await
    else {
        unreachable!()
    };
    let cs = &report.status.container_statuses[0];
    let t = cs.state.terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
    assert_eq!(cs.image_id, digest);
    assert_eq!(cs.restart_count, 0);
}

#[tokio::test]
async fn a_crashing_pod_restarts_with_back_off_and_keeps_its_last_state() {
    let mut f = fixture();
    let digest = f.module(r#"(module (func (export "_start") unreachable))"#);
    f.supervisor
        .reconcile(vec![pod("crash", &digest, "Always")])
        .await;
    let change = f
        .wait_for("two restarts in CrashLoopBackOff", |c| match c {
            Change::Updated(r) => r.status.container_statuses.first().is_some_and(|cs| {
                cs.restart_count >= 2
                    && cs
                        .state
                        .waiting
                        .as_ref()
                        .is_some_and(|w| w.reason == "CrashLoopBackOff")
            }),
            Change::Gone(_) => false,
        })
        .await;
    let Change::Updated(report) = change else {
        unreachable!()
    };
    assert_eq!(report.status.phase.as_deref(), Some("Running"));
    let last = report.status.container_statuses[0]
        .last_state
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.reason, "Error");
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("unreachable"),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_memory_hungry_pod_is_oom_killed() {
    let mut f = fixture();
    let digest = f.module(
        r#"(module (memory 1) (func (export "_start") (loop (drop (memory.grow (i32.const 1))) (br 0))))"#,
    );
    let mut p = pod("hungry", &digest, "Never");
    p.spec.containers[0].resources = ResourceRequirements {
        limits: [(
            "memory".to_string(),
            spoke_api::quantity::Quantity::from("1Mi"),
        )]
        .into(),
        ..Default::default()
    };
    f.supervisor.reconcile(vec![p]).await;
    let Change::Updated(report) = f
        .wait_for("phase Failed", |c| phase(c) == Some("Failed"))
        .await
    else {
        unreachable!()
    };
    let t = report.status.container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (137, "OOMKilled"));
}

#[tokio::test]
async fn a_deleted_pod_that_ignores_the_stop_signal_is_stopped_after_its_grace_period() {
    let mut f = fixture();
    let digest = f.module(SPIN);
    let mut p = pod("spin", &digest, "Always");
    p.spec.termination_grace_period_seconds = Some(1);
    f.supervisor.reconcile(vec![p.clone()]).await;
    f.wait_for("phase Running", |c| phase(c) == Some("Running"))
        .await;
    p.deleting = true;
    // Reconciling does not wait for the grace period.
    tokio::time::timeout(Duration::from_secs(5), f.supervisor.reconcile(vec![p]))
        .await
        .expect("reconcile waited for the pod to stop");
    let report = f
        .wait_container("the spinner killed", |cs, _| cs.state.terminated.is_some())
        .await;
    let t = report.status.container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (137, "Error"));
    let message = t.message.unwrap_or_default();
    assert!(
        message.contains("1s after it was asked to stop"),
        "{message}"
    );
    let gone = f
        .wait_for("a gone report", |c| matches!(c, Change::Gone(_)))
        .await;
    let Change::Gone(report) = gone else {
        unreachable!()
    };
    assert!(report.gone);
    assert_eq!(report.uid, "uid-spin");
    assert!(f.supervisor.is_empty().await);
}

#[tokio::test]
async fn a_deletion_grace_period_wins_over_the_spec_one() {
    let mut f = fixture();
    let digest = f.module(SPIN);
    let mut p = pod("spin", &digest, "Always");
    p.spec.termination_grace_period_seconds = Some(600);
    f.supervisor.reconcile(vec![p.clone()]).await;
    f.wait_for("phase Running", |c| phase(c) == Some("Running"))
        .await;
    // `delete --grace-period=1`: the hub sends the deletion's grace.
    p.deleting = true;
    p.grace_period_seconds = Some(1);
    f.supervisor.reconcile(vec![p]).await;
    let report = f
        .wait_container("the spinner killed", |cs, _| cs.state.terminated.is_some())
        .await;
    let t = report.status.container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    let message = t.message.unwrap_or_default();
    assert!(
        message.contains("1s after it was asked to stop"),
        "{message}"
    );
    f.wait_for("a gone report", |c| matches!(c, Change::Gone(_)))
        .await;
}

/// Reads stdin until end of file, prints `stopping`, returns (exit code 0);
/// exports `healthz` returning 1 (always unhealthy) and `ready` returning
/// the errno of opening `ready` in its first preopen (0 when it exists).
const UNTIL_EOF: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "stopping\n")
  (data (i32.const 96) "ready")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 128))
    (i32.store (i32.const 4) (i32.const 64))
    (block $eof
      (loop $more
        (br_if $eof (i32.ne (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
                            (i32.const 0)))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (br $more)))
    (i32.store (i32.const 16) (i32.const 64))
    (i32.store (i32.const 20) (i32.const 9))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "healthz") (result i32) (i32.const 1))
  (func (export "ready") (result i32)
    (call $open (i32.const 3) (i32.const 0) (i32.const 96) (i32.const 5) (i32.const 0)
      (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32))))"#;

#[tokio::test]
async fn a_deleted_pod_sees_its_stdin_close_and_exits_cleanly_within_the_grace_period() {
    let mut f = fixture();
    let digest = f.module(UNTIL_EOF);
    // A grace period longer than the test's deadline: only a clean exit passes.
    let mut p = pod("polite", &digest, "Always");
    p.spec.termination_grace_period_seconds = Some(600);
    f.supervisor.reconcile(vec![p.clone()]).await;
    f.wait_for("phase Running", |c| phase(c) == Some("Running"))
        .await;
    p.deleting = true;
    f.supervisor.reconcile(vec![p]).await;
    let report = f
        .wait_container("a clean exit", |cs, _| cs.state.terminated.is_some())
        .await;
    let cs = &report.status.container_statuses[0];
    let t = cs.state.terminated.clone().unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (0, "Completed"), "{t:?}");
    assert_eq!(cs.restart_count, 0, "a deleted pod is not restarted");
    f.wait_for("a gone report", |c| matches!(c, Change::Gone(_)))
        .await;
    f.wait_empty().await;
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container_gracefully() {
    let mut f = fixture();
    let digest = f.module(UNTIL_EOF);
    let mut p = pod("sick", &digest, "OnFailure");
    p.spec.containers[0].liveness_probe = Some(Probe {
        exec: Some(spoke_api::core::ExecAction {
            command: vec!["healthz".into()],
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    f.supervisor.reconcile(vec![p]).await;
    let report = f
        .wait_container("a restart", |cs, _| cs.restart_count >= 1)
        .await;
    let cs = &report.status.container_statuses[0];
    let last = cs.last_state.terminated.clone().unwrap();
    // It saw its stdin close and exited 0, and is restarted even under
    // OnFailure, as Kubernetes does after a liveness failure.
    assert_eq!((last.exit_code, last.reason.as_str()), (0, "Completed"));
    assert_eq!(
        last.message.as_deref(),
        Some("Liveness probe failed: healthz returned 1")
    );
    let log = f
        .supervisor
        .logs("default", "sick", &LogRequest::default())
        .await
        .unwrap();
    assert!(log.contains("stopping"), "{log}");
}

#[tokio::test]
async fn an_exec_readiness_probe_gates_ready_and_the_ready_condition() {
    let mut f = fixture();
    let digest = f.module(UNTIL_EOF);
    let mut p = pod("gated", &digest, "Always");
    p.spec.volumes = vec![spoke_api::core::Volume {
        name: "state".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }];
    p.spec.containers[0].volume_mounts = vec![spoke_api::core::VolumeMount {
        name: "state".into(),
        mount_path: "/state".into(),
        read_only: false,
    }];
    p.spec.containers[0].readiness_probe = Some(Probe {
        exec: Some(spoke_api::core::ExecAction {
            command: vec!["ready".into()],
        }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    p.spec.termination_grace_period_seconds = Some(0);
    f.supervisor.reconcile(vec![p]).await;
    let ready_condition = |r: &PodReport| {
        r.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    let report = f
        .wait_container("running, not ready", |cs, _| cs.state.running.is_some())
        .await;
    assert!(!report.status.container_statuses[0].ready);
    assert_eq!(ready_condition(&report).as_deref(), Some("False"));

    let dir = f
        .supervisor
        .shared
        .settings
        .volumes
        .empty_dir("uid-gated", "state")
        .unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    let report = f.wait_container("ready", |cs, _| cs.ready).await;
    assert_eq!(ready_condition(&report).as_deref(), Some("True"));
    std::fs::remove_file(dir.join("ready")).unwrap();
    let report = f.wait_container("not ready again", |cs, _| !cs.ready).await;
    assert_eq!(ready_condition(&report).as_deref(), Some("False"));
    assert_eq!(report.status.container_statuses[0].restart_count, 0);
}

#[tokio::test]
async fn tcp_and_http_probes_dial_the_port_on_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut f = fixture();
    let digest = f.module(UNTIL_EOF);
    // A stand-in for a listening guest: answers 200 to /ok and 503 otherwise.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let reply = if head.starts_with("GET /ok ") && head.contains("X-Probe: yes") {
                    "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                } else {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                };
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    let mut p = pod("net", &digest, "Always");
    p.spec.termination_grace_period_seconds = Some(0);
    let c = &mut p.spec.containers[0];
    c.ports = vec![spoke_api::core::ContainerPort {
        container_port: i32::from(port),
        name: Some("http".into()),
        protocol: None,
    }];
    let timing = |probe: Probe| Probe {
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..probe
    };
    c.startup_probe = Some(timing(Probe {
        tcp_socket: Some(spoke_api::core::TcpSocketAction {
            port: spoke_api::apps::IntOrString::String("http".into()),
        }),
        failure_threshold: Some(30),
        ..Default::default()
    }));
    c.readiness_probe = Some(timing(Probe {
        http_get: Some(spoke_api::core::HttpGetAction {
            path: Some("/ok".into()),
            port: spoke_api::apps::IntOrString::Int(i32::from(port)),
            scheme: None,
            http_headers: vec![HttpHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }],
        }),
        ..Default::default()
    }));
    let mut bad = p.clone();
    f.supervisor.reconcile(vec![p]).await;
    f.wait_container("started and ready", |cs, _| {
        cs.started == Some(true) && cs.ready
    })
    .await;

    // The same pod probing a path that answers 503 never becomes ready.
    bad.generation = 2;
    if let Some(h) = bad.spec.containers[0]
        .readiness_probe
        .as_mut()
        .and_then(|p| p.http_get.as_mut())
    {
        h.path = Some("/missing".into());
    }
    f.supervisor.reconcile(vec![bad]).await;
    f.wait_container("the new generation started", |cs, _| {
        cs.started == Some(true) && !cs.ready
    })
    .await;
    server.abort();
}

#[tokio::test]
async fn a_new_generation_restarts_the_pod_and_a_dropped_pod_is_forgotten() {
    let mut f = fixture();
    let spin = f.module(SPIN);
    let mut p = pod("gen", &spin, "Always");
    p.spec.termination_grace_period_seconds = Some(0);
    f.supervisor.reconcile(vec![p.clone()]).await;
    f.wait_for("phase Running", |c| phase(c) == Some("Running"))
        .await;
    let exit = f.module(EXIT_3);
    p.generation = 2;
    p.spec.containers[0].image = exit.clone();
    p.spec.restart_policy = Some("Never".into());
    f.supervisor.reconcile(vec![p]).await;
    f.wait_for("the new generation to fail", |c| phase(c) == Some("Failed"))
        .await;
    f.supervisor.reconcile(vec![]).await;
    f.wait_empty().await;
    assert!(f.supervisor.reports().await.is_empty());
}

#[tokio::test]
async fn a_tagged_image_starts_from_the_cache_without_the_hub() {
    let mut f = fixture();
    let digest = f.module(PRINT);
    f.state.set_image_digest("hello:v1", &digest).unwrap();
    f.supervisor
        .reconcile(vec![pod("cached", "hello:v1", "Never")])
        .await;
    f.wait_for("phase Succeeded", |c| phase(c) == Some("Succeeded"))
        .await;
    let text = f
        .supervisor
        .logs(
            "default",
            "cached",
            &LogRequest {
                tail: Some(1),
                ..LogRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(text, "second\n");
    let all = f
        .supervisor
        .logs("default", "cached", &LogRequest::default())
        .await
        .unwrap();
    assert_eq!(all, "first\nsecond\n");
    assert!(
        f.supervisor
            .logs("default", "nope", &LogRequest::default())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_unknown_image_without_the_hub_waits_in_err_image_pull() {
    let mut f = fixture();
    f.supervisor
        .reconcile(vec![pod("missing", "hello:v9", "Always")])
        .await;
    let Change::Updated(report) = f
        .wait_for("ErrImagePull", |c| match c {
            Change::Updated(r) => r.status.container_statuses.first().is_some_and(|cs| {
                cs.state
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.reason == "ErrImagePull")
            }),
            Change::Gone(_) => false,
        })
        .await
    else {
        unreachable!()
    };
    assert_eq!(report.status.phase.as_deref(), Some("Pending"));
    let w = report.status.container_statuses[0]
        .state
        .waiting
        .clone()
        .unwrap();
    assert!(
        w.message.unwrap_or_default().contains("not connected"),
        "the message says why"
    );
    // Then it keeps retrying with back-off.
    f.wait_for("ImagePullBackOff", |c| match c {
        Change::Updated(r) => r.status.container_statuses.first().is_some_and(|cs| {
            cs.state
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "ImagePullBackOff")
        }),
        Change::Gone(_) => false,
    })
    .await;
}

#[tokio::test]
async fn invalid_wasm_waits_as_invalid_image() {
    let mut f = fixture();
    let junk = b"definitely not wasm";
    let digest = digest_of(junk);
    f.store.put(&digest, junk).unwrap();
    f.supervisor
        .reconcile(vec![pod("junk", &digest, "Always")])
        .await;
    f.wait_for("InvalidImage", |c| match c {
        Change::Updated(r) => r.status.container_statuses.first().is_some_and(|cs| {
            cs.state
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "InvalidImage" && w.message.is_some())
        }),
        Change::Gone(_) => false,
    })
    .await;
}
