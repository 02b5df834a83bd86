//! The inbound side, following what `spin up` (3.x) does for a `wasi:http/incoming-handler`
//! component:
//!
//! - HTTP/1.1 on hyper's defaults (this host has no HTTP/2).
//! - `/.well-known/spin/health` answers `OK`; other `/.well-known/spin/` paths and paths no
//!   route matches answer an empty 404 without running any component.
//! - The `Connection` header is removed. The request URI is made absolute from the `Host`
//!   header; a `Host` that is not valid UTF-8, not a valid authority, or that disagrees with an
//!   absolute-form target makes the request fail without a response (hyper closes the
//!   connection), as in Spin.
//! - The component sees the client's headers followed by the ones Spin adds: `spin-path-info`,
//!   `spin-full-url`, `spin-matched-route`, `spin-base-path`, `spin-raw-component-route`,
//!   `spin-component-route` and `spin-client-addr` (the TCP peer, `IP:port`). Like Spin, these are
//!   appended: a client that sends its own `spin-client-addr` is not stopped, so the value Spin
//!   set is the LAST one. A header value that is not UTF-8 makes Spin answer an empty 500 without
//!   running the component; so does this host.
//! - Every request gets a new instance (Spin does not reuse `wasi:http` 0.2 instances). If the
//!   component traps or never sets a response, the client gets an empty 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime::Store;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::host::{ComponentConfig, HostState};
use crate::manifest::App;

/// Paths Spin answers itself.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// A component ready to instantiate.
pub struct Prepared {
    /// The pre-linked component.
    pub pre: ProxyPre<HostState>,
    /// What its instances share.
    pub config: Arc<ComponentConfig>,
}

/// Everything a request needs.
pub struct Server {
    /// The manifest (for routes).
    pub app: App,
    /// Prepared components by id.
    pub components: std::collections::BTreeMap<String, Arc<Prepared>>,
    /// Print one timing line per request on stderr (`PORTCULLIS_SPIN_HOST_TIMINGS=1`).
    pub timings: bool,
}

fn body(bytes: &'static [u8]) -> HyperOutgoingBody {
    Full::new(Bytes::from_static(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn status(code: StatusCode, text: &'static [u8]) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(body(text));
    *response.status_mut() = code;
    response
}

impl Server {
    /// Serve HTTP/1.1 connections from `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("portcullis-spin-host: accept failed: {e}");
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { server.handle(req, peer).await }
                });
                // Errors here are clients going away or malformed HTTP: hyper has answered
                // (400/431) or closed the connection already.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// One request. An `Err` makes hyper close the connection without a response.
    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> anyhow::Result<Response<HyperOutgoingBody>> {
        req.headers_mut().remove(http::header::CONNECTION);
        let path = req.uri().path().to_owned();
        if let Some(which) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return Ok(match which {
                "health" => status(StatusCode::OK, b"OK"),
                _ => status(StatusCode::NOT_FOUND, b""),
            });
        }
        let Some((route, path_info)) = self.app.route(&path) else {
            return Ok(status(StatusCode::NOT_FOUND, b""));
        };
        let prepared = self
            .components
            .get(&route.component)
            .ok_or_else(|| anyhow!("no prepared component {:?}", route.component))?
            .clone();
        absolutize_uri(&mut req)?;
        let Ok(headers) = spin_headers(&req, route, path_info, peer) else {
            warn!("portcullis-spin-host: request header value is not UTF-8; answering 500 as Spin does");
            return Ok(status(StatusCode::INTERNAL_SERVER_ERROR, b""));
        };
        *req.headers_mut() = headers;
        match self.run(prepared, req).await {
            Ok(response) => Ok(response),
            Err(e) => {
                warn!("portcullis-spin-host: error processing request: {e:#}");
                Ok(status(StatusCode::INTERNAL_SERVER_ERROR, b""))
            }
        }
    }

    /// Instantiate the component and call `wasi:http/incoming-handler.handle`.
    async fn run(
        &self,
        prepared: Arc<Prepared>,
        req: Request<Incoming>,
    ) -> anyhow::Result<Response<HyperOutgoingBody>> {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let mut store = Store::new(
            prepared.pre.engine(),
            HostState::new(prepared.config.clone()),
        );
        let waited = store.data().outbound_waited();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| anyhow!("{e:#}"))?;
        let outparam = store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| anyhow!("{e:#}"))?;
        let (inst_tx, inst_rx) = std::sync::mpsc::channel();
        let task = tokio::spawn(async move {
            let t = Instant::now();
            let proxy = prepared.pre.instantiate_async(&mut store).await?;
            let _ = inst_tx.send(t.elapsed());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        });
        match rx.await {
            Ok(Ok(response)) => {
                if self.timings {
                    let total = started.elapsed().as_micros();
                    let inst = inst_rx.try_recv().map(|d| d.as_micros()).unwrap_or(0);
                    warn!(
                        "spin-host-timing {{\"path\":{path:?},\"status\":{},\"instantiate_us\":{inst},\"head_us\":{total},\"outbound_us\":{}}}",
                        response.status().as_u16(),
                        waited.load(Ordering::Relaxed)
                    );
                }
                // The handler may still be streaming the body: report a later failure, if any.
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!(
                            "portcullis-spin-host: component error after the response started: {e:#}"
                        ),
                        Err(e) => warn!("portcullis-spin-host: handler task failed: {e}"),
                    }
                });
                Ok(response)
            }
            Ok(Err(code)) => bail!("guest failed to produce a response: {code:?}"),
            Err(_) => {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(anyhow!("guest invocation failed: {e:?}")),
                    Err(e) => return Err(anyhow!("handler task failed: {e}")),
                }
                bail!("guest failed to produce a response prior to returning")
            }
        }
    }
}

/// Give the request URI Spin's scheme (`http`) and the authority from `Host` (or from an
/// absolute-form target, which must then agree with `Host`).
fn absolutize_uri<B>(req: &mut Request<B>) -> anyhow::Result<()> {
    let from_header = match req.headers().get(http::header::HOST) {
        None => None,
        Some(h) => Some(
            h.to_str()
                .context("'Host' header is not valid UTF-8")?
                .parse::<http::uri::Authority>()
                .context("'Host' header contains an invalid authority")?,
        ),
    };
    let mut parts = req.uri().clone().into_parts();
    let authority = match (from_header, parts.authority.take()) {
        (None, None) => bail!("no 'Host' header present in request"),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) if a == b => a,
        (Some(_), Some(_)) => bail!("authority in 'Host' header does not match authority in URI"),
    };
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = http::Uri::from_parts(parts).context("rebuilding the request URI")?;
    Ok(())
}

/// The headers the component sees: the client's (in order), then Spin's. `Err` if a client
/// header value is not UTF-8.
fn spin_headers<B>(
    req: &Request<B>,
    route: &crate::manifest::Route,
    path_info: &str,
    peer: SocketAddr,
) -> Result<HeaderMap, std::str::Utf8Error> {
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        std::str::from_utf8(value.as_bytes())?;
        headers.append(name.clone(), value.clone());
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let component_route = if route.wildcard {
        route.prefix.as_str()
    } else {
        route.raw.as_str()
    };
    let added = [
        ("spin-path-info", path_info.to_owned()),
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-matched-route", route.raw.clone()),
        ("spin-base-path", "/".to_owned()),
        ("spin-raw-component-route", route.raw.clone()),
        ("spin-component-route", component_route.to_owned()),
        ("spin-client-addr", peer.to_string()),
    ];
    for (name, value) in added {
        // Values built from a valid request; one that still fails is dropped, as Spin does.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(raw: &str) -> crate::manifest::Route {
        let app = crate::manifest::parse(
            &format!(
                "spin_manifest_version = 2\n[application]\nname = \"t\"\n[[trigger.http]]\nroute = \"{raw}\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n"
            ),
            std::path::Path::new("/"),
        )
        .expect("manifest");
        app.routes[0].clone()
    }

    #[test]
    fn adds_spin_headers_after_the_clients() {
        let mut req = Request::builder()
            .uri("/a/b?x=1")
            .header("host", "gw.test:8080")
            .header("spin-client-addr", "6.6.6.6:1")
            .body(())
            .expect("request");
        absolutize_uri(&mut req).expect("uri");
        assert_eq!(req.uri().to_string(), "http://gw.test:8080/a/b?x=1");
        let peer: SocketAddr = "127.0.0.1:5555".parse().expect("addr");
        let h = spin_headers(&req, &route("/..."), "/a/b", peer).expect("utf-8");
        let addrs: Vec<_> = h.get_all("spin-client-addr").iter().collect();
        assert_eq!(
            addrs,
            ["6.6.6.6:1", "127.0.0.1:5555"],
            "Spin appends its own last"
        );
        assert_eq!(h["spin-full-url"], "http://gw.test:8080/a/b?x=1");
        assert_eq!(h["spin-path-info"], "/a/b");
        assert_eq!(h["spin-matched-route"], "/...");
        assert_eq!(h["spin-component-route"], "");
        assert_eq!(h["spin-base-path"], "/");
    }

    #[test]
    fn refuses_bad_hosts_and_non_utf8_values() {
        let mut req = Request::builder().uri("/").body(()).expect("request");
        assert!(absolutize_uri(&mut req).is_err(), "no Host");
        let mut req = Request::builder()
            .uri("http://a.test/")
            .header("host", "b.test")
            .body(())
            .expect("request");
        assert!(absolutize_uri(&mut req).is_err(), "disagreeing Host");
        let req = Request::builder()
            .uri("http://a.test/")
            .header("x", HeaderValue::from_bytes(b"\xff").expect("value"))
            .body(())
            .expect("request");
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(spin_headers(&req, &route("/..."), "/", peer).is_err());
    }
}
