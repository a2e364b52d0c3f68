//! A network namespace joined to this host by a veth pair, with an
//! nftables table inside it that can cut the link or make it lossy: real
//! partitions and real packet loss for an agent started in the namespace
//! (`ip netns exec NS spoke-agent ...`, see [`Netns::launcher`]).
//!
//! Each [`Netns`] gets a unique name and its own /30 in 10.213.0.0/16: the
//! host end has the first address (a hub listens there, see
//! [`crate::Hub::start_at`]), the namespace end the second. The namespace
//! has no other link and no default route, so nothing in it can reach any
//! other address. The nftables rules live in the namespace, so the host's
//! own firewall is never touched.
//!
//! Dropping a [`Netns`] (also while a test panics) deletes the veth pair
//! and the namespace with its rules. Namespaces left behind by a test
//! process that was killed are removed by the next one.
//!
//! Needs root and the `ip` (iproute2) and `nft` (nftables) commands;
//! [`Netns::create`] panics saying so when one is missing.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every name this module makes (namespaces and interfaces).
const PREFIX: &str = "spk";
/// The nftables table in each namespace.
const TABLE: &str = "spoke_faults";

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Held while picking an address and creating the link, so tests running in
/// parallel in one process do not pick the same /30.
static CREATING: Mutex<()> = Mutex::new(());

/// A namespace with a veth link to the host; see the module docs.
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    /// The host end of the veth pair.
    pub host_if: String,
    /// The namespace end of the veth pair.
    pub ns_if: String,
    /// The host end's address: where the namespace reaches this host.
    pub host_ip: Ipv4Addr,
    /// The namespace end's address.
    pub ns_ip: Ipv4Addr,
}

fn find_tool(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Panics with what the network fault tests need when it is missing.
fn require() -> (String, String) {
    let root = crate::running_as_root();
    let ip = find_tool("ip");
    let nft = find_tool("nft");
    match (root, ip, nft) {
        (true, Some(ip), Some(nft)) => (ip, nft),
        (root, ip, nft) => {
            let mut missing = Vec::new();
            if !root {
                missing.push("root (network namespaces, veth links and nftables rules need it)");
            }
            if ip.is_none() {
                missing.push("the `ip` command (Debian package iproute2)");
            }
            if nft.is_none() {
                missing.push("the `nft` command (Debian package nftables)");
            }
            panic!(
                "the network fault tests need {}: run them as root after `apt-get install iproute2 nftables` (scripts/test does both as root)",
                missing.join(", ")
            );
        }
    }
}

/// Runs a command, panicking with its output when it fails.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and ignores how it ends (clean-up).
fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The pid in a name this module made (`spk<pid>n<counter>`).
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('n').next()?.parse().ok()
}

/// Removes namespaces (and their links) left by test processes that no
/// longer run (killed before their `Drop` ran).
fn remove_stale(ip: &str) {
    let listed = run(ip, &["netns", "list"], None);
    for name in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = owner_pid(name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            quiet(ip, &["link", "del", &format!("{name}h")]);
            quiet(ip, &["netns", "del", name]);
        }
    }
}

/// A /30 in 10.213.0.0/16 that no address on this host is in yet.
fn free_subnet(ip: &str, start: u32) -> (Ipv4Addr, Ipv4Addr) {
    let used: HashSet<u32> = run(ip, &["-o", "-4", "addr", "show"], None)
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(|a| u32::from(a) & !3)
        .collect();
    let base = u32::from(Ipv4Addr::new(10, 213, 0, 0));
    (0..16384)
        .map(|i| base + ((start + i) % 16384) * 4)
        .find(|net| !used.contains(net))
        .map(|net| (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)))
        .expect("a free /30 in 10.213.0.0/16")
}

impl Netns {
    /// Creates a namespace with its link up and an empty nftables table
    /// (nothing dropped yet).
    pub fn create() -> Netns {
        let (ip, nft) = require();
        let _guard = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale(&ip);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Interface names have at most 15 bytes: "spk" + pid (≤ 7 digits)
        // + "n" + counter + "h"/"a".
        let name = format!("{PREFIX}{pid}n{n}");
        let (host_ip, ns_ip) = free_subnet(&ip, pid.wrapping_mul(7).wrapping_add(n * 131));
        let ns = Netns {
            host_if: format!("{name}h"),
            ns_if: format!("{name}a"),
            name,
            host_ip,
            ns_ip,
        };
        // From here on, Drop cleans up whatever was made.
        run(&ip, &["netns", "add", &ns.name], None);
        run(
            &ip,
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
            None,
        );
        run(&ip, &["link", "set", &ns.ns_if, "netns", &ns.name], None);
        let host_cidr = format!("{host_ip}/30");
        let ns_cidr = format!("{ns_ip}/30");
        run(&ip, &["addr", "add", &host_cidr, "dev", &ns.host_if], None);
        run(&ip, &["link", "set", &ns.host_if, "up"], None);
        ns.exec(&ip, &["addr", "add", &ns_cidr, "dev", &ns.ns_if]);
        ns.exec(&ip, &["link", "set", &ns.ns_if, "up"]);
        ns.exec(&ip, &["link", "set", "lo", "up"]);
        let table = format!(
            "table inet {TABLE} {{\n\
               chain input {{ type filter hook input priority 0; policy accept; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; }}\n\
             }}\n"
        );
        ns.nft(&nft, &table);
        ns
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend(args);
        run(&find_tool("ip").expect("ip"), &all, None)
    }

    /// Runs an nftables script inside the namespace (one transaction).
    fn nft(&self, nft: &str, script: &str) {
        let ip = find_tool("ip").expect("ip");
        run(
            &ip,
            &["netns", "exec", &self.name, nft, "-f", "-"],
            Some(script),
        );
    }

    /// Replaces the rules with `rule` (an nftables statement after the
    /// interface match), applied to packets both ways on the namespace's link.
    fn set_rules(&self, rule: Option<&str>) {
        let nft = find_tool("nft").expect("nft");
        let mut script =
            format!("flush chain inet {TABLE} input\nflush chain inet {TABLE} output\n");
        if let Some(rule) = rule {
            script.push_str(&format!(
                "add rule inet {TABLE} input iifname \"{0}\" {rule}\n\
                 add rule inet {TABLE} output oifname \"{0}\" {rule}\n",
                self.ns_if
            ));
        }
        self.nft(&nft, &script);
    }

    /// The program and arguments that start a command in this namespace:
    /// `ip netns exec NAME program` (for [`crate::Hub::agent_launched`]).
    pub fn launcher(&self, program: &Path) -> Vec<String> {
        vec![
            find_tool("ip").expect("ip"),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
            program.display().to_string(),
        ]
    }

    /// Cuts the link: every packet either way is dropped silently (no
    /// reset, no ICMP), as when a cable or a radio link goes.
    pub fn cut(&self) {
        self.set_rules(Some("counter drop comment \"cut\""));
    }

    /// Drops `percent` % of the packets either way, at random.
    pub fn lossy(&self, percent: u8) {
        assert!(percent <= 100, "a percentage");
        self.set_rules(Some(&format!(
            "numgen random mod 100 < {percent} counter drop comment \"loss\""
        )));
    }

    /// Removes every rule: the link carries everything again.
    pub fn heal(&self) {
        self.set_rules(None);
    }

    /// Packets dropped by the current rules (both ways), from their
    /// counters; 0 when healed.
    pub fn dropped(&self) -> u64 {
        let nft = find_tool("nft").expect("nft");
        let listed = self.exec(&nft, &["list", "table", "inet", TABLE]);
        listed
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let Some(ip) = find_tool("ip") else { return };
        // Deleting one end deletes the pair, even while a process still
        // holds the namespace open; the rules go with the namespace.
        quiet(&ip, &["link", "del", &self.host_if]);
        quiet(&ip, &["netns", "del", &self.name]);
    }
}
