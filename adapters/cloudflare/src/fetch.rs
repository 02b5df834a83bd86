//! Outbound `fetch`: key sets for the core ([`WorkerFetch`]) and forwarded requests for the
//! origin ([`send_to_origin`]), each with a timeout; redirects are never followed.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use portcullis_core::fetch::{Fetch, FetchError, FetchResponse, MAX_FETCH_BYTES};
use portcullis_core::ForwardBody;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::Delay;

use crate::body::ClientBody;

/// Why the origin gave no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// No response headers within the route origin's timeout.
    Timeout,
    /// The request could not be built or sent; the text is for the operator's log.
    Failed(String),
}

/// Workers `fetch` as the core's [`Fetch`] (JWKS and OIDC discovery).
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerFetch;

impl Fetch for WorkerFetch {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let controller = web_sys::AbortController::new().map_err(|e| failed(&e))?;
        let whole = async {
            let init = web_sys::RequestInit::new();
            init.set_method("GET");
            init.set_redirect(web_sys::RequestRedirect::Manual);
            init.set_signal(Some(&controller.signal()));
            let request =
                web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| failed(&e))?;
            let response = call(&request).await.map_err(|e| failed(&e))?;
            let cache_control = response.headers().get("cache-control").ok().flatten();
            let status = response.status();
            let mut body = Vec::new();
            if let Some(stream) = response.body() {
                let mut chunks =
                    wasm_streams::ReadableStream::from_raw(stream.unchecked_into()).into_stream();
                while let Some(chunk) = chunks.next().await {
                    let chunk =
                        js_sys::Uint8Array::new(&chunk.map_err(|_| FetchError::Interrupted)?);
                    if body.len().saturating_add(chunk.length() as usize) > MAX_FETCH_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    body.extend_from_slice(&chunk.to_vec());
                }
            }
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

/// Send the core's rewritten request to the origin. The timeout covers the response headers
/// only: the body is streamed to the client afterwards, however long it takes.
pub async fn send_to_origin(
    request: Request<ForwardBody<ClientBody>>,
    timeout: Duration,
) -> Result<web_sys::Response, OriginError> {
    let (parts, body) = request.into_parts();
    let fail = |e: &JsValue| OriginError::Failed(describe(e));
    let controller = web_sys::AbortController::new().map_err(|e| fail(&e))?;
    let init = web_sys::RequestInit::new();
    init.set_method(parts.method.as_str());
    let headers = web_headers(&parts.headers).map_err(|e| OriginError::Failed(e.to_string()))?;
    init.set_headers(headers.as_ref());
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
    let request = web_sys::Request::new_with_str_and_init(&parts.uri.to_string(), &init)
        .map_err(|e| fail(&e))?;
    match within(timeout, call(&request)).await {
        Some(Ok(response)) => Ok(response),
        Some(Err(e)) => Err(fail(&e)),
        None => {
            controller.abort();
            Err(OriginError::Timeout)
        }
    }
}

/// `fetch(request)` on the Worker's global scope.
async fn call(request: &web_sys::Request) -> Result<web_sys::Response, JsValue> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response = JsFuture::from(global.fetch_with_request(request)).await?;
    response.dyn_into()
}

/// `future`'s output, or `None` once `timeout` has passed.
async fn within<F: std::future::Future>(timeout: Duration, future: F) -> Option<F::Output> {
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
/// valid HTTP are dropped.
pub fn header_map(headers: &web_sys::Headers) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Ok(Some(entries)) = js_sys::try_iter(headers) else {
        return out;
    };
    for entry in entries.flatten() {
        let pair = js_sys::Array::from(&entry);
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            continue;
        };
        let bytes: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(c).ok()).collect();
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(name.as_bytes()),
            bytes.map(|b| HeaderValue::from_bytes(&b)),
        ) {
            out.append(name, value);
        }
    }
    out
}
