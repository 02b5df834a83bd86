//! Outbound HTTP GET, the one kind of outbound request the core asks for (JWKS and OIDC
//! discovery). Adapters implement it with their runtime's client: hyper natively, `fetch` on
//! Workers, `wasi:http` on Spin.

use std::future::Future;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request};

use crate::body::BodyError;

/// `User-Agent` on every fetch, so an IdP's logs can tell the gateway's requests apart.
pub const USER_AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));

/// Largest response body the core asks for; larger ones are a [`FetchError::TooLarge`].
pub const MAX_FETCH_BYTES: usize = 1 << 20;

/// A response to a [`Fetch::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_FETCH_BYTES`]).
    pub body: Vec<u8>,
    /// The `Cache-Control` header, if any.
    pub cache_control: Option<String>,
}

/// Why a fetch failed. A response with any status is not a failure: the caller judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No complete response within the timeout.
    Timeout,
    /// The body was larger than [`MAX_FETCH_BYTES`].
    TooLarge,
    /// The URL is not one the runtime can request.
    InvalidUrl,
    /// No response: DNS, connection, TLS or protocol failure. `cause` is the runtime's own
    /// account, for the operator's log only.
    Connect {
        /// The runtime's error text.
        cause: String,
    },
    /// The response started but its body broke off.
    Interrupted,
    /// This runtime makes no outbound requests.
    Unsupported,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::TooLarge => write!(f, "response larger than {MAX_FETCH_BYTES} bytes"),
            FetchError::InvalidUrl => f.write_str("not a URL this runtime can fetch"),
            FetchError::Connect { cause } => write!(f, "no response: {cause}"),
            FetchError::Interrupted => f.write_str("the response body broke off"),
            FetchError::Unsupported => f.write_str("this runtime has no outbound fetch"),
        }
    }
}

/// A body that broke off mid-fetch is [`FetchError::Interrupted`]; one over the cap,
/// [`FetchError::TooLarge`].
impl From<BodyError> for FetchError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge => FetchError::TooLarge,
            BodyError::Aborted => FetchError::Interrupted,
        }
    }
}

/// The GET for `url` as the core wants it sent, with the runtime's (empty) `body`: the gateway's
/// [`USER_AGENT`], and `Accept: application/json`. A URL that is not a valid URI is
/// [`FetchError::InvalidUrl`].
pub fn request<B>(url: &str, body: B) -> Result<Request<B>, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::InvalidUrl)?;
    Request::get(uri)
        .header(header::USER_AGENT, HeaderValue::from_static(USER_AGENT))
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(body)
        .map_err(|_| FetchError::InvalidUrl)
}

/// What a response's head settles before its body is read: a declared `Content-Length` over
/// [`MAX_FETCH_BYTES`] is [`FetchError::TooLarge`] at once, before a byte of the body is read;
/// otherwise the [`FetchResponse::cache_control`] to keep: every `Cache-Control` field, joined as
/// HTTP allows (fields that are not text are ignored).
pub fn read_head(headers: &HeaderMap) -> Result<Option<String>, FetchError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FETCH_BYTES as u64) {
        return Err(FetchError::TooLarge);
    }
    let values: Vec<&str> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Ok((!values.is_empty()).then(|| values.join(", ")))
}

/// A whole [`Fetch::get`] as the core wants it, with the runtime's client doing the I/O: the
/// GET from [`request`] (with the runtime's empty `body`), sent by `send` to the response's
/// status, headers and body handle; the head read by [`read_head`]; the body read by `read`, up
/// to [`MAX_FETCH_BYTES`]; all of it, body included, before `timer` (a sleep for the timeout)
/// ends, else [`FetchError::Timeout`].
pub async fn get_with<B, R>(
    timer: impl Future,
    url: &str,
    body: B,
    send: impl AsyncFnOnce(Request<B>) -> Result<(u16, HeaderMap, R), FetchError>,
    read: impl AsyncFnOnce(R, u64) -> Result<Vec<u8>, BodyError>,
) -> Result<FetchResponse, FetchError> {
    let whole = async {
        let (status, headers, body) = send(request(url, body)?).await?;
        let cache_control = read_head(&headers)?;
        let body = read(body, MAX_FETCH_BYTES as u64).await?;
        Ok(FetchResponse {
            status,
            body,
            cache_control,
        })
    };
    crate::time::within(timer, whole)
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

/// Outbound GET. Not required to be `Send`: wasm runtimes cannot offer that.
#[allow(async_fn_in_trait)]
pub trait Fetch {
    /// GET `url`, giving up after `timeout` (for the whole response, body included).
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError>;

    /// Sleep for `step` on the calling request's own timer and return `true`, or return `false`
    /// at once if the runtime has no such need (the default).
    ///
    /// Why it exists: requests that need a provider's key set while another request is fetching
    /// it wait for that fetch rather than start their own (see `jwks::KeyRing`). By default they
    /// queue on the provider's lock and the fetching request wakes them. Some runtimes cannot do
    /// that: workerd binds I/O to the request that started it, and a request woken from another
    /// request's fetch would run on inside that request's context. There the waiter polls the
    /// lock instead, sleeping with this between tries, and is never woken by anyone else.
    async fn pause(&self, step: Duration) -> bool {
        let _ = step;
        false
    }
}

/// For policies with no remote key sources: every fetch fails.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFetch;

impl Fetch for NoFetch {
    async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        Err(FetchError::Unsupported)
    }
}

impl<T: Fetch + ?Sized> Fetch for std::sync::Arc<T> {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        (**self).get(url, timeout).await
    }

    async fn pause(&self, step: Duration) -> bool {
        (**self).pause(step).await
    }
}

impl<T: Fetch + ?Sized> Fetch for &T {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        (**self).get(url, timeout).await
    }

    async fn pause(&self, step: Duration) -> bool {
        (**self).pause(step).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            match (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                (Ok(name), Ok(value)) => headers.append(name, value),
                _ => panic!("not a header: {name}"),
            };
        }
        headers
    }

    #[test]
    fn a_fetch_says_who_asks_and_for_what() {
        let request = request("https://idp.test/jwks.json", ()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri(), "https://idp.test/jwks.json");
        assert_eq!(request.headers()[header::USER_AGENT], USER_AGENT);
        assert!(USER_AGENT.starts_with("portcullis/"));
        assert_eq!(request.headers()[header::ACCEPT], "application/json");
    }

    /// [`get_with`] against a scripted response: its status, head and body, within a timer that
    /// ends at once when `late`; and the request it sent.
    fn scripted_get(
        url: &str,
        fields: &[(&str, &[u8])],
        body: Result<&[u8], BodyError>,
        late: bool,
    ) -> (Result<FetchResponse, FetchError>, Option<Request<()>>) {
        let mut sent = None;
        let timer = async {
            if !late {
                std::future::pending::<()>().await;
            }
        };
        let got = futures_executor::block_on(get_with(
            timer,
            url,
            (),
            async |request| {
                sent = Some(request);
                if late {
                    std::future::pending::<()>().await;
                }
                Ok((200, head(fields), body))
            },
            async |body: Result<&[u8], BodyError>, limit| {
                let bytes = body?;
                assert_eq!(limit, MAX_FETCH_BYTES as u64);
                Ok(bytes.to_vec())
            },
        ));
        (got, sent)
    }

    #[test]
    fn a_whole_get_sends_the_cores_request_and_reads_head_and_body_as_the_core_says() {
        let url = "https://idp.test/jwks.json";
        let (got, sent) = scripted_get(url, &[("cache-control", b"max-age=60")], Ok(b"{}"), false);
        let sent = sent.unwrap_or_else(|| panic!("nothing sent"));
        assert_eq!(sent.headers()[header::USER_AGENT], USER_AGENT);
        let expected = FetchResponse {
            status: 200,
            body: b"{}".to_vec(),
            cache_control: Some("max-age=60".into()),
        };
        assert_eq!(got, Ok(expected));
        let huge = (MAX_FETCH_BYTES + 1).to_string();
        let declared = [("content-length", huge.as_bytes())];
        assert_eq!(
            scripted_get(url, &declared, Ok(b""), false).0,
            Err(FetchError::TooLarge)
        );
        let broken = scripted_get(url, &[], Err(BodyError::Aborted), false).0;
        assert_eq!(broken, Err(FetchError::Interrupted));
        assert_eq!(
            scripted_get(url, &[], Ok(b""), true).0,
            Err(FetchError::Timeout)
        );
        let (invalid, sent) = scripted_get("http://exa mple/", &[], Ok(b""), false);
        assert_eq!(
            (invalid, sent.is_none()),
            (Err(FetchError::InvalidUrl), true)
        );
    }

    #[test]
    fn a_url_that_is_no_uri_is_invalid() {
        assert_eq!(
            request("http://exa mple/", ()).err(),
            Some(FetchError::InvalidUrl)
        );
    }

    #[test]
    fn cache_control_fields_are_joined_and_non_text_ones_ignored() {
        let headers = head(&[
            ("cache-control", b"public"),
            ("cache-control", b"\xff"),
            ("cache-control", b"max-age=600"),
        ]);
        assert_eq!(read_head(&headers), Ok(Some("public, max-age=600".into())));
        assert_eq!(read_head(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn a_declared_length_over_the_cap_is_too_large() {
        let at_cap = MAX_FETCH_BYTES.to_string();
        let over = (MAX_FETCH_BYTES + 1).to_string();
        assert_eq!(
            read_head(&head(&[("content-length", at_cap.as_bytes())])),
            Ok(None)
        );
        assert_eq!(
            read_head(&head(&[("content-length", over.as_bytes())])),
            Err(FetchError::TooLarge)
        );
    }

    #[test]
    fn body_failures_become_fetch_failures() {
        assert_eq!(FetchError::from(BodyError::TooLarge), FetchError::TooLarge);
        assert_eq!(
            FetchError::from(BodyError::Aborted),
            FetchError::Interrupted
        );
    }
}
