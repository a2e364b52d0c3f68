//! Who is calling and may they: bearer-token authentication, role-based
//! authorization and the audit log, as one middleware around the API.
//!
//! - [`request`] reads verb, resource, namespace and name from method + path.
//! - [`tokens`] keeps tokens (hashed) in the store and serves
//!   `/apis/spoke.dev/v1/tokens`.
//! - [`rbac`] decides, from the token's role and namespace.
//! - [`audit`] writes one JSON line per request.
//! - [`join`] exchanges bootstrap tokens for per-node MQTT credentials.
//!
//! `/healthz`, `/readyz` and `/version` answer anyone (Kubernetes does the
//! same); every other request needs a live token: 401 `Unauthorized`
//! without one, 403 `Forbidden` when its role does not allow the request.

pub mod audit;
pub mod join;
pub mod rbac;
pub mod request;
pub mod tokens;

use std::path::Path;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use spoke_api::auth::{Role, Token};
use spoke_api::meta::{Status, StatusDetails};

use self::audit::Entry;
use self::tokens::{Refusal, Tokens};

/// Paths served without a token.
pub const ANONYMOUS_PATHS: [&str; 3] = ["/healthz", "/readyz", "/version"];
/// Name of the token made at first start and written to the CLI config.
pub const ADMIN_TOKEN: &str = "admin";
/// The largest created-object answer read back to find the new object's name.
const MAX_CREATED_BYTES: usize = 8 << 20;

/// The holder of a live token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    pub role: Role,
    /// The namespace the token is bound to; `None` for cluster-wide.
    pub namespace: Option<String>,
}

/// What the middleware needs; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub tokens: Tokens,
    pub audit: audit::Log,
    pub join: join::Join,
}

/// Puts the token routes beside `api` and every route behind
/// authentication, authorization and the audit log.
pub fn protect(api: Router, auth: Auth) -> Router {
    api.merge(tokens::routes(auth.tokens.clone()))
        .merge(join::routes(auth.join.clone()))
        .layer(axum::middleware::from_fn_with_state(auth, check))
}

fn status_response(status: Status) -> Response {
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(status)).into_response()
}

/// The token of `Authorization: Bearer <token>`, if there is one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn check(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if ANONYMOUS_PATHS.contains(&path) && matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let what = request::parse(req.method().as_str(), path, req.uri().query());
    let who = match bearer(req.headers()) {
        None => Err(Refusal::Unknown),
        Some(token) => auth.tokens.authenticate(token).await,
    };
    let who = match who {
        Ok(who) => who,
        Err(Refusal::Store(e)) => {
            tracing::error!(error = %e, "cannot read tokens from the store");
            auth.audit.record(Entry::new(None, &what, None, 503)).await;
            return status_response(Status::failure(
                503,
                "ServiceUnavailable",
                format!("cannot check the token: {e}"),
            ));
        }
        Err(refusal) => {
            auth.audit.record(Entry::new(None, &what, None, 401)).await;
            return status_response(Status::failure(401, "Unauthorized", refusal.to_string()));
        }
    };
    if !rbac::allows(&who, &what) {
        auth.audit
            .record(Entry::new(Some(&who.name), &what, None, 403))
            .await;
        let mut status = Status::failure(403, "Forbidden", rbac::forbidden_message(&who, &what));
        status.details = Some(StatusDetails {
            name: what.name.clone().unwrap_or_default(),
            kind: what.resource.clone(),
            causes: vec![],
        });
        return status_response(status);
    }
    let response = next.run(req).await;
    let code = response.status();
    let (response, created) = if what.verb == "create" && code == StatusCode::CREATED {
        created_name(response).await
    } else {
        (response, None)
    };
    auth.audit
        .record(Entry::new(Some(&who.name), &what, created, code.as_u16()))
        .await;
    response
}

/// The name of the object a create made, read from the answer (the path
/// has none). Only `metadata.name` is taken; the rest is passed on unread.
async fn created_name(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_CREATED_BYTES).await {
        Ok(bytes) => {
            #[derive(serde::Deserialize)]
            struct Meta {
                name: Option<String>,
            }
            #[derive(serde::Deserialize)]
            struct Created {
                metadata: Option<Meta>,
            }
            let name = serde_json::from_slice::<Created>(&bytes)
                .ok()
                .and_then(|c| c.metadata?.name);
            (
                Response::from_parts(parts, axum::body::Body::from(bytes)),
                name,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a create answer for the audit log");
            (StatusCode::INTERNAL_SERVER_ERROR.into_response(), None)
        }
    }
}

/// The admin token for the CLI config: made at first start and kept in
/// `file` (mode 0600), since the store holds only its hash. Returns `None`
/// (after a warning) when the kept token no longer works, e.g. because it
/// was revoked: deleting `file` makes the next start issue a new one.
pub async fn admin_token(tokens: &Tokens, file: &Path) -> anyhow::Result<Option<String>> {
    if file.exists() {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .trim()
            .to_string();
        return match tokens.authenticate(&token).await {
            Ok(who) if who.role == Role::Admin => Ok(Some(token)),
            Ok(_) | Err(Refusal::Unknown | Refusal::Expired { .. }) => {
                tracing::warn!(
                    file = %file.display(),
                    "the admin token kept in this file is revoked or expired; the CLI config gets no token (delete the file and restart to issue a new one)"
                );
                Ok(None)
            }
            Err(Refusal::Store(e)) => Err(e.into()),
        };
    }
    if tokens
        .get(ADMIN_TOKEN)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_some()
    {
        tracing::warn!(
            file = %file.display(),
            "the admin token's file is gone: revoking token \"admin\" and issuing a new one"
        );
        tokens
            .revoke(ADMIN_TOKEN)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let created = tokens
        .create(Token::new(ADMIN_TOKEN, Role::Admin, None, None))
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the admin token: {e}"))?;
    let secret = created
        .status
        .and_then(|s| s.token)
        .context("the new admin token has no secret")?;
    crate::tls::write_private(file, format!("{secret}\n").as_bytes())?;
    tracing::info!(file = %file.display(), "made the admin token");
    Ok(Some(secret))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// The first `n` lines of a file, waiting up to 10 s for them.
    pub(crate) async fn eventually_lines(path: &Path, n: usize) -> Vec<String> {
        for _ in 0..100 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never had {n} lines", path.display());
    }

    #[test]
    fn only_bearer_credentials_are_read() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer a.b".parse().unwrap());
        assert_eq!(bearer(&h), Some("a.b"));
        h.insert(header::AUTHORIZATION, "bearer  a.b ".parse().unwrap());
        assert_eq!(bearer(&h), Some("a.b"));
        h.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[tokio::test]
    async fn the_admin_token_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::RedbBackend::open(&dir.path().join("s.redb")).unwrap();
        let tokens = Tokens::new(crate::store::Store::new(backend));
        let file = dir.path().join("admin.token");
        let first = admin_token(&tokens, &file).await.unwrap().unwrap();
        assert_eq!(admin_token(&tokens, &file).await.unwrap().unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Revoked: not written into the config again.
        tokens.revoke(ADMIN_TOKEN).await.unwrap();
        assert_eq!(admin_token(&tokens, &file).await.unwrap(), None);
        // File removed: a new one replaces it.
        std::fs::remove_file(&file).unwrap();
        let second = admin_token(&tokens, &file).await.unwrap().unwrap();
        assert_ne!(second, first);
        assert_eq!(
            tokens.authenticate(&second).await.unwrap().role,
            Role::Admin
        );
    }
}
