//! Quota counters in the key-value store, updated with compare-and-swap
//! (`wasi:keyvalue/atomics@0.2.0-draft2`).
//!
//! Each quota key holds its GCRA state (the theoretical arrival time, 8 bytes little-endian). A
//! request reads it through a CAS handle, applies the core's pure [`quota::step`], and swaps the
//! new state in only if nobody changed it meanwhile; if someone did, it retries on the fresh
//! value, at most [`MAX_ATTEMPTS`] times, then gives up with [`StoreError::Contended`]. A refusal
//! changes nothing, so it writes nothing.
//!
//! A key's first write needs care: Spin's SQLite store turns a swap on an absent key into a plain
//! upsert, which two instances could both win. So an absent key is first created with
//! `increment(key, 0)` (atomic everywhere; it leaves an existing value as it is), and the swap
//! then compares against that. With that, counting is exact on Spin's SQLite store and on Redis
//! (`WATCH`/`MULTI`); other backends give whatever their `cas` promises.
//!
//! Store errors are [`StoreError::Unavailable`]: the core answers 503 unless the quota says
//! `on_store_error: allow`. Store calls are synchronous in WASI 0.2, so there is no timeout of
//! our own; the host's store timeouts apply.
//!
//! Old entries: a state whose time has passed means nothing, but the store has no expiry. After
//! about one in [`SWEEP_ODDS`] responses that counted a quota, at most once per
//! [`SWEEP_INTERVAL`] across instances, [`sweep`] deletes up to [`SWEEP_MAX_DELETES`] quota keys
//! that expired more than [`SWEEP_GRACE`] ago. A request for such a key arriving in the instant
//! between the sweep's read and its delete would be forgiven that one request.

use std::cell::Cell;
use std::time::Duration;

use portcullis_core::quota::{self, CounterStore, Rate, State, StoreError, Verdict};
use portcullis_core::UnixTime;
use portcullis_core::{Event, Level, LogSink};
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

use crate::store;

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

const SWEEP_KEY: &str = "portcullis:quota-sweep";

fn quota_prefix() -> String {
    format!("{}quota:", store::PREFIX)
}

/// The [`CounterStore`] on the request's store.
pub struct KvCounters<'a> {
    bucket: &'a Bucket,
    used: Cell<bool>,
}

impl<'a> KvCounters<'a> {
    /// Counters in `bucket`.
    pub fn new(bucket: &'a Bucket) -> Self {
        KvCounters {
            bucket,
            used: Cell::new(false),
        }
    }

    /// Whether any quota was counted (only then is a sweep worth considering).
    pub fn used(&self) -> bool {
        self.used.get()
    }
}

impl CounterStore for KvCounters<'_> {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        self.used.set(true);
        let key = format!("{}{key}", quota_prefix());
        let failed = |_: atomics::Error| StoreError::Unavailable;
        let mut cas = Cas::new(self.bucket, &key).map_err(failed)?;
        let mut created = false;
        for _ in 0..MAX_ATTEMPTS {
            let current = cas.current().map_err(failed)?;
            if current.is_none() && !created {
                created = true;
                if atomics::increment(self.bucket, &key, 0).is_ok() {
                    cas = Cas::new(self.bucket, &key).map_err(failed)?;
                    continue;
                }
            }
            let (verdict, next) = quota::step(current.as_deref().and_then(decode), now, rate);
            if !verdict.allowed {
                return Ok(verdict);
            }
            match atomics::swap(cas, &encode(next)) {
                Ok(()) => return Ok(verdict),
                Err(CasError::CasFailed(fresh)) => cas = fresh,
                Err(CasError::StoreError(e)) => return Err(failed(e)),
            }
        }
        Err(StoreError::Contended)
    }
}

/// A state as stored: `tat` in 8 bytes, little-endian (the width `increment` uses, so creating a
/// key with `increment(key, 0)` yields a valid "no state yet").
fn encode(state: State) -> [u8; 8] {
    state.tat.to_le_bytes()
}

/// A stored state; anything that is not 8 bytes (such as Redis's `"0"` from `increment`) is no
/// state at all.
fn decode(bytes: &[u8]) -> Option<State> {
    let tat = u64::from_le_bytes(bytes.try_into().ok()?);
    Some(State { tat })
}

/// Delete quota keys expired more than [`SWEEP_GRACE`] ago, if this instance wins the right to
/// sweep now. Best effort: every failure just ends the sweep.
pub fn sweep(bucket: &Bucket, now: UnixTime) {
    if !claim_sweep(bucket, now) {
        return;
    }
    let Ok(listing) = bucket.list_keys(None) else {
        return;
    };
    let prefix = quota_prefix();
    let cutoff = now.as_micros().saturating_sub(io_micros(SWEEP_GRACE));
    let mut deleted = 0;
    for key in listing.keys.iter().filter(|k| k.starts_with(&prefix)) {
        if deleted >= SWEEP_MAX_DELETES {
            break;
        }
        let Ok(Some(value)) = bucket.get(key) else {
            continue;
        };
        let expired = decode(&value).is_none_or(|s| s.tat < cutoff);
        if expired && bucket.delete(key).is_ok() {
            deleted += 1;
        }
    }
    if deleted > 0 {
        let text = format!("deleted {deleted} expired quota keys");
        crate::Stdio.event(&Event::new(now, Level::Info, text));
    }
}

/// Move the next permitted sweep time forward with compare-and-swap; `true` if this instance
/// did, and so may sweep now.
fn claim_sweep(bucket: &Bucket, now: UnixTime) -> bool {
    let Ok(cas) = Cas::new(bucket, SWEEP_KEY) else {
        return false;
    };
    let Ok(current) = cas.current() else {
        return false;
    };
    let next = current.as_deref().and_then(decode).map_or(0, |s| s.tat);
    if now.as_micros() < next {
        return false;
    }
    let after = now.as_micros().saturating_add(io_micros(SWEEP_INTERVAL));
    atomics::swap(cas, &after.to_le_bytes()).is_ok()
}

fn io_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
