//! The examples in `examples/`, built from source by `examples/build.sh`,
//! deployed with their own manifests through the CLI as a user would, and
//! checked through what they log (`spoke logs`) and write.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use spoke_e2e::{Hub, eventually, example_wasm, repo_root};

/// A manifest from `examples/`, with host paths moved into the test's own
/// directories (the board paths do not exist, or are not ours, here).
fn manifest(path: &str, replace: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("examples").join(path))
        .unwrap_or_else(|e| panic!("examples/{path}: {e}"));
    for (from, to) in replace {
        assert!(
            text.contains(from),
            "examples/{path} no longer contains {from:?}"
        );
        text = text.replace(from, to);
    }
    text
}

fn apply(hub: &Hub, text: &str) {
    let out = hub.apply(text);
    assert!(
        out.status.success(),
        "spoke apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `spoke logs POD` as text (empty while the pod has no log yet).
fn logs(hub: &Hub, pod: &str) -> String {
    String::from_utf8_lossy(&hub.spoke(&["logs", pod]).stdout).into_owned()
}

/// The JSON lines of a pod's log whose `msg` is `msg`.
fn lines(text: &str, msg: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == msg)
        .collect()
}

async fn pods_labelled(hub: &Hub, selector: &str) -> Vec<Value> {
    let list: Value = hub
        .client()
        .get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector={selector}"
        ))
        .await
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn thermometer_daemonset_logs_the_boards_temperature_from_a_read_only_host_path() {
    let thermal = tempfile::tempdir().unwrap();
    let zone = thermal.path().join("thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("temp"), "41234\n").unwrap();
    let thermal_dir = thermal.path().to_str().unwrap();

    let hub = Hub::start().await;
    let _a = hub.agent("edge-1", &["--allow-host-path", thermal_dir]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("thermometer"), "thermometer:v1");
    apply(
        &hub,
        &manifest(
            "thermometer/daemonset.yaml",
            &[
                ("path: /sys/class/thermal", &format!("path: {thermal_dir}")),
                ("value: \"5\"", "value: \"1\""),
            ],
        ),
    );
    let pod = eventually(Duration::from_secs(60), "a thermometer pod", || async {
        pods_labelled(&hub, "app=thermometer")
            .await
            .first()
            .map(name)
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "a reading of 41.234 °C",
        || async {
            let l = lines(&logs(&hub, &pod), "temperature");
            l.iter().any(|v| v["celsius"] == 41.234).then_some(())
        },
    )
    .await;
    // The board warms up: the next readings follow the file.
    std::fs::write(zone.join("temp"), "50500\n").unwrap();
    eventually(Duration::from_secs(60), "a reading of 50.5 °C", || async {
        let l = lines(&logs(&hub, &pod), "temperature");
        l.iter().any(|v| v["celsius"] == 50.5).then_some(())
    })
    .await;
}

/// Writes the work for the batch example: three files with known counts.
fn batch_input(dir: &Path) -> Vec<(String, u64, u64)> {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let files = [
        ("a.txt", "one two three\nfour\n"),
        ("b.txt", "alpha beta\n"),
        ("c.txt", "x\ny\nz\nw w w\n"),
    ];
    let mut expected = Vec::new();
    for (name, text) in files {
        std::fs::write(dir.join("in").join(name), text).unwrap();
        expected.push((
            name.to_string(),
            text.lines().count() as u64,
            text.split_whitespace().count() as u64,
        ));
    }
    expected
}

#[tokio::test]
async fn batch_job_processes_every_file_once_and_the_report_cronjob_sums_them_up() {
    let work = tempfile::tempdir().unwrap();
    let expected = batch_input(work.path());
    let work_dir = work.path().to_str().unwrap();
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("now");
    std::fs::write(&clock, "2000-01-01T00:00:00Z").unwrap();

    let hub = Hub::start_with_env(
        None,
        &[("SPOKE_HUB_FAKE_CLOCK_FILE", clock.to_str().unwrap())],
    )
    .await;
    // Two boards share the volume (one host directory), so two workers race
    // for the same files: each must be processed exactly once.
    let _a1 = hub.agent("edge-1", &["--allow-host-path", work_dir]);
    let _a2 = hub.agent("edge-2", &["--allow-host-path", work_dir]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("batch"), "batch:v1");
    hub.push(&example_wasm("report"), "report:v1");
    let c = hub.client();

    apply(
        &hub,
        &manifest(
            "batch/job.yaml",
            &[("path: /var/lib/spoke-batch", &format!("path: {work_dir}"))],
        ),
    );
    let job: Value = eventually(Duration::from_secs(120), "the Job to complete", || async {
        let j: Value = c
            .get("/apis/batch/v1/namespaces/default/jobs/batch")
            .await
            .ok()?;
        (j["status"]["succeeded"] == 3).then_some(j)
    })
    .await;
    let complete = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Complete" && c["status"] == "True");
    assert!(complete, "{job}");
    assert_eq!(
        std::fs::read_dir(work.path().join("in")).unwrap().count(),
        0
    );
    let mut words = 0;
    let mut lines_total = 0;
    for (file, l, w) in &expected {
        let out: Value = serde_json::from_str(
            &std::fs::read_to_string(work.path().join("out").join(format!("{file}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(out, json!({"file": file, "lines": l, "words": w}));
        words += w;
        lines_total += l;
    }
    // Each worker logged what it processed: three files in all, none twice.
    let mut processed: Vec<String> = Vec::new();
    for p in pods_labelled(&hub, "job-name=batch").await {
        for l in lines(&logs(&hub, &name(&p)), "processed") {
            processed.push(l["file"].as_str().unwrap().to_string());
        }
    }
    processed.sort();
    assert_eq!(processed, ["a.txt", "b.txt", "c.txt"]);

    // The report runs on its schedule (every 10 minutes) under the test clock.
    apply(
        &hub,
        &manifest(
            "report/cronjob.yaml",
            &[("path: /var/lib/spoke-batch", &format!("path: {work_dir}"))],
        ),
    );
    let cj: Value = c
        .get("/apis/batch/v1/namespaces/default/cronjobs/report")
        .await
        .unwrap();
    let created =
        humantime::parse_rfc3339(cj["metadata"]["creationTimestamp"].as_str().unwrap()).unwrap();
    let secs = created
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let slot = (secs / 600 + 1) * 600;
    let slot_time = std::time::UNIX_EPOCH + Duration::from_secs(slot);
    std::fs::write(
        &clock,
        humantime::format_rfc3339_seconds(slot_time + Duration::from_secs(5)).to_string(),
    )
    .unwrap();
    let report = eventually(Duration::from_secs(120), "the report's line", || async {
        for p in pods_labelled(&hub, "job-name").await {
            if !name(&p).starts_with("report-") {
                continue;
            }
            if let Some(l) = lines(&logs(&hub, &name(&p)), "report").pop() {
                return Some(l);
            }
        }
        None
    })
    .await;
    assert_eq!(report["files"], 3, "{report}");
    assert_eq!(report["lines"], lines_total, "{report}");
    assert_eq!(report["words"], words, "{report}");
}

#[tokio::test]
async fn config_demo_sees_configmap_updates_without_a_restart_and_stops_on_request() {
    let hub = Hub::start().await;
    let agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("config-demo"), "config-demo:v1");
    // A grace period far longer than the test: only a pod that heeds the
    // stop signal (the guest SDK's shutdown::sleep) is gone in time.
    let long_grace = [(
        "spec:\n  containers:",
        "spec:\n  terminationGracePeriodSeconds: 3600\n  containers:",
    )];
    apply(&hub, &manifest("config-demo/manifests.yaml", &long_grace));

    let first = eventually(Duration::from_secs(60), "the greeting", || async {
        lines(&logs(&hub, "config-demo"), "config").pop()
    })
    .await;
    assert_eq!(first["greeting"], "Hello from a ConfigMap");
    assert_eq!(first["color"], "green");
    let text = logs(&hub, "config-demo");
    let started = lines(&text, "started").pop().expect("a started line");
    assert_eq!(started["env_greeting"], "Hello from a ConfigMap");
    assert_eq!(started["token_bytes"], "s3cr3t-t0ken".len());
    let secret = lines(&text, "secret mounted")
        .pop()
        .expect("the secret line");
    assert_eq!(secret["api_token_bytes"], "s3cr3t-t0ken".len());

    // A new greeting, applied as a user would, reaches the running pod.
    apply(
        &hub,
        &manifest(
            "config-demo/manifests.yaml",
            &[
                ("greeting: Hello from a ConfigMap", "greeting: Hello again"),
                long_grace[0],
            ],
        ),
    );
    eventually(Duration::from_secs(60), "the new greeting", || async {
        let l = lines(&logs(&hub, "config-demo"), "config");
        l.iter()
            .any(|v| v["greeting"] == "Hello again")
            .then_some(())
    })
    .await;
    let pod: Value = hub
        .client()
        .get("/api/v1/namespaces/default/pods/config-demo")
        .await
        .unwrap();
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "the update must not restart the pod: {pod}"
    );
    // The secret's value is in neither the pod's log nor the agent's.
    assert!(!logs(&hub, "config-demo").contains("s3cr3t-t0ken"));
    assert!(!agent.proc.output().contains("s3cr3t-t0ken"));

    // Deleted, it hears the stop signal and exits well inside its grace.
    let out = hub.spoke(&["delete", "pod", "config-demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(60), "the pod to be gone", || async {
        hub.client()
            .get::<Value>("/api/v1/namespaces/default/pods/config-demo")
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

/// `GET /` at `addr` over plain HTTP/1.1: the body of a 200, else `None`.
async fn http_body(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    conn.write_all(format!("GET / HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), conn.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 ").then(|| body.to_string())
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Two boards, each with its own address (127.0.0.2 and 127.0.0.3 stand
/// for two boards' LAN addresses: both agents run on this machine, and
/// each replica listens on the same port of its own board).
#[tokio::test]
async fn web_deployment_serves_from_two_boards_and_rolls_to_v2() {
    let port = spoke_e2e::free_port().to_string();
    let hub = Hub::start().await;
    let boards = [("edge-1", "127.0.0.2"), ("edge-2", "127.0.0.3")];
    let _agents: Vec<_> = boards
        .iter()
        .map(|(node, ip)| {
            hub.agent(
                node,
                &["--pod-address", ip, "--restart-backoff-initial", "1s"],
            )
        })
        .collect();
    for (node, _) in boards {
        hub.wait_node_ready(node).await;
    }
    // One build, pushed as two versions; the manifest's WEB_VERSION is what
    // the server answers with.
    hub.push(&example_wasm("web"), "web:v1");
    hub.push(&example_wasm("web"), "web:v2");
    let on_port = [
        ("containerPort: 8080", format!("containerPort: {port}")),
        ("value: \"8080\"", format!("value: \"{port}\"")),
    ];
    let v1: Vec<(&str, &str)> = on_port.iter().map(|(a, b)| (*a, b.as_str())).collect();
    apply(&hub, &manifest("web/deployment.yaml", &v1));
    let addrs: Vec<std::net::SocketAddr> = boards
        .iter()
        .map(|(_, ip)| format!("{ip}:{port}").parse().unwrap())
        .collect();

    for want in ["web v1\n", "web v2\n"] {
        for addr in &addrs {
            eventually(
                Duration::from_secs(120),
                &format!("{want:?} from {addr}"),
                || async { (http_body(*addr).await.as_deref() == Some(want)).then_some(()) },
            )
            .await;
        }
        // Both replicas are ready (their startup probe dials the port and
        // their readiness probe GETs /ready, at the board's address), one
        // on each board, all of this version.
        let image = if want.contains("v1") {
            "web:v1"
        } else {
            "web:v2"
        };
        eventually(
            Duration::from_secs(60),
            &format!("two ready {image} pods on two boards"),
            || async {
                let pods = pods_labelled(&hub, "app=web").await;
                let mut nodes: Vec<&str> = pods
                    .iter()
                    .filter(|p| p["spec"]["containers"][0]["image"] == image && ready(p))
                    .filter_map(|p| p["spec"]["nodeName"].as_str())
                    .collect();
                nodes.sort();
                (pods.len() == 2 && nodes == ["edge-1", "edge-2"]).then_some(())
            },
        )
        .await;
        if want.contains("v1") {
            let mut v2 = v1.clone();
            v2.push(("image: web:v1", "image: web:v2"));
            v2.push(("value: \"v1\"", "value: \"v2\""));
            apply(&hub, &manifest("web/deployment.yaml", &v2));
        }
    }
}
