//! Cross-origin resource sharing: which browser origins may read a route's responses, and the
//! preflight answers the gateway gives for them itself.
//!
//! A policy is compiled once from config ([`Cors::compile`], [`CorsSetting::from_json`]) and then
//! only read. The request path uses four pure functions, none of which can fail at request time:
//!
//! 1. [`is_preflight`] says whether a request is a CORS preflight (`OPTIONS` with `Origin` and
//!    `Access-Control-Request-Method`). A preflight is routed by its path and by
//!    [`requested_method`], so it belongs to the route the actual request would take.
//! 2. For a preflight on a route with CORS, [`Cors::preflight`] gives the headers of the `204`
//!    answer, or why it is refused (a `403 cors-refused`, whose headers come from
//!    [`apply_to_refused_preflight`]). A preflight is never forwarded, needs no credential and
//!    spends no quota: browsers send it without credentials, so anything else would break them.
//! 3. Every other response (forwarded or the gateway's own) passes through [`apply_to_response`]
//!    with the effective policy ([`CorsSetting::effective`]; for answers made before a route is
//!    known, the top-level policy).
//!
//! What is promised:
//! - `Access-Control-Allow-Origin` is only ever the request's own (single, well-formed, allowed)
//!   origin, or `*` for a policy that allows any origin without credentials. It is never `*`
//!   together with `Access-Control-Allow-Credentials`.
//! - `null` is allowed only where it is listed literally; `"*"` does not cover it, because `null`
//!   is what sandboxed frames and `file:` pages send.
//! - On a route with CORS the origin's own `Access-Control-*` response headers never reach the
//!   client; its `Vary` values do, with `Origin` added.
//! - Every response of a route with CORS carries `Vary: Origin` (unless it already varies on
//!   `*`), also without an `Origin` or from an origin that is not allowed: the answer depends on
//!   the origin, and a shared cache must not give one origin's answer to another.

use std::fmt;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::config::{Policy, Route};
use crate::path::NormalPath;
use crate::problem::{CorsRefusedReason, Reject};
use crate::route;

#[cfg(test)]
mod tests;

/// The largest `max_age_s` accepted (a day). Chromium caps the preflight cache at 7200 s and
/// Firefox at 86400 s, whatever the header says.
pub const MAX_AGE_LIMIT_S: u32 = 86_400;

/// `max_age_s` when the policy does not say.
pub const DEFAULT_MAX_AGE_S: u32 = 600;

/// The `Vary` names of a preflight answer: it depends on all three request headers.
const PREFLIGHT_VARY: [&str; 3] = [
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
];

// ===== raw config =====

/// The `cors` object exactly as written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`), subdomain patterns
    /// (`https://*.example.com`), `"null"`, or `"*"` alone.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for; absent: the route's methods.
    #[serde(default)]
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for; absent: none.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers browsers may let scripts read; absent: none beyond the safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether browsers may send cookies and read responses to credentialed requests.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer; absent: [`DEFAULT_MAX_AGE_S`].
    #[serde(default)]
    pub max_age_s: Option<u64>,
}

/// A route's `cors` field as written: the string `"none"` or a policy object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCorsSetting {
    /// `"none"`: this route has no CORS, whatever the top level says.
    None,
    /// A policy that replaces the top-level one whole.
    Policy(RawCors),
}

impl<'de> Deserialize<'de> for RawCorsSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) if s == "none" => Ok(RawCorsSetting::None),
            v @ Value::Object(_) => RawCors::deserialize(v)
                .map(RawCorsSetting::Policy)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom("expected \"none\" or a cors object")),
        }
    }
}

// ===== errors =====

/// One problem in a `cors` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsError {
    /// JSON pointer relative to the `cors` field (`""` is the field itself, `/allow_origins/1`
    /// one entry); the config reader prefixes the field's own pointer.
    pub at: String,
    /// What is wrong there.
    pub kind: CorsErrorKind,
}

/// What is wrong with a `cors` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsErrorKind {
    /// The setting is not `"none"` or an object of the right shape (serde's words).
    Shape(String),
    /// A field this version does not know.
    UnknownField,
    /// `allow_origins` is empty: a policy that allows nobody is a mistake, use `"none"`.
    NoOrigins,
    /// An origin or pattern is not `scheme://host[:port]`, and why.
    BadOrigin(&'static str),
    /// `"*"` together with other origins.
    AnyNotAlone,
    /// `"*"` with `allow_credentials`, which browsers refuse and which would hand every site the
    /// user's session.
    AnyWithCredentials,
    /// `allow_methods` is an empty list.
    NoMethods,
    /// A method that is not an upper-case token.
    BadMethod,
    /// A header name that is not a token.
    BadHeaderName,
    /// `"*"` as a header name: browsers read it as a wildcard the policy would not enforce.
    HeaderWildcard,
    /// `max_age_s` above [`MAX_AGE_LIMIT_S`].
    MaxAgeTooLarge,
}

impl fmt::Display for CorsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsErrorKind::Shape(why) => write!(f, "not a valid cors setting: {why}"),
            CorsErrorKind::UnknownField => f.write_str("unknown field"),
            CorsErrorKind::NoOrigins => {
                f.write_str("allow_origins must not be empty (use \"cors\": \"none\" instead)")
            }
            CorsErrorKind::BadOrigin(why) => write!(f, "not an origin: {why}"),
            CorsErrorKind::AnyNotAlone => f.write_str("\"*\" must be the only allowed origin"),
            CorsErrorKind::AnyWithCredentials => {
                f.write_str("\"*\" cannot be combined with allow_credentials; list the origins")
            }
            CorsErrorKind::NoMethods => {
                f.write_str("allow_methods must not be empty (omit it for the route's methods)")
            }
            CorsErrorKind::BadMethod => {
                f.write_str("methods are upper-case HTTP method names such as \"GET\"")
            }
            CorsErrorKind::BadHeaderName => f.write_str("not a valid header name"),
            CorsErrorKind::HeaderWildcard => {
                f.write_str("\"*\" is not supported as a header name; list the names")
            }
            CorsErrorKind::MaxAgeTooLarge => {
                write!(f, "max_age_s is at most {MAX_AGE_LIMIT_S}")
            }
        }
    }
}

impl fmt::Display for CorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.at, self.kind)
        }
    }
}

impl std::error::Error for CorsError {}

fn error(at: impl Into<String>, kind: CorsErrorKind) -> CorsError {
    CorsError {
        at: at.into(),
        kind,
    }
}

// ===== origins =====

/// An origin as compared: lower-case scheme and host, the port only when it is not the scheme's
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tuple {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginPattern {
    /// Exactly this origin.
    Exact(Tuple),
    /// `scheme://*.base[:port]`: one or more labels before `base`, never `base` itself.
    Subdomains(Tuple),
    /// The literal `null`.
    Null,
}

/// Which origins a policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `"*"`: any origin except `null`.
    Any,
    /// Only these.
    Listed(Vec<OriginPattern>),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// A DNS name (LDH labels of 1 to 63, no empty label, so no trailing dot) or an IPv6 literal in
/// brackets. Everything else, including any non-ASCII or percent-encoded name, is refused:
/// browsers send IDNs as punycode.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner.contains(':')
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Parse `scheme://host[:port]`, lower-casing scheme and host and dropping a default port.
/// `wildcard` allows (and then requires) the host to start with `*.`; the bool says whether it did.
fn parse_tuple(text: &str, wildcard: bool) -> Result<(Tuple, bool), &'static str> {
    if !text.is_ascii() {
        return Err("must be ASCII (write international names in punycode)");
    }
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("must be scheme://host[:port]")?;
    let scheme = scheme.to_ascii_lowercase();
    let mut chars = scheme.bytes();
    if !chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err("the scheme is not valid");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment (not even a trailing /)");
    }
    if rest.contains('@') {
        return Err("an origin has no user information");
    }
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the port is not a number from 1 to 65535");
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("the port is not a number from 1 to 65535"),
                Ok(n) if Some(n) == default_port(&scheme) => None,
                Ok(n) => Some(n),
            }
        }
    };
    let host = host.to_ascii_lowercase();
    let (host, is_wildcard) = match host.strip_prefix("*.") {
        Some(base) if wildcard => (base.to_owned(), true),
        _ => (host, false),
    };
    if host.contains('*') {
        return Err(
            "a wildcard is only allowed as the whole leftmost label, as in https://*.example.com",
        );
    }
    if !valid_host(&host) {
        return Err("the host is not a valid name or [IPv6] literal");
    }
    if is_wildcard && (host.starts_with('[') || !host.contains('.')) {
        return Err("a wildcard needs a domain of at least two labels after *.");
    }
    Ok((Tuple { scheme, host, port }, is_wildcard))
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, &'static str> {
        if text == "null" {
            return Ok(OriginPattern::Null);
        }
        match parse_tuple(text, true)? {
            (t, true) => Ok(OriginPattern::Subdomains(t)),
            (t, false) => Ok(OriginPattern::Exact(t)),
        }
    }

    fn matches(&self, origin: &RequestOrigin) -> bool {
        match (self, origin) {
            (OriginPattern::Null, RequestOrigin::Null) => true,
            (OriginPattern::Exact(want), RequestOrigin::Tuple(got)) => want == got,
            (OriginPattern::Subdomains(base), RequestOrigin::Tuple(got)) => {
                got.scheme == base.scheme
                    && got.port == base.port
                    && got
                        .host
                        .strip_suffix(base.host.as_str())
                        .and_then(|prefix| prefix.strip_suffix('.'))
                        .is_some_and(|labels| !labels.is_empty())
            }
            _ => false,
        }
    }
}

/// The `Origin` of a request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestOrigin {
    Null,
    Tuple(Tuple),
}

/// The request's single `Origin` header and its parsed form, or `None` when it is absent,
/// repeated or malformed: none of these can be an allowed origin.
fn request_origin(request: &HeaderMap) -> Option<(&HeaderValue, RequestOrigin)> {
    let mut all = request.get_all(ORIGIN).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    if text == "null" {
        return Some((value, RequestOrigin::Null));
    }
    let (tuple, _) = parse_tuple(text, false).ok()?;
    Some((value, RequestOrigin::Tuple(tuple)))
}

// ===== the policy =====

/// A compiled CORS policy. Built only by [`Cors::compile`], so every value in it is valid.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    /// `None`: the methods of the route it is applied to.
    allow_methods: Option<Vec<Method>>,
    allow_headers: Vec<HeaderName>,
    credentials: bool,
    max_age_s: u32,
    /// Precomputed header values (`None` when the list is empty).
    methods_value: Option<HeaderValue>,
    allow_headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    max_age_value: HeaderValue,
}

/// Why a preflight is refused; each names the request header at fault, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRefused {
    /// `Origin` is missing, repeated, malformed or not allowed.
    Origin,
    /// `Access-Control-Request-Method` is missing, repeated, malformed or not allowed.
    Method,
    /// `Access-Control-Request-Headers` names a header that is not allowed (or is malformed).
    Header,
}

impl PreflightRefused {
    /// A short reason for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            PreflightRefused::Origin => "cors preflight: origin not allowed",
            PreflightRefused::Method => "cors preflight: method not allowed",
            PreflightRefused::Header => "cors preflight: request header not allowed",
        }
    }
}

impl fmt::Display for PreflightRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    HeaderValue::from_str(&joined).ok()
}

fn header_names(list: Vec<String>, field: &str, errors: &mut Vec<CorsError>) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let at = format!("/{field}/{i}");
        if name == "*" {
            errors.push(error(at, CorsErrorKind::HeaderWildcard));
            continue;
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Err(_) => errors.push(error(at, CorsErrorKind::BadHeaderName)),
        }
    }
    out
}

impl Cors {
    /// Validate a raw policy, reporting every problem with its pointer relative to the `cors`
    /// field.
    ///
    /// `allow_methods`, when absent, is left to the route the policy is applied to (see
    /// [`Cors::preflight`]), so one top-level policy serves routes with different methods.
    pub fn compile(raw: RawCors) -> Result<Cors, Vec<CorsError>> {
        let RawCors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age_s,
        } = raw;
        let mut errors = Vec::new();

        let origins = if allow_origins.is_empty() {
            errors.push(error("/allow_origins", CorsErrorKind::NoOrigins));
            Origins::Listed(Vec::new())
        } else if allow_origins.iter().any(|o| o == "*") {
            if allow_origins.len() > 1 {
                errors.push(error("/allow_origins", CorsErrorKind::AnyNotAlone));
            } else if allow_credentials {
                errors.push(error("/allow_origins/0", CorsErrorKind::AnyWithCredentials));
            }
            Origins::Any
        } else {
            let mut patterns = Vec::with_capacity(allow_origins.len());
            for (i, text) in allow_origins.iter().enumerate() {
                match OriginPattern::parse(text) {
                    Ok(p) => patterns.push(p),
                    Err(why) => errors.push(error(
                        format!("/allow_origins/{i}"),
                        CorsErrorKind::BadOrigin(why),
                    )),
                }
            }
            Origins::Listed(patterns)
        };

        let allow_methods = allow_methods.map(|list| {
            if list.is_empty() {
                errors.push(error("/allow_methods", CorsErrorKind::NoMethods));
            }
            let mut methods: Vec<Method> = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                match Method::from_bytes(m.as_bytes()) {
                    Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => {
                        if !methods.contains(&method) {
                            methods.push(method);
                        }
                    }
                    _ => errors.push(error(
                        format!("/allow_methods/{i}"),
                        CorsErrorKind::BadMethod,
                    )),
                }
            }
            methods
        });

        let allow_headers = header_names(allow_headers, "allow_headers", &mut errors);
        let expose_headers = header_names(expose_headers, "expose_headers", &mut errors);

        let max_age_s = match max_age_s {
            None => DEFAULT_MAX_AGE_S,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n <= MAX_AGE_LIMIT_S => n,
                _ => {
                    errors.push(error("/max_age_s", CorsErrorKind::MaxAgeTooLarge));
                    DEFAULT_MAX_AGE_S
                }
            },
        };

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Cors {
            methods_value: allow_methods
                .as_ref()
                .and_then(|m| join(m.iter().map(Method::as_str))),
            allow_headers_value: join(allow_headers.iter().map(HeaderName::as_str)),
            expose_value: join(expose_headers.iter().map(HeaderName::as_str)),
            max_age_value: HeaderValue::from(max_age_s),
            origins,
            allow_methods,
            allow_headers,
            credentials: allow_credentials,
            max_age_s,
        })
    }

    /// Read and compile the top-level `cors` object (the `"none"` form is only for routes).
    pub fn from_json(value: &Value) -> Result<Cors, Vec<CorsError>> {
        if !value.is_object() {
            let why = "expected a cors object (\"none\" is for turning a route's off)";
            return Err(vec![error("", CorsErrorKind::Shape(why.into()))]);
        }
        unknown_fields(value)?;
        let raw = RawCors::deserialize(value)
            .map_err(|e| vec![error("", CorsErrorKind::Shape(e.to_string()))])?;
        Cors::compile(raw)
    }

    /// `max_age_s` as compiled.
    pub fn max_age_s(&self) -> u32 {
        self.max_age_s
    }

    /// Whether the policy allows credentialed requests.
    pub fn allows_credentials(&self) -> bool {
        self.credentials
    }

    fn allows(&self, origin: &RequestOrigin) -> bool {
        match &self.origins {
            Origins::Any => *origin != RequestOrigin::Null,
            Origins::Listed(patterns) => patterns.iter().any(|p| p.matches(origin)),
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if its origin is allowed.
    fn allow_origin_value(&self, request: &HeaderMap) -> Option<HeaderValue> {
        let (value, origin) = request_origin(request)?;
        if !self.allows(&origin) {
            return None;
        }
        if self.origins == Origins::Any && !self.credentials {
            Some(HeaderValue::from_static("*"))
        } else {
            Some(value.clone())
        }
    }

    /// Answer a preflight on a route with this policy: the headers of the `204`, or why it is
    /// refused.
    ///
    /// `route_methods` are the methods of the route the preflight was routed to; they are the
    /// allowed methods when the policy lists none. `HEAD` is allowed wherever `GET` is.
    /// `Access-Control-Request-Headers` is a comma list, compared case-insensitively; every name
    /// in it must be in `allow_headers` (browsers list only the non-safelisted ones).
    pub fn preflight(
        &self,
        route_methods: &[Method],
        request: &HeaderMap,
    ) -> Result<HeaderMap, PreflightRefused> {
        let allow_origin = self
            .allow_origin_value(request)
            .ok_or(PreflightRefused::Origin)?;

        let requested = requested_method(request).ok_or(PreflightRefused::Method)?;
        let methods = self.allow_methods.as_deref().unwrap_or(route_methods);
        let allowed = methods.contains(&requested)
            || (requested == Method::HEAD && methods.contains(&Method::GET));
        if !allowed {
            return Err(PreflightRefused::Method);
        }
        let methods_value = match &self.allow_methods {
            Some(_) => self.methods_value.clone(),
            None => join(route_methods.iter().map(Method::as_str)),
        }
        .ok_or(PreflightRefused::Method)?;

        let mut asked_for_headers = false;
        for value in request.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let text = value.to_str().map_err(|_| PreflightRefused::Header)?;
            for item in text.split(',') {
                let item = item.trim_matches([' ', '\t']);
                if item.is_empty() {
                    continue;
                }
                let name = HeaderName::from_bytes(item.as_bytes())
                    .map_err(|_| PreflightRefused::Header)?;
                if !self.allow_headers.contains(&name) {
                    return Err(PreflightRefused::Header);
                }
                asked_for_headers = true;
            }
        }

        let mut out = HeaderMap::new();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods_value);
        if asked_for_headers {
            if let Some(v) = &self.allow_headers_value {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
        }
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age_value.clone());
        vary_on(&mut out, &PREFLIGHT_VARY);
        Ok(out)
    }
}

fn unknown_fields(value: &Value) -> Result<(), Vec<CorsError>> {
    const FIELDS: [&str; 6] = [
        "allow_origins",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "allow_credentials",
        "max_age_s",
    ];
    let Some(obj) = value.as_object() else {
        return Ok(());
    };
    let unknown: Vec<CorsError> = obj
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()))
        .map(|k| {
            let escaped = k.replace('~', "~0").replace('/', "~1");
            error(format!("/{escaped}"), CorsErrorKind::UnknownField)
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown)
    }
}

// ===== per route =====

/// A route's CORS as configured.
#[derive(Debug, Clone, Default)]
pub enum CorsSetting {
    /// No `cors` field: the top-level policy, if any.
    #[default]
    Inherit,
    /// `"cors": "none"`: no CORS on this route.
    Off,
    /// The route's own policy, replacing the top-level one whole.
    Own(Box<Cors>),
}

impl CorsSetting {
    /// Compile a raw route setting (`None`: the field is absent).
    pub fn compile(raw: Option<RawCorsSetting>) -> Result<CorsSetting, Vec<CorsError>> {
        match raw {
            None => Ok(CorsSetting::Inherit),
            Some(RawCorsSetting::None) => Ok(CorsSetting::Off),
            Some(RawCorsSetting::Policy(raw)) => {
                Cors::compile(raw).map(|c| CorsSetting::Own(Box::new(c)))
            }
        }
    }

    /// Read and compile a route's `cors` field (`None`: the field is absent).
    pub fn from_json(value: Option<&Value>) -> Result<CorsSetting, Vec<CorsError>> {
        let Some(value) = value else {
            return Ok(CorsSetting::Inherit);
        };
        unknown_fields(value)?;
        let raw = RawCorsSetting::deserialize(value)
            .map_err(|e| vec![error("", CorsErrorKind::Shape(e.to_string()))])?;
        CorsSetting::compile(Some(raw))
    }

    /// The policy that applies to the route: its own, none, or the top-level one.
    pub fn effective<'a>(&'a self, top_level: Option<&'a Cors>) -> Option<&'a Cors> {
        match self {
            CorsSetting::Inherit => top_level,
            CorsSetting::Off => None,
            CorsSetting::Own(cors) => Some(cors),
        }
    }
}

// ===== request-path functions =====

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. An `OPTIONS` without either is an ordinary request.
pub fn is_preflight(method: &Method, request: &HeaderMap) -> bool {
    *method == Method::OPTIONS
        && request.contains_key(ORIGIN)
        && request.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about, by which it is routed: `None` when the header is absent,
/// repeated or not a method token (such a preflight is refused with
/// [`PreflightRefused::Method`], under the top-level policy since no route is known).
pub fn requested_method(request: &HeaderMap) -> Option<Method> {
    let mut all = request.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    Method::from_bytes(value.as_bytes()).ok()
}

/// Add `names` to `Vary`, keeping the values already there and adding none twice; nothing when
/// the response varies on `*`.
fn vary_on(response: &mut HeaderMap, names: &[&str]) {
    let mut present: Vec<&str> = Vec::new();
    for value in response.get_all(VARY) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',').map(|s| s.trim_matches([' ', '\t'])) {
            if item == "*" {
                return;
            }
            if let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(item)) {
                present.push(name);
            }
        }
    }
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect();
    if let Some(value) = join(missing.into_iter()) {
        response.append(VARY, value);
    }
}

/// Remove every `Access-Control-*` header (the origin's, on a route whose CORS the gateway owns).
fn strip_access_control(response: &mut HeaderMap) {
    let names: Vec<HeaderName> = response
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        response.remove(name);
    }
}

/// What CORS does to one request's responses, worked out once when the request is decided and
/// applied to whichever response it ends with (forwarded, or the gateway's own), so the driver
/// needs neither the policy nor the request headers afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCors {
    /// A response under a CORS policy: the origin's `Access-Control-*` headers are removed,
    /// `Origin` is added to `Vary`, and these headers are set (empty when the request's origin
    /// is not allowed, or it sent none).
    Actual(HeaderMap),
    /// The `403` of a refused preflight: no `Access-Control-*` at all (so the browser fails the
    /// preflight), and the preflight's `Vary` names.
    RefusedPreflight,
}

impl ResponseCors {
    /// Put these CORS headers on `response`.
    pub fn apply(&self, response: &mut HeaderMap) {
        strip_access_control(response);
        match self {
            ResponseCors::Actual(allow) => {
                vary_on(response, &["Origin"]);
                for (name, value) in allow {
                    response.insert(name.clone(), value.clone());
                }
            }
            ResponseCors::RefusedPreflight => vary_on(response, &PREFLIGHT_VARY),
        }
    }
}

impl Cors {
    /// The CORS part of every response to a request that is not a preflight: for an allowed
    /// origin, `Access-Control-Allow-Origin`, `-Allow-Credentials` and `-Expose-Headers`.
    pub fn for_actual(&self, request: &HeaderMap) -> ResponseCors {
        let mut allow = HeaderMap::new();
        if let Some(allow_origin) = self.allow_origin_value(request) {
            allow.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
            if self.credentials {
                allow.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &self.expose_value {
                allow.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
        ResponseCors::Actual(allow)
    }
}

/// Put the CORS headers on any response other than a preflight answer: forwarded responses and
/// the gateway's own (401, 403, 404, 413, 422, 429, 502, 504, …).
///
/// `cors` is the effective policy ([`CorsSetting::effective`], or the top-level policy for
/// answers made before a route is known); `None` leaves the headers untouched, so an origin
/// behind a route without CORS does its own. See [`ResponseCors::Actual`].
pub fn apply_to_response(cors: Option<&Cors>, request: &HeaderMap, response: &mut HeaderMap) {
    if let Some(cors) = cors {
        cors.for_actual(request).apply(response);
    }
}

/// The CORS headers of a refused preflight's `403` ([`ResponseCors::RefusedPreflight`]).
pub fn apply_to_refused_preflight(response: &mut HeaderMap) {
    ResponseCors::RefusedPreflight.apply(response);
}

impl From<PreflightRefused> for Reject {
    fn from(why: PreflightRefused) -> Reject {
        let reason = match why {
            PreflightRefused::Origin => CorsRefusedReason::CorsOrigin,
            PreflightRefused::Method => CorsRefusedReason::CorsMethod,
            PreflightRefused::Header => CorsRefusedReason::CorsHeader,
        };
        Reject::new(reason, why.reason())
    }
}

// ===== the phase =====

/// How the CORS phase ends for a preflight.
#[derive(Debug)]
pub(crate) enum Preflight<'p> {
    /// Answer `204` with these headers: `route`, the one the actual request would take, has
    /// CORS and allows it. Nothing is forwarded, no credential is asked for, no quota is spent.
    Allowed {
        headers: HeaderMap,
        route: &'p Route,
    },
    /// Not a preflight the gateway answers (the route it belongs to has no CORS, or there is no
    /// such route and no top-level `cors`): the `OPTIONS` request is routed like any other.
    NotOurs,
}

/// The CORS phase for a preflight (see [`is_preflight`]): it belongs to the route that the
/// actual request, with the requested method, would take. A refusal is a `403 cors-refused`,
/// and sets `cors` to the refused preflight's headers.
pub(crate) fn preflight<'p>(
    policy: &'p Policy,
    path: &NormalPath,
    request: &HeaderMap,
    cors: &mut Option<ResponseCors>,
) -> Result<Preflight<'p>, Reject> {
    let mut refuse = |why: PreflightRefused| {
        *cors = Some(ResponseCors::RefusedPreflight);
        Err(Reject::from(why))
    };
    // With no route for the requested method (or no method to route by), the request it asks
    // about would be refused; the top-level policy, if any, refuses the preflight.
    let Some(routed) = requested_method(request).and_then(|m| route::select(policy, path, &m).ok())
    else {
        return match policy.cors {
            Some(_) => refuse(PreflightRefused::Method),
            None => Ok(Preflight::NotOurs),
        };
    };
    let Some(route_cors) = routed.route.cors.effective(policy.cors.as_ref()) else {
        return Ok(Preflight::NotOurs);
    };
    match route_cors.preflight(&routed.route.methods, request) {
        Ok(headers) => Ok(Preflight::Allowed {
            headers,
            route: routed.route,
        }),
        Err(why) => refuse(why),
    }
}
