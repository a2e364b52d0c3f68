//! Guest code runs at a lower scheduling priority than the agent.
//!
//! While a tokio worker polls a guest, its thread's nice value is raised by
//! [`Priority`]'s offset (default [`DEFAULT_GUEST_NICE`]) and put back when
//! the poll returns. Threads that wake up (the guests' reactor, an idle
//! worker about to run a pod whose timer fired, the agent's MQTT and
//! supervisor tasks) are then at the agent's own priority, above a guest
//! that is spinning on a core, and Linux's scheduler lets them preempt it
//! at once. Without this, on a board whose cores are all running guests, a
//! thread that wakes waits for the running guest's time slice to end
//! (about 3 ms on Linux 6.x with two cores): a well-behaved pod's sleep
//! ended up to 4 ms late at p99 beside two spinning pods, against about
//! 1 ms with the spinners' threads reniced (BENCHMARKS.md, CPU containment).
//!
//! All guests get the same offset, so they share the CPU among themselves
//! exactly as before; beside the board's other processes a guest weighs
//! less (nice 10: about a tenth), as pods beside a kubelet's
//! system-reserved share. CPU limits are unaffected: they charge the CPU
//! time a guest's thread used.
//!
//! Putting a thread's priority back (lowering its nice value) is a
//! privileged operation unless `RLIMIT_NICE` allows it (systemd's
//! `LimitNICE=`). [`Priority::new`] tries it once on a scratch thread; when
//! it is refused, guests run at the agent's priority and the agent says so.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The nice offset of guest code, by default.
pub const DEFAULT_GUEST_NICE: i32 = 10;

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
        if offset <= 0 {
            return Priority::SAME;
        }
        match probe(offset) {
            Ok(()) => Priority {
                offset: Some(offset),
            },
            Err(e) => {
                // Said once: each runtime built (and each option) asks again.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        error = %e,
                        "cannot put a thread's priority back after lowering it (RLIMIT_NICE; \
                         systemd: LimitNICE=+0): guests run at the agent's priority, and a \
                         spinning pod can delay its neighbours' wake-ups by a time slice"
                    )
                });
                Priority::SAME
            }
        }
    }

    /// Whether guests run below the agent.
    pub fn lowers(&self) -> bool {
        self.offset.is_some()
    }

    /// `inner`, polled at the guests' priority.
    pub fn apply<F: Future>(self, inner: F) -> Lowered<F> {
        Lowered {
            offset: self.offset,
            inner: Box::pin(inner),
        }
    }
}

/// Lowers then restores the calling thread's priority, on a thread of its
/// own so that a refusal leaves no thread of the agent reniced.
fn probe(offset: i32) -> std::io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let base = rustix::process::getpriority_process(None)?;
            rustix::process::setpriority_process(None, (base + offset).min(NICE_MAX))?;
            rustix::process::setpriority_process(None, base)?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
    })
}

/// A future whose polls run at the guests' priority: see [`Priority`].
pub struct Lowered<F> {
    offset: Option<i32>,
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

impl<F: Future> Future for Lowered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the inner future is boxed).
        let this = self.get_mut();
        let Some(offset) = this.offset else {
            return this.inner.as_mut().poll(cx);
        };
        let base = BASE.with(|b| {
            b.get().unwrap_or_else(|| {
                let nice = rustix::process::getpriority_process(None).unwrap_or(0);
                b.set(Some(nice));
                nice
            })
        });
        // Two system calls per poll, well under a microsecond each; a
        // guest's poll lasts until its next wait or epoch tick.
        let _restore = rustix::process::setpriority_process(None, (base + offset).min(NICE_MAX))
            .is_ok()
            .then_some(Restore(base));
        this.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that reads its thread's nice value when polled.
    struct ReadNice;

    impl Future for ReadNice {
        type Output = i32;
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<i32> {
            Poll::Ready(rustix::process::getpriority_process(None).unwrap())
        }
    }

    #[test]
    fn a_guest_poll_runs_below_the_thread_and_the_thread_gets_its_priority_back() {
        std::thread::spawn(|| {
            let priority = Priority::new(DEFAULT_GUEST_NICE);
            let base = rustix::process::getpriority_process(None).unwrap();
            let inside = block_on(priority.apply(ReadNice));
            let after = rustix::process::getpriority_process(None).unwrap();
            if priority.lowers() {
                assert_eq!(inside, (base + DEFAULT_GUEST_NICE).min(NICE_MAX));
            } else {
                // Unprivileged and no RLIMIT_NICE: nothing changes.
                assert_eq!(inside, base);
            }
            assert_eq!(after, base);
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
