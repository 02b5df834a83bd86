//! `origins`: the upstreams routes forward to.
//!
//! An origin that loads is an absolute `http(s)` base to which a normalised request path can be
//! appended as is: no credentials, query or fragment that a forwarded request would inherit, and
//! no dot segments that could climb out of the base.

use std::time::Duration;

use serde::Deserialize;

use super::super::Origin;
use super::names::read_named;
use super::reader::{ptr, Field, Json, Named, Reader, Unknown};

/// The `origins` object as the document has it.
pub(super) type Section = Json<Named<Json<RawOrigin>>>;

/// One entry of `origins`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawOrigin {
    url: Field<Json<String>>,
    timeout_ms: Field<Json<u64>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Every origin in document order; `None` for one that did not load (its problems are reported).
pub(super) fn read(r: &mut Reader, section: Section, at: &str) -> Vec<(String, Option<Origin>)> {
    read_named(r, section, at, read_origin)
}

fn read_origin(r: &mut Reader, name: &str, raw: Json<RawOrigin>, at: &str) -> Option<Origin> {
    let RawOrigin {
        url: Field(url),
        timeout_ms: Field(timeout_ms),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let url = r
        .required(url, at, "url")
        .and_then(|u| r.string(u, &ptr(at, "url")));
    let timeout_ms = match timeout_ms {
        Some(t) => r.integer(t, &ptr(at, "timeout_ms"), 1, 600_000)?,
        None => 10_000,
    };
    let base = origin_base(&url?)
        .map_err(|why| r.invalid(ptr(at, "url"), why))
        .ok()?;
    Some(Origin {
        name: name.to_owned(),
        base,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// `http(s)://host[:port][/base]` -> the base to which forwarded paths are appended.
fn origin_base(url: &str) -> Result<String, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a valid URL")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must be an http:// or https:// URL"),
    }
    let authority = uri.authority().ok_or("must name a host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials (user@host)");
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("must not have a query or fragment");
    }
    let path = uri.path().trim_end_matches('/');
    if !path.is_empty()
        && crate::path::normalise(path)
            .map(|p| p.as_str() != path)
            .unwrap_or(true)
    {
        return Err("base path must be a normalised path (no empty, '.' or '..' segments)");
    }
    Ok(format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("http"),
        authority,
        path
    ))
}
