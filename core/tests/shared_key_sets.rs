//! Gateways that share no memory, only a store ([`Gateway::with_shared_key_sets`]), as Spin's
//! instances do: concurrent requests that need the key set cost the IdP one fetch, and every
//! one of them verifies its token with the fetched set. The ring-level cases (claims that
//! expire, lost races, store failures, garbage) are in `core/src/jwks/shared/tests.rs`.

use std::cell::Cell;
use std::time::Duration;

use futures_executor::block_on;
use futures_util::future::{join, join_all};
use http::Request;
use portcullis_core::jwt::Algorithm;
use portcullis_core::testing::{keys, token, yield_now, MemoryKeySets};
use portcullis_core::{
    BodyError, Decision, Fetch, FetchError, FetchResponse, Gateway, MemoryStore, NoSecrets, Policy,
    RequestBody, RequestContext, UnixTime,
};
use serde_json::json;

const NOW: u64 = 1_750_000_000;

#[derive(Debug)]
struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

/// Serves the test JWKS, counts fetches, and answers only once `open`.
struct Idp {
    open: Cell<bool>,
    fetches: Cell<usize>,
}

impl Fetch for Idp {
    async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        self.fetches.set(self.fetches.get() + 1);
        while !self.open.get() {
            yield_now().await;
        }
        Ok(FetchResponse {
            status: 200,
            body: keys().jwks().to_string().into_bytes(),
            cache_control: None,
        })
    }
}

/// One instance: the policy compiled afresh, its key sets coordinated through `store`.
fn instance(store: &MemoryKeySets) -> Gateway {
    let config = json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9999" } },
        "auth": { "idp": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                           "algorithms": ["ES256"], "jwks_url": "https://idp.test/jwks" } },
        "routes": [ { "id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                      "auth": { "providers": ["idp"] } } ]
    });
    Gateway::new(Policy::from_json(&config.to_string(), &NoSecrets).unwrap())
        .with_shared_key_sets(store.clone())
}

async fn status(g: &Gateway, idp: &Idp) -> u16 {
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
    match g
        .decide(request, &ctx, &MemoryStore::new(), idp)
        .await
        .decision
    {
        Decision::Forward(_) => 200,
        Decision::Reject(r) => r.status().as_u16(),
        Decision::Preflight(_) => panic!("no preflight in these tests"),
    }
}

#[test]
fn concurrent_instances_fetch_once_and_all_verify_with_the_fetched_set() {
    let store = MemoryKeySets::default();
    let idp = Idp {
        open: Cell::new(false),
        fetches: Cell::new(0),
    };
    let instances: Vec<Gateway> = (0..10).map(|_| instance(&store)).collect();
    let requests = join_all(instances.iter().map(|g| status(g, &idp)));
    let release = async {
        // Open the IdP once the nine others have been waiting a while (or, should they never
        // wait, after a bounded spin, so that the test fails on its counts rather than hangs).
        for _ in 0..10_000 {
            if store.pauses() >= 9 * 3 {
                break;
            }
            yield_now().await;
        }
        idp.open.set(true);
    };
    let (statuses, ()) = block_on(join(requests, release));
    assert_eq!(statuses, [200; 10]);
    assert_eq!(idp.fetches.get(), 1);

    let name = &instance(&store).key_set_names()[0];
    assert!(
        store.get(name).is_some(),
        "published under the key-set name"
    );
    assert_eq!(block_on(status(&instance(&store), &idp)), 200);
    assert_eq!(
        idp.fetches.get(),
        1,
        "a later instance uses the published set"
    );
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
}
