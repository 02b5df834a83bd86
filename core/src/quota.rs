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
use crate::context::RequestContext;
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

    fn burst_us(&self) -> u64 {
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
/// The returned future is not required to be `Send`: on wasm runtimes it cannot be.
#[allow(async_fn_in_trait)]
pub trait CounterStore {
    /// Apply one GCRA step to `key` at `now` and return the verdict.
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError>;
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

    /// Apply [`step`] under the lock. Synchronous; the trait impl wraps it.
    pub fn apply_now(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let mut inner = self.inner.lock().map_err(|_| StoreError::Corrupt)?;
        let MemoryInner { states, sweep_at } = &mut *inner;
        let (verdict, state) = step(states.get(key).copied(), now, rate);
        if verdict.allowed {
            states.insert(key.to_owned(), state);
        }
        if states.len() >= (*sweep_at).max(1024) {
            let now_us = now.as_micros();
            states.retain(|_, s| s.tat > now_us);
            *sweep_at = states.len() * 2;
        }
        Ok(verdict)
    }
}

impl CounterStore for MemoryStore {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.apply_now(key, rate, now)
    }
}

impl<T: CounterStore + ?Sized> CounterStore for std::sync::Arc<T> {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        (**self).apply(key, rate, now).await
    }
}

/// Headers describing the tightest quota on an admitted request, relayed on the origin's response.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// The quota with the fewest requests left, if the route has any.
    pub rate_limit: Option<RateLimit>,
}

/// The quota phase: every quota on the route must admit the request.
///
/// Quotas are checked in the order the route lists them; a refusal by a later quota does not
/// give back what earlier ones counted (as with every gateway that counts in a shared store).
pub(crate) async fn admit<S: CounterStore + ?Sized>(
    policy: &Policy,
    route: &Route,
    permit: &Permit<'_>,
    ctx: &RequestContext,
    headers: &HeaderMap,
    store: &S,
) -> Result<Grant, Reject> {
    let mut tightest: Option<RateLimit> = None;
    for &index in &route.quotas {
        let quota = &policy.quotas[index];
        let subject = subject(&quota.by, route, permit, ctx, headers);
        let key = store_key(&quota.name, quota.rate, &quota.by, &subject);
        let verdict = match store.apply(&key, quota.rate, ctx.now).await {
            Ok(v) => v,
            Err(_) => match quota.on_store_error {
                OnStoreError::Allow => continue,
                OnStoreError::Deny => {
                    return Err(Reject::new(
                        StoreUnavailableReason::StoreError,
                        "The quota store did not answer; the request was not forwarded.",
                    ))
                }
            },
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

/// Who a quota counts. Requests that lack the subject (no client address, no such header)
/// share one bucket, so leaving the header out never escapes the limit.
fn subject(
    by: &QuotaBy,
    route: &Route,
    permit: &Permit<'_>,
    ctx: &RequestContext,
    headers: &HeaderMap,
) -> String {
    match by {
        QuotaBy::Consumer => permit.consumer().unwrap_or_default().to_owned(),
        QuotaBy::Ip => ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
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
pub fn store_key(quota: &str, rate: Rate, by: &QuotaBy, subject: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(subject.as_bytes());
    format!(
        "{quota}|{}/{}us|{}|{}",
        rate.limit,
        rate.window_us,
        by.label(),
        hex::encode(&digest[..16])
    )
}

#[cfg(test)]
mod tests;
