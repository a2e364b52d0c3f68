//! The OpenAPI document is accurate enough for a fuzzer to drive the API,
//! and no request it generates gets a 5xx: schemathesis (from PyPI;
//! `scripts/test` installs it) runs every documented operation against a
//! real hub over HTTPS with the admin token.

use std::process::Command;

use spoke_e2e::{Hub, tail};

#[tokio::test]
async fn a_fuzzer_driven_by_the_openapi_document_gets_no_server_error() {
    let hub = Hub::start().await;
    let target = hub.target();
    let token = target.token.clone().expect("the admin token");
    let ca = hub.data_dir().join("tls").join("ca.crt");
    // Many examples in the soak mode; a quick pass in CI.
    let examples = if std::env::var_os("SPOKE_SOAK").is_some() {
        "100"
    } else {
        "5"
    };
    let out = Command::new("schemathesis")
        .args(["run", &format!("{}/openapi/v3", hub.api_url)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--tls-verify", ca.to_str().unwrap()])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "examples,fuzzing", "-n", examples, "-w", "2"])
        .args(["--seed", "20261130", "--no-color"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run schemathesis ({e}): install it with `pip install schemathesis` (scripts/test does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}",
        tail(&text, 80)
    );
    assert!(text.contains("passed"), "{}", tail(&text, 40));
    let log = hub.proc.output();
    assert!(
        !log.contains("panicked"),
        "the hub panicked:\n{}",
        tail(&log, 40)
    );
}
