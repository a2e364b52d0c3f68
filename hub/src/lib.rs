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
pub mod mosquitto;
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

/// Raises the soft limit on open files to the hard limit. Every connected
/// board holds a socket, two more through the embedded broker's TLS relay
/// (relay and broker ends), so a fleet of a few thousand boards passes the
/// usual soft limit of 1024 long before memory or CPU run out; the hard
/// limit is what the operator allows. Logged, never fatal.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current == cur.maximum {
        return;
    }
    let raised = Rlimit {
        current: cur.maximum,
        maximum: cur.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = cur.current.unwrap_or(u64::MAX),
            to = cur.maximum.unwrap_or(u64::MAX),
            "raised the open-file limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

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

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let local = listener.local_addr()?;
    if config.insecure_http && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "--insecure-http on a non-loopback address: tokens and objects cross the network in clear"
        );
    }
    // The hub's CA and server certificate serve HTTPS and MQTT over TLS.
    let material = if config.insecure_http && config.mqtt_insecure {
        None
    } else {
        let dir = config.data_dir.join("tls");
        let names = tls::names(local, &config.tls_sans);
        Some(
            tls::load_or_create(&dir, &names)
                .with_context(|| format!("cannot set up TLS in {}", dir.display()))?,
        )
    };
    let tls = material.as_ref().filter(|_| !config.insecure_http);

    let credentials = auth::join::NodeCredentials::new(store.clone());
    let (broker, broker_url, access) = mqtt(&config, material.as_ref(), &credentials).await?;
    // Boards verify an external mqtts:// broker with the CA the hub uses.
    let board_ca = access.ca_pem.clone();
    let sync = sync::start(
        sync::Settings {
            broker_url: broker.as_ref().map_or_else(
                || config.mqtt_url.clone().unwrap_or_default(),
                |b| format!("mqtt://{}", b.internal),
            ),
            node_grace: config.node_grace,
            access,
        },
        store.clone(),
        modules.clone(),
    )
    .await?;
    tokio::spawn(auth::join::revoke_deleted_nodes(
        credentials.clone(),
        move |node| {
            if let Some(broker) = broker.clone() {
                tokio::spawn(async move { broker.kick(&node).await });
            }
        },
    ));
    tokio::spawn(scheduler::run(store.clone()));
    controllers::spawn(store.clone());
    controllers::spawn_workloads(store.clone());

    let tokens = auth::tokens::Tokens::new(store.clone());
    let admin_token = auth::admin_token(&tokens, &config.data_dir.join("admin.token")).await?;
    let audit_path = config.data_dir.join("audit.log");
    let audit = auth::audit::Log::open(&audit_path)
        .await
        .with_context(|| format!("cannot open the audit log {}", audit_path.display()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let api_url = format!("{scheme}://{}", reachable(local));
    if !config.no_client_config {
        let client = ClientConfig {
            api_url: &api_url,
            ca_pem: tls.map(|t| t.ca_pem.as_str()),
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
    let join = auth::join::Join {
        credentials,
        broker_url: broker_url.clone(),
        ca_pem: board_ca.or_else(|| material.as_ref().map(|m| m.ca_pem.clone())),
    };
    let app = auth::protect(
        app,
        auth::Auth {
            tokens,
            audit,
            join,
        },
    );
    match tls {
        Some(tls) => {
            let listener = tls::Listener::new(listener, tls.server.clone())?;
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

/// Starts the embedded broker, or reads how to reach the external one.
/// Returns the broker (if embedded), the URL boards are given, and the
/// hub client's access.
async fn mqtt(
    config: &Config,
    material: Option<&tls::Material>,
    credentials: &auth::join::NodeCredentials,
) -> anyhow::Result<(Option<broker::Broker>, String, sync::connect::Access)> {
    if config.mqtt_url.is_none() {
        let settings = broker::Settings {
            listen: config.mqtt_listen,
            tls: material
                .filter(|_| !config.mqtt_insecure)
                .map(|m| m.mqtt.clone()),
        };
        // Kept in the data dir (0600) so that an operator can watch the
        // broker as the hub (`mosquitto_sub -u _spoke-hub`), as with Mosquitto.
        let password = broker::hub_password(&config.data_dir.join("mqtt-hub.password"))?;
        let broker = broker::start(settings, credentials.clone(), password).await?;
        let scheme = if config.mqtt_insecure {
            "mqtt"
        } else {
            "mqtts"
        };
        let url = match &config.mqtt_public_url {
            Some(url) => url.clone(),
            None => {
                if broker.public.ip().is_unspecified() {
                    tracing::warn!(
                        "--mqtt-listen {} on all addresses: joining boards are told to use loopback; give --mqtt-public-url mqtts://HUB-ADDRESS:{}",
                        broker.public,
                        broker.public.port()
                    );
                }
                format!("{scheme}://{}", reachable(broker.public))
            }
        };
        let access = sync::connect::Access {
            credentials: Some((broker::HUB_USER.to_string(), broker.hub_password.clone())),
            ca_pem: None,
        };
        return Ok((Some(broker), url, access));
    }
    let ca_pem = match &config.mqtt_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --mqtt-ca {}", path.display()))?,
        ),
        None => material.map(|m| m.ca_pem.clone()),
    };
    let mut credentials_at_broker = config
        .mqtt_username
        .clone()
        .zip(config.mqtt_password.clone());
    if let Some(dir) = &config.mosquitto_dir {
        let file = config.data_dir.join("mqtt-hub.password");
        let password = broker::hub_password(&file).with_context(|| {
            format!("cannot keep the hub's MQTT password in {}", file.display())
        })?;
        let files = mosquitto::Files {
            dir: dir.clone(),
            pid_file: config.mosquitto_pid_file.clone(),
        };
        let hub_hash = mosquitto::password_hash(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
        // Written once before the hub connects, so Mosquitto can start with them.
        files
            .write(credentials, &hub_hash)
            .await
            .with_context(|| format!("cannot write the Mosquitto files in {}", dir.display()))?;
        tokio::spawn(mosquitto::keep_current(
            files,
            credentials.store().clone(),
            credentials.clone(),
            hub_hash,
        ));
        credentials_at_broker.get_or_insert((broker::HUB_USER.to_string(), password));
    }
    let access = sync::connect::Access {
        credentials: credentials_at_broker,
        ca_pem,
    };
    Ok((None, config.broker_url(), access))
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
    let join_ca = if config.insecure_http {
        String::new()
    } else {
        format!(" --ca {}", config.data_dir.join("tls/ca.crt").display())
    };
    let tls = if config.insecure_http {
        "none: plain HTTP (--insecure-http)".to_string()
    } else {
        format!("CA {}", config.data_dir.join("tls/ca.crt").display())
    };
    eprintln!(
        "spoke-hub {} is up\n  API          {api_url}\n  TLS          {tls}\n  MQTT broker  {broker_url} ({broker_kind})\n  store        {}\n  modules      {}\n  audit log    {}\n  CLI config   {cli}\n  add a board  spoke token create join-1 --role bootstrap --ttl 1h, then on the board:\n               spoke-agent join --hub {api_url}{join_ca} --token <token> --name <node-name>",
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
