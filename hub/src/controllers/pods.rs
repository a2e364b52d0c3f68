//! What the workload controllers share: reading owner references, pod
//! readiness and availability, adopting and releasing dependents, and
//! creating pods (or ReplicaSets, Jobs) from a template with an owner
//! reference.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_api::resource::ResourceType;
use spoke_api::selector::{LabelSelector, Selector};

use crate::api::Error;
use crate::store::{self, Store};

/// `metadata.name`, or "".
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid`, or "".
pub fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "default".
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// Whether the object is marked for deletion.
pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// The object's labels.
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// An annotation's value.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// The uid of the object's controller (the owner reference with
/// `controller: true`), if it has one.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == json!(true))
        .and_then(|r| r["uid"].as_str())
}

/// The parsed `spec.selector` of a workload. A selector that does not
/// parse (admission refuses those) selects nothing rather than everything.
pub fn selector(obj: &Value) -> Option<Selector> {
    let ls: LabelSelector = serde_json::from_value(obj.pointer("/spec/selector")?.clone()).ok()?;
    if ls.is_empty() {
        return None;
    }
    ls.to_selector().ok()
}

/// The owner reference a controller puts on what it creates.
pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn parse_time(t: Option<&Value>) -> Option<SystemTime> {
    t.and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339(s).ok())
}

/// An RFC 3339 timestamp, as Kubernetes writes them.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A timestamp field of an object.
pub fn time_at(obj: &Value, pointer: &str) -> Option<SystemTime> {
    parse_time(obj.pointer(pointer))
}

fn ready_condition(pod: &Value) -> Option<&Value> {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether a pod is ready: its `Ready` condition is `True`; for an agent
/// that sets no `Ready` condition, when it is `Running` and every container
/// runs.
pub fn is_ready(pod: &Value) -> bool {
    if deleting(pod) {
        return false;
    }
    if let Some(c) = ready_condition(pod) {
        return c["status"] == "True";
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    pod.pointer("/status/phase") == Some(&json!("Running"))
        && statuses
            .is_some_and(|s| !s.is_empty() && s.iter().all(|c| c["state"]["running"].is_object()))
}

/// Since when the pod has been ready, if it is.
pub fn ready_since(pod: &Value) -> Option<SystemTime> {
    if !is_ready(pod) {
        return None;
    }
    ready_condition(pod)
        .and_then(|c| parse_time(c.get("lastTransitionTime")))
        .or_else(|| time_at(pod, "/status/startTime"))
        .or(Some(SystemTime::UNIX_EPOCH))
}

/// Whether a pod is available: ready for at least `min_ready` by `now`.
pub fn is_available(pod: &Value, min_ready: Duration, now: SystemTime) -> bool {
    ready_since(pod).is_some_and(|t| min_ready.is_zero() || t + min_ready <= now)
}

/// When a ready pod that is not yet available becomes available.
pub fn available_at(pod: &Value, min_ready: Duration) -> Option<SystemTime> {
    ready_since(pod).map(|t| t + min_ready)
}

/// Whether the pod still counts toward its controller's replicas: not being
/// deleted and not finished.
pub fn is_active(pod: &Value) -> bool {
    !deleting(pod)
        && !matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Every object of a kind in a namespace.
pub async fn list(store: &Store, plural: &str, ns: &str) -> Result<Vec<Value>, Error> {
    Ok(store.list(&store::prefix(plural, Some(ns))).await?.0)
}

/// Every object of a kind in every namespace.
pub async fn list_all(store: &Store, plural: &str) -> Result<Vec<Value>, Error> {
    Ok(store.list(&store::prefix(plural, None)).await?.0)
}

fn rt(plural: &str) -> Result<&'static ResourceType, Error> {
    ResourceType::lookup(plural)
        .ok_or_else(|| Error::Internal(format!("{plural} are not a known kind")))
}

/// Builds an object of `kind` from a template (`metadata` + `spec`), owned
/// by `owner`, named `generate_name` + random suffix (or exactly `name`).
pub async fn create_owned(
    store: &Store,
    plural: &str,
    owner: &Value,
    template: &Value,
    name: Name<'_>,
    extra_labels: &[(&str, &str)],
) -> Result<Value, Error> {
    let rt = rt(plural)?;
    let ns = namespace(owner);
    let mut meta = json!({
        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "ownerReferences": [owner_ref(owner)],
    });
    if let Some(a) = template
        .pointer("/metadata/annotations")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        meta["annotations"] = a.clone();
    }
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    for (k, v) in extra_labels {
        meta["labels"][*k] = json!(v);
    }
    match name {
        Name::Generate(prefix) => meta["generateName"] = json!(prefix),
        Name::Exact(n) => meta["name"] = json!(n),
    }
    let obj = json!({
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    crate::api::create_object(store, rt, Some(ns), obj).await
}

/// How [`create_owned`] names what it creates.
/// Creates `n` pods from `owner`'s `spec.template`, named `<owner>-<random>`
/// and owned by it, recording `SuccessfulCreate` or `FailedCreate` on the
/// owner, as the ReplicaSet and Job controllers of Kubernetes do.
pub async fn create_from_template(
    store: &Store,
    rec: &crate::events::Recorder,
    owner: &Value,
    n: u32,
) -> Result<(), Error> {
    use crate::events::Type;
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let prefix = format!("{}-", name(owner));
    for _ in 0..n {
        match create_owned(
            store,
            "pods",
            owner,
            &template,
            Name::Generate(&prefix),
            &[],
        )
        .await
        {
            Ok(p) => {
                let msg = format!("Created pod: {}", name(&p));
                rec.record(owner, Type::Normal, "SuccessfulCreate", &msg)
                    .await
            }
            Err(e) => {
                let msg = format!("Error creating: {e}");
                rec.record(owner, Type::Warning, "FailedCreate", &msg).await;
                return Err(e);
            }
        }
    }
    Ok(())
}

pub enum Name<'a> {
    Generate(&'a str),
    Exact(&'a str),
}

/// Deletes a dependent as a client would (a bound pod is stopped on its
/// node first). Gone already is fine.
pub async fn delete(store: &Store, plural: &str, obj: &Value) -> Result<(), Error> {
    let opts = crate::api::DeleteOptions::background();
    match crate::api::delete_object(store, rt(plural)?, Some(namespace(obj)), name(obj), &opts)
        .await
    {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Points an orphan at `owner` (adoption), unless it gained a controller
/// in the meantime. Returns whether it was adopted.
pub async fn adopt(store: &Store, plural: &str, obj: &Value, owner: &Value) -> Result<bool, Error> {
    let key = store::key(plural, Some(namespace(obj)), name(obj));
    let want_uid = uid(obj).to_string();
    let r = store
        .modify(&key, |cur| {
            if uid(cur) != want_uid || controller_uid(cur).is_some() || deleting(cur) {
                return None;
            }
            let mut next = cur.clone();
            let refs = &mut next["metadata"]["ownerReferences"];
            if !refs.is_array() {
                *refs = json!([]);
            }
            refs.as_array_mut()?.push(owner_ref(owner));
            Some(next)
        })
        .await;
    match r {
        Ok(v) => Ok(v.is_some()),
        Err(store::Error::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes `owner_uid`'s reference from a dependent that no longer matches
/// its owner's selector.
pub async fn release(
    store: &Store,
    plural: &str,
    obj: &Value,
    owner_uid: &str,
) -> Result<(), Error> {
    let key = store::key(plural, Some(namespace(obj)), name(obj));
    let r = store
        .modify(&key, |cur| {
            let refs = cur.pointer("/metadata/ownerReferences")?.as_array()?;
            let kept: Vec<&Value> = refs.iter().filter(|r| r["uid"] != owner_uid).collect();
            if kept.len() == refs.len() {
                return None;
            }
            let mut next = cur.clone();
            if kept.is_empty() {
                next["metadata"]
                    .as_object_mut()
                    .map(|m| m.remove("ownerReferences"));
            } else {
                next["metadata"]["ownerReferences"] = json!(kept);
            }
            Some(next)
        })
        .await;
    match r {
        Ok(_) | Err(store::Error::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sorts out who a controller's dependents are, as Kubernetes' controller
/// ref manager does: what it controls and its selector still matches stays;
/// what it controls and no longer matches is released; orphans that match
/// are adopted (not while the owner is being deleted). Returns the
/// dependents it now controls.
pub async fn claim(
    store: &Store,
    plural: &str,
    owner: &Value,
    candidates: Vec<Value>,
) -> Result<Vec<Value>, Error> {
    let owner_uid = uid(owner);
    let sel = selector(owner);
    let matches = |o: &Value| sel.as_ref().is_some_and(|s| s.matches(&labels(o)));
    let mut mine = Vec::new();
    for o in candidates {
        match controller_uid(&o) {
            Some(u) if u == owner_uid => {
                if matches(&o) {
                    mine.push(o);
                } else if !deleting(&o) {
                    tracing::info!(owner = name(owner), dependent = name(&o), "releasing");
                    release(store, plural, &o, owner_uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if matches(&o)
                    && !deleting(owner)
                    && !deleting(&o)
                    && adopt(store, plural, &o, owner).await?
                {
                    tracing::info!(owner = name(owner), dependent = name(&o), "adopted");
                    if let Some(cur) = store
                        .get(&store::key(plural, Some(namespace(&o)), name(&o)))
                        .await?
                    {
                        mine.push(cur);
                    }
                }
            }
        }
    }
    Ok(mine)
}

/// Replaces `status` of a stored object when it differs; no-op otherwise.
pub async fn write_status(
    store: &Store,
    plural: &str,
    obj: &Value,
    status: Value,
) -> Result<(), Error> {
    if obj.get("status") == Some(&status) {
        return Ok(());
    }
    let key = store::key(plural, Some(namespace(obj)), name(obj));
    let want_uid = uid(obj).to_string();
    let r = store
        .modify(&key, |cur| {
            if uid(cur) != want_uid || cur.get("status") == Some(&status) {
                return None;
            }
            let mut next = cur.clone();
            next["status"] = status.clone();
            Some(next)
        })
        .await;
    match r {
        Ok(_) | Err(store::Error::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets `spec.replicas` (and optionally annotations) of a dependent
/// workload when they differ.
pub async fn set_replicas(
    store: &Store,
    plural: &str,
    obj: &Value,
    replicas: i32,
    annotations: &[(&str, String)],
) -> Result<(), Error> {
    let key = store::key(plural, Some(namespace(obj)), name(obj));
    let want_uid = uid(obj).to_string();
    let r = store
        .modify(&key, |cur| {
            if uid(cur) != want_uid {
                return None;
            }
            let same_replicas = cur.pointer("/spec/replicas") == Some(&json!(replicas));
            let same_ann = annotations
                .iter()
                .all(|(k, v)| annotation(cur, k) == Some(v.as_str()));
            if same_replicas && same_ann {
                return None;
            }
            let mut next = cur.clone();
            if !same_replicas {
                next["spec"]["replicas"] = json!(replicas);
                let generation = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                next["metadata"]["generation"] = json!(generation + 1);
            }
            if !next["metadata"]["annotations"].is_object() {
                next["metadata"]["annotations"] = json!({});
            }
            for (k, v) in annotations {
                next["metadata"]["annotations"][*k] = json!(v);
            }
            Some(next)
        })
        .await;
    match r {
        Ok(_) | Err(store::Error::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: Option<(&str, &str)>, running: bool) -> Value {
        let mut p = json!({"status": {"phase": phase, "containerStatuses": [
            {"name": "m", "state": if running { json!({"running": {}}) } else { json!({"waiting": {"reason": "X"}}) }}
        ]}});
        if let Some((status, at)) = ready {
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": status, "lastTransitionTime": at}]);
        }
        p
    }

    #[test]
    fn readiness_follows_the_ready_condition_then_running_containers() {
        let t = "2026-11-30T18:00:00Z";
        let cases = [
            (pod("Running", Some(("True", t)), true), true),
            (pod("Running", Some(("False", t)), true), false),
            (pod("Running", None, true), true),
            (pod("Running", None, false), false),
            (pod("Pending", None, true), false),
        ];
        for (i, (p, want)) in cases.iter().enumerate() {
            assert_eq!(is_ready(p), *want, "case {i}: {p}");
        }
        let at = humantime::parse_rfc3339(t).unwrap();
        let p = pod("Running", Some(("True", t)), true);
        let ten = Duration::from_secs(10);
        assert!(!is_available(&p, ten, at + Duration::from_secs(9)));
        assert!(is_available(&p, ten, at + ten));
        assert!(is_available(&p, Duration::ZERO, at));
    }
}
