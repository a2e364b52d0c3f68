//! thermometer: logs the board's temperature as JSON every few seconds.
//!
//! Linux boards (a Raspberry Pi among them) publish a thermal zone's
//! temperature in millidegrees Celsius in `/sys/class/thermal/thermal_zone0/temp`.
//! The DaemonSet in `daemonset.yaml` mounts `/sys/class/thermal` read-only
//! (a hostPath volume) and points `THERMO_PATH` at the file. Settings:
//!
//! - `THERMO_PATH`: the file to read (default `/thermal/thermal_zone0/temp`);
//! - `THERMO_INTERVAL_SECONDS`: time between readings (default 5);
//! - `THERMO_READINGS`: stop after that many readings (default: never).

use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_interval")]
    interval_seconds: u64,
    readings: Option<u64>,
}

fn default_path() -> String {
    "/thermal/thermal_zone0/temp".into()
}

fn default_interval() -> u64 {
    5
}

/// Millidegrees as the kernel writes them ("41234\n") to degrees.
fn celsius(text: &str) -> Result<f64, String> {
    let milli: i64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{:?} is not a temperature in millidegrees: {e}", text.trim()))?;
    Ok(milli as f64 / 1000.0)
}

fn main() {
    let settings: Settings = match spoke_guest::config::from_env("THERMO_") {
        Ok(s) => s,
        Err(e) => {
            spoke_guest::error!("bad settings"; error = e.to_string());
            std::process::exit(2);
        }
    };
    spoke_guest::info!("started"; path = settings.path, interval_seconds = settings.interval_seconds);
    let mut taken = 0u64;
    loop {
        match std::fs::read_to_string(&settings.path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|t| celsius(&t))
        {
            Ok(c) => spoke_guest::info!("temperature"; celsius = c),
            Err(e) => spoke_guest::warn!("no reading"; path = settings.path, error = e),
        }
        taken += 1;
        if settings.readings.is_some_and(|n| taken >= n) {
            break;
        }
        if spoke_guest::shutdown::sleep(Duration::from_secs(settings.interval_seconds)) {
            spoke_guest::info!("stopping"; readings = taken);
            break;
        }
    }
}
