//! Generic get/list/watch/create/update/patch/delete for every kind in
//! [`spoke_api::resource::RESOURCES`], with the `status` and `scale`
//! subresources, pod logs and pod eviction. Server-owned metadata is set here, once;
//! per-kind rules live in [`super::admission`], deletion in
//! [`super::deletion`].

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use spoke_api::resource::{RESOURCES, ResourceType};
use spoke_api::selector::Selector;
use spoke_api::validation::FieldError;

use super::admission::{admit, default_tolerations, has_node_state_tolerations, select_job_pods};
use super::deletion::{self, DeleteOptions};
use super::patch;
use super::table;
use super::{Error, State as AppState};
use crate::store::{self, Store, revision_of};

/// Path parameters: `ns` for namespaced kinds, `name` for one object.
type Params = Path<HashMap<String, String>>;

pub(super) fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for rt in RESOURCES {
        let all = rt.collection_path(None);
        let coll = if rt.namespaced {
            rt.collection_path(Some("{ns}"))
        } else {
            all.clone()
        };
        let item = format!("{coll}/{{name}}");
        if rt.namespaced {
            router = router.route(&all, get(move |s, p, q, h| list(s, rt, p, q, h)));
        }
        router = router
            .route(
                &coll,
                get(move |s, p, q, h| list(s, rt, p, q, h))
                    .post(move |s, p, q, h, b| create(s, rt, p, q, h, b))
                    .delete(move |s, p, q, l, h, b| delete_collection(s, rt, p, q, l, h, b)),
            )
            .route(&item, object_routes(rt, Sub::Main));
        if rt.status {
            router = router.route(&format!("{item}/status"), object_routes(rt, Sub::Status));
        }
        if rt.scale {
            router = router.route(&format!("{item}/scale"), object_routes(rt, Sub::Scale));
        }
        if rt.kind == "Pod" {
            router = router
                .route(&format!("{item}/log"), get(pod_log))
                .route(&format!("{item}/eviction"), axum::routing::post(evict_pod));
        }
    }
    router
}

/// Which part of an object a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Main,
    Status,
    Scale,
}

fn object_routes(rt: &'static ResourceType, sub: Sub) -> MethodRouter<AppState> {
    let r = get(move |s, p, q, h| read(s, rt, p, q, h, sub))
        .put(move |s, p, q, h, b| update(s, rt, p, q, h, b, sub))
        .patch(move |s, p, q, h, b| patch_object(s, rt, p, q, h, b, sub));
    if sub == Sub::Main {
        r.delete(move |s, p, q, h, b| delete(s, rt, p, q, h, b))
    } else {
        r
    }
}

/// Now, as Kubernetes writes timestamps.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The namespace (if the kind has one) and name of a request.
fn scope(rt: &ResourceType, params: &HashMap<String, String>) -> (Option<String>, String) {
    let ns = params.get("ns").cloned().filter(|_| rt.namespaced);
    (ns, params.get("name").cloned().unwrap_or_default())
}

/// Reads a request body as JSON, or YAML when the client says so. A body
/// without Content-Type is JSON (the official Python client sends none).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let yaml = content_type(headers).contains("yaml");
    let value: Value = if yaml {
        serde_yaml::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("request body is not valid YAML: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("request body is not valid JSON: {e}")))?
    };
    Ok(value)
}

fn parse_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, Error> {
    let value = parse_body(headers, body)?;
    if !value.is_object() {
        return Err(Error::BadRequest("request body must be an object".into()));
    }
    Ok(value)
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn not_found(rt: &ResourceType, name: &str) -> Error {
    Error::NotFound {
        kind: rt.plural.to_string(),
        name: name.to_string(),
    }
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

/// A namespaced create needs its namespace to exist and not be going away.
async fn ensure_namespace(
    store: &Store,
    rt: &ResourceType,
    namespace: Option<&str>,
) -> Result<(), Error> {
    let (true, Some(ns)) = (rt.namespaced, namespace) else {
        return Ok(());
    };
    match store.get(&store::key("namespaces", None, ns)).await? {
        None => Err(Error::NotFound {
            kind: "namespaces".into(),
            name: ns.to_string(),
        }),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(Error::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
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
    let generated = name_of(&value).is_empty() && value.pointer("/metadata/generateName").is_some();
    if generated {
        let prefix = value["metadata"]["generateName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        value["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    if rt.status && !matches!(rt.kind, "Node") {
        // Status is for controllers and agents to write, not creators.
        if let Some(m) = value.as_object_mut() {
            m.remove("status");
        }
    }
    let mut value = admit(rt, value)?;
    ensure_namespace(store, rt, namespace).await?;
    // Held until the pod is stored, so that quota checks do not interleave.
    let _quota_gate = match (rt.kind, namespace) {
        ("Pod", Some(ns)) => {
            let gate = super::policy::QUOTA_GATE.lock().await;
            value = super::policy::admit_pod(store, ns, value).await?;
            Some(gate)
        }
        _ => None,
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let meta = value["metadata"]
        .as_object_mut()
        .ok_or_else(|| Error::Internal("admitted object without metadata".into()))?;
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    for owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta.remove(owned);
    }
    match rt.kind {
        "Pod" => {
            value["status"] = json!({"phase": "Pending"});
            default_tolerations(&mut value["spec"]);
        }
        "Namespace" => value["status"] = json!({"phase": "Active"}),
        "Job" => select_job_pods(&mut value, &uid),
        _ => {}
    }
    let name = name_of(&value);
    let key = store::key(rt.plural, namespace.filter(|_| rt.namespaced), &name);
    match store.create(&key, value.clone()).await {
        // A generated name that collides gets one more draw, as in Kubernetes.
        Err(store::Error::AlreadyExists) if generated => {
            let prefix = value["metadata"]["generateName"].as_str().unwrap_or("");
            let name = format!("{prefix}{}", random_suffix());
            value["metadata"]["name"] = json!(name);
            let key = store::key(rt.plural, namespace.filter(|_| rt.namespaced), &name);
            store
                .create(&key, value)
                .await
                .map_err(|e| Error::from_store(e, rt.plural, &name))
        }
        other => other.map_err(|e| Error::from_store(e, rt.plural, &name)),
    }
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
    /// Kubernetes' int64; anything above what this machine can count is
    /// simply "no limit" (a 32-bit board cannot hold more anyway).
    pub(super) limit: Option<u64>,
    #[serde(rename = "continue")]
    pub(super) continue_token: Option<String>,
    /// What each row of a Table answer carries.
    pub(super) include_object: Option<String>,
}

/// A list or watch filter, parsed once per request.
pub(super) struct Filter {
    labels: Selector,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    pub(super) fn parse(q: &ListQuery) -> Result<Filter, Error> {
        let labels = Selector::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(|e| Error::BadRequest(format!("labelSelector: {e}")))?;
        let mut fields = Vec::new();
        for term in q
            .field_selector
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (field, want, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, true)
            } else {
                return Err(Error::BadRequest(format!(
                    "fieldSelector: unable to parse \"{term}\" (expected field=value or field!=value)"
                )));
            };
            let pointer = match field.trim() {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                "spec.nodeName" => "/spec/nodeName",
                "status.phase" => "/status/phase",
                "involvedObject.name" => "/involvedObject/name",
                "involvedObject.kind" => "/involvedObject/kind",
                "involvedObject.uid" => "/involvedObject/uid",
                // What kubectl describe sends for an object's events.
                "involvedObject.namespace" => "/involvedObject/namespace",
                "involvedObject.apiVersion" => "/involvedObject/apiVersion",
                "involvedObject.resourceVersion" => "/involvedObject/resourceVersion",
                "involvedObject.fieldPath" => "/involvedObject/fieldPath",
                "reason" => "/reason",
                "source" => "/source/component",
                "type" => "/type",
                other => {
                    return Err(Error::BadRequest(format!(
                        "fieldSelector: field label not supported: {other} (supported: metadata.name, metadata.namespace, spec.nodeName, status.phase, involvedObject.name, involvedObject.kind, involvedObject.uid, involvedObject.namespace, involvedObject.apiVersion, involvedObject.resourceVersion, involvedObject.fieldPath, reason, source, type)"
                    )));
                }
            };
            fields.push((pointer.to_string(), want.trim().to_string(), equal));
        }
        Ok(Filter { labels, fields })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        if !self.labels.is_empty() {
            let labels = object
                .pointer("/metadata/labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            if !self.labels.matches(&labels) {
                return false;
            }
        }
        self.fields.iter().all(|(pointer, want, equal)| {
            let got = object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("");
            (got == want) == *equal
        })
    }
}

/// Where the next page starts: the list's revision and the last key sent.
#[derive(serde::Serialize, Deserialize)]
struct Continue {
    rv: u64,
    after: String,
}

fn encode_continue(c: &Continue) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<Continue, Error> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(b.as_slice()).ok())
        .ok_or_else(|| Error::BadRequest("continue: not a token this hub issued".into()))
}

async fn list(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (ns, _) = scope(rt, &params);
    let filter = Filter::parse(&q)?;
    let table = table::requested(&headers, q.include_object.as_deref())?;
    let prefix = store::prefix(rt.plural, ns.as_deref());
    if matches!(q.watch.as_deref(), Some("true" | "1")) {
        return super::watch::serve(&state.store, rt, &prefix, q, filter, table).await;
    }
    let after = match q.continue_token.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(decode_continue(t)?),
        None => None,
    };
    let (items, revision) = state.store.list(&prefix).await?;
    let limit = q
        .limit
        .filter(|l| *l > 0)
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut kept = Vec::new();
    let mut remaining = 0usize;
    let mut next_after = None;
    for item in items {
        let key = store::key(
            rt.plural,
            item.pointer("/metadata/namespace").and_then(Value::as_str),
            &name_of(&item),
        );
        if after
            .as_ref()
            .is_some_and(|a| key.as_str() <= a.after.as_str())
            || !filter.matches(&item)
        {
            continue;
        }
        if limit.is_some_and(|l| kept.len() >= l) {
            remaining += 1;
            continue;
        }
        if limit.is_some_and(|l| kept.len() + 1 == l) {
            next_after = Some(key);
        }
        kept.push(item);
    }
    // Pages after the first are read from the store as it is now; the token
    // carries the first page's revision so the list's resourceVersion stays
    // the one a following watch should start from.
    let list_rv = after.as_ref().map_or(revision, |a| a.rv);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0
        && let Some(after) = next_after
    {
        metadata["continue"] = json!(encode_continue(&Continue { rv: list_rv, after }));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if let Some(table) = table {
        return Ok(axum::Json(table.render(rt, &kept, metadata)).into_response());
    }
    Ok(axum::Json(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": metadata,
        "items": kept,
    }))
    .into_response())
}

async fn get_current(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, Error> {
    store
        .get(&store::key(rt.plural, ns, name))
        .await?
        .ok_or_else(|| not_found(rt, name))
}

/// Query of a read: only what a Table answer carries.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReadQuery {
    include_object: Option<String>,
}

async fn read(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<ReadQuery>,
    headers: HeaderMap,
    sub: Sub,
) -> Result<Response, Error> {
    let (ns, name) = scope(rt, &params);
    let table = table::requested(&headers, q.include_object.as_deref())?;
    let obj = get_current(&state.store, rt, ns.as_deref(), &name).await?;
    if let (Some(table), Sub::Main) = (table, sub) {
        return Ok(axum::Json(table.render_one(rt, &obj)).into_response());
    }
    let out = view(sub, obj);
    Ok(axum::Json(out).into_response())
}

/// `?fieldValidation=`: what to do with fields the kind does not have.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct WriteQuery {
    field_validation: Option<String>,
}

impl WriteQuery {
    /// Applies the policy to `value`: `Strict` (the default: nothing a user
    /// writes is silently dropped) leaves it for admission to refuse;
    /// `Warn` and `Ignore` drop unknown fields, and `Warn` returns a
    /// warning for each.
    fn unknown_fields(&self, rt: &ResourceType, value: &mut Value) -> Result<Vec<String>, Error> {
        match self.field_validation.as_deref() {
            None | Some("Strict") => Ok(Vec::new()),
            Some("Warn") => Ok(drop_unknown_fields(rt, value)),
            Some("Ignore") => {
                drop_unknown_fields(rt, value);
                Ok(Vec::new())
            }
            Some(other) => Err(Error::BadRequest(format!(
                "fieldValidation \"{other}\" is not one of Strict, Warn, Ignore"
            ))),
        }
    }
}

/// Removes the fields admission would refuse as unknown; returns their
/// paths.
fn drop_unknown_fields(rt: &ResourceType, value: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    // Each decode reports the unknown fields it met; a few rounds cover
    // unknown fields nested under other unknown-free paths.
    for _ in 0..4 {
        let Err(Error::Invalid { causes, .. }) = admit(rt, value.clone()) else {
            break;
        };
        let unknown: Vec<String> = causes
            .into_iter()
            .filter(|c| c.reason == "FieldValueUnknown")
            .map(|c| c.field)
            .collect();
        if unknown.is_empty() {
            break;
        }
        for path in unknown {
            remove_path(value, &path);
            dropped.push(path);
        }
    }
    dropped
}

/// Removes `a.b.0.c` from a JSON value.
fn remove_path(value: &mut Value, path: &str) {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = value;
    for p in parents {
        let next = match cur {
            Value::Object(m) => m.get_mut(*p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(*last);
    }
}

/// A response with one `Warning` header per message, as Kubernetes sends
/// them (kubectl prints them).
fn with_warnings(mut res: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"unknown field \\\"{}\\\"\"", w.replace('"', "'"));
        if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
            res.headers_mut().append(header::WARNING, v);
        }
    }
    res
}

async fn create(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (ns, _) = scope(rt, &params);
    let mut value = parse_object(&headers, &body)?;
    let warnings = q.unknown_fields(rt, &mut value)?;
    let created = create_object(&state.store, rt, ns.as_deref(), value).await?;
    Ok(with_warnings(
        (StatusCode::CREATED, axum::Json(created)).into_response(),
        &warnings,
    ))
}

/// What a request on `sub` answers: the Scale view for `/scale`, else the
/// object.
fn view(sub: Sub, obj: Value) -> Value {
    if sub == Sub::Scale {
        scale_of(&obj)
    } else {
        obj
    }
}

/// The `autoscaling/v1` Scale view of a Deployment or ReplicaSet.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value::<spoke_api::selector::LabelSelector>(s.clone()).ok())
        .and_then(|s| s.to_selector().ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// What a write of `incoming` to the part `sub` of `current` stores. The
/// server-owned metadata, and the parts a subresource does not cover, stay
/// as stored; `generation` moves when the spec does.
fn next_version(
    rt: &'static ResourceType,
    current: &Value,
    mut incoming: Value,
    sub: Sub,
) -> Result<Value, Error> {
    let name = name_of(current);
    match sub {
        Sub::Status => {
            let mut next = current.clone();
            next["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            return admit(rt, next);
        }
        Sub::Scale => {
            let replicas = incoming
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| Error::Invalid {
                    kind: "Scale".into(),
                    name: name.clone(),
                    causes: vec![FieldError::required("spec.replicas")],
                })?;
            let mut next = current.clone();
            next["spec"]["replicas"] = json!(replicas);
            incoming = next;
        }
        Sub::Main => {}
    }
    check_type(rt, &mut incoming)?;
    if name_of(&incoming) != name {
        return Err(Error::BadRequest(format!(
            "the name of the object (\"{}\") does not match the name on the URL (\"{name}\")",
            name_of(&incoming)
        )));
    }
    let ns = current
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    check_namespace(&mut incoming, ns)?;
    let mut next = admit(rt, incoming)?;
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
    if rt.status {
        match current.get("status") {
            Some(status) => next["status"] = status.clone(),
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        // Kubernetes: an object being deleted takes no new finalizers.
        let had: Vec<&Value> = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added = next
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|f| !had.contains(&f)));
        if added {
            return Err(Error::Forbidden(format!(
                "{} \"{name}\" is being deleted and may not get new finalizers",
                rt.plural
            )));
        }
    }
    immutable_fields(rt, current, &mut next)?;
    if next.get("spec") != current.get("spec") {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        next["metadata"]["generation"] = json!(generation + 1);
    }
    Ok(next)
}

/// Fields that may not change after create, per kind.
fn immutable_fields(rt: &ResourceType, current: &Value, next: &mut Value) -> Result<(), Error> {
    let forbid = |field: &str, message: &str| Error::Invalid {
        kind: rt.kind.into(),
        name: name_of(current),
        causes: vec![FieldError::new(field, "FieldValueForbidden", message)],
    };
    match rt.kind {
        "Pod" => {
            // A binding is permanent: an apply without nodeName keeps it.
            let bound = current.pointer("/spec/nodeName").cloned();
            match (bound, next.pointer("/spec/nodeName").cloned()) {
                (Some(b), None) => next["spec"]["nodeName"] = b,
                (Some(b), Some(n)) if b != n => {
                    return Err(forbid(
                        "spec.nodeName",
                        "may not be changed once the pod is bound to a node",
                    ));
                }
                _ => {}
            }
            // The tolerations defaulted at create stay when an update (an
            // apply of the original manifest) leaves them out, so that the
            // spec, and the pod running on its board, do not change.
            if has_node_state_tolerations(&current["spec"]) {
                default_tolerations(&mut next["spec"]);
            }
        }
        "Deployment" | "ReplicaSet" | "DaemonSet"
            if current.pointer("/spec/selector") != next.pointer("/spec/selector") =>
        {
            return Err(forbid("spec.selector", "field is immutable"));
        }
        "Job" => {
            if next.pointer("/spec/selector").is_none() {
                next["spec"]["selector"] = current["spec"]["selector"].clone();
                next["spec"]["template"]["metadata"]["labels"] =
                    current["spec"]["template"]["metadata"]["labels"].clone();
            }
            if current.pointer("/spec/selector") != next.pointer("/spec/selector") {
                return Err(forbid("spec.selector", "field is immutable"));
            }
            if current.pointer("/spec/template") != next.pointer("/spec/template") {
                return Err(forbid("spec.template", "field is immutable"));
            }
        }
        "ConfigMap" | "Secret" if current.get("immutable") == Some(&json!(true)) => {
            for f in ["data", "binaryData", "immutable"] {
                if current.get(f) != next.get(f) {
                    return Err(forbid(f, "field is immutable when `immutable` is set"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

async fn update(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
    sub: Sub,
) -> Result<Response, Error> {
    let (ns, name) = scope(rt, &params);
    let mut value = parse_object(&headers, &body)?;
    let warnings = if sub == Sub::Main {
        q.unknown_fields(rt, &mut value)?
    } else {
        Vec::new()
    };
    let expected = revision_of(&value);
    let current = get_current(&state.store, rt, ns.as_deref(), &name).await?;
    let next = next_version(rt, &current, value, sub)?;
    let key = store::key(rt.plural, ns.as_deref(), &name);
    let stored = state
        .store
        .update(&key, next, expected)
        .await
        .map_err(|e| Error::from_store(e, rt.plural, &name))?;
    let stored = deletion::remove_if_finished(&state.store, &key, stored).await?;
    let out = view(sub, stored);
    Ok(with_warnings(axum::Json(out).into_response(), &warnings))
}

async fn patch_object(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
    sub: Sub,
) -> Result<Response, Error> {
    let (ns, name) = scope(rt, &params);
    let ct = content_type(&headers);
    // Server-side apply (`kubectl apply --server-side`), simplified: the
    // applied configuration creates the object, or is merged into it as a
    // strategic merge patch. Spoke keeps no managedFields, so there are no
    // conflicts between managers, and a field dropped from the applied
    // configuration is left in place rather than removed.
    let server_side_apply = ct.starts_with("application/apply-patch+yaml") && sub == Sub::Main;
    let kind = match server_side_apply {
        true => patch::Kind::Strategic,
        false => patch::Kind::from_content_type(ct).ok_or_else(|| {
            Error::UnsupportedMediaType(format!(
                "the body of a PATCH must be application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json or (on the object itself) application/apply-patch+yaml (got \"{ct}\")"
            ))
        })?,
    };
    let patch_doc: Value = if server_side_apply {
        serde_yaml::from_slice(&body).map_err(|e| {
            Error::BadRequest(format!("the applied configuration is not valid YAML: {e}"))
        })?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("the patch is not valid JSON: {e}")))?
    };
    let key = store::key(rt.plural, ns.as_deref(), &name);
    if server_side_apply && state.store.get(&key).await?.is_none() {
        let mut value = patch_doc;
        if !value.is_object() {
            return Err(Error::BadRequest(
                "the applied configuration must be an object".into(),
            ));
        }
        if name_of(&value) != name {
            return Err(Error::BadRequest(format!(
                "metadata.name \"{}\" of the applied configuration does not match the request path, which is for \"{name}\"",
                name_of(&value)
            )));
        }
        let warnings = q.unknown_fields(rt, &mut value)?;
        let created = create_object(&state.store, rt, ns.as_deref(), value).await?;
        return Ok(with_warnings(
            (StatusCode::CREATED, axum::Json(created)).into_response(),
            &warnings,
        ));
    }
    // A patch applies to whatever is stored now, so a lost race is retried
    // unless the patch itself pins a resourceVersion.
    for _ in 0..16 {
        let current = get_current(&state.store, rt, ns.as_deref(), &name).await?;
        let shown = view(sub, current.clone());
        let mut patched = patch::apply(kind, &shown, &patch_doc).map_err(|e| Error::Invalid {
            kind: rt.kind.into(),
            name: name.clone(),
            causes: vec![FieldError::invalid("patch", e)],
        })?;
        let warnings = if sub == Sub::Main {
            q.unknown_fields(rt, &mut patched)?
        } else {
            Vec::new()
        };
        let pinned = revision_of(&patched).filter(|rv| Some(*rv) != revision_of(&current));
        let next = next_version(rt, &current, patched, sub)?;
        let expected = pinned.or(revision_of(&current));
        match state.store.update(&key, next, expected).await {
            Err(store::Error::Conflict) if pinned.is_none() => continue,
            other => {
                let stored = other.map_err(|e| Error::from_store(e, rt.plural, &name))?;
                let stored = deletion::remove_if_finished(&state.store, &key, stored).await?;
                let out = view(sub, stored);
                return Ok(with_warnings(axum::Json(out).into_response(), &warnings));
            }
        }
    }
    Err(Error::Conflict {
        kind: rt.plural.into(),
        name,
        message: "too many concurrent writers; try again".into(),
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteQuery {
    grace_period_seconds: Option<i64>,
    propagation_policy: Option<String>,
}

/// DeleteOptions from the query and the body (kubectl and the client
/// libraries send them in the body); the query wins.
fn delete_options(
    q: &DeleteQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeleteOptions, Error> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        let v = parse_body(headers, body)?;
        serde_json::from_value::<DeleteOptions>(v)
            .map_err(|e| Error::BadRequest(format!("DeleteOptions: {e}")))?
    };
    if q.grace_period_seconds.is_some() {
        opts.grace_period_seconds = q.grace_period_seconds;
    }
    if let Some(p) = &q.propagation_policy {
        opts.propagation_policy = Some(p.clone());
    }
    opts.check()?;
    Ok(opts)
}

async fn delete(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (ns, name) = scope(rt, &params);
    let opts = delete_options(&q, &headers, &body)?;
    let out = deletion::delete_object(&state.store, rt, ns.as_deref(), &name, &opts).await?;
    Ok(axum::Json(out).into_response())
}

/// `DELETE` on a collection: every object that matches the selectors.
async fn delete_collection(
    State(state): State<AppState>,
    rt: &'static ResourceType,
    Path(params): Params,
    Query(q): Query<DeleteQuery>,
    Query(lq): Query<ListQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let (ns, _) = scope(rt, &params);
    let opts = delete_options(&q, &headers, &body)?;
    let filter = Filter::parse(&lq)?;
    let (items, _) = state
        .store
        .list(&store::prefix(rt.plural, ns.as_deref()))
        .await?;
    let mut deleted = Vec::new();
    for item in items.iter().filter(|i| filter.matches(i)) {
        let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
        match deletion::delete_object(&state.store, rt, item_ns, &name_of(item), &opts).await {
            Ok(obj) => deleted.push(obj),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(axum::Json(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": {},
        "items": deleted,
    }))
    .into_response())
}

/// The query of `GET .../pods/NAME/log`, with Kubernetes' parameter names
/// (so kubectl's `--since`, `--since-time`, `--previous` and the clients'
/// `since_seconds=`, `previous=` work).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogQuery {
    tail_lines: Option<u64>,
    /// Booleans as Go's `strconv.ParseBool` reads them: the Python client
    /// sends `True`.
    follow: Option<String>,
    previous: Option<String>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    container: Option<String>,
}

/// A boolean query parameter, read as the Kubernetes API server does.
fn flag(value: Option<&str>, field: &str) -> Result<bool, Error> {
    match value {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(Error::BadRequest(format!(
            "{field}: {other:?} is not a boolean (true or false)"
        ))),
    }
}

impl LogQuery {
    /// Checks the query against `pod` and turns it into what the board is
    /// asked for.
    fn options(&self, pod: &Value) -> Result<crate::sync::LogOptions, Error> {
        let name = name_of(pod);
        let containers: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        if let Some(c) = &self.container
            && !containers.contains(&c.as_str())
        {
            return Err(Error::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        let since_seconds = match self.since_seconds {
            Some(s) if s <= 0 => {
                return Err(Error::BadRequest(format!(
                    "sinceSeconds: Invalid value: {s}: must be greater than 0"
                )));
            }
            s => s.map(|s| s as u64),
        };
        let since_time = match &self.since_time {
            Some(_) if since_seconds.is_some() => {
                return Err(Error::BadRequest(
                    "at most one of sinceTime or sinceSeconds may be specified".into(),
                ));
            }
            Some(t) => {
                let at = humantime::parse_rfc3339_weak(t).map_err(|e| {
                    Error::BadRequest(format!(
                        "sinceTime: {t:?} is not an RFC 3339 time such as 2026-01-02T15:04:05Z: {e}"
                    ))
                })?;
                Some(humantime::format_rfc3339_millis(at).to_string())
            }
            None => None,
        };
        Ok(crate::sync::LogOptions {
            tail_lines: self.tail_lines,
            since_seconds,
            since_time,
            previous: flag(self.previous.as_deref(), "previous")?,
            container: self
                .container
                .clone()
                .or_else(|| containers.first().map(|c| c.to_string())),
        })
    }
}

/// How often a followed log is read again from the board. (The agent
/// answers log requests; a pushed stream over MQTT would save the polls.)
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How many lines each poll of a followed log reads.
const FOLLOW_WINDOW: u64 = 500;

/// The lines of `now` after the last line of `before` (all of `now` if that
/// line is gone, e.g. after the log rotated).
fn new_lines<'a>(before: &str, now: &'a str) -> &'a str {
    let Some(last) = before.lines().last() else {
        return now;
    };
    let needle = format!("{last}\n");
    match now.rfind(&needle) {
        Some(i) => &now[i + needle.len()..],
        None => now,
    }
}

async fn pod_log(
    State(state): State<AppState>,
    Path(params): Params,
    Query(q): Query<LogQuery>,
) -> Result<Response, Error> {
    let namespace = params.get("ns").cloned().unwrap_or_default();
    let name = params.get("name").cloned().unwrap_or_default();
    let pods = ResourceType::lookup("pods").ok_or_else(|| Error::Internal("no pods".into()))?;
    let pod = get_current(&state.store, pods, Some(&namespace), &name).await?;
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(Error::BadRequest(format!(
            "pod \"{name}\" is not scheduled to a node yet, so it has no logs"
        )));
    };
    let log_error = |e: crate::sync::LogError| match e {
        crate::sync::LogError::NotConnected(_) => Error::ServiceUnavailable(e.to_string()),
        crate::sync::LogError::Timeout(_) => Error::Timeout(e.to_string()),
        crate::sync::LogError::Agent(_) => Error::BadRequest(e.to_string()),
        crate::sync::LogError::Publish(_) => Error::Internal(e.to_string()),
    };
    let options = q.options(&pod)?;
    let follow = flag(q.follow.as_deref(), "follow")?;
    let text = state
        .sync
        .request_logs(node, &namespace, &name, &options)
        .await
        .map_err(log_error)?;
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    // The previous instance has ended: there is nothing to follow.
    if !follow || options.previous {
        return Ok((plain, text).into_response());
    }
    // `follow=true` (kubectl logs -f): the log so far, then new lines as
    // they appear, until the pod is gone or has finished, or the board
    // stops answering. Each poll keeps the `since` filter, so that a first
    // answer that `since` left empty does not make the next poll print
    // the older lines as new.
    let node = node.to_string();
    let first = Bytes::from(text.clone());
    let poll = crate::sync::LogOptions {
        tail_lines: Some(FOLLOW_WINDOW),
        ..options
    };
    let rest = futures_util::stream::unfold(
        (state, namespace, name, node, text, false),
        move |(state, ns, name, node, last, done)| {
            let poll = poll.clone();
            async move {
                if done {
                    return None;
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
                let pod = state
                    .store
                    .get(&store::key("pods", Some(&ns), &name))
                    .await
                    .ok()
                    .flatten()?;
                let finished = matches!(
                    pod.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                ) || pod.pointer("/metadata/deletionTimestamp").is_some();
                let now = state
                    .sync
                    .request_logs(&node, &ns, &name, &poll)
                    .await
                    .ok()?;
                let new = Bytes::from(new_lines(&last, &now).to_string());
                Some((
                    Ok::<_, std::convert::Infallible>(new),
                    (state, ns, name, node, now, finished),
                ))
            }
        },
    );
    let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    Ok((plain, axum::body::Body::from_stream(body)).into_response())
}

/// `POST .../pods/NAME/eviction`, the Eviction API that `kubectl drain`
/// and `spoke drain` use. Spoke has no PodDisruptionBudgets yet, so an
/// eviction is the pod's deletion with the Eviction's `deleteOptions`;
/// answers `201` with a `Status`, as Kubernetes does.
async fn evict_pod(
    State(state): State<AppState>,
    Path(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let pods = ResourceType::lookup("pods").ok_or_else(|| Error::Internal("no pods".into()))?;
    let (ns, name) = scope(pods, &params);
    let eviction = parse_object(&headers, &body)?;
    if let Some(kind) = eviction.get("kind").and_then(Value::as_str)
        && kind != "Eviction"
    {
        return Err(Error::BadRequest(format!(
            "kind: the body of an eviction must be an Eviction, not {kind}"
        )));
    }
    if eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n != name)
    {
        return Err(Error::BadRequest(
            "metadata.name: name in URL does not match name in Eviction object".into(),
        ));
    }
    let mut opts = match eviction.get("deleteOptions") {
        Some(o) if !o.is_null() => serde_json::from_value::<DeleteOptions>(o.clone())
            .map_err(|e| Error::BadRequest(format!("deleteOptions: {e}")))?,
        _ => DeleteOptions::default(),
    };
    opts.check()?;
    deletion::delete_object(&state.store, pods, ns.as_deref(), &name, &opts).await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 201});
    Ok((StatusCode::CREATED, axum::Json(status)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(labels: &str, fields: &str) -> Result<Filter, Error> {
        Filter::parse(&ListQuery {
            label_selector: Some(labels.into()),
            field_selector: Some(fields.into()),
            ..Default::default()
        })
    }

    #[test]
    fn filters_combine_label_and_field_selectors() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "hello", "tier": "edge"}},
                         "spec": {"nodeName": "pi"}, "status": {"phase": "Running"}});
        assert!(
            filter("app in (hello,web),!legacy", "spec.nodeName=pi")
                .unwrap()
                .matches(&pod)
        );
        assert!(!filter("tier notin (edge)", "").unwrap().matches(&pod));
        assert!(!filter("", "status.phase!=Running").unwrap().matches(&pod));
        assert!(filter("", "spec.unknown=x").is_err());
        assert!(filter("app in (", "").is_err());
    }

    #[test]
    fn followed_logs_send_only_new_lines() {
        assert_eq!(new_lines("a\nb\n", "a\nb\nc\n"), "c\n");
        assert_eq!(new_lines("", "a\n"), "a\n");
        assert_eq!(new_lines("x\n", "a\nb\n"), "a\nb\n");
        assert_eq!(new_lines("a\nb\n", "b\n"), "");
    }

    #[test]
    fn log_queries_take_kubernetes_parameters_and_name_what_is_wrong() {
        let pod = json!({"metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "main"}, {"name": "side"}]}});
        let query = |q: &str| -> Result<crate::sync::LogOptions, Error> {
            let uri: axum::http::Uri = format!("/log?{q}").parse().unwrap();
            let Query(q) = Query::<LogQuery>::try_from_uri(&uri).unwrap();
            q.options(&pod)
        };
        let o = query("sinceSeconds=60&previous=True&tailLines=3").unwrap();
        assert_eq!(o.since_seconds, Some(60));
        assert!(o.previous);
        assert_eq!(o.tail_lines, Some(3));
        // Without `container`, the pod's first container.
        assert_eq!(o.container.as_deref(), Some("main"));
        let o = query("sinceTime=2026-01-02T15:04:05Z&container=side").unwrap();
        assert_eq!(o.since_time.as_deref(), Some("2026-01-02T15:04:05.000Z"));
        assert_eq!(o.container.as_deref(), Some("side"));
        assert!(!o.previous);
        let err = |q: &str| query(q).unwrap_err().to_string();
        assert!(err("sinceSeconds=0").contains("sinceSeconds"));
        assert!(err("sinceTime=yesterday").contains("sinceTime"));
        assert!(err("sinceSeconds=5&sinceTime=2026-01-02T15:04:05Z").contains("at most one"));
        assert!(err("previous=maybe").contains("previous"));
        assert!(err("container=nope").contains("container nope is not valid for pod p"));
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(&Continue {
            rv: 7,
            after: "pods/default/a".into(),
        });
        let c = decode_continue(&t).unwrap();
        assert_eq!((c.rv, c.after.as_str()), (7, "pods/default/a"));
        assert!(decode_continue("not-a-token").is_err());
    }
}
