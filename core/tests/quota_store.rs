//! The quota phase against stores that fail and stores that spend all or none: what a quota's
//! `on_store_error` and the deployment's default do, and what a refused request costs.

use futures_executor::block_on;
use http::{Method, Request, StatusCode};
use portcullis_core::testing::MemoryBody as Bytes;
use portcullis_core::{
    CounterStore, Decision, Gateway, MemoryStore, NoFetch, OnStoreError, Outcome, Policy, Rate,
    RequestContext, Spend, StoreError, UnixTime, Verdict,
};
use serde_json::json;

fn gateway() -> Gateway {
    let config = json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9999", "timeout_ms": 750 } },
        "quotas": {
            "wide": { "limit": 5, "window_s": 60, "by": "route" },
            "narrow": { "limit": 2, "window_s": 60, "by": "route" },
            "lenient": { "limit": 5, "window_s": 60, "by": "route", "on_store_error": "allow" },
            "strict": { "limit": 5, "window_s": 60, "by": "route", "on_store_error": "deny" }
        },
        "routes": [
            { "id": "both", "methods": ["GET"], "path": "/both", "origin": "api", "auth": "none",
              "quota": ["wide", "narrow"] },
            { "id": "wide-only", "methods": ["GET"], "path": "/wide", "origin": "api", "auth": "none",
              "quota": "wide" },
            { "id": "unsaid", "methods": ["GET"], "path": "/unsaid", "origin": "api", "auth": "none",
              "quota": "narrow" },
            { "id": "lenient", "methods": ["GET"], "path": "/lenient", "origin": "api", "auth": "none",
              "quota": "lenient" },
            { "id": "strict", "methods": ["GET"], "path": "/strict", "origin": "api", "auth": "none",
              "quota": "strict" },
            { "id": "free", "methods": ["GET"], "path": "/free", "origin": "api", "auth": "none" }
        ]
    });
    Gateway::new(Policy::from_json(&config.to_string(), &|_: &str| None).expect("valid"))
}

fn decide<S: CounterStore>(g: &Gateway, store: &S, path: &str) -> Outcome<Bytes> {
    let ctx = RequestContext {
        now: UnixTime::from_secs(1_750_000_000),
        request_id: "r".into(),
        peer: None,
    };
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Bytes(Vec::new()))
        .unwrap();
    block_on(g.decide(request, &ctx, store, &NoFetch))
}

fn status<B>(outcome: &Outcome<B>) -> StatusCode {
    match &outcome.decision {
        Decision::Forward(_) => StatusCode::OK,
        Decision::Reject(r) => r.status(),
        Decision::Preflight(_) => StatusCode::NO_CONTENT,
    }
}

/// A store whose backend always fails, deployed with `default` for quotas that do not say.
struct Down {
    default: OnStoreError,
    asked: std::cell::Cell<usize>,
}

impl Down {
    fn new(default: OnStoreError) -> Self {
        Down {
            default,
            asked: 0.into(),
        }
    }
}

impl CounterStore for Down {
    async fn apply(&self, _: &str, _: Rate, _: UnixTime) -> Result<Verdict, StoreError> {
        self.asked.set(self.asked.get() + 1);
        Err(StoreError::Timeout)
    }

    async fn peek(&self, _: &str, _: Rate, _: UnixTime) -> Result<Verdict, StoreError> {
        self.asked.set(self.asked.get() + 1);
        Err(StoreError::Timeout)
    }

    fn on_error(&self) -> OnStoreError {
        self.default
    }
}

/// Memory, but asked one key at a time: the trait's default `apply_all`.
struct OneByOne(MemoryStore);

impl CounterStore for OneByOne {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.0.apply_now(key, rate, now)
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.0.peek_now(key, rate, now)
    }
}

#[test]
fn a_failing_store_fails_closed_by_default_and_says_how_it_failed() {
    let g = gateway();
    let store = Down::new(OnStoreError::Deny);
    let outcome = decide(&g, &store, "/unsaid");
    assert_eq!(status(&outcome), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(outcome.log.store_error, Some(StoreError::Timeout));
    let Decision::Reject(reject) = &outcome.decision else {
        panic!("refused")
    };
    let response = reject.to_response("r");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[test]
fn the_deployment_default_applies_only_to_quotas_that_do_not_say() {
    let g = gateway();
    let allow = Down::new(OnStoreError::Allow);
    let admitted = decide(&g, &allow, "/unsaid");
    assert_eq!(status(&admitted), StatusCode::OK);
    assert_eq!(admitted.log.store_error, Some(StoreError::Timeout));
    // A quota that says `deny` stays closed whatever the deployment chose…
    assert_eq!(
        status(&decide(&g, &allow, "/strict")),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // …and one that says `allow` passes under a fail-closed deployment.
    let deny = Down::new(OnStoreError::Deny);
    assert_eq!(status(&decide(&g, &deny, "/lenient")), StatusCode::OK);
    assert_eq!(
        status(&decide(&g, &deny, "/unsaid")),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn a_route_without_quotas_never_asks_the_store() {
    let g = gateway();
    let store = Down::new(OnStoreError::Deny);
    let outcome = decide(&g, &store, "/free");
    assert_eq!(status(&outcome), StatusCode::OK);
    assert_eq!(store.asked.get(), 0);
    assert_eq!(outcome.log.store_error, None);
}

#[test]
fn the_memory_store_spends_all_of_a_routes_quotas_or_none() {
    let g = gateway();
    let store = MemoryStore::new();
    // `narrow` (2) refuses the third request to /both; `wide` (5) must not count it.
    for expected in [200, 200, 429, 429, 429] {
        assert_eq!(status(&decide(&g, &store, "/both")).as_u16(), expected);
    }
    // `wide` spent 2 of 5 by route "both"; a route of its own is another bucket, so check the
    // same bucket by asking /both's key directly.
    let wide = Rate {
        limit: 5.try_into().unwrap(),
        window_us: 60_000_000,
    };
    let key = portcullis_core::quota::store_key(
        "wide",
        wide,
        &portcullis_core::config::QuotaBy::Route,
        "both",
    );
    let now = UnixTime::from_secs(1_750_000_000);
    let left = store.apply_now(key.as_str(), wide, now).unwrap();
    assert!(left.allowed);
    assert_eq!(left.remaining, 2, "5 - 2 admitted - this one");
}

#[test]
fn a_store_asked_one_key_at_a_time_keeps_what_earlier_quotas_counted() {
    let g = gateway();
    let store = OneByOne(MemoryStore::new());
    for expected in [200, 200, 429, 429, 429] {
        assert_eq!(status(&decide(&g, &store, "/both")).as_u16(), expected);
    }
    let wide = Rate {
        limit: 5.try_into().unwrap(),
        window_us: 60_000_000,
    };
    let key = portcullis_core::quota::store_key(
        "wide",
        wide,
        &portcullis_core::config::QuotaBy::Route,
        "both",
    );
    let now = UnixTime::from_secs(1_750_000_000);
    // Each refused request spent `wide` before `narrow` refused it: 5 spent, none left.
    assert!(!store.0.apply_now(key.as_str(), wide, now).unwrap().allowed);
}

#[test]
fn all_or_none_under_one_lock_stops_at_the_first_refusal() {
    let store = MemoryStore::new();
    let rate = |limit: u32| Rate {
        limit: limit.try_into().unwrap(),
        window_us: 60_000_000,
    };
    let by = portcullis_core::config::QuotaBy::Consumer;
    let spend = |q: &str, limit| Spend {
        key: portcullis_core::quota::store_key(q, rate(limit), &by, "alice"),
        rate: rate(limit),
    };
    let spends = [spend("a", 3), spend("b", 1), spend("c", 3)];
    let now = UnixTime::from_secs(100);
    let first = store.apply_all_now(&spends, now);
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|v| v.as_ref().unwrap().allowed));
    let second = store.apply_all_now(&spends, now);
    assert_eq!(second.len(), 2, "c is not asked once b refuses");
    assert!(second[0].as_ref().unwrap().allowed);
    assert!(!second[1].as_ref().unwrap().allowed);
    // a and c each spent one, not two.
    assert_eq!(
        store
            .apply_now(spends[0].key.as_str(), rate(3), now)
            .unwrap()
            .remaining,
        1
    );
    assert_eq!(
        store
            .apply_now(spends[2].key.as_str(), rate(3), now)
            .unwrap()
            .remaining,
        1
    );
    let parts = &spends[0].key;
    assert_eq!(parts.bucket().len(), 32);
    assert!(parts.bucket().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(parts.quota(), "a|3/60000000us|consumer");
    assert_eq!(
        parts.as_str(),
        format!("{}|{}", parts.quota(), parts.bucket())
    );
}
