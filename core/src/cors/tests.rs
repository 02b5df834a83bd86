use super::*;
use serde_json::json;

fn policy(v: Value) -> Cors {
    Cors::from_json(&v).unwrap_or_else(|e| panic!("{v}: {e:?}"))
}

fn refused(v: Value) -> Vec<CorsError> {
    match Cors::from_json(&v) {
        Ok(_) => panic!("{v} should be refused"),
        Err(e) => e,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

fn example() -> Cors {
    policy(json!({
        "allow_origins": ["https://app.example.com", "https://*.example.com"],
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["authorization", "Content-Type"],
        "expose_headers": ["ratelimit"],
        "allow_credentials": true,
        "max_age_s": 600
    }))
}

/// Whether `origin` (one header value) is allowed by a policy listing `patterns`.
fn allowed(patterns: &[&str], origin: &str) -> bool {
    let cors = policy(json!({ "allow_origins": patterns }));
    cors.allow_origin_value(&headers(&[("origin", origin)]))
        .is_some()
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut all = h.get_all(name).iter();
    let first = all.next()?;
    assert!(all.next().is_none(), "{name} appears more than once");
    first.to_str().ok()
}

fn joined(h: &HeaderMap, name: &str) -> Option<String> {
    let v: Vec<&str> = h
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    (!v.is_empty()).then(|| v.join(", "))
}

// ===== compile =====

#[test]
fn defaults() {
    let cors = policy(json!({"allow_origins": ["https://a.com"]}));
    assert_eq!(cors.max_age_s(), 600);
    assert!(!cors.allows_credentials());
    assert!(cors.allow_methods.is_none());
    assert!(cors.allow_headers.is_empty());
    assert!(cors.expose_value.is_none());
}

#[test]
fn unknown_fields_are_named() {
    let e = refused(json!({"allow_origins": ["https://a.com"], "allow_origin": ["x"], "a/b": 1}));
    let at: Vec<&str> = e.iter().map(|e| e.at.as_str()).collect();
    assert_eq!(at, ["/a~1b", "/allow_origin"]);
    assert!(e.iter().all(|e| e.kind == CorsErrorKind::UnknownField));
}

#[test]
fn wrong_types_are_refused() {
    for bad in [
        json!({"allow_origins": "https://a.com"}),
        json!({"allow_origins": ["https://a.com"], "allow_credentials": "true"}),
        json!({"allow_origins": ["https://a.com"], "max_age_s": -1}),
        json!({"allow_origins": ["https://a.com"], "max_age_s": 1.5}),
        json!({}),
        json!("none"),
        json!(["https://a.com"]),
    ] {
        let e = refused(bad.clone());
        assert!(matches!(e[0].kind, CorsErrorKind::Shape(_)), "{bad}: {e:?}");
    }
}

#[test]
fn every_problem_is_reported_with_its_pointer() {
    let e = refused(json!({
        "allow_origins": ["https://ok.com", "https://a.com/", "ftp//x"],
        "allow_methods": ["GET", "get", "GE T"],
        "allow_headers": ["x-ok", "bad header", "*"],
        "expose_headers": ["é"],
        "max_age_s": 86401
    }));
    let got: Vec<(&str, &CorsErrorKind)> = e.iter().map(|e| (e.at.as_str(), &e.kind)).collect();
    assert_eq!(got.len(), 8, "{got:?}");
    assert_eq!(got[0].0, "/allow_origins/1");
    assert_eq!(got[1].0, "/allow_origins/2");
    assert_eq!(got[2], ("/allow_methods/1", &CorsErrorKind::BadMethod));
    assert_eq!(got[3], ("/allow_methods/2", &CorsErrorKind::BadMethod));
    assert_eq!(got[4], ("/allow_headers/1", &CorsErrorKind::BadHeaderName));
    assert_eq!(got[5], ("/allow_headers/2", &CorsErrorKind::HeaderWildcard));
    assert_eq!(got[6], ("/expose_headers/0", &CorsErrorKind::BadHeaderName));
    assert_eq!(got[7], ("/max_age_s", &CorsErrorKind::MaxAgeTooLarge));
    // Display names the place and the rule.
    assert_eq!(e[7].to_string(), "/max_age_s: max_age_s is at most 86400");
}

#[test]
fn max_age_bounds() {
    let at_limit = policy(json!({"allow_origins": ["https://a.com"], "max_age_s": 86400}));
    assert_eq!(at_limit.max_age_s(), 86400);
    let zero = policy(json!({"allow_origins": ["https://a.com"], "max_age_s": 0}));
    assert_eq!(zero.max_age_s(), 0);
    for big in [86401u64, u64::from(u32::MAX) + 1, u64::MAX] {
        let e = refused(json!({"allow_origins": ["https://a.com"], "max_age_s": big}));
        assert_eq!(e[0].kind, CorsErrorKind::MaxAgeTooLarge);
    }
}

#[test]
fn empty_lists_are_refused() {
    assert_eq!(
        refused(json!({"allow_origins": []}))[0],
        error("/allow_origins", CorsErrorKind::NoOrigins)
    );
    assert_eq!(
        refused(json!({"allow_origins": ["https://a.com"], "allow_methods": []}))[0],
        error("/allow_methods", CorsErrorKind::NoMethods)
    );
}

#[test]
fn any_origin_rules() {
    assert_eq!(
        refused(json!({"allow_origins": ["*"], "allow_credentials": true}))[0],
        error("/allow_origins/0", CorsErrorKind::AnyWithCredentials)
    );
    assert_eq!(
        refused(json!({"allow_origins": ["*", "https://a.com"]}))[0],
        error("/allow_origins", CorsErrorKind::AnyNotAlone)
    );
    assert_eq!(
        refused(json!({"allow_origins": ["https://a.com", "*"], "allow_credentials": true}))[0]
            .kind,
        CorsErrorKind::AnyNotAlone
    );
    policy(json!({"allow_origins": ["*"]}));
    // A subdomain pattern with credentials is a list of origins, not "*".
    policy(json!({"allow_origins": ["https://*.a.com"], "allow_credentials": true}));
}

#[test]
fn malformed_patterns_are_refused() {
    for bad in [
        "a.com",
        "https//a.com",
        "https://",
        "https://a.com/",
        "https://a.com/path",
        "https://a.com?q",
        "https://a.com#f",
        "https://user@a.com",
        "https://user:pw@a.com",
        "https://a.com:",
        "https://a.com:0",
        "https://a.com:65536",
        "https://a.com:+443",
        "https://a.com:44a",
        "https://a..com",
        "https://a.com.",
        "https://.a.com",
        "https://-a.com",
        "https://a_b.com",
        "https://a com",
        "https://é.com",
        "https://a%2ecom",
        "https://*",
        "https://*.com",
        "https://*example.com",
        "https://a.*.com",
        "https://*.*.example.com",
        "https://x*.example.com",
        "https://*.[::1]",
        "*.example.com",
        "1http://a.com",
        "ht tp://a.com",
        "https://[]",
        "https://[zz::1]",
        "",
        "NULL",
    ] {
        let e = refused(json!({ "allow_origins": ["https://ok.com", bad] }));
        assert!(
            e.len() == 1
                && e[0].at == "/allow_origins/1"
                && matches!(e[0].kind, CorsErrorKind::BadOrigin(_)),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn good_patterns_compile() {
    policy(json!({"allow_origins": [
        "https://a.com", "HTTPS://A.COM", "http://localhost:3000", "http://127.0.0.1:8080",
        "https://[::1]:8443", "https://*.a.com", "https://*.a.com:8443", "null",
        "chrome-extension://abcdefghijklmnop", "https://xn--bcher-kva.example"
    ]}));
}

#[test]
fn route_setting_forms() {
    assert!(matches!(
        CorsSetting::from_json(None),
        Ok(CorsSetting::Inherit)
    ));
    assert!(matches!(
        CorsSetting::from_json(Some(&json!("none"))),
        Ok(CorsSetting::Off)
    ));
    assert!(matches!(
        CorsSetting::from_json(Some(&json!({"allow_origins": ["https://a.com"]}))),
        Ok(CorsSetting::Own(_))
    ));
    for bad in [
        json!("None"),
        json!("off"),
        json!(null),
        json!(false),
        json!([]),
    ] {
        let e = CorsSetting::from_json(Some(&bad)).expect_err("refused");
        assert!(matches!(e[0].kind, CorsErrorKind::Shape(_)), "{bad}");
    }
    let e = CorsSetting::from_json(Some(
        &json!({"allow_origins": ["*"], "allow_credentials": true}),
    ))
    .expect_err("refused");
    assert_eq!(e[0].kind, CorsErrorKind::AnyWithCredentials);
    // The raw serde form reads the same.
    let raw: RawCorsSetting = serde_json::from_value(json!("none")).unwrap();
    assert_eq!(raw, RawCorsSetting::None);
    assert!(
        serde_json::from_value::<RawCorsSetting>(json!({"allow_origins": [], "x": 1})).is_err()
    );
}

#[test]
fn effective_policy() {
    let top = example();
    let own = policy(json!({"allow_origins": ["https://own.com"]}));
    let inherit = CorsSetting::Inherit;
    let off = CorsSetting::Off;
    let mine = CorsSetting::Own(Box::new(own));
    let req = headers(&[("origin", "https://own.com")]);
    assert!(inherit.effective(Some(&top)).is_some());
    assert!(inherit.effective(None).is_none());
    assert!(off.effective(Some(&top)).is_none());
    // The route's own replaces the top level whole: the top level's origins do not carry over.
    let eff = mine.effective(Some(&top)).unwrap();
    assert!(eff.allow_origin_value(&req).is_some());
    assert!(eff
        .allow_origin_value(&headers(&[("origin", "https://app.example.com")]))
        .is_none());
    assert!(!eff.allows_credentials());
}

// ===== origin matching =====

#[test]
fn exact_origins() {
    let p = ["https://a.com"];
    assert!(allowed(&p, "https://a.com"));
    assert!(allowed(&p, "https://a.com:443"), "explicit default port");
    assert!(
        allowed(&p, "HTTPS://A.COM"),
        "scheme and host compare case-insensitively"
    );
    assert!(allowed(&["https://A.com:443"], "https://a.com"));
    assert!(!allowed(&p, "http://a.com"), "other scheme");
    assert!(!allowed(&p, "https://a.com:8443"), "other port");
    assert!(
        !allowed(&p, "http://a.com:443"),
        "443 is not http's default"
    );
    assert!(!allowed(&p, "https://a.com."), "trailing dot");
    assert!(!allowed(&p, "https://a.com/"), "path in Origin");
    assert!(!allowed(&p, "https://a.com/x"));
    assert!(!allowed(&p, "https://a.com?x"));
    assert!(!allowed(&p, "https://evil.com@a.com"), "userinfo");
    assert!(!allowed(&p, "https://a.com@evil.com"));
    assert!(!allowed(&p, "https://a.com.evil.net"));
    assert!(!allowed(&p, "https://xa.com"));
    assert!(
        !allowed(&p, "https://b.a.com"),
        "exact never covers subdomains"
    );
    assert!(!allowed(&p, ""), "empty Origin");
    assert!(!allowed(&p, " https://a.com"));
    assert!(!allowed(&p, "https://a.com "));
    assert!(!allowed(&p, "https://a.com\t"));
    assert!(!allowed(&p, "null"));
    assert!(
        !allowed(&p, "https://*.a.com"),
        "a request origin is never a pattern"
    );
    assert!(!allowed(&p, "https://a.com:"), "empty port");
    assert!(!allowed(&p, "https://a.com:0443x"));
    let local = ["http://localhost:3000"];
    assert!(allowed(&local, "http://localhost:3000"));
    assert!(!allowed(&local, "http://localhost"));
    assert!(!allowed(&local, "http://localhost:3001"));
    let v6 = ["https://[::1]:8443"];
    assert!(allowed(&v6, "https://[::1]:8443"));
    assert!(!allowed(&v6, "https://[::1]"));
}

#[test]
fn subdomain_patterns() {
    let p = ["https://*.example.com"];
    assert!(allowed(&p, "https://x.example.com"));
    assert!(
        allowed(&p, "https://a.b.example.com"),
        "more than one label"
    );
    assert!(allowed(&p, "https://X.Example.COM"));
    assert!(allowed(&p, "https://x.example.com:443"));
    assert!(!allowed(&p, "https://example.com"), "never the apex");
    assert!(!allowed(&p, "https://.example.com"));
    assert!(!allowed(&p, "https://evilexample.com"));
    assert!(!allowed(&p, "https://x.evilexample.com"));
    assert!(!allowed(&p, "https://example.com.evil.net"));
    assert!(!allowed(&p, "https://x.example.com.evil.net"));
    assert!(!allowed(&p, "https://x.example.com."), "trailing dot");
    assert!(!allowed(&p, "http://x.example.com"), "other scheme");
    assert!(
        !allowed(&p, "https://x.example.com:8443"),
        "a port only where named"
    );
    assert!(!allowed(&p, "https://evil.com@x.example.com"), "userinfo");
    assert!(!allowed(&p, "https://x.example.com/"), "path");
    assert!(!allowed(&p, "https://x.example.com#"), "fragment");
    assert!(!allowed(&p, "https://x_y.example.com"));
    assert!(!allowed(&p, "https://x..example.com"), "empty label");
    assert!(
        allowed(&p, "https://xn--bcher-kva.example.com"),
        "punycode labels are names"
    );
    assert!(
        !allowed(&p, "https://-x.example.com"),
        "a label never starts with a hyphen"
    );
    assert!(!allowed(&p, "https://x.example.co"));
    assert!(!allowed(&p, "https://x.example.comm"));
    let ported = ["https://*.example.com:8443"];
    assert!(allowed(&ported, "https://x.example.com:8443"));
    assert!(!allowed(&ported, "https://x.example.com"));
    assert!(!allowed(&ported, "https://example.com:8443"));
    let default_port = ["https://*.example.com:443"];
    assert!(allowed(&default_port, "https://x.example.com"));
}

#[test]
fn non_ascii_and_garbage_origins() {
    let p = ["https://*.example.com", "https://a.com"];
    let cors = policy(json!({ "allow_origins": p }));
    for bytes in [
        &b"https://\xc3\xa9.example.com"[..],
        b"https://a.com\xff",
        b"https://xn--\xe2\x80\x8b.example.com",
        b"\x00https://a.com",
    ] {
        if let Ok(v) = HeaderValue::from_bytes(bytes) {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, v);
            assert!(cors.allow_origin_value(&h).is_none(), "{bytes:?}");
        }
    }
    for text in [
        "https://a。com",
        "https://ａ.com",
        "https://a.com%00",
        "https://a%2Ecom",
        "https:/a.com",
        "https:///a.com",
        "https://a.com:443:443",
        "https://[a.com]",
        "//a.com",
        "a.com",
        "*",
    ] {
        if let Ok(v) = HeaderValue::from_str(text) {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, v);
            assert!(cors.allow_origin_value(&h).is_none(), "{text:?}");
        }
    }
}

#[test]
fn multiple_origin_headers_are_not_allowed() {
    let cors = policy(json!({"allow_origins": ["https://a.com", "https://b.com"]}));
    let two = headers(&[("origin", "https://a.com"), ("origin", "https://a.com")]);
    assert!(cors.allow_origin_value(&two).is_none());
    let mixed = headers(&[("origin", "https://a.com"), ("origin", "https://b.com")]);
    assert!(cors.allow_origin_value(&mixed).is_none());
    let joined = headers(&[("origin", "https://a.com, https://b.com")]);
    assert!(cors.allow_origin_value(&joined).is_none());
    assert!(cors.allow_origin_value(&HeaderMap::new()).is_none());
}

#[test]
fn null_only_when_listed() {
    assert!(allowed(&["null"], "null"));
    assert!(allowed(&["https://a.com", "null"], "null"));
    assert!(!allowed(&["*"], "null"), "\"*\" does not cover null");
    assert!(!allowed(&["https://a.com"], "null"));
    assert!(!allowed(&["null"], "NULL"));
    assert!(!allowed(&["null"], "null "));
    assert!(!allowed(&["null"], "https://null"));
}

#[test]
fn any_origin_answers_star_or_echo() {
    let any = policy(json!({"allow_origins": ["*"]}));
    let req = headers(&[("origin", "https://whoever.net")]);
    assert_eq!(any.allow_origin_value(&req).unwrap(), "*");
    // Even "*" only answers a well-formed single Origin.
    assert!(any
        .allow_origin_value(&headers(&[("origin", "garbage")]))
        .is_none());
    // With credentials the origin is echoed, never "*".
    let creds = example();
    let req = headers(&[("origin", "https://x.example.com")]);
    assert_eq!(
        creds.allow_origin_value(&req).unwrap(),
        "https://x.example.com"
    );
}

#[test]
fn echo_keeps_the_request_spelling() {
    // Matching is case-insensitive, but the echo is the request's exact bytes: browsers compare
    // Allow-Origin with their own serialisation byte for byte.
    let cors = example();
    let req = headers(&[("origin", "https://App.Example.com:443")]);
    assert_eq!(
        cors.allow_origin_value(&req).unwrap(),
        "https://App.Example.com:443"
    );
}

// ===== preflight =====

fn pf(origin: &str, method: &str, req_headers: Option<&str>) -> HeaderMap {
    let mut h = headers(&[
        ("origin", origin),
        ("access-control-request-method", method),
    ]);
    if let Some(r) = req_headers {
        h.append(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_str(r).unwrap(),
        );
    }
    h
}

const GET_POST: [Method; 2] = [Method::GET, Method::POST];

#[test]
fn preflight_allowed() {
    let cors = example();
    let out = cors
        .preflight(
            &GET_POST,
            &pf(
                "https://app.example.com",
                "POST",
                Some("Content-Type, Authorization"),
            ),
        )
        .unwrap();
    assert_eq!(
        get(&out, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(get(&out, "access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        get(&out, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(get(&out, "access-control-allow-credentials"), Some("true"));
    assert_eq!(get(&out, "access-control-max-age"), Some("600"));
    assert_eq!(
        get(&out, "vary"),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert!(out.get("access-control-expose-headers").is_none());
    assert_eq!(out.len(), 6);
}

#[test]
fn preflight_without_requested_headers_has_no_allow_headers() {
    let cors = example();
    for rh in [None, Some(""), Some(" , ,")] {
        let out = cors
            .preflight(&GET_POST, &pf("https://x.example.com", "GET", rh))
            .unwrap();
        assert!(out.get("access-control-allow-headers").is_none(), "{rh:?}");
    }
}

#[test]
fn preflight_refusals() {
    let cors = example();
    let r = |h: HeaderMap| cors.preflight(&GET_POST, &h);
    use PreflightRefused as R;
    assert_eq!(r(pf("https://example.com", "GET", None)), Err(R::Origin));
    assert_eq!(r(pf("https://evil.net", "GET", None)), Err(R::Origin));
    assert_eq!(r(pf("null", "GET", None)), Err(R::Origin));
    assert_eq!(
        r(headers(&[("access-control-request-method", "GET")])),
        Err(R::Origin)
    );
    let mut two_origins = pf("https://app.example.com", "GET", None);
    two_origins.append(ORIGIN, HeaderValue::from_static("https://app.example.com"));
    assert_eq!(r(two_origins), Err(R::Origin));

    assert_eq!(
        r(pf("https://app.example.com", "DELETE", None)),
        Err(R::Method)
    );
    assert_eq!(
        r(pf("https://app.example.com", "get", None)),
        Err(R::Method),
        "methods are case-sensitive"
    );
    assert_eq!(r(pf("https://app.example.com", "", None)), Err(R::Method));
    assert_eq!(
        r(pf("https://app.example.com", "GET, POST", None)),
        Err(R::Method)
    );
    assert_eq!(
        r(headers(&[("origin", "https://app.example.com")])),
        Err(R::Method)
    );
    let mut two_methods = pf("https://app.example.com", "GET", None);
    two_methods.append(
        ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static("GET"),
    );
    assert_eq!(r(two_methods), Err(R::Method));

    assert_eq!(
        r(pf("https://app.example.com", "GET", Some("x-evil"))),
        Err(R::Header)
    );
    assert_eq!(
        r(pf(
            "https://app.example.com",
            "GET",
            Some("authorization, x-evil")
        )),
        Err(R::Header),
        "one unlisted name refuses the lot"
    );
    assert_eq!(
        r(pf(
            "https://app.example.com",
            "GET",
            Some("authorization x-evil")
        )),
        Err(R::Header)
    );
    assert_eq!(
        r(pf("https://app.example.com", "GET", Some("*"))),
        Err(R::Header)
    );
    assert_eq!(
        r(pf("https://app.example.com", "GET", Some("authorization;"))),
        Err(R::Header)
    );
    let mut two_lines = pf("https://app.example.com", "GET", Some("authorization"));
    two_lines.append(
        ACCESS_CONTROL_REQUEST_HEADERS,
        HeaderValue::from_static("x-evil"),
    );
    assert_eq!(
        r(two_lines),
        Err(R::Header),
        "every line of the list is checked"
    );
    let mut non_ascii = pf("https://app.example.com", "GET", None);
    non_ascii.append(
        ACCESS_CONTROL_REQUEST_HEADERS,
        HeaderValue::from_bytes(b"authorizati\xc3\xb6n").unwrap(),
    );
    assert_eq!(r(non_ascii), Err(R::Header));
    // Origin is checked first, so a refusal names the first fault.
    assert_eq!(
        r(pf("https://evil.net", "DELETE", Some("x-evil"))),
        Err(R::Origin)
    );
}

#[test]
fn preflight_header_list_is_lenient_in_form_strict_in_content() {
    let cors = example();
    for list in [
        "authorization",
        "AUTHORIZATION",
        "Content-Type,Authorization",
        " content-type ,\tauthorization ",
        "authorization,,content-type,",
        "authorization, authorization",
    ] {
        assert!(
            cors.preflight(&GET_POST, &pf("https://app.example.com", "GET", Some(list)))
                .is_ok(),
            "{list:?}"
        );
    }
}

#[test]
fn preflight_head_follows_get() {
    let cors = example();
    assert!(cors
        .preflight(&GET_POST, &pf("https://app.example.com", "HEAD", None))
        .is_ok());
    let post_only = policy(json!({"allow_origins": ["https://a.com"], "allow_methods": ["POST"]}));
    assert_eq!(
        post_only.preflight(&GET_POST, &pf("https://a.com", "HEAD", None)),
        Err(PreflightRefused::Method)
    );
}

#[test]
fn preflight_methods_default_to_the_route() {
    let cors = policy(json!({"allow_origins": ["https://a.com"]}));
    let out = cors
        .preflight(
            &[Method::PUT, Method::DELETE],
            &pf("https://a.com", "DELETE", None),
        )
        .unwrap();
    assert_eq!(
        get(&out, "access-control-allow-methods"),
        Some("PUT, DELETE")
    );
    assert!(out.get("access-control-allow-credentials").is_none());
    assert_eq!(
        cors.preflight(&[Method::PUT], &pf("https://a.com", "DELETE", None)),
        Err(PreflightRefused::Method)
    );
    assert_eq!(
        cors.preflight(&[Method::GET], &pf("https://a.com", "HEAD", None))
            .map(|h| get(&h, "access-control-allow-methods").map(str::to_owned)),
        Ok(Some("GET".to_owned()))
    );
    // A policy listing methods ignores the route's.
    let listed = example();
    assert_eq!(
        listed.preflight(
            &[Method::DELETE],
            &pf("https://a.example.com", "DELETE", None)
        ),
        Err(PreflightRefused::Method)
    );
}

#[test]
fn preflight_any_origin_answers_star() {
    let any = policy(json!({"allow_origins": ["*"], "max_age_s": 7200}));
    let out = any
        .preflight(&[Method::GET], &pf("https://who.net", "GET", None))
        .unwrap();
    assert_eq!(get(&out, "access-control-allow-origin"), Some("*"));
    assert_eq!(get(&out, "access-control-max-age"), Some("7200"));
}

#[test]
fn is_preflight_needs_all_three() {
    let full = pf("https://a.com", "GET", None);
    assert!(is_preflight(&Method::OPTIONS, &full));
    assert!(!is_preflight(&Method::GET, &full));
    assert!(!is_preflight(&Method::POST, &full));
    assert!(!is_preflight(
        &Method::OPTIONS,
        &headers(&[("origin", "https://a.com")])
    ));
    assert!(!is_preflight(
        &Method::OPTIONS,
        &headers(&[("access-control-request-method", "GET")])
    ));
    assert!(!is_preflight(&Method::OPTIONS, &HeaderMap::new()));
    // Malformed values still make it a preflight (one that will be refused), never a plain
    // OPTIONS that slips through to the origin.
    assert!(is_preflight(
        &Method::OPTIONS,
        &headers(&[("origin", ""), ("access-control-request-method", "")])
    ));
}

#[test]
fn requested_method_parsing() {
    assert_eq!(
        requested_method(&headers(&[("access-control-request-method", "PATCH")])),
        Some(Method::PATCH)
    );
    assert_eq!(
        requested_method(&headers(&[("access-control-request-method", "PURGE")])),
        Some(Method::from_bytes(b"PURGE").unwrap())
    );
    assert_eq!(requested_method(&HeaderMap::new()), None);
    for bad in ["", "GET POST", "GET,POST", "G(T"] {
        assert_eq!(
            requested_method(&headers(&[("access-control-request-method", bad)])),
            None,
            "{bad:?}"
        );
    }
    assert_eq!(
        requested_method(&headers(&[
            ("access-control-request-method", "GET"),
            ("access-control-request-method", "GET")
        ])),
        None
    );
}

// ===== responses =====

#[test]
fn response_for_allowed_origin() {
    let cors = example();
    let req = headers(&[("origin", "https://app.example.com")]);
    let mut resp = headers(&[("content-type", "application/json")]);
    apply_to_response(Some(&cors), &req, &mut resp);
    assert_eq!(
        get(&resp, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(get(&resp, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        get(&resp, "access-control-expose-headers"),
        Some("ratelimit")
    );
    assert_eq!(get(&resp, "vary"), Some("Origin"));
    assert!(resp.get("access-control-allow-methods").is_none());
    assert!(resp.get("access-control-max-age").is_none());
    assert_eq!(get(&resp, "content-type"), Some("application/json"));
}

#[test]
fn response_for_disallowed_or_missing_origin_only_varies() {
    let cors = example();
    for req in [
        HeaderMap::new(),
        headers(&[("origin", "https://evil.net")]),
        headers(&[("origin", "https://example.com")]),
        headers(&[("origin", "null")]),
        headers(&[
            ("origin", "https://a.example.com"),
            ("origin", "https://b.example.com"),
        ]),
    ] {
        let mut resp = HeaderMap::new();
        apply_to_response(Some(&cors), &req, &mut resp);
        assert_eq!(joined(&resp, "vary").as_deref(), Some("Origin"), "{req:?}");
        assert_eq!(resp.len(), 1, "{req:?}: {resp:?}");
    }
}

#[test]
fn response_replaces_the_origins_access_control_headers() {
    let cors = example();
    let origin_set = [
        ("access-control-allow-origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("access-control-allow-methods", "DELETE"),
        ("access-control-expose-headers", "x-secret"),
        ("access-control-expose-headers", "x-other"),
        ("access-control-max-age", "99999"),
        ("access-control-whatever", "1"),
        ("x-kept", "1"),
    ];
    // From an allowed origin: the policy's values, nothing of the origin's.
    let mut resp = headers(&origin_set);
    apply_to_response(
        Some(&cors),
        &headers(&[("origin", "https://x.example.com")]),
        &mut resp,
    );
    assert_eq!(
        get(&resp, "access-control-allow-origin"),
        Some("https://x.example.com")
    );
    assert_eq!(
        get(&resp, "access-control-expose-headers"),
        Some("ratelimit")
    );
    assert_eq!(get(&resp, "access-control-allow-credentials"), Some("true"));
    assert!(resp.get("access-control-allow-methods").is_none());
    assert!(resp.get("access-control-max-age").is_none());
    assert!(resp.get("access-control-whatever").is_none());
    assert_eq!(get(&resp, "x-kept"), Some("1"));
    // From a disallowed origin: none at all, so the origin cannot open the route by itself.
    let mut resp = headers(&origin_set);
    apply_to_response(
        Some(&cors),
        &headers(&[("origin", "https://evil.net")]),
        &mut resp,
    );
    assert!(
        resp.keys()
            .all(|n| !n.as_str().starts_with("access-control-")),
        "{resp:?}"
    );
    // A policy without credentials or expose list clears the origin's too.
    let plain = policy(json!({"allow_origins": ["https://a.com"]}));
    let mut resp = headers(&origin_set);
    apply_to_response(
        Some(&plain),
        &headers(&[("origin", "https://a.com")]),
        &mut resp,
    );
    assert_eq!(
        get(&resp, "access-control-allow-origin"),
        Some("https://a.com")
    );
    assert!(resp.get("access-control-allow-credentials").is_none());
    assert!(resp.get("access-control-expose-headers").is_none());
}

#[test]
fn route_without_cors_is_untouched() {
    let original = headers(&[
        ("access-control-allow-origin", "*"),
        ("vary", "Accept-Encoding"),
    ]);
    let mut resp = original.clone();
    apply_to_response(None, &headers(&[("origin", "https://a.com")]), &mut resp);
    assert_eq!(resp, original);
}

#[test]
fn vary_keeps_the_origins_values() {
    let cors = example();
    let req = headers(&[("origin", "https://app.example.com")]);
    /// The origin's response headers, and the `Vary` the client must get.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case; 6] = [
        (
            &[("vary", "Accept-Encoding")],
            Some("Accept-Encoding, Origin"),
        ),
        (
            &[("vary", "accept-encoding, origin")],
            Some("accept-encoding, origin"),
        ),
        (&[("vary", "ORIGIN")], Some("ORIGIN")),
        (&[("vary", "*")], Some("*")),
        (
            &[("vary", "Accept"), ("vary", "Accept-Language")],
            Some("Accept, Accept-Language, Origin"),
        ),
        (&[("vary", "Origin-Agent")], Some("Origin-Agent, Origin")),
    ];
    for (given, want) in cases {
        let mut resp = headers(given);
        apply_to_response(Some(&cors), &req, &mut resp);
        assert_eq!(joined(&resp, "vary").as_deref(), want, "{given:?}");
    }
}

#[test]
fn refused_preflight_has_no_access_control_headers() {
    let mut resp = headers(&[
        ("content-type", "application/problem+json"),
        ("access-control-allow-origin", "https://a.com"),
        ("vary", "Origin"),
    ]);
    apply_to_refused_preflight(&mut resp);
    assert!(resp.get("access-control-allow-origin").is_none());
    assert_eq!(
        joined(&resp, "vary").as_deref(),
        Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
    );
    assert_eq!(get(&resp, "content-type"), Some("application/problem+json"));
}

#[test]
fn refusal_reasons_are_distinct() {
    let all = [
        PreflightRefused::Origin,
        PreflightRefused::Method,
        PreflightRefused::Header,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a.reason(), b.reason());
        }
    }
    assert_eq!(
        PreflightRefused::Origin.to_string(),
        "cors preflight: origin not allowed"
    );
}
