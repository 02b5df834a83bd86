//! Request ids: 128 random bits, hex-encoded. The randomness comes from the adapter
//! (`getrandom`, `crypto.getRandomValues`, WASI random), never from the core.

use crate::time::UnixTime;

/// The header carrying the request id: to the origin, and on every response.
pub const REQUEST_ID_HEADER: &str = "x-portcullis-request-id";

/// The request id for 16 random bytes.
pub fn from_random(bytes: [u8; 16]) -> String {
    hex::encode(bytes)
}

/// Request ids served by one refill of an [`IdPool`].
pub const IDS_PER_REFILL: usize = 128;

const POOL_BYTES: usize = IDS_PER_REFILL * 16;

/// Randomness fetched ahead for request ids: one call to the runtime's source refills it for
/// [`IDS_PER_REFILL`] ids. Natively, one system call per request was a measurable share of a
/// request's cost (see `docs/benchmarks.md`), and pooling changes nothing about where the bits
/// come from. Every byte is handed out once and zeroed, until a refill overwrites them all.
#[derive(Debug)]
pub struct IdPool {
    bytes: [u8; POOL_BYTES],
    used: usize,
}

impl IdPool {
    /// An empty pool: the first id refills it.
    pub const fn new() -> Self {
        IdPool {
            bytes: [0; POOL_BYTES],
            used: POOL_BYTES,
        }
    }

    /// The next id, refilling the pool with `fill` first when it is used up; `None` when `fill`
    /// reports that the runtime had no randomness to give.
    pub fn next_id(&mut self, fill: impl FnOnce(&mut [u8]) -> bool) -> Option<String> {
        if self.used == POOL_BYTES {
            if !fill(&mut self.bytes) {
                return None;
            }
            self.used = 0;
        }
        let mut out = [0u8; 16];
        let taken = &mut self.bytes[self.used..self.used + 16];
        out.copy_from_slice(taken);
        taken.fill(0);
        self.used += 16;
        Some(from_random(out))
    }
}

impl Default for IdPool {
    fn default() -> Self {
        IdPool::new()
    }
}

/// The id when the runtime refuses randomness (it practically never does once booted): the
/// clock and a process counter. Still unique within the process, which is all a log needs, and
/// answering the request beats failing it.
pub fn fallback(now: UnixTime, counter: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&now.as_micros().to_be_bytes());
    bytes[8..].copy_from_slice(&counter.to_be_bytes());
    from_random(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A source that counts up in 8-byte steps from `*next`, so no two 8 bytes it gives agree.
    fn counting(next: &mut u64) -> impl FnOnce(&mut [u8]) -> bool + '_ {
        move |bytes| {
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&next.to_be_bytes());
                *next += 1;
            }
            true
        }
    }

    #[test]
    fn one_refill_serves_a_pool_of_ids() {
        let mut pool = IdPool::new();
        let mut refills = 0;
        let mut next = 1;
        let ids: HashSet<String> = (0..IDS_PER_REFILL * 2)
            .filter_map(|_| {
                pool.next_id(|bytes| {
                    refills += 1;
                    counting(&mut next)(bytes)
                })
            })
            .collect();
        assert_eq!(ids.len(), IDS_PER_REFILL * 2);
        assert_eq!(refills, 2);
        assert!(ids.contains("00000000000000010000000000000002"), "{ids:?}");
    }

    #[test]
    fn handed_out_bytes_are_wiped() {
        let mut pool = IdPool::new();
        let mut next = 1;
        assert_eq!(
            pool.next_id(counting(&mut next)).as_deref(),
            Some("00000000000000010000000000000002")
        );
        assert!(pool.bytes[..16].iter().all(|&b| b == 0));
        assert_eq!(pool.bytes[16..24], 3u64.to_be_bytes());
    }

    #[test]
    fn no_randomness_gives_no_id_until_a_refill_works() {
        let mut pool = IdPool::default();
        assert_eq!(pool.next_id(|_| false), None);
        let mut next = 0;
        assert!(pool.next_id(counting(&mut next)).is_some());
    }

    #[test]
    fn fallback_ids_are_the_clock_and_the_counter() {
        let now = UnixTime::from_secs(1);
        assert_ne!(fallback(now, 0), fallback(now, 1));
        assert_eq!(fallback(now, 2), "00000000000f42400000000000000002");
    }
}
