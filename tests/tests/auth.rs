//! The hub's API security end to end, against a real hub process on
//! loopback started the default way: HTTPS with the hub's own CA, bearer
//! tokens, roles, the audit log, and the files that hold secrets.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use serde_json::{Value, json};
use spoke_api::auth::TOKENS_PATH;
use spoke_e2e::{Hub, eventually};

const PODS: &str = "/api/v1/namespaces/default/pods";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "x:1"}]}})
}

/// Creates a token with `spoke token create` and returns what it printed.
fn token(hub: &Hub, args: &[&str]) -> String {
    let out = hub.spoke(&[&["token", "create"], args].concat());
    assert!(out.status.success(), "token create: {}", stderr(&out));
    let secret = stdout(&out).trim().to_string();
    assert!(!secret.is_empty() && !secret.contains('\n'), "{secret:?}");
    secret
}

/// The code, reason and message of an API refusal.
fn refusal<T: std::fmt::Debug>(r: Result<T, spoke_client::Error>) -> (u16, String, String) {
    match r {
        Err(spoke_client::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API refusal, got {other:?}"),
    }
}

fn code_of<T: std::fmt::Debug>(r: Result<T, spoke_client::Error>) -> u16 {
    refusal(r).0
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_with_401() {
    let hub = Hub::start().await;
    // /version (and the health checks) answer anyone, as Kubernetes does.
    let anonymous = hub.client_with(None);
    let v: Value = anonymous.get("/version").await.unwrap();
    assert!(v["gitVersion"].is_string());

    let admin_name_wrong_secret = "admin.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for token in [
        None,
        Some("nope"),
        Some(admin_name_wrong_secret),
        Some("ghost.x"),
    ] {
        let c = hub.client_with(token);
        let (code, reason, message) = refusal(c.get::<Value>(PODS).await);
        assert_eq!((code, reason.as_str()), (401, "Unauthorized"), "{token:?}");
        assert!(message.starts_with("Unauthorized"), "{message}");
        // Nothing about objects leaks: a missing object is 401 too, not 404.
        assert_eq!(code_of(c.get::<Value>("/api/v1/nodes/none").await), 401);
        assert_eq!(code_of(c.create(PODS, &pod("a")).await), 401);
    }
    let out = hub
        .spoke_cmd()
        .args(["--token", admin_name_wrong_secret, "get", "pods"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Unauthorized"), "{}", stderr(&out));
    // The admin token from the config works.
    let out = hub.spoke(&["get", "pods"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_view_token_reads_but_cannot_write() {
    let hub = Hub::start().await;
    hub.client().create(PODS, &pod("a")).await.unwrap();
    let secret = token(&hub, &["viewer", "--role", "view"]);
    let viewer = hub.client_with(Some(&secret));

    let list: Value = viewer.get(PODS).await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    viewer.get::<Value>(&format!("{PODS}/a")).await.unwrap();
    viewer.get::<Value>("/api/v1/nodes").await.unwrap();
    let mut watch = viewer.watch(PODS, None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first["object"]["metadata"]["name"], "a");

    assert_eq!(
        refusal(viewer.create(PODS, &pod("b")).await),
        (
            403,
            "Forbidden".into(),
            r#"pods is forbidden: token "viewer" cannot create resource "pods" in namespace "default""#
                .into()
        )
    );
    let (code, _, message) = refusal(viewer.delete(&format!("{PODS}/a"), None).await);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"pods "a" is forbidden: token "viewer" cannot delete resource "pods" in namespace "default""#
    );
    assert_eq!(code_of(viewer.get::<Value>(TOKENS_PATH).await), 403);
    assert_eq!(
        code_of(
            viewer
                .get::<Value>("/api/v1/namespaces/default/secrets")
                .await
        ),
        403
    );

    // The CLI with that token: reads work, writes say why they cannot.
    let as_viewer = |args: &[&str]| {
        hub.spoke_cmd()
            .args(["--token", &secret])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_viewer(&["get", "pods"]);
    assert!(
        out.status.success() && stdout(&out).contains('a'),
        "{}",
        stderr(&out)
    );
    let out = as_viewer(&["delete", "pod", "a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains(r#"token "viewer" cannot delete resource "pods" in namespace "default""#),
        "{}",
        stderr(&out)
    );
    let out = as_viewer(&["token", "create", "mine", "--role", "admin"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tokens is forbidden"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_namespace_bound_edit_token_writes_only_in_its_namespace() {
    let hub = Hub::start().await;
    let admin = hub.client();
    admin
        .create("/api/v1/namespaces", &json!({"metadata": {"name": "prod"}}))
        .await
        .unwrap();
    let secret = token(&hub, &["ci", "--role", "edit", "-n", "prod"]);
    let ci = hub.client_with(Some(&secret));

    let prod = "/api/v1/namespaces/prod/pods";
    ci.create(prod, &pod("x")).await.unwrap();
    let list: Value = ci.get(prod).await.unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "x");
    ci.delete(&format!("{prod}/x"), Some(0)).await.unwrap();
    ci.get::<Value>("/api/v1/namespaces/prod").await.unwrap();

    assert_eq!(
        refusal(ci.create(PODS, &pod("y")).await).2,
        r#"pods is forbidden: token "ci" cannot create resource "pods" in namespace "default""#
    );
    assert_eq!(
        refusal(ci.get::<Value>("/api/v1/pods").await).2,
        r#"pods is forbidden: token "ci" cannot list resource "pods" at the cluster scope"#
    );
    assert_eq!(code_of(ci.get::<Value>("/api/v1/nodes").await), 403);
    assert_eq!(
        code_of(ci.delete("/api/v1/namespaces/prod", None).await),
        403
    );

    // Bound with -n; the admin's list shows the binding.
    let out = hub.spoke(&["token", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    let row = listed
        .lines()
        .find(|l| l.starts_with("ci "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(&row[..4], ["ci", "edit", "prod", "<never>"]);
    // A token without -n is cluster-wide, even though the context has a namespace.
    token(&hub, &["wide", "--role", "view"]);
    let out = hub.spoke(&["token", "list"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("wide ") && l.contains("<all>")),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_at_once() {
    let hub = Hub::start().await;
    let gone = token(&hub, &["gone", "--role", "view"]);
    let client = hub.client_with(Some(&gone));
    client.get::<Value>(PODS).await.unwrap();
    let out = hub.spoke(&["token", "revoke", "gone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "token \"gone\" revoked");
    assert_eq!(code_of(client.get::<Value>(PODS).await), 401);
    let out = hub.spoke(&["token", "revoke", "gone"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    let short = token(&hub, &["short", "--role", "view", "--ttl", "10s"]);
    let client = hub.client_with(Some(&short));
    client.get::<Value>(PODS).await.unwrap();
    let message = eventually(Duration::from_secs(60), "the token to expire", || async {
        match client.get::<Value>(PODS).await {
            Err(spoke_client::Error::Api(s)) if s.code == 401 => Some(s.message.clone()),
            _ => None,
        }
    })
    .await;
    assert!(message.contains("token \"short\" expired at"), "{message}");

    // Secrets are never listed, by the API or the CLI.
    let list: Value = hub.client().get(TOKENS_PATH).await.unwrap();
    let text = list.to_string();
    for secret in [&gone, &short] {
        let (_, part) = secret.split_once('.').unwrap();
        assert!(!text.contains(part), "{text}");
    }
    assert!(
        !text.contains("secretHash") && !text.contains("sha256"),
        "{text}"
    );
    let out = hub.spoke(&["token", "list"]);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("short ") && l.contains("expired"))
    );
    assert!(!stdout(&out).contains(short.split_once('.').unwrap().1));

    // A bad request names its field.
    let out = hub.spoke(&["token", "create", "pi-1", "--role", "node", "-n", "default"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.namespace"), "{}", stderr(&out));
    let admin = hub.client();
    for (body, field) in [
        (
            json!({"metadata": {"name": "x"}, "spec": {"role": "root"}}),
            "spec.role",
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"role": "view", "expirationSeconds": 99_999_999_999u64}}),
            "spec.expirationSeconds",
        ),
        (
            json!({"metadata": {"name": "x"}, "spec": {"role": "view", "rol": 1}}),
            "spec.rol",
        ),
        (
            json!({"metadata": {"name": "X_x"}, "spec": {"role": "view"}}),
            "metadata.name",
        ),
    ] {
        let (code, _, message) = refusal(admin.create(TOKENS_PATH, &body).await);
        assert_eq!(code, 422, "{body}");
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        code_of(admin.get::<Value>(&format!("{TOKENS_PATH}/x")).await),
        404
    );
}

#[tokio::test]
async fn plain_http_is_refused_unless_the_hub_is_started_with_insecure_http() {
    let hub = Hub::start().await;
    assert!(hub.api_url.starts_with("https://"));
    let addr = hub.api_url.trim_start_matches("https://").to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(b"GET /version HTTP/1.1\r\nHost: hub\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("HTTP request to an HTTPS server"),
        "{answer}"
    );
    let out = spoke_e2e::spoke_cmd(&format!("http://{addr}"), &["get", "pods"]);
    assert!(!out.status.success());

    let dev = Hub::start_opts(None, &["--insecure-http"]).await;
    assert!(dev.api_url.starts_with("http://"));
    let config = std::fs::read_to_string(dev.config_path()).unwrap();
    assert!(!config.contains("certificate-authority-data"), "{config}");
    let out = dev.spoke(&["get", "pods"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Still no entry without a token.
    assert_eq!(code_of(dev.client_with(None).get::<Value>(PODS).await), 401);
}

#[tokio::test]
async fn the_cli_verifies_the_hubs_certificate() {
    let hub = Hub::start().await;
    let other = Hub::start().await;
    let admin = hub.target().token.unwrap();
    let ca = hub.data_dir().join("tls/ca.crt");
    let other_ca = other.data_dir().join("tls/ca.crt");

    // Without the hub's CA (the public web roots only): refused.
    let out = spoke_e2e::spoke_cmd(&hub.api_url, &["--token", &admin, "get", "pods"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot verify the hub") && err.contains("certificate"),
        "{err}"
    );
    // With another hub's CA: refused.
    let out = hub
        .spoke_cmd()
        .args([
            "--certificate-authority",
            other_ca.to_str().unwrap(),
            "get",
            "pods",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot verify the hub"),
        "{}",
        stderr(&out)
    );
    // With this hub's CA, from the config or from a flag: accepted.
    assert!(hub.spoke(&["get", "pods"]).status.success());
    let out = spoke_e2e::spoke_cmd(
        &hub.api_url,
        &[
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            &admin,
            "get",
            "pods",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // localhost is in the certificate too.
    let port = hub.api_url.rsplit(':').next().unwrap();
    let out = spoke_e2e::spoke_cmd(
        &format!("https://localhost:{port}"),
        &[
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            &admin,
            "get",
            "pods",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_and_never_what_was_sent() {
    let hub = Hub::start().await;
    let admin = hub.client();
    let mut p = pod("p");
    p["spec"]["containers"][0]["env"] = json!([{"name": "PASSWORD", "value": "pod-env-s3cr3t"}]);
    admin.create(PODS, &p).await.unwrap();
    // A Secret (served or not by this hub version): its data must not be logged either way.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                        "stringData": {"password": "super-s3cr3t"}, "data": {"key": "c3VwZXItc2VjcmV0LWtleQ=="}});
    let _ = admin
        .create("/api/v1/namespaces/default/secrets", &secret)
        .await;
    let viewer_secret = token(&hub, &["viewer", "--role", "view"]);
    let viewer = hub.client_with(Some(&viewer_secret));
    assert_eq!(
        code_of(viewer.delete(&format!("{PODS}/p"), None).await),
        403
    );
    assert_eq!(code_of(hub.client_with(None).get::<Value>(PODS).await), 401);

    let audit = hub.data_dir().join("audit.log");
    let entries: Vec<Value> = eventually(
        Duration::from_secs(20),
        "the 401 in the audit log",
        || async {
            let text = std::fs::read_to_string(&audit).ok()?;
            let entries: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("each line is JSON"))
                .collect();
            entries.iter().any(|e| e["code"] == 401).then_some(entries)
        },
    )
    .await;
    let find = |want: Value| {
        let want = want.as_object().unwrap();
        entries
            .iter()
            .find(|e| want.iter().all(|(k, v)| &e[k] == v))
            .unwrap_or_else(|| panic!("no entry like {want:?} in {entries:#?}"))
    };
    let created =
        find(json!({"token": "admin", "verb": "create", "resource": "pods", "code": 201}));
    assert_eq!(
        (created["namespace"].as_str(), created["name"].as_str()),
        (Some("default"), Some("p"))
    );
    assert!(created["time"].is_string());
    find(
        json!({"token": "admin", "verb": "create", "resource": "secrets", "namespace": "default"}),
    );
    find(
        json!({"token": "admin", "verb": "create", "resource": "tokens", "name": "viewer", "code": 201}),
    );
    find(
        json!({"token": "viewer", "verb": "delete", "resource": "pods", "name": "p", "code": 403}),
    );
    find(json!({"token": null, "verb": "list", "resource": "pods", "code": 401}));

    let text = std::fs::read_to_string(&audit).unwrap();
    let hub_log = hub.proc.output();
    let viewer_part = viewer_secret.split_once('.').unwrap().1;
    let admin_part = hub
        .target()
        .token
        .unwrap()
        .split_once('.')
        .unwrap()
        .1
        .to_string();
    for leaked in ["s3cr3t", "c3VwZXItc2VjcmV0LWtleQ", viewer_part, &admin_part] {
        assert!(!text.contains(leaked), "audit log holds {leaked}");
        assert!(!hub_log.contains(leaked), "hub log holds {leaked}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn keys_tokens_and_the_cli_config_are_private_and_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut hub = Hub::start().await;
    let data = hub.data_dir();
    for file in [
        data.join("tls/ca.key"),
        data.join("tls/server.key"),
        data.join("admin.token"),
        data.join("audit.log"),
        hub.config_path(),
    ] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let ca = std::fs::read(data.join("tls/ca.crt")).unwrap();
    let server = std::fs::read(data.join("tls/server.crt")).unwrap();
    let before = hub.target();
    let old_client = hub.client();
    hub.restart().await;
    assert_eq!(std::fs::read(data.join("tls/ca.crt")).unwrap(), ca);
    assert_eq!(std::fs::read(data.join("tls/server.crt")).unwrap(), server);
    assert_eq!(hub.target(), before);
    // A client set up before the restart still trusts the hub and is let in.
    old_client.get::<Value>(PODS).await.unwrap();
}

#[tokio::test]
async fn a_node_token_can_do_only_what_a_node_needs() {
    let hub = Hub::start().await;
    let _agent = hub.agent("pi-1", &[]);
    hub.wait_node_ready("pi-1").await;
    let secret = token(&hub, &["pi-1", "--role", "node"]);
    let node = hub.client_with(Some(&secret));

    let me: Value = node.get("/api/v1/nodes/pi-1").await.unwrap();
    assert_eq!(me["metadata"]["name"], "pi-1");
    let mine: Value = node
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dpi-1")
        .await
        .unwrap();
    assert!(mine["items"].is_array());

    for path in [
        "/api/v1/nodes/pi-2",
        "/api/v1/nodes",
        "/api/v1/pods",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dpi-2",
        PODS,
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces",
        TOKENS_PATH,
        "/apis/spoke.dev/v1/modules",
    ] {
        assert_eq!(code_of(node.get::<Value>(path).await), 403, "{path}");
    }
    assert_eq!(code_of(node.create(PODS, &pod("z")).await), 403);
    assert_eq!(code_of(node.delete("/api/v1/nodes/pi-1", None).await), 403);
    let (_, _, message) = refusal(node.get::<Value>("/api/v1/nodes/pi-2").await);
    assert_eq!(
        message,
        r#"nodes "pi-2" is forbidden: token "pi-1" cannot get resource "nodes" at the cluster scope"#
    );
}
