//! The gateway server: the host ([`portcullis_host`]) accepts connections; for each request the
//! core decides and finishes the exchange, and this carries it out.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use http::{header, Method, Request, Response, Uri};
use hyper::body::Incoming;
use portcullis_core::event::error_chain;
use portcullis_core::exchange;
use portcullis_core::{
    Answer, Capabilities, ConfigErrors, Event, Gateway, LogSink, MemoryStore, OriginResult,
    Outbound, Pending, Policy, PolicyRead, PolicyStore, Relay, SchemaCompilation, Step,
};
use portcullis_counters::{CounterOptions, Counters};
use portcullis_host::admin;
use portcullis_host::connections::OpenConnections;
use portcullis_host::options::Options;
use portcullis_host::relay_body::{OriginBody, RelayError};
use portcullis_host::reload::{self, Reloader};
use portcullis_host::{run_per_core, Handler};
use portcullis_upstream::{Failure, Upstreams};

use crate::body::{self, ClientBody, RelayBody, ResponseBody};
use crate::context::SystemClock;
use crate::fetch::HyperFetch;
use crate::log;
use crate::signature::Ring;
use crate::{context, fault, keys, policy_file};

pub use portcullis_host::listen::bind;
pub use portcullis_host::serve::{announce, close_after, run, start_connections, MAX_HEAD_BYTES};
pub use portcullis_host::Signals;

/// Everything a request needs. The gateway (with its key sets and token cache) and the quota
/// store are shared by every thread, so decisions and counts are the same whichever thread a
/// connection lands on; the origin connection pool is one per thread (see [`App::for_thread`]).
pub struct App {
    /// The live gateway: replaced whole by a reload, while requests that started on the one
    /// before finish on it.
    live: Arc<ArcSwap<Gateway>>,
    store: Arc<Counters>,
    upstream: Upstreams<RelayBody>,
    fetch: HyperFetch,
}

impl App {
    /// A gateway for `policy`, checking signatures with `ring`, with an empty quota store and a
    /// fresh connection pool, which key fetches share with requests to origins.
    pub fn new(policy: Policy) -> Result<Self, String> {
        let memory = Arc::new(Counters::Memory(MemoryStore::new()));
        let upstream = Upstreams::new()?;
        upstream.prepare(&policy).map_err(|e| e.to_string())?;
        let live = Arc::new(ArcSwap::new(Arc::new(gateway(policy))));
        App::sharing(live, memory, upstream)
    }

    /// The same gateway and quota store with a connection pool of its own, for one serving
    /// thread: a pooled origin connection then lives on the thread that uses it, and a request
    /// never waits on another thread to move its bytes.
    pub fn for_thread(&self) -> Result<Self, String> {
        let upstream = self.upstream.for_thread()?;
        App::sharing(Arc::clone(&self.live), Arc::clone(&self.store), upstream)
    }

    /// `gateway` and `store` with `upstream`'s pools, shared by origin requests and fetches.
    fn sharing(
        live: Arc<ArcSwap<Gateway>>,
        store: Arc<Counters>,
        upstream: Upstreams<RelayBody>,
    ) -> Result<Self, String> {
        let fetch = HyperFetch::new(upstream.public().clone());
        Ok(App {
            live,
            store,
            fetch,
            upstream,
        })
    }

    /// The live gateway.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.live.load_full()
    }

    /// The fetcher the core uses for key sets.
    pub fn fetch(&self) -> &HyperFetch {
        &self.fetch
    }
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
    let _in_flight = portcullis_metrics::enabled().map(|m| m.in_flight());
    let ctx = context::for_request(peer);
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let step = app
        .gateway()
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
                // The body was not read: see `close_after`.
                close_after(&mut response);
            }
            response
        }
        Step::Forward(outbound, pending) => relay(app, outbound, pending, &ctx.request_id).await,
    }
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
    let Outbound {
        request,
        timeout,
        tls,
    } = outbound;
    let (parts, body) = request.into_parts();
    let (body, upload) = body::to_origin(body);
    let request = Request::from_parts(parts, body);
    let result = match app.upstream.send(tls.as_ref(), request, timeout).await {
        Ok(response) => {
            let (mut parts, stream) = response.into_parts();
            OriginResult::Responded {
                status: parts.status.as_u16(),
                headers: std::mem::take(&mut parts.headers),
                body: (parts, stream),
            }
        }
        Err(Failure::TimedOut) => OriginResult::TimedOut,
        // The client's body broke off on the way, taking the exchange with it.
        Err(failure) if upload.broke() => OriginResult::ClientAborted {
            cause: failure.to_string(),
        },
        Err(failure) => OriginResult::Failed {
            cause: failure.to_string(),
        },
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

/// Run the gateway on `listen` with `policy` (the text of `file`) until SIGINT or SIGTERM,
/// holding connections as `settings` say, and reloading `file` on SIGHUP (and when it changes,
/// with `watch`). Returns only on shutdown or a start-up failure.
///
/// Remote key sets are fetched before the socket is bound, so that the readiness line means
/// tokens can be checked; a provider whose keys cannot be fetched is reported and does not stop
/// the gateway (see [`keys`]).
pub async fn serve(
    (file, text, policy): (PathBuf, String, Policy),
    watch: bool,
    (options, counters): (&Options, &CounterOptions),
) -> Result<(), String> {
    let (listen, admin) = (options.listen.as_str(), options.admin.as_deref());
    let connections = start_connections(options.settings()).with_tls(options.tls()?);
    if admin.is_some() {
        portcullis_metrics::enable();
    }
    let counters = Arc::new(Counters::open(counters).await?);
    let (app, _reloader) = reloading((file, text, policy), counters, watch)?;
    keys::load_and_report(&app.gateway(), app.fetch()).await;
    if admin.is_some_and(|a| a == listen && !a.ends_with(":0")) {
        return Err(format!("--admin must not be the public address {listen}"));
    }
    let pages = Pages(Arc::clone(&app), connections.open());
    let admin = admin.map(|addr| admin::spawn(addr, pages)).transpose()?;
    if let Some(admin) = &admin {
        let url = format!("http://{}", admin.addr);
        let message = format!("admin on {url}");
        portcullis_host::output::notice(false, "admin_listening", &message, &[("address", &url)]);
    }
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let signals = Signals::install();
    // Dropped, and so stopped, when the server returns.
    let _refresher = keys::spawn_refresher(Arc::clone(&app));
    fault::warn_if_compiled_in();
    announce(addr, connections.tls().is_some());
    run_per_core(listener, app, connections, signals.recv()).await
}

/// The gateway for `policy`, live in a policy store that every reload of `file` goes through: a
/// text that does not validate leaves the live policy in place (`policy_rejected`), a new one's
/// key sets are fetched before it goes live, and quota state carries over.
fn reloading(
    (file, text, policy): (PathBuf, String, Policy),
    counters: Arc<Counters>,
    watch: bool,
) -> Result<(Arc<App>, Reloader), String> {
    let name = file.display().to_string();
    let mut store = PolicyStore::new();
    let upstream = Upstreams::new()?;
    let first = store.apply(PolicyRead::Text(text), &name, context::now(), |_, _| {
        upstream.prepare(&policy).map(|()| gateway(policy))
    });
    first.events.iter().for_each(|e| log::Sink.event(e));
    let first = first.gateway.ok_or("the loaded policy was refused")?;
    let app = Arc::new(App::sharing(
        Arc::new(ArcSwap::new(first)),
        counters,
        upstream,
    )?);
    let (store, live) = (Arc::new(Mutex::new(store)), Arc::clone(&app));
    let reloader = reload::spawn(file, watch, move |read: Result<String, String>| {
        let (app, store, name) = (Arc::clone(&live), Arc::clone(&store), name.clone());
        async move {
            let read = read.map_or_else(PolicyRead::Failed, PolicyRead::Text);
            let applied = store
                .lock()
                .ok()?
                .apply(read, &name, context::now(), |text, schemas| {
                    compile(&app.upstream, text, schemas)
                });
            let gateway = applied.start(app.fetch(), &SystemClock, &log::Sink).await?;
            app.live.store(gateway);
            Some(())
        }
    })?;
    Ok((app, reloader))
}

/// The admin listener's pages: `/metrics` (Prometheus), `/healthz` (the process serves) and
/// `/readyz` (every provider with a remote key set has one; 503 naming those that do not).
struct Pages(Arc<App>, OpenConnections);

impl admin::Pages for Pages {
    async fn page(&self, path: &str) -> Option<admin::Page> {
        let metrics = portcullis_metrics::enable();
        Some(match path {
            "/metrics" => {
                metrics.open_connections(self.1.count());
                (200, portcullis_metrics::CONTENT_TYPE, metrics.encode())
            }
            "/healthz" => (200, admin::TEXT, "ok\n".to_owned()),
            "/readyz" => {
                let mut missing = self.0.gateway().unready(context::now()).await;
                missing.extend(self.0.store.ready().await.err());
                admin::readiness(&missing)
            }
            _ => return None,
        })
    }
}

/// The events of a policy file that `serve` refused to start with: `policy_rejected` with every
/// error and its pointer (or `policy_unavailable` when it cannot be read), as a reload would log.
pub fn log_refusal(file: &std::path::Path) {
    let name = file.display().to_string();
    let read = std::fs::read_to_string(file).map_or_else(
        |e| PolicyRead::Failed(format!("cannot read {name}: {e}")),
        PolicyRead::Text,
    );
    let Ok(upstream) = Upstreams::new() else {
        return;
    };
    let applied = PolicyStore::new().apply(read, &name, context::now(), |text, schemas| {
        compile(&upstream, text, schemas)
    });
    applied.events.iter().for_each(log::event);
}

/// The native runtime's compilation of a policy text: every field ([`Capabilities::NATIVE`]),
/// and the origins' TLS files read and checked, so a broken one refuses the policy.
fn compile(
    upstream: &Upstreams<RelayBody>,
    text: &str,
    schemas: SchemaCompilation,
) -> Result<Gateway, ConfigErrors> {
    let secrets = &policy_file::env_secret;
    let policy = Policy::from_json_on(text, secrets, schemas, Capabilities::NATIVE)?;
    upstream.prepare(&policy)?;
    Ok(gateway(policy))
}

/// A gateway for `policy` that checks signatures with `ring`.
fn gateway(policy: Policy) -> Gateway {
    Gateway::new(policy).with_verifier(Ring)
}
