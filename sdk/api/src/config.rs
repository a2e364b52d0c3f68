//! Config files whose keys mirror command-line flags (as k3s does).
//!
//! A binary turns its YAML config file into flags placed before the real
//! command line, then parses everything once with clap: one struct describes
//! every option, and flags given on the command line override the file.

use std::ffi::OsString;
use std::path::PathBuf;

/// Why a config file could not be turned into flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the config file must be a YAML mapping of option names to values")]
    NotAMapping,
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("a config file cannot name another config file")]
    Nested,
    #[error("config key '{key}': {problem}")]
    BadValue { key: String, problem: &'static str },
}

/// Converts `{data-dir: /var/lib/spoke, verbose: true, tags: [a, b]}` into
/// `--data-dir=/var/lib/spoke --verbose --tags=a --tags=b`. Keys may be written
/// with `-` or `_`. A `false` boolean is left out.
pub fn file_to_flags(doc: &serde_json::Value) -> Result<Vec<String>, Error> {
    let map = doc.as_object().ok_or(Error::NotAMapping)?;
    let mut flags = Vec::new();
    for (key, value) in map {
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &serde_json::Value| -> Result<String, Error> {
            match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Bool(b) => Ok(b.to_string()),
                _ => Err(Error::BadValue {
                    key: key.clone(),
                    problem: "expected a string, a number or a boolean",
                }),
            }
        };
        match value {
            serde_json::Value::Bool(true) => flags.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::Array(items) => {
                for item in items {
                    flags.push(format!("{flag}={}", scalar(item)?));
                }
            }
            other => flags.push(format!("{flag}={}", scalar(other)?)),
        }
    }
    Ok(flags)
}

/// Reads a YAML config file's text into flags (see [`file_to_flags`]). An
/// empty file means no flags.
pub fn yaml_to_flags(text: &str) -> Result<Vec<String>, Error> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| Error::Yaml(e.to_string()))?;
    if doc.as_object().is_some_and(|m| m.contains_key("config")) {
        return Err(Error::Nested);
    }
    file_to_flags(&doc)
}

/// The value of `--config FILE` (or `--config=FILE`) in raw arguments
/// (`argv[0]` first), looked up before clap parses them.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            return None;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// `argv[0]`, then the file's flags, then the rest of the command line, so
/// that clap (with `args_override_self`) lets the command line win.
pub fn merge(args: &[OsString], file_flags: Vec<String>) -> Vec<OsString> {
    let mut merged = Vec::with_capacity(args.len() + file_flags.len());
    merged.extend(args.first().cloned());
    merged.extend(file_flags.into_iter().map(OsString::from));
    merged.extend(args.iter().skip(1).cloned());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags() {
        let doc = serde_json::json!({"data_dir": "/x", "http-port": 8080, "plain": true, "off": false, "tag": ["a", "b"]});
        let flags = file_to_flags(&doc).unwrap();
        assert_eq!(
            flags,
            [
                "--data-dir=/x",
                "--http-port=8080",
                "--off",
                "--plain",
                "--tag=a",
                "--tag=b"
            ]
            .iter()
            .filter(|f| **f != "--off")
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
        );
        assert!(file_to_flags(&serde_json::json!([1])).is_err());
        assert!(file_to_flags(&serde_json::json!({"x": {"y": 1}})).is_err());
    }

    #[test]
    fn yaml_files_and_the_command_line_merge_with_the_line_last() {
        let flags = yaml_to_flags("name: pi\n").unwrap();
        let args: Vec<OsString> = ["agent", "--config", "f.yaml", "--name", "pi-2"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(config_path(&args), Some(PathBuf::from("f.yaml")));
        let merged = merge(&args, flags);
        assert_eq!(
            merged,
            ["agent", "--name=pi", "--config", "f.yaml", "--name", "pi-2"].map(OsString::from)
        );
        assert!(matches!(
            yaml_to_flags("config: other.yaml"),
            Err(Error::Nested)
        ));
        assert!(matches!(yaml_to_flags(": ["), Err(Error::Yaml(_))));
        assert_eq!(yaml_to_flags("  \n").unwrap(), Vec::<String>::new());
    }
}
