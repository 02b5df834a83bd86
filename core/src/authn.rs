//! Authentication: who is calling, according to the route's providers.
//!
//! A *credential* is a header one of the route's providers reads: `Authorization` for JWT
//! providers, the configured header for API-key providers. It is *presented* when that header is
//! in the request at all, malformed or repeated included. Exceptions: an `Authorization` header
//! with another scheme (`Basic …`) is not a bearer credential (but one that holds a second
//! credential after it, `Basic a, Bearer b`, is a malformed one), and a header no provider of
//! this route reads is not a credential for this route.
//!
//! What is promised:
//! - every presented credential is checked against every provider of the route that reads it,
//!   in route order, until one accepts it. A token one JWT provider refuses and another accepts
//!   is valid; so is a key that any provider reading its header lists;
//! - the request is admitted only if every presented credential is valid. One presented
//!   credential that no provider accepts is a 401, whatever else the request carries, so a bad
//!   token cannot be papered over with a good key, nor the other way round;
//! - the 401 names why the first refused credential (in the order of its first reader on the
//!   route) failed, as that credential's first reader saw it, and has one challenge per scheme the
//!   route accepts, with `error="invalid_token"` when the bearer token was refused. Checking stops
//!   at that refusal: later credentials are not looked at, so a refused request costs no more;
//! - a token no JWT provider accepts, while one of them could not decide because its keys are
//!   unavailable, is a 503 (`keys_unavailable`), never an admission through another credential,
//!   unless some other presented credential was refused, which is a 401 whatever the keys say;
//! - when everything presented is valid, the principal is the one named by the provider that
//!   comes first in the route's list among those that accepted a credential: the operator's
//!   order decides who the caller is, not the order of the headers;
//! - nothing presented at all is a 401 `missing_credentials`.
//!
//! The verified-token cache only replaces the verification of one token by one provider; every
//! other presented credential is still checked on a cache hit.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Policy, ProviderKind, Route, RouteAuth};
use crate::fetch::Fetch;
use crate::jwks::{KeyEvent, KeyRing};
use crate::jwt::{Jwk, JwtProvider, JwtSettings, KeySource, TokenError, VerifiedClaims};
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

/// The header JWT providers read. A static, so it can be borrowed like an API-key header.
static BEARER_HEADER: HeaderName = header::AUTHORIZATION;

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
    let mut check = Check {
        policy,
        ring,
        cache,
        verifier,
        headers,
        now,
        fetch,
        key_events,
    };
    // The accepting provider's position in `providers`, and whom it names.
    let mut admitted: Option<(usize, Arc<Principal>)> = None;
    let mut undecided = false;
    for (first, &index) in providers.iter().enumerate() {
        let name = reads(policy, index);
        let seen = providers[..first]
            .iter()
            .any(|&earlier| reads(policy, earlier) == name);
        if seen {
            continue;
        }
        match check.credential(providers, first, name).await {
            Verdict::Absent => {}
            Verdict::Accepted {
                position,
                principal,
            } => {
                if admitted.as_ref().is_none_or(|(best, _)| position < *best) {
                    admitted = Some((position, principal));
                }
            }
            Verdict::Undecided => undecided = true,
            Verdict::Refused(Refusal {
                reason,
                detail,
                bearer,
            }) => {
                return Err(Reject::unauthenticated(
                    reason,
                    challenges(policy, providers, bearer),
                    detail,
                ));
            }
        }
    }
    if undecided {
        // A token for a provider whose keys cannot be had, that no other provider accepts: the
        // gateway cannot decide, so it neither admits nor calls the token invalid.
        return Err(Reject::new(
            KeysUnavailableReason::NoKeys,
            "The identity provider's signing keys are unavailable; try again later.",
        ));
    }
    match admitted {
        Some((_, principal)) => Ok(Some(principal)),
        None => Err(Reject::unauthenticated(
            UnauthenticatedReason::MissingCredentials,
            challenges(policy, providers, false),
            "This route requires credentials.",
        )),
    }
}

/// The header provider `index` reads its credential from.
fn reads(policy: &Policy, index: usize) -> &HeaderName {
    match &policy.providers[index].kind {
        ProviderKind::Jwt(_) => &BEARER_HEADER,
        ProviderKind::ApiKey(keys) => &keys.header,
    }
}

/// What one credential came to, over every provider of the route that reads it.
enum Verdict {
    /// The header is not there, or holds another scheme than its only readers (JWT) take.
    Absent,
    /// The provider at `position` in the route's list, the first to accept it, names `principal`.
    Accepted {
        position: usize,
        principal: Arc<Principal>,
    },
    /// No reader accepted it and one JWT reader could not decide: its keys are unavailable.
    Undecided,
    /// Presented, and every reader refused it.
    Refused(Refusal),
}

/// Why a presented credential is refused, as its first refusing reader saw it.
struct Refusal {
    reason: UnauthenticatedReason,
    detail: &'static str,
    /// A JWT provider refused it: the bearer challenge says `invalid_token`.
    bearer: bool,
}

/// What one JWT provider made of one token.
enum TokenVerdict {
    Accepted(Arc<Principal>),
    Refused(TokenError),
    KeysUnavailable,
}

/// Everything checking a credential needs, borrowed for one request.
struct Check<'a, F: ?Sized> {
    policy: &'a Policy,
    ring: &'a KeyRing,
    cache: &'a TokenCache,
    verifier: &'a dyn Verify,
    headers: &'a HeaderMap,
    now: UnixTime,
    fetch: &'a F,
    key_events: &'a mut Vec<(String, KeyEvent)>,
}

impl<F: Fetch + ?Sized> Check<'_, F> {
    /// The credential in header `name`, checked by the providers from `providers[first..]` that
    /// read it, in route order, until one accepts.
    async fn credential(
        &mut self,
        providers: &[usize],
        first: usize,
        name: &HeaderName,
    ) -> Verdict {
        let policy = self.policy;
        let readers = providers
            .iter()
            .enumerate()
            .skip(first)
            .filter(|&(_, &index)| reads(policy, index) == name);
        let mut values = self.headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Verdict::Absent,
            (Some(v), None) => v,
            (Some(_), Some(_)) => {
                // Two values are ambiguous, whichever one a provider would have read.
                let bearer = readers.clone().any(|(_, &index)| {
                    matches!(policy.providers[index].kind, ProviderKind::Jwt(_))
                });
                return Verdict::Refused(if bearer {
                    MALFORMED_AUTHORIZATION
                } else {
                    Refusal {
                        reason: UnauthenticatedReason::ApiKeyRepeated,
                        detail: "The API key header was sent more than once.",
                        bearer: false,
                    }
                });
            }
        };
        let mut refusal: Option<Refusal> = None;
        let mut undecided = false;
        for (position, &index) in readers {
            let provider = &policy.providers[index];
            match &provider.kind {
                ProviderKind::Jwt(jwt) => {
                    let token = match bearer(value) {
                        Bearer::OtherScheme => continue,
                        Bearer::Malformed => {
                            refusal.get_or_insert(MALFORMED_AUTHORIZATION);
                            continue;
                        }
                        Bearer::Token(token) => token,
                    };
                    match self.token(index, &provider.name, jwt, token).await {
                        TokenVerdict::Accepted(principal) => {
                            return Verdict::Accepted {
                                position,
                                principal,
                            }
                        }
                        TokenVerdict::Refused(e) => {
                            refusal.get_or_insert(Refusal {
                                reason: e.reason(),
                                detail: e.detail(),
                                bearer: true,
                            });
                        }
                        TokenVerdict::KeysUnavailable => undecided = true,
                    }
                }
                ProviderKind::ApiKey(keys) => match keys.verify(value.as_bytes()) {
                    Some(key) => {
                        return Verdict::Accepted {
                            position,
                            principal: Arc::new(Principal {
                                consumer: key.consumer.clone(),
                                provider: provider.name.clone(),
                                scopes: key.scopes.clone(),
                                claims: None,
                            }),
                        }
                    }
                    None => {
                        refusal.get_or_insert(Refusal {
                            reason: UnauthenticatedReason::ApiKeyInvalid,
                            detail: "The API key is not valid.",
                            bearer: false,
                        });
                    }
                },
            }
        }
        match (undecided, refusal) {
            (true, _) => Verdict::Undecided,
            (false, Some(refusal)) => Verdict::Refused(refusal),
            (false, None) => Verdict::Absent,
        }
    }

    /// One JWT provider's verdict on `token`: from the cache when it verified this very token
    /// against its current key set, else by verifying it (and caching a success).
    async fn token(
        &mut self,
        index: usize,
        name: &str,
        jwt: &JwtProvider,
        token: &str,
    ) -> TokenVerdict {
        let now = self.now;
        // The generation the cache must match: the provider's current usable key set.
        let current = match jwt.source() {
            KeySource::Remote(cfg) => self.ring.usable_generation(index, cfg, now),
            KeySource::Inline(_) | KeySource::None => Some(0),
        };
        let lookup = self
            .cache
            .enabled()
            .then(|| TokenCache::lookup(index, token));
        if let (Some(at), Some(generation)) = (&lookup, current) {
            if let Some(principal) = self.cache.get(at, generation, now) {
                return TokenVerdict::Accepted(principal);
            }
        }
        let parsed = match jwt.parse(token) {
            Ok(p) => p,
            Err(e) => return TokenVerdict::Refused(e),
        };
        let fetched;
        let mut generation = current;
        let keys: &[Jwk] = match jwt.source() {
            KeySource::Inline(keys) => keys,
            KeySource::Remote(cfg) if !parsed.algorithm().is_hmac() => {
                let mut events = Vec::new();
                let result = self
                    .ring
                    .keys_for(index, cfg, parsed.key_id(), now, self.fetch, &mut events)
                    .await;
                self.key_events
                    .extend(events.into_iter().map(|e| (name.to_owned(), e)));
                match result {
                    Ok((keys, g)) => {
                        generation = Some(g);
                        fetched = keys;
                        &fetched
                    }
                    Err(_) => return TokenVerdict::KeysUnavailable,
                }
            }
            KeySource::Remote(_) | KeySource::None => &[],
        };
        match jwt.verify_parsed(&parsed, keys, now, self.verifier).await {
            Ok(claims) => {
                let valid_until = claims
                    .get("exp")
                    .and_then(Value::as_u64)
                    .map(|exp| UnixTime::from_secs(exp.saturating_add(jwt.settings().leeway_s)));
                let principal = Arc::new(principal_from_claims(name, jwt.settings(), claims));
                if let (Some(at), Some(generation), Some(until)) =
                    (&lookup, generation, valid_until)
                {
                    self.cache
                        .insert(at, generation, until, Arc::clone(&principal));
                }
                TokenVerdict::Accepted(principal)
            }
            Err(e) => TokenVerdict::Refused(e),
        }
    }
}

const MALFORMED_AUTHORIZATION: Refusal = Refusal {
    reason: UnauthenticatedReason::AuthorizationMalformed,
    detail: "The Authorization header is not a single 'Bearer <token>'.",
    bearer: true,
};

enum Bearer<'h> {
    OtherScheme,
    Malformed,
    Token(&'h str),
}

/// The bearer token in one `Authorization` value. A value that is not `<scheme> <credentials>`,
/// a Bearer one whose token is empty or has spaces inside, or one that holds a second credential
/// (`Basic a, Bearer b`: the origin may read the one the gateway did not) is malformed rather
/// than ignored.
fn bearer(value: &HeaderValue) -> Bearer<'_> {
    let Ok(text) = value.to_str() else {
        return Bearer::Malformed;
    };
    if crate::forward::headers::several_credentials(value.as_bytes()) {
        return Bearer::Malformed;
    }
    let Some((scheme, token)) = text.split_once(' ') else {
        return Bearer::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) is not a bearer credential: absent for JWT providers, so an
        // API-key provider on the same route can still apply.
        return Bearer::OtherScheme;
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

/// RFC 6750 / RFC 9110 challenges: one per scheme the route accepts; the bearer one says
/// `invalid_token` when `token_refused`.
fn challenges(policy: &Policy, providers: &[usize], token_refused: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut bearer_done = false;
    for &index in providers {
        match &policy.providers[index].kind {
            ProviderKind::Jwt(_) if !bearer_done => {
                bearer_done = true;
                out.push(if token_refused {
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
