//! From JSON text to a [`Policy`], collecting every problem on the way.
//!
//! Each section of the document (`origins`, `auth`, `quotas`, `routes`, and the top-level fields
//! here) is deserialised into a raw struct whose every field is destructured by name when it is
//! validated. A field added to a raw struct is therefore a compile error until its validation is
//! written, and a key the raw structs do not have is reported as unknown with its pointer: the
//! set of accepted fields is the raw structs, not a list kept beside them.
//!
//! Sections are read in a fixed order, origins, providers and quotas before routes, so that the
//! problems come out in document order and routes can resolve the names the others declare.
//!
//! A new field is one field in its raw struct (`name: Field<Json<T>>`, or `Field<Value>` for a
//! value of several shapes), one name in that struct's destructuring, and the validation that
//! turns it into the compiled type; its problems are reported at `ptr(at, "name")`.

mod auth;
mod client_ip;
mod forward_headers;
mod ip;
mod lockout;
mod names;
mod origins;
mod quotas;
mod reader;
mod routes;

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::policy_version::PolicyVersion;

use super::{
    Capabilities, ConfigError, ConfigErrorKind, ConfigErrors, Policy, ProviderKind,
    SchemaCompilation, Secrets,
};
use names::{split, Names};
use reader::{Field, Json, Reader, Unknown};

/// The top level of a policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPolicy {
    /// For editors; checked to be a string and otherwise ignored.
    #[serde(rename = "$schema")]
    schema: Field<Json<String>>,
    version: Field<Json<u64>>,
    config_ttl_s: Field<Json<u64>>,
    token_cache_entries: Field<Json<u64>>,
    token_cache_bytes: Field<Json<u64>>,
    origins: Field<origins::Section>,
    auth: Field<auth::Section>,
    quotas: Field<quotas::Section>,
    routes: Field<routes::Section>,
    /// A CORS policy object, compiled by [`crate::cors::Cors`].
    cors: Field<Value>,
    forward_headers: Field<forward_headers::Section>,
    client_ip: Field<client_ip::Section>,
    ip: Field<ip::Section>,
    lockout: Field<lockout::Section>,
    #[serde(flatten)]
    unknown: Unknown,
}

pub(super) fn policy(
    text: &str,
    secrets: &dyn Secrets,
    schemas: SchemaCompilation,
    capabilities: Capabilities,
) -> Result<Policy, ConfigErrors> {
    let doc = crate::json::parse_strict(text.as_bytes()).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            pointer: String::new(),
            kind: ConfigErrorKind::Syntax {
                line: e.line(),
                column: e.column(),
                message: syntax_message(&e),
            },
        }])
    })?;
    let mut r = Reader {
        errors: Vec::new(),
        warnings: Vec::new(),
        schemas,
        capabilities,
    };
    let document_version = PolicyVersion::of(&doc);
    let policy = read_policy(&mut r, Json::from_value(doc), secrets, document_version);
    match policy {
        Some(mut p) if r.errors.is_empty() => {
            p.warnings = r.warnings;
            Ok(p)
        }
        _ => {
            if r.errors.is_empty() {
                r.invalid("", "config is invalid");
            }
            Err(ConfigErrors(r.errors))
        }
    }
}

/// serde_json appends " at line L column C"; the error already carries those as fields.
fn syntax_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

fn read_policy(
    r: &mut Reader,
    doc: Json<RawPolicy>,
    secrets: &dyn Secrets,
    document_version: PolicyVersion,
) -> Option<Policy> {
    let RawPolicy {
        schema: Field(schema),
        version: Field(version),
        config_ttl_s: Field(config_ttl_s),
        token_cache_entries: Field(token_cache_entries),
        token_cache_bytes: Field(token_cache_bytes),
        origins: Field(origins),
        auth: Field(auth),
        quotas: Field(quotas),
        routes: Field(routes),
        cors: Field(cors),
        forward_headers: Field(forward_headers),
        client_ip: Field(client_ip),
        ip: Field(ip),
        lockout: Field(lockout),
        unknown,
    } = r.object(doc, "")?;
    r.unknown(unknown, "");
    let token_cache_entries = match token_cache_entries {
        Some(v) => r
            .integer(v, "/token_cache_entries", 0, 10_000_000)
            .unwrap_or(0),
        None => crate::token_cache::DEFAULT_MAX_ENTRIES as u64,
    };
    let token_cache_bytes = match token_cache_bytes {
        Some(v) => r.integer(v, "/token_cache_bytes", 0, 1 << 34).unwrap_or(0),
        None => crate::token_cache::DEFAULT_MAX_BYTES as u64,
    };
    let config_ttl_s = match config_ttl_s {
        Some(v) => r.integer(v, "/config_ttl_s", 1, 3_600).unwrap_or(30),
        None => 30,
    };
    if let Some(v) = r.required(version, "", "version") {
        if !matches!(v, Json::Ok(1)) {
            r.invalid(
                "/version",
                "must be 1 (the only config version this gateway reads)",
            );
        }
    }
    if let Some(v) = schema {
        r.string(v, "/$schema");
    }
    let client_ip = client_ip.and_then(|v| client_ip::read(r, v, "/client_ip"));
    let ip = ip.and_then(|v| ip::read(r, v, "/ip"));
    let lockout = lockout.and_then(|v| lockout::read(r, v, "/lockout", "*"));

    let origins = match r.required(origins, "", "origins") {
        Some(v) => origins::read(r, v, "/origins", secrets),
        None => Vec::new(),
    };
    let providers = match auth {
        Some(v) => auth::read(r, v, "/auth", secrets),
        None => Vec::new(),
    };
    let quotas = match quotas {
        Some(v) => quotas::read(r, v, "/quotas"),
        None => Vec::new(),
    };
    let (origins, origin_names) = split(origins);
    let (providers, provider_names) = split(providers);
    let api_key_headers: Vec<http::HeaderName> = providers
        .iter()
        .filter_map(|p| match &p.kind {
            ProviderKind::ApiKey(k) => Some(k.header.clone()),
            ProviderKind::Jwt(_) => None,
        })
        .collect();
    let forward_headers = forward_headers
        .and_then(|v| forward_headers::read(r, v, "/forward_headers", &api_key_headers));
    let (quotas, quota_names) = split(quotas);
    let names = Names {
        origins: origin_names,
        providers: provider_names,
        quotas: quota_names,
    };
    let routes = match r.required(routes, "", "routes") {
        Some(v) => routes::read(
            r,
            v,
            "/routes",
            &names,
            &providers,
            &quotas,
            &api_key_headers,
        ),
        None => Vec::new(),
    };
    let cors = cors.and_then(|v| {
        crate::cors::Cors::from_json(&v)
            .map_err(|errors| r.cors_errors("/cors", errors))
            .ok()
    });
    Some(Policy {
        version: document_version,
        config_ttl: Duration::from_secs(config_ttl_s),
        token_cache: (
            usize::try_from(token_cache_entries).unwrap_or(usize::MAX),
            usize::try_from(token_cache_bytes).unwrap_or(usize::MAX),
        ),
        origins,
        providers,
        quotas,
        routes,
        cors,
        api_key_headers,
        forward_headers,
        client_ip,
        ip,
        lockout,
        warnings: Vec::new(),
    })
}
