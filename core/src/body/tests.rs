use super::*;

#[test]
fn media_type_essence_ignores_case_and_parameters() {
    assert_eq!(
        media_type_essence("Application/JSON; charset=utf-8"),
        "application/json"
    );
    assert_eq!(media_type_essence(" text/plain "), "text/plain");
}

#[test]
fn strict_json_refuses_duplicate_keys_at_any_depth() {
    assert!(crate::json::parse_strict(br#"{"role":"user","role":"admin"}"#).is_err());
    assert!(crate::json::parse_strict(br#"{"a":[{"b":1,"b":2}]}"#).is_err());
    assert!(crate::json::parse_strict(br#"{"a":{"b":1},"b":{"b":2}}"#).is_ok());
}

#[test]
fn strict_json_bounds_nesting() {
    let deep = "[".repeat(100_000);
    assert!(crate::json::parse_strict(deep.as_bytes()).is_err());
    let deep_obj = "{\"a\":".repeat(10_000);
    assert!(crate::json::parse_strict(deep_obj.as_bytes()).is_err());
}

#[test]
fn strict_json_refuses_trailing_data_and_bad_utf8() {
    assert!(crate::json::parse_strict(b"{} {}").is_err());
    assert!(crate::json::parse_strict(b"\"\xff\"").is_err());
    assert!(crate::json::parse_strict(b"").is_err());
}

#[test]
fn a_limited_body_takes_chunks_up_to_its_limit() {
    let mut body = LimitedBody::new(11, 11);
    assert_eq!(body.push(b"hello "), Ok(()));
    assert_eq!(body.push(b"world"), Ok(()));
    assert_eq!(body.push(b""), Ok(()));
    assert_eq!(body.push(b"!"), Err(BodyError::TooLarge));
    assert_eq!(body.into_bytes(), b"hello world");
}

#[test]
fn a_zero_limit_refuses_any_byte() {
    let mut body = LimitedBody::new(0, 0);
    assert_eq!(body.push(b"x"), Err(BodyError::TooLarge));
    assert!(body.into_bytes().is_empty());
}

#[test]
fn a_claimed_size_reserves_no_more_than_the_cap() {
    let body = LimitedBody::new(u64::MAX, u64::MAX);
    assert_eq!(body.bytes.capacity() as u64, MAX_PREALLOCATION);
    let body = LimitedBody::new(10, u64::MAX);
    assert_eq!(body.bytes.capacity(), 10);
}

#[test]
fn pushing_with_a_filler_copies_exactly_the_chunk_and_a_discarding_body_keeps_nothing() {
    let mut body = LimitedBody::new(5, 0);
    assert_eq!(body.push_with(3, |buf| buf.copy_from_slice(b"abc")), Ok(()));
    assert_eq!(
        body.push_with(3, |_| panic!("a refused chunk is not copied")),
        Err(BodyError::TooLarge)
    );
    assert_eq!(body.push_with(2, |buf| buf.copy_from_slice(b"de")), Ok(()));
    assert_eq!(body.into_bytes(), b"abcde");

    let mut drained = LimitedBody::discarding(4);
    assert_eq!(drained.push(b"ab"), Ok(()));
    assert_eq!(drained.push_with(2, |_| panic!("nothing is kept")), Ok(()));
    assert_eq!(
        drained.push(b"x"),
        Err(BodyError::TooLarge),
        "still counted"
    );
    assert!(drained.into_bytes().is_empty());
}
