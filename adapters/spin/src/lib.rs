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
use portcullis_core::{
    exchange, request_id, Answer, Clock, Event, LogSink, OriginResult, Outbound, Pending, Relay,
    RequestContext, Step, UnixTime,
};
use spin_sdk::http::{
    IncomingRequest, IncomingResponse, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use spin_sdk::http_component;

use crate::fault::Fault::{Internal, Unroutable};

pub mod body;
pub mod fault;
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
    let mut headers = fields::header_map(request.headers().entries());
    let ctx = RequestContext {
        now: now(),
        request_id: new_request_id(),
        client_ip: client_ip(&headers),
    };
    remove_spin_headers(&mut headers);
    restore_host(&mut headers, request.authority());
    let method = request.method().to_string();
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let fault = fault::requested(&headers);
    let Some(head) = head(&method, &target, headers).filter(|_| fault != Some(Unroutable)) else {
        let unroutable = exchange::unroutable(&ctx, &method, &target, &SpinClock);
        return answer_or_fail(out, unroutable, &ctx, &method, &target).await;
    };
    let bucket = store::open().map(Arc::new);
    let Some((gateway, bucket)) = policy::load(bucket).await else {
        let no_policy = exchange::no_policy(&ctx, &method, &target, &SpinClock);
        return answer_or_fail(out, no_policy, &ctx, &method, &target).await;
    };
    let counters = quota::KvCounters::new(&bucket);
    let body = body::ClientBody::of(&request);
    let step = gateway
        .exchange(
            head.map(|()| body),
            &ctx,
            &counters,
            &fetch::SpinFetch,
            &SpinClock,
        )
        .await;
    let sent = match step {
        _ if fault == Some(Internal) => Err(fault::injected(out)),
        Step::Answer(answered) => {
            if answered.record.policy_broken {
                policy::forget_validation(&bucket);
            }
            answer(out, answered).await
        }
        Step::Forward(outbound, pending) => relay(out, outbound, pending).await,
    };
    if let Err(unanswered) = sent {
        internal_error(unanswered, &ctx, &method, &target).await;
    }
    // After the answer: the client does not wait for housekeeping.
    if counters.used() && random_u64() % quota::SWEEP_ODDS == 0 {
        quota::sweep(&bucket, now());
    }
    drop(request);
}

/// The request's head as the core takes it (the body is attached later), or `None` if the
/// host handed over a method or target that is not valid HTTP.
fn head(method: &str, target: &str, headers: HeaderMap) -> Option<http::Request<()>> {
    let mut head = http::Request::new(());
    *head.method_mut() = http::Method::from_bytes(method.as_bytes()).ok()?;
    *head.uri_mut() = target.parse::<http::Uri>().ok()?;
    *head.headers_mut() = headers;
    Some(head)
}

/// Handling failed before a response was handed to Spin: the response slot, still unused, so
/// that the client gets a 500 `internal` problem rather than the host's bare 500, and why.
pub struct Unanswered {
    out: ResponseOutparam,
    cause: String,
}

/// Answer 500 `internal` after `failed`, its event naming the cause. If even that answer cannot
/// be handed over, the host answers for it (the cause is logged).
async fn internal_error(failed: Unanswered, ctx: &RequestContext, method: &str, target: &str) {
    let Unanswered { out, cause } = failed;
    let mut internal = exchange::internal_error(ctx, method, target, &SpinClock);
    for event in &mut internal.record.events {
        event.fields.push(("cause", cause.clone()));
    }
    if let Err(again) = answer(out, internal).await {
        eprintln!(
            "portcullis: cannot answer 500 either ({}): {cause}",
            again.cause
        );
    }
}

/// [`answer`], or 500 `internal` if that fails.
async fn answer_or_fail(
    out: ResponseOutparam,
    answered: Answer,
    ctx: &RequestContext,
    method: &str,
    target: &str,
) {
    if let Err(unanswered) = answer(out, answered).await {
        internal_error(unanswered, ctx, method, target).await;
    }
}

/// Send the outbound request and relay the origin's answer, its body streamed.
async fn relay(
    out: ResponseOutparam,
    outbound: Outbound<body::ClientBody>,
    pending: Pending,
) -> Result<(), Unanswered> {
    let Outbound { request, timeout } = outbound;
    let result = match fetch::send_to_origin(request, timeout).await {
        Ok(origin) => OriginResult::Responded {
            status: origin.status(),
            headers: fields::header_map(origin.headers().entries()),
            body: origin,
        },
        Err(fetch::OriginError::Timeout) => OriginResult::TimedOut,
        Err(fetch::OriginError::Failed(cause)) => OriginResult::Failed { cause },
    };
    match pending.finish(result, &SpinClock) {
        Relay::Origin {
            status,
            headers,
            body: origin,
            record,
        } => stream_response(out, status, &headers, origin, || record.write_to(&Stdio)).await,
        Relay::Answer(answered) => answer(out, answered).await,
    }
}

/// Relay the origin's response body as it arrives, calling `log` once the head is handed over.
/// If the origin breaks off, the client's response is left unfinished, so the client sees an
/// aborted response, never a short one that looks complete.
async fn stream_response(
    out: ResponseOutparam,
    status: u16,
    headers: &HeaderMap,
    origin: IncomingResponse,
    log: impl FnOnce(),
) -> Result<(), Unanswered> {
    let (response, out_body) = match outgoing(status, headers) {
        Ok(parts) => parts,
        Err(cause) => return Err(Unanswered { out, cause }),
    };
    log();
    out.set(response);
    let (Ok(in_body), Ok(out_stream)) = (origin.consume(), out_body.write()) else {
        return Ok(());
    };
    let Ok(in_stream) = in_body.stream() else {
        return Ok(());
    };
    let copied = io::copy(&in_stream, &out_stream).await;
    drop(in_stream);
    drop(out_stream);
    if copied.is_ok() {
        let _ = OutgoingBody::finish(out_body, None);
    }
    drop(in_body);
    drop(origin);
    Ok(())
}

/// A response the gateway made itself, its record logged once its head is handed over.
async fn answer(out: ResponseOutparam, answer: Answer) -> Result<(), Unanswered> {
    let Answer { response, record } = answer;
    let (mut parts, text) = response.into_parts();
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, text.len().into());
    let (response, body) = match outgoing(parts.status.as_u16(), &parts.headers) {
        Ok(parts) => parts,
        Err(cause) => return Err(Unanswered { out, cause }),
    };
    record.write_to(&Stdio);
    out.set(response);
    let Ok(stream) = body.write() else {
        return Ok(());
    };
    let written = io::write_all(&stream, text.as_bytes()).await;
    drop(stream);
    if written.is_ok() {
        let _ = OutgoingBody::finish(body, None);
    }
    Ok(())
}

/// A response head and its body handle, not yet handed to Spin; `Err` if Spin refuses either.
fn outgoing(status: u16, headers: &HeaderMap) -> Result<(OutgoingResponse, OutgoingBody), String> {
    let response = OutgoingResponse::new(fields::fields(headers));
    response
        .set_status_code(status)
        .map_err(|()| format!("Spin refused the status {status}"))?;
    let body = response
        .body()
        .map_err(|()| "Spin refused the response body".to_owned())?;
    Ok((response, body))
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

/// [`now`] as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinClock;

impl Clock for SpinClock {
    fn now(&self) -> UnixTime {
        now()
    }
}

/// Spin's logs: access lines on stdout, operator events on stderr, as natively.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdio;

impl LogSink for Stdio {
    fn access(&self, line: &str) {
        println!("{line}");
    }

    fn event(&self, event: &Event) {
        eprintln!("{}", event.to_json());
    }
}
