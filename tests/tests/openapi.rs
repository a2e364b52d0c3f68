//! The OpenAPI document is accurate enough for a fuzzer to drive the API,
//! and no request it generates gets a 5xx or hangs: schemathesis (from
//! PyPI; `scripts/test` installs it) runs every documented operation
//! against a real hub over HTTPS with the admin token.
//!
//! One object of every kind, named `fuzz`, is created first
//! (`tests/fixtures/openapi/seed.yaml`) and schemathesis draws most path
//! names from those (`schemathesis.toml` there), so the operations on an
//! object reach the code behind them rather than a 404. The test counts,
//! from schemathesis' own record of every exchange (a HAR file), how many
//! documented operations answered with a success at least once, and fails
//! if that coverage falls: a fuzzer that only ever sees 404s proves
//! nothing.
//!
//! `SPOKE_SOAK=1` runs many more cases and the stateful phase (which
//! follows the document's links from each create to the created object).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spoke_e2e::{Hub, repo_root, tail};

/// Operations (of 137) that answered 2xx at least once: 111 with this
/// seed on 2026-12-01 (by hand, with a different seed). A margin below the
/// measured figure keeps the check about coverage, not about luck.
const MIN_OPERATIONS_WITH_SUCCESS: usize = 95;

#[tokio::test]
async fn a_fuzzer_driven_by_the_openapi_document_gets_no_server_error_and_no_hang() {
    let hub = Hub::start().await;
    let fixtures = repo_root().join("tests/fixtures/openapi");
    let seed = std::fs::read_to_string(fixtures.join("seed.yaml")).expect("seed.yaml");
    let out = hub.apply(&seed);
    assert!(
        out.status.success(),
        "seeding failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let document: Value = hub
        .client()
        .get("/openapi/v3")
        .await
        .expect("the OpenAPI document");

    let target = hub.target();
    let token = target.token.clone().expect("the admin token");
    let ca = hub.data_dir().join("tls").join("ca.crt");
    let report = tempfile::tempdir().expect("tempdir");
    let har = report.path().join("exchanges.har");
    let soak = std::env::var_os("SPOKE_SOAK").is_some();
    let (phases, examples) = if soak {
        ("examples,fuzzing,stateful", "100")
    } else {
        ("examples,fuzzing", "5")
    };
    // A request that takes longer than this is a hang: schemathesis
    // reports it as a failure. The whole run has a deadline too, in case
    // the hub stops answering altogether.
    let request_timeout = "30";
    let deadline = Duration::from_secs(if soak { 3 * 3600 } else { 15 * 60 });
    let mut child = Command::new("schemathesis")
        .arg("--config-file")
        .arg(fixtures.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi/v3", hub.api_url)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--tls-verify", ca.to_str().unwrap()])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", phases, "-n", examples, "-w", "2"])
        .args(["--request-timeout", request_timeout])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .args(["--seed", "20261201", "--no-color"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run schemathesis ({e}): install it with `pip install schemathesis` (scripts/test does)")
        });
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out_reader, err_reader) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {deadline:?}: a request hung?\nhub log:\n{}",
                tail(&hub.proc.output(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let text = format!(
        "{}{}",
        out_reader.join().unwrap_or_default(),
        err_reader.join().unwrap_or_default()
    );
    assert!(
        status.success(),
        "schemathesis found failures:\n{}",
        tail(&text, 80)
    );
    let log = hub.proc.output();
    assert!(
        !log.contains("panicked"),
        "the hub panicked:\n{}",
        tail(&log, 40)
    );

    let exchanges = read_har(&har);
    assert!(
        exchanges.len() > 100,
        "only {} exchanges recorded:\n{}",
        exchanges.len(),
        tail(&text, 40)
    );
    let server_errors: Vec<&(String, String, u16)> =
        exchanges.iter().filter(|(_, _, s)| *s >= 500).collect();
    assert!(server_errors.is_empty(), "5xx answers: {server_errors:?}");
    let operations = operations(&document);
    let succeeded: BTreeSet<(String, String)> = exchanges
        .iter()
        .filter(|(_, _, s)| (200..300).contains(s))
        .filter_map(|(method, path, _)| operation_of(&operations, method, path))
        .collect();
    let missed: Vec<String> = operations
        .iter()
        .filter(|(m, t)| !succeeded.contains(&(m.clone(), t.clone())))
        .map(|(m, t)| format!("{m} {t}"))
        .collect();
    eprintln!(
        "{} exchanges; {} of {} operations answered 2xx at least once; never: {missed:#?}",
        exchanges.len(),
        succeeded.len(),
        operations.len()
    );
    assert!(
        succeeded.len() >= MIN_OPERATIONS_WITH_SUCCESS,
        "only {} of {} operations ever succeeded (want {MIN_OPERATIONS_WITH_SUCCESS}); never: {missed:#?}",
        succeeded.len(),
        operations.len()
    );
}

/// (method, path without query, status) of every exchange in a HAR file.
fn read_har(path: &Path) -> Vec<(String, String, u16)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("schemathesis wrote no HAR file at {}: {e}", path.display()));
    let har: Value = serde_json::from_str(&text).expect("the HAR file is JSON");
    har["log"]["entries"]
        .as_array()
        .expect("log.entries")
        .iter()
        .map(|e| {
            let url = e["request"]["url"].as_str().unwrap_or_default();
            let path = url
                .split_once("://")
                .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
            let path = path.split('?').next().unwrap_or_default().to_string();
            let method = e["request"]["method"].as_str().unwrap_or_default();
            let status = e["response"]["status"].as_u64().unwrap_or(0) as u16;
            (method.to_uppercase(), path, status)
        })
        .collect()
}

/// Every (METHOD, path template) the document declares.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.push((method.to_uppercase(), template.clone()));
        }
    }
    ops.sort();
    ops
}

/// The declared operation a concrete request was for: templates match
/// segment by segment, `{param}` matching any one segment, and the one
/// with the fewest parameters wins (`/api/v1/namespaces/{name}` is not
/// `/api/v1/namespaces/{namespace}/pods`).
fn operation_of(ops: &[(String, String)], method: &str, path: &str) -> Option<(String, String)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ops.iter()
        .filter(|(m, _)| m == method)
        .filter(|(_, t)| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .min_by_key(|(_, t)| t.matches('{').count())
        .cloned()
}

#[test]
fn requests_map_to_the_most_specific_declared_operation() {
    let ops = vec![
        ("GET".to_string(), "/api/v1/namespaces/{name}".to_string()),
        (
            "GET".to_string(),
            "/api/v1/namespaces/{namespace}/pods".to_string(),
        ),
        (
            "GET".to_string(),
            "/api/v1/namespaces/{namespace}/pods/{name}".to_string(),
        ),
    ];
    let of = |m, p| operation_of(&ops, m, p).map(|(_, t)| t);
    assert_eq!(
        of("GET", "/api/v1/namespaces/default/pods").as_deref(),
        Some("/api/v1/namespaces/{namespace}/pods")
    );
    assert_eq!(
        of("GET", "/api/v1/namespaces/fuzz").as_deref(),
        Some("/api/v1/namespaces/{name}")
    );
    assert_eq!(
        of("GET", "/api/v1/namespaces/default/pods/fuzz").as_deref(),
        Some("/api/v1/namespaces/{namespace}/pods/{name}")
    );
    assert_eq!(of("PUT", "/api/v1/namespaces/fuzz"), None);
    assert_eq!(of("GET", "/apis/apps/v1/deployments"), None);
}
