//! The gateway server: accept connections, let the core decide each request, carry it out.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use portcullis_core::event::error_chain;
use portcullis_core::exchange;
use portcullis_core::{
    Answer, Gateway, MemoryStore, OriginResult, Outbound, Pending, Policy, Relay, Step,
};
use tokio::net::{TcpListener, TcpSocket};

use crate::body::{self, ClientBody, ResponseBody};
use crate::client::{self, Upstream};
use crate::connections::{Connections, Settings};
use crate::context::SystemClock;
use crate::fetch::HyperFetch;
use crate::log;
use crate::origin_body::OriginBody;
use crate::signature::Ring;
use crate::{context, fault, keys};

/// Largest request head (request line plus headers) accepted. Far above what browsers and API
/// clients send, far below what would let a few thousand slow clients pin much memory; larger
/// heads get hyper's 431 and the connection is closed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long in-flight requests get to finish after a shutdown signal before the process exits
/// anyway: a deploy should not wait on a client streaming a huge upload.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Everything a request needs. The gateway (with its key sets and token cache) and the quota
/// store are shared by every thread, so decisions and counts are the same whichever thread a
/// connection lands on; the origin connection pool is one per thread (see [`App::for_thread`]).
pub struct App {
    gateway: Arc<Gateway>,
    store: Arc<MemoryStore>,
    upstream: Upstream,
    fetch: HyperFetch,
}

impl App {
    /// A gateway for `policy`, checking signatures with `ring`, with an empty quota store and a
    /// fresh connection pool, which key fetches share with requests to origins.
    pub fn new(policy: Policy) -> Result<Self, String> {
        let gateway = Gateway::new(policy).with_verifier(Ring);
        App::sharing(Arc::new(gateway), Arc::new(MemoryStore::new()))
    }

    /// The same gateway and quota store with a connection pool of its own, for one serving
    /// thread: a pooled origin connection then lives on the thread that uses it, and a request
    /// never waits on another thread to move its bytes.
    pub fn for_thread(&self) -> Result<Self, String> {
        App::sharing(Arc::clone(&self.gateway), Arc::clone(&self.store))
    }

    /// `gateway` and `store` with a new connection pool, shared by origin requests and fetches.
    fn sharing(gateway: Arc<Gateway>, store: Arc<MemoryStore>) -> Result<Self, String> {
        let upstream = client::build()?;
        Ok(App {
            gateway,
            store,
            fetch: HyperFetch::new(upstream.clone()),
            upstream,
        })
    }

    /// The gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The fetcher the core uses for key sets.
    pub fn fetch(&self) -> &HyperFetch {
        &self.fetch
    }
}

/// How many connections the kernel may queue for the gateway to accept (capped by the kernel's
/// `net.core.somaxconn`). The standard library's 128 overflowed in bursts on a busy machine:
/// a client whose connection attempt finds the queue full waits a second or more to retry.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Bind `addr` (`HOST:PORT`; port 0 picks a free one), listening with [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await.map_err(fail)? {
        match listen_on(resolved) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the name resolves to no address",
        )
    })))
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As the standard library does on Unix: a restarted gateway can bind its port while
    // connections of the old one linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The readiness line. Printed only once the socket accepts connections, with the port actually
/// bound, so whoever started the gateway (a test runner, a supervisor) can wait for it.
pub fn announce(addr: SocketAddr) {
    eprintln!("portcullis: listening on http://{addr}");
}

/// Serve `listener` until `shutdown` completes, then let in-flight requests finish, for up to a
/// grace period or until another SIGINT or SIGTERM. Connections are held as `connections` says
/// (header timeout, cap; see [`crate::connections`]).
///
/// Requests are handled as tasks local to the calling thread: the core's futures need not be
/// `Send` (its traits are shared with WebAssembly runtimes), and a request stays on the thread
/// that accepted its connection anyway.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    tokio::task::LocalSet::new()
        .run_until(async {
            log::batch_this_thread();
            accept_loop(listener, app, connections, shutdown).await;
        })
        .await;
    log::unbatch_this_thread();
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) {
    let header_timeout = connections.header_timeout();
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
                eprintln!("portcullis: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = peer.ip().to_canonical();
        let app = Arc::clone(&app);
        let service = service_fn(move |request: Request<Incoming>| {
            let app = Arc::clone(&app);
            // For the log line should handling panic (cheap: the URI shares hyper's buffer).
            let (method, uri) = (request.method().clone(), request.uri().clone());
            // Its own task: hyper drops this future if the client's connection fails, but by
            // then the request may have been counted against a quota and reached the origin;
            // it still runs to the end and gets its log line.
            let task = tokio::task::spawn_local(async move { handle(&app, peer, request).await });
            async move {
                Ok::<_, Infallible>(
                    task.await
                        .unwrap_or_else(|failed| internal_error(peer, &method, &uri, failed)),
                )
            }
        });
        let (mut http, watcher) = (http.clone(), graceful.watcher());
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
            let left = header_timeout.saturating_sub(accepted.elapsed());
            http.header_read_timeout(left.max(Duration::from_millis(1)));
            let connection = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
            // Connection errors (a client hanging up mid-request, a header timeout) concern that
            // client only.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    // Installed only now, so that it waits for a signal after the one that began the shutdown.
    let again = Signals::install();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
        () = again.recv() => {}
    }
}

/// Serve `listener` as [`run`] does, on one accept loop per core, each on a single-threaded
/// runtime of its own thread (the model of nginx and HAProxy: a connection and its origin
/// connections stay on one thread, with no hand-offs between threads). The loops share the
/// listening socket, so the kernel spreads connections among them. Returns once every loop has
/// drained after `shutdown`.
pub async fn run_per_core(
    listener: TcpListener,
    app: Arc<App>,
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
        let app = Arc::new(app.for_thread()?);
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
                    run(listener, app, connections, shutdown).await;
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
                Ok(Err(why)) => eprintln!("portcullis: {why}"),
                Err(_) => eprintln!("portcullis: a serving thread panicked"),
            }
        }
    })
    .await
    .map_err(|e| format!("waiting for the serving threads: {e}"))
}

/// SIGINT and SIGTERM, listened for from the moment of [`Signals::install`].
///
/// Installed before the readiness line is printed: a supervisor that sends SIGTERM right after
/// seeing it must get a graceful shutdown, not the default disposition's abrupt exit.
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Start listening. Must run inside the tokio runtime. If the handlers cannot be installed
    /// the gateway still serves; it just cannot be shut down gracefully.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("portcullis: cannot listen for SIGINT/SIGTERM: {e}");
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves on the first SIGINT or SIGTERM since [`Signals::install`].
    pub async fn recv(self) {
        #[cfg(unix)]
        match self.streams {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One request, start to finish: the core decides and finishes it; this moves the bytes.
async fn handle(app: &App, peer: IpAddr, request: Request<Incoming>) -> Response<ResponseBody> {
    fault::inject(request.headers());
    let ctx = context::for_request(peer);
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let step = app
        .gateway
        .exchange(
            request.map(ClientBody),
            &ctx,
            &app.store,
            &app.fetch,
            &SystemClock,
        )
        .await;
    match step {
        Step::Answer(answer) => {
            let mut response = answered(answer);
            if chunked {
                end_connection_after(&mut response);
            }
            response
        }
        Step::Forward(outbound, pending) => relay(app, outbound, pending, &ctx.request_id).await,
    }
}

/// Close the client's connection once `response` is sent.
///
/// For the gateway's own answers to requests framed by `Transfer-Encoding`: their body was not
/// read, and on a kept connection hyper would skip it by its own reading of the framing and take
/// whatever follows as the next request. When the core refused that framing as ambiguous
/// (`identity, chunked`, a repeated `chunked`), a proxy in front may place the end of the body
/// elsewhere, and the bytes after it are a smuggled request; RFC 9112 §6.3 has a server that
/// cannot trust the framing close the connection. Refusals of well-framed chunked requests
/// close it too: it costs such a client a new connection, and needs no second reading of the
/// core's reasons here.
fn end_connection_after(response: &mut Response<ResponseBody>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Send the outbound request and relay the origin's answer, streaming its body.
///
/// The origin's `timeout` bounds the wait for the response head (past it, the core's 504) and
/// then each wait for more of the body ([`OriginBody`]: past it, the client's connection is
/// closed).
async fn relay(
    app: &App,
    outbound: Outbound<ClientBody>,
    pending: Pending,
    request_id: &str,
) -> Response<ResponseBody> {
    let Outbound { request, timeout } = outbound;
    let (parts, body) = request.into_parts();
    let (body, upload) = body::to_origin(body);
    let request = Request::from_parts(parts, body);
    let sent = tokio::time::timeout(timeout, app.upstream.request(request)).await;
    let result = match sent {
        Ok(Ok(response)) => {
            let (mut parts, stream) = response.into_parts();
            OriginResult::Responded {
                status: parts.status.as_u16(),
                headers: std::mem::take(&mut parts.headers),
                body: (parts, stream),
            }
        }
        // The client's body broke off on the way, taking the exchange with it.
        Ok(Err(error)) if upload.broke() => OriginResult::ClientAborted {
            cause: error_chain(&error),
        },
        Ok(Err(error)) => OriginResult::Failed {
            cause: error_chain(&error),
        },
        Err(_) => OriginResult::TimedOut,
    };
    match pending.finish(result, &SystemClock) {
        Relay::Origin {
            headers,
            body: (mut parts, stream),
            record,
            ..
        } => {
            record.write_to(&log::Sink);
            parts.headers = headers;
            let body = OriginBody::new(stream, timeout, request_id);
            Response::from_parts(parts, ResponseBody::Left(body))
        }
        Relay::Answer(answer) => answered(answer),
    }
}

fn answered(answer: Answer) -> Response<ResponseBody> {
    answer.record.write_to(&log::Sink);
    answer.response.map(body::full)
}

/// The answer when handling a request panicked: a bug, and the client still gets a problem,
/// logged with the request's method and path and an event naming the panic's message.
fn internal_error(
    peer: IpAddr,
    method: &http::Method,
    uri: &http::Uri,
    failed: tokio::task::JoinError,
) -> Response<ResponseBody> {
    let cause = match failed.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "handling panicked".to_owned()),
        Err(other) => other.to_string(),
    };
    let ctx = context::for_request(peer);
    answered(exchange::internal_error(
        &ctx,
        method.as_str(),
        uri.path(),
        &cause,
        &SystemClock,
    ))
}

/// Run the gateway on `listen` with `policy` until SIGINT or SIGTERM, holding connections as
/// `settings` say. Returns only on shutdown or a start-up failure.
///
/// Remote key sets are fetched before the socket is bound, so that the readiness line means
/// tokens can be checked; a provider whose keys cannot be fetched is reported and does not stop
/// the gateway (see [`keys`]).
pub async fn serve(policy: Policy, listen: &str, settings: Settings) -> Result<(), String> {
    let connections = start_connections(settings);
    let app = Arc::new(App::new(policy)?);
    keys::load_and_report(app.gateway(), app.fetch()).await;
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let signals = Signals::install();
    // Dropped, and so stopped, when the server returns.
    let _refresher = keys::spawn_refresher(Arc::clone(&app));
    fault::warn_if_compiled_in();
    announce(addr);
    run_per_core(listener, app, connections, signals.recv()).await
}

/// The connection settings in force (see [`Connections::start`]), with a start-up line when
/// they differ from what was asked.
pub fn start_connections(settings: Settings) -> Connections {
    let (connections, note) = Connections::start(settings);
    if let Some(note) = note {
        eprintln!("portcullis: {note}");
    }
    connections
}
