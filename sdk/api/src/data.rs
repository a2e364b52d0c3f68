//! ConfigMap and Secret (core `v1`): configuration a pod reads through its
//! environment or mounted files.
//!
//! Secret `data` values are base64, as in Kubernetes; `stringData` is a
//! write-only convenience that the hub folds into `data` on admission.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::{FieldError, validate_meta};

/// ConfigMaps and Secrets are capped at 1 MiB, as in Kubernetes: they travel
/// to boards over the same MQTT link as everything else.
pub const MAX_DATA_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// base64-encoded values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// base64-encoded values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    /// Defaults to `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// A key of `data`: what a file in a mounted volume is called, so
/// alphanumerics, `-`, `_` and `.`, and not `.` or `..`.
fn check_key(field: &str, key: &str, errs: &mut Vec<FieldError>) {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        errs.push(FieldError::invalid(
            format!("{field}[{key}]"),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        ));
    }
}

fn check_base64(field: &str, map: &BTreeMap<String, String>, errs: &mut Vec<FieldError>) {
    for (k, v) in map {
        if base64::engine::general_purpose::STANDARD.decode(v).is_err() {
            errs.push(FieldError::invalid(
                format!("{field}[{k}]"),
                "must be base64-encoded",
            ));
        }
    }
}

fn check_size(total: usize, errs: &mut Vec<FieldError>) {
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::new(
            "data",
            "FieldValueTooLong",
            format!("may not be more than {MAX_DATA_BYTES} bytes in total (got {total})"),
        ));
    }
}

impl ConfigMap {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        for k in self.data.keys() {
            check_key("data", k, &mut errs);
        }
        for k in self.binary_data.keys() {
            check_key("binaryData", k, &mut errs);
            if self.data.contains_key(k) {
                errs.push(FieldError::invalid(
                    format!("binaryData[{k}]"),
                    "duplicate of a key in data",
                ));
            }
        }
        check_base64("binaryData", &self.binary_data, &mut errs);
        let total: usize = self
            .data
            .iter()
            .chain(&self.binary_data)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        check_size(total, &mut errs);
        errs
    }
}

impl Secret {
    /// Folds `stringData` into `data` (it wins on a shared key), as the
    /// Kubernetes API server does on every write.
    pub fn fold_string_data(&mut self) {
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data
                .insert(k, base64::engine::general_purpose::STANDARD.encode(v));
        }
    }

    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        for k in self.data.keys().chain(self.string_data.keys()) {
            check_key("data", k, &mut errs);
        }
        check_base64("data", &self.data, &mut errs);
        let total: usize = self
            .data
            .iter()
            .chain(&self.string_data)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        check_size(total, &mut errs);
        errs
    }
}
