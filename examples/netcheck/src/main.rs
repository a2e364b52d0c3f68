//! Checks what the network policy of its pod allows, one step per
//! argument, and prints one line per step:
//!
//! - `listen:PORT`: listen on PORT at the board's address (then close);
//! - `connect:ADDR:PORT`: open a TCP connection (then close);
//! - `serve:PORT`: listen and answer connections with `netcheck` until
//!   the pod is asked to stop.
//!
//! Each line reads `<step> ok` or `<step> failed: <error>`; the exit code
//! is the number of failed steps. Useful to try a pod's `ports` and
//! `spec.egress` on a board (`spoke logs`).

use std::io::Write;
use std::net::SocketAddr;

use spoke_guest::net::{TcpListener, TcpStream};

fn step(arg: &str) -> Result<(), String> {
    if let Some(port) = arg.strip_prefix("listen:") {
        let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        TcpListener::bind(port).map(drop).map_err(|e| e.to_string())
    } else if let Some(addr) = arg.strip_prefix("connect:") {
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
        TcpStream::connect(addr)
            .map(drop)
            .map_err(|e| e.to_string())
    } else if let Some(port) = arg.strip_prefix("serve:") {
        let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
        let listener = TcpListener::bind(port).map_err(|e| e.to_string())?;
        println!("{arg} listening");
        while let Some(mut conn) = listener.accept_or_stop().map_err(|e| e.to_string())? {
            let _ = conn.write_all(b"netcheck\n");
        }
        Ok(())
    } else {
        Err("unknown step (listen:PORT, connect:ADDR:PORT or serve:PORT)".into())
    }
}

fn main() {
    let mut failed = 0;
    for arg in std::env::args().skip(1) {
        match step(&arg) {
            Ok(()) => println!("{arg} ok"),
            Err(e) => {
                failed += 1;
                println!("{arg} failed: {e}");
            }
        }
    }
    std::process::exit(failed);
}
