//! Operator events: what an operator must hear about apart from the per-request access line
//! (a key set refreshed or failing, a policy loaded or refused, an origin that cannot be reached).
//!
//! Every runtime writes the same events with the same fields, one JSON object per line:
//! `time`, `level`, `event` (a stable name from [`Kind`], what log pipelines and SIEM rules match
//! on), the event's context fields (`policy`, `provider`, `request_id`, `source`, …), and
//! `message` (the same in words). The level and the name belong to the event, decided here, so no
//! runtime can log a failure as routine or name it its own way.

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

macro_rules! kinds {
    ($($kind:ident $name:literal $meaning:literal,)*) => {
        /// What an event reports. Its name (the line's `event`) is a contract with log pipelines:
        /// keep it stable, add new ones.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $(#[doc = $meaning] $kind,)*
        }

        impl Kind {
            /// Every kind, in table order (for the README's table).
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];

            /// The `event` member: `snake_case`, stable.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$kind => $name,)*
                }
            }

            /// What it means, for the docs.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Kind::$kind => $meaning,)*
                }
            }
        }
    };
}

kinds! {
    PolicyLoaded "policy_loaded"
        "A policy went live (first load or reload): `policy` (its version), `previous`, `source`, `routes`, `providers`, `quotas`, `verifier`.",
    PolicyRejected "policy_rejected"
        "A policy text was refused: `rejected` (the version it would have had, when it is JSON), `errors` (each with its JSON `pointer` and `message`), `policy` (the version that stays live, or null), `source`.",
    PolicyUnavailable "policy_unavailable"
        "The policy source could not be read or is empty: `source`, `policy` (what stays live).",
    PolicyProblem "policy_problem"
        "The live policy turned out broken while deciding (a schema compiled on first use).",
    PolicyMemoFailed "policy_memo_failed"
        "The record of a validated or refused policy could not be kept for the next instance: it validates (and reports) again.",
    LockoutStarted "lockout_started"
        "A client address reached a lockout's `failures` 401s and is blocked: `client_ip`, `scope` (the route id, or `*` for the top-level lockout), `failures`, `block_s`, `request_id` (the request whose 401 started it).",
    KeySetRefreshed "key_set_refreshed"
        "A provider's key set was fetched and is live: `provider`, `keys`.",
    KeySetFailed "key_set_failed"
        "Fetching a provider's key set failed; the last good set stays: `provider`.",
    KeySkipped "key_skipped"
        "A key in a fetched key set was unusable and skipped: `provider`.",
    KeySetStoreFailed "key_set_store_failed"
        "The store that shares key sets between instances failed: `provider`.",
    KeyRefresherFailed "key_refresher_failed"
        "The process cannot refresh key sets at all; they will go stale.",
    QuotaKeysExpired "quota_keys_expired"
        "Expired quota state was deleted: `deleted`.",
    OriginUnreachable "origin_unreachable"
        "An origin could not be reached: `request_id`, the runtime's `cause` in the message.",
    OriginRelayBroken "origin_relay_broken"
        "An origin's response body broke off or stalled mid-relay: `request_id`, `relayed`.",
    ClientAborted "client_aborted"
        "The client's body broke off while it was being sent on: `request_id`.",
    InternalError "internal_error"
        "Handling a request failed (a bug): `request_id`, `cause`.",
    AnalyticsWriteFailed "analytics_write_failed"
        "Workers only: the Analytics Engine dataset `PORTCULLIS_ANALYTICS` refused a data point (the runtime's cause in the message); requests are served all the same, and this is reported once per isolate.",
    FaultInjection "fault_injection"
        "This build fails requests on purpose (the fault-injection feature): a test build.",
}

/// One operator event, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, by the adapter's clock.
    pub time: UnixTime,
    /// How much it matters.
    pub level: Level,
    /// What it reports.
    pub kind: Kind,
    /// Context fields, in the order written (`policy`, `provider`, `request_id`, …).
    pub fields: Vec<(&'static str, Value)>,
    /// What happened, in words.
    pub text: String,
}

impl Event {
    /// An event with no context fields.
    pub fn new(time: UnixTime, level: Level, kind: Kind, text: impl Into<String>) -> Self {
        Event {
            time,
            level,
            kind,
            fields: Vec::new(),
            text: text.into(),
        }
    }

    /// The same event with one more context field.
    pub fn with(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((name, value.into()));
        self
    }

    /// The same event naming the policy it happened under (`policy`: its version, or null).
    pub fn under(self, policy: Option<crate::PolicyVersion>) -> Self {
        let version = policy.map_or(Value::Null, |v| Value::String(v.to_string()));
        self.with("policy", version)
    }

    /// A context field's value, if the event has it.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// What happened to provider `provider`'s key set. Only a successful refresh is routine.
    pub fn key_set(time: UnixTime, provider: &str, event: &KeyEvent) -> Self {
        let (level, kind) = match event {
            KeyEvent::Refreshed { .. } => (Level::Info, Kind::KeySetRefreshed),
            KeyEvent::RefreshFailed { .. } => (Level::Warn, Kind::KeySetFailed),
            KeyEvent::SkippedKey { .. } => (Level::Warn, Kind::KeySkipped),
        };
        let event_ = Event::new(time, level, kind, event.to_string()).with("provider", provider);
        match event {
            KeyEvent::Refreshed { keys } => event_.with("keys", *keys),
            _ => event_,
        }
    }

    /// A problem found in the policy while deciding (a schema compiled on first use that is
    /// broken), with its JSON pointer.
    pub fn policy_problem(time: UnixTime, problem: &ConfigError) -> Self {
        Event::new(
            time,
            Level::Warn,
            Kind::PolicyProblem,
            format!("policy refused: {problem}"),
        )
        .with("pointer", problem.pointer.as_str())
    }

    /// A lockout block started by request `request_id` from `client`.
    pub fn lockout_started(
        time: UnixTime,
        request_id: &str,
        client: Option<std::net::IpAddr>,
        block: &crate::lockout::BlockStarted,
    ) -> Self {
        let who = client.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        Event::new(
            time,
            Level::Warn,
            Kind::LockoutStarted,
            format!(
                "{who} reached {} failed authentications; blocked for {} s",
                block.failures, block.block_s
            ),
        )
        .with("client_ip", client.map(|ip| ip.to_string()))
        .with("scope", block.scope.clone())
        .with("failures", block.failures)
        .with("block_s", block.block_s)
        .with("request_id", request_id)
    }

    /// The origin of request `request_id` could not be reached; `cause` is the runtime's
    /// description (refused, DNS, TLS), which the operator needs and the client must not see.
    pub fn origin_unreachable(time: UnixTime, request_id: &str, cause: &str) -> Self {
        Event::new(
            time,
            Level::Warn,
            Kind::OriginUnreachable,
            format!("origin unreachable: {cause}"),
        )
        .with("request_id", request_id)
    }

    /// The origin's response to `request_id` broke off (`stalled`: stopped sending) after
    /// `relayed` body bytes; the status was sent already, so the client's connection is closed.
    pub fn origin_relay_broken(
        time: UnixTime,
        request_id: &str,
        stalled: bool,
        relayed: u64,
        cause: &str,
    ) -> Self {
        let what = if stalled { "stalled" } else { "broken off" };
        Event::new(
            time,
            Level::Warn,
            Kind::OriginRelayBroken,
            format!(
                "origin response {what} after {relayed} body bytes ({cause}); the client's \
                 connection is closed"
            ),
        )
        .with("request_id", request_id)
        .with("relayed", relayed)
    }

    /// The client's body for `request_id` broke off while it was being sent on.
    pub fn client_aborted(time: UnixTime, request_id: &str, cause: &str) -> Self {
        Event::new(
            time,
            Level::Info,
            Kind::ClientAborted,
            format!("client request body broke off: {cause}"),
        )
        .with("request_id", request_id)
    }

    /// Handling `request_id` failed: a bug, answered 500.
    pub fn internal_error(time: UnixTime, request_id: &str, cause: &str) -> Self {
        Event::new(
            time,
            Level::Warn,
            Kind::InternalError,
            "handling the request failed (a bug); answered 500",
        )
        .with("request_id", request_id)
        .with("cause", cause)
    }

    /// The process cannot refresh key sets (`why`); the gateway serves on with the sets it has.
    pub fn key_refresher_failed(time: UnixTime, why: &str) -> Self {
        Event::new(
            time,
            Level::Warn,
            Kind::KeyRefresherFailed,
            format!("cannot start the key refresher, key sets will not refresh: {why}"),
        )
    }

    /// This build has fault injection compiled in ([`crate::fault`]).
    pub fn fault_injection(time: UnixTime) -> Self {
        Event::new(
            time,
            Level::Warn,
            Kind::FaultInjection,
            format!(
                "built with the fault-injection feature: a request carrying {}: internal fails \
                 on purpose; a test build, not for production",
                crate::fault::HEADER
            ),
        )
    }

    /// The line as compact JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        // Written by hand rather than through a map, so the fields keep their documented order.
        let mut line = String::with_capacity(96 + self.text.len());
        line.push_str("{\"time\":\"");
        line.push_str(&self.time.to_rfc3339());
        line.push_str("\",\"level\":\"");
        line.push_str(self.level.as_str());
        line.push_str("\",\"event\":\"");
        line.push_str(self.kind.name());
        line.push('"');
        for (name, value) in &self.fields {
            push_member(&mut line, name, value);
        }
        push_member(&mut line, "message", &Value::from(self.text.as_str()));
        line.push('}');
        line
    }
}

/// The README's table of events, as markdown: one row per [`Kind`], in table order.
pub fn kinds_markdown() -> String {
    let mut out = String::from("| `event` | meaning and fields |\n| --- | --- |\n");
    for kind in Kind::ALL {
        out.push_str(&format!(
            "| `{}` | {} |\n",
            kind.name(),
            kind.meaning().replace('|', "\\|")
        ));
    }
    out
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

/// `,"name":value`, the name escaped as a JSON string.
fn push_member(line: &mut String, name: &str, value: &Value) {
    line.push(',');
    line.push_str(&Value::from(name).to_string());
    line.push(':');
    line.push_str(&value.to_string());
}

/// Where a runtime writes what the core hands it: the access line of each request, and
/// operator events. Natively and on Spin these are stdout and stderr; on Workers the console.
pub trait LogSink {
    /// Write one request's access line (JSON, no newline).
    fn access(&self, line: &str);
    /// Write one operator event.
    fn event(&self, event: &Event);
    /// Count one request (after its access line) in the runtime's metrics, if it keeps any:
    /// natively `/metrics`; where nothing can be scraped, the access lines carry the same facts.
    fn tally(&self, _tally: &crate::log::Tally) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_is_one_json_object_with_every_field_in_order() {
        let line = Event::new(
            UnixTime::from_secs(1_700_000_000),
            Level::Warn,
            Kind::KeySetFailed,
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
        assert_eq!(keys, ["time", "level", "event", "provider", "message"]);
        assert_eq!(value["event"], "key_set_failed");
    }

    #[test]
    fn readme_table_of_events_is_rendered_from_the_code() {
        crate::generated_docs::check("README.md", "events", &kinds_markdown(), "readme_table");
    }

    #[test]
    fn every_kind_has_its_own_snake_case_name() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len(), "a name is used twice");
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
