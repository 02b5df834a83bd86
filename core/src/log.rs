//! The one JSON log line per request, identical on every runtime.

use serde::Serialize;

use crate::decision::LogFacts;
use crate::time::UnixTime;

/// Longest path written to a log line; longer ones are clipped (logs are not a storage channel).
pub const MAX_LOGGED_PATH: usize = 512;

/// One request's log record. Field names are a contract with log pipelines: keep them stable.
#[derive(Debug, Serialize)]
pub struct LogLine<'a> {
    /// When the request arrived, RFC 3339 UTC.
    pub time: String,
    /// The request id (also sent to the origin and the client).
    pub request_id: &'a str,
    /// The version of the policy that decided ([`crate::policy_version`]); `null` when none
    /// was loaded.
    pub policy: Option<crate::PolicyVersion>,
    /// The matched route, if any.
    pub route: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// Path as received, clipped.
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// `forward`, `reject`, or `preflight` (a CORS preflight the gateway answered itself).
    pub decision: &'static str,
    /// Why: `ok`, or the problem slug and reason (`unauthenticated:token_expired`).
    pub reason: String,
    /// Authenticated consumer, if any.
    pub consumer: Option<&'a str>,
    /// The client's address ([`crate::client_ip`]): what IP rules and `by: "ip"` quotas saw.
    /// `null` when the runtime reported none, or no policy decided.
    pub client_ip: Option<std::net::IpAddr>,
    /// Time spent in the gateway itself, µs (total minus origin time).
    pub gateway_us: u64,
    /// Time waiting on the origin, µs (absent when nothing was forwarded).
    pub origin_us: Option<u64>,
    /// How the quota store failed (`unavailable`, `timeout`, `contended`, `corrupt`), present
    /// only when it did: on a 503 `store_unavailable`, or on a request admitted anyway because
    /// the quota or the deployment says `allow`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<&'static str>,
}

/// What a request counts for in metrics: the access line's labels and timings, owned, so a
/// runtime that keeps counters (natively, `/metrics`) needs no second reading of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The version of the policy that decided, if one was loaded.
    pub policy: Option<crate::PolicyVersion>,
    /// The matched route, if any.
    pub route: Option<String>,
    /// `forward`, `reject` or `preflight`.
    pub decision: &'static str,
    /// `ok`, or the problem slug and reason.
    pub reason: String,
    /// Status sent to the client.
    pub status: u16,
    /// Time spent in the gateway itself, µs.
    pub gateway_us: u64,
    /// Time waiting on the origin, µs, when something was forwarded.
    pub origin_us: Option<u64>,
    /// The quota that refused the request (429).
    pub quota: Option<String>,
    /// How the quota store failed, when it did.
    pub store_error: Option<&'static str>,
}

impl<'a> LogLine<'a> {
    /// A line for a request that was forwarded and answered by the origin with `status`.
    pub fn forwarded(
        facts: &'a LogFacts,
        start: UnixTime,
        status: u16,
        gateway_us: u64,
        origin_us: u64,
    ) -> Self {
        Self::base(
            facts,
            start,
            status,
            "forward",
            "ok".into(),
            gateway_us,
            Some(origin_us),
        )
    }

    /// A line for a request the gateway answered itself with `reject`.
    pub fn rejected(
        facts: &'a LogFacts,
        start: UnixTime,
        reject: &crate::problem::Reject,
        gateway_us: u64,
        origin_us: Option<u64>,
    ) -> Self {
        let reason = reject.log_reason();
        Self::base(
            facts,
            start,
            reject.status().as_u16(),
            "reject",
            reason,
            gateway_us,
            origin_us,
        )
    }

    /// A line for a CORS preflight the gateway answered itself (`204`).
    pub fn preflight(facts: &'a LogFacts, start: UnixTime, gateway_us: u64) -> Self {
        Self::base(
            facts,
            start,
            204,
            "preflight",
            "ok".into(),
            gateway_us,
            None,
        )
    }

    fn base(
        facts: &'a LogFacts,
        start: UnixTime,
        status: u16,
        decision: &'static str,
        reason: String,
        gateway_us: u64,
        origin_us: Option<u64>,
    ) -> Self {
        LogLine {
            time: start.to_rfc3339(),
            request_id: &facts.request_id,
            policy: facts.policy,
            route: facts.route.as_deref(),
            method: &facts.method,
            path: &facts.path,
            status,
            decision,
            reason,
            consumer: facts.consumer.as_deref(),
            client_ip: facts.client_ip,
            gateway_us,
            origin_us,
            store_error: facts.store_error.map(crate::StoreError::slug),
        }
    }

    /// The line's labels and timings for metrics.
    pub fn into_tally(self) -> Tally {
        Tally {
            policy: self.policy,
            route: self.route.map(str::to_owned),
            decision: self.decision,
            reason: self.reason,
            status: self.status,
            gateway_us: self.gateway_us,
            origin_us: self.origin_us,
            quota: None,
            store_error: self.store_error,
        }
    }

    /// The line as compact JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from("{\"error\":\"log line not serialisable\"}"))
    }
}

/// `s`, clipped to [`MAX_LOGGED_PATH`] bytes on a character boundary.
pub(crate) fn clip(s: &str) -> String {
    if s.len() <= MAX_LOGGED_PATH {
        return s.to_owned();
    }
    let mut end = MAX_LOGGED_PATH;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `s` quoted for an error message, clipped to 64 bytes.
pub(crate) fn quote_clipped(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("\"{}…\"", &s[..end])
    } else {
        format!("\"{s}\"")
    }
}
