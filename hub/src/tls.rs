//! HTTPS for the API: the hub's own certificate authority and server
//! certificate, made at first start and kept in `<data-dir>/tls/`, and a
//! listener that serves the API over TLS.
//!
//! Files: `ca.crt`, `ca.key`, `server.crt`, `server.key` (PEM). Private keys
//! are written with mode 0600 (and put back to 0600 if found looser).
//!
//! Guarantees:
//! - The CA is made once and kept: clients given its certificate (the CLI
//!   config carries it as `certificate-authority-data`) keep trusting the hub
//!   across restarts.
//! - The server certificate is reused while it verifies, against that CA,
//!   for every name it must carry (localhost, 127.0.0.1, ::1, the host name,
//!   the listen address, `--tls-san`) 30 days from now; otherwise a new one
//!   is issued at start, signed by the same CA.
//!
//! Caveats: renewal happens at start only; a hub running for more than
//! [`SERVER_CERT_DAYS`] − 30 days without a restart serves an expiring
//! certificate.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Lifetime of the CA certificate.
pub const CA_DAYS: u64 = 3650;
/// Lifetime of a server certificate.
pub const SERVER_CERT_DAYS: u64 = 365;
/// A server certificate closer than this to its end is replaced at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DAY: u64 = 24 * 3600;

/// Why the TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the API needs to serve HTTPS.
pub struct Material {
    /// The CA certificate (PEM), for clients to trust.
    pub ca_pem: String,
    /// The rustls configuration with the server certificate chain.
    pub server: Arc<rustls::ServerConfig>,
    /// The same certificate for the MQTT relay, without the CA in the
    /// chain: every board already holds the CA (from its join), and each
    /// full handshake over a metered link would carry it again (~0.5 KB).
    pub mqtt: Arc<rustls::ServerConfig>,
    /// Whether a new server certificate was issued at this start.
    pub issued: bool,
}

/// The names the server certificate carries: loopback names, this host's
/// name, the listen address when it is a specific one, and `extra`.
pub fn names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = hostname() {
        names.push(host);
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_ascii_lowercase())
        // A name no client could verify (an underscore, say) is left out
        // rather than making the certificate unusable.
        .filter(|h| {
            h.parse::<std::net::IpAddr>().is_err() && ServerName::try_from(h.as_str()).is_ok()
        })
}

/// The CA's parameters. The subject and key usages are fixed, so the issuer
/// can be rebuilt from the stored key alone at every start.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "spoke-hub CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Spoke");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Sets validity from a day ago (clock skew between machines) to `days` on.
fn set_validity(params: &mut CertificateParams, days: u64) {
    let now = SystemTime::now();
    params.not_before = time::OffsetDateTime::from(now - Duration::from_secs(DAY));
    params.not_after = time::OffsetDateTime::from(now + Duration::from_secs(days * DAY));
}

/// Loads the TLS material from `dir`, making what is missing or stale.
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Material, Error> {
    create_private_dir(dir)?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (srv_crt, srv_key) = (dir.join("server.crt"), dir.join("server.key"));

    let ca_key_pair = if ca_crt.exists() && ca_key.exists() {
        KeyPair::from_pem(&read_private(&ca_key)?).map_err(|_| Error::Pem {
            path: ca_key.clone(),
            what: "private key",
        })?
    } else {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        set_validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        write_public(&ca_crt, cert.pem().as_bytes())?;
        tracing::info!(file = %ca_crt.display(), "made a new certificate authority for the API");
        key
    };
    let ca_pem = std::fs::read_to_string(&ca_crt).map_err(io_err(&ca_crt))?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| Error::Pem {
        path: ca_crt.clone(),
        what: "certificate",
    })?;

    let current = if srv_crt.exists() && srv_key.exists() {
        let cert = std::fs::read(&srv_crt).map_err(io_err(&srv_crt))?;
        let key = read_private(&srv_key)?;
        CertificateDer::from_pem_slice(&cert)
            .ok()
            .filter(|c| covers(&ca_der, c, names, RENEW_BEFORE))
            .map(|c| (c, key))
    } else {
        None
    };
    let issued = current.is_none();
    let (server_der, server_key_pem) = match current {
        Some(found) => found,
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.to_vec())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "spoke-hub");
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            set_validity(&mut params, SERVER_CERT_DAYS);
            let issuer = Issuer::new(ca_params(), &ca_key_pair);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&srv_key, key.serialize_pem().as_bytes())?;
            write_public(&srv_crt, cert.pem().as_bytes())?;
            tracing::info!(file = %srv_crt.display(), names = ?names, "issued a new server certificate");
            (cert.der().clone(), key.serialize_pem())
        }
    };
    let key = PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes()).map_err(|_| Error::Pem {
        path: srv_key.clone(),
        what: "private key",
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![server_der.clone(), ca_der], key.clone_key())?;
    // The API speaks HTTP/1.1 only (axum is built without http2).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mqtt = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![server_der], key)?;
    Ok(Material {
        ca_pem,
        server: Arc::new(server),
        mqtt: Arc::new(mqtt),
        issued,
    })
}

/// Whether `cert` chains to `ca` and is valid for every one of `names`
/// `ahead` from now.
fn covers(
    ca: &CertificateDer<'_>,
    cert: &CertificateDer<'_>,
    names: &[String],
    ahead: Duration,
) -> bool {
    use rustls::client::danger::ServerCertVerifier as _;
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca.clone()).is_err() {
        return false;
    }
    let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build() else {
        return false;
    };
    let Ok(since_epoch) = (SystemTime::now() + ahead).duration_since(SystemTime::UNIX_EPOCH) else {
        return false;
    };
    let at = UnixTime::since_unix_epoch(since_epoch);
    names.iter().all(|name| {
        ServerName::try_from(name.clone())
            .is_ok_and(|sn| verifier.verify_server_cert(cert, &[], &sn, &[], at).is_ok())
    })
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

/// Reads a private file, first putting its mode back to 0600 if it is
/// readable by others.
fn read_private(path: &Path) -> Result<String, Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "private key was readable by others; mode set to 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
    }
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Writes a file only its owner can read (mode 0600), atomically: a
/// temporary file renamed over the target.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_with_mode(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_with_mode(path, bytes, 0o644)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A TLS listener for `axum::serve`. Handshakes run in their own tasks, so a
/// slow or silent client never holds up the others; only finished
/// connections are handed to the server.
pub struct Listener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Listener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, retry.
                        tracing::warn!(error = %e, "accepting an API connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(tls) = handshake(acceptor, stream, peer).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Listener {
            ready,
            local,
            accept_task,
        })
    }
}

/// Runs the TLS handshake. A client speaking plain HTTP to the HTTPS port
/// gets a plain-text 400 saying so, as Kubernetes' API server answers.
async fn handshake(
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 8];
    let plain_http = match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        // A TLS record starts with byte 0x16; an HTTP request with a method
        // in capital letters.
        Ok(Ok(n)) if n > 0 => first[0].is_ascii_uppercase(),
        _ => return None,
    };
    if plain_http {
        let body = "Client sent an HTTP request to an HTTPS server.\n";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        tracing::debug!(%peer, "plain HTTP request on the HTTPS port refused");
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted, which is on drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn material_is_made_once_and_reused_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let names = names("127.0.0.1:6443".parse().unwrap(), &[]);
        let first = load_or_create(&tls, &names).unwrap();
        assert!(first.issued);
        let ca = pem_der(&tls.join("ca.crt"));
        let server = pem_der(&tls.join("server.crt"));
        assert!(covers(&ca, &server, &names, Duration::ZERO));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for key in ["ca.key", "server.key"] {
                let mode = std::fs::metadata(tls.join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        let again = load_or_create(&tls, &names).unwrap();
        assert!(!again.issued);
        assert_eq!(again.ca_pem, first.ca_pem);
        assert_eq!(pem_der(&tls.join("server.crt")), server);
    }

    #[test]
    fn a_new_name_gets_a_new_server_certificate_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let listen = "127.0.0.1:6443".parse().unwrap();
        let first = load_or_create(&tls, &names(listen, &[])).unwrap();
        let wider = names(listen, &["hub.farm.example".into(), "10.1.2.3".into()]);
        let ca = pem_der(&tls.join("ca.crt"));
        assert!(!covers(
            &ca,
            &pem_der(&tls.join("server.crt")),
            &wider,
            Duration::ZERO
        ));
        let second = load_or_create(&tls, &wider).unwrap();
        assert!(second.issued);
        assert_eq!(second.ca_pem, first.ca_pem);
        assert!(covers(
            &ca,
            &pem_der(&tls.join("server.crt")),
            &wider,
            Duration::ZERO
        ));
        // A certificate that would be past its end is not reused.
        let late = Duration::from_secs((SERVER_CERT_DAYS + 1) * DAY);
        assert!(!covers(
            &ca,
            &pem_der(&tls.join("server.crt")),
            &wider,
            late
        ));
    }

    #[test]
    fn a_certificate_from_another_ca_does_not_verify() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let names = vec!["localhost".to_string()];
        load_or_create(a.path(), &names).unwrap();
        load_or_create(b.path(), &names).unwrap();
        assert!(!covers(
            &pem_der(&a.path().join("ca.crt")),
            &pem_der(&b.path().join("server.crt")),
            &names,
            Duration::ZERO
        ));
    }
}
