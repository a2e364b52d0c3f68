//! Light simulated agents, many to a process, for fleet-scale benches
//! (`storm`, `fleet`).
//!
//! Each simulated agent speaks the real protocol with the real agent's
//! parts: credentials from the join endpoint (one bootstrap token, one join
//! per node), MQTT options from `spoke_agent::sync::mqtt_options` (client
//! id, keepalive, clean session, last will, TLS with the hub's CA), and the
//! agent's own event-loop driver `spoke_agent::sync::drive`, whose jittered
//! exponential back-off is what spreads a reconnect storm. Only the handler
//! is light: on each connect it subscribes, publishes `online`, says
//! `hello` (revision, node info, status digest, lease) and says it again
//! after 5 s (doubling) until the hub answers, as the real handler does; it
//! applies the answer's revision and acks it.
//!
//! Pods run "for real as far as the protocol is concerned": a new pod in a
//! snapshot or delta is reported `Running` at once, with the status the real
//! agent computes (`spoke_agent::pods::status::pod_status` over containers
//! taken through the real lifecycle state machine: pulled, started); a pod
//! marked for deletion is reported gone; when the hub asks for statuses
//! (`sendStatus`, its digest differs), every report is sent. No redb, no
//! wasmtime, no module fetch (the image id is made up from the image name).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, QoS};
use serde_json::{Value, json};
use spoke_agent::pods::lifecycle::{Backoff, Container, Observation, RestartPolicy};
use spoke_agent::sync::{Connection, Inbound};
use spoke_api::auth::{JOIN_PATH, JoinResponse};
use spoke_api::core::{PodSpec, PodStatus};
use spoke_api::protocol::{
    DesiredPod, Down, NodeInfo, ONLINE, PodReport, Up, status_digest, topic,
};
use tokio::sync::mpsc;

use crate::{Hub, Proc};

/// Nanoseconds since the bench started, comparable across agents.
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// What one simulated agent has seen; times from its [`Clock`].
#[derive(Default)]
pub struct Seen {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    /// When the hub last answered a hello.
    pub answered: AtomicU64,
    /// The revision applied.
    pub applied: AtomicU64,
    /// Pods this agent runs now.
    pub pods: AtomicU64,
}

/// The status the real agent reports for a pod whose containers have all
/// been pulled and started at `now`.
pub fn running_status(spec: &PodSpec, now: SystemTime) -> PodStatus {
    let backoff = Backoff::default();
    let policy = RestartPolicy::from_spec(spec.restart_policy.as_deref());
    let containers: Vec<Container> = spec
        .containers
        .iter()
        .map(|c| {
            let (c0, _) = Container::new(&backoff);
            let digest = format!("sha256:{:064x}", fnv(c.image.as_bytes()));
            let (c1, _) = c0.step(Observation::ImageReady { digest }, policy, &backoff);
            let (c2, _) = c1.step(Observation::Started { at: now }, policy, &backoff);
            c2
        })
        .collect();
    spoke_agent::pods::status::pod_status(spec, &containers, now, None, now)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The pods a simulated agent runs, by `namespace/name`.
#[derive(Default)]
pub struct Pods {
    running: BTreeMap<String, PodReport>,
}

impl Pods {
    /// Applies a snapshot (`full`: pods not in it are gone) or a delta
    /// (`deleted`: uids removed), and returns the reports to send: new pods
    /// Running, pods being deleted gone.
    pub fn apply(
        &mut self,
        pods: Vec<DesiredPod>,
        deleted: &[String],
        full: bool,
    ) -> Vec<PodReport> {
        if full {
            let keep: std::collections::HashSet<String> = pods
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect();
            self.running.retain(|k, _| keep.contains(k));
        }
        self.running.retain(|_, r| !deleted.contains(&r.uid));
        let mut out = Vec::new();
        let now = SystemTime::now();
        for p in pods {
            let key = format!("{}/{}", p.namespace, p.name);
            if p.deleting {
                let status = self
                    .running
                    .remove(&key)
                    .map(|r| r.status)
                    .unwrap_or_default();
                out.push(PodReport {
                    namespace: p.namespace,
                    name: p.name,
                    uid: p.uid,
                    status,
                    gone: true,
                });
                continue;
            }
            if self.running.get(&key).is_some_and(|r| r.uid == p.uid) {
                continue;
            }
            let report = PodReport {
                status: running_status(&p.spec, now),
                namespace: p.namespace,
                name: p.name,
                uid: p.uid,
                gone: false,
            };
            self.running.insert(key, report.clone());
            out.push(report);
        }
        out
    }

    /// Every report, for `sendStatus`.
    pub fn reports(&self) -> Vec<PodReport> {
        self.running.values().cloned().collect()
    }

    pub fn digest(&self) -> String {
        status_digest(self.running.values())
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// The real agent's hello retry: 5 s, doubling, at most 5 min.
const HELLO_RETRY: Duration = spoke_agent::sync::HELLO_RETRY;

/// Runs one simulated agent with `join`'s credentials until the process
/// ends. `ca` is the PEM to verify an `mqtts://` broker with.
pub async fn sim_agent(join: JoinResponse, ca: Option<String>, seen: Arc<Seen>, clock: Arc<Clock>) {
    let name = join.node_name.clone();
    let mut conn = Connection::parse_url(&join.broker_url).expect("broker URL");
    conn.username = Some(join.username);
    conn.password = Some(join.password);
    conn.ca_pem = ca.or(join.ca_pem);
    let options = spoke_agent::sync::mqtt_options(&conn, &name, Duration::from_secs(60));
    // The real agent's request queue, socket settings and driver.
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    spoke_agent::sync::tune(&mut eventloop);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(spoke_agent::sync::drive(eventloop, tx));
    let node: NodeInfo = spoke_agent::node::info(
        110,
        &spoke_agent::node::Thresholds::default(),
        &spoke_agent::node::Readings::default(),
        Vec::new(),
    );
    let mut pods = Pods::default();
    let hello = |applied: u64, pods: &Pods| Up::Hello {
        applied_revision: applied,
        node: node.clone(),
        pods: Vec::new(),
        status_digest: Some(pods.digest()),
        lease_seconds: Some(3600),
    };
    let publish = |up: Up| {
        let _ = client.try_publish(topic::up(&name), QoS::AtLeastOnce, false, up.encode());
    };
    let mut retry: Option<(tokio::time::Instant, Duration)> = None;
    loop {
        let at = retry.map(|(at, _)| at);
        let wait = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {
                if let Some((_, d)) = retry {
                    publish(hello(seen.applied.load(Ordering::SeqCst), &pods));
                    let d = (d * 2).min(spoke_agent::sync::HELLO_RETRY_MAX);
                    retry = Some((tokio::time::Instant::now() + d, d));
                }
            }
            msg = rx.recv() => match msg {
                None => return,
                Some(Inbound::Connected) => {
                    seen.connects.fetch_add(1, Ordering::SeqCst);
                    for t in [topic::down(&name), topic::module(&name)] {
                        let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                    }
                    let _ = client.try_publish(topic::presence(&name), QoS::AtLeastOnce, true, ONLINE.to_vec());
                    publish(hello(seen.applied.load(Ordering::SeqCst), &pods));
                    retry = Some((tokio::time::Instant::now() + HELLO_RETRY, HELLO_RETRY));
                }
                Some(Inbound::Disconnected) => {
                    seen.disconnects.fetch_add(1, Ordering::SeqCst);
                    retry = None;
                }
                Some(Inbound::Message { payload, .. }) => {
                    let (revision, reports) = match Down::decode(&payload) {
                        Ok(Down::Desired { revision, pods: desired }) => {
                            (Some(revision), pods.apply(desired, &[], true))
                        }
                        Ok(Down::Delta { revision, pods: desired, deleted, .. }) => {
                            (Some(revision), pods.apply(desired, &deleted, false))
                        }
                        Ok(Down::UpToDate { .. }) => (None, Vec::new()),
                        Ok(Down::SendStatus) => {
                            publish(Up::Status { pods: pods.reports() });
                            continue;
                        }
                        _ => continue,
                    };
                    retry = None;
                    if let Some(r) = revision
                        && r > seen.applied.load(Ordering::SeqCst)
                    {
                        seen.applied.store(r, Ordering::SeqCst);
                        publish(Up::Ack { applied_revision: r });
                    }
                    if !reports.is_empty() {
                        publish(Up::Status { pods: reports });
                    }
                    seen.pods.store(pods.len() as u64, Ordering::SeqCst);
                    seen.answered.store(clock.now(), Ordering::SeqCst);
                }
            }
        }
    }
}

/// Joins the nodes named `{prefix}-{i:05}` for `i` in `range` with the
/// hub's bootstrap token, `parallel` joins at a time.
pub async fn join_fleet(
    hub: &Hub,
    prefix: &str,
    range: std::ops::Range<usize>,
    parallel: usize,
) -> Vec<JoinResponse> {
    let joiner = hub.client_with(Some(&hub.bootstrap_token));
    let names: Vec<String> = range.map(|i| format!("{prefix}-{i:05}")).collect();
    let mut joins = Vec::with_capacity(names.len());
    for chunk in names.chunks(parallel.max(1)) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|name| {
                let joiner = joiner.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let answer = joiner
                        .create(JOIN_PATH, &json!({"nodeName": name}))
                        .await
                        .expect("join");
                    serde_json::from_value::<JoinResponse>(answer).expect("join answer")
                })
            })
            .collect();
        for t in tasks {
            joins.push(t.await.expect("join task"));
        }
    }
    joins
}

/// Starts one simulated agent per join, `gap` apart.
pub async fn start_fleet(
    joins: Vec<JoinResponse>,
    ca: Option<String>,
    clock: &Arc<Clock>,
    gap: Duration,
) -> Vec<Arc<Seen>> {
    let seen: Vec<Arc<Seen>> = (0..joins.len())
        .map(|_| Arc::new(Seen::default()))
        .collect();
    for (join, s) in joins.into_iter().zip(&seen) {
        tokio::spawn(sim_agent(join, ca.clone(), s.clone(), clock.clone()));
        tokio::time::sleep(gap).await;
    }
    seen
}

/// Raises this process's open-file limit as far as allowed (children
/// inherit it): to `want` when privileged, else the soft limit to the hard
/// one. Returns the soft limit now in force.
pub fn raise_open_files(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let wanted = Rlimit {
        current: Some(want.max(cur.current.unwrap_or(0))),
        maximum: Some(want.max(hard)),
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: cur.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// CPU time (user + system) of a process, from /proc, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's CPU (share of one core) over `window`, and its RSS (KiB)
/// at the end.
pub async fn load(proc: &Proc, window: Duration) -> (f64, u64) {
    let pid = proc.pid();
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    (cpu, proc.rss_kib().unwrap_or(0))
}

/// Waits until every agent's hello was answered after `since` (ns), and
/// returns when the last one was, printing progress; `None` after `limit`.
pub async fn all_answered(
    seen: &[Arc<Seen>],
    since: u64,
    clock: &Clock,
    limit: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + limit;
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let done = seen
            .iter()
            .filter(|s| s.answered.load(Ordering::SeqCst) > since)
            .count();
        if done == seen.len() {
            return seen.iter().map(|s| s.answered.load(Ordering::SeqCst)).max();
        }
        if Instant::now() > deadline {
            eprintln!("only {done} of {} answered within {limit:?}", seen.len());
            return None;
        }
        if Instant::now() > next_report {
            eprintln!(
                "  {:.1} s: {done} of {} answered",
                (clock.now() - since) as f64 / 1e9,
                seen.len()
            );
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nodes the hub shows: all, Ready, and Ready with `status.sync` in sync.
pub async fn hub_view(hub: &Hub) -> (usize, usize, usize) {
    let Ok(list) = hub.client().get::<Value>("/api/v1/nodes").await else {
        return (0, 0, 0);
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let ready = |n: &Value| {
        n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let in_sync = |n: &Value| {
        let s = &n["status"]["sync"];
        s["appliedRevision"].as_u64().is_some() && s["appliedRevision"] == s["desiredRevision"]
    };
    (
        items.len(),
        items.iter().filter(|n| ready(n)).count(),
        items.iter().filter(|n| ready(n) && in_sync(n)).count(),
    )
}

/// Waits until the hub shows all `n` nodes Ready and in sync; returns how
/// long that took, or `None` after `limit`.
pub async fn hub_caught_up(hub: &Hub, n: usize, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let (_, ready, in_sync) = hub_view(hub).await;
        if ready == n && in_sync == n {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// `12.3 s`, or what a missed limit means.
pub fn secs(d: Option<Duration>) -> String {
    d.map_or("not within the limit".into(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

/// The fleet size from `SPOKE_BENCH_AGENTS`, else `default`.
pub fn agents_from_env(default: usize) -> usize {
    std::env::var("SPOKE_BENCH_AGENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoke_api::core::Container as SpecContainer;

    fn desired(name: &str, uid: &str, deleting: bool) -> DesiredPod {
        DesiredPod {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            generation: 1,
            spec: PodSpec {
                containers: vec![SpecContainer {
                    name: "main".into(),
                    image: "hello:v1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            deleting,
            grace_period_seconds: None,
            config_maps: Default::default(),
            secrets: Default::default(),
        }
    }

    #[test]
    fn new_pods_are_reported_running_once_and_deleted_ones_gone() {
        let mut pods = Pods::default();
        let out = pods.apply(vec![desired("a", "u1", false)], &[], false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status.phase.as_deref(), Some("Running"));
        assert!(out[0].status.container_statuses[0].ready);
        // The same pod again (a resent snapshot): nothing new to say.
        assert!(
            pods.apply(vec![desired("a", "u1", false)], &[], true)
                .is_empty()
        );
        let out = pods.apply(vec![desired("a", "u1", true)], &[], false);
        assert!(out[0].gone);
        assert!(pods.is_empty());
        pods.apply(vec![desired("b", "u2", false)], &[], false);
        pods.apply(Vec::new(), &["u2".to_string()], false);
        assert!(pods.is_empty());
    }
}
