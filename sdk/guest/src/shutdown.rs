//! Graceful shutdown: know when the agent asks the pod to stop.
//!
//! Wasm has no POSIX signals. The agent keeps a pod's stdin open and empty
//! while it runs, and closes it when the pod must stop (deleted, replaced by
//! a new version, or restarted by a failed liveness probe). The pod then has
//! `terminationGracePeriodSeconds` (default 30) to finish its work and exit;
//! after that the agent stops it for certain (exit code 137).
//! See docs/runtime.md, "Stopping".
//!
//! Use [`sleep`] where the program would sleep between rounds of work, so a
//! stop request ends the wait at once:
//!
//! ```no_run
//! use std::time::Duration;
//! loop {
//!     // ... one round of work ...
//!     if spoke_guest::shutdown::sleep(Duration::from_secs(5)) {
//!         break; // asked to stop: flush, clean up, return from main
//!     }
//! }
//! ```
//!
//! A program that blocks reading stdin sees the same thing as end of file.

use std::time::Duration;

/// Waits for `duration` or until the agent asks the pod to stop, whichever
/// comes first. Returns true when a stop was asked for (and from then on
/// returns true at once).
pub fn sleep(duration: Duration) -> bool {
    imp::sleep(duration)
}

/// True when the agent has asked the pod to stop. Does not wait.
pub fn requested() -> bool {
    imp::sleep(Duration::ZERO)
}

#[cfg(all(target_os = "wasi", target_env = "p1"))]
mod imp {
    use std::time::Duration;

    const STDIN_USERDATA: u64 = 1;
    const TIMER_USERDATA: u64 = 2;

    pub fn sleep(duration: Duration) -> bool {
        let stdin = wasi::Subscription {
            userdata: STDIN_USERDATA,
            u: wasi::SubscriptionU {
                tag: wasi::EVENTTYPE_FD_READ.raw(),
                u: wasi::SubscriptionUU {
                    fd_read: wasi::SubscriptionFdReadwrite { file_descriptor: 0 },
                },
            },
        };
        let timer = wasi::Subscription {
            userdata: TIMER_USERDATA,
            u: wasi::SubscriptionU {
                tag: wasi::EVENTTYPE_CLOCK.raw(),
                u: wasi::SubscriptionUU {
                    clock: wasi::SubscriptionClock {
                        id: wasi::CLOCKID_MONOTONIC,
                        timeout: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
                        precision: 0,
                        flags: 0,
                    },
                },
            },
        };
        let subscriptions = [stdin, timer];
        // Both subscriptions may fire at once.
        let mut events = [std::mem::MaybeUninit::<wasi::Event>::uninit(); 2];
        // SAFETY: the pointers name arrays of the lengths given, and the call
        // writes at most `subscriptions.len()` events into `events`.
        let ready = unsafe {
            wasi::poll_oneoff(
                subscriptions.as_ptr(),
                events.as_mut_ptr().cast::<wasi::Event>(),
                subscriptions.len(),
            )
        };
        let Ok(n) = ready else {
            // No poll: still honour the wait, so a loop does not spin.
            std::thread::sleep(duration);
            return false;
        };
        events[..n.min(events.len())].iter().any(|e| {
            // SAFETY: poll_oneoff initialised the first `n` events.
            let e = unsafe { e.assume_init() };
            e.userdata == STDIN_USERDATA && e.type_ == wasi::EVENTTYPE_FD_READ
        })
    }
}

#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
mod imp {
    use std::time::Duration;

    /// Elsewhere (a host build for tests, or targets without preview 1),
    /// stdin is watched by a thread that reads until end of file.
    pub fn sleep(duration: Duration) -> bool {
        use std::sync::OnceLock;
        use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
        static CLOSED: OnceLock<std::sync::Mutex<Receiver<()>>> = OnceLock::new();
        static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if DONE.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let rx = CLOSED.get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                let _ = tx.send(());
            });
            std::sync::Mutex::new(rx)
        });
        let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(duration) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                DONE.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}
