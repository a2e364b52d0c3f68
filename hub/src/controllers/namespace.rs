//! The namespace controller: a namespace marked for deletion is emptied
//! (each object deleted as a client would, so pods on boards are stopped
//! there first), then its finalizer is removed and it goes.

use serde_json::Value;
use spoke_api::resource::RESOURCES;

use crate::api::{DeleteOptions, Error, delete_object, deletion};
use crate::store::{self, Store};

pub async fn pass(store: &Store) -> Result<(), Error> {
    let (namespaces, _) = store.list(&store::prefix("namespaces", None)).await?;
    for ns in namespaces {
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let mut remaining = 0usize;
        for rt in RESOURCES.iter().filter(|rt| rt.namespaced) {
            let (items, _) = store.list(&store::prefix(rt.plural, Some(name))).await?;
            remaining += items.len();
            for item in items
                .iter()
                .filter(|i| i.pointer("/metadata/deletionTimestamp").is_none())
            {
                let item_name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match delete_object(
                    store,
                    rt,
                    Some(name),
                    item_name,
                    &DeleteOptions::background(),
                )
                .await
                {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if remaining == 0 {
            tracing::info!(namespace = name, "namespace empty: removing it");
            deletion::remove_finalizer(
                store,
                &store::key("namespaces", None, name),
                deletion::NAMESPACE_FINALIZER,
            )
            .await?;
        }
    }
    Ok(())
}
