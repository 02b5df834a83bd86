//! `ip`: allow and deny lists of networks, at the top level or on a route; and the network
//! lists of `client_ip.trusted_proxies`, read the same way.

use serde::Deserialize;

use super::reader::{at_index, ptr, Field, Reader, Strings, Unknown};
use crate::ip_rules::IpRules;
use crate::networks::Networks;

/// An `ip` object as the document has it.
pub(super) type Section = super::reader::Json<RawIp>;

/// An `ip` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIp {
    allow: Field<Strings>,
    deny: Field<Strings>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The rule at `at`, its problems reported.
pub(super) fn read(r: &mut Reader, section: Section, at: &str) -> Option<IpRules> {
    let RawIp {
        allow: Field(allow),
        deny: Field(deny),
        unknown,
    } = r.object(section, at)?;
    r.unknown(unknown, at);
    let mark = r.mark();
    let allow = allow.and_then(|v| networks(r, v, &ptr(at, "allow")));
    let deny = deny.and_then(|v| networks(r, v, &ptr(at, "deny")));
    if !r.clean_since(mark) {
        return None;
    }
    let rules = IpRules {
        allow: allow.unwrap_or_default(),
        deny: deny.unwrap_or_default(),
    };
    if rules.allow.is_empty() && rules.deny.is_empty() {
        r.warn(
            at,
            "lists no network in `allow` or `deny`, so it admits every address",
        );
    }
    Some(rules)
}

/// A list of networks at `at` (CIDRs or addresses), every refused entry reported at its index.
pub(super) fn networks(r: &mut Reader, v: Strings, at: &str) -> Option<Networks> {
    let entries = r.strings(v, at, false)?;
    match Networks::parse(&entries) {
        Ok(set) => Some(set),
        Err(errors) => {
            for (i, e) in errors {
                r.invalid(at_index(at, i), e.to_string());
            }
            None
        }
    }
}
