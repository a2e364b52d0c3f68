//! The foundation's vertical slice, end to end with real processes: hub
//! (embedded broker, redb), agent (wasmtime) and CLI on loopback.

use std::time::Duration;

use serde_json::Value;
use spoke_e2e::{Hub, container, eventually, example_wasm, pod_manifest};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test]
async fn hello_pod_runs_shows_logs_and_stops_when_deleted() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;

    hub.push(&example_wasm("hello"), "hello:v1");
    let manifest = spoke_e2e::repo_root().join("examples/hello/pod.yaml");
    let out = hub.spoke(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(out.status.success(), "apply: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "pod/hello created");

    let pod = hub
        .wait_pod("hello", "Running", |p| {
            p["status"]["phase"] == "Running" && container(p)["state"]["running"].is_object()
        })
        .await;
    assert_eq!(pod["spec"]["nodeName"], "edge-1");
    assert!(
        container(&pod)["imageID"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The log comes from the board, over MQTT, through the hub, and carries
    // the env var from the manifest.
    let logs = eventually(
        Duration::from_secs(30),
        "two lines of hello's log",
        || async {
            let out = hub.spoke(&["logs", "hello"]);
            let text = stdout(&out);
            text.contains("Hello, edge from a Wasm pod on spoke: count=2")
                .then_some(text)
        },
    )
    .await;
    assert!(logs.contains("count=1"), "{logs}");

    let out = hub.spoke(&["get", "pods", "-o", "wide"]);
    let table = stdout(&out);
    let row = table
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("Running") && row.contains("edge-1"), "{table}");
    let out = hub.spoke(&["get", "nodes"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("edge-1") && l.contains("Ready")),
        "{}",
        stdout(&out)
    );

    // Delete waits until the agent has stopped the instance and the hub
    // has removed the pod.
    let out = hub.spoke(&["delete", "pod", "hello"]);
    assert!(out.status.success(), "delete: {}", stderr(&out));
    let gone = hub
        .client()
        .get::<Value>("/api/v1/namespaces/default/pods/hello")
        .await;
    assert_eq!(gone.unwrap_err().code(), Some(404));
    let agent_log = agent.proc.output();
    assert!(
        agent_log.contains("pod default/hello stopped"),
        "agent log:\n{agent_log}"
    );
    // And its log stops growing.
    let before = hub.spoke(&["logs", "hello"]);
    assert!(!before.status.success(), "logs of a deleted pod must fail");
}

#[tokio::test]
async fn the_slice_works_through_mosquitto_as_an_external_broker() {
    let broker = spoke_e2e::Mosquitto::start().await;
    let hub = Hub::start_with(Some(&broker.url)).await;
    let _agent = hub.agent("edge-m", &[]);
    hub.wait_node_ready("edge-m").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let out = hub.apply(&pod_manifest(
        "hello",
        "hello:v1",
        "Always",
        &[("GREETING", "via mosquitto")],
    ));
    assert!(out.status.success(), "apply: {}", stderr(&out));
    hub.wait_pod("hello", "Running", |p| p["status"]["phase"] == "Running")
        .await;
    eventually(
        Duration::from_secs(30),
        "hello's log through mosquitto",
        || async {
            stdout(&hub.spoke(&["logs", "hello"]))
                .contains("via mosquitto from a Wasm pod")
                .then_some(())
        },
    )
    .await;
    let out = hub.spoke(&["delete", "pod", "hello"]);
    assert!(out.status.success(), "delete: {}", stderr(&out));
}

#[tokio::test]
async fn programs_that_end_report_succeeded_or_failed_with_their_exit_code() {
    let hub = Hub::start().await;
    let _agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");

    let ok = pod_manifest("done", "hello:v1", "Never", &[("HELLO_LINES", "2")]);
    let bad = pod_manifest(
        "fails",
        "hello:v1",
        "Never",
        &[("HELLO_LINES", "1"), ("HELLO_EXIT_CODE", "3")],
    );
    for m in [ok, bad] {
        let out = hub.apply(&m);
        assert!(out.status.success(), "apply: {}", stderr(&out));
    }
    let done = hub
        .wait_pod("done", "Succeeded", |p| p["status"]["phase"] == "Succeeded")
        .await;
    let t = &container(&done)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(0), Some("Completed"))
    );

    let failed = hub
        .wait_pod("fails", "Failed", |p| p["status"]["phase"] == "Failed")
        .await;
    let t = &container(&failed)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );

    // Its output is still readable after it ended.
    let out = hub.spoke(&["logs", "done"]);
    assert!(stdout(&out).contains("count=2"), "{}", stdout(&out));
}

#[tokio::test]
async fn missing_or_invalid_modules_end_in_a_clear_state_and_nothing_else_breaks() {
    let hub = Hub::start().await;
    let _agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;

    // A module nobody pushed.
    assert!(
        hub.apply(&pod_manifest("ghost", "ghost:v1", "Always", &[]))
            .status
            .success()
    );
    let ghost = hub
        .wait_pod("ghost", "an image pull error", |p| {
            matches!(
                container(p)["state"]["waiting"]["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        })
        .await;
    let msg = container(&ghost)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("ghost:v1") && msg.contains("not found"),
        "{msg}"
    );

    // Bytes that start like Wasm but are not a valid module.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\x01\xff\xff\xff").unwrap();
    hub.push(&broken, "broken:v1");
    assert!(
        hub.apply(&pod_manifest("broken", "broken:v1", "Always", &[]))
            .status
            .success()
    );
    let pod = hub
        .wait_pod("broken", "InvalidImage", |p| {
            container(p)["state"]["waiting"]["reason"] == "InvalidImage"
        })
        .await;
    assert!(
        !container(&pod)["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );

    // Something that is not Wasm at all is refused at push time.
    let script = dir.path().join("script.wasm");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    let out = hub.spoke(&["push", script.to_str().unwrap(), "script:v1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a WebAssembly module"),
        "{}",
        stderr(&out)
    );

    // The hub and the agent keep working: a good pod still runs.
    hub.push(&example_wasm("hello"), "hello:v1");
    assert!(
        hub.apply(&pod_manifest("fine", "hello:v1", "Always", &[]))
            .status
            .success()
    );
    hub.wait_pod("fine", "Running", |p| p["status"]["phase"] == "Running")
        .await;
}

#[tokio::test]
async fn malformed_manifests_are_refused_with_where_and_what_and_nothing_is_stored() {
    let hub = Hub::start().await;
    let cases: [(&str, &[&str]); 5] = [
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a\nspec: {}\n",
            &["document 1", "YAML syntax error", "line"],
        ),
        (
            "apiVersion: v1\nmetadata: {name: a}\nspec: {}\n",
            &["missing required field \"kind\""],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: 5}]}\n",
            &["pod/a", "spec.containers[0].image", "expected a string"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: \"x:1\", imagePulPolicy: Always}]}\n",
            &["imagePulPolicy", "unknown field"],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Not_Valid}\nspec: {containers: [{name: c}]}\n",
            &["metadata.name", "spec.containers[0].image: Required value"],
        ),
    ];
    for (manifest, wants) in cases {
        let out = hub.apply(manifest);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        let err = stderr(&out);
        for want in wants {
            assert!(
                err.contains(want),
                "error for\n{manifest}\nlacks {want:?}:\n{err}"
            );
        }
    }
    let pods: Value = hub
        .client()
        .get("/api/v1/namespaces/default/pods")
        .await
        .unwrap();
    assert_eq!(pods["items"].as_array().unwrap().len(), 0, "{pods}");
}

#[tokio::test]
async fn the_cli_says_when_the_hub_is_unreachable() {
    let port = spoke_e2e::free_port();
    let out = spoke_e2e::spoke_cmd(&format!("http://127.0.0.1:{port}"), &["get", "pods"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the hub at http://127.0.0.1")
            && err.contains("is spoke-hub running?"),
        "{err}"
    );
}

#[tokio::test]
async fn an_agent_restarted_without_the_hub_brings_its_pods_back_from_local_state() {
    let mut hub = Hub::start().await;
    let mut agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    assert!(
        hub.apply(&pod_manifest("hello", "hello:v1", "Always", &[]))
            .status
            .success()
    );
    hub.wait_pod("hello", "Running", |p| p["status"]["phase"] == "Running")
        .await;

    // The hub goes away, then the board loses power (kill -9 both).
    hub.proc.kill();
    agent.proc.kill();
    let log_file = agent.data_dir.join("logs/default_hello.log");
    let before = std::fs::read_to_string(&log_file).unwrap_or_default().len();

    // The agent comes back with no hub to talk to, and runs hello again
    // from its own store: a fresh instance counts from 1 in the pod's log.
    let agent2 = hub.agent("edge-1", &[]);
    eventually(
        Duration::from_secs(30),
        "hello to run again without the hub",
        || {
            let log_file = log_file.clone();
            async move {
                let text = std::fs::read_to_string(&log_file).ok()?;
                text.get(before..)?.contains("count=2").then_some(())
            }
        },
    )
    .await;

    // When the hub returns, the agent reconnects and the hub hears from the
    // board again: its logs are readable and the pod is Running.
    hub.restart().await;
    eventually(
        Duration::from_secs(60),
        "the agent to reconnect and serve logs",
        || async {
            stdout(&hub.spoke(&["logs", "hello"]))
                .contains("count=")
                .then_some(())
        },
    )
    .await;
    let pod = hub
        .wait_pod("hello", "Running after the hub returned", |p| {
            p["status"]["phase"] == "Running"
        })
        .await;
    assert_eq!(pod["spec"]["nodeName"], "edge-1");
    assert!(
        agent2
            .proc
            .output()
            .contains("1 pod(s) restored from local state"),
        "{}",
        agent2.proc.output()
    );
}

#[tokio::test]
async fn watches_stream_changes_in_order_and_resume_from_a_revision() {
    let hub = Hub::start().await;
    let client = hub.client();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                           "spec": {"containers": [{"name": "c", "image": "x:1"}]}})
    };
    let a = client.create(pods, &pod("a")).await.unwrap();
    let rv_a: u64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // From a's revision: only what came after, in revision order. (The
    // scheduler also writes: "a" gets a status saying no node fits.)
    let mut w = client.watch(pods, Some(&rv_a.to_string())).await.unwrap();
    client.create(pods, &pod("b")).await.unwrap();
    let e = until(&mut w, rv_a, |e| e["type"] == "ADDED").await;
    assert_eq!(e["object"]["metadata"]["name"], "b");

    // Without a revision: the current objects first, then changes.
    let mut all = client.watch(pods, None).await.unwrap();
    let mut names = vec![];
    for _ in 0..2 {
        let e = next_event(&mut all).await;
        assert_eq!(e["type"], "ADDED");
        names.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    names.sort();
    assert_eq!(names, ["a", "b"]);
    client.delete(&format!("{pods}/a"), None).await.unwrap();
    let e = until(&mut all, 0, |e| e["type"] == "DELETED").await;
    assert_eq!(e["object"]["metadata"]["name"], "a");
    let e = until(&mut w, rv_a, |e| e["type"] == "DELETED").await;
    assert_eq!(e["object"]["metadata"]["name"], "a");

    // A label selector filters the stream.
    let mut only_c = client
        .watch(&format!("{pods}?labelSelector=app%3Dc"), None)
        .await
        .unwrap();
    client.create(pods, &pod("d")).await.unwrap();
    client.create(pods, &pod("c")).await.unwrap();
    let e = next_event(&mut only_c).await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("c"))
    );
}

/// Reads events until `want` matches; every event on the way must be newer
/// than the one before it (and than `after`).
async fn until(w: &mut spoke_client::Watch, after: u64, want: impl Fn(&Value) -> bool) -> Value {
    let mut last = after;
    loop {
        let e = next_event(w).await;
        let rv: u64 = e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rv > last,
            "event at {rv} after {last}: out of order or repeated"
        );
        last = rv;
        if want(&e) {
            return e;
        }
    }
}

/// The next event of a watch, failing the test after 20 s without one.
async fn next_event(w: &mut spoke_client::Watch) -> Value {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("a watch event in time")
        .expect("the watch is open")
        .expect("a well-formed event")
}
