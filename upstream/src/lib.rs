//! The native gateway's origin client.
//!
//! Every origin without `tls` shares one pooled client that trusts the public roots. An origin
//! with `tls` (a private CA, a client certificate for mutual TLS, a name to verify) gets a client
//! of its own, built when the policy loads: its files are read then, so a missing file or a key
//! that does not parse refuses the policy with the field's pointer, like any other problem, and
//! never turns into a 502 on the first request. Clients are kept by their settings, so a reload
//! that leaves an origin's `tls` alone keeps its pooled connections, and a request decided under
//! the previous policy still finds the client its origin needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Body;
use hyper_rustls::{
    ConfigBuilderExt, FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_core::{ConfigError, ConfigErrorKind, ConfigErrors, OriginTls, Policy};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Idle connections are kept this long: long enough to carry a burst of traffic over, short
/// enough to be closed before most origins' and load balancers' own idle timeouts (60 s or more)
/// could close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A pooled client: plain TCP for `http://` origins, rustls for `https://` ones.
pub type Client<B> = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, B>;

/// One serving thread's clients for every origin the gateway has loaded a policy for.
///
/// Pools are per thread ([`Upstreams::for_thread`]), so a pooled connection lives on the thread
/// that uses it; the validated TLS settings are shared, so a policy prepared once is ready on
/// every thread.
pub struct Upstreams<B> {
    public: Client<B>,
    /// Every origin `tls` of every policy prepared so far, validated, by its settings.
    connectors: Arc<Mutex<HashMap<Arc<OriginTls>, HttpsConnector<HttpConnector>>>>,
    /// This thread's pools for them, made on first use.
    private: Mutex<HashMap<Arc<OriginTls>, Client<B>>>,
}

impl<B> Upstreams<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The shared client for the public roots; origins with `tls` are added by
    /// [`Upstreams::prepare`].
    pub fn new() -> Result<Self, String> {
        Ok(Upstreams {
            public: public()?,
            connectors: Arc::default(),
            private: Mutex::default(),
        })
    }

    /// Clients for another serving thread: pools of its own, the same prepared settings.
    pub fn for_thread(&self) -> Result<Self, String> {
        Ok(Upstreams {
            public: public()?,
            connectors: Arc::clone(&self.connectors),
            private: Mutex::default(),
        })
    }

    /// The client that trusts the public roots (origins without `tls`, and key-set fetches).
    pub fn public(&self) -> &Client<B> {
        &self.public
    }

    /// Read and check the `tls` of every origin of `policy` not seen before. Every file that
    /// cannot be read or does not hold what it should is a problem at its field's pointer, and
    /// then nothing is kept.
    pub fn prepare(&self, policy: &Policy) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut built = Vec::new();
        for origin in policy.origins() {
            let Some(tls) = &origin.tls else { continue };
            let known = self.connectors.lock().map(|m| m.contains_key(tls));
            if known.unwrap_or(false) {
                continue;
            }
            match connector(tls) {
                Ok(connector) => built.push((Arc::clone(tls), connector)),
                Err((field, why)) => errors.push(ConfigError {
                    pointer: format!("/origins/{}/tls/{field}", origin.name),
                    kind: ConfigErrorKind::Invalid(why.into()),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        if let Ok(mut connectors) = self.connectors.lock() {
            connectors.extend(built);
        }
        Ok(())
    }

    /// The client for an origin with these `tls` settings; `None` when they were never prepared
    /// (the request then fails as unreachable: never sent with weaker settings).
    pub fn for_origin(&self, tls: Option<&Arc<OriginTls>>) -> Option<Client<B>> {
        let Some(tls) = tls else {
            return Some(self.public.clone());
        };
        let mut private = self.private.lock().ok()?;
        if let Some(client) = private.get(tls) {
            return Some(client.clone());
        }
        let connector = self.connectors.lock().ok()?.get(tls)?.clone();
        let client = pooled(connector);
        private.insert(Arc::clone(tls), client.clone());
        Some(client)
    }
}

/// Why a request reached no response head.
#[derive(Debug)]
pub enum Failure {
    /// No head within the origin's timeout.
    TimedOut,
    /// The origin's `tls` was never prepared, so it has no client (nothing was sent).
    Unprepared,
    /// Connecting, the TLS handshake or the exchange failed.
    Failed(hyper_util::client::legacy::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("no response head within the origin's timeout"),
            Failure::Unprepared => f.write_str("no client was prepared for this origin's tls"),
            Failure::Failed(e) => f.write_str(&portcullis_core::event::error_chain(e)),
        }
    }
}

impl<B> Upstreams<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Send `request` to an origin with these `tls` settings, waiting at most `timeout` for the
    /// response head.
    pub async fn send(
        &self,
        tls: Option<&Arc<OriginTls>>,
        request: http::Request<B>,
        timeout: Duration,
    ) -> Result<http::Response<hyper::body::Incoming>, Failure> {
        let client = self.for_origin(tls).ok_or(Failure::Unprepared)?;
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(sent) => sent.map_err(Failure::Failed),
            Err(_) => Err(Failure::TimedOut),
        }
    }
}

fn public<B>() -> Result<Client<B>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let provider = rustls::crypto::ring::default_provider();
    let config = ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_webpki_roots()
        .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp());
    Ok(pooled(https))
}

fn tcp() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    // The TLS layer decides the scheme; the TCP layer must accept `https://` URIs too.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp
}

fn pooled<B>(https: HttpsConnector<HttpConnector>) -> Client<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// The connector for `tls`, or the field that is wrong and why.
fn connector(tls: &OriginTls) -> Result<HttpsConnector<HttpConnector>, (&'static str, String)> {
    let OriginTls {
        ca_file,
        client_cert,
        server_name,
    } = tls;
    let provider = rustls::crypto::ring::default_provider();
    let builder = ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("", format!("TLS setup failed: {e}")))?;
    let builder = match ca_file {
        Some(file) => builder.with_root_certificates(roots(file).map_err(|e| ("ca_file", e))?),
        None => builder.with_webpki_roots(),
    };
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain = certificates(cert_file).map_err(|e| ("client_cert_file", e))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                let why = format!("{key_file}: no PEM private key could be read: {e}");
                ("client_key_file", why)
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                let why = format!("the key does not go with the certificate: {e}");
                ("client_key_file", why)
            })?
        }
    };
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let https = match server_name {
        None => https,
        Some(name) => {
            let name =
                ServerName::try_from(name.clone()).map_err(|e| ("server_name", e.to_string()))?;
            https.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
    };
    Ok(https.enable_http1().wrap_connector(tcp()))
}

/// Every certificate in the PEM file `file`; at least one.
fn certificates(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{file}: no PEM certificates could be read: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file}: holds no PEM certificate"));
    }
    Ok(certs)
}

/// The CAs in `file`, as the only roots to trust.
fn roots(file: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{file}: a certificate is not a usable CA: {e}"))?;
    }
    Ok(roots)
}
