//! The Deployment controller: owns ReplicaSets named
//! `<deployment>-<hash of the pod template>` (label `pod-template-hash`),
//! rolls from old to new with `RollingUpdate` (`maxSurge`,
//! `maxUnavailable`) or `Recreate`, numbers revisions
//! (`deployment.kubernetes.io/revision`), prunes old ReplicaSets past
//! `revisionHistoryLimit`, and reports status and the `Available` and
//! `Progressing` conditions as Kubernetes does.
//!
//! Rollback is applying an old template again: its hash names the old
//! ReplicaSet, which becomes the new one with the next revision number.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spoke_api::apps::IntOrString;

use super::pods;
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::{self, Store};

/// The label that ties a ReplicaSet (and its pods) to one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The `pod-template-hash` of a template: the first 10 hex digits of the
/// SHA-256 of its JSON with keys in order (a valid label value).
pub fn template_hash(template: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                out.push('{');
                let sorted: BTreeMap<&String, &Value> = m.iter().collect();
                for (k, v) in sorted {
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(v, out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for v in a {
                    canonical(v, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    canonical(template, &mut s);
    hex::encode(&Sha256::digest(s.as_bytes())[..5])
}

/// What the planner needs to know of one ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Rs {
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.replicas`: pods that exist.
    pub current: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// The rollout knobs, resolved against `replicas`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strategy {
    pub replicas: i32,
    pub recreate: bool,
    pub max_surge: i32,
    pub max_unavailable: i32,
}

impl Strategy {
    /// Reads the strategy of a (defaulted) Deployment. As in Kubernetes,
    /// surge rounds up, unavailable rounds down, and if both come to 0,
    /// one pod may be unavailable.
    pub fn of(d: &Value) -> Strategy {
        let replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1) as i32;
        let recreate = d.pointer("/spec/strategy/type") == Some(&json!("Recreate"));
        let get = |f: &str, up: bool| -> i32 {
            d.pointer(&format!("/spec/strategy/rollingUpdate/{f}"))
                .and_then(|v| serde_json::from_value::<IntOrString>(v.clone()).ok())
                .unwrap_or(IntOrString::String("25%".into()))
                .scaled(replicas, up)
                .unwrap_or(0)
        };
        let (mut max_surge, mut max_unavailable) =
            (get("maxSurge", true), get("maxUnavailable", false));
        if recreate {
            (max_surge, max_unavailable) = (0, replicas);
        } else if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Strategy {
            replicas,
            recreate,
            max_surge,
            max_unavailable: max_unavailable.min(replicas),
        }
    }
}

/// One rollout step: the `spec.replicas` each ReplicaSet should have now.
/// Returns only the changes. `old` is ordered oldest first.
pub fn plan(s: &Strategy, new: &Rs, old: &[Rs]) -> Vec<(String, i32)> {
    if s.recreate {
        let scale_down: Vec<(String, i32)> = old
            .iter()
            .filter(|r| r.replicas > 0)
            .map(|r| (r.name.clone(), 0))
            .collect();
        if !scale_down.is_empty() {
            return scale_down;
        }
        // The new pods start only when every old pod is gone.
        if old.iter().any(|r| r.current > 0) || new.replicas == s.replicas {
            return vec![];
        }
        return vec![(new.name.clone(), s.replicas)];
    }
    // Scale the new ReplicaSet up, within the surge.
    let all: i32 = new.replicas + old.iter().map(|r| r.replicas).sum::<i32>();
    if new.replicas > s.replicas {
        return vec![(new.name.clone(), s.replicas)];
    }
    if new.replicas < s.replicas {
        let room = s.replicas + s.max_surge - all;
        if room > 0 {
            let to = new.replicas + room.min(s.replicas - new.replicas);
            return vec![(new.name.clone(), to)];
        }
    }
    // Scale old ones down, never below minAvailable.
    let old_total: i32 = old.iter().map(|r| r.replicas).sum();
    if old_total == 0 {
        return vec![];
    }
    let min_available = s.replicas - s.max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut targets: Vec<i32> = old.iter().map(|r| r.replicas).collect();
    // First the old pods that are not available anyway.
    let mut cleaned = 0;
    for (r, t) in old.iter().zip(targets.iter_mut()) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (r.replicas - r.available).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        *t -= n;
        cleaned += n;
    }
    // Then available ones, down to minAvailable.
    let available: i32 = new.available + old.iter().map(|r| r.available).sum::<i32>();
    let mut budget = (available - min_available)
        .min(max_scaled_down - cleaned)
        .max(0);
    for t in targets.iter_mut() {
        if budget == 0 {
            break;
        }
        let n = (*t).min(budget);
        *t -= n;
        budget -= n;
    }
    old.iter()
        .zip(targets)
        .filter(|(r, t)| r.replicas != *t)
        .map(|(r, t)| (r.name.clone(), t))
        .collect()
}

fn rs_view(rs: &Value) -> Rs {
    let i = |p: &str| rs.pointer(p).and_then(Value::as_i64).unwrap_or(0) as i32;
    Rs {
        name: pods::name(rs).to_string(),
        replicas: i("/spec/replicas"),
        current: i("/status/replicas"),
        available: i("/status/availableReplicas"),
    }
}

fn revision(rs: &Value) -> i64 {
    pods::annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// One pass over every Deployment; returns when to come back at the latest
/// (a progress deadline).
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let mut next: Option<SystemTime> = None;
    for d in pods::list_all(store, "deployments").await? {
        match reconcile(store, rec, &d, now).await {
            Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(deployment = pods::name(&d), error = %e, "reconcile failed; will retry")
            }
        }
    }
    Ok(next)
}

/// Moves one Deployment one step toward its template and replicas.
pub async fn reconcile(
    store: &Store,
    rec: &Recorder,
    d: &Value,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    if pods::deleting(d) {
        return Ok(None);
    }
    let ns = pods::namespace(d);
    let candidates = pods::list(store, "replicasets", ns).await?;
    let mut owned = pods::claim(store, "replicasets", d, candidates).await?;
    owned.retain(|r| !pods::deleting(r));
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let paused = d.pointer("/spec/paused") == Some(&json!(true));
    let strategy = Strategy::of(d);
    let max_revision = owned.iter().map(revision).max().unwrap_or(0);

    let mut created_new = false;
    let new_pos = owned
        .iter()
        .position(|r| pods::labels(r).get(HASH_LABEL) == Some(&hash));
    let new_rs: Option<Value> = match new_pos {
        Some(i) => {
            let rs = owned.remove(i);
            // A ReplicaSet brought back by a rollback gets the next revision.
            if revision(&rs) < max_revision && !paused {
                let rev = (max_revision + 1).to_string();
                pods::set_replicas(
                    store,
                    "replicasets",
                    &rs,
                    rs_view(&rs).replicas,
                    &[(REVISION, rev)],
                )
                .await?;
            }
            Some(rs)
        }
        None if paused => None,
        None => {
            let rs = create_replicaset(store, d, &template, &hash, max_revision + 1).await?;
            created_new = true;
            Some(rs)
        }
    };
    // Oldest first, so that they are scaled down first.
    owned.sort_by_key(|r| (revision(r), pods::time_at(r, "/metadata/creationTimestamp")));
    let old: Vec<Rs> = owned.iter().map(rs_view).collect();

    let mut scaled = false;
    if let (Some(new), false) = (&new_rs, paused) {
        let changes = plan(&strategy, &rs_view(new), &old);
        for (name, to) in changes {
            let Some(rs) = owned
                .iter()
                .chain(std::iter::once(new))
                .find(|r| pods::name(r) == name)
            else {
                continue;
            };
            let from = rs_view(rs).replicas;
            pods::set_replicas(store, "replicasets", rs, to, &[]).await?;
            scaled = true;
            let verb = if to > from { "up" } else { "down" };
            rec.record(
                d,
                Type::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {verb} replica set {name} from {from} to {to}"),
            )
            .await;
        }
        prune_history(store, d, &owned).await?;
    } else if paused {
        // A paused Deployment still scales, as in Kubernetes (here only
        // when one ReplicaSet holds all replicas; no proportional scaling).
        let holding: Vec<&Value> = owned
            .iter()
            .chain(new_rs.iter())
            .filter(|r| rs_view(r).replicas > 0)
            .collect();
        let target = match holding.as_slice() {
            [one] => Some(*one),
            [] => new_rs.as_ref(),
            _ => None,
        };
        if let Some(rs) = target
            && rs_view(rs).replicas != strategy.replicas
        {
            let (name, from, to) = (pods::name(rs), rs_view(rs).replicas, strategy.replicas);
            pods::set_replicas(store, "replicasets", rs, to, &[]).await?;
            scaled = true;
            let verb = if to > from { "up" } else { "down" };
            rec.record(
                d,
                Type::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {verb} replica set {name} from {from} to {to}"),
            )
            .await;
        }
    }

    let new_view = new_rs.as_ref().map(rs_view);
    let new_name = new_view
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let all: Vec<&Value> = owned.iter().chain(new_rs.iter()).collect();
    let sum = |p: &str| -> i64 {
        all.iter()
            .map(|r| r.pointer(p).and_then(Value::as_i64).unwrap_or(0))
            .sum()
    };
    let replicas = sum("/status/replicas");
    let updated = new_rs
        .as_ref()
        .and_then(|r| r.pointer("/status/replicas").and_then(Value::as_i64))
        .unwrap_or(0);
    let ready = sum("/status/readyReplicas");
    let available = sum("/status/availableReplicas");
    let spec_total = sum("/spec/replicas");
    let want = strategy.replicas as i64;
    let generation = d
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));

    let old_status = d.get("status").cloned().unwrap_or(json!({}));
    let old_i = |f: &str| old_status.get(f).and_then(Value::as_i64).unwrap_or(0);
    let mut conditions: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let stamp = pods::rfc3339(now);
    let min_available = want - strategy.max_unavailable as i64;
    set_condition(
        &mut conditions,
        "Available",
        if available >= min_available {
            "True"
        } else {
            "False"
        },
        if available >= min_available {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available >= min_available {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        &stamp,
        false,
    );
    let complete = updated == want && replicas == want && available == want && new_rs.is_some();
    // Progress, as Kubernetes counts it: more pods updated, ready or
    // available, fewer old pods, a new ReplicaSet, or a scaling step.
    let progressed = created_new
        || scaled
        || updated > old_i("updatedReplicas")
        || ready > old_i("readyReplicas")
        || available > old_i("availableReplicas")
        || (replicas - updated) < (old_i("replicas") - old_i("updatedReplicas"))
        || old_status.get("observedGeneration") != Some(&generation);
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    let mut requeue = None;
    if paused {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            &stamp,
            true,
        );
    } else if complete {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            &stamp,
            progressed,
        );
    } else if progressed {
        let (reason, msg) = if created_new {
            (
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
            )
        } else {
            (
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            )
        };
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            reason,
            &msg,
            &stamp,
            true,
        );
        requeue = deadline.map(|dl| now + dl);
    } else if let Some(dl) = deadline {
        let last = conditions
            .iter()
            .find(|c| c["type"] == "Progressing")
            .and_then(|c| pods::time_at(c, "/lastUpdateTime"));
        match last {
            Some(t) if t + dl <= now => set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                &stamp,
                false,
            ),
            Some(t) => requeue = Some(t + dl),
            None => {
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{new_name}\" is progressing."),
                    &stamp,
                    true,
                );
                requeue = Some(now + dl);
            }
        }
    }
    let status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (spec_total - available).max(0),
        "conditions": conditions,
    });
    let revision_now = new_rs.as_ref().map(|r| {
        if revision(r) < max_revision && !paused {
            max_revision + 1
        } else {
            revision(r)
        }
    });
    write_deployment(store, d, status, revision_now).await?;
    Ok(requeue)
}

/// Sets a condition, keeping `lastTransitionTime` when the status stays;
/// `touch` also moves `lastUpdateTime` (progress was made).
fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    touch: bool,
) {
    let fresh = json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now});
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        None => conditions.push(fresh),
        Some(c) => {
            let same_status = c["status"] == status;
            let same = same_status && c["reason"] == reason && c["message"] == message;
            if same && !touch {
                return;
            }
            let transition = if same_status {
                c["lastTransitionTime"].clone()
            } else {
                json!(now)
            };
            *c = fresh;
            c["lastTransitionTime"] = transition;
        }
    }
}

async fn create_replicaset(
    store: &Store,
    d: &Value,
    template: &Value,
    hash: &str,
    revision: i64,
) -> Result<Value, Error> {
    let mut template = template.clone();
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let name = format!("{}-{hash}", pods::name(d));
    let mut labels = template["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    let rs = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {REVISION: revision.to_string()},
            "ownerReferences": [pods::owner_ref(d)],
        },
        "spec": {
            "replicas": 0,
            "selector": selector,
            "template": template,
            "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
        },
    });
    let rt = spoke_api::resource::ResourceType::lookup("replicasets")
        .ok_or_else(|| Error::Internal("replicasets are not a known kind".into()))?;
    match crate::api::create_object(store, rt, Some(pods::namespace(d)), rs).await {
        Ok(v) => Ok(v),
        // Left from an earlier pass whose claim has not seen it yet.
        Err(Error::AlreadyExists { .. }) => store
            .get(&store::key("replicasets", Some(pods::namespace(d)), &name))
            .await?
            .ok_or_else(|| Error::Internal(format!("replicaset {name} vanished"))),
        Err(e) => Err(e),
    }
}

/// Deletes the oldest ReplicaSets with no pods past `revisionHistoryLimit`.
async fn prune_history(store: &Store, d: &Value, old_oldest_first: &[Value]) -> Result<(), Error> {
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_u64)
        .unwrap_or(10) as usize;
    let idle: Vec<&Value> = old_oldest_first
        .iter()
        .filter(|r| {
            let v = rs_view(r);
            v.replicas == 0 && v.current == 0
        })
        .collect();
    for rs in idle.iter().take(idle.len().saturating_sub(limit)) {
        tracing::info!(
            replicaset = pods::name(rs),
            "past revisionHistoryLimit: deleting"
        );
        pods::delete(store, "replicasets", rs).await?;
    }
    Ok(())
}

async fn write_deployment(
    store: &Store,
    d: &Value,
    status: Value,
    revision: Option<i64>,
) -> Result<(), Error> {
    let key = store::key("deployments", Some(pods::namespace(d)), pods::name(d));
    let uid = pods::uid(d).to_string();
    let rev = revision.map(|r| r.to_string());
    let r = store
        .modify(&key, |cur| {
            if pods::uid(cur) != uid {
                return None;
            }
            let same_rev = rev.is_none() || pods::annotation(cur, REVISION) == rev.as_deref();
            // A spec change since this pass read the Deployment: the next
            // pass reports on it, not this one.
            if cur.pointer("/metadata/generation") != d.pointer("/metadata/generation")
                || (cur.get("status") == Some(&status) && same_rev)
            {
                return None;
            }
            let mut next = cur.clone();
            next["status"] = status.clone();
            if let Some(rev) = &rev {
                if !next["metadata"]["annotations"].is_object() {
                    next["metadata"]["annotations"] = json!({});
                }
                next["metadata"]["annotations"][REVISION] = json!(rev);
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

    fn rs(name: &str, replicas: i32, available: i32) -> Rs {
        Rs {
            name: name.into(),
            replicas,
            current: replicas,
            available,
        }
    }

    fn strategy(replicas: i32, surge: i32, unavailable: i32) -> Strategy {
        Strategy {
            replicas,
            recreate: false,
            max_surge: surge,
            max_unavailable: unavailable,
        }
    }

    fn changes(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    #[test]
    fn rolling_update_steps_within_surge_and_unavailable() {
        let s = strategy(3, 1, 1);
        // Step by step, as passes would see it.
        type Case = (Rs, Vec<Rs>, Vec<(&'static str, i32)>);
        let cases: &[Case] = &[
            // Fresh: scale the new one up to replicas + surge - existing.
            (rs("new", 0, 0), vec![], vec![("new", 3)]),
            (rs("new", 0, 0), vec![rs("old", 3, 3)], vec![("new", 1)]),
            // At the surge: old goes down to minAvailable (2).
            (rs("new", 1, 0), vec![rs("old", 3, 3)], vec![("old", 2)]),
            (rs("new", 1, 0), vec![rs("old", 2, 2)], vec![("new", 2)]),
            // New not available: nothing more may go (the stall of a bad version).
            (rs("new", 2, 0), vec![rs("old", 2, 2)], vec![]),
            // New ones available: old goes.
            (rs("new", 2, 2), vec![rs("old", 2, 2)], vec![("old", 0)]),
            (rs("new", 2, 2), vec![rs("old", 0, 0)], vec![("new", 3)]),
            (rs("new", 3, 3), vec![rs("old", 0, 0)], vec![]),
            // Rollback: the bad one (unavailable) is cleaned up first.
            (rs("good", 2, 2), vec![rs("bad", 2, 0)], vec![("bad", 0)]),
            (rs("good", 2, 2), vec![rs("bad", 0, 0)], vec![("good", 3)]),
            // Scale down.
            (rs("new", 5, 5), vec![], vec![("new", 3)]),
        ];
        for (i, (new, old, want)) in cases.iter().enumerate() {
            assert_eq!(
                plan(&s, new, old),
                changes(want),
                "case {i}: {new:?} {old:?}"
            );
        }
    }

    #[test]
    fn recreate_waits_for_old_pods_to_be_gone() {
        let s = Strategy {
            replicas: 2,
            recreate: true,
            max_surge: 0,
            max_unavailable: 2,
        };
        assert_eq!(
            plan(&s, &rs("new", 0, 0), &[rs("old", 2, 2)]),
            changes(&[("old", 0)])
        );
        let mut draining = rs("old", 0, 0);
        draining.current = 1;
        assert_eq!(plan(&s, &rs("new", 0, 0), &[draining]), vec![]);
        assert_eq!(
            plan(&s, &rs("new", 0, 0), &[rs("old", 0, 0)]),
            changes(&[("new", 2)])
        );
    }

    #[test]
    fn percentages_round_as_kubernetes_does() {
        let d = |surge: Value, unavailable: Value| {
            json!({"spec": {"replicas": 10, "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
        };
        let s = Strategy::of(&d(json!("25%"), json!("25%")));
        assert_eq!((s.max_surge, s.max_unavailable), (3, 2));
        let s = Strategy::of(&d(json!(0), json!("5%")));
        assert_eq!((s.max_surge, s.max_unavailable), (0, 1));
        let s = Strategy::of(&d(json!(2), json!(0)));
        assert_eq!((s.max_surge, s.max_unavailable), (2, 0));
    }

    #[test]
    fn the_hash_ignores_key_order_and_follows_content() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        let b = json!({"spec": {"x": 1}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        let c = json!({"spec": {"x": 2}, "metadata": {"labels": {"b": "2", "a": "1"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_ne!(template_hash(&a), template_hash(&c));
        assert_eq!(template_hash(&a).len(), 10);
    }
}
