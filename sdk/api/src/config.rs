//! Config files whose keys mirror command-line flags (as k3s does).
//!
//! A binary turns its YAML config file into flags placed before the real
//! command line, then parses everything once with clap: one struct describes
//! every option, and flags given on the command line override the file.

/// Why a config file could not be turned into flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the config file must be a YAML mapping of option names to values")]
    NotAMapping,
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
}
