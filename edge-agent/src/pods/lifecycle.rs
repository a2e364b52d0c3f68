//! The pure lifecycle of one container: (state, observation) → (next state, effect).
//!
//! No IO and no clock here: the supervisor observes the world (an image was
//! pulled, the instance exited, a back-off elapsed), feeds the observation in
//! with the current time, and carries out the single effect that comes back.
//! That keeps restart policy and back-off testable table-style without wasmtime.

use std::time::{Duration, SystemTime};

use super::probe::{self, Probes, Verdict};

/// How long a container must run before its back-off resets (Kubernetes: 10 min).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10 * 60);

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Reads the spec field; Kubernetes' default is `Always`. The hub validates
    /// the value, so anything unknown falls back to the default.
    pub fn from_spec(policy: Option<&str>) -> RestartPolicy {
        match policy {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    fn restarts_after(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Exponential back-off bounds (Kubernetes: 10 s doubling to 5 min).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a container is waiting, with Kubernetes' reason strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    ContainerCreating,
    ErrImagePull,
    ImagePullBackOff,
    InvalidImage,
    CrashLoopBackOff,
    /// A volume mount cannot be set up (e.g. a hostPath this node does not allow).
    CreateContainerConfigError,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::ContainerCreating => "ContainerCreating",
            WaitReason::ErrImagePull => "ErrImagePull",
            WaitReason::ImagePullBackOff => "ImagePullBackOff",
            WaitReason::InvalidImage => "InvalidImage",
            WaitReason::CrashLoopBackOff => "CrashLoopBackOff",
            WaitReason::CreateContainerConfigError => "CreateContainerConfigError",
        }
    }
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    /// `Completed`, `Error` or `OOMKilled`.
    pub reason: &'static str,
    pub message: Option<String>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

/// The state of a container as Kubernetes shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: WaitReason,
        message: Option<String>,
    },
    Running {
        started_at: SystemTime,
    },
    Terminated(Termination),
}

/// Everything the supervisor learns about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The module is on disk and compiled.
    ImageReady { digest: String },
    /// Fetching the module failed (hub unreachable, unknown reference, bad digest).
    PullFailed { message: String },
    /// The bytes are not a Wasm program this agent can run.
    InvalidImage { message: String },
    /// An instance was started.
    Started { at: SystemTime },
    /// The instance ended.
    Exited(Termination),
    /// The back-off asked for by [`Effect::Sleep`] is over.
    BackoffElapsed,
    /// The container's configuration (its volume mounts) cannot be set up;
    /// it is tried again after a back-off, as the node may change.
    ConfigFailed { message: String },
    /// The pod was stopped for good (evicted, or deleted): no restart,
    /// whatever the policy.
    Killed(Termination),
    /// A probe of the running instance ran at `at` (from the instance's start).
    Probed {
        kind: probe::Kind,
        at: Duration,
        result: Result<(), String>,
    },
}

/// The one thing the supervisor must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Fetch and compile the image, then observe `ImageReady`, `PullFailed` or `InvalidImage`.
    Pull,
    /// Start an instance (observe `Started`, later `Exited`).
    Run,
    /// Wait, then observe `BackoffElapsed`.
    Sleep(Duration),
    /// A probe failed: ask the running instance to stop, stop it for certain
    /// after the grace period, then observe `Exited` (which restarts it
    /// unless the policy is `Never`).
    Kill,
    /// Nothing more to do until the pod changes.
    Idle,
}

/// One container's lifecycle record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub state: State,
    pub last_state: Option<Termination>,
    pub restart_count: i32,
    /// `sha256:...` of the module, once known.
    pub image_id: Option<String>,
    /// True once an instance has been started: the pod is then past `Pending`.
    pub ever_started: bool,
    /// True when the container ended and the restart policy keeps it down.
    pub finished: bool,
    /// The probes' state, reset at each start.
    pub probes: Probes,
    /// Why a probe asked for a restart of the running instance.
    unhealthy: Option<String>,
    /// The delay of the next back-off.
    next_backoff: Duration,
    /// Whether the running back-off follows a failed pull (retry the pull)
    /// or an exit (run again).
    retry: Effect,
    pull_failures: u32,
}

impl Container {
    /// A container that is about to be created: the first effect is a pull.
    pub fn new(backoff: &Backoff) -> (Container, Effect) {
        let c = Container {
            state: State::Waiting {
                reason: WaitReason::ContainerCreating,
                message: None,
            },
            last_state: None,
            restart_count: 0,
            image_id: None,
            ever_started: false,
            finished: false,
            probes: Probes::default(),
            unhealthy: None,
            next_backoff: backoff.initial,
            retry: Effect::Pull,
            pull_failures: 0,
        };
        (c, Effect::Pull)
    }

    /// The same container with probes.
    pub fn with_probes(mut self, mut probes: Probes) -> Container {
        probes.reset();
        self.probes = probes;
        self
    }

    /// Takes the current back-off delay and doubles the next one, up to the max.
    fn take_backoff(&mut self, backoff: &Backoff) -> Duration {
        let d = self.next_backoff;
        self.next_backoff = (d * 2).min(backoff.max);
        d
    }

    /// Applies one observation.
    pub fn step(
        mut self,
        obs: Observation,
        policy: RestartPolicy,
        backoff: &Backoff,
    ) -> (Container, Effect) {
        match obs {
            Observation::ImageReady { digest } => {
                self.image_id = Some(digest);
                self.pull_failures = 0;
                self.state = State::Waiting {
                    reason: WaitReason::ContainerCreating,
                    message: None,
                };
                // A pull's back-off must not carry over into crash back-off.
                self.next_backoff = backoff.initial;
                (self, Effect::Run)
            }
            Observation::PullFailed { message } => {
                self.pull_failures += 1;
                // Kubernetes shows ErrImagePull for a fresh failure and
                // ImagePullBackOff once it is retrying with back-off.
                let reason = if self.pull_failures == 1 {
                    WaitReason::ErrImagePull
                } else {
                    WaitReason::ImagePullBackOff
                };
                self.state = State::Waiting {
                    reason,
                    message: Some(message),
                };
                self.retry = Effect::Pull;
                let d = self.take_backoff(backoff);
                (self, Effect::Sleep(d))
            }
            Observation::InvalidImage { message } => {
                // The same digest will not compile next time either: wait for
                // a new spec instead of looping.
                self.state = State::Waiting {
                    reason: WaitReason::InvalidImage,
                    message: Some(message),
                };
                (self, Effect::Idle)
            }
            Observation::Started { at } => {
                self.ever_started = true;
                self.state = State::Running { started_at: at };
                self.probes.reset();
                self.unhealthy = None;
                // The instance runs until it exits; nothing else to do.
                (self, Effect::Idle)
            }
            Observation::Exited(mut t) => {
                // Killed for a failing probe: Kubernetes restarts it unless
                // the policy is Never, whatever the exit code.
                let unhealthy = self.unhealthy.take();
                let restarts = match &unhealthy {
                    Some(_) => policy != RestartPolicy::Never,
                    None => policy.restarts_after(t.exit_code),
                };
                if let Some(why) = unhealthy {
                    t.message = Some(match t.message.take() {
                        Some(m) => format!("{why}; {m}"),
                        None => why,
                    });
                }
                let ran = t
                    .finished_at
                    .duration_since(t.started_at)
                    .unwrap_or_default();
                if ran >= BACKOFF_RESET_AFTER {
                    self.next_backoff = backoff.initial;
                }
                if restarts {
                    self.restart_count += 1;
                    self.last_state = Some(t.clone());
                    self.state = State::Waiting {
                        reason: WaitReason::CrashLoopBackOff,
                        message: Some(format!(
                            "back-off restarting the container (last exit code {}, {})",
                            t.exit_code, t.reason
                        )),
                    };
                    self.retry = Effect::Run;
                    let d = self.take_backoff(backoff);
                    (self, Effect::Sleep(d))
                } else {
                    self.finished = true;
                    self.state = State::Terminated(t);
                    (self, Effect::Idle)
                }
            }
            Observation::ConfigFailed { message } => {
                self.state = State::Waiting {
                    reason: WaitReason::CreateContainerConfigError,
                    message: Some(message),
                };
                self.retry = Effect::Run;
                let d = self.take_backoff(backoff);
                (self, Effect::Sleep(d))
            }
            Observation::Killed(t) => {
                if self.finished {
                    // It ended by itself before the kill: its termination
                    // stands, and a Succeeded pod stays Succeeded.
                    return (self, Effect::Idle);
                }
                if let State::Terminated(previous) = &self.state {
                    self.last_state = Some(previous.clone());
                }
                self.finished = true;
                self.state = State::Terminated(t);
                (self, Effect::Idle)
            }
            Observation::Probed { kind, at, result } => {
                if !matches!(self.state, State::Running { .. }) || self.unhealthy.is_some() {
                    // A late result for an instance that ended or is being
                    // stopped changes nothing.
                    return (self, Effect::Idle);
                }
                match self.probes.record(kind, at, result) {
                    Verdict::Keep => (self, Effect::Idle),
                    Verdict::Restart(why) => {
                        self.unhealthy = Some(why);
                        (self, Effect::Kill)
                    }
                }
            }
            Observation::BackoffElapsed => {
                let next = self.retry.clone();
                if next == Effect::Run {
                    self.state = State::Waiting {
                        reason: WaitReason::ContainerCreating,
                        message: None,
                    };
                }
                // During a pull retry the ErrImagePull/ImagePullBackOff state
                // stays visible until the pull resolves.
                (self, next)
            }
        }
    }

    /// Ready = running, and its startup and readiness probes (if any) pass.
    pub fn ready(&self) -> bool {
        matches!(self.state, State::Running { .. }) && self.probes.ready()
    }

    /// Started = running, and its startup probe (if any) passed.
    pub fn started(&self) -> bool {
        matches!(self.state, State::Running { .. }) && self.probes.started()
    }

    /// Why a probe asked for the running instance to stop, if one did.
    pub fn unhealthy(&self) -> Option<&str> {
        self.unhealthy.as_deref()
    }
}

/// The pod phase from its containers' records.
///
/// Succeeded when every container ended with 0 and will not restart; Failed
/// when all ended, at least one non-zero, and none will restart; Running once
/// any container has started (including while it restarts); else Pending.
pub fn pod_phase(containers: &[Container]) -> &'static str {
    if !containers.is_empty() && containers.iter().all(|c| c.finished) {
        let all_ok = containers
            .iter()
            .all(|c| matches!(&c.state, State::Terminated(t) if t.exit_code == 0));
        return if all_ok { "Succeeded" } else { "Failed" };
    }
    if containers.iter().any(|c| c.ever_started) {
        "Running"
    } else {
        "Pending"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn exit(code: i32, ran: Duration) -> Observation {
        Observation::Exited(Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" },
            message: None,
            started_at: t0(),
            finished_at: t0() + ran,
        })
    }

    fn started_container(backoff: &Backoff) -> Container {
        let (c, _) = Container::new(backoff);
        let (c, e) = c.step(
            Observation::ImageReady {
                digest: "sha256:x".into(),
            },
            RestartPolicy::Always,
            backoff,
        );
        assert_eq!(e, Effect::Run);
        let (c, _) = c.step(
            Observation::Started { at: t0() },
            RestartPolicy::Always,
            backoff,
        );
        c
    }

    #[test]
    fn restart_policy_decides_whether_an_exit_restarts() {
        let b = Backoff::default();
        // (policy, exit code, restarts?)
        let table = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 3, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, code, restarts) in table {
            let (c, e) = started_container(&b).step(exit(code, S), policy, &b);
            assert_eq!(
                matches!(e, Effect::Sleep(_)),
                restarts,
                "{policy:?} exit {code}"
            );
            assert_eq!(c.finished, !restarts, "{policy:?} exit {code}");
            if restarts {
                assert_eq!(c.restart_count, 1);
                assert!(matches!(
                    c.state,
                    State::Waiting {
                        reason: WaitReason::CrashLoopBackOff,
                        ..
                    }
                ));
                assert_eq!(c.last_state.as_ref().map(|t| t.exit_code), Some(code));
            } else {
                assert!(matches!(c.state, State::Terminated(ref t) if t.exit_code == code));
            }
        }
    }

    #[test]
    fn crash_backoff_doubles_up_to_the_max_and_resets_after_ten_minutes() {
        let b = Backoff::default();
        let mut c = started_container(&b);
        let mut delays = Vec::new();
        for _ in 0..7 {
            let (next, e) = c.step(exit(1, S), RestartPolicy::Always, &b);
            let Effect::Sleep(d) = e else {
                panic!("expected a back-off, got {e:?}")
            };
            delays.push(d.as_secs());
            let (next, e) = next.step(Observation::BackoffElapsed, RestartPolicy::Always, &b);
            assert_eq!(e, Effect::Run);
            let (next, _) = next.step(Observation::Started { at: t0() }, RestartPolicy::Always, &b);
            c = next;
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        // A long good run resets the back-off.
        let (_, e) = c.step(exit(1, BACKOFF_RESET_AFTER), RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Sleep(Duration::from_secs(10)));
    }

    #[test]
    fn crash_backoff_follows_the_run_times_it_is_told() {
        // The clock is the one in the observations: each row is how long
        // successive instances ran before crashing, and the back-offs that
        // must follow. 10 s doubling to 5 min; reset by a run of 10 min.
        let min = Duration::from_secs(60);
        type Row = (&'static str, Vec<Duration>, [u64; 6]);
        let table: [Row; 4] = [
            ("crashing at once", vec![S; 6], [10, 20, 40, 80, 160, 300]),
            (
                "a 10 minute run resets",
                vec![S, S, S, 10 * min, S, S],
                [10, 20, 40, 10, 20, 40],
            ),
            (
                "just under 10 minutes does not",
                vec![S, S, 10 * min - S, S, S, S],
                [10, 20, 40, 80, 160, 300],
            ),
            (
                "a reset from the cap",
                vec![S, S, S, S, S, 2 * BACKOFF_RESET_AFTER],
                [10, 20, 40, 80, 160, 10],
            ),
        ];
        let b = Backoff::default();
        for (what, runs, want) in table {
            let mut c = started_container(&b);
            let mut got = Vec::new();
            for ran in runs {
                let (next, e) = c.step(exit(1, ran), RestartPolicy::OnFailure, &b);
                let Effect::Sleep(d) = e else {
                    panic!("{what}: expected a back-off, got {e:?}")
                };
                got.push(d.as_secs());
                let (next, e) =
                    next.step(Observation::BackoffElapsed, RestartPolicy::OnFailure, &b);
                assert_eq!(e, Effect::Run, "{what}");
                (c, _) = next.step(
                    Observation::Started { at: t0() },
                    RestartPolicy::OnFailure,
                    &b,
                );
            }
            assert_eq!(got, want, "{what}");
            assert_eq!(c.restart_count, 6, "{what}");
        }
    }

    #[test]
    fn pull_failures_show_err_image_pull_then_image_pull_backoff_and_retry_the_pull() {
        let b = Backoff {
            initial: S,
            max: 4 * S,
        };
        let (c, e) = Container::new(&b);
        assert_eq!(e, Effect::Pull);
        let fail = || Observation::PullFailed {
            message: "hub unreachable".into(),
        };
        let (c, e) = c.step(fail(), RestartPolicy::Never, &b);
        assert_eq!(e, Effect::Sleep(S));
        assert!(matches!(
            c.state,
            State::Waiting {
                reason: WaitReason::ErrImagePull,
                ..
            }
        ));
        let (c, e) = c.step(Observation::BackoffElapsed, RestartPolicy::Never, &b);
        assert_eq!(
            e,
            Effect::Pull,
            "a pull is retried even with restartPolicy Never"
        );
        let (c, e) = c.step(fail(), RestartPolicy::Never, &b);
        assert_eq!(e, Effect::Sleep(2 * S));
        assert!(matches!(
            c.state,
            State::Waiting {
                reason: WaitReason::ImagePullBackOff,
                ..
            }
        ));
        assert_eq!(pod_phase(std::slice::from_ref(&c)), "Pending");
        // Once pulled, the crash back-off starts from the initial delay.
        let (c, e) = c.step(
            Observation::ImageReady {
                digest: "sha256:x".into(),
            },
            RestartPolicy::Always,
            &b,
        );
        assert_eq!(e, Effect::Run);
        let (c, _) = c.step(Observation::Started { at: t0() }, RestartPolicy::Always, &b);
        let (_, e) = c.step(exit(1, S), RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Sleep(S));
    }

    #[test]
    fn a_config_error_waits_and_retries_the_run_and_a_kill_is_final() {
        let b = Backoff::default();
        let c = started_container(&b);
        let (c, e) = c.step(exit(1, S), RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Sleep(10 * S));
        let (c, e) = c.step(Observation::BackoffElapsed, RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Run);
        let (c, e) = c.step(
            Observation::ConfigFailed {
                message: "hostPath /etc is not allowed".into(),
            },
            RestartPolicy::Always,
            &b,
        );
        assert_eq!(e, Effect::Sleep(20 * S));
        assert!(matches!(
            &c.state,
            State::Waiting { reason: WaitReason::CreateContainerConfigError, message: Some(m) }
                if m.contains("/etc")
        ));
        assert_eq!(c.restart_count, 1, "a config error is not a restart");
        let (c, e) = c.step(Observation::BackoffElapsed, RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Run);

        // Killed: terminated for good, even with restartPolicy Always.
        let (c, _) = c.step(Observation::Started { at: t0() }, RestartPolicy::Always, &b);
        let Observation::Exited(t) = exit(137, S) else {
            unreachable!()
        };
        let (c, e) = c.step(Observation::Killed(t), RestartPolicy::Always, &b);
        assert_eq!(e, Effect::Idle);
        assert!(c.finished);
        assert_eq!(pod_phase(std::slice::from_ref(&c)), "Failed");
    }

    #[test]
    fn failing_probes_restart_unless_never_and_readiness_follows_its_probe() {
        use crate::pods::probe::{Kind, Timing};
        let b = Backoff::default();
        let t = Timing {
            initial_delay: Duration::ZERO,
            period: S,
            timeout: S,
            success_threshold: 1,
            failure_threshold: 2,
        };
        let probed = |kind, ok: bool| Observation::Probed {
            kind,
            at: S,
            result: if ok { Ok(()) } else { Err("returned 1".into()) },
        };
        // (policy, exit code after the kill, restarts?)
        let table = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::OnFailure, 0, true),
            (RestartPolicy::OnFailure, 137, true),
            (RestartPolicy::Never, 137, false),
        ];
        for (policy, code, restarts) in table {
            let (c, _) = Container::new(&b);
            let c = c.with_probes(Probes::new(None, Some(t), Some(t)));
            let (c, _) = c.step(
                Observation::ImageReady {
                    digest: "sha256:x".into(),
                },
                policy,
                &b,
            );
            let (c, _) = c.step(Observation::Started { at: t0() }, policy, &b);
            assert!(
                c.started() && !c.ready(),
                "not ready before readiness passes"
            );
            let (c, e) = c.step(probed(Kind::Readiness, true), policy, &b);
            assert_eq!(e, Effect::Idle);
            assert!(c.ready());
            let (c, e) = c.step(probed(Kind::Liveness, false), policy, &b);
            assert_eq!(e, Effect::Idle, "one failure of two");
            let (c, e) = c.step(probed(Kind::Liveness, false), policy, &b);
            assert_eq!(e, Effect::Kill, "{policy:?}");
            // Results arriving while it stops change nothing.
            let (c, e) = c.step(probed(Kind::Liveness, false), policy, &b);
            assert_eq!(e, Effect::Idle);
            let (c, e) = c.step(exit(code, S), policy, &b);
            assert_eq!(matches!(e, Effect::Sleep(_)), restarts, "{policy:?} {code}");
            let ended = if restarts {
                assert_eq!(c.restart_count, 1);
                c.last_state.clone().unwrap()
            } else {
                let State::Terminated(t) = &c.state else {
                    panic!("{:?}", c.state)
                };
                t.clone()
            };
            assert_eq!(ended.exit_code, code);
            assert_eq!(
                ended.message.as_deref(),
                Some("Liveness probe failed: returned 1")
            );
            assert!(!c.ready());
            if restarts {
                // The next instance starts with fresh probes.
                let (c, _) = c.step(Observation::BackoffElapsed, policy, &b);
                let (c, _) = c.step(Observation::Started { at: t0() }, policy, &b);
                assert!(!c.ready() && c.unhealthy().is_none());
            }
        }
    }

    #[test]
    fn a_kill_after_the_container_finished_changes_nothing() {
        // Found by the property test below: an eviction after a container
        // had completed turned a Succeeded pod into a Failed one.
        let b = Backoff::default();
        let (done, _) = started_container(&b).step(exit(0, S), RestartPolicy::OnFailure, &b);
        assert_eq!(pod_phase(std::slice::from_ref(&done)), "Succeeded");
        let Observation::Exited(t) = exit(137, S) else {
            unreachable!()
        };
        let (after, e) = done
            .clone()
            .step(Observation::Killed(t), RestartPolicy::OnFailure, &b);
        assert_eq!(e, Effect::Idle);
        assert_eq!(after, done);
    }

    #[test]
    fn invalid_images_wait_without_looping() {
        let b = Backoff::default();
        let (c, _) = Container::new(&b);
        let (c, e) = c.step(
            Observation::InvalidImage {
                message: "bad magic".into(),
            },
            RestartPolicy::Always,
            &b,
        );
        assert_eq!(e, Effect::Idle);
        assert!(matches!(
            c.state,
            State::Waiting {
                reason: WaitReason::InvalidImage,
                message: Some(ref m)
            } if m == "bad magic"
        ));
    }

    #[test]
    fn pod_phase_follows_kubernetes() {
        let b = Backoff::default();
        let (pending, _) = Container::new(&b);
        let running = started_container(&b);
        let (succeeded, _) = started_container(&b).step(exit(0, S), RestartPolicy::Never, &b);
        let (failed, _) = started_container(&b).step(exit(2, S), RestartPolicy::Never, &b);
        let (restarting, _) = started_container(&b).step(exit(2, S), RestartPolicy::Always, &b);
        let table: [(Vec<&Container>, &str); 7] = [
            (vec![&pending], "Pending"),
            (vec![&running], "Running"),
            (vec![&restarting], "Running"),
            (vec![&succeeded], "Succeeded"),
            (vec![&failed], "Failed"),
            (vec![&succeeded, &failed], "Failed"),
            (vec![&succeeded, &running], "Running"),
        ];
        for (containers, phase) in table {
            let containers: Vec<Container> = containers.into_iter().cloned().collect();
            assert_eq!(pod_phase(&containers), phase, "{containers:?}");
        }
    }

    /// Property tests: any run of observations keeps the lifecycle's
    /// invariants. The world answers each effect the way the supervisor
    /// can (a pull ends in a digest, a failure or a bad image; a run starts
    /// or cannot be set up; a running instance exits, is probed or is
    /// killed), with any codes, times and probe results.
    mod properties {
        use proptest::prelude::*;
        use spoke_api::fuzz::config;

        use super::*;
        use crate::pods::probe::{Kind, Timing};

        /// What the world does next, read against the current effect.
        #[derive(Debug, Clone)]
        enum Move {
            /// The normal outcome of the effect, with a variant number.
            Answer(u8),
            /// The pod is evicted or deleted.
            Kill,
        }

        fn moves() -> impl Strategy<Value = Vec<(Move, i32, u64, bool)>> {
            let mv = prop_oneof![
                12 => any::<u8>().prop_map(Move::Answer),
                1 => Just(Move::Kill),
            ];
            let code = prop_oneof![Just(0), Just(1), Just(137), any::<i32>()];
            // Run times: instant, seconds, around the 10-minute reset, absurd.
            let ran = prop_oneof![0u64..5, 590u64..610, 0u64..100_000, Just(u64::MAX / 4)];
            prop::collection::vec((mv, code, ran, any::<bool>()), 0..60)
        }

        fn policy() -> impl Strategy<Value = RestartPolicy> {
            prop_oneof![
                Just(RestartPolicy::Always),
                Just(RestartPolicy::OnFailure),
                Just(RestartPolicy::Never)
            ]
        }

        fn t0() -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        }

        fn termination(code: i32, ran: u64) -> Termination {
            Termination {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" },
                message: None,
                started_at: t0(),
                // Some clocks go backwards: a finish before the start.
                finished_at: t0()
                    .checked_add(Duration::from_secs(ran))
                    .unwrap_or(t0() - Duration::from_secs(1)),
            }
        }

        /// The observation the supervisor could make after `effect`.
        fn observe(
            effect: &Effect,
            c: &Container,
            m: &(Move, i32, u64, bool),
        ) -> Option<Observation> {
            let (mv, code, ran, ok) = m;
            let n = match mv {
                Move::Kill => return Some(Observation::Killed(termination(137, *ran))),
                Move::Answer(n) => *n,
            };
            Some(match effect {
                Effect::Pull => match n % 3 {
                    0 => Observation::ImageReady {
                        digest: "sha256:x".into(),
                    },
                    1 => Observation::PullFailed {
                        message: "hub unreachable".into(),
                    },
                    _ => Observation::InvalidImage {
                        message: "bad magic".into(),
                    },
                },
                Effect::Run => match n % 4 {
                    0 => Observation::ConfigFailed {
                        message: "no such ConfigMap".into(),
                    },
                    _ => Observation::Started { at: t0() },
                },
                Effect::Sleep(_) => Observation::BackoffElapsed,
                Effect::Idle | Effect::Kill if matches!(c.state, State::Running { .. }) => {
                    match n % 3 {
                        0 => Observation::Exited(termination(*code, *ran)),
                        _ => Observation::Probed {
                            kind: [Kind::Startup, Kind::Liveness, Kind::Readiness]
                                [usize::from(n) % 3],
                            at: Duration::from_secs(*ran % 1000),
                            result: if *ok {
                                Ok(())
                            } else {
                                Err("returned 1".into())
                            },
                        },
                    }
                }
                // Waiting for a new spec, or finished: nothing more happens.
                Effect::Idle | Effect::Kill => return None,
            })
        }

        fn rank(phase: &str) -> u8 {
            match phase {
                "Pending" => 0,
                "Running" => 1,
                "Succeeded" | "Failed" => 2,
                other => panic!("not a pod phase: {other}"),
            }
        }

        fn timing() -> Timing {
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 2,
            }
        }

        proptest! {
            #![proptest_config(config(512))]

            /// Driven as the supervisor drives it: restartCount only grows,
            /// by one per restarting exit; back-offs stay within 10 s..5 min;
            /// the phase never goes back (Pending → Running → Succeeded or
            /// Failed, the last two final); a finished container is
            /// terminated and does nothing more; Never never restarts;
            /// readiness needs a running instance.
            #[test]
            fn the_lifecycle_keeps_its_invariants_whatever_happens(
                policy in policy(), probes in any::<bool>(), moves in moves(),
            ) {
                let b = Backoff::default();
                let (c, mut effect) = Container::new(&b);
                let mut c = if probes {
                    c.with_probes(Probes::new(Some(timing()), Some(timing()), Some(timing())))
                } else {
                    c
                };
                let mut phase = pod_phase(std::slice::from_ref(&c));
                prop_assert_eq!(phase, "Pending");
                for m in &moves {
                    let Some(obs) = observe(&effect, &c, m) else { break };
                    let before = c.clone();
                    let exited = matches!(obs, Observation::Exited(_));
                    let killed = matches!(obs, Observation::Killed(_));
                    (c, effect) = c.step(obs, policy, &b);

                    prop_assert!(c.restart_count >= before.restart_count);
                    prop_assert!(c.restart_count - before.restart_count <= i32::from(exited));
                    if policy == RestartPolicy::Never {
                        prop_assert_eq!(c.restart_count, 0);
                    }
                    if let Effect::Sleep(d) = effect {
                        prop_assert!(d >= b.initial && d <= b.max, "back-off {:?}", d);
                    }
                    let now = pod_phase(std::slice::from_ref(&c));
                    prop_assert!(rank(now) >= rank(phase), "{} after {}", now, phase);
                    if rank(phase) == 2 {
                        prop_assert_eq!(now, phase, "a final phase changed");
                    }
                    phase = now;
                    prop_assert_eq!(c.finished, matches!(c.state, State::Terminated(_)));
                    if c.finished {
                        prop_assert_eq!(&effect, &Effect::Idle);
                    }
                    if killed {
                        prop_assert!(c.finished);
                    }
                    if c.ready() || c.started() {
                        let running = matches!(c.state, State::Running { .. });
                        prop_assert!(running);
                    }
                    if c.restart_count > before.restart_count {
                        prop_assert!(c.last_state.is_some());
                        let waiting = matches!(c.state, State::Waiting { reason: WaitReason::CrashLoopBackOff, .. });
                        prop_assert!(waiting);
                    }
                }
            }

            /// Fed anything in any order (which the supervisor never does),
            /// it still neither panics nor lets restartCount fall or a
            /// back-off leave its bounds.
            #[test]
            fn any_observation_in_any_state_keeps_the_counters_sane(
                policy in policy(),
                moves in moves(),
            ) {
                let b = Backoff::default();
                let (mut c, _) = Container::new(&b);
                for (i, m) in moves.iter().enumerate() {
                    // Pretend the effect was each kind in turn.
                    let effects = [Effect::Pull, Effect::Run, Effect::Sleep(b.initial), Effect::Idle];
                    let fake = State::Running { started_at: t0() };
                    let mut running = c.clone();
                    running.state = fake;
                    let Some(obs) = observe(&effects[i % 4], &running, m) else { continue };
                    let before = c.restart_count;
                    let effect;
                    (c, effect) = c.step(obs, policy, &b);
                    prop_assert!(c.restart_count >= before);
                    if let Effect::Sleep(d) = effect {
                        prop_assert!(d >= b.initial && d <= b.max, "back-off {:?}", d);
                    }
                    rank(pod_phase(std::slice::from_ref(&c)));
                }
            }
        }
    }
}
