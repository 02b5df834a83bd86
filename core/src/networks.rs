//! Sets of IP networks as a policy writes them: `ip.allow`, `ip.deny`, `client_ip.trusted_proxies`.
//!
//! An entry is a CIDR (`203.0.113.0/24`, `2001:db8::/32`) or a bare address (a /32 or /128).
//! Parsing is the `ipnet` crate's; what this module adds is the policy's rules about entries
//! (host bits set are refused, since `203.0.113.7/24` is either a typo or a misunderstanding,
//! and an IPv4-mapped IPv6 network is read as the IPv4 network it maps) and a lookup that stays
//! logarithmic however long a list is: the entries are merged into disjoint, sorted ranges once,
//! when the policy loads.
//!
//! Addresses are compared in canonical form ([`canonical`]), so `::ffff:203.0.113.7` is
//! `203.0.113.7` here, whichever way a runtime or a proxy wrote it.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of networks, matched in O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks {
    /// Disjoint and ascending.
    v4: Vec<Ipv4Net>,
    /// Disjoint and ascending; never an IPv4-mapped network (those are in `v4`).
    v6: Vec<Ipv6Net>,
}

/// Why a network entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    /// Neither a CIDR nor an address.
    Malformed,
    /// A CIDR with bits set below its prefix; holds the network that was likely meant.
    HostBits(IpNet),
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Malformed => f.write_str(
                "must be an IP address or a CIDR network (203.0.113.0/24, 2001:db8::/32)",
            ),
            NetworkError::HostBits(net) => write!(
                f,
                "has host bits set below its prefix length; the network is {net}"
            ),
        }
    }
}

impl Networks {
    /// The set of `entries`, or every refused entry with its index.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Networks, Vec<(usize, NetworkError)>> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut errors = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match network(entry.as_ref()) {
                Ok(IpNet::V4(net)) => v4.push(net),
                Ok(IpNet::V6(net)) => v6.push(net),
                Err(e) => errors.push((i, e)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut v4 = Ipv4Net::aggregate(&v4);
        let mut v6 = Ipv6Net::aggregate(&v6);
        v4.sort_unstable_by_key(|n| n.network());
        v6.sort_unstable_by_key(|n| n.network());
        Ok(Networks { v4, v6 })
    }

    /// Whether the set has no network at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether the set holds every IPv4 or every IPv6 address (`0.0.0.0/0`, `::/0`, or entries
    /// that add up to one of them).
    pub fn holds_a_whole_family(&self) -> bool {
        let v4 = self.v4.first().is_some_and(|n| n.prefix_len() == 0);
        v4 || self.v6.first().is_some_and(|n| n.prefix_len() == 0)
    }

    /// Whether `addr` (in any form; it is made canonical first) is in one of the networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match canonical(addr) {
            IpAddr::V4(a) => member(&self.v4, a, Ipv4Net::network, |n, a| n.contains(a)),
            IpAddr::V6(a) => member(&self.v6, a, Ipv6Net::network, |n, a| n.contains(a)),
        }
    }
}

/// Binary search over disjoint ascending networks: the only candidate is the last one that
/// starts at or before `addr`.
fn member<N, A: Ord + Copy>(
    nets: &[N],
    addr: A,
    start: impl Fn(&N) -> A,
    contains: impl Fn(&N, &A) -> bool,
) -> bool {
    let after = nets.partition_point(|n| start(n) <= addr);
    after > 0 && contains(&nets[after - 1], &addr)
}

/// One entry: a CIDR or an address, in canonical form.
fn network(text: &str) -> Result<IpNet, NetworkError> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => {
            let addr = text
                .parse::<IpAddr>()
                .map_err(|_| NetworkError::Malformed)?;
            IpNet::from(addr)
        }
    };
    let net = unmapped(net);
    if net.trunc() != net {
        return Err(NetworkError::HostBits(net.trunc()));
    }
    Ok(net)
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps; any other unchanged.
fn unmapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it maps,
/// so that one client is one address whether it arrived over IPv4 or a dual-stack socket.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> Networks {
        Networks::parse(entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_match_their_members_only() {
        let s = set(&["203.0.113.0/24", "198.51.100.7", "2001:db8::/32", "::1"]);
        for inside in [
            "203.0.113.0",
            "203.0.113.255",
            "198.51.100.7",
            "2001:db8:ffff::1",
            "::1",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "203.0.112.255",
            "203.0.114.0",
            "198.51.100.6",
            "198.51.100.8",
            "2001:db9::",
            "::2",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_form_on_both_sides() {
        let s = set(&["203.0.113.0/24", "::ffff:198.51.100.0/120"]);
        assert!(
            s.contains(ip("::ffff:203.0.113.9")),
            "mapped address, v4 entry"
        );
        assert!(s.contains(ip("198.51.100.9")), "v4 address, mapped entry");
        assert!(!s.contains(ip("::ffff:192.0.2.1")));
        assert_eq!(canonical(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            canonical(ip("::10.0.0.1")),
            ip("::10.0.0.1"),
            "compatible, not mapped"
        );
        // An IPv6 network wider than the mapped range stays IPv6: it never holds an IPv4 client.
        assert!(!set(&["::/0"]).contains(ip("203.0.113.1")));
        assert!(set(&["0.0.0.0/0"]).contains(ip("::ffff:203.0.113.1")));
    }

    #[test]
    fn overlapping_and_unordered_entries_are_one_set() {
        let s = set(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "9.255.255.255",
            "11.0.0.0",
            "192.0.2.0/24",
        ]);
        for inside in [
            "9.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "11.0.0.0",
            "192.0.2.1",
        ] {
            assert!(s.contains(ip(inside)), "{inside}");
        }
        for outside in ["9.255.255.254", "11.0.0.1", "192.0.3.0"] {
            assert!(!s.contains(ip(outside)), "{outside}");
        }
        // Many entries stay exact (the lookup is a search, not a scan).
        let many: Vec<String> = (0..=255)
            .step_by(2)
            .map(|i| format!("10.{i}.0.0/16"))
            .collect();
        let s = Networks::parse(&many).unwrap();
        assert!(s.contains(ip("10.254.1.1")) && !s.contains(ip("10.255.1.1")));
        assert!(s.contains(ip("10.0.0.0")) && !s.contains(ip("10.1.0.0")));
    }

    #[test]
    fn malformed_entries_and_host_bits_are_refused_with_their_index() {
        let errors = Networks::parse(&[
            "203.0.113.0/24",
            "203.0.113.7/24",
            "10.0.0.0/33",
            "300.1.1.1",
            "example.com",
            "",
            "2001:db8::1/32",
            "10.0.0.0/8 ",
            "10.0.0.0/ 8",
        ])
        .unwrap_err();
        let at: Vec<usize> = errors.iter().map(|e| e.0).collect();
        assert_eq!(
            at,
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            "whitespace is not trimmed"
        );
        assert_eq!(
            errors[0].1,
            NetworkError::HostBits("203.0.113.0/24".parse().unwrap())
        );
        assert!(errors[0].1.to_string().contains("203.0.113.0/24"));
    }

    #[test]
    fn a_whole_family_is_told_however_it_is_written() {
        assert!(set(&["0.0.0.0/0"]).holds_a_whole_family());
        assert!(set(&["0.0.0.0/1", "128.0.0.0/1"]).holds_a_whole_family());
        assert!(set(&["10.0.0.0/8", "::/0"]).holds_a_whole_family());
        assert!(!set(&["0.0.0.0/8", "255.255.255.255", "::1"]).holds_a_whole_family());
    }

    #[test]
    fn an_empty_set_holds_nothing() {
        let s = set(&[]);
        assert!(s.is_empty());
        assert!(!s.contains(ip("127.0.0.1")));
    }
}
