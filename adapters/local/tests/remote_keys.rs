//! Remote key sets end to end: the real binary, a JWKS server and an origin on 127.0.0.1.
//! How a key set is fetched, kept and refreshed is the core's (and its tests'); these check the
//! native glue: the hyper fetcher, the start-up fetch and report, the background refresh, the
//! JSON event lines on stderr, and `check --online`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{get, Running, TinyServer};
use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use p256::ecdsa::SigningKey;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "api";
const KID: &str = "key-1";

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).expect("a valid P-256 scalar")
}

fn jwks(key: &SigningKey, kid: &str) -> String {
    let mut jwk = serde_json::to_value(JsonWebKey::from(key.verifying_key())).expect("a JWK");
    jwk["kid"] = json!(kid);
    json!({ "keys": [jwk] }).to_string()
}

/// An ES256 token for the test policy, valid for ten minutes.
fn token(key: &SigningKey, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let now = i64::try_from(now).expect("clock in range");
    let mut claims = Claims::new(json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "alice" }));
    claims.issued_at = chrono::DateTime::from_timestamp(now, 0);
    claims.expiration = chrono::DateTime::from_timestamp(now + 600, 0);
    Es256
        .token(&Header::empty().with_key_id(kid), &claims, key)
        .expect("sign a token")
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// An origin that answers every request with `{"origin":true}`.
fn origin() -> TinyServer {
    TinyServer::start(|_| (200, "application/json", r#"{"origin":true}"#.to_owned()))
}

/// A JWKS server publishing `key` as `key-1` at `/jwks.json`.
fn idp(key: &SigningKey) -> TinyServer {
    let doc = jwks(key, KID);
    TinyServer::start(move |path| match path {
        "/jwks.json" => (200, "application/json", doc.clone()),
        _ => (404, "text/plain", "not found".to_owned()),
    })
}

/// A policy file with a provider `idp` whose keys are at `jwks_url`, a route `/private` that
/// needs it and a route `/open` that does not. `extra` goes into the provider.
fn policy(origin: &TinyServer, jwks_url: &str, extra: Value) -> PathBuf {
    let mut provider = json!({
        "type": "jwt",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "algorithms": ["ES256"],
        "jwks_url": jwks_url,
    });
    if let (Some(p), Some(e)) = (provider.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let config = json!({
        "version": 1,
        "origins": { "o": { "url": format!("http://{}", origin.addr) } },
        "auth": { "idp": provider },
        "routes": [
            { "id": "private", "methods": ["GET"], "path": "/private", "origin": "o",
              "auth": { "providers": ["idp"] } },
            { "id": "open", "methods": ["GET"], "path": "/open", "origin": "o", "auth": "none" }
        ]
    });
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "remote-keys-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, config.to_string()).expect("write the policy");
    path
}

fn serve(config: &Path) -> Running {
    common::start(&[
        "serve",
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
    ])
}

fn problem_type(answer: &common::Answer) -> String {
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json"),
        "{}",
        answer.head
    );
    let problem: Value = serde_json::from_str(answer.body.trim()).expect("a problem document");
    problem["type"].as_str().unwrap_or_default().to_owned()
}

/// The JSON event lines on stderr: `time`, `level`, `provider`, `event`.
fn key_event(line: &str, level: &str, event_prefix: &str) -> bool {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    value["level"] == level
        && value["provider"] == "idp"
        && value["time"].is_string()
        && value["message"]
            .as_str()
            .is_some_and(|e| e.starts_with(event_prefix))
}

#[test]
fn a_token_signed_with_a_published_key_is_forwarded() {
    let key = signing_key(7);
    let idp = idp(&key);
    let origin = origin();
    let config = policy(
        &origin,
        &format!("http://{}/jwks.json", idp.addr),
        json!({}),
    );
    let gateway = serve(&config);
    assert!(
        common::said(
            &gateway.before_ready,
            "auth provider \"idp\": 1 keys loaded"
        ),
        "{:#?}",
        gateway.before_ready
    );
    assert_eq!(idp.hits(), 1, "one fetch at start-up");

    let allowed = get(&gateway.addr, "/private", &bearer(&token(&key, KID)));
    assert_eq!(allowed.status, 200, "{}\n\n{}", allowed.head, allowed.body);
    assert_eq!(allowed.body.trim(), r#"{"origin":true}"#);

    // Signed by a key the IdP does not publish: refused, and the set was already fresh.
    let forged = get(
        &gateway.addr,
        "/private",
        &bearer(&token(&signing_key(9), KID)),
    );
    assert_eq!(forged.status, 401, "{}\n\n{}", forged.head, forged.body);
    assert_eq!(
        idp.hits(),
        1,
        "requests verified against the set fetched at start-up"
    );
}

#[test]
fn keys_unavailable_at_start_up_do_not_stop_the_gateway() {
    let origin = origin();
    let dead = common::dead_addr();
    let config = policy(&origin, &format!("http://{dead}/jwks.json"), json!({}));
    let gateway = serve(&config);
    let report = gateway
        .before_ready
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "key_set_failed" && v["level"] == "warn")
        .find_map(|v| v["message"].as_str().map(str::to_owned))
        .filter(|m| m.starts_with("auth provider \"idp\": keys unavailable: "))
        .unwrap_or_else(|| panic!("no keys-unavailable event: {:#?}", gateway.before_ready));
    assert!(
        report.ends_with("(tokens for it get 503 until the IdP answers)"),
        "{report}"
    );

    let refused = get(
        &gateway.addr,
        "/private",
        &bearer(&token(&signing_key(7), KID)),
    );
    assert_eq!(refused.status, 503, "{}\n\n{}", refused.head, refused.body);
    assert_eq!(
        problem_type(&refused),
        "urn:portcullis:problem:keys-unavailable"
    );

    // Routes that do not need the provider keep working.
    let open = get(&gateway.addr, "/open", "");
    assert_eq!(open.status, 200, "{}\n\n{}", open.head, open.body);
}

#[test]
fn the_background_refresh_picks_up_keys_once_the_idp_answers() {
    let key = signing_key(7);
    let doc = jwks(&key, KID);
    let up = Arc::new(AtomicBool::new(false));
    let idp_up = Arc::clone(&up);
    let idp = TinyServer::start(move |_| {
        if idp_up.load(Ordering::SeqCst) {
            (200, "application/json", doc.clone())
        } else {
            (503, "text/html", "<h1>maintenance</h1>".to_owned())
        }
    });
    let origin = origin();
    let config = policy(
        &origin,
        &format!("http://{}/jwks.json", idp.addr),
        json!({ "jwks_min_refresh_interval_s": 1 }),
    );
    let gateway = serve(&config);
    assert!(
        common::said(
            &gateway.before_ready,
            "auth provider \"idp\": keys unavailable: JWKS answered HTTP 503 \
             (tokens for it get 503 until the IdP answers)"
        ),
        "{:#?}",
        gateway.before_ready
    );
    let token = token(&key, KID);
    assert_eq!(get(&gateway.addr, "/private", &bearer(&token)).status, 503);

    // Failed refreshes are warnings; once the IdP answers, the refresh is news.
    gateway.wait_stderr("warning of a failed refresh", |l| {
        key_event(l, "warn", "key set refresh failed")
    });
    up.store(true, Ordering::SeqCst);
    gateway.wait_stderr("announcing the refresh", |l| {
        key_event(l, "info", "key set refreshed (1 keys)")
    });
    let allowed = get(&gateway.addr, "/private", &bearer(&token));
    assert_eq!(allowed.status, 200, "{}\n\n{}", allowed.head, allowed.body);
}

/// `portcullis check [--online] FILE`: exit code, stdout, stderr.
fn check(config: &Path, online: bool) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.arg("check");
    if online {
        command.arg("--online");
    }
    let out = command
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_online_fetches_every_key_set_and_reports_each() {
    let idp = idp(&signing_key(7));
    let origin = origin();
    let good = policy(
        &origin,
        &format!("http://{}/jwks.json", idp.addr),
        json!({}),
    );
    let (code, stdout, stderr) = check(&good, true);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let file = good.display();
    assert!(
        stdout.contains(&format!("{file}: auth provider \"idp\": ok (1 keys)")),
        "{stdout}"
    );
    assert_eq!(idp.hits(), 1);

    let dead = common::dead_addr();
    let bad = policy(&origin, &format!("http://{dead}/jwks.json"), json!({}));
    let (code, stdout, stderr) = check(&bad, true);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let file = bad.display();
    assert!(
        stderr.contains(&format!("{file}: auth provider \"idp\": FAILED: ")),
        "{stderr}"
    );
}

#[test]
fn check_without_online_touches_no_network() {
    let idp = idp(&signing_key(7));
    let origin = origin();
    let config = policy(
        &origin,
        &format!("http://{}/jwks.json", idp.addr),
        json!({}),
    );
    let (code, stdout, stderr) = check(&config, false);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(": ok (2 routes)"), "{stdout}");
    assert!(!stdout.contains("auth provider"), "{stdout}");

    let dead = common::dead_addr();
    let unreachable = policy(&origin, &format!("http://{dead}/jwks.json"), json!({}));
    assert_eq!(check(&unreachable, false).0, Some(0));
    assert_eq!(idp.hits(), 0);
}

#[test]
fn readyz_is_503_naming_the_provider_until_its_key_set_arrives() {
    let key = signing_key(9);
    let doc = jwks(&key, KID);
    let up = Arc::new(AtomicBool::new(false));
    let idp_up = Arc::clone(&up);
    let idp = TinyServer::start(move |_| match idp_up.load(Ordering::SeqCst) {
        true => (200, "application/json", doc.clone()),
        false => (503, "text/plain", "down".to_owned()),
    });
    let origin = origin();
    let config = policy(
        &origin,
        &format!("http://{}/jwks.json", idp.addr),
        json!({ "jwks_min_refresh_interval_s": 1 }),
    );
    let path = config.to_str().expect("a UTF-8 path");
    let gateway = common::start(&[
        "serve",
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = common::admin_addr(&gateway);
    assert_eq!(get(&gateway.addr, "/open", "").status, 200);
    let not_ready = get(&admin, "/readyz", "");
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert!(not_ready.body.contains("idp"), "{}", not_ready.body);
    assert_eq!(
        get(&admin, "/healthz", "").status,
        200,
        "alive while not ready"
    );
    gateway.wait_stderr("a failed refresh", |l| {
        key_event(l, "warn", "key set refresh failed")
    });
    up.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + common::WAIT;
    while get(&admin, "/readyz", "").status != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The event is counted before its line is written: once the line is out, /metrics has it.
    gateway.wait_stderr("the refresh event", |l| {
        key_event(l, "info", "key set refreshed")
    });
    let metrics = get(&admin, "/metrics", "").body;
    assert!(
        metrics.contains(r#"portcullis_key_set_refreshes_total{provider="idp",result="ok"} 1"#),
        "{metrics}"
    );
    // With requests, a failed and a good refresh behind it, every family has a sample: what
    // the shipped dashboard and alert rules query is all there.
    let unexposed = common::unexposed_deploy_metrics(&metrics);
    assert!(
        unexposed.is_empty(),
        "not exposed: {unexposed:?}\n{metrics}"
    );
}

#[test]
fn check_format_json_is_one_object_with_every_error_and_its_pointer() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("check-json-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"version": 2, "routes": [], "bogus": 1}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--format", "json"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["valid"], false);
    let pointers: Vec<&str> = report["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(pointers.contains(&"/bogus"), "{report}");
    assert_eq!(
        report["policy"].as_str().map(str::len),
        Some(12),
        "{report}"
    );
}
