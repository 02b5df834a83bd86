//! Origin TLS, end to end: `portcullis serve` reaches an origin on 127.0.0.1 that has a
//! certificate from a private CA (made here with rcgen) for a name other than its address, and
//! that requires a client certificate. The policy's `tls` makes it work; each part left out or
//! wrong makes it a 502 and reaches nothing; a file that cannot be read refuses the policy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use portcullis_conformance::client::{self, BodyFraming, Exchange, WireRequest};
use portcullis_conformance::target::{listening_url, locate_native_binary};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::rustls;

/// PEM files: the server CA, the origin's certificate and key (for `orders.internal`), the
/// client CA, a client certificate and key it issued, and one from another CA.
struct Pki {
    server_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, issuer)
        .expect("certificate");
    let (c, k) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let (server_issuer, client_issuer, stranger) = (ca("server CA"), ca("client CA"), ca("other"));
    let (server_cert, server_key) = leaf(dir, "server", &["orders.internal"], &server_issuer);
    let (client_cert, client_key) = leaf(dir, "client", &["gateway"], &client_issuer);
    let (stranger_cert, stranger_key) = leaf(dir, "stranger", &["gateway"], &stranger);
    let (server_ca, client_ca) = (dir.join("server-ca.pem"), dir.join("client-ca.pem"));
    std::fs::write(&server_ca, server_issuer.pem()).unwrap();
    std::fs::write(&client_ca, client_issuer.pem()).unwrap();
    Pki {
        server_ca,
        server_cert,
        server_key,
        client_ca,
        client_cert,
        client_key,
        stranger_cert,
        stranger_key,
    }
}

/// An HTTPS origin on 127.0.0.1 that requires a client certificate from `pki.client_ca`;
/// its port and how many requests it answered.
async fn mtls_origin(pki: &Pki) -> (u16, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.client_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .expect("client verifier");
    let chain = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                // A handshake the origin refuses (no or a foreign client certificate) ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    count.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from("mtls ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, answered)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portcullis serve` on `policy`: its address, or every stderr line if it did not start.
fn serve(dir: &Path, policy: &serde_json::Value) -> Result<(Serve, String), Vec<String>> {
    let file = dir.join("policy.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    let mut child = Command::new(locate_native_binary().expect("the portcullis binary"))
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start portcullis serve");
    let stderr = child.stderr.take().unwrap();
    let child = Serve(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if let Some(url) = listening_url(&line) {
            return Ok((child, url.trim_start_matches("http://").to_owned()));
        }
        lines.push(line);
    }
    Err(lines)
}

async fn status(addr: &str, path: &str) -> (u16, String) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    let request = WireRequest {
        head: head.into_bytes(),
        body: Vec::new(),
        framing: BodyFraming::Plain,
        is_head: false,
        half_close: false,
    };
    match client::send(addr, &request)
        .await
        .expect("an answer")
        .exchange
    {
        Exchange::Response(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Exchange::Closed(why) => panic!("connection closed: {why}"),
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_a_private_ca_origin_works_only_with_every_part_right() {
    let dir = std::env::temp_dir().join(format!("portcullis-origin-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pki = pki(&dir);
    let (port, answered) = mtls_origin(&pki).await;
    let url = format!("https://127.0.0.1:{port}");
    let full = serde_json::json!({
        "ca_file": path(&pki.server_ca),
        "client_cert_file": path(&pki.client_cert),
        "client_key_file": path(&pki.client_key),
        "server_name": "orders.internal"
    });
    let without = |field: &str| {
        let mut tls = full.clone();
        tls.as_object_mut().unwrap().remove(field);
        tls
    };
    let mut stranger = full.clone();
    stranger["client_cert_file"] = path(&pki.stranger_cert).into();
    stranger["client_key_file"] = path(&pki.stranger_key).into();
    let mut misnamed = full.clone();
    misnamed["server_name"] = "billing.internal".into();
    let origins = [
        ("full", full.clone()),
        ("no-client-cert", {
            let mut t = without("client_cert_file");
            t.as_object_mut().unwrap().remove("client_key_file");
            t
        }),
        ("stranger-cert", stranger),
        ("public-roots", without("ca_file")),
        ("wrong-name", misnamed),
        ("address-name", without("server_name")),
    ];
    let mut policy = serde_json::json!({ "version": 1, "origins": {}, "routes": [] });
    for (name, tls) in &origins {
        policy["origins"][name] = serde_json::json!({ "url": url, "timeout_ms": 3000, "tls": tls });
        policy["routes"].as_array_mut().unwrap().push(serde_json::json!({
            "id": name, "methods": ["GET"], "path": format!("/{name}"), "origin": name, "auth": "none"
        }));
    }
    let (_serve, addr) =
        serve(&dir, &policy).unwrap_or_else(|lines| panic!("serve did not start: {lines:#?}"));

    let (code, body) = status(&addr, "/full").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "mtls ok"),
        "private CA, client certificate, server name"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 1);
    for (name, _) in &origins[1..] {
        let (code, body) = status(&addr, &format!("/{name}")).await;
        assert_eq!(code, 502, "{name}: {body}");
        assert!(body.contains("origin-unreachable"), "{name}: {body}");
    }
    assert_eq!(
        answered.load(Ordering::SeqCst),
        1,
        "no refused handshake reached the origin's handler"
    );
    // The pooled connection is reused with its client certificate.
    assert_eq!(status(&addr, "/full").await.0, 200);

    // A file that cannot be read refuses the policy at start, with its pointer.
    let mut broken = policy.clone();
    broken["origins"]["full"]["tls"]["ca_file"] = path(&dir.join("missing.pem")).into();
    broken["origins"]["full"]["tls"]["client_key_file"] = path(&pki.server_ca).into();
    let lines = serve(&dir, &broken)
        .err()
        .expect("a policy with a missing CA file must not serve");
    let rejected = lines
        .iter()
        .find(|l| l.contains("\"policy_rejected\""))
        .unwrap_or_else(|| panic!("no policy_rejected event: {lines:#?}"));
    assert!(rejected.contains("/origins/full/tls/ca_file"), "{rejected}");
}
