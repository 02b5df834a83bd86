//! Operator events: what an operator must hear about apart from the per-request access line
//! (a key set refreshed or failing, a policy loaded or refused, an origin that cannot be reached).
//!
//! Every runtime writes the same events with the same fields, one JSON object per line:
//! `time`, `level`, the event's context fields (`provider`, `request_id`, `source`, …), `event`.
//! The level belongs to the event, decided here, so no runtime can log a failure as routine.

use serde_json::Value;

use crate::config::ConfigError;
use crate::jwks::KeyEvent;
use crate::time::UnixTime;

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Routine: a key set refreshed, a policy loaded.
    Info,
    /// Needs attention: a refresh failed, a policy was refused, an origin is unreachable.
    Warn,
}

impl Level {
    /// `info` or `warn`, as written in the line.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }
}

/// One operator event, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, by the adapter's clock.
    pub time: UnixTime,
    /// How much it matters.
    pub level: Level,
    /// Context fields, in the order written (`provider`, `request_id`, …).
    pub fields: Vec<(&'static str, String)>,
    /// What happened, in words.
    pub text: String,
}

impl Event {
    /// An event with no context fields.
    pub fn new(time: UnixTime, level: Level, text: impl Into<String>) -> Self {
        Event {
            time,
            level,
            fields: Vec::new(),
            text: text.into(),
        }
    }

    /// The same event with one more context field.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    /// What happened to provider `provider`'s key set. Only a successful refresh is routine.
    pub fn key_set(time: UnixTime, provider: &str, event: &KeyEvent) -> Self {
        let level = match event {
            KeyEvent::Refreshed { .. } => Level::Info,
            KeyEvent::RefreshFailed { .. } | KeyEvent::SkippedKey { .. } => Level::Warn,
        };
        Event::new(time, level, event.to_string()).with("provider", provider)
    }

    /// A problem found in the policy while deciding (a schema compiled on first use that is
    /// broken), with its JSON pointer.
    pub fn policy_problem(time: UnixTime, problem: &ConfigError) -> Self {
        Event::new(time, Level::Warn, format!("policy refused: {problem}"))
    }

    /// The origin of request `request_id` could not be reached; `cause` is the runtime's
    /// description (refused, DNS, TLS), which the operator needs and the client must not see.
    pub fn origin_unreachable(time: UnixTime, request_id: &str, cause: &str) -> Self {
        Event::new(time, Level::Warn, format!("origin unreachable: {cause}"))
            .with("request_id", request_id)
    }

    /// The line as compact JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        // Written by hand rather than through a map, so the fields keep their documented order.
        let mut line = String::with_capacity(96 + self.text.len());
        line.push_str("{\"time\":\"");
        line.push_str(&self.time.to_rfc3339());
        line.push_str("\",\"level\":\"");
        line.push_str(self.level.as_str());
        line.push('"');
        for (name, value) in &self.fields {
            push_member(&mut line, name, value);
        }
        push_member(&mut line, "event", &self.text);
        line.push('}');
        line
    }
}

/// `error: cause: cause…`: a runtime's error with every source it chains, for the `cause` of an
/// event. Clients' top-level errors ("client error (Connect)") hide the useful part in their
/// sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `,"name":"value"`, both escaped as JSON strings.
fn push_member(line: &mut String, name: &str, value: &str) {
    line.push(',');
    line.push_str(&Value::from(name).to_string());
    line.push(':');
    line.push_str(&Value::from(value).to_string());
}

/// Where a runtime writes what the core hands it: the access line of each request, and
/// operator events. Natively and on Spin these are stdout and stderr; on Workers the console.
pub trait LogSink {
    /// Write one request's access line (JSON, no newline).
    fn access(&self, line: &str);
    /// Write one operator event.
    fn event(&self, event: &Event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_is_one_json_object_with_every_field_in_order() {
        let line = Event::new(
            UnixTime::from_secs(1_700_000_000),
            Level::Warn,
            "key set refresh failed, keeping the last good set: timed out",
        )
        .with("provider", "idp \"main\"")
        .to_json();
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["level"], "warn");
        assert_eq!(value["provider"], "idp \"main\"");
        assert_eq!(value["time"], "2023-11-14T22:13:20.000000Z");
        let keys: Vec<&str> = line
            .trim_matches(|c| c == '{' || c == '}')
            .split(",\"")
            .map(|kv| kv.trim_start_matches('"').split('"').next().unwrap_or(""))
            .collect();
        assert_eq!(keys, ["time", "level", "provider", "event"]);
    }

    #[test]
    fn an_error_chain_names_every_cause() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let error = Layer(
            "client error (Connect)",
            Some(Box::new(Layer("tcp connect error", None))),
        );
        assert_eq!(
            error_chain(&error),
            "client error (Connect): tcp connect error"
        );
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }

    #[test]
    fn only_a_refresh_is_routine() {
        let at = UnixTime::from_secs(1);
        let level = |e: KeyEvent| Event::key_set(at, "p", &e).level;
        assert_eq!(level(KeyEvent::Refreshed { keys: 2 }), Level::Info);
        assert_eq!(
            level(KeyEvent::RefreshFailed { reason: "x".into() }),
            Level::Warn
        );
        assert_eq!(
            level(KeyEvent::SkippedKey {
                index: 0,
                reason: "x".into()
            }),
            Level::Warn
        );
    }
}
