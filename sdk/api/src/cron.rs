//! The five-field cron syntax of `CronJob.spec.schedule`: minute, hour,
//! day of month, month, day of week; `*`, lists, ranges, steps, month and
//! day names, and the `@hourly`-style macros. As in cron (and Kubernetes),
//! when both day fields are restricted a day matches if either does.

use std::fmt;

/// A parsed schedule: the set of allowed values of each field, as bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
    text: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
    },
];

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{}: \"{s}\" is not a number", self.name))?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{}: {v} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// Parses one field into a bit set; also says whether it was `*`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        let mut star = false;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{}: step \"{s}\" must be a positive number", self.name)
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                star = star || step == 1;
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{}: range {a}-{b} is backwards", self.name));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (a, if part.contains('/') { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, star))
    }
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown macro \"{other}\" (known: @yearly, @monthly, @weekly, @daily, @hourly)"
                ));
            }
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        let mut stars = [false; 5];
        for (i, (field, part)) in FIELDS.iter().zip(&parts).enumerate() {
            (bits[i], stars[i]) = field.parse(part)?;
        }
        // Sunday is 0 or 7.
        let mut dow = bits[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & 0x7f;
        }
        Ok(Schedule {
            minutes: bits[0],
            hours: bits[1] as u32,
            days_of_month: bits[2] as u32,
            months: bits[3] as u16,
            days_of_week: dow as u8,
            dom_restricted: !stars[2],
            dow_restricted: !stars[4],
            text: text.trim().to_string(),
        })
    }

    /// Whether the schedule fires at this civil minute. `weekday` is 0 for
    /// Sunday.
    pub fn matches(&self, month: u32, day: u32, weekday: u32, hour: u32, minute: u32) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday) != 0;
        let day_ok = match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        };
        self.minutes & (1 << minute) != 0
            && self.hours & (1 << hour) != 0
            && self.months & (1 << month) != 0
            && day_ok
    }

    /// Whether any minute of this hour can match (lets a search skip hours).
    pub fn hour_allowed(&self, hour: u32) -> bool {
        self.hours & (1 << hour) != 0
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Minutes east of UTC of a CronJob `timeZone`. Only UTC and fixed offsets
/// (`UTC`, `Etc/UTC`, `+05:30`, `UTC-08:00`) are supported: the hub carries
/// no time zone database.
pub fn fixed_offset(tz: &str) -> Result<i64, String> {
    let rest = match tz {
        "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z" => return Ok(0),
        t => t
            .strip_prefix("UTC")
            .or_else(|| t.strip_prefix("GMT"))
            .unwrap_or(t),
    };
    let bad = || {
        format!(
            "unsupported time zone \"{tz}\": this hub supports UTC and fixed offsets such as \"+05:30\" or \"UTC-08:00\""
        )
    };
    let (sign, hm) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = hm.split_once(':').unwrap_or((hm, "0"));
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if h > 14 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_utc_or_fixed_offsets() {
        assert_eq!(fixed_offset("UTC"), Ok(0));
        assert_eq!(fixed_offset("+05:30"), Ok(330));
        assert_eq!(fixed_offset("UTC-08:00"), Ok(-480));
        assert!(
            fixed_offset("Europe/Paris")
                .unwrap_err()
                .contains("fixed offsets")
        );
        assert!(fixed_offset("+25:00").is_err());
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let s = Schedule::parse("*/15 9-17 * jan-mar mon-fri").unwrap();
        assert!(s.matches(1, 5, 1, 9, 30));
        assert!(!s.matches(1, 5, 1, 9, 31));
        assert!(!s.matches(4, 5, 1, 9, 30));
        assert!(!s.matches(1, 5, 0, 9, 30));
        assert!(!s.matches(1, 5, 1, 18, 0));
        let s = Schedule::parse("5,10 0 * * 7").unwrap();
        assert!(s.matches(6, 1, 0, 0, 10), "7 is Sunday too");
        let s = Schedule::parse("30/10 * * * *").unwrap();
        assert!(s.matches(1, 1, 1, 1, 50) && !s.matches(1, 1, 1, 1, 20));
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 1st of the month or any Monday.
        let s = Schedule::parse("0 0 1 * 1").unwrap();
        assert!(s.matches(3, 1, 4, 0, 0));
        assert!(s.matches(3, 9, 1, 0, 0));
        assert!(!s.matches(3, 9, 2, 0, 0));
    }

    #[test]
    fn macros_and_errors() {
        assert_eq!(
            Schedule::parse("@hourly").unwrap(),
            Schedule {
                text: "@hourly".into(),
                ..Schedule::parse("0 * * * *").unwrap()
            }
        );
        for (bad, needle) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is out of range"),
            ("* * * foo *", "month: \"foo\""),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("@sometimes", "unknown macro"),
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
