//! spoke-hub: the API server, store, scheduler, edge sync, module store and
//! embedded MQTT broker of a Spoke fleet.
//!
//! [`run`] starts everything from a [`config::Config`]; `main.rs` only parses
//! the command line and calls it.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod controllers;
pub mod events;
pub mod modules;
pub mod scheduler;
pub mod store;
pub mod sync;
pub mod tls;

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

    let tokens = auth::tokens::Tokens::new(store.clone());
    let admin_token = auth::admin_token(&tokens, &config.data_dir.join("admin.token")).await?;
    let audit_path = config.data_dir.join("audit.log");
    let audit = auth::audit::Log::open(&audit_path)
        .await
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let local = listener.local_addr()?;
    let tls = if config.insecure_http {
        if !local.ip().is_loopback() {
            tracing::warn!(
                listen = %local,
                "--insecure-http on a non-loopback address: tokens and objects cross the network in clear"
            );
        }
        None
    } else {
        let dir = config.data_dir.join("tls");
        let names = tls::names(local, &config.tls_sans);
        Some(
            tls::load_or_create(&dir, &names)
                .with_context(|| format!("cannot set up TLS in {}", dir.display()))?,
        )
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let api_url = format!("{scheme}://{}", reachable(local));
    if !config.no_client_config {
        let client = ClientConfig {
            api_url: &api_url,
            ca_pem: tls.as_ref().map(|t| t.ca_pem.as_str()),
            token: admin_token.as_deref(),
        };
        write_client_config(&config.client_config, &client).with_context(|| {
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
    let app = auth::protect(app, auth::Auth { tokens, audit });
    match tls {
        Some(tls) => {
            let listener = tls::Listener::new(listener, tls.server)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    tracing::info!("spoke-hub stopped");
    Ok(())
}

fn print_banner(config: &Config, api_url: &str, broker_url: &str, store_path: &std::path::Path) {
    let broker_kind = if config.mqtt_url.is_some() {
        "external"
    } else {
        "embedded"
    };
    let ca_flag = if config.insecure_http {
        String::new()
    } else {
        format!(
            " --certificate-authority {}",
            config.data_dir.join("tls/ca.crt").display()
        )
    };
    let by_hand = format!(
        "spoke --server {api_url}{ca_flag} --token $(cat {})",
        config.data_dir.join("admin.token").display()
    );
    let cli = if config.no_client_config {
        by_hand
    } else {
        format!(
            "written to {} (or: export SPOKE_CONFIG=<that file>, or {by_hand})",
            config.client_config.display()
        )
    };
    let tls = if config.insecure_http {
        "none: plain HTTP (--insecure-http)".to_string()
    } else {
        format!("CA {}", config.data_dir.join("tls/ca.crt").display())
    };
    eprintln!(
        "spoke-hub {} is up\n  API          {api_url}\n  TLS          {tls}\n  MQTT broker  {broker_url} ({broker_kind})\n  store        {}\n  modules      {}\n  audit log    {}\n  CLI config   {cli}\n  add a board  spoke-agent --hub {broker_url} --name <node-name>",
        env!("CARGO_PKG_VERSION"),
        store_path.display(),
        config.data_dir.join("modules").display(),
        config.data_dir.join("audit.log").display(),
    );
}

/// Where a client on this machine reaches a listener: the loopback
/// address when it listens on all addresses.
fn reachable(local: std::net::SocketAddr) -> std::net::SocketAddr {
    match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            (std::net::Ipv4Addr::LOCALHOST, local.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, local.port()).into()
        }
        _ => local,
    }
}

/// What the CLI config tells the `spoke` CLI.
struct ClientConfig<'a> {
    api_url: &'a str,
    /// The CA to trust (PEM); `None` for plain HTTP.
    ca_pem: Option<&'a str>,
    /// The admin token; `None` if the kept one was revoked.
    token: Option<&'a str>,
}

/// Writes a kubeconfig-shaped file that points the `spoke` CLI at this hub,
/// readable by its owner only (it holds the admin token).
fn write_client_config(path: &std::path::Path, client: &ClientConfig<'_>) -> anyhow::Result<()> {
    use base64::Engine as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut cluster = json!({"server": client.api_url});
    if let Some(ca) = client.ca_pem {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let user = match client.token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "spoke", "cluster": cluster}],
        "users": [{"name": auth::ADMIN_TOKEN, "user": user}],
        "contexts": [{"name": "spoke", "context": {"cluster": "spoke", "user": auth::ADMIN_TOKEN, "namespace": "default"}}],
        "current-context": "spoke",
    });
    tls::write_private(path, serde_yaml::to_string(&doc)?.as_bytes())?;
    Ok(())
}
