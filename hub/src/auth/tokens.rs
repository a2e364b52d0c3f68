//! Bearer tokens: issue, look up, list and revoke, and their REST face at
//! `/apis/spoke.dev/v1/tokens`.
//!
//! Storage: each token is an object in the hub's store under the key
//! `tokens//<name>` (cluster-scoped, beside nodes and namespaces), so it goes
//! through the one write path, is durable like every object, and moves with
//! the store to another backend. No generic route serves that prefix; the
//! handlers here never answer the stored hash.
//!
//! A token reads `<name>.<secret>`: the name (a DNS-1123 label, so without
//! dots) finds the record in one read, and the sha256 of the whole string
//! must equal the stored `secretHash`. Revoking deletes the record and
//! expiry is checked on every request, so both take effect at once.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use spoke_api::auth::{API_VERSION, TOKENS_PATH, Token, TokenStatus, validate_token};
use spoke_api::validation::decode_strict;

use super::Identity;
use crate::api::{Error, now};
use crate::store::{self, Store};

/// Field of the stored record that holds `sha256:<hex>` of the token.
const HASH_FIELD: &str = "secretHash";

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such token: never issued, revoked, or a wrong secret.
    #[error("Unauthorized: a valid bearer token is required")]
    Unknown,
    /// The token was valid until `at`.
    #[error("Unauthorized: token \"{name}\" expired at {at}")]
    Expired { name: String, at: String },
    /// The store could not be read.
    #[error("cannot check the token: {0}")]
    Store(#[from] store::Error),
}

/// The token registry, over the hub's store; cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
}

fn key(name: &str) -> String {
    store::key("tokens", None, name)
}

/// `sha256:<hex>` of a token string.
pub(crate) fn hash(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// Equality that takes as long whatever the first differing byte.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 32 random bytes from the operating system, URL-safe base64.
pub(crate) fn secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("the system random generator failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored record as clients may see it: without the hash.
fn public(mut record: Value) -> Result<Token, Error> {
    if let Some(m) = record.as_object_mut() {
        m.remove(HASH_FIELD);
    }
    serde_json::from_value(record).map_err(|e| Error::Internal(format!("stored token: {e}")))
}

impl Tokens {
    pub fn new(store: Store) -> Tokens {
        Tokens { store }
    }

    /// Issues a token; the answer's `status.token` is the only copy of the
    /// secret.
    pub async fn create(&self, request: Token) -> Result<Token, Error> {
        let name = request.metadata.name.clone();
        let causes = validate_token(&request);
        if !causes.is_empty() {
            return Err(Error::Invalid {
                kind: "Token".into(),
                name,
                causes,
            });
        }
        let token = format!("{name}.{}", secret()?);
        let expires = request
            .spec
            .expiration_seconds
            .map(|s| SystemTime::now() + Duration::from_secs(s))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        let status = TokenStatus {
            expiration_timestamp: expires,
            token: None,
        };
        let record = json!({
            "apiVersion": API_VERSION,
            "kind": "Token",
            "metadata": {
                "name": name,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": now(),
            },
            "spec": request.spec,
            "status": status,
            HASH_FIELD: hash(&token),
        });
        let stored = self
            .store
            .create(&key(&name), record)
            .await
            .map_err(|e| Error::from_store(e, "tokens", &name))?;
        let mut answer = public(stored)?;
        answer.status.get_or_insert_default().token = Some(token);
        Ok(answer)
    }

    /// Who holds `bearer`, if it is a live token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Identity, Refusal> {
        let Some((name, _)) = bearer.split_once('.') else {
            return Err(Refusal::Unknown);
        };
        if spoke_api::validation::dns1123_label(name).is_err() {
            return Err(Refusal::Unknown);
        }
        let Some(record) = self.store.get(&key(name)).await? else {
            return Err(Refusal::Unknown);
        };
        let stored = record.get(HASH_FIELD).and_then(Value::as_str).unwrap_or("");
        if !same(stored, &hash(bearer)) {
            return Err(Refusal::Unknown);
        }
        let token = public(record).map_err(|_| Refusal::Unknown)?;
        if let Some(at) = token
            .status
            .as_ref()
            .and_then(|s| s.expiration_timestamp.as_ref())
        {
            let expired = humantime::parse_rfc3339(at).map_or(true, |t| SystemTime::now() >= t);
            if expired {
                return Err(Refusal::Expired {
                    name: name.to_string(),
                    at: at.clone(),
                });
            }
        }
        Ok(Identity {
            name: name.to_string(),
            role: token.spec.role,
            namespace: token.spec.namespace,
        })
    }

    /// One token, without its secret.
    pub async fn get(&self, name: &str) -> Result<Option<Token>, Error> {
        match self.store.get(&key(name)).await? {
            Some(record) => public(record).map(Some),
            None => Ok(None),
        }
    }

    /// Every token, without secrets.
    pub async fn list(&self) -> Result<(Vec<Token>, u64), Error> {
        let (records, revision) = self.store.list(&store::prefix("tokens", None)).await?;
        let tokens = records.into_iter().map(public).collect::<Result<_, _>>()?;
        Ok((tokens, revision))
    }

    /// Revokes a token: it is refused from the next request on.
    pub async fn revoke(&self, name: &str) -> Result<Token, Error> {
        let record = self
            .store
            .delete(&key(name), None)
            .await
            .map_err(|e| Error::from_store(e, "tokens", name))?;
        public(record)
    }
}

/// The REST routes; authorization (cluster-wide admins only) is done by the
/// middleware before they run.
pub fn routes(tokens: Tokens) -> Router {
    Router::new()
        .route(TOKENS_PATH, get(list).post(create))
        .route(&format!("{TOKENS_PATH}/{{name}}"), get(read).delete(revoke))
        .with_state(tokens)
}

async fn create(State(tokens): State<Tokens>, body: Bytes) -> Result<Response, Error> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let request: Token = decode_strict(value).map_err(|causes| Error::Invalid {
        kind: "Token".into(),
        name,
        causes,
    })?;
    let created = tokens.create(request).await?;
    tracing::info!(token = %created.metadata.name, role = %created.spec.role, "token created");
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

async fn list(State(tokens): State<Tokens>) -> Result<Response, Error> {
    let (items, revision) = tokens.list().await?;
    Ok(axum::Json(json!({
        "apiVersion": API_VERSION,
        "kind": "TokenList",
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    }))
    .into_response())
}

async fn read(State(tokens): State<Tokens>, Path(name): Path<String>) -> Result<Response, Error> {
    match tokens.get(&name).await? {
        Some(t) => Ok(axum::Json(t).into_response()),
        None => Err(Error::NotFound {
            kind: "tokens".into(),
            name,
        }),
    }
}

async fn revoke(State(tokens): State<Tokens>, Path(name): Path<String>) -> Result<Response, Error> {
    let revoked = tokens.revoke(&name).await?;
    tracing::info!(token = %name, "token revoked");
    Ok(axum::Json(revoked).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoke_api::auth::Role;

    fn tokens() -> (Tokens, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::RedbBackend::open(&dir.path().join("s.redb")).unwrap();
        (Tokens::new(Store::new(backend)), dir)
    }

    #[tokio::test]
    async fn an_issued_token_authenticates_until_revoked() {
        let (tokens, _dir) = tokens();
        let t = tokens
            .create(Token::new("ci", Role::Edit, Some("prod"), None))
            .await
            .unwrap();
        let secret = t.status.unwrap().token.unwrap();
        assert!(secret.starts_with("ci.") && secret.len() > 40, "{secret}");
        let who = tokens.authenticate(&secret).await.unwrap();
        assert_eq!(
            (who.name.as_str(), who.role, who.namespace.as_deref()),
            ("ci", Role::Edit, Some("prod"))
        );
        // A wrong secret for a real name, a name alone, garbage.
        for bad in ["ci.AAAA", "ci", "x.y.z", "", "Ci.abc"] {
            assert!(
                matches!(tokens.authenticate(bad).await, Err(Refusal::Unknown)),
                "{bad}"
            );
        }
        // Never stored in clear, never listed.
        let (list, _) = tokens.list().await.unwrap();
        let text = serde_json::to_string(&list).unwrap();
        assert!(
            !text.contains(&secret[3..]) && !text.contains("secretHash"),
            "{text}"
        );
        let raw = tokens.store.get(&key("ci")).await.unwrap().unwrap();
        assert!(!raw.to_string().contains(&secret[3..]));

        tokens.revoke("ci").await.unwrap();
        assert!(matches!(
            tokens.authenticate(&secret).await,
            Err(Refusal::Unknown)
        ));
        assert_eq!(tokens.revoke("ci").await.unwrap_err().status().code, 404);
    }

    #[tokio::test]
    async fn names_are_unique_and_requests_are_validated() {
        let (tokens, _dir) = tokens();
        tokens
            .create(Token::new("a", Role::View, None, None))
            .await
            .unwrap();
        let e = tokens
            .create(Token::new("a", Role::Admin, None, None))
            .await
            .unwrap_err();
        assert_eq!(e.status().code, 409);
        let e = tokens
            .create(Token::new("pi-1", Role::Node, Some("default"), None))
            .await
            .unwrap_err();
        let status = e.status();
        assert_eq!(status.code, 422);
        assert_eq!(status.details.unwrap().causes[0].field, "spec.namespace");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_says_so() {
        let (tokens, _dir) = tokens();
        let t = tokens
            .create(Token::new("short", Role::View, None, Some(1)))
            .await
            .unwrap();
        let status = t.status.unwrap();
        assert!(status.expiration_timestamp.is_some());
        // Make it expired without waiting: rewrite its expiry into the past.
        tokens
            .store
            .modify(&key("short"), |cur| {
                let mut next = cur.clone();
                next["status"]["expirationTimestamp"] = json!("2000-01-01T00:00:00Z");
                Some(next)
            })
            .await
            .unwrap();
        match tokens.authenticate(&status.token.unwrap()).await {
            Err(Refusal::Expired { name, at }) => {
                assert_eq!(
                    (name.as_str(), at.as_str()),
                    ("short", "2000-01-01T00:00:00Z")
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
