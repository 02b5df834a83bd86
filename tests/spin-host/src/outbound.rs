//! Outbound HTTP: `allowed_outbound_hosts` as Spin reads it, and the sender behind
//! `wasi:http/outgoing-handler`.
//!
//! A request to a destination no entry allows fails with `error-code::HTTP-request-denied`, the
//! error Spin gives, before any connection is made. Allowed requests go out over plain HTTP/1.1
//! (one connection per request). This test host has no TLS client: an allowed `https://`
//! request fails with `internal-error` naming that, rather than pretending to work.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, each part possibly `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`: stored as `.example.com`.
    Subdomain(String),
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "mysql" => Some(3306),
        "postgres" => Some(5432),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHost {
    /// Parse one entry (templates already expanded).
    pub fn parse(entry: &str) -> anyhow::Result<AllowedHost> {
        let text = entry.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            anyhow!("{entry:?} has no scheme (write e.g. 'http://host:port' or '*://*:*')")
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("{entry:?}: an allowed host must not have a path (CIDR ranges are not supported by this test host)");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (h, p),
            _ => (rest, ""),
        };
        let scheme_pattern = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(s.to_ascii_lowercase())
            }
            _ => bail!("{entry:?}: the scheme must be '*' or letters"),
        };
        let port = match port {
            "" => {
                let p = scheme_pattern
                    .as_deref()
                    .and_then(well_known_port)
                    .ok_or_else(|| {
                        anyhow!("{entry:?}: no port, and the scheme has no well-known port")
                    })?;
                PortPattern::Range(p, p)
            }
            "*" => PortPattern::Any,
            p => {
                let (lo, hi) = p.split_once("..").unwrap_or((p, p));
                let lo: u16 = lo
                    .parse()
                    .map_err(|_| anyhow!("{entry:?}: bad port {p:?}"))?;
                let hi: u16 = hi
                    .parse()
                    .map_err(|_| anyhow!("{entry:?}: bad port {p:?}"))?;
                if lo > hi {
                    bail!("{entry:?}: empty port range {p:?}");
                }
                PortPattern::Range(lo, hi)
            }
        };
        let host = match host {
            "*" => HostPattern::Any,
            "self" | "self.alt" => {
                bail!("{entry:?}: 'self' (service chaining) is not supported by this test host")
            }
            h => {
                if let Some(domain) = h.strip_prefix("*.") {
                    if domain.is_empty() || domain.contains('*') {
                        bail!("{entry:?}: wildcards are allowed only as a leading '*.'");
                    }
                    HostPattern::Subdomain(format!(".{}", domain.to_ascii_lowercase()))
                } else if h.contains('*') || h.is_empty() {
                    bail!("{entry:?}: bad host {h:?}");
                } else if let Ok(ip) = h
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    HostPattern::Ip(ip)
                } else {
                    HostPattern::Name(h.to_ascii_lowercase())
                }
            }
        };
        Ok(AllowedHost {
            scheme: scheme_pattern,
            host,
            port,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => host.to_ascii_lowercase().ends_with(suffix.as_str()),
            HostPattern::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            HostPattern::Name(name) => host.eq_ignore_ascii_case(name),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's outbound policy.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parse every entry.
    pub fn parse(entries: &[String]) -> anyhow::Result<AllowedHosts> {
        Ok(AllowedHosts {
            entries: entries
                .iter()
                .map(|e| AllowedHost::parse(e))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Whether `uri` (absolute) may be requested.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let Some(port) = uri.port_u16().or_else(|| well_known_port(scheme)) else {
            return false;
        };
        self.entries.iter().any(|e| e.allows(scheme, host, port))
    }
}

/// Per-request `wasi:http` hooks: the allow-list, and the time spent waiting for outbound
/// response heads (for the optional timing line).
pub struct Outbound {
    /// Who is calling, for log lines.
    pub component: Arc<str>,
    /// The allow-list.
    pub allowed: Arc<AllowedHosts>,
    /// Microseconds spent waiting for outbound response heads.
    pub waited_us: Arc<AtomicU64>,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        let allowed = self.allowed.allows(request.uri());
        let component = self.component.clone();
        let waited = self.waited_us.clone();
        Box::new(async move {
            if !allowed {
                warn!(
                    "portcullis-spin-host: component {component} tried an outbound request to {} \
                     that allowed_outbound_hosts does not allow; refused (HTTP-request-denied)",
                    origin_of(request.uri())
                );
                return Err(HttpError::HttpRequestDenied);
            }
            let started = Instant::now();
            let result = send(request, options).await;
            waited.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let response = result?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

fn origin_of(uri: &http::Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map(|a| a.as_str()).unwrap_or("?")
    )
}

/// Send `request` over a fresh HTTP/1.1 connection, honouring the connect and first-byte
/// timeouts of `options` (default 600 s each, as in wasmtime).
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let uri = request.uri().clone();
    if uri.scheme_str() == Some("https") {
        return Err(HttpError::InternalError(Some(
            "this test host has no TLS client: outbound https:// is not supported".into(),
        )));
    }
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let default = Duration::from_secs(600);
    let connect_timeout = options
        .as_ref()
        .and_then(|o| o.connect_timeout)
        .unwrap_or(default);
    let first_byte_timeout = options
        .as_ref()
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(default);
    let stream = match tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Err(_) => return Err(HttpError::ConnectionTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(HttpError::ConnectionRefused)
        }
        Ok(Err(e)) => return Err(HttpError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Hyper)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The request line carries only the path: the authority is in the Host header.
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::Hyper)?;
    Ok(response.map(|body| {
        body.map_err(HttpError::Hyper)
            .map_frame(|f| f.map_data(Bytes::from))
            .boxed_unsync()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], url: &str) -> bool {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowedHosts::parse(&entries)
            .expect("parses")
            .allows(&url.parse().expect("uri"))
    }

    #[test]
    fn patterns() {
        assert!(allows(&["http://127.0.0.1:*"], "http://127.0.0.1:8080/x"));
        assert!(!allows(&["http://127.0.0.1:*"], "https://127.0.0.1:8080/x"));
        assert!(!allows(&["http://127.0.0.1:*"], "http://127.0.0.2:8080/x"));
        assert!(allows(&["http://localhost:3000"], "http://LOCALHOST:3000/"));
        assert!(!allows(
            &["http://localhost:3000"],
            "http://localhost:3001/"
        ));
        assert!(allows(&["http://example.com"], "http://example.com/a"));
        assert!(!allows(
            &["http://example.com"],
            "http://example.com:8080/a"
        ));
        assert!(allows(
            &["https://*.example.com"],
            "https://api.example.com/"
        ));
        assert!(!allows(&["https://*.example.com"], "https://example.com/"));
        assert!(allows(&["*://*:*"], "http://anything:1/"));
        assert!(allows(
            &["http://127.0.0.1:8000..8010"],
            "http://127.0.0.1:8005/"
        ));
        assert!(!allows(
            &["http://127.0.0.1:8000..8010"],
            "http://127.0.0.1:8011/"
        ));
        assert!(allows(&["http://[::1]:*"], "http://[::1]:9/"));
        assert!(!allows(&[], "http://127.0.0.1:1/"));
    }

    #[test]
    fn bad_entries_are_errors() {
        for bad in [
            "127.0.0.1",
            "http://",
            "http://a*b",
            "http://x:notaport",
            "ftp://x",
            "http://10.0.0.0/8",
            "http://self",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
