//! Outbound HTTP GET, the one kind of outbound request the core asks for (JWKS and OIDC
//! discovery). Adapters implement it with their runtime's client: hyper natively, `fetch` on
//! Workers, `wasi:http` on Spin.

use std::time::Duration;

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

/// A response body that broke off or outgrew [`MAX_FETCH_BYTES`], read with the runtime's body
/// reader.
impl From<crate::body::BodyError> for FetchError {
    fn from(e: crate::body::BodyError) -> Self {
        match e {
            crate::body::BodyError::TooLarge => FetchError::TooLarge,
            crate::body::BodyError::Aborted => FetchError::Interrupted,
        }
    }
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
    use crate::body::BodyError;

    #[test]
    fn a_body_that_outgrows_the_limit_or_breaks_off_is_the_fetch_error_of_the_same_name() {
        assert_eq!(FetchError::from(BodyError::TooLarge), FetchError::TooLarge);
        assert_eq!(
            FetchError::from(BodyError::Aborted),
            FetchError::Interrupted
        );
    }
}
