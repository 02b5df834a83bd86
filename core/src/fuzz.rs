//! Fuzz entry points (feature `fuzzing`): one function per target, each taking arbitrary bytes
//! and panicking only when a promise of the core is broken.
//!
//! They live in the core so that two drivers share them: the cargo-fuzz targets in `fuzz/`
//! (nightly, libFuzzer) and the stable replay test `core/tests/fuzz_corpus.rs`, which runs every
//! committed corpus file through the same function, so CI keeps what the fuzzer found without
//! nightly. A target's name in [`TARGETS`] is its corpus directory, `fuzz/corpus/<name>`.
//!
//! Beyond "no panic", each target checks what its part promises: the strict JSON parser accepts
//! nothing serde_json refuses; a normal path is a fixed point that an origin's URL parser reads
//! unchanged; a token changed in any byte never verifies; the requests the gateway forwards carry
//! none of the headers its table removes or refuses, and go to the route that was matched.

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use http::{HeaderName, HeaderValue, Method, Request};
use serde_json::{json, Value};

use crate::api_key::{ApiKey, ApiKeyProvider};
use crate::config::Policy;
use crate::context::RequestContext;
use crate::decision::Gateway;
use crate::exchange::{OriginResult, Relay, Step};
use crate::fetch::NoFetch;
use crate::forward::headers::{HeaderClass, Name, Treatment, CLASSES};
use crate::forward::{ForwardBody, RESERVED_PREFIX, ROUTE_HEADER};
use crate::jwt::{parse_jwk, Algorithm, JwtProvider, JwtSettings};
use crate::path::{normalise, NormalPath};
use crate::quota::MemoryStore;
use crate::route::Template;
use crate::testing::{keys, token, MemoryBody, HS_SECRET};
use crate::time::{FixedClock, UnixTime};

/// A fuzz target: takes any bytes, panics only on a broken promise.
pub type Target = fn(&[u8]);

/// Every target, by name (its corpus directory and its `fuzz/fuzz_targets` file).
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("json", json),
    ("path", path),
    ("query", query),
    ("jwt", jwt),
    ("api_key", api_key),
    ("exchange", exchange),
    ("origin_path", origin_path),
];

/// The time every target decides at.
const NOW: u64 = 1_750_000_000;

/// Run a future that never waits on I/O (in-memory store, no fetch) to its end.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a decision over in-memory state did not complete");
}

/// The config reader: any text is a policy or a list of errors, never a panic, and the same text
/// always reads the same way.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secrets = |name: &str| (name == "HS").then(|| HS_SECRET.to_owned());
    let first = Policy::from_json(text, &secrets);
    let second = Policy::from_json(text, &secrets);
    match (first, second) {
        (Ok(a), Ok(b)) => assert!(a.route_ids().eq(b.route_ids()), "routes differ"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors differ"),
        _ => panic!("the same text read once as a policy and once as errors"),
    }
}

/// The strict JSON parser accepts a subset of what serde_json accepts, with the same meaning,
/// and what it accepts survives a round trip.
pub fn json(data: &[u8]) {
    let Ok(strict) = crate::json::parse_strict(data) else {
        return;
    };
    let lax: Value = serde_json::from_slice(data).expect("strict accepted what serde_json refuses");
    assert_eq!(strict, lax, "strict and serde_json read different values");
    let again = crate::json::parse_strict(strict.to_string().as_bytes())
        .expect("a value the strict parser produced does not parse again");
    assert_eq!(again, strict, "round trip changed the value");
}

/// What a normal path promises, checked on any path the normaliser accepted.
fn check_normal(path: &NormalPath) {
    let text = path.as_str();
    assert!(text.starts_with('/'), "{text:?} is not absolute");
    assert_eq!(
        normalise(text).as_ref().ok(),
        Some(path),
        "normalising {text:?} again changed it"
    );
    for segment in text[1..].split('/') {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        assert!(
            text == "/" || !decoded.is_empty(),
            "{text:?} has an empty segment"
        );
        assert!(
            decoded != b"." && decoded != b"..",
            "{text:?} has a dot segment, maybe encoded"
        );
        assert!(
            !decoded
                .iter()
                .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f),
            "{text:?} hides a separator or control byte in a segment"
        );
    }
}

/// Path normalisation: a path is refused or has a normal form that is a fixed point.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(normal) = normalise(raw) {
        check_normal(&normal);
    }
}

/// Query parsing: any query is an object of strings and string lists, or a 400.
pub fn query(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = crate::query::parse(raw) {
        let Value::Object(map) = parsed else {
            panic!("a query parsed to something other than an object");
        };
        for value in map.values() {
            let well_formed = match value {
                Value::String(_) => true,
                Value::Array(items) => items.len() >= 2 && items.iter().all(Value::is_string),
                _ => false,
            };
            assert!(
                well_formed,
                "{value} is neither a string nor a list of them"
            );
        }
    }
    let schema = json!({ "type": "object", "properties": { "tags": { "type": "array" } } });
    let _ = crate::query::list_parameters(&schema);
}

struct JwtFixture {
    provider: JwtProvider,
    tokens: Vec<String>,
}

fn jwt_fixture() -> &'static JwtFixture {
    static FIXTURE: OnceLock<JwtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use Algorithm::*;
        let algorithms = vec![HS256, RS256, PS256, ES256, ES384, EdDSA];
        let jwks = keys().jwks();
        let provider = JwtProvider::with_keys(
            JwtSettings {
                issuer: "https://idp.test/".into(),
                audiences: vec!["api".into()],
                algorithms: algorithms.clone(),
                leeway_s: 30,
                consumer_claim: "sub".into(),
                scopes_claim: None,
            },
            jwks["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| parse_jwk(k).ok())
                .collect(),
            Some(HS_SECRET.as_bytes().to_vec()),
        );
        let claims = json!({ "iss": "https://idp.test/", "aud": "api", "sub": "alice",
                             "exp": NOW + 3600, "scope": "orders:read" });
        let tokens = algorithms.iter().map(|&alg| token(alg, &claims)).collect();
        JwtFixture { provider, tokens }
    })
}

/// JWT parsing and verification. The first byte picks a valid token (one per algorithm) and the
/// rest edit it, three bytes per edit (kind and position, then a byte): whatever the edit, a token
/// that differs from the valid one never verifies. Past the valid tokens, the rest of the input
/// is a token of its own, which verifies only if it is one of them.
pub fn jwt(data: &[u8]) {
    let fixture = jwt_fixture();
    let now = UnixTime::from_secs(NOW);
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let pick = usize::from(pick) % (fixture.tokens.len() + 1);
    let Some(original) = fixture.tokens.get(pick) else {
        let text = String::from_utf8_lossy(rest);
        let _ = fixture.provider.parse(&text);
        if fixture.provider.verify(&text, now).is_ok() {
            assert!(
                fixture.tokens.iter().any(|t| *t == text),
                "a token of the fuzzer's own verified: {text:?}"
            );
        }
        return;
    };
    let mut bytes = original.as_bytes().to_vec();
    for edit in rest.chunks_exact(3) {
        let position =
            (usize::from(edit[0] & 0x3f) << 8 | usize::from(edit[1])) % (bytes.len() + 1);
        match edit[0] >> 6 {
            0 if position < bytes.len() => bytes[position] = edit[2],
            1 => bytes.insert(position, edit[2]),
            2 if position < bytes.len() => {
                bytes.remove(position);
            }
            _ => bytes.truncate(position),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let _ = fixture.provider.parse(&text);
    if text != original.as_str() {
        assert!(
            fixture.provider.verify(&text, now).is_err(),
            "a changed token verified: {text:?} (from {original:?})"
        );
    }
}

/// API-key lookup: a presented key matches exactly the stored key with its hash, whatever bytes
/// it holds.
pub fn api_key(data: &[u8]) {
    use sha2::{Digest, Sha256};
    const KEYS: [&[u8]; 3] = [b"k-alice-0001", b"k-bob-0002", b"\xff\x00 odd"];
    let provider = ApiKeyProvider {
        header: HeaderName::from_static("x-api-key"),
        keys: KEYS
            .iter()
            .enumerate()
            .map(|(i, key)| ApiKey {
                sha256: Sha256::digest(key).into(),
                consumer: format!("consumer-{i}"),
                scopes: Vec::new(),
            })
            .collect(),
    };
    let found = provider.verify(data).map(|k| k.consumer.clone());
    let expected = KEYS
        .iter()
        .position(|k| *k == data)
        .filter(|_| data.len() <= crate::api_key::MAX_KEY_BYTES)
        .map(|i| format!("consumer-{i}"));
    assert_eq!(
        found, expected,
        "key lookup disagrees with plain comparison"
    );
}

/// The fixed policy the exchange target decides with: every kind of provider, a quota, CORS, a
/// body and a query schema, and a header allow list.
fn exchange_policy() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let key = hex::encode(Sha256::digest(b"k-alice-0001"));
        let config = json!({
            "version": 1,
            "origins": { "api": { "url": "http://127.0.0.1:9/base", "timeout_ms": 500 } },
            "auth": {
                "idp": { "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                         "algorithms": ["RS256", "ES256", "HS256", "EdDSA"], "jwks": keys().jwks(),
                         "secret_env": "HS" },
                "keys": { "type": "api_key", "keys": [ { "sha256": key, "consumer": "alice", "scopes": ["orders:read"] } ] }
            },
            "quotas": { "per-consumer": { "limit": 1000, "window_s": 60, "by": "consumer" },
                        "per-ip": { "limit": 1000, "window_s": 60, "by": "ip" } },
            "client_ip": { "trusted_proxies": ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32"] },
            "ip": { "deny": ["198.51.100.0/24", "2001:db8:bad::/48"] },
            "cors": { "allow_origins": ["https://app.example.com", "https://*.example.com"],
                      "allow_headers": ["authorization", "content-type"], "allow_credentials": true },
            "routes": [
                { "id": "health", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none", "quota": "per-ip" },
                { "id": "order", "methods": ["GET", "DELETE"], "path": "/v1/orders/{id}", "origin": "api",
                  "auth": { "providers": ["idp", "keys"], "scopes": ["orders:read"] }, "quota": "per-consumer" },
                { "id": "create", "methods": ["POST", "PUT"], "path": "/v1/orders", "origin": "api",
                  "auth": { "providers": ["keys", "idp"] }, "cors": "none",
                  "request": { "max_body_bytes": 256, "body_schema": { "type": "object", "required": ["sku"],
                    "properties": { "sku": { "type": "string" }, "qty": { "type": "integer" } } },
                    "query_schema": { "type": "object", "properties": { "dry_run": { "enum": ["true", "false"] },
                      "tag": { "type": "array" } }, "additionalProperties": false } } },
                { "id": "files", "methods": ["GET", "POST"], "path": "/files/{*rest}", "origin": "api", "auth": "none",
                  "forward_headers": { "allow": ["accept", "content-type", "x-request-*"] } },
                { "id": "any", "methods": ["OPTIONS", "PATCH"], "path": "/v1/{kind}", "origin": "api", "auth": "none" }
            ]
        });
        let secrets = |name: &str| (name == "HS").then(|| HS_SECRET.to_owned());
        let policy = Policy::from_json(&config.to_string(), &secrets)
            .unwrap_or_else(|e| panic!("the exchange target's policy is invalid: {e}"));
        Gateway::new(policy)
    })
}

/// Whether the table says a client header of this name never reaches the origin as sent.
fn removed_by_table(policy: &Policy, name: &str) -> bool {
    let covers = |class: &HeaderClass| {
        class.names.iter().any(|n| match n {
            Name::Exact(exact) => name == *exact,
            Name::Prefix(prefix) => name.starts_with(prefix),
            Name::ApiKeys => policy.api_key_headers.iter().any(|h| h.as_str() == name),
            Name::NamedByConnection => false,
        })
    };
    CLASSES.iter().any(|class| {
        covers(class)
            && matches!(
                class.treatment,
                Treatment::Removed | Treatment::Replaced | Treatment::Refused(_)
            )
    })
}

/// The gateway's own headers on a forwarded request.
fn set_by_gateway(name: &str) -> bool {
    name.starts_with(RESERVED_PREFIX)
        || matches!(
            name,
            "x-forwarded-for" | "x-forwarded-host" | "content-length"
        )
}

/// The whole exchange over arbitrary request facts against a fixed policy. The input is a request
/// head in text (`METHOD TARGET`, then `name: value` lines), an empty line, and the body; a second
/// empty line after it is followed by the origin's answer (`STATUS`, then header lines) when the
/// request is forwarded.
pub fn exchange(data: &[u8]) {
    let gateway = exchange_policy();
    let (head, rest) = split_blank_line(data);
    let (body, origin) = split_blank_line(rest);
    let mut lines = head.split(|&b| b == b'\n');
    let Some(request_line) = lines.next() else {
        return;
    };
    let request_line = String::from_utf8_lossy(request_line);
    let mut words = request_line.split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return;
    };
    // What a runtime could not turn into a request never reaches the core.
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut builder = Request::builder().method(method.clone()).uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            builder = builder.header(name, value);
        }
    }
    let Ok(request) = builder.body(MemoryBody(body.to_vec())) else {
        return;
    };
    let sent_path = request.uri().path().to_owned();
    let ctx = RequestContext {
        now: UnixTime::from_secs(NOW),
        request_id: "fuzz-1".into(),
        peer: Some([192, 0, 2, 7].into()),
    };
    let clock = FixedClock(UnixTime::from_secs(NOW));
    let store = MemoryStore::new();
    let step = complete(gateway.exchange(request, &ctx, &store, &NoFetch, &clock));
    let (outbound, pending) = match step {
        Step::Answer(answer) => {
            let status = answer.response.status().as_u16();
            assert!(
                status == 204 || (400..600).contains(&status),
                "the gateway answered {status} itself"
            );
            assert_problem(&answer.response);
            return;
        }
        Step::Forward(outbound, pending) => (outbound, pending),
    };
    let forwarded = &outbound.request;
    assert_eq!(forwarded.method(), method, "forwarded under another method");
    let uri_path = forwarded.uri().path();
    let normal = uri_path
        .strip_prefix("/base")
        .unwrap_or_else(|| panic!("forwarded outside the origin's base: {uri_path}"));
    let normal =
        normalise(normal).unwrap_or_else(|_| panic!("forwarded path {normal:?} is not normal"));
    check_normal(&normal);
    let expected_route = normalise(&sent_path)
        .ok()
        .and_then(|p| route_for(gateway.policy(), &p, &method));
    let route = forwarded
        .headers()
        .get(ROUTE_HEADER)
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        route, expected_route,
        "forwarded to a route the path does not select"
    );
    // The chain the origin gets is addresses the gateway or a trusted proxy vouched for: the
    // client first (never a denied one), the peer last.
    let chain = forwarded
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .collect::<Vec<_>>();
    assert_eq!(chain.len(), 1, "one X-Forwarded-For line");
    let chain = chain[0].to_str().expect("the chain is text");
    let hops: Vec<std::net::IpAddr> = chain
        .split(", ")
        .map(|h| {
            h.parse()
                .unwrap_or_else(|_| panic!("{h:?} in {chain:?} is no address"))
        })
        .collect();
    assert_eq!(
        hops.last(),
        Some(&std::net::IpAddr::from([192, 0, 2, 7])),
        "{chain}"
    );
    let trusted = gateway
        .policy()
        .client_ip
        .as_ref()
        .expect("the fuzz policy trusts proxies");
    assert!(
        hops[1..].iter().all(|h| trusted.trusted.contains(*h)),
        "{chain}"
    );
    let denied = &gateway
        .policy()
        .ip
        .as_ref()
        .expect("and denies networks")
        .deny;
    assert!(
        !denied.contains(hops[0]),
        "a denied client was forwarded: {chain}"
    );
    for name in forwarded.headers().keys() {
        let name = name.as_str();
        assert!(
            set_by_gateway(name) || !removed_by_table(gateway.policy(), name),
            "forwarded {name}, which the header table removes or refuses"
        );
    }
    if let ForwardBody::Buffered(bytes) = forwarded.body() {
        assert!(bytes.len() <= 256, "forwarded more than the route inspects");
    }
    let result = origin_result(origin);
    match pending.finish(result, &clock) {
        Relay::Origin { headers, .. } => {
            for name in headers.keys() {
                assert!(
                    !matches!(
                        name.as_str(),
                        "connection" | "transfer-encoding" | "keep-alive"
                    ),
                    "relayed the origin's hop-by-hop {name}"
                );
            }
        }
        Relay::Answer(answer) => assert_problem(&answer.response),
    }
}

fn assert_problem(response: &http::Response<String>) {
    if response.status().as_u16() == 204 {
        return;
    }
    let content_type = response.headers().get(http::header::CONTENT_TYPE);
    assert_eq!(
        content_type.and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "a gateway answer that is not problem+json"
    );
    serde_json::from_str::<Value>(response.body()).expect("a problem body that is not JSON");
}

/// The id of the route a request on `path` and `method` takes, by the templates alone.
fn route_for<'p>(policy: &'p Policy, path: &NormalPath, method: &Method) -> Option<&'p str> {
    policy
        .routes
        .iter()
        .find(|r| {
            r.template.matches(path)
                && (r.methods.contains(method)
                    || (*method == Method::HEAD && r.methods.contains(&Method::GET)))
        })
        .map(|r| r.id.as_str())
}

fn split_blank_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[]),
    }
}

fn origin_result(text: &[u8]) -> OriginResult<()> {
    let mut lines = text.split(|&b| b == b'\n');
    let status = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u16>().ok());
    let Some(status) = status.filter(|s| (100..600).contains(s)) else {
        return match text.first() {
            Some(b't') => OriginResult::TimedOut,
            _ => OriginResult::Failed {
                cause: "fuzz".into(),
            },
        };
    };
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    OriginResult::Responded {
        status,
        headers,
        body: (),
    }
}

/// The templates the differential target routes with.
const TEMPLATES: &[&str] = &[
    "/health",
    "/v1/orders/{id}",
    "/v1/orders",
    "/admin/{*rest}",
    "/v1/{kind}/public",
    "/files/{*rest}",
];

/// A differential check of the forwarded path: whatever the gateway accepts as a normal path,
/// an origin that parses the forwarded URL with WHATWG rules (the `url` crate, as workerd and
/// browsers do) or with the `http` crate reads the same path and routes it to the same template,
/// and one that percent-decodes before splitting sees the same segments.
pub fn origin_path(data: &[u8]) {
    static TEMPLATE_SET: OnceLock<Vec<Template>> = OnceLock::new();
    let templates = TEMPLATE_SET.get_or_init(|| {
        TEMPLATES
            .iter()
            .map(|t| Template::parse(t).unwrap_or_else(|e| panic!("template {t}: {e}")))
            .collect()
    });
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalise(raw) else {
        return;
    };
    let gateway_route = templates.iter().position(|t| t.matches(&normal));
    let forwarded = format!("http://origin.test{}", normal.as_str());

    let uri: http::Uri = forwarded
        .parse()
        .unwrap_or_else(|e| panic!("{forwarded:?} is no http::Uri: {e}"));
    assert_eq!(uri.path(), normal.as_str(), "http::Uri read another path");

    let url =
        url::Url::parse(&forwarded).unwrap_or_else(|e| panic!("{forwarded:?} is no URL: {e}"));
    assert_eq!(
        url.path(),
        normal.as_str(),
        "the WHATWG parser read another path"
    );
    let reparsed = normalise(url.path()).expect("the origin's path is not normal");
    let origin_route = templates.iter().position(|t| t.matches(&reparsed));
    assert_eq!(origin_route, gateway_route, "the origin routes elsewhere");

    let gateway_segments: Vec<Vec<u8>> = normal
        .segments()
        .map(|s| percent_encoding::percent_decode_str(s).collect())
        .collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(url.path()).collect();
    let origin_segments: Vec<Vec<u8>> = decoded[1..]
        .split(|&b| b == b'/')
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(
        origin_segments, gateway_segments,
        "decoding before splitting gives other segments"
    );
}
