//! The policy, read from the key-value store on every request: Spin gives every request a fresh
//! instance, so nothing compiled survives in memory. How it is read, validated once per text and
//! started up once per text, with the memo kept in the store, is
//! `portcullis_core::kv::policy`'s; this module names the key and supplies Spin's secrets.

use std::sync::Arc;

use portcullis_core::kv::key_sets::KvKeySets;
use portcullis_core::kv::policy::{self, Location};
use portcullis_core::{Gateway, Policy, Secrets};

use crate::store::{self, Kv};
use crate::Spin;

/// The store key read when the Spin variable [`KEY_VARIABLE`] is not set.
pub const DEFAULT_KEY: &str = "config";
/// The Spin variable that names the policy's store key.
pub const KEY_VARIABLE: &str = "config_key";

/// The gateway for the policy in the store (opened as `store`), and the store, or `None` when
/// there is no good policy (the events saying why are logged).
pub async fn load(store: Result<Kv, String>) -> Option<(Arc<Gateway>, Kv)> {
    let key = spin_sdk::variables::get(KEY_VARIABLE).unwrap_or_else(|_| DEFAULT_KEY.to_owned());
    let at = Location {
        store: store::STORE,
        key: &key,
    };
    let applied = policy::apply(
        store.as_ref().map_err(String::as_str),
        at,
        &Spin,
        |store, text, schemas| {
            let shared = KvKeySets::new(store.clone(), Spin);
            Policy::from_json_with(text, &SpinVariables, schemas)
                .map(|policy| Gateway::new(policy).with_shared_key_sets(shared))
        },
    );
    let gateway = applied
        .start(&crate::fetch::SpinFetch, &Spin, &Spin)
        .await?;
    Some((gateway, store.ok()?))
}

/// `secret_env` names as Spin variables: `"secret_env": "HS_SECRET"` reads variable `hs_secret`
/// (Spin variable names are lower case). The component must map each one in `spin.toml`.
pub struct SpinVariables;

impl Secrets for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }
}
