//! Controllers: level-triggered loops that move what is stored toward what
//! was asked for, one idempotent step at a time. Each pass reads the store
//! afresh, so a missed event or a hub restart costs nothing but a pass.
//!
//! - [`gc`]: the garbage collector (owner references, `Foreground` and
//!   `Orphan` deletion).
//! - [`namespace`]: empties a namespace being deleted, then removes it.
//! - quota status (`status.used`) and event expiry ride on the same passes.
//! - [`replicaset`], [`deployment`], [`daemonset`], [`job`], [`cronjob`]:
//!   the workload controllers, and [`nodes`], the node lifecycle controller
//!   (taints, evictions), run by [`spawn_workloads`] (see
//!   docs/controllers.md).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodes;
pub mod pods;
pub mod replicaset;

use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::store::{Event, EventType, Store};

/// Events are gathered this long before a pass, so a burst costs one pass.
const SETTLE: Duration = Duration::from_millis(50);
/// A pass runs at least this often, whatever the events say.
const RESYNC: Duration = Duration::from_secs(30);

/// Whether an event may give a controller here something to do.
fn relevant(event: &Event) -> bool {
    let meta = &event.object["metadata"];
    event.type_ == EventType::Deleted
        || event.key.starts_with("resourcequotas/")
        || (event.type_ == EventType::Added && event.key.starts_with("pods/"))
        || meta.get("deletionTimestamp").is_some()
        || (event.type_ == EventType::Added
            && meta
                .get("ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}

/// Kinds whose writes wake the workload controllers.
const WORKLOAD_KEYS: [&str; 7] = [
    "pods/",
    "daemonsets/",
    "replicasets/",
    "deployments/",
    "jobs/",
    "cronjobs/",
    "nodes/",
];
/// Whether a write wakes the workload controllers: a write to a kind they
/// watch, except Node writes that change nothing they read (see
/// [`nodes::Facts`]) and writes to pods no controller owns. A bare pod
/// concerns them only through the node controller's evictions (a
/// `NoExecute` taint it does not tolerate) and its clean-up of pods on
/// deleted nodes, which the resync tick ([`WORKLOAD_RESYNC`]) catches; with
/// thousands of boards every pass reads every Node, and bare-pod churn
/// (creates, bindings, status reports, 3 or more writes a pod) kept the
/// passes running back to back.
fn wakes_workloads(event: &Event, facts: &mut nodes::Facts) -> bool {
    if event.key.starts_with("pods/") {
        return event.object["metadata"]
            .get("ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    }
    WORKLOAD_KEYS.iter().any(|k| event.key.starts_with(k)) && facts.changed(event)
}

/// The workload controllers pass at least this often (progress deadlines,
/// `minReadySeconds` that no event marks).
const WORKLOAD_RESYNC: Duration = Duration::from_secs(5);

/// Runs the workload controllers until the store's event stream ends: each
/// pass brings node taints up to date and evicts pods whose toleration ran
/// out, then reconciles every CronJob, Deployment, ReplicaSet, DaemonSet, then Job; a pass runs
/// after writes to the kinds they watch have settled, when a controller
/// asked to come back (a pod turning available), or on the resync tick.
pub fn spawn_workloads(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = store.subscribe();
        // Node writes that change nothing the controllers read (revisions,
        // leases, heartbeats) do not wake them.
        let mut facts = nodes::Facts::default();
        let rec = crate::events::Recorder::new(store.clone(), "spoke-controller-manager");
        let clock = cronjob::Clock::from_env();
        // A fake clock moves without store events: look at it often.
        let resync = if clock.is_fake() {
            Duration::from_millis(500)
        } else {
            WORKLOAD_RESYNC
        };
        loop {
            let now = std::time::SystemTime::now();
            let mut wake = now + resync;
            // First, so that the others see this pass's taints and evictions.
            match nodes::pass(&store, &rec, now).await {
                Ok(Some(t)) => wake = wake.min(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "node lifecycle pass failed; will retry"),
            }
            let cron_now = clock.now();
            match cronjob::pass(&store, &rec, cron_now).await {
                // The next schedule time, as a wait on the system clock.
                Ok(Some(t)) => {
                    let wait = t.duration_since(cron_now).unwrap_or(Duration::ZERO);
                    wake = wake.min(now + wait);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cronjob pass failed; will retry"),
            }
            match deployment::pass(&store, &rec, now).await {
                Ok(Some(t)) => wake = wake.min(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "deployment pass failed; will retry"),
            }
            match replicaset::pass(&store, &rec, now).await {
                Ok(Some(t)) => wake = wake.min(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "replicaset pass failed; will retry"),
            }
            match daemonset::pass(&store, &rec, now).await {
                Ok(Some(t)) => wake = wake.min(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "daemonset pass failed; will retry"),
            }
            match job::pass(&store, &rec, now).await {
                Ok(Some(t)) => wake = wake.min(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "job pass failed; will retry"),
            }
            let wait = wake
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Ok(event) if wakes_workloads(&event, &mut facts) => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    _ = &mut deadline => break,
                }
            }
            tokio::time::sleep(SETTLE).await;
            loop {
                match events.try_recv() {
                    Ok(event) => {
                        facts.changed(&event);
                    }
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
    })
}

/// Runs the garbage collector and the namespace controller until the
/// store's event stream ends.
pub fn spawn(store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = store.subscribe();
        loop {
            if let Err(e) = gc::pass(&store).await {
                tracing::warn!(error = %e, "garbage collection pass failed; will retry");
            }
            if let Err(e) = namespace::pass(&store).await {
                tracing::warn!(error = %e, "namespace pass failed; will retry");
            }
            if let Err(e) = crate::api::policy::refresh_quota_status(&store).await {
                tracing::warn!(error = %e, "cannot refresh quota status; will retry");
            }
            if let Err(e) = crate::events::expire(&store).await {
                tracing::warn!(error = %e, "cannot expire old events; will retry");
            }
            // Wait for something relevant (or the resync tick), then let the
            // burst settle.
            let deadline = tokio::time::sleep(RESYNC);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Ok(event) if relevant(&event) => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    _ = &mut deadline => break,
                }
            }
            tokio::time::sleep(SETTLE).await;
            while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                events.try_recv()
            {}
        }
    })
}

#[cfg(test)]
mod tests;
