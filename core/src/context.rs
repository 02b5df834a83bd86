//! What the adapter knows about a request besides the HTTP message itself.
//!
//! Its own module because both the driver ([`crate::decision`]) and the phases that need these
//! facts (`quota`, `forward`) read it: phases never import the driver.

use std::net::{IpAddr, SocketAddr};

use crate::time::UnixTime;

/// What the adapter knows about a request besides the HTTP message itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The adapter's clock when the request arrived.
    pub now: UnixTime,
    /// The id the adapter generated for this request (see [`crate::request_id`]).
    pub request_id: String,
    /// The address the runtime reports the request came from: the TCP peer natively,
    /// `CF-Connecting-IP` on Workers, `spin-client-addr` on Spin. It is the client's address
    /// unless the policy's `client_ip` names it a proxy ([`crate::client_ip`]).
    pub peer: Option<IpAddr>,
}

/// A client address as a runtime writes it into a header: `IP:port` (`[v6]:port`) or a bare IP,
/// surrounding whitespace ignored. Anything else is no address: `by: "ip"` quotas then count
/// every such request in one shared bucket, and IP rules refuse it.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

/// The client address in header `name` ([`parse_address`]), for a runtime whose edge sets that
/// header itself; `None` when it is missing or malformed.
pub fn address_in(headers: &http::HeaderMap, name: &str) -> Option<IpAddr> {
    parse_address(headers.get(name)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_header_is_read_when_present_and_well_formed() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(address_in(&headers, "cf-connecting-ip"), None);
        headers.insert("cf-connecting-ip", " 2001:db8::1 ".parse().unwrap());
        assert_eq!(
            address_in(&headers, "cf-connecting-ip"),
            "2001:db8::1".parse().ok()
        );
        headers.insert("cf-connecting-ip", "not an address".parse().unwrap());
        assert_eq!(address_in(&headers, "cf-connecting-ip"), None);
        headers.insert(
            "cf-connecting-ip",
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(address_in(&headers, "cf-connecting-ip"), None, "not text");
    }

    #[test]
    fn an_address_may_carry_a_port_and_anything_else_is_none() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_address("203.0.113.7:5000"), Some(v4));
        assert_eq!(parse_address(" 203.0.113.7 "), Some(v4));
        assert_eq!(parse_address("[2001:db8::1]:443"), Some(v6));
        assert_eq!(parse_address("2001:db8::1"), Some(v6));
        for bad in ["", "unknown", "203.0.113.7:", "203.0.113.7:99999", "1.2.3"] {
            assert_eq!(parse_address(bad), None, "{bad:?}");
        }
    }
}
