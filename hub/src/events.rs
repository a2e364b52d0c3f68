//! Events: short records of what happened to an object (`Scheduled`,
//! `FailedScheduling`, `Pulled`, `BackOff`, `Killing`, ...), stored as
//! `Event` objects in the object's namespace so that `spoke get events` and
//! `describe` show them.
//!
//! As in Kubernetes, a repeat of the same event (same object, reason,
//! message and source) bumps `count` and `lastTimestamp` on one object
//! instead of adding another, and events expire after [`TTL`].
//!
//! Agents send no events: the hub derives the pod events from the status
//! transitions the agent reports anyway ([`pod_transition`]), so events
//! cost the metered link nothing.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spoke_api::resource::ResourceType;

use crate::store::{self, Store};

/// How long an event is kept after it last happened.
pub const TTL: Duration = Duration::from_secs(3600);

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

/// Records events as one component of the hub.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    component: &'static str,
    host: Option<String>,
}

impl Recorder {
    pub fn new(store: Store, component: &'static str) -> Recorder {
        Recorder {
            store,
            component,
            host: None,
        }
    }

    /// The same recorder, reporting for one node (`source.host`).
    pub fn on_host(&self, host: &str) -> Recorder {
        Recorder {
            host: Some(host.to_string()),
            ..self.clone()
        }
    }

    /// Records that `reason` happened to `object`. Failures are logged, not
    /// returned: an event is never worth failing the work it describes.
    pub async fn record(&self, object: &Value, type_: Type, reason: &str, message: &str) {
        if let Err(e) = self.try_record(object, type_, reason, message).await {
            tracing::warn!(error = %e, reason, "cannot record event");
        }
    }

    async fn try_record(
        &self,
        object: &Value,
        type_: Type,
        reason: &str,
        message: &str,
    ) -> Result<(), crate::api::Error> {
        let field = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (kind, name, uid) = (
            field("/kind"),
            field("/metadata/name"),
            field("/metadata/uid"),
        );
        // Cluster-scoped objects (nodes) have their events in `default`.
        let namespace = match field("/metadata/namespace") {
            "" => "default",
            ns => ns,
        };
        let mut hash = Sha256::new();
        let host = self.host.as_deref().unwrap_or("");
        for part in [uid, reason, message, self.component, host] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let event_name = format!("{name}.{}", hex::encode(&digest[..8]));
        let key = store::key("events", Some(namespace), &event_name);
        let now = crate::api::now();
        let bumped = self
            .store
            .modify(&key, |cur| {
                let mut next = cur.clone();
                let count = cur.get("count").and_then(Value::as_i64).unwrap_or(1);
                next["count"] = json!(count + 1);
                next["lastTimestamp"] = json!(now);
                Some(next)
            })
            .await;
        match bumped {
            Ok(_) => return Ok(()),
            Err(store::Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let event = json!({
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": field("/apiVersion"), "kind": kind, "name": name,
                "namespace": field("/metadata/namespace"), "uid": uid,
            },
            "reason": reason,
            "message": message,
            "type": match type_ { Type::Normal => "Normal", Type::Warning => "Warning" },
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let rt = ResourceType::lookup("events")
            .ok_or_else(|| crate::api::Error::Internal("events are not a known kind".into()))?;
        match crate::api::create_object(&self.store, rt, Some(namespace), event).await {
            Ok(_) => Ok(()),
            // Raced with another recorder of the same event: count it there.
            Err(crate::api::Error::AlreadyExists { .. }) => {
                self.store
                    .modify(&key, |cur| {
                        let mut next = cur.clone();
                        let count = cur.get("count").and_then(Value::as_i64).unwrap_or(1);
                        next["count"] = json!(count + 1);
                        Some(next)
                    })
                    .await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Deletes events that last happened more than [`TTL`] ago.
pub async fn expire(store: &Store) -> Result<usize, store::Error> {
    let (events, _) = store.list(&store::prefix("events", None)).await?;
    let cutoff = SystemTime::now() - TTL;
    let mut removed = 0;
    for e in events {
        let last = e
            .get("lastTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        if last.is_some_and(|t| t < cutoff) {
            let ns = e.pointer("/metadata/namespace").and_then(Value::as_str);
            let name = e
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            match store
                .delete(&store::key("events", ns, name), store::revision_of(&e))
                .await
            {
                Ok(_) => removed += 1,
                Err(store::Error::NotFound | store::Error::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The events a pod's status change means, as the kubelet would have
/// recorded them: `(type, reason, message)`.
pub fn pod_transition(old: &Value, new: &Value) -> Vec<(Type, String, String)> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let statuses = |v: &Value| -> Vec<Value> {
        v.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
            .clone()
    };
    let (before, after) = (statuses(old), statuses(new));
    for c in &after {
        let name = c["name"].as_str().unwrap_or("");
        let prev = before.iter().find(|p| p["name"] == c["name"]);
        let prev_state = |p: &str| prev.and_then(|x| x.pointer(p)).cloned();
        let image = c["image"].as_str().unwrap_or("");
        if let Some(reason) = c.pointer("/state/waiting/reason").and_then(Value::as_str)
            && prev_state("/state/waiting/reason")
                .as_ref()
                .and_then(Value::as_str)
                != Some(reason)
        {
            let msg = c
                .pointer("/state/waiting/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            match reason {
                "ErrImagePull" | "InvalidImage" | "CreateContainerConfigError" => out.push((
                    Type::Warning,
                    "Failed".into(),
                    format!("Error: {reason}: {msg}"),
                )),
                "ImagePullBackOff" => out.push((
                    Type::Normal,
                    "BackOff".into(),
                    format!("Back-off pulling module \"{image}\""),
                )),
                "CrashLoopBackOff" => out.push((
                    Type::Warning,
                    "BackOff".into(),
                    format!("Back-off restarting failed container {name}"),
                )),
                _ => {}
            }
        }
        let started = c.pointer("/state/running/startedAt");
        if started.is_some() && prev_state("/state/running/startedAt").as_ref() != started {
            if prev.is_none_or(|p| p["imageID"] != c["imageID"]) && !c["imageID"].is_null() {
                out.push((
                    Type::Normal,
                    "Pulled".into(),
                    format!("Module \"{image}\" is present on the node"),
                ));
            }
            out.push((
                Type::Normal,
                "Started".into(),
                format!("Started container {name}"),
            ));
        }
        if let Some(reason) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
            && prev_state("/state/terminated").is_none()
            && matches!(reason, "OOMKilled" | "Error")
        {
            let code = c
                .pointer("/state/terminated/exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            out.push((
                Type::Warning,
                if reason == "OOMKilled" {
                    "OOMKilled"
                } else {
                    "Failed"
                }
                .into(),
                format!("Container {name} ended: {reason} (exit code {code})"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbBackend;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(RedbBackend::open(&dir.path().join("s.redb")).unwrap());
        let ns = ResourceType::lookup("namespaces").unwrap();
        crate::api::create_object(&store, ns, None, json!({"metadata": {"name": "default"}}))
            .await
            .unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn repeats_are_counted_on_one_event() {
        let (store, _dir) = store().await;
        let rec = Recorder::new(store.clone(), "test").on_host("pi-1");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
        for _ in 0..3 {
            rec.record(&pod, Type::Warning, "BackOff", "Back-off restarting")
                .await;
        }
        rec.record(&pod, Type::Normal, "Started", "Started container m")
            .await;
        let (events, _) = store.list("events/default/").await.unwrap();
        assert_eq!(events.len(), 2);
        let backoff = events.iter().find(|e| e["reason"] == "BackOff").unwrap();
        assert_eq!(backoff["count"], 3);
        assert_eq!(backoff["involvedObject"]["uid"], "u1");
        assert_eq!(backoff["source"]["host"], "pi-1");
        assert_eq!(backoff["type"], "Warning");
    }

    #[tokio::test]
    async fn the_scheduler_says_why_a_pod_waits() {
        let (store, _dir) = store().await;
        let pods = ResourceType::lookup("pods").unwrap();
        crate::api::create_object(
            &store,
            pods,
            Some("default"),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "m", "image": "x:1"}]}}),
        )
        .await
        .unwrap();
        let rec = Recorder::new(store.clone(), "spoke-scheduler");
        crate::scheduler::pass(&store, &rec).await.unwrap();
        let (events, _) = store.list("events/default/").await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["reason"], "FailedScheduling");
        assert_eq!(events[0]["involvedObject"]["name"], "p");
        assert!(
            events[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("0/0 nodes are available"),
            "{}",
            events[0]["message"]
        );
    }

    fn pod(statuses: Value) -> Value {
        json!({"status": {"containerStatuses": statuses}})
    }

    #[test]
    fn status_transitions_become_kubelet_events() {
        let pulling = pod(json!([{"name": "m", "image": "x:1",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]));
        let backoff = pod(json!([{"name": "m", "image": "x:1",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]));
        let running = pod(json!([{"name": "m", "image": "x:1", "imageID": "sha256:ab",
            "state": {"running": {"startedAt": "2026-11-30T17:00:00Z"}}}]));
        let oom = pod(json!([{"name": "m", "image": "x:1", "imageID": "sha256:ab",
            "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]));
        let reasons = |old: &Value, new: &Value| -> Vec<String> {
            pod_transition(old, new).into_iter().map(|e| e.1).collect()
        };
        assert_eq!(reasons(&json!({}), &pulling), ["Failed"]);
        assert_eq!(reasons(&pulling, &backoff), ["BackOff"]);
        assert_eq!(reasons(&backoff, &backoff), Vec::<String>::new());
        assert_eq!(reasons(&backoff, &running), ["Pulled", "Started"]);
        assert_eq!(reasons(&running, &running), Vec::<String>::new());
        assert_eq!(reasons(&running, &oom), ["OOMKilled"]);
    }
}
