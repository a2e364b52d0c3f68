//! The pod supervisor: one tokio task per pod instance around the pure lifecycle.
//!
//! [`Supervisor::reconcile`] is level-triggered: given the complete desired
//! set, it starts pods that are new or whose uid/generation changed (after
//! stopping the old instance), and stops pods that are no longer listed or are
//! being deleted. Stopping is graceful: each running guest is asked to stop
//! (its stdin closes, see `runtime::StopSignal`) and is dropped once the
//! pod's `terminationGracePeriodSeconds` (default 30) have passed; dropping
//! the Wasm future at an epoch yield ends the instance, and epoch yields
//! guarantee even a spinning guest reaches one within a tick. A stopping pod
//! stays listed (its logs readable, its emptyDirs kept) until it has ended;
//! a replacement (a new generation) starts after that.
//!
//! While an instance runs, its probes are called here and their results fed
//! to the pure lifecycle (`lifecycle`, `probe`), which says whether to
//! restart it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use spoke_api::core::{Container as SpecContainer, HttpHeader, Probe};
use spoke_api::module::ImageRef;
use spoke_api::protocol::{DesiredPod, MAX_MESSAGE_BYTES, PodReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

use super::config::{self, Data};
use super::lifecycle::{self, Backoff, Container, Effect, Observation, RestartPolicy, Termination};
use super::logs::{PodLog, Query, ReadError, message_of};
use super::probe::{self, Probes};
use super::status::pod_status;
use super::volumes::{self, Volumes};
use crate::modules::{self, Fetcher, hex_of};
use crate::runtime::{self, Outcome, RunSpec, Runtime, StopSignal};
use crate::state::State;

/// How often buffered log lines are written out (see `pods::logs`).
const LOG_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Most log text returned for one request: the answer must fit in one MQTT message.
const MAX_LOG_REPLY_BYTES: usize = MAX_MESSAGE_BYTES - 16 * 1024;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How long past its grace period a stopping pod's task may take before it
/// is aborted. Its containers drop their instances at the deadline
/// themselves; this only guards against a task that is stuck elsewhere.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// What the supervisor needs to run pods.
pub struct Settings {
    pub backoff: Backoff,
    pub logs_dir: PathBuf,
    /// Where `emptyDir`s live and which `hostPath`s are allowed.
    pub volumes: Volumes,
    /// The board address pods listen on (`--pod-address`); `None`: any.
    pub pod_address: Option<IpAddr>,
}

/// The variable that tells a container with ports where it may listen
/// (the guest SDK's `net::LISTEN_ADDRESS_ENV`).
pub const LISTEN_ADDRESS_ENV: &str = "SPOKE_LISTEN_ADDRESS";

/// A status change for the sync layer to report.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The pod's current status.
    Updated(PodReport),
    /// A deleted pod has stopped.
    Gone(PodReport),
}

/// Why a container's image could not be prepared.
enum PrepareError {
    Pull(String),
    Invalid(String),
}

struct Shared {
    runtime: Arc<Runtime>,
    fetcher: Arc<Fetcher>,
    state: Arc<State>,
    settings: Settings,
    changes: mpsc::UnboundedSender<Change>,
}

/// The running state of one pod, shared by its container tasks.
struct Record {
    containers: Vec<Container>,
    start_time: SystemTime,
    report: PodReport,
    /// Why the pod was evicted, once it was.
    evicted: Option<String>,
}

/// Which part of a pod's log to read (`kubectl logs` options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRequest {
    /// Only the last N of the selected lines.
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// The previous instance of `container` (default: the pod's first
    /// container) instead of the whole log.
    pub previous: bool,
    pub container: Option<String>,
}

struct Pod {
    desired: DesiredPod,
    /// The ConfigMap/Secret data the pod's containers read; replaced when
    /// the hub sends new data for the same pod generation.
    data: Arc<watch::Sender<Data>>,
    record: Arc<Mutex<Record>>,
    log: Arc<PodLog>,
    /// The pod's task, until it is being stopped (then its waiter holds it).
    task: Option<JoinHandle<()>>,
    abort: AbortHandle,
    /// Set to ask the pod's containers to stop gracefully, within the
    /// grace period it carries.
    terminating: watch::Sender<Option<Duration>>,
    /// The deletion's grace period (`kubectl delete --grace-period`), which
    /// wins over the spec's.
    delete_grace: Option<Duration>,
    /// Stopping: it leaves the map once its task has ended.
    stopping: bool,
    /// It was deleted: once stopped, its log goes and the hub hears `gone`.
    deleting: bool,
}

/// A stopping pod's task has ended: (key, uid, generation).
type Finished = (String, String, i64);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the pods of this node.
pub struct Supervisor {
    shared: Arc<Shared>,
    pods: tokio::sync::Mutex<BTreeMap<String, Pod>>,
    /// The last desired set, applied again when a stopping pod has ended
    /// (its replacement may be waiting).
    last_desired: Mutex<Option<Vec<DesiredPod>>>,
    finished: mpsc::UnboundedSender<Finished>,
}

impl Supervisor {
    /// A supervisor reporting status changes on the returned channel.
    pub fn new(
        runtime: Arc<Runtime>,
        fetcher: Arc<Fetcher>,
        state: Arc<State>,
        settings: Settings,
    ) -> (Arc<Supervisor>, mpsc::UnboundedReceiver<Change>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let (finished, mut finished_rx) = mpsc::unbounded_channel::<Finished>();
        let supervisor = Arc::new(Supervisor {
            shared: Arc::new(Shared {
                runtime,
                fetcher,
                state,
                settings,
                changes,
            }),
            pods: tokio::sync::Mutex::new(BTreeMap::new()),
            last_desired: Mutex::new(None),
            finished,
        });
        let weak = Arc::downgrade(&supervisor);
        tokio::spawn(async move {
            while let Some(done) = finished_rx.recv().await {
                let Some(s) = weak.upgrade() else { break };
                s.finish(done).await;
            }
        });
        let weak = Arc::downgrade(&supervisor);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOG_FLUSH_EVERY);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                let logs: Vec<Arc<PodLog>> = s
                    .pods
                    .lock()
                    .await
                    .values()
                    .map(|p| p.log.clone())
                    .collect();
                drop(s);
                for log in logs {
                    log.flush();
                }
            }
        });
        (supervisor, rx)
    }

    /// Moves the running pods to `desired`, the complete set for this node.
    pub async fn reconcile(&self, desired: Vec<DesiredPod>) {
        *lock(&self.last_desired) = Some(desired.clone());
        self.converge(desired).await;
    }

    async fn converge(&self, desired: Vec<DesiredPod>) {
        let wanted: BTreeMap<String, DesiredPod> =
            desired.into_iter().map(|p| (p.key(), p)).collect();
        let mut pods = self.pods.lock().await;

        let keys: Vec<String> = pods.keys().cloned().collect();
        for key in keys {
            let deleting = wanted.get(&key).is_some_and(|d| d.deleting);
            let delete_grace = wanted
                .get(&key)
                .filter(|d| d.deleting)
                .and_then(|d| d.grace_period_seconds)
                .map(|s| Duration::from_secs(s.max(0) as u64));
            if let Some(pod) = pods.get_mut(&key)
                && pod.stopping
            {
                // Already on its way out; it may have been deleted since.
                pod.deleting |= deleting;
                continue;
            }
            let keep = match wanted.get(&key) {
                None => false,
                Some(d) if d.deleting => false,
                Some(d) => {
                    let current = pods
                        .get(&key)
                        .map(|p| (&p.desired.uid, p.desired.generation));
                    current == Some((&d.uid, d.generation))
                }
            };
            if keep {
                if let (Some(pod), Some(d)) = (pods.get_mut(&key), wanted.get(&key)) {
                    self.update_data(pod, d).await;
                }
                continue;
            }
            if let Some(pod) = pods.get_mut(&key) {
                pod.deleting = deleting;
                pod.delete_grace = delete_grace;
                self.begin_stop(&key, pod);
            }
        }

        for (key, d) in wanted {
            if d.deleting {
                if !pods.contains_key(&key) {
                    // Already stopped (e.g. before an agent restart): say so again.
                    self.send_gone(PodReport {
                        namespace: d.namespace.clone(),
                        name: d.name.clone(),
                        uid: d.uid.clone(),
                        status: Default::default(),
                        gone: true,
                    });
                }
                continue;
            }
            if pods.contains_key(&key) {
                // Running, or a previous generation still stopping.
                continue;
            }
            match self.start(d) {
                Ok(pod) => {
                    pods.insert(key, pod);
                }
                Err(e) => tracing::error!(pod = %key, error = %e, "cannot start pod"),
            }
        }

        // emptyDirs of pods no longer wanted here (deleted, replaced, or
        // deleted while the agent was down) go with them.
        let keep: BTreeSet<String> = pods.values().map(|p| p.desired.uid.clone()).collect();
        let volumes = self.shared.settings.volumes.clone();
        let _ = tokio::task::spawn_blocking(move || volumes.retain(&keep)).await;
    }

    /// New ConfigMap/Secret data for a running pod: mounted files are
    /// rewritten in place and the containers see it without a restart; a
    /// container waiting for a missing object tries again at once. Env
    /// values change only when a container restarts, as in Kubernetes.
    async fn update_data(&self, pod: &mut Pod, desired: &DesiredPod) {
        let data = Data::of(desired);
        if *pod.data.borrow() == data {
            return;
        }
        tracing::info!(pod = %desired.key(), "configMap/secret data changed");
        pod.desired.config_maps = desired.config_maps.clone();
        pod.desired.secrets = desired.secrets.clone();
        let volumes = self.shared.settings.volumes.clone();
        let (uid, spec, d) = (
            pod.desired.uid.clone(),
            pod.desired.spec.clone(),
            data.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || volumes.refresh(&uid, &spec, &d)).await;
        pod.data.send_replace(data);
    }

    /// Asks a pod to stop: its running guests are signalled and dropped
    /// after the grace period. A waiter reports to [`Self::finish`] once the
    /// pod's task has ended.
    fn begin_stop(&self, key: &str, pod: &mut Pod) {
        pod.stopping = true;
        let grace = pod.delete_grace.unwrap_or_else(|| grace_of(&pod.desired));
        pod.terminating.send_replace(Some(grace));
        let Some(mut task) = pod.task.take() else {
            return;
        };
        tracing::info!(pod = %key, grace_seconds = grace.as_secs(), deleting = pod.deleting, "stopping pod");
        let done = (
            key.to_string(),
            pod.desired.uid.clone(),
            pod.desired.generation,
        );
        let finished = self.finished.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(grace + STOP_MARGIN, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(pod = %done.0, "pod task did not end after its grace period: aborting it");
                task.abort();
                let _ = task.await;
            }
            let _ = finished.send(done);
        });
    }

    /// A stopping pod has ended: forget it (and, if it was deleted, its log,
    /// and tell the hub), then start what may have waited for it.
    async fn finish(&self, (key, uid, generation): Finished) {
        let ended = {
            let mut pods = self.pods.lock().await;
            let matches = pods.get(&key).is_some_and(|p| {
                p.stopping && p.desired.uid == uid && p.desired.generation == generation
            });
            if matches { pods.remove(&key) } else { None }
        };
        if let Some(pod) = ended {
            pod.log.flush();
            tracing::info!("pod {key} stopped");
            if pod.deleting {
                let last = lock(&pod.record).report.clone();
                // Its log goes with it, as in Kubernetes.
                pod.log.remove();
                self.send_gone(last);
            }
        }
        let last = lock(&self.last_desired).clone();
        if let Some(desired) = last {
            self.converge(desired).await;
        }
    }

    fn send_gone(&self, mut report: PodReport) {
        report.gone = true;
        let _ = self.shared.changes.send(Change::Gone(report));
    }

    fn start(&self, desired: DesiredPod) -> std::io::Result<Pod> {
        let log = PodLog::open(
            &self.shared.settings.logs_dir,
            &desired.namespace,
            &desired.name,
        )?;
        let now = SystemTime::now();
        let containers: Vec<Container> = desired
            .spec
            .containers
            .iter()
            .map(|_| Container::new(&self.shared.settings.backoff).0)
            .collect();
        let status = pod_status(&desired.spec, &containers, now, None, now);
        let report = PodReport {
            namespace: desired.namespace.clone(),
            name: desired.name.clone(),
            uid: desired.uid.clone(),
            status,
            gone: false,
        };
        let _ = self.shared.changes.send(Change::Updated(report.clone()));
        let record = Arc::new(Mutex::new(Record {
            containers,
            start_time: now,
            report,
            evicted: None,
        }));
        let data = Arc::new(watch::Sender::new(Data::of(&desired)));
        let terminating = watch::Sender::new(None);
        let ctx = Arc::new(PodCtx {
            terminating: terminating.subscribe(),
            shared: self.shared.clone(),
            data: data.clone(),
            desired: desired.clone(),
            record: record.clone(),
            log: log.clone(),
            policy: RestartPolicy::from_spec(desired.spec.restart_policy.as_deref()),
        });
        tracing::info!(pod = %desired.key(), uid = %desired.uid, generation = desired.generation, "starting pod");
        let task = tokio::spawn(run_pod(ctx));
        Ok(Pod {
            desired,
            data,
            record,
            log,
            abort: task.abort_handle(),
            task: Some(task),
            terminating,
            stopping: false,
            deleting: false,
            delete_grace: None,
        })
    }

    /// The current status of every pod.
    pub async fn reports(&self) -> Vec<PodReport> {
        self.pods
            .lock()
            .await
            .values()
            .map(|p| lock(&p.record).report.clone())
            .collect()
    }

    /// How many pods are supervised, not counting pods on their way out
    /// (stopping within their grace period).
    pub async fn len(&self) -> usize {
        self.pods
            .lock()
            .await
            .values()
            .filter(|p| !p.stopping)
            .count()
    }

    /// Whether no pod is supervised.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// The part of a pod's log that `request` asks for, as text: the last
    /// `tail` lines (all when `None`) of what its filters select.
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<String, String> {
        let key = format!("{namespace}/{name}");
        let (log, first) = self
            .pods
            .lock()
            .await
            .get(&key)
            .map(|p| {
                let first = p.desired.spec.containers.first().map(|c| c.name.clone());
                (p.log.clone(), first)
            })
            .ok_or_else(|| format!("pod {key} is not running on this node"))?;
        let query = Query {
            since: request.since,
            previous: match (request.previous, &request.container) {
                (false, _) => None,
                (true, Some(c)) => Some(c.clone()),
                (true, None) => first,
            },
        };
        let read = tokio::task::spawn_blocking(move || log.read(&query))
            .await
            .map_err(|e| e.to_string())?;
        let lines = match read {
            Ok(lines) => lines,
            // kubelet's wording, which kubectl users know.
            Err(ReadError::NoPrevious(c)) => {
                return Err(format!(
                    "previous terminated container \"{c}\" in pod \"{name}\" not found"
                ));
            }
            Err(ReadError::Io(e)) => return Err(format!("cannot read the log of {key}: {e}")),
        };
        let n = request
            .tail
            .map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
        let lines = &lines[lines.len().saturating_sub(n)..];
        // Keep the newest lines that fit in one message.
        let mut size = 0;
        let mut kept: Vec<&str> = Vec::new();
        for line in lines.iter().rev() {
            let text = message_of(line);
            size += text.len() + 1;
            if size > MAX_LOG_REPLY_BYTES {
                break;
            }
            kept.push(text);
        }
        let mut text = String::with_capacity(size);
        for line in kept.iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
        Ok(text)
    }

    /// Stops every pod at once and flushes the logs (agent shutdown). The
    /// desired set stays in the local state, so the pods start again with
    /// the agent; no grace period applies, as for a node that loses power.
    pub async fn shutdown(&self) {
        let mut pods = self.pods.lock().await;
        for (key, pod) in std::mem::take(&mut *pods) {
            pod.abort.abort();
            // Waiting for the aborted task means its futures (and Wasm stores)
            // are dropped. A stopping pod's waiter holds its task instead.
            if let Some(task) = pod.task {
                let _ = task.await;
            }
            pod.log.flush();
            tracing::info!("pod {key} stopped");
        }
    }
}

/// `terminationGracePeriodSeconds`, default 30 s.
fn grace_of(desired: &DesiredPod) -> Duration {
    desired
        .spec
        .termination_grace_period_seconds
        .map_or(DEFAULT_GRACE, |s| Duration::from_secs(s.max(0) as u64))
}

struct PodCtx {
    shared: Arc<Shared>,
    /// Becomes true when the pod is to stop.
    terminating: watch::Receiver<Option<Duration>>,
    data: Arc<watch::Sender<Data>>,
    desired: DesiredPod,
    record: Arc<Mutex<Record>>,
    log: Arc<PodLog>,
    policy: RestartPolicy,
}

async fn run_pod(ctx: Arc<PodCtx>) {
    let containers = (0..ctx.desired.spec.containers.len()).map(|i| run_container(ctx.clone(), i));
    let mut containers = std::pin::pin!(futures_util::future::join_all(containers));
    let message = tokio::select! {
        _ = &mut containers => return,
        message = watch_disk_usage(&ctx) => message,
    };
    if lock(&ctx.record).containers.iter().all(|c| c.finished) {
        // Done already (Succeeded or Failed): Kubernetes evicts only pods
        // that still run, and a finished pod's phase is final.
        containers.await;
        return;
    }
    // Evicted: the containers' futures are dropped, which stops their
    // instances; they end for good whatever the restart policy, as
    // Kubernetes does with a pod over its ephemeral storage.
    tracing::warn!(pod = %ctx.desired.key(), %message, "evicting pod");
    let now = SystemTime::now();
    let containers = {
        let mut record = lock(&ctx.record);
        record.evicted = Some(message.clone());
        record.containers.clone()
    };
    for (i, c) in containers.into_iter().enumerate() {
        let started_at = match &c.state {
            lifecycle::State::Running { started_at } => *started_at,
            _ => now,
        };
        let killed = Termination {
            // 128 + SIGKILL, as for any container killed from outside.
            exit_code: 137,
            reason: "Error",
            message: Some(message.clone()),
            started_at,
            finished_at: now,
        };
        let (c, _) = c.step(
            Observation::Killed(killed),
            ctx.policy,
            &ctx.shared.settings.backoff,
        );
        ctx.update(i, &c);
    }
}

/// Completes, with the eviction message, once an `emptyDir` with a
/// `sizeLimit` uses more than that; never for a pod without one.
async fn watch_disk_usage(ctx: &PodCtx) -> String {
    let limited: Vec<(String, String, u64)> = ctx
        .desired
        .spec
        .volumes
        .iter()
        .filter_map(|v| {
            let q = v.empty_dir.as_ref()?.size_limit.as_ref()?;
            Some((v.name.clone(), q.0.clone(), q.to_units().ok()?))
        })
        .collect();
    if limited.is_empty() {
        return std::future::pending().await;
    }
    let volumes = ctx.shared.settings.volumes.clone();
    let uid = ctx.desired.uid.clone();
    let mut tick = tokio::time::interval(volumes::USAGE_CHECK_EVERY);
    loop {
        tick.tick().await;
        let (volumes, uid, limited) = (volumes.clone(), uid.clone(), limited.clone());
        let over = tokio::task::spawn_blocking(move || {
            limited.into_iter().find_map(|(name, text, limit)| {
                let dir = volumes.empty_dir(&uid, &name)?;
                let used = volumes::disk_usage(&dir).ok()?;
                (used > limit).then(|| {
                    format!("Usage of EmptyDir volume \"{name}\" exceeds the limit \"{text}\" ({used} bytes used, {limit} allowed).")
                })
            })
        })
        .await;
        if let Ok(Some(message)) = over {
            return message;
        }
    }
}

impl PodCtx {
    /// Records container `i`'s new lifecycle state and reports the pod's status.
    fn update(&self, i: usize, container: &Container) {
        let report = {
            let mut record = lock(&self.record);
            if let Some(slot) = record.containers.get_mut(i) {
                *slot = container.clone();
            }
            let status = pod_status(
                &self.desired.spec,
                &record.containers,
                record.start_time,
                Some(&record.report.status),
                SystemTime::now(),
            );
            let mut status = status;
            if let Some(message) = &record.evicted {
                status.reason = Some("Evicted".into());
                status.message = Some(message.clone());
            }
            if status == record.report.status {
                return;
            }
            record.report.status = status;
            record.report.clone()
        };
        let _ = self.shared.changes.send(Change::Updated(report));
    }

    /// Resolves, fetches and compiles a container's image.
    async fn prepare(
        &self,
        spec: &SpecContainer,
    ) -> Result<(String, Arc<runtime::Loaded>), PrepareError> {
        let digest = self.resolve(&spec.image).await?;
        let hex = hex_of(&digest)
            .ok_or_else(|| PrepareError::Pull(format!("bad digest {digest}")))?
            .to_string();
        let path = self.shared.fetcher.store().path(&hex);
        let runtime = self.shared.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&hex, &path))
            .await
            .map_err(|e| PrepareError::Pull(e.to_string()))?;
        match loaded {
            Ok((l, _)) => Ok((digest, l)),
            Err(runtime::Error::Invalid(m)) => Err(PrepareError::Invalid(m)),
            Err(e) => Err(PrepareError::Pull(e.to_string())),
        }
    }

    /// The digest `image` stands for, fetching the module when it is not cached.
    ///
    /// Tags other than `latest` are treated like Kubernetes' `IfNotPresent`:
    /// the digest remembered in the local state wins, so a board restarted
    /// without the hub still starts its pods. `latest` asks the hub first and
    /// falls back to the remembered digest.
    async fn resolve(&self, image: &str) -> Result<String, PrepareError> {
        let reference = ImageRef::parse(image).map_err(|e| PrepareError::Invalid(e.to_string()))?;
        let store = self.shared.fetcher.store();
        let (name, tag) = match &reference {
            ImageRef::Digest(d) => {
                if store.contains(d) {
                    return Ok(d.clone());
                }
                return self
                    .shared
                    .fetcher
                    .pull(d)
                    .await
                    .map_err(|e| PrepareError::Pull(e.to_string()));
            }
            ImageRef::Tag { name, tag } => (name, tag),
        };
        let key = format!("{name}:{tag}");
        let state = self.shared.state.clone();
        let k = key.clone();
        let remembered = tokio::task::spawn_blocking(move || state.image_digest(&k))
            .await
            .ok()
            .and_then(|r| {
                r.map_err(|e| tracing::warn!(error = %e, "cannot read image digests"))
                    .ok()
            })
            .flatten()
            .filter(|d| store.contains(d));
        if tag != "latest"
            && let Some(d) = remembered.clone()
        {
            return Ok(d);
        }
        match self.shared.fetcher.pull(&key).await {
            Ok(digest) => {
                let state = self.shared.state.clone();
                let d = digest.clone();
                let saved =
                    tokio::task::spawn_blocking(move || state.set_image_digest(&key, &d)).await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "cannot remember an image digest");
                }
                Ok(digest)
            }
            Err(e) => match remembered {
                Some(d) => {
                    tracing::warn!(image, error = %e, "using the cached module");
                    Ok(d)
                }
                None => Err(PrepareError::Pull(match e {
                    modules::Error::NotConnected => {
                        format!("cannot pull {image}: not connected to the hub")
                    }
                    e => e.to_string(),
                })),
            },
        }
    }

    /// The preopens of a container (blocking IO, so on the blocking pool).
    async fn mounts(&self, spec: &SpecContainer) -> Result<Vec<runtime::Mount>, String> {
        if spec.volume_mounts.is_empty() {
            return Ok(Vec::new());
        }
        let volumes = self.shared.settings.volumes.clone();
        let (uid, pod, container, data) = (
            self.desired.uid.clone(),
            self.desired.spec.clone(),
            spec.clone(),
            self.data.borrow().clone(),
        );
        tokio::task::spawn_blocking(move || volumes.mounts(&uid, &pod, &container, &data))
            .await
            .map_err(|e| e.to_string())?
    }

    fn run_spec(
        &self,
        spec: &SpecContainer,
        mut env: Vec<(String, String)>,
        mounts: Vec<runtime::Mount>,
        stop: StopSignal,
    ) -> RunSpec {
        let mut argv = if spec.command.is_empty() {
            vec![spec.name.clone()]
        } else {
            spec.command.clone()
        };
        argv.extend(spec.args.iter().cloned());
        let network = self.net_policy(spec);
        // A container that serves is told where it may listen, unless its
        // spec already says (the guest SDK's `net::listen_address`).
        if !network.listen_ports.is_empty() && !env.iter().any(|(k, _)| k == LISTEN_ADDRESS_ENV) {
            let ip = self
                .shared
                .settings
                .pod_address
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            env.push((LISTEN_ADDRESS_ENV.to_string(), ip.to_string()));
        }
        RunSpec {
            network,
            who: format!("{}/{}", self.desired.key(), spec.name),
            argv,
            env,
            memory_limit: spec
                .resources
                .limits
                .get("memory")
                .and_then(|q| q.to_units().ok()),
            cpu_limit_milli: spec
                .resources
                .limits
                .get("cpu")
                .and_then(|q| q.to_milli().ok()),
            mounts,
            stdout: self.log.stream("stdout"),
            stderr: self.log.stream("stderr"),
            stop,
        }
    }

    /// The socket rules of container `spec`: its TCP ports, the board's
    /// pod address, and the pod's `spec.egress` (validated by the hub; an
    /// entry that does not parse allows nothing and is logged).
    fn net_policy(&self, spec: &SpecContainer) -> runtime::NetPolicy {
        let listen_ports = spec
            .ports
            .iter()
            .filter(|p| spoke_api::net::is_tcp(p.protocol.as_deref()))
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .filter(|p| *p != 0)
            .collect();
        let egress = self
            .desired
            .spec
            .egress
            .iter()
            .filter_map(|text| match spoke_api::net::EgressRule::parse(text) {
                Ok(rule) => Some(rule),
                Err(message) => {
                    tracing::warn!(pod = %self.desired.key(), %message, "ignoring an egress rule");
                    None
                }
            })
            .collect();
        runtime::NetPolicy {
            listen_ports,
            listen_ip: self.shared.settings.pod_address,
            egress,
        }
    }

    /// Where the agent's `tcpSocket`/`httpGet` probes connect: the pod
    /// address when the agent has one, else loopback.
    fn probe_ip(&self) -> IpAddr {
        match self.shared.settings.pod_address {
            Some(ip) if !ip.is_unspecified() => ip,
            Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The pod's grace period.
    fn grace(&self) -> Duration {
        grace_of(&self.desired)
    }

    /// Runs one instance of container `i` until it ends, is stopped because
    /// the pod is terminating, or a probe has it restarted; calls its probes
    /// meanwhile. Returns what the lifecycle must observe.
    #[allow(clippy::too_many_arguments)]
    async fn run_instance(
        &self,
        i: usize,
        spec: &SpecContainer,
        loaded: &runtime::Loaded,
        container: &mut Container,
        env: Vec<(String, String)>,
        mounts: Vec<runtime::Mount>,
        terminating: &mut watch::Receiver<Option<Duration>>,
        who: &str,
    ) -> Observation {
        let backoff = self.shared.settings.backoff;
        let started_at = SystemTime::now();
        let start = tokio::time::Instant::now();
        *container = container
            .clone()
            .step(
                Observation::Started { at: started_at },
                self.policy,
                &backoff,
            )
            .0;
        self.update(i, container);
        self.log.instance_started(&spec.name);
        tracing::debug!(container = %who, "instance started");

        let stop = StopSignal::new();
        let run_spec = self.run_spec(spec, env, mounts, stop.clone());
        let probe_spec = run_spec.clone();
        let run = self.shared.runtime.run(loaded, run_spec);
        tokio::pin!(run);
        type ProbeCall<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
        let mut probing: Option<(probe::Kind, Duration, ProbeCall<'_>)> = None;
        // When the instance is dropped if it has not ended, and why.
        let mut kill_at: Option<(tokio::time::Instant, String)> = None;
        let mut deleting = false;
        let far = || start + Duration::from_secs(100 * 365 * 24 * 3600);
        let ended = loop {
            let due = match (&probing, &kill_at) {
                (None, None) => container.probes.next(),
                _ => None,
            };
            tokio::select! {
                outcome = &mut run => break Ok(outcome),
                _ = tokio::time::sleep_until(kill_at.as_ref().map_or_else(far, |k| k.0)), if kill_at.is_some() => {
                    break Err(kill_at.take().map(|k| k.1).unwrap_or_default());
                }
                grace = stopped(terminating), if !deleting => {
                    deleting = true;
                    stop.raise();
                    let at = tokio::time::Instant::now() + grace;
                    if kill_at.as_ref().is_none_or(|k| at < k.0) {
                        kill_at = Some((at, format!(
                            "still running {}s after it was asked to stop (stdin closed): stopped",
                            grace.as_secs()
                        )));
                    }
                }
                _ = tokio::time::sleep_until(due.map_or_else(far, |d| start + d.1)), if due.is_some() => {
                    if let Some((kind, _)) = due {
                        let at = start.elapsed();
                        let timeout = container
                            .probes
                            .timing(kind)
                            .map_or(Duration::from_secs(1), |t| t.timeout);
                        let call = self.call_probe(kind, spec, loaded, &probe_spec, timeout);
                        probing = Some((kind, at, Box::pin(call)));
                    }
                }
                result = async { match probing.as_mut() { Some(p) => (&mut p.2).await, None => std::future::pending().await } }, if probing.is_some() => {
                    let Some((kind, at, _)) = probing.take() else { continue };
                    if let Err(why) = &result {
                        tracing::debug!(container = %who, probe = kind.as_str(), %why, "probe failed");
                    }
                    let (next, effect) = container.clone().step(
                        Observation::Probed { kind, at, result },
                        self.policy,
                        &backoff,
                    );
                    *container = next;
                    if effect == Effect::Kill {
                        tracing::info!(container = %who, why = container.unhealthy().unwrap_or(""), "restarting the container");
                        stop.raise();
                        // A liveness restart gets the spec's grace period.
                        let grace = self.grace();
                        kill_at = Some((tokio::time::Instant::now() + grace, format!(
                            "still running {}s after it was asked to stop (stdin closed): stopped",
                            grace.as_secs()
                        )));
                    }
                    self.update(i, container);
                }
            }
        };
        let finished_at = SystemTime::now();
        let t = match ended {
            Ok(outcome) => termination(outcome, started_at, finished_at),
            Err(message) => {
                tracing::warn!(container = %who, %message, "grace period over");
                Termination {
                    // 128 + SIGKILL, as for a container killed after its grace period.
                    exit_code: 137,
                    reason: "Error",
                    message: Some(message),
                    started_at,
                    finished_at,
                }
            }
        };
        tracing::info!(container = %who, exit_code = t.exit_code, reason = t.reason, deleting, "instance ended");
        if deleting {
            Observation::Killed(t)
        } else {
            Observation::Exited(t)
        }
    }

    /// Calls probe `kind` of a running container, held to its timeout.
    fn call_probe<'a>(
        &'a self,
        kind: probe::Kind,
        spec: &'a SpecContainer,
        loaded: &'a runtime::Loaded,
        run_spec: &'a RunSpec,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'a {
        let probe = match kind {
            probe::Kind::Startup => spec.startup_probe.as_ref(),
            probe::Kind::Liveness => spec.liveness_probe.as_ref(),
            probe::Kind::Readiness => spec.readiness_probe.as_ref(),
        };
        async move {
            let Some(probe) = probe else {
                return Ok(());
            };
            let call = self.probe_once(probe, spec, loaded, run_spec);
            match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f64())),
            }
        }
    }

    async fn probe_once(
        &self,
        probe: &Probe,
        spec: &SpecContainer,
        loaded: &runtime::Loaded,
        run_spec: &RunSpec,
    ) -> Result<(), String> {
        if let Some(exec) = &probe.exec {
            let name = exec.command.first().map_or("", String::as_str);
            return self.shared.runtime.probe(loaded, run_spec, name).await;
        }
        if let Some(tcp) = &probe.tcp_socket {
            let addr = SocketAddr::new(self.probe_ip(), spec.resolve_port(&tcp.port)?);
            return tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"));
        }
        if let Some(http) = &probe.http_get {
            let addr = SocketAddr::new(self.probe_ip(), spec.resolve_port(&http.port)?);
            let path = http.path.as_deref().unwrap_or("/");
            return http_get(addr, path, &http.http_headers).await;
        }
        Err("the probe has no handler".into())
    }
}

/// Completes once the pod is asked to stop, with the grace period it has
/// (or at once, with none, if the sender is gone).
async fn stopped(terminating: &mut watch::Receiver<Option<Duration>>) -> Duration {
    match terminating.wait_for(Option::is_some).await {
        Ok(grace) => grace.unwrap_or_default(),
        Err(_) => Duration::ZERO,
    }
}

/// An HTTP/1.1 `GET` to the pod's port; 200–399 passes, as in
/// Kubernetes. Only the status line is read.
async fn http_get(addr: SocketAddr, path: &str, headers: &[HttpHeader]) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: spoke-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in headers {
        // Validation refuses line breaks in headers; drop any that slipped by.
        if !h.name.contains(['\r', '\n']) && !h.value.contains(['\r', '\n']) {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Drives one container through its lifecycle until the pod stops (or its
/// task is aborted).
async fn run_container(ctx: Arc<PodCtx>, i: usize) {
    let Some(spec) = ctx.desired.spec.containers.get(i).cloned() else {
        return;
    };
    let backoff = ctx.shared.settings.backoff;
    let (container, mut effect) = Container::new(&backoff);
    let mut container = container.with_probes(Probes::of(&spec));
    let mut loaded: Option<Arc<runtime::Loaded>> = None;
    let mut terminating = ctx.terminating.clone();
    let who = format!("{}/{}", ctx.desired.key(), spec.name);
    loop {
        ctx.update(i, &container);
        if terminating.borrow().is_some() {
            // Not running (a running instance is stopped gracefully in
            // `run_instance`): nothing to wait for.
            return;
        }
        let observation = match effect {
            Effect::Pull => {
                let prepared = tokio::select! {
                    p = ctx.prepare(&spec) => p,
                    _ = stopped(&mut terminating) => return,
                };
                match prepared {
                    Ok((digest, l)) => {
                        loaded = Some(l);
                        Observation::ImageReady { digest }
                    }
                    Err(PrepareError::Pull(message)) => {
                        tracing::warn!(container = %who, %message, "image pull failed");
                        Observation::PullFailed { message }
                    }
                    Err(PrepareError::Invalid(message)) => {
                        tracing::warn!(container = %who, %message, "invalid image");
                        Observation::InvalidImage { message }
                    }
                }
            }
            Effect::Run => {
                let Some(l) = loaded.clone() else {
                    // Not reachable through the lifecycle; recover by pulling.
                    effect = Effect::Pull;
                    continue;
                };
                let env = config::env(&spec, &ctx.data.borrow());
                let mounts = match env {
                    Ok(env) => ctx.mounts(&spec).await.map(|m| (env, m)),
                    Err(message) => Err(message),
                };
                let (env, mounts) = match mounts {
                    Ok(m) => m,
                    Err(message) => {
                        tracing::warn!(container = %who, %message, "cannot set up the container's configuration");
                        (container, effect) = container.step(
                            Observation::ConfigFailed { message },
                            ctx.policy,
                            &backoff,
                        );
                        continue;
                    }
                };
                ctx.run_instance(
                    i,
                    &spec,
                    &l,
                    &mut container,
                    env,
                    mounts,
                    &mut terminating,
                    &who,
                )
                .await
            }
            Effect::Sleep(d) => {
                // Waiting for a missing ConfigMap/Secret: try again as soon
                // as the hub sends new data, not only after the back-off.
                let config_wait = matches!(
                    container.state,
                    lifecycle::State::Waiting {
                        reason: lifecycle::WaitReason::CreateContainerConfigError,
                        ..
                    }
                );
                let mut changed = ctx.data.subscribe();
                changed.mark_unchanged();
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    Ok(()) = changed.changed(), if config_wait => {}
                    _ = stopped(&mut terminating) => return,
                }
                Observation::BackoffElapsed
            }
            // `Kill` comes only from a probe, inside `run_instance`.
            Effect::Idle | Effect::Kill => {
                stopped(&mut terminating).await;
                return;
            }
        };
        (container, effect) = container.step(observation, ctx.policy, &backoff);
    }
}

/// Kubernetes' view of how an instance ended.
fn termination(outcome: Outcome, started_at: SystemTime, finished_at: SystemTime) -> Termination {
    let (exit_code, reason, message) = match outcome {
        Outcome::Exited(0) => (0, "Completed", None),
        Outcome::Exited(code) => (code, "Error", None),
        // 128 + SIGKILL, what a container runtime reports for an OOM kill.
        Outcome::OomKilled(m) => (137, "OOMKilled", Some(m)),
        Outcome::Trapped(m) => (1, "Error", Some(m)),
    };
    Termination {
        exit_code,
        reason,
        message,
        started_at,
        finished_at,
    }
}

#[cfg(test)]
mod tests;
