//! The verified-token cache through the whole decision: what a cached token may and may not skip.

use std::cell::RefCell;
use std::time::Duration;

use futures_executor::block_on;
use http::Request;
use portcullis_core::jwt::Algorithm;
use portcullis_core::testing::{keys, token};
use portcullis_core::{
    BodyError, Decision, Fetch, FetchError, FetchResponse, Gateway, MemoryStore, NoFetch, Policy,
    Reject, RequestBody, RequestContext, UnixTime,
};
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;

struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

fn config(keys_source: Value) -> String {
    let mut provider = json!({ "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"], "algorithms": ["ES256", "EdDSA"], "leeway_s": 30 });
    for (k, v) in keys_source.as_object().unwrap() {
        provider[k] = v.clone();
    }
    json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9" } },
        "auth": { "idp": provider },
        "routes": [
            { "id": "read", "methods": ["GET"], "path": "/read", "origin": "api", "auth": { "providers": ["idp"], "scopes": ["read"] } },
            { "id": "admin", "methods": ["GET"], "path": "/admin", "origin": "api", "auth": { "providers": ["idp"], "scopes": ["admin"] } }
        ]
    })
    .to_string()
}

fn claims() -> Value {
    json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 60, "scope": "read" })
}

fn decide<F: Fetch>(
    g: &Gateway,
    path: &str,
    token: &str,
    at: u64,
    fetch: &F,
) -> Result<(), Reject> {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty)
        .unwrap();
    let ctx = RequestContext {
        now: UnixTime::from_secs(at),
        request_id: "r".into(),
        peer: None,
    };
    match block_on(g.decide(req, &ctx, &MemoryStore::new(), fetch)).decision {
        Decision::Forward(_) => Ok(()),
        Decision::Reject(r) => Err(r),
        Decision::Preflight(_) => panic!("no preflight in these tests"),
    }
}

fn inline_gateway() -> Gateway {
    Gateway::new(
        Policy::from_json(
            &config(json!({ "jwks": keys().jwks() })),
            &portcullis_core::NoSecrets,
        )
        .unwrap(),
    )
}

#[test]
fn a_cached_token_still_expires_at_exp_plus_leeway() {
    let g = inline_gateway();
    let t = token(Algorithm::ES256, &claims());
    assert!(decide(&g, "/read", &t, NOW, &NoFetch).is_ok());
    assert!(
        decide(&g, "/read", &t, NOW + 89, &NoFetch).is_ok(),
        "inside exp + leeway"
    );
    assert_eq!(
        decide(&g, "/read", &t, NOW + 91, &NoFetch)
            .unwrap_err()
            .reason()
            .slug(),
        "token_expired"
    );
}

#[test]
fn route_checks_run_on_every_request_even_for_cached_tokens() {
    let g = inline_gateway();
    let t = token(Algorithm::ES256, &claims());
    assert!(decide(&g, "/read", &t, NOW, &NoFetch).is_ok());
    assert_eq!(
        decide(&g, "/admin", &t, NOW + 1, &NoFetch)
            .unwrap_err()
            .reason()
            .slug(),
        "scope"
    );
}

#[test]
fn a_token_that_differs_in_one_signature_byte_is_verified_and_refused() {
    let g = inline_gateway();
    let t = token(Algorithm::EdDSA, &claims());
    assert!(decide(&g, "/read", &t, NOW, &NoFetch).is_ok());
    let mut forged = t.into_bytes();
    let last = forged.len() - 5;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        decide(&g, "/read", &forged, NOW + 1, &NoFetch)
            .unwrap_err()
            .reason()
            .slug(),
        "token_signature"
    );
}

/// Serves the JWKS it holds at the time of each fetch.
struct Idp {
    jwks: RefCell<Value>,
    fetches: RefCell<usize>,
}

impl Fetch for Idp {
    async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        *self.fetches.borrow_mut() += 1;
        Ok(FetchResponse {
            status: 200,
            body: self.jwks.borrow().to_string().into_bytes(),
            cache_control: None,
        })
    }
}

fn only(kid: &str) -> Value {
    let all = keys().jwks();
    json!({ "keys": all["keys"].as_array().unwrap().iter().filter(|k| k["kid"] == kid).cloned().collect::<Vec<_>>() })
}

#[test]
fn a_key_removed_from_the_jwks_while_cached_is_no_longer_trusted() {
    let policy = Policy::from_json(
        &config(json!({ "jwks_url": "https://idp.test/jwks", "jwks_min_refresh_interval_s": 1, "jwks_refresh_s": 10 })),
        &portcullis_core::NoSecrets,
    )
    .unwrap();
    let g = Gateway::new(policy);
    let idp = Idp {
        jwks: RefCell::new(only("ec-256")),
        fetches: RefCell::new(0),
    };
    let t = token(Algorithm::ES256, &claims());
    assert!(decide(&g, "/read", &t, NOW, &idp).is_ok());
    assert!(decide(&g, "/read", &t, NOW + 1, &idp).is_ok());
    assert_eq!(*idp.fetches.borrow(), 1);
    // The IdP drops the key; the next scheduled refresh picks that up, and the cached token
    // must not outlive the key set it was verified against.
    *idp.jwks.borrow_mut() = only("ed-1");
    let events = block_on(g.refresh_keys(UnixTime::from_secs(NOW + 11), &idp, false));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        decide(&g, "/read", &t, NOW + 12, &idp)
            .unwrap_err()
            .reason()
            .slug(),
        "token_kid"
    );
}

#[test]
fn keys_due_says_when_a_background_refresh_has_work() {
    let remote = config(
        json!({ "jwks_url": "https://idp.test/jwks", "jwks_min_refresh_interval_s": 1, "jwks_refresh_s": 10 }),
    );
    let g = Gateway::new(Policy::from_json(&remote, &portcullis_core::NoSecrets).unwrap());
    let idp = Idp {
        jwks: RefCell::new(only("ec-256")),
        fetches: RefCell::new(0),
    };
    assert!(g.keys_due(UnixTime::from_secs(NOW)), "nothing fetched yet");
    assert!(decide(&g, "/read", &token(Algorithm::ES256, &claims()), NOW, &idp).is_ok());
    assert!(!g.keys_due(UnixTime::from_secs(NOW + 9)));
    assert!(g.keys_due(UnixTime::from_secs(NOW + 10)));
    let inline = config(json!({ "jwks": keys().jwks() }));
    let g = Gateway::new(Policy::from_json(&inline, &portcullis_core::NoSecrets).unwrap());
    assert!(
        !g.keys_due(UnixTime::from_secs(NOW)),
        "inline keys are never refreshed"
    );
}
