//! A client for the Spoke hub's HTTP API, used by the `spoke` CLI, tests and
//! programs that manage a fleet.
//!
//! Errors say what a person can do about them: an unreachable hub names the
//! URL and suggests checking that `spoke-hub` runs; API errors carry the
//! hub's Kubernetes `Status`, field paths included.

pub mod kubeconfig;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use spoke_api::meta::Status;
use spoke_api::module::ModuleInfo;

/// What can go wrong talking to the hub.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made.
    #[error("cannot reach the hub at {server}: {reason} (is spoke-hub running?)")]
    Unreachable { server: String, reason: String },
    /// The hub's certificate is not one this client trusts.
    #[error(
        "cannot verify the hub at {server}: {reason} (the config's certificate-authority-data must hold the hub's CA, which spoke-hub writes into the config it makes)"
    )]
    Certificate { server: String, reason: String },
    /// The hub answered with an error `Status` (boxed: it is large).
    #[error("{0}")]
    Api(Box<Status>),
    /// The hub answered something that is not what the API promises.
    #[error("unexpected answer from the hub ({code}): {body}")]
    Unexpected { code: u16, body: String },
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The HTTP code of an API error (404, 409, 422, ...).
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api(s) => Some(s.code),
            Error::Unexpected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How the client verifies the hub's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Trust only these CA certificates (PEM); the public web roots when
    /// `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate (for experiments only).
    pub insecure_skip_verify: bool,
}

/// A connection to one hub.
#[derive(Clone, Debug)]
pub struct Client {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The innermost cause of a connection error, which is the useful part
/// ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether a connection error is about the peer's certificate.
fn is_certificate_error(reason: &str) -> bool {
    reason.contains("certificate") || reason.contains("UnknownIssuer")
}

impl Client {
    /// A client for the hub at `server` (`https://127.0.0.1:6443`) that
    /// trusts the public web roots.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, Error> {
        Client::with_tls(server, token, &Tls::default())
    }

    /// A client for the hub a config context points at.
    pub fn for_target(target: &kubeconfig::Target) -> Result<Client, Error> {
        Client::with_tls(&target.server, target.token.clone(), &target.tls)
    }

    /// A client for the hub at `server` that verifies its certificate as
    /// `tls` says.
    pub fn with_tls(server: &str, token: Option<String>, tls: &Tls) -> Result<Client, Error> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::Config(
                        "the certificate authority is not a PEM certificate (certificate-authority-data must be base64 of the PEM file)".into(),
                    )
                })?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.server));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let resp = req.send().await.map_err(|e| {
            let (server, reason) = (self.server.clone(), root_cause(&e));
            if is_certificate_error(&reason) {
                Error::Certificate { server, reason }
            } else {
                Error::Unreachable { server, reason }
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<Status>(&body) {
            Ok(status) if status.kind == "Status" => Err(Error::Api(Box::new(status))),
            _ => Err(Error::Unexpected { code, body }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = self.send(req).await?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| Error::Unreachable {
            server: self.server.clone(),
            reason: root_cause(&e),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Unexpected {
            code,
            body: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    /// `GET path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON object.
    pub async fn create(&self, path: &str, object: &Value) -> Result<Value, Error> {
        self.json(self.request(reqwest::Method::POST, path).json(object))
            .await
    }

    /// `PUT path` with a JSON object.
    pub async fn replace(&self, path: &str, object: &Value) -> Result<Value, Error> {
        self.json(self.request(reqwest::Method::PUT, path).json(object))
            .await
    }

    /// `PATCH path`. `content_type` names the format:
    /// `application/merge-patch+json`, `application/json-patch+json` or
    /// `application/strategic-merge-patch+json`.
    pub async fn patch(
        &self,
        path: &str,
        content_type: &str,
        patch: &Value,
    ) -> Result<Value, Error> {
        let req = self
            .request(reqwest::Method::PATCH, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(patch.to_string());
        self.json(req).await
    }

    /// `DELETE path`, optionally with a grace period in seconds.
    pub async fn delete(
        &self,
        path: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<Value, Error> {
        let mut req = self.request(reqwest::Method::DELETE, path);
        if let Some(g) = grace_period_seconds {
            req = req.query(&[("gracePeriodSeconds", g)]);
        }
        self.json(req).await
    }

    /// Watches `path` (a collection path) from `resource_version` (`None`:
    /// start with the current objects). Each event is `{type, object}`.
    pub async fn watch(&self, path: &str, resource_version: Option<&str>) -> Result<Watch, Error> {
        let mut req = self
            .request(reqwest::Method::GET, path)
            .query(&[("watch", "true")]);
        if let Some(rv) = resource_version {
            req = req.query(&[("resourceVersion", rv)]);
        }
        let resp = self.send(req).await?;
        Ok(Watch {
            resp,
            buf: Vec::new(),
            server: self.server.clone(),
        })
    }

    /// Uploads a Wasm module, optionally tagging it `name:tag`.
    pub async fn push_module(
        &self,
        bytes: Vec<u8>,
        tag: Option<&str>,
    ) -> Result<ModuleInfo, Error> {
        let mut req = self
            .request(reqwest::Method::POST, "/apis/spoke.dev/v1/modules")
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes);
        if let Some(t) = tag {
            req = req.query(&[("tag", t)]);
        }
        self.json(req).await
    }

    /// Uploads the Wasm module in `file`, optionally tagging it `name:tag`.
    /// The file is streamed from disk in chunks (a large module is never
    /// whole in memory); `sent` is called with the bytes handed to the
    /// connection so far, after each chunk.
    pub async fn push_module_file(
        &self,
        file: &std::path::Path,
        tag: Option<&str>,
        sent: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<ModuleInfo, Error> {
        use tokio::io::AsyncReadExt as _;
        const CHUNK: usize = 64 * 1024;
        let cannot_read =
            |e: std::io::Error| Error::Config(format!("cannot read {}: {e}", file.display()));
        let f = tokio::fs::File::open(file).await.map_err(cannot_read)?;
        let size = f.metadata().await.map_err(cannot_read)?.len();
        let sent = std::sync::Arc::new(sent);
        let chunks = futures_util::stream::try_unfold((f, 0u64), move |(mut f, done)| {
            let sent = sent.clone();
            async move {
                let mut buf = vec![0; CHUNK];
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                buf.truncate(n);
                let done = done + n as u64;
                sent(done);
                Ok(Some((bytes::Bytes::from(buf), (f, done))))
            }
        });
        let mut req = self
            .request(reqwest::Method::POST, "/apis/spoke.dev/v1/modules")
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(chunks));
        if let Some(t) = tag {
            req = req.query(&[("tag", t)]);
        }
        self.json(req).await
    }

    fn log_request(
        &self,
        namespace: &str,
        name: &str,
        options: &LogOptions,
    ) -> reqwest::RequestBuilder {
        let mut req = self.request(
            reqwest::Method::GET,
            &format!("/api/v1/namespaces/{namespace}/pods/{name}/log"),
        );
        if let Some(n) = options.tail_lines {
            req = req.query(&[("tailLines", n)]);
        }
        if let Some(s) = options.since_seconds {
            req = req.query(&[("sinceSeconds", s)]);
        }
        if let Some(t) = &options.since_time {
            req = req.query(&[("sinceTime", t)]);
        }
        if options.previous {
            req = req.query(&[("previous", "true")]);
        }
        if let Some(c) = &options.container {
            req = req.query(&[("container", c)]);
        }
        req
    }

    /// A pod's log followed (`kubectl logs -f`): what `options` selects,
    /// then new lines as the board writes them.
    pub async fn follow_pod_logs(
        &self,
        namespace: &str,
        name: &str,
        options: &LogOptions,
    ) -> Result<LogStream, Error> {
        let req = self
            .log_request(namespace, name, options)
            .query(&[("follow", "true")]);
        let resp = self.send(req).await?;
        Ok(LogStream {
            resp,
            server: self.server.clone(),
        })
    }

    /// A pod's log, read from its board through the hub.
    pub async fn pod_logs(
        &self,
        namespace: &str,
        name: &str,
        options: &LogOptions,
    ) -> Result<String, Error> {
        let resp = self
            .send(self.log_request(namespace, name, options))
            .await?;
        resp.text().await.map_err(|e| Error::Unreachable {
            server: self.server.clone(),
            reason: root_cause(&e),
        })
    }
}

pub use spoke_api::protocol::LogOptions;

/// A followed log (`follow=true`): text as the hub sends it.
pub struct LogStream {
    resp: reqwest::Response,
    server: String,
}

impl LogStream {
    /// The next piece of the log, or `None` when the hub ended it (the pod
    /// is gone or finished, or its board stopped answering).
    pub async fn next(&mut self) -> Option<Result<String, Error>> {
        match self.resp.chunk().await {
            Ok(Some(chunk)) => Some(Ok(String::from_utf8_lossy(&chunk).into_owned())),
            Ok(None) => None,
            Err(e) => Some(Err(Error::Unreachable {
                server: self.server.clone(),
                reason: root_cause(&e),
            })),
        }
    }
}

/// An open watch: events as the hub sends them, one JSON object per line.
pub struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
    server: String,
}

impl Watch {
    /// The next event, or `None` when the hub ended the watch.
    pub async fn next(&mut self) -> Option<Result<Value, Error>> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(
                    serde_json::from_slice(&line).map_err(|e| Error::Unexpected {
                        code: 200,
                        body: format!("malformed watch event: {e}"),
                    }),
                );
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(Error::Unreachable {
                        server: self.server.clone(),
                        reason: root_cause(&e),
                    }));
                }
            }
        }
    }
}
