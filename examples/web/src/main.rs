//! A web server pod: serves HTTP on its `containerPort` and exports a
//! liveness hook.
//!
//! - `GET /` answers `web <WEB_VERSION>` (the manifest sets the version, so
//!   a rollout is visible from outside);
//! - `GET /healthz` and `GET /ready` answer `ok` (the readiness probe is an
//!   `httpGet` on `/ready`);
//! - the export `healthz` (the liveness probe, `exec: {command: [healthz]}`)
//!   runs in a second instance and asks the serving one for `/healthz` over
//!   the board's address, so it fails when the server stops answering.
//!
//! `PORT` (default 8080) must be one of the container's `ports`: the agent
//! refuses to let a pod listen anywhere else. While the port is in use
//! (the pod this one replaces on the board may still be stopping) it
//! retries for up to 30 s. When the agent asks the pod to stop (its stdin
//! closes) the server returns and the program exits 0.

use std::io::ErrorKind;
use std::time::Duration;

use spoke_guest::http::{self, Request, Response};
use spoke_guest::net::{self, TcpListener};

/// Listens on `port`, waiting while another process still holds it.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let mut waited = Duration::ZERO;
    loop {
        match TcpListener::bind(port) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && waited < Duration::from_secs(30) => {
                if waited.is_zero() {
                    spoke_guest::warn!("port in use, waiting"; port = port);
                }
                if spoke_guest::shutdown::sleep(Duration::from_millis(250)) {
                    return Err(e);
                }
                waited += Duration::from_millis(250);
            }
            other => return other,
        }
    }
}

fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

fn main() {
    let port = port();
    let version = std::env::var("WEB_VERSION").unwrap_or_else(|_| "v1".into());
    let body = format!("web {version}\n");
    spoke_guest::info!("serving"; port = port, address = net::listen_address().to_string(), version = version);
    let served = listen(port).and_then(|listener| {
        http::serve_on(&listener, |req: &Request| {
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/") => Response::text(200, body.clone()),
                ("GET", "/healthz" | "/ready") => Response::text(200, "ok\n"),
                ("GET", _) => Response::text(404, "not found\n"),
                _ => Response::text(405, "only GET\n"),
            }
        })
    });
    match served {
        Ok(()) => spoke_guest::info!("asked to stop"),
        Err(e) => {
            spoke_guest::error!("cannot serve"; port = port, error = e.to_string());
            std::process::exit(1);
        }
    }
}

/// Liveness: the serving instance answers `/healthz` with 200.
fn alive() -> Result<(), String> {
    let addr = net::own_address(port());
    match http::get(addr, "/healthz") {
        Ok((200, _)) => Ok(()),
        Ok((status, _)) => Err(format!("GET http://{addr}/healthz: status {status}")),
        Err(e) => Err(format!("GET http://{addr}/healthz: {e}")),
    }
}

spoke_guest::export_probes!(healthz: alive);
