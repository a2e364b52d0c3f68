//! The `spoke` CLI end to end: the real binary against a real hub, with a
//! real agent where pods must run. Each verb is checked by what it prints,
//! what it changes on the hub, and its exit code, error paths included.

use std::io::{BufRead as _, BufReader};
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use spoke_e2e::{Hub, example_wasm, free_port};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs `spoke` and insists on success; returns stdout.
fn ok(hub: &Hub, args: &[&str]) -> String {
    let out = hub.spoke(args);
    assert!(
        out.status.success(),
        "spoke {args:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `spoke`, insists on failure; returns stderr.
fn fails(hub: &Hub, args: &[&str]) -> String {
    let out = hub.spoke(args);
    assert!(
        !out.status.success(),
        "spoke {args:?} should have failed:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

/// Runs `spoke` with another config file, insisting on success.
fn with_config(config: &str, args: &[&str]) -> Output {
    std::process::Command::new(spoke_e2e::bin("spoke"))
        .args(["--kubeconfig", config])
        .args(args)
        .env_remove("SPOKE_CONFIG")
        .env_remove("SPOKE_SERVER")
        .env_remove("SPOKE_TOKEN")
        .output()
        .unwrap()
}

fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

const STALLED: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: stalled}
spec:
  replicas: 1
  progressDeadlineSeconds: 2
  selector: {matchLabels: {app: stalled}}
  template:
    metadata: {labels: {app: stalled}}
    spec:
      containers: [{name: main, image: 'missing:v1'}]
";

#[tokio::test]
async fn cli_rolls_out_scales_describes_and_rolls_back_a_deployment() {
    let hub = Hub::start().await;
    let _agent = hub.agent("pi-1", &[]);
    hub.wait_node_ready("pi-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    hub.push(&example_wasm("hello"), "hello:v2");

    let out = ok(
        &hub,
        &[
            "create",
            "deployment",
            "web",
            "--image=hello:v1",
            "--replicas=1",
        ],
    );
    assert_eq!(out.trim(), "deployment.apps/web created");
    let err = fails(&hub, &["create", "deployment", "web", "--image=hello:v1"]);
    assert!(err.contains("already exists"), "{err}");
    let out = ok(
        &hub,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    );
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );

    // Several kinds at once, names qualified by kind.
    let both = ok(&hub, &["get", "deploy,pods"]);
    let t = rows(&both);
    assert_eq!(t[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert_eq!(t[1][..4], ["deployment.apps/web", "1/1", "1", "1"]);
    assert_eq!(t[3], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(t[4][0].starts_with("pod/web-"), "{both}");
    assert_eq!(t[4][1..3], ["1/1", "Running"]);
    let labels = rows(&ok(&hub, &["get", "pods", "--show-labels"]));
    assert_eq!(labels[0].last().unwrap(), "LABELS");
    assert!(labels[1].last().unwrap().contains("app=web"), "{labels:?}");
    assert_eq!(
        ok(
            &hub,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]
        ),
        "1"
    );

    ok(&hub, &["scale", "deploy/web", "--replicas=2"]);
    ok(
        &hub,
        &["rollout", "status", "deploy", "web", "--timeout=120s"],
    );
    let pods = ok(
        &hub,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
        ],
    );
    let pods: Vec<Vec<String>> = rows(&pods);
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.iter().all(|p| p[1] == "pi-1"), "{pods:?}");

    // describe: pods with their events, deployments with their
    // ReplicaSets, nodes with their pods.
    let d = ok(&hub, &["describe", "pod", &pods[0][0]]);
    for (field, value) in [
        ("Node:", "pi-1"),
        ("Status:", "Running"),
        ("Image:", "hello:v1"),
        ("Controlled By:", "ReplicaSet/web-"),
        ("Events:", ""),
    ] {
        assert!(
            d.lines()
                .any(|l| l.trim_start().starts_with(field) && l.contains(value)),
            "{field} {value} missing from:\n{d}"
        );
    }
    assert!(d.contains("Scheduled"), "{d}");
    let d = ok(&hub, &["describe", "deploy/web"]);
    assert!(
        d.contains("2 desired | 2 updated | 2 total | 2 available"),
        "{d}"
    );
    assert!(
        d.contains("NewReplicaSet:") && d.contains("ScalingReplicaSet"),
        "{d}"
    );
    let d = ok(&hub, &["describe", "node", "pi-1"]);
    assert!(
        d.lines()
            .any(|l| l.starts_with("Status:") && l.ends_with("Ready")),
        "{d}"
    );
    assert!(d.contains("(2 in total)"), "{d}");

    // logs -f prints new lines as the board writes them, and ends when the
    // pod is deleted.
    let mut follower = hub
        .spoke_cmd()
        .args(["logs", "-f", &pods[0][0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, log) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counts = std::collections::BTreeSet::new();
    while counts.len() < 3 {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("logs -f kept printing");
        counts.insert(line);
    }
    ok(&hub, &["delete", "pod", &pods[0][0]]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "logs -f did not end with its pod"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    ok(&hub, &["rollout", "status", "deploy/web", "--timeout=120s"]);

    // A watch prints the change as a row under the header.
    let mut child = hub
        .spoke_cmd()
        .args(["get", "deploy", "web", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let header = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(header.starts_with("NAME"), "{header}");
    let ready_at = header.find("READY").unwrap();
    ok(&hub, &["annotate", "deploy", "web", "note=watched"]);
    ok(&hub, &["label", "deploy", "web", "tier=edge"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen < 3 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("get -w printed the changes");
        // Rows line up under the header printed first.
        assert!(line.starts_with("web "), "{line}");
        assert!(
            line[..ready_at].trim_end() == "web" && line[ready_at..].starts_with("2/2"),
            "{header}\n{line}"
        );
        seen += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Labels and annotations: set, refuse to overwrite, overwrite, remove.
    let err = fails(&hub, &["label", "deploy", "web", "tier=core"]);
    assert!(
        err.contains("'tier' already has a value (edge), and --overwrite is false"),
        "{err}"
    );
    assert_eq!(
        ok(
            &hub,
            &["label", "deploy", "web", "tier=core", "--overwrite"]
        )
        .trim(),
        "deployment.apps/web labeled"
    );
    ok(&hub, &["label", "deploy/web", "tier-"]);
    ok(&hub, &["annotate", "deploy/web", "note-"]);
    let meta = ok(&hub, &["get", "deploy", "web", "-o", "json"]);
    let meta: Value = serde_json::from_str(&meta).unwrap();
    assert!(meta["metadata"]["labels"].get("tier").is_none(), "{meta}");
    assert!(
        meta["metadata"]["annotations"].get("note").is_none(),
        "{meta}"
    );

    // set image rolls out a second revision; undo brings the first back.
    let err = fails(&hub, &["set", "image", "deploy/web", "nope=hello:v2"]);
    assert!(
        err.contains("unable to find container named \"nope\""),
        "{err}"
    );
    assert_eq!(
        ok(&hub, &["set", "image", "deploy/web", "hello=hello:v2"]).trim(),
        "deployment.apps/web image updated"
    );
    ok(&hub, &["rollout", "status", "deploy/web", "--timeout=120s"]);
    let history = rows(&ok(&hub, &["rollout", "history", "deploy/web"]));
    assert_eq!(history[1], ["REVISION", "CHANGE-CAUSE"]);
    assert_eq!(history[2][0], "1");
    assert_eq!(history[3][0], "2");
    assert_eq!(
        ok(&hub, &["rollout", "undo", "deploy/web"]).trim(),
        "deployment.apps/web rolled back"
    );
    ok(&hub, &["rollout", "status", "deploy/web", "--timeout=120s"]);
    let image = "jsonpath={.spec.template.spec.containers[0].image}";
    assert_eq!(ok(&hub, &["get", "deploy", "web", "-o", image]), "hello:v1");

    // restart stamps the template; pause and resume flip spec.paused.
    ok(&hub, &["rollout", "restart", "deploy/web"]);
    let stamp = ok(
        &hub,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ],
    );
    assert!(stamp.starts_with("20"), "{stamp}");
    ok(&hub, &["rollout", "status", "deploy/web", "--timeout=120s"]);
    ok(&hub, &["rollout", "pause", "deploy/web"]);
    let err = fails(&hub, &["rollout", "pause", "deploy/web"]);
    assert!(err.contains("already paused"), "{err}");
    assert_eq!(
        ok(
            &hub,
            &["get", "deploy", "web", "-o", "jsonpath={.spec.paused}"]
        ),
        "true"
    );
    ok(&hub, &["rollout", "resume", "deploy/web"]);

    // Events, in kubectl's columns.
    let events = rows(&ok(&hub, &["get", "events"]));
    assert_eq!(
        events[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        events
            .iter()
            .any(|e| e.get(2).map(String::as_str) == Some("Scheduled")),
        "{events:?}"
    );

    // A rollout that cannot progress: status fails past the deadline, and
    // --timeout gives up on its own.
    let out = hub.apply(STALLED);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = fails(
        &hub,
        &["rollout", "status", "deploy/stalled", "--timeout=1s"],
    );
    assert!(err.contains("timed out waiting for the rollout"), "{err}");
    let err = fails(
        &hub,
        &["rollout", "status", "deploy/stalled", "--timeout=120s"],
    );
    assert!(
        err.contains("deployment \"stalled\" exceeded its progress deadline"),
        "{err}"
    );

    ok(&hub, &["delete", "deploy", "web", "stalled"]);
}

#[tokio::test]
async fn cli_errors_name_the_problem_and_exit_non_zero() {
    let hub = Hub::start().await;

    let port = free_port();
    let out = spoke_e2e::spoke_cmd(&format!("https://127.0.0.1:{port}"), &["get", "pods"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach the hub at https://127.0.0.1:{port}"))
            && err.contains("(is spoke-hub running?)"),
        "{err}"
    );

    let err = fails(&hub, &["get", "pods", "nope"]);
    assert!(
        err.contains("pods \"nope\" not found in namespace \"default\""),
        "{err}"
    );
    let err = fails(&hub, &["get", "gadgets"]);
    assert!(
        err.contains("the server doesn't have a resource type \"gadgets\""),
        "{err}"
    );
    let err = fails(&hub, &["get", "pods", "-o", "bogus"]);
    assert!(err.contains("unable to match a printer"), "{err}");
    let err = fails(&hub, &["get", "pods", "-o", "jsonpath={.items"]);
    assert!(err.contains("error parsing jsonpath"), "{err}");
    let err = fails(&hub, &["describe", "pod", "nope"]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let err = fails(&hub, &["scale", "deploy/nope", "--replicas=2"]);
    assert!(
        err.contains("deployments \"nope\" not found in namespace \"default\""),
        "{err}"
    );
    let err = fails(&hub, &["scale", "cm/x", "--replicas=2"]);
    assert!(err.contains("configmaps cannot be scaled"), "{err}");
    let err = fails(&hub, &["rollout", "status", "deploy/nope"]);
    assert!(err.contains("deployments \"nope\" not found"), "{err}");
    let err = fails(&hub, &["rollout", "status", "cm/x"]);
    assert!(err.contains("deployments only"), "{err}");
    let err = fails(&hub, &["label", "cm", "nope", "a=b"]);
    assert!(err.contains("configmaps \"nope\" not found"), "{err}");
    let err = fails(&hub, &["create"]);
    assert!(err.contains("say what to create"), "{err}");
    let err = fails(&hub, &["--context", "nope", "get", "pods"]);
    assert!(err.contains("context \"nope\" not found"), "{err}");

    // create -f creates once; an invalid manifest names the field.
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo, labels: {tier: edge}}\ndata: {a: b}\n",
    )
    .unwrap();
    let path = cm.to_str().unwrap();
    assert_eq!(
        ok(&hub, &["create", "-f", path]).trim(),
        "configmap/demo created"
    );
    let err = fails(&hub, &["create", "-f", path]);
    assert!(err.contains("already exists"), "{err}");
    // One object by KIND/NAME prints as itself; two as a List.
    let one: Value = serde_json::from_str(&ok(&hub, &["get", "cm/demo", "-o", "json"])).unwrap();
    assert_eq!(one["kind"], "ConfigMap");
    let two: Value =
        serde_json::from_str(&ok(&hub, &["get", "cm/demo", "ns/default", "-o", "json"])).unwrap();
    assert_eq!(two["kind"], "List");
    assert_eq!(two["items"].as_array().unwrap().len(), 2);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec: {replicas: -1, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: m, image: m:v1}]}}}\n",
    )
    .unwrap();
    let err = fails(&hub, &["create", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("spec.replicas"), "{err}");

    // Listing: all namespaces, nothing found, delete by selector and --all.
    let all = rows(&ok(&hub, &["get", "cm", "-A"]));
    assert_eq!(all[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    let out = hub.spoke(&["get", "pods,deploy"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("No resources found in default namespace."),
        "{}",
        stderr(&out)
    );
    ok(
        &hub,
        &[
            "create",
            "deployment",
            "other",
            "--image=hello:v1",
            "--replicas=0",
        ],
    );
    ok(&hub, &["label", "deploy/other", "tier=edge"]);
    let out = ok(&hub, &["delete", "cm,deploy", "-l", "tier=edge"]);
    assert!(out.contains("configmap \"demo\" deleted"), "{out}");
    ok(&hub, &["delete", "deploy", "--all"]);
    assert_eq!(
        ok(&hub, &["get", "deploy", "-o", "name"]),
        "",
        "every Deployment deleted"
    );

    // Config: view hides the token, contexts can be listed and switched.
    let config = dir.path().join("config");
    std::fs::copy(hub.config_path(), &config).unwrap();
    let cfg = config.to_str().unwrap();
    let token = hub.target().token.unwrap();
    let view = stdout(&with_config(cfg, &["config", "view"]));
    assert!(
        view.contains("REDACTED") && !view.contains(&token),
        "{view}"
    );
    let raw = stdout(&with_config(cfg, &["config", "view", "--raw"]));
    assert!(raw.contains(&token));
    let current = stdout(&with_config(cfg, &["config", "current-context"]));
    let current = current.trim();
    let contexts = stdout(&with_config(cfg, &["config", "get-contexts"]));
    assert!(
        contexts
            .lines()
            .any(|l| l.starts_with('*') && l.contains(current)),
        "{contexts}"
    );
    let out = with_config(cfg, &["config", "use-context", "nope"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no context exists with the name \"nope\""),
        "{err}"
    );
    let out = stdout(&with_config(cfg, &["config", "use-context", current]));
    assert_eq!(out.trim(), format!("Switched to context \"{current}\"."));

    // Completion scripts for the three shells.
    assert!(ok(&hub, &["completion", "bash"]).contains("_spoke"));
    assert!(ok(&hub, &["completion", "zsh"]).contains("#compdef spoke"));
    assert!(ok(&hub, &["completion", "fish"]).contains("complete -c spoke"));
}

/// Lines of `text` that are hello's numbered greetings, as their numbers.
fn counts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.rsplit_once("count=")?.1.parse().ok())
        .collect()
}

#[tokio::test]
async fn cli_logs_reads_the_previous_instance_and_filters_by_time() {
    let hub = Hub::start().await;
    let backoff = [
        "--restart-backoff-initial",
        "1s",
        "--restart-backoff-max",
        "1s",
    ];
    let mut agent = hub.agent("pi-1", &backoff);
    hub.wait_node_ready("pi-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");

    // A pod that crashes after two lines, again and again (restartPolicy
    // Always): --previous is one whole earlier instance, its lines once.
    let crashy = spoke_e2e::pod_manifest(
        "crashy",
        "hello:v1",
        "Always",
        &[("HELLO_LINES", "2"), ("HELLO_EXIT_CODE", "3")],
    );
    assert!(hub.apply(&crashy).status.success());
    hub.wait_pod("crashy", "two restarts", |p| {
        spoke_e2e::container(p)["restartCount"].as_i64() >= Some(2)
    })
    .await;
    let previous = ok(&hub, &["logs", "crashy", "--previous"]);
    assert_eq!(counts(&previous), [1, 2], "{previous}");
    assert!(
        previous.ends_with("hello: done after 2 lines\n"),
        "{previous}"
    );
    let whole = ok(&hub, &["logs", "crashy"]);
    assert!(
        counts(&whole).iter().filter(|n| **n == 1).count() >= 2,
        "{whole}"
    );

    // A pod that runs on: no previous instance yet, in kubelet's words.
    assert!(
        hub.apply(&spoke_e2e::pod_manifest(
            "steady",
            "hello:v1",
            "Always",
            &[]
        ))
        .status
        .success()
    );
    spoke_e2e::eventually(Duration::from_secs(30), "steady to count to 3", || async {
        counts(&stdout(&hub.spoke(&["logs", "steady"])))
            .contains(&3)
            .then_some(())
    })
    .await;
    let err = fails(&hub, &["logs", "steady", "-p"]);
    assert!(
        err.contains("previous terminated container \"main\" in pod \"steady\" not found"),
        "{err}"
    );
    let err = fails(&hub, &["logs", "steady", "-p", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod steady"),
        "{err}"
    );

    // The board loses power and comes back: the pod's second instance
    // counts from 1 again. --previous is exactly the first instance, which
    // the agent found from the marker it wrote before the restart.
    agent.proc.kill();
    let cut = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let _agent = hub.agent("pi-1", &backoff);
    let whole = spoke_e2e::eventually(
        Duration::from_secs(60),
        "steady to run again after the agent restart",
        || async {
            let text = stdout(&hub.spoke(&["logs", "steady"]));
            (counts(&text).iter().filter(|n| **n == 1).count() == 2
                && counts(&text).last() >= Some(&2))
            .then_some(text)
        },
    )
    .await;
    let previous = ok(&hub, &["logs", "steady", "--previous"]);
    let first = counts(&previous);
    assert!(first.len() >= 3, "{previous}");
    assert_eq!(first, (1..=first.len() as u64).collect::<Vec<_>>());
    assert!(whole.starts_with(&previous), "{previous}\n---\n{whole}");
    // --tail applies to what --previous selected.
    let last = ok(&hub, &["logs", "steady", "--previous", "--tail=1"]);
    assert_eq!(counts(&last), [*first.last().unwrap()], "{last}");

    // --since-time keeps what was written after the cut: the second
    // instance only; a wide --since keeps everything.
    let recent = ok(&hub, &["logs", "steady", "--since-time", &cut]);
    let second = counts(&recent);
    assert_eq!(second[..2], [1, 2], "{recent}");
    assert_eq!(second.iter().filter(|n| **n == 1).count(), 1, "{recent}");
    let wide = ok(&hub, &["logs", "steady", "--since=1h"]);
    assert_eq!(counts(&wide)[..first.len()], first[..], "{wide}");
    // --since counts back from now: a short one leaves out the first
    // instance, whose lines are older than the agent restart.
    std::thread::sleep(Duration::from_millis(1500));
    let short = ok(&hub, &["logs", "steady", "--since=1s"]);
    assert!(
        counts(&short).len() <= 3 && !short.contains("count=1\n"),
        "{short}"
    );

    // -f with --since-time: starts at the cut, then follows.
    let mut follower = hub
        .spoke_cmd()
        .args(["logs", "-f", "steady", "--since-time", &cut])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut followed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while followed.len() < second.len() + 2 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("logs -f --since-time kept printing");
        followed.extend(counts(&line));
    }
    assert_eq!(
        followed,
        (1..=followed.len() as u64).collect::<Vec<_>>(),
        "logs -f --since-time printed the second instance from its start, then new lines"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();

    // Bad values name the option.
    let err = fails(&hub, &["logs", "steady", "--since=soon"]);
    assert!(err.contains("--since"), "{err}");
    let err = fails(&hub, &["logs", "steady", "--since-time=yesterday"]);
    assert!(err.contains("sinceTime"), "{err}");
    let err = fails(&hub, &["logs", "nope", "--previous"]);
    assert!(
        err.contains("pods \"nope\" not found in namespace \"default\""),
        "{err}"
    );
}

#[tokio::test]
async fn cli_push_streams_a_large_module_and_draws_progress_only_on_a_terminal() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.resize(24 << 20, 7);
    std::fs::write(&big, &bytes).unwrap();
    let path = big.to_str().unwrap();

    // Piped (as in scripts): one line on stdout, nothing on stderr.
    let out = hub.spoke(&["push", path, "big:v1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no progress bar when stderr is a pipe");
    let line = stdout(&out);
    let digest = line
        .strip_prefix("big:v1 pushed: ")
        .and_then(|rest| rest.strip_suffix(&format!(" ({} bytes)\n", bytes.len())))
        .unwrap_or_else(|| panic!("unexpected push output: {line:?}"))
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // Every byte arrived: the hub stored the module at its full size.
    let modules: Value = hub
        .client()
        .get("/apis/spoke.dev/v1/modules")
        .await
        .unwrap();
    let stored = modules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == digest.as_str())
        .unwrap_or_else(|| panic!("{digest} not in {modules}"));
    assert_eq!(stored["size"], bytes.len(), "{stored}");
    // -q prints the digest alone.
    assert_eq!(
        ok(&hub, &["push", "-q", path, "big:v2"]),
        format!("{digest}\n")
    );

    // On a terminal (script(1) gives the CLI a pseudo-terminal), the bar
    // shows bytes sent of the total and the rate, and ends at 100%; -q
    // draws none.
    let on_terminal = |args: &str| {
        let cmd = format!(
            "{} --kubeconfig {} {args}",
            spoke_e2e::bin("spoke").display(),
            hub.config_path().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("SPOKE_CONFIG")
            .env_remove("SPOKE_SERVER")
            .env_remove("SPOKE_TOKEN")
            .output()
            .expect("run script(1) from util-linux");
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        stdout(&out)
    };
    let screen = on_terminal(&format!("push {path} big:v3"));
    assert!(
        screen.contains("big:v3 [") && screen.contains("/ 24.0 MiB"),
        "{screen:?}"
    );
    assert!(
        screen.contains("24.0 MiB / 24.0 MiB  100%") && screen.contains("MiB/s"),
        "{screen:?}"
    );
    assert!(screen.contains("big:v3 pushed: sha256:"), "{screen:?}");
    let quiet = on_terminal(&format!("push -q {path} big:v4"));
    assert_eq!(quiet.trim(), digest, "{quiet:?}");
}

#[tokio::test]
async fn cli_speaks_kubectl_for_info_deletes_and_errors_with_exit_codes() {
    let hub = Hub::start().await;

    let version = ok(&hub, &["version"]);
    assert!(
        version.starts_with("Client Version: v") && version.contains("\nServer Version: v"),
        "{version}"
    );
    let info = ok(&hub, &["cluster-info"]);
    assert_eq!(
        info.trim(),
        format!("Spoke hub is running at {}", hub.target().server)
    );
    let port = free_port();
    let out = spoke_e2e::spoke_cmd(&format!("https://127.0.0.1:{port}"), &["cluster-info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot reach the hub at https://127.0.0.1:{port}: "
        )),
        "{}",
        stderr(&out)
    );

    // Objects: -o yaml, then deletes worded as kubectl words them. (No
    // node: the pod is never bound, so it goes at once.)
    let pod = spoke_e2e::pod_manifest("lonely", "hello:v1", "Never", &[]);
    assert!(hub.apply(&pod).status.success());
    let yaml = ok(&hub, &["get", "pod", "lonely", "-o", "yaml"]);
    let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed["kind"], "Pod");
    assert_eq!(parsed["metadata"]["name"], "lonely");
    ok(
        &hub,
        &[
            "create",
            "deployment",
            "web",
            "--image=hello:v1",
            "--replicas=0",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: demo}\n",
    )
    .unwrap();
    ok(&hub, &["apply", "-f", cm.to_str().unwrap()]);

    assert_eq!(
        ok(&hub, &["delete", "pod", "lonely"]),
        "pod \"lonely\" deleted\n"
    );
    assert_eq!(
        ok(&hub, &["delete", "deploy/web"]),
        "deployment.apps \"web\" deleted\n"
    );
    assert_eq!(
        ok(&hub, &["delete", "-f", cm.to_str().unwrap()]),
        "configmap \"demo\" deleted\n"
    );

    // What the hub refuses reads as kubectl's "Error from server", exit 1;
    // a delete of several names deletes what exists and still fails.
    let out = hub.spoke(&["delete", "pod", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): pods \"nope\" not found in namespace \"default\"\n"
    );
    assert!(hub.apply(&pod).status.success());
    let out = hub.spoke(&["delete", "pod", "nope", "lonely"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "pod \"lonely\" deleted\n");
    assert!(
        stderr(&out).contains("pods \"nope\" not found"),
        "{}",
        stderr(&out)
    );
    let out = hub.spoke(&["get", "pod", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): pods \"nope\" not found in namespace \"default\"\n"
    );
    let err = fails(&hub, &["get", "nodes", "nope"]);
    assert_eq!(
        err,
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );
    let err = fails(&hub, &["logs", "nope"]);
    assert!(
        err.starts_with("Error from server (NotFound): pods \"nope\""),
        "{err}"
    );

    // What the CLI refuses before asking: unknown kinds, missing names.
    for args in [
        &["delete", "gadgets", "x"][..],
        &["describe", "gadgets", "x"],
        &["scale", "gadgets/x", "--replicas=1"],
    ] {
        let err = fails(&hub, args);
        assert!(
            err.contains("the server doesn't have a resource type \"gadgets\""),
            "{args:?}: {err}"
        );
    }
    let err = fails(&hub, &["delete", "pod"]);
    assert!(err.contains("say what to delete"), "{err}");
    let err = fails(&hub, &["delete"]);
    assert!(err.contains("say what to delete"), "{err}");
    // A bad flag or value is a usage error: exit 2, before any request.
    assert_eq!(
        hub.spoke(&["get", "pods", "--bogus"]).status.code(),
        Some(2)
    );
    assert_eq!(
        hub.spoke(&["logs", "x", "--since=0s"]).status.code(),
        Some(2)
    );
}
