//! The agent's local, durable memory (a redb file): the last desired pod set
//! with its revision, and which digest each image reference resolved to.
//!
//! Guarantees: [`State::save_desired`] returns only once the commit is
//! durable (redb's default `Durability::Immediate` fsyncs), so the sync layer
//! can acknowledge a revision right after it. After a reboot without the hub,
//! [`State::load`] gives back exactly the set that was acknowledged last.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use spoke_api::protocol::DesiredPod;

/// `key → JSON value`: `revision` and `pods`.
const DESIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("desired");
/// `image reference → sha256:<hex>`.
const IMAGES: TableDefinition<&str, &str> = TableDefinition::new("images");

const KEY_REVISION: &str = "revision";
const KEY_PODS: &str = "pods";

/// Errors of the local store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// redb failed (IO, corruption, the file is locked by another agent...).
    #[error("local state database: {0}")]
    Db(#[source] redb::Error),
    /// A stored value did not decode: written by an incompatible version.
    #[error("local state database holds an unreadable {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn db(e: impl Into<redb::Error>) -> Error {
    Error::Db(e.into())
}

/// What was saved last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The revision applied and acknowledged; 0 when none.
    pub revision: u64,
    pub pods: Vec<DesiredPod>,
}

/// The local state file. One per data dir; redb locks it against a second agent.
pub struct State {
    db: Database,
}

impl State {
    /// Opens or creates the file.
    pub fn open(path: &Path) -> Result<State, Error> {
        let database = Database::create(path).map_err(db)?;
        // Create the tables once so that readers never meet a missing table.
        let tx = database.begin_write().map_err(db)?;
        tx.open_table(DESIRED).map_err(db)?;
        tx.open_table(IMAGES).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(State { db: database })
    }

    /// The last saved desired set (revision 0 and no pods on a fresh board).
    pub fn load(&self) -> Result<Desired, Error> {
        let tx = self.db.begin_read().map_err(db)?;
        let table = tx.open_table(DESIRED).map_err(db)?;
        let revision = match table.get(KEY_REVISION).map_err(db)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|source| Error::Decode {
                what: "revision",
                source,
            })?,
            None => 0,
        };
        let pods = match table.get(KEY_PODS).map_err(db)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|source| Error::Decode {
                what: "pod set",
                source,
            })?,
            None => Vec::new(),
        };
        Ok(Desired { revision, pods })
    }

    /// Stores the set and its revision in one durable transaction.
    pub fn save_desired(&self, revision: u64, pods: &[DesiredPod]) -> Result<(), Error> {
        let pods = serde_json::to_vec(pods).map_err(|source| Error::Decode {
            what: "pod set",
            source,
        })?;
        let revision = revision.to_string();
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut table = tx.open_table(DESIRED).map_err(db)?;
            table
                .insert(KEY_REVISION, revision.as_bytes())
                .map_err(db)?;
            table.insert(KEY_PODS, pods.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The digest `image` resolved to last time, if any.
    pub fn image_digest(&self, image: &str) -> Result<Option<String>, Error> {
        let tx = self.db.begin_read().map_err(db)?;
        let table = tx.open_table(IMAGES).map_err(db)?;
        Ok(table.get(image).map_err(db)?.map(|v| v.value().to_string()))
    }

    /// Remembers that `image` resolved to `digest`.
    pub fn set_image_digest(&self, image: &str, digest: &str) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut table = tx.open_table(IMAGES).map_err(db)?;
            table.insert(image, digest).map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoke_api::core::{Container, PodSpec};

    fn pod(name: &str) -> DesiredPod {
        DesiredPod {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            spec: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: "hello:v1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            deleting: false,
            grace_period_seconds: None,
            config_maps: Default::default(),
            secrets: Default::default(),
        }
    }

    #[test]
    fn a_fresh_state_has_revision_zero_and_no_pods() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("state.redb")).unwrap();
        assert_eq!(state.load().unwrap(), Desired::default());
        assert_eq!(state.image_digest("hello:v1").unwrap(), None);
    }

    #[test]
    fn desired_set_and_images_survive_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let state = State::open(&path).unwrap();
            state.save_desired(3, &[pod("a")]).unwrap();
            state.save_desired(7, &[pod("a"), pod("b")]).unwrap();
            state.set_image_digest("hello:v1", "sha256:abc").unwrap();
        }
        let state = State::open(&path).unwrap();
        let saved = state.load().unwrap();
        assert_eq!(saved.revision, 7);
        assert_eq!(saved.pods, vec![pod("a"), pod("b")]);
        assert_eq!(
            state.image_digest("hello:v1").unwrap().as_deref(),
            Some("sha256:abc")
        );
    }
}
