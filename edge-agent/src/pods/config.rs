//! ConfigMap and Secret data the hub sends with a pod: the values of
//! `env[].valueFrom` / `envFrom`, and the files of `configMap` / `secret`
//! volumes.
//!
//! Guarantees:
//! - Only what the hub sent with the pod is used: the board never asks for
//!   other objects (see `docs/protocol.md`).
//! - A missing object or key that is not `optional` is an error naming it,
//!   which the supervisor shows as `CreateContainerConfigError`.
//! - Volume files are replaced atomically (written beside the volume, then
//!   renamed over the old file), so a guest reads the old or the new
//!   content, never a mix. Files of keys that went away are removed.
//! - Values never reach a log line or an error message: only names do.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use spoke_api::core::{Container, KeyToPath, Volume};
use spoke_api::protocol::{ConfigData, DesiredPod};

/// The ConfigMaps and Secrets of one pod, by name, as the hub last sent them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    pub config_maps: BTreeMap<String, ConfigData>,
    pub secrets: BTreeMap<String, ConfigData>,
}

impl Data {
    pub fn of(pod: &DesiredPod) -> Data {
        Data {
            config_maps: pod.config_maps.clone(),
            secrets: pod.secrets.clone(),
        }
    }

    fn object(&self, secret: bool, name: &str) -> Option<&ConfigData> {
        if secret {
            self.secrets.get(name)
        } else {
            self.config_maps.get(name)
        }
    }
}

fn kind(secret: bool) -> &'static str {
    if secret { "secret" } else { "configmap" }
}

/// The environment of `container`: `envFrom` first, then `env` (which wins
/// on a clash), as Kubernetes builds it. Keys of `envFrom` that are not
/// valid variable names are skipped.
pub fn env(container: &Container, data: &Data) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    };
    for from in &container.env_from {
        let (secret, r) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            (None, None) => continue,
        };
        let Some(object) = data.object(secret, &r.name) else {
            if r.optional == Some(true) {
                continue;
            }
            return Err(format!("{} \"{}\" not found", kind(secret), r.name));
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        for (key, bytes) in object.entries() {
            let name = format!("{prefix}{key}");
            let Ok(value) = String::from_utf8(bytes) else {
                continue;
            };
            if !name.contains('=') && !value.contains('\0') {
                set(&mut vars, name, value);
            }
        }
    }
    for e in &container.env {
        let Some(from) = &e.value_from else {
            set(&mut vars, e.name.clone(), e.value.clone());
            continue;
        };
        let (secret, r) = match (&from.config_map_key_ref, &from.secret_key_ref) {
            (Some(r), _) => (false, r),
            (None, Some(r)) => (true, r),
            (None, None) => continue,
        };
        let value = match data.object(secret, &r.name) {
            None => Err(format!("{} \"{}\" not found", kind(secret), r.name)),
            Some(o) => o.get(&r.key).ok_or_else(|| {
                format!(
                    "couldn't find key {} in {} \"{}\"",
                    r.key,
                    kind(secret),
                    r.name
                )
            }),
        };
        match value {
            Ok(bytes) => {
                let value = String::from_utf8(bytes)
                    .ok()
                    .filter(|v| !v.contains('\0'))
                    .ok_or_else(|| {
                        format!(
                            "env {}: key {} of {} \"{}\" is not text",
                            e.name,
                            r.key,
                            kind(secret),
                            r.name
                        )
                    })?;
                set(&mut vars, e.name.clone(), value);
            }
            Err(_) if r.optional == Some(true) => {}
            Err(m) => return Err(m),
        }
    }
    Ok(vars)
}

/// The files of a `configMap` or `secret` volume (relative path → bytes),
/// or `None` for another kind of volume.
pub fn files(volume: &Volume, data: &Data) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let (secret, name, items, optional) = match (&volume.config_map, &volume.secret) {
        (Some(c), _) => (false, &c.name, &c.items, c.optional == Some(true)),
        (None, Some(s)) => (true, &s.secret_name, &s.items, s.optional == Some(true)),
        (None, None) => return Ok(None),
    };
    let Some(object) = data.object(secret, name) else {
        if optional {
            return Ok(Some(BTreeMap::new()));
        }
        return Err(format!(
            "volume \"{}\": {} \"{name}\" not found",
            volume.name,
            kind(secret)
        ));
    };
    if items.is_empty() {
        return Ok(Some(object.entries()));
    }
    let mut files = BTreeMap::new();
    for KeyToPath { key, path, .. } in items {
        match object.get(key) {
            Some(bytes) => {
                files.insert(path.clone(), bytes);
            }
            None if optional => {}
            None => {
                return Err(format!(
                    "volume \"{}\": couldn't find key {key} in {} \"{name}\"",
                    volume.name,
                    kind(secret)
                ));
            }
        }
    }
    Ok(Some(files))
}

/// Makes `dir` hold exactly `files`. Each changed file is written to a
/// temporary file beside `dir` (same filesystem) and renamed into place.
/// Blocking IO.
pub fn project(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let parent = dir.parent().unwrap_or(dir);
    let stem = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = parent.join(format!(".{}.tmp", stem.unwrap_or_default()));
    for (path, bytes) in files {
        // Paths were validated by the hub; check again, they came over the network.
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            continue;
        }
        let target = dir.join(path);
        if fs::read(&target).is_ok_and(|old| old == *bytes) {
            continue;
        }
        if let Some(p) = target.parent() {
            fs::create_dir_all(p)?;
        }
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &target)?;
    }
    remove_others(dir, dir, files)
}

/// Removes the files under `dir` that are not in `files` (keys gone).
fn remove_others(root: &Path, dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            remove_others(root, &path, files)?;
            if fs::read_dir(&path)?.next().is_none() {
                fs::remove_dir(&path)?;
            }
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        if !files.contains_key(rel.as_ref()) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Data {
        let mut d = Data::default();
        d.config_maps.insert(
            "app".into(),
            ConfigData {
                data: BTreeMap::from([("greeting".into(), "hi".into())]),
                binary_data: BTreeMap::new(),
            },
        );
        d.secrets.insert(
            "creds".into(),
            ConfigData {
                data: BTreeMap::new(),
                // "s3cret"
                binary_data: BTreeMap::from([("password".into(), "czNjcmV0".into())]),
            },
        );
        d
    }

    #[test]
    fn env_comes_from_keys_and_names_what_is_missing() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "a:1",
            "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "APP_"}],
            "env": [
                {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "APP_greeting", "value": "override"}
            ]
        }))
        .unwrap();
        let vars = env(&c, &data()).unwrap();
        assert_eq!(
            vars,
            vec![
                ("APP_greeting".to_string(), "override".to_string()),
                ("GREETING".into(), "hi".into()),
                ("PASSWORD".into(), "s3cret".into()),
            ]
        );
        let mut c2 = c.clone();
        c2.env[0]
            .value_from
            .as_mut()
            .unwrap()
            .config_map_key_ref
            .as_mut()
            .unwrap()
            .key = "x".into();
        let e = env(&c2, &data()).unwrap_err();
        assert!(e.contains("key x") && e.contains("\"app\""), "{e}");
        let e = env(&c, &Data::default()).unwrap_err();
        assert!(e.contains("configmap \"app\" not found"), "{e}");
    }

    #[test]
    fn projection_replaces_files_and_removes_gone_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let mut files = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("sub/b".to_string(), b"2".to_vec()),
        ]);
        project(&dir, &files).unwrap();
        assert_eq!(fs::read(dir.join("sub/b")).unwrap(), b"2");
        files.remove("sub/b");
        files.insert("a".into(), b"changed".to_vec());
        project(&dir, &files).unwrap();
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"changed");
        assert!(!dir.join("sub").exists());
        assert!(!tmp.path().join(".vol.tmp").exists());
    }
}
