//! Small helpers the benchmarks share: percentiles, printing, and the raw
//! redb commit that store-bound figures are compared with.

use std::path::Path;
use std::time::{Duration, Instant};

/// The `p` quantile (0.0..=1.0) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty(), "no samples");
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

/// `12.34 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Times `n` single-insert redb transactions (1 KiB values, durable
/// commits) in a file under `dir`: the floor of any durable write. The
/// file is grown by `n` untimed commits first, as a working store is (a
/// fresh file pays for growing on every commit).
pub fn redb_commits(dir: &Path, n: usize) -> Vec<Duration> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let db = redb::Database::create(dir.join("floor.redb")).expect("redb");
    let value = vec![7u8; 1024];
    (0..2 * n as u64)
        .map(|i| {
            let t = Instant::now();
            let txn = db.begin_write().expect("txn");
            txn.open_table(T)
                .expect("table")
                .insert(i % 100, value.as_slice())
                .expect("insert");
            txn.commit().expect("commit");
            t.elapsed()
        })
        .skip(n)
        .collect()
}

/// One figure of a benchmark run. Benches print their human tables as
/// before and, for each figure worth keeping, one machine-readable line
/// (`@figure {json}`) that `scripts/bench` collects from repeated runs
/// into the results table (median, spread, ratio to the baseline).
///
/// ```ignore
/// Figure::new("runtime", "pod cold start p50", 1.9, "ms")
///     .baseline("raw wasmtime instantiate + start", 0.7)
///     .goal("≤ 3× baseline")
///     .emit();
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figure {
    /// The bench binary (`runtime`, `storm`, …): the table's section.
    pub bench: String,
    /// What was measured, stable across runs (it is the grouping key).
    pub name: String,
    pub value: f64,
    /// `ms`, `µs`, `B`, `B/s`, `MiB`, `KiB`, `/s`, `%`, `×`, `s` or a
    /// plain count (`""`).
    pub unit: String,
    /// The floor or reference measured in the same run, in the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// The goal as the issue states it, for the reader (`≤ 15 MiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    pub name: String,
    pub value: f64,
}

/// The prefix `scripts/bench` looks for on standard output.
pub const FIGURE_PREFIX: &str = "@figure ";

/// `scripts/bench --quick` (`SPOKE_BENCH_QUICK=1`): benches with a size knob
/// use their smaller sizes, for a fast look rather than a figure to keep.
pub fn quick() -> bool {
    std::env::var_os("SPOKE_BENCH_QUICK").is_some_and(|v| v == "1")
}

/// `scripts/bench --soak` (`SPOKE_SOAK=1`): benches with a long variant run
/// it (the idle node for an hour, for instance).
pub fn soak() -> bool {
    std::env::var_os("SPOKE_SOAK").is_some_and(|v| v == "1")
}

impl Figure {
    pub fn new(bench: &str, name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            bench: bench.to_string(),
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            baseline: None,
            goal: None,
        }
    }

    /// A duration in milliseconds.
    pub fn ms(bench: &str, name: &str, d: Duration) -> Figure {
        Figure::new(bench, name, d.as_secs_f64() * 1e3, "ms")
    }

    pub fn baseline(mut self, name: &str, value: f64) -> Figure {
        self.baseline = Some(Baseline {
            name: name.to_string(),
            value,
        });
        self
    }

    /// A baseline duration, in milliseconds like [`Figure::ms`].
    pub fn baseline_ms(self, name: &str, d: Duration) -> Figure {
        self.baseline(name, d.as_secs_f64() * 1e3)
    }

    pub fn goal(mut self, goal: &str) -> Figure {
        self.goal = Some(goal.to_string());
        self
    }

    /// Reads one `@figure {json}` line; `None` when the line is not a
    /// figure line at all, an error naming what is wrong when it is one but
    /// does not parse.
    pub fn parse_line(line: &str) -> Option<Result<Figure, String>> {
        let json = line.trim_end().strip_prefix(FIGURE_PREFIX)?;
        Some(
            serde_json::from_str::<Figure>(json)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    if !f.value.is_finite() {
                        Err(format!("value of {:?} is not a finite number", f.name))
                    } else if f.name.is_empty() || f.bench.is_empty() {
                        Err("empty bench or name".to_string())
                    } else {
                        Ok(f)
                    }
                }),
        )
    }

    /// Prints the machine-readable line on standard output.
    pub fn emit(&self) {
        println!(
            "{FIGURE_PREFIX}{}",
            serde_json::to_string(self).expect("a figure serialises")
        );
    }
}
