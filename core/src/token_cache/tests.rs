use super::*;

fn principal(name: &str) -> Arc<Principal> {
    Arc::new(Principal {
        consumer: name.into(),
        provider: "p".into(),
        scopes: Vec::new(),
        claims: None,
    })
}

#[test]
fn entries_match_provider_token_and_generation_until_they_expire() {
    let cache = TokenCache::new(10, 1 << 20);
    let at = TokenCache::lookup(0, "token-a");
    cache.insert(&at, 7, UnixTime::from_secs(100), principal("a"));
    assert_eq!(
        cache.get(&at, 7, UnixTime::from_secs(99)).unwrap().consumer,
        "a"
    );
    assert!(
        cache
            .get(
                &TokenCache::lookup(1, "token-a"),
                7,
                UnixTime::from_secs(99)
            )
            .is_none(),
        "other provider"
    );
    assert!(
        cache
            .get(
                &TokenCache::lookup(0, "token-b"),
                7,
                UnixTime::from_secs(99)
            )
            .is_none(),
        "other token"
    );
    assert!(
        cache.get(&at, 8, UnixTime::from_secs(99)).is_none(),
        "new key set"
    );
    // The mismatch removed it: even the right generation misses now.
    assert!(cache.get(&at, 7, UnixTime::from_secs(99)).is_none());
    cache.insert(&at, 7, UnixTime::from_secs(100), principal("a"));
    assert!(
        cache.get(&at, 7, UnixTime::from_secs(100)).is_none(),
        "expired"
    );
    assert!(cache.is_empty());
}

#[test]
fn bounded_in_entries_and_bytes_oldest_first() {
    let cache = TokenCache::new(3, 1 << 20);
    for i in 0..10 {
        cache.insert(
            &TokenCache::lookup(0, &format!("t{i}")),
            1,
            UnixTime::from_secs(1_000),
            principal("x"),
        );
    }
    assert_eq!(cache.len(), 3);
    assert!(cache
        .get(&TokenCache::lookup(0, "t9"), 1, UnixTime::from_secs(1))
        .is_some());
    assert!(cache
        .get(&TokenCache::lookup(0, "t0"), 1, UnixTime::from_secs(1))
        .is_none());

    let small = TokenCache::new(1_000, 3 * (1_000 + ENTRY_OVERHEAD));
    for i in 0..10 {
        let token = format!("{i}{}", "x".repeat(999));
        small.insert(
            &TokenCache::lookup(0, &token),
            1,
            UnixTime::from_secs(1_000),
            principal("x"),
        );
    }
    assert_eq!(small.len(), 3);
}

#[test]
fn zero_entries_disables_it() {
    let cache = TokenCache::new(0, 1 << 20);
    let at = TokenCache::lookup(0, "t");
    cache.insert(&at, 0, UnixTime::from_secs(100), principal("a"));
    assert!(cache.get(&at, 0, UnixTime::from_secs(1)).is_none());
}
