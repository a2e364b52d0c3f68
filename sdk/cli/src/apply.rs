//! `spoke apply`: create each object, or update it if it exists.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;
use spoke_client::{Client, Error};

use crate::manifest;

/// Applies every document; reports each, and fails (exit 1) if any failed.
/// Documents are independent: one bad document does not stop the others.
pub async fn apply(
    client: &Client,
    default_ns: &str,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    manifest::for_each(files, async |doc| {
        let name = doc.name();
        let ns = doc.rt.namespaced.then(|| doc.namespace(default_ns));
        let label = format!("{}/{name}", doc.rt.singular);
        match apply_one(client, doc.rt, ns.as_deref(), &name, doc.object).await {
            Ok(verb) => Ok(format!("{label} {verb}")),
            Err(e) => Err(format!("{} ({label}): {}", doc.source, explain(&e))),
        }
    })
    .await
}

async fn apply_one(
    client: &Client,
    rt: &spoke_api::resource::ResourceType,
    ns: Option<&str>,
    name: &str,
    mut object: Value,
) -> Result<&'static str, Error> {
    if let Some(ns) = ns {
        object["metadata"]["namespace"] = Value::String(ns.to_string());
    }
    match client.create(&rt.collection_path(ns), &object).await {
        Ok(_) => return Ok("created"),
        Err(e) if e.code() == Some(409) => {}
        Err(e) => return Err(e),
    }
    // It exists: replace it at the version we read, retrying if someone
    // else wrote in between.
    for _ in 0..5 {
        let current: Value = client.get(&rt.object_path(ns, name)).await?;
        let mut next = object.clone();
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        let same = ["spec", "data"]
            .iter()
            .all(|f| next.get(*f) == current.get(*f))
            && next.pointer("/metadata/labels") == current.pointer("/metadata/labels");
        if same {
            return Ok("unchanged");
        }
        match client.replace(&rt.object_path(ns, name), &next).await {
            Ok(_) => return Ok("configured"),
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Config(
        "gave up after repeated conflicting writes".into(),
    ))
}

/// An API error with each invalid field on its own line.
pub(crate) fn explain(e: &Error) -> String {
    match e {
        Error::Api(status) => match &status.details {
            Some(d) if !d.causes.is_empty() => d
                .causes
                .iter()
                .map(|c| {
                    if c.field.is_empty() {
                        c.message.clone()
                    } else {
                        format!("{}: {}", c.field, c.message)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => status.message.clone(),
        },
        other => other.to_string(),
    }
}
