//! Authentication: who is calling, according to the route's providers.
//!
//! Providers are tried in the order the route lists them, each only when its credential is
//! present (a bearer token for JWT providers, the header for API-key providers). The first that
//! accepts the credential names the consumer. If none does, the request gets a 401 that says why
//! the first presented credential failed, with one challenge per scheme the route accepts.

use std::sync::Arc;

use http::{header, HeaderMap};
use serde_json::Value;

use crate::config::{Policy, ProviderKind, Route, RouteAuth};
use crate::fetch::Fetch;
use crate::jwks::{KeyEvent, KeyRing};
use crate::jwt::{Jwk, JwtSettings, KeySource, VerifiedClaims};
use crate::problem::{KeysUnavailableReason, Reject, UnauthenticatedReason};
use crate::signature::Verify;
use crate::time::UnixTime;
use crate::token_cache::TokenCache;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// JWT `sub` or the API key's consumer.
    pub consumer: String,
    /// The provider that authenticated it.
    pub provider: String,
    /// Granted scopes (`scope` and `scp` claims, or the key's scopes).
    pub scopes: Vec<String>,
    /// All verified claims, for JWTs.
    pub claims: Option<VerifiedClaims>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn authenticate<F: Fetch + ?Sized>(
    policy: &Policy,
    ring: &KeyRing,
    cache: &TokenCache,
    verifier: &dyn Verify,
    route: &Route,
    headers: &HeaderMap,
    now: UnixTime,
    fetch: &F,
    key_events: &mut Vec<(String, KeyEvent)>,
) -> Result<Option<Arc<Principal>>, Reject> {
    let RouteAuth::Required { providers, .. } = &route.auth else {
        return Ok(None);
    };
    let bearer = bearer_token(headers);
    let mut failure: Option<(UnauthenticatedReason, &'static str)> = None;
    let mut presented = false;
    let mut keys_unavailable = false;
    for &index in providers {
        let provider = &policy.providers[index];
        match &provider.kind {
            ProviderKind::Jwt(jwt) => {
                let token = match &bearer {
                    Bearer::Absent => continue,
                    Bearer::Malformed => {
                        presented = true;
                        failure.get_or_insert((
                            UnauthenticatedReason::AuthorizationMalformed,
                            "The Authorization header is not a single 'Bearer <token>'.",
                        ));
                        continue;
                    }
                    Bearer::Token(t) => *t,
                };
                presented = true;
                // The generation the cache must match: the provider's current usable key set.
                let current = match jwt.source() {
                    KeySource::Remote(cfg) => ring.usable_generation(index, cfg, now),
                    KeySource::Inline(_) | KeySource::None => Some(0),
                };
                let lookup = cache.enabled().then(|| TokenCache::lookup(index, token));
                if let (Some(at), Some(generation)) = (&lookup, current) {
                    if let Some(principal) = cache.get(at, generation, now) {
                        return Ok(Some(principal));
                    }
                }
                let parsed = match jwt.parse(token) {
                    Ok(p) => p,
                    Err(e) => {
                        failure.get_or_insert((e.reason(), e.detail()));
                        continue;
                    }
                };
                let fetched;
                let mut generation = current;
                let keys: &[Jwk] = match jwt.source() {
                    KeySource::Inline(keys) => keys,
                    KeySource::Remote(cfg) if !parsed.algorithm().is_hmac() => {
                        let mut events = Vec::new();
                        let result = ring
                            .keys_for(index, cfg, parsed.key_id(), now, fetch, &mut events)
                            .await;
                        key_events.extend(events.into_iter().map(|e| (provider.name.clone(), e)));
                        match result {
                            Ok((keys, g)) => {
                                generation = Some(g);
                                fetched = keys;
                                &fetched
                            }
                            Err(_) => {
                                keys_unavailable = true;
                                continue;
                            }
                        }
                    }
                    KeySource::Remote(_) | KeySource::None => &[],
                };
                match jwt.verify_parsed(&parsed, keys, now, verifier).await {
                    Ok(claims) => {
                        let valid_until = claims.get("exp").and_then(Value::as_u64).map(|exp| {
                            UnixTime::from_secs(exp.saturating_add(jwt.settings().leeway_s))
                        });
                        let principal = Arc::new(principal_from_claims(
                            &provider.name,
                            jwt.settings(),
                            claims,
                        ));
                        if let (Some(at), Some(generation), Some(until)) =
                            (&lookup, generation, valid_until)
                        {
                            cache.insert(at, generation, until, Arc::clone(&principal));
                        }
                        return Ok(Some(principal));
                    }
                    Err(e) => {
                        failure.get_or_insert((e.reason(), e.detail()));
                    }
                }
            }
            ProviderKind::ApiKey(keys) => {
                let mut values = headers.get_all(&keys.header).iter();
                let value = match (values.next(), values.next()) {
                    (None, _) => continue,
                    (Some(v), None) => v,
                    (Some(_), Some(_)) => {
                        presented = true;
                        failure.get_or_insert((
                            UnauthenticatedReason::ApiKeyRepeated,
                            "The API key header was sent more than once.",
                        ));
                        continue;
                    }
                };
                presented = true;
                match keys.verify(value.as_bytes()) {
                    Some(key) => {
                        return Ok(Some(Arc::new(Principal {
                            consumer: key.consumer.clone(),
                            provider: provider.name.clone(),
                            scopes: key.scopes.clone(),
                            claims: None,
                        })))
                    }
                    None => {
                        failure.get_or_insert((
                            UnauthenticatedReason::ApiKeyInvalid,
                            "The API key is not valid.",
                        ));
                    }
                }
            }
        }
    }
    if keys_unavailable {
        // A token for a provider whose keys cannot be had: the gateway cannot decide, so it
        // neither admits nor calls the token invalid.
        return Err(Reject::new(
            KeysUnavailableReason::NoKeys,
            "The identity provider's signing keys are unavailable; try again later.",
        ));
    }
    let (reason, detail) = match (presented, failure) {
        (true, Some(f)) => f,
        _ => (
            UnauthenticatedReason::MissingCredentials,
            "This route requires credentials.",
        ),
    };
    Err(Reject::unauthenticated(
        reason,
        challenges(policy, providers, presented, reason),
        detail,
    ))
}

enum Bearer<'h> {
    Absent,
    Malformed,
    Token(&'h str),
}

/// The bearer token from `Authorization`. More than one `Authorization` header, or one that is
/// not `Bearer <token>`, is malformed rather than ignored.
fn bearer_token(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Bearer::Absent,
        (Some(v), None) => v,
        _ => return Bearer::Malformed,
    };
    let Ok(text) = value.to_str() else {
        return Bearer::Malformed;
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return Bearer::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) is not a bearer credential: treat the token as absent so an
        // API-key provider on the same route can still apply.
        return Bearer::Absent;
    }
    let token = token.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}

fn principal_from_claims(
    provider: &str,
    settings: &JwtSettings,
    claims: VerifiedClaims,
) -> Principal {
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |v: Option<&Value>| match v {
        Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
        Some(Value::Array(items)) => {
            scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
        }
        _ => {}
    };
    match &settings.scopes_claim {
        Some(name) => add(claims.get(name)),
        None => {
            add(claims.get("scope"));
            add(claims.get("scp"));
        }
    }
    let consumer = claims
        .get(&settings.consumer_claim)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Principal {
        consumer,
        provider: provider.to_owned(),
        scopes,
        claims: Some(claims),
    }
}

/// RFC 6750 / RFC 9110 challenges: one per scheme the route accepts.
fn challenges(
    policy: &Policy,
    providers: &[usize],
    presented: bool,
    reason: UnauthenticatedReason,
) -> Vec<String> {
    // RFC 6750 §3.1: `invalid_token` only when a bearer token was presented and refused.
    use UnauthenticatedReason as R;
    let invalid_token = presented
        && match reason {
            R::AuthorizationMalformed
            | R::TokenMalformed
            | R::TokenAlg
            | R::TokenKid
            | R::TokenNoKey
            | R::TokenSignature
            | R::TokenClaims
            | R::TokenNoExp
            | R::TokenExpired
            | R::TokenNbf
            | R::TokenIssuer
            | R::TokenAudience
            | R::TokenNoSub => true,
            R::MissingCredentials | R::ApiKeyRepeated | R::ApiKeyInvalid => false,
        };
    let mut out = Vec::new();
    let mut bearer_done = false;
    for &index in providers {
        match &policy.providers[index].kind {
            ProviderKind::Jwt(_) if !bearer_done => {
                bearer_done = true;
                out.push(if invalid_token {
                    "Bearer realm=\"portcullis\", error=\"invalid_token\"".to_owned()
                } else {
                    "Bearer realm=\"portcullis\"".to_owned()
                });
            }
            ProviderKind::Jwt(_) => {}
            ProviderKind::ApiKey(k) => {
                let c = format!(
                    "ApiKey realm=\"portcullis\", header=\"{}\"",
                    k.header.as_str()
                );
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}
