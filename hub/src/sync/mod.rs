//! Edge sync, hub side: sends each node its desired state over MQTT and
//! turns what agents report into Node and Pod status.
//!
//! One task owns the MQTT event loop and only forwards publishes; one worker
//! task handles them in order, together with store events and a timer, so
//! that per-node bookkeeping needs no locks. See `docs/protocol.md`.

pub mod connect;
mod desired;
mod nodestatus;
pub mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};
use spoke_api::core::annotations;
use spoke_api::protocol::{
    self, DesiredPod, Down, MODULE_CHUNK_BYTES, ModuleChunk, NodeInfo, PodReport, Up, topic,
};
use spoke_api::resource::ResourceType;
use tokio::sync::{mpsc, oneshot};

pub use self::desired::Tracker;
use crate::events::{self, Recorder};
use crate::modules::ModuleStore;
use crate::store::{self, EventType, Store};

/// How long desired-state changes are coalesced before they are sent.
const DESIRED_DEBOUNCE: Duration = Duration::from_millis(5);

/// How long the hub waits for an agent to answer a log request.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the sync service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `mqtt://host:port` of the broker (embedded or external).
    pub broker_url: String,
    /// A node whose agent has been gone this long is marked not ready.
    pub node_grace: Duration,
    /// The hub's credentials and trust for the broker.
    pub access: connect::Access,
}

/// Why a log request failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("node \"{0}\" is not connected to the hub, so its logs cannot be read now")]
    NotConnected(String),
    #[error("node \"{0}\" did not answer the log request in time")]
    Timeout(String),
    #[error("{0}")]
    Agent(String),
    #[error("could not send the log request: {0}")]
    Publish(String),
}

pub use spoke_api::protocol::LogOptions;

#[derive(Default)]
struct Shared {
    /// Nodes whose agent is connected now.
    online: HashSet<String>,
    /// Log requests waiting for their answer, by id.
    pending_logs: HashMap<u64, oneshot::Sender<Result<String, String>>>,
    next_id: u64,
}

/// A cheap handle for the API to ask things of connected agents.
#[derive(Clone)]
pub struct Handle {
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
}

impl Handle {
    /// A handle with no broker behind it: every node is offline. For tests
    /// of the API that need no agents.
    pub fn offline() -> Handle {
        let (client, _eventloop) =
            AsyncClient::new(MqttOptions::new("spoke-hub-offline", "127.0.0.1", 1), 1);
        Handle {
            client,
            shared: Arc::new(Mutex::new(Shared::default())),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the agent of `node` is connected now.
    pub fn is_online(&self, node: &str) -> bool {
        self.shared().online.contains(node)
    }

    /// Reads (part of) a pod's log from the board that runs it, over MQTT.
    pub async fn request_logs(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
        options: &LogOptions,
    ) -> Result<String, LogError> {
        if !self.is_online(node) {
            return Err(LogError::NotConnected(node.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut shared = self.shared();
            shared.next_id += 1;
            let id = shared.next_id;
            shared.pending_logs.insert(id, tx);
            id
        };
        let msg = Down::Logs {
            id,
            namespace: namespace.to_string(),
            name: name.to_string(),
            tail_lines: options.tail_lines,
            since_seconds: options.since_seconds,
            since_time: options.since_time.clone(),
            previous: options.previous,
            container: options.container.clone(),
        };
        let sent = self
            .client
            .publish(topic::down(node), QoS::AtLeastOnce, false, msg.encode())
            .await;
        let answer = match sent {
            Err(e) => Err(LogError::Publish(e.to_string())),
            Ok(()) => match tokio::time::timeout(LOG_TIMEOUT, rx).await {
                Ok(Ok(Ok(text))) => Ok(text),
                Ok(Ok(Err(e))) => Err(LogError::Agent(e)),
                _ => Err(LogError::Timeout(node.to_string())),
            },
        };
        self.shared().pending_logs.remove(&id);
        answer
    }
}

/// Connects to the broker and starts the sync tasks.
pub async fn start(
    settings: Settings,
    store: Store,
    modules: Arc<ModuleStore>,
) -> anyhow::Result<Handle> {
    let mut options = connect::options(&settings.broker_url, "spoke-hub", &settings.access)?;
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(
            2 * protocol::MAX_MESSAGE_BYTES,
            2 * protocol::MAX_MESSAGE_BYTES,
        )
        .set_request_channel_capacity(1024);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Small protocol messages must not wait for Nagle + delayed ACK (~40 ms a hop).
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected) = oneshot::channel();
    tokio::spawn(pump(eventloop, client.clone(), tx, connected_tx));
    // Start serving only once the broker is reachable, but do not refuse to
    // start when an external broker is down: the connection is retried.
    if tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .is_err()
    {
        tracing::warn!(broker = %settings.broker_url, "MQTT broker not reachable yet; agents cannot sync until it is");
    }

    let (pods, revision) = store.list(&store::prefix("pods", None)).await?;
    let (nodes, _) = store.list(&store::prefix("nodes", None)).await?;
    let handle = Handle {
        client: client.clone(),
        shared: Arc::new(Mutex::new(Shared::default())),
    };
    let node_status = nodestatus::Writer::start(store.clone());
    let mut worker = Worker {
        settings,
        events: store.subscribe(),
        recorder: Recorder::new(store.clone(), "spoke-agent"),
        tracker: Tracker::new(&pods, revision),
        store,
        modules,
        handle: handle.clone(),
        dirty: HashSet::new(),
        dirty_since: tokio::time::Instant::now(),
        offline_since: HashMap::new(),
        leases: HashMap::new(),
        node_status,
        sent: HashMap::new(),
        nodes: HashMap::new(),
        started: Instant::now(),
    };
    worker.remember_nodes(nodes);
    tokio::spawn(worker.run(rx));
    Ok(handle)
}

/// Owns the MQTT event loop: (re)subscribes on every connect and forwards
/// publishes to the worker. Never blocks.
async fn pump(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::UnboundedSender<Publish>,
    connected: oneshot::Sender<()>,
) {
    let mut connected = Some(connected);
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                tracing::info!("hub connected to the MQTT broker");
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                }
                for filter in [topic::ALL_UP, topic::ALL_PRESENCE] {
                    if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                        tracing::error!(error = %e, filter, "cannot subscribe");
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                // The first few failures are normal while an embedded broker starts.
                if failures == 3 || failures.is_multiple_of(30) {
                    tracing::warn!(error = %e, "MQTT connection to the broker failed; retrying");
                }
                tokio::time::sleep(
                    Duration::from_millis(500).min(Duration::from_millis(100) * failures),
                )
                .await;
            }
        }
    }
}

struct Worker {
    settings: Settings,
    store: Store,
    modules: Arc<ModuleStore>,
    handle: Handle,
    events: tokio::sync::broadcast::Receiver<store::Event>,
    /// Pod and node events, derived from what agents report.
    recorder: Recorder,
    tracker: Tracker,
    /// Nodes whose desired state changed and has not been sent yet.
    dirty: HashSet<String>,
    /// When `dirty` last went from empty to not empty.
    dirty_since: tokio::time::Instant,
    /// Nodes whose agent went away, and when.
    offline_since: HashMap<String, Instant>,
    /// Each node's last lease renewal since the hub started, and how long it holds.
    leases: HashMap<String, (Instant, Duration)>,
    /// Node status writes, queued so that the worker never waits for a flush.
    node_status: nodestatus::Writer,
    /// The revision each connected agent will be at once it has applied
    /// what was sent to it (QoS 1 keeps order): the next delta starts there.
    sent: HashMap<String, u64>,
    /// What [`Worker::node_lifecycle`] needs of every stored Node, kept up
    /// to date from store events: the once-a-second check reads no store
    /// (listing and decoding 10,000 Nodes every second was most of an idle
    /// hub's CPU).
    nodes: HashMap<String, StoredNode>,
    started: Instant,
}

/// What the sync worker needs of a stored Node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StoredNode {
    /// Its `Ready` condition is `True`.
    ready: bool,
    /// `status.lease.leaseDurationSeconds`.
    lease: Option<Duration>,
}

impl StoredNode {
    fn of(node: &Value) -> StoredNode {
        StoredNode {
            ready: node
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True"),
            lease: node
                .pointer("/status/lease/leaseDurationSeconds")
                .and_then(Value::as_u64)
                .map(lease),
        }
    }
}

/// A lease duration from the wire, capped at a year so that no
/// `Instant` arithmetic can overflow on a hostile value.
fn lease(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(365 * 24 * 3600))
}

fn pod_key(ns: &str, name: &str) -> String {
    store::key("pods", Some(ns), name)
}

/// A pressure condition as stored on the Node: the agent sends reason and
/// message only for one in effect; the others get the kubelet's.
fn node_condition(c: &protocol::NodeCondition, now: &str) -> Value {
    let (reason, message) = match (c.type_.as_str(), c.status.as_str()) {
        (_, "True") => (c.reason.as_str(), c.message.as_str()),
        ("MemoryPressure", _) => (
            "KubeletHasSufficientMemory",
            "spoke-agent has sufficient memory available",
        ),
        ("DiskPressure", _) => (
            "KubeletHasNoDiskPressure",
            "spoke-agent has no disk pressure",
        ),
        ("PIDPressure", _) => (
            "KubeletHasSufficientPID",
            "spoke-agent has sufficient PID available",
        ),
        _ => ("", ""),
    };
    json!({
        "type": c.type_, "status": c.status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

fn node_key(name: &str) -> String {
    store::key("nodes", None, name)
}

impl Worker {
    async fn run(mut self, mut incoming: mpsc::UnboundedReceiver<Publish>) {
        let mut lifecycle = tokio::time::interval(Duration::from_secs(1));
        loop {
            // Desired state goes out shortly after the first change, so that
            // a burst of writes for one node becomes one message.
            let flush_at = (!self.dirty.is_empty()).then(|| self.dirty_since + DESIRED_DEBOUNCE);
            let flush = async move {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = incoming.recv() => match msg {
                    Some(p) => self.on_publish(p).await,
                    None => return,
                },
                event = self.events.recv() => match event {
                    Ok(e) => self.on_store_event(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "sync fell behind the store; rebuilding from a full list");
                        self.rebuild().await;
                    }
                    Err(_) => return,
                },
                _ = flush => self.flush().await,
                _ = lifecycle.tick() => self.node_lifecycle().await,
            }
        }
    }

    /// Replaces what the worker knows of stored Nodes with `nodes`.
    fn remember_nodes(&mut self, nodes: Vec<Value>) {
        self.nodes = nodes
            .iter()
            .filter_map(|n| {
                let name = n.pointer("/metadata/name")?.as_str()?;
                Some((name.to_string(), StoredNode::of(n)))
            })
            .collect();
    }

    /// Level-triggered fallback: recompute every node's state from the store.
    async fn rebuild(&mut self) {
        match self.store.list(&store::prefix("nodes", None)).await {
            Ok((nodes, _)) => self.remember_nodes(nodes),
            Err(e) => tracing::error!(error = %e, "cannot list nodes to rebuild sync state"),
        }
        match self.store.list(&store::prefix("pods", None)).await {
            Ok((pods, revision)) => {
                let old = std::mem::replace(&mut self.tracker, Tracker::new(&pods, revision));
                drop(old);
                let online: Vec<String> = self.handle.shared().online.iter().cloned().collect();
                if self.dirty.is_empty() {
                    self.dirty_since = tokio::time::Instant::now();
                }
                self.dirty.extend(online);
            }
            Err(e) => tracing::error!(error = %e, "cannot list pods to rebuild sync state"),
        }
    }

    fn on_store_event(&mut self, e: store::Event) {
        if e.key.starts_with("nodes/") {
            if let Some(name) = e.object.pointer("/metadata/name").and_then(Value::as_str) {
                if e.type_ == EventType::Deleted {
                    self.nodes.remove(name);
                } else {
                    self.nodes
                        .insert(name.to_string(), StoredNode::of(&e.object));
                }
            }
            return;
        }
        if e.key.starts_with("configmaps/") || e.key.starts_with("secrets/") {
            // Resent to the nodes of the pods that use it, and only to them.
            let changed = self.tracker.touch(&e.key, e.revision);
            if self.dirty.is_empty() && !changed.is_empty() {
                self.dirty_since = tokio::time::Instant::now();
            }
            self.dirty.extend(changed);
            return;
        }
        if !e.key.starts_with("pods/") {
            return;
        }
        let pod = (e.type_ != EventType::Deleted).then_some(&e.object);
        let changed = self.tracker.apply(&e.key, pod, e.revision);
        if self.dirty.is_empty() && !changed.is_empty() {
            self.dirty_since = tokio::time::Instant::now();
        }
        self.dirty.extend(changed);
    }

    async fn flush(&mut self) {
        for node in std::mem::take(&mut self.dirty) {
            if self.handle.is_online(&node) {
                let from = self.sent.get(&node).copied();
                self.send_changes(&node, from).await;
            }
        }
    }

    /// Brings the agent of `node` from revision `from` (`None`: unknown) to
    /// the node's current revision: nothing if it is there, a delta if the
    /// tracker still has the history, else a full snapshot.
    /// Returns what it sent: `upToDate`, `delta` or `snapshot`.
    async fn send_changes(&mut self, node: &str, from: Option<u64>) -> &'static str {
        let revision = self.tracker.revision(node);
        if from == Some(revision) {
            self.publish_down(node, &Down::UpToDate { revision }).await;
            self.sent.insert(node.to_string(), revision);
            self.annotate_node(node, annotations::DESIRED_REVISION, revision);
            return "upToDate";
        }
        let changes = from.and_then(|f| Some((f, self.tracker.changes_since(node, f)?)));
        let Some((from_revision, changes)) = changes else {
            self.send_snapshot(node, revision).await;
            return "snapshot";
        };
        let mut pods = Vec::with_capacity(changes.upserts.len());
        for key in &changes.upserts {
            match self.store.get(key).await {
                // Bound elsewhere since: its removal here comes as a tombstone.
                Ok(Some(p))
                    if p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) =>
                {
                    if let Some(d) = self.desired_pod(&p).await {
                        pods.push(d);
                    }
                }
                // Removed since: a later event brings its tombstone.
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, node, "cannot read a pod for a delta; sending a snapshot");
                    self.send_snapshot(node, revision).await;
                    return "snapshot";
                }
            }
        }
        tracing::debug!(
            node,
            from_revision,
            revision,
            upserts = pods.len(),
            deleted = changes.deleted.len(),
            "sending a delta"
        );
        let msg = Down::Delta {
            from_revision,
            revision,
            pods,
            deleted: changes.deleted,
        };
        self.publish_down(node, &msg).await;
        self.sent.insert(node.to_string(), revision);
        self.annotate_node(node, annotations::DESIRED_REVISION, revision);
        "delta"
    }

    /// Sends everything `node` should run at `revision`.
    async fn send_snapshot(&mut self, node: &str, revision: u64) {
        let Some(pods) = self.stored_pods_on(node).await else {
            return;
        };
        let mut desired = Vec::new();
        for p in pods
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        {
            if let Some(d) = self.desired_pod(p).await {
                desired.push(d);
            }
        }
        let pods = desired;
        tracing::debug!(node, revision, pods = pods.len(), "sending a snapshot");
        self.publish_down(node, &Down::Desired { revision, pods })
            .await;
        self.sent.insert(node.to_string(), revision);
        self.annotate_node(node, annotations::DESIRED_REVISION, revision);
    }

    /// What the agent needs of one pod, with the ConfigMaps and Secrets
    /// its spec names (those that exist) resolved from the store, so that a
    /// board never reads other objects.
    async fn desired_pod(&self, p: &Value) -> Option<DesiredPod> {
        let namespace = p.pointer("/metadata/namespace")?.as_str()?.to_string();
        let spec: spoke_api::core::PodSpec = serde_json::from_value(p.get("spec")?.clone()).ok()?;
        let mut config_maps = std::collections::BTreeMap::new();
        let mut secrets = std::collections::BTreeMap::new();
        for (secret, name) in spec.config_refs() {
            let plural = if secret { "secrets" } else { "configmaps" };
            let object = match self
                .store
                .get(&store::key(plural, Some(&namespace), &name))
                .await
            {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, plural, name, "cannot read an object a pod references");
                    continue;
                }
            };
            let map = |field: &str| -> std::collections::BTreeMap<String, String> {
                object
                    .get(field)
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default()
            };
            if secret {
                let data = protocol::ConfigData {
                    data: Default::default(),
                    binary_data: map("data"),
                };
                secrets.insert(name, data);
            } else {
                let data = protocol::ConfigData {
                    data: map("data"),
                    binary_data: map("binaryData"),
                };
                config_maps.insert(name, data);
            }
        }
        Some(DesiredPod {
            namespace,
            name: p.pointer("/metadata/name")?.as_str()?.to_string(),
            uid: p.pointer("/metadata/uid")?.as_str()?.to_string(),
            generation: p
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            spec,
            deleting: p.pointer("/metadata/deletionTimestamp").is_some(),
            grace_period_seconds: p
                .pointer("/metadata/deletionTimestamp")
                .and(p.pointer("/metadata/deletionGracePeriodSeconds"))
                .and_then(Value::as_i64),
            config_maps,
            secrets,
        })
    }

    async fn publish_down(&self, node: &str, msg: &Down) {
        if let Err(e) = self
            .handle
            .client
            .publish(topic::down(node), QoS::AtLeastOnce, false, msg.encode())
            .await
        {
            tracing::error!(error = %e, node, "cannot publish to node");
        }
    }

    async fn on_publish(&mut self, p: Publish) {
        let Some((node, leaf)) = topic::parse(&p.topic) else {
            tracing::warn!(topic = %p.topic, "message on an unexpected topic dropped");
            return;
        };
        if spoke_api::validation::dns1123_subdomain(node).is_err() {
            tracing::warn!(topic = %p.topic, "message from an invalid node name dropped");
            return;
        }
        let node = node.to_string();
        match leaf {
            "presence" => self.on_presence(&node, &p.payload),
            "up" => match Up::decode(&p.payload) {
                Ok(msg) => self.on_up(&node, msg).await,
                Err(e) => tracing::warn!(node, error = %e, "malformed message from agent dropped"),
            },
            _ => {}
        }
    }

    fn on_presence(&mut self, node: &str, payload: &[u8]) {
        if payload == protocol::ONLINE {
            self.offline_since.remove(node);
            self.handle.shared().online.insert(node.to_string());
        } else if payload == protocol::OFFLINE || payload.is_empty() {
            tracing::info!(node, "agent disconnected");
            self.offline_since.insert(node.to_string(), Instant::now());
            self.handle.shared().online.remove(node);
            // What it will have applied is known again from its next Hello.
            self.sent.remove(node);
        } else {
            tracing::warn!(node, "malformed presence payload dropped");
        }
    }

    async fn on_up(&mut self, node: &str, msg: Up) {
        match msg {
            Up::Hello {
                applied_revision,
                node: info,
                pods,
                status_digest,
                lease_seconds,
            } => {
                if let Err(e) = info.validate() {
                    tracing::warn!(node, error = %e, "hello refused: the board's description is invalid");
                    return;
                }
                tracing::info!(node, applied_revision, pods = pods.len(), "agent connected");
                self.offline_since.remove(node);
                self.handle.shared().online.insert(node.to_string());
                match lease_seconds {
                    Some(s) => self
                        .leases
                        .insert(node.to_string(), (Instant::now(), lease(s))),
                    None => self.leases.remove(node),
                };
                if let Err(e) = self.register_node(node, &info, lease_seconds).await {
                    tracing::error!(node, error = %e, "cannot record node");
                    return;
                }
                self.apply_reports(node, pods).await;
                if let Some(digest) = status_digest
                    && self.stored_status_digest(node).await.as_ref() != Some(&digest)
                {
                    tracing::info!(
                        node,
                        "pod statuses differ from the agent's: asking for them"
                    );
                    self.publish_down(node, &Down::SendStatus).await;
                }
                self.resume(node, applied_revision).await;
            }
            Up::Node { node: info } => {
                if let Err(e) = info.validate() {
                    tracing::warn!(node, error = %e, "node message refused: invalid description");
                    return;
                }
                // Not a renewal: the lease stored on the Node stays as it is.
                if let Err(e) = self.register_node(node, &info, None).await {
                    tracing::error!(node, error = %e, "cannot record node");
                }
            }
            Up::Resync { applied_revision } => {
                tracing::info!(node, applied_revision, "agent asks to resync");
                self.resume(node, applied_revision).await;
            }
            Up::Lease { lease_seconds } => {
                self.leases
                    .insert(node.to_string(), (Instant::now(), lease(lease_seconds)));
                self.renew_lease(node, lease_seconds);
            }
            Up::Ack { applied_revision } => {
                self.annotate_node(node, annotations::APPLIED_REVISION, applied_revision);
            }
            Up::Status { pods } => self.apply_reports(node, pods).await,
            Up::ModuleRequest { id, image, offset } => {
                self.serve_module(node, id, image, offset).await
            }
            Up::Logs { id, error, text } => {
                let waiter = self.handle.shared().pending_logs.remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(match error {
                        Some(e) => Err(e),
                        None => Ok(text),
                    });
                }
            }
        }
    }

    /// Answers an agent at `applied` revision: `UpToDate`, a delta, or a
    /// snapshot (see [`Worker::send_changes`]).
    async fn resume(&mut self, node: &str, applied: u64) {
        if applied > self.tracker.revision(node) {
            // Not a revision of this hub's store: start above it, afresh.
            self.tracker.raise_above(node, applied);
        }
        self.annotate_node(node, annotations::APPLIED_REVISION, applied);
        let answer = self.send_changes(node, Some(applied)).await;
        tracing::info!(
            node,
            applied_revision = applied,
            revision = self.tracker.revision(node),
            answer,
            "agent resumed"
        );
    }

    /// The stored pods the tracker has bound to `node` (read one by one:
    /// a fleet's every pod is not listed for one node). `None` if the
    /// store cannot be read.
    async fn stored_pods_on(&self, node: &str) -> Option<Vec<Value>> {
        let mut pods = Vec::new();
        for key in self.tracker.pods_on(node) {
            match self.store.get(&key).await {
                Ok(Some(p)) => pods.push(p),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, node, "cannot read the pods of a node");
                    return None;
                }
            }
        }
        Some(pods)
    }

    /// The [`protocol::status_digest`] of what the store holds about the
    /// pods `node` runs (bound to it, not being deleted), as the agent
    /// computes it over its reports. `None` if the store cannot be read.
    async fn stored_status_digest(&self, node: &str) -> Option<String> {
        let pods = self.stored_pods_on(node).await?;
        let reports: Vec<PodReport> = pods
            .iter()
            .filter(|p| {
                p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .filter_map(|p| {
                let text = |ptr: &str| p.pointer(ptr).and_then(Value::as_str).map(str::to_string);
                Some(PodReport {
                    namespace: text("/metadata/namespace")?,
                    name: text("/metadata/name")?,
                    uid: text("/metadata/uid")?,
                    status: p
                        .get("status")
                        .and_then(|s| serde_json::from_value(s.clone()).ok())
                        .unwrap_or_default(),
                    gone: false,
                })
            })
            .collect();
        Some(protocol::status_digest(&reports))
    }

    /// Records a lease renewal on the Node (`status.lease` and the Ready
    /// condition's `lastHeartbeatTime`, one write), and makes the node Ready
    /// again if an expired lease had made it NotReady.
    fn renew_lease(&self, node: &str, lease_seconds: u64) {
        let now = crate::api::now();
        let online = self.handle.is_online(node);
        self.node_status.queue(node, move |next| {
            if !next["status"].is_object() {
                next["status"] = json!({});
            }
            next["status"]["lease"] =
                json!({"renewTime": now, "leaseDurationSeconds": lease_seconds});
            let Some(conds) = next["status"]["conditions"].as_array_mut() else {
                return;
            };
            let Some(ready) = conds.iter_mut().find(|c| c["type"] == "Ready") else {
                return;
            };
            ready["lastHeartbeatTime"] = json!(now);
            if ready["status"] != "True" && online {
                *ready = json!({
                    "type": "Ready", "status": "True", "reason": "AgentReady",
                    "message": "spoke-agent renewed its lease", "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                });
            }
        });
    }

    /// Creates or refreshes the Node object from the agent's description.
    /// A hello renews the node's lease when the agent keeps one.
    async fn register_node(
        &self,
        node: &str,
        info: &NodeInfo,
        lease_seconds: Option<u64>,
    ) -> Result<(), crate::api::Error> {
        let now = crate::api::now();
        let ready = json!({
            "type": "Ready", "status": "True", "reason": "AgentReady",
            "message": "spoke-agent is connected", "lastHeartbeatTime": now, "lastTransitionTime": now,
        });
        let mut conditions = vec![ready];
        conditions.extend(info.conditions.iter().map(|c| node_condition(c, &now)));
        let allocatable = if info.allocatable.is_empty() {
            &info.capacity
        } else {
            &info.allocatable
        };
        let mut status = json!({
            "capacity": info.capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "nodeInfo": {
                "architecture": info.architecture,
                "operatingSystem": info.operating_system,
                "kubeletVersion": info.agent_version,
                // Kubernetes' other NodeSystemInfo fields are required
                // strings; the official clients refuse a node without them.
                "machineID": "", "bootID": "", "systemUUID": "",
                "containerRuntimeVersion": "", "kernelVersion": "",
                "kubeProxyVersion": "", "osImage": "",
            },
        });
        if let Some(seconds) = lease_seconds {
            status["lease"] = json!({"renewTime": now, "leaseDurationSeconds": seconds});
        }
        let labels = json!({
            "kubernetes.io/hostname": node,
            "kubernetes.io/arch": info.architecture,
            "kubernetes.io/os": info.operating_system,
        });
        let key = node_key(node);
        if self.store.get(&key).await?.is_none() {
            let rt = ResourceType::lookup("nodes").expect("nodes are a known kind");
            let object = json!({"metadata": {"name": node, "labels": labels}});
            match crate::api::create_object(&self.store, rt, None, object).await {
                Ok(_) | Err(crate::api::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.node_status.queue(node, move |next| {
            // A condition whose status did not change keeps its transition
            // time.
            let mut status = status.clone();
            let prev = next
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                if let Some(p) = prev
                    .iter()
                    .find(|p| p["type"] == c["type"] && p["status"] == c["status"])
                {
                    c["lastTransitionTime"] = p["lastTransitionTime"].clone();
                }
            }
            if let Some(sync) = next.pointer("/status/sync") {
                status["sync"] = sync.clone();
            }
            if status.get("lease").is_none()
                && let Some(lease) = next.pointer("/status/lease")
            {
                status["lease"] = lease.clone();
            }
            next["status"] = status;
            if !next["metadata"]["labels"].is_object() {
                next["metadata"]["labels"] = json!({});
            }
            for (k, v) in labels.as_object().expect("labels are a map") {
                next["metadata"]["labels"][k] = v.clone();
            }
        });
        Ok(())
    }

    /// Records a desired or applied revision on the Node: in
    /// `status.sync` and in an annotation, in one write.
    fn annotate_node(&self, node: &str, annotation: &str, revision: u64) {
        let value = json!(revision.to_string());
        let field = if annotation == annotations::DESIRED_REVISION {
            "desiredRevision"
        } else {
            "appliedRevision"
        };
        let annotation = annotation.to_string();
        self.node_status.queue(node, move |next| {
            if !next["metadata"]["annotations"].is_object() {
                next["metadata"]["annotations"] = json!({});
            }
            next["metadata"]["annotations"][&annotation] = value.clone();
            if !next["status"].is_object() {
                next["status"] = json!({});
            }
            if !next["status"]["sync"].is_object() {
                next["status"]["sync"] = json!({"desiredRevision": 0, "appliedRevision": 0});
            }
            next["status"]["sync"][field] = json!(revision);
        });
    }

    /// Writes the agent's pod reports into pod status. Reports about pods
    /// that are not bound to this node, or whose uid differs (an old
    /// incarnation), are ignored.
    async fn apply_reports(&self, node: &str, reports: Vec<PodReport>) {
        for report in reports {
            let key = pod_key(&report.namespace, &report.name);
            let Ok(Some(pod)) = self.store.get(&key).await else {
                continue;
            };
            let same_pod = pod.pointer("/metadata/uid").and_then(Value::as_str)
                == Some(report.uid.as_str())
                && pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
            if !same_pod {
                continue;
            }
            if report.gone {
                if pod.pointer("/metadata/deletionTimestamp").is_some() {
                    let msg = format!(
                        "Stopped pod {}/{} on node {node}",
                        report.namespace, report.name
                    );
                    self.recorder
                        .on_host(node)
                        .record(&pod, events::Type::Normal, "Killing", &msg)
                        .await;
                }
                match crate::api::deletion::pod_stopped(&self.store, &key, &report.uid).await {
                    Ok(()) => tracing::debug!(node, pod = %key, "pod stopped on its node"),
                    Err(e) => tracing::error!(error = %e, pod = %key, "cannot finish deleting pod"),
                }
                continue;
            }
            let Ok(status) = serde_json::to_value(&report.status) else {
                continue;
            };
            let uid = report.uid.clone();
            let result = self
                .store
                .modify(&key, |cur| {
                    if cur.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
                        || cur.get("status") == Some(&status)
                    {
                        return None;
                    }
                    let mut next = cur.clone();
                    next["status"] = status.clone();
                    Some(next)
                })
                .await;
            match result {
                Ok(Some(stored)) => {
                    let recorder = self.recorder.on_host(node);
                    for (type_, reason, message) in events::pod_transition(&pod, &stored) {
                        recorder.record(&stored, type_, &reason, &message).await;
                    }
                }
                Ok(None) | Err(store::Error::NotFound) => {}
                Err(e) => tracing::error!(error = %e, pod = %key, "cannot write pod status"),
            }
        }
    }

    async fn serve_module(&self, node: &str, id: u64, image: String, offset: u64) {
        let modules = self.modules.clone();
        let served = tokio::task::spawn_blocking(move || {
            let digest = modules.resolve(&image)?;
            let (data, total) = modules.read_chunk(&digest, offset, MODULE_CHUNK_BYTES)?;
            Ok::<_, crate::modules::Error>((digest, data, total))
        })
        .await;
        let frame = match served {
            Ok(Ok((digest, data, total))) => ModuleChunk {
                id,
                digest,
                offset,
                total,
                error: None,
            }
            .encode(&data),
            Ok(Err(e)) => ModuleChunk {
                id,
                digest: String::new(),
                offset,
                total: 0,
                error: Some(e.to_string()),
            }
            .encode(&[]),
            Err(e) => {
                tracing::error!(error = %e, "module read task failed");
                return;
            }
        };
        if let Err(e) = self
            .handle
            .client
            .publish(topic::module(node), QoS::AtLeastOnce, false, frame)
            .await
        {
            tracing::error!(error = %e, node, "cannot send module chunk");
        }
    }

    /// Marks nodes that no longer count as alive ([`presence::alive`]:
    /// away longer than the grace period, or online but with a lease that
    /// ran out) as not ready. Nodes the hub has not heard of since it
    /// started get the same grace, so a hub restart does not flap every node.
    async fn node_lifecycle(&mut self) {
        let grace = self.settings.node_grace;
        let now = Instant::now();
        let mut gone = Vec::new();
        for (name, stored) in &self.nodes {
            if !stored.ready {
                continue;
            }
            let seen = presence::Seen {
                online: self.handle.is_online(name),
                offline_since: self.offline_since.get(name).copied(),
                renewed: self.leases.get(name).copied(),
                stored_lease: stored.lease,
            };
            if !presence::alive(&seen, now, self.started, grace) {
                gone.push((name.clone(), seen.online));
            }
        }
        for (name, online) in gone {
            let name = name.as_str();
            let why = if online {
                "spoke-agent stopped renewing its lease"
            } else {
                "spoke-agent stopped reporting: disconnected from the hub"
            };
            tracing::warn!(node = name, why, "node NotReady");
            let now = crate::api::now();
            let marked = self
                .store
                .modify(&node_key(name), |cur| {
                    let mut next = cur.clone();
                    let conds = next["status"]["conditions"].as_array_mut()?;
                    // Checked again on the stored object: the worker's
                    // copy may be a moment behind.
                    if conds.iter().find(|c| c["type"] == "Ready")?["status"] != "True" {
                        return None;
                    }
                    // As Kubernetes: every condition the agent reported
                    // is unknown while it is away.
                    for c in conds.iter_mut() {
                        let what = if c["type"] == "Ready" {
                            why
                        } else {
                            "spoke-agent stopped reporting"
                        };
                        *c = json!({
                            "type": c["type"].clone(), "status": "Unknown",
                            "reason": "NodeStatusUnknown", "message": what,
                            "lastHeartbeatTime": c["lastHeartbeatTime"].clone(),
                            "lastTransitionTime": now,
                        });
                    }
                    Some(next)
                })
                .await;
            if let Ok(Some(node)) = marked {
                let msg = format!("Node {name} status is now: NodeNotReady");
                self.recorder
                    .record(&node, events::Type::Warning, "NodeNotReady", &msg)
                    .await;
            }
        }
    }
}
