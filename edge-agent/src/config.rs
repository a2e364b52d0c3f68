//! The agent's configuration: one clap struct for flags and the YAML config file alike.
//!
//! The config file's keys mirror the flags (`data-dir: /var/lib/spoke-agent`).
//! It is turned into flags placed before the real command line and everything
//! is parsed once, so flags on the command line win.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::node::Thresholds;
use crate::pods::lifecycle::Backoff;
use crate::sync::Connection;

/// Runs this board's Wasm pods for a Spoke hub, and keeps them running when
/// the hub is unreachable.
#[derive(Debug, Clone, Parser)]
#[command(name = "spoke-agent", version, args_override_self = true)]
pub struct Config {
    /// The hub: its API (https://HOST:PORT) to join with --join-token, or
    /// its MQTT broker (mqtts://HOST[:PORT], or mqtt:// for plain MQTT).
    /// Not needed once the board has joined: the credentials file in the
    /// data dir names the broker.
    #[arg(long, value_name = "URL")]
    pub hub: Option<String>,

    /// A bootstrap token (`spoke token create NAME --role bootstrap --ttl
    /// 1h`) to exchange for this node's credentials at the hub's API
    /// (--hub https://...). Used once: the credentials are kept in the data
    /// dir (credentials.json, mode 0600).
    #[arg(
        long,
        alias = "token",
        value_name = "TOKEN",
        env = "SPOKE_AGENT_JOIN_TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,

    /// The hub's CA certificate (PEM; tls/ca.crt in the hub's data dir), to
    /// verify its API when joining and its broker (mqtts://).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// This node's name: a DNS-1123 subdomain (lower-case letters, digits,
    /// '-' and '.'), unique in the fleet. Also the MQTT client id
    /// (`spoke-agent-NAME`) and the topic prefix `spoke/v1/nodes/NAME/`.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Where the agent keeps its state, modules, compiled code and pod logs.
    /// Default: $HOME/.spoke/agent, or /var/lib/spoke-agent without HOME.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// A YAML file whose keys are these options' long names
    /// (e.g. `hub: mqtt://10.0.0.1:1883`). Flags on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How many pods this node reports it can run (its `pods` capacity).
    #[arg(long, value_name = "N", default_value_t = 110)]
    pub max_pods: u32,

    /// User name for the broker, when it requires one.
    #[arg(long, value_name = "USER", requires = "mqtt_password")]
    pub mqtt_username: Option<String>,

    /// Password for the broker. Prefer the config file or the environment
    /// variable over the command line, where other users can see it.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SPOKE_AGENT_MQTT_PASSWORD",
        hide_env_values = true,
        requires = "mqtt_username"
    )]
    pub mqtt_password: Option<String>,

    /// First delay before restarting a crashed container or retrying a failed
    /// pull (e.g. 10s, 500ms); it doubles after each failure.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub restart_backoff_initial: Duration,

    /// A directory under which pods may mount `hostPath` volumes (repeat for
    /// more; in the config file, a list). Default: none, so every hostPath
    /// is refused.
    #[arg(long = "allow-host-path", value_name = "PREFIX")]
    pub allow_host_path: Vec<PathBuf>,

    /// The address of this board at which pods may listen on their
    /// `containerPort`s (e.g. 192.168.1.20); given to them as
    /// SPOKE_LISTEN_ADDRESS and used by tcpSocket/httpGet probes. Default:
    /// any address of the board (pods bind 0.0.0.0), probes use 127.0.0.1.
    #[arg(long, value_name = "IP")]
    pub pod_address: Option<std::net::IpAddr>,

    /// Hard eviction thresholds as the kubelet's, `SIGNAL<VALUE` (repeat,
    /// or separate with commas; in the config file, a list): signals
    /// `memory.available`, `nodefs.available` (the data dir's file system),
    /// `nodefs.inodesFree` and `pid.available`, each an amount or a
    /// percentage. Below one, the node reports MemoryPressure,
    /// DiskPressure or PIDPressure. Entries replace the defaults of their
    /// signal only: memory.available<100Mi, nodefs.available<10%,
    /// nodefs.inodesFree<5%, pid.available<5%.
    #[arg(long, value_name = "SIGNAL<VALUE", value_delimiter = ',')]
    pub eviction_hard: Vec<String>,

    /// How long a pressure condition stays True after the readings are
    /// fine again (as the kubelet's flag of the same name).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub eviction_pressure_transition_period: Duration,

    /// Longest restart/pull back-off (e.g. 5m).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub restart_backoff_max: Duration,

    /// MQTT keepalive: an idle board sends one ping this often, and the
    /// broker gives up on a silent connection after 1.5 times this (then
    /// publishes the board's last will). Shorter finds a dead link sooner;
    /// longer costs fewer bytes on a metered link (docs/protocol.md,
    /// "Presence"). Whole seconds, 5s to 18h.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,

    /// How long a lease renewal holds (renewed every quarter of it while
    /// connected). The hub marks the node NotReady when its lease runs out,
    /// even if the broker still shows the board online.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How many nice levels below the agent a spinning guest runs, so that
    /// the agent and pods that wake up preempt it at once (docs/runtime.md,
    /// "CPU"). 0 runs every guest at the agent's priority. Needs permission
    /// to put a thread's priority back: root, or `LimitNICE=+0` in the
    /// systemd unit (the shipped unit has it).
    #[arg(long, value_name = "N", default_value_t = crate::runtime::priority::DEFAULT_GUEST_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub guest_nice: i32,
}

/// Why the configuration was refused. Each message names the option.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags could not be parsed (or `--help`/`--version` was asked for).
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
    /// Parses the process arguments (with `argv[0]`) and the config file they
    /// name, then validates.
    pub fn load<I, T>(args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let file_flags = match spoke_api::config::config_path(&args) {
            Some(path) => file_flags(&path)?,
            None => Vec::new(),
        };
        let config = Config::try_parse_from(spoke_api::config::merge(&args, file_flags))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Error> {
        spoke_api::validation::dns1123_subdomain(&self.name).map_err(|message| Error::Invalid {
            option: "name",
            message,
        })?;
        if let Some(hub) = &self.hub
            && !crate::identity::is_api_url(hub)
        {
            Connection::parse_url(hub).map_err(|e| Error::Invalid {
                option: "hub",
                message: e.to_string(),
            })?;
        }
        if self.restart_backoff_initial.is_zero() {
            return Err(Error::Invalid {
                option: "restart-backoff-initial",
                message: "must be more than zero".into(),
            });
        }
        if self.restart_backoff_max < self.restart_backoff_initial {
            return Err(Error::Invalid {
                option: "restart-backoff-max",
                message: "must not be less than --restart-backoff-initial".into(),
            });
        }
        if let Some(p) = self.allow_host_path.iter().find(|p| {
            !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir)
        }) {
            return Err(Error::Invalid {
                option: "allow-host-path",
                message: format!("{} must be an absolute path without '..'", p.display()),
            });
        }
        if self.keepalive < Duration::from_secs(5)
            || self.keepalive > Duration::from_secs(u64::from(u16::MAX))
            || self.keepalive.subsec_nanos() != 0
        {
            return Err(Error::Invalid {
                option: "keepalive",
                message: "must be whole seconds from 5s to 18h12m15s (MQTT's limit)".into(),
            });
        }
        if self.lease_duration < Duration::from_secs(4) || self.lease_duration.subsec_nanos() != 0 {
            return Err(Error::Invalid {
                option: "lease-duration",
                message: "must be whole seconds, at least 4s".into(),
            });
        }
        Thresholds::parse(
            &self.eviction_hard,
            self.eviction_pressure_transition_period,
        )
        .map_err(|message| Error::Invalid {
            option: "eviction-hard",
            message,
        })?;
        if self.max_pods == 0 {
            return Err(Error::Invalid {
                option: "max-pods",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The data dir, with its default.
    pub fn data_dir(&self) -> PathBuf {
        match (&self.data_dir, std::env::var_os("HOME")) {
            (Some(d), _) => d.clone(),
            (None, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".spoke/agent"),
            (None, _) => PathBuf::from("/var/lib/spoke-agent"),
        }
    }

    /// The pressure thresholds (validated by [`Config::load`]).
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::parse(
            &self.eviction_hard,
            self.eviction_pressure_transition_period,
        )
        .unwrap_or_default()
    }

    /// Restart and pull back-off.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.restart_backoff_initial,
            max: self.restart_backoff_max,
        }
    }
}

/// The value of `--config` on the command line, found before clap runs.
fn file_flags(path: &std::path::Path) -> Result<Vec<String>, Error> {
    let err = |message: String| Error::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    spoke_api::config::yaml_to_flags(&text).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, Error> {
        Config::load(std::iter::once("spoke-agent").chain(args.iter().copied()))
    }

    #[test]
    fn flags_parse_with_defaults() {
        let c = load(&["--hub", "mqtt://127.0.0.1:1883", "--name", "pi-1"]).unwrap();
        assert_eq!(c.name, "pi-1");
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.backoff(), Backoff::default());
        assert_eq!(c.keepalive, Duration::from_secs(60));
        assert_eq!(c.lease_duration, Duration::from_secs(3600));
        assert_eq!(c.guest_nice, 10);
        assert_eq!(c.hub.as_deref(), Some("mqtt://127.0.0.1:1883"));
        let c = load(&[
            "--hub",
            "https://10.0.0.1:6443",
            "--token",
            "t.s",
            "--name",
            "pi-1",
        ])
        .unwrap();
        assert_eq!(c.join_token.as_deref(), Some("t.s"));
        assert!(
            c.allow_host_path.is_empty(),
            "no hostPath is allowed by default"
        );
    }

    #[test]
    fn the_config_file_supplies_flags_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.yaml");
        std::fs::write(
            &file,
            "hub: mqtt://10.0.0.1:1883\nname: from-file\nmax_pods: 7\nrestart-backoff-initial: 1s\nallow-host-path: [/srv/a, /srv/b]\neviction-hard: [\"nodefs.available<100%\", \"memory.available<1Gi\"]\n",
        )
        .unwrap();
        let c = load(&["--config", file.to_str().unwrap(), "--name", "pi-2"]).unwrap();
        assert_eq!(c.name, "pi-2");
        assert_eq!(
            c.allow_host_path,
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(c.hub.as_deref(), Some("mqtt://10.0.0.1:1883"));
        assert_eq!(c.max_pods, 7);
        assert_eq!(c.restart_backoff_initial, Duration::from_secs(1));
        let t = c.thresholds();
        assert_eq!(t.nodefs_available, crate::node::Threshold::Percent(100.0));
        assert_eq!(t.memory_available, crate::node::Threshold::Amount(1 << 30));
        assert_eq!(t.transition_period, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        let cases: [(&[&str], &str); 12] = [
            (
                &["--hub", "mqtt://h", "--name", "pi", "--keepalive", "2s"],
                "--keepalive",
            ),
            (
                &["--hub", "mqtt://h", "--name", "pi", "--guest-nice", "20"],
                "--guest-nice",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--keepalive",
                    "30500ms",
                ],
                "--keepalive",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--lease-duration",
                    "1s",
                ],
                "--lease-duration",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--allow-host-path",
                    "srv",
                ],
                "--allow-host-path",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--allow-host-path",
                    "/srv/../etc",
                ],
                "--allow-host-path",
            ),
            (&["--hub", "mqtt://h", "--name", "Pi_1"], "--name"),
            (&["--hub", "ftp://h", "--name", "pi"], "--hub"),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--restart-backoff-initial",
                    "soon",
                ],
                "--restart-backoff-initial",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--restart-backoff-max",
                    "1s",
                ],
                "--restart-backoff-max",
            ),
            (
                &["--hub", "mqtt://h", "--name", "pi", "--mqtt-username", "u"],
                "--mqtt-password",
            ),
            (
                &[
                    "--hub",
                    "mqtt://h",
                    "--name",
                    "pi",
                    "--eviction-hard",
                    "memory.available<100Mi,disk<3%",
                ],
                "--eviction-hard",
            ),
        ];
        for (args, option) in cases {
            let e = load(args).unwrap_err().to_string();
            assert!(e.contains(option), "{args:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "[1, 2]").unwrap();
        let e = load(&["--config", file.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--config"), "{e}");
    }
}
