//! The kernel's own counters for one TCP connection (`ss -tinp`): payload
//! bytes and segments in each direction, and whether TCP timestamps are on.
//! From them, bytes at the IP layer: payload + segments × (IPv4 20, TCP 20,
//! and options). Measured, not estimated: retransmissions, bare ACKs and TLS
//! records are all in the kernel's counts.

use std::process::Command;

/// Counters of one connection, seen from one end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Local port, to check that the connection is still the same one.
    pub local_port: u16,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub segs_out: u64,
    pub segs_in: u64,
    /// TCP timestamps negotiated: 12 more header bytes (10 + 2 padding) a segment.
    pub timestamps: bool,
}

impl Counters {
    /// IPv4 + TCP header bytes of one segment, options included.
    pub fn header_bytes(&self) -> u64 {
        40 + if self.timestamps { 12 } else { 0 }
    }

    /// What happened between `self` (earlier) and `later` on the same
    /// connection: (payload bytes, segments, IP-layer bytes), both directions.
    pub fn since(&self, later: &Counters) -> (u64, u64, u64) {
        let payload =
            (later.bytes_sent - self.bytes_sent) + (later.bytes_received - self.bytes_received);
        let segments = (later.segs_out - self.segs_out) + (later.segs_in - self.segs_in);
        (payload, segments, payload + segments * later.header_bytes())
    }
}

/// The established TCP connection of process `pid` to remote port
/// `remote_port`, if there is exactly one.
pub fn connection(pid: u32, remote_port: u16) -> Option<Counters> {
    let out = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .arg(format!("( dport = :{remote_port} )"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Vec<Counters> = parse(&text, pid);
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The connections of process `pid` in `ss -tinpH` output: each socket is a
/// line (addresses, `users:(("name",pid=N,fd=M))`) and an indented line of
/// TCP info.
fn parse(text: &str, pid: u32) -> Vec<Counters> {
    let needle = format!("pid={pid},");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let socket = lines[i];
        let info = lines.get(i + 1).copied().unwrap_or_default();
        i += 2;
        if !socket.contains(&needle) {
            continue;
        }
        // "0 0 127.0.0.1:40312 127.0.0.1:8883 users:..." (state is filtered).
        let local_port = socket
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let field = |name: &str| -> u64 {
            info.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
                .unwrap_or(0)
        };
        found.push(Counters {
            local_port,
            bytes_sent: field("bytes_sent"),
            bytes_received: field("bytes_received"),
            segs_out: field("segs_out"),
            segs_in: field("segs_in"),
            timestamps: info.split_whitespace().any(|w| w == "ts"),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_output_gives_the_counters_of_the_right_process() {
        let text = "0      0      127.0.0.1:40312 127.0.0.1:8883 users:((\"spoke-agent\",pid=42,fd=9))\n\t ts sack cubic wscale:7,7 rto:204 bytes_sent:1234 bytes_acked:1234 bytes_received:567 segs_out:20 segs_in:18 data_segs_out:10\n0      0      127.0.0.1:40400 127.0.0.1:8883 users:((\"other\",pid=420,fd=3))\n\t sack cubic bytes_sent:1 segs_out:1 segs_in:1\n";
        let found = parse(text, 42);
        assert_eq!(
            found,
            vec![Counters {
                local_port: 40312,
                bytes_sent: 1234,
                bytes_received: 567,
                segs_out: 20,
                segs_in: 18,
                timestamps: true,
            }]
        );
        let later = Counters {
            bytes_sent: 1300,
            segs_out: 22,
            segs_in: 19,
            ..found[0]
        };
        assert_eq!(found[0].since(&later), (66, 3, 66 + 3 * 52));
        let other = parse(text, 420);
        assert_eq!(other[0].header_bytes(), 40);
    }
}
