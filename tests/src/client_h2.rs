//! The same requests over HTTPS and HTTP/2, for a run of the vectors against the TLS listener.
//!
//! A vector is written as HTTP/1.1 bytes ([`WireRequest`]); here its head is parsed and sent as
//! an HTTP/2 request on a fresh TLS connection (ALPN `h2`, trusting the test's CA): `Host`
//! becomes `:authority`, the body goes in DATA frames whatever its HTTP/1.1 framing was, and the
//! headers HTTP/2 forbids (RFC 9113 §8.2.2: `Connection` and what it names, `Keep-Alive`,
//! `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, a `TE` other than `trailers`) cannot be
//! sent at all. A request HTTP/2 cannot carry (a malformed head, a target that is not a path)
//! is not sent: the exchange is [`Exchange::Closed`] with why, for the xfail list to name.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::rustls;

use crate::client::{Exchange, Response, Timed, WireRequest, REQUEST_TIMEOUT};

/// Headers that HTTP/2 does not carry.
const CONNECTION_SPECIFIC: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Send `request` to `addr` over TLS trusting the PEM CA at `ca`, as HTTP/2.
pub async fn send(addr: &str, ca: &Path, request: &WireRequest) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let exchange = match to_h2(addr, request) {
        Err(why) => Exchange::Closed(format!("not expressible over HTTP/2: {why}")),
        Ok(h2) => tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, ca, h2))
            .await
            .map_err(|_| {
                anyhow!(
                    "no complete HTTP/2 response within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )
            })??,
    };
    Ok(Timed {
        exchange,
        elapsed: start.elapsed(),
    })
}

fn to_h2(addr: &str, request: &WireRequest) -> Result<http::Request<Full<Bytes>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut headers);
    let body_at = match parsed.parse(&request.head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the head is incomplete".into()),
        Err(e) => return Err(format!("the head does not parse: {e}")),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err("no request line".into());
    };
    if !target.starts_with('/') {
        return Err(format!("target {target:?} is not origin-form"));
    }
    let host = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or(addr);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("https://{host}{target}"))
        .version(http::Version::HTTP_2);
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let te_other = name == "te" && !h.value.eq_ignore_ascii_case(b"trailers");
        if name == "host" || te_other || CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        builder = builder.header(h.name, h.value);
    }
    // A raw request's body follows its head in the same bytes.
    let mut body = request.head[body_at..].to_vec();
    body.extend_from_slice(&request.body);
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("not an HTTP request: {e}"))
}

async fn exchange(
    addr: &str,
    ca: &Path,
    request: http::Request<Full<Bytes>>,
) -> anyhow::Result<Exchange> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("the listener's CA")? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from("127.0.0.1")?;
    let tls = match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return Ok(Exchange::Closed(format!("TLS handshake failed: {e}"))),
    };
    let (mut sender, connection) = match hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => return Ok(Exchange::Closed(format!("HTTP/2 handshake failed: {e}"))),
    };
    tokio::spawn(connection);
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => return Ok(Exchange::Closed(format!("the stream failed: {e}"))),
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        Err(e) => return Ok(Exchange::Closed(format!("the body broke off: {e}"))),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(Exchange::Response(Response {
        status: parts.status.as_u16(),
        headers,
        body,
    }))
}
