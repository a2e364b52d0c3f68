//! A loopback TCP proxy that counts the bytes it carries and can cut the
//! link: the partition in sync tests, the byte meter in sync benchmarks.
//!
//! Counts are TCP payload bytes (what MQTT puts on the stream), both
//! directions; IP and TCP headers are not included.
//!
//! Two ways to break the link: [`TcpProxy::cut`] closes connections (both
//! ends see it at once), [`TcpProxy::stall`] silently stops carrying bytes
//! and never closes anything, as a dead route or a vanished NAT mapping
//! does: each end learns only from its own timeouts (half-open TCP).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Shared {
    /// Client → server bytes.
    up: AtomicU64,
    /// Server → client bytes.
    down: AtomicU64,
    /// While set, the proxy does not listen: connects are refused.
    cut: watch::Sender<bool>,
    /// When bytes last went through, in ns since `origin` (0: not since reset).
    first: AtomicU64,
    last: AtomicU64,
    origin: std::time::Instant,
    /// Bumped on every cut: connections open then are closed.
    epoch: watch::Sender<u64>,
    /// While set, nothing is carried; connections open during a stall
    /// never carry anything again (the stream lost bytes mid-way).
    stalled: watch::Sender<bool>,
}

/// A running proxy from `127.0.0.1:port` to a target address. It stops when
/// dropped.
pub struct TcpProxy {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cut: watch::channel(false).0,
            first: AtomicU64::new(0),
            last: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            epoch: watch::channel(0).0,
            stalled: watch::channel(false).0,
        });
        let target = target.to_string();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            // While cut, the port is closed (connects are refused, as with a
            // link that is down: no TLS handshake even starts, so a client
            // spends no resumption ticket on it); it opens again on heal.
            let mut listener = Some(listener);
            let mut cut = s.cut.subscribe();
            loop {
                if *cut.borrow_and_update() {
                    listener = None;
                    if cut.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                if listener.is_none() {
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => listener = Some(l),
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let Some(l) = listener.as_ref() else { continue };
                let client = tokio::select! {
                    r = l.accept() => match r {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    _ = cut.changed() => continue,
                };
                if *s.stalled.borrow() {
                    // The SYN got an answer, but nothing more ever will.
                    tokio::spawn(black_hole(client, s.clone()));
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, s.clone(), true));
                tokio::spawn(pipe(sr, cw, s.clone(), false));
            }
        });
        TcpProxy { port, shared, task }
    }

    /// `mqtt://127.0.0.1:PORT`, for an agent's `--hub`.
    pub fn url(&self) -> String {
        self.url_like("mqtt://")
    }

    /// This proxy's address with the scheme of `broker_url`
    /// (`mqtts://127.0.0.1:PORT` in front of a TLS broker).
    pub fn url_like(&self, broker_url: &str) -> String {
        let scheme = broker_url.split("://").next().unwrap_or("mqtt");
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Closes every open connection and refuses new ones (the port is
    /// closed) until [`TcpProxy::heal`].
    pub fn cut(&self) {
        self.shared.cut.send_replace(true);
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Stops carrying bytes without closing anything: both ends keep their
    /// connection open and hear nothing more (a half-open link). Lasts
    /// until [`TcpProxy::heal`]; connections open meanwhile stay dead.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Lets connections through again (after a cut or a stall).
    pub fn heal(&self) {
        self.shared.cut.send_replace(false);
        self.shared.stalled.send_replace(false);
    }

    /// Zeroes the byte counts and the activity times.
    pub fn reset(&self) {
        for c in [
            &self.shared.up,
            &self.shared.down,
            &self.shared.first,
            &self.shared.last,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// When the first and the last bytes since [`TcpProxy::reset`] went
    /// through, if any did.
    pub fn activity(&self) -> Option<(std::time::Instant, std::time::Instant)> {
        let at = |ns: u64| self.shared.origin + std::time::Duration::from_nanos(ns);
        match (
            self.shared.first.load(Ordering::SeqCst),
            self.shared.last.load(Ordering::SeqCst),
        ) {
            (0, _) => None,
            (f, l) => Some((at(f), at(l))),
        }
    }

    /// Bytes carried so far: (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.up.load(Ordering::SeqCst),
            self.shared.down.load(Ordering::SeqCst),
        )
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    up: bool,
) {
    let mut epoch = shared.epoch.subscribe();
    epoch.mark_unchanged();
    let mut stalled = shared.stalled.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if *stalled.borrow_and_update() {
            // Swallow what arrives, send nothing, close nothing: `to` stays
            // open (dropping it would send a FIN) until the proxy cuts.
            loop {
                tokio::select! {
                    r = from.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                        let _ = epoch.changed().await;
                        return;
                    },
                    _ = epoch.changed() => return,
                }
            }
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = epoch.changed() => break,
            _ = stalled.changed() => continue,
        };
        let counter = if up { &shared.up } else { &shared.down };
        counter.fetch_add(n as u64, Ordering::SeqCst);
        let now = (shared.origin.elapsed().as_nanos() as u64).max(1);
        let _ = shared
            .first
            .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        shared.last.fetch_max(now, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Holds a connection accepted during a stall: reads and drops what comes,
/// answers nothing, until the client gives up or the proxy cuts.
async fn black_hole(mut client: TcpStream, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    epoch.mark_unchanged();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) {
                return;
            },
            _ = epoch.changed() => return,
        }
    }
}
