//! Supervisor tests: real wasmtime, WAT fixtures, no hub.

use std::time::Instant;

use spoke_api::core::{Container as SpecContainer, PodSpec, ResourceRequirements};
use spoke_api::protocol::DesiredPod;

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
async fn deleting_a_spinning_pod_stops_it_and_reports_it_gone() {
    let mut f = fixture();
    let digest = f.module(SPIN);
    let mut p = pod("spin", &digest, "Always");
    f.supervisor.reconcile(vec![p.clone()]).await;
    f.wait_for("phase Running", |c| phase(c) == Some("Running"))
        .await;
    p.deleting = true;
    tokio::time::timeout(Duration::from_secs(5), f.supervisor.reconcile(vec![p]))
        .await
        .expect("stopping a spinning guest took too long");
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
async fn a_new_generation_restarts_the_pod_and_a_dropped_pod_is_forgotten() {
    let mut f = fixture();
    let spin = f.module(SPIN);
    let mut p = pod("gen", &spin, "Always");
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
    assert!(f.supervisor.is_empty().await);
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
        .logs("default", "cached", Some(1))
        .await
        .unwrap();
    assert_eq!(text, "second\n");
    let all = f.supervisor.logs("default", "cached", None).await.unwrap();
    assert_eq!(all, "first\nsecond\n");
    assert!(f.supervisor.logs("default", "nope", None).await.is_err());
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
