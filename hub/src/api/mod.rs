//! The hub's HTTP API: Kubernetes-shaped REST over the store, plus the
//! module store (`/apis/spoke.dev/v1/modules`).
//!
//! [`router`] builds the whole API from its state, so tests can drive it
//! without a socket.

mod error;
mod modules;
mod objects;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

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
        .merge(objects::routes())
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .merge(modules::routes().layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)))
        .with_state(state)
}

async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "major": "1",
        "minor": "20",
        "gitVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-spoke"),
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}
