//! The garbage collector. Objects point at their owners with
//! `metadata.ownerReferences`; when every owner is gone, the dependent goes
//! too. An owner deleted with `Foreground` keeps its `foregroundDeletion`
//! finalizer until its dependents are gone; one deleted with `Orphan` keeps
//! `orphan` until its dependents no longer point at it.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use spoke_api::resource::{RESOURCES, ResourceType};

use crate::api::{DeleteOptions, Error, delete_object, deletion};
use crate::store::{self, Store};

struct Object {
    rt: &'static ResourceType,
    key: String,
    value: Value,
}

impl Object {
    fn ns(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }
    fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    fn uid(&self) -> &str {
        self.value
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    fn owners(&self) -> impl Iterator<Item = &Value> {
        self.value
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }
    fn has_finalizer(&self, f: &str) -> bool {
        self.value
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == f))
    }
    fn deleting(&self) -> bool {
        self.value.pointer("/metadata/deletionTimestamp").is_some()
    }
}

async fn everything(store: &Store) -> Result<Vec<Object>, Error> {
    let mut all = Vec::new();
    for rt in RESOURCES {
        let (items, _) = store.list(&store::prefix(rt.plural, None)).await?;
        for value in items {
            let ns = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|_| rt.namespaced);
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = store::key(rt.plural, ns, name);
            all.push(Object { rt, key, value });
        }
    }
    Ok(all)
}

/// Whether the owner a reference names still exists with that uid. Read
/// from the store, not from the pass's list, which is not one snapshot.
async fn owner_exists(store: &Store, dependent: &Object, owner: &Value) -> Result<bool, Error> {
    let field = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or("");
    let Some(rt) = ResourceType::for_manifest(field("apiVersion"), field("kind")) else {
        // An owner of a kind this hub does not serve cannot be checked;
        // keeping the dependent is the safe side.
        return Ok(true);
    };
    let ns = dependent.ns().filter(|_| rt.namespaced);
    let key = store::key(rt.plural, ns, field("name"));
    Ok(store
        .get(&key)
        .await?
        .is_some_and(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(field("uid"))))
}

/// One pass of the collector over the whole store.
pub async fn pass(store: &Store) -> Result<(), Error> {
    let all = everything(store).await?;
    let uids: HashSet<&str> = all.iter().map(Object::uid).collect();
    let mut dependents: HashMap<&str, Vec<&Object>> = HashMap::new();
    for o in &all {
        for owner in o.owners() {
            if let Some(uid) = owner.get("uid").and_then(Value::as_str) {
                dependents.entry(uid).or_default().push(o);
            }
        }
    }
    for o in all.iter().filter(|o| o.deleting()) {
        let deps = dependents.get(o.uid()).map(Vec::as_slice).unwrap_or(&[]);
        if o.has_finalizer(deletion::ORPHAN) {
            for d in deps {
                orphan(store, d, o.uid()).await?;
            }
            deletion::remove_finalizer(store, &o.key, deletion::ORPHAN).await?;
        } else if o.has_finalizer(deletion::FOREGROUND) {
            if deps.is_empty() {
                deletion::remove_finalizer(store, &o.key, deletion::FOREGROUND).await?;
            }
            let opts = DeleteOptions::with_policy("Foreground");
            for d in deps.iter().filter(|d| !d.deleting()) {
                forget_not_found(delete_object(store, d.rt, d.ns(), d.name(), &opts).await)?;
            }
        }
    }
    // Dependents whose owners are all gone.
    for o in all.iter().filter(|o| !o.deleting()) {
        let mut owners = o.owners().peekable();
        if owners.peek().is_none() {
            continue;
        }
        let mut orphaned = true;
        for owner in owners {
            let uid = owner.get("uid").and_then(Value::as_str).unwrap_or("");
            if uids.contains(uid) || owner_exists(store, o, owner).await? {
                orphaned = false;
                break;
            }
        }
        if orphaned {
            tracing::info!(object = %o.key, "owner gone: collecting");
            forget_not_found(
                delete_object(store, o.rt, o.ns(), o.name(), &DeleteOptions::background()).await,
            )?;
        }
    }
    Ok(())
}

fn forget_not_found(r: Result<Value, Error>) -> Result<(), Error> {
    match r {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the reference to `owner_uid` from a dependent.
async fn orphan(store: &Store, d: &Object, owner_uid: &str) -> Result<(), Error> {
    let r = store
        .modify(&d.key, |cur| {
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
