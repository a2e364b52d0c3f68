//! Wasm modules: the on-disk content-addressed cache, and fetching over MQTT from the hub.
//!
//! The agent has no HTTP client (binary size); a pull is a conversation on
//! the node's own topics: `Up::ModuleRequest { id, image, offset }` out, one
//! [`ModuleChunk`] frame back on the module topic, repeated until `total`
//! bytes have arrived. The first chunk names the digest, so a module already
//! in the cache costs one round trip. Bytes are verified against the sha256
//! digest before they are stored (`DATA/modules/<hex>.wasm`, written to a
//! temporary file and renamed, so a crash never leaves a half module under
//! its final name).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use spoke_api::module::is_sha256_hex;
use spoke_api::protocol::{ModuleChunk, Up};
use tokio::sync::mpsc;

/// A pull fails after this long without a chunk.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest module the agent accepts: a board has little flash and RAM.
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;

/// Why a pull failed. The message ends up in the container's waiting state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not connected to the hub")]
    NotConnected,
    #[error("no answer from the hub for {0:?}")]
    Timeout(Duration),
    /// The hub said why (e.g. "module hello:v9 not found").
    #[error("{0}")]
    Remote(String),
    #[error("the hub sent a bad module chunk: {0}")]
    Protocol(String),
    #[error("module digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("cannot store the module: {0}")]
    Io(#[from] io::Error),
}

/// The `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:<hex>` digest, if well formed.
pub fn hex_of(digest: &str) -> Option<&str> {
    digest.strip_prefix("sha256:").filter(|h| is_sha256_hex(h))
}

/// The on-disk module cache.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// Where the module with this hex digest lives.
    pub fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.wasm"))
    }

    /// Whether the module with this `sha256:<hex>` digest is cached.
    pub fn contains(&self, digest: &str) -> bool {
        hex_of(digest).is_some_and(|h| self.path(h).is_file())
    }

    /// Verifies `bytes` against `digest` and stores them.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
        let actual = digest_of(bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let hex = hex_of(digest).ok_or_else(|| Error::Protocol(format!("bad digest {digest}")))?;
        fs::create_dir_all(&self.dir)?;
        let path = self.path(hex);
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{hex}.tmp{}-{n}", std::process::id()));
        // On a full disk the write fails midway: the fragment must not stay
        // behind, taking space nobody would ever give back.
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
        Ok(path)
    }
}

/// Messages to the hub, sent by the sync task when connected.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Up>,
    connected: Arc<AtomicBool>,
}

impl Outbox {
    /// An outbox and the receiving end the sync task drains.
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Up>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                tx,
                connected: Arc::new(AtomicBool::new(false)),
            },
            rx,
        )
    }

    /// Whether the MQTT session is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Set by the sync task.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Queues a message; false when the sync task is gone.
    pub fn send(&self, up: Up) -> bool {
        self.tx.send(up).is_ok()
    }
}

type ChunkTx = mpsc::UnboundedSender<(ModuleChunk, Vec<u8>)>;

/// Runs pulls: sends requests through the [`Outbox`] and routes incoming
/// chunks to the pull that asked for them.
pub struct Fetcher {
    store: Store,
    outbox: Outbox,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, ChunkTx>>,
    timeout: Duration,
}

/// Removes a pull's routing entry however the pull ends.
struct PendingGuard<'a> {
    fetcher: &'a Fetcher,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.fetcher.pending_map().remove(&self.id);
    }
}

impl Fetcher {
    pub fn new(store: Store, outbox: Outbox) -> Fetcher {
        // Ids start from the clock so that chunks answering an earlier agent
        // process (same node, before a restart) are not taken for ours.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Fetcher {
            store,
            outbox,
            next_id: AtomicU64::new(seed),
            pending: Mutex::new(HashMap::new()),
            timeout: CHUNK_TIMEOUT,
        }
    }

    /// Shortens the chunk timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Fetcher {
        self.timeout = timeout;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ChunkTx>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a chunk from the module topic to its pull. Chunks for no known
    /// pull (late, duplicated, for an earlier process) are dropped.
    pub fn on_chunk(&self, header: ModuleChunk, data: &[u8]) {
        let tx = self.pending_map().get(&header.id).cloned();
        match tx {
            Some(tx) => {
                let _ = tx.send((header, data.to_vec()));
            }
            None => tracing::debug!(id = header.id, "dropping a module chunk nobody asked for"),
        }
    }

    /// Fetches `image` from the hub unless its digest is cached; returns the digest.
    pub async fn pull(&self, image: &str) -> Result<String, Error> {
        if !self.outbox.is_connected() {
            return Err(Error::NotConnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending_map().insert(id, tx);
        let _guard = PendingGuard { fetcher: self, id };

        let request = |offset: u64| Up::ModuleRequest {
            id,
            image: image.to_string(),
            offset,
        };
        if !self.outbox.send(request(0)) {
            return Err(Error::NotConnected);
        }
        let mut digest = String::new();
        let mut total = 0u64;
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let (chunk, data) = match tokio::time::timeout(self.timeout, rx.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(Error::NotConnected),
                Err(_) => return Err(Error::Timeout(self.timeout)),
            };
            if let Some(e) = chunk.error {
                return Err(Error::Remote(e));
            }
            if digest.is_empty() {
                if hex_of(&chunk.digest).is_none() {
                    return Err(Error::Protocol(format!(
                        "'{}' is not a sha256 digest",
                        chunk.digest
                    )));
                }
                if image.starts_with("sha256:") && chunk.digest != image {
                    return Err(Error::DigestMismatch {
                        expected: image.to_string(),
                        actual: chunk.digest,
                    });
                }
                digest = chunk.digest.clone();
                if self.store.contains(&digest) {
                    return Ok(digest);
                }
                if chunk.total > MAX_MODULE_BYTES {
                    return Err(Error::Protocol(format!(
                        "module of {} bytes exceeds the agent's limit of {MAX_MODULE_BYTES}",
                        chunk.total
                    )));
                }
                total = chunk.total;
                bytes.reserve(total as usize);
            }
            if chunk.digest != digest || chunk.total != total {
                return Err(Error::Protocol("chunks of different modules".into()));
            }
            if chunk.offset != bytes.len() as u64 {
                // A duplicate (QoS 1 redelivery): ignore it and keep waiting.
                continue;
            }
            if bytes.len() as u64 + data.len() as u64 > total {
                return Err(Error::Protocol("more bytes than announced".into()));
            }
            bytes.extend_from_slice(&data);
            if bytes.len() as u64 == total {
                let store = self.store.clone();
                let d = digest.clone();
                // Hashing and writing megabytes belongs off the async threads.
                tokio::task::spawn_blocking(move || store.put(&d, &bytes))
                    .await
                    .map_err(|e| Error::Io(io::Error::other(e)))??;
                return Ok(digest);
            }
            if data.is_empty() {
                return Err(Error::Protocol("an empty chunk before the end".into()));
            }
            if !self.outbox.send(request(bytes.len() as u64)) {
                return Err(Error::NotConnected);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub stand-in serving `module` under `name` from the outbox.
    fn fake_hub(
        fetcher: &Arc<Fetcher>,
        mut rx: mpsc::UnboundedReceiver<Up>,
        name: &'static str,
        module: Vec<u8>,
        chunk: usize,
    ) -> tokio::task::JoinHandle<Vec<u64>> {
        // Weak, so that dropping the fetcher closes the outbox and ends the hub.
        let fetcher = Arc::downgrade(fetcher);
        tokio::spawn(async move {
            let digest = digest_of(&module);
            let mut offsets = Vec::new();
            while let Some(up) = rx.recv().await {
                let Up::ModuleRequest { id, image, offset } = up else {
                    continue;
                };
                let Some(fetcher) = fetcher.upgrade() else {
                    break;
                };
                offsets.push(offset);
                let mut header = ModuleChunk {
                    id,
                    digest: digest.clone(),
                    offset,
                    total: module.len() as u64,
                    error: None,
                };
                if image != name && image != digest {
                    header.error = Some(format!("module {image} not found"));
                    fetcher.on_chunk(header, &[]);
                    continue;
                }
                let start = offset as usize;
                let end = (start + chunk).min(module.len());
                fetcher.on_chunk(header, &module[start..end]);
            }
            offsets
        })
    }

    fn setup() -> (tempfile::TempDir, Arc<Fetcher>, mpsc::UnboundedReceiver<Up>) {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, rx) = Outbox::new();
        outbox.set_connected(true);
        let fetcher = Arc::new(Fetcher::new(Store::new(dir.path()), outbox));
        (dir, fetcher, rx)
    }

    #[tokio::test]
    async fn a_module_arrives_in_chunks_is_verified_and_cached_once() {
        let (_dir, fetcher, rx) = setup();
        let module: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let hub = fake_hub(&fetcher, rx, "big:v1", module.clone(), 128 * 1024);
        let digest = fetcher.pull("big:v1").await.unwrap();
        assert_eq!(digest, digest_of(&module));
        let stored = fs::read(fetcher.store().path(hex_of(&digest).unwrap())).unwrap();
        assert_eq!(stored, module);
        // Second pull: the first chunk names a cached digest, so it stops there.
        fetcher.pull("big:v1").await.unwrap();
        drop(fetcher);
        let offsets = hub.await.unwrap();
        assert_eq!(offsets, [0, 131072, 262144, 0]);
    }

    #[tokio::test]
    async fn an_error_chunk_fails_the_pull_with_the_hubs_message() {
        let (_dir, fetcher, rx) = setup();
        let _hub = fake_hub(&fetcher, rx, "hello:v1", vec![1, 2, 3], 10);
        let err = fetcher.pull("hello:v9").await.unwrap_err();
        assert_eq!(err.to_string(), "module hello:v9 not found");
    }

    #[tokio::test]
    async fn a_silent_hub_times_out_and_a_disconnected_one_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _rx) = Outbox::new();
        let fetcher = Fetcher::new(Store::new(dir.path()), outbox.clone())
            .with_timeout(Duration::from_millis(50));
        assert!(matches!(
            fetcher.pull("a:b").await,
            Err(Error::NotConnected)
        ));
        outbox.set_connected(true);
        assert!(matches!(fetcher.pull("a:b").await, Err(Error::Timeout(_))));
        assert!(fetcher.pending_map().is_empty());
    }

    #[test]
    fn bytes_that_do_not_match_their_digest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let wrong = digest_of(b"other");
        assert!(matches!(
            store.put(&wrong, b"bytes"),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.contains(&wrong));
        let right = digest_of(b"bytes");
        store.put(&right, b"bytes").unwrap();
        assert!(store.contains(&right));
    }

    /// Property: whatever a hub (or a broker in between) sends back, a
    /// pull ends with a verified module or an error, never a panic, and
    /// nothing unverified is stored.
    mod properties {
        use proptest::prelude::*;
        use spoke_api::fuzz::config;

        use super::*;

        /// How one answer differs from the right one.
        #[derive(Debug, Clone)]
        struct Answer {
            digest: u8,
            offset: Option<u64>,
            total: Option<u64>,
            data: Option<Vec<u8>>,
            error: bool,
        }

        fn answer() -> impl Strategy<Value = Answer> {
            use proptest::option::weighted;
            (
                0u8..8,
                weighted(0.2, prop_oneof![any::<u64>(), 0u64..300]),
                weighted(
                    0.2,
                    prop_oneof![any::<u64>(), Just(MAX_MODULE_BYTES + 1), 0u64..300],
                ),
                weighted(0.2, prop::collection::vec(any::<u8>(), 0..64)),
                proptest::bool::weighted(0.05),
            )
                .prop_map(|(digest, offset, total, data, error)| Answer {
                    digest,
                    offset,
                    total,
                    data,
                    error,
                })
        }

        proptest! {
            #![proptest_config(config(64))]

            #[test]
            fn a_pull_ends_verified_or_with_an_error_whatever_the_hub_sends(
                module in prop::collection::vec(any::<u8>(), 0..200),
                by_digest in any::<bool>(),
                chunk in 1usize..80,
                answers in prop::collection::vec(answer(), 1..12),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let (outbox, mut rx) = Outbox::new();
                outbox.set_connected(true);
                let fetcher = Arc::new(
                    Fetcher::new(Store::new(dir.path()), outbox).with_timeout(Duration::from_millis(20)),
                );
                let right = digest_of(&module);
                let image = if by_digest { right.clone() } else { "app:v1".to_string() };
                let result = rt.block_on(async {
                    let hub = {
                        let fetcher = Arc::downgrade(&fetcher);
                        let module = module.clone();
                        let right = right.clone();
                        tokio::spawn(async move {
                            let mut answers = answers.into_iter();
                            while let Some(Up::ModuleRequest { id, offset, .. }) = rx.recv().await {
                                let Some(a) = answers.next() else { break };
                                let Some(fetcher) = fetcher.upgrade() else { break };
                                let start = (offset as usize).min(module.len());
                                let end = (start + chunk).min(module.len());
                                let digest = match a.digest {
                                    0 => digest_of(b"something else"),
                                    1 => "sha256:zz".to_string(),
                                    _ => right.clone(),
                                };
                                let header = ModuleChunk {
                                    id,
                                    digest,
                                    offset: a.offset.unwrap_or(offset),
                                    total: a.total.unwrap_or(module.len() as u64),
                                    error: a.error.then(|| "module app:v1 not found".to_string()),
                                };
                                let data = a.data.unwrap_or_else(|| module[start..end].to_vec());
                                fetcher.on_chunk(header, &data);
                            }
                        })
                    };
                    let result = fetcher.pull(&image).await;
                    drop(fetcher);
                    let _ = hub.await;
                    result
                });
                let store = Store::new(dir.path());
                match result {
                    Ok(digest) => {
                        if by_digest {
                            prop_assert_eq!(&digest, &right);
                        }
                        let stored = fs::read(store.path(hex_of(&digest).unwrap())).unwrap();
                        prop_assert_eq!(digest_of(&stored), digest);
                    }
                    Err(e) => {
                        prop_assert!(!e.to_string().is_empty());
                        prop_assert!(!store.contains(&right) || fs::read(store.path(hex_of(&right).unwrap())).unwrap() == module);
                    }
                }
                // Only verified modules under their digest; no temporary files left.
                for entry in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    let hex = name.strip_suffix(".wasm").unwrap_or_else(|| panic!("left behind: {name}"));
                    let bytes = fs::read(entry.path()).unwrap();
                    prop_assert_eq!(digest_of(&bytes), format!("sha256:{hex}"));
                }
            }
        }
    }
}
