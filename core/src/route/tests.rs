use super::*;
use crate::path::normalise;

fn t(s: &str) -> Template {
    Template::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn m(template: &str, path: &str) -> bool {
    t(template).matches(&normalise(path).unwrap())
}

#[test]
fn literal_and_parameter_segments() {
    assert!(m("/v1/orders/{id}", "/v1/orders/42"));
    assert!(!m("/v1/orders/{id}", "/v1/orders"));
    assert!(!m("/v1/orders/{id}", "/v1/orders/42/items"));
    assert!(m("/v1/orders", "/v1/orders"));
    assert!(!m("/v1/orders", "/v1/orders/42"));
    assert!(m("/", "/"));
    assert!(!m("/", "/a"));
}

#[test]
fn matching_is_case_sensitive() {
    assert!(!m("/v1/orders/{id}", "/V1/orders/42"));
    assert!(!m("/v1/orders/{id}", "/v1/Orders/42"));
}

#[test]
fn rest_parameter_needs_at_least_one_segment() {
    assert!(m("/files/{*rest}", "/files/a"));
    assert!(m("/files/{*rest}", "/files/a/b/c"));
    assert!(!m("/files/{*rest}", "/files"));
    assert!(!m("/files/{*rest}", "/filesystem/a"));
}

#[test]
fn bad_templates_are_refused() {
    for bad in [
        "v1/orders",
        "/v1//orders",
        "/v1/orders/",
        "/v1/{}",
        "/v1/{a}/{a}",
        "/v1/{*rest}/x",
        "/v1/x{id}",
        "/v1/../admin",
        "/v1/%6Frders",
        "/v1/a b",
    ] {
        assert!(Template::parse(bad).is_err(), "{bad} accepted");
    }
}
