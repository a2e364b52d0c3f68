//! The embedded default backend: one redb file.
//!
//! Tables: `objects` (key → JSON), `meta` (`revision` → u64) and `changes`
//! (revision → event JSON, the last [`CHANGE_LOG_LEN`] writes, for watches
//! that resume). Writes come in batches (see [`super::Store`]): each batch
//! is one redb transaction committed with redb's default durability (fsync
//! before `commit` returns), so every write in it is durable when answered.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use super::{Backend, Error, Event, EventType, Write, revision_of};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// How many past writes the change log keeps.
pub const CHANGE_LOG_LEN: u64 = 10_000;

/// A redb file holding the hub's objects.
pub struct RedbBackend {
    db: Database,
    log_len: u64,
}

fn backend_err(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

impl RedbBackend {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<RedbBackend, Error> {
        RedbBackend::open_with_log(path, CHANGE_LOG_LEN)
    }

    /// Opens the store keeping the last `log_len` writes for watches.
    pub fn open_with_log(path: &Path, log_len: u64) -> Result<RedbBackend, Error> {
        let db = Database::create(path).map_err(backend_err)?;
        let txn = db.begin_write().map_err(backend_err)?;
        {
            txn.open_table(OBJECTS).map_err(backend_err)?;
            txn.open_table(META).map_err(backend_err)?;
            txn.open_table(CHANGES).map_err(backend_err)?;
        }
        txn.commit().map_err(backend_err)?;
        Ok(RedbBackend {
            db,
            log_len: log_len.max(1),
        })
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        key: key.to_string(),
        source,
    })
}

/// The global revision as of a read transaction.
fn read_revision(txn: &redb::ReadTransaction) -> Result<u64, Error> {
    let meta = txn.open_table(META).map_err(backend_err)?;
    let revision = meta.get("revision").map_err(backend_err)?;
    Ok(revision.map(|v| v.value()).unwrap_or(0))
}

fn set_revision(object: &mut Value, revision: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Checks one write against the current object and gives what to store
/// (for a delete, the last state) stamped with `revision`.
fn prepare(op: Write, current: Option<Value>, revision: u64) -> Result<(EventType, Value), Error> {
    let check = |expected: Option<u64>, current: &Value| match expected {
        Some(want) if revision_of(current) != Some(want) => Err(Error::Conflict),
        _ => Ok(()),
    };
    let (type_, mut object) = match op {
        Write::Create(object) => {
            if current.is_some() {
                return Err(Error::AlreadyExists);
            }
            (EventType::Added, object)
        }
        Write::Update { object, expected } => {
            let current = current.ok_or(Error::NotFound)?;
            check(expected, &current)?;
            (EventType::Modified, object)
        }
        Write::Delete { expected } => {
            let current = current.ok_or(Error::NotFound)?;
            check(expected, &current)?;
            (EventType::Deleted, current)
        }
    };
    set_revision(&mut object, revision);
    Ok((type_, object))
}

impl Backend for RedbBackend {
    fn get(&self, key: &str) -> Result<Option<Value>, Error> {
        let txn = self.db.begin_read().map_err(backend_err)?;
        let table = txn.open_table(OBJECTS).map_err(backend_err)?;
        match table.get(key).map_err(backend_err)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Value>, u64), Error> {
        let txn = self.db.begin_read().map_err(backend_err)?;
        let table = txn.open_table(OBJECTS).map_err(backend_err)?;
        let revision = read_revision(&txn)?;
        let mut items = Vec::new();
        for entry in table.range(prefix..).map_err(backend_err)? {
            let (k, v) = entry.map_err(backend_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            items.push(decode(k.value(), v.value())?);
        }
        Ok((items, revision))
    }

    fn write_batch(&self, batch: Vec<(String, Write)>) -> Result<Vec<Result<Event, Error>>, Error> {
        let txn = self.db.begin_write().map_err(backend_err)?;
        let mut results = Vec::with_capacity(batch.len());
        {
            let mut objects = txn.open_table(OBJECTS).map_err(backend_err)?;
            let mut meta = txn.open_table(META).map_err(backend_err)?;
            let mut changes = txn.open_table(CHANGES).map_err(backend_err)?;
            let mut revision = meta
                .get("revision")
                .map_err(backend_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            for (key, op) in batch {
                // Each write sees the ones before it in the batch, as if it
                // had been committed alone; a refused one changes nothing.
                let current = match objects.get(key.as_str()).map_err(backend_err)? {
                    Some(v) => Some(decode(&key, v.value())?),
                    None => None,
                };
                let next = revision + 1;
                let (type_, object) = match prepare(op, current, next) {
                    Ok(done) => done,
                    Err(refused) => {
                        results.push(Err(refused));
                        continue;
                    }
                };
                match type_ {
                    EventType::Deleted => {
                        objects.remove(key.as_str()).map_err(backend_err)?;
                    }
                    _ => {
                        let bytes = serde_json::to_vec(&object).map_err(backend_err)?;
                        objects
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(backend_err)?;
                    }
                }
                revision = next;
                let event = Event {
                    type_,
                    key,
                    revision,
                    object,
                };
                let event_bytes = serde_json::to_vec(&event).map_err(backend_err)?;
                changes
                    .insert(revision, event_bytes.as_slice())
                    .map_err(backend_err)?;
                if revision > self.log_len {
                    changes
                        .remove(revision - self.log_len)
                        .map_err(backend_err)?;
                }
                results.push(Ok(event));
            }
            meta.insert("revision", revision).map_err(backend_err)?;
        }
        txn.commit().map_err(backend_err)?;
        Ok(results)
    }

    fn changes_since(&self, revision: u64) -> Result<Vec<Event>, Error> {
        let txn = self.db.begin_read().map_err(backend_err)?;
        let changes = txn.open_table(CHANGES).map_err(backend_err)?;
        let current = read_revision(&txn)?;
        if revision >= current {
            return Ok(Vec::new());
        }
        let oldest = changes
            .first()
            .map_err(backend_err)?
            .map(|(k, _)| k.value())
            .unwrap_or(current + 1);
        if revision + 1 < oldest {
            return Err(Error::Gone {
                requested: revision,
                oldest,
            });
        }
        let mut events = Vec::new();
        for entry in changes.range(revision + 1..).map_err(backend_err)? {
            let (k, v) = entry.map_err(backend_err)?;
            let event: Event =
                serde_json::from_slice(v.value()).map_err(|source| Error::Corrupt {
                    key: format!("change {}", k.value()),
                    source,
                })?;
            events.push(event);
        }
        Ok(events)
    }

    fn revision(&self) -> Result<u64, Error> {
        read_revision(&self.db.begin_read().map_err(backend_err)?)
    }
}
