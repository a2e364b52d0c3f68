//! What the agent says about its board: capacity, architecture, version.

use std::collections::BTreeMap;

use spoke_api::protocol::NodeInfo;
use spoke_api::quantity::Quantity;

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

/// `MemTotal` from `/proc/meminfo` as a quantity (`"3884264Ki"`), if readable.
fn mem_total(meminfo: &str) -> Option<Quantity> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(Quantity(format!("{kib}Ki")))
}

/// This board's [`NodeInfo`].
pub fn info(max_pods: u32) -> NodeInfo {
    let mut capacity = BTreeMap::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    capacity.insert("cpu".to_string(), Quantity(cpus.to_string()));
    if let Some(mem) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_total(&m))
    {
        capacity.insert("memory".to_string(), mem);
    }
    capacity.insert("pods".to_string(), Quantity(max_pods.to_string()));
    NodeInfo {
        capacity,
        architecture: architecture().to_string(),
        operating_system: std::env::consts::OS.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_from_meminfo_in_kibibytes() {
        let meminfo = "MemTotal:        3884264 kB\nMemFree:  1 kB\n";
        let q = mem_total(meminfo).unwrap();
        assert_eq!(q.0, "3884264Ki");
        assert_eq!(q.to_units().unwrap(), 3884264 * 1024);
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn node_info_reports_cpu_pods_and_kubernetes_architecture() {
        let info = info(7);
        assert_eq!(info.capacity["pods"].0, "7");
        assert!(info.capacity["cpu"].to_milli().unwrap() >= 1000);
        assert_eq!(info.operating_system, "linux");
        assert!(["amd64", "arm64", "arm"].contains(&info.architecture.as_str()));
    }
}
