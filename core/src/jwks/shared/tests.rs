//! Several instances, each its own [`KeyRing`] as on Spin, sharing only an in-memory store with
//! compare-and-swap, driven concurrently on one executor with a virtual clock. The IdP holds
//! every fetch until the test releases it, so the others are demonstrably waiting meanwhile.

use std::cell::{Cell, RefCell};

use futures_util::future::{join, join_all, LocalBoxFuture};
use futures_util::FutureExt;
use serde_json::json;

use super::*;
use crate::fetch::{FetchError, FetchResponse};
use crate::jwks::{KeyRing, KeysUnavailable};
use crate::testing::{keys, yield_now, MemoryKeySets};

const NAME: &str = "idp:0123";

fn cfg() -> RemoteKeys {
    RemoteKeys {
        source: RemoteSource::JwksUrl("https://idp.test/jwks".into()),
        refresh_s: 300,
        max_stale_s: 3_600,
        min_refresh_interval_s: 10,
        fetch_timeout: Duration::from_secs(1),
    }
}

fn at(s: u64) -> UnixTime {
    UnixTime::from_secs(1_000_000 + s)
}

fn jwks(kids: &[&str]) -> String {
    let all = keys().jwks();
    let chosen: Vec<_> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    json!({ "keys": chosen }).to_string()
}

/// The store, as seen from the one key set these tests use.
#[derive(Debug, Default, Clone)]
struct Store(MemoryKeySets);

impl Store {
    fn with(text: &str) -> Store {
        let store = Store::default();
        store.0.set(NAME, text);
        store
    }
    fn state(&self) -> KeySetState {
        decode(&self.0.get(NAME).expect("a stored state")).expect("a decodable state")
    }
    fn pauses(&self) -> usize {
        self.0.pauses()
    }
    fn warnings(&self) -> Vec<String> {
        self.0.warnings()
    }
}

/// The IdP: serves `jwks`, counts fetches, and holds each answer until `open`.
struct Idp {
    jwks: RefCell<String>,
    open: Cell<bool>,
    fetches: Cell<usize>,
}

impl Idp {
    fn serving(kids: &[&str]) -> Idp {
        Idp {
            jwks: RefCell::new(jwks(kids)),
            open: Cell::new(true),
            fetches: Cell::new(0),
        }
    }
    fn held(kids: &[&str]) -> Idp {
        let idp = Idp::serving(kids);
        idp.open.set(false);
        idp
    }
}

impl Fetch for Idp {
    async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        self.fetches.set(self.fetches.get() + 1);
        while !self.open.get() {
            yield_now().await;
        }
        Ok(FetchResponse {
            status: 200,
            body: self.jwks.borrow().clone().into_bytes(),
            cache_control: None,
        })
    }
}

/// A fresh instance: its own ring, empty, coordinating through `store`.
fn instance(store: &Store) -> KeyRing {
    let mut ring = KeyRing::new([true]);
    ring.share(Box::new(store.0.clone()), vec![Some(NAME.into())]);
    ring
}

/// The kids an instance would verify a token with `kid` against.
async fn kids(
    ring: &KeyRing,
    kid: &str,
    now: UnixTime,
    idp: &Idp,
) -> Result<Vec<String>, KeysUnavailable> {
    let mut events = Vec::new();
    let (keys, _) = ring
        .keys_for(0, &cfg(), Some(kid), now, idp, &mut events)
        .await?;
    Ok(keys.iter().filter_map(|k| k.kid.clone()).collect())
}

/// A state as another instance would have published it: `kids` fetched at `fetched`.
fn published(kids: &[&str], fetched: UnixTime) -> String {
    let mut state = KeySetState::default();
    state.apply(
        &cfg(),
        Ok(FetchResponse {
            status: 200,
            body: jwks(kids).into_bytes(),
            cache_control: None,
        }),
        fetched,
    );
    encode(&state).unwrap()
}

fn claimed_until(text: &str, until: UnixTime) -> String {
    let mut state = decode(text).unwrap();
    state.fetching_until = Some(until.as_micros());
    encode(&state).unwrap()
}

/// Run `n` instances' requests (kid from `kid(i)`) at once, and open the IdP once every one but
/// the fetching instance is waiting on the store (or, should they never wait, after a while, so
/// that the test fails on its counts rather than hangs).
fn concurrently(
    store: &Store,
    idp: &Idp,
    n: usize,
    kid: impl Fn(usize) -> String,
    now: UnixTime,
) -> Vec<Result<Vec<String>, KeysUnavailable>> {
    let rings: Vec<KeyRing> = (0..n).map(|_| instance(store)).collect();
    let requests: Vec<LocalBoxFuture<'_, _>> = rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            let kid = kid(i);
            async move { kids(ring, &kid, now, idp).await }.boxed_local()
        })
        .collect();
    let release = async {
        for _ in 0..10_000 {
            if store.pauses() >= n.saturating_sub(1) * 2 {
                break;
            }
            yield_now().await;
        }
        idp.open.set(true);
    };
    futures_executor::block_on(join(join_all(requests), release)).0
}

#[test]
fn concurrent_cold_instances_share_one_fetch() {
    let store = Store::default();
    let idp = Idp::held(&["ec-256", "ed-1"]);
    let got = concurrently(&store, &idp, 8, |_| "ed-1".into(), at(0));
    assert_eq!(idp.fetches.get(), 1, "one fetch for eight instances");
    for kids in got {
        assert_eq!(kids.unwrap(), ["ec-256", "ed-1"]);
    }
    let stored = store.state();
    assert_eq!(stored.fetching_until, None, "the claim is released");
    assert_eq!(stored.last_attempt, Some(at(0).as_micros()));
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
}

#[test]
fn a_rotated_kid_is_fetched_once_and_every_waiter_verifies_with_the_new_set() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    let idp = Idp::held(&["ec-256", "ed-1"]);
    let got = concurrently(&store, &idp, 20, |_| "ed-1".into(), at(20));
    assert_eq!(idp.fetches.get(), 1);
    for kids in got {
        assert_eq!(kids.unwrap(), ["ec-256", "ed-1"]);
    }
    // Instances that start later use the published set without fetching.
    let late = futures_executor::block_on(kids(&instance(&store), "ed-1", at(21), &idp));
    assert_eq!(late.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 1);
}

#[test]
fn a_flood_of_unknown_kids_across_instances_costs_one_fetch_per_interval() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    let idp = Idp::held(&["ec-256"]);
    let got = concurrently(&store, &idp, 50, |i| format!("random-{i}"), at(20));
    assert_eq!(idp.fetches.get(), 1);
    for kids in got {
        assert_eq!(
            kids.unwrap(),
            ["ec-256"],
            "still unknown: verification fails"
        );
    }
    for s in 21..30 {
        let ring = instance(&store);
        futures_executor::block_on(kids(&ring, &format!("late-{s}"), at(s), &idp)).unwrap();
    }
    assert_eq!(idp.fetches.get(), 1, "within the minimum interval");
    let ring = instance(&store);
    futures_executor::block_on(kids(&ring, "later", at(31), &idp)).unwrap();
    assert_eq!(idp.fetches.get(), 2, "and once more after it");
}

#[test]
fn a_state_another_instance_published_spares_the_fetch() {
    let store = Store::with(&published(&["ec-256", "ed-1"], at(0)));
    let idp = Idp::serving(&["ec-256"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(1), &idp));
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 0);
    assert_eq!(store.pauses(), 0, "nothing to wait for");
}

#[test]
fn a_winner_that_never_publishes_is_taken_over_when_its_claim_expires() {
    let dead = claimed_until(
        &published(&["ec-256"], at(0)),
        at(20).saturating_add(Duration::from_millis(500)),
    );
    let store = Store::with(&dead);
    let idp = Idp::serving(&["ec-256", "ed-1"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(20), &idp));
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 1);
    assert_eq!(
        store.pauses(),
        50,
        "waited out the claim's 500 ms in 10 ms steps"
    );
    let stored = store.state();
    assert_eq!(stored.fetching_until, None);
    assert_eq!(
        stored.last_attempt,
        Some(at(20).as_micros() + 500_000),
        "attempted when the claim expired, as the waiter counts time"
    );
}

#[test]
fn a_claim_far_in_the_future_holds_a_waiter_no_longer_than_its_own_claim_would_last() {
    let bogus = claimed_until(
        &published(&["ec-256"], at(0)),
        UnixTime::from_secs(u64::MAX / 2_000_000),
    );
    let store = Store::with(&bogus);
    let idp = Idp::serving(&["ec-256", "ed-1"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(20), &idp));
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 1);
    let own_claim = claim_duration(&cfg()) + POLL_STEP;
    assert_eq!(
        store.pauses() as u128,
        own_claim.as_millis() / POLL_STEP.as_millis()
    );
    assert_eq!(store.state().fetching_until, None);
}

#[test]
fn a_lost_race_reads_again_and_plans_with_what_won() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    // Between this instance's read and its claim, another publishes the rotated set.
    store
        .0
        .interleave(NAME, &published(&["ec-256", "ed-1"], at(20)));
    let idp = Idp::serving(&["ec-256", "ed-1"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(20), &idp));
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(
        idp.fetches.get(),
        0,
        "the other instance's fetch serves this one"
    );
    assert_eq!(store.pauses(), 1);
}

#[test]
fn a_lost_race_to_another_claim_waits_for_that_claim() {
    let old = published(&["ec-256"], at(0));
    let store = Store::with(&old);
    store.0.interleave(NAME, &claimed_until(&old, at(21)));
    let idp = Idp::serving(&["ec-256", "ed-1"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(20), &idp));
    // The other claimant never published: after its claim, this instance fetched.
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 1);
    assert_eq!(
        store.pauses(),
        100,
        "one after the lost race, then until the claim expired"
    );
}

#[test]
fn an_unreadable_store_falls_back_to_fetching_alone() {
    let store = Store::default();
    store.0.fail_reads(true);
    let idp = Idp::serving(&["ec-256"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ec-256", at(0), &idp));
    assert_eq!(
        got.unwrap(),
        ["ec-256"],
        "verification does not depend on the store"
    );
    assert_eq!(idp.fetches.get(), 1);
    let warnings = store.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("store down"), "{warnings:?}");
}

#[test]
fn an_unwritable_store_falls_back_to_fetching_alone() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    store.0.fail_replaces(true);
    let idp = Idp::serving(&["ec-256", "ed-1"]);
    let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(20), &idp));
    assert_eq!(got.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(idp.fetches.get(), 1);
    assert!(store.warnings()[0].contains("store read-only"));
}

#[test]
fn garbage_in_the_store_is_no_state() {
    let garbage_jwks = {
        let mut state = decode(&published(&["ec-256"], at(0))).unwrap();
        state.jwks = Some("<html>".into());
        encode(&state).unwrap()
    };
    for text in [
        "",
        "not json",
        "[1,2,3]",
        r#"{"jwks": 5}"#,
        "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}",
        &garbage_jwks,
    ] {
        let store = Store::with(text);
        let idp = Idp::serving(&["ec-256"]);
        let got = futures_executor::block_on(kids(&instance(&store), "ec-256", at(20), &idp));
        assert_eq!(got.unwrap(), ["ec-256"], "{text:?}");
        assert_eq!(idp.fetches.get(), 1, "{text:?}");
        assert_eq!(
            store.state().last_attempt,
            Some(at(20).as_micros()),
            "{text:?} replaced"
        );
    }
}

#[test]
fn a_late_winner_never_replaces_a_newer_state() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    let slow = Idp::held(&["ec-256"]);
    let fast = Idp::serving(&["ec-256", "ed-1"]);
    let (a, b) = (instance(&store), instance(&store));
    let first = kids(&a, "ed-1", at(20), &slow);
    let second = async {
        // Once `a` holds the claim, `b` arrives after it expired, fetches and publishes.
        while store.state().fetching_until.is_none() {
            yield_now().await;
        }
        let got = kids(&b, "ed-1", at(25), &fast).await;
        slow.open.set(true);
        got
    };
    let (first, second) = futures_executor::block_on(join(first, second));
    assert_eq!(second.unwrap(), ["ec-256", "ed-1"]);
    assert_eq!(
        first.unwrap(),
        ["ec-256", "ed-1"],
        "the late winner takes the newer state"
    );
    assert_eq!((slow.fetches.get(), fast.fetches.get()), (1, 1));
    let stored = store.state();
    assert_eq!(
        stored.last_attempt,
        Some(at(25).as_micros()),
        "b's state stays"
    );
    assert_eq!(stored.fetching_until, None);
}

#[test]
fn a_fetch_that_fails_is_published_too_so_others_respect_the_interval() {
    let store = Store::with(&published(&["ec-256"], at(0)));
    let idp = Idp::serving(&["ec-256"]);
    *idp.jwks.borrow_mut() = "<html>maintenance</html>".into();
    for s in [20, 21, 25] {
        let got = futures_executor::block_on(kids(&instance(&store), "ed-1", at(s), &idp));
        assert_eq!(got.unwrap(), ["ec-256"], "the last good set stays in use");
    }
    assert_eq!(idp.fetches.get(), 1);
    assert_eq!(store.state().last_attempt, Some(at(20).as_micros()));
}
