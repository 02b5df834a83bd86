//! Portcullis on Cloudflare Workers: glue only. Every decision is `portcullis-core`'s; this crate
//! converts the request, supplies the runtime's facts (clock, request id, `CF-Connecting-IP`),
//! implements the core's traits on Workers primitives and carries the decision out.
//!
//! [`policy`] (from KV, through the core's policy store), [`quota`] (a Durable Object per quota
//! key), [`fetch`] (outbound, with timeouts, no redirects), [`body`] (the client's stream, read
//! to a limit or drained) and [`signature`] (WebCrypto instead of WebAssembly).
//!
//! Bindings (see `wrangler.toml` at the repository root): KV `PORTCULLIS_CONFIG` (key `config`,
//! or the var `PORTCULLIS_CONFIG_KEY`), Durable Object `PORTCULLIS_QUOTAS`
//! ([`quota::QuotaCounter`]), `secret_env` names as Worker secrets or vars, and optionally an
//! Analytics Engine dataset [`ANALYTICS_BINDING`] (see [`Console`]).

use std::sync::atomic::{AtomicBool, Ordering};

use portcullis_core::analytics::{self, DataPoint};
use portcullis_core::fault::{self, Fault};
use portcullis_core::log::Tally;
use portcullis_core::{
    context, exchange, message, request_id, Answer, Clock, Event, Level, LogSink, Relay,
    RequestContext, UnixTime,
};
use wasm_bindgen::JsValue;
use worker::{event, AnalyticsEngineDataPointBuilder, AnalyticsEngineDataset, Context, Env};

pub mod body;
pub mod fetch;
pub mod policy;
pub mod quota;
pub mod signature;

/// The header Cloudflare sets to the connecting client's address. Trusted only on Workers, where
/// the edge overwrites whatever the client sent; behind any other proxy it is client-controlled.
/// A missing or malformed value means no address (and `by: "ip"` quotas fail closed).
pub const CLIENT_IP_HEADER: &str = "cf-connecting-ip";
/// The optional Workers Analytics Engine dataset that gets one data point per request.
pub const ANALYTICS_BINDING: &str = "PORTCULLIS_ANALYTICS";

/// The raw `web_sys` request and response, not the `worker` crate's wrappers: wrapping would
/// read the URL, method, headers and `cf` once more and convert the response again, for nothing.
///
/// Whatever fails while handling (the runtime refusing a response this adapter built, or a
/// fault injected by a test build) is answered 500 `internal` problem+json with its log line and
/// an event naming the error, never the runtime's own error page; only if even that answer
/// cannot be built does the error reach workerd.
#[event(fetch)]
async fn main(raw: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let headers = fetch::header_map(&raw.headers());
    let request_ctx = RequestContext {
        now: now(),
        request_id: new_request_id(),
        peer: context::address_in(&headers, CLIENT_IP_HEADER),
    };
    let (method, url) = (raw.method(), raw.url());
    let body = body::ClientBody(raw.body());
    let unread = raw.body();
    let log = Console(env.analytics_engine(ANALYTICS_BINDING).ok());
    // workerd has parsed the method and the URL already, so `None` does not happen in practice.
    let handled = match message::request(&method, &url, None, headers, body) {
        Some(request) => handle(request, &request_ctx, &env, &ctx, &log).await,
        None => {
            let answer = exchange::unroutable(&request_ctx, &method, &url, &WorkerClock);
            answered(answer, &log)
        }
    };
    // Before the answer goes out: workerd refuses reads after it (see `body`).
    body::drain(unread).await;
    handled.or_else(|error| {
        let cause = error.to_string();
        let answer = exchange::internal_error(&request_ctx, &method, &url, &cause, &WorkerClock);
        answered(answer, &log)
    })
}

/// One request, start to finish.
async fn handle(
    request: http::Request<body::ClientBody>,
    request_ctx: &RequestContext,
    env: &Env,
    ctx: &Context,
    log: &Console,
) -> worker::Result<web_sys::Response> {
    let fault = fault::requested(request.headers());
    if fault == Some(Fault::Internal) {
        return Err(worker::Error::RustError(fault::CAUSE.to_owned()));
    }
    let Some(gateway) = policy::current(env).await else {
        let (method, path) = (request.method().as_str(), request.uri().path());
        return answered(
            exchange::no_policy(request_ctx, method, path, &WorkerClock),
            log,
        );
    };
    let store = quota::DurableStore::new(env, fault);
    let step = gateway
        .exchange(
            request,
            request_ctx,
            &store,
            &fetch::WorkerFetch,
            &WorkerClock,
        )
        .await;
    let response = respond(step.run(&fetch::WorkerFetch, &WorkerClock).await, log);
    // Key sets that fall due are refreshed after the answer, so requests rarely wait on the IdP.
    // Scheduled only when one is due: `wait_until` costs a promise and a task on every request.
    if gateway.keys_due(now()) {
        ctx.wait_until(async move {
            for event in gateway.refresh_due(&fetch::WorkerFetch, &WorkerClock).await {
                Console::default().event(&event);
            }
        });
    }
    response
}

/// The response for the client, after logging its record: the gateway's own answer, or the
/// origin's with its body stream handed on as it is.
fn respond(relay: Relay<web_sys::Response>, log: &Console) -> worker::Result<web_sys::Response> {
    let (status, headers, origin, record) = match relay {
        Relay::Answer(answer) => return answered(answer, log),
        Relay::Origin {
            status,
            headers,
            body,
            record,
        } => (status, headers, body, record),
    };
    record.write_to(log);
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    init.set_headers(fetch::web_headers(&headers)?.as_ref());
    let body = origin.body();
    Ok(web_sys::Response::new_with_opt_readable_stream_and_init(
        body.as_ref(),
        &init,
    )?)
}

/// A response the gateway made itself, after logging its record.
fn answered(answer: Answer, log: &Console) -> worker::Result<web_sys::Response> {
    let Answer { response, record } = answer;
    record.write_to(log);
    let (parts, text) = response.into_parts();
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    init.set_headers(fetch::web_headers(&parts.headers)?.as_ref());
    Ok(web_sys::Response::new_with_opt_str_and_init(
        Some(&text),
        &init,
    )?)
}

/// The Worker's clock. `Date.now()` advances only across I/O on Workers, which is all the core
/// needs (quotas, token expiry, config TTL).
pub fn now() -> UnixTime {
    UnixTime::from_millis_f64(js_sys::Date::now())
}

/// [`now`] as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerClock;

impl Clock for WorkerClock {
    fn now(&self) -> UnixTime {
        now()
    }
}

/// 128 bits from `crypto.getRandomValues`, hex-encoded; should that ever fail, `Math.random`
/// and the clock still give an id unique enough for logs.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => request_id::from_random(bytes),
        Err(_) => request_id::fallback(now(), (js_sys::Math::random() * 2f64.powi(53)) as u64),
    }
}

/// The Worker's logs: access lines and routine events with `console.log`, events that need
/// attention with `console.error`, each passed as it is, without the console macros' copy. With
/// the request's [`ANALYTICS_BINDING`] dataset, also each request's [`DataPoint`]: a write the
/// dataset refuses costs the request nothing, and is reported once per isolate.
#[derive(Debug, Clone, Default)]
pub struct Console(pub Option<AnalyticsEngineDataset>);

/// Whether this isolate has reported a refused data point already.
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

impl LogSink for Console {
    fn access(&self, line: &str) {
        web_sys::console::log_1(&JsValue::from_str(line));
    }

    fn event(&self, event: &Event) {
        let line = JsValue::from_str(&event.to_json());
        match event.level {
            Level::Info => web_sys::console::log_1(&line),
            Level::Warn => web_sys::console::error_1(&line),
        }
    }

    fn tally(&self, tally: &Tally) {
        let Some(dataset) = &self.0 else { return };
        let DataPoint {
            index,
            blobs,
            doubles,
        } = DataPoint::of(tally);
        let point = AnalyticsEngineDataPointBuilder::new().indexes([index.as_str()]);
        if let Err(e) = point.blobs(blobs).doubles(doubles).write_to(dataset) {
            if !WRITE_FAILED.swap(true, Ordering::Relaxed) {
                self.event(&analytics::write_failed(now(), &e.to_string()));
            }
        }
    }
}
