//! Outbound HTTP through `wasi:http/outgoing-handler`: [`SpinFetch`] is the core's [`Fetch`] (key
//! sets) and [`Origin`] (forwarded requests).
//!
//! `wasi:http` never follows redirects, so neither does anything here. Timeouts are enforced on
//! our own clock ([`io::sleep`]) and also handed to the host as request options (connect and
//! first-byte timeouts), which Spin applies where it can.

use std::pin::pin;
use std::time::Duration;

use futures_util::future::{select, Either};
use http::request::Parts;
use http::{HeaderMap, Request};
use portcullis_core::fetch::{self, Fetch, FetchError, FetchResponse};
use portcullis_core::message;
use portcullis_core::origin::{self, Origin, OriginError};
use portcullis_core::{BodyError, ForwardBody, OriginResult, Outbound};
use spin_sdk::http::{ErrorCode, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::RequestOptions;

use crate::body::{self, ClientBody};
use crate::fields;
use crate::io;

/// Outbound HTTP for the core: GET for JWKS and OIDC discovery, and forwarded requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinFetch;

impl Fetch for SpinFetch {
    /// A whole GET as the core says ([`fetch::get_with`]), sent as forwarded requests are.
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let send = async |request| Ok(exchange(request, timeout).await?);
        let read = async |response: IncomingResponse, limit| {
            let incoming = response.consume().map_err(|()| BodyError::Aborted)?;
            let stream = incoming.stream().map_err(|()| BodyError::Aborted)?;
            body::read_limited(&stream, limit).await
        };
        let empty = ForwardBody::Buffered(Vec::new());
        fetch::get_with(io::sleep(timeout), url, empty, send, read).await
    }
}

/// Forwarded requests: the core's rewritten request, the body spliced from the client or
/// written from the checked bytes. The timeout covers everything up to the response headers;
/// the response body is relayed afterwards, however long it takes.
impl Origin<ClientBody> for SpinFetch {
    type Body = IncomingResponse;

    async fn send(&self, outbound: Outbound<ClientBody>) -> OriginResult<IncomingResponse> {
        let Outbound {
            request, timeout, ..
        } = outbound;
        origin::within(io::sleep(timeout), exchange(request, timeout)).await
    }
}

/// Write the request body and finish it; an unfinished body (on error) is dropped, which the
/// host treats as an aborted request.
async fn upload(body: ForwardBody<ClientBody>, out_body: OutgoingBody) {
    io::fill(out_body, async |stream| match &body {
        ForwardBody::Buffered(bytes) => io::write_all(stream, bytes).await.is_ok(),
        ForwardBody::Stream(client) => match client.stream() {
            Some(input) => io::copy(input, stream).await.is_ok(),
            None => true,
        },
    })
    .await;
    // Keep the client's body until the upload is over.
    drop(body);
}

/// Send `request`, its body written meanwhile, and wait for the response head: its status, its
/// headers, and the response, its body still to read.
async fn exchange(
    request: Request<ForwardBody<ClientBody>>,
    timeout: Duration,
) -> Result<(u16, HeaderMap, IncomingResponse), OriginError> {
    let (parts, body) = request.into_parts();
    let (request, out_body) = outgoing(parts).map_err(OriginError::Failed)?;
    let future = outgoing_handler::handle(request, options(timeout)).map_err(failure)?;
    let upload = pin!(upload(body, out_body));
    let answer = pin!(async {
        io::ready(|| future.subscribe()).await;
        match future.get() {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(code))) => Err(failure(code)),
            Some(Err(())) | None => Err(OriginError::Failed("response unavailable".into())),
        }
    });
    let response = match select(upload, answer).await {
        Either::Left((_, answer)) => answer.await,
        // Answered before the upload ended: dropping the unfinished upload tells the host the
        // request body is incomplete, which is all that can be said now.
        Either::Right((answer, _)) => answer,
    }?;
    let headers = message::header_map(response.headers().entries());
    Ok((response.status(), headers, response))
}

/// The host's error: its own timeouts are timeouts, the rest is for the log.
fn failure(code: ErrorCode) -> OriginError {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::HttpResponseTimeout => OriginError::Timeout,
        ErrorCode::HttpRequestDenied => {
            OriginError::Failed("host not in the component's allowed_outbound_hosts".into())
        }
        other => OriginError::Failed(format!("{other:?}")),
    }
}

/// Connect and first-byte timeouts for the host; refused options are simply not set.
fn options(timeout: Duration) -> Option<RequestOptions> {
    let options = RequestOptions::new();
    let nanos = io::nanos(timeout);
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    Some(options)
}

/// The host's request for `parts` (an absolute URI), and its body for the caller to write and
/// finish.
fn outgoing(parts: Parts) -> Result<(OutgoingRequest, OutgoingBody), String> {
    let uri = &parts.uri;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => return Err("URL is not http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("URL has no host")?.as_str();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = OutgoingRequest::new(fields::fields(&parts.headers));
    let set =
        |ok: Result<(), ()>, what: &str| ok.map_err(|()| format!("the host refused the {what}"));
    set(request.set_method(&Method::from(parts.method)), "method")?;
    set(request.set_scheme(Some(&scheme)), "scheme")?;
    set(request.set_authority(Some(authority)), "authority")?;
    set(request.set_path_with_query(Some(path)), "path")?;
    let body = request.body().map_err(|()| "request body unavailable")?;
    Ok((request, body))
}
