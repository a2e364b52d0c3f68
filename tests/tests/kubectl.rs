//! Real kubectl (1.20, from Debian's `kubernetes-client`) against a real hub
//! over HTTPS with the config the hub writes: discovery, apply (client-side,
//! which is a strategic merge patch), get with short names, scale, label,
//! patch, set image, rollout history, cascading delete. `scripts/test`
//! unpacks kubectl and sets `SPOKE_KUBECTL`.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use spoke_e2e::{Hub, eventually};

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
    // The controllers make the ReplicaSet and its pods (no agent: Pending).
    eventually(Duration::from_secs(20), "2 pods of web", || {
        let c = client.clone();
        async move {
            let pods: Value = c
                .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await
                .ok()?;
            (pods["items"].as_array()?.len() == 2).then_some(())
        }
    })
    .await;
    assert!(k.ok(&["get", "rs"]).contains("web-"));

    k.ok(&["scale", "deploy", "web", "--replicas=3"]);
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

    k.ok(&["create", "configmap", "demo", "--from-literal=a=b"]);
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
