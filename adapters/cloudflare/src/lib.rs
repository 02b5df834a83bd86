//! Portcullis on Cloudflare Workers: glue only. Every decision is `portcullis-core`'s; this crate
//! converts the request, supplies the runtime's facts (clock, request id, `CF-Connecting-IP`),
//! implements the core's traits on Workers primitives and carries the decision out.
//!
//! - [`policy`]: the policy from KV, compiled once per isolate, re-read every `config_ttl_s`,
//!   never replaced by a broken one.
//! - [`quota`]: quota state in a Durable Object, one object per quota key.
//! - [`fetch`]: outbound `fetch` for key sets and for the origin (timeouts, no redirects).
//! - [`body`]: the client's body, read up to a limit when the route inspects it.
//! - [`signature`]: public-key signature checks with WebCrypto instead of WebAssembly.
//!
//! Bindings (see `wrangler.toml` at the repository root): KV `PORTCULLIS_CONFIG` (key `config`,
//! or the var `PORTCULLIS_CONFIG_KEY`), Durable Object `PORTCULLIS_QUOTAS`
//! ([`quota::QuotaCounter`]), and `secret_env` names as Worker secrets or vars.

use std::net::IpAddr;
use std::rc::Rc;

use http::{HeaderMap, Response};
use portcullis_core::forward::{self, Forward};
use portcullis_core::jwks::KeyEvent;
use portcullis_core::log::LogLine;
use portcullis_core::problem::{BadRequestReason, NoPolicyReason, Reject};
use portcullis_core::{request_id, Decision, LogFacts, RequestContext, UnixTime};
use wasm_bindgen::JsValue;
use worker::{console_error, console_log, event, Context, Env};

pub mod body;
pub mod fetch;
pub mod policy;
pub mod quota;
pub mod signature;

/// The header Cloudflare sets to the connecting client's address. Trusted only on Workers, where
/// the edge overwrites whatever the client sent; behind any other proxy it is client-controlled.
pub const CLIENT_IP_HEADER: &str = "cf-connecting-ip";

/// The raw `web_sys` request and response, not the `worker` crate's wrappers: wrapping would
/// read the URL, method, headers and `cf` once more and convert the response again, for nothing.
#[event(fetch)]
async fn main(
    request: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    let started = now();
    let Some(request) = to_http(&request) else {
        let reject = Reject::new(
            BadRequestReason::Malformed,
            "The request is malformed.",
        );
        return problem(reject.to_response(&new_request_id()));
    };
    let request_ctx = RequestContext {
        now: started,
        request_id: new_request_id(),
        client_ip: client_ip(request.headers()),
    };
    let id = request_ctx.request_id.clone();
    let Some((gateway, fresh)) = policy::current(&env, started).await else {
        let reject = Reject::new(
            NoPolicyReason::NoValidPolicy,
            "The gateway has no valid policy loaded.",
        );
        let facts = LogFacts {
            request_id: id.clone(),
            method: request.method().as_str().to_owned(),
            path: request.uri().path().chars().take(512).collect(),
            ..LogFacts::default()
        };
        emit(&LogLine::rejected(
            &facts,
            started,
            &reject,
            elapsed_us(started),
            None,
        ));
        return problem(reject.to_response(&id));
    };
    if fresh {
        // A newly loaded policy fetches its remote key sets first, like `portcullis serve` does
        // before it reports ready.
        for (provider, event) in gateway.refresh_keys(now(), &fetch::WorkerFetch, true).await {
            key_event(&provider, &event);
        }
    }
    let store = quota::DurableStore::new(&env);
    let outcome = gateway
        .decide(request, &request_ctx, &store, &fetch::WorkerFetch)
        .await;
    for (provider, event) in &outcome.log.key_events {
        key_event(provider, event);
    }
    let response = match outcome.decision {
        Decision::Reject(reject) => {
            emit(&LogLine::rejected(
                &outcome.log,
                started,
                &reject,
                elapsed_us(started),
                None,
            ));
            problem(reject.to_response(&id))
        }
        Decision::Forward(forward) => relay(*forward, &outcome.log, started).await,
    };
    // Key sets that fall due are refreshed after the answer, so requests rarely wait on the IdP.
    // Scheduled only when one is due: `wait_until` costs a promise and a task on every request.
    if !gateway.keys_due(now()) {
        return response;
    }
    let refresher = Rc::clone(&gateway);
    ctx.wait_until(async move {
        for (provider, event) in refresher
            .refresh_keys(now(), &fetch::WorkerFetch, false)
            .await
        {
            key_event(&provider, &event);
        }
    });
    response
}

/// Send a forwarded request and relay the origin's answer, its body streamed.
async fn relay(
    forward: Forward<body::ClientBody>,
    facts: &LogFacts,
    started: UnixTime,
) -> worker::Result<web_sys::Response> {
    let Forward {
        request,
        timeout,
        response_headers,
    } = forward;
    let asked = now();
    let answer = fetch::send_to_origin(request, timeout).await;
    let origin_us = elapsed_us(asked);
    let gateway_us = elapsed_us(started).saturating_sub(origin_us);
    match answer {
        Ok(origin) => {
            let mut headers = fetch::header_map(&origin.headers());
            forward::prepare_response(&mut headers, &response_headers);
            let status = origin.status();
            emit(&LogLine::forwarded(
                facts, started, status, gateway_us, origin_us,
            ));
            let init = web_sys::ResponseInit::new();
            init.set_status(status);
            init.set_headers(fetch::web_headers(&headers)?.as_ref());
            let body = origin.body();
            Ok(web_sys::Response::new_with_opt_readable_stream_and_init(
                body.as_ref(),
                &init,
            )?)
        }
        Err(failure) => {
            let timed_out = failure == fetch::OriginError::Timeout;
            if let fetch::OriginError::Failed(why) = &failure {
                console_error!(
                    "portcullis: request {}: origin unreachable: {why}",
                    facts.request_id
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
            problem(reject.to_response(&facts.request_id))
        }
    }
}

/// The Worker's request as the core takes it, or `None` if its URL or method is not valid HTTP
/// (workerd has parsed both already, so this does not happen in practice).
fn to_http(raw: &web_sys::Request) -> Option<http::Request<body::ClientBody>> {
    let uri = raw.url().parse::<http::Uri>().ok()?;
    let method = http::Method::from_bytes(raw.method().as_bytes()).ok()?;
    let mut request = http::Request::new(body::ClientBody(raw.body()));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = fetch::header_map(&raw.headers());
    Some(request)
}

/// A response the gateway wrote itself (problem documents).
fn problem(response: Response<String>) -> worker::Result<web_sys::Response> {
    let (parts, text) = response.into_parts();
    let init = web_sys::ResponseInit::new();
    init.set_status(parts.status.as_u16());
    init.set_headers(fetch::web_headers(&parts.headers)?.as_ref());
    Ok(web_sys::Response::new_with_opt_str_and_init(
        Some(&text),
        &init,
    )?)
}

/// The client's address from `CF-Connecting-IP`. Only meaningful on Workers, where Cloudflare
/// sets it; a missing or malformed value means no address (and `by: "ip"` quotas fail closed).
pub fn client_ip(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get(CLIENT_IP_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The Worker's clock. `Date.now()` advances only across I/O on Workers, which is all the core
/// needs (quotas, token expiry, config TTL).
pub fn now() -> UnixTime {
    let millis = js_sys::Date::now();
    UnixTime::from_millis(if millis.is_finite() && millis > 0.0 {
        millis as u64
    } else {
        0
    })
}

fn elapsed_us(since: UnixTime) -> u64 {
    now().as_micros().saturating_sub(since.as_micros())
}

/// 128 bits from `crypto.getRandomValues`, hex-encoded; should that ever fail, `Math.random`
/// and the clock still give an id unique enough for logs.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        let a = (js_sys::Math::random() * 2f64.powi(53)) as u64;
        bytes[..8].copy_from_slice(&now().as_micros().to_be_bytes());
        bytes[8..].copy_from_slice(&a.to_be_bytes());
    }
    request_id::from_random(bytes)
}

/// One JSON line per request, the same fields as natively. Passed to `console.log` as it is,
/// without `console_log!`'s formatting copy.
fn emit(line: &LogLine<'_>) {
    web_sys::console::log_1(&JsValue::from_str(&line.to_json()));
}

/// Operator events: `time`, `level`, the given fields, `event`, as one JSON line.
pub fn event(level: &str, fields: &[(&str, &str)], event: &str) {
    let mut line = serde_json::Map::new();
    line.insert("time".into(), now().to_rfc3339().into());
    line.insert("level".into(), level.into());
    for (name, value) in fields {
        line.insert((*name).into(), (*value).into());
    }
    line.insert("event".into(), event.into());
    let text = serde_json::Value::Object(line).to_string();
    if level == "info" {
        console_log!("{text}");
    } else {
        console_error!("{text}");
    }
}

fn key_event(provider: &str, key_event: &KeyEvent) {
    let level = match key_event {
        KeyEvent::Refreshed { .. } => "info",
        KeyEvent::RefreshFailed { .. } | KeyEvent::SkippedKey { .. } => "warn",
    };
    event(level, &[("provider", provider)], &key_event.to_string());
}
