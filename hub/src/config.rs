//! The hub's configuration: one struct, filled from flags, environment
//! variables and an optional YAML file whose keys mirror the flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spoke_api::broker::BrokerUrl;

/// spoke-hub: the control plane of a Spoke fleet.
///
/// With no options it starts everything on this machine: the API on
/// 127.0.0.1:6443, an embedded MQTT broker on 127.0.0.1:1883, and its store in
/// ~/.spoke/hub. It writes a CLI config to ~/.spoke/config so that `spoke`
/// finds it.
#[derive(Parser, Debug, Clone)]
#[command(name = "spoke-hub", version, args_override_self = true)]
pub struct Config {
    /// YAML file whose keys are the long options below (for example
    /// `data-dir: /var/lib/spoke-hub`). Options given on the command line win.
    #[arg(long, env = "SPOKE_HUB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the store (store.redb) and the module store (modules/).
    #[arg(long, env = "SPOKE_HUB_DATA_DIR", value_name = "DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// Address of the API (HTTPS, with a certificate from the hub's own CA).
    #[arg(
        long,
        env = "SPOKE_HUB_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:6443"
    )]
    pub listen: SocketAddr,

    /// Extra name or IP address for the API's server certificate (repeat for
    /// more). localhost, 127.0.0.1, ::1, the host name and the listen address
    /// are always in it.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,

    /// Serve the API over plain HTTP instead of HTTPS. For development on
    /// loopback only: tokens then cross the network in clear.
    #[arg(long)]
    pub insecure_http: bool,

    /// Address of the embedded MQTT broker that agents connect to. It
    /// serves MQTT over TLS (certificate from the hub's CA) unless
    /// --mqtt-insecure is given.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,

    /// Serve the embedded broker in clear (plain MQTT) instead of TLS:
    /// node passwords and desired state (Secrets included) then cross the
    /// network unencrypted.
    #[arg(long)]
    pub mqtt_insecure: bool,

    /// Use this external MQTT broker (mqtts://host:port, or mqtt:// for
    /// plain MQTT) instead of the embedded one.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,

    /// The hub's user name at the external broker (see `spoke-hub
    /// mosquitto-config`).
    #[arg(long, value_name = "USER", requires = "mqtt_password")]
    pub mqtt_username: Option<String>,

    /// The hub's password at the external broker.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SPOKE_HUB_MQTT_PASSWORD",
        hide_env_values = true,
        requires = "mqtt_username"
    )]
    pub mqtt_password: Option<String>,

    /// CA certificate (PEM) that signs an external mqtts:// broker's
    /// certificate. Default: the hub's own CA.
    #[arg(long, value_name = "FILE")]
    pub mqtt_ca: Option<PathBuf>,

    /// With an external Mosquitto (--mqtt-url): keep Mosquitto's password
    /// file, ACL file and a config fragment (spoke.conf) in this directory,
    /// rewritten on every join and revocation, and connect as the hub user
    /// written there. Include it from mosquitto.conf with `include_dir DIR`.
    #[arg(long, value_name = "DIR", requires = "mqtt_url")]
    pub mosquitto_dir: Option<PathBuf>,

    /// Mosquitto's pid file (its `pid_file` option): the hub sends SIGHUP
    /// there after rewriting --mosquitto-dir, so Mosquitto reloads it.
    #[arg(long, value_name = "FILE", requires = "mosquitto_dir")]
    pub mosquitto_pid_file: Option<PathBuf>,

    /// The broker URL given to joining boards. Default: the embedded
    /// broker's address, or --mqtt-url.
    #[arg(long, value_name = "URL")]
    pub mqtt_public_url: Option<String>,

    /// How long an agent may be disconnected before its node is marked NotReady.
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_grace: Duration,

    /// Where to write the CLI config (kubeconfig-shaped) that points `spoke` at this hub.
    #[arg(long, value_name = "FILE", default_value_os_t = default_client_config())]
    pub client_config: PathBuf,

    /// Do not write the CLI config file.
    #[arg(long)]
    pub no_client_config: bool,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn default_data_dir() -> PathBuf {
    home()
        .map(|h| h.join(".spoke/hub"))
        .unwrap_or_else(|| "/var/lib/spoke-hub".into())
}

fn default_client_config() -> PathBuf {
    home()
        .map(|h| h.join(".spoke/config"))
        .unwrap_or_else(|| "spoke-config.yaml".into())
}

/// A configuration problem, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Args(#[from] clap::Error),
    #[error("--config {path}: {message}")]
    File { path: String, message: String },
    #[error("--{option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

impl Config {
    /// Parses the command line, then the config file it names (if any), with
    /// the command line taking precedence.
    pub fn load(args: Vec<std::ffi::OsString>) -> Result<Config, Error> {
        let path = spoke_api::config::config_path(&args).or_else(|| {
            std::env::var_os("SPOKE_HUB_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let file_flags = match &path {
            None => Vec::new(),
            Some(path) => {
                let file_err = |message: String| Error::File {
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
                spoke_api::config::yaml_to_flags(&text).map_err(|e| file_err(e.to_string()))?
            }
        };
        let config = Config::try_parse_from(spoke_api::config::merge(&args, file_flags))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        for (option, url) in [
            ("mqtt-url", &self.mqtt_url),
            ("mqtt-public-url", &self.mqtt_public_url),
        ] {
            if let Some(url) = url
                && let Err(message) = spoke_api::broker::BrokerUrl::parse(url)
            {
                return Err(Error::Invalid { option, message });
            }
        }
        if self.mqtt_url.is_none() && self.mqtt_username.is_some() {
            return Err(Error::Invalid {
                option: "mqtt-username",
                message: "only for an external broker (--mqtt-url); the embedded broker makes the hub's credentials itself".into(),
            });
        }
        for san in &self.tls_sans {
            if rustls::pki_types::ServerName::try_from(san.as_str()).is_err() {
                return Err(Error::Invalid {
                    option: "tls-san",
                    message: format!("\"{san}\" is neither a DNS name nor an IP address"),
                });
            }
        }
        if self.node_grace < Duration::from_secs(1) {
            return Err(Error::Invalid {
                option: "node-grace",
                message: "must be at least 1s".into(),
            });
        }
        Ok(())
    }

    /// The broker URL boards use (before the embedded broker has bound
    /// its port; `--mqtt-public-url` wins).
    pub fn broker_url(&self) -> String {
        if let Some(url) = self.mqtt_public_url.as_ref().or(self.mqtt_url.as_ref()) {
            return BrokerUrl::parse(url).map_or_else(|_| url.clone(), |u| u.to_string());
        }
        let scheme = if self.mqtt_insecure { "mqtt" } else { "mqtts" };
        format!("{scheme}://{}", self.mqtt_listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        std::iter::once("spoke-hub")
            .chain(list.iter().copied())
            .map(Into::into)
            .collect()
    }

    #[test]
    fn defaults_need_no_options() {
        let c = Config::load(args(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6443");
        assert_eq!(c.broker_url(), "mqtts://127.0.0.1:1883");
        assert!(!c.mqtt_insecure);
        let c = Config::load(args(&["--mqtt-insecure"])).unwrap();
        assert_eq!(c.broker_url(), "mqtt://127.0.0.1:1883");
        assert_eq!(c.node_grace, Duration::from_secs(40));
        assert!(!c.insecure_http && c.tls_sans.is_empty());
    }

    #[test]
    fn the_file_sets_options_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.yaml");
        std::fs::write(
            &file,
            "data-dir: /srv/spoke\nlisten: 0.0.0.0:7000\nnode_grace: 2m\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Config::load(args(&["--config", f, "--listen", "127.0.0.1:7001"])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/spoke"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.node_grace, Duration::from_secs(120));
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = Config::load(args(&["--mqtt-url", "http://x"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--mqtt-url:"), "{e}");
        let e = Config::load(args(&["--mqtt-username", "u", "--mqtt-password", "p"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--mqtt-username:"), "{e}");
        let e = Config::load(args(&["--listen", "nowhere"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen"), "{e}");
        let e = Config::load(args(&["--tls-san", "hub.example", "--tls-san", "bad name"]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--tls-san:") && e.contains("bad name"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hub.yaml");
        std::fs::write(&file, "no-such-option: 1\n").unwrap();
        let e = Config::load(args(&["--config", file.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-option"), "{e}");
    }
}
