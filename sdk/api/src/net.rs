//! Networking rules of a pod: `spec.egress`, parsed.
//!
//! A pod's components may listen only on their declared TCP `ports` and
//! connect only where `spec.egress` allows (docs/runtime.md,
//! "Networking"). The hub validates the entries at admission with these
//! parsers; the agent applies them to every socket address a guest uses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One entry of `spec.egress`: a block of addresses and a port (or all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    /// The network's first address (host bits cleared).
    pub network: IpAddr,
    /// Prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub prefix: u8,
    /// `None` for `*` (every port).
    pub port: Option<u16>,
}

impl EgressRule {
    /// Parses `IP[/PREFIX]:PORT` or `IP[/PREFIX]:*`, with an IPv6 address
    /// (and its prefix) in brackets: `[fd00::/8]:443`. The error says what
    /// is wrong, for a field error.
    pub fn parse(text: &str) -> Result<EgressRule, String> {
        let form =
            "must be IP[/PREFIX]:PORT or IP[/PREFIX]:* (IPv6 in brackets, e.g. [fd00::/8]:443)";
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return Err(format!("\"{text}\": {form}"));
            };
            (host, port)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(format!("\"{text}\": {form}"));
            };
            if host.contains(':') {
                return Err(format!("\"{text}\": an IPv6 address must be in brackets"));
            }
            (host, port)
        };
        let (ip, prefix) = match host.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (host, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("\"{text}\": \"{ip}\" is not an IP address"))?;
        if text.starts_with('[') != ip.is_ipv6() {
            return Err(format!("\"{text}\": {form}"));
        }
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "\"{text}\": the prefix length must be a number from 0 to {max}"
                    ));
                }
            },
        };
        let port = match port {
            "*" => None,
            p => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(format!(
                        "\"{text}\": the port must be 1 to 65535, or * for any"
                    ));
                }
            },
        };
        let network = mask(ip, prefix);
        if network != ip {
            return Err(format!(
                "\"{text}\": {ip} has bits set past the /{prefix} prefix (the network is {network}/{prefix})"
            ));
        }
        Ok(EgressRule {
            network,
            prefix,
            port,
        })
    }

    /// Whether a connection to `addr` is allowed by this rule. An
    /// IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn allows(&self, addr: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != addr.port()) {
            return false;
        }
        let ip = addr.ip().to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = match self.port {
            Some(p) => p.to_string(),
            None => "*".into(),
        };
        match self.network {
            IpAddr::V4(ip) => write!(f, "{ip}/{}:{port}", self.prefix),
            IpAddr::V6(ip) => write!(f, "[{ip}/{}]:{port}", self.prefix),
        }
    }
}

/// `ip` with all but the first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Whether a container port with this `protocol` is a TCP port (the
/// default, as in Kubernetes).
pub fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &str, addr: &str) -> bool {
        EgressRule::parse(rule)
            .unwrap()
            .allows(addr.parse().unwrap())
    }

    #[test]
    fn rules_match_addresses_and_ports() {
        for (rule, addr, expected) in [
            ("10.0.0.0/8:443", "10.1.2.3:443", true),
            ("10.0.0.0/8:443", "10.1.2.3:80", false),
            ("10.0.0.0/8:443", "11.0.0.1:443", false),
            ("192.168.1.20:1883", "192.168.1.20:1883", true),
            ("192.168.1.20:1883", "192.168.1.21:1883", false),
            ("0.0.0.0/0:*", "8.8.8.8:53", true),
            ("0.0.0.0/0:*", "[::1]:53", false),
            ("127.0.0.1:*", "127.0.0.1:9", true),
            ("[fd00::/8]:443", "[fd12::1]:443", true),
            ("[fd00::/8]:443", "[fe80::1]:443", false),
            ("[::1]:80", "[::1]:80", true),
            ("10.0.0.0/8:443", "[::ffff:10.0.0.1]:443", true),
        ] {
            assert_eq!(allows(rule, addr), expected, "{rule} vs {addr}");
        }
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("10.0.0.1", "must be IP[/PREFIX]:PORT"),
            ("10.0.0.1:", "the port must be"),
            ("10.0.0.1:0", "the port must be"),
            ("10.0.0.1:70000", "the port must be"),
            ("example.com:443", "is not an IP address"),
            ("10.0.0.0/33:1", "from 0 to 32"),
            ("10.0.0.1/8:443", "bits set past the /8 prefix"),
            ("fd00::1:443", "in brackets"),
            ("[10.0.0.1]:443", "must be IP[/PREFIX]"),
            ("[fd00::/129]:1", "from 0 to 128"),
        ] {
            let err = EgressRule::parse(rule).unwrap_err();
            assert!(err.contains(says), "{rule}: {err}");
        }
    }

    #[test]
    fn a_rule_prints_as_it_parses() {
        for text in ["10.0.0.0/8:443", "[fd00::/8]:*", "1.2.3.4/32:22"] {
            let rule = EgressRule::parse(text).unwrap();
            assert_eq!(EgressRule::parse(&rule.to_string()).unwrap(), rule);
        }
    }
}
