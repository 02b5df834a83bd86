//! `client_ip`: which peers are proxies whose address header is believed.

use http::HeaderName;
use serde::Deserialize;

use super::ip::networks;
use super::reader::{ptr, Field, Json, Reader, Strings, Unknown};
use crate::client_ip::ClientIpRule;

/// The `client_ip` object as the document has it.
pub(super) type Section = Json<RawClientIp>;

/// The `client_ip` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawClientIp {
    header: Field<Json<String>>,
    trusted_proxies: Field<Strings>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The header read when `client_ip` names none.
const DEFAULT_HEADER: &str = "x-forwarded-for";

/// The rule at `at`, its problems reported; warned about when it trusts every address.
pub(super) fn read(r: &mut Reader, section: Section, at: &str) -> Option<ClientIpRule> {
    let RawClientIp {
        header: Field(header),
        trusted_proxies: Field(trusted_proxies),
        unknown,
    } = r.object(section, at)?;
    r.unknown(unknown, at);
    let header = match header {
        Some(v) => header_name(r, v, &ptr(at, "header")),
        None => Some(HeaderName::from_static(DEFAULT_HEADER)),
    };
    let list_at = ptr(at, "trusted_proxies");
    let trusted = r
        .required(trusted_proxies, at, "trusted_proxies")
        .and_then(|v| networks(r, v, &list_at));
    let (header, trusted) = (header?, trusted?);
    if trusted.is_empty() {
        r.invalid(
            list_at,
            "must list at least one network: with none, no peer is a proxy and `client_ip` does nothing",
        );
        return None;
    }
    let everyone = trusted.holds_a_whole_family();
    if everyone {
        r.warn(
            list_at,
            "trusts every address of a whole IP family, so any client can choose the address the \
             gateway sees; list only your proxies' networks",
        );
    }
    Some(ClientIpRule { header, trusted })
}

fn header_name(r: &mut Reader, v: Json<String>, at: &str) -> Option<HeaderName> {
    let text = r.nonempty_string(v, at)?;
    let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
        r.invalid(at, "must be a header name");
        return None;
    };
    if name == http::header::FORWARDED {
        r.invalid(
            at,
            "`Forwarded` (RFC 7239) is not read: name a header that holds a comma-separated list \
             of addresses, such as `x-forwarded-for`",
        );
        return None;
    }
    Some(name)
}
