//! The gateway server: the host ([`portcullis_host`]) accepts connections; for each request the
//! core decides and finishes the exchange, and this carries it out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, Uri};
use hyper::body::Incoming;
use portcullis_core::event::error_chain;
use portcullis_core::exchange;
use portcullis_core::{
    Answer, Event, Gateway, MemoryStore, OriginResult, Outbound, Pending, Policy, Relay, Step,
};
use portcullis_host::relay_body::{OriginBody, RelayError};
use portcullis_host::{run_per_core, Connections, Handler, Settings};

use crate::body::{self, ClientBody, ResponseBody};
use crate::client::{self, Upstream};
use crate::context::SystemClock;
use crate::fetch::HyperFetch;
use crate::log;
use crate::signature::Ring;
use crate::{context, fault, keys};

pub use portcullis_host::listen::bind;
pub use portcullis_host::serve::{run, MAX_HEAD_BYTES};
pub use portcullis_host::Signals;

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

/// The readiness line. Printed only once the socket accepts connections, with the port actually
/// bound, so whoever started the gateway (a test runner, a supervisor) can wait for it.
pub fn announce(addr: SocketAddr) {
    eprintln!("portcullis: listening on http://{addr}");
}

impl Handler for App {
    type Body = ResponseBody;

    async fn handle(
        self: Arc<Self>,
        peer: IpAddr,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        handle(&self, peer, request).await
    }

    /// Logged with the request's method and path and an event naming the panic's message.
    fn panicked(
        &self,
        peer: IpAddr,
        method: &Method,
        uri: &Uri,
        cause: &str,
    ) -> Response<ResponseBody> {
        let ctx = context::for_request(peer);
        answered(exchange::internal_error(
            &ctx,
            method.as_str(),
            uri.path(),
            cause,
            &SystemClock,
        ))
    }

    fn for_thread(&self) -> Result<Self, String> {
        App::for_thread(self)
    }

    fn thread_started(&self) {
        log::batch_this_thread();
    }

    fn thread_stopped(&self) {
        log::unbatch_this_thread();
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
            let request_id = request_id.to_owned();
            let on_break = Box::new(move |error: &RelayError, relayed: u64| {
                let stalled = matches!(error, RelayError::Stalled(_));
                log::event(&Event::origin_relay_broken(
                    context::now(),
                    &request_id,
                    stalled,
                    relayed,
                    &error_chain(error),
                ));
            });
            let body = OriginBody::new(stream, timeout, on_break);
            Response::from_parts(parts, ResponseBody::Left(body))
        }
        Relay::Answer(answer) => answered(answer),
    }
}

fn answered(answer: Answer) -> Response<ResponseBody> {
    answer.record.write_to(&log::Sink);
    answer.response.map(body::full)
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
