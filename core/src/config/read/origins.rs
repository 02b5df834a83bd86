//! `origins`: the upstreams routes forward to.
//!
//! An origin that loads is an absolute `http(s)` base to which a normalised request path can be
//! appended as is: no credentials, query or fragment that a forwarded request would inherit, and
//! no dot segments that could climb out of the base.

use std::time::Duration;

use serde::Deserialize;

use super::super::{ConfigErrorKind, Origin, OriginTls, Secrets};
use super::names::read_named;
use super::reader::{ptr, Field, Json, Named, Reader, Unknown};
use crate::origin_signing::SigningKeys;

/// The `origins` object as the document has it.
pub(super) type Section = Json<Named<Json<RawOrigin>>>;

/// One entry of `origins`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawOrigin {
    url: Field<Json<String>>,
    timeout_ms: Field<Json<u64>>,
    sign: Field<Json<RawSign>>,
    tls: Field<Json<RawTls>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// An origin's `tls`: a private CA, a client certificate, the name to verify.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTls {
    ca_file: Field<Json<String>>,
    client_cert_file: Field<Json<String>>,
    client_key_file: Field<Json<String>>,
    server_name: Field<Json<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// An origin's `sign`: where its signing secrets are.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSign {
    secret_env: Field<Json<String>>,
    previous_secret_env: Field<Json<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Every origin in document order; `None` for one that did not load (its problems are reported).
pub(super) fn read(
    r: &mut Reader,
    section: Section,
    at: &str,
    secrets: &dyn Secrets,
) -> Vec<(String, Option<Origin>)> {
    read_named(r, section, at, |r, name, raw, at| {
        read_origin(r, name, raw, at, secrets)
    })
}

fn read_origin(
    r: &mut Reader,
    name: &str,
    raw: Json<RawOrigin>,
    at: &str,
    secrets: &dyn Secrets,
) -> Option<Origin> {
    let RawOrigin {
        url: Field(url),
        timeout_ms: Field(timeout_ms),
        sign: Field(sign),
        tls: Field(tls),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let tls = match tls {
        Some(t) => Some(read_tls(r, t, &ptr(at, "tls"))?),
        None => None,
    };
    let url = r
        .required(url, at, "url")
        .and_then(|u| r.string(u, &ptr(at, "url")));
    let timeout_ms = match timeout_ms {
        Some(t) => r.integer(t, &ptr(at, "timeout_ms"), 1, 600_000)?,
        None => 10_000,
    };
    let sign = match sign {
        Some(s) => Some(read_sign(r, s, &ptr(at, "sign"), secrets)?),
        None => None,
    };
    let base = origin_base(&url?)
        .map_err(|why| r.invalid(ptr(at, "url"), why))
        .ok()?;
    if tls.is_some() && !base.starts_with("https://") {
        r.invalid(ptr(at, "tls"), "applies only to an https:// origin");
        return None;
    }
    Some(Origin {
        name: name.to_owned(),
        base,
        timeout: Duration::from_millis(timeout_ms),
        sign,
        tls: tls.map(std::sync::Arc::new),
    })
}

/// `tls`: file paths (read by the runtime, which must be able to: see
/// [`Capabilities`](super::super::Capabilities)) and the name to verify the origin by.
fn read_tls(r: &mut Reader, raw: Json<RawTls>, at: &str) -> Option<OriginTls> {
    let RawTls {
        ca_file: Field(ca_file),
        client_cert_file: Field(cert),
        client_key_file: Field(key),
        server_name: Field(server_name),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    if !r.capabilities.origin_tls_files {
        r.invalid(
            at,
            "this runtime cannot read certificate files: on Workers, bind a client certificate \
             with `mtls_certificates` in wrangler.toml; on Spin, use the runtime config's \
             `[[client_tls]]`; a private CA needs `portcullis serve`",
        );
        return None;
    }
    let mark = r.mark();
    let file = |r: &mut Reader, v: Option<Json<String>>, key: &str| {
        v.and_then(|v| r.nonempty_string(v, &ptr(at, key)))
    };
    let ca_file = file(r, ca_file, "ca_file");
    let cert = file(r, cert, "client_cert_file");
    let key = file(r, key, "client_key_file");
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            r.err(ptr(at, "client_key_file"), ConfigErrorKind::Missing);
            None
        }
        (None, Some(_)) => {
            r.err(ptr(at, "client_cert_file"), ConfigErrorKind::Missing);
            None
        }
    };
    let server_name = server_name.and_then(|v| {
        let name_at = ptr(at, "server_name");
        let name = r.nonempty_string(v, &name_at)?;
        let valid = name.parse::<std::net::IpAddr>().is_ok() || is_dns_name(&name);
        if !valid {
            r.invalid(name_at, "must be a DNS name or an IP address");
        }
        valid.then_some(name)
    });
    r.clean_since(mark).then_some(OriginTls {
        ca_file,
        client_cert,
        server_name,
    })
}

/// A DNS name as certificates carry it: dot-separated labels of letters, digits and `-`.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `sign`: the current secret (required) and the previous one (optional), each the name of a
/// secret of at least 32 bytes, as HMAC keys must be to be as strong as the hash.
fn read_sign(
    r: &mut Reader,
    raw: Json<RawSign>,
    at: &str,
    secrets: &dyn Secrets,
) -> Option<SigningKeys> {
    let RawSign {
        secret_env: Field(current),
        previous_secret_env: Field(previous),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let secret = |r: &mut Reader, field: &str, v: Json<String>| {
        let at = ptr(at, field);
        let var = r.nonempty_string(v, &at)?;
        match secrets.get(&var) {
            None => {
                let why = format!("secret \"{var}\" is not set");
                r.err(at, ConfigErrorKind::Secret(why.into()));
                None
            }
            Some(value) if value.len() < 32 => {
                let why = format!(
                    "secret \"{var}\" is shorter than 32 bytes; signing keys must be at least as long as the hash"
                );
                r.err(at, ConfigErrorKind::Secret(why.into()));
                None
            }
            Some(value) => Some(value),
        }
    };
    let current = match current {
        Some(v) => secret(r, "secret_env", v),
        None => {
            r.err(ptr(at, "secret_env"), ConfigErrorKind::Missing);
            None
        }
    };
    let previous = match previous {
        Some(v) => Some(secret(r, "previous_secret_env", v)?),
        None => None,
    };
    Some(SigningKeys::new(current?, previous))
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
