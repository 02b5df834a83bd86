//! The whole decision path, driven with a fixed clock, an in-memory store and in-memory bodies.

use futures_executor::block_on;
use http::{Method, Request, StatusCode};
use portcullis_core::jwt::Algorithm;
use portcullis_core::testing::{keys, token, HS_SECRET};
use portcullis_core::{
    Decision, Forward, ForwardBody, Gateway, MemoryStore, NoFetch, Policy, Reject, RequestContext,
    UnixTime,
};
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;

use portcullis_core::testing::MemoryBody as Bytes;

fn api_key_hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

fn config() -> Value {
    json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9999/base", "timeout_ms": 750 } },
        "auth": {
            "idp": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                     "algorithms": ["RS256", "ES256", "HS256"], "jwks": keys().jwks(), "secret_env": "HS" },
            "keys": { "type": "api_key", "keys": [ { "sha256": api_key_hash("k-123"), "consumer": "svc", "scopes": ["orders:read"] } ] }
        },
        "quotas": { "per-consumer": { "limit": 3, "window_s": 60, "by": "consumer" } },
        "routes": [
            { "id": "health", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none" },
            { "id": "get-order", "methods": ["GET"], "path": "/v1/orders/{id}", "origin": "api",
              "auth": { "providers": ["idp", "keys"], "scopes": ["orders:read"] }, "quota": "per-consumer" },
            { "id": "create-order", "methods": ["POST"], "path": "/v1/orders", "origin": "api",
              "auth": { "providers": ["idp"], "scopes": ["orders:write"], "claims": { "tier": "gold" } },
              "request": { "max_body_bytes": 64, "body_schema": { "type": "object", "required": ["sku"],
                "properties": { "sku": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } } },
                "query_schema": { "type": "object", "properties": { "dry_run": { "enum": ["true", "false"] } }, "additionalProperties": false } } },
            { "id": "shadowed", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none" }
        ]
    })
}

fn gateway() -> Gateway {
    let secrets = |name: &str| (name == "HS").then(|| HS_SECRET.to_owned());
    Gateway::new(Policy::from_json(&config().to_string(), &secrets).expect("valid config"))
}

fn claims(scope: &str) -> Value {
    json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 300, "scope": scope, "tier": "gold" })
}

fn ctx() -> RequestContext {
    RequestContext {
        now: UnixTime::from_secs(NOW),
        request_id: "req-1".into(),
        peer: Some([192, 0, 2, 7].into()),
    }
}

fn run(
    g: &Gateway,
    store: &MemoryStore,
    req: Request<Bytes>,
) -> Result<Box<Forward<Bytes>>, Reject> {
    match block_on(g.decide(req, &ctx(), store, &NoFetch)).decision {
        Decision::Forward(f) => Ok(f),
        Decision::Reject(r) => Err(r),
        Decision::Preflight(_) => panic!("no preflight in these tests"),
    }
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().method(Method::GET).uri(path)
}

fn empty(b: http::request::Builder) -> Request<Bytes> {
    b.body(Bytes(Vec::new())).unwrap()
}

#[test]
fn a_public_route_is_forwarded_to_the_first_match() {
    let f = run(&gateway(), &MemoryStore::new(), empty(get("/health?x=1"))).unwrap();
    assert_eq!(f.request.uri(), "http://127.0.0.1:9999/base/health?x=1");
    assert_eq!(f.request.headers()["x-portcullis-route"], "health");
    assert_eq!(f.request.headers()["x-portcullis-request-id"], "req-1");
    assert!(f.request.headers().get("x-portcullis-consumer").is_none());
    assert_eq!(f.timeout.as_millis(), 750);
}

#[test]
fn the_origin_receives_the_normalised_path() {
    let t = token(Algorithm::RS256, &claims("orders:read"));
    let req = empty(get("/v1/%6frders/%41%2b").header("authorization", format!("Bearer {t}")));
    let f = run(&gateway(), &MemoryStore::new(), req).unwrap();
    assert_eq!(f.request.uri().path(), "/base/v1/orders/A%2B");
}

#[test]
fn gateway_headers_from_the_client_are_replaced_and_the_api_key_is_dropped() {
    let req = empty(
        get("/v1/orders/1")
            .header("x-api-key", "k-123")
            .header("X-Portcullis-Consumer", "admin")
            .header("x-portcullis-anything", "1")
            .header("connection", "close, x-secret")
            .header("x-secret", "hop")
            .header("x-forwarded-for", "203.0.113.1"),
    );
    let f = run(&gateway(), &MemoryStore::new(), req).unwrap();
    let h = f.request.headers();
    assert_eq!(h["x-portcullis-consumer"], "svc");
    assert!(h.get("x-portcullis-anything").is_none());
    assert!(h.get("x-api-key").is_none());
    assert!(h.get("connection").is_none());
    assert!(
        h.get("x-secret").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(
        h["x-forwarded-for"], "192.0.2.7",
        "no proxy is trusted, so the client's own X-Forwarded-For is dropped"
    );
}

#[test]
fn unknown_paths_and_methods() {
    let g = gateway();
    let s = MemoryStore::new();
    let r = run(&g, &s, empty(get("/nope"))).unwrap_err();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = run(
        &g,
        &s,
        empty(Request::builder().method(Method::DELETE).uri("/health")),
    )
    .unwrap_err();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.to_response("id").headers()["allow"], "GET, HEAD");
    let r = run(&g, &s, empty(get("/v1/orders/1/../2"))).unwrap_err();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn credentials_are_required_and_checked() {
    let g = gateway();
    let s = MemoryStore::new();
    let r = run(&g, &s, empty(get("/v1/orders/1"))).unwrap_err();
    assert_eq!(
        (r.status(), r.reason().slug()),
        (StatusCode::UNAUTHORIZED, "missing_credentials")
    );
    let challenges: Vec<_> = r
        .to_response("id")
        .headers()
        .get_all("www-authenticate")
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        challenges.len(),
        2,
        "one challenge per scheme: {challenges:?}"
    );

    let r = run(
        &g,
        &s,
        empty(get("/v1/orders/1").header("x-api-key", "wrong")),
    )
    .unwrap_err();
    assert_eq!(r.reason().slug(), "api_key_invalid");
    let r = run(
        &g,
        &s,
        empty(get("/v1/orders/1").header("authorization", "Bearer a.b.c")),
    )
    .unwrap_err();
    assert_eq!(r.reason().slug(), "token_malformed");
    let two = get("/v1/orders/1")
        .header("x-api-key", "k-123")
        .header("x-api-key", "k-123");
    assert_eq!(
        run(&g, &s, empty(two)).unwrap_err().reason().slug(),
        "api_key_repeated"
    );
}

#[test]
fn scopes_and_claims_give_403() {
    let g = gateway();
    let s = MemoryStore::new();
    let t = token(Algorithm::ES256, &claims("orders:write"));
    let r = run(
        &g,
        &s,
        empty(get("/v1/orders/1").header("authorization", format!("Bearer {t}"))),
    )
    .unwrap_err();
    assert_eq!(
        (r.status(), r.reason().slug()),
        (StatusCode::FORBIDDEN, "scope")
    );

    let mut c = claims("orders:write");
    c["tier"] = json!("silver");
    let t = token(Algorithm::ES256, &c);
    let post = Request::post("/v1/orders")
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json");
    let r = run(
        &g,
        &s,
        post.body(Bytes(br#"{"sku":"a"}"#.to_vec())).unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        (r.status(), r.reason().slug()),
        (StatusCode::FORBIDDEN, "claim")
    );

    let mut c = claims("orders:write");
    c["scp"] = json!(["orders:read"]);
    c.as_object_mut().unwrap().remove("scope");
    let t = token(Algorithm::HS256, &c);
    assert!(run(
        &g,
        &s,
        empty(get("/v1/orders/1").header("authorization", format!("Bearer {t}")))
    )
    .is_ok());
}

fn post(body: &[u8], content_type: &str, query: &str) -> Request<Bytes> {
    let t = token(Algorithm::RS256, &claims("orders:write"));
    Request::post(format!("/v1/orders{query}"))
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(Bytes(body.to_vec()))
        .unwrap()
}

#[test]
fn bodies_are_checked_and_forwarded_byte_for_byte() {
    let g = gateway();
    let s = MemoryStore::new();
    let body = br#"{ "sku": "a",  "qty": 2 }"#;
    let f = run(
        &g,
        &s,
        post(body, "application/json; charset=utf-8", "?dry_run=true"),
    )
    .unwrap();
    match &f.request.body() {
        ForwardBody::Buffered(b) => assert_eq!(b, body),
        ForwardBody::Stream(_) => panic!("inspected bodies are forwarded as checked"),
    }
    assert_eq!(
        f.request.headers()["content-length"],
        body.len().to_string().as_str()
    );

    let status = |req| run(&g, &s, req).unwrap_err();
    let r = status(post(
        br#"{"sku":"a","qty":0,"extra":"#,
        "application/json",
        "",
    ));
    assert_eq!((r.status().as_u16(), r.reason().slug()), (422, "not_json"));
    let r = status(post(br#"{"qty":0}"#, "application/json", ""));
    assert_eq!((r.status().as_u16(), r.reason().slug()), (422, "schema"));
    match r.kind() {
        portcullis_core::RejectKind::InvalidBody { errors } => {
            let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
            assert!(
                pointers.contains(&"/qty") && pointers.contains(&""),
                "{pointers:?}"
            );
            assert!(
                errors.iter().all(|e| !e.detail.contains('0')),
                "values are never echoed: {errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let r = status(post(br#"{"sku":"a","sku":"b"}"#, "application/json", ""));
    assert_eq!(r.reason().slug(), "not_json", "duplicate keys are refused");
    let r = status(post(br#"{"sku":"a"}"#, "text/plain", ""));
    assert_eq!(r.status().as_u16(), 415);
    let r = status(post(&[b' '; 65], "application/json", ""));
    assert_eq!(r.status().as_u16(), 413);
    let r = status(post(
        br#"{"sku":"a"}"#,
        "application/json",
        "?dry_run=maybe",
    ));
    assert_eq!(
        (r.status().as_u16(), r.reason().slug()),
        (422, "query_schema")
    );
}

#[test]
fn quota_runs_after_authentication_and_answers_429_with_headers() {
    let g = gateway();
    let s = MemoryStore::new();
    // Unauthenticated requests never consume the consumer's quota.
    for _ in 0..10 {
        assert_eq!(
            run(&g, &s, empty(get("/v1/orders/1")))
                .unwrap_err()
                .status()
                .as_u16(),
            401
        );
    }
    let req = || empty(get("/v1/orders/1").header("x-api-key", "k-123"));
    for remaining in [2, 1, 0] {
        let f = run(&g, &s, req()).unwrap();
        assert_eq!(
            f.response_headers["ratelimit"],
            format!("\"per-consumer\";r={remaining};t={}", 20 * (3 - remaining)).as_str()
        );
    }
    let r = run(&g, &s, req()).unwrap_err();
    assert_eq!(r.status().as_u16(), 429);
    let response = r.to_response("req-1");
    assert_eq!(response.headers()["retry-after"], "20");
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"per-consumer\";q=3;w=60"
    );
    assert_eq!(response.headers()["ratelimit"], "\"per-consumer\";r=0;t=20");
    // Another consumer has its own budget.
    let t = token(Algorithm::RS256, &claims("orders:read"));
    assert!(run(
        &g,
        &s,
        empty(get("/v1/orders/1").header("authorization", format!("Bearer {t}")))
    )
    .is_ok());
}

#[test]
fn problems_are_rfc9457_with_a_request_id() {
    let r = run(&gateway(), &MemoryStore::new(), empty(get("/nope"))).unwrap_err();
    let response = r.to_response("req-1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["type"], "urn:portcullis:problem:not-found");
    assert_eq!(body["status"], 404);
    assert_eq!(body["request_id"], "req-1");
    assert!(body["title"].is_string() && body["detail"].is_string());
}
