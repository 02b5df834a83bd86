//! The one pooled HTTP client every request reaches its origin through.

use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RelayBody;

/// Idle connections are kept this long: long enough to carry a burst of traffic over, short
/// enough to be closed before most origins' and load balancers' own idle timeouts (60 s or more)
/// could close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The client type: plain TCP for `http://` origins, rustls for `https://` ones.
pub type Upstream = Client<HttpsConnector<HttpConnector>, RelayBody>;

/// Build the shared client. Shared so that connections to an origin are reused across requests
/// instead of paying a TCP (and TLS) handshake on every one.
pub fn build() -> Result<Upstream, String> {
    let mut tcp = HttpConnector::new();
    // The TLS layer decides the scheme; the TCP layer must accept `https://` URIs too.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let provider = rustls::crypto::ring::default_provider();
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(https))
}
