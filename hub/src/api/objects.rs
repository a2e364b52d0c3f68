//! Generic create/get/list/update/delete for every kind in
//! [`spoke_api::resource::RESOURCES`], with the server-owned metadata and
//! per-kind admission (strict decoding and validation) done here, once.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use spoke_api::core::{Namespace, Node, Pod};
use spoke_api::resource::{RESOURCES, ResourceType};
use spoke_api::validation::{self, FieldError, decode_strict};

use super::{Error, State as AppState};
use crate::store::{self, Store, revision_of};

pub(super) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for rt in RESOURCES {
        let root = rt.collection_path(None);
        if rt.namespaced {
            let coll = format!(
                "{}/namespaces/{{ns}}/{}",
                root.trim_end_matches(&format!("/{}", rt.plural)),
                rt.plural
            );
            router = router
                .route(
                    &root,
                    get(move |s: State<AppState>, q: Query<ListQuery>| list(s, rt, None, q)),
                )
                .route(
                    &coll,
                    get(
                        move |s: State<AppState>, Path(ns): Path<String>, q: Query<ListQuery>| {
                            list(s, rt, Some(ns), q)
                        },
                    )
                    .post(
                        move |s: State<AppState>,
                              Path(ns): Path<String>,
                              h: HeaderMap,
                              b: Bytes| { create(s, rt, Some(ns), h, b) },
                    ),
                )
                .route(
                    &format!("{coll}/{{name}}"),
                    get(
                        move |s: State<AppState>, Path((ns, name)): Path<(String, String)>| {
                            read(s, rt, Some(ns), name)
                        },
                    )
                    .put(
                        move |s: State<AppState>,
                              Path((ns, name)): Path<(String, String)>,
                              h: HeaderMap,
                              b: Bytes| {
                            update(s, rt, Some(ns), name, h, b, false)
                        },
                    )
                    .delete(
                        move |s: State<AppState>,
                              Path((ns, name)): Path<(String, String)>,
                              q: Query<DeleteQuery>,
                              b: Bytes| {
                            delete(s, rt, Some(ns), name, q, b)
                        },
                    ),
                )
                .route(
                    &format!("{coll}/{{name}}/status"),
                    get(
                        move |s: State<AppState>, Path((ns, name)): Path<(String, String)>| {
                            read(s, rt, Some(ns), name)
                        },
                    )
                    .put(
                        move |s: State<AppState>,
                              Path((ns, name)): Path<(String, String)>,
                              h: HeaderMap,
                              b: Bytes| {
                            update(s, rt, Some(ns), name, h, b, true)
                        },
                    ),
                );
            if rt.kind == "Pod" {
                router = router.route(
                    &format!("{coll}/{{name}}/log"),
                    get(
                        move |s: State<AppState>,
                              Path((ns, name)): Path<(String, String)>,
                              q: Query<LogQuery>| {
                            pod_log(s, ns, name, q)
                        },
                    ),
                );
            }
        } else {
            router = router
                .route(
                    &root,
                    get(move |s: State<AppState>, q: Query<ListQuery>| list(s, rt, None, q)).post(
                        move |s: State<AppState>, h: HeaderMap, b: Bytes| create(s, rt, None, h, b),
                    ),
                )
                .route(
                    &format!("{root}/{{name}}"),
                    get(move |s: State<AppState>, Path(name): Path<String>| {
                        read(s, rt, None, name)
                    })
                    .put(
                        move |s: State<AppState>,
                              Path(name): Path<String>,
                              h: HeaderMap,
                              b: Bytes| {
                            update(s, rt, None, name, h, b, false)
                        },
                    )
                    .delete(
                        move |s: State<AppState>,
                              Path(name): Path<String>,
                              q: Query<DeleteQuery>,
                              b: Bytes| { delete(s, rt, None, name, q, b) },
                    ),
                )
                .route(
                    &format!("{root}/{{name}}/status"),
                    get(move |s: State<AppState>, Path(name): Path<String>| {
                        read(s, rt, None, name)
                    })
                    .put(
                        move |s: State<AppState>,
                              Path(name): Path<String>,
                              h: HeaderMap,
                              b: Bytes| {
                            update(s, rt, None, name, h, b, true)
                        },
                    ),
                );
        }
    }
    router
}

/// Now, as Kubernetes writes timestamps.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Reads a request body as JSON, or YAML when the client says so. A body
/// without Content-Type is JSON (the official Python client sends none).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    let value: Value = if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("request body is not valid YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(Error::BadRequest("request body must be an object".into()));
    }
    Ok(value)
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Decodes and validates an object of kind `rt`; returns it re-encoded, so
/// that only known fields are stored.
fn admit(rt: &ResourceType, value: Value) -> Result<Value, Error> {
    let name = name_of(&value);
    let invalid = |causes: Vec<FieldError>| Error::Invalid {
        kind: rt.kind.to_string(),
        name: name.clone(),
        causes,
    };
    let encoded = match rt.kind {
        "Pod" => {
            let pod: Pod = decode_strict(value).map_err(invalid)?;
            let errs = validation::validate_pod(&pod);
            if !errs.is_empty() {
                return Err(invalid(errs));
            }
            serde_json::to_value(pod)
        }
        "Node" => {
            let node: Node = decode_strict(value).map_err(invalid)?;
            let mut errs = Vec::new();
            validation::validate_meta(&node.metadata, false, &mut errs);
            if !errs.is_empty() {
                return Err(invalid(errs));
            }
            serde_json::to_value(node)
        }
        "Namespace" => {
            let ns: Namespace = decode_strict(value).map_err(invalid)?;
            let mut errs = Vec::new();
            validation::validate_meta(&ns.metadata, false, &mut errs);
            if let Err(m) = validation::dns1123_label(&ns.metadata.name) {
                errs.push(FieldError {
                    field: "metadata.name".into(),
                    reason: "FieldValueInvalid",
                    message: m,
                });
            }
            if !errs.is_empty() {
                return Err(invalid(errs));
            }
            serde_json::to_value(ns)
        }
        other => return Err(Error::Internal(format!("no admission for kind {other}"))),
    };
    encoded.map_err(|e| Error::Internal(e.to_string()))
}

/// Checks `apiVersion`/`kind` against the route and fills them in if absent.
fn check_type(rt: &ResourceType, value: &mut Value) -> Result<(), Error> {
    let want_version = rt.api_version();
    for (field, want) in [("apiVersion", want_version.as_str()), ("kind", rt.kind)] {
        match value.get(field).and_then(Value::as_str) {
            None => {
                value[field] = json!(want);
            }
            Some(got) if got == want => {}
            Some(got) => {
                return Err(Error::BadRequest(format!(
                    "{field} \"{got}\" does not match the request path, which is for {want}"
                )));
            }
        }
    }
    Ok(())
}

/// Puts the request's namespace into the object, refusing a different one.
fn check_namespace(value: &mut Value, namespace: Option<&str>) -> Result<(), Error> {
    if let Some(ns) = namespace {
        match value.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(got) if got != ns => {
                return Err(Error::BadRequest(format!(
                    "the namespace of the provided object (\"{got}\") does not match the namespace sent on the request (\"{ns}\")"
                )));
            }
            _ => value["metadata"]["namespace"] = json!(ns),
        }
    }
    Ok(())
}

async fn ensure_namespace(
    store: &Store,
    rt: &ResourceType,
    namespace: Option<&str>,
) -> Result<(), Error> {
    if let (true, Some(ns)) = (rt.namespaced, namespace)
        && store
            .get(&store::key("namespaces", None, ns))
            .await?
            .is_none()
    {
        return Err(Error::NotFound {
            kind: "namespaces".into(),
            name: ns.to_string(),
        });
    }
    Ok(())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Creates an object on behalf of a client or of the hub itself.
pub async fn create_object(
    store: &Store,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    mut value: Value,
) -> Result<Value, Error> {
    check_type(rt, &mut value)?;
    if !value.get("metadata").is_some_and(Value::is_object) {
        value["metadata"] = json!({});
    }
    check_namespace(&mut value, namespace.filter(|_| rt.namespaced))?;
    if name_of(&value).is_empty()
        && let Some(prefix) = value
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
    {
        value["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let mut value = admit(rt, value)?;
    ensure_namespace(store, rt, namespace).await?;
    let meta = value["metadata"]
        .as_object_mut()
        .expect("admitted objects have metadata");
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(owned);
    }
    if rt.kind == "Pod" {
        // Status is the scheduler's and the agent's to write.
        value["status"] = json!({"phase": "Pending"});
    }
    if rt.kind == "Namespace" {
        value["status"] = json!({"phase": "Active"});
    }
    let name = name_of(&value);
    let key = store::key(rt.plural, namespace.filter(|_| rt.namespaced), &name);
    store
        .create(&key, value)
        .await
        .map_err(|e| Error::from_store(e, rt.plural, &name))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    pub(super) label_selector: Option<String>,
    pub(super) field_selector: Option<String>,
    pub(super) watch: Option<String>,
    pub(super) resource_version: Option<String>,
    pub(super) allow_watch_bookmarks: Option<bool>,
    pub(super) timeout_seconds: Option<u64>,
}

impl ListQuery {
    /// Whether `object` passes the label and field selectors.
    pub(super) fn matches(&self, object: &Value) -> Result<bool, Error> {
        if let Some(sel) = &self.label_selector {
            let empty = serde_json::Map::new();
            let labels = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            if !selector_matches(sel, labels)? {
                return Ok(false);
            }
        }
        match &self.field_selector {
            Some(sel) => field_matches(sel, object),
            None => Ok(true),
        }
    }
}

/// `a=b,c!=d` equality selectors on labels; enough for `-l app=hello`.
fn selector_matches(
    selector: &str,
    labels: &serde_json::Map<String, Value>,
) -> Result<bool, Error> {
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (key, want, equal) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, v, true)
        } else {
            return Err(Error::BadRequest(format!(
                "unable to parse selector term \"{term}\": only key=value and key!=value are supported yet"
            )));
        };
        let got = labels.get(key.trim()).and_then(Value::as_str);
        if (got == Some(want.trim())) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `spec.nodeName=x`, `metadata.name=x`, `status.phase=x`, `metadata.namespace=x`.
fn field_matches(selector: &str, object: &Value) -> Result<bool, Error> {
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, want, equal) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, v, true)
        } else {
            return Err(Error::BadRequest(format!(
                "unable to parse field selector \"{term}\""
            )));
        };
        let pointer = match field.trim() {
            "metadata.name" => "/metadata/name",
            "metadata.namespace" => "/metadata/namespace",
            "spec.nodeName" => "/spec/nodeName",
            "status.phase" => "/status/phase",
            other => {
                return Err(Error::BadRequest(format!(
                    "field label not supported: {other} (supported: metadata.name, metadata.namespace, spec.nodeName, status.phase)"
                )));
            }
        };
        let got = object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("");
        if (got == want.trim()) != equal {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, Error> {
    let ns = namespace.as_deref().filter(|_| rt.namespaced);
    if matches!(q.watch.as_deref(), Some("true" | "1")) {
        return super::watch::serve(&state.store, rt, &store::prefix(rt.plural, ns), q).await;
    }
    let (items, revision) = state.store.list(&store::prefix(rt.plural, ns)).await?;
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        if q.matches(&item)? {
            kept.push(item);
        }
    }
    Ok(axum::Json(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": kept,
    }))
    .into_response())
}

async fn read(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: String,
) -> Result<Response, Error> {
    let key = store::key(rt.plural, namespace.as_deref(), &name);
    match state.store.get(&key).await? {
        Some(obj) => Ok(axum::Json(obj).into_response()),
        None => Err(Error::NotFound {
            kind: rt.plural.to_string(),
            name,
        }),
    }
}

async fn create(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let value = parse_body(&headers, &body)?;
    let created = create_object(&state.store, rt, namespace.as_deref(), value).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn update(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: String,
    headers: HeaderMap,
    body: Bytes,
    status_only: bool,
) -> Result<Response, Error> {
    let mut value = parse_body(&headers, &body)?;
    check_type(rt, &mut value)?;
    if name_of(&value) != name {
        return Err(Error::BadRequest(format!(
            "the name of the object (\"{}\") does not match the name on the URL (\"{name}\")",
            name_of(&value)
        )));
    }
    let ns = namespace.as_deref().filter(|_| rt.namespaced);
    check_namespace(&mut value, ns)?;
    let expected = revision_of(&value);
    let key = store::key(rt.plural, ns, &name);
    let current = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: rt.plural.to_string(),
            name: name.clone(),
        })?;
    let next = if status_only {
        let mut next = current.clone();
        next["status"] = value.get("status").cloned().unwrap_or(Value::Null);
        admit(rt, next)?
    } else {
        let mut next = admit(rt, value)?;
        // Server-owned metadata and the status stay as stored.
        for owned in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current["metadata"].get(owned) {
                Some(v) => next["metadata"][owned] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(owned);
                    }
                }
            }
        }
        if let Some(status) = current.get("status") {
            next["status"] = status.clone();
        }
        if rt.kind == "Pod" {
            // A binding is permanent: an apply without nodeName keeps it.
            let bound = current.pointer("/spec/nodeName").cloned();
            match (bound, next.pointer("/spec/nodeName").cloned()) {
                (Some(b), None) => next["spec"]["nodeName"] = b,
                (Some(b), Some(n)) if b != n => {
                    return Err(Error::Invalid {
                        kind: rt.kind.into(),
                        name,
                        causes: vec![FieldError {
                            field: "spec.nodeName".into(),
                            reason: "FieldValueForbidden",
                            message: "may not be changed once the pod is bound to a node".into(),
                        }],
                    });
                }
                _ => {}
            }
        }
        if next.get("spec") != current.get("spec") {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        next
    };
    let stored = state
        .store
        .update(&key, next, expected)
        .await
        .map_err(|e| Error::from_store(e, rt.plural, &name))?;
    Ok(axum::Json(stored).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteQuery {
    grace_period_seconds: Option<i64>,
}

async fn delete(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: String,
    Query(q): Query<DeleteQuery>,
    body: Bytes,
) -> Result<Response, Error> {
    if rt.kind == "Namespace" {
        return Err(Error::MethodNotAllowed(
            "deleting namespaces is not supported yet".into(),
        ));
    }
    // DeleteOptions may come in the body, as kubectl and client libraries send them.
    let body_grace = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| Error::BadRequest(format!("DeleteOptions is not valid JSON: {e}")))?
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
    };
    let grace = q.grace_period_seconds.or(body_grace);
    let ns = namespace.as_deref().filter(|_| rt.namespaced);
    let key = store::key(rt.plural, ns, &name);
    let not_found = || Error::NotFound {
        kind: rt.plural.to_string(),
        name: name.clone(),
    };
    let current = state.store.get(&key).await?.ok_or_else(not_found)?;
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some();
    if rt.kind == "Pod" && bound && grace != Some(0) {
        // A pod on a board is deleted in two steps, as in Kubernetes: mark
        // it, let the agent stop it and report it gone, then remove it.
        let grace = grace
            .or_else(|| {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        let marked = state
            .store
            .modify(&key, |cur| {
                if cur.pointer("/metadata/deletionTimestamp").is_some() {
                    return None;
                }
                let mut next = cur.clone();
                next["metadata"]["deletionTimestamp"] = json!(
                    humantime::format_rfc3339_seconds(
                        SystemTime::now() + Duration::from_secs(grace as u64)
                    )
                    .to_string()
                );
                next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                Some(next)
            })
            .await
            .map_err(|e| Error::from_store(e, rt.plural, &name))?;
        let object = match marked {
            Some(o) => o,
            None => state.store.get(&key).await?.ok_or_else(not_found)?,
        };
        return Ok(axum::Json(object).into_response());
    }
    let deleted = state
        .store
        .delete(&key, None)
        .await
        .map_err(|e| Error::from_store(e, rt.plural, &name))?;
    Ok(axum::Json(deleted).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogQuery {
    tail_lines: Option<u64>,
}

async fn pod_log(
    State(state): State<AppState>,
    namespace: String,
    name: String,
    Query(q): Query<LogQuery>,
) -> Result<Response, Error> {
    let key = store::key("pods", Some(&namespace), &name);
    let pod = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "pods".into(),
            name: name.clone(),
        })?;
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(Error::BadRequest(format!(
            "pod \"{name}\" is not scheduled to a node yet, so it has no logs"
        )));
    };
    let text = state
        .sync
        .request_logs(node, &namespace, &name, q.tail_lines)
        .await
        .map_err(|e| match e {
            crate::sync::LogError::NotConnected(_) => Error::ServiceUnavailable(e.to_string()),
            crate::sync::LogError::Timeout(_) => Error::Timeout(e.to_string()),
            crate::sync::LogError::Agent(_) => Error::BadRequest(e.to_string()),
            crate::sync::LogError::Publish(_) => Error::Internal(e.to_string()),
        })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_equality_terms() {
        let labels = json!({"app": "hello", "tier": "edge"});
        let labels = labels.as_object().unwrap();
        assert!(selector_matches("app=hello", labels).unwrap());
        assert!(selector_matches("app==hello,tier!=cloud", labels).unwrap());
        assert!(!selector_matches("app=other", labels).unwrap());
        assert!(!selector_matches("missing=x", labels).unwrap());
        assert!(selector_matches("app in (a)", labels).is_err());
    }

    #[test]
    fn field_selectors_read_known_fields_only() {
        let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "pi"}, "status": {"phase": "Running"}});
        assert!(field_matches("spec.nodeName=pi,status.phase=Running", &pod).unwrap());
        assert!(!field_matches("metadata.name=b", &pod).unwrap());
        assert!(field_matches("spec.unknown=x", &pod).is_err());
    }
}
