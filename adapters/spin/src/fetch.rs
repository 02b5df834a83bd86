//! Outbound HTTP through `wasi:http/outgoing-handler`: [`SpinFetch`] is the core's [`Fetch`] (key
//! sets) and [`Origin`] (forwarded requests).
//!
//! `wasi:http` never follows redirects, so neither does anything here. Timeouts are enforced on
//! our own clock ([`io::within`]) and also handed to the host as request options (connect and
//! first-byte timeouts), which Spin applies where it can.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::{select, Either};
use portcullis_core::fetch::{Fetch, FetchError, FetchResponse, MAX_FETCH_BYTES};
use portcullis_core::message;
use portcullis_core::origin::{Origin, OriginError};
use portcullis_core::{ForwardBody, OriginResult, Outbound};
use spin_sdk::http::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::RequestOptions;

use crate::body::{self, ClientBody};
use crate::fields;
use crate::io;

/// Outbound HTTP for the core: GET for JWKS and OIDC discovery, and forwarded requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinFetch;

impl Fetch for SpinFetch {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let uri: http::Uri = url.parse().map_err(|_| FetchError::InvalidUrl)?;
        let (request, body) = outgoing(&Method::Get, &uri, Fields::new())
            .map_err(|cause| FetchError::Connect { cause })?;
        let whole = async {
            let finish = async { drop(OutgoingBody::finish(body, None)) };
            let response = send(request, timeout, finish).await?;
            let status = response.status();
            let cache_control = response
                .headers()
                .get("cache-control")
                .into_iter()
                .next()
                .and_then(|v| String::from_utf8(v).ok());
            let incoming = response.consume().map_err(|()| FetchError::Interrupted)?;
            let stream = incoming.stream().map_err(|()| FetchError::Interrupted)?;
            let body = body::read_limited(&stream, MAX_FETCH_BYTES as u64).await?;
            Ok(FetchResponse {
                status,
                body,
                cache_control,
            })
        };
        io::within(timeout, whole)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }
}

/// Forwarded requests: the core's rewritten request, the body spliced from the client or
/// written from the checked bytes. The timeout covers everything up to the response headers;
/// the response body is relayed afterwards, however long it takes.
impl Origin<ClientBody> for SpinFetch {
    type Body = IncomingResponse;

    async fn send(&self, outbound: Outbound<ClientBody>) -> OriginResult<IncomingResponse> {
        let Outbound { request, timeout } = outbound;
        let (parts, body) = request.into_parts();
        let sent = async {
            let method = Method::from(parts.method);
            let headers = fields::fields(&parts.headers);
            let (outgoing, out_body) =
                outgoing(&method, &parts.uri, headers).map_err(OriginError::Failed)?;
            send(outgoing, timeout, upload(body, out_body)).await
        };
        match io::within(timeout, sent).await {
            Some(Ok(origin)) => OriginResult::Responded {
                status: origin.status(),
                headers: message::header_map(origin.headers().entries()),
                body: origin,
            },
            Some(Err(e)) => e.into(),
            None => OriginError::Timeout.into(),
        }
    }
}

/// Write the request body and finish it; an unfinished body (on error) is dropped, which the
/// host treats as an aborted request.
async fn upload(body: ForwardBody<ClientBody>, out_body: OutgoingBody) {
    let Ok(stream) = out_body.write() else {
        return;
    };
    let done = match &body {
        ForwardBody::Buffered(bytes) => io::write_all(&stream, bytes).await.is_ok(),
        ForwardBody::Stream(client) => match client.stream() {
            Some(input) => io::copy(input, &stream).await.is_ok(),
            None => true,
        },
    };
    drop(stream);
    if done {
        let _ = OutgoingBody::finish(out_body, None);
    }
    // Keep the client's body until the upload is over.
    drop(body);
}

/// Send `request`, its body written by `upload` meanwhile, and wait for the response headers.
async fn send(
    request: OutgoingRequest,
    timeout: Duration,
    upload: impl Future<Output = ()>,
) -> Result<IncomingResponse, OriginError> {
    let future = outgoing_handler::handle(request, options(timeout)).map_err(failure)?;
    let upload = pin!(upload);
    let answer = pin!(async {
        io::ready(|| future.subscribe()).await;
        match future.get() {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(code))) => Err(failure(code)),
            Some(Err(())) | None => Err(OriginError::Failed("response unavailable".into())),
        }
    });
    match select(upload, answer).await {
        Either::Left((_, answer)) => answer.await,
        // Answered before the upload ended: dropping the unfinished upload tells the host the
        // request body is incomplete, which is all that can be said now.
        Either::Right((answer, _)) => answer,
    }
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

/// An outgoing request for an absolute `uri`, and its body for the caller to write and finish.
fn outgoing(
    method: &Method,
    uri: &http::Uri,
    headers: Fields,
) -> Result<(OutgoingRequest, OutgoingBody), String> {
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        _ => return Err("URL is not http:// or https://".into()),
    };
    let authority = uri
        .authority()
        .ok_or("URL has no host")?
        .as_str()
        .to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let request = OutgoingRequest::new(headers);
    let set =
        |ok: Result<(), ()>, what: &str| ok.map_err(|()| format!("the host refused the {what}"));
    set(request.set_method(method), "method")?;
    set(request.set_scheme(Some(&scheme)), "scheme")?;
    set(request.set_authority(Some(&authority)), "authority")?;
    set(request.set_path_with_query(Some(&path)), "path")?;
    let body = request.body().map_err(|()| "request body unavailable")?;
    Ok((request, body))
}
