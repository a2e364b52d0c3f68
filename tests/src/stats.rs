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
