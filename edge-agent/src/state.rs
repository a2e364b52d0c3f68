//! The agent's local, durable memory (a redb file): the last desired pod set
//! with its revision, and which digest each image reference resolved to.
//!
//! Guarantees: [`State::save_desired`] returns only once the commit is
//! durable (redb's default `Durability::Immediate` fsyncs), so the sync layer
//! can acknowledge a revision right after it. After a reboot without the hub,
//! [`State::load`] gives back exactly the set that was acknowledged last.
//!
//! Caveats: redb refuses every operation after one IO error (a full disk
//! during a commit, say) until the file is opened again. So an IO error
//! closes the file, and the next operation opens it again, which runs
//! redb's repair (the same as after a crash): the last durable commit is
//! what it reads back, never a half-written one. While the disk stays full
//! that reopening may fail too; each operation tries again.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

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

/// Whether redb needs the file opened again before it works again: after an
/// IO error it answers `PreviousIo` to everything, reads included.
fn needs_reopen(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Corrupted(_)
    )
}

/// What was saved last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The revision applied and acknowledged; 0 when none.
    pub revision: u64,
    pub pods: Vec<DesiredPod>,
}

/// Opens the database file (a seam for tests that inject IO errors).
type Opener = Box<dyn Fn() -> Result<Database, redb::Error> + Send + Sync>;

/// The local state file. One per data dir; redb locks it against a second agent.
pub struct State {
    path: PathBuf,
    open: Opener,
    db: Mutex<Slot>,
}

struct Slot {
    /// `None` after an IO error closed the file, until it opens again.
    db: Option<Database>,
    /// Set from an IO error to the next operation that succeeds: one
    /// warning per episode, however many attempts fail within it.
    failing: bool,
}

impl State {
    /// Opens or creates the file.
    pub fn open(path: &Path) -> Result<State, Error> {
        let file = path.to_path_buf();
        State::open_with(
            path,
            Box::new(move || Database::create(&file).map_err(redb::Error::from)),
        )
    }

    /// Like [`State::open`], with the database opened by `open`.
    fn open_with(path: &Path, open: Opener) -> Result<State, Error> {
        let state = State {
            path: path.to_path_buf(),
            open,
            db: Mutex::new(Slot {
                db: None,
                failing: false,
            }),
        };
        state.with_db(|_| Ok(()))?;
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // The guarded value is only a handle: a panic elsewhere leaves it usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` on the open database, opening it first if an earlier IO
    /// error closed it, and closing it when `op` meets an IO error.
    fn with_db<T>(&self, op: impl FnOnce(&Database) -> Result<T, Error>) -> Result<T, Error> {
        let mut slot = self.lock();
        let result = Self::open_and(&mut slot, &self.open, op);
        match &result {
            Err(Error::Db(e)) if needs_reopen(e) => {
                slot.db = None;
                if !slot.failing {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "local state database failed; it is opened again at each next use until that works"
                    );
                }
                slot.failing = true;
            }
            Ok(_) if slot.failing => {
                tracing::info!(path = %self.path.display(), "local state database works again");
                slot.failing = false;
            }
            _ => {}
        }
        result
    }

    fn open_and<T>(
        slot: &mut Slot,
        open: &Opener,
        op: impl FnOnce(&Database) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if slot.db.is_none() {
            let database = open().map_err(Error::Db)?;
            // Create the tables once so that readers never meet a missing table.
            let tx = database.begin_write().map_err(db)?;
            tx.open_table(DESIRED).map_err(db)?;
            tx.open_table(IMAGES).map_err(db)?;
            tx.commit().map_err(db)?;
            slot.db = Some(database);
        }
        op(slot.db.as_ref().expect("opened above"))
    }

    /// The last saved desired set (revision 0 and no pods on a fresh board).
    pub fn load(&self) -> Result<Desired, Error> {
        self.with_db(Self::load_from)
    }

    fn load_from(database: &Database) -> Result<Desired, Error> {
        let tx = database.begin_read().map_err(db)?;
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
        self.with_db(|database| {
            let tx = database.begin_write().map_err(db)?;
            {
                let mut table = tx.open_table(DESIRED).map_err(db)?;
                table
                    .insert(KEY_REVISION, revision.as_bytes())
                    .map_err(db)?;
                table.insert(KEY_PODS, pods.as_slice()).map_err(db)?;
            }
            tx.commit().map_err(db)
        })
    }

    /// The digest `image` resolved to last time, if any.
    pub fn image_digest(&self, image: &str) -> Result<Option<String>, Error> {
        self.with_db(|database| {
            let tx = database.begin_read().map_err(db)?;
            let table = tx.open_table(IMAGES).map_err(db)?;
            Ok(table.get(image).map_err(db)?.map(|v| v.value().to_string()))
        })
    }

    /// Remembers that `image` resolved to `digest`.
    pub fn set_image_digest(&self, image: &str, digest: &str) -> Result<(), Error> {
        self.with_db(|database| {
            let tx = database.begin_write().map_err(db)?;
            {
                let mut table = tx.open_table(IMAGES).map_err(db)?;
                table.insert(image, digest).map_err(db)?;
            }
            tx.commit().map_err(db)
        })
    }
}

/// A local state on a disk that a test fills and frees.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use redb::StorageBackend;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A file that fails writes with ENOSPC while `full` is set, as a
    /// full disk does (reads still work).
    #[derive(Debug)]
    struct FillableFile {
        file: redb::backends::FileBackend,
        full: Arc<AtomicBool>,
    }

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    impl StorageBackend for FillableFile {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::SeqCst) && len > self.file.len()? {
                return Err(enospc());
            }
            self.file.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::SeqCst) {
                // Half of the bytes land, as a write that runs out of
                // space midway: what redb must never read back as a commit.
                let half = data.len() / 2;
                self.file.write(offset, &data[..half])?;
                return Err(enospc());
            }
            self.file.write(offset, data)
        }
    }

    pub(crate) fn fillable(path: &Path, full: &Arc<AtomicBool>) -> State {
        let (file, full) = (path.to_path_buf(), full.clone());
        State::open_with(
            path,
            Box::new(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&file)?;
                let backend = FillableFile {
                    file: redb::backends::FileBackend::new(f)?,
                    full: full.clone(),
                };
                Ok(redb::Builder::new().create_with_backend(backend)?)
            }),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::fillable;
    use super::*;
    use spoke_api::core::{Container, PodSpec};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

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

    #[test]
    fn a_commit_on_a_full_disk_fails_cleanly_and_works_again_once_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let full = Arc::new(AtomicBool::new(false));
        let state = fillable(&path, &full);
        state.save_desired(3, &[pod("a")]).unwrap();

        full.store(true, Ordering::SeqCst);
        // Big enough to need new pages.
        let many: Vec<DesiredPod> = (0..200).map(|i| pod(&format!("p{i}"))).collect();
        let e = state.save_desired(4, &many).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        // Still full: failing again (opening again runs redb's repair, which
        // may itself need to write) is fine, panicking is not.
        let _ = state.save_desired(5, &many);
        let _ = state.set_image_digest("hello:v1", "sha256:abc");

        full.store(false, Ordering::SeqCst);
        // The failed commits left nothing behind: the last durable one reads back.
        assert_eq!(
            state.load().unwrap(),
            Desired {
                revision: 3,
                pods: vec![pod("a")]
            }
        );
        state.save_desired(6, &many).unwrap();
        assert_eq!(state.load().unwrap().revision, 6);
        drop(state);
        // And a new process reads the same.
        let state = State::open(&path).unwrap();
        let saved = state.load().unwrap();
        assert_eq!((saved.revision, saved.pods.len()), (6, 200));
    }

    #[test]
    fn a_process_killed_while_the_disk_was_full_leaves_the_last_durable_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let full = Arc::new(AtomicBool::new(false));
        let state = fillable(&path, &full);
        state.save_desired(3, &[pod("a"), pod("b")]).unwrap();
        full.store(true, Ordering::SeqCst);
        let many: Vec<DesiredPod> = (0..200).map(|i| pod(&format!("p{i}"))).collect();
        assert!(state.save_desired(4, &many).is_err());
        // No clean close: a `kill -9` writes nothing either.
        std::mem::forget(state);
        full.store(false, Ordering::SeqCst);
        // The lock of the forgotten handle is per open file description; a
        // killed process would have released it. Copy the file to open it.
        let copy = dir.path().join("copy.redb");
        std::fs::copy(&path, &copy).unwrap();
        let state = State::open(&copy).unwrap();
        assert_eq!(
            state.load().unwrap(),
            Desired {
                revision: 3,
                pods: vec![pod("a"), pod("b")]
            }
        );
        state.save_desired(4, &many).unwrap();
    }
}
