//! Structured logs: one JSON object per line.
//!
//! The agent stores what a pod writes to stdout and stderr with a timestamp
//! per line, so a line needs no time of its own: it carries `level`, `msg`
//! and the fields given. `info` and `debug` go to stdout, `warn` and `error`
//! to stderr, each line in a single write so that lines never interleave.
//!
//! ```
//! spoke_guest::info!("reading"; zone = 0, celsius = 41.5);
//! // {"level":"info","msg":"reading","zone":0,"celsius":41.5}
//! spoke_guest::warn!("sensor missing"; path = "/host/temp");
//! ```

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// How much a line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One log line being put together; the macros build these.
pub struct Line {
    level: Level,
    msg: String,
    /// In the order given: a reader sees them as the author wrote them.
    fields: Vec<(String, Value)>,
}

impl Line {
    pub fn new(level: Level, msg: impl Into<String>) -> Line {
        Line {
            level,
            msg: msg.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field. A value that cannot be represented as JSON is logged as
    /// its error text rather than lost.
    pub fn field(mut self, key: &str, value: impl Serialize) -> Line {
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| Value::from(format!("<unserialisable: {e}>")));
        self.fields.push((key.to_string(), value));
        self
    }

    /// The line as it will be written, newline included.
    pub fn render(&self) -> String {
        let quote = |s: &str| Value::from(s).to_string();
        let mut text = format!(
            "{{\"level\":\"{}\",\"msg\":{}",
            self.level.as_str(),
            quote(&self.msg)
        );
        for (key, value) in &self.fields {
            text.push(',');
            text.push_str(&quote(key));
            text.push(':');
            text.push_str(&value.to_string());
        }
        text.push_str("}\n");
        text
    }

    /// Writes the line to stdout (debug, info) or stderr (warn, error).
    /// A pod must not die because its log cannot be written, so errors are
    /// ignored.
    pub fn emit(self) {
        let text = self.render();
        let _ = match self.level {
            Level::Debug | Level::Info => std::io::stdout().lock().write_all(text.as_bytes()),
            Level::Warn | Level::Error => std::io::stderr().lock().write_all(text.as_bytes()),
        };
        if matches!(self.level, Level::Debug | Level::Info) {
            let _ = std::io::stdout().flush();
        }
    }
}

/// `log!(Level::Info, "msg"; key = value, ...)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $msg:expr $(; $($key:ident = $value:expr),* $(,)?)?) => {
        $crate::log::Line::new($level, $msg)
            $($(.field(stringify!($key), &$value))*)?
            .emit()
    };
}

/// `debug!("msg"; key = value, ...)` to stdout.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Debug, $($t)*) };
}

/// `info!("msg"; key = value, ...)` to stdout.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Info, $($t)*) };
}

/// `warn!("msg"; key = value, ...)` to stderr.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Warn, $($t)*) };
}

/// `error!("msg"; key = value, ...)` to stderr.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Error, $($t)*) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_level_msg_and_fields_in_order() {
        let line = Line::new(Level::Info, "reading")
            .field("zone", 0)
            .field("celsius", 41.5)
            .field("site", Some("barn"))
            .render();
        assert_eq!(
            line,
            "{\"level\":\"info\",\"msg\":\"reading\",\"zone\":0,\"celsius\":41.5,\"site\":\"barn\"}\n"
        );
    }

    #[test]
    fn text_with_quotes_and_newlines_stays_on_one_line() {
        let line = Line::new(Level::Error, "bad \"input\"\nsecond line").render();
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["msg"], "bad \"input\"\nsecond line");
        assert_eq!(v["level"], "error");
    }

    #[test]
    fn a_value_json_cannot_hold_is_logged_as_text() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(vec![1u8], 2u8); // map keys must be strings in JSON
        let v: Value = serde_json::from_str(
            Line::new(Level::Warn, "x")
                .field("m", m)
                .render()
                .trim_end(),
        )
        .unwrap();
        assert!(
            v["m"].as_str().unwrap().starts_with("<unserialisable"),
            "{v}"
        );
    }
}
