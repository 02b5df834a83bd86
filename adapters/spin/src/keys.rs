//! Remote key sets (`jwks_url`, `oidc_issuer`) kept in the key-value store between requests.
//!
//! Each request starts from the stored [`KeySetState`] of every remote provider, so a fresh
//! instance verifies tokens with the keys an earlier request fetched, and fetches only when the
//! core's plan says so (the set is due, a `kid` is unknown, or there is none). Whatever changed
//! (a fetch, good or failed, moves the state) is written back before the response is sent.
//!
//! States are stored under the core's key-set names, which include a fingerprint of the key
//! source: a policy that points a provider at another IdP never starts from the old IdP's keys.
//! Concurrent instances may each fetch when a set falls due at the same moment, and the last to
//! write wins; both wrote a state the IdP served, so nothing is lost but a few extra fetches.

use portcullis_core::{Gateway, KeySetState};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

use crate::store;

/// The states as read at the start of a request, to write back only what changed.
pub struct Restored(Vec<(String, Option<String>)>);

fn key(name: &str) -> String {
    format!("{}keys:{name}", store::PREFIX)
}

/// Seed `gateway`'s key ring from the store. Unreadable or undecodable states are skipped (with
/// a warning): the provider then starts empty and fetches, as a new deployment would.
pub async fn restore(gateway: &Gateway, bucket: &Bucket) -> Restored {
    let mut read = Vec::new();
    for name in gateway.key_set_names() {
        let text = match bucket.get(&key(&name)) {
            Ok(value) => value.and_then(|b| String::from_utf8(b).ok()),
            Err(e) => {
                crate::event(
                    "warn",
                    &[("provider", provider(&name))],
                    &format!("reading the stored key set failed: {}", store::describe(&e)),
                );
                None
            }
        };
        if let Some(text) = &text {
            match serde_json::from_str::<KeySetState>(text) {
                Ok(state) => {
                    gateway.restore_key_set(&name, state).await;
                }
                Err(_) => crate::event(
                    "warn",
                    &[("provider", provider(&name))],
                    "stored key set is not readable; fetching afresh",
                ),
            }
        }
        read.push((name, text));
    }
    Restored(read)
}

/// Write back every state that differs from what [`restore`] read.
pub async fn save_changed(gateway: &Gateway, bucket: &Bucket, restored: &Restored) {
    for (name, state) in gateway.key_sets().await {
        let Ok(text) = serde_json::to_string(&state) else {
            continue;
        };
        let before = restored
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, t)| t.as_deref());
        if before == Some(text.as_str()) {
            continue;
        }
        if let Err(e) = bucket.set(&key(&name), text.as_bytes()) {
            crate::event(
                "warn",
                &[("provider", provider(&name))],
                &format!("storing the key set failed: {}", store::describe(&e)),
            );
        }
    }
}

/// The provider's name from a key-set name (`{provider}:{fingerprint}`).
fn provider(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(p, _)| p)
}
