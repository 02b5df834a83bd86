//! Lockout through the whole decision: 401s counted per client address, the block refusing
//! before anything is verified, and the `lockout_started` event, on the in-memory store.

use futures_executor::block_on;
use http::{Request, StatusCode};
use portcullis_core::testing::MemoryBody as Bytes;
use portcullis_core::{
    Decision, Gateway, MemoryStore, NoFetch, Outcome, Policy, RequestContext, UnixTime,
};
use serde_json::json;

const KEY: &str = "alice-key-TEST-ONLY-0001";

fn gateway() -> Gateway {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(KEY.as_bytes()));
    let config = json!({
        "version": 1,
        "lockout": { "failures": 2, "window_s": 3600, "block_s": 60 },
        "origins": { "api": { "url": "http://127.0.0.1:9999", "timeout_ms": 750 } },
        "auth": { "keys": { "type": "api_key", "keys": [ { "sha256": digest, "consumer": "alice" } ] } },
        "routes": [
            { "id": "login", "methods": ["GET"], "path": "/login", "origin": "api",
              "auth": { "providers": ["keys"] } }
        ]
    });
    Gateway::new(Policy::from_json(&config.to_string(), &|_: &str| None).expect("valid"))
}

fn decide(
    g: &Gateway,
    store: &MemoryStore,
    at: u64,
    peer: [u8; 4],
    key: Option<&str>,
) -> Outcome<Bytes> {
    let ctx = RequestContext {
        now: UnixTime::from_secs(1_750_000_000 + at),
        request_id: format!("r{at}"),
        peer: Some(peer.into()),
    };
    let mut request = Request::builder().uri("/login");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    block_on(g.decide(
        request.body(Bytes(Vec::new())).unwrap(),
        &ctx,
        store,
        &NoFetch,
    ))
}

fn status(outcome: &Outcome<Bytes>) -> StatusCode {
    match &outcome.decision {
        Decision::Forward(_) => StatusCode::OK,
        Decision::Reject(r) => r.status(),
        Decision::Preflight(_) => StatusCode::NO_CONTENT,
    }
}

#[test]
fn failures_block_the_address_and_the_block_ends() {
    let (g, s) = (gateway(), MemoryStore::new());
    let bad = Some("wrong-key");
    let first = decide(&g, &s, 0, [192, 0, 2, 1], bad);
    assert_eq!(status(&first), StatusCode::UNAUTHORIZED);
    assert!(first.log.lockout.is_none());
    let second = decide(&g, &s, 1, [192, 0, 2, 1], bad);
    assert_eq!(status(&second), StatusCode::UNAUTHORIZED);
    let started = second.log.lockout.expect("the second 401 starts the block");
    assert_eq!((started.scope.as_str(), started.block_s), ("*", 60));
    let blocked = decide(&g, &s, 2, [192, 0, 2, 1], Some(KEY));
    assert_eq!(status(&blocked), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        decide(&g, &s, 2, [192, 0, 2, 2], Some(KEY)).log.lockout,
        None
    );
    assert_eq!(
        status(&decide(&g, &s, 2, [192, 0, 2, 2], Some(KEY))),
        StatusCode::OK
    );
    assert_eq!(
        status(&decide(&g, &s, 61, [192, 0, 2, 1], Some(KEY))),
        StatusCode::OK
    );
}
