//! Portcullis on Fermyon Spin: glue only. Every decision is `portcullis-core`'s; this crate
//! converts the request, supplies the runtime's facts (clock, request id, `spin-client-addr`),
//! implements the core's traits on Spin's interfaces and carries the decision out.
//!
//! Spin runs each request in a fresh instance, so everything that must outlive a request lives
//! in the key-value store ([`store`], the core's `AtomicStore` on `wasi:keyvalue`), kept there by
//! the core (`portcullis_core::kv`):
//!
//! - the policy ([`policy`]), re-read every request, validated in full once per text;
//! - remote key sets, read when a request needs a fetch, fetched by one instance at a time and
//!   published as soon as fetched (the core's single flight across instances);
//! - GCRA state per quota key, updated with compare-and-swap.
//!
//! and the rest is plumbing: [`fetch`] (outbound HTTP), [`body`] (the client's body), [`fields`]
//! (header conversion), [`io`] (waiting on WASI pollables).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use portcullis_core::fault::{self, Fault};
use portcullis_core::jwks::shared::Pending;
use portcullis_core::kv::counters::KvCounters;
use portcullis_core::kv::key_sets::Instance;
use portcullis_core::kv::policy::settle;
use portcullis_core::{
    context, exchange, message, request_id, Answer, Clock, Event, LogSink, Relay,
};
use portcullis_core::{RequestContext, UnixTime};
use spin_sdk::http::{
    IncomingRequest, IncomingResponse, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use spin_sdk::http_component;
use wasi::clocks::monotonic_clock;

pub mod body;
pub mod fetch;
pub mod fields;
pub mod io;
pub mod policy;
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
    let mut headers = message::header_map(request.headers().entries());
    let ctx = RequestContext {
        now: now(),
        request_id: new_request_id(),
        peer: client_ip(&headers),
    };
    message::remove_headers(&mut headers, SPIN_HEADERS, SPIN_PATH_MATCH_PREFIX);
    let method = request.method().to_string();
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let authority = request.authority();
    let Some(head) = message::request(&method, &target, authority.as_deref(), headers, ()) else {
        let sent = answer(out, exchange::unroutable(&ctx, &method, &target, &Spin)).await;
        return or_internal_error(sent, &ctx, &method, &target).await;
    };
    if fault::requested(head.headers()) == Some(Fault::Internal) {
        let cause = fault::CAUSE.to_owned();
        return or_internal_error(Err(Unanswered { out, cause }), &ctx, &method, &target).await;
    }
    let Some((gateway, store)) = policy::load(store::open()).await else {
        let sent = answer(out, exchange::no_policy(&ctx, &method, &target, &Spin)).await;
        return or_internal_error(sent, &ctx, &method, &target).await;
    };
    let counters = KvCounters::new(&store);
    let body = body::ClientBody::of(&request);
    let step = gateway
        .exchange(
            head.map(|()| body),
            &ctx,
            &counters,
            &fetch::SpinFetch,
            &Spin,
        )
        .await;
    let sent = match step.run(&fetch::SpinFetch, &Spin).await {
        Relay::Answer(answered) => {
            settle(&store, &answered.record);
            answer(out, answered).await
        }
        Relay::Origin {
            status,
            headers,
            body: origin,
            record,
        } => stream_response(out, status, &headers, origin, || record.write_to(&Spin)).await,
    };
    or_internal_error(sent, &ctx, &method, &target).await;
    // After the answer: the client does not wait for housekeeping.
    if let Some(event) = counters.sweep(random_u64, &Spin) {
        Spin.event(&event);
    }
    drop(request);
}

/// Handling failed before a response was handed to Spin: the response slot, still unused, so
/// that the client gets a 500 `internal` problem rather than the host's bare 500, and why.
pub struct Unanswered {
    out: ResponseOutparam,
    cause: String,
}

/// If `sent` failed before a response was handed to Spin, answer 500 `internal`, its event
/// naming the cause. If even that answer cannot be handed over, the host answers for it.
async fn or_internal_error(
    sent: Result<(), Unanswered>,
    ctx: &RequestContext,
    method: &str,
    target: &str,
) {
    let Err(Unanswered { out, cause }) = sent else {
        return;
    };
    let internal = exchange::internal_error(ctx, method, target, &cause, &Spin);
    if let Err(again) = answer(out, internal).await {
        eprintln!(
            "portcullis: cannot answer 500 either ({}): {cause}",
            again.cause
        );
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
    let out_body = hand_over(out, status, headers, log)?;
    // Each stream goes before the body it belongs to, as WASI requires: the scopes end so.
    if let Ok(in_body) = origin.consume() {
        if let Ok(in_stream) = in_body.stream() {
            io::fill(out_body, async |out| {
                io::copy(&in_stream, out).await.is_ok()
            })
            .await;
        }
    }
    Ok(())
}

/// A response the gateway made itself, its record logged once its head is handed over.
async fn answer(out: ResponseOutparam, answer: Answer) -> Result<(), Unanswered> {
    let Answer { response, record } = answer;
    let (mut parts, text) = response.into_parts();
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, text.len().into());
    let body = hand_over(out, parts.status.as_u16(), &parts.headers, || {
        record.write_to(&Spin)
    })?;
    io::fill(body, async |out| {
        io::write_all(out, text.as_bytes()).await.is_ok()
    })
    .await;
    Ok(())
}

/// Hand Spin the response head, calling `log` just before, and return its body to write. If
/// Spin refuses the status or the body, nothing is handed over or logged, and the slot comes
/// back unused.
fn hand_over(
    out: ResponseOutparam,
    status: u16,
    headers: &HeaderMap,
    log: impl FnOnce(),
) -> Result<OutgoingBody, Unanswered> {
    let response = OutgoingResponse::new(fields::fields(headers));
    let cause = match (response.set_status_code(status), response.body()) {
        (Ok(()), Ok(body)) => {
            log();
            out.set(response);
            return Ok(body);
        }
        (Err(()), _) => format!("Spin refused the status {status}"),
        (Ok(()), Err(())) => "Spin refused the response body".to_owned(),
    };
    Err(Unanswered { out, cause })
}

/// The client's address from the last `spin-client-addr` value (`IP:port`, as Spin writes it).
/// A missing or malformed value means no address, and `by: "ip"` quotas then count every such
/// request in one shared bucket.
pub fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(CLIENT_ADDR_HEADER).iter().next_back()?;
    context::parse_address(last.to_str().ok()?)
}

/// The wall clock (`wasi:clocks/wall-clock`).
pub fn now() -> UnixTime {
    UnixTime::from_system_time(SystemTime::now())
}

/// 128 bits from `wasi:random`, hex-encoded; should the host give fewer, the core's
/// [`request_id::fallback`] from the clock and a random number.
pub fn new_request_id() -> String {
    match <[u8; 16]>::try_from(wasi::random::random::get_random_bytes(16)) {
        Ok(bytes) => request_id::from_random(bytes),
        Err(_) => request_id::fallback(now(), random_u64()),
    }
}

fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// The Spin instance as the core's [`Clock`] ([`now`]), [`LogSink`] (access lines on stdout,
/// operator events on stderr, as natively) and [`Instance`] (its own timer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Spin;

impl Clock for Spin {
    fn now(&self) -> UnixTime {
        now()
    }
}

impl LogSink for Spin {
    fn access(&self, line: &str) {
        println!("{line}");
    }

    fn event(&self, event: &Event) {
        eprintln!("{}", event.to_json());
    }
}

impl Instance for Spin {
    fn pause(&self, step: Duration) -> Pending<'_, Duration> {
        Box::pin(async move {
            let started = monotonic_clock::now();
            io::sleep(step).await;
            Duration::from_nanos(monotonic_clock::now().saturating_sub(started))
        })
    }
}
