//! `spoke create -f FILE` (create only; an existing object is an error, as
//! in kubectl) and `spoke create deployment NAME --image=MODULE`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use serde_json::{Value, json};
use spoke_api::resource::ResourceType;
use spoke_client::Client;

use crate::get::qualified;
use crate::manifest;

#[derive(clap::Subcommand)]
pub enum What {
    /// A Deployment running one container of MODULE.
    Deployment {
        name: String,
        /// The Wasm module (name:tag, sha256:..., a URL or an OCI reference).
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 1)]
        replicas: i64,
    },
}

/// Creates every document of `files`; fails (exit 1) if any failed.
pub async fn from_files(
    client: &Client,
    default_ns: &str,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    manifest::for_each(files, async |doc| {
        let name = doc.name();
        let ns = doc.rt.namespaced.then(|| doc.namespace(default_ns));
        let mut object = doc.object;
        if let Some(ns) = &ns {
            object["metadata"]["namespace"] = json!(ns);
        }
        match client
            .create(&doc.rt.collection_path(ns.as_deref()), &object)
            .await
        {
            Ok(created) => Ok(format!(
                "{} created",
                qualified(
                    doc.rt,
                    created["metadata"]["name"].as_str().unwrap_or(&name)
                )
            )),
            Err(e) => Err(format!(
                "{} ({}): {}",
                doc.source,
                qualified(doc.rt, &name),
                crate::apply::explain(&e)
            )),
        }
    })
    .await
}

/// The container name kubectl derives from an image: its last path
/// segment without tag or digest (`ghcr.io/acme/web:v1` → `web`).
fn container_name(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let base = last.split(['@', ':']).next().unwrap_or(last);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() || clean == "sha256" {
        "main".into()
    } else {
        clean
    }
}

/// The Deployment `spoke create deployment` makes.
pub fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": container_name(image), "image": image}]},
            },
        },
    })
}

pub async fn run(client: &Client, ns: &str, what: What) -> anyhow::Result<()> {
    match what {
        What::Deployment {
            name,
            image,
            replicas,
        } => {
            if replicas < 0 {
                return Err(anyhow!("--replicas must be 0 or more, not {replicas}"));
            }
            let rt = ResourceType::lookup("deployments").expect("known kind");
            client
                .create(
                    &rt.collection_path(Some(ns)),
                    &deployment(&name, &image, replicas),
                )
                .await?;
            println!("{} created", qualified(rt, &name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_come_from_the_module_reference() {
        assert_eq!(container_name("hello:v1"), "hello");
        assert_eq!(container_name("ghcr.io/acme/web_app:v1"), "web-app");
        assert_eq!(container_name("sha256:abcd"), "main");
        assert_eq!(
            container_name("https://example.com/m/hello.wasm"),
            "hello-wasm"
        );
        let d = deployment("web", "hello:v1", 2);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["name"],
            "hello"
        );
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    }
}
