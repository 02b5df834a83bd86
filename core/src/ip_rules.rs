//! IP rules: `"ip": { "allow": [...], "deny": [...] }`, at the top level and on a route.
//!
//! Deny wins; a non-empty allow list admits only its members. The top level's rule is checked
//! before anything else in a request (a refused address learns nothing, not even which paths
//! exist), a route's right after routing; both must admit. Either way it is before any
//! credential is read, so an address that may not call does not get to try keys.
//!
//! The address is the client's as [`crate::client_ip`] found it. When the runtime reports none,
//! a request under any rule is refused: a deny list cannot be checked against nothing, and an
//! address that cannot be told must not slip past an allow list.

use std::net::IpAddr;

use crate::networks::Networks;
use crate::problem::{IpRefusedReason, Reject};

/// One `ip` object, compiled.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    /// Admitted networks; empty admits every address not denied.
    pub(crate) allow: Networks,
    /// Refused networks, whatever `allow` says.
    pub(crate) deny: Networks,
}

impl IpRules {
    /// Whether `addr` may call under this rule.
    pub(crate) fn check(&self, addr: Option<IpAddr>) -> Result<(), Reject> {
        let Some(addr) = addr else {
            return Err(Reject::new(
                IpRefusedReason::IpUnknown,
                "The gateway cannot tell the client address, and this API admits callers by address.",
            ));
        };
        if self.deny.contains(addr) {
            return Err(Reject::new(
                IpRefusedReason::IpDenied,
                "Requests from this address are refused.",
            ));
        }
        if !self.allow.is_empty() && !self.allow.contains(addr) {
            return Err(Reject::new(
                IpRefusedReason::IpNotAllowed,
                "Requests from this address are not admitted.",
            ));
        }
        Ok(())
    }
}

/// The IP-rule phase for `rules` (the top level's, or a route's): nothing to check when there
/// are none.
pub(crate) fn admit(rules: Option<&IpRules>, addr: Option<IpAddr>) -> Result<(), Reject> {
    rules.map_or(Ok(()), |r| r.check(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Reason;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        IpRules {
            allow: Networks::parse(allow).unwrap(),
            deny: Networks::parse(deny).unwrap(),
        }
    }

    fn verdict(r: &IpRules, addr: Option<&str>) -> Option<Reason> {
        r.check(addr.map(|a| a.parse().unwrap()))
            .err()
            .map(|e| e.reason())
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = rules(&["203.0.113.0/24"], &["203.0.113.7"]);
        assert_eq!(verdict(&r, Some("203.0.113.8")), None);
        assert_eq!(verdict(&r, Some("203.0.113.7")), Some(Reason::IpDenied));
        assert_eq!(
            verdict(&r, Some("::ffff:203.0.113.7")),
            Some(Reason::IpDenied),
            "the mapped form is the same address"
        );
        assert_eq!(
            verdict(&r, Some("198.51.100.1")),
            Some(Reason::IpNotAllowed)
        );
    }

    #[test]
    fn an_empty_allow_list_admits_every_address_not_denied() {
        let r = rules(&[], &["2001:db8::/32"]);
        assert_eq!(verdict(&r, Some("2001:db9::1")), None);
        assert_eq!(verdict(&r, Some("192.0.2.1")), None);
        assert_eq!(verdict(&r, Some("2001:db8::5")), Some(Reason::IpDenied));
    }

    #[test]
    fn no_address_is_refused_under_any_rule_and_admitted_without_one() {
        assert_eq!(
            verdict(&rules(&[], &["192.0.2.1"]), None),
            Some(Reason::IpUnknown)
        );
        assert_eq!(
            verdict(&rules(&["0.0.0.0/0"], &[]), None),
            Some(Reason::IpUnknown)
        );
        assert!(admit(None, None).is_ok());
    }
}
