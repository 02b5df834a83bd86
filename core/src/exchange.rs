//! The exchange driver: one request, from its facts to the bytes the client gets and the lines
//! the operator reads, with no I/O.
//!
//! [`Gateway::exchange`] decides the request ([`crate::decision`]) and then finishes it too,
//! so every runtime answers and logs alike:
//!
//! - a rejection becomes a [`Step::Answer`]: the exact problem response and its [`Record`];
//! - a forward becomes a [`Step::Forward`]: the [`Outbound`] request for the runtime to send,
//!   and a [`Pending`] exchange that turns whatever the origin did ([`OriginResult`]) into the
//!   response to relay, or into a 502/504 problem, with its record ([`Pending::finish`]).
//!
//! What happens outside a decision has one constructor each, always RFC 9457 problem+json:
//! [`no_policy`] (no valid policy loaded), [`unroutable`] (the runtime could not even turn the
//! request into one the core takes) and [`internal_error`] (a bug: handling failed). Each takes
//! the request target as the runtime has it, origin-form or an absolute URL, and logs its path.
//!
//! The runtime's part is to move bytes: send the outbound request with its timeout, stream the
//! relayed body, and hand each [`Record`] to its [`LogSink`].

use std::time::Duration;

use http::{HeaderMap, Request, Response};

use crate::body::RequestBody;
use crate::cors::ResponseCors;
use crate::decision::{Decision, Gateway, LogFacts, RequestContext};
use crate::event::{Event, LogSink};
use crate::fetch::Fetch;
use crate::forward::{self, Forward, ForwardBody};
use crate::log::{self, LogLine, Tally};
use crate::problem::{BadRequestReason, InternalReason, NoPolicyReason, Reject};
use crate::quota::CounterStore;
use crate::time::{Clock, UnixTime};

/// What the runtime does next with a request.
// Made and taken apart once per request; boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<B> {
    /// Answer with this; nothing reaches the origin.
    Answer(Answer),
    /// Send the outbound request, then finish the pending exchange with what the origin did.
    Forward(Outbound<B>, Pending),
}

/// A response the gateway makes itself, and its record.
#[derive(Debug)]
pub struct Answer {
    /// The complete response: status, headers (content length is the runtime's), body.
    pub response: Response<String>,
    /// What to log.
    pub record: Record,
}

/// Everything one request leaves in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The access line (JSON, no newline).
    pub access: String,
    /// The same, as labels and timings for metrics.
    pub tally: Tally,
    /// Operator events raised while handling the request, in order.
    pub events: Vec<Event>,
    /// Whether the policy turned out broken while deciding (a schema compiled on first use).
    /// A runtime that skips full validation for policies it has seen validated must validate
    /// in full again (see [`crate::policy_store`]).
    pub policy_broken: bool,
}

impl Record {
    /// The record of `line`, with `events`.
    fn of(line: LogLine<'_>, events: Vec<Event>, policy_broken: bool) -> Record {
        Record {
            access: line.to_json(),
            tally: line.into_tally(),
            events,
            policy_broken,
        }
    }

    /// Write the events, then the access line, then hand the tally to the sink's counters.
    pub fn write_to(&self, sink: &dyn LogSink) {
        for event in &self.events {
            sink.event(event);
        }
        sink.access(&self.access);
        sink.tally(&self.tally);
    }
}

/// The request for the origin.
#[derive(Debug)]
pub struct Outbound<B> {
    /// Absolute origin URI, the headers the origin may see, the body (streamed or checked).
    pub request: Request<ForwardBody<B>>,
    /// How long to wait for the origin's response headers; past it, finish with
    /// [`OriginResult::TimedOut`].
    pub timeout: Duration,
    /// The origin's `tls` settings: a private CA, a client certificate, a name to verify. Only
    /// a runtime that declared it can honour them ([`crate::Capabilities`]) ever sees `Some`.
    pub tls: Option<std::sync::Arc<crate::OriginTls>>,
}

/// What the origin did with the outbound request. `R` is the runtime's handle on the origin's
/// response body, handed back in [`Relay::Origin`] when the body is to be relayed.
#[derive(Debug)]
pub enum OriginResult<R> {
    /// It answered with these status and headers (its body is the runtime's to stream).
    Responded {
        /// The origin's status.
        status: u16,
        /// The origin's response headers, as received.
        headers: HeaderMap,
        /// The runtime's handle on the body still to stream.
        body: R,
    },
    /// No response headers within [`Outbound::timeout`].
    TimedOut,
    /// It could not be reached, or broke the exchange before its response headers (refused,
    /// reset, DNS, TLS); `cause` is for the operator only.
    Failed {
        /// The runtime's description of the failure.
        cause: String,
    },
    /// The client's body broke off while it was being sent on (the client hung up mid-upload,
    /// or its chunked framing turned out invalid), so the origin never got a whole request.
    /// Not the origin's failure: answered 400 `body_aborted`, as an inspected body that breaks
    /// off is, and logged as that. `cause` is for the operator only.
    ClientAborted {
        /// The runtime's description of the failure.
        cause: String,
    },
}

/// An exchange waiting on the origin.
#[derive(Debug)]
pub struct Pending {
    facts: LogFacts,
    started: UnixTime,
    sent: UnixTime,
    response_headers: HeaderMap,
    events: Vec<Event>,
    cors: Option<ResponseCors>,
}

/// How a forwarded exchange ends.
#[derive(Debug)]
pub enum Relay<R> {
    /// Relay the origin's body with this status and these headers.
    Origin {
        /// The status to send.
        status: u16,
        /// The headers to send: the origin's, made fit to relay, plus the gateway's.
        headers: HeaderMap,
        /// The origin's body, as the runtime handed it to [`Pending::finish`].
        body: R,
        /// What to log.
        record: Record,
    },
    /// The origin failed: answer with this problem instead.
    Answer(Answer),
}

impl Gateway {
    /// Handle one request: decide it and say what to do next. See the module docs for the
    /// protocol; `clock` measures the gateway's own time for the access line.
    pub async fn exchange<B, S, F>(
        &self,
        request: Request<B>,
        ctx: &RequestContext,
        store: &S,
        fetch: &F,
        clock: &dyn Clock,
    ) -> Step<B>
    where
        B: RequestBody,
        S: CounterStore + ?Sized,
        F: Fetch + ?Sized,
    {
        let outcome = self.decide(request, ctx, store, fetch).await;
        let mut facts = outcome.log;
        let now = clock.now();
        let mut events: Vec<Event> = facts
            .key_events
            .drain(..)
            .map(|(provider, event)| Event::key_set(now, &provider, &event).under(facts.policy))
            .collect();
        if let Some(block) = facts.lockout.take() {
            let (id, ip) = (&facts.request_id, facts.client_ip);
            events.push(Event::lockout_started(now, id, ip, &block).under(facts.policy));
        }
        let policy_broken = !facts.policy_problems.is_empty();
        events.extend(
            facts
                .policy_problems
                .drain(..)
                .map(|problem| Event::policy_problem(now, &problem).under(facts.policy)),
        );
        let cors = outcome.cors;
        match outcome.decision {
            Decision::Reject(reject) => {
                let mut answer = reject_answer(&facts, ctx.now, &reject, now, None);
                answer.record.events = events;
                answer.record.policy_broken = policy_broken;
                answer.with_cors(cors.as_ref());
                Step::Answer(answer)
            }
            Decision::Preflight(headers) => {
                let gateway_us = micros_between(ctx.now, now);
                Step::Answer(Answer {
                    response: cors_preflight_response(headers, &facts.request_id),
                    record: Record::of(
                        LogLine::preflight(&facts, ctx.now, gateway_us),
                        events,
                        policy_broken,
                    ),
                })
            }
            Decision::Forward(forward) => {
                let Forward {
                    request,
                    timeout,
                    response_headers,
                    tls,
                } = *forward;
                Step::Forward(
                    Outbound {
                        request,
                        timeout,
                        tls,
                    },
                    Pending {
                        facts,
                        started: ctx.now,
                        sent: now,
                        response_headers,
                        events,
                        cors,
                    },
                )
            }
        }
    }
}

impl Pending {
    /// Finish the exchange with what the origin did.
    pub fn finish<R>(self, result: OriginResult<R>, clock: &dyn Clock) -> Relay<R> {
        let Pending {
            facts,
            started,
            sent,
            response_headers,
            mut events,
            cors,
        } = self;
        let now = clock.now();
        let origin_us = micros_between(sent, now);
        let gateway_us = micros_between(started, now).saturating_sub(origin_us);
        let reject = match result {
            OriginResult::Responded {
                status,
                mut headers,
                body,
            } => {
                forward::prepare_response(&mut headers, &response_headers);
                if let Some(cors) = &cors {
                    cors.apply(&mut headers);
                }
                let line = LogLine::forwarded(&facts, started, status, gateway_us, origin_us);
                return Relay::Origin {
                    status,
                    headers,
                    body,
                    record: Record::of(line, events, false),
                };
            }
            OriginResult::TimedOut => forward::origin_failure(true),
            OriginResult::Failed { cause } => {
                events.push(
                    Event::origin_unreachable(now, &facts.request_id, &cause).under(facts.policy),
                );
                forward::origin_failure(false)
            }
            OriginResult::ClientAborted { cause } => {
                events.push(
                    Event::client_aborted(now, &facts.request_id, &cause).under(facts.policy),
                );
                Reject::new(
                    BadRequestReason::BodyAborted,
                    "The request body could not be read.",
                )
            }
        };
        let line = LogLine::rejected(&facts, started, &reject, gateway_us, Some(origin_us));
        let mut answer = Answer {
            response: reject.to_response(&facts.request_id),
            record: Record::of(line, events, false),
        };
        answer.with_cors(cors.as_ref());
        Relay::Answer(answer)
    }
}

/// 503 `no-policy`: the runtime has no valid policy to decide with, so nothing is forwarded.
pub fn no_policy(ctx: &RequestContext, method: &str, target: &str, clock: &dyn Clock) -> Answer {
    let reject = Reject::new(
        NoPolicyReason::NoValidPolicy,
        "The gateway has no valid policy loaded.",
    );
    outside_decision(ctx, method, target, &reject, clock)
}

/// 400 `bad-request`: the runtime could not turn the request into one the core takes (a method
/// or target that is not valid HTTP).
pub fn unroutable(ctx: &RequestContext, method: &str, target: &str, clock: &dyn Clock) -> Answer {
    let reject = Reject::new(BadRequestReason::Malformed, "The request is malformed.");
    outside_decision(ctx, method, target, &reject, clock)
}

/// 500 `internal`: handling the request failed in a way that is a bug (natively a panic; on a
/// wasm runtime, where a panic aborts the instance, an error). The client still gets a problem
/// document, and the operator an event naming `cause` (the panic's message, the error).
pub fn internal_error(
    ctx: &RequestContext,
    method: &str,
    target: &str,
    cause: &str,
    clock: &dyn Clock,
) -> Answer {
    let reject = Reject::new(
        InternalReason::InternalError,
        "The gateway failed to handle the request.",
    );
    let mut answer = outside_decision(ctx, method, target, &reject, clock);
    answer
        .record
        .events
        .push(Event::internal_error(clock.now(), &ctx.request_id, cause));
    answer
}

fn outside_decision(
    ctx: &RequestContext,
    method: &str,
    target: &str,
    reject: &Reject,
    clock: &dyn Clock,
) -> Answer {
    let facts = LogFacts {
        request_id: ctx.request_id.clone(),
        method: method.to_owned(),
        path: log::clip(target_path(target)),
        ..LogFacts::default()
    };
    reject_answer(&facts, ctx.now, reject, clock.now(), None)
}

/// The path of a request target, for the log: up to its query (or fragment), with an absolute
/// URL's scheme and authority left out (`https://api.test/a?b` is `/a`; with no path, `/`). A
/// target that is neither form (`*`, an authority, one that is not valid HTTP at all) is logged
/// as it came, up to its query, so the operator sees what was refused.
fn target_path(target: &str) -> &str {
    fn before_query(s: &str) -> &str {
        s.split(['?', '#']).next().unwrap_or_default()
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return before_query(target);
    };
    let mut letters = scheme.chars();
    let is_scheme = letters.next().is_some_and(|c| c.is_ascii_alphabetic())
        && letters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return before_query(target);
    }
    match rest.find(['/', '?', '#']) {
        Some(at) if rest[at..].starts_with('/') => before_query(&rest[at..]),
        _ => "/",
    }
}

fn reject_answer(
    facts: &LogFacts,
    started: UnixTime,
    reject: &Reject,
    now: UnixTime,
    origin_us: Option<u64>,
) -> Answer {
    let gateway_us = micros_between(started, now);
    let line = LogLine::rejected(facts, started, reject, gateway_us, origin_us);
    let mut record = Record::of(line, Vec::new(), false);
    record.tally.quota = reject.quota().map(str::to_owned);
    Answer {
        response: reject.to_response(&facts.request_id),
        record,
    }
}

impl Answer {
    fn with_cors(&mut self, cors: Option<&ResponseCors>) {
        if let Some(cors) = cors {
            cors.apply(self.response.headers_mut());
        }
    }
}

/// The `204` of an allowed preflight: its CORS headers and the request id, no body.
fn cors_preflight_response(headers: HeaderMap, request_id: &str) -> Response<String> {
    let mut response = Response::new(String::new());
    *response.status_mut() = http::StatusCode::NO_CONTENT;
    *response.headers_mut() = headers;
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert(crate::request_id::REQUEST_ID_HEADER, v);
    }
    response
}

fn micros_between(from: UnixTime, to: UnixTime) -> u64 {
    to.as_micros().saturating_sub(from.as_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::FixedClock;

    fn ctx() -> RequestContext {
        RequestContext {
            now: UnixTime::from_secs(1_000),
            request_id: "r1".into(),
            peer: None,
        }
    }

    fn logged_path(answer: &Answer) -> String {
        let line: serde_json::Value = serde_json::from_str(&answer.record.access).unwrap();
        line["path"].as_str().unwrap().to_owned()
    }

    #[test]
    fn an_origin_form_target_is_logged_without_its_query() {
        let clock = FixedClock(ctx().now);
        let answer = no_policy(&ctx(), "GET", "/a/b?key=secret", &clock);
        assert_eq!(answer.response.status(), 503);
        assert_eq!(logged_path(&answer), "/a/b");
    }

    #[test]
    fn an_absolute_url_is_logged_as_its_path_alone() {
        let clock = FixedClock(ctx().now);
        let answer = unroutable(
            &ctx(),
            "GET",
            "https://api.test:8443/a/b?key=secret",
            &clock,
        );
        assert_eq!(answer.response.status(), 400);
        assert_eq!(logged_path(&answer), "/a/b");
        for bare in [
            "https://api.test",
            "http://api.test?key=secret",
            "http://api.test#f",
        ] {
            assert_eq!(target_path(bare), "/", "{bare}");
        }
        assert_eq!(target_path("http://user@api.test/x#frag"), "/x");
    }

    #[test]
    fn a_target_of_neither_form_is_logged_as_it_came_up_to_its_query() {
        assert_eq!(target_path("/a b?c=1"), "/a b");
        assert_eq!(target_path("/a?next=https://evil.test/x"), "/a");
        assert_eq!(target_path("/x://y"), "/x://y");
        assert_eq!(target_path("1http://api.test/a"), "1http://api.test/a");
        assert_eq!(target_path("*"), "*");
        assert_eq!(target_path(""), "");
        let clock = FixedClock(ctx().now);
        let answer = unroutable(&ctx(), "G(T", "ht tp://api.test/a?b", &clock);
        assert_eq!(logged_path(&answer), "ht tp://api.test/a");
    }

    #[test]
    fn an_internal_error_names_its_cause_in_its_event() {
        let clock = FixedClock(ctx().now);
        let answer = internal_error(&ctx(), "POST", "https://api.test/a?b", "boom", &clock);
        assert_eq!(answer.response.status(), 500);
        assert_eq!(logged_path(&answer), "/a");
        let [event] = &answer.record.events[..] else {
            panic!("one event: {:?}", answer.record.events);
        };
        let fields: Vec<_> = event
            .fields
            .iter()
            .map(|(k, v)| (*k, v.as_str().unwrap_or_default()))
            .collect();
        assert_eq!(fields, [("request_id", "r1"), ("cause", "boom")]);
    }
}
