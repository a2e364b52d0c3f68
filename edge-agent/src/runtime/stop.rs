//! The stop signal a guest sees: its stdin, open and empty while it runs,
//! reaches end of file when the agent asks it to stop.
//!
//! Wasm has no POSIX signals, and a command's `_start` cannot be interrupted
//! to call another export of the same instance. stdin is the one channel
//! every WASI guest has in both preview 1 and preview 2, and it can be
//! waited on together with timers and sockets: a blocking read returns 0
//! bytes, `poll_oneoff` (p1) reports `fd_read` ready on fd 0, and the
//! pollable of `wasi:cli/stdin`'s stream (p2) becomes ready. A guest that
//! never looks at stdin is stopped for certain after the grace period.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

/// The agent's side of one instance's stop signal. Clones share it.
#[derive(Clone, Debug)]
pub struct StopSignal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    raised: watch::Sender<bool>,
    /// Write halves of the `AsyncRead` stdins handed out; dropped when raised,
    /// which ends their read halves.
    writers: Mutex<Option<Vec<tokio::io::DuplexStream>>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::new()
    }
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal {
            inner: Arc::new(Inner {
                raised: watch::Sender::new(false),
                writers: Mutex::new(Some(Vec::new())),
            }),
        }
    }

    /// Asks the guest to stop: its stdin reaches end of file. Idempotent.
    pub fn raise(&self) {
        self.inner.raised.send_replace(true);
        let mut writers = self.inner.writers.lock().unwrap_or_else(|e| e.into_inner());
        *writers = None;
    }

    /// Whether [`raise`](Self::raise) was called.
    pub fn is_raised(&self) -> bool {
        *self.inner.raised.borrow()
    }

    /// The guest's stdin.
    pub(crate) fn stdin(&self) -> GuestStdin {
        GuestStdin(self.clone())
    }
}

/// What `WasiCtxBuilder::stdin` is given.
pub(crate) struct GuestStdin(StopSignal);

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(UntilStop(self.0.inner.raised.subscribe()))
    }

    // Not used by preview 1 or 2 (they take `p2_stream`); given for
    // completeness: a pipe whose writer is dropped when the signal is raised.
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        let mut writers = self
            .0
            .inner
            .writers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match writers.as_mut() {
            Some(list) => {
                let (reader, writer) = tokio::io::duplex(1);
                list.push(writer);
                Box::new(reader)
            }
            None => Box::new(tokio::io::empty()),
        }
    }
}

/// A preview 2 input stream with no data that closes when the signal is raised.
struct UntilStop(watch::Receiver<bool>);

impl UntilStop {
    fn closed(&self) -> bool {
        // A dropped sender (the agent let go of the instance) also ends it.
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

#[async_trait]
impl Pollable for UntilStop {
    async fn ready(&mut self) {
        let _ = self.0.wait_for(|raised| *raised).await;
    }
}

impl InputStream for UntilStop {
    fn read(&mut self, _size: usize) -> StreamResult<Bytes> {
        if self.closed() {
            Err(StreamError::Closed)
        } else {
            Ok(Bytes::new())
        }
    }
}
