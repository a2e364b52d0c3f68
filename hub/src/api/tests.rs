//! The API driven in-process through its router, over a real redb file,
//! with the controllers running: the semantics of each verb, as a client
//! sees them. (The end-to-end tests drive the same API over a socket with
//! real agents.)

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{State, router};
use crate::modules::ModuleStore;
use crate::store::{RedbBackend, Store};

struct Api {
    app: Router,
    _dir: tempfile::TempDir,
}

struct Reply {
    code: StatusCode,
    body: Value,
}

impl Api {
    async fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(RedbBackend::open(&dir.path().join("store.redb")).unwrap());
        let ns = spoke_api::resource::ResourceType::lookup("namespaces").unwrap();
        for name in crate::SYSTEM_NAMESPACES {
            super::create_object(&store, ns, None, json!({"metadata": {"name": name}}))
                .await
                .unwrap();
        }
        crate::controllers::spawn(store.clone());
        let modules = Arc::new(ModuleStore::open(&dir.path().join("modules")).unwrap());
        let app = router(State {
            store,
            modules,
            sync: crate::sync::Handle::offline(),
        });
        Api { app, _dir: dir }
    }

    async fn raw(&self, method: Method, path: &str, ct: Option<&str>, body: Vec<u8>) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let code = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply { code, body }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let (ct, bytes) = match body {
            Some(b) => (Some("application/json"), b.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        self.raw(method, path, ct, bytes).await
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method.clone(), path, body).await;
        assert!(
            r.code.is_success(),
            "{method} {path}: {} {}",
            r.code,
            r.body
        );
        r.body
    }

    async fn patch(&self, path: &str, ct: &str, patch: Value) -> Reply {
        self.raw(
            Method::PATCH,
            path,
            Some(ct),
            patch.to_string().into_bytes(),
        )
        .await
    }

    async fn gone(&self, path: &str) {
        for _ in 0..200 {
            if self.call(Method::GET, path, None).await.code == StatusCode::NOT_FOUND {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{path} is still there after 5 s");
    }
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}}})
}

fn cm(name: &str, extra: Value) -> Value {
    let mut v = json!({"metadata": {"name": name}, "data": {"k": "v"}});
    if let (Some(m), Some(e)) = (v["metadata"].as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            m.insert(k.clone(), val.clone());
        }
    }
    v
}

#[tokio::test]
async fn every_kind_is_served_at_its_kubernetes_path() {
    let api = Api::new().await;
    let objects = [
        (CMS, cm("c", json!({}))),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"metadata": {"name": "s"}, "stringData": {"a": "b"}}),
        ),
        (
            "/api/v1/namespaces/default/events",
            json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Test", "message": "m"}),
        ),
        (
            "/api/v1/namespaces/default/resourcequotas",
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}}}),
        ),
        (
            "/api/v1/namespaces/default/limitranges",
            json!({"metadata": {"name": "l"}, "spec": {"limits": [{"type": "Container", "default": {"memory": "32Mi"}}]}}),
        ),
        (DEPLOYS, deployment("web", "web:v1")),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "m", "image": "x:1"}]}}}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "m", "image": "x:1"}]}}}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x:1"}]}}}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/cronjobs",
            json!({"metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "m", "image": "x:1"}]}}}}}}),
        ),
    ];
    for (path, obj) in objects {
        let created = api.ok(Method::POST, path, Some(obj.clone())).await;
        let name = obj["metadata"]["name"].as_str().unwrap();
        assert_eq!(created["metadata"]["generation"], 1, "{path}");
        let got = api.ok(Method::GET, &format!("{path}/{name}"), None).await;
        assert_eq!(got, created, "{path}");
        let list = api.ok(Method::GET, path, None).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{path}");
        assert!(list["kind"].as_str().unwrap().ends_with("List"));
    }
    // Server-side defaults and server-owned fields.
    let job = api
        .ok(
            Method::GET,
            "/apis/batch/v1/namespaces/default/jobs/j",
            None,
        )
        .await;
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["controller-uid"],
        uid
    );
    assert_eq!(job["spec"]["backoffLimit"], 6);
    let secret = api
        .ok(Method::GET, "/api/v1/namespaces/default/secrets/s", None)
        .await;
    assert_eq!(secret["data"]["a"], "Yg==");
    assert!(secret.get("stringData").is_none());
    // A kind under the wrong group is not found, as a Status.
    let r = api
        .call(Method::GET, "/apis/apps/v1/namespaces/default/pods", None)
        .await;
    assert_eq!(r.code, StatusCode::NOT_FOUND);
    assert_eq!(r.body["kind"], "Status");
}

#[tokio::test]
async fn update_is_compare_and_swap_and_generation_follows_the_spec() {
    let api = Api::new().await;
    let created = api
        .ok(Method::POST, DEPLOYS, Some(deployment("web", "web:v1")))
        .await;
    let path = format!("{DEPLOYS}/web");
    // A label change keeps the generation; a spec change bumps it.
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"team": "edge"});
    let labelled = api.ok(Method::PUT, &path, Some(labelled)).await;
    assert_eq!(labelled["metadata"]["generation"], 1);
    let mut scaled = labelled.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaled = api.ok(Method::PUT, &path, Some(scaled)).await;
    assert_eq!(scaled["metadata"]["generation"], 2);
    // A stale resourceVersion loses with 409 and changes nothing.
    let mut stale = created.clone();
    stale["spec"]["replicas"] = json!(9);
    let r = api.call(Method::PUT, &path, Some(stale)).await;
    assert_eq!(r.code, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["reason"], "Conflict");
    let now = api.ok(Method::GET, &path, None).await;
    assert_eq!(now["spec"]["replicas"], 5);
    // The selector of a workload is immutable.
    let mut moved = now.clone();
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let r = api.call(Method::PUT, &path, Some(moved)).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.selector");
}

#[tokio::test]
async fn concurrent_writers_exactly_one_wins_per_resource_version() {
    let api = Arc::new(Api::new().await);
    let created = api.ok(Method::POST, CMS, Some(cm("race", json!({})))).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let api = api.clone();
        let mut next = created.clone();
        next["data"]["k"] = json!(format!("writer-{i}"));
        tasks.push(tokio::spawn(async move {
            api.call(Method::PUT, &format!("{CMS}/race"), Some(next))
                .await
                .code
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let won = codes.iter().filter(|c| **c == StatusCode::OK).count();
    let lost = codes.iter().filter(|c| **c == StatusCode::CONFLICT).count();
    assert_eq!((won, lost), (1, 15), "{codes:?}");
}

#[tokio::test]
async fn three_patch_formats() {
    let api = Api::new().await;
    api.ok(Method::POST, DEPLOYS, Some(deployment("web", "web:v1")))
        .await;
    let path = format!("{DEPLOYS}/web");
    // Strategic merge: containers merge by name, so the image changes and
    // the container keeps its other fields.
    let r = api
        .patch(
            &path,
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "web:v2"}]}}}}),
        )
        .await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:v2"
    );
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(r.body["metadata"]["generation"], 2);
    // Merge patch: null removes a key.
    let r = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        )
        .await;
    assert_eq!(r.body["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    let r = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": null}}}),
        )
        .await;
    assert_eq!(r.body["metadata"]["labels"], json!({"b": "2"}));
    // JSON patch, with a failing test op changing nothing.
    let r = api
        .patch(
            &path,
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
        )
        .await;
    assert_eq!(r.body["spec"]["replicas"], 4);
    let r = api
        .patch(
            &path,
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/replicas", "value": 1},
                   {"op": "replace", "path": "/spec/replicas", "value": 7}]),
        )
        .await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("test failed"));
    // A patch that makes the object invalid is refused with the field.
    let r = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"replicas": -3}}),
        )
        .await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.replicas");
    // Unknown patch type.
    let r = api.patch(&path, "application/json", json!({})).await;
    assert_eq!(r.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        api.ok(Method::GET, &path, None).await["spec"]["replicas"],
        4
    );
}

#[tokio::test]
async fn scale_and_status_subresources_touch_only_their_part() {
    let api = Api::new().await;
    api.ok(Method::POST, DEPLOYS, Some(deployment("web", "web:v1")))
        .await;
    let path = format!("{DEPLOYS}/web");
    let scale = api.ok(Method::GET, &format!("{path}/scale"), None).await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let r = api
        .patch(
            &format!("{path}/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 5}}),
        )
        .await;
    assert_eq!(r.body["spec"]["replicas"], 5, "{}", r.body);
    // Status writes go through /status only.
    let mut obj = api.ok(Method::GET, &path, None).await;
    obj["status"] = json!({"replicas": 5, "readyReplicas": 5});
    let mut stored = api.ok(Method::PUT, &path, Some(obj.clone())).await;
    assert!(stored.get("status").is_none(), "{stored}");
    stored["status"] = obj["status"].clone();
    stored["spec"]["replicas"] = json!(1);
    let stored = api
        .ok(Method::PUT, &format!("{path}/status"), Some(stored))
        .await;
    assert_eq!(
        stored["spec"]["replicas"], 5,
        "a status write keeps the spec"
    );
    assert_eq!(stored["status"]["readyReplicas"], 5);
    assert_eq!(stored["metadata"]["generation"], 2, "scale bumped it once");
    // Kinds without a status subresource have no /status path.
    api.ok(Method::POST, CMS, Some(cm("c", json!({})))).await;
    let r = api
        .call(Method::GET, &format!("{CMS}/c/status"), None)
        .await;
    assert_eq!(r.code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_selectors_and_pages() {
    let api = Api::new().await;
    for (name, env) in [
        ("a", "prod"),
        ("b", "dev"),
        ("c", "prod"),
        ("d", "test"),
        ("e", ""),
    ] {
        let labels = if env.is_empty() {
            json!({})
        } else {
            json!({"env": env})
        };
        api.ok(Method::POST, CMS, Some(cm(name, json!({"labels": labels}))))
            .await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    for (sel, want) in [
        ("env%3Dprod", vec!["a", "c"]),
        ("env%20in%20(dev,test)", vec!["b", "d"]),
        ("env%20notin%20(prod)", vec!["b", "d", "e"]),
        ("env", vec!["a", "b", "c", "d"]),
        ("!env", vec!["e"]),
        ("env!%3Dprod,env", vec!["b", "d"]),
    ] {
        let list = api
            .ok(Method::GET, &format!("{CMS}?labelSelector={sel}"), None)
            .await;
        assert_eq!(names(&list), want, "{sel}");
    }
    let r = api
        .call(
            Method::GET,
            &format!("{CMS}?labelSelector=env%20in%20prod"),
            None,
        )
        .await;
    assert_eq!(r.code, StatusCode::BAD_REQUEST);
    assert!(r.body["message"].as_str().unwrap().contains("parentheses"));
    let list = api
        .ok(
            Method::GET,
            &format!("{CMS}?fieldSelector=metadata.name%3Dc"),
            None,
        )
        .await;
    assert_eq!(names(&list), ["c"]);
    // Pages of two: every object exactly once, then no continue token.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let list = api
            .ok(
                Method::GET,
                &format!("{CMS}?limit=2&continue={token}"),
                None,
            )
            .await;
        pages += 1;
        seen.extend(names(&list));
        match list["metadata"]["continue"].as_str() {
            Some(t) => {
                assert!(list["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                token = t.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let api = Api::new().await;
    api.ok(
        Method::POST,
        CMS,
        Some(cm("held", json!({"finalizers": ["example.com/keep"]}))),
    )
    .await;
    let path = format!("{CMS}/held");
    let marked = api.ok(Method::DELETE, &path, None).await;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        api.call(Method::GET, &path, None).await.code,
        StatusCode::OK
    );
    // No new finalizers while being deleted.
    let r = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": ["example.com/keep", "x/y"]}}),
        )
        .await;
    assert_eq!(r.code, StatusCode::FORBIDDEN, "{}", r.body);
    let r = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    assert_eq!(
        api.call(Method::GET, &path, None).await.code,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn owner_references_cascade_per_propagation_policy() {
    let api = Api::new().await;
    let owner_ref = |o: &Value| {
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": o["metadata"]["name"],
                "uid": o["metadata"]["uid"], "blockOwnerDeletion": true}])
    };
    // Background: the owner goes at once, the collector takes the dependent.
    let owner = api
        .ok(Method::POST, CMS, Some(cm("bg-owner", json!({}))))
        .await;
    api.ok(
        Method::POST,
        CMS,
        Some(cm("bg-dep", json!({"ownerReferences": owner_ref(&owner)}))),
    )
    .await;
    api.ok(Method::DELETE, &format!("{CMS}/bg-owner"), None)
        .await;
    api.gone(&format!("{CMS}/bg-dep")).await;

    // Orphan: the dependent stays, without its owner reference.
    let owner = api
        .ok(Method::POST, CMS, Some(cm("or-owner", json!({}))))
        .await;
    api.ok(
        Method::POST,
        CMS,
        Some(cm("or-dep", json!({"ownerReferences": owner_ref(&owner)}))),
    )
    .await;
    api.ok(
        Method::DELETE,
        &format!("{CMS}/or-owner?propagationPolicy=Orphan"),
        None,
    )
    .await;
    api.gone(&format!("{CMS}/or-owner")).await;
    let dep = api.ok(Method::GET, &format!("{CMS}/or-dep"), None).await;
    assert!(dep["metadata"].get("ownerReferences").is_none(), "{dep}");

    // Foreground: the owner waits for its dependent (held here by a
    // finalizer), then goes.
    let owner = api
        .ok(Method::POST, CMS, Some(cm("fg-owner", json!({}))))
        .await;
    api.ok(
        Method::POST,
        CMS,
        Some(cm(
            "fg-dep",
            json!({"ownerReferences": owner_ref(&owner), "finalizers": ["example.com/hold"]}),
        )),
    )
    .await;
    let body =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"});
    api.ok(Method::DELETE, &format!("{CMS}/fg-owner"), Some(body))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = api.ok(Method::GET, &format!("{CMS}/fg-owner"), None).await;
    assert_eq!(
        held["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let dep = api.ok(Method::GET, &format!("{CMS}/fg-dep"), None).await;
    assert!(dep["metadata"]["deletionTimestamp"].is_string(), "{dep}");
    api.patch(
        &format!("{CMS}/fg-dep"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    api.gone(&format!("{CMS}/fg-dep")).await;
    api.gone(&format!("{CMS}/fg-owner")).await;

    // A dependent created for an owner that never existed is collected.
    api.ok(
        Method::POST,
        CMS,
        Some(cm("stray", json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "nobody", "uid": "no-such-uid"}]}))),
    )
    .await;
    api.gone(&format!("{CMS}/stray")).await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let api = Api::new().await;
    api.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "farm"}})),
    )
    .await;
    let cms = "/api/v1/namespaces/farm/configmaps";
    api.ok(Method::POST, cms, Some(cm("one", json!({})))).await;
    api.ok(
        Method::POST,
        "/api/v1/namespaces/farm/pods",
        Some(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m", "image": "x:1"}]}})),
    )
    .await;
    let ns = api
        .ok(Method::DELETE, "/api/v1/namespaces/farm", None)
        .await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    api.gone("/api/v1/namespaces/farm").await;
    assert_eq!(
        api.call(Method::GET, &format!("{cms}/one"), None)
            .await
            .code,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, "/api/v1/namespaces/farm/pods/p", None)
            .await
            .code,
        StatusCode::NOT_FOUND
    );
    let r = api
        .call(Method::DELETE, "/api/v1/namespaces/default", None)
        .await;
    assert_eq!(r.code, StatusCode::FORBIDDEN);
    assert_eq!(
        api.ok(Method::GET, "/api/v1/namespaces/default", None)
            .await["status"]["phase"],
        "Active"
    );
}

#[tokio::test]
async fn creating_in_a_terminating_namespace_is_refused() {
    let api = Api::new().await;
    api.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "tmp"}})),
    )
    .await;
    // Hold the namespace open with a finalized object.
    api.ok(
        Method::POST,
        "/api/v1/namespaces/tmp/configmaps",
        Some(cm("held", json!({"finalizers": ["example.com/keep"]}))),
    )
    .await;
    api.ok(Method::DELETE, "/api/v1/namespaces/tmp", None).await;
    let r = api
        .call(
            Method::POST,
            "/api/v1/namespaces/tmp/configmaps",
            Some(cm("new", json!({}))),
        )
        .await;
    assert_eq!(r.code, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("being terminated")
    );
}

#[tokio::test]
async fn requests_clients_get_wrong_are_answered_with_status_objects() {
    let api = Api::new().await;
    // No Content-Type: JSON, as the official Python client sends it.
    let r = api
        .raw(
            Method::POST,
            CMS,
            None,
            cm("plain", json!({})).to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.code, StatusCode::CREATED, "{}", r.body);
    // YAML bodies.
    let r = api
        .raw(
            Method::POST,
            CMS,
            Some("application/yaml"),
            b"metadata:\n  name: from-yaml\ndata:\n  a: b\n".to_vec(),
        )
        .await;
    assert_eq!(r.code, StatusCode::CREATED, "{}", r.body);
    // Over the body cap: 413, as a Status, and nothing stored.
    let big = "x".repeat(super::MAX_OBJECT_BYTES + 1);
    let r = api
        .raw(
            Method::POST,
            CMS,
            Some("application/json"),
            cm("big", json!({}))
                .to_string()
                .replace("\"v\"", &format!("\"{big}\""))
                .into_bytes(),
        )
        .await;
    assert_eq!(r.code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["reason"], "RequestEntityTooLarge");
    assert_eq!(
        api.call(Method::GET, &format!("{CMS}/big"), None)
            .await
            .code,
        StatusCode::NOT_FOUND
    );
    // Unknown path and unsupported method.
    let r = api.call(Method::GET, "/api/v1/gadgets", None).await;
    assert_eq!(
        (r.code, r.body["kind"].as_str()),
        (StatusCode::NOT_FOUND, Some("Status"))
    );
    let r = api.call(Method::PATCH, CMS, None).await;
    assert_eq!(r.code, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["kind"], "Status");
    // A query string that does not parse.
    let r = api
        .call(Method::GET, &format!("{CMS}?limit=lots"), None)
        .await;
    assert_eq!(
        (r.code, r.body["kind"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Status"))
    );
    // Kubernetes' limit is an int64: the largest one is "no limit", also
    // where usize is 32 bits.
    let r = api
        .call(Method::GET, &format!("{CMS}?limit={}", i64::MAX), None)
        .await;
    assert_eq!(r.code, StatusCode::OK, "{}", r.body);
    // generateName.
    let made = api
        .ok(
            Method::POST,
            CMS,
            Some(json!({"metadata": {"generateName": "gen-"}})),
        )
        .await;
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn limit_ranges_default_pods_and_quotas_refuse_them_by_name() {
    let api = Api::new().await;
    api.ok(
        Method::POST,
        "/api/v1/namespaces/default/limitranges",
        Some(
            json!({"metadata": {"name": "defaults"}, "spec": {"limits": [
            {"type": "Container", "default": {"memory": "32Mi"}, "max": {"memory": "64Mi"}}]}}),
        ),
    )
    .await;
    api.ok(
        Method::POST,
        "/api/v1/namespaces/default/resourcequotas",
        Some(json!({"metadata": {"name": "compute"}, "spec": {"hard": {"pods": "1"}}})),
    )
    .await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, resources: Value| {
        json!({"metadata": {"name": name}, "spec": {"containers": [
            {"name": "m", "image": "x:1", "resources": resources}]}})
    };
    let r = api
        .call(
            Method::POST,
            pods,
            Some(pod("huge", json!({"limits": {"memory": "1Gi"}}))),
        )
        .await;
    assert_eq!(r.code, StatusCode::FORBIDDEN);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("maximum memory usage per Container is 64Mi"),
        "{}",
        r.body
    );
    let first = api
        .ok(Method::POST, pods, Some(pod("first", json!({}))))
        .await;
    let res = &first["spec"]["containers"][0]["resources"];
    assert_eq!(
        (
            res["limits"]["memory"].as_str(),
            res["requests"]["memory"].as_str()
        ),
        (Some("32Mi"), Some("32Mi"))
    );
    let r = api
        .call(Method::POST, pods, Some(pod("second", json!({}))))
        .await;
    assert_eq!(r.code, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body["message"],
        "pods \"second\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1"
    );
    // The quota's status shows what is used.
    for _ in 0..100 {
        let q = api
            .ok(
                Method::GET,
                "/api/v1/namespaces/default/resourcequotas/compute",
                None,
            )
            .await;
        if q["status"]["used"]["pods"] == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("quota status.used never showed the pod");
}

#[tokio::test]
async fn unknown_fields_are_refused_unless_the_client_asks_to_warn_or_ignore() {
    let api = Api::new().await;
    let body = json!({"metadata": {"name": "w"}, "data": {"a": "b"}, "colour": "red",
                      "extra": {"nested": 1}});
    let r = api.call(Method::POST, CMS, Some(body.clone())).await;
    assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{CMS}?fieldValidation=Warn"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let warnings: Vec<String> = res
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("colour")),
        "{warnings:?}"
    );
    let stored = api.ok(Method::GET, &format!("{CMS}/w"), None).await;
    assert!(stored.get("colour").is_none() && stored.get("extra").is_none());
    assert_eq!(stored["data"]["a"], "b");
    let r = api
        .call(
            Method::POST,
            &format!("{CMS}?fieldValidation=Sometimes"),
            Some(body),
        )
        .await;
    assert_eq!(r.code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn kubectls_table_requests_get_tables_with_its_columns() {
    let api = Api::new().await;
    api.ok(Method::POST, DEPLOYS, Some(deployment("web", "web:v1")))
        .await;
    api.ok(
        Method::POST,
        CMS,
        Some(cm("demo", json!({"labels": {"tier": "edge"}}))),
    )
    .await;
    let table = |path: &str| {
        let req = Request::builder()
            .uri(path)
            .header(
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .body(Body::empty())
            .unwrap();
        let app = api.app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let code = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (code, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (code, list) = table(DEPLOYS).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("Table"), Some("meta.k8s.io/v1"))
    );
    let names: Vec<&str> = list["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let row = &list["rows"][0];
    assert_eq!(row["cells"][0], "web");
    assert_eq!(row["cells"][6], "web:v1");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert!(list["metadata"]["resourceVersion"].is_string());

    // One object, with the whole object in the row when asked.
    let (_, one) = table(&format!("{CMS}/demo?includeObject=Object")).await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert_eq!(one["rows"][0]["cells"][1], 1);
    assert_eq!(one["rows"][0]["object"]["data"]["k"], "v");
    let (code, _) = table(&format!("{CMS}?includeObject=All")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // Without the Accept header, the same path answers the object itself.
    let plain = api.ok(Method::GET, &format!("{CMS}/demo"), None).await;
    assert_eq!(plain["kind"], "ConfigMap");
}
