//! Edge sync over MQTT: desired state in, acknowledgements and status out.
//!
//! Two tasks:
//! - the **event-loop task** owns rumqttc's `EventLoop` and only polls it; it
//!   forwards connection events and publishes over an unbounded channel and
//!   never waits on anything else, so keepalives and acks keep flowing. When
//!   the broker is unreachable it sleeps with jittered exponential back-off
//!   and polls again (which reconnects).
//! - the **handler task** ([`Handler::handle`]) applies what arrives and
//!   publishes with `try_publish`, so it never blocks on a full request queue
//!   either. While disconnected nothing is published: the `Hello` sent on
//!   every ConnAck carries the applied revision and every pod's status, which
//!   supersedes whatever was missed.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use spoke_api::protocol::{
    DesiredPod, Down, MAX_MESSAGE_BYTES, ModuleChunk, NodeInfo, OFFLINE, ONLINE, PodReport, Up,
    status_digest, topic,
};
use tokio::sync::mpsc;

use crate::modules::{Fetcher, Outbox};
use crate::pods::{Change, LogRequest, Supervisor};
use crate::state::State;

/// Status changes are coalesced for this long before being published: long
/// enough that a pod's Pending → Running (microseconds apart with cached
/// code) and pods started together share one message, short enough not to
/// show in apply → Running latency.
pub const STATUS_DEBOUNCE: Duration = Duration::from_millis(10);

/// How long the agent waits for the hub to answer its `hello` before it says
/// hello again (doubling up to [`HELLO_RETRY_MAX`]). After a broker restart
/// the agent may reconnect before the hub has, and a hello nobody was
/// subscribed to is lost: without a retry the board would wait forever.
pub const HELLO_RETRY: Duration = Duration::from_secs(5);
pub const HELLO_RETRY_MAX: Duration = Duration::from_secs(300);

/// After a desired state could not be persisted (a full disk, say), the
/// agent asks the hub to send it again this long after (doubling up to
/// [`PERSIST_RETRY_MAX`], so that a disk full for days costs a delta every
/// few minutes), and at once when the board's conditions change (its
/// DiskPressure clears): a board whose disk frees up catches up without
/// waiting for the next change or reconnect.
pub const PERSIST_RETRY: Duration = Duration::from_secs(5);
pub const PERSIST_RETRY_MAX: Duration = Duration::from_secs(300);

/// A lease is renewed every this fraction of its duration, so one lost
/// renewal does not let it run out (as the kubelet renews its 40 s Lease
/// every 10 s).
pub const LEASE_RENEWALS: u32 = 4;

/// Errors of the sync layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--hub` is not a broker URL.
    #[error("hub URL '{0}': {1}")]
    BadUrl(String, String),
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT over TLS, verified against `ca_pem` (see [`crate::identity`]).
    pub tls: bool,
    /// CA certificates (PEM) that sign the broker's certificate.
    pub ca_pem: Option<String>,
}

impl Connection {
    /// Parses `mqtts://host[:port]` (TLS, port 8883 by default) or
    /// `mqtt://host[:port]` (plain, 1883; `tcp://` and `ssl://` also work).
    pub fn parse_url(url: &str) -> Result<Connection, Error> {
        let u = spoke_api::broker::BrokerUrl::parse(url)
            .map_err(|why| Error::BadUrl(url.to_string(), why))?;
        Ok(Connection {
            host: u.host,
            port: u.port,
            username: None,
            password: None,
            tls: u.tls,
            ca_pem: None,
        })
    }
}

/// MQTT options of node `name`: client id, keepalive (whole seconds, at
/// least 1: see `--keepalive`), clean session, last will.
pub fn mqtt_options(conn: &Connection, name: &str, keepalive: Duration) -> MqttOptions {
    let mut o = MqttOptions::new(format!("spoke-agent-{name}"), conn.host.clone(), conn.port);
    o.set_keep_alive(keepalive.max(Duration::from_secs(1)));
    // A clean session: nothing bulky waits in the broker; the Hello resyncs.
    o.set_clean_session(true);
    o.set_last_will(LastWill::new(
        topic::presence(name),
        OFFLINE.to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    // rumqttc drops the whole connection on an incoming packet over its
    // limit. Accept up to 4x the protocol's limit so that an oversized
    // message reaches the decoder and is dropped alone, with a warning.
    o.set_max_packet_size(4 * MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES + 64 * 1024);
    if let (Some(u), Some(p)) = (&conn.username, &conn.password) {
        o.set_credentials(u.clone(), p.clone());
    }
    crate::identity::set_tls(&mut o, conn);
    o
}

/// How long a connect may take, TCP + TLS handshake + CONNACK. rumqttc's
/// default is 5 s: a broker busy taking back a whole fleet after a restart
/// answers later than that, and a client that gives up and tries again
/// leaves a session behind that its next attempt has to take over (one more
/// last will, one more connect for the broker). Slow links need it too.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket settings of the agent's MQTT connection: no Nagle delay for
/// small protocol messages (~40 ms a hop otherwise), and [`CONNECT_TIMEOUT`].
pub fn tune(eventloop: &mut EventLoop) {
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    eventloop.set_network_options(network);
}

/// What the event-loop task forwards.
#[derive(Debug)]
pub enum Inbound {
    Connected,
    Disconnected,
    Message {
        topic: String,
        payload: bytes::Bytes,
    },
}

/// A random fraction in [0, 1) for jitter, without a random-number crate.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Polls the event loop forever; see the module docs.
pub async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Inbound>) {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);
    let mut delay = MIN;
    let mut connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = MIN;
                connected = true;
                if tx.send(Inbound::Connected).is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = Inbound::Message {
                    topic: p.topic,
                    payload: p.payload,
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Our own goodbye: stop here instead of reconnecting.
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    tracing::warn!(error = %e, "lost the connection to the hub's broker");
                    connected = false;
                    if tx.send(Inbound::Disconnected).is_err() {
                        return;
                    }
                } else if let Some(why) = crate::identity::refusal(&e) {
                    tracing::warn!("{why}");
                } else {
                    tracing::debug!(error = %e, "cannot reach the hub's broker");
                }
                // Jitter spreads a fleet's reconnects after a broker restart.
                let sleep = delay.mul_f64(0.5 + jitter());
                tokio::time::sleep(sleep).await;
                delay = (delay * 2).min(MAX);
            }
        }
    }
}

/// The handler side of sync.
pub struct Handler {
    pub name: String,
    pub client: AsyncClient,
    pub state: Arc<State>,
    pub supervisor: Arc<Supervisor>,
    pub fetcher: Arc<Fetcher>,
    pub outbox: Outbox,
    pub node: NodeInfo,
    /// The revision applied and acknowledged.
    pub applied: u64,
    /// The desired set at `applied`, by `namespace/name`: what deltas apply to.
    pub desired: BTreeMap<String, DesiredPod>,
    /// How long each lease renewal holds (`--lease-duration`).
    pub lease: Duration,
    /// Desired states that could not be persisted, in a row (0 normally).
    /// The first failure of an episode is logged as an error, the next ones
    /// only at debug level, the recovery once.
    pub persist_failures: u32,
}

impl Handler {
    fn publish(&self, up: &Up) {
        if !self.outbox.is_connected() {
            return;
        }
        let payload = up.encode();
        if let Err(e) =
            self.client
                .try_publish(topic::up(&self.name), QoS::AtLeastOnce, false, payload)
        {
            // The Hello after the next connect carries the state again.
            tracing::warn!(error = %e, "cannot queue a message to the hub");
        }
    }

    async fn on_connected(&mut self) {
        self.outbox.set_connected(true);
        let name = self.name.clone();
        // Awaited, not tried: with a full request queue a dropped SUBSCRIBE
        // would leave the board connected but deaf until its next reconnect.
        // The event loop runs in its own task (`drive`), so this wait ends.
        for t in [topic::down(&name), topic::module(&name)] {
            if let Err(e) = self.client.subscribe(t, QoS::AtLeastOnce).await {
                tracing::warn!(error = %e, "cannot subscribe");
            }
        }
        if let Err(e) = self.client.try_publish(
            topic::presence(&name),
            QoS::AtLeastOnce,
            true,
            ONLINE.to_vec(),
        ) {
            tracing::warn!(error = %e, "cannot publish presence");
        }
        tracing::info!(applied_revision = self.applied, "connected to the hub");
        self.send_hello().await;
    }

    /// Says which revision this board has, with a digest of its statuses.
    async fn send_hello(&mut self) {
        let pods = self.supervisor.reports().await;
        // Only a digest of the statuses: the hub asks for them if its own
        // differs, so an unchanged board resyncs in a few hundred bytes.
        self.publish(&Up::Hello {
            applied_revision: self.applied,
            node: self.node.clone(),
            pods: Vec::new(),
            status_digest: Some(status_digest(&pods)),
            lease_seconds: Some(self.lease.as_secs()),
        });
    }

    /// When to renew the lease next, counted from now.
    fn next_renewal(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.lease / LEASE_RENEWALS
    }

    /// Handles one message; returns whether the hub asked for every pod's
    /// status ([`Down::SendStatus`]).
    async fn on_message(&mut self, topic_name: &str, payload: &[u8]) -> bool {
        let leaf = match topic::parse(topic_name) {
            Some((node, leaf)) if node == self.name => leaf,
            _ => {
                tracing::warn!(topic = topic_name, "message on an unexpected topic dropped");
                return false;
            }
        };
        match leaf {
            "down" => match Down::decode(payload) {
                Ok(Down::SendStatus) => return true,
                Ok(down) => self.on_down(down).await,
                Err(e) => {
                    tracing::warn!(error = %e, bytes = payload.len(), "bad message from the hub dropped")
                }
            },
            "module" => match ModuleChunk::decode(payload) {
                Ok((header, data)) => self.fetcher.on_chunk(header, data),
                Err(e) => {
                    tracing::warn!(error = %e, bytes = payload.len(), "bad module chunk dropped")
                }
            },
            other => tracing::warn!(leaf = other, "message on an unexpected topic dropped"),
        }
        false
    }

    async fn on_down(&mut self, down: Down) {
        match down {
            Down::Desired { revision, pods } => self.on_desired(revision, pods).await,
            Down::Delta {
                from_revision,
                revision,
                pods,
                deleted,
            } => self.on_delta(from_revision, revision, pods, deleted).await,
            Down::UpToDate { .. } | Down::SendStatus => {}
            Down::Logs {
                id,
                namespace,
                name,
                tail_lines,
                since_seconds,
                since_time,
                previous,
                container,
            } => {
                let request =
                    log_request(tail_lines, since_seconds, since_time, previous, container);
                let read = match request {
                    Ok(request) => self.supervisor.logs(&namespace, &name, &request).await,
                    Err(e) => Err(e),
                };
                let up = match read {
                    Ok(text) => Up::Logs {
                        id,
                        error: None,
                        text,
                    },
                    Err(e) => Up::Logs {
                        id,
                        error: Some(e),
                        text: String::new(),
                    },
                };
                self.publish(&up);
            }
        }
    }

    /// Applies a snapshot: the whole desired set at `revision`.
    pub async fn on_desired(&mut self, revision: u64, pods: Vec<DesiredPod>) {
        if revision <= self.applied {
            // A replay or a duplicate: the hub learns where we are.
            self.publish(&Up::Ack {
                applied_revision: self.applied,
            });
            return;
        }
        let set = pods.into_iter().map(|p| (p.key(), p)).collect();
        self.commit(revision, set).await;
    }

    /// Applies a delta if it starts at the applied revision: removes the
    /// pods whose uid is in `deleted`, then adds or replaces `pods`.
    pub async fn on_delta(
        &mut self,
        from_revision: u64,
        revision: u64,
        pods: Vec<DesiredPod>,
        deleted: Vec<String>,
    ) {
        if revision <= self.applied || revision <= from_revision {
            // A replay or a duplicate (or nonsense): the hub learns where we are.
            self.publish(&Up::Ack {
                applied_revision: self.applied,
            });
            return;
        }
        if from_revision != self.applied {
            // Something was missed (or not stored): ask to start over from here.
            tracing::warn!(
                applied = self.applied,
                from_revision,
                revision,
                "delta does not start at the applied revision; asking to resync"
            );
            self.publish(&Up::Resync {
                applied_revision: self.applied,
            });
            return;
        }
        let mut set = self.desired.clone();
        set.retain(|_, p| !deleted.contains(&p.uid));
        for p in pods {
            set.insert(p.key(), p);
        }
        self.commit(revision, set).await;
    }

    /// Persists `set` as the desired state at `revision`, hands it to the
    /// supervisor, and acknowledges it: in that order, so an acknowledged
    /// revision survives a crash.
    async fn commit(&mut self, revision: u64, set: BTreeMap<String, DesiredPod>) {
        let pods: Vec<DesiredPod> = set.values().cloned().collect();
        let state = self.state.clone();
        let to_save = pods.clone();
        let saved =
            tokio::task::spawn_blocking(move || state.save_desired(revision, &to_save)).await;
        let error = match saved {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = error {
            // Not durable, so not applied: what runs keeps running, and the
            // hub sends the state again when asked (see `PERSIST_RETRY`).
            self.persist_failures += 1;
            if self.persist_failures == 1 {
                tracing::error!(
                    revision,
                    error,
                    "cannot persist the desired state: not applied; asking the hub for it again later"
                );
            } else {
                tracing::debug!(
                    revision,
                    error,
                    attempts = self.persist_failures,
                    "cannot persist the desired state yet"
                );
            }
            return;
        }
        if self.persist_failures > 0 {
            tracing::info!(
                revision,
                failed_attempts = self.persist_failures,
                "desired state persisted again"
            );
            self.persist_failures = 0;
        }
        self.applied = revision;
        self.desired = set;
        tracing::info!(revision, pods = pods.len(), "applying desired state");
        self.supervisor.reconcile(pods).await;
        self.publish(&Up::Ack {
            applied_revision: revision,
        });
    }

    /// Runs until `inbound` closes. Status changes are debounced by
    /// [`STATUS_DEBOUNCE`]; messages from the [`Outbox`] are published in order.
    pub async fn handle(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        mut changes: mpsc::UnboundedReceiver<Change>,
        mut outbox_rx: mpsc::UnboundedReceiver<Up>,
        mut node_rx: tokio::sync::watch::Receiver<NodeInfo>,
    ) {
        let mut dirty: BTreeMap<String, PodReport> = BTreeMap::new();
        let mut gone: Vec<PodReport> = Vec::new();
        let mut flush_at: Option<tokio::time::Instant> = None;
        // While the hub has not answered a hello: when to say it again.
        let mut hello_retry: Option<(tokio::time::Instant, Duration)> = None;
        // While connected: when to renew the lease (each hello renews it too).
        let mut renew_at: Option<tokio::time::Instant> = None;
        // After a failed persist: when to ask the hub for the state again.
        let mut persist_retry: Option<tokio::time::Instant> = None;
        loop {
            if self.persist_failures == 0 {
                persist_retry = None;
            } else if persist_retry.is_none() {
                let wait = PERSIST_RETRY
                    .saturating_mul(1 << (self.persist_failures - 1).min(16))
                    .min(PERSIST_RETRY_MAX);
                persist_retry = Some(tokio::time::Instant::now() + wait);
            }
            let retry_persist = async move {
                match persist_retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let renew = async move {
                match renew_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let at = flush_at;
            let flush = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retry_at = hello_retry.map(|(at, _)| at);
            let retry = async move {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = retry => {
                    if let Some((_, wait)) = hello_retry {
                        tracing::info!(waited = ?wait, "no answer from the hub yet: saying hello again");
                        self.send_hello().await;
                        renew_at = Some(self.next_renewal());
                        let wait = (wait * 2).min(HELLO_RETRY_MAX);
                        hello_retry = Some((tokio::time::Instant::now() + wait, wait));
                    }
                }
                () = retry_persist => {
                    // The hub answers with what changed since the applied
                    // revision, which the agent tries to persist again. (A
                    // disconnected board resumes with its next hello.)
                    self.publish(&Up::Resync { applied_revision: self.applied });
                    // Armed again at the same wait; a new failure doubles it.
                    persist_retry = None;
                }
                () = renew => {
                    self.publish(&Up::Lease { lease_seconds: self.lease.as_secs() });
                    renew_at = Some(self.next_renewal());
                }
                msg = inbound.recv() => match msg {
                    None => return,
                    Some(Inbound::Connected) => {
                        self.on_connected().await;
                        renew_at = Some(self.next_renewal());
                        hello_retry = Some((tokio::time::Instant::now() + HELLO_RETRY, HELLO_RETRY));
                        // The Hello carried every pod's status.
                        dirty.clear();
                        if !gone.is_empty() {
                            flush_at.get_or_insert_with(|| tokio::time::Instant::now() + STATUS_DEBOUNCE);
                        }
                    }
                    Some(Inbound::Disconnected) => {
                        self.outbox.set_connected(false);
                        hello_retry = None;
                        renew_at = None;
                    }
                    Some(Inbound::Message { topic, payload }) => {
                        // Anything from the hub answers the hello.
                        hello_retry = None;
                        if self.on_message(&topic, &payload).await {
                            // Coalesced with the reports of pods a delta
                            // right behind restarts.
                            for r in self.supervisor.reports().await {
                                dirty.insert(format!("{}/{}", r.namespace, r.name), r);
                            }
                            flush_at.get_or_insert_with(|| tokio::time::Instant::now() + STATUS_DEBOUNCE);
                        }
                    }
                },
                Some(change) = changes.recv() => {
                    match change {
                        Change::Updated(r) => {
                            dirty.insert(format!("{}/{}", r.namespace, r.name), r);
                        }
                        Change::Gone(r) => {
                            dirty.remove(&format!("{}/{}", r.namespace, r.name));
                            gone.push(r);
                        }
                    }
                    flush_at.get_or_insert_with(|| tokio::time::Instant::now() + STATUS_DEBOUNCE);
                }
                Some(up) = outbox_rx.recv() => self.publish(&up),
                // Only changes travel; the next Hello carries the latest
                // description in any case.
                Ok(()) = node_rx.changed() => {
                    self.node = node_rx.borrow_and_update().clone();
                    self.publish(&Up::Node { node: self.node.clone() });
                    if self.persist_failures > 0 {
                        persist_retry = Some(tokio::time::Instant::now());
                    }
                }
                _ = flush => {
                    flush_at = None;
                    if self.outbox.is_connected() {
                        let mut pods: Vec<PodReport> = std::mem::take(&mut dirty).into_values().collect();
                        // Gone reports wait for a connection: the hub needs
                        // them to finish deleting, and Hello does not carry them.
                        pods.append(&mut gone);
                        if !pods.is_empty() {
                            self.publish(&Up::Status { pods });
                        }
                    } else {
                        dirty.clear();
                    }
                }
            }
        }
    }

    /// Says `offline` before a clean shutdown (the last will covers crashes).
    pub async fn goodbye(client: &AsyncClient, name: &str) {
        let _ = client.try_publish(
            topic::presence(name),
            QoS::AtLeastOnce,
            true,
            OFFLINE.to_vec(),
        );
        let _ = client.try_disconnect();
    }
}

/// The supervisor's reading of a [`Down::Logs`] request. `since_seconds`
/// counts back from this board's clock, the one that stamped the lines.
fn log_request(
    tail: Option<u64>,
    since_seconds: Option<u64>,
    since_time: Option<String>,
    previous: bool,
    container: Option<String>,
) -> Result<LogRequest, String> {
    let since = match (since_seconds, since_time) {
        (Some(s), _) => std::time::SystemTime::now().checked_sub(Duration::from_secs(s)),
        (None, Some(t)) => Some(
            humantime::parse_rfc3339_weak(&t)
                .map_err(|e| format!("sinceTime: {t:?} is not an RFC 3339 time: {e}"))?,
        ),
        (None, None) => None,
    };
    Ok(LogRequest {
        tail,
        since,
        previous,
        container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_are_parsed_or_refused_with_a_reason() {
        let c = Connection::parse_url("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1883));
        let c = Connection::parse_url("tcp://hub.local").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("hub.local", 1883));
        let c = Connection::parse_url("mqtt://[::1]:2000").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 2000));
        let c = Connection::parse_url("mqtts://hub.local").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.tls), ("hub.local", 8883, true));
        for bad in ["http://x", "mqtt://", "mqtt://h:notaport", "mqtt://u@h"] {
            assert!(Connection::parse_url(bad).is_err(), "{bad}");
        }
    }

    async fn handler(dir: &std::path::Path) -> Handler {
        let state = State::open(&dir.join("state.redb")).unwrap();
        handler_on(dir, state).await
    }

    async fn handler_on(dir: &std::path::Path, state: State) -> Handler {
        let state = Arc::new(state);
        let runtime = Arc::new(crate::runtime::Runtime::new(&dir.join("compiled")).unwrap());
        let (outbox, _rx) = Outbox::new();
        let store = crate::modules::Store::new(&dir.join("modules"));
        let fetcher = Arc::new(Fetcher::new(store, outbox.clone()));
        let (supervisor, _changes) = Supervisor::new(
            runtime,
            fetcher.clone(),
            state.clone(),
            crate::pods::Settings {
                backoff: Default::default(),
                logs_dir: dir.join("logs"),
                volumes: crate::pods::volumes::Volumes::new(&dir.join("volumes"), &[]),
                pod_address: None,
            },
        );
        let conn = Connection::parse_url("mqtt://127.0.0.1:1").unwrap();
        // Never polled: nothing is sent, and the outbox says disconnected.
        let (client, _eventloop) =
            AsyncClient::new(mqtt_options(&conn, "pi-1", Duration::from_secs(60)), 16);
        Handler {
            name: "pi-1".into(),
            client,
            state,
            supervisor,
            fetcher,
            outbox,
            node: NodeInfo::default(),
            applied: 0,
            desired: BTreeMap::new(),
            lease: Duration::from_secs(3600),
            persist_failures: 0,
        }
    }

    /// Waits until the supervisor runs `n` pods: a replaced or removed pod
    /// leaves only once it has stopped, which happens in the background.
    async fn running(h: &Handler, n: usize) {
        for _ in 0..100 {
            if h.supervisor.len().await == n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(h.supervisor.len().await, n);
    }

    fn desired_pod(name: &str) -> DesiredPod {
        DesiredPod {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            spec: spoke_api::PodSpec {
                containers: vec![spoke_api::Container {
                    name: "main".into(),
                    image: "hello:v1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            deleting: false,
            grace_period_seconds: None,
            config_maps: Default::default(),
            secrets: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_desired_set_is_persisted_and_applied_and_older_revisions_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = handler(dir.path()).await;
        h.on_desired(3, vec![desired_pod("a"), desired_pod("b")])
            .await;
        assert_eq!(h.applied, 3);
        assert_eq!(h.state.load().unwrap().revision, 3);
        running(&h, 2).await;

        // A replay of an older revision changes nothing.
        h.on_desired(2, vec![]).await;
        h.on_desired(3, vec![]).await;
        assert_eq!(h.applied, 3);
        assert_eq!(h.state.load().unwrap().pods.len(), 2);
        running(&h, 2).await;

        h.on_desired(4, vec![desired_pod("a")]).await;
        running(&h, 1).await;
        assert_eq!(h.state.load().unwrap().revision, 4);
        h.supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn a_desired_state_that_cannot_be_persisted_is_not_applied_until_it_can_be() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(false));
        let state = crate::state::testing::fillable(&dir.path().join("state.redb"), &full);
        let mut h = handler_on(dir.path(), state).await;
        h.on_desired(3, vec![desired_pod("a")]).await;
        running(&h, 1).await;

        // Big enough that the commit needs new pages of the full disk.
        let mut big = desired_pod("b");
        big.uid = "u".repeat(200_000);
        full.store(true, Ordering::SeqCst);
        for attempt in 1..=3 {
            h.on_delta(3, 4, vec![big.clone()], vec![]).await;
            // Not durable, so not applied: a keeps running alone.
            assert_eq!((h.applied, h.persist_failures), (3, attempt));
            assert_eq!(h.desired.len(), 1);
            running(&h, 1).await;
        }

        full.store(false, Ordering::SeqCst);
        // What the hub sends again on the agent's Resync.
        h.on_delta(3, 4, vec![big], vec![]).await;
        assert_eq!((h.applied, h.persist_failures), (4, 0));
        running(&h, 2).await;
        let saved = h.state.load().unwrap();
        assert_eq!((saved.revision, saved.pods.len()), (4, 2));
        h.supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn deltas_apply_only_on_top_of_the_applied_revision() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = handler(dir.path()).await;
        h.on_desired(3, vec![desired_pod("a"), desired_pod("b")])
            .await;

        // b is removed (by uid), c added, a replaced by a new generation.
        let mut a2 = desired_pod("a");
        a2.generation = 2;
        h.on_delta(
            3,
            5,
            vec![desired_pod("c"), a2.clone()],
            vec!["uid-b".into()],
        )
        .await;
        assert_eq!(h.applied, 5);
        let saved = h.state.load().unwrap();
        assert_eq!(saved.revision, 5);
        assert_eq!(saved.pods, vec![a2.clone(), desired_pod("c")]);
        running(&h, 2).await;

        // Replays and duplicates change nothing.
        h.on_delta(3, 5, vec![], vec!["uid-a".into(), "uid-c".into()])
            .await;
        h.on_delta(0, 3, vec![], vec!["uid-a".into()]).await;
        h.on_desired(4, vec![]).await;
        assert_eq!(h.state.load().unwrap().pods.len(), 2);

        // A delta from a revision this agent is not at is not applied.
        h.on_delta(6, 7, vec![], vec!["uid-a".into()]).await;
        assert_eq!(h.applied, 5);
        assert_eq!(h.state.load().unwrap().pods, vec![a2, desired_pod("c")]);
        running(&h, 2).await;

        // A deletion of a uid that is not (or no longer) here is harmless,
        // and a pod re-created under the same name with a new uid survives
        // the deletion of its old uid.
        let mut c_new = desired_pod("c");
        c_new.uid = "uid-c-2".into();
        h.on_delta(
            5,
            6,
            vec![c_new.clone()],
            vec!["uid-c".into(), "nobody".into()],
        )
        .await;
        assert_eq!(h.applied, 6);
        assert_eq!(h.desired.get("default/c"), Some(&c_new));
        running(&h, 2).await;
        h.supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_and_oversized_messages_are_dropped_without_changing_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = handler(dir.path()).await;
        let down = topic::down("pi-1");
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        let bad: [(&str, &[u8]); 6] = [
            (&down, b"{"),
            (&down, b"{\"type\":\"desired\",\"revision\":\"x\"}"),
            (&down, &huge),
            (&topic::module("pi-1"), &[0xff, 0xff, 0xff, 0xff]),
            (
                &topic::down("someone-else"),
                b"{\"type\":\"upToDate\",\"revision\":1}",
            ),
            ("not/a/spoke/topic", b""),
        ];
        for (t, payload) in bad {
            h.on_message(t, payload).await;
        }
        assert_eq!(h.applied, 0);
        assert_eq!(h.state.load().unwrap().revision, 0);
        assert!(h.supervisor.is_empty().await);
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    /// Property: any run of messages from the hub (or from anyone able to
    /// publish on the node's topics), well-formed or not, in any order,
    /// leaves the agent where the protocol says: a snapshot applies only
    /// above the applied revision, a delta only from it; the applied
    /// revision never goes back; what is applied is what is stored.
    mod properties {
        use proptest::prelude::*;
        use spoke_api::fuzz::config;

        use super::*;

        #[derive(Debug, Clone)]
        enum Msg {
            Desired(u64, Vec<(usize, u8)>),
            Delta(u64, u64, Vec<(usize, u8)>, Vec<(usize, u8)>),
            UpToDate(u64),
            Logs(usize),
            Bytes(Vec<u8>),
        }

        fn pods() -> impl Strategy<Value = Vec<(usize, u8)>> {
            prop::collection::vec((0usize..3, 0u8..2), 0..3)
        }

        fn msg() -> impl Strategy<Value = (Msg, u8)> {
            let rev = || prop_oneof![0u64..8, Just(u64::MAX)];
            let m = prop_oneof![
                3 => (rev(), pods()).prop_map(|(r, p)| Msg::Desired(r, p)),
                4 => (rev(), rev(), pods(), pods()).prop_map(|(f, r, p, d)| Msg::Delta(f, r, p, d)),
                1 => rev().prop_map(Msg::UpToDate),
                1 => (0usize..4).prop_map(Msg::Logs),
                1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Msg::Bytes),
            ];
            // Mostly the node's own down topic; sometimes another's, or the module topic.
            (
                m,
                prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            )
        }

        fn pod((i, v): (usize, u8)) -> DesiredPod {
            let mut p = desired_pod(["a", "b", "c"][i]);
            p.uid = format!("uid-{}-{v}", p.name);
            p
        }

        proptest! {
            #![proptest_config(config(24))]

            #[test]
            fn any_run_of_messages_follows_the_revision_rules(
                msgs in prop::collection::vec(msg(), 1..10),
            ) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let dir = tempfile::tempdir().unwrap();
                rt.block_on(async {
                    let mut h = handler(dir.path()).await;
                    // The model: revision and set the protocol says the agent has.
                    let mut applied = 0u64;
                    let mut set: BTreeMap<String, DesiredPod> = BTreeMap::new();
                    for (m, to) in msgs {
                        let payload = match &m {
                            Msg::Desired(r, p) => Down::Desired { revision: *r, pods: p.iter().copied().map(pod).collect() }.encode(),
                            Msg::Delta(f, r, p, d) => Down::Delta {
                                from_revision: *f,
                                revision: *r,
                                pods: p.iter().copied().map(pod).collect(),
                                deleted: d.iter().copied().map(|x| pod(x).uid).collect(),
                            }.encode(),
                            Msg::UpToDate(r) => Down::UpToDate { revision: *r }.encode(),
                            Msg::Logs(i) => Down::Logs { id: 1, namespace: "default".into(),
                                                        name: ["a", "b", "c", "zz"][*i].into(), tail_lines: Some(u64::MAX), since_seconds: None, since_time: None, previous: false, container: None }.encode(),
                            Msg::Bytes(b) => b.clone(),
                        };
                        let topic = match to {
                            0 => topic::down("pi-1"),
                            1 => topic::down("pi-2"),
                            _ => topic::module("pi-1"),
                        };
                        h.on_message(&topic, &payload).await;
                        if to == 0 {
                            match m {
                                Msg::Desired(r, p) if r > applied => {
                                    applied = r;
                                    set = p.into_iter().map(pod).map(|p| (p.key(), p)).collect();
                                }
                                Msg::Delta(f, r, p, d) if f == applied && r > applied && r > f => {
                                    let gone: Vec<String> = d.into_iter().map(|x| pod(x).uid).collect();
                                    set.retain(|_, p| !gone.contains(&p.uid));
                                    for p in p.into_iter().map(pod) {
                                        set.insert(p.key(), p);
                                    }
                                    applied = r;
                                }
                                _ => {}
                            }
                        }
                        prop_assert_eq!(h.applied, applied);
                        prop_assert_eq!(&h.desired, &set);
                        let saved = h.state.load().unwrap();
                        prop_assert_eq!(saved.revision, applied);
                        prop_assert_eq!(saved.pods, set.values().cloned().collect::<Vec<_>>());
                    }
                    h.supervisor.shutdown().await;
                    Ok(())
                })?;
            }
        }
    }
}
