//! What a pod may do with WASI sockets, decided for every address a guest
//! uses (wasmtime-wasi's `socket_addr_check`).
//!
//! - **Listen** (bind + listen, TCP) only on the container's declared TCP
//!   `ports`, at the board's pod address when the agent has one
//!   (`--pod-address`), else at any address of the board. Binding port 0
//!   (what the OS does before a connect) is allowed; listening on it is not.
//! - **Accept** any client: the port was declared.
//! - **Connect** only to what `spec.egress` allows, and to the
//!   container's own ports on loopback or on the pod address (so a probe
//!   hook can ask the serving instance how it is).
//! - UDP and name lookups are off (`allow_udp(false)`,
//!   `allow_ip_name_lookup(false)`): egress rules are IP addresses.
//!
//! A pod with neither ports nor egress rules can do nothing, and each
//! attempt is logged. Core modules (WASI preview 1) have no sockets
//! whatever the policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use spoke_api::net::EgressRule;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use crate::pods::logs::LogStream;

/// Denials written to the pod's log per instance; more are only counted.
const LOGGED_DENIALS: u32 = 20;

/// The socket rules of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// The container's declared TCP ports.
    pub listen_ports: Vec<u16>,
    /// The board's address pods listen on (`--pod-address`); `None`: any.
    pub listen_ip: Option<IpAddr>,
    /// `spec.egress`, parsed.
    pub egress: Vec<EgressRule>,
}

impl NetPolicy {
    fn listen_ip_allows(&self, ip: IpAddr) -> bool {
        match self.listen_ip {
            None => true,
            Some(allowed) if allowed.is_unspecified() => true,
            Some(allowed) => ip.to_canonical() == allowed,
        }
    }

    /// Allows `addr` for `use_`, or says why not (for the pod's log).
    pub fn decide(&self, addr: SocketAddr, use_: SocketAddrUse) -> Result<(), String> {
        let ports = || {
            if self.listen_ports.is_empty() {
                "the container declares no TCP ports".to_string()
            } else {
                let list: Vec<String> = self.listen_ports.iter().map(u16::to_string).collect();
                format!("the container's TCP ports are {}", list.join(", "))
            }
        };
        let at = || match self.listen_ip {
            Some(ip) if !ip.is_unspecified() => format!("pods on this board listen at {ip}"),
            _ => String::new(),
        };
        match use_ {
            SocketAddrUse::TcpBind if addr.port() == 0 => Ok(()),
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => {
                if addr.port() == 0 {
                    return Err(format!(
                        "listen on {addr} denied: a pod listens only on its declared ports ({})",
                        ports()
                    ));
                }
                if !self.listen_ports.contains(&addr.port()) {
                    return Err(format!(
                        "listen on {addr} denied: port {} is not declared ({})",
                        addr.port(),
                        ports()
                    ));
                }
                if !self.listen_ip_allows(addr.ip()) {
                    return Err(format!("listen on {addr} denied: {}", at()));
                }
                Ok(())
            }
            SocketAddrUse::TcpAccept => Ok(()),
            SocketAddrUse::TcpConnect => {
                if self.egress.iter().any(|r| r.allows(addr)) {
                    return Ok(());
                }
                let own = self.listen_ports.contains(&addr.port())
                    && (addr.ip().to_canonical().is_loopback()
                        || self
                            .listen_ip
                            .is_some_and(|ip| ip == addr.ip().to_canonical()));
                if own {
                    return Ok(());
                }
                Err(format!(
                    "connect to {addr} denied: not allowed by the pod's spec.egress{}",
                    if self.egress.is_empty() {
                        " (empty)".to_string()
                    } else {
                        let list: Vec<String> = self.egress.iter().map(|r| r.to_string()).collect();
                        format!(" ({})", list.join(", "))
                    }
                ))
            }
            // UDP is turned off before any address is checked.
            SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                Err(format!("UDP to or from {addr} denied: pods have TCP only"))
            }
        }
    }

    /// Gives `builder` these rules; denials are written to `log` (the
    /// pod's stderr, so `spoke logs` shows them) and to the agent's log.
    pub fn apply(&self, builder: &mut WasiCtxBuilder, log: LogStream, pod: &str) {
        // TCP stays on even for a pod with no rules, so that what it tries
        // is refused by the check below, and said in its log, rather than
        // failing unexplained at socket creation.
        builder
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .allow_tcp(true);
        let policy = Arc::new(self.clone());
        let denied = Arc::new(AtomicU32::new(0));
        let pod = pod.to_string();
        builder.socket_addr_check(move |addr, use_| {
            let verdict = policy.decide(addr, use_);
            if let Err(why) = &verdict {
                let n = denied.fetch_add(1, Ordering::Relaxed);
                if n < LOGGED_DENIALS {
                    tracing::warn!(pod = %pod, %addr, "{why}");
                    log.note(&format!("spoke-agent: {why}"));
                } else if n == LOGGED_DENIALS {
                    log.note("spoke-agent: further socket denials of this instance are not logged");
                }
            }
            Box::pin(std::future::ready(verdict.is_ok()))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listen_ip: Option<&str>, egress: &[&str]) -> NetPolicy {
        NetPolicy {
            listen_ports: vec![8080],
            listen_ip: listen_ip.map(|ip| ip.parse().unwrap()),
            egress: egress
                .iter()
                .map(|r| EgressRule::parse(r).unwrap())
                .collect(),
        }
    }

    #[test]
    fn decisions() {
        use SocketAddrUse::*;
        let open = policy(None, &["10.0.0.0/8:443"]);
        let pinned = policy(Some("127.0.0.2"), &[]);
        for (p, addr, use_, allowed) in [
            // Declared port, any address of the board.
            (&open, "0.0.0.0:8080", TcpBind, true),
            (&open, "0.0.0.0:8080", TcpListen, true),
            (&open, "[::]:8080", TcpListen, true),
            // Undeclared port, or an ephemeral listener.
            (&open, "0.0.0.0:9090", TcpBind, false),
            (&open, "0.0.0.0:9090", TcpListen, false),
            (&open, "0.0.0.0:0", TcpBind, true),
            (&open, "0.0.0.0:0", TcpListen, false),
            (&open, "192.0.2.7:51000", TcpAccept, true),
            // Egress.
            (&open, "10.9.9.9:443", TcpConnect, true),
            (&open, "10.9.9.9:80", TcpConnect, false),
            (&open, "8.8.8.8:443", TcpConnect, false),
            // Its own port on loopback.
            (&open, "127.0.0.1:8080", TcpConnect, true),
            (&open, "127.0.0.1:8081", TcpConnect, false),
            // A board address set by the agent.
            (&pinned, "127.0.0.2:8080", TcpBind, true),
            (&pinned, "0.0.0.0:8080", TcpBind, false),
            (&pinned, "127.0.0.3:8080", TcpListen, false),
            (&pinned, "127.0.0.2:8080", TcpConnect, true),
            (&pinned, "127.0.0.2:22", TcpConnect, false),
            (&open, "10.9.9.9:443", UdpSend, false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                p.decide(addr, use_).is_ok(),
                allowed,
                "{use_:?} {addr}: {:?}",
                p.decide(addr, use_)
            );
        }
    }

    #[test]
    fn denials_name_the_address_and_the_rule() {
        let p = policy(None, &["10.0.0.0/8:443"]);
        let why = p
            .decide("8.8.8.8:53".parse().unwrap(), SocketAddrUse::TcpConnect)
            .unwrap_err();
        assert_eq!(
            why,
            "connect to 8.8.8.8:53 denied: not allowed by the pod's spec.egress (10.0.0.0/8:443)"
        );
        let why = p
            .decide("0.0.0.0:9090".parse().unwrap(), SocketAddrUse::TcpBind)
            .unwrap_err();
        assert_eq!(
            why,
            "listen on 0.0.0.0:9090 denied: port 9090 is not declared (the container's TCP ports are 8080)"
        );
    }
}
