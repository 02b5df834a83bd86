//! The core's outbound GETs (JWKS documents, OIDC discovery), sent through the same pooled client
//! as requests to origins, so key fetches reuse its connections, TLS setup and roots.

use std::time::Duration;

use bytes::Bytes;
use portcullis_core::event::error_chain;
use portcullis_core::fetch::{self, Fetch, FetchError, FetchResponse};

use crate::body;
use crate::body::RelayBody;

/// The pooled client key fetches share with requests to origins.
pub type Upstream = portcullis_upstream::Client<RelayBody>;

/// [`Fetch`] on the gateway's pooled client (`http://` and `https://`).
#[derive(Clone)]
pub struct HyperFetch {
    client: Upstream,
}

impl HyperFetch {
    /// Fetch through `client` (a clone of the origin client shares its connection pool).
    pub fn new(client: Upstream) -> Self {
        HyperFetch { client }
    }
}

impl Fetch for HyperFetch {
    /// A whole GET as the core says ([`fetch::get_with`]): one deadline for connecting, the
    /// head and the body, so a server that answers its head quickly and then trickles the body
    /// still times out.
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        let send = async |request| {
            let response = self.client.request(request).await;
            let response = response.map_err(|e| FetchError::Connect {
                cause: error_chain(&e),
            })?;
            let (parts, incoming) = response.into_parts();
            Ok((parts.status.as_u16(), parts.headers, incoming))
        };
        let empty = body::full(Bytes::new());
        let sleep = tokio::time::sleep(timeout);
        fetch::get_with(sleep, url, empty, send, body::read_limited).await
    }
}

#[cfg(test)]
mod tests {
    use portcullis_core::fetch::MAX_FETCH_BYTES;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        (listener, format!("http://{addr}/jwks.json"))
    }

    /// Fetch, within `timeout`, from a one-connection-at-a-time server on 127.0.0.1 that reads a
    /// request head and writes `answer` (then, if `stall`, keeps the connection open without
    /// writing more).
    async fn fetch_answer(
        answer: impl Into<Vec<u8>>,
        stall: bool,
        timeout: Duration,
    ) -> Result<FetchResponse, FetchError> {
        let (listener, url) = listener().await;
        let answer = answer.into();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(&answer).await;
                    if stall {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                });
            }
        });
        fetcher().get(&url, timeout).await
    }

    fn fetcher() -> HyperFetch {
        let upstreams = portcullis_upstream::Upstreams::new().unwrap_or_else(|e| panic!("{e}"));
        HyperFetch::new(upstreams.public().clone())
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn returns_status_body_and_cache_control() {
        let got = fetch_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nCache-Control: public\r\nCache-Control: max-age=600\r\nConnection: close\r\n\r\n{\"keys\":[]}",
            false,
            SECOND,
        )
        .await;
        assert_eq!(
            got,
            Ok(FetchResponse {
                status: 200,
                body: b"{\"keys\":[]}".to_vec(),
                cache_control: Some("public, max-age=600".into()),
            })
        );
    }

    #[tokio::test]
    async fn an_error_status_is_a_response_not_a_failure() {
        let answer =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let got = fetch_answer(answer, false, SECOND).await;
        assert_eq!(got.map(|r| (r.status, r.cache_control)), Ok((503, None)));
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        // The head arrives at once; the promised body never does.
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"keys\"";
        let started = std::time::Instant::now();
        let got = fetch_answer(answer, true, Duration::from_millis(300)).await;
        assert_eq!(got, Err(FetchError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_declared_oversized_body_is_too_large() {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_FETCH_BYTES + 1
        );
        let got = fetch_answer(head, true, SECOND).await;
        assert_eq!(got, Err(FetchError::TooLarge));
    }

    #[tokio::test]
    async fn an_undeclared_oversized_body_is_too_large() {
        let mut answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        answer.resize(answer.len() + MAX_FETCH_BYTES + 1, b' ');
        let got = fetch_answer(answer, false, Duration::from_secs(10)).await;
        assert_eq!(got, Err(FetchError::TooLarge));
    }

    #[tokio::test]
    async fn a_refused_connection_fails_with_the_cause() {
        let (listener, url) = listener().await;
        drop(listener);
        match fetcher().get(&url, SECOND).await {
            Err(FetchError::Connect { cause }) => assert!(cause.contains("onnect"), "{cause}"),
            other => panic!("expected a connection failure, got {other:?}"),
        }
    }
}
