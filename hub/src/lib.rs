//! spoke-hub: the API server, store, scheduler, edge sync, module store and
//! embedded MQTT broker of a Spoke fleet.
//!
//! [`run`] starts everything from a [`config::Config`]; `main.rs` only parses
//! the command line and calls it.

pub mod api;
pub mod broker;
pub mod config;
pub mod controllers;
pub mod events;
pub mod modules;
pub mod scheduler;
pub mod store;
pub mod sync;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::json;
use spoke_api::resource::ResourceType;

use crate::config::Config;
use crate::store::{RedbBackend, Store};

/// Namespaces that always exist.
pub const SYSTEM_NAMESPACES: [&str; 2] = ["default", "spoke-system"];

/// Runs the hub until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store_path = config.data_dir.join("store.redb");
    let backend = RedbBackend::open(&store_path).with_context(|| {
        format!(
            "cannot open the store {} (is another spoke-hub using this data directory?)",
            store_path.display()
        )
    })?;
    let store = Store::new(backend);
    for ns in SYSTEM_NAMESPACES {
        if store
            .get(&store::key("namespaces", None, ns))
            .await?
            .is_none()
        {
            let rt = ResourceType::lookup("namespaces").expect("namespaces are a known kind");
            api::create_object(&store, rt, None, json!({"metadata": {"name": ns}}))
                .await
                .map_err(|e| anyhow::anyhow!("cannot create namespace {ns}: {e}"))?;
        }
    }
    let modules_dir = config.data_dir.join("modules");
    let modules = Arc::new(
        modules::ModuleStore::open(&modules_dir)
            .with_context(|| format!("cannot open the module store {}", modules_dir.display()))?,
    );

    if config.mqtt_url.is_none() {
        let listen = config.mqtt_listen;
        tokio::task::spawn_blocking(move || broker::start(listen)).await??;
    }
    let broker_url = config.broker_url();
    let sync = sync::start(
        sync::Settings {
            broker_url: broker_url.clone(),
            node_grace: config.node_grace,
        },
        store.clone(),
        modules.clone(),
    )
    .await?;
    tokio::spawn(scheduler::run(store.clone()));
    controllers::spawn(store.clone());
    controllers::spawn_workloads(store.clone());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    if !config.no_client_config {
        write_client_config(&config.client_config, &api_url).with_context(|| {
            format!(
                "cannot write the CLI config {}",
                config.client_config.display()
            )
        })?;
    }
    print_banner(&config, &api_url, &broker_url, &store_path);

    let app = api::router(api::State {
        store,
        modules,
        sync,
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!("spoke-hub stopped");
    Ok(())
}

fn print_banner(config: &Config, api_url: &str, broker_url: &str, store_path: &std::path::Path) {
    let broker_kind = if config.mqtt_url.is_some() {
        "external"
    } else {
        "embedded"
    };
    let cli = if config.no_client_config {
        format!("spoke --server {api_url} ...")
    } else {
        format!(
            "written to {} (or: export SPOKE_CONFIG=<that file>, or spoke --server {api_url})",
            config.client_config.display()
        )
    };
    eprintln!(
        "spoke-hub {} is up\n  API          {api_url}\n  MQTT broker  {broker_url} ({broker_kind})\n  store        {}\n  modules      {}\n  CLI config   {cli}\n  add a board  spoke-agent --hub {broker_url} --name <node-name>",
        env!("CARGO_PKG_VERSION"),
        store_path.display(),
        config.data_dir.join("modules").display(),
    );
}

/// Writes a kubeconfig-shaped file that points the `spoke` CLI at this hub.
fn write_client_config(path: &std::path::Path, api_url: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "spoke", "cluster": {"server": api_url}}],
        "users": [{"name": "admin", "user": {}}],
        "contexts": [{"name": "spoke", "context": {"cluster": "spoke", "user": "admin", "namespace": "default"}}],
        "current-context": "spoke",
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&doc)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
