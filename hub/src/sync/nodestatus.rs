//! Node status writes of the sync worker (registration, lease, revisions),
//! off the worker's path: queued, coalesced per node, and written for many
//! nodes at once.
//!
//! Why: each write is a durable store commit. Awaited one by one in the
//! worker, a reconnect storm of 1,000 agents (a hello, an answer and an ack
//! each: three or four Node writes) waited for thousands of disk flushes in
//! a row, about 50 ms a node. Written concurrently, the store's group commit
//! makes one flush of many; coalesced, a node's changes queued together
//! become one write.
//!
//! Guarantees: the changes of one node are applied in the order they were
//! queued (a round takes everything queued so far and finishes before the
//! next starts); a change is a function of the current object, so a
//! compare-and-swap conflict simply applies it again. Caveat: the Node shows
//! a change a few milliseconds after the worker made it; nothing in the
//! protocol reads it back (the worker's own state is in memory).

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{self, Store};

/// One change to a Node object, applied to a copy of the stored one.
pub type Change = Box<dyn Fn(&mut Value) + Send + Sync>;

/// Queues Node changes; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<(String, Change)>,
}

impl Writer {
    /// Starts the task that writes what is queued.
    pub fn start(store: Store) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Writer { tx }
    }

    /// Queues `change` for the Node named `node`. A node that does not exist
    /// when it is written is skipped.
    pub fn queue(&self, node: &str, change: impl Fn(&mut Value) + Send + Sync + 'static) {
        let _ = self.tx.send((node.to_string(), Box::new(change)));
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<(String, Change)>) {
    while let Some(first) = rx.recv().await {
        let mut order: Vec<String> = Vec::new();
        let mut by_node: HashMap<String, Vec<Change>> = HashMap::new();
        let mut add = |(node, change): (String, Change)| {
            let changes = by_node.entry(node.clone()).or_default();
            if changes.is_empty() {
                order.push(node);
            }
            changes.push(change);
        };
        add(first);
        while let Ok(item) = rx.try_recv() {
            add(item);
        }
        let writes = order.into_iter().map(|node| {
            let changes = by_node.remove(&node).unwrap_or_default();
            let store = store.clone();
            async move {
                let key = store::key("nodes", None, &node);
                let result = store
                    .modify(&key, |cur| {
                        let mut next = cur.clone();
                        for change in &changes {
                            change(&mut next);
                        }
                        (next != *cur).then_some(next)
                    })
                    .await;
                match result {
                    Ok(_) | Err(store::Error::NotFound) => {}
                    Err(e) => tracing::error!(node, error = %e, "cannot write node status"),
                }
            }
        });
        futures_util::future::join_all(writes).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::RedbBackend;

    #[tokio::test]
    async fn queued_changes_land_in_order_per_node_in_few_writes_and_skip_missing_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(RedbBackend::open(&dir.path().join("store.redb")).unwrap());
        for name in ["a", "b"] {
            store
                .create(
                    &store::key("nodes", None, name),
                    json!({"metadata": {"name": name}}),
                )
                .await
                .unwrap();
        }
        let before = store.revision().await.unwrap();
        let writer = Writer::start(store.clone());
        // The later change to a field wins; both nodes get every change.
        for node in ["a", "b", "gone"] {
            for n in 1..=50u64 {
                writer.queue(node, move |next| {
                    next["status"]["n"] = json!(n);
                    next["status"]["seen"][n.to_string()] = json!(true);
                });
            }
        }
        let key = |n: &str| store::key("nodes", None, n);
        for _ in 0..100 {
            let done = store.get(&key("a")).await.unwrap().unwrap()["status"]["n"] == 50
                && store.get(&key("b")).await.unwrap().unwrap()["status"]["n"] == 50;
            if done {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for name in ["a", "b"] {
            let node = store.get(&key(name)).await.unwrap().unwrap();
            assert_eq!(node["status"]["n"], 50, "{node}");
            assert_eq!(node["status"]["seen"].as_object().unwrap().len(), 50);
        }
        assert!(store.get(&key("gone")).await.unwrap().is_none());
        // Coalesced: far fewer writes than the 100 changes queued.
        let writes = store.revision().await.unwrap() - before;
        assert!(writes < 20, "{writes} writes");
    }
}
