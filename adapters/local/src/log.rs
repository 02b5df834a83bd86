//! The logs: one JSON line per request on standard output, and one JSON line per operator event
//! (a key-set refresh, a warning raised while deciding) on standard error.

use std::io::Write;

use portcullis_core::jwks::KeyEvent;
use portcullis_core::log::LogLine;
use serde_json::{json, Map, Value};

use crate::context;

/// Write `line` and a newline in one locked write, then flush.
///
/// One write under the lock keeps lines from concurrent requests whole; the flush makes each
/// line visible to a log shipper (or a test) as soon as the request is answered. A failed write
/// (a closed pipe) is dropped rather than failing the request: the client's answer matters more.
pub fn emit(line: &LogLine<'_>) {
    let mut text = line.to_json();
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// How much an operator event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine: a key set was refreshed.
    Info,
    /// Needs attention: a refresh failed, a key was skipped.
    Warn,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }

    /// The level of a key-set event: only a successful refresh is routine.
    pub fn of(event: &KeyEvent) -> Level {
        match event {
            KeyEvent::Refreshed { .. } => Level::Info,
            KeyEvent::RefreshFailed { .. } | KeyEvent::SkippedKey { .. } => Level::Warn,
        }
    }
}

/// The JSON line for an operator event: `time`, `level`, the given context fields, `event`.
pub fn event_line(level: Level, fields: &[(&str, &str)], event: &str) -> String {
    let mut line = Map::new();
    line.insert("time".into(), json!(context::now().to_rfc3339()));
    line.insert("level".into(), json!(level.as_str()));
    for (name, value) in fields {
        line.insert((*name).into(), json!(value));
    }
    line.insert("event".into(), json!(event));
    Value::Object(line).to_string()
}

/// Write an operator event to stderr, as one line in one locked write.
pub fn event(level: Level, fields: &[(&str, &str)], event: &str) {
    let mut text = event_line(level, fields, event);
    text.push('\n');
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Log what happened to provider `provider`'s key set.
pub fn key_event(provider: &str, key_event: &KeyEvent) {
    event(
        Level::of(key_event),
        &[("provider", provider)],
        &key_event.to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_is_one_json_object_with_every_field() {
        let line = event_line(
            Level::Warn,
            &[("provider", "idp \"main\"")],
            "key set refresh failed, keeping the last good set: timed out",
        );
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["level"], "warn");
        assert_eq!(value["provider"], "idp \"main\"");
        assert!(
            value["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(value["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("key set refresh failed")));
    }

    #[test]
    fn only_a_refresh_is_routine() {
        assert_eq!(Level::of(&KeyEvent::Refreshed { keys: 2 }), Level::Info);
        assert_eq!(
            Level::of(&KeyEvent::RefreshFailed { reason: "x".into() }),
            Level::Warn
        );
        assert_eq!(
            Level::of(&KeyEvent::SkippedKey {
                index: 0,
                reason: "x".into()
            }),
            Level::Warn
        );
    }
}
