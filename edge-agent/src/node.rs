//! What the agent says about its board: capacity and allocatable,
//! architecture, version, and its pressure conditions.
//!
//! Pressure follows the kubelet's hard eviction signals: `memory.available`
//! (`MemAvailable` in `/proc/meminfo`), `nodefs.available` and
//! `nodefs.inodesFree` (statvfs of the agent's data dir: modules, compiled
//! code, logs and volumes live there) and `pid.available` (`pid_max` less
//! the threads the kernel counts in `/proc/loadavg`). A condition turns
//! `True` as soon as a reading crosses its threshold and back to `False`
//! only after the readings have been fine for the transition period, so a
//! value hovering at a threshold does not send a message every check.
//! [`watch`] checks every [`CHECK_INTERVAL`] and passes the board's
//! description on only when it changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spoke_api::protocol::{NodeCondition, NodeInfo};
use spoke_api::quantity::Quantity;

/// How often pressure is checked (the kubelet's housekeeping interval).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Kubernetes' name for the architecture this agent was built for.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A field of `/proc/meminfo` in bytes.
fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// One threshold: an amount, or a percentage of the total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Amount(u64),
    Percent(f64),
}

impl Threshold {
    /// The amount below which `total` is under pressure.
    fn of(self, total: u64) -> u64 {
        match self {
            Threshold::Amount(a) => a,
            Threshold::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
        }
    }

    fn show(self, bytes: bool) -> String {
        match self {
            Threshold::Percent(p) => format!("{p}%"),
            Threshold::Amount(a) if bytes => mib(a),
            Threshold::Amount(a) => a.to_string(),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

/// Hard eviction thresholds, as the kubelet's `--eviction-hard`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub memory_available: Threshold,
    pub nodefs_available: Threshold,
    pub nodefs_inodes_free: Threshold,
    pub pid_available: Threshold,
    /// How long readings must be fine before a condition clears.
    pub transition_period: Duration,
}

impl Default for Thresholds {
    /// The kubelet's defaults on Linux (`memory.available<100Mi`,
    /// `nodefs.available<10%`, `nodefs.inodesFree<5%`,
    /// `--eviction-pressure-transition-period=5m`). The kubelet sets no
    /// `pid.available` threshold by default; Spoke uses 5%.
    fn default() -> Thresholds {
        Thresholds {
            memory_available: Threshold::Amount(100 << 20),
            nodefs_available: Threshold::Percent(10.0),
            nodefs_inodes_free: Threshold::Percent(5.0),
            pid_available: Threshold::Percent(5.0),
            transition_period: Duration::from_secs(300),
        }
    }
}

impl Thresholds {
    /// Applies `signal<value` entries (`memory.available<200Mi`,
    /// `nodefs.available<15%`) over the defaults. `Err` names the entry.
    pub fn parse(entries: &[String], transition_period: Duration) -> Result<Thresholds, String> {
        let mut t = Thresholds {
            transition_period,
            ..Thresholds::default()
        };
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let Some((signal, value)) = entry.split_once('<') else {
                return Err(format!(
                    "{entry:?}: expected SIGNAL<VALUE, e.g. memory.available<100Mi"
                ));
            };
            let value = value.trim();
            let threshold = if let Some(p) = value.strip_suffix('%') {
                match p.trim().parse::<f64>() {
                    Ok(p) if (0.0..=100.0).contains(&p) => Threshold::Percent(p),
                    _ => {
                        return Err(format!(
                            "{entry:?}: a percentage must be between 0% and 100%"
                        ));
                    }
                }
            } else {
                match Quantity(value.to_string()).to_units() {
                    Ok(n) => Threshold::Amount(n),
                    Err(e) => return Err(format!("{entry:?}: {e}")),
                }
            };
            match signal.trim() {
                "memory.available" => t.memory_available = threshold,
                "nodefs.available" => t.nodefs_available = threshold,
                "nodefs.inodesFree" => t.nodefs_inodes_free = threshold,
                "pid.available" => t.pid_available = threshold,
                other => {
                    return Err(format!(
                        "{other:?} is not a signal this agent knows (memory.available, \
                         nodefs.available, nodefs.inodesFree, pid.available)"
                    ));
                }
            }
        }
        Ok(t)
    }
}

/// One look at the board. `None` where this board cannot say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    /// `MemTotal`, bytes.
    pub memory_total: Option<u64>,
    /// `MemAvailable`, bytes.
    pub memory_available: Option<u64>,
    /// The data dir's file system.
    pub fs: Option<FsReading>,
    /// (threads in use, `pid_max`).
    pub pids: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FsReading {
    /// Bytes available to unprivileged users.
    pub available: u64,
    pub total: u64,
    pub inodes_free: u64,
    /// 0 on file systems without an inode limit.
    pub inodes_total: u64,
}

impl Readings {
    /// Reads `/proc` and the file system of `data_dir`.
    pub fn read(data_dir: &Path) -> Readings {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Readings {
            memory_total: meminfo_bytes(&meminfo, "MemTotal"),
            memory_available: meminfo_bytes(&meminfo, "MemAvailable"),
            fs: fs_reading(data_dir),
            pids: pids(),
        }
    }
}

#[cfg(unix)]
fn fs_reading(dir: &Path) -> Option<FsReading> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(FsReading {
        available: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
        inodes_free: s.f_favail,
        inodes_total: s.f_files,
    })
}

#[cfg(not(unix))]
fn fs_reading(_dir: &Path) -> Option<FsReading> {
    None
}

/// Threads in use (the kernel's count, the total in `/proc/loadavg`'s
/// fourth field) and `pid_max`: every thread takes a PID.
fn pids() -> Option<(u64, u64)> {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok()?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let used = loadavg.split_whitespace().nth(3)?.split_once('/')?.1;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// The conditions the agent reports, in this order.
const CONDITIONS: [&str; 3] = ["MemoryPressure", "DiskPressure", "PIDPressure"];

/// Turns readings into conditions, holding each `True` through the
/// transition period. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct Pressure {
    thresholds: Thresholds,
    /// When each of [`CONDITIONS`] was last seen under pressure.
    last_seen: [Option<Instant>; 3],
}

impl Pressure {
    pub fn new(thresholds: Thresholds) -> Pressure {
        Pressure {
            thresholds,
            last_seen: [None; 3],
        }
    }

    /// Why each condition is under pressure now (`Some(message)`), is not
    /// (`None`), or cannot be told (left out).
    fn check(&self, r: &Readings) -> [Option<Option<String>>; 3] {
        let t = &self.thresholds;
        let memory = r.memory_available.map(|avail| {
            let limit = t.memory_available.of(r.memory_total.unwrap_or(0));
            (avail < limit).then(|| {
                format!(
                    "memory.available {} is below the threshold {}",
                    mib(avail),
                    t.memory_available.show(true)
                )
            })
        });
        let disk = r.fs.map(|fs| {
            let limit = t.nodefs_available.of(fs.total);
            if fs.available < limit {
                return Some(format!(
                    "nodefs.available {} of {} is below the threshold {}",
                    mib(fs.available),
                    mib(fs.total),
                    t.nodefs_available.show(true)
                ));
            }
            let limit = t.nodefs_inodes_free.of(fs.inodes_total);
            (fs.inodes_total > 0 && fs.inodes_free < limit).then(|| {
                format!(
                    "nodefs.inodesFree {} of {} is below the threshold {}",
                    fs.inodes_free,
                    fs.inodes_total,
                    t.nodefs_inodes_free.show(false)
                )
            })
        });
        let pids = r.pids.map(|(used, max)| {
            let avail = max.saturating_sub(used);
            (avail < t.pid_available.of(max)).then(|| {
                format!(
                    "pid.available {avail} of {max} is below the threshold {}",
                    t.pid_available.show(false)
                )
            })
        });
        [memory, disk, pids]
    }

    /// The conditions for `readings` taken at `now`.
    pub fn observe(&mut self, readings: &Readings, now: Instant) -> Vec<NodeCondition> {
        let mut out = Vec::new();
        for (i, check) in self.check(readings).into_iter().enumerate() {
            let Some(pressure) = check else {
                continue;
            };
            let type_ = CONDITIONS[i];
            let message = match pressure {
                Some(message) => {
                    self.last_seen[i] = Some(now);
                    Some(message)
                }
                None => self.last_seen[i]
                    .filter(|&seen| {
                        now.saturating_duration_since(seen) < self.thresholds.transition_period
                    })
                    .map(|_| {
                        format!(
                            "recovered; held for the transition period of {}",
                            humantime::format_duration(self.thresholds.transition_period)
                        )
                    }),
            };
            out.push(match message {
                Some(message) => NodeCondition {
                    type_: type_.to_string(),
                    status: "True".to_string(),
                    reason: pressure_reason(type_).to_string(),
                    message,
                },
                None => NodeCondition {
                    type_: type_.to_string(),
                    status: "False".to_string(),
                    ..Default::default()
                },
            });
        }
        out
    }
}

/// The kubelet's reason for a pressure condition that is `True`.
fn pressure_reason(type_: &str) -> &'static str {
    match type_ {
        "MemoryPressure" => "KubeletHasInsufficientMemory",
        "DiskPressure" => "KubeletHasDiskPressure",
        _ => "KubeletHasInsufficientPID",
    }
}

/// This board's [`NodeInfo`] from `readings` and `conditions`.
pub fn info(
    max_pods: u32,
    thresholds: &Thresholds,
    readings: &Readings,
    conditions: Vec<NodeCondition>,
) -> NodeInfo {
    let mut capacity = BTreeMap::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    capacity.insert("cpu".to_string(), Quantity(cpus.to_string()));
    if let Some(total) = readings.memory_total {
        capacity.insert(
            "memory".to_string(),
            Quantity(format!("{}Ki", total / 1024)),
        );
    }
    capacity.insert("pods".to_string(), Quantity(max_pods.to_string()));
    // As the kubelet: allocatable memory is capacity less the hard
    // eviction threshold (Spoke reserves nothing else).
    let mut allocatable = BTreeMap::new();
    if let Some(total) = readings.memory_total {
        let reserve = thresholds.memory_available.of(total);
        if reserve > 0 {
            allocatable = capacity.clone();
            let left = total.saturating_sub(reserve) / 1024;
            allocatable.insert("memory".to_string(), Quantity(format!("{left}Ki")));
        }
    }
    NodeInfo {
        capacity,
        allocatable,
        architecture: architecture().to_string(),
        operating_system: std::env::consts::OS.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        conditions,
    }
}

/// Checks the board and keeps its description current.
pub struct Watcher {
    max_pods: u32,
    data_dir: PathBuf,
    pressure: Pressure,
}

impl Watcher {
    pub fn new(max_pods: u32, data_dir: &Path, thresholds: Thresholds) -> Watcher {
        Watcher {
            max_pods,
            data_dir: data_dir.to_path_buf(),
            pressure: Pressure::new(thresholds),
        }
    }

    /// The board's description now.
    pub fn check(&mut self) -> NodeInfo {
        let readings = Readings::read(&self.data_dir);
        let conditions = self.pressure.observe(&readings, Instant::now());
        for c in conditions.iter().filter(|c| c.status == "True") {
            tracing::debug!(condition = %c.type_, message = %c.message, "node under pressure");
        }
        info(
            self.max_pods,
            &self.pressure.thresholds,
            &readings,
            conditions,
        )
    }

    /// Checks every [`CHECK_INTERVAL`] and publishes a description when it
    /// differs from the last one (conditions flip rarely: the memory and
    /// disk figures themselves are not sent).
    pub async fn run(mut self, tx: tokio::sync::watch::Sender<NodeInfo>) {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let info = self.check();
            let changed = tx.send_if_modified(|cur| {
                if *cur == info {
                    return false;
                }
                for (old, new) in cur.conditions.iter().zip(&info.conditions) {
                    if old.status != new.status {
                        tracing::info!(condition = %new.type_, status = %new.status, message = %new.message, "node condition changed");
                    }
                }
                *cur = info;
                true
            });
            if tx.is_closed() && !changed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let meminfo = "MemTotal:        3884264 kB\nMemFree:  1 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(3884264 * 1024));
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
        assert_eq!(meminfo_bytes("nothing", "MemTotal"), None);
    }

    fn readings(
        mem_avail_mi: u64,
        disk_avail_pct: u64,
        inodes_free_pct: u64,
        pids_used: u64,
    ) -> Readings {
        Readings {
            memory_total: Some(1024 * MI),
            memory_available: Some(mem_avail_mi * MI),
            fs: Some(FsReading {
                available: disk_avail_pct * 100 * MI,
                total: 10_000 * MI,
                inodes_free: inodes_free_pct * 100,
                inodes_total: 10_000,
            }),
            pids: Some((pids_used, 32768)),
        }
    }

    fn statuses(c: &[NodeCondition]) -> Vec<(&str, &str)> {
        c.iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect()
    }

    #[test]
    fn each_signal_turns_its_condition_true_below_its_threshold() {
        let now = Instant::now();
        // (memory available MiB, disk free %, inodes free %, threads, expected statuses)
        let table: [(u64, u64, u64, u64, [&str; 3]); 6] = [
            (500, 50, 50, 300, ["False", "False", "False"]),
            (99, 50, 50, 300, ["True", "False", "False"]),
            (100, 50, 50, 300, ["False", "False", "False"]),
            (500, 9, 50, 300, ["False", "True", "False"]),
            (500, 50, 4, 300, ["False", "True", "False"]),
            (500, 50, 50, 32000, ["False", "False", "True"]),
        ];
        for (mem, disk, inodes, pids, want) in table {
            let mut p = Pressure::new(Thresholds::default());
            let got = p.observe(&readings(mem, disk, inodes, pids), now);
            let want: Vec<_> = CONDITIONS.into_iter().zip(want).collect();
            assert_eq!(statuses(&got), want, "{mem} {disk} {inodes} {pids}");
            for c in &got {
                if c.status == "True" {
                    assert!(
                        !c.reason.is_empty() && c.message.contains("threshold"),
                        "{c:?}"
                    );
                } else {
                    assert!(c.reason.is_empty() && c.message.is_empty(), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn a_condition_clears_only_after_the_transition_period() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Pressure::new(Thresholds {
            transition_period: 60 * s,
            ..Thresholds::default()
        });
        let low = readings(50, 50, 50, 300);
        let fine = readings(500, 50, 50, 300);
        assert_eq!(p.observe(&low, t0)[0].status, "True");
        let held = &p.observe(&fine, t0 + 30 * s)[0];
        assert_eq!(held.status, "True");
        assert!(held.message.contains("transition period of 1m"), "{held:?}");
        // Pressure again restarts the period.
        assert_eq!(p.observe(&low, t0 + 40 * s)[0].status, "True");
        assert_eq!(p.observe(&fine, t0 + 99 * s)[0].status, "True");
        assert_eq!(p.observe(&fine, t0 + 100 * s)[0].status, "False");
    }

    #[test]
    fn conditions_that_cannot_be_read_are_left_out() {
        let mut p = Pressure::new(Thresholds::default());
        let r = Readings {
            fs: Some(FsReading {
                available: 1,
                total: 100,
                inodes_free: 0,
                // No inode limit (btrfs): never inode pressure.
                inodes_total: 0,
            }),
            ..Readings::default()
        };
        assert_eq!(
            statuses(&p.observe(&r, Instant::now())),
            [("DiskPressure", "True")]
        );
        let r = Readings {
            fs: Some(FsReading {
                available: 50,
                total: 100,
                inodes_free: 0,
                inodes_total: 0,
            }),
            ..Readings::default()
        };
        let mut p = Pressure::new(Thresholds::default());
        assert_eq!(
            statuses(&p.observe(&r, Instant::now())),
            [("DiskPressure", "False")]
        );
    }

    #[test]
    fn thresholds_parse_over_the_defaults_and_bad_entries_are_named() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = Thresholds::parse(
            &s(&[
                "memory.available<200Mi",
                " nodefs.available<100%",
                "pid.available<1000",
            ]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(t.memory_available, Threshold::Amount(200 * MI));
        assert_eq!(t.nodefs_available, Threshold::Percent(100.0));
        assert_eq!(t.nodefs_inodes_free, Threshold::Percent(5.0));
        assert_eq!(t.pid_available, Threshold::Amount(1000));
        assert_eq!(t.transition_period, Duration::from_secs(30));
        // 100% of the disk free is never met: pressure however full it is.
        let mut p = Pressure::new(t);
        let r = readings(500, 99, 50, 300);
        assert_eq!(p.observe(&r, Instant::now())[1].status, "True");
        for (bad, names) in [
            ("memory.available", "memory.available"),
            ("nodefs.available<101%", "between 0% and 100%"),
            ("memory.available<lots", "memory.available<lots"),
            ("imagefs.available<15%", "imagefs.available"),
        ] {
            let e = Thresholds::parse(&s(&[bad]), Duration::ZERO).unwrap_err();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn allocatable_memory_is_capacity_less_the_eviction_threshold() {
        let r = readings(500, 50, 50, 300);
        let info = info(7, &Thresholds::default(), &r, vec![]);
        assert_eq!(info.capacity["pods"].0, "7");
        assert_eq!(info.capacity["memory"].0, "1048576Ki");
        assert_eq!(info.allocatable["memory"].0, format!("{}Ki", 924 * 1024));
        assert_eq!(info.allocatable["pods"].0, "7");
        assert!(info.capacity["cpu"].to_milli().unwrap() >= 1000);
        assert_eq!(info.operating_system, std::env::consts::OS);
        assert!(["amd64", "arm64", "arm"].contains(&info.architecture.as_str()));
    }

    #[test]
    fn this_board_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let r = Readings::read(dir.path());
        if cfg!(target_os = "linux") {
            assert!(r.memory_total.unwrap() > 0 && r.memory_available.is_some());
            assert!(r.fs.unwrap().total > 0);
            let (used, max) = r.pids.unwrap();
            assert!(used > 0 && max > used);
        }
        // What this board would say about itself passes the hub's check.
        let mut p = Pressure::new(Thresholds::default());
        let conditions = p.observe(&r, std::time::Instant::now());
        let info = info(110, &Thresholds::default(), &r, conditions);
        info.validate().unwrap();
    }
}
