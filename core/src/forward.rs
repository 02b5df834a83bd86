//! The request the origin receives, and the headers added to its response.
//!
//! The origin sees exactly the path that was matched, the client's headers that [`headers`]'s
//! table lets through (and the route's allow list names, if it has one), plus the gateway's own
//! identity and forwarding headers.

pub mod headers;

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};

use crate::authn::Principal;
use crate::config::Policy;
use crate::decision::Facts;
use crate::path::NormalPath;
use crate::problem::{OriginTimeoutReason, OriginUnreachableReason, Reject};
use crate::quota::Grant;
use crate::route::Routed;

/// The consumer the gateway authenticated (JWT `sub` or the API key's consumer).
pub const CONSUMER_HEADER: &str = "x-portcullis-consumer";
pub use crate::request_id::REQUEST_ID_HEADER;
/// The id of the matched route.
pub const ROUTE_HEADER: &str = "x-portcullis-route";
/// Prefix reserved for the gateway: clients cannot send headers with it.
pub const RESERVED_PREFIX: &str = "x-portcullis-";

/// A request to send to the origin.
#[derive(Debug)]
pub struct Forward<B> {
    /// The rewritten request: absolute origin URI, filtered headers, identity headers.
    pub request: Request<ForwardBody<B>>,
    /// How long to wait for the origin's response headers before answering 504.
    pub timeout: Duration,
    /// Headers to add to the origin's response (request id, rate-limit state).
    pub response_headers: HeaderMap,
    /// The origin's `tls`, for a runtime whose client can honour it.
    pub tls: Option<std::sync::Arc<crate::config::OriginTls>>,
}

/// The body to send: the client's stream untouched, or the bytes the gateway read and checked.
#[derive(Debug)]
pub enum ForwardBody<B> {
    /// Not inspected: stream it.
    Stream(B),
    /// Inspected: send exactly these bytes.
    Buffered(Vec<u8>),
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn build<B>(
    policy: &Policy,
    routed: &Routed<'_>,
    path: &NormalPath,
    parts: &http::request::Parts,
    body: ForwardBody<B>,
    principal: Option<&Principal>,
    grant: Grant,
    facts: &Facts<'_>,
) -> Forward<B> {
    let ctx = facts.ctx;
    let route = routed.route;
    let origin = &policy.origins[route.origin];
    let mut target = String::with_capacity(origin.base.len() + path.as_str().len() + 64);
    target.push_str(&origin.base);
    target.push_str(path.as_str());
    if let Some(q) = parts.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    // Built from a validated origin URL and a normalised path, so it always parses; if it ever did
    // not, falling back to the bare origin would be wrong, so the request goes nowhere useful.
    let uri: Uri = target
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid/"));

    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 4);
    let nominated = headers::nominated(&parts.headers);
    let allow = route
        .forward_headers
        .as_ref()
        .or(policy.forward_headers.as_ref());
    for (name, value) in parts.headers.iter() {
        if headers::forwarded(policy, allow, &nominated, name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    // The client and the trusted proxies after it: never an entry the client wrote.
    if let Some(chain) = &facts.client.forwarded_for {
        headers.insert(HeaderName::from_static("x-forwarded-for"), chain.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(REQUEST_ID_HEADER, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&route.id) {
        headers.insert(ROUTE_HEADER, v);
    }
    if let Some(p) = principal {
        if let Ok(v) = HeaderValue::from_str(&p.consumer) {
            headers.insert(CONSUMER_HEADER, v);
        }
    }
    if let ForwardBody::Buffered(bytes) = &body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    if let Some(keys) = &origin.sign {
        let signed = crate::origin_signing::Signed {
            t: ctx.now.as_secs(),
            method: parts.method.as_str(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
            request_id: &ctx.request_id,
            consumer: principal.map(|p| p.consumer.as_str()),
            body: match &body {
                ForwardBody::Buffered(bytes) => Some(bytes.as_ref()),
                ForwardBody::Stream(_) => None,
            },
        };
        if let Ok(v) = HeaderValue::from_str(&keys.sign(&signed)) {
            headers.insert(crate::origin_signing::HEADER, v);
        }
    }

    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;

    let mut response_headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        response_headers.insert(REQUEST_ID_HEADER, v);
    }
    if let Some(rate_limit) = grant.rate_limit {
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&rate_limit.policy().to_string()),
            HeaderValue::from_str(&rate_limit.state().to_string()),
        ) {
            response_headers.insert("ratelimit-policy", p);
            response_headers.insert("ratelimit", s);
        }
    }
    Forward {
        request,
        timeout: origin.timeout,
        response_headers,
        tls: origin.tls.clone(),
    }
}

/// Make the origin's response headers fit to relay: drop hop-by-hop headers (and those its
/// `Connection` names) and any `x-portcullis-*` header the origin set, in either spelling, then
/// add the gateway's `extra` headers.
pub fn prepare_response(headers: &mut HeaderMap, extra: &HeaderMap) {
    let nominated = headers::nominated(headers);
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| !headers::relayed_from_origin(&nominated, n))
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
}

/// 502: the origin could not be reached or broke the exchange.
pub fn origin_unreachable(request_id: &str) -> Response<String> {
    Reject::new(
        OriginUnreachableReason::Unreachable,
        "The origin could not be reached.",
    )
    .to_response(request_id)
}

/// 504: the origin did not send its response headers within the route origin's `timeout_ms`.
pub fn origin_timeout(request_id: &str) -> Response<String> {
    Reject::new(
        OriginTimeoutReason::TimedOut,
        "The origin did not answer in time.",
    )
    .to_response(request_id)
}

/// The [`Reject`] for an origin failure, for adapters that log the reason.
pub fn origin_failure(timed_out: bool) -> Reject {
    if timed_out {
        Reject::new(
            OriginTimeoutReason::TimedOut,
            "The origin did not answer in time.",
        )
    } else {
        Reject::new(
            OriginUnreachableReason::Unreachable,
            "The origin could not be reached.",
        )
    }
}
