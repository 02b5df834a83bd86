use super::*;
use crate::problem::RejectKind;

fn ok(raw: &str) -> String {
    normalise(raw)
        .unwrap_or_else(|e| panic!("{raw} rejected: {e:?}"))
        .as_str()
        .to_owned()
}

fn reason(raw: &str) -> &'static str {
    match normalise(raw) {
        Ok(p) => panic!("{raw} accepted as {}", p.as_str()),
        Err(e) => {
            assert_eq!(*e.kind(), RejectKind::BadPath, "{raw}");
            e.reason().slug()
        }
    }
}

#[test]
fn plain_paths_are_unchanged() {
    for p in [
        "/",
        "/v1",
        "/v1/orders/42",
        "/a-b_c~d.e",
        "/files/x;y=1",
        "/a:b@c",
    ] {
        assert_eq!(ok(p), p);
    }
}

#[test]
fn unreserved_escapes_are_decoded_others_upper_cased() {
    assert_eq!(ok("/v1/%6Frders"), "/v1/orders");
    assert_eq!(ok("/v1/%7euser"), "/v1/~user");
    assert_eq!(ok("/v1/a%20b"), "/v1/a%20b");
    assert_eq!(ok("/v1/a%2bb"), "/v1/a%2Bb");
    assert_eq!(ok("/v1/caf%c3%a9"), "/v1/caf%C3%A9");
}

#[test]
fn encoded_separators_are_refused() {
    // The classic bypass: the gateway sees one segment, the origin decodes and sees two.
    assert_eq!(reason("/admin%2fusers"), "encoded_slash");
    assert_eq!(reason("/admin%2Fusers"), "encoded_slash");
    assert_eq!(reason("/admin%5cusers"), "encoded_backslash");
    assert_eq!(reason("/admin\\users"), "backslash");
}

#[test]
fn dot_segments_are_refused_in_every_spelling() {
    for p in [
        "/a/../b",
        "/a/./b",
        "/..",
        "/a/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/.%2e/b",
        "/a/%2e/b",
        "/a/%2E",
        "/a/..",
    ] {
        assert_eq!(reason(p), "dot_segment", "{p}");
    }
    // Dots inside a segment are ordinary characters.
    assert_eq!(ok("/a/..b/c.d"), "/a/..b/c.d");
}

#[test]
fn empty_segments_are_refused() {
    for p in ["//a", "/a//b", "/a/", "/v1/orders/"] {
        assert_eq!(reason(p), "empty_segment", "{p}");
    }
}

#[test]
fn control_characters_and_nul_are_refused() {
    for p in [
        "/a%00b",
        "/a%0ab",
        "/a%0D%0Ab",
        "/a%7f",
        "/a\u{1}b",
        "/a\tb",
    ] {
        assert_eq!(reason(p), "control_char", "{p}");
    }
}

#[test]
fn malformed_input_is_refused_not_guessed() {
    assert_eq!(reason("/a%zz"), "bad_escape");
    assert_eq!(reason("/a%4"), "bad_escape");
    assert_eq!(reason("/a%"), "bad_escape");
    assert_eq!(reason("a/b"), "not_absolute");
    assert_eq!(reason(""), "not_absolute");
    assert_eq!(reason("/a b"), "bad_char");
    assert_eq!(reason("/caf\u{e9}"), "bad_char");
    assert_eq!(
        reason(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
        "path_too_long"
    );
}

#[test]
fn normal_form_is_a_fixed_point() {
    for p in ["/v1/%6Frders/1", "/x/a%2bb", "/x/%c3%a9", "/"] {
        let once = ok(p);
        assert_eq!(ok(&once), once);
    }
}
