//! Verified-token cache: a token seen again is not verified again.
//!
//! What it promises:
//! - entries are keyed by provider and the SHA-256 of the whole token, so a token that differs in
//!   any byte (one byte of its signature, say) is a different entry and gets verified;
//! - only successful verifications are cached, never failures;
//! - an entry is used only until the token's `exp` plus the provider's leeway, and only while
//!   the provider's key set is the one the token was verified against (a refetched set, or one
//!   past its `jwks_max_stale_s`, means verifying again);
//! - it is bounded in entries and in bytes (token length stands in for the claims it caches);
//!   when full, the oldest entries go first.
//!
//! Route checks (scopes, claims) still run on every request: the cache replaces signature and
//! registered-claim checks only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::authn::Principal;
use crate::time::UnixTime;

/// Default bound on entries.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default bound on the tokens held, in bytes.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// Per-entry bookkeeping cost added to the token's length, in bytes.
const ENTRY_OVERHEAD: usize = 256;

type Key = (usize, [u8; 32]);

/// The cache. Cheap to share; one short lock per lookup.
#[derive(Debug)]
pub struct TokenCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    principal: Arc<Principal>,
    valid_until: u64,
    generation: u64,
    cost: usize,
}

/// Where a token is looked up: its provider and digest.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    key: Key,
    cost: usize,
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens and `max_bytes`; zero entries disables it.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        TokenCache {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether the cache holds anything at all.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// The lookup key for `token` at provider `provider`.
    pub fn lookup(provider: usize, token: &str) -> Lookup {
        Lookup {
            key: (provider, Sha256::digest(token.as_bytes()).into()),
            cost: token.len() + ENTRY_OVERHEAD,
        }
    }

    /// The cached principal for a token verified under key-set `generation`, if still valid at `now`.
    pub fn get(&self, at: &Lookup, generation: u64, now: UnixTime) -> Option<Arc<Principal>> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.inner.lock().ok()?;
        let entry = inner.entries.get(&at.key)?;
        if entry.generation == generation && now.as_micros() < entry.valid_until {
            return Some(Arc::clone(&entry.principal));
        }
        let stale = inner.entries.remove(&at.key);
        if let Some(e) = stale {
            inner.bytes -= e.cost;
        }
        None
    }

    /// Remember a successful verification until `valid_until`.
    pub fn insert(
        &self,
        at: &Lookup,
        generation: u64,
        valid_until: UnixTime,
        principal: Arc<Principal>,
    ) {
        if !self.enabled() || at.cost > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let entry = Entry {
            principal,
            valid_until: valid_until.as_micros(),
            generation,
            cost: at.cost,
        };
        if let Some(old) = inner.entries.insert(at.key, entry) {
            inner.bytes -= old.cost;
        } else {
            inner.order.push_back(at.key);
        }
        inner.bytes += at.cost;
        while inner.entries.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.entries.remove(&oldest) {
                inner.bytes -= e.cost;
            }
        }
        // Keys of entries removed by `get` linger in `order`; drop them once they dominate.
        if inner.order.len() > 2 * inner.entries.len() + 64 {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
    }

    /// Entries held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
