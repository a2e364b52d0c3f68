//! Controllers: level-triggered loops that move what is stored toward what
//! was asked for, one idempotent step at a time. Each pass reads the store
//! afresh, so a missed event or a hub restart costs nothing but a pass.
//!
//! - [`gc`]: the garbage collector (owner references, `Foreground` and
//!   `Orphan` deletion).
//! - [`namespace`]: empties a namespace being deleted, then removes it.
//! - quota status (`status.used`) and event expiry ride on the same passes.

pub mod gc;
pub mod namespace;

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
