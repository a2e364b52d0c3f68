//! The agent built for a 64-bit Raspberry Pi (aarch64), run under
//! `qemu-aarch64-static` on this machine: it joins a hub running natively
//! over TLS with a bootstrap token, reports itself as an arm64 node, and
//! runs the hello example until the hub shows it Running with its log.
//!
//! The aarch64 build takes 15–40 minutes on 2 cores, too long for every CI
//! run, so the test is ignored unless asked for: `cross/test-arm.sh` builds
//! the agent (cross/build-debian.sh) and runs this test with
//! `SPOKE_ARM_AGENT` pointing at the binary.

use std::time::Duration;

use spoke_e2e::{Hub, container, eventually, example_wasm, repo_root};

#[tokio::test]
#[ignore = "needs an aarch64 spoke-agent in SPOKE_ARM_AGENT and qemu-aarch64-static: cross/test-arm.sh"]
async fn aarch64_agent_under_qemu_joins_over_tls_and_runs_hello() {
    let agent_bin = std::env::var("SPOKE_ARM_AGENT")
        .expect("SPOKE_ARM_AGENT: path of an aarch64 spoke-agent (cross/test-arm.sh sets it)");
    let out = std::process::Command::new("file")
        .arg(&agent_bin)
        .output()
        .expect("file(1)");
    let kind = String::from_utf8_lossy(&out.stdout);
    assert!(kind.contains("aarch64"), "not an aarch64 binary: {kind}");

    let hub = Hub::start().await;
    assert!(hub.mqtt_url.starts_with("mqtts://"), "{}", hub.mqtt_url);
    // Emulated, the agent starts and compiles modules 10-50 times slower.
    let _agent = hub.agent_launched(&["qemu-aarch64-static", &agent_bin], "pi-emu", &[]);
    eventually(
        Duration::from_secs(180),
        "the emulated board Ready",
        || async {
            let node: serde_json::Value = hub.client().get("/api/v1/nodes/pi-emu").await.ok()?;
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(node)
        },
    )
    .await;
    let node: serde_json::Value = hub.client().get("/api/v1/nodes/pi-emu").await.unwrap();
    assert_eq!(
        node["status"]["nodeInfo"]["architecture"], "arm64",
        "{node}"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], "arm64");

    hub.push(&example_wasm("hello"), "hello:v1");
    let manifest = repo_root().join("examples/hello/pod.yaml");
    let out = hub.spoke(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = eventually(
        Duration::from_secs(300),
        "hello Running on arm64",
        || async {
            let p: serde_json::Value = hub
                .client()
                .get("/api/v1/namespaces/default/pods/hello")
                .await
                .ok()?;
            (p["status"]["phase"] == "Running").then_some(p)
        },
    )
    .await;
    assert_eq!(pod["spec"]["nodeName"], "pi-emu");
    assert!(container(&pod)["state"]["running"].is_object(), "{pod}");
    eventually(
        Duration::from_secs(120),
        "hello's log from the board",
        || async {
            let out = hub.spoke(&["logs", "hello"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("count=2").then_some(text)
        },
    )
    .await;
}
