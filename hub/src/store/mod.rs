//! The hub's store: every object, one revision counter, one change log.
//!
//! Guarantees:
//! - Every write bumps one global revision and stores the object with
//!   `metadata.resourceVersion` set to it.
//! - A write that returned `Ok` is durable (the backend committed it with
//!   fsync); `kill -9` right after loses nothing.
//! - Writes are compare-and-swap when given an expected resourceVersion.
//! - Subscribers see every write exactly once, in revision order.
//!
//! Caveats: the backend trait is synchronous (redb is); [`Store`] runs it on
//! tokio's blocking pool so that async callers never stall a worker thread.

mod redb;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

pub use self::redb::RedbBackend;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Create of a key that exists.
    #[error("already exists")]
    AlreadyExists,
    /// Update or delete of a key that does not exist.
    #[error("not found")]
    NotFound,
    /// Compare-and-swap lost: the object changed since the caller read it.
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    /// The stored bytes could not be decoded: a bug or a corrupted file.
    #[error("stored object {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// The backend failed (disk full, IO error, ...).
    #[error("storage backend: {0}")]
    Backend(String),
    /// A watch asked to resume from a revision the change log no longer
    /// holds: the client must list again.
    #[error("too old resource version: {requested} (the oldest still known is {oldest})")]
    Gone { requested: u64, oldest: u64 },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed write, as watchers and controllers see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub type_: EventType,
    pub key: String,
    pub revision: u64,
    /// The object after the write (for `Deleted`, the last state stored).
    pub object: Value,
}

/// A write operation handed to a backend.
#[derive(Debug)]
pub enum Write {
    Create(Value),
    /// Replace; if `expected` is set, only if the stored resourceVersion matches.
    Update {
        object: Value,
        expected: Option<u64>,
    },
    Delete {
        expected: Option<u64>,
    },
}

/// A storage engine. Small on purpose, so that etcd can implement it too.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<Value>, Error>;
    /// Every object whose key starts with `prefix`, in key order, and the
    /// revision the list is consistent with.
    fn list(&self, prefix: &str) -> Result<(Vec<Value>, u64), Error>;
    /// Applies writes in order, all in one durable commit. Each gets its own
    /// result: a refused write (conflict, not found, exists) changes
    /// nothing and does not stop the others. `Err` means nothing was
    /// committed.
    fn write_batch(&self, batch: Vec<(String, Write)>) -> Result<Vec<Result<Event, Error>>, Error>;
    /// The current global revision.
    fn revision(&self) -> Result<u64, Error>;
    /// Every write after `revision`, in order, or [`Error::Gone`] when the
    /// change log no longer reaches back that far.
    fn changes_since(&self, revision: u64) -> Result<Vec<Event>, Error>;
}

/// Builds keys: `pods/default/hello`, `nodes//pi-1` (cluster-scoped).
pub fn key(plural: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{plural}/{}/{name}", namespace.unwrap_or(""))
}

/// The prefix under which [`key`] puts one kind (in one namespace).
pub fn prefix(plural: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{plural}/{ns}/"),
        None => format!("{plural}/"),
    }
}

/// The revision of an object read from the store.
pub fn revision_of(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The async face of the store that the rest of the hub uses; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    events: broadcast::Sender<Event>,
    /// To the writer thread.
    writes: std::sync::mpsc::Sender<Pending>,
}

/// A write waiting for the writer thread, and who to tell.
struct Pending {
    key: String,
    op: Write,
    reply: tokio::sync::oneshot::Sender<Result<Event, Error>>,
}

/// Most writes committed together.
const MAX_BATCH: usize = 256;

/// The one writer: takes every write queued while the last commit was on
/// disk and commits them together (group commit), then publishes their
/// events in revision order and answers each writer. A write is answered
/// only after its commit, so an acknowledged write survives `kill -9`;
/// batching only lets concurrent writers share an fsync.
///
/// It holds the backend weakly between batches, so the file closes as soon
/// as the last `Store` is dropped (a write in flight keeps its `Store`).
fn writer(
    backend: std::sync::Weak<dyn Backend>,
    events: broadcast::Sender<Event>,
    queue: std::sync::mpsc::Receiver<Pending>,
) {
    while let Ok(first) = queue.recv() {
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        let (batch, replies): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|p| ((p.key, p.op), p.reply))
            .unzip();
        let Some(backend) = backend.upgrade() else {
            for reply in replies {
                let _ = reply.send(Err(Error::Backend("the store is closed".into())));
            }
            return;
        };
        let outcome = backend.write_batch(batch);
        // Let go of the file before answering: a writer that drops its
        // Store once answered may reopen the file at once.
        drop(backend);
        match outcome {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    if let Ok(event) = &result {
                        // No subscriber is fine: nobody is watching yet.
                        let _ = events.send(event.clone());
                    }
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(Error::Backend(message.clone())));
                }
            }
        }
    }
}

impl Store {
    pub fn new(backend: impl Backend) -> Store {
        let (events, _) = broadcast::channel(4096);
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let (writes, queue) = std::sync::mpsc::channel();
        let (b, e) = (Arc::downgrade(&backend), events.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(b, e, queue))
            .expect("cannot start the store's writer thread");
        Store {
            backend,
            events,
            writes,
        }
    }

    /// Subscribes to every write from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| Error::Backend(format!("store task failed: {e}")))?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Value>, Error> {
        let key = key.to_string();
        self.blocking(move |b| b.get(&key)).await
    }

    pub async fn list(&self, prefix: &str) -> Result<(Vec<Value>, u64), Error> {
        let prefix = prefix.to_string();
        self.blocking(move |b| b.list(&prefix)).await
    }

    pub async fn revision(&self) -> Result<u64, Error> {
        self.blocking(|b| b.revision()).await
    }

    /// Applies a write and tells subscribers.
    pub async fn write(&self, key: &str, op: Write) -> Result<Event, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writes
            .send(Pending {
                key: key.to_string(),
                op,
                reply,
            })
            .map_err(|_| Error::Backend("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Backend("the store's writer has stopped".into()))?
    }

    pub async fn create(&self, key: &str, object: Value) -> Result<Value, Error> {
        Ok(self.write(key, Write::Create(object)).await?.object)
    }

    pub async fn update(
        &self,
        key: &str,
        object: Value,
        expected: Option<u64>,
    ) -> Result<Value, Error> {
        Ok(self
            .write(key, Write::Update { object, expected })
            .await?
            .object)
    }

    pub async fn delete(&self, key: &str, expected: Option<u64>) -> Result<Value, Error> {
        Ok(self.write(key, Write::Delete { expected }).await?.object)
    }

    /// Every write after `revision` still in the change log, in order.
    pub async fn changes_since(&self, revision: u64) -> Result<Vec<Event>, Error> {
        self.blocking(move |b| b.changes_since(revision)).await
    }

    /// Starts a watch on keys under `prefix`.
    ///
    /// With `from = Some(rv)` it replays every write after `rv` from the
    /// change log, then follows live writes; `Err(Gone)` if the log no longer
    /// reaches `rv`. With `None` it starts with the current objects (as
    /// `Added` events at the list's revision), as Kubernetes does for a watch
    /// without a resourceVersion. Live events are subscribed to *before* the
    /// backlog is read, so nothing falls between the two.
    pub async fn watch(&self, prefix: &str, from: Option<u64>) -> Result<Watch, Error> {
        let live = self.subscribe();
        let (backlog, last) = match from {
            Some(rv) => {
                let events = self.changes_since(rv).await?;
                (events, rv)
            }
            None => {
                let (items, rev) = self.list(prefix).await?;
                let events = items
                    .into_iter()
                    .map(|object| Event {
                        type_: EventType::Added,
                        key: String::new(),
                        revision: revision_of(&object).unwrap_or(rev),
                        object,
                    })
                    .collect();
                (events, rev)
            }
        };
        let prefix = prefix.to_string();
        let backlog: std::collections::VecDeque<Event> = backlog
            .into_iter()
            .filter(|e| e.key.is_empty() || e.key.starts_with(&prefix))
            .collect();
        Ok(Watch {
            prefix,
            backlog,
            live,
            last,
        })
    }

    /// Read-modify-write with retries on conflict. `change` returns `None`
    /// to leave the object as it is. Returns the object as stored.
    pub async fn modify(
        &self,
        key: &str,
        mut change: impl FnMut(&Value) -> Option<Value>,
    ) -> Result<Option<Value>, Error> {
        loop {
            let Some(current) = self.get(key).await? else {
                return Err(Error::NotFound);
            };
            let Some(next) = change(&current) else {
                return Ok(None);
            };
            match self.update(key, next, revision_of(&current)).await {
                Err(Error::Conflict) => continue,
                other => return other.map(Some),
            }
        }
    }
}

/// A stream of store events under one prefix, in revision order, each once.
pub struct Watch {
    prefix: String,
    backlog: std::collections::VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    /// The highest revision delivered (or listed); live events at or below
    /// it were already covered by the backlog.
    last: u64,
}

impl Watch {
    /// The next event; `Err(Gone)` if this watcher fell so far behind that
    /// events were dropped (the client must relist), `Ok(None)` when the
    /// store is gone.
    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        if let Some(e) = self.backlog.pop_front() {
            self.last = self.last.max(e.revision);
            return Ok(Some(e));
        }
        loop {
            match self.live.recv().await {
                Ok(e) if e.revision <= self.last || !e.key.starts_with(&self.prefix) => continue,
                Ok(e) => {
                    self.last = e.revision;
                    return Ok(Some(e));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(Error::Gone {
                        requested: self.last,
                        oldest: self.last + 1,
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// The revision of the last event delivered (for bookmarks).
    pub fn revision(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests;
