//! Broker URLs as hub, agent and CLI read them: `mqtt://host[:port]` (plain
//! MQTT, port 1883 by default) or `mqtts://host[:port]` (MQTT over TLS, port
//! 8883 by default); `tcp://` and `ssl://` are accepted as aliases.

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// MQTT over TLS.
    pub tls: bool,
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a broker URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("tcp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("ssl://") {
            (true, r)
        } else {
            return Err(format!(
                "\"{url}\" must start with mqtts:// (TLS) or mqtt:// (plain)"
            ));
        };
        let default_port = if tls { 8883 } else { 1883 };
        let rest = rest.trim_end_matches('/');
        let bad = |why: &str| format!("\"{url}\": {why}");
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("unexpected text after the host")),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("invalid port"))?),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(['/', '@', '?', '#']) {
            return Err(bad("expected a host and port only (no path or user)"));
        }
        Ok(BrokerUrl { tls, host, port })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_scheme_host_and_port() {
        let u = BrokerUrl::parse("mqtts://hub.local").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "hub.local", 8883));
        let u = BrokerUrl::parse("mqtt://127.0.0.1:2000/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 2000));
        let u = BrokerUrl::parse("ssl://[::1]:9000").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "::1", 9000));
        assert_eq!(u.to_string(), "mqtts://[::1]:9000");
        assert_eq!(
            BrokerUrl::parse("tcp://h").unwrap().to_string(),
            "mqtt://h:1883"
        );
        for bad in [
            "http://h:1",
            "mqtt://h:99999",
            "mqtt://:1",
            "mqtts://u@h",
            "mqtt://h/x",
            "mqtt://[::1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
