//! HTTP messages as runtimes hand them over (the method and target as text, headers as lists of
//! names and values) turned into what the core takes, with one rule for what is dropped and what
//! is refused, so every runtime treats the same malformed input alike.

use http::{HeaderMap, HeaderName, HeaderValue, Request};

use crate::fault::{self, Fault};

/// A header map from a runtime's entries, in order; entries that are not valid HTTP (a name that
/// is not a token, a value with control characters) are dropped.
pub fn header_map<N, V>(entries: impl IntoIterator<Item = (N, V)>) -> HeaderMap
where
    N: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let entries = entries.into_iter();
    let mut out = HeaderMap::with_capacity(entries.size_hint().0);
    for (name, value) in entries {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_ref()),
            HeaderValue::from_bytes(value.as_ref()),
        ) {
            out.append(name, value);
        }
    }
    out
}

/// A header value as a JavaScript byte string, as `fetch` and `Headers` take it: each byte the
/// character with that code, so no value is lost or mangled.
pub fn byte_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The bytes of a JavaScript byte string (the inverse of [`byte_string`]); `None` when a
/// character is above U+00FF, which no header value holds.
pub fn from_byte_string(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// Remove the headers a runtime adds about itself (its routing, its view of the client): those
/// named `names`, and those whose name starts with `prefix`. They describe the runtime, not the
/// client's request, so the policy never sees them and the origin never gets them.
pub fn remove_headers(headers: &mut HeaderMap, names: &[&str], prefix: &str) {
    for name in names {
        headers.remove(*name);
    }
    let prefixed: Vec<_> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for name in prefixed {
        headers.remove(name);
    }
}

/// The client's request as the core takes it, or `None` if its method or target is not valid
/// HTTP (answer with [`crate::exchange::unroutable`]). A test build with fault injection also
/// refuses a request that asks for it ([`crate::fault`]), since no runtime hands over one that
/// really is not valid HTTP.
///
/// A runtime that carries the client's `Host` as the request's authority rather than as a header
/// (a `wasi:http` host may) passes it as `authority`: it becomes the `Host` header when the
/// headers have none, so the policy and the origin (`x-forwarded-host`) see what the client sent.
pub fn request<B>(
    method: &str,
    target: &str,
    authority: Option<&str>,
    mut headers: HeaderMap,
    body: B,
) -> Option<Request<B>> {
    if fault::requested(&headers) == Some(Fault::Unroutable) {
        return None;
    }
    let method = http::Method::from_bytes(method.as_bytes()).ok()?;
    let uri = target.parse::<http::Uri>().ok()?;
    if !headers.contains_key(http::header::HOST) {
        if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(http::header::HOST, host);
        }
    }
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_string_keeps_every_byte_and_refuses_wider_characters() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = byte_string(&bytes);
        assert_eq!(text.chars().count(), 256);
        assert_eq!(from_byte_string(&text), Some(bytes));
        assert_eq!(from_byte_string("caf\u{e9}"), Some(b"caf\xe9".to_vec()));
        assert_eq!(from_byte_string("\u{100}"), None);
    }

    #[test]
    fn invalid_header_entries_are_dropped_and_the_rest_kept_in_order() {
        let headers = header_map([
            ("x-a", &b"1"[..]),
            ("bad name", b"2"),
            ("x-b", b"bad\nvalue"),
            ("x-a", b"3"),
            ("x-c", b"caf\xc3\xa9"),
        ]);
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "3"]);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers["x-c"].as_bytes(), b"caf\xc3\xa9");
    }

    #[test]
    fn runtime_headers_are_removed_by_name_and_prefix_and_only_those() {
        let mut headers = header_map([
            ("rt-route", "a"),
            ("rt-match-id", "1"),
            ("rt-match-name", "2"),
            ("rt-routes", "kept: not the name"),
            ("x-rt-match-x", "kept: not the prefix"),
        ]);
        remove_headers(&mut headers, &["rt-route", "rt-absent"], "rt-match-");
        let mut left: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["rt-routes", "x-rt-match-x"]);
    }

    #[test]
    fn a_request_needs_a_valid_method_and_target() {
        let ok = request("PATCH", "/a?b=1", None, HeaderMap::new(), ()).unwrap();
        assert_eq!(ok.method(), http::Method::PATCH);
        assert_eq!(ok.uri().path_and_query().unwrap().as_str(), "/a?b=1");
        assert!(request("GE T", "/a", None, HeaderMap::new(), ()).is_none());
        assert!(request("GET", "/a b", None, HeaderMap::new(), ()).is_none());
    }

    #[test]
    fn a_request_asking_for_the_unroutable_fault_is_refused_only_in_a_test_build() {
        let asking = header_map([(fault::HEADER, "unroutable")]);
        let got = request("GET", "/a", None, asking, ());
        assert_eq!(got.is_none(), fault::COMPILED_IN);
        let internal = header_map([(fault::HEADER, "internal")]);
        assert!(request("GET", "/a", None, internal, ()).is_some());
    }

    #[test]
    fn the_authority_becomes_the_host_only_when_the_client_sent_none() {
        let from_authority = request("GET", "/", Some("api.test"), HeaderMap::new(), ()).unwrap();
        assert_eq!(from_authority.headers()["host"], "api.test");
        let sent = header_map([("host", "client.test")]);
        let kept = request("GET", "/", Some("api.test"), sent, ()).unwrap();
        let hosts: Vec<_> = kept.headers().get_all("host").iter().collect();
        assert_eq!(hosts, ["client.test"]);
        let invalid = request("GET", "/", Some("a\nb"), HeaderMap::new(), ()).unwrap();
        assert!(!invalid.headers().contains_key("host"));
    }
}
