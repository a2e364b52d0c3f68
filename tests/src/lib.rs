//! Harness for whole-system tests: the real `spoke-hub`, `spoke-agent` and
//! `spoke` binaries as processes on loopback, each with its own data
//! directory. Processes are killed when their handle drops.
//!
//! The binaries must be built first (`cargo build --workspace --bins`; the
//! test script does it), and the example guests too (`examples/build.sh`).

pub mod fleet;
pub mod netns;
pub mod proxy;
pub mod stats;
pub mod tcpinfo;

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use spoke_client::Client;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary: in `SPOKE_BIN_DIR` if set (benchmarks point
/// it at `target/release`), else next to this test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = match std::env::var_os("SPOKE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .to_path_buf(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test does)",
        path.display()
    );
    path
}

/// A module built from `examples/`, such as `hello`.
pub fn example_wasm(name: &str) -> PathBuf {
    let path = repo_root()
        .join("examples/out")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run examples/build.sh before the tests (scripts/test does)",
        path.display()
    );
    path
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed (SIGKILL) on drop, with its stderr in a file.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn");
        Proc { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process now, in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process at once, as `kill -9` would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running hub with an embedded broker, started the default way: HTTPS
/// with its own CA, an admin token, and the CLI config it writes (in its
/// temporary directory) used by [`Hub::client`] and [`Hub::spoke`].
pub struct Hub {
    pub proc: Proc,
    /// `https://127.0.0.1:PORT` (`http://` with `--insecure-http`).
    pub api_url: String,
    /// The broker boards use: `mqtts://127.0.0.1:PORT` for the embedded
    /// broker (`mqtt://` with `--mqtt-insecure`), or the external one.
    pub mqtt_url: String,
    pub dir: tempfile::TempDir,
    /// A bootstrap token (one hour) that [`Hub::agent`] joins boards with.
    pub bootstrap_token: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Hub {
    /// A hub with its embedded broker.
    pub async fn start() -> Hub {
        Hub::start_with(None).await
    }

    /// A hub using an external broker at `broker_url` when given.
    pub async fn start_with(broker_url: Option<&str>) -> Hub {
        Hub::start_full(broker_url, &[], &[]).await
    }

    /// A hub with extra command-line options (such as `--insecure-http`).
    pub async fn start_opts(broker_url: Option<&str>, extra: &[&str]) -> Hub {
        Hub::start_full(broker_url, extra, &[]).await
    }

    /// A hub with extra environment variables (e.g. a test-only fake clock).
    pub async fn start_with_env(broker_url: Option<&str>, env: &[(&str, &str)]) -> Hub {
        Hub::start_full(broker_url, &[], env).await
    }

    /// A hub with extra options and environment variables.
    pub async fn start_full(broker_url: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Hub {
        Hub::start_inner("127.0.0.1", broker_url, extra, env, None).await
    }

    /// A hub with its embedded broker whose API and broker listen on `ip`
    /// (a local address other than loopback, such as the host end of a
    /// [`netns::Netns`] link, so that boards in a namespace reach it).
    pub async fn start_at(ip: std::net::Ipv4Addr, extra: &[&str]) -> Hub {
        Hub::start_inner(&ip.to_string(), None, extra, &[], None).await
    }

    /// A hub using a Mosquitto that enforces the hub's password and ACL
    /// files (`--mosquitto-dir`): the hub writes them, Mosquitto starts with
    /// them and reloads them (SIGHUP from the hub) when nodes join or are
    /// deleted.
    /// With `tls`, Mosquitto serves MQTT over TLS with the hub's server
    /// certificate, and the hub and its boards verify it with the hub's CA.
    pub async fn start_with_mosquitto(tls: bool) -> (Hub, Mosquitto) {
        let port = free_port();
        let scheme = if tls { "mqtts" } else { "mqtt" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let files = tempfile::tempdir().expect("tempdir");
        let dir = files.path().to_str().expect("utf-8 temp dir").to_string();
        let pid_file = format!("{dir}/mosquitto.pid");
        let extra = [
            "--mosquitto-dir",
            dir.as_str(),
            "--mosquitto-pid-file",
            pid_file.as_str(),
        ];
        let mut broker = None;
        let hub = Hub::start_inner(
            "127.0.0.1",
            Some(&url),
            &extra,
            &[],
            Some(&mut |hub_dir: &Path| {
                // The hub has written its files (and its certificates)
                // before connecting: start Mosquitto with them while the hub
                // retries.
                let mut settings = format!(
                    "use_username_as_clientid true\ninclude_dir {dir}\npid_file {pid_file}\n"
                );
                if tls {
                    let tls_dir = hub_dir.join("tls");
                    settings.push_str(&format!(
                        "certfile {}\nkeyfile {}\n",
                        tls_dir.join("server.crt").display(),
                        tls_dir.join("server.key").display()
                    ));
                }
                broker = Some(Mosquitto::spawn_on(port, &settings));
            }),
        )
        .await;
        let mut broker = broker.expect("mosquitto started");
        broker._files = Some(files);
        // The hub sends Mosquitto SIGHUP whenever a board joins. Until
        // Mosquitto has installed its handler (before it answers its first
        // CONNECT), SIGHUP would end it: wait for the hub's CONNACK first.
        eventually(
            Duration::from_secs(30),
            "the hub to connect to Mosquitto",
            || {
                let up = hub
                    .proc
                    .output()
                    .contains("hub connected to the MQTT broker");
                async move { up.then_some(()) }
            },
        )
        .await;
        broker.url = url;
        (hub, broker)
    }

    async fn start_inner(
        host: &str,
        broker_url: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
        mut before_up: Option<&mut dyn FnMut(&Path)>,
    ) -> Hub {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let (api, mqtt) = (free_port(), free_port());
        let path = |p: &str| {
            dir.path()
                .join(p)
                .to_str()
                .expect("utf-8 temp dir")
                .to_string()
        };
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            path("hub"),
            "--listen".into(),
            format!("{host}:{api}"),
            "--client-config".into(),
            path("config"),
        ];
        let mqtt_url = match broker_url {
            Some(url) => {
                args.extend(["--mqtt-url".into(), url.to_string()]);
                url.to_string()
            }
            None => {
                args.extend(["--mqtt-listen".into(), format!("{host}:{mqtt}")]);
                let scheme = if extra.contains(&"--mqtt-insecure") {
                    "mqtt"
                } else {
                    "mqtts"
                };
                format!("{scheme}://{host}:{mqtt}")
            }
        };
        args.extend(extra.iter().map(|a| a.to_string()));
        let scheme = if extra.contains(&"--insecure-http") {
            "http"
        } else {
            "https"
        };
        let proc = Hub::spawn(&args, &env, dir.path());
        if let Some(hook) = before_up.as_mut() {
            let mosquitto_dir = extra
                .iter()
                .position(|a| *a == "--mosquitto-dir")
                .map(|i| PathBuf::from(extra[i + 1]))
                .expect("--mosquitto-dir");
            let passwd = mosquitto_dir.join("spoke.conf");
            eventually(
                Duration::from_secs(30),
                "the hub to write the Mosquitto files",
                || {
                    let exists = passwd.exists();
                    async move { exists.then_some(()) }
                },
            )
            .await;
            hook(&dir.path().join("hub"));
        }
        let mut hub = Hub {
            proc,
            api_url: format!("{scheme}://{host}:{api}"),
            mqtt_url,
            dir,
            bootstrap_token: String::new(),
            args,
            env,
        };
        hub.wait_up().await;
        hub.bootstrap_token = hub
            .create_token("harness-join", "bootstrap", Some(3600))
            .await;
        hub
    }

    /// Creates a token with the admin client and returns its secret.
    pub async fn create_token(&self, name: &str, role: &str, ttl_seconds: Option<u64>) -> String {
        let mut spec = serde_json::json!({"role": role});
        if let Some(ttl) = ttl_seconds {
            spec["expirationSeconds"] = ttl.into();
        }
        let created = self
            .client()
            .create(
                "/apis/spoke.dev/v1/tokens",
                &serde_json::json!({"metadata": {"name": name}, "spec": spec}),
            )
            .await
            .expect("create a token");
        created["status"]["token"]
            .as_str()
            .expect("the token's secret")
            .to_string()
    }

    /// The hub's CA certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir().join("tls/ca.crt")
    }

    /// Options that make an agent join this hub at its first start, as a
    /// board's config file would (`hub`, `join-token`, `ca`).
    pub fn join_args(&self) -> Vec<String> {
        let mut args = vec![
            "--hub".to_string(),
            self.api_url.clone(),
            "--join-token".into(),
            self.bootstrap_token.clone(),
        ];
        if self.ca_path().exists() {
            args.extend(["--ca".into(), self.ca_path().display().to_string()]);
        }
        args
    }

    fn spawn(args: &[String], env: &[(String, String)], dir: &Path) -> Proc {
        let mut cmd = Command::new(bin("spoke-hub"));
        cmd.args(args).env("RUST_LOG", "info,rmqtt=warn");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        // Append, so that a restarted hub's log follows the first one's.
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        Proc::spawn(cmd, dir.join(format!("hub-{n}.log")))
    }

    /// Starts the hub again (after [`Proc::kill`]) with the same data
    /// directory and ports.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.proc = Hub::spawn(&self.args, &self.env, self.dir.path());
        self.wait_up().await;
    }

    async fn wait_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.config_path().exists() && self.client().get::<Value>("/version").await.is_ok() {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                // The hub's own words say why (a port taken by a parallel
                // test, say), which a bare timeout would hide.
                panic!(
                    "timed out after 30s waiting for the hub to write its CLI config and answer /version\n--- hub log ---\n{}",
                    tail(&self.proc.output(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CLI config the hub wrote (server, CA, admin token).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The hub's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    /// What the hub's CLI config says: server, CA, admin token.
    pub fn target(&self) -> spoke_client::kubeconfig::Target {
        spoke_client::kubeconfig::KubeConfig::load(&self.config_path())
            .and_then(|c| c.target(None))
            .expect("the hub's CLI config")
    }

    /// A client with the admin token, trusting the hub's CA, as the CLI
    /// config says.
    pub fn client(&self) -> Client {
        Client::for_target(&self.target()).expect("client")
    }

    /// A client trusting the hub's CA that sends `token` (or none).
    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client::with_tls(&self.api_url, token.map(str::to_string), &self.target().tls)
            .expect("client")
    }

    /// Starts an agent for node `name` against this hub. It joins with the
    /// harness' bootstrap token at its first start and uses the credentials
    /// it stored from then on.
    pub fn agent(&self, name: &str, extra: &[&str]) -> Agent {
        let agent = bin("spoke-agent");
        self.agent_launched(&[agent.to_str().expect("utf-8 path")], name, extra)
    }

    /// Like [`Hub::agent`], with the agent started by `launcher` (see
    /// [`Agent::start_launched`]): an ARM build under qemu, say.
    pub fn agent_launched(&self, launcher: &[&str], name: &str, extra: &[&str]) -> Agent {
        let mut args = self.join_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start_launched(launcher, name, self.dir.path(), &args)
    }

    /// An agent for node `name` that joins this hub, then reaches its broker
    /// at `broker_url` (a proxy in front of it, say) instead of the address
    /// the join answered.
    pub fn agent_via(&self, name: &str, broker_url: &str, extra: &[&str]) -> Agent {
        let data_dir = self.dir.path().join(format!("agent-{name}"));
        let out = Command::new(bin("spoke-agent"))
            .arg("join")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(self.join_args())
            .output()
            .expect("run spoke-agent join");
        assert!(
            out.status.success(),
            "spoke-agent join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args = vec!["--hub", broker_url];
        args.extend(extra);
        Agent::start_args(name, self.dir.path(), &args)
    }

    /// The password of the hub's own MQTT user (`_spoke-hub`), which may
    /// read and write every topic: for tests that watch or forge traffic.
    pub fn mqtt_hub_password(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("mqtt-hub.password"))
            .expect("the hub's MQTT password file")
            .trim()
            .to_string()
    }

    /// Runs the `spoke` CLI with the config the hub wrote.
    pub fn spoke(&self, args: &[&str]) -> Output {
        self.spoke_cmd().args(args).output().expect("run spoke")
    }

    /// The `spoke` CLI with the config the hub wrote, ready for more args.
    pub fn spoke_cmd(&self) -> Command {
        let mut cmd = Command::new(bin("spoke"));
        cmd.arg("--kubeconfig")
            .arg(self.config_path())
            .env_remove("SPOKE_CONFIG")
            .env_remove("SPOKE_SERVER")
            .env_remove("SPOKE_TOKEN");
        cmd
    }

    /// Waits until node `name` is Ready.
    pub async fn wait_node_ready(&self, name: &str) {
        let client = self.client();
        let path = format!("/api/v1/nodes/{name}");
        eventually(
            Duration::from_secs(60),
            &format!("node {name} to be Ready"),
            || {
                let (c, p) = (client.clone(), path.clone());
                async move {
                    let node: Value = c.get(&p).await.ok()?;
                    let ready = node["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True");
                    ready.then_some(())
                }
            },
        )
        .await;
    }

    /// Waits until `check` holds for the pod, and returns it.
    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let client = self.client();
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        let limit = Duration::from_secs(90);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pod: Option<Value> = client.get(&path).await.ok();
            if let Some(p) = &pod
                && check(p)
            {
                return p.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for pod {name}: {what}\nlast seen: {}\n--- hub log ---\n{}",
                    pod.map(|p| p.to_string())
                        .unwrap_or_else(|| "<none>".into()),
                    tail(&self.proc.output(), 40),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pushes the module at `path` as `reference` through the CLI.
    pub fn push(&self, path: &Path, reference: &str) {
        let out = self.spoke(&["push", path.to_str().expect("utf-8 path"), reference]);
        assert!(
            out.status.success(),
            "spoke push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies a manifest given as text through the CLI (`apply -f -`).
    pub fn apply(&self, manifest: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .spoke_cmd()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn spoke");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write manifest");
        child.wait_with_output().expect("spoke apply")
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs the `spoke` CLI with `--server` and no config file.
pub fn spoke_cmd(server: &str, args: &[&str]) -> Output {
    Command::new(bin("spoke"))
        .args(["--server", server])
        .args(args)
        .env_remove("SPOKE_CONFIG")
        .env_remove("SPOKE_TOKEN")
        .output()
        .expect("run spoke")
}

/// A running agent.
pub struct Agent {
    pub proc: Proc,
    pub data_dir: PathBuf,
}

impl Agent {
    /// An agent connecting to the broker at `mqtt_url` with `extra` options
    /// (credentials, if the broker wants some).
    pub fn start(mqtt_url: &str, name: &str, base: &Path, extra: &[&str]) -> Agent {
        let mut args = vec!["--hub", mqtt_url];
        args.extend(extra);
        Agent::start_args(name, base, &args)
    }

    /// An agent for node `name` with data dir `base/agent-NAME` and `args`.
    pub fn start_args(name: &str, base: &Path, args: &[&str]) -> Agent {
        let agent = bin("spoke-agent");
        Agent::start_launched(&[agent.to_str().expect("utf-8 path")], name, base, args)
    }

    /// Like [`Agent::start_args`], with the agent started by `launcher`: its
    /// program and first arguments (`["qemu-aarch64-static", "/path/to/arm/spoke-agent"]`).
    pub fn start_launched(launcher: &[&str], name: &str, base: &Path, args: &[&str]) -> Agent {
        let data_dir = base.join(format!("agent-{name}"));
        let mut cmd = Command::new(launcher[0]);
        cmd.args(&launcher[1..])
            .args(["--name", name])
            .arg("--data-dir")
            .arg(&data_dir)
            // The disks of shared build machines are often more than 90%
            // full, which Kubernetes' default (nodefs.available<10%) makes
            // DiskPressure, tainting every test node. Tests that want disk
            // pressure pass their own --eviction-hard, which comes later
            // and wins for the signals it names.
            .args([
                "--eviction-hard",
                "nodefs.available<0%,nodefs.inodesFree<0%",
            ])
            .args(args)
            .env("RUST_LOG", "info");
        let log = base.join(format!("agent-{name}.log"));
        Agent {
            proc: Proc::spawn(cmd, log),
            data_dir,
        }
    }
}

/// The live (not terminating) pods matching `selector` (URL-encoded, e.g.
/// `app%3Dweb`) in the default namespace.
pub async fn live_pods(client: &Client, selector: &str) -> Vec<Value> {
    let list: Value = client
        .get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector={selector}"
        ))
        .await
        .expect("list pods");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

/// A pod manifest running `image` with `env` pairs and a restart policy.
pub fn pod_manifest(name: &str, image: &str, restart: &str, env: &[(&str, &str)]) -> String {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("        - name: {k}\n          value: \"{v}\"\n"))
        .collect();
    let env = if env.is_empty() {
        String::new()
    } else {
        format!("      env:\n{env}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {restart}\n  containers:\n    - name: main\n      image: {image}\n{env}"
    )
}

/// The first container's status of a pod, if reported.
pub fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// Mosquitto (Debian's package) on a loopback port, as an external broker.
pub struct Mosquitto {
    pub proc: Proc,
    pub url: String,
    _dir: tempfile::TempDir,
    _files: Option<tempfile::TempDir>,
}

impl Mosquitto {
    /// Mosquitto that lets anyone in (no password or ACL file).
    pub async fn start() -> Mosquitto {
        let port = free_port();
        let m = Mosquitto::spawn_on(port, "allow_anonymous true\n");
        m.wait_listening().await;
        m
    }

    /// Starts Mosquitto on `port` with `settings` added to its config, not
    /// waiting for it to listen.
    fn spawn_on(port: u16, settings: &str) -> Mosquitto {
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: apt-get install mosquitto (scripts/test does it as root)");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!("listener {port} 127.0.0.1\npersistence false\n{settings}");
        // Started as root, Mosquitto drops to user "mosquitto" unless told not to.
        if running_as_root() {
            text.push_str("user root\n");
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(&conf);
        let proc = Proc::spawn(cmd, dir.path().join("mosquitto.log"));
        Mosquitto {
            proc,
            url: format!("mqtt://127.0.0.1:{port}"),
            _dir: dir,
            _files: None,
        }
    }

    /// `host:port` of the listener, whatever the scheme.
    fn addr(&self) -> String {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, a)| a)
            .to_string()
    }

    async fn wait_listening(&self) {
        let addr = self.addr();
        eventually(Duration::from_secs(10), "mosquitto to listen", || {
            let addr = addr.clone();
            async move { std::net::TcpStream::connect(&addr).ok().map(|_| ()) }
        })
        .await;
    }

    /// Kills the broker (as a crash would: no goodbye to its clients).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts the broker again on the same port, with the same config.
    /// Nothing survives (no persistence): retained messages are gone.
    pub async fn restart(&mut self) {
        self.proc.kill();
        let exe = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is installed");
        let mut cmd = Command::new(exe);
        cmd.arg("-c").arg(self._dir.path().join("mosquitto.conf"));
        self.proc = Proc::spawn(cmd, self._dir.path().join("mosquitto-again.log"));
        let addr = self.addr();
        eventually(Duration::from_secs(10), "mosquitto to listen again", || {
            let addr = addr.clone();
            async move { std::net::TcpStream::connect(&addr).ok().map(|_| ()) }
        })
        .await;
    }
}

/// A tmpfs of a given size mounted on a directory, unmounted on drop (also
/// when a test panics). Needs root (CI runs as root).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`16m`) on `path`, creating the directory.
    /// Panics with what is needed when this process is not root.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        assert!(
            running_as_root(),
            "this test mounts a tmpfs (mount -t tmpfs) and must run as root (CI does); \
             run it with sudo or in a root container"
        );
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file in it (a killed agent's
        // zombie, say) must not leave the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Whether this process runs as root (uid 0), read from /proc.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A small deterministic generator (no dependency): a test's choices are
/// varied but the same in every run, so a failure can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Whether a process is still alive (not exited, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// The status of a Node object's `Ready` condition (`True`, `False`,
/// `Unknown`), if it has one.
pub fn node_ready(node: &Value) -> Option<&str> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_str()
}
