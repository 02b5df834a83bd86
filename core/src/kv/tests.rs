//! The algorithms over an in-memory [`AtomicStore`] that behaves as Spin's SQLite store does:
//! a swap on a key that held nothing when watched is a plain upsert, and an increment on a value
//! that is not an 8-byte counter fails. Other instances' writes can be injected between a
//! request's watch and its swap.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::counters::{KvCounters, MAX_ATTEMPTS, SWEEP_GRACE, SWEEP_MAX_DELETES};
use super::key_sets::{Instance, KvKeySets, CREATE_HOLD};
use super::policy::{self, Location, MEMO_KEY};
use super::*;
use crate::config::{NoSecrets, Policy, SchemaCompilation};
use crate::decision::Gateway;
use crate::event::{Event, Level, LogSink};
use crate::exchange::Record;
use crate::jwks::shared::{Pending, SharedKeySets};
use crate::quota::{CounterStore, Rate, StoreError};
use crate::time::{Clock, FixedClock, UnixTime};

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Vec<u8>>,
    /// Written just before each of the next swaps, one per swap, as another instance would.
    before_swap: Vec<(String, Vec<u8>)>,
    fail: bool,
    fail_sets: bool,
    swaps: usize,
}

#[derive(Debug, Default, Clone)]
struct Memory(Arc<Mutex<Inner>>);

#[derive(Debug)]
struct Watched {
    key: String,
    seen: Option<Vec<u8>>,
}

impl Memory {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap()
    }
    fn put(&self, key: &str, value: &[u8]) {
        self.inner().map.insert(key.into(), value.to_vec());
    }
    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.inner().map.get(key).cloned()
    }
    fn check(&self) -> Result<(), String> {
        if self.inner().fail {
            return Err("store down".into());
        }
        Ok(())
    }
}

impl AtomicStore for Memory {
    type Cas = Watched;
    type Error = String;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.check()?;
        Ok(self.value(key))
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.check()?;
        if self.inner().fail_sets {
            return Err("read-only".into());
        }
        self.put(key, value);
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.check()?;
        self.inner().map.remove(key);
        Ok(())
    }
    fn keys(&self) -> Result<Vec<String>, String> {
        self.check()?;
        Ok(self.inner().map.keys().cloned().collect())
    }
    fn create(&self, key: &str) -> Result<(), String> {
        self.check()?;
        let mut inner = self.inner();
        match inner.map.get(key) {
            None => {
                inner.map.insert(key.into(), 0u64.to_le_bytes().to_vec());
                Ok(())
            }
            Some(v) if v.len() == 8 => Ok(()),
            Some(_) => Err("not a counter".into()),
        }
    }
    fn watch(&self, key: &str) -> Result<Watched, String> {
        self.check()?;
        Ok(Watched {
            key: key.into(),
            seen: self.value(key),
        })
    }
    fn current(&self, cas: &Watched) -> Result<Option<Vec<u8>>, String> {
        self.check()?;
        Ok(cas.seen.clone())
    }
    fn swap(&self, cas: Watched, value: &[u8]) -> Result<(), Swap<Watched, String>> {
        self.check().map_err(Swap::Failed)?;
        let mut inner = self.inner();
        inner.swaps += 1;
        if !inner.before_swap.is_empty() {
            let (key, other) = inner.before_swap.remove(0);
            inner.map.insert(key, other);
        }
        let now = inner.map.get(&cas.key).cloned();
        // SQLite: a handle that saw nothing upserts, whatever is there now.
        if cas.seen.is_some() && now != cas.seen {
            return Err(Swap::Changed(Watched {
                key: cas.key,
                seen: now,
            }));
        }
        inner.map.insert(cas.key, value.to_vec());
        Ok(())
    }
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(1_000_000 + secs)
}

fn per_minute(limit: u32) -> Rate {
    Rate {
        limit: NonZeroU32::new(limit).unwrap(),
        window_us: 60_000_000,
    }
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_executor::block_on(future)
}

fn tat(store: &Memory, key: &str) -> u64 {
    decode_u64(&store.value(key).expect("a stored state")).expect("8 bytes")
}

// ===== counters =====

#[test]
fn a_quota_admits_its_limit_and_a_refusal_writes_nothing() {
    let store = Memory::default();
    let counters = KvCounters::new(&store);
    for _ in 0..3 {
        let verdict = run(counters.apply("q|ip|x", per_minute(3), at(0))).unwrap();
        assert!(verdict.allowed);
    }
    let swaps = store.inner().swaps;
    let refused = run(counters.apply("q|ip|x", per_minute(3), at(0))).unwrap();
    assert!(!refused.allowed);
    assert_eq!(store.inner().swaps, swaps, "a refusal must not write");
    let expected = at(0).as_micros() + 3 * 20_000_000;
    assert_eq!(tat(&store, "portcullis:quota:q|ip|x"), expected);
}

#[test]
fn a_first_count_is_created_so_another_instance_cannot_be_overwritten() {
    let store = Memory::default();
    let key = "portcullis:quota:k";
    // Another instance counts (state 30 s ahead) between this one's create and its swap. Were
    // the swap an upsert on "nothing", that count would be lost.
    let theirs = at(30).as_micros();
    store
        .inner()
        .before_swap
        .push((key.into(), theirs.to_le_bytes().to_vec()));
    let verdict = run(KvCounters::new(&store).apply("k", per_minute(10), at(0))).unwrap();
    assert!(verdict.allowed);
    assert_eq!(tat(&store, key), theirs + 6_000_000);
}

#[test]
fn a_value_that_is_not_a_state_counts_as_none() {
    let store = Memory::default();
    store.put("portcullis:quota:k", b"0");
    let verdict = run(KvCounters::new(&store).apply("k", per_minute(2), at(0))).unwrap();
    assert!(verdict.allowed);
    assert_eq!(verdict.remaining, 1);
}

#[test]
fn endless_contention_gives_up_and_a_failed_store_is_unavailable() {
    let store = Memory::default();
    store.put("portcullis:quota:k", &at(0).as_micros().to_le_bytes());
    for i in 0..MAX_ATTEMPTS as u64 {
        let other = (at(0).as_micros() + i + 1).to_le_bytes().to_vec();
        store
            .inner()
            .before_swap
            .push(("portcullis:quota:k".into(), other));
    }
    let counters = KvCounters::new(&store);
    let contended = run(counters.apply("k", per_minute(100), at(0)));
    assert_eq!(contended, Err(StoreError::Contended));
    store.inner().fail = true;
    let down = run(counters.apply("k", per_minute(100), at(0)));
    assert_eq!(down, Err(StoreError::Unavailable));
}

#[test]
fn a_sweep_deletes_only_long_expired_quota_keys_at_most_once_per_interval() {
    let store = Memory::default();
    let now = at(100_000);
    let old = now.as_micros() - SWEEP_GRACE.as_micros() as u64 - 1;
    store.put("portcullis:quota:old", &old.to_le_bytes());
    store.put("portcullis:quota:garbage", b"0");
    store.put(
        "portcullis:quota:recent",
        &(now.as_micros() - 1).to_le_bytes(),
    );
    store.put("config", &old.to_le_bytes());
    let counters = KvCounters::new(&store);
    let clock = FixedClock(now);
    // Nothing counted yet: no sweep, and no random number asked for.
    assert!(counters.sweep(|| unreachable!(), &clock).is_none());
    run(counters.apply("fresh", per_minute(5), now)).unwrap();
    assert!(counters.sweep(|| 1, &clock).is_none(), "odds not met");
    assert!(store.value("portcullis:quota:old").is_some());
    let event = counters
        .sweep(|| 0, &clock)
        .expect("a sweep that deleted keys");
    assert_eq!(event.text, "deleted 2 expired quota keys");
    assert_eq!(event.level, Level::Info);
    let left: Vec<_> = store.inner().map.keys().cloned().collect();
    assert_eq!(
        left,
        [
            "config",
            "portcullis:quota-sweep",
            "portcullis:quota:fresh",
            "portcullis:quota:recent"
        ]
    );
    // Claimed for the next ten minutes, by any instance.
    store.put("portcullis:quota:old", &old.to_le_bytes());
    assert!(counters.sweep(|| 0, &FixedClock(at(100_599))).is_none());
    assert!(store.value("portcullis:quota:old").is_some());
    assert!(counters.sweep(|| 0, &FixedClock(at(100_600))).is_some());
}

#[test]
fn a_sweep_deletes_at_most_its_maximum() {
    let store = Memory::default();
    for i in 0..SWEEP_MAX_DELETES + 5 {
        store.put(&format!("portcullis:quota:{i:05}"), b"x");
    }
    let counters = KvCounters::new(&store);
    run(counters.apply("fresh", per_minute(5), at(0))).unwrap();
    let event = counters.sweep(|| 0, &FixedClock(at(0))).unwrap();
    assert_eq!(
        event.text,
        format!("deleted {SWEEP_MAX_DELETES} expired quota keys")
    );
}

// ===== key sets =====

#[derive(Debug, Default, Clone)]
struct TestInstance {
    now: Arc<Mutex<u64>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl TestInstance {
    fn at(secs: u64) -> TestInstance {
        let instance = TestInstance::default();
        *instance.now.lock().unwrap() = at(secs).as_micros();
        instance
    }
}

impl Clock for TestInstance {
    fn now(&self) -> UnixTime {
        UnixTime::from_micros(*self.now.lock().unwrap())
    }
}

impl LogSink for TestInstance {
    fn access(&self, _: &str) {}
    fn event(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
    }
}

impl Instance for TestInstance {
    fn pause(&self, step: Duration) -> Pending<'_, Duration> {
        Box::pin(std::future::ready(step))
    }
}

const NAME: &str = "idp:abcd";
const STATE_KEY: &str = "portcullis:keys:idp:abcd";
const GUARD_KEY: &str = "portcullis:keys-create:idp:abcd";

#[test]
fn the_first_state_is_written_by_the_guard_holder_only() {
    let store = Memory::default();
    let instance = TestInstance::at(0);
    let sets = KvKeySets::new(store.clone(), instance.clone());
    assert!(run(sets.replace(NAME, None, "first")).unwrap());
    assert_eq!(store.value(STATE_KEY).as_deref(), Some(&b"first"[..]));
    let held = at(0).saturating_add(CREATE_HOLD).as_micros();
    assert_eq!(tat(&store, GUARD_KEY), held);
    // The state exists now: creating it again fails, replacing what is there works.
    assert!(!run(sets.replace(NAME, None, "again")).unwrap());
    assert!(!run(sets.replace(NAME, Some("other"), "next")).unwrap());
    assert!(run(sets.replace(NAME, Some("first"), "next")).unwrap());
    assert_eq!(run(sets.read(NAME)).unwrap().as_deref(), Some("next"));
}

#[test]
fn while_another_instance_holds_the_guard_nobody_else_creates() {
    let store = Memory::default();
    let until = at(0).saturating_add(CREATE_HOLD).as_micros();
    store.put(GUARD_KEY, &until.to_le_bytes());
    let sets = KvKeySets::new(store.clone(), TestInstance::at(0));
    assert!(!run(sets.replace(NAME, None, "mine")).unwrap());
    assert_eq!(store.value(STATE_KEY), None);
    // Once the hold has passed (its holder died), the guard can be taken again.
    let later = KvKeySets::new(store.clone(), TestInstance::at(2));
    assert!(run(later.replace(NAME, None, "mine")).unwrap());
    // A guard taken by another instance between the read and the swap loses the race.
    let store = Memory::default();
    store.put(GUARD_KEY, &0u64.to_le_bytes());
    store
        .inner()
        .before_swap
        .push((GUARD_KEY.into(), until.to_le_bytes().to_vec()));
    let racing = KvKeySets::new(store.clone(), TestInstance::at(0));
    assert!(!run(racing.replace(NAME, None, "mine")).unwrap());
    assert_eq!(store.value(STATE_KEY), None);
}

#[test]
fn key_set_store_failures_are_errors_and_warnings_name_the_provider() {
    let store = Memory::default();
    store.put(STATE_KEY, &[0xff, b'x']);
    let instance = TestInstance::at(0);
    let sets = KvKeySets::new(store.clone(), instance.clone());
    assert_eq!(run(sets.read(NAME)).unwrap().as_deref(), Some("\u{fffd}x"));
    store.inner().fail = true;
    assert_eq!(run(sets.read(NAME)).unwrap_err().to_string(), "store down");
    assert!(run(sets.replace(NAME, None, "x")).is_err());
    sets.warn(NAME, "fetching alone");
    let events = instance.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].level, Level::Warn);
    assert_eq!(events[0].text, "fetching alone");
    assert_eq!(events[0].field("provider"), Some(&"idp".into()));
}

// ===== policy =====

const WHERE: Location<'static> = Location {
    store: "default",
    key: "config",
};

const POLICY: &str = r#"{"version": 1,
    "origins": {"api": {"url": "http://127.0.0.1:9"}},
    "routes": [{"id": "a", "methods": ["GET"], "path": "/a", "origin": "api", "auth": "none"}]}"#;

fn apply(store: &Memory, seen: &RefCell<Vec<SchemaCompilation>>) -> crate::policy_store::Applied {
    policy::apply(Ok(store), WHERE, &FixedClock(at(0)), |_, text, schemas| {
        seen.borrow_mut().push(schemas);
        Policy::from_json_with(text, &NoSecrets, schemas).map(Gateway::new)
    })
}

#[test]
fn a_validated_policy_is_remembered_so_the_next_request_compiles_less() {
    let store = Memory::default();
    store.put("config", POLICY.as_bytes());
    let seen = RefCell::new(Vec::new());
    let first = apply(&store, &seen);
    assert!(first.gateway.is_some() && first.start_up);
    assert!(store.value(MEMO_KEY).is_some());
    let second = apply(&store, &seen);
    assert!(second.gateway.is_some() && !second.start_up);
    assert_eq!(
        *seen.borrow(),
        [SchemaCompilation::AtLoad, SchemaCompilation::OnFirstUse]
    );
    // A request that found the policy broken drops the memo: the next validates in full.
    let record = |broken| Record {
        access: String::new(),
        tally: crate::log::Tally {
            policy: None,
            route: None,
            decision: "reject",
            reason: "no-policy:no_policy".into(),
            status: 503,
            gateway_us: 0,
            origin_us: None,
            quota: None,
            store_error: None,
        },
        events: Vec::new(),
        policy_broken: broken,
    };
    policy::settle(&store, &record(false));
    assert!(store.value(MEMO_KEY).is_some());
    policy::settle(&store, &record(true));
    assert!(store.value(MEMO_KEY).is_none());
    apply(&store, &seen);
    assert_eq!(seen.borrow().last(), Some(&SchemaCompilation::AtLoad));
}

#[test]
fn no_policy_is_explained_and_a_memo_that_cannot_be_written_is_a_warning() {
    let store = Memory::default();
    let seen = RefCell::new(Vec::new());
    let missing = apply(&store, &seen);
    assert!(missing.gateway.is_none());
    assert_eq!(
        missing.events.last().unwrap().text,
        "key \"config\" in store \"default\" is empty; no policy: answering 503"
    );
    store.put("config", &[0xff]);
    let garbage = apply(&store, &seen);
    assert!(garbage.events[0]
        .text
        .starts_with("key \"config\" does not hold UTF-8 text"));
    let unopened = policy::apply::<Memory>(
        Err("no store"),
        WHERE,
        &FixedClock(at(0)),
        |_, _, _| unreachable!(),
    );
    assert!(unopened.gateway.is_none());
    assert!(unopened.events[0]
        .fields
        .contains(&("source", WHERE.describe().into())));
    store.put("config", POLICY.as_bytes());
    store.inner().fail_sets = true;
    let unremembered = apply(&store, &seen);
    assert!(unremembered.gateway.is_some());
    let last = unremembered.events.last().unwrap();
    assert_eq!(last.level, Level::Warn);
    assert_eq!(
        last.text,
        "recording which policy was checked failed: read-only"
    );
    assert!(seen
        .borrow()
        .iter()
        .all(|s| *s == SchemaCompilation::AtLoad));
}

fn apply_at(store: &Memory, secs: u64) -> crate::policy_store::Applied {
    policy::apply(
        Ok(store),
        WHERE,
        &FixedClock(at(secs)),
        |_, text, schemas| Policy::from_json_with(text, &NoSecrets, schemas).map(Gateway::new),
    )
}

fn kinds(applied: &crate::policy_store::Applied) -> Vec<crate::event::Kind> {
    applied.events.iter().map(|e| e.kind).collect()
}

#[test]
fn a_broken_policy_is_reported_by_the_first_request_only_until_its_text_changes() {
    use crate::event::Kind;
    let store = Memory::default();
    let broken = r#"{"version": 1, "origins": {}, "routes": [], "bogus": 1}"#;
    store.put("config", broken.as_bytes());
    let first = apply_at(&store, 0);
    assert!(first.gateway.is_none());
    assert_eq!(kinds(&first), [Kind::PolicyRejected]);
    let pointers = first.events[0].field("errors").and_then(|e| e.as_array());
    assert_eq!(
        pointers.map(|p| p.iter().map(|e| e["pointer"].clone()).collect::<Vec<_>>()),
        Some(vec!["/bogus".into(), "/routes".into()])
    );
    // Every later request (each a fresh instance) answers 503 without a word, without
    // validating (the compile step is never reached) and without writing the memo again (a
    // write would fail now, and say so).
    store.inner().fail_sets = true;
    for secs in [0, 1, 30] {
        let later = policy::apply(Ok(&store), WHERE, &FixedClock(at(secs)), |_, _, _| {
            panic!("a text refused lately is not validated again")
        });
        assert!(later.gateway.is_none() && later.events.is_empty());
    }
    store.inner().fail_sets = false;
    // Another broken text is validated, and reported, once.
    let garbage = "{not json";
    store.put("config", garbage.as_bytes());
    let next = apply_at(&store, 31);
    assert_eq!(kinds(&next), [Kind::PolicyRejected]);
    assert_eq!(
        next.events[0].field("rejected"),
        Some(&serde_json::Value::Null)
    );
    assert!(apply_at(&store, 32).events.is_empty());
    // A good text loads at once.
    store.put("config", POLICY.as_bytes());
    let fixed = apply_at(&store, 33);
    assert!(fixed.gateway.is_some() && fixed.start_up);
    assert_eq!(kinds(&fixed), [Kind::PolicyLoaded]);
    store.inner().fail_sets = true;
    assert!(apply_at(&store, 34).events.is_empty());
}

#[test]
fn without_a_memo_a_broken_policy_is_only_reported_again() {
    use crate::event::Kind;
    let store = Memory::default();
    store.put("config", b"{not json");
    store.inner().fail_sets = true;
    for _ in 0..2 {
        let applied = apply_at(&store, 0);
        assert!(applied.gateway.is_none());
        assert_eq!(
            kinds(&applied),
            [Kind::PolicyRejected, Kind::PolicyMemoFailed]
        );
        assert_eq!(
            applied.events[1].text,
            "recording which policy was checked failed: read-only"
        );
    }
    // A memo that is garbage is no memo: validated and reported, never served.
    store.inner().fail_sets = false;
    store.put(MEMO_KEY, b"\x00garbage");
    assert_eq!(kinds(&apply_at(&store, 0)), [Kind::PolicyRejected]);
    // Past the recheck interval the text is validated again; the same problems say nothing.
    let mut validated = false;
    let rechecked = policy::apply(Ok(&store), WHERE, &FixedClock(at(60)), |_, text, s| {
        validated = true;
        Policy::from_json_with(text, &NoSecrets, s).map(Gateway::new)
    });
    assert!(validated && rechecked.gateway.is_none() && rechecked.events.is_empty());
}

#[test]
fn a_good_policy_back_after_a_broken_or_missing_one_is_loaded_and_reported_again() {
    use crate::event::Kind;
    let store = Memory::default();
    store.put("config", POLICY.as_bytes());
    assert_eq!(kinds(&apply_at(&store, 0)), [Kind::PolicyLoaded]);
    assert!(apply_at(&store, 1).events.is_empty(), "reported once");
    store.put("config", br#"{"version": 2}"#);
    assert_eq!(kinds(&apply_at(&store, 2)), [Kind::PolicyRejected]);
    // The earlier text again: it replaces the refused one, so it is validated in full, started
    // up and reported, as any new text is.
    store.put("config", POLICY.as_bytes());
    let back = apply_at(&store, 3);
    assert!(back.gateway.is_some() && back.start_up);
    assert_eq!(kinds(&back), [Kind::PolicyLoaded]);
    store.inner().map.remove("config");
    let gone = apply_at(&store, 4);
    assert_eq!(kinds(&gone), [Kind::PolicyUnavailable]);
    assert!(store.value(MEMO_KEY).is_none());
    store.put("config", POLICY.as_bytes());
    let again = apply_at(&store, 5);
    assert!(again.start_up);
    assert_eq!(kinds(&again), [Kind::PolicyLoaded]);
}
