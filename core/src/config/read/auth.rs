//! `auth`: the named identity providers routes may require, JWT issuers and API-key sets.
//!
//! A provider that loads can verify what it is given and nothing weaker: its algorithms are
//! listed (never `none`), it has exactly the key material those algorithms need (an HMAC secret
//! of at least 32 bytes, inline public keys, or one remote key source at an https URL, http only
//! on loopback), and an API-key set holds only SHA-256 digests, read from a header the gateway
//! does not reserve.

use std::collections::HashSet;
use std::time::Duration;

use http::HeaderName;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::super::{ConfigErrorKind, Provider, ProviderKind, Secrets};
use super::names::read_named;
use super::reader::{at_index, ptr, Field, Json, Named, Reader, Strings, Unknown};
use crate::api_key::{ApiKey, ApiKeyProvider};
use crate::jwks::{RemoteKeys, RemoteSource};
use crate::jwt::{Algorithm, Jwk, JwtProvider, JwtSettings, KeySource};

/// The `auth` object as the document has it. An entry stays a plain value until its `type`
/// says which raw struct it is.
pub(super) type Section = Json<Named<Value>>;

/// A provider with `"type": "jwt"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawJwt {
    /// Already read by [`read_provider`], which chose this struct by it.
    #[serde(rename = "type")]
    _kind: Field<IgnoredAny>,
    issuer: Field<Json<String>>,
    audiences: Field<Strings>,
    algorithms: Field<Strings>,
    /// Inline keys: `{"keys": [JWK, ..]}`, each JWK read by [`crate::jwt::parse_jwk`].
    jwks: Field<Value>,
    jwks_url: Field<Json<String>>,
    oidc_issuer: Field<Json<String>>,
    jwks_refresh_s: Field<Json<u64>>,
    jwks_max_stale_s: Field<Json<u64>>,
    jwks_min_refresh_interval_s: Field<Json<u64>>,
    jwks_fetch_timeout_ms: Field<Json<u64>>,
    secret_env: Field<Json<String>>,
    leeway_s: Field<Json<u64>>,
    consumer_claim: Field<Json<String>>,
    scopes_claim: Field<Json<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// An inline JWK set (`jwks`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawJwks {
    keys: Field<Json<Vec<Value>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A provider with `"type": "api_key"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawApiKeys {
    /// Already read by [`read_provider`], which chose this struct by it.
    #[serde(rename = "type")]
    _kind: Field<IgnoredAny>,
    header: Field<Json<String>>,
    keys: Field<Json<Vec<Json<RawApiKey>>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// One entry of an API-key provider's `keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawApiKey {
    sha256: Field<Json<String>>,
    consumer: Field<Json<String>>,
    scopes: Field<Strings>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Every provider in document order; `None` for one that did not load (its problems are reported).
pub(super) fn read(
    r: &mut Reader,
    section: Section,
    at: &str,
    secrets: &dyn Secrets,
) -> Vec<(String, Option<Provider>)> {
    read_named(r, section, at, |r, name, v, at| {
        read_provider(r, name, v, at, secrets)
    })
}

fn read_provider(
    r: &mut Reader,
    name: &str,
    v: Value,
    at: &str,
    secrets: &dyn Secrets,
) -> Option<Provider> {
    // The type says which raw struct the rest is, so it is read before the rest.
    let Some(fields) = v.as_object() else {
        r.err(
            at,
            ConfigErrorKind::WrongType {
                expected: "an object",
            },
        );
        return None;
    };
    let Some(kind) = fields.get("type") else {
        r.err(ptr(at, "type"), ConfigErrorKind::Missing);
        return None;
    };
    let kind = kind.as_str().map(str::to_owned);
    let kind = match kind {
        Some(k) if k == "jwt" => {
            let raw = r.object(Json::from_value(v), at)?;
            ProviderKind::Jwt(Box::new(read_jwt(r, raw, at, secrets)?))
        }
        Some(k) if k == "api_key" => {
            let raw = r.object(Json::from_value(v), at)?;
            ProviderKind::ApiKey(read_api_key(r, raw, at)?)
        }
        _ => {
            r.invalid(ptr(at, "type"), "must be \"jwt\" or \"api_key\"");
            return None;
        }
    };
    Some(Provider {
        name: name.to_owned(),
        kind,
    })
}

/// A key source a JWT provider names; it names at most one.
enum KeySourceField {
    Jwks(Value),
    Remote(RemoteField, Json<String>),
}

impl KeySourceField {
    fn name(&self) -> &'static str {
        match self {
            KeySourceField::Jwks(_) => "jwks",
            KeySourceField::Remote(field, _) => field.name(),
        }
    }
}

/// The fields that name a remote key source.
#[derive(Debug, Clone, Copy)]
enum RemoteField {
    JwksUrl,
    OidcIssuer,
}

impl RemoteField {
    fn name(self) -> &'static str {
        match self {
            RemoteField::JwksUrl => "jwks_url",
            RemoteField::OidcIssuer => "oidc_issuer",
        }
    }
}

/// How often a remote key source is read, and how long its keys stay usable.
struct RawRemoteTiming {
    refresh_s: Option<Json<u64>>,
    max_stale_s: Option<Json<u64>>,
    min_refresh_interval_s: Option<Json<u64>>,
    fetch_timeout_ms: Option<Json<u64>>,
}

fn read_jwt(r: &mut Reader, raw: RawJwt, at: &str, secrets: &dyn Secrets) -> Option<JwtProvider> {
    let RawJwt {
        _kind: _,
        issuer: Field(issuer),
        audiences: Field(audiences),
        algorithms: Field(algorithms),
        jwks: Field(jwks),
        jwks_url: Field(jwks_url),
        oidc_issuer: Field(oidc_issuer),
        jwks_refresh_s: Field(jwks_refresh_s),
        jwks_max_stale_s: Field(jwks_max_stale_s),
        jwks_min_refresh_interval_s: Field(jwks_min_refresh_interval_s),
        jwks_fetch_timeout_ms: Field(jwks_fetch_timeout_ms),
        secret_env: Field(secret_env),
        leeway_s: Field(leeway_s),
        consumer_claim: Field(consumer_claim),
        scopes_claim: Field(scopes_claim),
        unknown,
    } = raw;
    r.unknown(unknown, at);
    let before = r.mark();
    let discovered = oidc_issuer
        .clone()
        .and_then(|i| r.nonempty_string(i, &ptr(at, "oidc_issuer")));
    // With discovery, the issuer defaults to the discovered one, which must equal `oidc_issuer`.
    let issuer = match (issuer, discovered) {
        (Some(i), _) => r.nonempty_string(i, &ptr(at, "issuer")),
        (None, Some(o)) => Some(o),
        (None, None) => {
            r.err(ptr(at, "issuer"), ConfigErrorKind::Missing);
            None
        }
    };
    let audiences = r
        .required(audiences, at, "audiences")
        .and_then(|a| r.strings(a, &ptr(at, "audiences"), true));
    let leeway_s = match leeway_s {
        Some(l) => r.integer(l, &ptr(at, "leeway_s"), 0, 300),
        None => Some(30),
    };
    let consumer_claim = match consumer_claim {
        Some(c) => r.nonempty_string(c, &ptr(at, "consumer_claim")),
        None => Some("sub".to_owned()),
    };
    let scopes_claim = match scopes_claim {
        Some(c) => r.nonempty_string(c, &ptr(at, "scopes_claim")).map(Some),
        None => Some(None),
    };
    let mut algs = Vec::new();
    if let Some(list) = r
        .required(algorithms, at, "algorithms")
        .and_then(|a| r.strings(a, &ptr(at, "algorithms"), true))
    {
        let list_at = ptr(at, "algorithms");
        for (i, name) in list.iter().enumerate() {
            match Algorithm::from_name(name) {
                Some(alg) if !algs.contains(&alg) => algs.push(alg),
                Some(_) => r.err(at_index(&list_at, i), ConfigErrorKind::Duplicate),
                None => r.invalid(
                    at_index(&list_at, i),
                    "unknown algorithm (use HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA; \"none\" is never accepted)",
                ),
            }
        }
    }
    if !r.clean_since(before) {
        // Which key source is needed depends on the algorithms; don't guess past a bad list.
        return None;
    }
    let wants_hmac = algs.iter().any(|a| a.is_hmac());
    let wants_public = algs.iter().any(|a| !a.is_hmac());

    let mut sources = [
        jwks.map(KeySourceField::Jwks),
        jwks_url.map(|u| KeySourceField::Remote(RemoteField::JwksUrl, u)),
        oidc_issuer.map(|u| KeySourceField::Remote(RemoteField::OidcIssuer, u)),
    ]
    .into_iter()
    .flatten();
    let timing = RawRemoteTiming {
        refresh_s: jwks_refresh_s,
        max_stale_s: jwks_max_stale_s,
        min_refresh_interval_s: jwks_min_refresh_interval_s,
        fetch_timeout_ms: jwks_fetch_timeout_ms,
    };
    let source = match (sources.next(), sources.next()) {
        (None, _) if wants_public => {
            r.invalid(at, "RS*, PS*, ES* and EdDSA need a key source: \"jwks\", \"jwks_url\" or \"oidc_issuer\"");
            None
        }
        (None, _) => Some(KeySource::None),
        (Some(one), None) if !wants_public => {
            r.invalid(
                ptr(at, one.name()),
                "a key source is only used with RS*, PS*, ES* or EdDSA algorithms",
            );
            None
        }
        (Some(KeySourceField::Jwks(set)), None) => {
            read_inline_jwks(r, set, &ptr(at, "jwks")).map(|keys| KeySource::Inline(keys.into()))
        }
        (Some(KeySourceField::Remote(field, url)), None) => {
            read_remote_keys(r, at, field, url, timing)
        }
        (Some(_), Some(second)) => {
            r.invalid(
                ptr(at, second.name()),
                "give exactly one key source: \"jwks\", \"jwks_url\" or \"oidc_issuer\"",
            );
            None
        }
    };
    let mut secret = None;
    let sat = ptr(at, "secret_env");
    match secret_env {
        Some(s) if wants_hmac => {
            if let Some(var) = r.nonempty_string(s, &sat) {
                match secrets.get(&var) {
                    None => r.err(sat, ConfigErrorKind::Secret(format!("secret \"{var}\" is not set").into())),
                    Some(value) if value.len() < 32 => r.err(
                        sat,
                        ConfigErrorKind::Secret(
                            format!("secret \"{var}\" is shorter than 32 bytes; HMAC keys must be at least as long as the hash").into(),
                        ),
                    ),
                    Some(value) => secret = Some(value.into_bytes()),
                }
            }
        }
        Some(_) => r.invalid(sat, "only used with HS256, HS384 or HS512"),
        None if wants_hmac => r.err(sat, ConfigErrorKind::Missing),
        None => {}
    }
    if !r.clean_since(before) {
        return None;
    }
    let settings = JwtSettings {
        issuer: issuer?,
        audiences: audiences?,
        algorithms: algs,
        leeway_s: leeway_s?,
        consumer_claim: consumer_claim?,
        scopes_claim: scopes_claim?,
    };
    Some(JwtProvider::new(settings, source?, secret))
}

fn read_inline_jwks(r: &mut Reader, jwks: Value, at: &str) -> Option<Vec<Jwk>> {
    let RawJwks {
        keys: Field(keys),
        unknown,
    } = r.object(Json::from_value(jwks), at)?;
    r.unknown(unknown, at);
    let keys_at = ptr(at, "keys");
    let list = r
        .required(keys, at, "keys")
        .and_then(|k| r.array(k, &keys_at))?;
    if list.is_empty() {
        r.invalid(&keys_at, "must hold at least one key");
    }
    let before = r.mark();
    let mut keys = Vec::with_capacity(list.len());
    for (i, jwk) in list.iter().enumerate() {
        match crate::jwt::parse_jwk(jwk) {
            Ok(key) => keys.push(key),
            Err(why) => r.invalid(at_index(&keys_at, i), why),
        }
    }
    (r.clean_since(before) && !keys.is_empty()).then_some(keys)
}

fn read_remote_keys(
    r: &mut Reader,
    at: &str,
    field: RemoteField,
    url: Json<String>,
    timing: RawRemoteTiming,
) -> Option<KeySource> {
    let RawRemoteTiming {
        refresh_s,
        max_stale_s,
        min_refresh_interval_s,
        fetch_timeout_ms,
    } = timing;
    let before = r.mark();
    let url = r.string(url, &ptr(at, field.name()))?;
    let checked = match field {
        RemoteField::OidcIssuer => crate::jwks::check_key_url(&crate::jwks::discovery_url(&url)),
        RemoteField::JwksUrl => crate::jwks::check_key_url(&url),
    };
    if let Err(why) = checked {
        r.invalid(ptr(at, field.name()), why);
    }
    let mut seconds = |v: Option<Json<u64>>, name: &str, default: u64, min: u64, max: u64| match v {
        Some(v) => r.integer(v, &ptr(at, name), min, max),
        None => Some(default),
    };
    let refresh_s = seconds(refresh_s, "jwks_refresh_s", 300, 10, 86_400);
    let max_stale_s = seconds(max_stale_s, "jwks_max_stale_s", 86_400, 60, 30 * 86_400);
    let min_refresh_interval_s = seconds(
        min_refresh_interval_s,
        "jwks_min_refresh_interval_s",
        10,
        1,
        3_600,
    );
    let timeout_ms = seconds(
        fetch_timeout_ms,
        "jwks_fetch_timeout_ms",
        5_000,
        100,
        60_000,
    );
    if !r.clean_since(before) {
        return None;
    }
    let source = match field {
        RemoteField::OidcIssuer => RemoteSource::OidcIssuer(url),
        RemoteField::JwksUrl => RemoteSource::JwksUrl(url),
    };
    Some(KeySource::Remote(RemoteKeys {
        source,
        refresh_s: refresh_s?,
        max_stale_s: max_stale_s?,
        min_refresh_interval_s: min_refresh_interval_s?,
        fetch_timeout: Duration::from_millis(timeout_ms?),
    }))
}

fn read_api_key(r: &mut Reader, raw: RawApiKeys, at: &str) -> Option<ApiKeyProvider> {
    let RawApiKeys {
        _kind: _,
        header: Field(header),
        keys: Field(keys),
        unknown,
    } = raw;
    r.unknown(unknown, at);
    let before = r.mark();
    let header_at = ptr(at, "header");
    let header = match header {
        Some(h) => r.nonempty_string(h, &header_at).and_then(|h| {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) if name.as_str() == h.to_ascii_lowercase() => Some(name),
                _ => {
                    r.invalid(&header_at, "not a valid HTTP header name");
                    None
                }
            }
        }),
        None => Some(HeaderName::from_static("x-api-key")),
    };
    if let Some(h) = &header {
        if h.as_str().starts_with(crate::forward::RESERVED_PREFIX) || h == http::header::HOST {
            r.invalid(&header_at, "this header is reserved by the gateway");
        }
    }
    let mut out = Vec::new();
    let keys_at = ptr(at, "keys");
    if let Some(list) = r
        .required(keys, at, "keys")
        .and_then(|k| r.array(k, &keys_at))
    {
        if list.is_empty() {
            r.invalid(&keys_at, "must hold at least one key");
        }
        let mut seen = HashSet::new();
        for (i, item) in list.into_iter().enumerate() {
            let key_at = at_index(&keys_at, i);
            if let Some(key) = read_one_key(r, item, &key_at) {
                if !seen.insert(key.sha256) {
                    r.err(ptr(&key_at, "sha256"), ConfigErrorKind::Duplicate);
                }
                out.push(key);
            }
        }
    }
    if !r.clean_since(before) {
        return None;
    }
    Some(ApiKeyProvider {
        header: header?,
        keys: out,
    })
}

fn read_one_key(r: &mut Reader, raw: Json<RawApiKey>, at: &str) -> Option<ApiKey> {
    let RawApiKey {
        sha256: Field(sha256),
        consumer: Field(consumer),
        scopes: Field(scopes),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let hash_at = ptr(at, "sha256");
    let digest = r
        .required(sha256, at, "sha256")
        .and_then(|h| r.string(h, &hash_at))
        .and_then(|h| {
            let digest = hex::decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            if digest.is_none() {
                r.invalid(&hash_at, "must be the 64 hex digits of the key's SHA-256");
            }
            digest
        });
    let consumer = r
        .required(consumer, at, "consumer")
        .and_then(|c| r.nonempty_string(c, &ptr(at, "consumer")));
    let scopes = match scopes {
        Some(s) => r.strings(s, &ptr(at, "scopes"), false),
        None => Some(Vec::new()),
    };
    Some(ApiKey {
        sha256: digest?,
        consumer: consumer?,
        scopes: scopes?,
    })
}
