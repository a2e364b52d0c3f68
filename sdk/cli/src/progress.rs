//! A one-line progress bar on stderr for uploads (`spoke push`).
//!
//! Drawn only when stderr is a terminal, so scripts and pipes see exactly
//! what they saw before. Hand-written rather than a crate: one line of text
//! redrawn with `\r` is all it takes.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Width of the bar between the brackets.
const BAR: usize = 24;
/// Least time between two redraws.
const EVERY: Duration = Duration::from_millis(100);

/// A progress bar for `total` bytes; does nothing when `enabled` is false.
pub struct Bar {
    label: String,
    total: u64,
    start: Instant,
    state: Mutex<State>,
}

struct State {
    enabled: bool,
    drawn_at: Option<Instant>,
    sent: u64,
}

impl Bar {
    pub fn new(label: &str, total: u64, enabled: bool) -> Bar {
        Bar {
            label: label.to_string(),
            total,
            start: Instant::now(),
            state: Mutex::new(State {
                enabled,
                drawn_at: None,
                sent: 0,
            }),
        }
    }

    /// `sent` bytes are on their way: redraws, at most every [`EVERY`].
    pub fn update(&self, sent: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.sent = sent;
        let now = Instant::now();
        if !s.enabled || s.drawn_at.is_some_and(|t| now - t < EVERY) {
            return;
        }
        s.drawn_at = Some(now);
        self.draw(sent);
    }

    /// Draws the final state and ends the line (if anything was drawn).
    pub fn finish(&self) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.enabled && s.drawn_at.is_some() {
            self.draw(s.sent);
            eprintln!();
        }
    }

    fn draw(&self, sent: u64) {
        let text = line(&self.label, sent, self.total, self.start.elapsed());
        let mut err = std::io::stderr().lock();
        // `\x1b[K` clears what a longer earlier line left behind.
        let _ = write!(err, "\r{text}\x1b[K");
        let _ = err.flush();
    }
}

/// The text of the bar: `LABEL [=====>    ]  1.5 MiB / 4.0 MiB  37%  2.1 MiB/s`.
pub fn line(label: &str, sent: u64, total: u64, elapsed: Duration) -> String {
    let sent = sent.min(total);
    let fraction = if total == 0 {
        1.0
    } else {
        sent as f64 / total as f64
    };
    let filled = ((fraction * BAR as f64) as usize).min(BAR);
    let mut bar = "=".repeat(filled);
    if filled < BAR {
        bar.push('>');
        bar.push_str(&" ".repeat(BAR - filled - 1));
    }
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!("{}/s", bytes(sent as f64 / secs))
    } else {
        "-".to_string()
    };
    format!(
        "{label} [{bar}] {} / {}  {:>3}%  {rate}",
        bytes(sent as f64),
        bytes(total as f64),
        (fraction * 100.0) as u32
    )
}

/// A byte count in binary units, as `ls -h` would: `512 B`, `1.5 MiB`.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024.0 {
        return format!("{n:.0} B");
    }
    let mut value = n / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_bytes_sent_of_total_percentage_and_rate() {
        let mib = 1024 * 1024;
        let l = line("hello:v1", 3 * mib / 2, 4 * mib, Duration::from_secs(1));
        assert_eq!(
            l,
            "hello:v1 [=========>              ] 1.5 MiB / 4.0 MiB   37%  1.5 MiB/s"
        );
        let done = line("x", 4 * mib, 4 * mib, Duration::from_secs(2));
        assert!(
            done.contains(&format!("[{}]", "=".repeat(BAR))) && done.contains("100%"),
            "{done}"
        );
        assert!(done.ends_with("2.0 MiB/s"), "{done}");
        let start = line("x", 0, 500, Duration::ZERO);
        assert!(
            start.contains("0 B / 500 B") && start.ends_with(" -"),
            "{start}"
        );
        // An empty file is complete at once, not a division by zero.
        assert!(line("x", 0, 0, Duration::from_secs(1)).contains("100%"));
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(bytes(1024.0), "1.0 KiB");
        assert_eq!(bytes(5.0 * 1024.0 * 1024.0 * 1024.0), "5.0 GiB");
    }

    #[test]
    fn a_disabled_bar_draws_nothing() {
        let bar = Bar::new("x", 10, false);
        bar.update(5);
        bar.finish();
        assert!(bar.state.lock().unwrap().drawn_at.is_none());
    }
}
