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

use std::sync::{Arc, Mutex};

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
    /// Applies one write atomically and durably; returns its event.
    fn write(&self, key: &str, op: Write) -> Result<Event, Error>;
    /// The current global revision.
    fn revision(&self) -> Result<u64, Error>;
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
    /// Held across "commit, then publish" so that subscribers see events in
    /// revision order even when writers race.
    order: Arc<Mutex<()>>,
}

impl Store {
    pub fn new(backend: impl Backend) -> Store {
        let (events, _) = broadcast::channel(4096);
        Store {
            backend: Arc::new(backend),
            events,
            order: Arc::new(Mutex::new(())),
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
        let key = key.to_string();
        let events = self.events.clone();
        let order = self.order.clone();
        self.blocking(move |b| {
            let _in_order = order.lock().unwrap_or_else(|p| p.into_inner());
            let event = b.write(&key, op)?;
            // No subscriber is fine: nobody is watching yet.
            let _ = events.send(event.clone());
            Ok(event)
        })
        .await
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

#[cfg(test)]
mod tests;
