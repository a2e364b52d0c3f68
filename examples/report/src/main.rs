//! report: a CronJob that sums up what the batch workers wrote.
//!
//! Reads every `*.json` result in `REPORT_DIR` (default `/data/out`), adds up
//! their lines and words, logs one JSON line and exits 0. A result it cannot
//! read is reported as a warning and skipped: a report is still useful.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    #[serde(default = "default_dir")]
    dir: PathBuf,
}

fn default_dir() -> PathBuf {
    "/data/out".into()
}

#[derive(Deserialize)]
struct Result {
    lines: u64,
    words: u64,
}

fn main() {
    let settings: Settings = spoke_guest::config::from_env("REPORT_").unwrap_or_else(|e| {
        spoke_guest::error!("bad settings"; error = e.to_string());
        std::process::exit(2)
    });
    let entries = match std::fs::read_dir(&settings.dir) {
        Ok(entries) => entries,
        Err(e) => {
            spoke_guest::warn!("nothing to report yet"; dir = settings.dir, error = e.to_string());
            spoke_guest::info!("report"; files = 0, lines = 0, words = 0);
            return;
        }
    };
    let (mut files, mut lines, mut words) = (0u64, 0u64, 0u64);
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Result>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => {
                files += 1;
                lines += r.lines;
                words += r.words;
            }
            Err(e) => spoke_guest::warn!("skipped a result"; file = path, error = e),
        }
    }
    spoke_guest::info!("report"; files = files, lines = lines, words = words);
}
