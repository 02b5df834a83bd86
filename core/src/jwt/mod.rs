//! JWT verification: signature, algorithm, key selection, and the registered claims.
//!
//! Rules that hold for every provider:
//! - `alg: none` is never accepted, and a token's `alg` must be one the provider lists and fit the
//!   key's type (an RSA public key is never used as an HMAC secret);
//! - `kid`, when present, selects the key; a `kid` the provider does not know is refused;
//! - `exp` is required; `exp` and `nbf` are checked with the provider's leeway; `iss` must equal
//!   the issuer; `aud` must name one of the audiences; `sub` names the consumer;
//! - the header and the claims are strict JSON: a key that occurs twice (`"sub":"alice",
//!   "sub":"admin"`) is refused, since JWT libraries disagree on which copy wins and the origin
//!   may read the token again with another one.

mod es384;
mod jwk;

use std::borrow::Cow;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::FutureExt;
use jwt_compact::alg::{Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key};
use jwt_compact::{AlgorithmExt, Claims, TimeOptions, UntrustedToken, ValidationError};
use serde_json::{Map, Value};

pub use es384::{Es384, Es384Signature};
pub use jwk::{parse_jwk, Jwk, KeyMaterial};

use crate::jwks::RemoteKeys;
use crate::problem::UnauthenticatedReason;
use crate::signature::{PureRust, Verify};
use crate::time::UnixTime;

/// Longest token accepted, in bytes. Real tokens are well under 8 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JWS algorithms a provider may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// The algorithm named `name` in a JWS header or a config. `none` is not an algorithm here.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        use Algorithm::*;
        Some(match name {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "EdDSA" => EdDSA,
            _ => return None,
        })
    }

    /// The JWS name.
    pub fn name(self) -> &'static str {
        use Algorithm::*;
        match self {
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            EdDSA => "EdDSA",
        }
    }

    /// Whether this is a shared-secret algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }
}

/// A provider's settings besides its keys.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Required `iss`.
    pub issuer: String,
    /// `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// The claim that names the consumer (`sub` by default).
    pub consumer_claim: String,
    /// The claim that lists scopes; `None` reads both `scope` and `scp`.
    pub scopes_claim: Option<String>,
}

/// A JWT identity provider with its verification keys.
#[derive(Debug)]
pub struct JwtProvider {
    settings: JwtSettings,
    source: KeySource,
    hmac: Option<HmacKeys>,
}

/// Where a provider's public keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// No public keys: HS* algorithms only.
    None,
    /// Keys listed in the policy file.
    Inline(Arc<[Jwk]>),
    /// Keys fetched from a JWKS URL or through OIDC discovery (see [`crate::jwks`]).
    Remote(RemoteKeys),
}

/// Header members beyond the registered ones that the gateway looks at.
#[derive(Debug, Clone, serde::Deserialize)]
struct HeaderExtras {
    /// RFC 7515 §4.1.11: extensions the recipient must understand. Portcullis understands none,
    /// so a token that lists any is invalid.
    crit: Option<serde_json::Value>,
}

/// A token whose header has been read but whose signature has not been checked yet.
pub struct Unverified<'t> {
    token: UntrustedToken<'t, HeaderExtras>,
    /// The JWS signing input: the token up to its last `.`.
    signing_input: &'t str,
    alg: Algorithm,
}

impl Unverified<'_> {
    /// The header's `alg`, already known to be one the provider accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The header's `kid`.
    pub fn key_id(&self) -> Option<&str> {
        self.token.header().key_id.as_deref()
    }
}

struct HmacKeys {
    hs256: Hs256Key,
    hs384: Hs384Key,
    hs512: Hs512Key,
}

impl std::fmt::Debug for HmacKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKeys(..)")
    }
}

/// Why a token was refused. Each maps to a 401 (see [`crate::authn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a compact JWS (three base64url parts, JSON header), or too long.
    Malformed,
    /// `alg` is `none`, unknown, or not listed for this provider.
    AlgorithmNotAllowed,
    /// `kid` names no key of this provider.
    UnknownKeyId,
    /// No key of this provider can verify this `alg`.
    NoKeyForAlgorithm,
    /// The signature does not verify.
    BadSignature,
    /// The claims are not a JSON object of the expected shape.
    MalformedClaims,
    /// No `exp` claim.
    MissingExpiry,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not the provider's issuer.
    WrongIssuer,
    /// `aud` names none of the provider's audiences.
    WrongAudience,
    /// No string `sub` claim: the consumer cannot be named.
    MissingSubject,
}

impl TokenError {
    /// The reason the 401 is logged with (its slug is in [`crate::problem`]'s table).
    pub fn reason(self) -> UnauthenticatedReason {
        use TokenError::*;
        use UnauthenticatedReason as R;
        match self {
            Malformed => R::TokenMalformed,
            AlgorithmNotAllowed => R::TokenAlg,
            UnknownKeyId => R::TokenKid,
            NoKeyForAlgorithm => R::TokenNoKey,
            BadSignature => R::TokenSignature,
            MalformedClaims => R::TokenClaims,
            MissingExpiry => R::TokenNoExp,
            Expired => R::TokenExpired,
            NotYetValid => R::TokenNbf,
            WrongIssuer => R::TokenIssuer,
            WrongAudience => R::TokenAudience,
            MissingSubject => R::TokenNoSub,
        }
    }

    /// Human text for the 401's detail (and RFC 6750 `error_description`).
    pub fn detail(self) -> &'static str {
        use TokenError::*;
        match self {
            Malformed => "The bearer token is not a well-formed JWT.",
            AlgorithmNotAllowed => "The token's algorithm is not accepted.",
            UnknownKeyId => "The token's key id is not known.",
            NoKeyForAlgorithm => "No key can verify the token's algorithm.",
            BadSignature => "The token's signature is invalid.",
            MalformedClaims => "The token's claims are malformed.",
            MissingExpiry => "The token has no expiry (exp).",
            Expired => "The token has expired.",
            NotYetValid => "The token is not valid yet (nbf).",
            WrongIssuer => "The token's issuer is not accepted.",
            WrongAudience => "The token's audience is not accepted.",
            MissingSubject => "The token does not name a consumer (sub).",
        }
    }
}

/// A verified token's claims (all of them; `exp`, `nbf` and `iat` included as numbers).
pub type VerifiedClaims = Map<String, Value>;

impl JwtProvider {
    /// A provider with its public key `source` and, for HS* algorithms, the shared `secret`.
    pub fn new(settings: JwtSettings, source: KeySource, secret: Option<Vec<u8>>) -> Self {
        let hmac = secret.map(|s| HmacKeys {
            hs256: Hs256Key::new(&s),
            hs384: Hs384Key::new(&s),
            hs512: Hs512Key::new(&s),
        });
        JwtProvider {
            settings,
            source,
            hmac,
        }
    }

    /// A provider with inline `keys` (a convenience for tests and benchmarks).
    pub fn with_keys(settings: JwtSettings, keys: Vec<Jwk>, secret: Option<Vec<u8>>) -> Self {
        Self::new(settings, KeySource::Inline(keys.into()), secret)
    }

    /// The provider's settings.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Where the provider's public keys come from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Read a token's header: its shape, and whether its `alg` is one this provider accepts.
    /// Nothing is fetched for a token that fails here.
    pub fn parse<'t>(&self, token: &'t str) -> Result<Unverified<'t>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let untrusted =
            UntrustedToken::<HeaderExtras>::try_from(token).map_err(|_| TokenError::Malformed)?;
        if !strict_segment(token.split('.').next().unwrap_or_default()) {
            return Err(TokenError::Malformed);
        }
        if untrusted.header().other_fields.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let alg =
            Algorithm::from_name(untrusted.algorithm()).ok_or(TokenError::AlgorithmNotAllowed)?;
        if !self.settings.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let signing_input = token
            .rfind('.')
            .map_or(token, |end| token.get(..end).unwrap_or(token));
        Ok(Unverified {
            token: untrusted,
            signing_input,
            alg,
        })
    }

    /// Verify a parsed token against `keys` (ignored for HS* tokens) at `now`: signature first
    /// (public-key signatures by `verifier`), then the registered claims.
    pub async fn verify_parsed(
        &self,
        token: &Unverified<'_>,
        keys: &[Jwk],
        now: UnixTime,
        verifier: &dyn Verify,
    ) -> Result<VerifiedClaims, TokenError> {
        let untrusted = &token.token;
        let claims = if token.alg.is_hmac() {
            let hmac = self.hmac.as_ref().ok_or(TokenError::NoKeyForAlgorithm)?;
            match token.alg {
                Algorithm::HS256 => check(Hs256.validator(&hmac.hs256).validate(untrusted)),
                Algorithm::HS384 => check(Hs384.validator(&hmac.hs384).validate(untrusted)),
                _ => check(Hs512.validator(&hmac.hs512).validate(untrusted)),
            }?
        } else {
            verify_public(keys, token, verifier).await?
        };
        // Read only now that the signature holds, like every other claim check.
        if !strict_segment(token.signing_input.split('.').nth(1).unwrap_or_default()) {
            return Err(TokenError::MalformedClaims);
        }
        self.check_claims(claims, now)
    }

    /// Verify `token` with inline keys and the pure-Rust backend, synchronously (remote key
    /// sets need [`crate::jwks::KeyRing`]).
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<VerifiedClaims, TokenError> {
        let parsed = self.parse(token)?;
        let keys: &[Jwk] = match &self.source {
            KeySource::Inline(keys) => keys,
            KeySource::None | KeySource::Remote(_) => &[],
        };
        // PureRust's checks are ready at once, so this never yields.
        self.verify_parsed(&parsed, keys, now, &PureRust)
            .now_or_never()
            .unwrap_or(Err(TokenError::BadSignature))
    }

    fn check_claims(
        &self,
        claims: Claims<VerifiedClaims>,
        now: UnixTime,
    ) -> Result<VerifiedClaims, TokenError> {
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let clock = chrono::DateTime::from_timestamp(now_secs, 0).unwrap_or_default();
        let leeway = chrono::Duration::seconds(i64::try_from(self.settings.leeway_s).unwrap_or(0));
        let options = TimeOptions::new(leeway, move || clock);
        if claims.expiration.is_none() {
            return Err(TokenError::MissingExpiry);
        }
        claims
            .validate_expiration(&options)
            .map_err(|_| TokenError::Expired)?;
        if claims.not_before.is_some() {
            claims
                .validate_maturity(&options)
                .map_err(|_| TokenError::NotYetValid)?;
        }
        let mut map = claims.custom;
        if map.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let audience_ok = match map.get("aud") {
            Some(Value::String(a)) => self.settings.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.settings.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        match map.get(&self.settings.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => {}
            _ => return Err(TokenError::MissingSubject),
        }
        if let Some(exp) = claims.expiration {
            map.insert("exp".into(), Value::from(exp.timestamp()));
        }
        if let Some(nbf) = claims.not_before {
            map.insert("nbf".into(), Value::from(nbf.timestamp()));
        }
        Ok(map)
    }
}

/// Try every key that may verify the token's `alg` (only the `kid`'s key when the token names
/// one); the claims are read only once a signature has verified.
async fn verify_public(
    keys: &[Jwk],
    token: &Unverified<'_>,
    verifier: &dyn Verify,
) -> Result<Claims<VerifiedClaims>, TokenError> {
    let untrusted = &token.token;
    let kid = untrusted.header().key_id.as_deref();
    let mut kid_known = kid.is_none();
    let mut last = TokenError::NoKeyForAlgorithm;
    for key in keys {
        if kid.is_some() && key.kid.as_deref() != kid {
            continue;
        }
        kid_known = true;
        if !key.fits(token.alg) {
            continue;
        }
        let valid = verifier
            .verify(
                token.alg,
                key,
                token.signing_input.as_bytes(),
                untrusted.signature_bytes(),
            )
            .await;
        if valid {
            return untrusted
                .deserialize_claims_unchecked::<VerifiedClaims>()
                .map_err(|_| TokenError::MalformedClaims);
        }
        last = TokenError::BadSignature;
    }
    if !kid_known {
        return Err(TokenError::UnknownKeyId);
    }
    Err(last)
}

fn check(
    result: Result<jwt_compact::Token<VerifiedClaims, HeaderExtras>, ValidationError>,
) -> Result<Claims<VerifiedClaims>, TokenError> {
    match result {
        Ok(token) => Ok(token.into_parts().1),
        Err(ValidationError::AlgorithmMismatch { .. }) => Err(TokenError::AlgorithmNotAllowed),
        Err(ValidationError::InvalidSignature)
        | Err(ValidationError::InvalidSignatureLen { .. })
        | Err(ValidationError::MalformedSignature(_)) => Err(TokenError::BadSignature),
        Err(ValidationError::MalformedClaims(_)) => Err(TokenError::MalformedClaims),
        Err(_) => Err(TokenError::MalformedClaims),
    }
}

/// Whether a token segment is base64url of strict JSON (no key repeated at any depth).
fn strict_segment(segment: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(segment)
        .is_ok_and(|bytes| crate::json::parse_strict(&bytes).is_ok())
}

/// `Cow` reason text for JWK problems.
pub(crate) type JwkProblem = Cow<'static, str>;

#[cfg(test)]
mod tests;
