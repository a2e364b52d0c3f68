//! Node identity: per-node MQTT credentials, the join endpoint that issues
//! them in exchange for a bootstrap token, and their revocation when the
//! Node is deleted.
//!
//! Storage: one record per node under `nodecredentials//<node>` holding
//! only the sha256 of the node's MQTT password (no route serves that
//! prefix). The MQTT user name is the node's name.
//!
//! Guarantees:
//! - [`NodeCredentials::check`] accepts a node only while both its record
//!   and its Node object exist, so deleting the Node refuses the next
//!   connect even before [`revoke_deleted_nodes`] has removed the record.
//! - A node joins once: a second join for a name that holds credentials is
//!   refused (409), so a bootstrap token cannot take over a joined node.
//!   Deleting the Node frees the name.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use spoke_api::auth::{JOIN_PATH, JoinRequest, JoinResponse};
use spoke_api::resource::ResourceType;
use spoke_api::validation::{FieldError, decode_strict};

use super::tokens::{hash, same, secret};
use crate::api::{Error, now};
use crate::store::{self, EventType, Store};

/// Store plural of credential records.
pub const PLURAL: &str = "nodecredentials";
/// Field of the record that holds `sha256:<hex>` of the password.
const HASH_FIELD: &str = "passwordHash";
/// Field of the record that holds the password hashed for Mosquitto's
/// password file ([`crate::mosquitto`]).
const MOSQUITTO_FIELD: &str = "mosquittoHash";

fn key(node: &str) -> String {
    store::key(PLURAL, None, node)
}

fn node_key(node: &str) -> String {
    store::key("nodes", None, node)
}

/// The node credential registry, over the hub's store; cheap to clone.
#[derive(Clone)]
pub struct NodeCredentials {
    store: Store,
}

impl NodeCredentials {
    pub fn new(store: Store) -> NodeCredentials {
        NodeCredentials { store }
    }

    /// Issues credentials for `node` and returns its password (the only
    /// copy). `AlreadyExists` when the node already holds some.
    pub async fn issue(&self, node: &str) -> Result<String, Error> {
        let password = secret()?;
        let record = json!({
            "metadata": {"name": node, "creationTimestamp": now()},
            HASH_FIELD: hash(&password),
            MOSQUITTO_FIELD: crate::mosquitto::password_hash(&password)?,
        });
        self.store
            .create(&key(node), record)
            .await
            .map_err(|e| Error::from_store(e, "nodecredentials", node))?;
        Ok(password)
    }

    /// Whether `password` is the live password of `node`.
    pub async fn check(&self, node: &str, password: &str) -> Result<bool, store::Error> {
        if spoke_api::validation::dns1123_subdomain(node).is_err() {
            return Ok(false);
        }
        let Some(record) = self.store.get(&key(node)).await? else {
            return Ok(false);
        };
        let stored = record.get(HASH_FIELD).and_then(Value::as_str).unwrap_or("");
        if !same(stored, &hash(password)) {
            return Ok(false);
        }
        Ok(self.store.get(&node_key(node)).await?.is_some())
    }

    /// Removes the credentials of `node`; `true` if it had some.
    pub async fn revoke(&self, node: &str) -> Result<bool, store::Error> {
        match self.store.delete(&key(node), None).await {
            Ok(_) => Ok(true),
            Err(store::Error::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The store the records live in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every node with credentials and its password hashed for Mosquitto.
    pub async fn mosquitto_hashes(&self) -> Result<Vec<(String, String)>, store::Error> {
        let (records, _) = self.store.list(&store::prefix(PLURAL, None)).await?;
        Ok(records
            .iter()
            .filter_map(|r| {
                let name = r.pointer("/metadata/name")?.as_str()?;
                let hash = r.get(MOSQUITTO_FIELD)?.as_str()?;
                Some((name.to_string(), hash.to_string()))
            })
            .collect())
    }

    /// Names of the nodes that hold credentials.
    pub async fn nodes(&self) -> Result<Vec<String>, store::Error> {
        let (records, _) = self.store.list(&store::prefix(PLURAL, None)).await?;
        Ok(records
            .iter()
            .filter_map(|r| r.pointer("/metadata/name")?.as_str().map(str::to_string))
            .collect())
    }
}

/// Revokes the credentials of every deleted Node, now and from then on,
/// calling `kick(node)` for each so that a connected session is closed.
/// Runs until the store's event stream ends.
pub async fn revoke_deleted_nodes(
    credentials: NodeCredentials,
    kick: impl Fn(String) + Send + 'static,
) {
    let mut events = credentials.store.subscribe();
    // `nodes//<name>`: cluster-scoped keys have an empty namespace.
    let prefix = node_key("");
    let mut sweep = true;
    loop {
        if sweep {
            // Level-triggered: whatever was missed, credentials without a
            // Node go.
            sweep = false;
            match credentials.nodes().await {
                Ok(nodes) => {
                    for node in nodes {
                        if matches!(credentials.store.get(&node_key(&node)).await, Ok(None)) {
                            revoke_one(&credentials, &node, &kick).await;
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list node credentials"),
            }
        }
        match events.recv().await {
            Ok(event) if event.type_ == EventType::Deleted => {
                if let Some(node) = event.key.strip_prefix(&prefix) {
                    revoke_one(&credentials, node, &kick).await;
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => sweep = true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn revoke_one(credentials: &NodeCredentials, node: &str, kick: &impl Fn(String)) {
    match credentials.revoke(node).await {
        Ok(true) => tracing::info!(node, "node deleted: its MQTT credentials are revoked"),
        Ok(false) => {}
        Err(e) => tracing::error!(node, error = %e, "cannot revoke node credentials"),
    }
    kick(node.to_string());
}

/// What the join endpoint needs; cheap to clone.
#[derive(Clone)]
pub struct Join {
    pub credentials: NodeCredentials,
    /// The broker URL boards are told to use.
    pub broker_url: String,
    /// The hub's CA (PEM), when the broker serves TLS.
    pub ca_pem: Option<String>,
}

/// The join route; authorization (bootstrap tokens and cluster-wide admins)
/// is done by the middleware before it runs.
pub fn routes(join: Join) -> Router {
    Router::new()
        .route(JOIN_PATH, post(handle))
        .with_state(join)
}

fn invalid(name: &str, causes: Vec<FieldError>) -> Error {
    Error::Invalid {
        kind: "JoinRequest".into(),
        name: name.to_string(),
        causes,
    }
}

async fn handle(State(join): State<Join>, body: Bytes) -> Result<Response, Error> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let request: JoinRequest = decode_strict(value).map_err(|causes| invalid("", causes))?;
    let node = request.node_name;
    if let Err(message) = spoke_api::validation::dns1123_subdomain(&node) {
        return Err(invalid(
            &node,
            vec![FieldError {
                field: "nodeName".into(),
                reason: "FieldValueInvalid",
                message,
            }],
        ));
    }
    let password = match join.credentials.issue(&node).await {
        Ok(p) => p,
        Err(Error::AlreadyExists { .. }) => {
            return Err(Error::Conflict {
                kind: "nodes".into(),
                name: node,
                message: "this node has already joined; delete the Node to revoke its credentials and let a board join under this name again".into(),
            });
        }
        Err(e) => return Err(e),
    };
    // The Node exists from the join on, so that deleting it revokes the
    // credentials even before the board first connects.
    let store = &join.credentials.store;
    if store.get(&node_key(&node)).await?.is_none() {
        let rt = ResourceType::lookup("nodes").expect("nodes are a known kind");
        let object =
            json!({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}});
        match crate::api::create_object(store, rt, None, object).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => {
                let _ = join.credentials.revoke(&node).await;
                return Err(e);
            }
        }
    }
    tracing::info!(node = %node, "node joined: MQTT credentials issued");
    let answer = JoinResponse {
        node_name: node.clone(),
        broker_url: join.broker_url.clone(),
        username: node,
        password,
        ca_pem: join.ca_pem.clone(),
    };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}
