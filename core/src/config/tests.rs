use serde_json::{json, Value};

use super::*;

fn secrets(name: &str) -> Option<String> {
    (name == "HS").then(|| "x".repeat(32))
}

fn valid() -> Value {
    json!({
        "version": 1,
        "origins": { "api": { "url": "http://127.0.0.1:9000", "timeout_ms": 500 } },
        "auth": {
            "idp": { "type": "jwt", "issuer": "https://idp/", "audiences": ["api"], "algorithms": ["HS256"], "secret_env": "HS" },
            "keys": { "type": "api_key", "keys": [ { "sha256": "a".repeat(64), "consumer": "c1", "scopes": ["s"] } ] }
        },
        "quotas": { "q": { "limit": 10, "window_s": 60, "by": "consumer" } },
        "routes": [
            { "id": "health", "methods": ["GET"], "path": "/health", "origin": "api", "auth": "none" },
            { "id": "orders", "methods": ["GET", "POST"], "path": "/v1/orders/{id}", "origin": "api",
              "auth": { "providers": ["idp", "keys"], "scopes": ["s"] },
              "request": { "max_body_bytes": 1000, "body_schema": { "type": "object" } },
              "quota": "q" }
        ]
    })
}

/// The pointers of every problem in `doc`.
fn pointers(doc: &Value) -> Vec<String> {
    match Policy::from_json(&doc.to_string(), &secrets) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(errors)) => errors.into_iter().map(|e| e.pointer).collect(),
    }
}

fn with(patch: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut doc = valid();
    patch(&mut doc);
    pointers(&doc)
}

#[test]
fn the_valid_config_compiles() {
    let policy = Policy::from_json(&valid().to_string(), &secrets).unwrap();
    assert_eq!(policy.route_ids().collect::<Vec<_>>(), ["health", "orders"]);
    assert_eq!(
        policy.origins().next().unwrap().base,
        "http://127.0.0.1:9000"
    );
    // A schema route accepts JSON unless told otherwise.
    assert_eq!(policy.routes[1].request.content_types, ["application/json"]);
}

#[test]
fn unknown_fields_are_errors_everywhere() {
    assert_eq!(with(|d| d["extra"] = json!(1)), ["/extra"]);
    assert_eq!(
        with(|d| d["origins"]["api"]["timeout"] = json!(1)),
        ["/origins/api/timeout"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["audience"] = json!("x")),
        ["/auth/idp/audience"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["auth"]["scope"] = json!(["s"])),
        ["/routes/1/auth/scope"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["request"]["max_body"] = json!(1)),
        ["/routes/1/request/max_body"]
    );
    assert_eq!(
        with(|d| d["quotas"]["q"]["burst"] = json!(1)),
        ["/quotas/q/burst"]
    );
}

#[test]
fn every_problem_is_reported_with_its_pointer() {
    let found = with(|d| {
        d["version"] = json!(2);
        d["routes"][0]["origin"] = json!("nowhere");
        d["routes"][1]["quota"] = json!("nope");
        d["origins"]["api"]["url"] = json!("ftp://x");
    });
    assert_eq!(
        found,
        [
            "/version",
            "/origins/api/url",
            "/routes/0/origin",
            "/routes/1/quota"
        ]
    );
}

#[test]
fn auth_is_required_on_every_route() {
    assert_eq!(
        with(|d| {
            d["routes"][0].as_object_mut().unwrap().remove("auth");
        }),
        ["/routes/0/auth"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["auth"] = json!("None")),
        ["/routes/0/auth"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["auth"] = json!({ "providers": [] })),
        ["/routes/0/auth/providers"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["auth"] = json!({ "providers": ["ghost"] })),
        ["/routes/0/auth/providers/0"]
    );
}

#[test]
fn jwt_providers_are_checked() {
    assert_eq!(
        with(|d| d["auth"]["idp"]["algorithms"] = json!(["none"])),
        ["/auth/idp/algorithms/0"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["algorithms"] = json!([])),
        ["/auth/idp/algorithms"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["audiences"] = json!([])),
        ["/auth/idp/audiences"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["secret_env"] = json!("MISSING")),
        ["/auth/idp/secret_env"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["algorithms"] = json!(["RS256"])),
        ["/auth/idp", "/auth/idp/secret_env"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["jwks"] = json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] })),
        ["/auth/idp/jwks"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["leeway_s"] = json!(-1)),
        ["/auth/idp/leeway_s"]
    );
    assert_eq!(
        with(|d| d["auth"]["idp"]["type"] = json!("saml")),
        ["/auth/idp/type"]
    );
}

#[test]
fn short_hmac_secrets_are_refused() {
    let short = |name: &str| (name == "HS").then(|| "short".to_owned());
    let err = Policy::from_json(&valid().to_string(), &short).unwrap_err();
    assert_eq!(err.0[0].pointer, "/auth/idp/secret_env");
}

#[test]
fn api_keys_are_hashes_only() {
    assert_eq!(
        with(|d| d["auth"]["keys"]["keys"][0]["sha256"] = json!("plaintext-key")),
        ["/auth/keys/keys/0/sha256"]
    );
    assert_eq!(
        with(|d| d["auth"]["keys"]["keys"][0]["key"] = json!("x")),
        ["/auth/keys/keys/0/key"]
    );
    assert_eq!(
        with(|d| d["auth"]["keys"]["header"] = json!("x-portcullis-key")),
        ["/auth/keys/header"]
    );
    assert_eq!(
        with(|d| d["auth"]["keys"]["header"] = json!("bad header")),
        ["/auth/keys/header"]
    );
}

#[test]
fn routes_are_checked() {
    assert_eq!(
        with(|d| d["routes"][1]["id"] = json!("health")),
        ["/routes/1/id"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["methods"] = json!(["get"])),
        ["/routes/0/methods/0"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["methods"] = json!([])),
        ["/routes/0/methods"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["path"] = json!("/a/../b")),
        ["/routes/0/path"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["path"] = json!("/a/")),
        ["/routes/0/path"]
    );
    assert_eq!(with(|d| d["routes"] = json!([])), ["/routes"]);
    assert_eq!(
        with(|d| d["routes"][1]["request"]["body_schema"] = json!({ "type": 12 })).len(),
        1
    );
    assert!(
        with(|d| d["routes"][1]["request"]["body_schema"] = json!({ "type": 12 }))[0]
            .starts_with("/routes/1/request/body_schema")
    );
    assert_eq!(
        with(|d| d["routes"][1]["request"]["content_types"] = json!(["json"])),
        ["/routes/1/request/content_types/0"]
    );
}

#[test]
fn consumer_quotas_need_an_authenticated_route() {
    assert_eq!(
        with(|d| d["routes"][0]["quota"] = json!(["q"])),
        ["/routes/0/quota/0"]
    );
}

#[test]
fn quotas_are_checked() {
    assert_eq!(
        with(|d| d["quotas"]["q"]["limit"] = json!(0)),
        ["/quotas/q/limit"]
    );
    assert_eq!(
        with(|d| d["quotas"]["q"]["window_s"] = json!(1.5)),
        ["/quotas/q/window_s"]
    );
    assert_eq!(
        with(|d| d["quotas"]["q"]["by"] = json!("user")),
        ["/quotas/q/by"]
    );
    assert_eq!(
        with(|d| d["quotas"]["q"]["on_store_error"] = json!("maybe")),
        ["/quotas/q/on_store_error"]
    );
    assert!(with(|d| d["quotas"]["q"]["by"] = json!("header:x-tenant")).is_empty());
}

#[test]
fn syntax_errors_and_duplicate_keys_are_reported_with_a_position() {
    let err = Policy::from_json("{\"version\": 1,,}", &secrets).unwrap_err();
    assert!(matches!(
        err.0[0].kind,
        ConfigErrorKind::Syntax { line: 1, .. }
    ));
    let err = Policy::from_json("{\"version\": 1, \"version\": 1}", &secrets).unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    for text in ["", "null", "[]", "\"x\"", "1"] {
        assert!(Policy::from_json(text, &secrets).is_err(), "{text:?}");
    }
}

#[test]
fn pointers_escape_slash_and_tilde() {
    let found = with(|d| d["origins"]["a/b~c"] = json!({ "url": "http://x" }));
    assert_eq!(found, ["/origins/a~1b~0c"]);
}

#[test]
fn remote_key_sources_are_checked() {
    let rs = |patch: Value| {
        with(|d| {
            d["auth"]["idp"] = json!({ "type": "jwt", "issuer": "https://idp/", "audiences": ["api"], "algorithms": ["RS256"] });
            for (k, v) in patch.as_object().unwrap() {
                d["auth"]["idp"][k] = v.clone();
            }
        })
    };
    assert!(rs(json!({ "jwks_url": "https://idp.example/.well-known/jwks.json" })).is_empty());
    assert!(
        rs(json!({ "jwks_url": "http://127.0.0.1:9/jwks" })).is_empty(),
        "loopback may use http"
    );
    assert!(rs(json!({ "jwks_url": "http://localhost:9/jwks" })).is_empty());
    assert!(rs(json!({ "oidc_issuer": "https://tenant.eu.auth0.com/" })).is_empty());
    assert_eq!(
        rs(json!({ "jwks_url": "http://idp.example/jwks" })),
        ["/auth/idp/jwks_url"]
    );
    assert_eq!(
        rs(json!({ "oidc_issuer": "http://10.0.0.1" })),
        ["/auth/idp/oidc_issuer"]
    );
    assert_eq!(
        rs(json!({ "jwks_url": "ftp://x/y" })),
        ["/auth/idp/jwks_url"]
    );
    assert_eq!(
        rs(json!({ "jwks_url": "https://a/jwks", "oidc_issuer": "https://a" })),
        ["/auth/idp/oidc_issuer"],
        "exactly one key source"
    );
    assert_eq!(
        rs(json!({ "jwks_url": "https://a/jwks", "jwks_refresh_s": 1 })),
        ["/auth/idp/jwks_refresh_s"]
    );
    assert_eq!(
        rs(json!({ "jwks_url": "https://a/jwks", "jwks_max_stale_s": "1d" })),
        ["/auth/idp/jwks_max_stale_s"]
    );
    assert_eq!(
        rs(json!({ "jwks_url": "https://a/jwks", "jwks_min_refresh_interval_s": 0 })),
        ["/auth/idp/jwks_min_refresh_interval_s"]
    );
    assert_eq!(
        rs(json!({ "jwks_url": "https://a/jwks", "consumer_claim": "" })),
        ["/auth/idp/consumer_claim"]
    );
    assert!(rs(json!({ "jwks_url": "https://a/jwks", "consumer_claim": "email", "scopes_claim": "permissions" })).is_empty());
}

#[test]
fn discovery_lets_the_issuer_default_to_the_oidc_issuer() {
    let found = with(|d| {
        d["auth"]["idp"] = json!({ "type": "jwt", "oidc_issuer": "https://idp.example", "audiences": ["api"], "algorithms": ["ES256"] });
    });
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn config_ttl_defaults_to_30_seconds_and_is_bounded() {
    let policy = Policy::from_json(&valid().to_string(), &secrets).unwrap();
    assert_eq!(policy.config_ttl().as_secs(), 30);
    assert_eq!(with(|d| d["config_ttl_s"] = json!(0)), ["/config_ttl_s"]);
    assert!(with(|d| d["config_ttl_s"] = json!(5)).is_empty());
}

#[test]
fn token_cache_bounds_are_settable_and_checked() {
    assert!(with(|d| d["token_cache_entries"] = json!(0)).is_empty());
    assert!(with(|d| d["token_cache_bytes"] = json!(1_048_576)).is_empty());
    assert_eq!(
        with(|d| d["token_cache_entries"] = json!(-1)),
        ["/token_cache_entries"]
    );
    assert_eq!(
        with(|d| d["token_cache_bytes"] = json!("1MB")),
        ["/token_cache_bytes"]
    );
}

#[test]
fn an_unknown_field_in_each_section_is_reported_at_its_pointer() {
    type Patch = fn(&mut Value);
    let cases: [(&str, Patch); 9] = [
        ("/tracing", |d| d["tracing"] = json!({})),
        ("/origins/api/retries", |d| {
            d["origins"]["api"]["retries"] = json!(3)
        }),
        ("/auth/idp/issuers", |d| {
            d["auth"]["idp"]["issuers"] = json!([])
        }),
        ("/auth/keys/prefix", |d| {
            d["auth"]["keys"]["prefix"] = json!("k_")
        }),
        ("/auth/keys/keys/0/expires", |d| {
            d["auth"]["keys"]["keys"][0]["expires"] = json!(0)
        }),
        ("/quotas/q/burst", |d| d["quotas"]["q"]["burst"] = json!(5)),
        ("/routes/0/rewrite", |d| {
            d["routes"][0]["rewrite"] = json!({})
        }),
        ("/routes/1/auth/audience", |d| {
            d["routes"][1]["auth"]["audience"] = json!("api")
        }),
        ("/routes/1/request/content_type", |d| {
            d["routes"][1]["request"]["content_type"] = json!("application/json")
        }),
    ];
    for (pointer, patch) in cases {
        assert_eq!(with(patch), [pointer]);
    }
}

#[test]
fn an_unknown_field_in_an_inline_key_set_is_reported() {
    let found = with(|d| {
        d["auth"]["idp"] = json!({
            "type": "jwt", "issuer": "https://idp/", "audiences": ["api"], "algorithms": ["ES256"],
            "jwks": { "keys": [], "refresh": 60 }
        });
    });
    assert_eq!(found, ["/auth/idp/jwks/refresh", "/auth/idp/jwks/keys"]);
}

#[test]
fn unknown_fields_in_different_sections_are_all_reported_with_other_problems() {
    let found = with(|d| {
        d["extra"] = json!(true);
        d["origins"]["api"]["timeout"] = json!(1);
        d["auth"]["idp"]["audience"] = json!("x");
        d["auth"]["keys"]["keys"][0]["key"] = json!("plaintext");
        d["quotas"]["q"]["burst"] = json!(1);
        d["quotas"]["q"]["limit"] = json!(0);
        d["routes"][0]["metods"] = json!(["GET"]);
        d["routes"][0]["also"] = json!(1);
        d["routes"][1]["request"]["max_body"] = json!(1);
    });
    assert_eq!(
        found,
        [
            "/extra",
            "/origins/api/timeout",
            "/auth/idp/audience",
            "/auth/keys/keys/0/key",
            "/quotas/q/burst",
            "/quotas/q/limit",
            // Within one object, in key order.
            "/routes/0/also",
            "/routes/0/metods",
            "/routes/1/request/max_body",
        ]
    );
    let err = Policy::from_json(
        &{
            let mut d = valid();
            d["extra"] = json!(1);
            d["routes"][0]["metods"] = json!(["GET"]);
            d
        }
        .to_string(),
        &secrets,
    )
    .unwrap_err();
    assert!(err
        .0
        .iter()
        .all(|e| e.kind == ConfigErrorKind::UnknownField));
    assert_eq!(
        err.to_string(),
        "/extra: unknown field\n/routes/0/metods: unknown field"
    );
}

/// serde reads `null` into an `Option` field as "absent"; the reader must not, or
/// `"body_schema": null` would drop a route's schema and `"auth": null` would read as missing.
#[test]
fn null_is_a_value_of_the_wrong_type_not_an_absent_field() {
    let kind = |patch: fn(&mut Value)| {
        let mut doc = valid();
        patch(&mut doc);
        let err = Policy::from_json(&doc.to_string(), &secrets).unwrap_err();
        err.0
            .into_iter()
            .map(|e| (e.pointer, e.kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kind(|d| d["routes"][1]["request"]["max_body_bytes"] = json!(null)),
        [(
            "/routes/1/request/max_body_bytes".to_owned(),
            ConfigErrorKind::WrongType {
                expected: "an integer"
            }
        )]
    );
    assert_eq!(
        kind(|d| d["routes"][0]["auth"] = json!(null)),
        [(
            "/routes/0/auth".to_owned(),
            ConfigErrorKind::WrongType {
                expected: "an object"
            }
        )]
    );
    assert_eq!(
        kind(|d| d["$schema"] = json!(null)),
        [(
            "/$schema".to_owned(),
            ConfigErrorKind::WrongType {
                expected: "a string"
            }
        )]
    );
    assert_eq!(
        with(|d| d["routes"][1]["request"]["body_schema"] = json!(null)),
        ["/routes/1/request/body_schema"]
    );
    assert_eq!(with(|d| d["version"] = json!(null)), ["/version"]);
    assert_eq!(
        with(|d| d["routes"][1]["quota"] = json!(null)),
        ["/routes/1/quota"]
    );
    assert_eq!(
        with(|d| d["routes"][0]["methods"] = json!(["GET", null])),
        ["/routes/0/methods/1"]
    );
}

#[test]
fn wrong_types_are_reported_at_the_element_that_has_them() {
    assert_eq!(
        with(|d| d["routes"][1]["methods"] = json!(["GET", 7, "POST", {}])),
        ["/routes/1/methods/1", "/routes/1/methods/3"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["auth"]["scopes"] = json!(["s", 1])),
        ["/routes/1/auth/scopes/1"]
    );
    assert_eq!(
        with(|d| d["auth"]["keys"]["keys"] = json!([7])),
        ["/auth/keys/keys/0"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["request"] = json!("json")),
        ["/routes/1/request"]
    );
}

#[test]
fn a_provider_that_is_not_an_object_is_named_as_such() {
    let mut doc = valid();
    doc["auth"]["broken"] = json!("jwt");
    let err = Policy::from_json(&doc.to_string(), &secrets).unwrap_err();
    assert_eq!(
        err.0,
        [ConfigError {
            pointer: "/auth/broken".to_owned(),
            kind: ConfigErrorKind::WrongType {
                expected: "an object"
            }
        }]
    );
}

fn warnings(doc: &Value) -> Vec<(String, String)> {
    let policy = Policy::from_json(&doc.to_string(), &secrets).expect("valid config");
    policy
        .warnings()
        .iter()
        .map(|w| (w.pointer.clone(), w.message.to_string()))
        .collect()
}

#[test]
fn forward_headers_are_read_at_the_top_and_on_routes() {
    let mut doc = valid();
    doc["forward_headers"] = json!({ "allow": ["accept", "x-request-*"] });
    doc["routes"][0]["forward_headers"] = json!({ "allow": [] });
    let policy = Policy::from_json(&doc.to_string(), &secrets).unwrap();
    assert!(policy
        .forward_headers
        .as_ref()
        .unwrap()
        .allows("x-request-id"));
    assert!(!policy.routes[0]
        .forward_headers
        .as_ref()
        .unwrap()
        .allows("accept"));
    assert!(policy.routes[1].forward_headers.is_none());
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());

    assert_eq!(
        with(|d| d["forward_headers"] = json!({ "allow": ["ok", "*", "a b"], "deny": [] })),
        [
            "/forward_headers/deny",
            "/forward_headers/allow/1",
            "/forward_headers/allow/2"
        ]
    );
    assert_eq!(
        with(|d| d["forward_headers"] = json!({})),
        ["/forward_headers/allow"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["forward_headers"] = json!({ "allow": ["a", "A"] })),
        ["/routes/1/forward_headers/allow/1"]
    );
    assert_eq!(
        with(|d| d["routes"][1]["forward_headers"] = json!(["accept"])),
        ["/routes/1/forward_headers"]
    );
}

#[test]
fn allow_list_entries_the_header_table_overrides_are_warnings() {
    let mut doc = valid();
    doc["forward_headers"] = json!({ "allow": ["accept", "x-forwarded-*", "x-api-key"] });
    doc["routes"][1]["forward_headers"] = json!({ "allow": ["X-HTTP-Method-Override"] });
    let w = warnings(&doc);
    let pointers: Vec<&str> = w.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/forward_headers/allow/1",
            "/forward_headers/allow/2",
            "/routes/1/forward_headers/allow/0"
        ]
    );
    assert!(w[1].1.contains("Credentials for the gateway"), "{}", w[1].1);
    assert!(w[2].1.contains("refused"), "{}", w[2].1);
    let policy = Policy::from_json(&doc.to_string(), &secrets).unwrap();
    assert_eq!(
        policy.warnings()[0].to_string(),
        format!("/forward_headers/allow/1: warning: {}", w[0].1)
    );
}

#[test]
fn quotas_by_a_header_the_client_chooses_are_warnings() {
    let mut doc = valid();
    doc["auth"]["keys"]["header"] = json!("x-partner-key");
    doc["quotas"] = json!({
        "per-client": { "limit": 10, "window_s": 60, "by": "header:x-client-id" },
        "per-key": { "limit": 10, "window_s": 60, "by": "header:X-Partner-Key" },
        "per-token": { "limit": 10, "window_s": 60, "by": "header:authorization" },
        "spoofed": { "limit": 10, "window_s": 60, "by": "header:x-portcullis-consumer" },
        "q": { "limit": 10, "window_s": 60, "by": "consumer" }
    });
    doc["routes"][0]["quota"] = json!(["per-client", "per-key"]);
    doc["routes"][1]["quota"] = json!(["q", "per-key", "per-token", "spoofed"]);
    let w = warnings(&doc);
    let pointers: Vec<&str> = w.iter().map(|(p, _)| p.as_str()).collect();
    // The key header is checked on /routes/1 (its providers read it), not on the public route.
    assert_eq!(
        pointers,
        [
            "/routes/0/quota/0",
            "/routes/0/quota/1",
            "/routes/1/quota/2",
            "/routes/1/quota/3"
        ]
    );
    assert!(w[0].1.contains("\"per-client\"") && w[0].1.contains("x-client-id"));
    assert!(w[0].1.contains("\"consumer\""));
}

#[test]
fn query_lists_are_the_parameters_the_schema_types_as_arrays() {
    let mut doc = valid();
    doc["routes"][0]["request"] = json!({ "query_schema": { "type": "object", "properties": {
        "tag": { "type": "array" }, "q": { "type": "string" } } } });
    let policy = Policy::from_json(&doc.to_string(), &secrets).unwrap();
    assert_eq!(policy.routes[0].request.query_lists, ["tag"]);
    let deferred =
        Policy::from_json_with(&doc.to_string(), &secrets, SchemaCompilation::OnFirstUse).unwrap();
    assert_eq!(deferred.routes[0].request.query_lists, ["tag"]);
}

#[test]
fn origin_signing_needs_a_set_secret_of_32_bytes() {
    let sign = |v: Value| with(|d| d["origins"]["api"]["sign"] = v);
    assert_eq!(sign(json!({ "secret_env": "HS" })), Vec::<String>::new());
    assert_eq!(
        sign(json!({ "secret_env": "HS", "previous_secret_env": "HS" })),
        Vec::<String>::new()
    );
    assert_eq!(sign(json!({})), ["/origins/api/sign/secret_env"]);
    assert_eq!(
        sign(json!({ "secret_env": "UNSET" })),
        ["/origins/api/sign/secret_env"]
    );
    assert_eq!(
        sign(json!({ "secret_env": "" })),
        ["/origins/api/sign/secret_env"]
    );
    assert_eq!(
        sign(json!({ "secret_env": 7 })),
        ["/origins/api/sign/secret_env"]
    );
    assert_eq!(
        sign(json!({ "secret_env": "HS", "previous_secret_env": "UNSET" })),
        ["/origins/api/sign/previous_secret_env"]
    );
    assert_eq!(
        sign(json!({ "secret_env": "HS", "key": "inline" })),
        ["/origins/api/sign/key"]
    );
    assert_eq!(sign(json!("HS")), ["/origins/api/sign"]);
    let short = |name: &str| (name == "SHORT").then(|| "x".repeat(31));
    let mut doc = valid();
    doc["origins"]["api"]["sign"] = json!({ "secret_env": "SHORT" });
    let Err(ConfigErrors(errors)) = Policy::from_json(&doc.to_string(), &short) else {
        panic!("a 31-byte key loaded");
    };
    assert!(
        errors
            .iter()
            .any(|e| e.pointer == "/origins/api/sign/secret_env"
                && e.to_string().contains("32 bytes"))
    );
}

#[test]
fn client_ip_is_checked_with_pointers() {
    let ok = |v: Value| with(|d| d["client_ip"] = v);
    assert!(ok(json!({ "trusted_proxies": ["10.0.0.0/8", "::1"] })).is_empty());
    assert!(ok(json!({ "header": "cf-connecting-ip", "trusted_proxies": ["::/0"] })).is_empty());
    assert_eq!(
        ok(json!({ "trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8", "bogus"] })),
        [
            "/client_ip/trusted_proxies/1",
            "/client_ip/trusted_proxies/2"
        ]
    );
    assert_eq!(
        ok(json!({ "trusted_proxies": ["10.0.0.0/8", 7] })),
        ["/client_ip/trusted_proxies/1"]
    );
    assert_eq!(
        ok(json!({ "header": "x-forwarded-for" })),
        ["/client_ip/trusted_proxies"]
    );
    assert_eq!(
        ok(json!({ "trusted_proxies": [] })),
        ["/client_ip/trusted_proxies"]
    );
    assert_eq!(
        ok(json!({ "header": "Forwarded", "trusted_proxies": ["10.0.0.0/8"] })),
        ["/client_ip/header"],
        "RFC 7239 syntax is not an address list"
    );
    assert_eq!(
        ok(json!({ "header": "not a name", "trusted_proxies": ["10.0.0.0/8"], "hops": 2 })),
        ["/client_ip/hops", "/client_ip/header"]
    );
    assert_eq!(ok(json!("x-forwarded-for")), ["/client_ip"]);
}

#[test]
fn trusting_every_address_is_a_warning() {
    let mut doc = valid();
    doc["client_ip"] = json!({ "trusted_proxies": ["0.0.0.0/1", "128.0.0.0/1"] });
    let w = warnings(&doc);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "/client_ip/trusted_proxies");
    doc["client_ip"] = json!({ "trusted_proxies": ["10.0.0.0/8"] });
    assert!(warnings(&doc).is_empty());
}

#[test]
fn ip_rules_are_checked_at_the_top_level_and_on_routes() {
    assert!(with(|d| {
        d["ip"] = json!({ "allow": ["203.0.113.0/24", "2001:db8::/32"], "deny": ["198.51.100.7"] });
        d["routes"][0]["ip"] = json!({ "deny": ["::ffff:203.0.113.0/120"] });
    })
    .is_empty());
    assert_eq!(
        with(|d| {
            d["ip"] = json!({ "allow": ["203.0.113.1/24"], "deny": "198.51.100.7", "block": [] });
            d["routes"][1]["ip"] = json!({ "deny": ["2001:db8::1/32", "1.2.3"] });
        }),
        [
            "/ip/block",
            "/ip/allow/0",
            "/ip/deny",
            "/routes/1/ip/deny/0",
            "/routes/1/ip/deny/1"
        ]
    );
    let mut doc = valid();
    doc["routes"][0]["ip"] = json!({ "allow": [] });
    assert_eq!(warnings(&doc)[0].0, "/routes/0/ip", "admits everyone");
    let policy = Policy::from_json(&valid().to_string(), &secrets).unwrap();
    assert!(policy.ip.is_none() && policy.client_ip.is_none());
}

#[test]
fn lockouts_are_checked_at_the_top_level_and_on_authenticated_routes() {
    let good = json!({ "failures": 20, "window_s": 60, "block_s": 300, "by": "ip" });
    assert!(with(|d| {
        d["lockout"] = good.clone();
        d["routes"][1]["lockout"] = json!({ "failures": 5, "window_s": 60, "block_s": 60 });
    })
    .is_empty());
    assert_eq!(
        with(|d| {
            d["lockout"] =
                json!({ "failures": 0, "window_s": 60, "block_s": 86401, "by": "consumer" });
            d["routes"][1]["lockout"] = json!({ "window_s": "60", "block_s": 1, "extra": 1 });
        }),
        [
            "/lockout/failures",
            "/lockout/block_s",
            "/lockout/by",
            "/routes/1/lockout/extra",
            "/routes/1/lockout/failures",
            "/routes/1/lockout/window_s"
        ]
    );
    assert_eq!(
        with(|d| d["routes"][0]["lockout"] = good.clone()),
        ["/routes/0/lockout"],
        "a public route has no 401 to count"
    );
}

#[test]
fn origin_tls_is_read_natively_and_refused_where_no_file_can_be_read() {
    let tls = json!({ "ca_file": "/etc/ca.pem", "client_cert_file": "/etc/c.pem",
                      "client_key_file": "/etc/k.pem", "server_name": "orders.internal" });
    let mut doc = valid();
    doc["origins"]["api"] = json!({ "url": "https://10.0.0.5:8443", "tls": tls });
    let policy = Policy::from_json(&doc.to_string(), &secrets).expect("native reads tls");
    let read = policy.origins().next().unwrap().tls.clone().unwrap();
    assert_eq!(read.server_name.as_deref(), Some("orders.internal"));
    assert_eq!(
        read.client_cert,
        Some(("/etc/c.pem".into(), "/etc/k.pem".into()))
    );
    let edge = Policy::from_json_with(&doc.to_string(), &secrets, SchemaCompilation::AtLoad);
    let errors = edge.expect_err("an edge runtime cannot read files").0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].pointer, "/origins/api/tls");
    assert!(
        errors[0].to_string().contains("mtls_certificates"),
        "{}",
        errors[0]
    );

    let at = |origin: Value| with(|d| d["origins"]["api"] = origin);
    assert_eq!(
        at(json!({ "url": "http://10.0.0.5", "tls": { "ca_file": "/ca.pem" } })),
        ["/origins/api/tls"],
        "plain http has no TLS to configure"
    );
    assert_eq!(
        at(json!({ "url": "https://x", "tls": { "client_cert_file": "/c.pem" } })),
        ["/origins/api/tls/client_key_file"]
    );
    assert_eq!(
        at(json!({ "url": "https://x", "tls": { "client_key_file": "/k.pem", "ca_file": "" } })),
        [
            "/origins/api/tls/ca_file",
            "/origins/api/tls/client_cert_file"
        ]
    );
    assert_eq!(
        at(json!({ "url": "https://x", "tls": { "server_name": "bad name", "verify": false } })),
        ["/origins/api/tls/verify", "/origins/api/tls/server_name"]
    );
    assert!(at(json!({ "url": "https://x", "tls": { "server_name": "192.0.2.1" } })).is_empty());
}
