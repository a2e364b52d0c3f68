//! The pure bookkeeping of a container's probes: when each is due, and what
//! a result means (started, ready, or restart), as Kubernetes defines it.
//!
//! No IO and no clock: times are offsets from the instance's start, handed in
//! by the supervisor, which makes the calls (see `supervisor`).
//!
//! - A startup probe, while it has not passed, holds back the other two;
//!   `failureThreshold` failures in a row restart the container.
//! - A liveness probe restarts the container after `failureThreshold`
//!   failures in a row.
//! - A readiness probe makes the container ready after `successThreshold`
//!   successes in a row and unready after `failureThreshold` failures.
//!   Without one, a container is ready once it has started.

use std::time::Duration;

use spoke_api::core::{Container as SpecContainer, Probe};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// The name Kubernetes uses in messages (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// The timing fields of a probe, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    /// Reads a probe's fields (validated by the hub; out-of-range values are
    /// clamped to the smallest allowed).
    pub fn of(p: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// One probe's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracker {
    timing: Timing,
    /// When it is next due, from the instance's start.
    next_at: Duration,
    successes: u32,
    failures: u32,
}

impl Tracker {
    fn new(timing: Timing) -> Tracker {
        Tracker {
            timing,
            next_at: timing.initial_delay,
            successes: 0,
            failures: 0,
        }
    }

    /// Counts a result; returns `Some(true)` when the success threshold was
    /// just reached, `Some(false)` when the failure threshold was.
    fn record(&mut self, at: Duration, ok: bool) -> Option<bool> {
        self.next_at = at + self.timing.period;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= self.timing.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.timing.failure_threshold).then_some(false)
        }
    }
}

/// What the supervisor must do after a probe result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep running (readiness may have changed: read [`Probes::ready`]).
    Keep,
    /// Restart the container: the message says which probe failed and why.
    Restart(String),
}

/// The probes of one container, reset at each instance start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Probes {
    startup: Option<Tracker>,
    liveness: Option<Tracker>,
    readiness: Option<Tracker>,
    /// The startup probe passed (or there is none).
    started: bool,
    /// The readiness probe passes (or there is none and the container started).
    ready: bool,
}

impl Probes {
    /// The probes of `spec`, before any instance started.
    pub fn of(spec: &SpecContainer) -> Probes {
        Probes::new(
            spec.startup_probe.as_ref().map(Timing::of),
            spec.liveness_probe.as_ref().map(Timing::of),
            spec.readiness_probe.as_ref().map(Timing::of),
        )
    }

    pub fn new(
        startup: Option<Timing>,
        liveness: Option<Timing>,
        readiness: Option<Timing>,
    ) -> Probes {
        let mut p = Probes {
            startup: startup.map(Tracker::new),
            liveness: liveness.map(Tracker::new),
            readiness: readiness.map(Tracker::new),
            started: false,
            ready: false,
        };
        p.reset();
        p
    }

    /// A new instance starts: counters and schedules start again, and the
    /// container is neither started nor ready until its probes say so.
    pub fn reset(&mut self) {
        for t in [&mut self.startup, &mut self.liveness, &mut self.readiness]
            .into_iter()
            .flatten()
        {
            *t = Tracker::new(t.timing);
        }
        self.started = self.startup.is_none();
        self.ready = self.started && self.readiness.is_none();
    }

    /// Whether the startup probe passed (or there is none).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether the container counts as ready (while it runs).
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The timing of a probe, if the container has it.
    pub fn timing(&self, kind: Kind) -> Option<Timing> {
        self.tracker(kind).map(|t| t.timing)
    }

    fn tracker(&self, kind: Kind) -> Option<&Tracker> {
        match kind {
            Kind::Startup => self.startup.as_ref(),
            Kind::Liveness => self.liveness.as_ref(),
            Kind::Readiness => self.readiness.as_ref(),
        }
    }

    /// The probe to run next and when (from the instance's start); `None`
    /// when no probe is left to run. Until the startup probe passes it is
    /// the only one; afterwards the earliest of liveness and readiness.
    pub fn next(&self) -> Option<(Kind, Duration)> {
        if !self.started {
            return self.startup.as_ref().map(|t| (Kind::Startup, t.next_at));
        }
        [
            (Kind::Liveness, self.liveness.as_ref()),
            (Kind::Readiness, self.readiness.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t.next_at)))
        .min_by_key(|(_, at)| *at)
    }

    /// Records the result of probe `kind` that ran at `at`.
    pub fn record(&mut self, kind: Kind, at: Duration, result: Result<(), String>) -> Verdict {
        let ok = result.is_ok();
        let tracker = match kind {
            Kind::Startup => self.startup.as_mut(),
            Kind::Liveness => self.liveness.as_mut(),
            Kind::Readiness => self.readiness.as_mut(),
        };
        let Some(tracker) = tracker else {
            return Verdict::Keep;
        };
        let crossed = tracker.record(at, ok);
        let failure = || {
            format!(
                "{} probe failed: {}",
                kind.as_str(),
                result.as_ref().err().map(String::as_str).unwrap_or("")
            )
        };
        match (kind, crossed) {
            (Kind::Startup, Some(true)) => {
                self.started = true;
                self.ready = self.readiness.is_none();
                Verdict::Keep
            }
            (Kind::Startup | Kind::Liveness, Some(false)) => Verdict::Restart(failure()),
            (Kind::Readiness, Some(passed)) => {
                self.ready = passed;
                Verdict::Keep
            }
            _ => Verdict::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(initial: u64, period: u64, success: u32, failure: u32) -> Timing {
        Timing {
            initial_delay: Duration::from_secs(initial),
            period: Duration::from_secs(period),
            timeout: S,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn ok() -> Result<(), String> {
        Ok(())
    }

    fn fail() -> Result<(), String> {
        Err("returned 1".into())
    }

    #[test]
    fn kubernetes_defaults_fill_in_missing_fields() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t, timing(0, 10, 1, 3));
        let t = Timing::of(&Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(0),
            timeout_seconds: Some(3),
            success_threshold: Some(2),
            failure_threshold: Some(1),
            ..Default::default()
        });
        assert_eq!(
            (t.initial_delay, t.period, t.timeout),
            (5 * S, S, 3 * S),
            "a period below 1 s is clamped to 1 s"
        );
        assert_eq!((t.success_threshold, t.failure_threshold), (2, 1));
    }

    #[test]
    fn without_probes_a_container_is_started_and_ready_and_nothing_is_due() {
        let p = Probes::new(None, None, None);
        assert!(p.started() && p.ready());
        assert_eq!(p.next(), None);
    }

    #[test]
    fn results_move_readiness_and_restart_as_kubernetes_does() {
        // Each row: the probes, then (kind, result) in order with the
        // expected (started, ready, restart?) after each.
        type Step = (Kind, bool, (bool, bool, bool));
        let table: Vec<(&str, Probes, Vec<Step>)> = vec![
            (
                "readiness needs successThreshold successes, loses it after failureThreshold failures",
                Probes::new(None, None, Some(timing(0, 1, 2, 2))),
                vec![
                    (Kind::Readiness, true, (true, false, false)),
                    (Kind::Readiness, true, (true, true, false)),
                    (Kind::Readiness, false, (true, true, false)),
                    (Kind::Readiness, true, (true, true, false)),
                    (Kind::Readiness, false, (true, true, false)),
                    (Kind::Readiness, false, (true, false, false)),
                    (Kind::Readiness, true, (true, false, false)),
                    (Kind::Readiness, true, (true, true, false)),
                ],
            ),
            (
                "liveness restarts after failureThreshold failures in a row only",
                Probes::new(None, Some(timing(0, 1, 1, 3)), None),
                vec![
                    (Kind::Liveness, false, (true, true, false)),
                    (Kind::Liveness, false, (true, true, false)),
                    (Kind::Liveness, true, (true, true, false)),
                    (Kind::Liveness, false, (true, true, false)),
                    (Kind::Liveness, false, (true, true, false)),
                    (Kind::Liveness, false, (true, true, true)),
                ],
            ),
            (
                "a startup probe gates readiness, then hands over",
                Probes::new(
                    Some(timing(0, 1, 1, 5)),
                    Some(timing(0, 1, 1, 1)),
                    Some(timing(0, 1, 1, 1)),
                ),
                vec![
                    (Kind::Startup, false, (false, false, false)),
                    (Kind::Startup, true, (true, false, false)),
                    (Kind::Readiness, true, (true, true, false)),
                    (Kind::Liveness, false, (true, true, true)),
                ],
            ),
            (
                "a startup probe that keeps failing restarts",
                Probes::new(Some(timing(0, 1, 1, 2)), None, None),
                vec![
                    (Kind::Startup, false, (false, false, false)),
                    (Kind::Startup, false, (false, false, true)),
                ],
            ),
            (
                "a startup probe alone makes the container ready once it passes",
                Probes::new(Some(timing(0, 1, 1, 2)), None, None),
                vec![(Kind::Startup, true, (true, true, false))],
            ),
        ];
        for (what, mut probes, steps) in table {
            for (n, (kind, passed, (started, ready, restart))) in steps.into_iter().enumerate() {
                let v = probes.record(kind, n as u32 * S, if passed { ok() } else { fail() });
                assert_eq!(
                    (probes.started(), probes.ready(), v != Verdict::Keep),
                    (started, ready, restart),
                    "{what}: step {n}"
                );
            }
        }
    }

    #[test]
    fn probes_are_due_after_their_initial_delay_then_every_period() {
        let mut p = Probes::new(
            Some(timing(2, 1, 1, 3)),
            Some(timing(5, 10, 1, 3)),
            Some(timing(0, 3, 1, 3)),
        );
        assert_eq!(p.next(), Some((Kind::Startup, 2 * S)), "only startup first");
        p.record(Kind::Startup, 2 * S, fail());
        assert_eq!(p.next(), Some((Kind::Startup, 3 * S)));
        p.record(Kind::Startup, 3 * S, ok());
        // Readiness's initial delay (0) is long past: due at once.
        assert_eq!(p.next(), Some((Kind::Readiness, Duration::ZERO)));
        p.record(Kind::Readiness, 3 * S, ok());
        assert_eq!(p.next(), Some((Kind::Liveness, 5 * S)));
        p.record(Kind::Liveness, 5 * S, ok());
        assert_eq!(p.next(), Some((Kind::Readiness, 6 * S)));
        // A restart starts the schedule and the gates again.
        p.reset();
        assert!(!p.started() && !p.ready());
        assert_eq!(p.next(), Some((Kind::Startup, 2 * S)));
    }

    #[test]
    fn the_restart_message_names_the_probe_and_the_failure() {
        let mut p = Probes::new(None, Some(timing(0, 1, 1, 1)), None);
        assert_eq!(
            p.record(Kind::Liveness, S, Err("healthz returned 7".into())),
            Verdict::Restart("Liveness probe failed: healthz returned 7".into())
        );
    }
}
