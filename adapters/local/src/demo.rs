//! `portcullis demo`: the gateway in front of a built-in echo origin, on the example policy, with
//! a freshly minted token and curl lines that show each kind of decision.
//!
//! The demo plays its own identity provider, the way a real deployment meets one: an ES256
//! signing key is generated at every start, its public half is published as a JWKS by the echo
//! origin at [`echo::JWKS_PATH`], and the example policy's `jwks_url` points there, so the gateway
//! fetches the key set like it would from an IdP. Nothing is fixed in the binary that could be
//! mistaken for a usable credential, and tokens from an earlier run stop working, as they would
//! after a key rotation.

use std::net::SocketAddr;
use std::sync::Arc;

use jwt_compact::alg::Es256;
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use p256::ecdsa::SigningKey;
use portcullis_core::{policy_report, NoSecrets};
use serde::Serialize;
use serde_json::{json, Value};

use crate::connections::Settings;
use crate::serve::{self, App, Signals};
use crate::{context, echo, keys};

/// The example policy, also shipped as `examples/portcullis.json`. Its origin URL and JWKS URL
/// are placeholders: the demo points them at the echo origin's real address.
pub const EXAMPLE_POLICY: &str = include_str!("../../../examples/portcullis.json");

/// The API key whose SHA-256 the example stores. Public on purpose: it opens one demo route.
pub const API_KEY: &str = "demo-key-8c1f2e7a-portcullis";

/// The consumer (`sub`) of the minted token.
pub const SUBJECT: &str = "demo-user";

/// The scopes of the minted token: enough for both order routes.
pub const SCOPES: &str = "orders:read orders:write";

/// Token lifetime: long enough to play with, short enough that a leaked demo token soon dies.
const TOKEN_LIFETIME_S: i64 = 3600;

/// Where the example names its origin URL, its JWKS URL, and its JWT issuer and audience.
const ORIGIN_URL: &str = "/origins/echo/url";
const JWKS_URL: &str = "/auth/demo-jwt/jwks_url";
const ISSUER: &str = "/auth/demo-jwt/issuer";
const AUDIENCE: &str = "/auth/demo-jwt/audiences/0";

/// Run the demo until SIGINT or SIGTERM.
pub async fn run(listen: &str, origin_listen: &str) -> Result<(), String> {
    let origin = serve::bind(origin_listen).await?;
    let origin_addr = origin
        .local_addr()
        .map_err(|e| format!("cannot read the echo origin's address: {e}"))?;
    let listener = serve::bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;

    let key = DemoKey::generate()?;
    let config = example_config(origin_addr)?;
    let policy = policy_report::compile(
        "examples/portcullis.json (embedded)",
        &config.to_string(),
        &NoSecrets,
    )
    .map_err(|problems| problems.to_string())?;
    let token = mint_token(&config, &key)?;
    let app = Arc::new(App::new(policy)?);

    tokio::spawn(echo::run(origin, Some(key.jwks()?.into())));
    // The echo origin is up: the gateway fetches the demo's key set from it like from an IdP.
    keys::load_and_report(&app.gateway(), app.fetch()).await;
    let signals = Signals::install();
    let _refresher = keys::spawn_refresher(Arc::clone(&app));
    let jwks_url = config
        .pointer(JWKS_URL)
        .and_then(Value::as_str)
        .unwrap_or("");
    eprintln!("{}", banner(addr, origin_addr, jwks_url, &token));
    serve::announce(addr, false);
    let connections = serve::start_connections(Settings::default());
    serve::run(listener, app, connections, signals.recv()).await;
    Ok(())
}

/// The demo's ES256 signing key and its `kid`, both random for each run.
pub struct DemoKey {
    signing: SigningKey,
    kid: String,
}

impl DemoKey {
    /// A fresh key from the OS's randomness.
    pub fn generate() -> Result<Self, String> {
        let random = |bytes: &mut [u8]| {
            getrandom::getrandom(bytes).map_err(|e| format!("no randomness for the demo key: {e}"))
        };
        let signing = loop {
            let mut scalar = [0u8; 32];
            random(&mut scalar)?;
            // All but a 2^-32 sliver of 256-bit strings are valid P-256 scalars.
            if let Ok(key) = SigningKey::from_slice(&scalar) {
                break key;
            }
        };
        let mut id = [0u8; 8];
        random(&mut id)?;
        let kid = format!("demo-{}", hex(&id));
        Ok(DemoKey { signing, kid })
    }

    /// The key's id, carried in the tokens' headers and in the key set.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set: one P-256 key, pinned to ES256 and signatures.
    pub fn jwks(&self) -> Result<String, String> {
        let mut jwk = serde_json::to_value(JsonWebKey::from(self.signing.verifying_key()))
            .map_err(|e| format!("cannot write the demo key set: {e}"))?;
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), json!(self.kid));
            members.insert("alg".into(), json!("ES256"));
            members.insert("use".into(), json!("sig"));
        }
        Ok(json!({ "keys": [jwk] }).to_string())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The example policy with its origin, and its key set URL, pointed at the echo origin at
/// `origin`. Key URLs must be loopback for `http://`: a wildcard bind is reached through loopback.
pub fn example_config(origin: SocketAddr) -> Result<Value, String> {
    let mut config: Value = serde_json::from_str(EXAMPLE_POLICY)
        .map_err(|e| format!("the embedded example policy is not JSON: {e}"))?;
    let url = config
        .pointer_mut(ORIGIN_URL)
        .ok_or("the embedded example policy has no echo origin")?;
    *url = Value::String(format!("http://{origin}"));
    let jwks = config
        .pointer_mut(JWKS_URL)
        .ok_or("the embedded example policy has no JWKS URL")?;
    *jwks = Value::String(format!("http://{}{}", reachable(origin), echo::JWKS_PATH));
    Ok(config)
}

#[derive(Serialize)]
struct DemoClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    scope: &'a str,
}

/// An ES256 token the example policy accepts, signed with `key` and naming its `kid`, valid for
/// an hour. Issuer and audience are read from the policy so that the two can never drift apart.
pub fn mint_token(config: &Value, key: &DemoKey) -> Result<String, String> {
    let text = |pointer: &str| {
        config
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or(format!("the example policy has no {pointer}"))
    };
    let custom = DemoClaims {
        iss: text(ISSUER)?,
        aud: text(AUDIENCE)?,
        sub: SUBJECT,
        scope: SCOPES,
    };
    let now = i64::try_from(context::now().as_secs()).map_err(|_| "the clock is out of range")?;
    let issued = chrono::DateTime::from_timestamp(now, 0).ok_or("the clock is out of range")?;
    let lifetime = chrono::TimeDelta::try_seconds(TOKEN_LIFETIME_S).ok_or("bad token lifetime")?;
    let mut claims = Claims::new(custom);
    claims.issued_at = Some(issued);
    claims.expiration = Some(
        issued
            .checked_add_signed(lifetime)
            .ok_or("the clock is out of range")?,
    );
    Es256
        .token(
            &Header::empty()
                .with_token_type("JWT")
                .with_key_id(key.kid.clone()),
            &claims,
            &key.signing,
        )
        .map_err(|e| format!("cannot sign the demo token: {e}"))
}

/// What to paste: the token, and one curl line per kind of decision.
fn banner(gateway: SocketAddr, origin: SocketAddr, jwks_url: &str, token: &str) -> String {
    let base = format!("http://{}", reachable(gateway));
    format!(
        r#"
Portcullis demo
  gateway      {base}
  echo origin  http://{origin}  (answers with the request it received)
  policy       examples/portcullis.json, origin and JWKS URLs pointed at the echo origin
  signing key  ES256, random for this run, published at {jwks_url}
               (tokens from an earlier run are refused)

Paste into a bash shell:

TOKEN='{token}'
API_KEY='{API_KEY}'

# 200, public route
curl -i {base}/v1/health
# 200, token with scope orders:read (the echo shows x-portcullis-consumer: {SUBJECT})
curl -i -H "Authorization: Bearer $TOKEN" {base}/v1/orders/42
# 401, no token
curl -i {base}/v1/orders/42
# 200, body matches the schema
curl -i -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"sku":"ABC-1","quantity":2}}' {base}/v1/orders
# 422, body fails the schema (quantity must be 1 to 100)
curl -i -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"sku":"ABC-1","quantity":0}}' {base}/v1/orders
# 429, quota of 5 per 60 s per consumer on GET /v1/orders/{{id}}: the last calls are refused
for i in $(seq 1 7); do curl -s -o /dev/null -w '%{{http_code}}\n' -H "Authorization: Bearer $TOKEN" {base}/v1/orders/$i; done
# 200, API key (the gateway does not forward x-api-key to the origin)
curl -i -H "x-api-key: $API_KEY" {base}/v1/reports/daily

One JSON log line per request goes to stdout. Ctrl-C stops the demo.
"#
    )
}

/// An address a local curl can reach: a wildcard bind is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn the_example_policy_compiles_without_secrets() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        let policy = policy_report::compile("example", &config.to_string(), &NoSecrets)
            .unwrap_or_else(|p| panic!("{p}"));
        let ids: Vec<&str> = policy.route_ids().collect();
        assert_eq!(ids, ["health", "get-order", "create-order", "get-report"]);
    }

    #[test]
    fn the_origin_and_jwks_urls_are_replaced() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.pointer(ORIGIN_URL),
            Some(&Value::String("http://127.0.0.1:9".into()))
        );
        assert_eq!(
            config.pointer(JWKS_URL),
            Some(&Value::String(
                "http://127.0.0.1:9/.well-known/jwks.json".into()
            ))
        );
    }

    #[test]
    fn a_wildcard_origin_publishes_its_keys_on_loopback() {
        let config =
            example_config(SocketAddr::from(([0, 0, 0, 0], 9))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.pointer(JWKS_URL),
            Some(&Value::String(
                "http://127.0.0.1:9/.well-known/jwks.json".into()
            ))
        );
        policy_report::compile("example", &config.to_string(), &NoSecrets)
            .unwrap_or_else(|p| panic!("{p}"));
    }

    #[test]
    fn the_published_key_set_is_one_usable_key_with_the_kid() {
        let key = DemoKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let text = key.jwks().unwrap_or_else(|e| panic!("{e}"));
        let (keys, skipped) =
            portcullis_core::jwks::parse_jwks(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some(key.kid()));
        assert!(key.kid().starts_with("demo-") && key.kid().len() == 21);
    }

    #[test]
    fn the_api_key_matches_the_stored_hash() {
        use portcullis_core::parse_json_strict;
        let config = parse_json_strict(EXAMPLE_POLICY.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let stored = config
            .pointer("/auth/partner-keys/keys/0/sha256")
            .and_then(Value::as_str);
        assert_eq!(stored, Some(sha256_hex(API_KEY.as_bytes()).as_str()));
    }

    #[test]
    fn the_token_is_es256_with_the_kid_and_the_expected_claims() {
        use jwt_compact::UntrustedToken;
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        let key = DemoKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let token = mint_token(&config, &key).unwrap_or_else(|e| panic!("{e}"));
        let untrusted = UntrustedToken::new(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(untrusted.algorithm(), "ES256");
        assert_eq!(untrusted.header().key_id.as_deref(), Some(key.kid()));
        let verified = Es256
            .validator::<Value>(key.signing.verifying_key())
            .validate(&untrusted)
            .unwrap_or_else(|e| panic!("{e}"));
        let claims = verified.claims();
        assert_eq!(claims.custom["sub"], SUBJECT);
        assert_eq!(claims.custom["scope"], SCOPES);
        assert_eq!(claims.custom["aud"], "portcullis-demo");
        let now = i64::try_from(context::now().as_secs()).unwrap_or(i64::MAX);
        assert!(claims.expiration.is_some_and(|e| e.timestamp() > now));
    }

    #[test]
    fn tokens_from_another_run_do_not_verify() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        let (old, new) = match (DemoKey::generate(), DemoKey::generate()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => panic!("no randomness"),
        };
        assert_ne!(old.kid(), new.kid());
        let token = mint_token(&config, &old).unwrap_or_else(|e| panic!("{e}"));
        let untrusted = jwt_compact::UntrustedToken::new(&token).unwrap_or_else(|e| panic!("{e}"));
        assert!(Es256
            .validator::<Value>(new.signing.verifying_key())
            .validate(&untrusted)
            .is_err());
    }

    fn sha256_hex(key: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
