//! The admin listener: a second HTTP/1 socket, never the public one, for what operators and
//! their tools ask of the process (metrics, liveness, readiness). Which pages exist and what they
//! say is the handler's ([`Pages`]); this serves them, `GET` only, on a thread of its own with a
//! single-threaded runtime, so a scrape never takes a serving thread's time and the handler's
//! futures need not be `Send`.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::oneshot;

/// How long an admin client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// One page: status, `Content-Type`, body.
pub type Page = (u16, &'static str, String);

/// The `Content-Type` of the plain pages.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// `/readyz`: 200 `ready` when nothing is `missing`, else 503 with one line per missing thing,
/// so a probe's log says what the process waits for.
pub fn readiness(missing: &[String]) -> Page {
    match missing {
        [] => (200, TEXT, "ready\n".to_owned()),
        _ => (503, TEXT, format!("{}\n", missing.join("\n"))),
    }
}

/// The admin pages.
pub trait Pages: Send + 'static {
    /// The answer to `GET path` (without the query); `None` for a path that is no page (404).
    fn page(&self, path: &str) -> impl Future<Output = Option<Page>>;
}

/// The admin listener, stopped when this is dropped.
#[derive(Debug)]
pub struct Admin {
    /// The address it listens on (with the port actually bound).
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Listen on `addr` and serve `pages` until the returned [`Admin`] is dropped. Bound before this
/// returns, so the address can be announced and scraped at once.
pub fn spawn<P: Pages>(addr: &str, pages: P) -> Result<Admin, String> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} for the admin listener: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the admin listener's address: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up the admin listener: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the admin listener's runtime: {e}"))?;
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("portcullis-admin".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    crate::output::notice(
                        true,
                        "admin_failed",
                        "the admin listener could not start",
                        &[],
                    );
                    return;
                };
                tokio::select! {
                    _ = stopped => {}
                    () = accept(listener, Rc::new(pages)) => {}
                }
            });
        })
        .map_err(|e| format!("cannot start the admin listener's thread: {e}"))?;
    Ok(Admin {
        addr: bound,
        _stop: stop,
    })
}

async fn accept<P: Pages>(listener: tokio::net::TcpListener, pages: Rc<P>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let pages = Rc::clone(&pages);
        let service = service_fn(move |request: Request<Incoming>| {
            let pages = Rc::clone(&pages);
            async move { Ok::<_, std::convert::Infallible>(answer(&*pages, request).await) }
        });
        let http = http.clone();
        tokio::task::spawn_local(async move {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer<P: Pages>(pages: &P, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.method() != Method::GET {
        (405, "text/plain; charset=utf-8", "only GET\n".to_owned())
    } else {
        match pages.page(request.uri().path()).await {
            Some(page) => page,
            None => (
                404,
                "text/plain; charset=utf-8",
                "no such page\n".to_owned(),
            ),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == 405 {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    response
}
