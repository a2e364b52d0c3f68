//! A guest that spins runs at a lower scheduling priority than the agent
//! and than guests that wait.
//!
//! A poll of a guest's future lasts until the guest waits (a timer, a
//! socket) or reaches an epoch tick ([`super::EPOCH_TICK`]). A guest whose
//! last poll ran for [`CPU_BOUND_AFTER`] or more is spinning (CPU-bound);
//! its next poll runs with the thread's nice value raised by [`Priority`]'s
//! offset (default [`DEFAULT_GUEST_NICE`]), put back when the poll returns.
//! Its first slice runs at the normal priority; so does every poll of a
//! guest that does a little work and waits again.
//!
//! Why: on a board whose cores are all running spinning guests, a thread
//! that wakes (an idle worker about to run a pod whose timer fired, the
//! guests' reactor, the agent's MQTT) waited for a running guest's time
//! slice to end, about 3 ms with two cores on Linux 6.x. Above a lowered
//! spinner, Linux preempts the spinner for it at once. Native threads on
//! this machine: a thread's 2 ms sleep ended 4 ms late at p99 beside two
//! spinning threads at nice 0, 1 ms beside the same at nice 10.
//!
//! Why not every guest poll: a thread reniced while it runs is reweighted
//! by the scheduler, and a pod that just woke would lose its place to a
//! spinner on the same core; and the two system calls (about 1.3 µs here)
//! would be paid by every short poll.
//!
//! Spinning guests share the CPU among themselves as before (all get the
//! same offset); beside the board's other processes a spinning guest weighs
//! less (nice 10: about a tenth), as pods do beside a kubelet's reserved
//! CPU. CPU limits are unaffected: they charge the CPU time a guest's
//! thread used.
//!
//! Putting a thread's priority back (lowering its nice value) is a
//! privileged operation unless `RLIMIT_NICE` allows it (systemd's
//! `LimitNICE=`). [`Priority::new`] tries it once on a scratch thread; when
//! it is refused, guests run at the agent's priority and the agent says so.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The nice offset of guest code, by default.
pub const DEFAULT_GUEST_NICE: i32 = 10;

/// A poll that ran this long was cut by an epoch tick, not by a wait: its
/// guest is spinning. Half a tick, so that a guest preempted by the kernel
/// in the middle of a short poll is rarely mistaken for one.
pub const CPU_BOUND_AFTER: Duration = Duration::from_millis(5);

/// The most a nice value can be (Linux).
const NICE_MAX: i32 = 19;

/// How guest polls are prioritised: an offset to add, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    offset: Option<i32>,
}

thread_local! {
    /// This thread's own nice value, read on its first guest poll.
    static BASE: Cell<Option<i32>> = const { Cell::new(None) };
}

impl Priority {
    /// Guests at the agent's priority.
    pub const SAME: Priority = Priority { offset: None };

    /// Guests `offset` nice levels below the agent when this process may put
    /// a thread's priority back; otherwise [`Priority::SAME`], with a
    /// warning. An offset of 0 (or less) is [`Priority::SAME`].
    pub fn new(offset: i32) -> Priority {
        if offset <= 0 || !may_restore() {
            return Priority::SAME;
        }
        Priority {
            offset: Some(offset),
        }
    }

    /// Whether guests run below the agent.
    pub fn lowers(&self) -> bool {
        self.offset.is_some()
    }

    /// `inner`, its polls lowered while it spins.
    pub fn apply<F: Future>(self, inner: F) -> Lowered<F> {
        Lowered {
            offset: self.offset,
            spinning: false,
            inner: Box::pin(inner),
        }
    }
}

/// Whether this process may put a thread's nice value back after raising
/// it. Asked once, on a thread of its own so that a refusal leaves no
/// thread of the agent reniced; a refusal is logged then.
fn may_restore() -> bool {
    static MAY: OnceLock<bool> = OnceLock::new();
    *MAY.get_or_init(|| {
        let probe = || -> std::io::Result<()> {
            let base = rustix::process::getpriority_process(None)?;
            rustix::process::setpriority_process(None, (base + 1).min(NICE_MAX))?;
            Ok(rustix::process::setpriority_process(None, base)?)
        };
        let result = std::thread::scope(|s| {
            s.spawn(probe)
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
        });
        if let Err(e) = &result {
            tracing::warn!(
                error = %e,
                "cannot put a thread's priority back after lowering it (RLIMIT_NICE; \
                 systemd: LimitNICE=+0): guests run at the agent's priority, and a \
                 spinning pod can delay its neighbours' wake-ups by a time slice"
            );
        }
        result.is_ok()
    })
}

/// A future whose polls are lowered while it spins: see the module docs.
pub struct Lowered<F> {
    offset: Option<i32>,
    /// The last poll ran for [`CPU_BOUND_AFTER`] or more.
    spinning: bool,
    inner: Pin<Box<F>>,
}

/// Puts the thread's nice value back when dropped (also if the poll panics).
struct Restore(i32);

impl Drop for Restore {
    fn drop(&mut self) {
        // Allowed: the probe showed it. Should it fail anyway, the thread
        // stays lower, which slows the agent and breaks nothing.
        let _ = rustix::process::setpriority_process(None, self.0);
    }
}

/// Lowers the calling thread by `offset` until the result is dropped.
fn lower(offset: i32) -> Option<Restore> {
    let base = BASE.with(|b| {
        b.get().unwrap_or_else(|| {
            let nice = rustix::process::getpriority_process(None).unwrap_or(0);
            b.set(Some(nice));
            nice
        })
    });
    rustix::process::setpriority_process(None, (base + offset).min(NICE_MAX))
        .is_ok()
        .then_some(Restore(base))
}

impl<F: Future> Future for Lowered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the inner future is boxed).
        let this = self.get_mut();
        let Some(offset) = this.offset else {
            return this.inner.as_mut().poll(cx);
        };
        let _restore = if this.spinning { lower(offset) } else { None };
        let start = Instant::now();
        let result = this.inner.as_mut().poll(cx);
        this.spinning = start.elapsed() >= CPU_BOUND_AFTER;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest stand-in: on each poll, records its thread's nice value,
    /// then busies its thread for the poll's stretch and yields; ready after
    /// the last stretch, with the nice values.
    struct Guest {
        stretches: Vec<Duration>,
        seen: Vec<i32>,
    }

    impl Future for Guest {
        type Output = Vec<i32>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<i32>> {
            self.seen
                .push(rustix::process::getpriority_process(None).unwrap());
            let stretch = self.stretches[self.seen.len() - 1];
            let end = Instant::now() + stretch;
            while Instant::now() < end {
                std::hint::spin_loop();
            }
            if self.seen.len() == self.stretches.len() {
                return Poll::Ready(std::mem::take(&mut self.seen));
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_spinning_guest_runs_lowered_and_a_waiting_one_does_not() {
        std::thread::spawn(|| {
            let priority = Priority::new(DEFAULT_GUEST_NICE);
            let base = rustix::process::getpriority_process(None).unwrap();
            let (short, long) = (Duration::ZERO, CPU_BOUND_AFTER + Duration::from_millis(1));
            let guest = Guest {
                stretches: vec![short, long, long, short, short],
                seen: Vec::new(),
            };
            let seen = block_on(priority.apply(guest));
            let after = rustix::process::getpriority_process(None).unwrap();
            let low = (base + DEFAULT_GUEST_NICE).min(NICE_MAX);
            if priority.lowers() {
                // Each poll is lowered when the one before it ran long.
                assert_eq!(seen, [base, base, low, low, base]);
            } else {
                // Unprivileged and no RLIMIT_NICE: nothing changes.
                assert_eq!(seen, [base; 5]);
            }
            assert_eq!(after, base, "the thread gets its priority back");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_offset_of_zero_leaves_guests_at_the_agents_priority() {
        assert_eq!(Priority::new(0), Priority::SAME);
        assert!(!Priority::new(-3).lowers());
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
