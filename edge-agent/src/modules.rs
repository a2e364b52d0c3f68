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

/// At most this many unfinished pulls are kept for resuming.
const MAX_PARTIAL: usize = 4;

/// Pulls that gave up are remembered (id → image) this many at a time, so
/// that their chunks arriving late still count.
const MAX_RETIRED: usize = 64;

/// The bytes of a pull that did not finish (no chunk in time, link lost),
/// kept so that the next pull of the same image goes on from where it
/// stopped. On a link that drops every minute or so, a module that needs
/// longer than that would otherwise never arrive, each try starting again
/// at byte 0 (seen with 30% packet loss: tests/tests/netfaults.rs).
struct Partial {
    digest: String,
    total: u64,
    bytes: Vec<u8>,
}

/// Runs pulls: sends requests through the [`Outbox`] and routes incoming
/// chunks to the pull that asked for them.
pub struct Fetcher {
    store: Store,
    outbox: Outbox,
    next_id: AtomicU64,
    /// Pulls under way: id → (image, where their chunks go).
    pending: Mutex<HashMap<u64, (String, ChunkTx)>>,
    /// Unfinished pulls by image reference (see [`Partial`]).
    partial: Mutex<HashMap<String, Partial>>,
    /// Ids of pulls that gave up, with their image, oldest first.
    retired: Mutex<std::collections::VecDeque<(u64, String)>>,
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
            partial: Mutex::new(HashMap::new()),
            retired: Mutex::new(std::collections::VecDeque::new()),
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

    fn pending_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, ChunkTx)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a chunk from the module topic to its pull. Chunks for no known
    /// pull (late, duplicated, for an earlier process) are dropped.
    pub fn on_chunk(&self, header: ModuleChunk, data: &[u8]) {
        let tx = self.pending_map().get(&header.id).map(|(_, tx)| tx.clone());
        match tx {
            Some(tx) => {
                let _ = tx.send((header, data.to_vec()));
            }
            None => self.late_chunk(header, data),
        }
    }

    /// A chunk for a pull that gave up waiting for it (on a slow or lossy
    /// link the answer comes, only late): it goes to the pull of the same
    /// image under way now, or extends the bytes kept for that image, so a
    /// slow link still makes progress. Anything else is dropped.
    fn late_chunk(&self, header: ModuleChunk, data: &[u8]) {
        let image = {
            let retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired
                .iter()
                .find(|(id, _)| *id == header.id)
                .map(|(_, image)| image.clone())
        };
        let Some(image) = image.filter(|_| header.error.is_none()) else {
            tracing::debug!(id = header.id, "dropping a module chunk nobody asked for");
            return;
        };
        let active = self
            .pending_map()
            .values()
            .find(|(i, _)| *i == image)
            .map(|(_, tx)| tx.clone());
        if let Some(tx) = active {
            // That pull checks digest, total and offset as for its own.
            let _ = tx.send((header, data.to_vec()));
            return;
        }
        let mut map = self.partial_map();
        let room = map.len() < MAX_PARTIAL;
        let named = !image.starts_with("sha256:") || image == header.digest;
        match map.get_mut(&image) {
            Some(p)
                if p.digest == header.digest
                    && p.total == header.total
                    && p.bytes.len() as u64 == header.offset
                    && p.bytes.len() as u64 + data.len() as u64 <= p.total =>
            {
                p.bytes.extend_from_slice(data);
            }
            // The first chunk itself came late: keep it as the start. The
            // digest is checked again when the module is complete.
            None if header.offset == 0
                && hex_of(&header.digest).is_some()
                && (data.len() as u64) <= header.total
                && header.total <= MAX_MODULE_BYTES
                && named
                && room =>
            {
                map.insert(
                    image,
                    Partial {
                        digest: header.digest,
                        total: header.total,
                        bytes: data.to_vec(),
                    },
                );
            }
            _ => {}
        }
    }

    /// Remembers that pull `id` of `image` gave up.
    fn retire(&self, id: u64, image: &str) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        if retired.len() >= MAX_RETIRED {
            retired.pop_front();
        }
        retired.push_back((id, image.to_string()));
    }

    fn partial_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Partial>> {
        self.partial.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps what an unfinished pull of `image` got, for the next one.
    fn keep_partial(&self, image: &str, partial: Partial) {
        if partial.digest.is_empty() || partial.bytes.is_empty() {
            return;
        }
        let mut map = self.partial_map();
        let longer = map
            .get(image)
            .is_none_or(|p| p.digest != partial.digest || p.bytes.len() < partial.bytes.len());
        if longer && (map.len() < MAX_PARTIAL || map.contains_key(image)) {
            map.insert(image.to_string(), partial);
        }
    }

    /// Fetches `image` from the hub unless its digest is cached; returns the
    /// digest. A pull that ends for want of an answer (timeout, link lost)
    /// leaves its bytes for the next pull of `image`, which asks for the
    /// rest only (and starts over if the hub now names another digest).
    pub async fn pull(&self, image: &str) -> Result<String, Error> {
        if !self.outbox.is_connected() {
            return Err(Error::NotConnected);
        }
        let resumed = self.partial_map().remove(image);
        let mut partial = resumed.unwrap_or(Partial {
            digest: String::new(),
            total: 0,
            bytes: Vec::new(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.pull_from(id, image, &mut partial).await {
            Err(e @ (Error::Timeout(_) | Error::NotConnected)) => {
                self.keep_partial(image, partial);
                self.retire(id, image);
                Err(e)
            }
            done => done,
        }
    }

    /// [`Fetcher::pull`], going on from `partial` (its digest is not yet
    /// confirmed by the hub when its bytes come from an earlier pull).
    async fn pull_from(
        &self,
        id: u64,
        image: &str,
        partial: &mut Partial,
    ) -> Result<String, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending_map().insert(id, (image.to_string(), tx));
        let _guard = PendingGuard { fetcher: self, id };

        let request = |offset: u64| Up::ModuleRequest {
            id,
            image: image.to_string(),
            offset,
        };
        if !self.outbox.send(request(partial.bytes.len() as u64)) {
            return Err(Error::NotConnected);
        }
        let Partial {
            digest,
            total,
            bytes,
        } = partial;
        // Whether the hub has named the digest in this pull.
        let mut confirmed = false;
        loop {
            let (chunk, data) = match tokio::time::timeout(self.timeout, rx.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(Error::NotConnected),
                Err(_) => return Err(Error::Timeout(self.timeout)),
            };
            if let Some(e) = chunk.error {
                return Err(Error::Remote(e));
            }
            if !confirmed && !digest.is_empty() {
                confirmed = true;
                if chunk.digest != *digest || chunk.total != *total {
                    // The image names another module since the earlier
                    // pull: its bytes are of no use.
                    digest.clear();
                    bytes.clear();
                    if !self.outbox.send(request(0)) {
                        return Err(Error::NotConnected);
                    }
                    continue;
                }
                if self.store.contains(digest) {
                    return Ok(digest.clone());
                }
            }
            if digest.is_empty() {
                confirmed = true;
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
                *digest = chunk.digest.clone();
                if self.store.contains(digest) {
                    return Ok(digest.clone());
                }
                if chunk.total > MAX_MODULE_BYTES {
                    return Err(Error::Protocol(format!(
                        "module of {} bytes exceeds the agent's limit of {MAX_MODULE_BYTES}",
                        chunk.total
                    )));
                }
                *total = chunk.total;
                bytes.reserve(*total as usize);
            }
            if chunk.digest != *digest || chunk.total != *total {
                return Err(Error::Protocol("chunks of different modules".into()));
            }
            if chunk.offset != bytes.len() as u64 {
                // A duplicate (QoS 1 redelivery): ignore it and keep waiting.
                continue;
            }
            if bytes.len() as u64 + data.len() as u64 > *total {
                return Err(Error::Protocol("more bytes than announced".into()));
            }
            bytes.extend_from_slice(&data);
            if bytes.len() as u64 == *total {
                let store = self.store.clone();
                let d = digest.clone();
                // Hashing and writing megabytes belongs off the async threads.
                let all = std::mem::take(bytes);
                tokio::task::spawn_blocking(move || store.put(&d, &all))
                    .await
                    .map_err(|e| Error::Io(io::Error::other(e)))??;
                return Ok(digest.clone());
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

    /// Plays the hub for one request from `rx`: answers it with the chunk
    /// of `module` at the offset asked for, or not at all. Returns the offset.
    async fn answer(
        fetcher: &Fetcher,
        rx: &mut mpsc::UnboundedReceiver<Up>,
        module: &[u8],
        reply: bool,
    ) -> u64 {
        let Some(Up::ModuleRequest { id, offset, .. }) = rx.recv().await else {
            panic!("a module request");
        };
        if reply {
            let start = offset as usize;
            let end = (start + 100).min(module.len());
            let header = ModuleChunk {
                id,
                digest: digest_of(module),
                offset,
                total: module.len() as u64,
                error: None,
            };
            fetcher.on_chunk(header, &module[start..end]);
        }
        offset
    }

    #[tokio::test]
    async fn a_pull_that_times_out_is_resumed_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let (fetcher, mut rx) = connected_fetcher(dir.path(), Duration::from_millis(200));
        let module: Vec<u8> = (0..250u32).map(|i| (i * 7) as u8).collect();
        // First pull: two chunks arrive, the third never does.
        let f = fetcher.clone();
        let first = tokio::spawn(async move { f.pull("m:v1").await });
        let mut offsets = Vec::new();
        for reply in [true, true, false] {
            offsets.push(answer(&fetcher, &mut rx, &module, reply).await);
        }
        assert!(matches!(first.await.unwrap(), Err(Error::Timeout(_))));
        // Second pull: asks for the rest only.
        let f = fetcher.clone();
        let second = tokio::spawn(async move { f.pull("m:v1").await });
        offsets.push(answer(&fetcher, &mut rx, &module, true).await);
        assert_eq!(second.await.unwrap().unwrap(), digest_of(&module));
        assert_eq!(offsets, [0, 100, 200, 200]);
        let stored = fs::read(fetcher.store().path(hex_of(&digest_of(&module)).unwrap())).unwrap();
        assert_eq!(stored, module);
        assert!(fetcher.partial_map().is_empty());
    }

    /// A fetcher on a connected outbox with a short timeout, and the
    /// receiving end of what it sends.
    fn connected_fetcher(
        dir: &Path,
        timeout: Duration,
    ) -> (Arc<Fetcher>, mpsc::UnboundedReceiver<Up>) {
        let (outbox, rx) = Outbox::new();
        outbox.set_connected(true);
        let fetcher = Arc::new(Fetcher::new(Store::new(dir), outbox).with_timeout(timeout));
        (fetcher, rx)
    }

    /// The next request: (pull id, offset).
    async fn request(rx: &mut mpsc::UnboundedReceiver<Up>) -> (u64, u64) {
        match rx.recv().await {
            Some(Up::ModuleRequest { id, offset, .. }) => (id, offset),
            other => panic!("a module request, not {other:?}"),
        }
    }

    /// The hub's 100-byte chunk of `module` at `offset` for pull `id`.
    fn chunk(fetcher: &Fetcher, id: u64, module: &[u8], offset: u64) {
        let end = (offset as usize + 100).min(module.len());
        let header = ModuleChunk {
            id,
            digest: digest_of(module),
            offset,
            total: module.len() as u64,
            error: None,
        };
        fetcher.on_chunk(header, &module[offset as usize..end]);
    }

    #[tokio::test]
    async fn a_chunk_that_comes_after_its_pull_gave_up_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (fetcher, mut rx) = connected_fetcher(dir.path(), Duration::from_millis(200));
        let module: Vec<u8> = (0..250u32).map(|i| (i * 3) as u8).collect();
        let mut offsets = Vec::new();
        // The first chunk comes after its pull gave up: kept all the same,
        // so the next pull asks from 100.
        let f = fetcher.clone();
        let first = tokio::spawn(async move { f.pull("m:v1").await });
        let (id1, o) = request(&mut rx).await;
        offsets.push(o);
        assert!(matches!(first.await.unwrap(), Err(Error::Timeout(_))));
        chunk(&fetcher, id1, &module, 0);
        let f = fetcher.clone();
        let second = tokio::spawn(async move { f.pull("m:v1").await });
        let (id2, o) = request(&mut rx).await;
        offsets.push(o);
        chunk(&fetcher, id2, &module, 100);
        let (_, o) = request(&mut rx).await;
        offsets.push(o);
        assert!(matches!(second.await.unwrap(), Err(Error::Timeout(_))));
        // The answer to offset 200 comes late, while a third pull waits for
        // its own answer to the same request: it completes that pull.
        let f = fetcher.clone();
        let third = tokio::spawn(async move { f.pull("m:v1").await });
        let (_, o) = request(&mut rx).await;
        offsets.push(o);
        chunk(&fetcher, id2, &module, 200);
        assert_eq!(third.await.unwrap().unwrap(), digest_of(&module));
        assert_eq!(offsets, [0, 100, 200, 200]);
        let stored = fs::read(fetcher.store().path(hex_of(&digest_of(&module)).unwrap())).unwrap();
        assert_eq!(stored, module);
    }

    #[tokio::test]
    async fn a_resumed_pull_starts_over_when_the_image_names_another_module() {
        let dir = tempfile::tempdir().unwrap();
        let (fetcher, mut rx) = connected_fetcher(dir.path(), Duration::from_millis(200));
        let old: Vec<u8> = vec![1; 250];
        let new: Vec<u8> = vec![2; 150];
        let f = fetcher.clone();
        let first = tokio::spawn(async move { f.pull("m:latest").await });
        answer(&fetcher, &mut rx, &old, true).await;
        answer(&fetcher, &mut rx, &old, false).await;
        assert!(first.await.is_ok_and(|r| r.is_err()));
        // The tag moved: the answer at offset 100 names another digest, so
        // the pull asks again from 0 and keeps none of the old bytes.
        let f = fetcher.clone();
        let second = tokio::spawn(async move { f.pull("m:latest").await });
        let mut offsets = Vec::new();
        for _ in 0..3 {
            offsets.push(answer(&fetcher, &mut rx, &new, true).await);
        }
        assert_eq!(second.await.unwrap().unwrap(), digest_of(&new));
        assert_eq!(offsets, [100, 0, 100]);
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
                let (fetcher, mut rx) = connected_fetcher(dir.path(), Duration::from_millis(20));
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
