//! Real kubectl (1.20, from Debian's `kubernetes-client`) against a real hub
//! over HTTPS with the config the hub writes: discovery, apply (client-side,
//! which is a strategic merge patch), get with short names, scale, label,
//! patch, set image, rollout history, cascading delete; the hub's Table
//! answers as kubectl prints them (columns, values, `-o wide`, `-A`,
//! `--show-labels`, `get -w`); and a Deployment run on a real agent
//! (rollout status, scale, get all, logs and logs -f, describe, re-apply,
//! delete). `scripts/test` unpacks kubectl and sets `SPOKE_KUBECTL`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use spoke_e2e::{Hub, eventually, example_wasm};

struct Kubectl {
    bin: String,
    config: String,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn new(hub: &Hub) -> Kubectl {
        let bin = std::env::var("SPOKE_KUBECTL").unwrap_or_else(|_| {
            panic!("set SPOKE_KUBECTL to a kubectl 1.20 binary (scripts/test unpacks Debian's kubernetes-client)")
        });
        Kubectl {
            bin,
            config: hub.config_path().to_str().unwrap().to_string(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(["--kubeconfig", &self.config])
            .args(["--cache-dir", self.cache.path().to_str().unwrap()])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Starts a long-running kubectl (`get -w`) whose stdout lines arrive
    /// on the returned channel.
    fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = Command::new(&self.bin)
            .args(["--kubeconfig", &self.config])
            .args(["--cache-dir", self.cache.path().to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:v1
";

#[tokio::test]
async fn kubectl_drives_the_hub() {
    let hub = Hub::start().await;
    let k = Kubectl::new(&hub);
    assert!(k.ok(&["get", "ns"]).contains("spoke-system"));
    let resources = k.ok(&["api-resources"]);
    for line in ["deployments", "cronjobs", "configmaps"] {
        assert!(resources.contains(line), "{resources}");
    }

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, DEPLOYMENT).unwrap();
    let path = manifest.to_str().unwrap();
    assert!(
        k.ok(&["apply", "-f", path])
            .contains("deployment.apps/web created")
    );
    assert!(
        k.ok(&["apply", "-f", path])
            .contains("deployment.apps/web unchanged")
    );
    let client = hub.client();
    let deploy = "/apis/apps/v1/namespaces/default/deployments/web";
    // The controllers make the ReplicaSet and its pods (no agent: Pending),
    // then count them in the Deployment's status (a later write).
    eventually(Duration::from_secs(20), "2 pods of web, counted", || {
        let c = client.clone();
        async move {
            let pods: Value = c
                .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await
                .ok()?;
            let d: Value = c.get(deploy).await.ok()?;
            (pods["items"].as_array()?.len() == 2 && d["status"]["updatedReplicas"] == 2)
                .then_some(())
        }
    })
    .await;
    assert!(k.ok(&["get", "rs"]).contains("web-"));

    // kubectl prints the hub's Tables: its columns, our values.
    let deploys = rows(&k.ok(&["get", "deploy"]));
    assert_eq!(
        deploys[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(deploys[1][..4], ["web", "0/2", "2", "0"]);
    let wide = rows(&k.ok(&["get", "deploy", "web", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(wide[1][5..], ["web", "web:v1", "app=web"]);
    let pods = rows(&k.ok(&["get", "pods"]));
    assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(pods.len(), 3, "{pods:?}");
    for pod in &pods[1..] {
        assert!(pod[0].starts_with("web-"), "{pod:?}");
        assert_eq!(pod[1..4], ["0/1", "Pending", "0"]);
    }
    let labelled = rows(&k.ok(&["get", "rs", "-A", "--show-labels"]));
    assert_eq!(
        labelled[0],
        [
            "NAMESPACE",
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "LABELS"
        ]
    );
    assert_eq!(labelled[1][0], "default");
    assert_eq!(labelled[1][2..5], ["2", "2", "0"]);
    assert!(labelled[1][6].contains("app=web"), "{labelled:?}");
    let ns = rows(&k.ok(&["get", "ns", "default"]));
    assert_eq!(ns[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(ns[1][..2], ["default", "Active"]);
    // `get -w` receives each change as a one-row Table.
    let (mut watcher, lines) = k.spawn(&["get", "deploy", "web", "-w"]);
    let header = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(header.starts_with("NAME"), "{header}");

    k.ok(&["scale", "deploy", "web", "--replicas=3"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("kubectl get -w printed the scaled Deployment");
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.first() == Some(&"web") && cells.get(1) == Some(&"0/3") {
            break;
        }
    }
    watcher.kill().unwrap();
    watcher.wait().unwrap();

    k.ok(&["set", "image", "deploy/web", "web=web:v2"]);
    let d: Value = client.get(deploy).await.unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:v2"
    );
    // A re-apply of the file rolls the image back and keeps other fields.
    k.ok(&["apply", "-f", path]);
    let d: Value = client.get(deploy).await.unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:v1"
    );

    // Server-side apply creates, then merges the applied configuration.
    let ssa = dir.path().join("ssa.yaml");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: one}\n",
    )
    .unwrap();
    let ssa_path = ssa.to_str().unwrap();
    let out = k.ok(&["apply", "--server-side", "-f", ssa_path]);
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: two, b: three}\n",
    )
    .unwrap();
    k.ok(&["apply", "--server-side", "-f", ssa_path]);
    let cm: Value = client
        .get("/api/v1/namespaces/default/configmaps/ssa")
        .await
        .unwrap();
    assert_eq!(cm["data"], serde_json::json!({"a": "two", "b": "three"}));

    k.ok(&["create", "configmap", "demo", "--from-literal=a=b"]);
    let cms = rows(&k.ok(&["get", "cm", "demo"]));
    assert_eq!(cms[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(cms[1][..2], ["demo", "1"]);
    k.ok(&["label", "cm", "demo", "tier=edge"]);
    assert!(k.ok(&["get", "cm", "-l", "tier=edge"]).contains("demo"));
    k.ok(&["patch", "cm", "demo", "-p", r#"{"data":{"c":"d"}}"#]);
    let data = k.ok(&["get", "cm", "demo", "-o", "jsonpath={.data.c}"]);
    assert_eq!(data, "d");
    // Errors come back as kubectl prints a Status.
    let missing = k.run(&["get", "cm", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("configmaps \"nope\" not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    k.ok(&["delete", "deploy", "web"]);
    eventually(Duration::from_secs(20), "web's pods collected", || {
        let c = client.clone();
        async move {
            let pods: Value = c
                .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await
                .ok()?;
            pods["items"].as_array()?.is_empty().then_some(())
        }
    })
    .await;
}

/// kubectl's output split into rows of cells (no cell here has spaces).
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

const HELLO: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: 1
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: hello
        image: hello:v1
        env:
        - {name: GREETING, value: GREETING_VALUE}
";

#[tokio::test]
async fn kubectl_rolls_out_scales_and_reads_logs_of_a_deployment_on_a_board() {
    let hub = Hub::start().await;
    let _agent = hub.agent("pi-1", &[]);
    hub.wait_node_ready("pi-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let k = Kubectl::new(&hub);

    let nodes = rows(&k.ok(&["get", "nodes"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][..3], ["pi-1", "Ready", "<none>"]);

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("hello.yaml");
    std::fs::write(&manifest, HELLO.replace("GREETING_VALUE", "hello")).unwrap();
    let path = manifest.to_str().unwrap();
    assert!(
        k.ok(&["apply", "-f", path])
            .contains("deployment.apps/hello created")
    );
    let done = k.ok(&["rollout", "status", "deploy/hello", "--timeout=120s"]);
    assert!(done.contains("successfully rolled out"), "{done}");

    let pods = rows(&k.ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        pods[0][..6],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"]
    );
    assert_eq!(pods[1][1..3], ["1/1", "Running"]);
    assert_eq!(pods[1][5], "pi-1");
    let first = pods[1][0].clone();

    k.ok(&["scale", "deploy", "hello", "--replicas=2"]);
    k.ok(&["rollout", "status", "deploy/hello", "--timeout=120s"]);
    // `get all` finds the workload kinds through discovery's categories.
    let all = k.ok(&["get", "all"]);
    for want in [
        "pod/hello-",
        "deployment.apps/hello",
        "replicaset.apps/hello-",
    ] {
        assert!(all.contains(want), "{want} missing from:\n{all}");
    }
    let deploy = rows(&k.ok(&["get", "deploy", "hello"]));
    assert_eq!(deploy[1][..4], ["hello", "2/2", "2", "2"]);

    // kubectl describe reads the objects, what they own and their events
    // through the hub's field selectors.
    let d = k.ok(&["describe", "deploy", "hello"]);
    assert!(
        d.contains("2 desired | 2 updated | 2 total | 2 available"),
        "{d}"
    );
    assert!(d.contains("ScalingReplicaSet"), "{d}");
    let d = k.ok(&["describe", "pod", &first]);
    assert!(d.contains("pi-1") && d.contains("hello:v1"), "{d}");
    assert!(d.contains("Scheduled"), "{d}");
    let d = k.ok(&["describe", "node", "pi-1"]);
    assert!(d.contains(&first), "{d}");

    let client = hub.client();
    let log = eventually(Duration::from_secs(30), "a line of hello's log", || {
        let out = k.run(&["logs", &first]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move { (out.status.success() && text.contains("count=")).then_some(text) }
    })
    .await;
    assert!(log.contains("hello from a Wasm pod"), "{log}");

    // kubectl logs -f keeps printing as the board writes.
    let (mut follower, lines) = k.spawn(&["logs", "-f", &first]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("kubectl logs -f kept printing");
        seen.insert(line);
    }
    follower.kill().unwrap();
    follower.wait().unwrap();

    // --since, --since-time and --previous reach the board as Kubernetes'
    // sinceSeconds, sinceTime and previous; a pod that has not restarted
    // has no previous log, in kubelet's words.
    assert!(k.ok(&["logs", "--since=1h", &first]).contains("count="));
    let future = k.ok(&["logs", "--since-time=2100-01-01T00:00:00Z", &first]);
    assert_eq!(future, "", "no line is newer than 2100");
    let out = k.run(&["logs", "--previous", &first]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "previous terminated container \"hello\" in pod \"{first}\" not found"
            )),
        "{err}"
    );

    // A changed manifest goes through kubectl's patch path and rolls out.
    std::fs::write(&manifest, HELLO.replace("GREETING_VALUE", "bonjour")).unwrap();
    assert!(
        k.ok(&["apply", "-f", path])
            .contains("deployment.apps/hello configured")
    );
    k.ok(&["rollout", "status", "deploy/hello", "--timeout=120s"]);
    eventually(Duration::from_secs(30), "the new greeting in a log", || {
        let names = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=hello",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        let greeted = names.split_whitespace().any(|n| {
            let out = k.run(&["logs", n]);
            String::from_utf8_lossy(&out.stdout).contains("bonjour from")
        });
        async move { greeted.then_some(()) }
    })
    .await;

    k.ok(&["delete", "deploy", "hello"]);
    eventually(Duration::from_secs(60), "hello's pods gone", || {
        let c = client.clone();
        async move {
            let pods: Value = c
                .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")
                .await
                .ok()?;
            pods["items"].as_array()?.is_empty().then_some(())
        }
    })
    .await;
}
