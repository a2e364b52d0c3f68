//! Who may use the hub: the roles a bearer token can carry and the `Token`
//! object served at `/apis/spoke.dev/v1/tokens`.
//!
//! A token's secret is shown once, in the answer to its creation
//! (`status.token`); the hub keeps only its sha256.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::{FieldError, dns1123_label};

/// Collection path of tokens.
pub const TOKENS_PATH: &str = "/apis/spoke.dev/v1/tokens";
/// Where a board exchanges a bootstrap token for its node credentials (POST
/// a [`JoinRequest`], answered with a [`JoinResponse`]).
pub const JOIN_PATH: &str = "/apis/spoke.dev/v1/join";
/// `apiVersion` of a `Token`.
pub const API_VERSION: &str = "spoke.dev/v1";

/// The longest lifetime a token may be given: 100 years.
pub const MAX_EXPIRATION_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// What a token may do. `admin`, `edit` and `view` follow Kubernetes' user
/// roles of the same names (view cannot read secrets; only admin manages
/// tokens and cluster-scoped objects); `node` is for a board's agent and can
/// only read and report what concerns its own node (named like the token);
/// `bootstrap` can only join boards (exchange itself for per-node MQTT
/// credentials at [`JOIN_PATH`]) and must expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Edit,
    View,
    Node,
    Bootstrap,
}

impl Role {
    /// Every role, in order of power.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Edit,
        Role::View,
        Role::Node,
        Role::Bootstrap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Edit => "edit",
            Role::View => "view",
            Role::Node => "node",
            Role::Bootstrap => "bootstrap",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role \"{s}\" (roles: admin, edit, view, node, bootstrap)")
            })
    }
}

/// A bearer token, as created, listed and revoked through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: TokenSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenStatus>,
}

fn api_version() -> String {
    API_VERSION.to_string()
}
fn kind() -> String {
    "Token".to_string()
}

/// What the token may do, where, and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    pub role: Role,
    /// Bound to this namespace; cluster-wide when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Lifetime from creation; no expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<u64>,
}

/// Set by the hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    /// RFC 3339 time after which the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_timestamp: Option<String>,
    /// The secret to send as `Authorization: Bearer ...`; only in the
    /// answer to the create request, never stored or listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Token {
    /// A token request: `role`, optionally bound to `namespace`, expiring
    /// after `ttl_seconds`.
    pub fn new(name: &str, role: Role, namespace: Option<&str>, ttl_seconds: Option<u64>) -> Token {
        Token {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..ObjectMeta::default()
            },
            spec: TokenSpec {
                role,
                namespace: namespace.map(str::to_string),
                expiration_seconds: ttl_seconds,
            },
            status: None,
        }
    }
}

/// Checks a token request; each error names its field.
pub fn validate_token(token: &Token) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut bad = |field: &str, reason: &'static str, message: String| {
        errs.push(FieldError {
            field: field.into(),
            reason,
            message,
        })
    };
    if token.metadata.name.is_empty() {
        bad(
            "metadata.name",
            "FieldValueRequired",
            "Required value".into(),
        );
    } else if let Err(m) = dns1123_label(&token.metadata.name) {
        bad("metadata.name", "FieldValueInvalid", m);
    }
    if let Some(ns) = &token.spec.namespace
        && let Err(m) = dns1123_label(ns)
    {
        bad("spec.namespace", "FieldValueInvalid", m);
    }
    if token.spec.role == Role::Node && token.spec.namespace.is_some() {
        bad(
            "spec.namespace",
            "FieldValueForbidden",
            "a node token is cluster-wide: it is bound to the node named like the token".into(),
        );
    }
    if token.spec.role == Role::Bootstrap {
        if token.spec.namespace.is_some() {
            bad(
                "spec.namespace",
                "FieldValueForbidden",
                "a bootstrap token is cluster-wide".into(),
            );
        }
        if token.spec.expiration_seconds.is_none() {
            bad(
                "spec.expirationSeconds",
                "FieldValueRequired",
                "a bootstrap token must expire (e.g. --ttl 1h)".into(),
            );
        }
    }
    match token.spec.expiration_seconds {
        Some(0) => bad(
            "spec.expirationSeconds",
            "FieldValueInvalid",
            "must be at least 1".into(),
        ),
        Some(s) if s > MAX_EXPIRATION_SECONDS => bad(
            "spec.expirationSeconds",
            "FieldValueInvalid",
            format!("must be at most {MAX_EXPIRATION_SECONDS} (100 years)"),
        ),
        _ => {}
    }
    errs
}

/// What a board sends to [`JOIN_PATH`] with a bootstrap token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node's name (a DNS-1123 subdomain), unique in the fleet.
    pub node_name: String,
}

/// The hub's answer to a join: everything the board needs to connect.
/// `password` is shown only here; the hub keeps its sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub node_name: String,
    /// `mqtts://host:port` (or `mqtt://` when the hub serves MQTT in clear).
    pub broker_url: String,
    /// MQTT user name: the node's name.
    pub username: String,
    pub password: String,
    /// The hub's CA (PEM), which signs the broker's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_only() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        let e = "root".parse::<Role>().unwrap_err();
        assert!(
            e.contains("root") && e.contains("admin, edit, view, node, bootstrap"),
            "{e}"
        );
    }

    #[test]
    fn token_requests_are_checked_field_by_field() {
        assert!(validate_token(&Token::new("ci", Role::Edit, Some("prod"), Some(60))).is_empty());
        let fields =
            |t: &Token| -> Vec<String> { validate_token(t).into_iter().map(|e| e.field).collect() };
        assert_eq!(
            fields(&Token::new("Bad_Name", Role::View, None, None)),
            ["metadata.name"]
        );
        assert_eq!(
            fields(&Token::new("", Role::View, None, None)),
            ["metadata.name"]
        );
        assert_eq!(
            fields(&Token::new("pi-1", Role::Node, Some("default"), None)),
            ["spec.namespace"]
        );
        assert_eq!(
            fields(&Token::new("t", Role::View, Some("a.b"), Some(0))),
            ["spec.namespace", "spec.expirationSeconds"]
        );
        assert_eq!(
            fields(&Token::new("join", Role::Bootstrap, None, None)),
            ["spec.expirationSeconds"]
        );
        assert!(validate_token(&Token::new("join", Role::Bootstrap, None, Some(3600))).is_empty());
    }

    #[test]
    fn the_secret_is_left_out_when_absent() {
        let json = serde_json::to_value(Token::new("ci", Role::View, None, None)).unwrap();
        assert_eq!(json["apiVersion"], "spoke.dev/v1");
        assert_eq!(json["spec"], serde_json::json!({"role": "view"}));
        assert!(json.get("status").is_none());
    }
}
