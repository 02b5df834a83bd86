//! Lockout: a client address whose requests keep failing authentication is refused for a while
//! without anything being verified (credential stuffing, key guessing).
//!
//! `"lockout": { "failures": 20, "window_s": 60, "block_s": 300, "by": "ip" }`, at the top level
//! (every authenticated route's) or on a route (replacing the top level's there). Public routes
//! verify nothing, so no lockout applies to them.
//!
//! Both halves are GCRA keys in the quota store, so the count is as global as quotas are (one
//! Durable Object per key on Workers, one key-value entry on Spin, Redis across processes):
//!
//! - every 401 spends one on the address's failure key, at `failures` per `window_s`: a burst of
//!   `failures` 401s, or 401s that keep coming faster than that rate, empty it. The 401 that
//!   empties it starts the block. Successes never refill it faster; 403s and every other answer
//!   do not touch it.
//! - the block is a key spent at one request per `block_s`, so its theoretical arrival time is
//!   the block's end. Whether it holds is a [`CounterStore::peek`] at that rate, which would
//!   admit exactly when that time has passed and writes nothing; while the block holds its
//!   refusal says how long is left, the `Retry-After`. A block that already holds refuses a
//!   second start, so a burst of 401s in flight starts one block, not several, and never
//!   extends it.

use std::num::NonZeroU32;

use crate::config::{Policy, QuotaBy, Route, RouteAuth};
use crate::problem::Reject;
use crate::quota::{store_key, CounterStore, QuotaKey, Rate, StoreError};
use crate::time::UnixTime;

/// A compiled `lockout`.
#[derive(Debug, Clone)]
pub struct Lockout {
    /// Whose counters these are: `*` for the top level's, else the route's id. Routes that share
    /// the top level's lockout share its counters, so a block there holds on all of them.
    pub(crate) scope: String,
    /// 401s per `window_s` that start a block.
    pub(crate) failures: Rate,
    /// How long a block lasts, µs.
    pub(crate) block_us: u64,
}

/// A block that this request's 401 started, for the `lockout_started` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStarted {
    /// The lockout's scope: `*` (the top level's) or a route id.
    pub scope: String,
    /// How long the block lasts, in seconds.
    pub block_s: u64,
    /// The lockout's `failures`.
    pub failures: u32,
}

/// The lockout `route` is under: its own, else the top level's; none on a public route.
pub(crate) fn applying<'p>(policy: &'p Policy, route: &'p Route) -> Option<&'p Lockout> {
    match route.auth {
        RouteAuth::Public => None,
        RouteAuth::Required { .. } => route.lockout.as_ref().or(policy.lockout.as_ref()),
    }
}

impl Lockout {
    fn keys(&self, client: Option<std::net::IpAddr>) -> (QuotaKey, QuotaKey) {
        // Quota names cannot hold `:`, so these never meet a quota's keys.
        let subject = client.map(|ip| ip.to_string()).unwrap_or_default();
        let fail = store_key(
            &format!("lockout:{}:failures", self.scope),
            self.failures,
            &QuotaBy::Ip,
            &subject,
        );
        let block = store_key(
            &format!("lockout:{}:block", self.scope),
            self.block_rate(),
            &QuotaBy::Ip,
            &subject,
        );
        (fail, block)
    }

    fn block_rate(&self) -> Rate {
        Rate {
            limit: NonZeroU32::MIN,
            window_us: self.block_us,
        }
    }

    /// Refuse `client` with 429 `locked-out` while a block holds. A store failure does what the
    /// store's deployment chose ([`CounterStore::on_error`]) and is noted in `failed`.
    pub(crate) async fn check<S: CounterStore + ?Sized>(
        &self,
        client: Option<std::net::IpAddr>,
        store: &S,
        now: UnixTime,
        failed: &mut Option<StoreError>,
    ) -> Result<(), Reject> {
        let (_, block) = self.keys(client);
        match store.peek(block.as_str(), self.block_rate(), now).await {
            Ok(v) if v.allowed => Ok(()),
            Ok(v) => Err(Reject::locked_out(
                v.retry_after_s,
                "Too many requests from this address failed authentication; it is blocked for now.",
            )),
            Err(error) => {
                *failed = Some(error);
                crate::quota::on_store_error(store.on_error())
            }
        }
    }

    /// Count a 401 for `client`; the block it starts, if this was the one that emptied the
    /// failure budget. Store failures are noted in `failed` and start nothing.
    pub(crate) async fn fail<S: CounterStore + ?Sized>(
        &self,
        client: Option<std::net::IpAddr>,
        store: &S,
        now: UnixTime,
        failed: &mut Option<StoreError>,
    ) -> Option<BlockStarted> {
        let (fail, block) = self.keys(client);
        let spent = store
            .apply(fail.as_str(), self.failures, now)
            .await
            .map_err(|e| *failed = Some(e))
            .ok()?;
        if spent.allowed && spent.remaining > 0 {
            return None;
        }
        // A block already running (401s that were in flight as it started) is refused here.
        let started = store
            .apply(block.as_str(), self.block_rate(), now)
            .await
            .map_err(|e| *failed = Some(e))
            .ok()?;
        started.allowed.then(|| BlockStarted {
            scope: self.scope.clone(),
            block_s: self.block_us / 1_000_000,
            failures: self.failures.limit.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Reason;
    use crate::quota::MemoryStore;
    use futures_executor::block_on;

    fn lockout(failures: u32, window_s: u64, block_s: u64) -> Lockout {
        Lockout {
            scope: "*".into(),
            failures: Rate {
                limit: NonZeroU32::new(failures).unwrap(),
                window_us: window_s * 1_000_000,
            },
            block_us: block_s * 1_000_000,
        }
    }

    fn at(s: u64) -> UnixTime {
        UnixTime::from_secs(1_000_000 + s)
    }

    fn blocked(l: &Lockout, store: &MemoryStore, who: &str, now: UnixTime) -> Option<u64> {
        let mut failed = None;
        let r = block_on(l.check(Some(who.parse().unwrap()), store, now, &mut failed));
        assert_eq!(failed, None);
        r.err().map(|e| {
            assert_eq!(e.reason(), Reason::Lockout);
            match e.kind() {
                crate::problem::RejectKind::LockedOut { retry_after_s } => *retry_after_s,
                other => panic!("{other:?}"),
            }
        })
    }

    fn fail(l: &Lockout, store: &MemoryStore, who: &str, now: UnixTime) -> bool {
        let mut failed = None;
        let started = block_on(l.fail(Some(who.parse().unwrap()), store, now, &mut failed));
        assert_eq!(failed, None);
        started.is_some()
    }

    #[test]
    fn the_block_starts_at_exactly_failures_and_ends_after_block_s() {
        let (l, s) = (lockout(3, 60, 300), MemoryStore::new());
        assert!(!fail(&l, &s, "192.0.2.1", at(0)));
        assert!(!fail(&l, &s, "192.0.2.1", at(1)));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(1)), None, "two failures");
        assert!(
            fail(&l, &s, "192.0.2.1", at(2)),
            "the third starts the block"
        );
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(2)), Some(300));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(101)), Some(201));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(301)), Some(1));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(302)), None, "over");
        assert_eq!(blocked(&l, &s, "192.0.2.2", at(2)), None, "another address");
    }

    #[test]
    fn checking_does_not_start_or_extend_anything() {
        let (l, s) = (lockout(2, 60, 10), MemoryStore::new());
        for t in 0..50 {
            assert_eq!(blocked(&l, &s, "192.0.2.9", at(t)), None);
        }
        assert!(!fail(&l, &s, "192.0.2.9", at(50)));
        assert!(fail(&l, &s, "192.0.2.9", at(50)));
        for t in 50..60 {
            assert!(blocked(&l, &s, "192.0.2.9", at(t)).is_some(), "{t}");
        }
        assert_eq!(
            blocked(&l, &s, "192.0.2.9", at(60)),
            None,
            "checks did not extend it"
        );
    }

    #[test]
    fn many_checks_at_one_instant_change_nothing() {
        let (l, s) = (lockout(1, 60, 5), MemoryStore::new());
        for _ in 0..1000 {
            assert_eq!(blocked(&l, &s, "192.0.2.4", at(7)), None);
        }
        assert!(s.is_empty(), "a check writes nothing");
    }

    #[test]
    fn a_check_and_a_failure_at_the_same_instant_still_block() {
        let (l, s) = (lockout(1, 60, 5), MemoryStore::new());
        assert_eq!(blocked(&l, &s, "192.0.2.4", at(7)), None);
        assert!(fail(&l, &s, "192.0.2.4", at(7)), "after its own check");
        assert_eq!(blocked(&l, &s, "192.0.2.4", at(7)), Some(5));
        assert_eq!(blocked(&l, &s, "192.0.2.4", at(11)), Some(1));
        assert_eq!(
            blocked(&l, &s, "192.0.2.4", at(12)),
            None,
            "exactly block_s later"
        );
    }

    #[test]
    fn each_failure_after_its_own_check() {
        let (l, s) = (lockout(2, 3600, 60), MemoryStore::new());
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(0)), None);
        assert!(!fail(&l, &s, "192.0.2.1", at(0)));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(1)), None);
        assert!(fail(&l, &s, "192.0.2.1", at(1)));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(2)), Some(59));
        assert_eq!(blocked(&l, &s, "192.0.2.1", at(61)), None);
    }

    #[test]
    fn failures_in_flight_as_the_block_starts_start_no_second_one() {
        let (l, s) = (lockout(2, 60, 10), MemoryStore::new());
        assert!(!fail(&l, &s, "2001:db8::1", at(0)));
        assert!(fail(&l, &s, "2001:db8::1", at(0)));
        assert!(!fail(&l, &s, "2001:db8::1", at(0)), "already blocked");
        assert_eq!(blocked(&l, &s, "2001:db8::1", at(0)), Some(10));
    }

    #[test]
    fn slow_failures_drain_and_never_block() {
        // 3 per 60 s: one failure every 20 s is the sustained rate, and never empties the budget.
        let (l, s) = (lockout(3, 60, 300), MemoryStore::new());
        for i in 0..20 {
            assert!(!fail(&l, &s, "192.0.2.1", at(i * 21)), "{i}");
        }
    }
}
