//! The content-addressed module store: `.wasm` bytes kept by sha256, and
//! `name:tag` references that point at digests.
//!
//! Blobs live in `DIR/blobs/sha256/<hex>` (written to a temporary file,
//! fsynced, then renamed, so a blob under its digest name is always
//! complete); tags live in `DIR/index.redb`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest as _, Sha256};
use spoke_api::module::{ImageRef, ModuleInfo, is_sha256_hex};

const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");

/// Errors of the module store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Pushed bytes are not a WebAssembly binary.
    #[error("not a WebAssembly module or component (the file does not start with \\0asm)")]
    NotWasm,
    /// The reference is malformed.
    #[error("invalid module reference: {0}")]
    BadRef(#[from] spoke_api::module::ImageRefError),
    /// Nothing is stored under this reference.
    #[error(
        "module {0} not found in the hub's module store (push it with 'spoke push FILE.wasm {0}')"
    )]
    NotFound(String),
    #[error("module store IO: {0}")]
    Io(#[from] std::io::Error),
    #[error("module index: {0}")]
    Index(String),
}

fn index_err(e: impl std::fmt::Display) -> Error {
    Error::Index(e.to_string())
}

/// The module store of one hub.
pub struct ModuleStore {
    dir: PathBuf,
    index: Database,
}

impl ModuleStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<ModuleStore, Error> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        let index = Database::create(dir.join("index.redb")).map_err(index_err)?;
        let txn = index.begin_write().map_err(index_err)?;
        txn.open_table(TAGS).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        Ok(ModuleStore {
            dir: dir.to_path_buf(),
            index,
        })
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Stores `bytes` and points `tag` (a `name:tag` reference) at them.
    pub fn push(&self, bytes: &[u8], tag: Option<&str>) -> Result<ModuleInfo, Error> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(Error::NotWasm);
        }
        let tag = match tag.map(ImageRef::parse).transpose()? {
            Some(ImageRef::Tag { name, tag }) => Some(format!("{name}:{tag}")),
            Some(ImageRef::Digest(_)) => {
                return Err(Error::BadRef(spoke_api::module::ImageRefError::BadName(
                    "a tag cannot be a digest".into(),
                )));
            }
            None => None,
        };
        let hex = hex::encode(Sha256::digest(bytes));
        let path = self.blob_path(&hex);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
        let digest = format!("sha256:{hex}");
        if let Some(tag) = &tag {
            let txn = self.index.begin_write().map_err(index_err)?;
            txn.open_table(TAGS)
                .map_err(index_err)?
                .insert(tag.as_str(), digest.as_str())
                .map_err(index_err)?;
            txn.commit().map_err(index_err)?;
        }
        Ok(ModuleInfo {
            tags: self.tags_of(&digest)?,
            digest,
            size: bytes.len() as u64,
        })
    }

    /// Resolves a reference to a stored digest.
    pub fn resolve(&self, reference: &str) -> Result<String, Error> {
        match ImageRef::parse(reference)? {
            ImageRef::Digest(d) => {
                let hex = &d["sha256:".len()..];
                if self.blob_path(hex).exists() {
                    Ok(d)
                } else {
                    Err(Error::NotFound(reference.to_string()))
                }
            }
            r @ ImageRef::Tag { .. } => {
                let txn = self.index.begin_read().map_err(index_err)?;
                let table = txn.open_table(TAGS).map_err(index_err)?;
                let key = r.to_string();
                let found = table.get(key.as_str()).map_err(index_err)?;
                found
                    .map(|v| v.value().to_string())
                    .ok_or(Error::NotFound(key))
            }
        }
    }

    /// Reads up to `len` bytes of a stored module from `offset`, and its size.
    pub fn read_chunk(
        &self,
        digest: &str,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, u64), Error> {
        use std::io::{Read, Seek, SeekFrom};
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
            .ok_or_else(|| Error::NotFound(digest.to_string()))?;
        let mut f = std::fs::File::open(self.blob_path(hex)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(digest.to_string()),
            _ => Error::Io(e),
        })?;
        let total = f.metadata()?.len();
        f.seek(SeekFrom::Start(offset.min(total)))?;
        let mut buf = Vec::with_capacity(len.min(total.saturating_sub(offset) as usize));
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok((buf, total))
    }

    /// Reads a whole module.
    pub fn read(&self, digest: &str) -> Result<Vec<u8>, Error> {
        Ok(self.read_chunk(digest, 0, usize::MAX)?.0)
    }

    fn tags_of(&self, digest: &str) -> Result<Vec<String>, Error> {
        let txn = self.index.begin_read().map_err(index_err)?;
        let table = txn.open_table(TAGS).map_err(index_err)?;
        let mut tags = Vec::new();
        for entry in table.iter().map_err(index_err)? {
            let (k, v) = entry.map_err(index_err)?;
            if v.value() == digest {
                tags.push(k.value().to_string());
            }
        }
        Ok(tags)
    }

    /// Every stored module with its tags.
    pub fn list(&self) -> Result<Vec<ModuleInfo>, Error> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("blobs/sha256"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if !is_sha256_hex(&name) {
                continue;
            }
            let digest = format!("sha256:{name}");
            out.push(ModuleInfo {
                tags: self.tags_of(&digest)?,
                size: entry.metadata()?.len(),
                digest,
            });
        }
        out.sort_by(|a, b| a.tags.cmp(&b.tags).then(a.digest.cmp(&b.digest)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn push_then_resolve_by_tag_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let info = store.push(WASM, Some("hello:v1")).unwrap();
        assert_eq!(info.size, 8);
        assert_eq!(info.tags, ["hello:v1"]);
        assert_eq!(store.resolve("hello:v1").unwrap(), info.digest);
        assert_eq!(store.resolve(&info.digest).unwrap(), info.digest);
        assert_eq!(store.read(&info.digest).unwrap(), WASM);
        let (chunk, total) = store.read_chunk(&info.digest, 4, 2).unwrap();
        assert_eq!((chunk.as_slice(), total), (&WASM[4..6], 8));
    }

    #[test]
    fn refuses_what_is_not_wasm_and_unknown_refs() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.push(b"#!/bin/sh\necho", None),
            Err(Error::NotWasm)
        ));
        assert!(matches!(store.resolve("nope:v1"), Err(Error::NotFound(_))));
        let missing = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(store.resolve(&missing), Err(Error::NotFound(_))));
        assert!(matches!(
            store.read_chunk("sha256:../../etc/passwd", 0, 10),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn retagging_moves_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let a = store.push(WASM, Some("app:v1")).unwrap();
        let b = store.push(b"\0asm\x01\0\0\0\0", Some("app:v1")).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_eq!(store.resolve("app:v1").unwrap(), b.digest);
    }
}
