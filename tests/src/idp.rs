//! The test identity provider: a JWKS and OIDC discovery server on 127.0.0.1 whose behaviour a
//! scenario switches step by step, and which counts the requests it gets per path.
//!
//! - `GET /jwks` (and any path starting with `/jwks`, so that several providers of one policy can
//!   each have their own URL and their own count) answers the current key set.
//! - `GET /.well-known/openid-configuration` answers `{"issuer": "${IDP}", "jwks_uri":
//!   "${IDP}/jwks"}`, or another issuer when the mode says so.
//!
//! Modes (see [`IdpMode`]): `serve:NAME` (a named key set, [`key_set`]), `down` (the listener is
//! closed: connections are refused), `hang` (requests are read and counted, never answered),
//! `garbage:html`, `garbage:not-json`, `garbage:empty-keys`, `garbage:http-500`. Every response
//! carries `Connection: close`, so a gateway cannot keep a pooled connection across a mode change
//! (a "down" IdP really refuses every request).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a `hang` connection is held open without an answer.
const HANG_FOR: Duration = Duration::from_secs(30);

/// The named key sets (kids of public keys in `tests/keys/public.jwks.json`). A name that is not
/// listed here is read as a comma-separated list of kids.
pub const KEY_SETS: &[(&str, &[&str])] = &[
    ("A", &["rsa-1"]),
    ("B", &["rsa-1", "rsa-2"]),
    ("C", &["rsa-2"]),
];

/// What the IdP does, as written in a vector: `"serve:A"`, or an object with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdpMode {
    /// Just the mode.
    Short(String),
    /// The mode with options.
    Full(IdpModeSpec),
}

/// A mode with options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpModeSpec {
    /// `serve:NAME`, `down`, `hang`, `garbage:KIND`.
    pub mode: String,
    /// A `Cache-Control` header on key-set responses.
    #[serde(default)]
    pub cache_control: Option<String>,
    /// The `issuer` the discovery document names (placeholders allowed; default `${IDP}`).
    #[serde(default)]
    pub discovery_issuer: Option<String>,
}

/// A mode, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer with this key set (a JWKS document).
    Serve(String),
    /// Refuse connections.
    Down,
    /// Read the request, never answer.
    Hang,
    /// 200 `text/html` error page.
    Html,
    /// 200 `application/json` that is not JSON.
    NotJson,
    /// 200 `{"keys":[]}`.
    EmptyKeys,
    /// 500 with a JSON error body.
    Http500,
}

/// Everything the server needs to answer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What to do.
    pub behaviour: Behaviour,
    /// `Cache-Control` on key-set responses.
    pub cache_control: Option<String>,
    /// The discovery document's issuer (`None`: the server's base URL).
    pub discovery_issuer: Option<String>,
}

impl IdpMode {
    /// Check the mode; `key_dir` holds `public.jwks.json`.
    pub fn settings(&self, key_dir: &std::path::Path) -> anyhow::Result<Settings> {
        let (mode, cache_control, discovery_issuer) = match self {
            IdpMode::Short(m) => (m.as_str(), None, None),
            IdpMode::Full(s) => (
                s.mode.as_str(),
                s.cache_control.clone(),
                s.discovery_issuer.clone(),
            ),
        };
        let behaviour = match mode {
            "down" => Behaviour::Down,
            "hang" => Behaviour::Hang,
            "garbage:html" => Behaviour::Html,
            "garbage:not-json" => Behaviour::NotJson,
            "garbage:empty-keys" => Behaviour::EmptyKeys,
            "garbage:http-500" => Behaviour::Http500,
            other => match other.strip_prefix("serve:") {
                Some(name) => Behaviour::Serve(key_set(key_dir, name)?),
                None => bail!(
                    "unknown idp mode {other:?} (serve:NAME, down, hang, garbage:html, \
                     garbage:not-json, garbage:empty-keys, garbage:http-500)"
                ),
            },
        };
        Ok(Settings {
            behaviour,
            cache_control,
            discovery_issuer,
        })
    }
}

/// The JWKS document for key set `name` ([`KEY_SETS`], or a comma-separated list of kids).
pub fn key_set(key_dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    let path = key_dir.join("public.jwks.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let all: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let all = all
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{} has no keys array", path.display()))?;
    let kids: Vec<&str> = match KEY_SETS.iter().find(|(n, _)| *n == name) {
        Some((_, kids)) => kids.to_vec(),
        None => name.split(',').map(str::trim).collect(),
    };
    let mut keys = Vec::new();
    for kid in kids {
        let key = all
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .ok_or_else(|| anyhow!("key set {name:?}: no public key with kid {kid:?}"))?;
        keys.push(key.clone());
    }
    Ok(json!({ "keys": keys }).to_string())
}

#[derive(Debug)]
struct Shared {
    base: String,
    settings: Mutex<Settings>,
    counts: Mutex<BTreeMap<String, u64>>,
}

/// A running test IdP. Dropping it stops the server.
#[derive(Debug)]
pub struct IdpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl IdpServer {
    /// Start on `listen` (`127.0.0.1:0` for any free port) in mode `initial`. A `down` IdP
    /// reserves its port and then closes it. Must run inside a tokio runtime.
    pub async fn start(listen: &str, initial: Settings) -> anyhow::Result<IdpServer> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the IdP to {listen}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            settings: Mutex::new(initial.clone()),
            counts: Mutex::default(),
        });
        let mut server = IdpServer {
            addr,
            shared,
            accept: None,
        };
        if initial.behaviour != Behaviour::Down {
            server.accept = Some(spawn_accept(listener, server.shared.clone()));
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, the value of `${IDP}`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Switch to `settings`: closing the listener for `down`, opening it again (same port) after.
    pub async fn set(&mut self, settings: Settings) -> anyhow::Result<()> {
        let down = settings.behaviour == Behaviour::Down;
        if let Ok(mut s) = self.shared.settings.lock() {
            *s = settings;
        }
        match (&self.accept, down) {
            (Some(_), true) => {
                if let Some(task) = self.accept.take() {
                    task.abort();
                    // Wait until the task (and with it the listener) is gone.
                    let _ = task.await;
                }
            }
            (None, false) => {
                let mut last = None;
                for _ in 0..50 {
                    match TcpListener::bind(self.addr).await {
                        Ok(listener) => {
                            self.accept = Some(spawn_accept(listener, self.shared.clone()));
                            return Ok(());
                        }
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                bail!(
                    "could not listen on {} again: {}",
                    self.addr,
                    last.map(|e| e.to_string()).unwrap_or_default()
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Requests received per path (without the query) since the last [`IdpServer::reset_counts`].
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Requests received for `path` since the last reset.
    pub fn count(&self, path: &str) -> u64 {
        self.counts().get(path).copied().unwrap_or(0)
    }

    /// Start counting from zero.
    pub fn reset_counts(&self) {
        if let Ok(mut c) = self.shared.counts.lock() {
            c.clear();
        }
    }
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

fn spawn_accept(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = serve(stream, &shared).await;
            });
        }
    })
}

/// Read one request head and answer it as the current mode says; then close.
async fn serve(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
    let path = target.split('?').next().unwrap_or("").to_owned();
    let settings = match shared.settings.lock() {
        Ok(s) => s.clone(),
        Err(_) => return Ok(()),
    };
    if let Ok(mut c) = shared.counts.lock() {
        *c.entry(path.clone()).or_default() += 1;
    }
    let (status, content_type, body, cache_control) = match &settings.behaviour {
        Behaviour::Down => return Ok(()),
        Behaviour::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            return Ok(());
        }
        Behaviour::Html => (
            "200 OK",
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
             <body><h1>Bad Gateway</h1><p>The identity provider is having a bad day.</p></body></html>"
                .to_owned(),
            None,
        ),
        Behaviour::NotJson => (
            "200 OK",
            "application/json",
            "{\"keys\": [{\"kty\": \"RSA\", oops".to_owned(),
            None,
        ),
        Behaviour::EmptyKeys => (
            "200 OK",
            "application/json",
            "{\"keys\":[]}".to_owned(),
            None,
        ),
        Behaviour::Http500 => (
            "500 Internal Server Error",
            "application/json",
            "{\"error\":\"internal_error\"}".to_owned(),
            None,
        ),
        Behaviour::Serve(jwks) => {
            if path.ends_with("/.well-known/openid-configuration") {
                let issuer = settings
                    .discovery_issuer
                    .clone()
                    .unwrap_or_else(|| shared.base.clone());
                let doc = json!({
                    "issuer": issuer,
                    "jwks_uri": format!("{}/jwks", shared.base),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                });
                ("200 OK", "application/json", doc.to_string(), None)
            } else if path.starts_with("/jwks") {
                (
                    "200 OK",
                    "application/json",
                    jwks.clone(),
                    settings.cache_control.clone(),
                )
            } else {
                (
                    "404 Not Found",
                    "text/plain",
                    "not found".to_owned(),
                    None,
                )
            }
        }
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(cc) = cache_control {
        response.push_str(&format!("Cache-Control: {cc}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(base: &str, path: &str) -> Option<String> {
        let addr = base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    fn mode(m: &str) -> Settings {
        IdpMode::Short(m.into())
            .settings(&crate::suite_dir().join("keys"))
            .unwrap()
    }

    #[tokio::test]
    async fn serves_counts_goes_down_and_comes_back() {
        let mut idp = IdpServer::start("127.0.0.1:0", mode("serve:B"))
            .await
            .unwrap();
        let base = idp.url();
        let jwks = get(&base, "/jwks?x=1").await.unwrap();
        assert!(jwks.starts_with("HTTP/1.1 200"), "{jwks}");
        assert!(jwks.contains("\"rsa-1\"") && jwks.contains("\"rsa-2\""));
        let disc = get(&base, "/.well-known/openid-configuration")
            .await
            .unwrap();
        assert!(
            disc.contains(&format!("\"jwks_uri\":\"{base}/jwks\"")),
            "{disc}"
        );
        assert_eq!(idp.count("/jwks"), 1);
        assert_eq!(idp.count("/.well-known/openid-configuration"), 1);
        idp.set(mode("down")).await.unwrap();
        assert!(get(&base, "/jwks").await.is_none());
        idp.set(mode("garbage:empty-keys")).await.unwrap();
        let empty = get(&base, "/jwks").await.unwrap();
        assert!(empty.ends_with("{\"keys\":[]}"), "{empty}");
        assert_eq!(idp.count("/jwks"), 2);
        idp.reset_counts();
        assert_eq!(idp.count("/jwks"), 0);
    }

    #[test]
    fn unknown_modes_and_kids_are_errors() {
        let dir = crate::suite_dir().join("keys");
        assert!(IdpMode::Short("sometimes".into()).settings(&dir).is_err());
        assert!(IdpMode::Short("serve:no-such-kid".into())
            .settings(&dir)
            .is_err());
        assert_eq!(key_set(&dir, "C").unwrap(), key_set(&dir, "rsa-2").unwrap());
    }
}
