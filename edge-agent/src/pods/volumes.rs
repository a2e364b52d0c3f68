//! Pod volumes as WASI preopened directories: `emptyDir` under the agent's
//! data dir per pod uid, `hostPath` only under the prefixes the agent allows.
//!
//! Guarantees:
//! - An `emptyDir` is `DATA/volumes/<pod uid>/<volume name>`: shared by the
//!   pod's containers, kept across their restarts and agent restarts, removed
//!   once the pod is no longer wanted on this node (deleted, or replaced by a
//!   pod with another uid).
//! - A `hostPath` is mounted only when, after resolving symlinks, it lies
//!   under one of `--allow-host-path`'s prefixes (also resolved). `..` is
//!   refused outright; a missing directory is created (`DirectoryOrCreate`)
//!   only after its deepest existing ancestor was found inside a prefix, so a
//!   symlink cannot make the agent create directories elsewhere.
//! - Inside the preopen, wasmtime-wasi (cap-std) keeps the guest in the
//!   directory: its own symlinks and `..` cannot leave it.
//!
//! Caveats: the checks and the open are separate steps, so someone who can
//! already write inside an allowed prefix could race a symlink in between;
//! allow only prefixes whose writers you trust. `sizeLimit` is checked every
//! [`USAGE_CHECK_EVERY`] (disk usage as `du` counts it), so a guest can pass
//! it by what it writes in that time before it is evicted.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use spoke_api::core::{Container as SpecContainer, PodSpec};

use super::config::{self, Data};
use crate::runtime::Mount;

/// How often the disk usage of size-limited `emptyDir`s is measured.
pub const USAGE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Where this node keeps pod volumes, and which host paths it lets pods mount.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
    allowed: Vec<PathBuf>,
}

impl Volumes {
    /// `root` holds the `emptyDir`s (`DATA/volumes`); `allowed` are the
    /// `--allow-host-path` prefixes.
    pub fn new(root: &Path, allowed: &[PathBuf]) -> Volumes {
        Volumes {
            root: root.to_path_buf(),
            allowed: allowed.to_vec(),
        }
    }

    /// The directory of a pod's `emptyDir`s. `None` for a uid that is not a
    /// plain name (it comes from the network: it must not be a path).
    fn pod_dir(&self, uid: &str) -> Option<PathBuf> {
        let plain = !uid.is_empty()
            && uid.len() <= 128
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plain.then(|| self.root.join(uid))
    }

    /// The host directory of `emptyDir` volume `name` of pod `uid`.
    pub fn empty_dir(&self, uid: &str, name: &str) -> Option<PathBuf> {
        Some(self.pod_dir(uid)?.join(name))
    }

    /// The preopens of one container, creating `emptyDir`s as needed.
    /// Errors are the Waiting message (`CreateContainerConfigError`).
    ///
    /// Blocking IO: call from `spawn_blocking`.
    pub fn mounts(
        &self,
        uid: &str,
        spec: &PodSpec,
        container: &SpecContainer,
        data: &Data,
    ) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::with_capacity(container.volume_mounts.len());
        for m in &container.volume_mounts {
            let volume = spec
                .volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| format!("volumeMount \"{}\": no volume of that name", m.name))?;
            let mut read_only = m.read_only;
            let host = if let Some(files) = config::files(volume, data)? {
                // configMap and secret volumes: read-only to the guest.
                read_only = true;
                let dir = self.volume_dir(uid, &volume.name)?;
                config::project(&dir, &files).map_err(|e| {
                    format!("volume \"{}\": cannot write its files: {e}", volume.name)
                })?;
                dir
            } else if volume.empty_dir.is_some() {
                let dir = self
                    .empty_dir(uid, &volume.name)
                    .filter(|_| spoke_api::validation::dns1123_label(&volume.name).is_ok())
                    .ok_or_else(|| {
                        format!("volume \"{}\": bad pod uid or volume name", volume.name)
                    })?;
                fs::create_dir_all(&dir).map_err(|e| {
                    format!(
                        "volume \"{}\": cannot create {}: {e}",
                        volume.name,
                        dir.display()
                    )
                })?;
                dir
            } else if let Some(h) = &volume.host_path {
                let create = h.type_.as_deref() == Some("DirectoryOrCreate");
                resolve_host_path(Path::new(&h.path), create, &self.allowed)
                    .map_err(|e| format!("volume \"{}\": {e}", volume.name))?
            } else {
                return Err(format!("volume \"{}\": no supported source", volume.name));
            };
            mounts.push(Mount {
                host,
                guest: m.mount_path.clone(),
                read_only,
            });
        }
        Ok(mounts)
    }

    fn volume_dir(&self, uid: &str, name: &str) -> Result<PathBuf, String> {
        self.empty_dir(uid, name)
            .filter(|_| spoke_api::validation::dns1123_label(name).is_ok())
            .ok_or_else(|| format!("volume \"{name}\": bad pod uid or volume name"))
    }

    /// Rewrites the files of the pod's `configMap`/`secret` volumes that are
    /// already set up, after the hub sent new data: in place, without
    /// restarting anything. A volume whose object is now missing keeps its
    /// last files. Blocking IO.
    pub fn refresh(&self, uid: &str, spec: &PodSpec, data: &Data) {
        for volume in &spec.volumes {
            let Ok(dir) = self.volume_dir(uid, &volume.name) else {
                continue;
            };
            if !dir.is_dir() {
                continue;
            }
            match config::files(volume, data) {
                Ok(Some(files)) => {
                    if let Err(e) = config::project(&dir, &files) {
                        tracing::warn!(volume = %volume.name, error = %e, "cannot update volume files");
                    }
                }
                Ok(None) => {}
                Err(message) => {
                    tracing::warn!(%message, "volume keeps its last files")
                }
            }
        }
    }

    /// Removes the `emptyDir`s of every pod whose uid is not in `keep`.
    /// Blocking IO.
    pub fn retain(&self, keep: &BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if keep.contains(name.to_string_lossy().as_ref()) {
                continue;
            }
            let path = entry.path();
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed the emptyDir volumes of a pod gone from this node")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove pod volumes")
                }
            }
        }
    }
}

/// Why a host path is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostPathError {
    #[error("hostPath {path} must be absolute, without '.' or '..'")]
    NotClean { path: String },
    #[error("hostPath {path} is not allowed on this node (allowed prefixes: {allowed})")]
    NotAllowed { path: String, allowed: String },
    #[error("hostPath {path} does not exist (type Directory)")]
    Missing { path: String },
    #[error("hostPath {path} is not a directory")]
    NotADirectory { path: String },
    #[error("hostPath {path}: {message}")]
    Io { path: String, message: String },
}

/// Resolves `path` to a real directory under one of `allowed`, creating it
/// when `create` (see the module docs for the order of checks).
pub fn resolve_host_path(
    path: &Path,
    create: bool,
    allowed: &[PathBuf],
) -> Result<PathBuf, HostPathError> {
    let shown = path.display().to_string();
    let not_allowed = || HostPathError::NotAllowed {
        path: shown.clone(),
        allowed: if allowed.is_empty() {
            "none; see --allow-host-path".into()
        } else {
            allowed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
    };
    let io = |e: io::Error| HostPathError::Io {
        path: shown.clone(),
        message: e.to_string(),
    };
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return Err(HostPathError::NotClean { path: shown });
    }
    // As written, under a prefix as written...
    if !allowed.iter().any(|prefix| path.starts_with(prefix)) {
        return Err(not_allowed());
    }
    // ...and, symlinks resolved, under a prefix resolved.
    let real_prefixes: Vec<PathBuf> = allowed
        .iter()
        .filter_map(|p| fs::canonicalize(p).ok())
        .collect();
    let inside = |real: &Path| real_prefixes.iter().any(|p| real.starts_with(p));
    let mut existing = path;
    while fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().ok_or_else(not_allowed)?;
    }
    if !inside(&fs::canonicalize(existing).map_err(io)?) {
        return Err(not_allowed());
    }
    if existing != path {
        if !create {
            return Err(HostPathError::Missing { path: shown });
        }
        fs::create_dir_all(path).map_err(io)?;
    }
    let real = fs::canonicalize(path).map_err(io)?;
    if !inside(&real) {
        return Err(not_allowed());
    }
    if !real.is_dir() {
        return Err(HostPathError::NotADirectory { path: shown });
    }
    Ok(real)
}

/// Disk space used under `dir`, as `du` counts it (allocated blocks; symlinks
/// are not followed). Blocking IO.
pub fn disk_usage(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            // Removed meanwhile by the guest: nothing to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_resolve_only_inside_allowed_prefixes() {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        let allowed = base.join("allowed");
        let outside = base.join("outside");
        fs::create_dir_all(allowed.join("data")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(allowed.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        std::os::unix::fs::symlink(allowed.join("data"), allowed.join("inner")).unwrap();
        let prefixes = vec![allowed.clone()];

        type Case = (PathBuf, bool, &'static str);
        let table: Vec<Case> = vec![
            (allowed.join("data"), false, "ok"),
            (allowed.clone(), false, "ok"),
            (allowed.join("inner"), false, "ok"),
            (allowed.join("new/dir"), true, "ok"),
            (allowed.join("missing"), false, "does not exist"),
            (allowed.join("file"), false, "not a directory"),
            (outside.clone(), false, "not allowed"),
            (allowed.join("escape"), false, "not allowed"),
            (allowed.join("escape/created"), true, "not allowed"),
            (
                PathBuf::from(format!("{}/../outside", allowed.display())),
                false,
                "'..'",
            ),
            (PathBuf::from("relative/path"), false, "absolute"),
            (
                PathBuf::from(format!("{}-sibling", allowed.display())),
                true,
                "not allowed",
            ),
        ];
        for (path, create, want) in table {
            let got = resolve_host_path(&path, create, &prefixes);
            match (&got, want) {
                (Ok(real), "ok") => assert!(real.starts_with(&allowed), "{}", path.display()),
                (Err(e), _) => assert!(e.to_string().contains(want), "{}: {e}", path.display()),
                (Ok(real), _) => panic!("{} resolved to {}", path.display(), real.display()),
            }
        }
        // Nothing was created outside the prefix through the symlink, nor beside it.
        assert!(!outside.join("created").exists());
        assert!(!base.join("allowed-sibling").exists());

        // No prefixes: everything is refused, and the message says how to allow.
        let e = resolve_host_path(&allowed.join("data"), false, &[]).unwrap_err();
        assert!(e.to_string().contains("--allow-host-path"), "{e}");
        let e = resolve_host_path(&outside, false, &prefixes).unwrap_err();
        assert!(
            e.to_string().contains(&allowed.display().to_string()),
            "the message names the allowed prefixes: {e}"
        );
    }

    #[test]
    fn empty_dirs_live_per_pod_uid_and_go_with_the_pod() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volumes::new(&tmp.path().join("volumes"), &[]);
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "containers": [{"name": "a", "image": "a:1",
                "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": true}]}]
        }))
        .unwrap();
        let mounts = v
            .mounts("uid-1", &spec, &spec.containers[0], &Data::default())
            .unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].host, tmp.path().join("volumes/uid-1/cache"));
        assert_eq!(mounts[0].guest, "/cache");
        assert!(mounts[0].read_only);
        assert!(mounts[0].host.is_dir());
        fs::write(mounts[0].host.join("f"), vec![1u8; 10_000]).unwrap();
        assert!(disk_usage(&mounts[0].host).unwrap() >= 10_000);
        v.mounts("uid-2", &spec, &spec.containers[0], &Data::default())
            .unwrap();

        // A uid from the network is never a path.
        assert!(
            v.mounts("../x", &spec, &spec.containers[0], &Data::default())
                .is_err()
        );

        v.retain(&BTreeSet::from(["uid-2".to_string()]));
        assert!(!tmp.path().join("volumes/uid-1").exists());
        assert!(tmp.path().join("volumes/uid-2/cache").is_dir());
    }
}
