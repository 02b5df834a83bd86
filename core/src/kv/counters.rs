//! Quota counters in an [`AtomicStore`], updated with compare-and-swap.
//!
//! Each quota key holds its GCRA state (the theoretical arrival time, 8 bytes little-endian). A
//! request reads it through a compare-and-swap handle, applies the pure [`quota::step`], and
//! swaps the new state in only if nobody changed it meanwhile; if someone did, it retries on the
//! fresh value, at most [`MAX_ATTEMPTS`] times, then gives up with [`StoreError::Contended`]. A
//! refusal changes nothing, so it writes nothing. An absent key is created first (see
//! [`super`]), so that two instances cannot both count from nothing.
//!
//! Store errors are [`StoreError::Unavailable`]: the core answers 503 unless the quota says
//! `on_store_error: allow`.
//!
//! Old entries: a state whose time has passed means nothing, but the store has no expiry. After
//! about one in [`SWEEP_ODDS`] responses that counted a quota, at most once per
//! [`SWEEP_INTERVAL`] across instances, [`KvCounters::sweep`] deletes up to
//! [`SWEEP_MAX_DELETES`] quota keys that expired more than [`SWEEP_GRACE`] ago. A request for
//! such a key arriving in the instant between the sweep's read and its delete would be forgiven
//! that one request.

use std::cell::Cell;
use std::time::Duration;

use super::{decode_u64, encode_u64, AtomicStore, Swap, PREFIX};
use crate::event::{Event, Kind, Level};
use crate::quota::{self, CounterStore, Rate, State, StoreError, Verdict};
use crate::time::{Clock, UnixTime};

/// Compare-and-swap attempts per quota check before giving up.
pub const MAX_ATTEMPTS: usize = 16;
/// One response in this many that counted a quota considers a sweep.
pub const SWEEP_ODDS: u64 = 256;
/// At most one sweep this often, whatever the number of instances.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// Only states expired at least this long ago are deleted.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);
/// Most keys one sweep deletes.
pub const SWEEP_MAX_DELETES: usize = 1000;

/// Where the next permitted sweep time is kept.
const SWEEP_KEY: &str = "portcullis:quota-sweep";

fn quota_prefix() -> String {
    format!("{PREFIX}quota:")
}

/// The [`CounterStore`] on one request's store.
#[derive(Debug)]
pub struct KvCounters<'a, S> {
    store: &'a S,
    used: Cell<bool>,
}

impl<'a, S: AtomicStore> KvCounters<'a, S> {
    /// Counters in `store`.
    pub fn new(store: &'a S) -> Self {
        KvCounters {
            store,
            used: Cell::new(false),
        }
    }

    /// Housekeeping after the response, so the client does not wait for it: if this request
    /// counted a quota and `roll` (a random number, asked for only then) comes up one in
    /// [`SWEEP_ODDS`], delete quota keys expired more than [`SWEEP_GRACE`] ago, provided this
    /// instance wins the right to sweep now. Best effort: every failure just ends the sweep.
    /// What was deleted, for the operator's log.
    pub fn sweep(&self, roll: impl FnOnce() -> u64, clock: &dyn Clock) -> Option<Event> {
        if !self.used.get() || roll() % SWEEP_ODDS != 0 {
            return None;
        }
        let now = clock.now();
        if !self.claim_sweep(now) {
            return None;
        }
        let keys = self.store.keys().ok()?;
        let prefix = quota_prefix();
        let cutoff = now.as_micros().saturating_sub(micros(SWEEP_GRACE));
        let mut deleted = 0;
        for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
            if deleted >= SWEEP_MAX_DELETES {
                break;
            }
            let Ok(Some(value)) = self.store.get(key) else {
                continue;
            };
            let expired = decode_u64(&value).is_none_or(|tat| tat < cutoff);
            if expired && self.store.delete(key).is_ok() {
                deleted += 1;
            }
        }
        (deleted > 0).then(|| {
            let text = format!("deleted {deleted} expired quota keys");
            Event::new(now, Level::Info, Kind::QuotaKeysExpired, text).with("deleted", deleted)
        })
    }

    /// Move the next permitted sweep time forward with compare-and-swap; `true` if this instance
    /// did, and so may sweep now.
    fn claim_sweep(&self, now: UnixTime) -> bool {
        let Ok(cas) = self.store.watch(SWEEP_KEY) else {
            return false;
        };
        let Ok(current) = self.store.current(&cas) else {
            return false;
        };
        let next = current.as_deref().and_then(decode_u64).unwrap_or(0);
        if now.as_micros() < next {
            return false;
        }
        let after = now.saturating_add(SWEEP_INTERVAL).as_micros();
        self.store.swap(cas, &encode_u64(after)).is_ok()
    }
}

impl<S: AtomicStore> CounterStore for KvCounters<'_, S> {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.used.set(true);
        let store = self.store;
        let key = format!("{}{key}", quota_prefix());
        let failed = |_: S::Error| StoreError::Unavailable;
        let mut cas = store.watch(&key).map_err(failed)?;
        let mut created = false;
        for _ in 0..MAX_ATTEMPTS {
            let current = store.current(&cas).map_err(failed)?;
            if current.is_none() && !created {
                created = true;
                if store.create(&key).is_ok() {
                    cas = store.watch(&key).map_err(failed)?;
                    continue;
                }
            }
            let state = current
                .as_deref()
                .and_then(decode_u64)
                .map(|tat| State { tat });
            let (verdict, next) = quota::step(state, now, rate);
            if !verdict.allowed {
                return Ok(verdict);
            }
            match store.swap(cas, &encode_u64(next.tat)) {
                Ok(()) => return Ok(verdict),
                Err(Swap::Changed(fresh)) => cas = fresh,
                Err(Swap::Failed(e)) => return Err(failed(e)),
            }
        }
        Err(StoreError::Contended)
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.used.set(true);
        let key = format!("{}{key}", quota_prefix());
        let failed = |_: S::Error| StoreError::Unavailable;
        let cas = self.store.watch(&key).map_err(failed)?;
        let current = self.store.current(&cas).map_err(failed)?;
        let state = current
            .as_deref()
            .and_then(decode_u64)
            .map(|tat| State { tat });
        Ok(quota::step(state, now, rate).0)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
