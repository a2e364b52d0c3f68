//! The embedded MQTT broker (rmqtt), so that one command starts a hub, with
//! node authentication and topic ACLs enforced by hooks backed by the hub's
//! node credentials ([`crate::auth::join`]).
//!
//! Rules (also in docs/protocol.md, "Security"):
//! - The hub's own client (user [`HUB_USER`], a password made once and kept
//!   in `<data-dir>/mqtt-hub.password`, mode 0600) may do anything.
//! - Node `N` connects with user name `N`, its password, client id
//!   `spoke-agent-N` and, if any, a last will on its own presence topic; it
//!   may subscribe only to its own `down` and `module` topics (exact
//!   filters, no wildcards) and publish only to its own `up` and `presence`.
//!   A refused subscription gets failure return code 0x80; a refused publish
//!   closes the connection (MQTT 3.1.1 has no negative PUBACK).
//! - Anything else, anonymous connects included, is refused.
//!
//! TLS: rmqtt's own TLS would pull in aws-lc-rs (cmake, minutes of build),
//! so the hub terminates TLS itself (rustls with ring, the certificate of
//! its CA that also serves HTTPS) and forwards each connection to rmqtt on a
//! loopback port. That port still authenticates: a local user gains nothing
//! by connecting to it directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use rmqtt::session::Session;
use rmqtt::types::{AuthResult, ConnectInfo, Id, LastWill, PublishAclResult, SubscribeAclResult};
use spoke_api::protocol::topic;

use crate::auth::join::NodeCredentials;

/// MQTT user name of the hub's own client. Not a DNS-1123 name, so no node
/// can be called that.
pub const HUB_USER: &str = "_spoke-hub";

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for the embedded MQTT broker (--mqtt-listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the embedded MQTT broker did not start: {0}")]
    Start(String),
}

/// How the broker faces the boards.
pub struct Settings {
    /// Where boards connect (`--mqtt-listen`).
    pub listen: SocketAddr,
    /// TLS for boards; `None` serves MQTT in clear (`--mqtt-insecure`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A running embedded broker.
#[derive(Clone)]
pub struct Broker {
    /// Where the hub's own client connects: plain MQTT on loopback.
    pub internal: SocketAddr,
    /// Where boards connect.
    pub public: SocketAddr,
    /// The hub client's password (user [`HUB_USER`]).
    pub hub_password: String,
    scx: ServerContext,
}

impl Broker {
    /// Closes the session of node `node`, if it is connected (after its
    /// credentials were revoked).
    pub async fn kick(&self, node: &str) {
        let id = Id::from(self.scx.node.id(), format!("spoke-agent-{node}").into());
        let entry = { self.scx.extends.shared().await.entry(id) }
            .try_lock()
            .await;
        match entry {
            Ok(mut entry) => {
                if let Err(e) = entry.kick(true, true, true).await {
                    tracing::warn!(node, error = %e, "cannot close the session of a revoked node");
                }
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "cannot close the session of a revoked node")
            }
        }
    }
}

/// Starts the broker on the hub's runtime.
pub async fn start(
    settings: Settings,
    credentials: NodeCredentials,
    hub_password: String,
) -> Result<Broker, Error> {
    // rmqtt refuses every CONNECT (ServerUnavailable) while the machine's
    // load average or CPU use is high (its "busy" check, on by default).
    // A hub taking back its fleet after a restart is exactly such a time,
    // and on a shared machine the load may not even be the hub's: 10,000
    // simulated boards got in at one a second. Boards back off and retry
    // anyway; the hub has no reason to turn them away.
    let scx = ServerContext::new().busy_check_enable(false).build().await;
    let register = scx.extends.hook_mgr().register();
    let acl = Acl {
        credentials,
        hub_password: hub_password.clone(),
    };
    for typ in [
        Type::ClientAuthenticate,
        Type::ClientSubscribeCheckAcl,
        Type::MessagePublishCheckAcl,
    ] {
        register.add(typ, Box::new(acl.clone())).await;
    }
    register.start().await;

    // Plain MQTT: on the public address, or on a loopback port behind the
    // TLS terminator.
    let plain_addr = match settings.tls {
        Some(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        None => settings.listen,
    };
    let listener = Builder::new()
        .name("spoke/tcp")
        .laddr(plain_addr)
        .allow_anonymous(false)
        .max_packet_size((2 * spoke_api::protocol::MAX_MESSAGE_BYTES) as u32)
        .max_connections(100_000)
        .max_handshaking_limit(10_000)
        // The hub's one session receives every node's reports: room for a
        // reconnect storm of thousands (rmqtt's defaults are 16 and 1000).
        .max_inflight(std::num::NonZeroU16::new(500).expect("not zero"))
        .max_mqueue_len(100_000)
        .nodelay(true)
        .reuseaddr(Some(true))
        .bind()
        .map_err(|e| Error::Listen {
            addr: plain_addr,
            source: std::io::Error::other(e.to_string()),
        })?;
    let plain = listener
        .local_addr()
        .map_err(|e| Error::Start(e.to_string()))?;
    let listener = listener.tcp().map_err(|e| Error::Start(e.to_string()))?;
    let server = MqttServer::new(scx.clone()).listener(listener).build();
    tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "embedded MQTT broker stopped");
        }
    });

    let public = match settings.tls {
        None => plain,
        Some(tls) => {
            let socket = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|source| Error::Listen {
                    addr: settings.listen,
                    source,
                })?;
            let public = socket
                .local_addr()
                .map_err(|e| Error::Start(e.to_string()))?;
            let mut tls = (*tls).clone();
            tls.alpn_protocols.clear();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            tokio::spawn(terminate_tls(socket, acceptor, plain));
            public
        }
    };
    Ok(Broker {
        internal: crate::reachable(plain),
        public,
        hub_password,
        scx,
    })
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections and relays each, decrypted, to the broker.
async fn terminate_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    broker: SocketAddr,
) {
    let broker = crate::reachable(broker);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "MQTT/TLS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let mut tls =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "MQTT/TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "MQTT/TLS handshake timed out");
                        return;
                    }
                };
            let mut inner = match tokio::net::TcpStream::connect(broker).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach the embedded broker");
                    return;
                }
            };
            let _ = inner.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
        });
    }
}

/// The authentication and ACL hooks.
#[derive(Clone)]
struct Acl {
    credentials: NodeCredentials,
    hub_password: String,
}

/// The node a client id `spoke-agent-N` belongs to.
fn node_of_client_id(client_id: &str) -> Option<&str> {
    client_id.strip_prefix("spoke-agent-")
}

fn will_topic<'a>(will: &'a LastWill<'_>) -> &'a str {
    match will {
        LastWill::V3(w) => &w.topic,
        LastWill::V5(w) => &w.topic,
    }
}

impl Acl {
    async fn authenticate(&self, info: &ConnectInfo) -> AuthResult {
        let client_id: &str = info.client_id();
        let Some(user) = info.username().map(|u| u.to_string()) else {
            tracing::info!(client_id, "MQTT connect refused: no user name");
            return AuthResult::NotAuthorized;
        };
        let password = info
            .password()
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("");
        if user == HUB_USER {
            return if crate::auth::tokens::same(password, &self.hub_password) {
                AuthResult::Allow(true, None)
            } else {
                tracing::warn!(client_id, "MQTT connect refused: bad hub password");
                AuthResult::BadUsernameOrPassword
            };
        }
        if node_of_client_id(client_id) != Some(user.as_str()) {
            tracing::warn!(
                client_id,
                user,
                "MQTT connect refused: the client id must be spoke-agent-<user>"
            );
            return AuthResult::NotAuthorized;
        }
        if let Some(will) = info.last_will()
            && will_topic(&will) != topic::presence(&user)
        {
            tracing::warn!(
                user,
                "MQTT connect refused: last will outside the node's presence topic"
            );
            return AuthResult::NotAuthorized;
        }
        match self.credentials.check(&user, password).await {
            Ok(true) => AuthResult::Allow(false, None),
            Ok(false) => {
                tracing::warn!(
                    user,
                    "MQTT connect refused: unknown node or wrong password (revoked?)"
                );
                AuthResult::BadUsernameOrPassword
            }
            Err(e) => {
                tracing::error!(user, error = %e, "cannot check node credentials");
                AuthResult::NotAuthorized
            }
        }
    }
}

/// The node of a non-hub session (superusers never reach the ACL hooks).
fn session_node(s: &Session) -> Option<String> {
    s.id.username.as_ref().map(|u| u.to_string())
}

/// Whether node `node` may subscribe to `filter`: its own down and module
/// topics, exactly.
pub fn may_subscribe(node: &str, filter: &str) -> bool {
    filter == topic::down(node) || filter == topic::module(node)
}

/// Whether node `node` may publish to `name`: its own up and presence topics.
pub fn may_publish(node: &str, name: &str) -> bool {
    name == topic::up(node) || name == topic::presence(node)
}

#[async_trait]
impl Handler for Acl {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => (
                false,
                Some(HookResult::AuthResult(self.authenticate(info).await)),
            ),
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                let allowed =
                    session_node(s).is_some_and(|node| may_subscribe(&node, &sub.topic_filter));
                if allowed {
                    (true, acc)
                } else {
                    tracing::warn!(client_id = %s.id.client_id, filter = %sub.topic_filter, "MQTT subscribe refused");
                    let refused = SubscribeAclResult::new_failure(
                        rmqtt::codec::v5::SubscribeAckReason::NotAuthorized,
                    );
                    (false, Some(HookResult::SubscribeAclResult(refused)))
                }
            }
            Parameter::MessagePublishCheckAcl(s, publish) => {
                let allowed =
                    session_node(s).is_some_and(|node| may_publish(&node, &publish.topic));
                if allowed {
                    (true, acc)
                } else {
                    tracing::warn!(client_id = %s.id.client_id, topic = %publish.topic, "MQTT publish refused: closing the connection");
                    let refused = PublishAclResult::rejected(true, None);
                    (false, Some(HookResult::PublishAclResult(refused)))
                }
            }
            _ => (true, acc),
        }
    }
}

/// The hub's own MQTT password (embedded broker or Mosquitto): made once,
/// kept in `file` (mode 0600).
pub fn hub_password(file: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let text = text.trim();
        if !text.is_empty() {
            return Ok(text.to_string());
        }
    }
    let password = crate::auth::tokens::secret().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::tls::write_private(file, password.as_bytes())?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reaches_only_its_own_topics() {
        assert!(may_subscribe("pi-1", "spoke/v1/nodes/pi-1/down"));
        assert!(may_subscribe("pi-1", "spoke/v1/nodes/pi-1/module"));
        assert!(may_publish("pi-1", "spoke/v1/nodes/pi-1/up"));
        assert!(may_publish("pi-1", "spoke/v1/nodes/pi-1/presence"));
        for filter in [
            "spoke/v1/nodes/pi-2/down",
            "spoke/v1/nodes/pi-1/up",
            "spoke/v1/nodes/pi-1/+",
            "spoke/v1/nodes/+/down",
            "spoke/v1/nodes/pi-1/#",
            "#",
            "$SYS/#",
        ] {
            assert!(!may_subscribe("pi-1", filter), "{filter}");
        }
        for name in [
            "spoke/v1/nodes/pi-2/up",
            "spoke/v1/nodes/pi-2/presence",
            "spoke/v1/nodes/pi-1/down",
            "spoke/v1/nodes/pi-1/module",
        ] {
            assert!(!may_publish("pi-1", name), "{name}");
        }
        assert_eq!(node_of_client_id("spoke-agent-pi-1"), Some("pi-1"));
        assert_eq!(node_of_client_id("pi-1"), None);
    }
}
