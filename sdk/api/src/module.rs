//! Module references (a pod's `image`) and module store records.

use serde::{Deserialize, Serialize};

/// What a container's `image` may name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// `sha256:<64 hex digits>`: exactly these bytes.
    Digest(String),
    /// `name:tag` (or `name`, meaning `name:latest`) pushed to the hub.
    Tag { name: String, tag: String },
}

/// Why an image reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("must not be empty")]
    Empty,
    #[error("a digest must be 'sha256:' followed by 64 lower-case hex digits")]
    BadDigest,
    #[error(
        "'{0}' is not a module reference: use sha256:<digest> or name:tag (names: lower-case letters, digits, '.', '_', '-', '/'; tags: letters, digits, '.', '_', '-', at most 128)"
    )]
    BadName(String),
    #[error(
        "'{0}': fetching modules from URLs and OCI registries is not supported yet; push the module with 'spoke push' and use name:tag"
    )]
    Unsupported(String),
}

impl ImageRef {
    /// Reads a container's `image` field.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if let Some(hex) = s.strip_prefix("sha256:") {
            return if is_sha256_hex(hex) {
                Ok(ImageRef::Digest(s.to_string()))
            } else {
                Err(ImageRefError::BadDigest)
            };
        }
        if s.contains("://") || s.contains('@') {
            return Err(ImageRefError::Unsupported(s.to_string()));
        }
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) => (n, t),
            None => (s, "latest"),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric();
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !(name_ok && tag_ok) {
            return Err(ImageRefError::BadName(s.to_string()));
        }
        Ok(ImageRef::Tag {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Digest(d) => f.write_str(d),
            ImageRef::Tag { name, tag } => write!(f, "{name}:{tag}"),
        }
    }
}

/// True for exactly 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A module in the hub's content-addressed store, as `spoke push` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    pub size: u64,
    /// `name:tag` references that point at this digest.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digests_and_tags() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(ImageRef::parse(&d), Ok(ImageRef::Digest(d.clone())));
        assert_eq!(
            ImageRef::parse("hello:v1"),
            Ok(ImageRef::Tag {
                name: "hello".into(),
                tag: "v1".into()
            })
        );
        assert_eq!(
            ImageRef::parse("farm/thermo").unwrap().to_string(),
            "farm/thermo:latest"
        );
    }

    #[test]
    fn refuses_bad_references_with_reasons() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert_eq!(ImageRef::parse("sha256:abc"), Err(ImageRefError::BadDigest));
        assert!(matches!(
            ImageRef::parse("Hello:v1"),
            Err(ImageRefError::BadName(_))
        ));
        assert!(matches!(
            ImageRef::parse("hello:"),
            Err(ImageRefError::BadName(_))
        ));
        assert!(matches!(
            ImageRef::parse("https://example.com/x.wasm"),
            Err(ImageRefError::Unsupported(_))
        ));
    }
}
