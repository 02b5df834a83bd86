//! The policy, read from the key-value store on every request, through the core's
//! [`PolicyStore`].
//!
//! Spin gives every request a fresh instance, so nothing compiled survives in memory: the
//! store's [`Memo`] is kept in the key-value store instead. With it, a policy text is validated
//! in full (every JSON Schema compiled) and started up (its key sets fetched) only by the first
//! request that sees it; later requests compile only the schemas of the route they match. A
//! schema that fails anyway (a build with a different validator) costs that request a 503 and
//! drops the memo, so the next request validates in full and refuses the policy as a whole.
//!
//! A value that does not parse or validate, a missing key and an unreadable store all mean
//! 503 `no-policy` for every request, with each problem logged with its JSON pointer.

use std::sync::Arc;

use portcullis_core::policy_store::Memo;
use portcullis_core::{Gateway, LogSink, Policy, PolicyRead, PolicyStore, Secrets};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

use crate::keys::KvKeySets;
use crate::{store, SpinClock, Stdio};

/// The store key read when the Spin variable [`KEY_VARIABLE`] is not set.
pub const DEFAULT_KEY: &str = "config";
/// The Spin variable that names the policy's store key.
pub const KEY_VARIABLE: &str = "config_key";
/// Where the policy store's memo is kept.
const MEMO_KEY: &str = "portcullis:policy-checked";

/// The gateway for the policy in the store (opened as `bucket`), and the store, or `None` when
/// there is no good policy (the events saying why are logged).
pub async fn load(bucket: Result<Arc<Bucket>, String>) -> Option<(Arc<Gateway>, Arc<Bucket>)> {
    let key = spin_sdk::variables::get(KEY_VARIABLE).unwrap_or_else(|_| DEFAULT_KEY.to_owned());
    let source = format!("key-value store {:?} key {key:?}", store::STORE);
    let mut policies = PolicyStore::new();
    let bucket = match bucket {
        Ok(bucket) => bucket,
        Err(why) => {
            for event in &policies.unreadable(why, &source, crate::now()).events {
                Stdio.event(event);
            }
            return None;
        }
    };
    let memo = recall(&bucket);
    if let Some(memo) = &memo {
        policies.recall(memo);
    }
    let read = read(&bucket, &key);
    let applied = policies.apply(read, &source, crate::now(), |text, schemas| {
        let shared = KvKeySets::new(Arc::clone(&bucket));
        Policy::from_json_with(text, &SpinVariables, schemas)
            .map(|policy| Gateway::new(policy).with_shared_key_sets(shared))
    });
    for event in &applied.events {
        Stdio.event(event);
    }
    let gateway = applied.gateway?;
    let validated = policies.memo();
    if validated != memo {
        remember(&bucket, validated.as_ref());
    }
    if applied.start_up {
        for event in gateway.start_up(&crate::fetch::SpinFetch, &SpinClock).await {
            Stdio.event(&event);
        }
    }
    Some((gateway, bucket))
}

fn read(bucket: &Bucket, key: &str) -> PolicyRead {
    match bucket.get(key) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => PolicyRead::Text(text),
            Err(_) => PolicyRead::Failed(format!("key {key:?} does not hold UTF-8 text")),
        },
        Ok(None) => PolicyRead::Missing(format!("key {key:?} in store {:?}", store::STORE)),
        Err(e) => PolicyRead::Failed(format!("reading key {key:?}: {}", store::describe(&e))),
    }
}

fn recall(bucket: &Bucket) -> Option<Memo> {
    let bytes = bucket.get(MEMO_KEY).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn remember(bucket: &Bucket, memo: Option<&Memo>) {
    let Some(record) = memo.and_then(|m| serde_json::to_vec(m).ok()) else {
        return;
    };
    if let Err(e) = bucket.set(MEMO_KEY, &record) {
        // Only costs the next request a full validation.
        let why = format!(
            "recording the validated policy failed: {}",
            store::describe(&e)
        );
        Stdio.event(&portcullis_core::Event::new(
            crate::now(),
            portcullis_core::Level::Warn,
            why,
        ));
    }
}

/// Drop the memo after one of the policy's schemas failed on first use: the next request
/// validates in full and refuses the policy with every problem.
pub fn forget_validation(bucket: &Bucket) {
    let _ = bucket.delete(MEMO_KEY);
}

/// `secret_env` names as Spin variables: `"secret_env": "HS_SECRET"` reads variable `hs_secret`
/// (Spin variable names are lower case). The component must map each one in `spin.toml`.
pub struct SpinVariables;

impl Secrets for SpinVariables {
    fn get(&self, name: &str) -> Option<String> {
        spin_sdk::variables::get(&name.to_ascii_lowercase()).ok()
    }
}
