//! The facts about a request that only the runtime knows: the clock, a fresh id, the peer.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_core::{request_id, RequestContext, UnixTime};

/// The context for a request that just arrived from `peer`.
pub fn for_request(peer: IpAddr) -> RequestContext {
    RequestContext {
        now: now(),
        request_id: new_request_id(),
        client_ip: Some(peer),
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
/// Should the OS refuse randomness (it practically never does once booted), the id falls back to
/// the clock and a process counter: still unique within the process, which is all a log needs,
/// and answering the request beats failing it.
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        bytes[..8].copy_from_slice(&now().as_micros().to_be_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    request_id::from_random(bytes)
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

    #[test]
    fn the_clock_is_after_2020() {
        assert!(now().as_secs() > 1_577_836_800);
    }
}
