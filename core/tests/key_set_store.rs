//! Key-set state kept outside the gateway, for runtimes with no memory between requests: a
//! fresh gateway restored from a stored state verifies tokens without fetching the JWKS again,
//! and state is never applied to a provider whose key source has changed.

use std::cell::Cell;
use std::time::Duration;

use futures_executor::block_on;
use http::Request;
use portcullis_core::jwt::Algorithm;
use portcullis_core::testing::{keys, token};
use portcullis_core::{
    BodyError, Decision, Fetch, FetchError, FetchResponse, Gateway, KeySetState, MemoryStore,
    NoFetch, NoSecrets, Policy, RequestBody, RequestContext, UnixTime,
};
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;

#[derive(Debug)]
struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

/// Serves the test JWKS and counts fetches.
#[derive(Default)]
struct Idp {
    fetches: Cell<usize>,
}

impl Fetch for Idp {
    async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        self.fetches.set(self.fetches.get() + 1);
        Ok(FetchResponse {
            status: 200,
            body: keys().jwks().to_string().into_bytes(),
            cache_control: None,
        })
    }
}

fn config(jwks_url: &str) -> Value {
    json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9999" } },
        "auth": { "idp": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                           "algorithms": ["ES256"], "jwks_url": jwks_url } },
        "routes": [ { "id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                      "auth": { "providers": ["idp"] } } ]
    })
}

fn gateway(jwks_url: &str) -> Gateway {
    Gateway::new(Policy::from_json(&config(jwks_url).to_string(), &NoSecrets).unwrap())
}

fn status<F: Fetch>(g: &Gateway, fetch: &F) -> u16 {
    let claims =
        json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 300 });
    let request = Request::get("/r")
        .header(
            "authorization",
            format!("Bearer {}", token(Algorithm::ES256, &claims)),
        )
        .body(Empty)
        .unwrap();
    let ctx = RequestContext {
        now: UnixTime::from_secs(NOW),
        request_id: "req".into(),
        peer: None,
    };
    match block_on(g.decide(request, &ctx, &MemoryStore::new(), fetch)).decision {
        Decision::Forward(_) => 200,
        Decision::Reject(r) => r.status().as_u16(),
        Decision::Preflight(_) => panic!("no preflight in these tests"),
    }
}

/// The states a store would hold after `g` served a request, as JSON text.
fn stored(g: &Gateway) -> Vec<(String, String)> {
    block_on(g.key_sets())
        .into_iter()
        .map(|(name, state)| (name, serde_json::to_string(&state).unwrap()))
        .collect()
}

#[test]
fn a_restored_state_spares_the_fetch() {
    let url = "https://idp.test/jwks";
    let first = gateway(url);
    assert_eq!(stored(&first).len(), 1, "one remote provider, one state");
    let before = stored(&first);
    let idp = Idp::default();
    assert_eq!(status(&first, &idp), 200);
    assert_eq!(idp.fetches.get(), 1);
    let after = stored(&first);
    assert_ne!(
        before, after,
        "a fetch changes the state, so the runtime writes it back"
    );

    let fresh = gateway(url);
    assert_eq!(fresh.key_set_names(), [after[0].0.clone()]);
    for (name, text) in &after {
        let state: KeySetState = serde_json::from_str(text).unwrap();
        assert!(block_on(fresh.restore_key_set(name, state)));
    }
    assert_eq!(
        status(&fresh, &NoFetch),
        200,
        "verified with the restored keys, no fetch"
    );
    assert_eq!(
        stored(&fresh),
        after,
        "nothing changed, nothing to write back"
    );
}

#[test]
fn state_is_named_by_provider_and_source() {
    let a = gateway("https://idp.test/jwks");
    let b = gateway("https://other.test/jwks");
    assert_ne!(a.key_set_names(), b.key_set_names());
    assert!(a.key_set_names()[0].starts_with("idp:"));

    let idp = Idp::default();
    assert_eq!(status(&a, &idp), 200);
    let (name, state) = block_on(a.key_sets()).remove(0);
    assert!(
        !block_on(b.restore_key_set(&name, state)),
        "another source's state is not applied"
    );
    assert_eq!(status(&b, &NoFetch), 503, "b has no keys of its own yet");
}
