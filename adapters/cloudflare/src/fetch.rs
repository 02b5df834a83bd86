//! Outbound `fetch`: [`WorkerFetch`] is the core's [`Fetch`] (key sets) and [`Origin`]
//! (forwarded requests), each with a timeout; redirects are never followed.

use std::time::Duration;

use http::{HeaderMap, Request};
use portcullis_core::fetch::{self, Fetch, FetchError, FetchResponse};
use portcullis_core::message;
use portcullis_core::origin::{self, Origin, OriginError};
use portcullis_core::{ForwardBody, OriginResult, Outbound};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Delay;

use crate::body::{self, ClientBody};

/// Workers `fetch` for the core: GET for JWKS and OIDC discovery, and forwarded requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerFetch;

impl Fetch for WorkerFetch {
    /// A whole GET as the core says ([`fetch::get_with`]), sent as forwarded requests are, and
    /// aborted if it runs out of time.
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let controller = controller()?;
        let send = async |request| {
            let response = call(request, &controller).await?;
            Ok((
                response.status(),
                header_map(&response.headers()),
                response.body(),
            ))
        };
        let empty = ForwardBody::Buffered(Vec::new());
        let got = fetch::get_with(Delay::from(timeout), url, empty, send, body::read_limited).await;
        if got == Err(FetchError::Timeout) {
            controller.abort();
        }
        got
    }

    /// workerd binds I/O, and wake-ups, to the request that started them: a request queued on
    /// the core's key-set lock would be woken from the fetching request and run on in its
    /// context (its own origin response would then fail). So it polls on its own timer instead.
    async fn pause(&self, step: Duration) -> bool {
        Delay::from(step).await;
        true
    }
}

/// Forwarded requests: the core's rewritten request. The timeout covers the response headers
/// only: the body is streamed to the client afterwards, however long it takes.
impl Origin<ClientBody> for WorkerFetch {
    type Body = web_sys::Response;

    async fn send(&self, outbound: Outbound<ClientBody>) -> OriginResult<web_sys::Response> {
        let Outbound {
            request, timeout, ..
        } = outbound;
        let controller = match controller() {
            Ok(controller) => controller,
            Err(e) => return e.into(),
        };
        let sent = async {
            let response = call(request, &controller).await?;
            Ok((response.status(), header_map(&response.headers()), response))
        };
        let result = origin::within(Delay::from(timeout), sent).await;
        if matches!(result, OriginResult::TimedOut) {
            controller.abort();
        }
        result
    }
}

/// The Worker's request (for the origin, the client's body stream handed on or the checked
/// bytes), redirects returned rather than followed, aborted by `controller`.
fn outgoing(
    request: Request<ForwardBody<ClientBody>>,
    controller: &web_sys::AbortController,
) -> Result<web_sys::Request, OriginError> {
    let fail = |e: JsValue| OriginError::Failed(describe(&e));
    let (parts, body) = request.into_parts();
    let init = web_sys::RequestInit::new();
    init.set_method(parts.method.as_str());
    init.set_headers(web_headers(&parts.headers).map_err(fail)?.as_ref());
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(&controller.signal()));
    match body {
        ForwardBody::Stream(client) => {
            if let Some(stream) = client.0 {
                init.set_body(&stream);
            }
        }
        ForwardBody::Buffered(bytes) => {
            if !bytes.is_empty() {
                init.set_body(&js_sys::Uint8Array::from(bytes.as_slice()));
            }
        }
    }
    web_sys::Request::new_with_str_and_init(&parts.uri.to_string(), &init).map_err(fail)
}

/// `fetch` on the Worker's global scope for `request` ([`outgoing`]), aborted by `controller`.
async fn call(
    request: Request<ForwardBody<ClientBody>>,
    controller: &web_sys::AbortController,
) -> Result<web_sys::Response, OriginError> {
    let request = outgoing(request, controller)?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = JsFuture::from(global.fetch_with_request(&request)).await;
    response
        .and_then(JsCast::dyn_into)
        .map_err(|e| OriginError::Failed(describe(&e)))
}

/// What aborts a request that runs out of time.
fn controller() -> Result<web_sys::AbortController, OriginError> {
    web_sys::AbortController::new().map_err(|e| OriginError::Failed(describe(&e)))
}

/// A JavaScript error as text for the operator's log.
fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "fetch failed".to_owned())
}

/// JavaScript `Headers` from a header map, each value as a byte string ([`message::byte_string`]).
pub fn web_headers(headers: &HeaderMap) -> Result<web_sys::Headers, JsValue> {
    let out = web_sys::Headers::new()?;
    for (name, value) in headers {
        out.append(name.as_str(), &message::byte_string(value.as_bytes()))?;
    }
    Ok(out)
}

/// A header map from JavaScript `Headers` (the inverse of [`web_headers`]); entries that are not
/// valid HTTP, or whose value is not a byte string, are dropped.
pub fn header_map(headers: &web_sys::Headers) -> HeaderMap {
    let Ok(Some(entries)) = js_sys::try_iter(headers) else {
        return HeaderMap::new();
    };
    message::header_map(entries.flatten().filter_map(|entry| {
        let pair = js_sys::Array::from(&entry);
        let value = message::from_byte_string(&pair.get(1).as_string()?)?;
        Some((pair.get(0).as_string()?, value))
    }))
}
