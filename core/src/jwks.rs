//! Remote key sets: JWKS URLs and OIDC discovery, as a state machine every runtime shares.
//!
//! What users rely on, and where it is decided:
//! - **Rotation**: a token whose `kid` is not in the current set triggers a refetch, at most one
//!   per `jwks_min_refresh_interval_s` ([`KeySetState::plan`]). Concurrent requests wait on the same
//!   refetch ([`KeyRing`] holds one async lock per provider) and then verify against the new set.
//!   Keys the IdP still publishes keep working, because a refetch replaces the set with what the
//!   IdP publishes now.
//! - **Floods of unknown `kid`s** cost the IdP at most one fetch per interval; the rest get 401.
//! - **IdP down, slow or serving garbage**: a bad response never replaces a good set
//!   ([`KeySetState::apply`]); the last good set stays in use until `jwks_max_stale_s`, after which
//!   tokens for that provider get 503: the gateway cannot decide, so it does not guess.
//!
//! Runtimes whose instances share no memory (Spin) keep the state in a store and get the same
//! single flight across instances through it: see [`shared`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fetch::{Fetch, FetchError, FetchResponse};
use crate::jwt::{parse_jwk, Jwk};
use crate::time::UnixTime;

pub mod shared;

pub use shared::SharedKeySets;

/// Where a provider's keys come from, and how often to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKeys {
    /// The JWKS URL, or the issuer whose discovery document names it.
    pub source: RemoteSource,
    /// Refetch after this long, unless the response's `Cache-Control: max-age` says otherwise
    /// (honoured between [`MIN_MAX_AGE_S`] and [`MAX_MAX_AGE_S`]).
    pub refresh_s: u64,
    /// Keep using the last good set this long after it was fetched when refreshes fail.
    pub max_stale_s: u64,
    /// Never fetch more often than this, whatever tokens arrive.
    pub min_refresh_interval_s: u64,
    /// Give up on one fetch after this long.
    pub fetch_timeout: Duration,
}

/// A remote key source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSource {
    /// A JWKS URL.
    JwksUrl(String),
    /// An OIDC issuer: `{issuer}/.well-known/openid-configuration` names the JWKS URL.
    OidcIssuer(String),
}

impl RemoteSource {
    /// A short, stable digest of the source (its kind and URL). State kept under a name that
    /// includes it is never applied to a provider whose source has changed.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = match self {
            RemoteSource::JwksUrl(url) => format!("jwks_url {url}"),
            RemoteSource::OidcIssuer(issuer) => format!("oidc_issuer {issuer}"),
        };
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    }
}

/// Shortest `Cache-Control: max-age` honoured, seconds.
pub const MIN_MAX_AGE_S: u64 = 60;
/// Longest `Cache-Control: max-age` honoured, seconds.
pub const MAX_MAX_AGE_S: u64 = 86_400;

/// Something the operator should hear about. The core does not log; adapters print these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// A new key set is in use.
    Refreshed {
        /// Keys in the new set.
        keys: usize,
    },
    /// A refresh failed; the previous set (if any) stays in use.
    RefreshFailed {
        /// Why, for the operator.
        reason: String,
    },
    /// A key in a fetched set was skipped.
    SkippedKey {
        /// Its index in `keys`.
        index: usize,
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for KeyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyEvent::Refreshed { keys } => write!(f, "key set refreshed ({keys} keys)"),
            KeyEvent::RefreshFailed { reason } => write!(
                f,
                "key set refresh failed, keeping the last good set: {reason}"
            ),
            KeyEvent::SkippedKey { index, reason } => {
                write!(f, "skipped key /keys/{index}: {reason}")
            }
        }
    }
}

/// What to do for a token, given the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Verify with the keys held now.
    Use,
    /// Fetch first (no usable set, a stale set, or an unknown `kid`), then verify.
    Fetch,
    /// No usable set and fetching is not allowed yet: 503.
    Unavailable,
}

/// One provider's key-set state. Serialisable, so runtimes without memory between requests
/// (Spin) can keep it in their key-value store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeySetState {
    /// The last good JWKS document, as fetched.
    jwks: Option<String>,
    /// When it was fetched, µs since the epoch.
    fetched_at: Option<u64>,
    /// How long it is fresh, seconds.
    fresh_for_s: u64,
    /// When the last fetch was attempted, µs since the epoch, good or bad.
    last_attempt: Option<u64>,
    /// The JWKS URL found by discovery.
    jwks_uri: Option<String>,
    /// In a shared store only: an instance is fetching, and others should wait for its result
    /// until then, µs since the epoch (see [`shared`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetching_until: Option<u64>,
    /// The parsed keys of `jwks`.
    #[serde(skip)]
    parsed: Option<Arc<[Jwk]>>,
}

impl KeySetState {
    /// The usable keys at `now`: the last good set, unless it is older than `max_stale_s`.
    pub fn keys(&self, cfg: &RemoteKeys, now: UnixTime) -> Option<Arc<[Jwk]>> {
        let fetched = self.fetched_at?;
        if now.as_micros() >= fetched.saturating_add(cfg.max_stale_s * 1_000_000) {
            return None;
        }
        self.parsed.clone()
    }

    fn may_fetch(&self, cfg: &RemoteKeys, now: UnixTime) -> bool {
        self.last_attempt.is_none_or(|t| {
            now.as_micros() >= t.saturating_add(cfg.min_refresh_interval_s * 1_000_000)
        })
    }

    /// Whether the set is due for a scheduled refresh at `now`.
    pub fn due(&self, now: UnixTime) -> bool {
        self.fetched_at
            .is_none_or(|t| now.as_micros() >= t.saturating_add(self.fresh_for_s * 1_000_000))
    }

    /// The pure decision: what a token with `kid` needs at `now`.
    pub fn plan(&self, cfg: &RemoteKeys, kid: Option<&str>, now: UnixTime) -> Plan {
        let may_fetch = self.may_fetch(cfg, now);
        let Some(keys) = self.keys(cfg, now) else {
            return if may_fetch {
                Plan::Fetch
            } else {
                Plan::Unavailable
            };
        };
        let kid_unknown = kid.is_some_and(|k| !keys.iter().any(|j| j.kid.as_deref() == Some(k)));
        if (kid_unknown || self.due(now)) && may_fetch {
            Plan::Fetch
        } else {
            Plan::Use
        }
    }

    /// Fold a JWKS response into the state. A response that is not a usable key set never
    /// replaces a good one.
    pub fn apply(
        &mut self,
        cfg: &RemoteKeys,
        response: Result<FetchResponse, FetchError>,
        now: UnixTime,
    ) -> Vec<KeyEvent> {
        self.last_attempt = Some(now.as_micros());
        let response = match response {
            Ok(r) if (200..300).contains(&r.status) => r,
            Ok(r) => return vec![failed(format!("JWKS answered HTTP {}", r.status))],
            Err(e) => return vec![failed(format!("JWKS fetch: {e}"))],
        };
        let Ok(text) = String::from_utf8(response.body) else {
            return vec![failed("JWKS is not UTF-8".into())];
        };
        let (keys, mut events) = match parse_jwks(&text) {
            Ok(parsed) => parsed,
            Err(why) => return vec![failed(why)],
        };
        if keys.is_empty() {
            events.push(failed("JWKS holds no usable keys".into()));
            return events;
        }
        self.fresh_for_s = response
            .cache_control
            .as_deref()
            .and_then(max_age)
            .filter(|s| (MIN_MAX_AGE_S..=MAX_MAX_AGE_S).contains(s))
            .unwrap_or(cfg.refresh_s);
        events.push(KeyEvent::Refreshed { keys: keys.len() });
        self.parsed = Some(keys.into());
        self.jwks = Some(text);
        self.fetched_at = Some(now.as_micros());
        events
    }

    /// Rebuild the parsed keys after deserialising a stored state.
    pub fn restore(&mut self) {
        self.parsed = self
            .jwks
            .as_deref()
            .and_then(|t| parse_jwks(t).ok())
            .map(|(k, _)| k.into());
    }

    /// Fetch (discovering the JWKS URL first for OIDC issuers) and apply the result.
    pub async fn refresh<F: Fetch + ?Sized>(
        &mut self,
        cfg: &RemoteKeys,
        fetch: &F,
        now: UnixTime,
    ) -> Vec<KeyEvent> {
        let url = match &cfg.source {
            RemoteSource::JwksUrl(url) => url.clone(),
            RemoteSource::OidcIssuer(issuer) => match &self.jwks_uri {
                Some(uri) => uri.clone(),
                None => match discover(issuer, cfg, fetch).await {
                    Ok(uri) => {
                        self.jwks_uri = Some(uri.clone());
                        uri
                    }
                    Err(why) => {
                        self.last_attempt = Some(now.as_micros());
                        return vec![failed(why)];
                    }
                },
            },
        };
        let response = fetch.get(&url, cfg.fetch_timeout).await;
        let events = self.apply(cfg, response, now);
        // A failing JWKS URL may have moved: discover it again next time.
        if matches!(cfg.source, RemoteSource::OidcIssuer(_))
            && events
                .iter()
                .any(|e| matches!(e, KeyEvent::RefreshFailed { .. }))
        {
            self.jwks_uri = None;
        }
        events
    }
}

fn failed(reason: String) -> KeyEvent {
    KeyEvent::RefreshFailed { reason }
}

/// Parse a JWKS document. Keys that cannot be used (`use` other than `sig`, unknown `kty`, `oct`,
/// missing or ill-formed members) are skipped, each with an event; only a document that is not a
/// JWKS at all is an error.
pub fn parse_jwks(text: &str) -> Result<(Vec<Jwk>, Vec<KeyEvent>), String> {
    let doc: Value =
        crate::json::parse_strict(text.as_bytes()).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no \"keys\" array")?;
    let mut keys = Vec::with_capacity(list.len());
    let mut events = Vec::new();
    for (index, jwk) in list.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) => keys.push(k),
            Err(why) => events.push(KeyEvent::SkippedKey {
                index,
                reason: why.into_owned(),
            }),
        }
    }
    Ok((keys, events))
}

/// `max-age` from a `Cache-Control` value (`no-store` and `no-cache` mean "no advice").
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return None;
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok();
        }
    }
    age
}

/// The OIDC discovery document's URL for `issuer`.
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

async fn discover<F: Fetch + ?Sized>(
    issuer: &str,
    cfg: &RemoteKeys,
    fetch: &F,
) -> Result<String, String> {
    let url = discovery_url(issuer);
    let response = fetch
        .get(&url, cfg.fetch_timeout)
        .await
        .map_err(|e| format!("OIDC discovery: {e}"))?;
    if !(200..300).contains(&response.status) {
        return Err(format!("OIDC discovery answered HTTP {}", response.status));
    }
    let doc: Value = crate::json::parse_strict(&response.body)
        .map_err(|_| "OIDC discovery document is not JSON".to_owned())?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err("OIDC discovery document names a different issuer".into());
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("OIDC discovery document has no jwks_uri")?;
    check_key_url(uri).map_err(|why| format!("OIDC jwks_uri {why}"))?;
    Ok(uri.to_owned())
}

/// Key URLs must be `https://`, except on loopback hosts (for local development and tests).
pub fn check_key_url(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a valid URL")?;
    let host = uri.host().ok_or("has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err("must use https:// (http:// is allowed for loopback hosts only)"),
        _ => Err("must be an https:// URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every remote provider's key-set state, one async lock each: the lock is what makes concurrent
/// requests share one refetch instead of each starting their own. A request waits for the lock
/// either queued on it or, where the runtime asks for that ([`Fetch::pause`]), by polling it on
/// its own timer. Instances that share no memory do the lock's job through a store
/// ([`KeyRing::share`], see [`shared`]).
#[derive(Debug)]
pub struct KeyRing {
    slots: Vec<Option<Slot>>,
    shared: Option<Shared>,
}

/// A store shared with other instances, and each provider's key-set name in it.
#[derive(Debug)]
struct Shared {
    store: Box<dyn SharedKeySets>,
    names: Vec<Option<String>>,
}

#[derive(Debug, Default)]
struct Slot {
    state: futures_util::lock::Mutex<KeySetState>,
    /// When the set in use was fetched (µs), readable without the lock: the verified-token cache
    /// keys its entries to it, so a new key set invalidates every cached token of the provider.
    generation: AtomicU64,
}

/// How often a request that may not queue on the lock (see [`Fetch::pause`]) tries it again.
const LOCK_POLL_STEP: Duration = Duration::from_millis(2);

impl Slot {
    async fn locked<R, F: Fetch + ?Sized>(
        &self,
        fetch: &F,
        f: impl AsyncFnOnce(&mut KeySetState) -> R,
    ) -> R {
        let mut state = loop {
            if let Some(state) = self.state.try_lock() {
                break state;
            }
            if !fetch.pause(LOCK_POLL_STEP).await {
                break self.state.lock().await;
            }
        };
        let out = f(&mut state).await;
        self.generation
            .store(state.fetched_at.unwrap_or(0), Ordering::Release);
        out
    }
}

/// Why no keys could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUnavailable;

impl KeyRing {
    /// A ring with an empty state for each of `remote` (indexed by provider; `false` = no remote keys).
    pub fn new(remote: impl IntoIterator<Item = bool>) -> Self {
        KeyRing {
            slots: remote.into_iter().map(|r| r.then(Slot::default)).collect(),
            shared: None,
        }
    }

    /// Coordinate fetches with other instances through `store`, provider `index`'s state kept
    /// under `names[index]` (see [`shared`]). A provider without a name is fetched as before.
    pub fn share(&mut self, store: Box<dyn SharedKeySets>, names: Vec<Option<String>>) {
        self.shared = Some(Shared { store, names });
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// The shared store and provider `index`'s name in it, if its fetches are coordinated.
    fn shared(&self, index: usize) -> Option<(&dyn SharedKeySets, &str)> {
        let shared = self.shared.as_ref()?;
        let name = shared.names.get(index)?.as_deref()?;
        Some((shared.store.as_ref(), name))
    }

    /// The keys provider `index` should verify a token with `kid` against at `now`, fetching
    /// first when the plan says so, and the generation of that set. Events go to `events` for
    /// the adapter to log.
    pub async fn keys_for<F: Fetch + ?Sized>(
        &self,
        index: usize,
        cfg: &RemoteKeys,
        kid: Option<&str>,
        now: UnixTime,
        fetch: &F,
        events: &mut Vec<KeyEvent>,
    ) -> Result<(Arc<[Jwk]>, u64), KeysUnavailable> {
        let slot = self.slot(index).ok_or(KeysUnavailable)?;
        let shared = self.shared(index);
        slot.locked(fetch, async |state: &mut KeySetState| {
            if state.plan(cfg, kid, now) == Plan::Fetch {
                events.extend(match shared {
                    Some((store, name)) => {
                        let wants = |s: &KeySetState, at| s.plan(cfg, kid, at) == Plan::Fetch;
                        shared::refresh(store, name, state, cfg, now, fetch, wants).await
                    }
                    None => state.refresh(cfg, fetch, now).await,
                });
            }
            let keys = state.keys(cfg, now).ok_or(KeysUnavailable)?;
            Ok((keys, state.fetched_at.unwrap_or(0)))
        })
        .await
    }

    /// The generation of provider `index`'s key set if it is usable at `now` (see [`Slot`]).
    pub fn usable_generation(&self, index: usize, cfg: &RemoteKeys, now: UnixTime) -> Option<u64> {
        let generation = self.slot(index)?.generation.load(Ordering::Acquire);
        (generation != 0
            && now.as_micros() < generation.saturating_add(cfg.max_stale_s * 1_000_000))
        .then_some(generation)
    }

    /// Whether [`refresh`](Self::refresh) without `force` would fetch provider `index`'s set at
    /// `now`: the same test it makes, answered at once without waiting. A slot whose lock is held
    /// (a fetch in progress) counts as wanting one, since `refresh` would queue on it. Lets a
    /// runtime skip scheduling background work that would do nothing.
    pub fn refresh_wanted(&self, index: usize, cfg: &RemoteKeys, now: UnixTime) -> bool {
        self.slot(index).is_some_and(|slot| {
            slot.state
                .try_lock()
                .is_none_or(|state| state.due(now) && state.may_fetch(cfg, now))
        })
    }

    /// Refresh provider `index` now if it is due (or `force`), respecting the minimum interval.
    /// For runtimes that refresh in the background and at start-up.
    pub async fn refresh<F: Fetch + ?Sized>(
        &self,
        index: usize,
        cfg: &RemoteKeys,
        now: UnixTime,
        fetch: &F,
        force: bool,
    ) -> Vec<KeyEvent> {
        let Some(slot) = self.slot(index) else {
            return Vec::new();
        };
        let shared = self.shared(index);
        let wants = |s: &KeySetState, at| (force || s.due(at)) && s.may_fetch(cfg, at);
        slot.locked(fetch, async |state: &mut KeySetState| match shared {
            _ if !wants(state, now) => Vec::new(),
            Some((store, name)) => {
                shared::refresh(store, name, state, cfg, now, fetch, wants).await
            }
            None => state.refresh(cfg, fetch, now).await,
        })
        .await
    }

    /// A copy of provider `index`'s state, once no fetch for it is in progress.
    pub async fn state(&self, index: usize) -> Option<KeySetState> {
        Some(self.slot(index)?.state.lock().await.clone())
    }

    /// Replace provider `index`'s state with one kept outside this ring (see [`KeySetState`]),
    /// rebuilding its parsed keys. Returns whether the provider has a remote key source.
    pub async fn set_state(&self, index: usize, mut state: KeySetState) -> bool {
        let Some(slot) = self.slot(index) else {
            return false;
        };
        state.restore();
        let mut held = slot.state.lock().await;
        *held = state;
        slot.generation
            .store(held.fetched_at.unwrap_or(0), Ordering::Release);
        true
    }

    /// Whether provider `index` holds a usable set at `now`.
    pub async fn ready(&self, index: usize, cfg: &RemoteKeys, now: UnixTime) -> bool {
        match self.slot(index) {
            Some(slot) => slot.state.lock().await.keys(cfg, now).is_some(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests;
