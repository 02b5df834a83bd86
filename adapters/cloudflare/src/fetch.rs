//! Outbound `fetch`: [`WorkerFetch`] is the core's [`Fetch`] (key sets) and [`Origin`]
//! (forwarded requests), each with a timeout; redirects are never followed.

use std::time::Duration;

use futures_util::future::{select, Either};
use http::{HeaderMap, Request};
use portcullis_core::fetch::{Fetch, FetchError, FetchResponse, MAX_FETCH_BYTES};
use portcullis_core::message;
use portcullis_core::origin::{Origin, OriginError};
use portcullis_core::{ForwardBody, OriginResult, Outbound};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Delay;

use crate::body::{self, ClientBody};

/// Workers `fetch` for the core: GET for JWKS and OIDC discovery, and forwarded requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerFetch;

impl Fetch for WorkerFetch {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let controller = web_sys::AbortController::new().map_err(|e| failed(&e))?;
        let whole = async {
            let init = init("GET", &controller);
            let request =
                web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| failed(&e))?;
            let response = call(&request).await.map_err(|e| failed(&e))?;
            let cache_control = response.headers().get("cache-control").ok().flatten();
            let status = response.status();
            let body = body::read_limited(response.body(), MAX_FETCH_BYTES as u64).await?;
            Ok(FetchResponse {
                status,
                body,
                cache_control,
            })
        };
        match within(timeout, whole).await {
            Some(result) => result,
            None => {
                controller.abort();
                Err(FetchError::Timeout)
            }
        }
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
        let Outbound { request, timeout } = outbound;
        let (request, controller) = match outgoing(request) {
            Ok(outgoing) => outgoing,
            Err(e) => return e.into(),
        };
        match within(timeout, call(&request)).await {
            Some(Ok(response)) => OriginResult::Responded {
                status: response.status(),
                headers: header_map(&response.headers()),
                body: response,
            },
            Some(Err(e)) => OriginError::Failed(describe(&e)).into(),
            None => {
                controller.abort();
                OriginError::Timeout.into()
            }
        }
    }
}

/// The Worker's request for the origin (the client's body stream handed on, or the checked
/// bytes), and what aborts it.
fn outgoing(
    request: Request<ForwardBody<ClientBody>>,
) -> Result<(web_sys::Request, web_sys::AbortController), OriginError> {
    let fail = |e: JsValue| OriginError::Failed(describe(&e));
    let controller = web_sys::AbortController::new().map_err(fail)?;
    let (parts, body) = request.into_parts();
    let init = init(parts.method.as_str(), &controller);
    let headers = web_headers(&parts.headers).map_err(|e| OriginError::Failed(e.to_string()))?;
    init.set_headers(headers.as_ref());
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
    let request = web_sys::Request::new_with_str_and_init(&parts.uri.to_string(), &init);
    Ok((request.map_err(fail)?, controller))
}

/// A request's options: `method`, redirects returned rather than followed, abortable.
fn init(method: &str, controller: &web_sys::AbortController) -> web_sys::RequestInit {
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(&controller.signal()));
    init
}

/// `fetch(request)` on the Worker's global scope.
async fn call(request: &web_sys::Request) -> Result<web_sys::Response, JsValue> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = JsFuture::from(global.fetch_with_request(request)).await?;
    response.dyn_into()
}

/// `future`'s output, or `None` once `timeout` has passed (the future is then dropped).
pub async fn within<F: std::future::Future>(timeout: Duration, future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    match select(future, Delay::from(timeout)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

fn failed(e: &JsValue) -> FetchError {
    FetchError::Connect { cause: describe(e) }
}

/// A JavaScript error as text for the operator's log.
fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "fetch failed".to_owned())
}

/// JavaScript `Headers` from a header map. Header values are byte strings: each byte becomes the
/// character with that code (as `fetch` expects), so no value is lost or mangled.
pub fn web_headers(headers: &HeaderMap) -> Result<web_sys::Headers, worker::Error> {
    let out = web_sys::Headers::new()?;
    for (name, value) in headers {
        let text: String = value.as_bytes().iter().map(|&b| char::from(b)).collect();
        out.append(name.as_str(), &text)?;
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
        let value = pair.get(1).as_string()?;
        let bytes: Vec<u8> = value
            .chars()
            .map(|c| u8::try_from(c).ok())
            .collect::<Option<_>>()?;
        Some((pair.get(0).as_string()?, bytes))
    }))
}
