use futures_executor::block_on;
use http::{HeaderMap, HeaderValue, Method, Request};
use serde_json::{json, Value};

use super::*;
use crate::body::{BodyError, RequestBody};
use crate::decision::{Decision, Gateway, RequestContext};
use crate::fetch::NoFetch;
use crate::problem::Reason;
use crate::quota::MemoryStore;
use crate::time::UnixTime;

#[test]
fn security_table_of_forwarded_headers_is_rendered_from_the_code() {
    crate::generated_docs::check(
        "docs/security.md",
        "forwarded-headers",
        &classes_markdown(),
        "security_table",
    );
}

#[test]
fn every_class_says_why_and_its_refusals_have_their_own_reasons() {
    for c in CLASSES {
        assert!(c.why.ends_with('.') || c.why.ends_with(".)"), "{}", c.class);
        assert!(!c.names.is_empty());
        for n in c.names {
            if let Exact(n) | Prefix(n) = n {
                assert_eq!(*n, n.to_ascii_lowercase(), "table names are lower case");
                assert!(!n.contains('_'), "table names use '-'");
            }
        }
        if let Treatment::Refused(r)
        | Treatment::Once(r)
        | Treatment::NotNominated(r)
        | Treatment::OnlyChunked(r) = c.treatment
        {
            assert_eq!(
                Reason::from(r).problem_type().status(),
                http::StatusCode::BAD_REQUEST
            );
            assert_ne!(refusal_detail(r), "The request's headers are ambiguous.");
        }
    }
}

fn policy(extra: Value) -> Policy {
    let mut doc = json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9/", "timeout_ms": 500 } },
        "auth": { "keys": { "type": "api_key", "header": "x-api-key", "keys": [ { "sha256": "a".repeat(64), "consumer": "c" } ] } },
        "routes": [
            { "id": "open", "methods": ["GET", "POST"], "path": "/open", "origin": "api", "auth": "none" },
            { "id": "allow", "methods": ["GET"], "path": "/allow", "origin": "api", "auth": "none",
              "forward_headers": { "allow": ["accept", "X-Request-*", "x-real-ip"] } },
            { "id": "none-allowed", "methods": ["GET"], "path": "/none", "origin": "api", "auth": "none",
              "forward_headers": { "allow": [] } }
        ]
    });
    if let (Value::Object(d), Value::Object(e)) = (&mut doc, extra) {
        d.extend(e);
    }
    Policy::from_json(&doc.to_string(), &crate::config::NoSecrets).expect("valid policy")
}

fn headers(list: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in list {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn screened(list: &[(&str, &str)]) -> Result<(), Reason> {
    screen(&policy(json!({})), &headers(list)).map_err(|r| r.reason())
}

#[test]
fn method_and_url_overrides_are_refused_in_every_spelling_and_value() {
    for name in [
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-Method-Override",
        "X_HTTP_Method_Override",
        "x_method_override",
    ] {
        for value in ["DELETE", "", "get"] {
            assert_eq!(
                screened(&[(name, value)]),
                Err(Reason::MethodOverride),
                "{name}: {value:?}"
            );
        }
    }
    for name in [
        "X-Original-URL",
        "x-rewrite-url",
        "X_Original_URL",
        "x-original-uri",
    ] {
        assert_eq!(screened(&[(name, "/admin")]), Err(Reason::UrlOverride));
    }
    assert_eq!(screened(&[("x-http-method-overrides", "x")]), Ok(()));
}

#[test]
fn headers_read_once_are_refused_repeated_or_as_lists() {
    let repeated = Err(Reason::HeaderRepeated);
    for case in [
        &[
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ][..],
        &[
            ("content-type", "application/json"),
            ("Content_Type", "text/plain"),
        ],
        &[("content-type", "application/json, text/plain")],
        &[("content-type", "text/plain; charset=a,b")],
        &[("host", "a.example"), ("host", "b.example")],
        &[("host", "a.example, b.example")],
        &[("host", "a.example"), ("host", "")],
        &[("content-length", "5"), ("content-length", "5")],
        &[("authorization", "Bearer a"), ("authorization", "Bearer a")],
        &[("authorization", "Basic YTpi, Bearer x")],
        &[("authorization", "Bearer x, Basic YTpi")],
        &[("authorization", ", Bearer x")],
        &[("authorization", "Bearer x,y")],
        &[("x-api-key", "k1"), ("x-api-key", "k2")],
        &[("x-api-key", "k1"), ("X_API_KEY", "k1")],
        &[("x-api-key", "k1, k2")],
    ] {
        assert_eq!(screened(case), repeated, "{case:?}");
    }
    for case in [
        &[("content-type", "multipart/form-data; boundary=\"a,b\"")][..],
        &[("content-type", "text/plain; x=\"a\\\",b\"")],
        &[("host", "gw.example:8080")],
        &[("content-length", "5")],
        &[("authorization", "Bearer abc.def.ghi")],
        &[(
            "authorization",
            "Digest username=\"a\", realm=\"r, s\", nonce=\"n\"",
        )],
        &[("authorization", "Basic YTpi")],
        &[("authorization", "")],
        &[("x-api-key", "k1")],
        &[("accept", "a/b, c/d"), ("accept", "e/f")],
    ] {
        assert_eq!(screened(case), Ok(()), "{case:?}");
    }
}

#[test]
fn connection_must_not_name_a_header_read_once() {
    for named in [
        "content-type",
        "Authorization",
        "close, content_length",
        "host",
        "x-api-key",
    ] {
        assert_eq!(
            screened(&[("connection", named)]),
            Err(Reason::ConnectionOption),
            "{named}"
        );
    }
    assert_eq!(
        screened(&[("connection", "close, x-hop, keep-alive")]),
        Ok(())
    );
}

#[test]
fn transfer_encoding_is_one_chunked_or_refused() {
    for ok in ["chunked", "Chunked", " chunked "] {
        assert_eq!(screened(&[("transfer-encoding", ok)]), Ok(()), "{ok}");
    }
    for bad in [
        "gzip, chunked",
        "chunked, chunked",
        "identity",
        "",
        "chunked;x=1",
    ] {
        assert_eq!(
            screened(&[("transfer-encoding", bad)]),
            Err(Reason::TransferEncoding),
            "{bad:?}"
        );
    }
    assert_eq!(
        screened(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ]),
        Err(Reason::TransferEncoding)
    );
    assert_eq!(
        screened(&[("transfer-encoding", "chunked"), ("content-length", "3")]),
        Err(Reason::TransferEncoding)
    );
}

#[test]
fn list_elements_split_outside_quotes_only() {
    let parts = |v: &str| {
        list_elements(v.as_bytes())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(parts("a"), ["a"]);
    assert_eq!(parts(""), [""]);
    assert_eq!(parts("a, b,"), ["a", " b", ""]);
    assert_eq!(parts("x=\"1,2\", y"), ["x=\"1,2\"", " y"]);
    assert_eq!(parts("x=\"\\\",\", y"), ["x=\"\\\",\"", " y"]);
}

#[test]
fn several_credentials_tells_a_second_scheme_from_parameters() {
    for one in [
        "Bearer t",
        "Basic YTpi==",
        "Digest a=1, b=\"2\", c = 3",
        "Custom",
        "",
        "Bearer t,",
    ] {
        assert!(!several_credentials(one.as_bytes()), "{one}");
    }
    for two in [
        "Bearer t, Basic x",
        "Basic x, Bearer t",
        "Bearer t, other",
        ", Bearer t",
    ] {
        assert!(several_credentials(two.as_bytes()), "{two}");
    }
}

#[derive(Debug)]
struct Empty;

impl RequestBody for Empty {
    async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, BodyError> {
        Ok(Vec::new())
    }
}

/// The headers the origin would get for `GET path` with `list`, or the refusal.
fn forward(
    policy: Policy,
    path: &str,
    list: &[(&str, &str)],
    client_ip: Option<[u8; 4]>,
) -> Result<HeaderMap, Reason> {
    let mut builder = Request::builder().method(Method::GET).uri(path);
    for (n, v) in list {
        builder = builder.header(*n, *v);
    }
    let ctx = RequestContext {
        now: UnixTime::from_secs(1_750_000_000),
        request_id: "r".into(),
        peer: client_ip.map(Into::into),
    };
    let gateway = Gateway::new(policy);
    let outcome = block_on(gateway.decide(
        builder.body(Empty).unwrap(),
        &ctx,
        &MemoryStore::new(),
        &NoFetch,
    ));
    match outcome.decision {
        Decision::Forward(f) => Ok(f.request.headers().clone()),
        Decision::Reject(r) => Err(r.reason()),
        Decision::Preflight(_) => panic!("not a preflight"),
    }
}

#[test]
fn forwarding_claims_and_hop_by_hop_headers_never_reach_the_origin() {
    let sent = [
        ("forwarded", "for=1.2.3.4;proto=https"),
        ("x-forwarded-proto", "https"),
        ("X_Forwarded_Proto", "https"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "1.2.3.4"),
        ("true-client-ip", "1.2.3.4"),
        ("cf-connecting-ip", "1.2.3.4"),
        ("x-forwarded-host", "evil.example"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ("proxy", "http://evil.example"),
        ("proxy-authorization", "Basic x"),
        ("x-portcullis-consumer", "admin"),
        ("accept", "application/json"),
    ];
    let h = forward(policy(json!({})), "/open", &sent, Some([192, 0, 2, 7])).unwrap();
    for (name, _) in &sent[..sent.len() - 2] {
        let canon = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            canon == "x-forwarded-host" || h.get(name.to_ascii_lowercase()).is_none(),
            "{name} reached the origin"
        );
    }
    assert!(h.get("x-forwarded-host").is_none(), "no Host was sent");
    assert!(h.get("x-portcullis-consumer").is_none());
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["x-forwarded-for"], "192.0.2.7");
}

#[test]
fn forwarded_for_is_what_the_gateway_and_its_trusted_proxies_vouch_for() {
    let sent = [
        ("x-forwarded-for", "198.51.100.66, 203.0.113.9"),
        ("X_Forwarded_For", "198.51.100.1"),
    ];
    let peer = Some([192, 0, 2, 7]);
    let h = forward(policy(json!({})), "/open", &sent, peer).unwrap();
    assert_eq!(
        h["x-forwarded-for"], "192.0.2.7",
        "no trusted proxy: the peer alone"
    );
    assert!(h.get("x_forwarded_for").is_none());
    let behind = json!({ "client_ip": { "trusted_proxies": ["192.0.2.0/24"] } });
    let h = forward(policy(behind.clone()), "/open", &sent, peer).unwrap();
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.9, 192.0.2.7",
        "the client's own entries left of its address are dropped"
    );
    let h = forward(policy(behind), "/open", &sent, None).unwrap();
    assert!(h.get("x-forwarded-for").is_none(), "only the client's word");
}

#[test]
fn an_allow_list_forwards_only_what_it_names_and_never_what_the_table_removes() {
    let sent = [
        ("accept", "application/json"),
        ("x-request-id", "abc"),
        ("X-Request-Trace", "t"),
        ("x_request_id", "underscore"),
        ("x-other", "1"),
        ("cookie", "s=1"),
        ("authorization", "Bearer t"),
        ("x-real-ip", "1.2.3.4"),
        ("host", "gw.example"),
    ];
    let h = forward(policy(json!({})), "/allow", &sent, Some([192, 0, 2, 7])).unwrap();
    let mut names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-portcullis-request-id",
            "x-portcullis-route",
            "x-request-id",
            "x-request-trace",
        ]
    );
    let h = forward(policy(json!({})), "/none", &sent, None).unwrap();
    assert!(h.get("accept").is_none());
    assert_eq!(h["x-portcullis-route"], "none-allowed");
}

#[test]
fn a_route_allow_list_replaces_the_top_level_one() {
    let p = policy(json!({ "forward_headers": { "allow": ["x-top"] } }));
    let sent = [("x-top", "1"), ("accept", "a/b")];
    let h = forward(p, "/open", &sent, None).unwrap();
    assert_eq!(h["x-top"], "1");
    assert!(h.get("accept").is_none());
    let p = policy(json!({ "forward_headers": { "allow": ["x-top"] } }));
    let h = forward(p, "/allow", &sent, None).unwrap();
    assert!(h.get("x-top").is_none());
    assert_eq!(h["accept"], "a/b");
}

#[test]
fn allow_lists_refuse_what_is_not_a_header_name() {
    let list = |entries: &[&str]| {
        AllowList::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    assert!(list(&["accept", "x-request-*", "X-Custom"]).is_ok());
    assert_eq!(
        list(&["*", "a b", "x*y", "ok", "x-*-y*", ""]).unwrap_err(),
        [
            (0, AllowError::NotAName),
            (1, AllowError::NotAName),
            (2, AllowError::NotAName),
            (4, AllowError::NotAName),
            (5, AllowError::NotAName),
        ]
    );
    assert_eq!(
        list(&["Accept", "accept"]).unwrap_err(),
        [(1, AllowError::Duplicate)]
    );
}

#[test]
fn allow_list_entries_the_table_overrides_are_warned_about() {
    let list = AllowList::new(
        &[
            "accept",
            "x-*",
            "x-real-ip",
            "X_HTTP_Method_Override",
            "x-api-key",
            "content-type",
            "proxy-*",
            "pro*",
            "authorization",
        ]
        .map(String::from),
    )
    .unwrap();
    let warned: Vec<usize> = list
        .warnings(&[HeaderName::from_static("x-api-key")])
        .into_iter()
        .map(|(i, message)| {
            assert!(message.contains("never forwards"), "{message}");
            i
        })
        .collect();
    assert_eq!(warned, [1, 2, 3, 4, 6, 7]);
    let x = &list.warnings(&[])[0].1;
    assert!(
        x.contains("Method override") && x.contains("Forwarding claims"),
        "{x}"
    );
}

#[test]
fn origin_responses_lose_hop_by_hop_and_gateway_headers() {
    let h = headers(&[
        ("connection", "close, x-hop"),
        ("x-hop", "1"),
        ("upgrade", "websocket"),
        ("proxy-authenticate", "Basic"),
        ("X_Portcullis_Consumer", "evil"),
        ("content-type", "application/json"),
    ]);
    let nominated = nominated(&h);
    let kept: Vec<&str> = h
        .keys()
        .filter(|n| relayed_from_origin(&nominated, n))
        .map(|n| n.as_str())
        .collect();
    assert_eq!(kept, ["content-type"]);
}
