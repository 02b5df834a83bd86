//! From JSON text to a [`Policy`], collecting every problem on the way.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use http::{HeaderName, Method};
use serde_json::{Map, Value};

use super::{
    ConfigError, ConfigErrorKind, ConfigErrors, OnStoreError, Origin, Policy, Provider,
    ProviderKind, Quota, QuotaBy, RequestRules, Route, RouteAuth, SchemaCompilation, Secrets,
};
use crate::api_key::{ApiKey, ApiKeyProvider};
use crate::jwks::{RemoteKeys, RemoteSource};
use crate::jwt::{Algorithm, Jwk, JwtProvider, JwtSettings, KeySource};
use crate::quota::Rate;
use crate::route::Template;
use crate::schema::RouteSchema;

/// Collects problems while walking the document.
struct Reader {
    errors: Vec<ConfigError>,
    schemas: SchemaCompilation,
}

/// `base` + `/` + escaped `token` (RFC 6901).
fn ptr(base: &str, token: &str) -> String {
    let mut p = String::with_capacity(base.len() + token.len() + 1);
    p.push_str(base);
    p.push('/');
    for c in token.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

impl Reader {
    fn err(&mut self, pointer: impl Into<String>, kind: ConfigErrorKind) {
        self.errors.push(ConfigError {
            pointer: pointer.into(),
            kind,
        });
    }

    fn invalid(&mut self, pointer: impl Into<String>, why: impl Into<Cow<'static, str>>) {
        self.err(pointer, ConfigErrorKind::Invalid(why.into()));
    }

    /// `v` as an object whose keys are all in `allowed`; unknown keys are reported.
    fn object<'a>(
        &mut self,
        v: &'a Value,
        at: &str,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(obj) = v.as_object() else {
            self.err(
                at,
                ConfigErrorKind::WrongType {
                    expected: "an object",
                },
            );
            return None;
        };
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.err(ptr(at, key), ConfigErrorKind::UnknownField);
            }
        }
        Some(obj)
    }

    fn required<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Option<&'a Value> {
        let v = obj.get(key);
        if v.is_none() {
            self.err(ptr(at, key), ConfigErrorKind::Missing);
        }
        v
    }

    fn string<'a>(&mut self, v: &'a Value, at: &str) -> Option<&'a str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(
                    at,
                    ConfigErrorKind::WrongType {
                        expected: "a string",
                    },
                );
                None
            }
        }
    }

    fn nonempty_string<'a>(&mut self, v: &'a Value, at: &str) -> Option<&'a str> {
        let s = self.string(v, at)?;
        if s.is_empty() {
            self.invalid(at, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn integer(&mut self, v: &Value, at: &str, min: u64, max: u64) -> Option<u64> {
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(_) | None if v.is_number() => {
                self.invalid(at, format!("must be an integer from {min} to {max}"));
                None
            }
            _ => {
                self.err(
                    at,
                    ConfigErrorKind::WrongType {
                        expected: "an integer",
                    },
                );
                None
            }
        }
    }

    fn array<'a>(&mut self, v: &'a Value, at: &str) -> Option<&'a Vec<Value>> {
        match v.as_array() {
            Some(a) => Some(a),
            None => {
                self.err(
                    at,
                    ConfigErrorKind::WrongType {
                        expected: "an array",
                    },
                );
                None
            }
        }
    }

    /// A list of strings; `nonempty` makes an empty list an error.
    fn strings(&mut self, v: &Value, at: &str, nonempty: bool) -> Option<Vec<String>> {
        let items = self.array(v, at)?;
        if nonempty && items.is_empty() {
            self.invalid(at, "must list at least one entry");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.nonempty_string(item, &ptr(at, &i.to_string())) {
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

pub(super) fn policy(
    text: &str,
    secrets: &dyn Secrets,
    schemas: SchemaCompilation,
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
        schemas,
    };
    let policy = read_policy(&mut r, &doc, secrets);
    match policy {
        Some(p) if r.errors.is_empty() => Ok(p),
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

fn read_policy(r: &mut Reader, doc: &Value, secrets: &dyn Secrets) -> Option<Policy> {
    let top = r.object(
        doc,
        "",
        &[
            "$schema",
            "version",
            "config_ttl_s",
            "token_cache_entries",
            "token_cache_bytes",
            "origins",
            "auth",
            "quotas",
            "routes",
        ],
    )?;
    let token_cache_entries = match top.get("token_cache_entries") {
        Some(v) => r
            .integer(v, "/token_cache_entries", 0, 10_000_000)
            .unwrap_or(0),
        None => crate::token_cache::DEFAULT_MAX_ENTRIES as u64,
    };
    let token_cache_bytes = match top.get("token_cache_bytes") {
        Some(v) => r.integer(v, "/token_cache_bytes", 0, 1 << 34).unwrap_or(0),
        None => crate::token_cache::DEFAULT_MAX_BYTES as u64,
    };
    let config_ttl_s = match top.get("config_ttl_s") {
        Some(v) => r.integer(v, "/config_ttl_s", 1, 3_600).unwrap_or(30),
        None => 30,
    };
    if let Some(v) = r.required(top, "", "version") {
        if v.as_u64() != Some(1) {
            r.invalid(
                "/version",
                "must be 1 (the only config version this gateway reads)",
            );
        }
    }
    if let Some(v) = top.get("$schema") {
        r.string(v, "/$schema");
    }

    let origins = match r.required(top, "", "origins") {
        Some(v) => read_named(r, v, "/origins", read_origin),
        None => Vec::new(),
    };
    let providers = match top.get("auth") {
        Some(v) => read_named(r, v, "/auth", |r, name, v, at| {
            read_provider(r, name, v, at, secrets)
        }),
        None => Vec::new(),
    };
    let quotas = match top.get("quotas") {
        Some(v) => read_named(r, v, "/quotas", read_quota),
        None => Vec::new(),
    };
    let (origins, origin_names) = split(origins);
    let (providers, provider_names) = split(providers);
    let (quotas, quota_names) = split(quotas);
    let names = Names {
        origins: origin_names,
        providers: provider_names,
        quotas: quota_names,
    };
    let mut routes = Vec::new();
    if let Some(v) = r.required(top, "", "routes") {
        if let Some(items) = r.array(v, "/routes") {
            if items.is_empty() {
                r.invalid("/routes", "must list at least one route");
            }
            let mut ids = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let at = ptr("/routes", &i.to_string());
                if let Some(route) = read_route(r, item, &at, &names, &providers, &quotas) {
                    if !ids.insert(route.id.clone()) {
                        r.err(ptr(&at, "id"), ConfigErrorKind::Duplicate);
                    }
                    routes.push(route);
                }
            }
        }
    }
    let api_key_headers = providers
        .iter()
        .filter_map(|p| match &p.kind {
            ProviderKind::ApiKey(k) => Some(k.header.clone()),
            ProviderKind::Jwt(_) => None,
        })
        .collect();
    Some(Policy {
        config_ttl: Duration::from_secs(config_ttl_s),
        token_cache: (
            usize::try_from(token_cache_entries).unwrap_or(usize::MAX),
            usize::try_from(token_cache_bytes).unwrap_or(usize::MAX),
        ),
        origins,
        providers,
        quotas,
        routes,
        api_key_headers,
    })
}

/// Declared names; `None` marks an entry that is declared but invalid.
struct Names {
    origins: HashMap<String, Option<usize>>,
    providers: HashMap<String, Option<usize>>,
    quotas: HashMap<String, Option<usize>>,
}

/// Resolve a reference: `Ok(Some(i))` valid, `Ok(None)` declared but invalid, `Err` unknown.
fn resolve(map: &HashMap<String, Option<usize>>, name: &str) -> Result<Option<usize>, ()> {
    map.get(name).copied().ok_or(())
}

/// An object of named entries, read in document order.
fn read_named<T>(
    r: &mut Reader,
    v: &Value,
    at: &str,
    mut each: impl FnMut(&mut Reader, &str, &Value, &str) -> Option<T>,
) -> Vec<(String, Option<T>)> {
    let Some(obj) = v.as_object() else {
        r.err(
            at,
            ConfigErrorKind::WrongType {
                expected: "an object of named entries",
            },
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(obj.len());
    for (name, item) in obj {
        let here = ptr(at, name);
        if !valid_name(name) {
            r.invalid(
                &here,
                "names use letters, digits, '-', '_' and '.' only (1 to 64 characters)",
            );
            out.push((name.clone(), None));
            continue;
        }
        out.push((name.clone(), each(r, name, item, &here)));
    }
    out
}

/// Keep the valid entries, and index every declared name: a reference to an entry that is
/// declared but invalid is not reported again (its own problems already are).
fn split<T>(entries: Vec<(String, Option<T>)>) -> (Vec<T>, HashMap<String, Option<usize>>) {
    let mut valid = Vec::with_capacity(entries.len());
    let mut names = HashMap::with_capacity(entries.len());
    for (name, entry) in entries {
        let index = entry.map(|t| {
            valid.push(t);
            valid.len() - 1
        });
        names.insert(name, index);
    }
    (valid, names)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn read_origin(r: &mut Reader, name: &str, v: &Value, at: &str) -> Option<Origin> {
    let obj = r.object(v, at, &["url", "timeout_ms"])?;
    let url = r
        .required(obj, at, "url")
        .and_then(|u| r.string(u, &ptr(at, "url")));
    let timeout_ms = match obj.get("timeout_ms") {
        Some(t) => r.integer(t, &ptr(at, "timeout_ms"), 1, 600_000)?,
        None => 10_000,
    };
    let base = origin_base(url?)
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

fn read_provider(
    r: &mut Reader,
    name: &str,
    v: &Value,
    at: &str,
    secrets: &dyn Secrets,
) -> Option<Provider> {
    let Some(kind) = v.get("type") else {
        r.err(ptr(at, "type"), ConfigErrorKind::Missing);
        return None;
    };
    let kind = match kind.as_str() {
        Some("jwt") => ProviderKind::Jwt(Box::new(read_jwt(r, v, at, secrets)?)),
        Some("api_key") => ProviderKind::ApiKey(read_api_key(r, v, at)?),
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

fn read_jwt(r: &mut Reader, v: &Value, at: &str, secrets: &dyn Secrets) -> Option<JwtProvider> {
    let obj = r.object(
        v,
        at,
        &[
            "type",
            "issuer",
            "audiences",
            "algorithms",
            "jwks",
            "jwks_url",
            "oidc_issuer",
            "jwks_refresh_s",
            "jwks_max_stale_s",
            "jwks_min_refresh_interval_s",
            "jwks_fetch_timeout_ms",
            "secret_env",
            "leeway_s",
            "consumer_claim",
            "scopes_claim",
        ],
    )?;
    let before = r.errors.len();
    let oidc_issuer = obj
        .get("oidc_issuer")
        .and_then(|i| r.nonempty_string(i, &ptr(at, "oidc_issuer")));
    // With discovery, the issuer defaults to the discovered one, which must equal `oidc_issuer`.
    let issuer = match (obj.get("issuer"), oidc_issuer) {
        (Some(i), _) => r.nonempty_string(i, &ptr(at, "issuer")).map(str::to_owned),
        (None, Some(o)) => Some(o.to_owned()),
        (None, None) => {
            r.err(ptr(at, "issuer"), ConfigErrorKind::Missing);
            None
        }
    };
    let audiences = r
        .required(obj, at, "audiences")
        .and_then(|a| r.strings(a, &ptr(at, "audiences"), true));
    let leeway_s = match obj.get("leeway_s") {
        Some(l) => r.integer(l, &ptr(at, "leeway_s"), 0, 300),
        None => Some(30),
    };
    let consumer_claim = match obj.get("consumer_claim") {
        Some(c) => r
            .nonempty_string(c, &ptr(at, "consumer_claim"))
            .map(str::to_owned),
        None => Some("sub".to_owned()),
    };
    let scopes_claim = match obj.get("scopes_claim") {
        Some(c) => r
            .nonempty_string(c, &ptr(at, "scopes_claim"))
            .map(|s| Some(s.to_owned())),
        None => Some(None),
    };
    let mut algorithms = Vec::new();
    if let Some(list) = r
        .required(obj, at, "algorithms")
        .and_then(|a| r.strings(a, &ptr(at, "algorithms"), true))
    {
        for (i, name) in list.iter().enumerate() {
            match Algorithm::from_name(name) {
                Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Some(_) => r.err(ptr(&ptr(at, "algorithms"), &i.to_string()), ConfigErrorKind::Duplicate),
                None => r.invalid(
                    ptr(&ptr(at, "algorithms"), &i.to_string()),
                    "unknown algorithm (use HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA; \"none\" is never accepted)",
                ),
            }
        }
    }
    if r.errors.len() != before {
        // Which key source is needed depends on the algorithms; don't guess past a bad list.
        return None;
    }
    let wants_hmac = algorithms.iter().any(|a| a.is_hmac());
    let wants_public = algorithms.iter().any(|a| !a.is_hmac());

    let sources: Vec<&str> = ["jwks", "jwks_url", "oidc_issuer"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let source = match sources.as_slice() {
        [] if wants_public => {
            r.invalid(at, "RS*, PS*, ES* and EdDSA need a key source: \"jwks\", \"jwks_url\" or \"oidc_issuer\"");
            None
        }
        [] => Some(KeySource::None),
        [one] if !wants_public => {
            r.invalid(
                ptr(at, one),
                "a key source is only used with RS*, PS*, ES* or EdDSA algorithms",
            );
            None
        }
        ["jwks"] => read_inline_jwks(r, &obj["jwks"], &ptr(at, "jwks"))
            .map(|keys| KeySource::Inline(keys.into())),
        [one] => read_remote_keys(r, obj, at, one),
        [_, second, ..] => {
            r.invalid(
                ptr(at, second),
                "give exactly one key source: \"jwks\", \"jwks_url\" or \"oidc_issuer\"",
            );
            None
        }
    };
    let mut secret = None;
    match obj.get("secret_env") {
        Some(s) if wants_hmac => {
            let sat = ptr(at, "secret_env");
            if let Some(var) = r.nonempty_string(s, &sat) {
                match secrets.get(var) {
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
        Some(_) => r.invalid(
            ptr(at, "secret_env"),
            "only used with HS256, HS384 or HS512",
        ),
        None if wants_hmac => r.err(ptr(at, "secret_env"), ConfigErrorKind::Missing),
        None => {}
    }
    if r.errors.len() != before {
        return None;
    }
    let settings = JwtSettings {
        issuer: issuer?,
        audiences: audiences?,
        algorithms,
        leeway_s: leeway_s?,
        consumer_claim: consumer_claim?,
        scopes_claim: scopes_claim?,
    };
    Some(JwtProvider::new(settings, source?, secret))
}

fn read_inline_jwks(r: &mut Reader, jwks: &Value, at: &str) -> Option<Vec<Jwk>> {
    let set = r.object(jwks, at, &["keys"])?;
    let list = r
        .required(set, at, "keys")
        .and_then(|k| r.array(k, &ptr(at, "keys")))?;
    if list.is_empty() {
        r.invalid(ptr(at, "keys"), "must hold at least one key");
    }
    let before = r.errors.len();
    let mut keys = Vec::with_capacity(list.len());
    for (i, jwk) in list.iter().enumerate() {
        match crate::jwt::parse_jwk(jwk) {
            Ok(key) => keys.push(key),
            Err(why) => r.invalid(ptr(&ptr(at, "keys"), &i.to_string()), why),
        }
    }
    (r.errors.len() == before && !keys.is_empty()).then_some(keys)
}

fn read_remote_keys(
    r: &mut Reader,
    obj: &Map<String, Value>,
    at: &str,
    field: &str,
) -> Option<KeySource> {
    let before = r.errors.len();
    let url = r.string(&obj[field], &ptr(at, field))?;
    let checked = if field == "oidc_issuer" {
        crate::jwks::check_key_url(&crate::jwks::discovery_url(url))
    } else {
        crate::jwks::check_key_url(url)
    };
    if let Err(why) = checked {
        r.invalid(ptr(at, field), why);
    }
    let mut seconds = |name: &str, default: u64, min: u64, max: u64| match obj.get(name) {
        Some(v) => r.integer(v, &ptr(at, name), min, max),
        None => Some(default),
    };
    let refresh_s = seconds("jwks_refresh_s", 300, 10, 86_400);
    let max_stale_s = seconds("jwks_max_stale_s", 86_400, 60, 30 * 86_400);
    let min_refresh_interval_s = seconds("jwks_min_refresh_interval_s", 10, 1, 3_600);
    let timeout_ms = seconds("jwks_fetch_timeout_ms", 5_000, 100, 60_000);
    if r.errors.len() != before {
        return None;
    }
    let source = if field == "oidc_issuer" {
        RemoteSource::OidcIssuer(url.to_owned())
    } else {
        RemoteSource::JwksUrl(url.to_owned())
    };
    Some(KeySource::Remote(RemoteKeys {
        source,
        refresh_s: refresh_s?,
        max_stale_s: max_stale_s?,
        min_refresh_interval_s: min_refresh_interval_s?,
        fetch_timeout: Duration::from_millis(timeout_ms?),
    }))
}

fn read_api_key(r: &mut Reader, v: &Value, at: &str) -> Option<ApiKeyProvider> {
    let obj = r.object(v, at, &["type", "header", "keys"])?;
    let before = r.errors.len();
    let header = match obj.get("header") {
        Some(h) => r.nonempty_string(h, &ptr(at, "header")).and_then(|h| {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) if name.as_str() == h.to_ascii_lowercase() => Some(name),
                _ => {
                    r.invalid(ptr(at, "header"), "not a valid HTTP header name");
                    None
                }
            }
        }),
        None => Some(HeaderName::from_static("x-api-key")),
    };
    if let Some(h) = &header {
        if h.as_str().starts_with(crate::forward::RESERVED_PREFIX) || h == http::header::HOST {
            r.invalid(ptr(at, "header"), "this header is reserved by the gateway");
        }
    }
    let mut keys = Vec::new();
    let kat = ptr(at, "keys");
    if let Some(list) = r.required(obj, at, "keys").and_then(|k| r.array(k, &kat)) {
        if list.is_empty() {
            r.invalid(&kat, "must hold at least one key");
        }
        let mut seen = HashSet::new();
        for (i, item) in list.iter().enumerate() {
            let iat = ptr(&kat, &i.to_string());
            let Some(k) = r.object(item, &iat, &["sha256", "consumer", "scopes"]) else {
                continue;
            };
            let hash = r
                .required(k, &iat, "sha256")
                .and_then(|h| r.string(h, &ptr(&iat, "sha256")))
                .and_then(|h| {
                    let bytes = hex::decode(h).ok().filter(|b| b.len() == 32);
                    if bytes.is_none() {
                        r.invalid(
                            ptr(&iat, "sha256"),
                            "must be the 64 hex digits of the key's SHA-256",
                        );
                    }
                    bytes
                });
            let consumer = r
                .required(k, &iat, "consumer")
                .and_then(|c| r.nonempty_string(c, &ptr(&iat, "consumer")));
            let scopes = match k.get("scopes") {
                Some(s) => r.strings(s, &ptr(&iat, "scopes"), false),
                None => Some(Vec::new()),
            };
            if let (Some(hash), Some(consumer), Some(scopes)) = (hash, consumer, scopes) {
                if !seen.insert(hash.clone()) {
                    r.err(ptr(&iat, "sha256"), ConfigErrorKind::Duplicate);
                }
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&hash);
                keys.push(ApiKey {
                    sha256: digest,
                    consumer: consumer.to_owned(),
                    scopes,
                });
            }
        }
    }
    if r.errors.len() != before {
        return None;
    }
    Some(ApiKeyProvider {
        header: header?,
        keys,
    })
}

fn read_quota(r: &mut Reader, name: &str, v: &Value, at: &str) -> Option<Quota> {
    let obj = r.object(v, at, &["limit", "window_s", "by", "on_store_error"])?;
    let limit = r
        .required(obj, at, "limit")
        .and_then(|l| r.integer(l, &ptr(at, "limit"), 1, 1_000_000_000));
    let window = r
        .required(obj, at, "window_s")
        .and_then(|w| r.integer(w, &ptr(at, "window_s"), 1, 31_536_000));
    let by = r
        .required(obj, at, "by")
        .and_then(|b| r.string(b, &ptr(at, "by")))
        .and_then(|b| {
            let parsed = match b {
                "consumer" => Some(QuotaBy::Consumer),
                "ip" => Some(QuotaBy::Ip),
                "route" => Some(QuotaBy::Route),
                other => other
                    .strip_prefix("header:")
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .map(QuotaBy::Header),
            };
            if parsed.is_none() {
                r.invalid(
                    ptr(at, "by"),
                    "must be \"consumer\", \"ip\", \"route\" or \"header:NAME\"",
                );
            }
            parsed
        });
    let on_store_error = match obj.get("on_store_error") {
        None => Some(OnStoreError::Deny),
        Some(v) => match v.as_str() {
            Some("deny") => Some(OnStoreError::Deny),
            Some("allow") => Some(OnStoreError::Allow),
            _ => {
                r.invalid(ptr(at, "on_store_error"), "must be \"deny\" or \"allow\"");
                None
            }
        },
    };
    let limit = NonZeroU32::new(u32::try_from(limit?).ok()?)?;
    Some(Quota {
        name: name.to_owned(),
        rate: Rate {
            limit,
            window_us: window? * 1_000_000,
        },
        by: by?,
        on_store_error: on_store_error?,
    })
}

fn read_route(
    r: &mut Reader,
    v: &Value,
    at: &str,
    names: &Names,
    providers: &[Provider],
    quotas: &[Quota],
) -> Option<Route> {
    let obj = r.object(
        v,
        at,
        &[
            "id", "methods", "path", "origin", "auth", "request", "quota",
        ],
    )?;
    let before = r.errors.len();
    let id = r
        .required(obj, at, "id")
        .and_then(|i| r.nonempty_string(i, &ptr(at, "id")));
    if let Some(id) = id {
        if id.len() > 128 || id.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            r.invalid(
                ptr(at, "id"),
                "route ids are 1 to 128 visible ASCII characters",
            );
        }
    }
    let mut methods = Vec::new();
    if let Some(list) = r
        .required(obj, at, "methods")
        .and_then(|m| r.strings(m, &ptr(at, "methods"), true))
    {
        for (i, m) in list.iter().enumerate() {
            let mat = ptr(&ptr(at, "methods"), &i.to_string());
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => {
                    if methods.contains(&method) {
                        r.err(mat, ConfigErrorKind::Duplicate);
                    } else {
                        methods.push(method);
                    }
                }
                _ => r.invalid(
                    mat,
                    "methods are upper-case HTTP method names such as \"GET\"",
                ),
            }
        }
    }
    let template = r
        .required(obj, at, "path")
        .and_then(|p| r.string(p, &ptr(at, "path")))
        .and_then(|p| {
            Template::parse(p)
                .map_err(|why| r.invalid(ptr(at, "path"), why))
                .ok()
        });
    let origin = r
        .required(obj, at, "origin")
        .and_then(|o| r.string(o, &ptr(at, "origin")))
        .and_then(|o| match resolve(&names.origins, o) {
            Ok(found) => found,
            Err(()) => {
                r.err(
                    ptr(at, "origin"),
                    ConfigErrorKind::UnknownReference {
                        what: "origin",
                        name: o.to_owned(),
                    },
                );
                None
            }
        });
    let auth = r
        .required(obj, at, "auth")
        .and_then(|a| read_route_auth(r, a, &ptr(at, "auth"), names, providers));
    let request = match obj.get("request") {
        Some(req) => read_request_rules(r, req, &ptr(at, "request")),
        None => Some(RequestRules::default()),
    };
    let mut route_quotas = Vec::new();
    let mut invalid_reference = false;
    if let Some(q) = obj.get("quota") {
        let qat = ptr(at, "quota");
        let list: Vec<(String, &Value)> = match q {
            Value::String(_) => vec![(qat.clone(), q)],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (ptr(&qat, &i.to_string()), v))
                .collect(),
            _ => {
                r.err(
                    &qat,
                    ConfigErrorKind::WrongType {
                        expected: "a quota name or a list of them",
                    },
                );
                Vec::new()
            }
        };
        for (p, v) in list {
            let Some(name) = r.string(v, &p) else {
                continue;
            };
            match resolve(&names.quotas, name) {
                Ok(None) => invalid_reference = true,
                Ok(Some(i)) if route_quotas.contains(&i) => r.err(p, ConfigErrorKind::Duplicate),
                Ok(Some(i)) => {
                    if quotas[i].by == QuotaBy::Consumer && matches!(auth, Some(RouteAuth::Public))
                    {
                        r.invalid(p, "a quota \"by\": \"consumer\" needs an authenticated route; this one is public");
                    }
                    route_quotas.push(i);
                }
                Err(()) => r.err(
                    p,
                    ConfigErrorKind::UnknownReference {
                        what: "quota",
                        name: name.to_owned(),
                    },
                ),
            }
        }
    }
    if r.errors.len() != before || invalid_reference {
        return None;
    }
    Some(Route {
        id: id?.to_owned(),
        methods,
        template: template?,
        origin: origin?,
        auth: auth?,
        request: request?,
        quotas: route_quotas,
    })
}

fn read_route_auth(
    r: &mut Reader,
    v: &Value,
    at: &str,
    names: &Names,
    providers: &[Provider],
) -> Option<RouteAuth> {
    if let Some(s) = v.as_str() {
        if s == "none" {
            return Some(RouteAuth::Public);
        }
        r.invalid(
            at,
            "must be \"none\" (a public route) or an object naming providers",
        );
        return None;
    }
    let obj = r.object(v, at, &["providers", "scopes", "claims"])?;
    let before = r.errors.len();
    let mut invalid_reference = false;
    let mut indices = Vec::new();
    if let Some(list) = r
        .required(obj, at, "providers")
        .and_then(|p| r.strings(p, &ptr(at, "providers"), true))
    {
        for (i, name) in list.iter().enumerate() {
            let pat = ptr(&ptr(at, "providers"), &i.to_string());
            match resolve(&names.providers, name) {
                Ok(None) => invalid_reference = true,
                Ok(Some(idx)) if indices.contains(&idx) => r.err(pat, ConfigErrorKind::Duplicate),
                Ok(Some(idx)) => indices.push(idx),
                Err(()) => r.err(
                    pat,
                    ConfigErrorKind::UnknownReference {
                        what: "auth provider",
                        name: name.clone(),
                    },
                ),
            }
        }
    }
    let scopes = match obj.get("scopes") {
        Some(s) => r.strings(s, &ptr(at, "scopes"), false).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut claims = Vec::new();
    if let Some(c) = obj.get("claims") {
        match c.as_object() {
            Some(map) => {
                for (name, value) in map {
                    if matches!(value, Value::Object(_) | Value::Array(_) | Value::Null) {
                        r.invalid(
                            ptr(&ptr(at, "claims"), name),
                            "a required claim value is a string, number or boolean",
                        );
                    } else {
                        claims.push((name.clone(), value.clone()));
                    }
                }
                if !claims.is_empty()
                    && indices
                        .iter()
                        .all(|&i| !matches!(providers[i].kind, ProviderKind::Jwt(_)))
                {
                    r.invalid(
                        ptr(at, "claims"),
                        "claims can only be checked on tokens; no JWT provider is listed",
                    );
                }
            }
            None => r.err(
                ptr(at, "claims"),
                ConfigErrorKind::WrongType {
                    expected: "an object",
                },
            ),
        }
    }
    (r.errors.len() == before && !invalid_reference).then_some(RouteAuth::Required {
        providers: indices,
        scopes,
        claims,
    })
}

fn read_request_rules(r: &mut Reader, v: &Value, at: &str) -> Option<RequestRules> {
    let obj = r.object(
        v,
        at,
        &[
            "max_body_bytes",
            "content_types",
            "body_schema",
            "query_schema",
        ],
    )?;
    let before = r.errors.len();
    let max_body_bytes = obj
        .get("max_body_bytes")
        .and_then(|m| r.integer(m, &ptr(at, "max_body_bytes"), 0, 1 << 30));
    let mut content_types = match obj.get("content_types") {
        Some(c) => r
            .strings(c, &ptr(at, "content_types"), true)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    for (i, ct) in content_types.iter_mut().enumerate() {
        let lower = ct.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.len() != 2
            || parts
                .iter()
                .any(|p| p.is_empty() || p.contains(';') || p.contains(' '))
        {
            r.invalid(
                ptr(&ptr(at, "content_types"), &i.to_string()),
                "a media type such as \"application/json\", without parameters",
            );
        }
        *ct = lower;
    }
    let body_schema = obj
        .get("body_schema")
        .and_then(|s| compile_schema(r, s, &ptr(at, "body_schema")));
    let query_schema = obj
        .get("query_schema")
        .and_then(|s| compile_schema(r, s, &ptr(at, "query_schema")));
    if body_schema.is_some() && content_types.is_empty() {
        content_types.push("application/json".to_owned());
    }
    (r.errors.len() == before).then_some(RequestRules {
        max_body_bytes,
        content_types,
        body_schema,
        query_schema,
    })
}

fn compile_schema(r: &mut Reader, v: &Value, at: &str) -> Option<RouteSchema> {
    match r.schemas {
        SchemaCompilation::OnFirstUse => Some(RouteSchema::deferred(v.clone(), at)),
        SchemaCompilation::AtLoad => match RouteSchema::compile_now(v, at) {
            Ok(s) => Some(s),
            Err(e) => {
                r.errors.push(e);
                None
            }
        },
    }
}
