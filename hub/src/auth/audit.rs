//! The audit log: one JSON line per API request, saying who did what to
//! which object and how it ended, in `<data-dir>/audit.log`.
//!
//! Guarantees: request and response bodies are never written (Secrets and
//! tokens travel in them); only the attributes read from the method and path,
//! the token's name and the response code. Lines are written by one task in
//! the order requests finished and flushed whenever no more are waiting.
//!
//! Caveats: lines are not fsynced one by one; a crash can lose the last
//! few. When the writer falls more than [`QUEUE`] lines behind, requests
//! wait for it rather than go unrecorded.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use super::request::Attributes;

/// Lines that may wait for the writer.
const QUEUE: usize = 4096;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// RFC 3339, milliseconds.
    pub time: String,
    /// The token's name; `null` for a request without a valid token.
    pub token: Option<String>,
    pub verb: String,
    /// `pods`, `pods/log`, ...; empty for non-resource paths.
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The path without its query string.
    pub path: String,
    pub code: u16,
}

impl Entry {
    pub fn new(token: Option<&str>, what: &Attributes, name: Option<String>, code: u16) -> Entry {
        Entry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            token: token.map(str::to_string),
            verb: what.verb.clone(),
            resource: what.resource_with_sub(),
            group: what.group.clone(),
            namespace: what.namespace.clone(),
            name: name.or_else(|| what.name.clone()),
            path: what.path.clone(),
            code,
        }
    }
}

/// The sending side of the audit log; cheap to clone.
#[derive(Clone)]
pub struct Log {
    tx: mpsc::Sender<Entry>,
    path: PathBuf,
}

impl Log {
    /// Opens (appending; created with mode 0600) the log file and starts its
    /// writer task.
    pub async fn open(path: &Path) -> std::io::Result<Log> {
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = tokio::io::BufWriter::new(options.open(path).await?);
        let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE);
        let shown = path.display().to_string();
        tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                let mut batch = vec![entry];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let mut text = String::new();
                for e in batch {
                    if let Ok(line) = serde_json::to_string(&e) {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
                let written = async {
                    file.write_all(text.as_bytes()).await?;
                    file.flush().await
                };
                if let Err(e) = written.await {
                    tracing::error!(file = %shown, error = %e, "cannot write the audit log");
                }
            }
        });
        Ok(Log {
            tx,
            path: path.to_path_buf(),
        })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one request.
    pub async fn record(&self, entry: Entry) {
        if self.tx.send(entry).await.is_err() {
            tracing::error!("the audit log writer has stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_json_lines_with_the_request_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Log::open(&path).await.unwrap();
        let what = super::super::request::parse("DELETE", "/api/v1/namespaces/prod/pods/a", None);
        log.record(Entry::new(Some("ci"), &what, None, 200)).await;
        let what = super::super::request::parse("POST", "/api/v1/namespaces/prod/pods", None);
        log.record(Entry::new(None, &what, Some("b".into()), 401))
            .await;
        let lines = crate::auth::tests::eventually_lines(&path, 2).await;
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["token"], "ci");
        assert_eq!(first["verb"], "delete");
        assert_eq!(first["resource"], "pods");
        assert_eq!(first["namespace"], "prod");
        assert_eq!(first["name"], "a");
        assert_eq!(first["code"], 200);
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            (second["token"].is_null(), second["name"].as_str()),
            (true, Some("b"))
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
