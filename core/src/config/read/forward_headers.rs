//! `forward_headers`: the zero-trust form of forwarding, at the top level or on a route.
//!
//! `{"allow": ["accept", "content-type", "x-request-*"]}` names the only client headers the
//! origin receives (besides `Content-Length` and the gateway's own). A route's list replaces the
//! top level's whole. Entries the header table overrides anyway (`x-forwarded-*`, a method
//! override, an API-key header…) are not errors, since they change nothing, but `check` warns
//! about them: whoever wrote them expected them to pass.

use http::HeaderName;
use serde::Deserialize;

use super::super::ConfigErrorKind;
use super::reader::{at_index, ptr, Field, Json, Reader, Strings, Unknown};
use crate::forward::headers::{AllowError, AllowList};

/// A `forward_headers` object as the document has it.
pub(super) type Section = Json<RawForwardHeaders>;

/// A `forward_headers` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawForwardHeaders {
    allow: Field<Strings>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The allow list at `at`, its problems reported and its overridden entries warned about;
/// `api_keys` are the policy's API-key headers.
pub(super) fn read(
    r: &mut Reader,
    section: Section,
    at: &str,
    api_keys: &[HeaderName],
) -> Option<AllowList> {
    let RawForwardHeaders {
        allow: Field(allow),
        unknown,
    } = r.object(section, at)?;
    r.unknown(unknown, at);
    let list_at = ptr(at, "allow");
    // An empty list is allowed: it forwards no client header at all.
    let entries = r
        .required(allow, at, "allow")
        .and_then(|a| r.strings(a, &list_at, false))?;
    match AllowList::new(&entries) {
        Ok(list) => {
            for (i, message) in list.warnings(api_keys) {
                r.warn(at_index(&list_at, i), message);
            }
            Some(list)
        }
        Err(errors) => {
            for (i, e) in errors {
                let here = at_index(&list_at, i);
                match e {
                    AllowError::Duplicate => r.err(here, ConfigErrorKind::Duplicate),
                    AllowError::NotAName => r.invalid(here, e.to_string()),
                }
            }
            None
        }
    }
}
