//! Outbound HTTP through `wasi:http/outgoing-handler`: key sets for the core ([`SpinFetch`]) and
//! forwarded requests for the origin ([`send_to_origin`]).
//!
//! `wasi:http` never follows redirects, so neither does anything here. Timeouts are enforced on
//! our own clock ([`io::within`]) and also handed to the host as request options (connect and
//! first-byte timeouts), which Spin applies where it can.

use std::pin::pin;
use std::time::Duration;

use futures_util::future::{select, Either};
use http::Request;
use portcullis_core::fetch::{Fetch, FetchError, FetchResponse, MAX_FETCH_BYTES};
use portcullis_core::ForwardBody;
use spin_sdk::http::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use spin_sdk::wit::wasi::http0_2_0::types::RequestOptions;

use crate::body::ClientBody;
use crate::fields;
use crate::io;

/// Why the origin gave no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// No response headers within the route origin's timeout.
    Timeout,
    /// The request could not be built or sent; the text is for the operator's log.
    Failed(String),
}

/// Outbound GET for the core (JWKS and OIDC discovery).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinFetch;

impl Fetch for SpinFetch {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let uri: http::Uri = url.parse().map_err(|_| FetchError::InvalidUrl)?;
        let request = outgoing(&Method::Get, &uri, Fields::new())
            .map_err(|cause| FetchError::Connect { cause })?;
        let whole = async {
            let body = request.body().map_err(|()| FetchError::Connect {
                cause: "request body unavailable".into(),
            })?;
            let response = send(request, body, timeout).await.map_err(|e| match e {
                OriginError::Timeout => FetchError::Timeout,
                OriginError::Failed(cause) => FetchError::Connect { cause },
            })?;
            let status = response.status();
            let cache_control = response
                .headers()
                .get("cache-control")
                .into_iter()
                .next()
                .and_then(|v| String::from_utf8(v).ok());
            let body = read_limited(&response).await?;
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

/// A response body, at most [`MAX_FETCH_BYTES`].
async fn read_limited(response: &IncomingResponse) -> Result<Vec<u8>, FetchError> {
    let body = response.consume().map_err(|()| FetchError::Interrupted)?;
    let stream = body.stream().map_err(|()| FetchError::Interrupted)?;
    let mut out = Vec::new();
    while let Some(chunk) = io::read_chunk(&stream)
        .await
        .map_err(|_| FetchError::Interrupted)?
    {
        if out.len().saturating_add(chunk.len()) > MAX_FETCH_BYTES {
            return Err(FetchError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Send the core's rewritten request to the origin, the body spliced from the client or written
/// from the checked bytes. The timeout covers everything up to the response headers; the
/// response body is relayed afterwards, however long it takes.
pub async fn send_to_origin(
    request: Request<ForwardBody<ClientBody>>,
    timeout: Duration,
) -> Result<IncomingResponse, OriginError> {
    let (parts, body) = request.into_parts();
    let method = method(&parts.method);
    let outgoing = outgoing(&method, &parts.uri, fields::fields(&parts.headers))
        .map_err(OriginError::Failed)?;
    let out_body = outgoing
        .body()
        .map_err(|()| OriginError::Failed("request body unavailable".into()))?;
    let exchange = async {
        let options = options(timeout);
        let future = outgoing_handler::handle(outgoing, options).map_err(failure)?;
        let upload = pin!(upload(body, out_body));
        let answer = pin!(async {
            io::ready(|| future.subscribe()).await;
            answer(future.get())
        });
        match select(upload, answer).await {
            Either::Left((_, answer)) => answer.await,
            // Answered before the upload ended: dropping the unfinished upload tells the host the
            // request body is incomplete, which is all that can be said now.
            Either::Right((answer, _)) => answer,
        }
    };
    io::within(timeout, exchange)
        .await
        .unwrap_or(Err(OriginError::Timeout))
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

/// Send `request` (whose body the caller finishes) and wait for the response headers.
async fn send(
    request: OutgoingRequest,
    body: OutgoingBody,
    timeout: Duration,
) -> Result<IncomingResponse, OriginError> {
    let future = outgoing_handler::handle(request, options(timeout)).map_err(failure)?;
    let _ = OutgoingBody::finish(body, None);
    io::ready(|| future.subscribe()).await;
    answer(future.get())
}

type FutureResult = Option<Result<Result<IncomingResponse, ErrorCode>, ()>>;

fn answer(result: FutureResult) -> Result<IncomingResponse, OriginError> {
    match result {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(code))) => Err(failure(code)),
        Some(Err(())) | None => Err(OriginError::Failed("response unavailable".into())),
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

/// An outgoing request for an absolute `uri`.
fn outgoing(method: &Method, uri: &http::Uri, headers: Fields) -> Result<OutgoingRequest, String> {
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
    Ok(request)
}

fn method(m: &http::Method) -> Method {
    match *m {
        http::Method::GET => Method::Get,
        http::Method::HEAD => Method::Head,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::CONNECT => Method::Connect,
        http::Method::OPTIONS => Method::Options,
        http::Method::TRACE => Method::Trace,
        http::Method::PATCH => Method::Patch,
        _ => Method::Other(m.as_str().to_owned()),
    }
}
