//! Typed configuration from the environment or from a mounted directory.
//!
//! Kubernetes gives a pod its settings in two shapes, and both arrive here as
//! text: environment variables (`env`, `envFrom`, values from ConfigMap and
//! Secret keys) and files (a `configMap` or `secret` volume has one file per
//! key). [`from_env`] and [`from_dir`] turn either into any struct that
//! implements `serde::Deserialize`: a field `interval_seconds` is read from
//! `PREFIX_INTERVAL_SECONDS`, or from the file `interval_seconds` (also
//! accepted: `interval-seconds`, `intervalSeconds`). Text is parsed into the
//! field's type (`u64`, `bool`, `f64`, ...); `Option` fields and
//! `#[serde(default)]` fields may be absent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// Why settings could not be read; it says where the bad value came from.
#[derive(Debug)]
pub struct Error {
    /// The environment variable or file the message is about, when known.
    pub source: Option<String>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{s}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

/// Reads `T` from the environment variables whose names start with `prefix`
/// (`""` for all). Field `foo_bar` comes from `{prefix}FOO_BAR`.
pub fn from_env<T: DeserializeOwned>(prefix: &str) -> Result<T, Error> {
    from_pairs(std::env::vars(), prefix)
}

/// [`from_env`] over any list of pairs: for tests, or for `std::env::args`-like
/// sources.
pub fn from_pairs<T, I>(vars: I, prefix: &str) -> Result<T, Error>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let mut fields = BTreeMap::new();
    for (name, value) in vars {
        if let Some(rest) = name.strip_prefix(prefix)
            && !rest.is_empty()
        {
            fields.insert(
                rest.to_ascii_lowercase(),
                Entry {
                    origin: name,
                    value,
                },
            );
        }
    }
    let describe = |field: &str| format!("{prefix}{}", field.to_ascii_uppercase());
    decode(fields, &describe)
}

/// Reads `T` from the files in `dir`, one per field, as a `configMap` or
/// `secret` volume lays them out. Trailing newlines are ignored; hidden
/// entries (Kubernetes' `..data` links) are skipped.
pub fn from_dir<T: DeserializeOwned>(dir: impl AsRef<Path>) -> Result<T, Error> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| Error {
        source: Some(dir.display().to_string()),
        message: format!("cannot list the directory: {e}"),
    })?;
    let mut fields = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error {
            source: Some(dir.display().to_string()),
            message: e.to_string(),
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path: PathBuf = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| Error {
            source: Some(path.display().to_string()),
            message: format!("cannot read: {e}"),
        })?;
        let value = value.trim_end_matches(['\n', '\r']).to_string();
        let origin = path.display().to_string();
        fields.insert(normalise(&name), Entry { origin, value });
    }
    let describe = |field: &str| dir.join(field).display().to_string();
    decode(fields, &describe)
}

/// `interval-seconds` and `intervalSeconds` become `interval_seconds`.
fn normalise(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        match c {
            '-' | '.' => out.push('_'),
            c if c.is_ascii_uppercase() => {
                if !out.is_empty() && !out.ends_with('_') {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            c => out.push(c),
        }
    }
    out
}

struct Entry {
    origin: String,
    value: String,
}

fn decode<T: DeserializeOwned>(
    fields: BTreeMap<String, Entry>,
    describe: &dyn Fn(&str) -> String,
) -> Result<T, Error> {
    let origins: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, e)| (k.clone(), e.origin.clone()))
        .collect();
    let map = de::value::MapDeserializer::new(fields.into_iter().map(|(k, e)| {
        (
            k.clone(),
            Text {
                key: k,
                text: e.value,
            },
        )
    }));
    T::deserialize(map).map_err(|e: TextError| {
        let source = match &e.key {
            Some(k) => origins.get(k).cloned(),
            None => missing_field(&e.message).map(describe),
        };
        Error {
            source,
            message: e.message,
        }
    })
}

/// serde says "missing field `x`"; name the variable or file instead.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// An error from decoding one value, with the key it belongs to.
#[derive(Debug)]
struct TextError {
    key: Option<String>,
    message: String,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TextError {}

impl de::Error for TextError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TextError {
            key: None,
            message: msg.to_string(),
        }
    }
}

/// One setting's text, parsed into whatever type the field asks for.
struct Text {
    key: String,
    text: String,
}

impl<'de> IntoDeserializer<'de, TextError> for Text {
    type Deserializer = Text;
    fn into_deserializer(self) -> Text {
        self
    }
}

impl Text {
    fn fail(&self, message: impl fmt::Display) -> TextError {
        TextError {
            key: Some(self.key.clone()),
            message: message.to_string(),
        }
    }

    fn parse<V: std::str::FromStr>(&self, what: &str) -> Result<V, TextError>
    where
        V::Err: fmt::Display,
    {
        self.text
            .trim()
            .parse()
            .map_err(|e| self.fail(format!("{:?} is not {what}: {e}", self.text)))
    }
}

macro_rules! parse_as {
    ($($method:ident => $ty:ty, $visit:ident, $what:literal;)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
            let v: $ty = self.parse($what)?;
            visitor.$visit(v)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Text {
    type Error = TextError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        visitor.visit_string(self.text)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        match self.text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(self.fail(format!("{:?} is not a boolean (true/false)", self.text))),
        }
    }

    parse_as! {
        deserialize_i8 => i8, visit_i8, "an integer";
        deserialize_i16 => i16, visit_i16, "an integer";
        deserialize_i32 => i32, visit_i32, "an integer";
        deserialize_i64 => i64, visit_i64, "an integer";
        deserialize_u8 => u8, visit_u8, "a non-negative integer";
        deserialize_u16 => u16, visit_u16, "a non-negative integer";
        deserialize_u32 => u32, visit_u32, "a non-negative integer";
        deserialize_u64 => u64, visit_u64, "a non-negative integer";
        deserialize_f32 => f32, visit_f32, "a number";
        deserialize_f64 => f64, visit_f64, "a number";
        deserialize_char => char, visit_char, "one character";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TextError> {
        // Lists are comma-separated: `SITES=barn,silo`.
        let key = self.key;
        let items: Vec<Text> = if self.text.trim().is_empty() {
            Vec::new()
        } else {
            self.text
                .split(',')
                .map(|s| Text {
                    key: key.clone(),
                    text: s.trim().to_string(),
                })
                .collect()
        };
        visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TextError> {
        let key = self.key.clone();
        let text = self.text.trim().to_string();
        visitor
            .visit_enum(text.into_deserializer())
            .map_err(|e: TextError| TextError {
                key: Some(key),
                message: e.message,
            })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TextError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 str string bytes byte_buf unit unit_struct tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests;
