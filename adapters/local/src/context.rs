//! The facts about a request that only the runtime knows: the clock, a fresh id, the peer.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::{request_id, Clock, RequestContext, UnixTime};

/// The context for a request that just arrived from `peer`.
pub fn for_request(peer: IpAddr) -> RequestContext {
    RequestContext {
        now: now(),
        request_id: new_request_id(),
        client_ip: Some(peer),
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
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    UnixTime::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// 128 random bits from the OS, hex-encoded.
///
/// The bits are drawn from a per-thread pool that one `getrandom` call refills for
/// [`IDS_PER_REFILL`] ids: one system call per request was a measurable share of a request's cost
/// (see `docs/benchmarks.md`), and pooling changes nothing about where the bits come from.
///
/// Should the OS refuse randomness (it practically never does once booted), the id falls back to
/// the clock and a process counter: still unique within the process, which is all a log needs,
/// and answering the request beats failing it.
pub fn new_request_id() -> String {
    let bytes = POOL.with_borrow_mut(RandomPool::take).unwrap_or_else(|| {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&now().as_micros().to_be_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        bytes
    });
    request_id::from_random(bytes)
}

/// Request ids served by one refill of a thread's pool.
pub const IDS_PER_REFILL: usize = 128;

thread_local! {
    static POOL: RefCell<RandomPool> = const { RefCell::new(RandomPool { bytes: [0; IDS_PER_REFILL * 16], used: IDS_PER_REFILL * 16 }) };
}

/// OS randomness fetched ahead; every byte is handed out once, then overwritten by the refill.
struct RandomPool {
    bytes: [u8; IDS_PER_REFILL * 16],
    used: usize,
}

impl RandomPool {
    fn take(&mut self) -> Option<[u8; 16]> {
        if self.used == self.bytes.len() {
            getrandom::getrandom(&mut self.bytes).ok()?;
            self.used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.bytes[self.used..self.used + 16]);
        self.bytes[self.used..self.used + 16].fill(0);
        self.used += 16;
        Some(out)
    }
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
