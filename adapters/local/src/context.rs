//! The facts about a request that only the runtime knows: the clock, a fresh id, the peer.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::request_id::{self, IdPool};
use portcullis_core::{Clock, RequestContext, UnixTime};

/// The context for a request that just arrived from `peer`.
pub fn for_request(peer: IpAddr) -> RequestContext {
    RequestContext {
        now: now(),
        request_id: new_request_id(),
        peer: Some(peer),
    }
}

/// The wall clock, as the core's [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        now()
    }
}

/// The wall clock as the core counts time. A clock set before 1970 reads as the epoch rather
/// than failing requests; quotas then simply see every request at the same instant.
pub fn now() -> UnixTime {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    crate::fault::shifted(UnixTime::from_duration(since_epoch))
}

/// 128 random bits from the OS, hex-encoded, drawn from a per-thread [`IdPool`] that one
/// `getrandom` call refills for many ids.
///
/// Should the OS refuse randomness, the id is the core's [`request_id::fallback`], from the
/// clock and a process counter.
pub fn new_request_id() -> String {
    POOL.with_borrow_mut(|pool| pool.next_id(|bytes| getrandom::getrandom(bytes).is_ok()))
        .unwrap_or_else(|| {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            request_id::fallback(now(), COUNTER.fetch_add(1, Ordering::Relaxed))
        })
}

thread_local! {
    static POOL: RefCell<IdPool> = const { RefCell::new(IdPool::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// Across refills of the pool no id repeats: a refill replaces every byte.
    #[test]
    fn ids_stay_distinct_across_refills() {
        use portcullis_core::request_id::IDS_PER_REFILL;

        let ids: std::collections::HashSet<String> = (0..IDS_PER_REFILL * 3 + 5)
            .map(|_| new_request_id())
            .collect();
        assert_eq!(ids.len(), IDS_PER_REFILL * 3 + 5);
    }

    #[test]
    fn the_clock_is_after_2020() {
        assert!(now().as_secs() > 1_577_836_800);
    }
}
