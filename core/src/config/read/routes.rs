//! `routes`: what the gateway accepts, who may call it, what a request must look like, and
//! which origin and quotas serve it.
//!
//! A route that loads names only origins, providers and quotas that exist, states its
//! authentication explicitly (`"auth": "none"` is the only way to be public), and has request
//! rules that can be enforced as written: media types without parameters, and schemas that
//! compile (at load, or on first use when the policy is compiled per request).

use std::collections::HashSet;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{
    ConfigErrorKind, Provider, ProviderKind, Quota, QuotaBy, RequestRules, Route, RouteAuth,
    SchemaCompilation,
};
use super::names::{resolve, Names};
use super::reader::{at_index, ptr, Field, Json, Reader, Strings, Unknown};
use crate::route::Template;
use crate::schema::RouteSchema;

/// The `routes` list as the document has it.
pub(super) type Section = Json<Vec<Json<RawRoute>>>;

/// One entry of `routes`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRoute {
    id: Field<Json<String>>,
    methods: Field<Strings>,
    path: Field<Json<String>>,
    origin: Field<Json<String>>,
    /// `"none"` or an object naming providers ([`RawRouteAuth`]).
    auth: Field<Value>,
    request: Field<Json<RawRequest>>,
    /// A quota name or a list of them.
    quota: Field<Value>,
    /// `"none"` or a CORS policy object that replaces the top level's.
    cors: Field<Value>,
    /// An allow list that replaces the top level's.
    forward_headers: Field<super::forward_headers::Section>,
    /// IP rules checked after the top level's.
    ip: Field<super::ip::Section>,
    /// A lockout that replaces the top level's.
    lockout: Field<super::lockout::Section>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A route's `auth` when it is not `"none"`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRouteAuth {
    providers: Field<Strings>,
    scopes: Field<Strings>,
    claims: Field<Json<Map<String, Value>>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A route's `request` rules.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRequest {
    max_body_bytes: Field<Json<u64>>,
    content_types: Field<Strings>,
    /// A JSON Schema, compiled by [`RouteSchema`].
    body_schema: Field<Value>,
    /// A JSON Schema, compiled by [`RouteSchema`].
    query_schema: Field<Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Every route that loaded, in match order. The list must be non-empty and ids unique.
pub(super) fn read(
    r: &mut Reader,
    section: Section,
    at: &str,
    names: &Names,
    providers: &[Provider],
    quotas: &[Quota],
    api_keys: &[http::HeaderName],
) -> Vec<Route> {
    let mut routes = Vec::new();
    let Some(items) = r.array(section, at) else {
        return routes;
    };
    if items.is_empty() {
        r.invalid(at, "must list at least one route");
    }
    let mut ids = HashSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let here = at_index(at, i);
        if let Some(route) = read_route(r, item, &here, names, providers, quotas, api_keys) {
            if !ids.insert(route.id.clone()) {
                r.err(ptr(&here, "id"), ConfigErrorKind::Duplicate);
            }
            routes.push(route);
        }
    }
    routes
}

fn read_route(
    r: &mut Reader,
    raw: Json<RawRoute>,
    at: &str,
    names: &Names,
    providers: &[Provider],
    quotas: &[Quota],
    api_keys: &[http::HeaderName],
) -> Option<Route> {
    let RawRoute {
        id: Field(id),
        methods: Field(methods),
        path: Field(path),
        origin: Field(origin),
        auth: Field(auth),
        request: Field(request),
        quota: Field(quota),
        cors: Field(cors),
        forward_headers: Field(forward_headers),
        ip: Field(ip),
        lockout: Field(lockout),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let before = r.mark();
    let id = r
        .required(id, at, "id")
        .and_then(|i| r.nonempty_string(i, &ptr(at, "id")));
    if let Some(id) = &id {
        if id.len() > 128 || id.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            r.invalid(
                ptr(at, "id"),
                "route ids are 1 to 128 visible ASCII characters",
            );
        }
    }
    let methods = read_methods(r, methods, at);
    let template = r
        .required(path, at, "path")
        .and_then(|p| r.string(p, &ptr(at, "path")))
        .and_then(|p| {
            Template::parse(&p)
                .map_err(|why| r.invalid(ptr(at, "path"), why))
                .ok()
        });
    let origin = r
        .required(origin, at, "origin")
        .and_then(|o| r.string(o, &ptr(at, "origin")))
        .and_then(|o| match resolve(&names.origins, &o) {
            Ok(found) => found,
            Err(()) => {
                r.err(
                    ptr(at, "origin"),
                    ConfigErrorKind::UnknownReference {
                        what: "origin",
                        name: o,
                    },
                );
                None
            }
        });
    let auth = r
        .required(auth, at, "auth")
        .and_then(|a| read_route_auth(r, a, &ptr(at, "auth"), names, providers));
    let request = match request {
        Some(req) => read_request_rules(r, req, &ptr(at, "request")),
        None => Some(RequestRules::default()),
    };
    let (route_quotas, quotas_ok) = match quota {
        Some(q) => read_route_quotas(
            r,
            q,
            &ptr(at, "quota"),
            names,
            (quotas, providers),
            auth.as_ref(),
        ),
        None => (Vec::new(), true),
    };
    let cors = crate::cors::CorsSetting::from_json(cors.as_ref())
        .map_err(|errors| r.cors_errors(&ptr(at, "cors"), errors))
        .ok();
    let forward_headers = forward_headers
        .map(|f| super::forward_headers::read(r, f, &ptr(at, "forward_headers"), api_keys));
    let ip = ip.map(|v| super::ip::read(r, v, &ptr(at, "ip")));
    let lockout_at = ptr(at, "lockout");
    let lockout = lockout.map(|v| {
        let scope = id.as_deref().unwrap_or_default();
        super::lockout::read(r, v, &lockout_at, scope)
    });
    if lockout.is_some() && matches!(auth, Some(RouteAuth::Public)) {
        r.invalid(
            lockout_at,
            "a public route verifies no credential, so no request of it is ever a 401 to count",
        );
    }
    if !r.clean_since(before) || !quotas_ok {
        return None;
    }
    Some(Route {
        id: id?,
        methods,
        template: template?,
        origin: origin?,
        auth: auth?,
        request: request?,
        quotas: route_quotas,
        cors: cors?,
        forward_headers: match forward_headers {
            Some(list) => Some(list?),
            None => None,
        },
        ip: match ip {
            Some(rules) => Some(rules?),
            None => None,
        },
        lockout: match lockout {
            Some(lockout) => Some(lockout?),
            None => None,
        },
    })
}

/// Upper-case method names, each listed once.
fn read_methods(r: &mut Reader, methods: Option<Strings>, at: &str) -> Vec<Method> {
    let list_at = ptr(at, "methods");
    let list = r
        .required(methods, at, "methods")
        .and_then(|m| r.strings(m, &list_at, true));
    let mut methods = Vec::new();
    for (i, m) in list.iter().flatten().enumerate() {
        let here = at_index(&list_at, i);
        match Method::from_bytes(m.as_bytes()) {
            Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => {
                if methods.contains(&method) {
                    r.err(here, ConfigErrorKind::Duplicate);
                } else {
                    methods.push(method);
                }
            }
            _ => r.invalid(
                here,
                "methods are upper-case HTTP method names such as \"GET\"",
            ),
        }
    }
    methods
}

/// The route's quotas; the flag is false when one names a quota that is declared but invalid.
/// A quota the client can dodge on this route is a warning (see [`dodgeable`]).
fn read_route_quotas(
    r: &mut Reader,
    quota: Value,
    at: &str,
    names: &Names,
    (quotas, providers): (&[Quota], &[Provider]),
    auth: Option<&RouteAuth>,
) -> (Vec<usize>, bool) {
    let list: Vec<(String, Value)> = match quota {
        Value::String(_) => vec![(at.to_owned(), quota)],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (at_index(at, i), v))
            .collect(),
        _ => {
            r.err(
                at,
                ConfigErrorKind::WrongType {
                    expected: "a quota name or a list of them",
                },
            );
            Vec::new()
        }
    };
    let mut found = Vec::new();
    let mut ok = true;
    for (here, v) in list {
        let Some(name) = r.string(Json::from_value(v), &here) else {
            continue;
        };
        match resolve(&names.quotas, &name) {
            Ok(None) => ok = false,
            Ok(Some(i)) if found.contains(&i) => r.err(here, ConfigErrorKind::Duplicate),
            Ok(Some(i)) => {
                if let Some(message) = dodgeable(&quotas[i], auth, providers) {
                    r.warn(here.clone(), message);
                }
                if quotas[i].by == QuotaBy::Consumer && matches!(auth, Some(RouteAuth::Public)) {
                    r.invalid(
                        here,
                        "a quota \"by\": \"consumer\" needs an authenticated route; this one is public",
                    );
                }
                found.push(i);
            }
            Err(()) => r.err(
                here,
                ConfigErrorKind::UnknownReference {
                    what: "quota",
                    name,
                },
            ),
        }
    }
    (found, ok)
}

/// Why quota `quota` does not hold on a route with `auth`: it counts by a header the client
/// chooses, so every new value is a fresh bucket. A header is not the client's choice only when
/// one of the route's API-key providers reads it: then every value that gets through is one of
/// the keys the operator issued. (A bearer token is not such a header: each token a client
/// obtains is a new value, so `Authorization` buckets are per token, not per caller.) The quota
/// reads the request as the client sent it, so the gateway's `x-portcullis-*` headers are the
/// client's copies there too.
fn dodgeable(quota: &Quota, auth: Option<&RouteAuth>, providers: &[Provider]) -> Option<String> {
    let QuotaBy::Header(header) = &quota.by else {
        return None;
    };
    let authenticated = match auth {
        Some(RouteAuth::Required { providers: on, .. }) => on
            .iter()
            .any(|&p| matches!(&providers[p].kind, ProviderKind::ApiKey(k) if k.header == *header)),
        _ => false,
    };
    (!authenticated).then(|| {
        format!(
            "quota \"{}\" counts by header \"{}\", which the client chooses here: each new value \
             gets a fresh budget. Count by \"consumer\" (or by an API-key header this route's \
             providers check).",
            quota.name,
            header.as_str()
        )
    })
}

fn read_route_auth(
    r: &mut Reader,
    v: Value,
    at: &str,
    names: &Names,
    providers: &[Provider],
) -> Option<RouteAuth> {
    if let Value::String(s) = &v {
        if s == "none" {
            return Some(RouteAuth::Public);
        }
        r.invalid(
            at,
            "must be \"none\" (a public route) or an object naming providers",
        );
        return None;
    }
    let RawRouteAuth {
        providers: Field(listed),
        scopes: Field(scopes),
        claims: Field(claims),
        unknown,
    } = r.object(Json::from_value(v), at)?;
    r.unknown(unknown, at);
    let before = r.mark();
    let mut invalid_reference = false;
    let mut indices = Vec::new();
    let list_at = ptr(at, "providers");
    if let Some(list) = r
        .required(listed, at, "providers")
        .and_then(|p| r.strings(p, &list_at, true))
    {
        for (i, name) in list.into_iter().enumerate() {
            let here = at_index(&list_at, i);
            match resolve(&names.providers, &name) {
                Ok(None) => invalid_reference = true,
                Ok(Some(idx)) if indices.contains(&idx) => r.err(here, ConfigErrorKind::Duplicate),
                Ok(Some(idx)) => indices.push(idx),
                Err(()) => r.err(
                    here,
                    ConfigErrorKind::UnknownReference {
                        what: "auth provider",
                        name,
                    },
                ),
            }
        }
    }
    let scopes = match scopes {
        Some(s) => r.strings(s, &ptr(at, "scopes"), false).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut required_claims = Vec::new();
    let claims_at = ptr(at, "claims");
    match claims {
        Some(Json::Ok(map)) => {
            for (name, value) in map {
                if matches!(value, Value::Object(_) | Value::Array(_) | Value::Null) {
                    r.invalid(
                        ptr(&claims_at, &name),
                        "a required claim value is a string, number or boolean",
                    );
                } else {
                    required_claims.push((name, value));
                }
            }
            if !required_claims.is_empty()
                && indices
                    .iter()
                    .all(|&i| !matches!(providers[i].kind, ProviderKind::Jwt(_)))
            {
                r.invalid(
                    &claims_at,
                    "claims can only be checked on tokens; no JWT provider is listed",
                );
            }
        }
        Some(Json::Wrong { .. }) => r.err(
            &claims_at,
            ConfigErrorKind::WrongType {
                expected: "an object",
            },
        ),
        None => {}
    }
    (r.clean_since(before) && !invalid_reference).then_some(RouteAuth::Required {
        providers: indices,
        scopes,
        claims: required_claims,
    })
}

fn read_request_rules(r: &mut Reader, raw: Json<RawRequest>, at: &str) -> Option<RequestRules> {
    let RawRequest {
        max_body_bytes: Field(max_body_bytes),
        content_types: Field(content_types),
        body_schema: Field(body_schema),
        query_schema: Field(query_schema),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let before = r.mark();
    let max_body_bytes =
        max_body_bytes.and_then(|m| r.integer(m, &ptr(at, "max_body_bytes"), 0, 1 << 30));
    let types_at = ptr(at, "content_types");
    let mut content_types = match content_types {
        Some(c) => r.strings(c, &types_at, true).unwrap_or_default(),
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
                at_index(&types_at, i),
                "a media type such as \"application/json\", without parameters",
            );
        }
        *ct = lower;
    }
    let body_schema = body_schema.and_then(|s| compile_schema(r, s, &ptr(at, "body_schema")));
    let query_lists = query_schema
        .as_ref()
        .map(crate::query::list_parameters)
        .unwrap_or_default();
    let query_schema = query_schema.and_then(|s| compile_schema(r, s, &ptr(at, "query_schema")));
    if body_schema.is_some() && content_types.is_empty() {
        content_types.push("application/json".to_owned());
    }
    r.clean_since(before).then_some(RequestRules {
        max_body_bytes,
        content_types,
        body_schema,
        query_schema,
        query_lists,
    })
}

fn compile_schema(r: &mut Reader, v: Value, at: &str) -> Option<RouteSchema> {
    match r.schemas {
        SchemaCompilation::OnFirstUse => Some(RouteSchema::deferred(v, at)),
        SchemaCompilation::AtLoad => match RouteSchema::compile_now(&v, at) {
            Ok(s) => Some(s),
            Err(e) => {
                r.errors.push(e);
                None
            }
        },
    }
}
