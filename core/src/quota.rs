//! Quotas: how often a consumer (or address, route, header value) may call.
//!
//! The algorithm is GCRA (the generic cell rate algorithm), kept here as a pure transition,
//! [`step`]: `(state, now, rate) -> (verdict, new state)`. A [`CounterStore`] only has to apply
//! that transition atomically for one key — a mutex in memory, a Durable Object, a
//! compare-and-swap loop, a Redis script — so every runtime counts the same way.
//!
//! Why GCRA: unlike fixed windows it has no boundary where twice the limit gets through. Any
//! burst of `limit + k` requests arriving inside one emission interval admits exactly `limit`,
//! wherever the burst falls relative to wall-clock windows; and its whole state is one number.

use std::num::NonZeroU32;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::authz::Permit;
use crate::config::{OnStoreError, Policy, QuotaBy, Route};
use crate::decision::Facts;
use crate::problem::{Reject, StoreUnavailableReason};
use crate::ratelimit::RateLimit;
use crate::time::UnixTime;

pub mod serial;

/// A limit of `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Requests admitted per window (and the largest burst admitted at once).
    pub limit: NonZeroU32,
    /// Window length in microseconds.
    pub window_us: u64,
}

impl Rate {
    /// Time between two requests at the sustained rate. Rounded down, so that a burst of
    /// `limit` requests always fits: the effective window is `limit * interval <= window`.
    pub fn interval_us(&self) -> u64 {
        (self.window_us / u64::from(self.limit.get())).max(1)
    }

    /// The longest a key may run ahead of now: `limit` intervals.
    pub fn burst_us(&self) -> u64 {
        self.interval_us()
            .saturating_mul(u64::from(self.limit.get()))
    }
}

/// A key's whole GCRA state: the theoretical arrival time of the next request, in microseconds
/// since the epoch. A state whose `tat` is in the past is the same as no state at all, so a
/// store may forget it after [`State::expires_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Theoretical arrival time, µs since the epoch.
    pub tat: u64,
}

impl State {
    /// After this instant the state carries no information and may be deleted.
    pub fn expires_at(&self) -> UnixTime {
        UnixTime::from_micros(self.tat)
    }
}

/// The result of one [`step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Requests still admissible right now after this one.
    pub remaining: u32,
    /// Seconds until a request would be admitted again (0 when `allowed` and `remaining > 0`).
    pub retry_after_s: u64,
    /// Seconds until the quota is fully replenished.
    pub reset_s: u64,
}

/// The GCRA transition. Pure: the same inputs always give the same outputs.
///
/// On refusal the state is returned unchanged, so refused requests do not push the
/// caller's next admission further out.
pub fn step(state: Option<State>, now: UnixTime, rate: Rate) -> (Verdict, State) {
    let now = now.as_micros();
    let interval = rate.interval_us();
    let burst = rate.burst_us();
    let tat = state.map_or(now, |s| s.tat.max(now));
    let new_tat = tat.saturating_add(interval);
    if new_tat - now > burst {
        let wait = new_tat - now - burst;
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            retry_after_s: ceil_secs(wait).max(1),
            reset_s: ceil_secs(tat - now),
        };
        return (verdict, State { tat });
    }
    let headroom = burst - (new_tat - now);
    let remaining = (headroom / interval).min(u64::from(u32::MAX)) as u32;
    let verdict = Verdict {
        allowed: true,
        remaining,
        retry_after_s: if remaining == 0 {
            ceil_secs(interval - headroom % interval)
        } else {
            0
        },
        reset_s: ceil_secs(new_tat - now),
    };
    (verdict, State { tat: new_tat })
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Why a store could not apply a transition. Every kind fails the same way for the client
/// (the quota's `on_store_error`); the kinds are for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The store could not be reached, is not configured, or answered with an error.
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// Optimistic concurrency kept losing; the store gave up rather than loop forever.
    Contended,
    /// The store's state or answer could not be read (undecodable, or a poisoned lock).
    Corrupt,
}

impl StoreError {
    /// Every kind, for counters that start every series at zero.
    pub const ALL: [StoreError; 4] = [
        StoreError::Unavailable,
        StoreError::Timeout,
        StoreError::Contended,
        StoreError::Corrupt,
    ];

    /// The kind as the access line and metrics name it.
    pub fn slug(self) -> &'static str {
        match self {
            StoreError::Unavailable => "unavailable",
            StoreError::Timeout => "timeout",
            StoreError::Contended => "contended",
            StoreError::Corrupt => "corrupt",
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreError::Unavailable => "the quota store is unavailable",
            StoreError::Timeout => "the quota store did not answer in time",
            StoreError::Contended => "the quota key stayed contended; the store gave up",
            StoreError::Corrupt => "the quota store's state could not be read",
        })
    }
}

/// Where quota state lives. Implementations apply [`step`] atomically for one key: read the
/// key's [`State`], call `step`, write the new state, with no other update to the same key in
/// between.
///
/// The returned futures are not required to be `Send`: on wasm runtimes they cannot be.
#[allow(async_fn_in_trait)]
pub trait CounterStore {
    /// Apply one GCRA step to `key` at `now` and return the verdict.
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError>;

    /// The verdict [`CounterStore::apply`] would give `key` at `now`, with nothing written: for
    /// state that is only read, such as whether a lockout block holds ([`crate::lockout`]).
    /// No default: a store that answered it by spending would block whoever it was asked about.
    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError>;

    /// Spend one request on each of a route's quotas, in order: one result per spend, up to and
    /// including the first refusal (later quotas are not asked).
    ///
    /// This default asks [`CounterStore::apply`] one key at a time, so what earlier quotas
    /// counted stands when a later one refuses (a Durable Object or a key-value entry holds one
    /// key). A store that can see every key at once — one lock, one Redis script — overrides it
    /// to spend all or none: then a refused request costs the caller nothing on any quota.
    async fn apply_all(&self, spends: &[Spend], now: UnixTime) -> Vec<Result<Verdict, StoreError>> {
        let mut results = Vec::with_capacity(spends.len());
        for spend in spends {
            let result = self.apply(spend.key.as_str(), spend.rate, now).await;
            let refused = matches!(result, Ok(Verdict { allowed: false, .. }));
            results.push(result);
            if refused {
                break;
            }
        }
        results
    }

    /// What a quota that leaves `on_store_error` out does when this store fails: the
    /// deployment's choice (natively `--counter-store-on-error`), failing closed unless the
    /// operator chose otherwise.
    fn on_error(&self) -> OnStoreError {
        OnStoreError::Deny
    }
}

/// One request's spend on one quota: the key to count under and the quota's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// Whose bucket of which quota.
    pub key: QuotaKey,
    /// The quota's rate.
    pub rate: Rate,
}

/// A quota's key in a store: which quota (its name, rate and what it counts by) and whose
/// bucket (a digest of the subject). The two parts are apart so that a store that shards can
/// keep one subject's buckets together: the Redis store puts the bucket in a Cluster hash tag,
/// so a request's quotas that count the same subject are one slot and one script call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey {
    /// `{quota}|{limit}/{window}us|{by}|{bucket}`: the bucket is what follows the last `|`.
    text: String,
}

impl QuotaKey {
    /// A key a store was handed whole ([`CounterStore::apply`]), read back into its parts.
    pub fn from_text(text: &str) -> QuotaKey {
        QuotaKey {
            text: text.to_owned(),
        }
    }

    /// The whole key, as stores that hold one key per quota and subject name it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The quota part: name, rate and what it counts by.
    pub fn quota(&self) -> &str {
        self.text.rsplit_once('|').map_or("", |(quota, _)| quota)
    }

    /// The bucket: 32 lower-case hex digits of the subject's digest.
    pub fn bucket(&self) -> &str {
        self.text.rsplit_once('|').map_or("", |(_, bucket)| bucket)
    }
}

impl std::fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A process-local store: a mutex around a map. Exact within one process. Expired states are
/// swept as the map grows, so memory stays bounded by the number of keys active in a window.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    states: std::collections::HashMap<String, State>,
    sweep_at: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.states.len()).unwrap_or(0)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`CounterStore::apply_all`] under the lock: all or none. Synchronous; the trait impl
    /// wraps it.
    pub fn apply_all_now(
        &self,
        spends: &[Spend],
        now: UnixTime,
    ) -> Vec<Result<Verdict, StoreError>> {
        let Ok(mut inner) = self.inner.lock() else {
            return vec![Err(StoreError::Corrupt); spends.len()];
        };
        let MemoryInner { states, sweep_at } = &mut *inner;
        let old = spends.iter().map(|s| states.get(s.key.as_str()).copied());
        let (verdicts, new) = step_all(old, spends, now);
        for (spend, state) in spends.iter().zip(new.into_iter().flatten()) {
            states.insert(spend.key.as_str().to_owned(), state);
        }
        sweep(states, sweep_at, now);
        verdicts.into_iter().map(Ok).collect()
    }

    /// [`step`]'s verdict under the lock, with nothing written. Synchronous; the trait impl
    /// wraps it.
    pub fn peek_now(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Corrupt)?;
        Ok(step(inner.states.get(key).copied(), now, rate).0)
    }

    /// Apply [`step`] under the lock. Synchronous; the trait impl wraps it.
    pub fn apply_now(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let mut inner = self.inner.lock().map_err(|_| StoreError::Corrupt)?;
        let MemoryInner { states, sweep_at } = &mut *inner;
        let (verdict, state) = step(states.get(key).copied(), now, rate);
        if verdict.allowed {
            states.insert(key.to_owned(), state);
        }
        sweep(states, sweep_at, now);
        Ok(verdict)
    }
}

/// Forget expired states once the map has doubled since the last sweep.
fn sweep(
    states: &mut std::collections::HashMap<String, State>,
    sweep_at: &mut usize,
    now: UnixTime,
) {
    if states.len() >= (*sweep_at).max(1024) {
        let now_us = now.as_micros();
        states.retain(|_, s| s.tat > now_us);
        *sweep_at = states.len() * 2;
    }
}

impl CounterStore for MemoryStore {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.apply_now(key, rate, now)
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.peek_now(key, rate, now)
    }

    /// All or none, under one lock.
    async fn apply_all(&self, spends: &[Spend], now: UnixTime) -> Vec<Result<Verdict, StoreError>> {
        self.apply_all_now(spends, now)
    }
}

impl<T: CounterStore + ?Sized> CounterStore for std::sync::Arc<T> {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        (**self).apply(key, rate, now).await
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        (**self).peek(key, rate, now).await
    }

    async fn apply_all(&self, spends: &[Spend], now: UnixTime) -> Vec<Result<Verdict, StoreError>> {
        (**self).apply_all(spends, now).await
    }

    fn on_error(&self) -> OnStoreError {
        (**self).on_error()
    }
}

/// The verdicts of spending `spends` on states `old` (read atomically, in order) at `now`: one
/// per spend up to and including the first refusal, and the states to write — all of them when
/// every quota admits, none otherwise. Every all-or-none store decides with this, so each
/// counts exactly as [`step`] does.
pub fn step_all(
    old: impl IntoIterator<Item = Option<State>>,
    spends: &[Spend],
    now: UnixTime,
) -> (Vec<Verdict>, Option<Vec<State>>) {
    let mut verdicts = Vec::with_capacity(spends.len());
    let mut states = Vec::with_capacity(spends.len());
    for (state, spend) in old.into_iter().zip(spends) {
        let (verdict, new) = step(state, now, spend.rate);
        verdicts.push(verdict);
        if !verdict.allowed {
            return (verdicts, None);
        }
        states.push(new);
    }
    (verdicts, Some(states))
}

/// Headers describing the tightest quota on an admitted request, relayed on the origin's response.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The quota with the fewest requests left, if the route has any.
    pub rate_limit: Option<RateLimit>,
}

/// The quota phase: every quota on the route must admit the request. The store spends them
/// in the order the route lists them (all or none where it can, see
/// [`CounterStore::apply_all`]). A store failure does what the quota's `on_store_error` says,
/// or, when it says nothing, what the store's deployment chose ([`CounterStore::on_error`]);
/// the failure is noted in `failed` for the access line either way.
pub(crate) async fn admit<S: CounterStore + ?Sized>(
    policy: &Policy,
    route: &Route,
    permit: &Permit<'_>,
    facts: &Facts<'_>,
    headers: &HeaderMap,
    store: &S,
    failed: &mut Option<StoreError>,
) -> Result<Grant, Reject> {
    if route.quotas.is_empty() {
        return Ok(Grant::default());
    }
    let quotas: Vec<_> = route.quotas.iter().map(|&i| &policy.quotas[i]).collect();
    let spends: Vec<Spend> = quotas
        .iter()
        .map(|quota| Spend {
            key: store_key(
                &quota.name,
                quota.rate,
                &quota.by,
                &subject(&quota.by, route, permit, facts.client.addr, headers),
            ),
            rate: quota.rate,
        })
        .collect();
    let results = store.apply_all(&spends, facts.ctx.now).await;
    let mut tightest: Option<RateLimit> = None;
    for (quota, result) in quotas.into_iter().zip(results) {
        let verdict = match result {
            Ok(v) => v,
            Err(error) => {
                *failed = Some(error);
                on_store_error(quota.on_store_error.unwrap_or_else(|| store.on_error()))?;
                continue;
            }
        };
        let rate_limit = |remaining, reset_s| RateLimit {
            name: quota.name.clone(),
            limit: quota.rate.limit,
            window_s: quota.rate.window_us / 1_000_000,
            remaining,
            reset_s,
        };
        if !verdict.allowed {
            return Err(Reject::quota_exceeded(
                verdict.retry_after_s,
                rate_limit(0, verdict.retry_after_s),
                format!(
                    "Quota \"{}\" allows {} requests per {} s.",
                    quota.name,
                    quota.rate.limit,
                    quota.rate.window_us / 1_000_000
                ),
            ));
        }
        if tightest
            .as_ref()
            .is_none_or(|t| verdict.remaining < t.remaining)
        {
            tightest = Some(rate_limit(verdict.remaining, verdict.reset_s));
        }
    }
    Ok(Grant {
        rate_limit: tightest,
    })
}

/// What a store failure does under `choice`: nothing (the check is skipped), or a 503 with
/// nothing forwarded.
pub(crate) fn on_store_error(choice: OnStoreError) -> Result<(), Reject> {
    match choice {
        OnStoreError::Allow => Ok(()),
        OnStoreError::Deny => Err(Reject::new(
            StoreUnavailableReason::StoreError,
            "The quota store did not answer; the request was not forwarded.",
        )),
    }
}

/// Who a quota counts. Requests that lack the subject (no client address, no such header)
/// share one bucket, so leaving the header out never escapes the limit.
fn subject(
    by: &QuotaBy,
    route: &Route,
    permit: &Permit<'_>,
    client: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> String {
    match by {
        QuotaBy::Consumer => permit.consumer().unwrap_or_default().to_owned(),
        QuotaBy::Ip => client.map(|ip| ip.to_string()).unwrap_or_default(),
        QuotaBy::Route => route.id.clone(),
        QuotaBy::Header(name) => {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                // Several copies of the header: count them as one distinct subject, never as "absent".
                (Some(_), Some(_)) => {
                    let all: Vec<_> = headers
                        .get_all(name)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    all.join("\n")
                }
                (None, _) => String::new(),
            }
        }
    }
}

/// The store key for one quota and subject. Subjects are hashed so that any header value makes
/// a short, printable key that cannot collide with another quota's. The rate is part of the
/// key: a policy reload keeps the state of a quota whose definition is unchanged, and a quota
/// whose limit or window changed starts afresh rather than reading state made under another
/// rate.
pub fn store_key(quota: &str, rate: Rate, by: &QuotaBy, subject: &str) -> QuotaKey {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(subject.as_bytes());
    QuotaKey {
        text: format!(
            "{quota}|{}/{}us|{}|{}",
            rate.limit,
            rate.window_us,
            by.label(),
            hex::encode(&digest[..16])
        ),
    }
}

#[cfg(test)]
mod tests;
