//! The policy, from Workers KV, through the core's [`PolicyStore`]: compiled once per isolate,
//! read again every `config_ttl_s`, never replaced by a broken one, and its key sets fetched
//! before the first request it decides. This module only reads KV and supplies the Worker's
//! secrets and signature backend ([`WebCrypto`]).

use std::cell::RefCell;
use std::sync::Arc;

use portcullis_core::{Gateway, Policy, PolicyRead, PolicyStore, Secrets};
use worker::Env;

use crate::fetch::WorkerFetch;
use crate::signature::WebCrypto;
use crate::{Console, WorkerClock};

/// The KV binding that holds the policy.
pub const KV_BINDING: &str = "PORTCULLIS_CONFIG";
/// The var naming the KV key, when not [`DEFAULT_KEY`].
pub const KEY_VAR: &str = "PORTCULLIS_CONFIG_KEY";
/// The KV key read by default.
pub const DEFAULT_KEY: &str = "config";

thread_local! {
    static STORE: RefCell<PolicyStore> = RefCell::new(PolicyStore::new());
}

/// The gateway for the live policy, reading KV first when the store says so. `None` when there
/// is no good policy at all (the caller answers 503 `no-policy`).
pub async fn current(env: &Env) -> Option<Arc<Gateway>> {
    let now = crate::now();
    if !STORE.with_borrow_mut(|store| store.claim_read(now)) {
        return STORE.with_borrow(PolicyStore::live);
    }
    let key = env
        .var(KEY_VAR)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| DEFAULT_KEY.to_owned());
    let read = read(env, &key).await;
    let source = format!("KV {KV_BINDING} key {key:?}");
    let applied = STORE.with_borrow_mut(|store| {
        store.apply(read, &source, now, |text, schemas| {
            Policy::from_json_with(text, &EnvSecrets(env), schemas)
                .map(|policy| Gateway::new(policy).with_verifier(WebCrypto))
        })
    });
    applied
        .start(&WorkerFetch, &WorkerClock, &Console::default())
        .await
}

async fn read(env: &Env, key: &str) -> PolicyRead {
    let kv = match env.kv(KV_BINDING) {
        Ok(kv) => kv,
        Err(e) => return PolicyRead::Failed(format!("KV binding {KV_BINDING} unavailable: {e}")),
    };
    match kv.get(key).text().await {
        Ok(Some(text)) => PolicyRead::Text(text),
        Ok(None) => PolicyRead::Missing(format!("KV key {key:?}")),
        Err(e) => PolicyRead::Failed(format!("reading KV key {key:?} failed: {e}")),
    }
}

/// `secret_env` names, looked up as Worker secrets, then as plain vars (`.dev.vars` locally).
pub struct EnvSecrets<'a>(pub &'a Env);

impl Secrets for EnvSecrets<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .secret(name)
            .map(|s| s.to_string())
            .or_else(|_| self.0.var(name).map(|v| v.to_string()))
            .ok()
    }
}
