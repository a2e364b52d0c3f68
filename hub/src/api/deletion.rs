//! Deleting objects, as Kubernetes does it:
//!
//! - An object with finalizers is only marked (`deletionTimestamp`); it is
//!   removed when the last finalizer is, by whoever removes it.
//! - `propagationPolicy`: `Background` (default) removes the owner now and
//!   lets the garbage collector remove dependents; `Foreground` adds the
//!   `foregroundDeletion` finalizer, so the owner stays until its dependents
//!   are gone; `Orphan` adds `orphan`, and the collector strips the owner
//!   reference from dependents instead.
//! - A pod bound to a node is marked and removed only when its agent reports
//!   it stopped (or with grace period 0).
//! - A namespace is marked `Terminating`; the namespace controller deletes
//!   what is in it, then the namespace. `default` and `spoke-system` stay.
//!
//! The HTTP handlers and the controllers both use [`delete_object`].

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use spoke_api::resource::ResourceType;

use super::Error;
use crate::store::{self, Store, revision_of};

/// Finalizer the garbage collector serves for `Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer the garbage collector serves for `Orphan`.
pub const ORPHAN: &str = "orphan";
/// Finalizer the namespace controller serves.
pub const NAMESPACE_FINALIZER: &str = "spoke.dev/namespace";
/// On a pod being deleted: its agent has reported it stopped.
pub const STOPPED_ANNOTATION: &str = "spoke.dev/stopped-on-node";

/// `DeleteOptions`, from the body or the query string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub propagation_policy: Option<String>,
    #[serde(default)]
    pub preconditions: Option<Preconditions>,
    /// The old spelling of `propagationPolicy: Orphan`.
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    pub fn check(&mut self) -> Result<(), Error> {
        if self.orphan_dependents == Some(true) && self.propagation_policy.is_none() {
            self.propagation_policy = Some("Orphan".into());
        }
        match self.propagation_policy.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => {}
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "propagationPolicy \"{other}\" is not one of Background, Foreground, Orphan"
                )));
            }
        }
        if self.grace_period_seconds.is_some_and(|g| g < 0) {
            return Err(Error::BadRequest("gracePeriodSeconds must be >= 0".into()));
        }
        Ok(())
    }

    pub fn background() -> DeleteOptions {
        DeleteOptions::default()
    }

    pub fn with_policy(policy: &str) -> DeleteOptions {
        DeleteOptions {
            propagation_policy: Some(policy.into()),
            ..Default::default()
        }
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Deletes (or marks for deletion) one object. Returns the object as it
/// was last stored.
pub async fn delete_object(
    store: &Store,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, Error> {
    let ns = namespace.filter(|_| rt.namespaced);
    let key = store::key(rt.plural, ns, name);
    let not_found = || Error::NotFound {
        kind: rt.plural.to_string(),
        name: name.to_string(),
    };
    if rt.kind == "Namespace" && crate::SYSTEM_NAMESPACES.contains(&name) {
        return Err(Error::Forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    for _ in 0..16 {
        let current = store.get(&key).await?.ok_or_else(not_found)?;
        if let Some(pre) = &opts.preconditions {
            let uid = current.pointer("/metadata/uid").and_then(Value::as_str);
            if pre.uid.as_deref().is_some_and(|u| Some(u) != uid) {
                return Err(Error::Conflict {
                    kind: rt.plural.into(),
                    name: name.into(),
                    message: "the UID in the precondition does not match the object".into(),
                });
            }
            let rv = current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str);
            if pre
                .resource_version
                .as_deref()
                .is_some_and(|v| Some(v) != rv)
            {
                return Err(Error::Conflict {
                    kind: rt.plural.into(),
                    name: name.into(),
                    message: "the resourceVersion in the precondition does not match the object"
                        .into(),
                });
            }
        }
        let mut fins = finalizers(&current);
        match opts.propagation_policy.as_deref() {
            Some("Foreground") if !fins.iter().any(|f| f == FOREGROUND) => {
                fins.push(FOREGROUND.into())
            }
            Some("Orphan") if !fins.iter().any(|f| f == ORPHAN) => fins.push(ORPHAN.into()),
            _ => {}
        }
        if rt.kind == "Namespace" && !fins.iter().any(|f| f == NAMESPACE_FINALIZER) {
            fins.push(NAMESPACE_FINALIZER.into());
        }
        let bound_pod = rt.kind == "Pod"
            && current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some();
        let force = opts.grace_period_seconds == Some(0);
        let waits_for_node = bound_pod && !force && !stopped(&current);
        let marked = current.pointer("/metadata/deletionTimestamp").is_some();
        if fins.is_empty() && !waits_for_node {
            return match store.delete(&key, revision_of(&current)).await {
                Err(store::Error::Conflict) => continue,
                other => other.map_err(|e| Error::from_store(e, rt.plural, name)),
            };
        }
        if marked && fins == finalizers(&current) && !(force && bound_pod) {
            // Already being deleted; a repeated delete changes nothing.
            return Ok(current);
        }
        let mut next = current.clone();
        if !marked {
            let grace = if bound_pod {
                opts.grace_period_seconds
                    .or_else(|| {
                        current
                            .pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
            } else {
                0
            };
            next["metadata"]["deletionTimestamp"] = json!(rfc3339(
                SystemTime::now() + Duration::from_secs(grace as u64)
            ));
            next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if force && bound_pod {
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        next["metadata"]["finalizers"] = json!(fins);
        if rt.kind == "Namespace" {
            next["status"]["phase"] = json!("Terminating");
        }
        match store.update(&key, next, revision_of(&current)).await {
            Err(store::Error::Conflict) => continue,
            other => {
                let stored = other.map_err(|e| Error::from_store(e, rt.plural, name))?;
                return remove_if_finished(store, &key, stored).await;
            }
        }
    }
    Err(Error::Conflict {
        kind: rt.plural.into(),
        name: name.into(),
        message: "too many concurrent writers; try again".into(),
    })
}

/// Whether a pod being deleted no longer needs its node's word.
fn stopped(obj: &Value) -> bool {
    obj.pointer(&format!(
        "/metadata/annotations/{}",
        STOPPED_ANNOTATION.replace('/', "~1")
    ))
    .is_some()
        || obj.pointer("/metadata/deletionGracePeriodSeconds") == Some(&json!(0))
}

/// Removes `object` (just stored under `key`) if it is marked for deletion
/// and nothing holds it any more; otherwise returns it as it is.
pub async fn remove_if_finished(store: &Store, key: &str, object: Value) -> Result<Value, Error> {
    if object.pointer("/metadata/deletionTimestamp").is_none() || !finalizers(&object).is_empty() {
        return Ok(object);
    }
    let bound_pod = key.starts_with("pods/")
        && object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some();
    if bound_pod && !stopped(&object) {
        return Ok(object);
    }
    match store.delete(key, revision_of(&object)).await {
        Ok(v) => Ok(v),
        // Someone else changed or removed it; they own the next step.
        Err(store::Error::Conflict | store::Error::NotFound) => Ok(object),
        Err(e) => Err(e.into()),
    }
}

/// The agent reported a pod being deleted as stopped: remove it, or, if
/// finalizers still hold it, record that the node is done with it.
pub async fn pod_stopped(store: &Store, key: &str, uid: &str) -> Result<(), Error> {
    for _ in 0..16 {
        let Some(cur) = store.get(key).await? else {
            return Ok(());
        };
        let same = cur.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid);
        if !same || cur.pointer("/metadata/deletionTimestamp").is_none() {
            return Ok(());
        }
        let write = if finalizers(&cur).is_empty() {
            store.delete(key, revision_of(&cur)).await
        } else if stopped(&cur) {
            return Ok(());
        } else {
            let mut next = cur.clone();
            if !next["metadata"]["annotations"].is_object() {
                next["metadata"]["annotations"] = json!({});
            }
            next["metadata"]["annotations"][STOPPED_ANNOTATION] = json!("true");
            store.update(key, next, revision_of(&cur)).await
        };
        match write {
            Err(store::Error::Conflict) => continue,
            Ok(_) | Err(store::Error::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes one finalizer from the object at `key`, then removes the object
/// if that was the last thing holding it.
pub async fn remove_finalizer(store: &Store, key: &str, finalizer: &str) -> Result<(), Error> {
    let result = store
        .modify(key, |cur| {
            let fins = finalizers(cur);
            if !fins.iter().any(|f| f == finalizer) {
                return None;
            }
            let mut next = cur.clone();
            let kept: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
            next["metadata"]["finalizers"] = json!(kept);
            if kept.is_empty()
                && let Some(m) = next["metadata"].as_object_mut()
            {
                m.remove("finalizers");
            }
            Some(next)
        })
        .await;
    match result {
        Ok(Some(obj)) => remove_if_finished(store, key, obj).await.map(drop),
        Ok(None) | Err(store::Error::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
