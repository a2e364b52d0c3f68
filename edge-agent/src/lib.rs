//! The Spoke edge agent: keeps a board's Wasm pods running, with or without the hub.
//!
//! Layout: [`config`] (flags and config file), [`identity`] (joining,
//! credentials, TLS), [`state`] (local redb),
//! [`sync`] (MQTT to the hub), [`modules`] (module cache and fetching),
//! [`runtime`] (wasmtime), [`pods`] (lifecycle, supervisor, logs), [`node`]
//! (what the board reports). [`run`] wires them together; `main.rs` only
//! parses config and waits for a signal.

pub mod config;
pub mod identity;
pub mod modules;
pub mod node;
pub mod pods;
pub mod runtime;
pub mod state;
pub mod sync;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

pub use crate::config::Config;

/// How long a clean shutdown waits for the `offline` presence to go out.
const GOODBYE_GRACE: Duration = Duration::from_millis(500);

/// Runs the agent until `shutdown` completes, then stops every pod, flushes
/// the logs and says `offline`.
///
/// The pods of the last acknowledged desired set are started from the local
/// state *before* the hub is contacted, so a board that reboots while the hub
/// is unreachable runs what it was told to run.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data = config.data_dir();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create the data dir {}", data.display()))?;
    let state = Arc::new(
        state::State::open(&data.join("state.redb"))
            .with_context(|| format!("cannot open the local state in {}", data.display()))?,
    );
    let saved = state.load()?;
    let runtime = Arc::new(
        runtime::Runtime::new(&data.join("compiled"))?
            .with_priority(runtime::Priority::new(config.guest_nice)),
    );
    let (outbox, outbox_rx) = modules::Outbox::new();
    let fetcher = Arc::new(modules::Fetcher::new(
        modules::Store::new(&data.join("modules")),
        outbox.clone(),
    ));
    let (supervisor, changes) = pods::Supervisor::new(
        runtime,
        fetcher.clone(),
        state.clone(),
        pods::Settings {
            backoff: config.backoff(),
            logs_dir: data.join("logs"),
            volumes: pods::volumes::Volumes::new(&data.join("volumes"), &config.allow_host_path),
            pod_address: config.pod_address,
        },
    );

    let restored = saved.pods.iter().filter(|p| !p.deleting).count();
    let desired = saved.pods.iter().map(|p| (p.key(), p.clone())).collect();
    supervisor.reconcile(saved.pods).await;
    tracing::info!(
        "spoke-agent {} started: node {}, data dir {}, hub {}, {} pod(s) restored from local state (revision {})",
        env!("CARGO_PKG_VERSION"),
        config.name,
        data.display(),
        config.hub.as_deref().unwrap_or("(from credentials.json)"),
        restored,
        saved.revision,
    );

    let mut watcher = node::Watcher::new(config.max_pods, &data, config.thresholds());
    let (node_tx, node_rx) = tokio::sync::watch::channel(watcher.check());
    let watching = tokio::spawn(watcher.run(node_tx));

    let connection = identity::resolve(&config, &data).await?;
    let (client, mut eventloop) = rumqttc::AsyncClient::new(
        sync::mqtt_options(&connection, &config.name, config.keepalive),
        256,
    );
    sync::tune(&mut eventloop);
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    let mut driver = tokio::spawn(sync::drive(eventloop, inbound_tx));
    let handler = sync::Handler {
        name: config.name.clone(),
        client: client.clone(),
        state,
        supervisor: supervisor.clone(),
        fetcher,
        outbox,
        node: node_rx.borrow().clone(),
        applied: saved.revision,
        desired,
        lease: config.lease_duration,
        persist_failures: 0,
    };
    let handler = tokio::spawn(handler.handle(inbound_rx, changes, outbox_rx, node_rx));

    shutdown.await;
    tracing::info!("shutting down: stopping pods");
    // No new desired state is applied while pods stop.
    handler.abort();
    let _ = handler.await;
    watching.abort();
    supervisor.shutdown().await;
    sync::Handler::goodbye(&client, &config.name).await;
    if tokio::time::timeout(GOODBYE_GRACE, &mut driver)
        .await
        .is_err()
    {
        driver.abort();
    }
    tracing::info!("spoke-agent stopped");
    Ok(())
}
