//! Serving: one accept loop per core, each request handed to a [`Handler`] as a task of its own.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::connections::{Connections, Settings};
use crate::signals::Signals;

/// Largest request head (request line plus headers) accepted. Far above what browsers and API
/// clients send, far below what would let a few thousand slow clients pin much memory; larger
/// heads get hyper's 431 and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the host serves: one response for every request, never an error.
pub trait Handler: Send + Sync + Sized + 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error: Into<Box<dyn Error + Send + Sync>>> + 'static;

    /// Answer `request`, which came from `peer`. Runs as a task of its own, so it runs to its
    /// end even when the client's connection fails meanwhile.
    fn handle(
        self: Arc<Self>,
        peer: IpAddr,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + 'static;

    /// The answer when [`Handler::handle`] panicked with `cause`: a bug, and the client must
    /// still get an answer.
    fn panicked(
        &self,
        peer: IpAddr,
        method: &Method,
        uri: &Uri,
        cause: &str,
    ) -> Response<Self::Body>;

    /// The handler for one more serving thread (which may want resources of its own, such as
    /// a connection pool).
    fn for_thread(&self) -> Result<Self, String>;

    /// Called on a serving thread before it serves and after it stops.
    fn thread_started(&self) {}
    /// See [`Handler::thread_started`].
    fn thread_stopped(&self) {}
}

/// Serve `listener` until `shutdown` completes, then let in-flight requests finish, for up to a
/// grace period or until another SIGINT or SIGTERM. Connections are held as `connections` says
/// (header timeout, cap; see [`crate::connections`]).
///
/// Requests are handled as tasks local to the calling thread: the handler's futures need not be
/// `Send` (Portcullis's core shares its traits with WebAssembly runtimes), and a request stays
/// on the thread that accepted its connection anyway.
pub async fn run<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    handler.thread_started();
    tokio::task::LocalSet::new()
        .run_until(accept_loop(
            listener,
            Arc::clone(&handler),
            connections,
            shutdown,
        ))
        .await;
    handler.thread_stopped();
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    let (header_timeout, drain) = (connections.header_timeout(), connections.drain());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .max_header_size(MAX_HEAD_BYTES)
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting until a connection closes: new ones wait in the kernel's
        // listen queue.
        let slot = tokio::select! {
            slot = connections.slot() => slot,
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning on the error.
                crate::output::notice(true, "accept_failed", &format!("accept failed: {e}"), &[]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let opened = connections.opened();
        let _ = stream.set_nodelay(true);
        let peer = peer.ip().to_canonical();
        let handler = Arc::clone(&handler);
        let service = service_fn(move |mut request: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            authority_as_host(&mut request);
            // For the answer should handling panic (cheap: the URI shares hyper's buffer).
            let (method, uri) = (request.method().clone(), request.uri().clone());
            // A response to HEAD has no body (RFC 9110 §9.3.2), whatever the handler built:
            // HTTP/1 drops one itself, while sending one over HTTP/2 is a protocol error.
            let head = method == Method::HEAD;
            // Its own task: hyper drops this future if the client's connection fails, but by
            // then the request may have had effects (a quota counted, an origin reached); it
            // still runs to the end.
            let task = tokio::task::spawn_local(Arc::clone(&handler).handle(peer, request));
            async move {
                let response = task.await.unwrap_or_else(|failed| {
                    handler.panicked(peer, &method, &uri, &panic_cause(failed))
                });
                Ok::<_, Infallible>(match head {
                    false => response.map(Either::Left),
                    true => response.map(|_| Either::Right(Empty::new())),
                })
            }
        });
        let (mut http, watcher) = (http.clone(), graceful.watcher());
        let tls = connections.tls().cloned();
        tokio::task::spawn_local(async move {
            // Nothing of hyper's (two 8 KiB buffers and its state) exists for a connection
            // until its first byte arrives (peeked, so hyper still reads it), so a flood of
            // connections that send nothing costs a small task each. The header timeout counts
            // from the accept: the first head gets what is left of it.
            let accepted = tokio::time::Instant::now();
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let left = |started: tokio::time::Instant| {
                let left = header_timeout.saturating_sub(started.elapsed());
                left.max(Duration::from_millis(1))
            };
            // Connection errors (a client hanging up mid-request, a header timeout, a failed
            // handshake) concern that client only.
            match tls {
                None => {
                    http.header_read_timeout(left(accepted));
                    let io = TokioIo::new(stream);
                    let _ = watcher.watch(http.serve_connection(io, service)).await;
                }
                Some(tls) => {
                    // The handshake comes out of the head's time, as a slow head would.
                    let left = left(accepted);
                    let io = (stream, left);
                    // Boxed: a plain connection's task must not carry TLS and HTTP/2 state.
                    Box::pin(serve_tls(tls, io, http, service, watcher)).await;
                }
            }
            drop((slot, opened));
        });
    }
    drop(listener);
    // Installed only now, so that it waits for a signal after the one that began the shutdown.
    let again = Signals::install();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => {}
        () = again.recv() => {}
    }
}

/// Serve one TLS connection whose handshake must end within `left`: HTTP/2 when ALPN chose
/// it, HTTP/1.1 otherwise (its head within what is left then).
async fn serve_tls<S>(
    tls: crate::tls::Tls,
    (stream, left): (tokio::net::TcpStream, Duration),
    mut http: http1::Builder,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: hyper::service::HttpService<Incoming> + Clone + 'static,
    S::Future: 'static,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let started = tokio::time::Instant::now();
    let handshake = tls.acceptor().accept(stream);
    let Ok(Ok(stream)) = tokio::time::timeout(left, handshake).await else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::H2);
    let io = TokioIo::new(stream);
    if h2 {
        let mut h2 = http2::Builder::new(LocalExec);
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        let _ = watcher.watch(h2.serve_connection(io, service)).await;
    } else {
        let left = left.saturating_sub(started.elapsed());
        http.header_read_timeout(left.max(Duration::from_millis(1)));
        let _ = watcher.watch(http.serve_connection(io, service)).await;
    }
}

/// Runs HTTP/2's per-stream tasks on the serving thread, as requests are (they need not be
/// `Send`).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// An HTTP/2 request names its host in `:authority` (RFC 9113 §8.3.1), which stands for `Host`:
/// give it one, so the handler reads every request's host the same way. A request that carries
/// both keeps its own `Host`.
fn authority_as_host<B>(request: &mut Request<B>) {
    if request.headers().contains_key(http::header::HOST) {
        return;
    }
    let host = request.uri().authority().map(|a| a.as_str().to_owned());
    if let Some(Ok(host)) = host.map(|h| http::HeaderValue::from_str(&h)) {
        request.headers_mut().insert(http::header::HOST, host);
    }
}

/// What a handling task that did not finish died of.
fn panic_cause(failed: tokio::task::JoinError) -> String {
    match failed.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "handling panicked".to_owned()),
        Err(other) => other.to_string(),
    }
}

/// Serve `listener` as [`run`] does, on one accept loop per core, each on a single-threaded
/// runtime of its own thread (the model of nginx and HAProxy: a connection and its origin
/// connections stay on one thread, with no hand-offs between threads). The loops share the
/// listening socket, so the kernel spreads connections among them. Returns once every loop has
/// drained after `shutdown`.
pub async fn run_per_core<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let listener = listener
        .into_std()
        .map_err(|e| format!("cannot hand the listener to the serving threads: {e}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut loops = Vec::with_capacity(threads);
    for index in 0..threads {
        let listener = listener
            .try_clone()
            .map_err(|e| format!("cannot share the listener: {e}"))?;
        let handler = Arc::new(handler.for_thread()?);
        let connections = connections.clone();
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("portcullis-serve-{index}"))
            .spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a serving runtime: {e}"))?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)
                        .map_err(|e| format!("cannot register the listener: {e}"))?;
                    let shutdown = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    run(listener, handler, connections, shutdown).await;
                    Ok(())
                })
            })
            .map_err(|e| format!("cannot start a serving thread: {e}"))?;
        loops.push(thread);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    tokio::task::spawn_blocking(move || {
        for thread in loops {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(why)) => crate::output::notice(true, "serving_thread_failed", &why, &[]),
                Err(_) => crate::output::notice(
                    true,
                    "serving_thread_failed",
                    "a serving thread panicked",
                    &[],
                ),
            }
        }
    })
    .await
    .map_err(|e| format!("waiting for the serving threads: {e}"))
}

/// The readiness line. Printed only once the socket accepts connections, with the port actually
/// bound, so whoever started the gateway (a test runner, a supervisor) can wait for it.
pub fn announce(addr: SocketAddr, tls: bool) {
    let url = format!("{}://{addr}", if tls { "https" } else { "http" });
    let message = format!("listening on {url}");
    crate::output::notice(false, "listening", &message, &[("address", &url)]);
}

/// The connection settings in force (see [`Connections::start`]), with a start-up line when
/// they differ from what was asked.
pub fn start_connections(settings: Settings) -> Connections {
    let (connections, note) = Connections::start(settings);
    if let Some(note) = note {
        crate::output::notice(true, "connections_limited", &note, &[]);
    }
    connections
}

/// Close the client's connection once `response` is sent.
///
/// For answers to requests framed by `Transfer-Encoding` whose body was not read: on a kept
/// connection hyper would skip the body by its own reading of the framing and take whatever
/// follows as the next request. When that framing was refused as ambiguous (`identity, chunked`,
/// a repeated `chunked`), a proxy in front may place the end of the body elsewhere, and the bytes
/// after it are a smuggled request; RFC 9112 §6.3 has a server that cannot trust the framing
/// close the connection. Refusals of well-framed chunked requests close it too: it costs such a
/// client a new connection, and needs no second reading of the refusal's reasons.
pub fn close_after<B>(response: &mut http::Response<B>) {
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
}
