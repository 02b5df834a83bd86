use super::*;

fn rate(limit: u32, window_s: u64) -> Rate {
    Rate {
        limit: NonZeroU32::new(limit).unwrap(),
        window_us: window_s * 1_000_000,
    }
}

/// Run `n` requests at `times` (µs) through `step`, returning how many were admitted.
fn admitted(rate: Rate, times: impl IntoIterator<Item = u64>) -> usize {
    let mut state = None;
    let mut count = 0;
    for t in times {
        let (v, s) = step(state, UnixTime::from_micros(t), rate);
        state = Some(s);
        count += usize::from(v.allowed);
    }
    count
}

#[test]
fn a_burst_admits_exactly_the_limit_wherever_it_falls() {
    let r = rate(5, 60);
    // limit + k requests inside one second, starting at many offsets relative to wall-clock
    // seconds, including straddling a second boundary: fixed windows would admit 10 there.
    for start in [0u64, 1, 999_999, 500_000, 1_700_000_000_999_000] {
        for k in [1u64, 3, 20] {
            let times = (0..5 + k).map(|i| start + i * (900_000 / (5 + k)));
            assert_eq!(admitted(r, times), 5, "start {start} k {k}");
        }
    }
}

#[test]
fn over_a_longer_span_capacity_returns_at_the_sustained_rate_only() {
    // The GCRA bound: in any span of length t, at most limit + floor(t / interval) are admitted.
    let r = rate(5, 1); // interval 200 ms
    let times = (0..50).map(|i| 7_000_000 + i * 18_000); // 50 requests over 882 ms
    assert_eq!(admitted(r, times), 5 + 882 / 200);
}

#[test]
fn limits_that_do_not_divide_the_window_still_admit_the_whole_burst() {
    for (limit, window) in [
        (7u32, 1u64),
        (3, 10),
        (1000, 1),
        (999_983, 1),
        (1, 31_536_000),
    ] {
        let r = rate(limit, window);
        let n = u64::from(limit) + 3;
        assert_eq!(
            admitted(r, std::iter::repeat_n(42_000_000u64, n as usize)),
            limit as usize,
            "{limit}/{window}s"
        );
    }
}

#[test]
fn capacity_returns_at_the_sustained_rate() {
    let r = rate(2, 10); // one request per 5 s
    let mut state = None;
    let mut at = |t: u64| {
        let (v, s) = step(state, UnixTime::from_secs(t), r);
        state = Some(s);
        v
    };
    assert!(at(100).allowed);
    assert!(at(100).allowed);
    let refused = at(100);
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after_s, 5);
    assert!(!at(104).allowed);
    assert!(at(105).allowed);
    assert!(!at(105).allowed);
    assert!(at(120).allowed);
    assert!(at(120).allowed);
    assert!(!at(120).allowed);
}

#[test]
fn refusals_do_not_push_the_next_admission_out() {
    let r = rate(1, 10);
    let (_, s) = step(None, UnixTime::from_secs(0), r);
    let mut state = s;
    for t in 1..10 {
        let (v, s) = step(Some(state), UnixTime::from_secs(t), r);
        assert!(!v.allowed);
        assert_eq!(s, state);
        state = s;
    }
    assert!(step(Some(state), UnixTime::from_secs(10), r).0.allowed);
}

#[test]
fn remaining_counts_down_and_reset_is_when_full_again() {
    let r = rate(3, 30);
    let now = UnixTime::from_secs(1_000);
    let (v1, s) = step(None, now, r);
    assert_eq!((v1.remaining, v1.reset_s), (2, 10));
    let (v2, s) = step(Some(s), now, r);
    assert_eq!((v2.remaining, v2.reset_s), (1, 20));
    let (v3, s) = step(Some(s), now, r);
    assert_eq!((v3.remaining, v3.reset_s, v3.retry_after_s), (0, 30, 10));
    assert_eq!(s.expires_at(), UnixTime::from_secs(1_030));
}

#[test]
fn clock_going_backwards_never_admits_more() {
    let r = rate(2, 60);
    let (_, s) = step(None, UnixTime::from_secs(100), r);
    let (_, s) = step(Some(s), UnixTime::from_secs(100), r);
    let (v, _) = step(Some(s), UnixTime::from_secs(50), r);
    assert!(!v.allowed);
}

#[test]
fn memory_store_is_exact_under_threads() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let r = rate(50, 60);
    let now = UnixTime::from_secs(5_000);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..20)
                    .filter(|_| store.apply_now("k", r, now).unwrap().allowed)
                    .count()
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 50);
}

#[test]
fn memory_store_forgets_expired_keys() {
    let store = MemoryStore::new();
    let r = rate(1, 1);
    for i in 0..5_000u32 {
        store
            .apply_now(&format!("k{i}"), r, UnixTime::from_secs(u64::from(i)))
            .unwrap();
    }
    assert!(store.len() < 2_100, "{} keys kept", store.len());
}

#[test]
fn store_keys_separate_quotas_and_subjects() {
    let rate = |limit: u32, window_s: u64| Rate {
        limit: std::num::NonZeroU32::new(limit).expect("non-zero"),
        window_us: window_s * 1_000_000,
    };
    let key = |q, by: &QuotaBy, subject| store_key(q, rate(10, 60), by, subject);
    let a = key("q1", &QuotaBy::Consumer, "alice");
    assert_ne!(a, key("q2", &QuotaBy::Consumer, "alice"));
    assert_ne!(a, key("q1", &QuotaBy::Consumer, "bob"));
    assert_ne!(a, key("q1", &QuotaBy::Ip, "alice"));
    assert_eq!(a, key("q1", &QuotaBy::Consumer, "alice"));
    // Another definition of the same quota is another bucket.
    assert_ne!(
        a,
        store_key("q1", rate(11, 60), &QuotaBy::Consumer, "alice")
    );
    assert_ne!(
        a,
        store_key("q1", rate(10, 61), &QuotaBy::Consumer, "alice")
    );
}
