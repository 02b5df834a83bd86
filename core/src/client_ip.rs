//! The client's address, found once per request: what quotas `by: "ip"`, IP rules, the access
//! line and the origin's `X-Forwarded-For` all use.
//!
//! The runtime reports the peer: the TCP peer natively, `CF-Connecting-IP` on Workers (which
//! Cloudflare's edge sets and no client can), the host's client address on Spin. Without a
//! top-level `client_ip`, the peer is the client. With one, a peer in `trusted_proxies` is a
//! proxy, and the header it writes (`X-Forwarded-For` by default) is read from the right: each
//! entry was appended by the hop to its right, so entries are believed only as long as that hop
//! is trusted. The client is the first entry, from the right, that is not a trusted proxy.
//! Whatever stands left of it was written by the client itself and is never read.
//!
//! When the walk cannot go on (an entry is not an address, or every entry is a trusted proxy,
//! or it has passed [`MAX_HOPS`]), the client is the last address it reached: one a trusted
//! proxy vouched for, never a claim of the client's.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::networks::{canonical, Networks};

/// Most proxy hops a walk believes: past that, the last address reached is the client. Bounds
/// the work a long header can cause; real chains of trusted proxies are a few hops long.
pub const MAX_HOPS: usize = 32;

/// The top-level `client_ip`: which peers are proxies, and the header they write.
#[derive(Debug, Clone)]
pub struct ClientIpRule {
    /// The header the trusted proxies append the address of their own peer to.
    pub(crate) header: HeaderName,
    /// The peers (and hops) whose word is believed.
    pub(crate) trusted: Networks,
}

/// The client of one request as the gateway sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The client's address, canonical ([`canonical`]); `None` when the runtime reports no peer.
    pub addr: Option<IpAddr>,
    /// `X-Forwarded-For` for the origin: the client, then each trusted proxy that came after
    /// it, the peer last. `None` without an address (every entry would be the client's word).
    pub forwarded_for: Option<HeaderValue>,
}

/// The client of a request from `peer` with `headers`, under `rule`.
pub fn resolve(rule: Option<&ClientIpRule>, peer: Option<IpAddr>, headers: &HeaderMap) -> Client {
    let Some(peer) = peer.map(canonical) else {
        return Client::default();
    };
    // Right to left: the peer, then each hop the one after it vouched for.
    let mut hops = vec![peer];
    if let Some(rule) = rule.filter(|r| r.trusted.contains(peer)) {
        walk(rule, headers, &mut hops);
    }
    let client = hops.last().copied();
    let mut chain = String::with_capacity(hops.len() * 17);
    for (i, hop) in hops.iter().rev().enumerate() {
        if i > 0 {
            chain.push_str(", ");
        }
        chain.push_str(&hop.to_string());
    }
    Client {
        addr: client,
        forwarded_for: HeaderValue::from_str(&chain).ok(),
    }
}

/// Push the entries of `rule.header` from the right while the last one pushed is trusted.
fn walk(rule: &ClientIpRule, headers: &HeaderMap, hops: &mut Vec<IpAddr>) {
    // Several lines of the header are one list, in order.
    for line in headers.get_all(&rule.header).iter().rev() {
        let Ok(text) = line.to_str() else { return };
        for entry in text.rsplit(',') {
            if hops.len() > MAX_HOPS {
                return;
            }
            let Some(addr) = crate::context::parse_address(entry) else {
                return;
            };
            let addr = canonical(addr);
            hops.push(addr);
            if !rule.trusted.contains(addr) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(header: &str, trusted: &[&str]) -> ClientIpRule {
        ClientIpRule {
            header: HeaderName::from_bytes(header.as_bytes()).unwrap(),
            trusted: Networks::parse(trusted).unwrap(),
        }
    }

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client address and the forwarded chain for a request from `peer`.
    fn client(rule: Option<&ClientIpRule>, peer: &str, lines: &[(&str, &str)]) -> (String, String) {
        let c = resolve(rule, Some(ip(peer)), &headers(lines));
        (
            c.addr.unwrap().to_string(),
            c.forwarded_for.unwrap().to_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn without_a_rule_the_peer_is_the_client_and_the_header_is_never_read() {
        let xff = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(
            client(None, "192.0.2.7", &xff),
            ("192.0.2.7".into(), "192.0.2.7".into())
        );
        let none = resolve(None, None, &headers(&xff));
        assert_eq!(none, Client::default(), "no peer, no address, no chain");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8"]);
        let spoofed = [("x-forwarded-for", "10.0.0.1, 203.0.113.9")];
        assert_eq!(
            client(Some(&r), "198.51.100.4", &spoofed),
            ("198.51.100.4".into(), "198.51.100.4".into())
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8", "::1/128"]);
        // The client wrote "1.1.1.1, 10.9.9.9" itself; the first proxy appended its real address.
        let lines = [(
            "x-forwarded-for",
            "1.1.1.1, 10.9.9.9, 203.0.113.9, 10.0.0.2",
        )];
        assert_eq!(
            client(Some(&r), "10.0.0.3", &lines),
            (
                "203.0.113.9".into(),
                "203.0.113.9, 10.0.0.2, 10.0.0.3".into()
            )
        );
        // Two header lines are one list; the later line is nearer.
        let two = [
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
        ];
        assert_eq!(client(Some(&r), "::1", &two).0, "203.0.113.9");
        let nearer = [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.2"),
        ];
        assert_eq!(
            client(Some(&r), "::1", &nearer),
            ("203.0.113.9".into(), "203.0.113.9, 10.0.0.2, ::1".into())
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8"]);
        assert_eq!(
            client(Some(&r), "10.0.0.3", &[("x-real-ip", "203.0.113.9")]),
            ("10.0.0.3".into(), "10.0.0.3".into())
        );
    }

    #[test]
    fn a_walk_that_cannot_go_on_stops_at_the_last_vouched_address() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8"]);
        for bad in [
            "garbage",
            "",
            "unknown",
            "203.0.113.9:99999",
            "203.0.113.9 extra",
        ] {
            let lines = [("x-forwarded-for", format!("203.0.113.7, {bad}, 10.0.0.2"))];
            let lines: Vec<(&str, &str)> = lines.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(
                client(Some(&r), "10.0.0.3", &lines),
                ("10.0.0.2".into(), "10.0.0.2, 10.0.0.3".into()),
                "{bad:?}"
            );
        }
        // Every entry a trusted proxy: the leftmost is the client.
        assert_eq!(
            client(
                Some(&r),
                "10.0.0.3",
                &[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]
            )
            .0,
            "10.0.0.1"
        );
        // A header line that is not text ends the walk too.
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        let c = resolve(Some(&r), Some(ip("10.0.0.3")), &h);
        assert_eq!(c.addr, Some(ip("10.0.0.3")));
    }

    #[test]
    fn a_chain_of_trusted_hops_is_believed_only_so_far() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8"]);
        let long = vec!["10.0.0.1"; 500].join(", ");
        let c = resolve(
            Some(&r),
            Some(ip("10.0.0.3")),
            &headers(&[("x-forwarded-for", &format!("203.0.113.9, {long}"))]),
        );
        assert_eq!(c.addr, Some(ip("10.0.0.1")), "never the client's own claim");
        let chain = c.forwarded_for.unwrap();
        assert_eq!(chain.to_str().unwrap().split(", ").count(), MAX_HOPS + 1);
    }

    #[test]
    fn mapped_and_ported_forms_are_one_address() {
        let r = rule("x-forwarded-for", &["10.0.0.0/8"]);
        let lines = [(
            "x-forwarded-for",
            "[::ffff:203.0.113.9]:4711, ::ffff:10.0.0.2",
        )];
        assert_eq!(
            client(Some(&r), "::ffff:10.0.0.3", &lines),
            (
                "203.0.113.9".into(),
                "203.0.113.9, 10.0.0.2, 10.0.0.3".into()
            )
        );
        assert_eq!(client(None, "::ffff:192.0.2.1", &[]).0, "192.0.2.1");
    }

    #[test]
    fn another_header_is_read_the_same_way() {
        let r = rule("cf-connecting-ip", &["173.245.48.0/20"]);
        let lines = [
            ("cf-connecting-ip", "2001:db8::9"),
            ("x-forwarded-for", "192.0.2.1"),
        ];
        assert_eq!(
            client(Some(&r), "173.245.48.5", &lines),
            ("2001:db8::9".into(), "2001:db8::9, 173.245.48.5".into())
        );
    }
}
