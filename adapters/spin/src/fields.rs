//! Header maps between `http` and `wasi:http` `fields`.

use http::{HeaderMap, HeaderName, HeaderValue};
use spin_sdk::http::Fields;

/// A header map from `wasi:http` entries; entries that are not valid HTTP are dropped.
pub fn header_map(entries: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(entries.len());
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            out.append(name, value);
        }
    }
    out
}

/// `wasi:http` fields from a header map. A header the host refuses to carry (its list of
/// forbidden, connection-level headers) is left out rather than failing the whole message; the
/// core has removed hop-by-hop headers already.
pub fn fields(headers: &HeaderMap) -> Fields {
    let out = Fields::new();
    for (name, value) in headers {
        let _ = out.append(name.as_str(), value.as_bytes());
    }
    out
}
