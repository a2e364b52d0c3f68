//! CPU limits: a pod's guest is charged for the time it runs and made to
//! wait, asynchronously, once it has used its share.
//!
//! The share is a token bucket, in the spirit of Linux's CFS bandwidth
//! control: the bucket refills at `cpu` seconds per second (`250m` → a
//! quarter of a second per second) and holds at most one [`PERIOD`] worth
//! (`cpu × PERIOD`), so a pod that was idle may burst that much and no more.
//! Every poll of the guest's future (one stretch of guest code between two
//! yields: an epoch tick, or a host call that waits) is charged the CPU time
//! its thread used during the poll (`CLOCK_THREAD_CPUTIME_ID`), as CFS
//! charges a cgroup the time its tasks ran. When the bucket is empty the
//! future stays pending on a tokio timer until it has refilled: no tokio
//! worker is blocked, and the guest, stopped at its yield, simply does not
//! run.
//!
//! Why CPU time and not wall time: on a busy board the kernel shares a core
//! between the guest's thread and others in the middle of a slice. Charged
//! at wall time, a pod was billed for time other processes ran, and its
//! share fell with the board's load (to a few percent of its limit at a
//! load of 15 on two cores).
//!
//! Caveats: the guest yields at epoch ticks ([`super::EPOCH_TICK`]), so it can
//! overrun its bucket by up to one tick; the overrun is debt paid back by a
//! longer wait, so the long-run share stays at the limit. Work a host call
//! hands to another thread (wasmtime-wasi's blocking file IO) is not
//! charged, as the kernel's own IO is not charged to a cgroup's CPU quota.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The accounting period: a pod may run `cpu × PERIOD` in one burst.
pub const PERIOD: Duration = Duration::from_millis(100);

/// The smallest limit honoured (Kubernetes' smallest CPU unit, `1m`).
const MIN_MILLI: u64 = 1;

/// The CPU bucket of one instance. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct Quota {
    milli: u64,
    /// Nanoseconds of CPU left; negative after an overrun (debt).
    budget: i128,
    /// The bucket's size in nanoseconds.
    cap: i128,
    refilled_at: Instant,
}

impl Quota {
    /// A full bucket for a limit of `milli` thousandths of a CPU.
    pub fn new(milli: u64, now: Instant) -> Quota {
        let milli = milli.max(MIN_MILLI);
        let cap = PERIOD.as_nanos() as i128 * milli as i128 / 1000;
        Quota {
            milli,
            budget: cap,
            cap,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        let earned = elapsed.as_nanos() as i128 * self.milli as i128 / 1000;
        self.budget = (self.budget + earned).min(self.cap);
    }

    /// Charges `ran` of CPU, used just before `now`. Returns how long the
    /// instance must wait before it may run again, or `None` when it may go on.
    pub fn charge(&mut self, ran: Duration, now: Instant) -> Option<Duration> {
        self.refill(now);
        self.budget -= ran.as_nanos() as i128;
        if self.budget >= 0 {
            return None;
        }
        // The time it takes the bucket to climb back to zero.
        let nanos = (-self.budget) * 1000 / self.milli as i128;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

/// CPU time the calling thread has used (a system call: the vDSO does not
/// serve per-thread clocks; well under a microsecond, twice per guest poll).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Runs `inner` within `quota`: see the module docs.
pub fn throttle<F: Future>(quota: Quota, inner: F) -> Throttled<F> {
    Throttled {
        inner: Box::pin(inner),
        quota,
        wait: None,
        used: Duration::ZERO,
    }
}

/// A future held to a CPU quota.
pub struct Throttled<F> {
    inner: Pin<Box<F>>,
    quota: Quota,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    used: Duration,
}

impl<F> Throttled<F> {
    /// CPU time charged so far.
    pub fn used(&self) -> Duration {
        self.used
    }
}

impl<F: Future> Future for Throttled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the inner future is boxed).
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.wait = None;
        }
        let start = thread_cpu_time();
        let result = this.inner.as_mut().poll(cx);
        let ran = thread_cpu_time().saturating_sub(start);
        this.used += ran;
        if result.is_ready() {
            return result;
        }
        if let Some(d) = this.quota.charge(ran, Instant::now()) {
            let mut wait = Box::pin(tokio::time::sleep(d));
            // Registers the timer with this task's waker.
            if wait.as_mut().poll(cx).is_pending() {
                this.wait = Some(wait);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_bucket_holds_one_period_and_refills_at_the_limit() {
        let t0 = Instant::now();
        // (limit in millicores, [(ran, at ms since t0)], expected waits)
        type Case = (u64, &'static [(u64, u64)], &'static [Option<u64>]);
        let table: [Case; 5] = [
            // 200m: a 20 ms burst fits; 10 ms more, 10 ms later, earned
            // 2 ms and leaves 8 ms of debt, paid back at 0.2 in 40 ms.
            (200, &[(20, 20), (10, 30)], &[None, Some(40)]),
            // Idle for 10 ms more earns 2 ms more: 6 ms of debt, 30 ms.
            (200, &[(20, 20), (10, 40)], &[None, Some(30)]),
            // After a long idle time the bucket is full again, not fuller.
            (
                200,
                &[(20, 20), (20, 10_000), (1, 10_001)],
                &[None, None, Some(4)],
            ),
            // A whole CPU: 100 ms per period.
            (1000, &[(100, 100), (10, 110)], &[None, None]),
            // 0 is taken as the smallest unit, 1m: 100 µs per period.
            (0, &[(1, 1)], &[Some(900)]),
        ];
        for (milli, runs, waits) in table {
            let mut q = Quota::new(milli, t0);
            let got: Vec<Option<u64>> = runs
                .iter()
                .map(|&(ran, at)| {
                    q.charge(MS * ran as u32, t0 + MS * at as u32)
                        .map(|d| d.as_millis() as u64)
                })
                .collect();
            assert_eq!(got, waits, "{milli}m {runs:?}");
        }
    }

    /// A future that, on each poll, sleeps (wall time, no CPU) and returns
    /// pending, waking itself; ready after `polls` polls.
    struct Sleepy {
        polls: u32,
        nap: Duration,
    }

    impl Future for Sleepy {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.polls == 0 {
                return Poll::Ready(());
            }
            self.polls -= 1;
            std::thread::sleep(self.nap);
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_poll_is_charged_the_cpu_time_it_used_not_the_wall_time() {
        // Three polls of 20 ms wall time each, spent asleep: a thread that
        // sleeps uses (next to) no CPU, as a guest's thread preempted by a
        // busy board's other processes does. Charged at wall time, 60 ms at
        // 100m would have left the pod waiting ~0.5 s.
        let nap = Duration::from_millis(20);
        let mut throttled = throttle(Quota::new(100, Instant::now()), Sleepy { polls: 3, nap });
        (&mut throttled).await;
        let used = throttled.used();
        assert!(used < Duration::from_millis(10), "charged {used:?}");
    }

    #[test]
    fn over_a_long_run_a_spinning_guest_gets_its_share() {
        // A guest that always runs a 10 ms slice, at 250m, for 10 s of
        // simulated time: it may run about 2.5 s (plus the first burst).
        let t0 = Instant::now();
        let mut q = Quota::new(250, t0);
        let (mut now, mut ran) = (t0, Duration::ZERO);
        while now < t0 + Duration::from_secs(10) {
            now += 10 * MS;
            ran += 10 * MS;
            if let Some(wait) = q.charge(10 * MS, now) {
                now += wait;
            }
        }
        let share = ran.as_secs_f64() / (now - t0).as_secs_f64();
        assert!((0.24..0.27).contains(&share), "{share}");
    }
}
