//! The hub's HTTP API: Kubernetes-shaped REST over the store, plus the
//! module store (`/apis/spoke.dev/v1/modules`).
//!
//! [`router`] builds the whole API from its state, so tests can drive it
//! without a socket.

mod admission;
pub mod deletion;
mod discovery;
mod error;
mod modules;
mod objects;
mod openapi;
mod patch;
pub mod policy;
mod table;
mod watch;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use self::deletion::{DeleteOptions, delete_object};
pub use self::error::Error;
pub use self::objects::{create_object, now};
use crate::modules::ModuleStore;
use crate::store::Store;

/// Largest object body accepted (Kubernetes' own limit is 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 << 20;
/// Largest module accepted by `spoke push`.
pub const MAX_MODULE_BYTES: usize = 256 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct State {
    pub store: Store,
    pub modules: Arc<ModuleStore>,
    pub sync: crate::sync::Handle,
}

/// The whole HTTP API.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/openapi/v3",
            get(|| async {
                static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
                axum::Json(DOC.get_or_init(openapi::document).clone())
            }),
        )
        .merge(discovery::routes())
        .merge(objects::routes())
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .merge(modules::routes().layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)))
        .fallback(|| async {
            Error::NotFoundPath("the server could not find the requested resource".into())
        })
        .layer(axum::middleware::map_response(plain_errors_as_status))
        .with_state(state)
}

/// Errors that axum itself answers (a body over the limit, a method a path
/// does not have, a query string that does not parse) come as plain text;
/// every client of a Kubernetes-shaped API expects a `Status` object.
async fn plain_errors_as_status(res: Response) -> Response {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let code = res.status();
    if !(code.is_client_error() || code.is_server_error()) || is_json {
        return res;
    }
    let text = axum::body::to_bytes(res.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match code {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is too large (the limit is {MAX_OBJECT_BYTES} bytes for objects and {MAX_MODULE_BYTES} for modules)"
        ),
        StatusCode::METHOD_NOT_ALLOWED if text.is_empty() => {
            "the server does not allow this method on the requested resource".into()
        }
        _ if text.is_empty() => code.canonical_reason().unwrap_or("error").into(),
        _ => text,
    };
    let reason = match code {
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    let status = spoke_api::meta::Status::failure(code.as_u16(), reason, message);
    (code, axum::Json(status)).into_response()
}

async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "major": "1",
        "minor": "20",
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-spoke"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
