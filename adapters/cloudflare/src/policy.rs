//! The policy, from Workers KV.
//!
//! Read and compiled once per isolate, then re-read at most every `config_ttl_s`
//! ([`Policy::config_ttl`]). A value that does not parse or validate never replaces the last good
//! policy: the isolate keeps serving that one and logs every problem with its JSON pointer. With
//! no good policy at all, [`current`] returns `None` and the caller answers 503 `no-policy`.
//!
//! The [`Gateway`] lives as long as its policy text is unchanged, so remote key sets fetched for
//! it are reused across requests (and across re-reads that find the same text). It checks
//! public-key signatures with [`WebCrypto`], and the `policy loaded` event names that backend.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use portcullis_core::{Gateway, Policy, Secrets, UnixTime};
use worker::{console_error, Env};

use crate::signature::WebCrypto;

/// The KV binding that holds the policy.
pub const KV_BINDING: &str = "PORTCULLIS_CONFIG";
/// The var naming the KV key, when not [`DEFAULT_KEY`].
pub const KEY_VAR: &str = "PORTCULLIS_CONFIG_KEY";
/// The KV key read by default.
pub const DEFAULT_KEY: &str = "config";
/// How often to retry KV while there is no good policy at all.
const RETRY_WITHOUT_POLICY: Duration = Duration::from_secs(1);

/// Why the store gave no policy text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The KV binding is missing or the read failed.
    Kv(String),
    /// The key holds nothing.
    Missing(String),
    /// The text did not parse or validate: every problem, with its JSON pointer.
    Invalid(Vec<String>),
}

#[derive(Default)]
struct Isolate {
    /// The last good policy: its text and its gateway.
    good: Option<(String, Rc<Gateway>)>,
    /// The text last refused, so the same problems are logged once, not every TTL.
    refused: Option<String>,
    /// When the store may be read again.
    next_read: Option<UnixTime>,
}

thread_local! {
    static ISOLATE: RefCell<Isolate> = RefCell::new(Isolate::default());
}

/// The gateway for the current policy, reading KV first when the TTL has run out, and whether it
/// was compiled just now. `None` when there is no good policy at all.
pub async fn current(env: &Env, now: UnixTime) -> Option<(Rc<Gateway>, bool)> {
    let (good, due) = ISOLATE.with_borrow(|s| {
        let due = s.next_read.is_none_or(|at| now >= at);
        (s.good.as_ref().map(|(_, g)| Rc::clone(g)), due)
    });
    if !due {
        return good.map(|g| (g, false));
    }
    // Other requests keep using the current policy while this one reads the store.
    if good.is_some() {
        ISOLATE.with_borrow_mut(|s| s.next_read = Some(now.saturating_add(RETRY_WITHOUT_POLICY)));
    }
    let loaded = load(env).await;
    let fresh = ISOLATE.with_borrow_mut(|s| s.apply(loaded, now))?;
    let same = good.is_some_and(|g| Rc::ptr_eq(&g, &fresh));
    Some((fresh, !same))
}

impl Isolate {
    fn apply(
        &mut self,
        loaded: Result<(String, Result<Policy, Vec<String>>), LoadError>,
        now: UnixTime,
    ) -> Option<Rc<Gateway>> {
        let error = match loaded {
            Ok((text, Ok(policy))) => {
                let same = self.good.as_ref().is_some_and(|(t, _)| *t == text);
                let ttl = policy.config_ttl();
                if !same {
                    let fresh = self.good.is_none();
                    let gateway = Gateway::new(policy).with_verifier(WebCrypto);
                    let verifier = gateway.verifier_name();
                    self.good = Some((text, Rc::new(gateway)));
                    crate::event(
                        "info",
                        &[("verifier", verifier)],
                        if fresh {
                            "policy loaded"
                        } else {
                            "policy reloaded"
                        },
                    );
                }
                self.refused = None;
                self.next_read = Some(now.saturating_add(ttl));
                None
            }
            Ok((text, Err(problems))) => {
                if self.refused.as_deref() != Some(text.as_str()) {
                    for p in &problems {
                        console_error!("portcullis: policy in KV refused: {p}");
                    }
                }
                self.refused = Some(text);
                Some(LoadError::Invalid(problems))
            }
            Err(e) => Some(e),
        };
        if let Some(error) = error {
            let ttl = match &self.good {
                Some((_, g)) => g.policy().config_ttl(),
                None => RETRY_WITHOUT_POLICY,
            };
            self.next_read = Some(now.saturating_add(ttl));
            let what = match &self.good {
                Some(_) => "keeping the last good policy",
                None => "no policy: answering 503",
            };
            match error {
                LoadError::Invalid(_) => {}
                LoadError::Kv(why) | LoadError::Missing(why) => {
                    console_error!("portcullis: {why}; {what}")
                }
            }
        }
        self.good.as_ref().map(|(_, g)| Rc::clone(g))
    }
}

/// Read the policy text from KV and compile it with the Worker's secrets.
async fn load(env: &Env) -> Result<(String, Result<Policy, Vec<String>>), LoadError> {
    let key = env
        .var(KEY_VAR)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| DEFAULT_KEY.to_owned());
    let kv = env
        .kv(KV_BINDING)
        .map_err(|e| LoadError::Kv(format!("KV binding {KV_BINDING} unavailable: {e}")))?;
    let text = kv
        .get(&key)
        .text()
        .await
        .map_err(|e| LoadError::Kv(format!("reading KV key {key:?} failed: {e}")))?
        .ok_or_else(|| LoadError::Missing(format!("KV key {key:?} is empty")))?;
    let compiled = Policy::from_json(&text, &EnvSecrets(env))
        .map_err(|errors| errors.0.iter().map(|e| e.to_string()).collect());
    Ok((text, compiled))
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
