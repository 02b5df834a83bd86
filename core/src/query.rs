//! The query string, as a route's `query_schema` sees it.
//!
//! The query becomes a JSON object of strings ([`parse`]): names and values percent-decoded,
//! `+` a space, a parameter that occurs more than once an array of its values in order. The
//! origin still receives the query exactly as sent.
//!
//! A repeated parameter is ambiguous: the schema judges the values together, while the origin
//! may read only the first or the last. So the schema's verdict comes first (a repeat of a
//! parameter it wants as a string is a 422 there), and a repeat it let through is refused with
//! 400 `query_repeated` unless the schema declares that parameter a list ([`list_parameters`]):
//! then every value was checked as an element, whichever one the origin reads.

use serde_json::Value;

use crate::config::RequestRules;
use crate::problem::{BadRequestReason, Reject};

/// How deep [`list_parameters`] follows `anyOf`/`oneOf`/`allOf` into a property's schema.
const MAX_COMBINATOR_DEPTH: usize = 8;

/// Check `query` (the part after `?`, without it) against the route's `query_schema`, if it has
/// one: 400 for malformed encoding, 422 with pointers for a schema failure, 400
/// `query_repeated` for a repeat of a parameter the schema does not declare a list.
pub(crate) fn check(rules: &RequestRules, query: &str) -> Result<(), Reject> {
    let Some(schema) = &rules.query_schema else {
        return Ok(());
    };
    let schema = schema.get().map_err(|_| crate::body::broken_schema())?;
    let parsed = parse(query)?;
    let errors = schema.errors(&parsed);
    if !errors.is_empty() {
        return Err(Reject::invalid_query(
            errors,
            "The query string does not match the route's schema.",
        ));
    }
    if let Value::Object(map) = &parsed {
        // Only a repeat becomes an array: single values are always strings.
        let repeated = map
            .iter()
            .filter(|(_, v)| v.is_array())
            .find(|(name, _)| !rules.query_lists.iter().any(|l| l == *name));
        if repeated.is_some() {
            return Err(Reject::new(
                BadRequestReason::QueryRepeated,
                "The query string repeats a parameter the route takes once.",
            ));
        }
    }
    Ok(())
}

/// The query string as a JSON object for `query_schema`: each parameter a string, a repeated
/// parameter an array of strings in order. Malformed percent-encoding is a 400, not a guess.
pub(crate) fn parse(query: &str) -> Result<Value, Reject> {
    let mut map = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(k)?;
        let value = Value::String(decode_component(v)?);
        match map.get_mut(&key) {
            None => {
                map.insert(key, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    Ok(Value::Object(map))
}

/// The parameters a query schema declares lists: those whose schema under the top-level
/// `properties` has `"type": "array"` (or a type list naming it), itself or in one of its
/// `anyOf`/`oneOf`/`allOf` alternatives. A `$ref` is not followed, and parameters matched only
/// by `patternProperties` or `additionalProperties` are not lists: when in doubt, a repeat is
/// refused rather than guessed at.
pub(crate) fn list_parameters(schema: &Value) -> Vec<String> {
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return Vec::new();
    };
    properties
        .iter()
        .filter(|(_, s)| declares_list(s, 0))
        .map(|(name, _)| name.clone())
        .collect()
}

fn declares_list(schema: &Value, depth: usize) -> bool {
    if depth > MAX_COMBINATOR_DEPTH {
        return false;
    }
    let typed = match schema.get("type") {
        Some(Value::String(t)) => t == "array",
        Some(Value::Array(types)) => types.iter().any(|t| t == "array"),
        _ => false,
    };
    typed
        || ["anyOf", "oneOf", "allOf"].iter().any(|k| {
            schema
                .get(k)
                .and_then(Value::as_array)
                .is_some_and(|alts| alts.iter().any(|a| declares_list(a, depth + 1)))
        })
}

fn decode_component(s: &str) -> Result<String, Reject> {
    let bad = || {
        Reject::new(
            BadRequestReason::QueryEncoding,
            "The query string is not valid percent-encoded UTF-8.",
        )
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes
                    .get(i + 1)
                    .and_then(|b| (*b as char).to_digit(16))
                    .ok_or_else(bad)?;
                let lo = bytes
                    .get(i + 2)
                    .and_then(|b| (*b as char).to_digit(16))
                    .ok_or_else(bad)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests;
