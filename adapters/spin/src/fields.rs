//! Header maps as `wasi:http` `fields` (the other way is the core's
//! `portcullis_core::message::header_map`).

use http::HeaderMap;
use spin_sdk::http::Fields;

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
