//! How the hub's sync client reaches the broker: URL, credentials and TLS.
//! Kept apart from the sync logic so that changes to either stay small.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject as _;
use spoke_api::broker::BrokerUrl;

/// Credentials and trust for the hub's own MQTT client.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// User name and password; `None` connects anonymously (only an
    /// external broker that allows it).
    pub credentials: Option<(String, String)>,
    /// CA certificates (PEM) trusted for an `mqtts://` broker.
    pub ca_pem: Option<String>,
}

/// MQTT options for client `client_id` at `url` with `access`.
pub fn options(url: &str, client_id: &str, access: &Access) -> anyhow::Result<MqttOptions> {
    let url = BrokerUrl::parse(url).map_err(|e| anyhow::anyhow!("broker URL: {e}"))?;
    let mut options = MqttOptions::new(client_id, url.host.clone(), url.port);
    if let Some((user, password)) = &access.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    if url.tls {
        let pem = access.ca_pem.as_deref().ok_or_else(|| {
            anyhow::anyhow!("{url} uses TLS but no CA is given to verify it (--mqtt-ca)")
        })?;
        options.set_transport(Transport::Tls(tls_configuration(pem)?));
    }
    options.set_keep_alive(Duration::from_secs(30));
    Ok(options)
}

/// A rustls client configuration (ring provider) trusting the CAs in `pem`.
pub fn tls_configuration(pem: &str) -> anyhow::Result<TlsConfiguration> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.map_err(|e| anyhow::anyhow!("CA certificate: {e}"))?)?;
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificate found in the given PEM");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
