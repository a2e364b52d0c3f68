//! The official Kubernetes Python client (`pip install kubernetes`) against
//! a real hub and agent: list, create, watch, patch, delete and a pod's
//! log, through its typed models (tests/python/official_client.py).
//! `scripts/test` installs the client; without it this test fails and says
//! how to install it, as the kubectl test does without kubectl.

use std::process::Command;

use spoke_e2e::{Hub, example_wasm, repo_root};

#[tokio::test]
async fn the_official_python_client_lists_creates_watches_deletes_and_reads_logs() {
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "the official Python client is missing ({}): install it with `python3 -m pip install kubernetes==37.0.2` (scripts/test does)",
            match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            }
        ),
    }
    let hub = Hub::start().await;
    let _agent = hub.agent("pi-1", &[]);
    hub.wait_node_ready("pi-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");

    let script = repo_root().join("tests/python/official_client.py");
    let out = tokio::task::spawn_blocking({
        let config = hub.config_path();
        move || {
            Command::new("python3")
                .arg(script)
                .arg(config)
                .output()
                .expect("run python3")
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("official client: ok"),
        "the Python client failed:\n{stdout}\n{stderr}\n--- hub log ---\n{}",
        spoke_e2e::tail(&hub.proc.output(), 40)
    );
}
