//! The embedded MQTT broker (rumqttd), so that one command starts a hub.
//!
//! It listens on loopback by default. Users who outgrow it point the hub
//! and the agents at an external broker (`--mqtt-url`) instead.

use std::net::SocketAddr;

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("broker configuration rejected: {0}")]
    Config(String),
    #[error("cannot listen on {addr} for the embedded MQTT broker (--mqtt-listen): {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts the broker on its own threads. The hub's own MQTT client is what
/// tells that it is up (see `sync::start`).
pub fn start(listen: SocketAddr) -> Result<(), Error> {
    // rumqttd reports a busy port only in its log, from its own thread:
    // find out first, so the hub can refuse to start with a clear message.
    drop(
        std::net::TcpListener::bind(listen).map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?,
    );
    let config = serde_json::json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 10010,
            "max_outgoing_packet_count": 200,
            // Small segments: the router keeps them in memory.
            "max_segment_size": 4 * 1024 * 1024,
            "max_segment_count": 4,
        },
        "v4": {
            "1": {
                "name": "spoke-v4",
                "listen": listen.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 2 * spoke_api::protocol::MAX_MESSAGE_BYTES,
                    "max_inflight_count": 500,
                    "dynamic_filters": true,
                },
            },
        },
    });
    let config: rumqttd::Config =
        serde_json::from_value(config).map_err(|e| Error::Config(e.to_string()))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(())
}
