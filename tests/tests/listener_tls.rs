//! `portcullis serve --tls-cert --tls-key`, end to end: HTTPS on the public listener with
//! HTTP/2 and HTTP/1.1 by ALPN, the request decided and forwarded the same way over both, with a
//! certificate made here (rcgen) for 127.0.0.1; a plain-text request gets no answer, and a key
//! that does not go with the certificate stops the start with what is wrong.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use portcullis_conformance::origin::RecordingOrigin;
use portcullis_conformance::target::{listening_url, locate_native_binary};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::rustls;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portcullis serve` with `args`: its URL, or every stderr line if it did not start.
fn serve(policy: &Path, args: &[&str]) -> Result<(Serve, String), Vec<String>> {
    let mut child = Command::new(locate_native_binary().expect("the portcullis binary"))
        .args(["serve", "--config"])
        .arg(policy)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
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
            return Ok((child, url));
        }
        lines.push(line);
    }
    Err(lines)
}

/// `GET path` over TLS trusting `ca`, offering `alpn`: the HTTP version, status and the
/// `x-forwarded-host` the origin was sent (from its echo).
async fn get(addr: &str, ca: &Path, alpn: &[u8], path: &str) -> (http::Version, u16) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let io = TokioIo::new(tls);
    let request = http::Request::get(format!("https://{addr}{path}"))
        .header(
            "x-conformance-id",
            format!("{}-{path}", String::from_utf8_lossy(alpn)),
        )
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn == b"h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(request).await.expect("h2 response")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = path.parse().unwrap();
        parts
            .headers
            .insert(http::header::HOST, addr.parse().unwrap());
        send.send_request(http::Request::from_parts(parts, body))
            .await
            .expect("h1 response")
    };
    let (version, status) = (response.version(), response.status().as_u16());
    let _ = response.into_body().collect().await;
    (version, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1_by_alpn_and_decides_alike() {
    let dir = std::env::temp_dir().join(format!("portcullis-listener-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let origin = RecordingOrigin::start("127.0.0.1:0").await.unwrap();
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({
            "version": 1,
            "origins": { "api": { "url": origin.url(), "timeout_ms": 5000 } },
            "routes": [
                { "id": "open", "methods": ["GET"], "path": "/open", "origin": "api", "auth": "none" },
                { "id": "closed", "methods": ["GET"], "path": "/closed", "origin": "api",
                  "auth": { "providers": ["keys"] } }
            ],
            "auth": { "keys": { "type": "api_key", "keys": [ { "sha256": "a".repeat(64), "consumer": "c" } ] } }
        })
        .to_string(),
    )
    .unwrap();
    let (cert_arg, key_arg) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    let (_serve, url) = serve(&policy, &["--tls-cert", &cert_arg, "--tls-key", &key_arg])
        .unwrap_or_else(|lines| panic!("serve did not start: {lines:#?}"));
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("announced {url}"));

    assert_eq!(
        get(addr, &ca_file, b"h2", "/open").await,
        (http::Version::HTTP_2, 200)
    );
    assert_eq!(
        get(addr, &ca_file, b"http/1.1", "/open").await,
        (http::Version::HTTP_11, 200)
    );
    assert_eq!(
        get(addr, &ca_file, b"h2", "/closed").await,
        (http::Version::HTTP_2, 401)
    );
    assert_eq!(
        get(addr, &ca_file, b"h2", "/nowhere").await,
        (http::Version::HTTP_2, 404)
    );
    let over_h2 = origin.take("h2-/open");
    assert_eq!(over_h2.len(), 1, "forwarded once");
    let host = over_h2[0]
        .headers
        .iter()
        .find(|(n, _)| n == "x-forwarded-host");
    assert_eq!(
        host.map(|(_, v)| v.as_str()),
        Some(addr),
        "`:authority` is the client's Host"
    );
    assert_eq!(origin.take("http/1.1-/open").len(), 1);
    assert_eq!(origin.count("h2-/closed"), 0);

    // Plain HTTP on the TLS port is not served.
    let plain = portcullis_conformance::client::WireRequest {
        head: b"GET /open HTTP/1.1\r\nHost: x\r\nx-conformance-id: plain\r\n\r\n".to_vec(),
        body: Vec::new(),
        framing: portcullis_conformance::client::BodyFraming::Plain,
        is_head: false,
        half_close: false,
    };
    let answer = portcullis_conformance::client::send(addr, &plain).await;
    assert!(
        !matches!(
            answer,
            Ok(portcullis_conformance::client::Timed {
                exchange: portcullis_conformance::client::Exchange::Response(_),
                ..
            })
        ),
        "plain text got an HTTP answer"
    );
    assert_eq!(origin.count("plain"), 0);

    // A key that is not the certificate's stops the start.
    let other = dir.join("other.pem");
    std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let other = other.display().to_string();
    let lines = serve(&policy, &["--tls-cert", &cert_arg, "--tls-key", &other])
        .err()
        .expect("started");
    assert!(lines.iter().any(|l| l.contains("--tls-key")), "{lines:#?}");
}
