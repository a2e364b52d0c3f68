//! The board's identity at the hub: joining (a bootstrap token exchanged
//! for per-node MQTT credentials over the hub's HTTPS API), the credentials
//! file that keeps them, and TLS for the MQTT link.
//!
//! The credentials file is `<data-dir>/credentials.json` (mode 0600): the
//! hub's [`JoinResponse`] as it came (broker URL, user name, password, the
//! hub's CA). Once it exists the agent uses it on every start and never
//! joins again; deleting the Node at the hub revokes it.
//!
//! The join request is one HTTP/1.1 POST written by hand over rustls: the
//! agent needs no HTTP client library for a single call, which keeps the
//! binary small for boards.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject as _;
use spoke_api::auth::{JOIN_PATH, JoinRequest, JoinResponse};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::sync::Connection;

/// Name of the credentials file in the data dir.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// How long a join may take, connect to answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest join answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Why joining or loading credentials failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--hub {0}: {1}")]
    Url(String, String),
    #[error("--ca {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot reach the hub at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the hub at {0} did not answer the join within 30s")]
    Timeout(String),
    #[error("the hub refused the join (HTTP {code}): {message}")]
    Refused { code: u16, message: String },
    #[error("the hub's answer is not understood: {0}")]
    Answer(String),
    #[error("credentials file {path}: {message}")]
    File { path: String, message: String },
    #[error(
        "not joined yet: give --hub https://HUB:PORT with --join-token (a bootstrap token) and --ca, or --hub mqtts://BROKER"
    )]
    NotJoined,
    #[error(
        "--join-token: this board has not joined yet, and joining at {0} needs a bootstrap token (spoke token create NAME --role bootstrap --ttl 1h)"
    )]
    NoToken(String),
    #[error(
        "--ca: {0} uses TLS, and the CA that signs its certificate is needed to verify it (the hub's is tls/ca.crt in its data dir)"
    )]
    NoCa(String),
    #[error(
        "{path} holds the credentials of node \"{joined}\", not \"{name}\" (--name): delete it to join again"
    )]
    OtherNode {
        path: String,
        joined: String,
        name: String,
    },
}

/// Where the credentials are kept.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CREDENTIALS_FILE)
}

/// The stored credentials, if the board has joined.
pub fn load(data_dir: &Path, name: &str) -> Result<Option<JoinResponse>, Error> {
    let path = credentials_path(data_dir);
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::File {
                path: shown,
                message: e.to_string(),
            });
        }
    };
    let creds: JoinResponse = serde_json::from_str(&text).map_err(|e| Error::File {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    if creds.username != name {
        return Err(Error::OtherNode {
            path: shown,
            joined: creds.username,
            name: name.to_string(),
        });
    }
    Ok(Some(creds))
}

/// Writes the credentials with mode 0600 (created so: never readable by
/// others, not even for a moment).
pub fn save(data_dir: &Path, creds: &JoinResponse) -> Result<(), Error> {
    let path = credentials_path(data_dir);
    let err = |message: String| Error::File {
        path: path.display().to_string(),
        message,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
    let text = serde_json::to_string_pretty(creds).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| err(e.to_string()))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| err(e.to_string()))?;
    file.sync_all().map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// The MQTT connection the stored credentials describe; `broker` (an
/// explicit `--hub mqtt(s)://` URL) replaces the stored broker URL.
pub fn connection(creds: &JoinResponse, broker: Option<&str>) -> Result<Connection, Error> {
    let url = broker.unwrap_or(&creds.broker_url);
    let mut c = Connection::parse_url(url).map_err(|e| Error::Url(url.into(), e.to_string()))?;
    c.username = Some(creds.username.clone());
    c.password = Some(creds.password.clone());
    c.ca_pem = creds.ca_pem.clone();
    Ok(c)
}

/// How this agent connects: with its stored credentials, else by joining
/// (`--hub https://...` and `--join-token`), else with `--hub mqtt(s)://`
/// and the `--mqtt-username`/`--mqtt-password` given.
pub async fn resolve(config: &crate::Config, data_dir: &Path) -> Result<Connection, Error> {
    let ca = config.ca.as_deref().map(read_ca).transpose()?;
    let hub = config.hub.as_deref();
    if let Some(creds) = load(data_dir, &config.name)? {
        let mut c = connection(&creds, hub.filter(|h| !is_api_url(h)))?;
        if ca.is_some() {
            c.ca_pem = ca;
        }
        return Ok(c);
    }
    match hub {
        Some(url) if is_api_url(url) => {
            let token = config
                .join_token
                .as_deref()
                .ok_or_else(|| Error::NoToken(url.to_string()))?;
            let creds = join(url, token, ca.as_deref(), &config.name).await?;
            save(data_dir, &creds)?;
            tracing::info!(
                node = %config.name,
                broker = %creds.broker_url,
                file = %credentials_path(data_dir).display(),
                "joined the hub: node credentials stored"
            );
            connection(&creds, None)
        }
        Some(url) => {
            let mut c =
                Connection::parse_url(url).map_err(|e| Error::Url(url.into(), e.to_string()))?;
            c.username = config.mqtt_username.clone();
            c.password = config.mqtt_password.clone();
            c.ca_pem = ca;
            if c.tls && c.ca_pem.is_none() {
                return Err(Error::NoCa(url.to_string()));
            }
            Ok(c)
        }
        None => Err(Error::NotJoined),
    }
}

/// `spoke-agent join`: joins (unless the board already has credentials)
/// and returns what to tell the user.
pub async fn join_only(config: &crate::Config) -> Result<String, Error> {
    let data = config.data_dir();
    let path = credentials_path(&data);
    if let Some(creds) = load(&data, &config.name)? {
        return Ok(format!(
            "node {} has already joined (broker {}); its credentials are in {}",
            creds.username,
            creds.broker_url,
            path.display()
        ));
    }
    match config.hub.as_deref() {
        Some(url) if is_api_url(url) => {}
        Some(url) => {
            return Err(Error::Url(
                url.into(),
                "joining needs the hub's API URL, https://HOST:PORT".into(),
            ));
        }
        None => return Err(Error::NotJoined),
    }
    let creds = resolve(config, &data).await?;
    Ok(format!(
        "node {} joined; credentials stored in {} (broker {}:{}). Start the agent with: spoke-agent --name {} --data-dir {}",
        config.name,
        path.display(),
        creds.host,
        creds.port,
        config.name,
        data.display()
    ))
}

/// What to tell the operator when the broker refuses this node: its
/// credentials are wrong or revoked, which retrying will not fix.
pub fn refusal(e: &rumqttc::ConnectionError) -> Option<String> {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => Some(format!(
            "the hub's broker refused this node ({code:?}): its credentials are wrong or were revoked (the Node was deleted); join again with a new bootstrap token after deleting {CREDENTIALS_FILE}"
        )),
        _ => None,
    }
}

/// Reads a CA file given with `--ca`.
pub fn read_ca(path: &Path) -> Result<String, Error> {
    let err = |message: String| Error::Ca {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    roots(&pem).map_err(err)?;
    Ok(pem)
}

fn roots(pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(roots)
}

fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth())
}

/// Makes `options` use TLS when the connection asks for it, trusting only
/// the connection's CA. Without a usable CA every handshake fails (and is
/// logged): the agent never falls back to plain MQTT by itself.
pub fn set_tls(options: &mut MqttOptions, conn: &Connection) {
    if !conn.tls {
        return;
    }
    let config = match conn.ca_pem.as_deref().map(client_config) {
        Some(Ok(config)) => config,
        Some(Err(e)) => {
            tracing::error!(error = %e, "the broker's CA is unusable: TLS connections will fail");
            empty_trust()
        }
        None => {
            tracing::error!("no CA to verify the broker (--ca): TLS connections will fail");
            empty_trust()
        }
    };
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
}

fn empty_trust() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// `https://host[:port]` (or `http://`, for a hub run with --insecure-http).
struct ApiUrl {
    tls: bool,
    host: String,
    port: u16,
}

fn parse_api_url(url: &str) -> Result<ApiUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("expected the hub's API URL, https://host[:port]".into());
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed '['")?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse().map_err(|_| "invalid port")?),
            None if after.is_empty() => (h, if tls { 443 } else { 80 }),
            None => return Err("unexpected text after the host".into()),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| "invalid port")?),
            None => (rest, if tls { 443 } else { 80 }),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err("expected https://host[:port] with no path or user".into());
    }
    Ok(ApiUrl {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Whether `--hub` names the hub's API (to join) rather than a broker.
pub fn is_api_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Exchanges `token` for the credentials of node `name` at the hub whose API
/// is at `url`, verifying it with `ca_pem`.
pub async fn join(
    url: &str,
    token: &str,
    ca_pem: Option<&str>,
    name: &str,
) -> Result<JoinResponse, Error> {
    let api = parse_api_url(url).map_err(|e| Error::Url(url.into(), e))?;
    let body = serde_json::to_vec(&JoinRequest {
        node_name: name.to_string(),
    })
    .map_err(|e| Error::Answer(e.to_string()))?;
    let host_header = if api.host.contains(':') {
        format!("[{}]:{}", api.host, api.port)
    } else {
        format!("{}:{}", api.host, api.port)
    };
    let mut request = format!(
        "POST {JOIN_PATH} HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        token.trim(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);

    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((api.host.as_str(), api.port))
            .await
            .map_err(|source| Error::Connect {
                url: url.to_string(),
                source,
            })?;
        if api.tls {
            let ca = ca_pem.ok_or_else(|| Error::NoCa(url.to_string()))?;
            let config = client_config(ca).map_err(|message| Error::Ca {
                path: "(given)".into(),
                message,
            })?;
            let server = rustls::pki_types::ServerName::try_from(api.host.clone())
                .map_err(|e| Error::Url(url.into(), e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(server, tcp)
                .await
                .map_err(|source| Error::Connect {
                    url: url.to_string(),
                    source,
                })?;
            exchange(tls, &request).await
        } else {
            tracing::warn!(
                url,
                "joining over plain HTTP: the bootstrap token and the node's password cross the network in clear"
            );
            exchange(tcp, &request).await
        }
    };
    let (code, body) = tokio::time::timeout(JOIN_TIMEOUT, exchange)
        .await
        .map_err(|_| Error::Timeout(url.to_string()))??;
    if !(200..300).contains(&code) {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(Error::Refused { code, message });
    }
    let creds: JoinResponse =
        serde_json::from_slice(&body).map_err(|e| Error::Answer(e.to_string()))?;
    if creds.username != name {
        return Err(Error::Answer(format!(
            "credentials for \"{}\", not \"{name}\"",
            creds.username
        )));
    }
    Ok(creds)
}

/// Sends `request` and reads the whole answer: status code and body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<(u16, Vec<u8>), Error> {
    let io = |source| Error::Connect {
        url: "the hub".into(),
        source,
    };
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await
        .map_err(io)?;
    parse_response(&answer).map_err(Error::Answer)
}

/// Status code and body of an HTTP/1.1 response (with `Content-Length`, or
/// chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((code, body))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_with_length_or_chunked() {
        let (code, body) =
            parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((code, body.as_slice()), (201, b"{}".as_slice()));
        let (code, body) = parse_response(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((code, body.as_slice()), (401, b"abcde".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn api_urls_are_parsed() {
        let u = parse_api_url("https://127.0.0.1:6443/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "127.0.0.1", 6443));
        let u = parse_api_url("http://[::1]").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "::1", 80));
        assert!(parse_api_url("mqtt://h").is_err());
        assert!(parse_api_url("https://u@h").is_err());
    }

    #[test]
    fn credentials_are_kept_private_and_bound_to_the_node() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "pi-1").unwrap().is_none());
        let creds = JoinResponse {
            node_name: "pi-1".into(),
            broker_url: "mqtts://127.0.0.1:8883".into(),
            username: "pi-1".into(),
            password: "secret".into(),
            ca_pem: None,
        };
        save(dir.path(), &creds).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(credentials_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load(dir.path(), "pi-1").unwrap(), Some(creds.clone()));
        let e = load(dir.path(), "pi-2").unwrap_err().to_string();
        assert!(e.contains("pi-1") && e.contains("--name"), "{e}");
        let c = connection(&creds, None).unwrap();
        assert!(c.tls && c.username.as_deref() == Some("pi-1"));
        let c = connection(&creds, Some("mqtt://10.0.0.1")).unwrap();
        assert_eq!((c.tls, c.host.as_str(), c.port), (false, "10.0.0.1", 1883));
    }
}
