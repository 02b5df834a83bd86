//! Every presented credential must be valid: a request with a bad credential and a good one is
//! refused, whichever provider the route lists first, and whatever the token cache holds.

use futures_executor::block_on;
use http::{Request, StatusCode};
use portcullis_core::jwt::Algorithm;
use portcullis_core::testing::{keys, token};
use portcullis_core::{
    BodyError, Decision, Gateway, MemoryStore, NoFetch, Policy, Reject, RequestBody,
    RequestContext, UnixTime,
};
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;

struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

fn hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

fn route(id: &str, providers: &[&str]) -> Value {
    json!({ "id": id, "methods": ["GET"], "path": format!("/{id}"), "origin": "api", "auth": { "providers": providers } })
}

fn gateway() -> Gateway {
    let jwt = |aud: &str| json!({ "type": "jwt", "issuer": "https://idp.test/", "audiences": [aud], "algorithms": ["ES256"], "jwks": keys().jwks() });
    let config = json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9" } },
        "auth": {
            "idp": jwt("api"),
            "other": jwt("other"),
            // Its keys can never be fetched (the tests fetch with `NoFetch`).
            "remote": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"], "algorithms": ["ES256"], "jwks_url": "https://idp.test/jwks" },
            "keys": { "type": "api_key", "keys": [ { "sha256": hash("k-alice"), "consumer": "key-alice" } ] },
            "more-keys": { "type": "api_key", "keys": [ { "sha256": hash("k-bob"), "consumer": "key-bob" } ] },
            "svc": { "type": "api_key", "header": "x-service-key", "keys": [ { "sha256": hash("k-svc"), "consumer": "svc" } ] }
        },
        "routes": [
            route("jk", &["idp", "keys"]),
            route("kj", &["keys", "idp"]),
            route("jj", &["other", "idp"]),
            route("kk", &["keys", "more-keys"]),
            route("ks", &["keys", "svc"]),
            route("rk", &["remote", "keys"]),
            route("rj", &["remote", "idp"]),
            route("j", &["idp"]),
            route("kjs", &["keys", "idp", "svc"])
        ]
    });
    Gateway::new(Policy::from_json(&config.to_string(), &portcullis_core::NoSecrets).unwrap())
}

fn alice() -> String {
    token(
        Algorithm::ES256,
        &json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 300 }),
    )
}

/// The consumer the origin would be told of, or the rejection.
fn decide(g: &Gateway, path: &str, headers: &[(&str, &str)]) -> Result<String, Reject> {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let ctx = RequestContext {
        now: UnixTime::from_secs(NOW),
        request_id: "r".into(),
        peer: None,
    };
    let outcome = block_on(g.decide(
        req.body(Empty).unwrap(),
        &ctx,
        &MemoryStore::new(),
        &NoFetch,
    ));
    match outcome.decision {
        Decision::Forward(f) => Ok(f.request.headers()["x-portcullis-consumer"]
            .to_str()
            .unwrap()
            .to_owned()),
        Decision::Reject(r) => Err(r),
        Decision::Preflight(_) => panic!("no preflight in these tests"),
    }
}

fn refused(result: Result<String, Reject>) -> (StatusCode, &'static str) {
    let r = result.expect_err("must be refused");
    (r.status(), r.reason().slug())
}

fn challenges(result: Result<String, Reject>) -> Vec<String> {
    let r = result.expect_err("must be refused");
    r.to_response("r")
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;

#[test]
fn a_cached_token_does_not_excuse_an_invalid_key() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    // Verified once, so the next requests find the token in the cache.
    assert_eq!(
        decide(&g, "/jk", &[("authorization", &t)]).unwrap(),
        "alice"
    );
    for path in ["/jk", "/kj"] {
        let bad_key = [("authorization", t.as_str()), ("x-api-key", "k-mallory")];
        assert_eq!(
            refused(decide(&g, path, &bad_key)),
            (UNAUTHORIZED, "api_key_invalid"),
            "{path}"
        );
        let repeated = [
            ("authorization", t.as_str()),
            ("x-api-key", "k-alice"),
            ("x-api-key", "k-alice"),
        ];
        assert_eq!(
            refused(decide(&g, path, &repeated)),
            (UNAUTHORIZED, "api_key_repeated"),
            "{path}"
        );
    }
}

#[test]
fn both_valid_names_the_first_provider_in_route_order() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    let both = [("authorization", t.as_str()), ("x-api-key", "k-alice")];
    assert_eq!(decide(&g, "/jk", &both).unwrap(), "alice");
    assert_eq!(decide(&g, "/kj", &both).unwrap(), "key-alice");
    // Header order does not matter, only the route's.
    let reversed = [("x-api-key", "k-alice"), ("authorization", t.as_str())];
    assert_eq!(decide(&g, "/jk", &reversed).unwrap(), "alice");
    // The key's provider comes first; the token's provider, second, comes before svc's.
    let three = [
        ("x-service-key", "k-svc"),
        ("authorization", t.as_str()),
        ("x-api-key", "k-alice"),
    ];
    assert_eq!(decide(&g, "/kjs", &three).unwrap(), "key-alice");
    assert_eq!(decide(&g, "/kjs", &three[..2]).unwrap(), "alice");
}

#[test]
fn an_invalid_token_is_not_excused_by_a_valid_key() {
    let g = gateway();
    let expired = token(
        Algorithm::ES256,
        &json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW - 300 }),
    );
    let t = format!("Bearer {expired}");
    for path in ["/jk", "/kj"] {
        let req = [("authorization", t.as_str()), ("x-api-key", "k-alice")];
        assert_eq!(
            refused(decide(&g, path, &req)),
            (UNAUTHORIZED, "token_expired"),
            "{path}"
        );
        assert_eq!(
            challenges(decide(&g, path, &req))
                .iter()
                .filter(|c| c.contains("error=\"invalid_token\""))
                .count(),
            1,
            "{path}"
        );
        for malformed in ["Bearer", "Bearer ", "Bearer a b", "garbage"] {
            let req = [("authorization", malformed), ("x-api-key", "k-alice")];
            assert_eq!(
                refused(decide(&g, path, &req)),
                (UNAUTHORIZED, "authorization_malformed"),
                "{path} {malformed:?}"
            );
        }
        let token_malformed = [("authorization", "Bearer a.b.c"), ("x-api-key", "k-alice")];
        assert_eq!(
            refused(decide(&g, path, &token_malformed)),
            (UNAUTHORIZED, "token_malformed"),
            "{path}"
        );
        let two = [
            ("authorization", t.as_str()),
            ("authorization", t.as_str()),
            ("x-api-key", "k-alice"),
        ];
        assert_eq!(
            refused(decide(&g, path, &two)),
            (UNAUTHORIZED, "authorization_malformed"),
            "{path}"
        );
    }
}

#[test]
fn a_refused_key_does_not_claim_the_token_was_invalid() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    let req = [("authorization", t.as_str()), ("x-api-key", "k-mallory")];
    let got = challenges(decide(&g, "/kj", &req));
    assert!(got.iter().all(|c| !c.contains("invalid_token")), "{got:?}");
}

#[test]
fn another_scheme_is_no_bearer_credential() {
    let g = gateway();
    let basic = [
        ("authorization", "Basic YWxpY2U6cHc="),
        ("x-api-key", "k-alice"),
    ];
    assert_eq!(decide(&g, "/jk", &basic).unwrap(), "key-alice");
    assert_eq!(decide(&g, "/kj", &basic).unwrap(), "key-alice");
    assert_eq!(
        refused(decide(&g, "/jk", &basic[..1])),
        (UNAUTHORIZED, "missing_credentials")
    );
}

#[test]
fn a_token_one_jwt_provider_refuses_and_another_accepts_is_valid() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    assert_eq!(
        decide(&g, "/jj", &[("authorization", &t)]).unwrap(),
        "alice"
    );
    let neither = format!(
        "Bearer {}",
        token(
            Algorithm::ES256,
            &json!({ "iss": "https://idp.test/", "aud": "nobody", "sub": "alice", "exp": NOW + 300 }),
        )
    );
    assert_eq!(
        refused(decide(&g, "/jj", &[("authorization", &neither)])),
        (UNAUTHORIZED, "token_audience")
    );
}

#[test]
fn a_key_any_provider_reading_its_header_lists_is_valid() {
    let g = gateway();
    assert_eq!(
        decide(&g, "/kk", &[("x-api-key", "k-alice")]).unwrap(),
        "key-alice"
    );
    assert_eq!(
        decide(&g, "/kk", &[("x-api-key", "k-bob")]).unwrap(),
        "key-bob"
    );
    assert_eq!(
        refused(decide(&g, "/kk", &[("x-api-key", "k-svc")])),
        (UNAUTHORIZED, "api_key_invalid")
    );
    let two = [("x-service-key", "k-svc"), ("x-api-key", "k-mallory")];
    assert_eq!(
        refused(decide(&g, "/ks", &two)),
        (UNAUTHORIZED, "api_key_invalid")
    );
    let two = [("x-service-key", "k-mallory"), ("x-api-key", "k-alice")];
    assert_eq!(
        refused(decide(&g, "/ks", &two)),
        (UNAUTHORIZED, "api_key_invalid")
    );
}

#[test]
fn a_header_the_route_does_not_read_is_not_a_credential() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    let req = [
        ("authorization", t.as_str()),
        ("x-api-key", "k-mallory"),
        ("x-service-key", "k-mallory"),
    ];
    assert_eq!(decide(&g, "/j", &req).unwrap(), "alice");
    let req = [
        ("authorization", "Bearer garbage"),
        ("x-api-key", "k-alice"),
    ];
    assert_eq!(
        decide(&g, "/kk", &req).unwrap(),
        "key-alice",
        "no JWT provider on the route reads Authorization"
    );
}

#[test]
fn a_token_that_cannot_be_decided_is_not_excused_by_a_valid_key() {
    let g = gateway();
    let t = format!("Bearer {}", alice());
    let req = [("authorization", t.as_str()), ("x-api-key", "k-alice")];
    assert_eq!(
        refused(decide(&g, "/rk", &req)),
        (StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable")
    );
    assert_eq!(
        refused(decide(&g, "/rk", &req[..1])),
        (StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable")
    );
    // Without a token, the key alone is enough: no credential is undecided.
    assert_eq!(decide(&g, "/rk", &req[1..]).unwrap(), "key-alice");
    // A refused credential is a 401 whatever the keys say.
    let bad_key = [("authorization", t.as_str()), ("x-api-key", "k-mallory")];
    assert_eq!(
        refused(decide(&g, "/rk", &bad_key)),
        (UNAUTHORIZED, "api_key_invalid")
    );
    // Another JWT provider that accepts the token decides it.
    assert_eq!(decide(&g, "/rj", &req[..1]).unwrap(), "alice");
}
