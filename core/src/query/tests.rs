use serde_json::json;

use super::*;
use crate::problem::RejectKind;

#[test]
fn query_parameters_become_strings_and_repeats_arrays() {
    let q = parse("a=1&b=x%20y&a=2&c&d=&e=%E2%82%AC+z").unwrap();
    assert_eq!(
        q,
        json!({ "a": ["1", "2"], "b": "x y", "c": "", "d": "", "e": "€ z" })
    );
    assert_eq!(parse("").unwrap(), json!({}));
}

#[test]
fn malformed_query_encoding_is_refused() {
    for q in ["a=%zz", "a=%4", "%ff=1", "a=%C3"] {
        assert_eq!(*parse(q).unwrap_err().kind(), RejectKind::BadRequest, "{q}");
    }
}

#[test]
fn lists_are_the_properties_typed_array_directly_or_in_an_alternative() {
    let schema = json!({
        "type": "object",
        "properties": {
            "q": {"type": "string"},
            "tag": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "ids": {"type": "array"},
            "either": {"type": ["string", "array"]},
            "all": {"allOf": [{"type": "array"}, {"maxItems": 3}]},
            "pattern_only": {"pattern": "^[0-9]+$"},
            "referenced": {"$ref": "#/$defs/list"},
            "nested": {"anyOf": [{"anyOf": [{"type": "array"}]}]}
        },
        "patternProperties": {"^x-": {"type": "array"}},
        "additionalProperties": {"type": "array"}
    });
    let mut lists = list_parameters(&schema);
    lists.sort();
    assert_eq!(lists, ["all", "either", "ids", "nested", "tag"]);
    assert!(list_parameters(&json!({"type": "object"})).is_empty());
    assert!(list_parameters(&json!(true)).is_empty());
}

#[test]
fn combinators_are_followed_only_so_deep() {
    let mut s = json!({"type": "array"});
    for _ in 0..20 {
        s = json!({"anyOf": [s]});
    }
    assert!(!declares_list(&s, 0));
}
