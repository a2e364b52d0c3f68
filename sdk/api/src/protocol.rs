//! The hub ↔ agent protocol over MQTT: topics and messages.
//!
//! `docs/protocol.md` explains the rules; this module is their one
//! definition in code. In short:
//!
//! - `spoke/v1/nodes/{node}/up` (agent → hub, QoS 1, JSON [`Up`]),
//! - `spoke/v1/nodes/{node}/down` (hub → agent, QoS 1, JSON [`Down`]),
//! - `spoke/v1/nodes/{node}/module` (hub → agent, QoS 1, binary [`ModuleChunk`] frames),
//! - `spoke/v1/nodes/{node}/presence` (agent, and its last will; retained; `online`/`offline`).
//!
//! Nothing bulky is retained or left to the broker's offline queue: an agent
//! that (re)connects says which desired-state revision it has applied
//! ([`Up::Hello`]) and the hub answers with what it needs ([`Down`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::{PodSpec, PodStatus};
use crate::quantity::Quantity;

/// Topic prefix; the version changes only with an incompatible protocol.
pub const PREFIX: &str = "spoke/v1/nodes";

/// Largest message either side accepts. Module chunks are smaller than this.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Size of one module chunk on the wire.
pub const MODULE_CHUNK_BYTES: usize = 128 * 1024;

/// The topics of one node.
pub mod topic {
    use super::PREFIX;

    /// Agent → hub messages ([`super::Up`]).
    pub fn up(node: &str) -> String {
        format!("{PREFIX}/{node}/up")
    }
    /// Hub → agent messages ([`super::Down`]).
    pub fn down(node: &str) -> String {
        format!("{PREFIX}/{node}/down")
    }
    /// Hub → agent module chunks ([`super::ModuleChunk`]).
    pub fn module(node: &str) -> String {
        format!("{PREFIX}/{node}/module")
    }
    /// Retained presence of the agent: `online`, or `offline` (its last will).
    pub fn presence(node: &str) -> String {
        format!("{PREFIX}/{node}/presence")
    }
    /// What the hub subscribes to.
    pub const ALL_UP: &str = "spoke/v1/nodes/+/up";
    pub const ALL_PRESENCE: &str = "spoke/v1/nodes/+/presence";

    /// The node a topic belongs to, and the topic's last segment.
    pub fn parse(topic: &str) -> Option<(&str, &str)> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let (node, leaf) = rest.split_once('/')?;
        if node.is_empty() || leaf.contains('/') {
            return None;
        }
        Some((node, leaf))
    }
}

/// Presence payloads.
pub const ONLINE: &[u8] = b"online";
pub const OFFLINE: &[u8] = b"offline";

/// One pod as the agent needs it: identity, spec, and whether it is being
/// deleted. Status is not sent down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Bumped by the hub on every spec change: a new generation restarts the pod.
    pub generation: i64,
    pub spec: PodSpec,
    /// Set when the pod is being deleted: stop it, then report it gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
    /// With `deleting`: the deletion's grace period
    /// (`metadata.deletionGracePeriodSeconds`, from `delete
    /// --grace-period`), which wins over the spec's
    /// `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
    /// The ConfigMaps of the pod's namespace that its spec names and that
    /// exist, by name. A name missing here does not exist on the hub.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_maps: BTreeMap<String, ConfigData>,
    /// The same for Secrets. Their values must never be logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, ConfigData>,
}

/// The keys of one ConfigMap or Secret as the agent needs them: UTF-8
/// values as text (a ConfigMap's `data`), others base64 (its `binaryData`,
/// and all of a Secret's `data`, as stored). Debug output hides the values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigData {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConfigData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigData")
            .field(
                "keys",
                &self
                    .data
                    .keys()
                    .chain(self.binary_data.keys())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ConfigData {
    /// The bytes of `key`, if the object has it (and its base64 is valid).
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        if let Some(v) = self.data.get(key) {
            return Some(v.clone().into_bytes());
        }
        let v = self.binary_data.get(key)?;
        base64::engine::general_purpose::STANDARD.decode(v).ok()
    }

    /// Every key with its bytes, in key order.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        self.data
            .keys()
            .chain(self.binary_data.keys())
            .filter_map(|k| Some((k.clone(), self.get(k)?)))
            .collect()
    }
}

impl DesiredPod {
    /// `namespace/name`, the key pods go by on the agent.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What an agent says about its board.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `cpu`, `memory`, `pods`.
    pub capacity: std::collections::BTreeMap<String, Quantity>,
    /// What pods may use: capacity less what the agent keeps back (for
    /// memory, the eviction threshold). Left out when equal to `capacity`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Kubernetes' names: `arm64`, `arm`, `amd64`.
    pub architecture: String,
    pub operating_system: String,
    pub agent_version: String,
    /// The pressure conditions the agent checks (`MemoryPressure`,
    /// `DiskPressure`, `PIDPressure`); `Ready` is the hub's to set (from
    /// the connection). Those it cannot check on this board are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
}

impl NodeInfo {
    /// Checks what a board says about itself before the hub stores it on
    /// its Node: architecture and OS become label values, capacity and
    /// allocatable must be quantities, conditions only the pressure ones the
    /// agent owns. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("architecture", &self.architecture),
            ("operatingSystem", &self.operating_system),
            ("agentVersion", &self.agent_version),
        ] {
            if !crate::validation::label_name(value) {
                return Err(format!(
                    "node.{field} {value:?} must be at most 63 alphanumeric characters, '-', '_' or '.'"
                ));
            }
        }
        for (field, map) in [
            ("capacity", &self.capacity),
            ("allocatable", &self.allocatable),
        ] {
            if map.len() > 32 {
                return Err(format!("node.{field}: more than 32 resources"));
            }
            for (name, q) in map {
                let name_ok = !name.is_empty()
                    && name.len() <= 253
                    && name.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b"-./".contains(&c)
                    });
                if !name_ok {
                    return Err(format!("node.{field}: {name:?} is not a resource name"));
                }
                if q.to_milli().is_err() && q.to_units().is_err() {
                    return Err(format!("node.{field}[{name}]: {:?} is not a quantity", q.0));
                }
            }
        }
        for (i, c) in self.conditions.iter().enumerate() {
            if !["MemoryPressure", "DiskPressure", "PIDPressure"].contains(&c.type_.as_str()) {
                return Err(format!(
                    "node.conditions[{i}].type {:?}: only MemoryPressure, DiskPressure and PIDPressure come from the agent",
                    c.type_
                ));
            }
            if c.status != "True" && c.status != "False" {
                return Err(format!(
                    "node.conditions[{i}].status {:?} must be True or False",
                    c.status
                ));
            }
            if c.reason.len() > 128 || c.message.len() > 1024 {
                return Err(format!("node.conditions[{i}]: reason or message too long"));
            }
        }
        Ok(())
    }
}

/// One node condition as the agent observes it. Kept short on the wire: a
/// condition that is not in effect travels as type and status alone, and
/// the hub fills in Kubernetes' usual reason and message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The status of one pod, from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub status: PodStatus,
    /// The pod was deleted and its instance has stopped: the hub may remove it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

/// Agent → hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Up {
    /// First message after every connect: the revision this agent has
    /// applied (0 for none), its board, and the status of the pods it runs:
    /// either every report in `pods`, or just their [`status_digest`] in
    /// `status_digest` (the hub asks for the reports with
    /// [`Down::SendStatus`] when its own digest differs).
    #[serde(rename_all = "camelCase")]
    Hello {
        applied_revision: u64,
        node: NodeInfo,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pods: Vec<PodReport>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_digest: Option<String>,
        /// A hello also renews the node's lease (see [`Up::Lease`]) for
        /// this many seconds; absent: the agent keeps no lease.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_seconds: Option<u64>,
    },
    /// Renews the node's lease for `lease_seconds` from now. The agent
    /// sends it every quarter of that while connected; the hub marks the
    /// node NotReady when a lease runs out (plus its grace), whatever the
    /// broker says about presence. It proves that the whole path (agent's
    /// handler task → broker → hub) works, which keepalives and the last
    /// will cannot: they are answered by the event-loop task and the broker.
    #[serde(rename_all = "camelCase")]
    Lease { lease_seconds: u64 },
    /// The board's description changed since the last `Hello` (a pressure
    /// condition came or went): sent only on a change.
    Node { node: NodeInfo },
    /// The agent has stored and started to apply `revision`.
    #[serde(rename_all = "camelCase")]
    Ack { applied_revision: u64 },
    /// Pod status changes since the last report.
    #[serde(rename_all = "camelCase")]
    Status { pods: Vec<PodReport> },
    /// Asks for module bytes from `offset`; answered on the module topic.
    #[serde(rename_all = "camelCase")]
    ModuleRequest { id: u64, image: String, offset: u64 },
    /// The agent got a [`Down::Delta`] that does not start at its applied
    /// revision (it missed something): the hub answers as it does a
    /// `Hello`, with `UpToDate`, a delta from `applied_revision`, or a
    /// snapshot.
    #[serde(rename_all = "camelCase")]
    Resync { applied_revision: u64 },
    /// Answer to [`Down::Logs`].
    #[serde(rename_all = "camelCase")]
    Logs {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default)]
        text: String,
    },
}

/// Hub → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Down {
    /// A snapshot: everything the node should run at `revision`. Pods not
    /// listed must not run. Applied only if `revision` is above the agent's.
    #[serde(rename_all = "camelCase")]
    Desired {
        revision: u64,
        pods: Vec<DesiredPod>,
    },
    /// What changed between `from_revision` and `revision`: pods to add or
    /// replace (by namespace/name) and the uids of pods removed. Applied
    /// only by an agent whose applied revision is exactly `from_revision`;
    /// one at or past `revision` ignores it (a duplicate or a replay), any
    /// other answers [`Up::Resync`].
    #[serde(rename_all = "camelCase")]
    Delta {
        from_revision: u64,
        revision: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pods: Vec<DesiredPod>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<String>,
    },
    /// The agent's revision is current: nothing to do.
    #[serde(rename_all = "camelCase")]
    UpToDate { revision: u64 },
    /// The hub's view of the agent's pods differs from the digest in its
    /// `Hello`: the agent reports the status of every pod it runs.
    SendStatus,
    /// Asks for a pod's log; answered with [`Up::Logs`].
    #[serde(rename_all = "camelCase")]
    Logs {
        id: u64,
        namespace: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail_lines: Option<u64>,
        /// Only lines written in the last N seconds, by the board's clock
        /// (relative, so a board whose clock is off still answers sensibly).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_seconds: Option<u64>,
        /// Only lines written at or after this RFC 3339 time (UTC, `Z`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_time: Option<String>,
        /// The log of the previous instance of `container` instead of the
        /// whole log (`kubectl logs --previous`). An agent older than this
        /// field ignores it and answers with the whole log.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        previous: bool,
        /// The container the request is about (the pod's only one unless the
        /// client named one); used by `previous`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
}

/// A short digest of pod reports, the same on the hub (over the statuses it
/// stored) and on the agent (over what it would report), so that an agent
/// whose pods did not change while it was away sends 16 characters instead
/// of every pod's status. Order-independent; ignores `gone`. FNV-1a (64-bit):
/// it detects changes, it does not authenticate.
pub fn status_digest<'a>(reports: impl IntoIterator<Item = &'a PodReport>) -> String {
    let mut lines: Vec<Vec<u8>> = reports
        .into_iter()
        .map(|r| {
            let status = serde_json::to_vec(&r.status).expect("statuses always serialize");
            let mut line = format!("{}/{}\0{}\0", r.namespace, r.name, r.uid).into_bytes();
            line.extend_from_slice(&status);
            line.push(b'\n');
            line
        })
        .collect();
    lines.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lines.iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Why a message was refused. Malformed input is logged and dropped by the
/// receiver; it never changes state.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed module chunk frame: {0}")]
    Frame(&'static str),
}

fn decode_json<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    Ok(serde_json::from_slice(payload)?)
}

impl Up {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("protocol messages always serialize")
    }
    pub fn decode(payload: &[u8]) -> Result<Up, DecodeError> {
        decode_json(payload)
    }
}

impl Down {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("protocol messages always serialize")
    }
    pub fn decode(payload: &[u8]) -> Result<Down, DecodeError> {
        decode_json(payload)
    }
}

/// The header of one module chunk. Frame on the wire: 4-byte big-endian
/// header length, the header as JSON, then the chunk's raw bytes (no base64:
/// modules are the largest thing a board downloads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleChunk {
    /// The id of the [`Up::ModuleRequest`] this answers.
    pub id: u64,
    /// `sha256:<hex>` of the whole module; the agent verifies it.
    #[serde(default)]
    pub digest: String,
    pub offset: u64,
    /// Size of the whole module.
    pub total: u64,
    /// Set when the hub cannot serve the module (unknown reference, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ModuleChunk {
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let header = serde_json::to_vec(self).expect("protocol messages always serialize");
        let mut out = Vec::with_capacity(4 + header.len() + data.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out
    }

    /// Splits a frame into its header and data.
    pub fn decode(payload: &[u8]) -> Result<(ModuleChunk, &[u8]), DecodeError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let len_bytes: [u8; 4] = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::Frame("shorter than its length prefix"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let header = payload
            .get(4..4usize.saturating_add(len))
            .ok_or(DecodeError::Frame("header longer than the frame"))?;
        let chunk: ModuleChunk = serde_json::from_slice(header)?;
        Ok((chunk, &payload[4 + len..]))
    }
}

/// Which part of a pod's log to read: the query of `.../pods/NAME/log`
/// (kubectl's `--tail`, `--since`, `--since-time`, `--previous`, `-c`),
/// and the optional fields of [`Down::Logs`] that carry it to the board.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines of the last N seconds.
    pub since_seconds: Option<u64>,
    /// Only lines written at or after this RFC 3339 time.
    pub since_time: Option<String>,
    /// The previous instance of the container instead of the whole log.
    pub previous: bool,
    /// The container (default: the pod's first).
    pub container: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_refuse_strangers() {
        assert_eq!(topic::parse(&topic::up("pi-1")), Some(("pi-1", "up")));
        assert_eq!(topic::parse(&topic::presence("a")), Some(("a", "presence")));
        assert_eq!(topic::parse("spoke/v1/nodes//up"), None);
        assert_eq!(topic::parse("spoke/v1/nodes/a/b/c"), None);
        assert_eq!(topic::parse("other/a/up"), None);
    }

    #[test]
    fn messages_round_trip() {
        let up = Up::Ack {
            applied_revision: 7,
        };
        assert_eq!(Up::decode(&up.encode()).unwrap(), up);
        let down = Down::UpToDate { revision: 3 };
        assert_eq!(Down::decode(&down.encode()).unwrap(), down);
        assert_eq!(
            String::from_utf8(down.encode()).unwrap(),
            r#"{"type":"upToDate","revision":3}"#
        );
        let delta = Down::Delta {
            from_revision: 3,
            revision: 5,
            pods: vec![],
            deleted: vec!["u1".into()],
        };
        assert_eq!(Down::decode(&delta.encode()).unwrap(), delta);
        assert_eq!(
            String::from_utf8(delta.encode()).unwrap(),
            r#"{"type":"delta","fromRevision":3,"revision":5,"deleted":["u1"]}"#
        );
        let resync = Up::Resync {
            applied_revision: 4,
        };
        assert_eq!(Up::decode(&resync.encode()).unwrap(), resync);
        let lease = Up::Lease {
            lease_seconds: 3600,
        };
        assert_eq!(Up::decode(&lease.encode()).unwrap(), lease);
        assert_eq!(
            String::from_utf8(lease.encode()).unwrap(),
            r#"{"type":"lease","leaseSeconds":3600}"#
        );
    }

    #[test]
    fn log_requests_stay_readable_by_older_and_newer_agents() {
        // What a hub before `previous`/`since` sent still decodes, with the
        // new fields off.
        let old = br#"{"type":"logs","id":1,"namespace":"default","name":"p","tailLines":5}"#;
        let Down::Logs {
            previous,
            since_seconds,
            since_time,
            container,
            ..
        } = Down::decode(old).unwrap()
        else {
            panic!("not a log request")
        };
        assert!(!previous && since_seconds.is_none() && since_time.is_none());
        assert!(container.is_none());
        // A plain request encodes as before, so older agents see no change;
        // the new fields are plain extra keys, which serde skips by default.
        let plain = Down::Logs {
            id: 1,
            namespace: "default".into(),
            name: "p".into(),
            tail_lines: Some(5),
            since_seconds: None,
            since_time: None,
            previous: false,
            container: None,
        };
        assert_eq!(plain.encode(), old);
        let full = Down::Logs {
            id: 2,
            namespace: "default".into(),
            name: "p".into(),
            tail_lines: None,
            since_seconds: Some(60),
            since_time: Some("2026-01-01T00:00:00Z".into()),
            previous: true,
            container: Some("main".into()),
        };
        let text = String::from_utf8(full.encode()).unwrap();
        assert!(text.contains(r#""previous":true"#), "{text}");
        assert!(text.contains(r#""sinceSeconds":60"#), "{text}");
        assert_eq!(Down::decode(text.as_bytes()).unwrap(), full);
    }

    #[test]
    fn node_messages_carry_conditions_compactly() {
        let node = NodeInfo {
            architecture: "arm64".into(),
            conditions: vec![
                NodeCondition {
                    type_: "MemoryPressure".into(),
                    status: "False".into(),
                    ..Default::default()
                },
                NodeCondition {
                    type_: "DiskPressure".into(),
                    status: "True".into(),
                    reason: "KubeletHasDiskPressure".into(),
                    message: "low".into(),
                },
            ],
            ..Default::default()
        };
        let up = Up::Node { node };
        assert_eq!(Up::decode(&up.encode()).unwrap(), up);
        assert_eq!(
            String::from_utf8(up.encode()).unwrap(),
            r#"{"type":"node","node":{"capacity":{},"architecture":"arm64","operatingSystem":"","agentVersion":"","conditions":[{"type":"MemoryPressure","status":"False"},{"type":"DiskPressure","status":"True","reason":"KubeletHasDiskPressure","message":"low"}]}}"#
        );
        // An older agent's hello (no allocatable, no conditions) still reads.
        let old = r#"{"type":"hello","appliedRevision":1,"node":{"capacity":{},"architecture":"arm","operatingSystem":"linux","agentVersion":"0.1.0"}}"#;
        assert!(matches!(Up::decode(old.as_bytes()), Ok(Up::Hello { .. })));
    }

    #[test]
    fn status_digests_follow_the_statuses_not_their_order() {
        let report = |name: &str, phase: &str| PodReport {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("u-{name}"),
            status: PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            },
            gone: false,
        };
        let (a, b) = (report("a", "Running"), report("b", "Running"));
        let d = status_digest([&a, &b]);
        assert_eq!(d.len(), 16);
        assert_eq!(d, status_digest([&b, &a]));
        assert_ne!(d, status_digest([&a]));
        assert_ne!(d, status_digest([&a, &report("b", "Failed")]));
        // A status that went through JSON (as the hub stores it) digests the same.
        let stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&b.status).unwrap()).unwrap();
        let b2 = PodReport {
            status: stored,
            ..b.clone()
        };
        assert_eq!(d, status_digest([&a, &b2]));
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [&b""[..], b"{", b"null", b"{\"type\":\"nope\"}", &[0xff; 10]] {
            assert!(Up::decode(bad).is_err());
            assert!(Down::decode(bad).is_err());
            assert!(ModuleChunk::decode(bad).is_err());
        }
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(Up::decode(&huge), Err(DecodeError::TooLarge(_))));
        // A length prefix that points past the end.
        assert!(ModuleChunk::decode(&[0xff, 0xff, 0xff, 0xff, b'{']).is_err());
    }

    #[test]
    fn module_chunks_carry_raw_bytes() {
        let chunk = ModuleChunk {
            id: 1,
            digest: "sha256:x".into(),
            offset: 0,
            total: 3,
            error: None,
        };
        let frame = chunk.encode(&[0, 1, 2]);
        let (back, data) = ModuleChunk::decode(&frame).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(data, &[0, 1, 2]);
    }
}

/// Reads a broker URL, `mqtt://host:port` (or `tcp://`; the port defaults
/// to 1883), into host and port.
pub fn parse_broker_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("\"{url}\" must start with mqtt://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("\"{url}\" has an invalid port"))?,
        ),
        None => (rest, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod node_info_tests {
    use super::*;

    fn good() -> NodeInfo {
        let mut n = NodeInfo {
            architecture: "arm64".into(),
            operating_system: "linux".into(),
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        n.capacity.insert("cpu".into(), Quantity("4".into()));
        n.capacity
            .insert("memory".into(), Quantity("3906Mi".into()));
        n.conditions.push(NodeCondition {
            type_: "DiskPressure".into(),
            status: "False".into(),
            ..Default::default()
        });
        n
    }

    #[test]
    fn a_boards_description_is_checked_field_by_field() {
        good().validate().unwrap();
        type Break = Box<dyn Fn(&mut NodeInfo)>;
        let cases: Vec<(Break, &str)> = vec![
            (
                Box::new(|n| n.architecture = "arm64 evil=1".into()),
                "node.architecture",
            ),
            (
                Box::new(|n| n.operating_system = String::new()),
                "node.operatingSystem",
            ),
            (
                Box::new(|n| n.agent_version = "x".repeat(64)),
                "node.agentVersion",
            ),
            (
                Box::new(|n| {
                    n.capacity.insert("memory".into(), Quantity("lots".into()));
                }),
                "node.capacity[memory]",
            ),
            (
                Box::new(|n| {
                    n.allocatable.insert("Pods!".into(), Quantity("1".into()));
                }),
                "node.allocatable",
            ),
            (
                Box::new(|n| n.conditions[0].type_ = "Ready".into()),
                "node.conditions[0].type",
            ),
            (
                Box::new(|n| n.conditions[0].status = "Maybe".into()),
                "node.conditions[0].status",
            ),
        ];
        for (break_it, field) in cases {
            let mut n = good();
            break_it(&mut n);
            let e = n.validate().unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::parse_broker_url;

    #[test]
    fn broker_urls_give_host_and_port() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_broker_url("tcp://hub.local"),
            Ok(("hub.local".into(), 1883))
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:9000"),
            Ok(("::1".into(), 9000))
        );
        assert!(parse_broker_url("http://x:1").is_err());
        assert!(parse_broker_url("mqtt://x:99999").is_err());
        assert!(parse_broker_url("mqtt://:1").is_err());
    }
}
