//! `?watch=true`: one JSON event per line (`ADDED`, `MODIFIED`, `DELETED`,
//! `BOOKMARK`, `ERROR`), resumable from any resourceVersion still in the
//! store's change log, `410 Gone` (reason `Expired`) when it was compacted.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use spoke_api::resource::ResourceType;

use super::Error;
use super::objects::{Filter, ListQuery};
use super::table::TableRequest;
use crate::store::{EventType, Store};

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

fn line(type_: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": type_, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Starts a watch and streams it as the response body.
pub(super) async fn serve(
    store: &Store,
    rt: &'static ResourceType,
    prefix: &str,
    q: ListQuery,
    filter: Filter,
    table: Option<TableRequest>,
) -> Result<Response, Error> {
    let from = match q
        .resource_version
        .clone()
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            Error::BadRequest(format!(
                "resourceVersion \"{v}\" is not a resource version of this hub"
            ))
        })?),
    };
    let watch = store.watch(prefix, from).await?;
    let bookmarks = q.allow_watch_bookmarks.unwrap_or(false);
    let deadline = q
        .timeout_seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let state = (
        watch,
        filter,
        tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY),
        false,
    );
    let stream = futures_util::stream::unfold(
        state,
        move |(mut watch, filter, mut tick, done)| async move {
            if done {
                return None;
            }
            loop {
                let timeout = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    next = watch.next() => match next {
                        Ok(Some(event)) => match filter.matches(&event.object) {
                            true => {
                                let type_ = match event.type_ {
                                    EventType::Added => "ADDED",
                                    EventType::Modified => "MODIFIED",
                                    EventType::Deleted => "DELETED",
                                };
                                // kubectl get -w asks for each event as a one-row Table.
                                let out = match table {
                                    Some(t) => line(type_, &t.render_one(rt, &event.object)),
                                    None => line(type_, &event.object),
                                };
                                return Some((Ok::<_, std::convert::Infallible>(out), (watch, filter, tick, false)));
                            }
                            false => continue,
                        },
                        Ok(None) => return None,
                        Err(e) => {
                            let status = Error::from(e).status();
                            return Some((Ok(line("ERROR", &json!(status))), (watch, filter, tick, true)));
                        }
                    },
                    _ = tick.tick(), if bookmarks => {
                        let object = json!({
                            "apiVersion": rt.api_version(),
                            "kind": rt.kind,
                            "metadata": {"resourceVersion": watch.revision().to_string()},
                        });
                        return Some((Ok(line("BOOKMARK", &object)), (watch, filter, tick, false)));
                    }
                    _ = timeout => return None,
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
