//! Portcullis on Fermyon Spin: glue only. Every decision is `portcullis-core`'s; this crate
//! converts the request, supplies the runtime's facts (clock, request id, `spin-client-addr`),
//! implements the core's traits on Spin's interfaces and carries the decision out.
//!
//! Spin runs each request in a fresh instance, so everything that must outlive a request lives
//! in the key-value store:
//!
//! - [`policy`]: the policy, re-read every request; validated in full once per text.
//! - [`keys`]: remote key sets, read when a request needs a fetch, fetched by one instance at a
//!   time and published as soon as fetched (the core's single flight across instances).
//! - [`quota`]: GCRA state per quota key, updated with compare-and-swap.
//!
//! and the rest is plumbing: [`fetch`] (outbound HTTP), [`body`] (the client's body), [`fields`]
//! (header conversion), [`io`] (waiting on WASI pollables), [`store`] (the store and its keys).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use portcullis_core::forward::{self, Forward};
use portcullis_core::jwks::KeyEvent;
use portcullis_core::log::LogLine;
use portcullis_core::problem::{BadRequestReason, NoPolicyReason, Reject};
use portcullis_core::{request_id, Decision, LogFacts, RequestContext, UnixTime};
use spin_sdk::http::{
    IncomingRequest, IncomingResponse, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use spin_sdk::http_component;

pub mod body;
pub mod fetch;
pub mod fields;
pub mod io;
pub mod keys;
pub mod policy;
pub mod quota;
pub mod store;

/// The header Spin sets to the client's `IP:port`. Spin appends it after the client's own
/// headers, so the last value is the host's: a client that sends its own cannot choose its
/// address.
pub const CLIENT_ADDR_HEADER: &str = "spin-client-addr";

/// Headers Spin adds to every request for the component. They describe Spin's routing, not the
/// client's request, so they are removed before the policy sees the request and never reach the
/// origin.
const SPIN_HEADERS: &[&str] = &[
    "spin-full-url",
    "spin-path-info",
    "spin-matched-route",
    "spin-component-route",
    "spin-raw-component-route",
    "spin-base-path",
    "spin-client-addr",
];
/// Prefix of the headers Spin adds for named route wildcards.
const SPIN_PATH_MATCH_PREFIX: &str = "spin-path-match-";

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let started = now();
    let id = new_request_id();
    let mut headers = fields::header_map(request.headers().entries());
    let client_ip = client_ip(&headers);
    remove_spin_headers(&mut headers);
    restore_host(&mut headers, request.authority());
    let facts = LogFacts {
        request_id: id.clone(),
        method: request.method().to_string(),
        path: request
            .path_with_query()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default()
            .chars()
            .take(portcullis_core::log::MAX_LOGGED_PATH)
            .collect(),
        ..LogFacts::default()
    };
    let Some(head) = head(&request, headers) else {
        let reject = Reject::new(
            BadRequestReason::Malformed,
            "The request is malformed.",
        );
        return refuse(out, &facts, started, &reject).await;
    };
    let bucket = match store::open() {
        Ok(bucket) => Arc::new(bucket),
        Err(why) => {
            event("warn", &[], &format!("{why}; no policy: answering 503"));
            return refuse(out, &facts, started, &no_policy()).await;
        }
    };
    let gateway = match policy::load(&bucket) {
        Ok(gateway) => gateway,
        Err(error) => {
            match error {
                policy::LoadError::Invalid(problems) => {
                    for problem in problems {
                        event("warn", &[], &format!("policy refused: {problem}"));
                    }
                }
                policy::LoadError::Store(why) | policy::LoadError::Missing(why) => {
                    event("warn", &[], &format!("{why}; no policy: answering 503"))
                }
            }
            return refuse(out, &facts, started, &no_policy()).await;
        }
    };
    let gateway = gateway.with_shared_key_sets(keys::KvKeySets::new(Arc::clone(&bucket)));
    let counters = quota::KvCounters::new(&bucket);
    let ctx = RequestContext {
        now: started,
        request_id: id,
        client_ip,
    };
    let body = body::ClientBody::of(&request);
    let outcome = gateway
        .decide(head.map(|()| body), &ctx, &counters, &fetch::SpinFetch)
        .await;
    for (provider, key_event) in &outcome.log.key_events {
        log_key_event(provider, key_event);
    }
    if !outcome.log.policy_problems.is_empty() {
        for problem in &outcome.log.policy_problems {
            event("warn", &[], &format!("policy refused: {problem}"));
        }
        policy::forget_check(&bucket);
    }
    match outcome.decision {
        Decision::Reject(reject) => refuse(out, &outcome.log, started, &reject).await,
        Decision::Forward(forward) => relay(out, *forward, &outcome.log, started).await,
    }
    // After the answer: the client does not wait for housekeeping.
    if counters.used() && random_u64() % quota::SWEEP_ODDS == 0 {
        quota::sweep(&bucket, now());
    }
    drop(request);
}

/// The request's head as the core takes it (the body is attached later), or `None` if the
/// host handed over a method or target that is not valid HTTP.
fn head(request: &IncomingRequest, headers: HeaderMap) -> Option<http::Request<()>> {
    let method = http::Method::from_bytes(request.method().to_string().as_bytes()).ok()?;
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let uri = target.parse::<http::Uri>().ok()?;
    let mut head = http::Request::new(());
    *head.method_mut() = method;
    *head.uri_mut() = uri;
    *head.headers_mut() = headers;
    Some(head)
}

fn no_policy() -> Reject {
    Reject::new(
        NoPolicyReason::NoValidPolicy,
        "The gateway has no valid policy loaded.",
    )
}

/// Send a forwarded request and relay the origin's answer, its body streamed.
async fn relay(
    out: ResponseOutparam,
    forward: Forward<body::ClientBody>,
    facts: &LogFacts,
    started: UnixTime,
) {
    let Forward {
        request,
        timeout,
        response_headers,
    } = forward;
    let asked = now();
    let sent = fetch::send_to_origin(request, timeout).await;
    let origin_us = elapsed_us(asked);
    let gateway_us = elapsed_us(started).saturating_sub(origin_us);
    match sent {
        Ok(origin) => {
            let status = origin.status();
            let mut headers = fields::header_map(origin.headers().entries());
            forward::prepare_response(&mut headers, &response_headers);
            emit(&LogLine::forwarded(
                facts, started, status, gateway_us, origin_us,
            ));
            stream_response(out, status, &headers, origin).await;
        }
        Err(failure) => {
            let timed_out = failure == fetch::OriginError::Timeout;
            if let fetch::OriginError::Failed(why) = &failure {
                event(
                    "warn",
                    &[("request_id", facts.request_id.as_str())],
                    &format!("origin unreachable: {why}"),
                );
            }
            let reject = forward::origin_failure(timed_out);
            emit(&LogLine::rejected(
                facts,
                started,
                &reject,
                gateway_us,
                Some(origin_us),
            ));
            answer(out, reject.to_response(&facts.request_id)).await;
        }
    }
}

/// Relay the origin's response body as it arrives. If the origin breaks off, the client's
/// response is left unfinished, so the client sees an aborted response, never a short one that
/// looks complete.
async fn stream_response(
    out: ResponseOutparam,
    status: u16,
    headers: &HeaderMap,
    origin: IncomingResponse,
) {
    let response = OutgoingResponse::new(fields::fields(headers));
    let _ = response.set_status_code(status);
    let Ok(out_body) = response.body() else {
        return;
    };
    out.set(response);
    let (Ok(in_body), Ok(out_stream)) = (origin.consume(), out_body.write()) else {
        return;
    };
    let Ok(in_stream) = in_body.stream() else {
        return;
    };
    let copied = io::copy(&in_stream, &out_stream).await;
    drop(in_stream);
    drop(out_stream);
    if copied.is_ok() {
        let _ = OutgoingBody::finish(out_body, None);
    }
    drop(in_body);
    drop(origin);
}

/// Answer with a rejection and write its log line.
async fn refuse(out: ResponseOutparam, facts: &LogFacts, started: UnixTime, reject: &Reject) {
    emit(&LogLine::rejected(
        facts,
        started,
        reject,
        elapsed_us(started),
        None,
    ));
    answer(out, reject.to_response(&facts.request_id)).await;
}

/// A response the gateway wrote itself (problem documents).
async fn answer(out: ResponseOutparam, response: http::Response<String>) {
    let (mut parts, text) = response.into_parts();
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, text.len().into());
    let response = OutgoingResponse::new(fields::fields(&parts.headers));
    let _ = response.set_status_code(parts.status.as_u16());
    let Ok(body) = response.body() else {
        return;
    };
    out.set(response);
    let Ok(stream) = body.write() else {
        return;
    };
    let written = io::write_all(&stream, text.as_bytes()).await;
    drop(stream);
    if written.is_ok() {
        let _ = OutgoingBody::finish(body, None);
    }
}

/// The client's address from the last `spin-client-addr` value (`IP:port`, as Spin writes it).
/// A missing or malformed value means no address, and `by: "ip"` quotas then count every such
/// request in one shared bucket.
pub fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers
        .get_all(CLIENT_ADDR_HEADER)
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .trim();
    value
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| value.parse::<IpAddr>())
        .ok()
}

/// A `wasi:http` host may carry the client's `Host` as the request's authority instead of as a
/// header; put it back, so the policy and the origin (`x-forwarded-host`) see what the client sent.
fn restore_host(headers: &mut HeaderMap, authority: Option<String>) {
    if headers.contains_key(http::header::HOST) {
        return;
    }
    if let Some(value) = authority.and_then(|a| http::HeaderValue::try_from(a).ok()) {
        headers.insert(http::header::HOST, value);
    }
}

fn remove_spin_headers(headers: &mut HeaderMap) {
    for name in SPIN_HEADERS {
        headers.remove(*name);
    }
    let wildcards: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(SPIN_PATH_MATCH_PREFIX))
        .cloned()
        .collect();
    for name in wildcards {
        headers.remove(name);
    }
}

/// The wall clock (`wasi:clocks/wall-clock`).
pub fn now() -> UnixTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    UnixTime::from_micros(micros)
}

fn elapsed_us(since: UnixTime) -> u64 {
    now().as_micros().saturating_sub(since.as_micros())
}

/// 128 bits from `wasi:random`, hex-encoded.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    let random = wasi::random::random::get_random_bytes(16);
    let n = random.len().min(16);
    bytes[..n].copy_from_slice(&random[..n]);
    request_id::from_random(bytes)
}

fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// One JSON line per request on stdout, the same fields as natively.
fn emit(line: &LogLine<'_>) {
    println!("{}", line.to_json());
}

/// Operator events on stderr, one JSON line each: `time`, `level`, the given fields, `event`.
pub fn event(level: &str, fields: &[(&str, &str)], event: &str) {
    let mut line = serde_json::Map::new();
    line.insert("time".into(), now().to_rfc3339().into());
    line.insert("level".into(), level.into());
    for (name, value) in fields {
        line.insert((*name).into(), (*value).into());
    }
    line.insert("event".into(), event.into());
    eprintln!("{}", serde_json::Value::Object(line));
}

fn log_key_event(provider: &str, key_event: &KeyEvent) {
    let level = match key_event {
        KeyEvent::Refreshed { .. } => "info",
        KeyEvent::RefreshFailed { .. } | KeyEvent::SkippedKey { .. } => "warn",
    };
    event(level, &[("provider", provider)], &key_event.to_string());
}
