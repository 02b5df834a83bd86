//! `SchemaCompilation::OnFirstUse`: for runtimes that compile the policy on every request. Only
//! the matched route's schemas are compiled, and a schema that turns out broken then still fails
//! closed: 503 `no-policy`, nothing forwarded, the problem with its JSON pointer in the log facts.

use futures_executor::block_on;
use http::{Method, Request};
use portcullis_core::{
    Decision, Gateway, MemoryStore, NoFetch, NoSecrets, Policy, RejectKind, RequestContext,
    SchemaCompilation, UnixTime,
};
use serde_json::{json, Value};

use portcullis_core::testing::MemoryBody as Bytes;

/// Route `orders` has a good body schema; route `broken` a schema no validator accepts.
fn config() -> Value {
    json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9999" } },
        "routes": [
            { "id": "orders", "methods": ["POST"], "path": "/orders", "origin": "api", "auth": "none",
              "request": { "body_schema": { "type": "object", "required": ["sku"] } } },
            { "id": "broken", "methods": ["POST"], "path": "/broken", "origin": "api", "auth": "none",
              "request": { "query_schema": { "type": "object" },
                           "body_schema": { "type": "object", "properties": { "n": { "minimum": "ten" } } } } },
            { "id": "health", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none" }
        ]
    })
}

fn ctx() -> RequestContext {
    RequestContext {
        now: UnixTime::from_secs(1_750_000_000),
        request_id: "req-1".into(),
        peer: None,
    }
}

fn request(method: Method, path: &str, body: &[u8]) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(Bytes(body.to_vec()))
        .unwrap()
}

fn deferred() -> Gateway {
    let text = config().to_string();
    Gateway::new(
        Policy::from_json_with(&text, &NoSecrets, SchemaCompilation::OnFirstUse)
            .expect("everything but the schemas is valid"),
    )
}

#[test]
fn compiling_at_load_reports_the_broken_schema_with_its_pointer() {
    let errors = Policy::from_json(&config().to_string(), &NoSecrets).unwrap_err();
    let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["/routes/1/request/body_schema/properties/n/minimum"]
    );
    let same = Policy::from_json_with(&config().to_string(), &NoSecrets, SchemaCompilation::AtLoad);
    assert_eq!(same.unwrap_err(), errors);
}

#[test]
fn deferring_schemas_still_checks_everything_else() {
    let mut doc = config();
    doc["routes"][0]["origin"] = json!("nowhere");
    let errors =
        Policy::from_json_with(&doc.to_string(), &NoSecrets, SchemaCompilation::OnFirstUse)
            .unwrap_err();
    let pointers: Vec<_> = errors.0.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(pointers, ["/routes/0/origin"]);
}

#[test]
fn a_deferred_schema_validates_like_one_compiled_at_load() {
    let g = deferred();
    let store = MemoryStore::new();
    let decide = |body: &[u8]| {
        block_on(g.decide(
            request(Method::POST, "/orders", body),
            &ctx(),
            &store,
            &NoFetch,
        ))
    };
    let outcome = decide(br#"{"sku":"a"}"#);
    assert!(matches!(outcome.decision, Decision::Forward(_)));
    assert!(outcome.log.policy_problems.is_empty());
    let outcome = decide(br#"{"qty":1}"#);
    match outcome.decision {
        Decision::Reject(r) => {
            assert_eq!((r.status().as_u16(), r.reason().slug()), (422, "schema"))
        }
        Decision::Forward(_) | Decision::Preflight(_) => panic!("an invalid body was let through"),
    }
}

#[test]
fn a_broken_schema_found_on_first_use_fails_closed_and_names_its_pointer() {
    let g = deferred();
    let store = MemoryStore::new();
    for _ in 0..2 {
        let outcome = block_on(g.decide(
            request(Method::POST, "/broken", b"{}"),
            &ctx(),
            &store,
            &NoFetch,
        ));
        let Decision::Reject(r) = outcome.decision else {
            panic!("a route whose schema is broken forwarded a request");
        };
        assert_eq!(*r.kind(), RejectKind::NoPolicy);
        assert_eq!(
            (r.status().as_u16(), r.reason().slug()),
            (503, "invalid_schema")
        );
        let pointers: Vec<_> = outcome
            .log
            .policy_problems
            .iter()
            .map(|e| e.pointer.as_str())
            .collect();
        assert_eq!(
            pointers,
            ["/routes/1/request/body_schema/properties/n/minimum"]
        );
        let text = r.to_response("req-1").into_body();
        assert!(
            !text.contains("minimum"),
            "the client never sees policy internals: {text}"
        );
    }
    // Other routes are unaffected.
    let outcome = block_on(g.decide(
        request(Method::GET, "/health", b""),
        &ctx(),
        &store,
        &NoFetch,
    ));
    assert!(matches!(outcome.decision, Decision::Forward(_)));
}
