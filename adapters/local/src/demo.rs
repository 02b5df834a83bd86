//! `portcullis demo`: the gateway in front of a built-in echo origin, on the example policy, with
//! a freshly minted token and curl lines that show each kind of decision.
//!
//! The HS256 secret is 32 random bytes generated at every start and handed to the policy through
//! an in-process [`Secrets`](portcullis_core::Secrets) closure: nothing to export, nothing fixed
//! in the binary that could be mistaken for a usable credential, and tokens from an earlier run
//! stop working, as they would after a key rotation.

use std::net::SocketAddr;
use std::sync::Arc;

use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde::Serialize;
use serde_json::Value;

use crate::serve::{self, App, Signals};
use crate::{context, echo, policy_file};

/// The example policy, also shipped as `examples/portcullis.json`. Its origin URL is a
/// placeholder: the demo points it at the echo origin's real address.
pub const EXAMPLE_POLICY: &str = include_str!("../../../examples/portcullis.json");

/// The `secret_env` the example's JWT provider names.
pub const SECRET_ENV: &str = "PORTCULLIS_DEMO_JWT_SECRET";

/// The API key whose SHA-256 the example stores. Public on purpose: it opens one demo route.
pub const API_KEY: &str = "demo-key-8c1f2e7a-portcullis";

/// The consumer (`sub`) of the minted token.
pub const SUBJECT: &str = "demo-user";

/// The scopes of the minted token: enough for both order routes.
pub const SCOPES: &str = "orders:read orders:write";

/// Token lifetime: long enough to play with, short enough that a leaked demo token soon dies.
const TOKEN_LIFETIME_S: i64 = 3600;

/// Where the example names its origin URL and its JWT issuer and audience.
const ORIGIN_URL: &str = "/origins/echo/url";
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

    let secret = new_secret()?;
    let config = example_config(origin_addr)?;
    let secrets = |name: &str| (name == SECRET_ENV).then(|| secret.clone());
    let policy = policy_file::compile(
        "examples/portcullis.json (embedded)",
        &config.to_string(),
        &secrets,
    )
    .map_err(|problems| problems.to_string())?;
    let token = mint_token(&config, &secret)?;
    let app = Arc::new(App::new(policy)?);

    tokio::spawn(echo::run(origin));
    let signals = Signals::install();
    eprintln!("{}", banner(addr, origin_addr, &token));
    serve::announce(addr);
    serve::run(listener, app, signals.recv()).await;
    Ok(())
}

/// 32 random bytes, hex-encoded: 64 characters, twice the minimum the core demands for HS256.
fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| format!("no randomness for the demo secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The example policy with its origin pointed at `origin`.
pub fn example_config(origin: SocketAddr) -> Result<Value, String> {
    let mut config: Value = serde_json::from_str(EXAMPLE_POLICY)
        .map_err(|e| format!("the embedded example policy is not JSON: {e}"))?;
    let url = config
        .pointer_mut(ORIGIN_URL)
        .ok_or("the embedded example policy has no echo origin")?;
    *url = Value::String(format!("http://{origin}"));
    Ok(config)
}

#[derive(Serialize)]
struct DemoClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    scope: &'a str,
}

/// An HS256 token the example policy accepts, valid for an hour. Issuer and audience are read
/// from the policy so that the two can never drift apart.
pub fn mint_token(config: &Value, secret: &str) -> Result<String, String> {
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
    Hs256
        .token(
            &Header::empty().with_token_type("JWT"),
            &claims,
            &Hs256Key::new(secret.as_bytes()),
        )
        .map_err(|e| format!("cannot sign the demo token: {e}"))
}

/// What to paste: the token, and one curl line per kind of decision.
fn banner(gateway: SocketAddr, origin: SocketAddr, token: &str) -> String {
    let base = format!("http://{}", reachable(gateway));
    format!(
        r#"
Portcullis demo
  gateway      {base}
  echo origin  http://{origin}  (answers with the request it received)
  policy       examples/portcullis.json, origin URL pointed at the echo origin
  JWT secret   random for this run: tokens from an earlier run are refused

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
    fn the_example_policy_compiles_with_the_demo_secret() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        let secret = "0".repeat(64);
        let secrets = |name: &str| (name == SECRET_ENV).then(|| secret.clone());
        let policy = policy_file::compile("example", &config.to_string(), &secrets)
            .unwrap_or_else(|p| panic!("{p}"));
        let ids: Vec<&str> = policy.route_ids().collect();
        assert_eq!(ids, ["health", "get-order", "create-order", "get-report"]);
    }

    #[test]
    fn the_origin_url_is_replaced() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.pointer(ORIGIN_URL),
            Some(&Value::String("http://127.0.0.1:9".into()))
        );
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
    fn the_token_has_three_parts_and_the_expected_claims() {
        let config = example_config(origin()).unwrap_or_else(|e| panic!("{e}"));
        let token = mint_token(&config, &"k".repeat(64)).unwrap_or_else(|e| panic!("{e}"));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let untrusted = jwt_compact::UntrustedToken::new(&token).unwrap_or_else(|e| panic!("{e}"));
        let claims = untrusted
            .deserialize_claims_unchecked::<Value>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims.custom["sub"], SUBJECT);
        assert_eq!(claims.custom["scope"], SCOPES);
        assert_eq!(claims.custom["aud"], "portcullis-demo");
        assert!(claims.expiration.is_some());
    }

    fn sha256_hex(key: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
