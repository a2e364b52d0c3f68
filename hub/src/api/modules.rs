//! `/apis/spoke.dev/v1/modules`: push, list and download Wasm modules.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;

use super::{Error, State as AppState};
use crate::modules::Error as ModError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apis/spoke.dev/v1/modules", get(list).post(push))
        .route("/apis/spoke.dev/v1/modules/{digest}", get(download))
}

fn map(e: ModError) -> Error {
    match e {
        ModError::NotWasm | ModError::BadRef(_) => Error::BadRequest(e.to_string()),
        ModError::NotFound(name) => Error::NotFound {
            kind: "modules".into(),
            name,
        },
        other => Error::Internal(other.to_string()),
    }
}

#[derive(Deserialize)]
struct PushQuery {
    /// `name:tag` to point at the pushed bytes.
    tag: Option<String>,
}

async fn push(
    State(state): State<AppState>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, Error> {
    let modules = state.modules.clone();
    let info = tokio::task::spawn_blocking(move || modules.push(&body, q.tag.as_deref()))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(map)?;
    tracing::info!(digest = %info.digest, tags = ?info.tags, size = info.size, "module pushed");
    Ok((StatusCode::CREATED, axum::Json(info)))
}

async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, Error> {
    let modules = state.modules.clone();
    let items = tokio::task::spawn_blocking(move || modules.list())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(map)?;
    Ok(axum::Json(serde_json::json!({
        "apiVersion": "spoke.dev/v1",
        "kind": "ModuleList",
        "items": items,
    })))
}

async fn download(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<impl IntoResponse, Error> {
    let modules = state.modules.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let digest = modules.resolve(&reference)?;
        modules.read(&digest)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(map)?;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes))
}
