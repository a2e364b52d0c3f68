//! Collects the `@figure` lines of a benchmark suite run into a results
//! table (`scripts/bench` runs it; see BENCHMARKS.md).
//!
//! `bench-report DIR` reads, in DIR (`target/bench`):
//!
//! - `meta`: `key=value` lines the script wrote before the runs (date,
//!   commit, profile, load average before, command line, rustc);
//! - `status`: one line per bench run, `bench<TAB>run<TAB>exit code<TAB>seconds`;
//! - `<bench>-<run>.log`: each run's whole output;
//!
//! and writes `results.md` and `results.json` there: the machine, then per
//! bench the median of each figure over its runs, the spread (min–max), its
//! same-run baseline and the ratio to it (median and spread of the per-run
//! ratios), and the goal. A run that exited non-zero is shown as failed and
//! makes this program exit with 1 after writing the files; a figure line
//! that does not parse is listed, never fatal.
//!
//! `bench-report executables` reads `cargo … --message-format=json` on
//! standard input and prints `name<TAB>path` for each bench executable, so
//! the script runs the binaries it built without cargo in between.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use spoke_e2e::stats::Figure;

/// One run of one bench binary, from the `status` file.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Run {
    bench: String,
    run: u32,
    exit_code: i32,
    seconds: f64,
}

/// A line that looked like a figure but did not parse.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Malformed {
    file: String,
    line: usize,
    error: String,
}

/// Median, min and max of some samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summary(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// One figure over all runs of its bench.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row {
    name: String,
    unit: String,
    /// One value per sample, in run order.
    values: Vec<f64>,
    /// The runs the samples came from.
    runs: Vec<u32>,
    value: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_name: Option<String>,
    baseline_values: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Summary>,
    /// value / baseline, per sample that had a non-zero baseline.
    ratios: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    goal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Bench {
    bench: String,
    runs: Vec<Run>,
    failed: bool,
    figures: Vec<Row>,
}

/// The figures of one log, and the lines that did not parse.
fn parse_log(text: &str, file: &str) -> (Vec<Figure>, Vec<Malformed>) {
    let mut figures = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match Figure::parse_line(line) {
            None => {}
            Some(Ok(f)) => figures.push(f),
            Some(Err(error)) => bad.push(Malformed {
                file: file.to_string(),
                line: i + 1,
                error,
            }),
        }
    }
    (figures, bad)
}

/// Groups the samples of one bench, `(run, figure)`, by figure name in the
/// order they first appeared, and summarises each.
fn group(samples: &[(u32, Figure)]) -> Vec<Row> {
    let mut order: Vec<String> = Vec::new();
    let mut by_name: BTreeMap<String, Vec<(u32, &Figure)>> = BTreeMap::new();
    for (run, f) in samples {
        let entry = by_name.entry(f.name.clone()).or_default();
        if entry.is_empty() {
            order.push(f.name.clone());
        }
        entry.push((*run, f));
    }
    order
        .into_iter()
        .map(|name| {
            let all = &by_name[&name];
            let first = all[0].1;
            let values: Vec<f64> = all.iter().map(|(_, f)| f.value).collect();
            let mut runs: Vec<u32> = all.iter().map(|(r, _)| *r).collect();
            runs.dedup();
            let baseline_values: Vec<f64> = all
                .iter()
                .filter_map(|(_, f)| f.baseline.as_ref().map(|b| b.value))
                .collect();
            let ratios: Vec<f64> = all
                .iter()
                .filter_map(|(_, f)| {
                    let b = f.baseline.as_ref()?.value;
                    (b != 0.0).then(|| f.value / b)
                })
                .collect();
            Row {
                unit: first.unit.clone(),
                value: summary(&values),
                baseline_name: all
                    .iter()
                    .find_map(|(_, f)| f.baseline.as_ref().map(|b| b.name.clone())),
                baseline: summary(&baseline_values),
                ratio: summary(&ratios),
                goal: all.iter().find_map(|(_, f)| f.goal.clone()),
                name,
                values,
                runs,
                baseline_values,
                ratios,
            }
        })
        .collect()
}

/// Reads the `status` file: benches in the order they first ran.
fn parse_status(text: &str) -> (Vec<Run>, Vec<Malformed>) {
    let mut runs = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = match fields.as_slice() {
            [bench, run, code, seconds] => (|| {
                Some(Run {
                    bench: bench.to_string(),
                    run: run.parse().ok()?,
                    exit_code: code.parse().ok()?,
                    seconds: seconds.parse().ok()?,
                })
            })(),
            _ => None,
        };
        match parsed {
            Some(r) => runs.push(r),
            None => bad.push(Malformed {
                file: "status".into(),
                line: i + 1,
                error: format!("expected bench, run, exit code, seconds: {line:?}"),
            }),
        }
    }
    (runs, bad)
}

/// Every bench with its runs and figures; logs are read with `read_log`.
fn collect(
    runs: &[Run],
    mut read_log: impl FnMut(&str) -> Option<String>,
) -> (Vec<Bench>, Vec<Malformed>) {
    let mut benches: Vec<Bench> = Vec::new();
    let mut bad = Vec::new();
    let mut samples: BTreeMap<String, Vec<(u32, Figure)>> = BTreeMap::new();
    for r in runs {
        if !benches.iter().any(|b| b.bench == r.bench) {
            benches.push(Bench {
                bench: r.bench.clone(),
                runs: Vec::new(),
                failed: false,
                figures: Vec::new(),
            });
        }
        let b = benches
            .iter_mut()
            .find(|b| b.bench == r.bench)
            .expect("just added");
        b.runs.push(r.clone());
        b.failed |= r.exit_code != 0;
        let file = format!("{}-{}.log", r.bench, r.run);
        let Some(text) = read_log(&file) else {
            bad.push(Malformed {
                file,
                line: 0,
                error: "log missing".into(),
            });
            continue;
        };
        let (figures, mut malformed) = parse_log(&text, &file);
        bad.append(&mut malformed);
        samples
            .entry(r.bench.clone())
            .or_default()
            .extend(figures.into_iter().map(|f| (r.run, f)));
    }
    for b in &mut benches {
        if let Some(s) = samples.get(&b.bench) {
            b.figures = group(s);
        }
    }
    (benches, bad)
}

/// Three significant digits, at least the integer part: `53.5`, `0.734`,
/// `1234`.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

fn with_unit(v: &str, unit: &str) -> String {
    match unit {
        "" => v.to_string(),
        "×" | "%" => format!("{v}{unit}"),
        _ => format!("{v} {unit}"),
    }
}

fn spread(s: &Summary, unit: &str, runs: usize) -> String {
    if runs < 2 {
        "—".into()
    } else {
        with_unit(&format!("{}–{}", num(s.min), num(s.max)), unit)
    }
}

/// Markdown table cells must not contain a bare `|`.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(machine: &[(String, String)], benches: &[Bench], bad: &[Malformed]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark results\n");
    for (k, v) in machine {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md, "\n| bench | runs | status | wall time per run |");
    let _ = writeln!(md, "|---|---|---|---|");
    for b in benches {
        let times: Vec<String> = b
            .runs
            .iter()
            .map(|r| format!("{:.0} s", r.seconds))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            b.bench,
            b.runs.len(),
            status(b),
            times.join(", ")
        );
    }
    for b in benches {
        let _ = writeln!(md, "\n## {}\n", b.bench);
        if b.failed {
            let _ = writeln!(md, "**{}**\n", status(b));
        }
        let _ = writeln!(
            md,
            "| figure | median | spread (min–max) | runs | baseline (median) | ratio to baseline (median, spread) | goal |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for r in &b.figures {
            let runs = r.values.len();
            let value = r.value.expect("a row has at least one sample");
            let baseline = match (&r.baseline_name, &r.baseline) {
                (Some(name), Some(s)) => {
                    format!("{}: {}", cell(name), with_unit(&num(s.median), &r.unit))
                }
                _ => String::new(),
            };
            let ratio = match &r.ratio {
                Some(s) if r.ratios.len() >= 2 => {
                    format!("{}× ({}–{})", num(s.median), num(s.min), num(s.max))
                }
                Some(s) => format!("{}×", num(s.median)),
                None => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}/{} | {} | {} | {} |",
                cell(&r.name),
                with_unit(&num(value.median), &r.unit),
                spread(&value, &r.unit, runs),
                r.runs.len(),
                b.runs.len(),
                baseline,
                ratio,
                cell(r.goal.as_deref().unwrap_or(""))
            );
        }
        if b.failed {
            let _ = writeln!(
                md,
                "| **failed**: {} | | | | | | |",
                status(b).trim_start_matches("FAILED: ")
            );
        } else if b.figures.is_empty() {
            let _ = writeln!(md, "| (no figures emitted) | | | | | | |");
        }
    }
    if !bad.is_empty() {
        let _ = writeln!(md, "\n## Lines that did not parse\n");
        for m in bad {
            let _ = writeln!(md, "- {}:{}: {}", m.file, m.line, m.error);
        }
    }
    md
}

fn status(b: &Bench) -> String {
    let failed: Vec<String> = b
        .runs
        .iter()
        .filter(|r| r.exit_code != 0)
        .map(|r| {
            format!(
                "run {} exited {} (see {}-{}.log)",
                r.run, r.exit_code, r.bench, r.run
            )
        })
        .collect();
    if failed.is_empty() {
        "ok".into()
    } else {
        format!("FAILED: {}", failed.join("; "))
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn first_line_with(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// What the machine is, and the `meta` the script wrote, in display order.
fn machine(meta: &str) -> Vec<(String, String)> {
    let meta: BTreeMap<&str, &str> = meta
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let cpuinfo = read(Path::new("/proc/cpuinfo")).unwrap_or_default();
    let cpu = first_line_with(&cpuinfo, "model name").unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ram = read(Path::new("/proc/meminfo"))
        .and_then(|m| first_line_with(&m, "MemTotal"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "?".into());
    let kernel = read(Path::new("/proc/sys/kernel/osrelease"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let os = read(Path::new("/etc/os-release"))
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let load_after = read(Path::new("/proc/loadavg"))
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into());
    let m = |k: &str| meta.get(k).map(|v| v.to_string()).unwrap_or_default();
    vec![
        ("CPU".into(), format!("{cpu}, {cores} cores")),
        ("RAM".into(), ram),
        ("kernel".into(), format!("Linux {kernel} ({os})")),
        (
            "load average (1, 5, 15 min)".into(),
            format!("before {}, after {load_after}", m("load_before")),
        ),
        (
            "date".into(),
            format!("{} → {}", m("started"), m("finished")),
        ),
        ("git commit".into(), m("commit")),
        ("profile".into(), m("profile")),
        ("rustc".into(), m("rustc")),
        ("command".into(), format!("`{}`", m("command"))),
    ]
}

#[derive(Serialize)]
struct Results<'a> {
    machine: BTreeMap<&'a str, &'a str>,
    benches: &'a [Bench],
    malformed: &'a [Malformed],
}

fn report(dir: &Path) -> Result<bool, String> {
    let status = read(&dir.join("status"))
        .ok_or_else(|| format!("{} is missing", dir.join("status").display()))?;
    let (runs, mut bad) = parse_status(&status);
    let (benches, mut log_bad) = collect(&runs, |file| read(&dir.join(file)));
    bad.append(&mut log_bad);
    let machine = machine(&read(&dir.join("meta")).unwrap_or_default());
    let md = markdown(&machine, &benches, &bad);
    let json = serde_json::to_string_pretty(&Results {
        machine: machine
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        benches: &benches,
        malformed: &bad,
    })
    .map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let path: PathBuf = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("results.md", &md)?;
    write("results.json", &json)?;
    print!("{md}");
    for m in &bad {
        eprintln!("bench-report: {}:{}: {}", m.file, m.line, m.error);
    }
    Ok(!runs.is_empty() && benches.iter().all(|b| !b.failed))
}

/// `name<TAB>path` of each bench executable in cargo's JSON messages.
fn executables(messages: &str) -> Vec<(String, String)> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"))
        })
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_string(),
                m["executable"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd] if cmd == "executables" => {
            let mut input = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
                eprintln!("bench-report: reading standard input: {e}");
                return ExitCode::FAILURE;
            }
            for (name, path) in executables(&input) {
                println!("{name}\t{path}");
            }
            ExitCode::SUCCESS
        }
        [dir] => match report(Path::new(dir)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("bench-report: a bench failed (see the table)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("bench-report: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("usage: bench-report DIR | bench-report executables < cargo-json");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: &Figure) -> String {
        format!(
            "{}{}",
            spoke_e2e::stats::FIGURE_PREFIX,
            serde_json::to_string(f).unwrap()
        )
    }

    #[test]
    fn median_of_odd_and_even_counts_and_spread() {
        let s = summary(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = summary(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn ratios_are_per_run_then_summarised() {
        let samples: Vec<(u32, Figure)> = [(1, 10.0, 2.0), (2, 12.0, 3.0), (3, 30.0, 5.0)]
            .into_iter()
            .map(|(run, v, b)| {
                (
                    run,
                    Figure::new("x", "lat", v, "ms")
                        .baseline("floor", b)
                        .goal("≤ 3×"),
                )
            })
            .collect();
        let rows = group(&samples);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.value.unwrap().median, 12.0);
        assert_eq!(r.baseline.unwrap().median, 3.0);
        // Ratios 5, 4, 6: median 5, not 12 / 3.
        let ratio = r.ratio.unwrap();
        assert_eq!((ratio.median, ratio.min, ratio.max), (5.0, 4.0, 6.0));
        assert_eq!(r.baseline_name.as_deref(), Some("floor"));
        assert_eq!(r.goal.as_deref(), Some("≤ 3×"));
        assert_eq!(r.runs, vec![1, 2, 3]);
    }

    #[test]
    fn grouping_keeps_first_appearance_order_and_a_zero_baseline_has_no_ratio() {
        let samples = vec![
            (1, Figure::new("x", "b", 1.0, "")),
            (1, Figure::new("x", "a", 2.0, "").baseline("zero", 0.0)),
            (2, Figure::new("x", "a", 4.0, "").baseline("zero", 0.0)),
            (2, Figure::new("x", "b", 3.0, "")),
        ];
        let rows = group(&samples);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(rows[1].values, vec![2.0, 4.0]);
        assert_eq!(rows[1].ratio, None);
        assert_eq!(rows[0].value.unwrap().median, 2.0);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_place() {
        let good = line(&Figure::new("x", "ok", 1.5, "ms"));
        let text = format!(
            "| a human table |\n{good}\n@figure {{not json\n@figure {{\"bench\":\"x\",\"name\":\"n\",\"value\":null,\"unit\":\"\"}}\n@figure {{\"bench\":\"x\",\"name\":\"n\"}}\nsomething @figure in the middle\n"
        );
        let (figures, bad) = parse_log(&text, "x-1.log");
        assert_eq!(figures.len(), 1);
        assert_eq!(figures[0].name, "ok");
        let lines: Vec<usize> = bad.iter().map(|m| m.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(
            bad.iter()
                .all(|m| m.file == "x-1.log" && !m.error.is_empty())
        );
    }

    #[test]
    fn a_failed_run_marks_its_bench_and_shows_in_the_table() {
        let (runs, bad) = parse_status("api\t1\t0\t12.5\napi\t2\t101\t3.0\nnet\t1\t0\t4\n");
        assert!(bad.is_empty());
        let logs: BTreeMap<String, String> = [
            (
                "api-1.log",
                line(&Figure::new("api", "creates/s", 900.0, "/s")),
            ),
            ("api-2.log", "thread 'main' panicked".to_string()),
            (
                "net-1.log",
                line(&Figure::new("net", "GET/s", 9000.0, "/s")),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (benches, bad) = collect(&runs, |f| logs.get(f).cloned());
        assert!(bad.is_empty());
        assert_eq!(benches.len(), 2);
        assert!(benches[0].failed && !benches[1].failed);
        // The figure came from one run of two.
        assert_eq!(benches[0].figures[0].runs, vec![1]);
        let md = markdown(&[], &benches, &bad);
        assert!(md.contains("| api | 2 | FAILED: run 2 exited 101"), "{md}");
        assert!(md.contains("| creates/s | 900 /s | — | 1/2 |"), "{md}");
        assert!(md.contains("| **failed**: run 2 exited 101"), "{md}");
        assert!(md.contains("| net | 1 | ok |"), "{md}");
    }

    #[test]
    fn a_missing_log_and_a_bad_status_line_are_reported() {
        let (runs, bad) = parse_status("api\t1\t0\t1\ngarbage\napi\tx\t0\t1\n");
        assert_eq!(runs.len(), 1);
        assert_eq!(bad.len(), 2);
        let (benches, bad) = collect(&runs, |_| None);
        assert_eq!(benches.len(), 1);
        assert_eq!(bad[0].error, "log missing");
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(num(53.512), "53.5");
        assert_eq!(num(0.7345), "0.735");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(4.0), "4.00");
        assert_eq!(num(0.0), "0");
        assert_eq!(with_unit("2.0", "×"), "2.0×");
        assert_eq!(with_unit("3", ""), "3");
    }

    #[test]
    fn bench_executables_are_read_from_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"spoke_e2e"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bench"],"name":"api"},"executable":"/t/release/deps/api-1234"}
{"reason":"build-finished","success":true}
not json"#;
        assert_eq!(
            executables(msgs),
            vec![("api".to_string(), "/t/release/deps/api-1234".to_string())]
        );
    }
}
