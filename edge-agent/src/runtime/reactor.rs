//! The guests' reactor: a thread of its own that waits in a tokio driver for
//! the guests' timers and sockets, so that a due timer is seen on time even
//! while every tokio worker is inside a guest.
//!
//! Why: tokio's multi-threaded runtime has one timer and IO driver, polled by
//! whichever worker parks while it is free. A worker that was woken from the
//! driver and then polls a guest for a whole epoch tick leaves the driver
//! alone; the workers that parked meanwhile wait on a condition variable and
//! do not take it over; and a worker busy with guests polls it only every
//! [`super::TOKIO_EVENT_INTERVAL`] task polls. A spinning neighbour thus made
//! a well-behaved pod's 2 ms sleep end tens of milliseconds late.
//!
//! Every poll of a guest's future runs inside [`Reactor::enter`], so the
//! `tokio::time::sleep`s, sockets and tasks that wasmtime-wasi creates for
//! the guest belong to this runtime, whose only thread sleeps in its driver
//! when it has nothing to do. When a timer fires, the guest's task is woken
//! on the agent's runtime as before, and an idle worker runs it. The tasks
//! that wasmtime-wasi spawns (copying a guest's output into its log) run on
//! this thread; they are short.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The reactor thread; it ends when this is dropped.
pub struct Reactor {
    handle: Handle,
    _stop: oneshot::Sender<()>,
}

impl Reactor {
    /// Starts the thread.
    pub fn start() -> io::Result<Reactor> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("wasm-reactor".into())
            .spawn(move || {
                // Returns when the sender is dropped.
                let _ = rt.block_on(stopped);
            })?;
        Ok(Reactor {
            handle,
            _stop: stop,
        })
    }

    /// `inner`, polled with this reactor as the current tokio runtime.
    pub fn enter<F: Future>(&self, inner: F) -> InReactor<F> {
        InReactor {
            handle: self.handle.clone(),
            inner: Box::pin(inner),
        }
    }
}

/// A future polled inside the reactor's context: see [`Reactor::enter`].
pub struct InReactor<F> {
    handle: Handle,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for InReactor<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the inner future is boxed).
        let this = self.get_mut();
        let _entered = this.handle.enter();
        this.inner.as_mut().poll(cx)
    }
}
