//! The core's decision path: token verification per algorithm, schema validation, and a whole
//! decision for an allowed request. Run with `cargo bench -p portcullis-core --bench decision`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_executor::block_on;
use http::Request;
use portcullis_core::jwt::{parse_jwk, Algorithm, JwtProvider, JwtSettings};
use portcullis_core::schema::Schema;
use portcullis_core::testing::{keys, token, HS_SECRET};
use portcullis_core::{
    BodyError, Gateway, MemoryStore, Policy, RequestBody, RequestContext, UnixTime,
};
use serde_json::{json, Value};

const NOW: u64 = 1_750_000_000;

fn claims() -> Value {
    json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice", "exp": NOW + 3600, "scope": "orders:read orders:write" })
}

fn verify(c: &mut Criterion) {
    use Algorithm::*;
    let all = vec![HS256, RS256, PS256, ES256, ES384, EdDSA];
    let provider = JwtProvider::with_keys(
        JwtSettings {
            issuer: "https://idp.test/".into(),
            audiences: vec!["api".into()],
            algorithms: all.clone(),
            leeway_s: 30,
            consumer_claim: "sub".into(),
            scopes_claim: None,
        },
        keys().jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| parse_jwk(k).unwrap())
            .collect(),
        Some(HS_SECRET.as_bytes().to_vec()),
    );
    let mut group = c.benchmark_group("verify");
    for alg in all {
        let t = token(alg, &claims());
        group.bench_with_input(BenchmarkId::from_parameter(alg.name()), &t, |b, t| {
            b.iter(|| provider.verify(t, UnixTime::from_secs(NOW)).unwrap())
        });
    }
    group.finish();
}

/// An order with `n` line items: about 64 bytes each.
fn order(n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({ "sku": format!("SKU-{i:08}"), "qty": i % 9 + 1, "note": "x" }))
        .collect();
    json!({ "customer": "c-1", "currency": "EUR", "items": items })
}

fn order_schema() -> Value {
    json!({
        "type": "object", "required": ["customer", "currency", "items"], "additionalProperties": false,
        "properties": {
            "customer": { "type": "string", "maxLength": 64 },
            "currency": { "enum": ["EUR", "USD", "GBP"] },
            "items": { "type": "array", "maxItems": 5000, "items": {
                "type": "object", "required": ["sku", "qty"],
                "properties": { "sku": { "type": "string", "pattern": "^SKU-[0-9]{8}$" }, "qty": { "type": "integer", "minimum": 1 }, "note": { "type": "string" } }
            } }
        }
    })
}

fn schema(c: &mut Criterion) {
    let schema = Schema::compile(&order_schema()).unwrap();
    let mut group = c.benchmark_group("body");
    for (label, n) in [("1KB", 14), ("64KB", 1000)] {
        let bytes = serde_json::to_vec(&order(n)).unwrap();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("parse+validate", label),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let v = portcullis_core::parse_json_strict(bytes).unwrap();
                    assert!(schema.is_valid(&v));
                })
            },
        );
    }
    group.finish();
}

struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

fn decision(c: &mut Criterion) {
    let config = json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9000" } },
        "auth": { "idp": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                           "algorithms": ["HS256", "ES256"], "jwks": keys().jwks(), "secret_env": "HS" } },
        "quotas": { "q": { "limit": 1_000_000_000, "window_s": 1, "by": "consumer" } },
        "routes": [
            { "id": "health", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none" },
            { "id": "order", "methods": ["GET"], "path": "/v1/orders/{id}", "origin": "api",
              "auth": { "providers": ["idp"], "scopes": ["orders:read"] }, "quota": "q" }
        ]
    });
    let secrets = |n: &str| (n == "HS").then(|| HS_SECRET.to_owned());
    let gateway = Gateway::new(Policy::from_json(&config.to_string(), &secrets).unwrap());
    let mut uncached_config = config.clone();
    uncached_config["token_cache_entries"] = json!(0);
    let uncached = Gateway::new(Policy::from_json(&uncached_config.to_string(), &secrets).unwrap());
    let store = MemoryStore::new();
    let mut group = c.benchmark_group("decide");
    let mut t = NOW * 1_000_000;
    let mut run =
        |b: &mut criterion::Bencher, gateway: &Gateway, path: &str, auth: Option<&str>| {
            b.iter(|| {
                t += 1;
                let mut req = Request::get(path);
                if let Some(token) = auth {
                    req = req.header("authorization", format!("Bearer {token}"));
                }
                let ctx = RequestContext {
                    now: UnixTime::from_micros(t),
                    request_id: "0123456789abcdef".into(),
                    peer: None,
                };
                let outcome = block_on(gateway.decide(
                    req.body(Empty).unwrap(),
                    &ctx,
                    &store,
                    &portcullis_core::NoFetch,
                ));
                assert!(matches!(
                    outcome.decision,
                    portcullis_core::Decision::Forward(_)
                ));
            })
        };
    group.bench_function("public", |b| run(b, &gateway, "/health", None));
    let hs = token(Algorithm::HS256, &claims());
    let es = token(Algorithm::ES256, &claims());
    group.bench_function("HS256 cached+scope+quota", |b| {
        run(b, &gateway, "/v1/orders/42", Some(&hs))
    });
    group.bench_function("ES256 cached+scope+quota", |b| {
        run(b, &gateway, "/v1/orders/42", Some(&es))
    });
    group.bench_function("HS256 uncached+scope+quota", |b| {
        run(b, &uncached, "/v1/orders/42", Some(&hs))
    });
    group.bench_function("ES256 uncached+scope+quota", |b| {
        run(b, &uncached, "/v1/orders/42", Some(&es))
    });
    group.finish();
}

criterion_group!(benches, verify, schema, decision);
criterion_main!(benches);
