//! The key-set state machine, driven by a scripted fetcher and a virtual clock. End-to-end
//! behaviour against a real JWKS server on 127.0.0.1 is in the conformance suite.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde_json::json;

use super::*;
use crate::testing::keys;

fn cfg() -> RemoteKeys {
    RemoteKeys {
        source: RemoteSource::JwksUrl("https://idp.test/jwks".into()),
        refresh_s: 300,
        max_stale_s: 3_600,
        min_refresh_interval_s: 10,
        fetch_timeout: Duration::from_secs(1),
    }
}

/// Answers from a script and counts what was asked.
#[derive(Default)]
struct Script {
    answers: RefCell<VecDeque<Result<FetchResponse, FetchError>>>,
    asked: RefCell<Vec<String>>,
}

impl Script {
    fn push(&self, answer: Result<FetchResponse, FetchError>) {
        self.answers.borrow_mut().push_back(answer);
    }
    fn count(&self) -> usize {
        self.asked.borrow().len()
    }
}

impl Fetch for Script {
    async fn get(&self, url: &str, _: Duration) -> Result<FetchResponse, FetchError> {
        self.asked.borrow_mut().push(url.to_owned());
        self.answers
            .borrow_mut()
            .pop_front()
            .unwrap_or(Err(FetchError::Unsupported))
    }
}

fn ok(body: String, cache_control: Option<&str>) -> Result<FetchResponse, FetchError> {
    Ok(FetchResponse {
        status: 200,
        body: body.into_bytes(),
        cache_control: cache_control.map(str::to_owned),
    })
}

/// A JWKS with the test keys whose kids are listed.
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

fn at(s: u64) -> UnixTime {
    UnixTime::from_secs(1_000_000 + s)
}

fn kids(
    ring: &KeyRing,
    kid: Option<&str>,
    now: UnixTime,
    fetch: &Script,
) -> Result<Vec<String>, KeysUnavailable> {
    let mut events = Vec::new();
    let (keys, _) =
        futures_executor::block_on(ring.keys_for(0, &cfg(), kid, now, fetch, &mut events))?;
    Ok(keys.iter().filter_map(|k| k.kid.clone()).collect())
}

#[test]
fn first_use_fetches_once_then_serves_from_memory() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    f.push(ok(jwks(&["ec-256"]), None));
    assert_eq!(kids(&ring, Some("ec-256"), at(0), &f).unwrap(), ["ec-256"]);
    for s in 1..200 {
        kids(&ring, Some("ec-256"), at(s), &f).unwrap();
    }
    assert_eq!(f.count(), 1);
}

#[test]
fn refresh_wanted_answers_what_a_background_refresh_would_do() {
    let ring = KeyRing::new([true, false]);
    let f = Script::default();
    assert!(ring.refresh_wanted(0, &cfg(), at(0)), "never fetched");
    assert!(!ring.refresh_wanted(1, &cfg(), at(0)), "no remote keys");
    assert!(!ring.refresh_wanted(2, &cfg(), at(0)), "no such provider");
    f.push(ok(jwks(&["ec-256"]), None));
    kids(&ring, Some("ec-256"), at(0), &f).unwrap();
    assert!(!ring.refresh_wanted(0, &cfg(), at(299)), "still fresh");
    let events = futures_executor::block_on(ring.refresh(0, &cfg(), at(299), &f, false));
    assert!(
        events.is_empty() && f.count() == 1,
        "refresh agrees: nothing to do"
    );
    assert!(
        ring.refresh_wanted(0, &cfg(), at(300)),
        "refresh_s has run out"
    );
    // A failed refresh leaves the set due, but not before the minimum interval has passed.
    futures_executor::block_on(ring.refresh(0, &cfg(), at(300), &f, false));
    assert_eq!(f.count(), 2);
    assert!(!ring.refresh_wanted(0, &cfg(), at(309)));
    assert!(ring.refresh_wanted(0, &cfg(), at(310)));
}

#[test]
fn rotation_refetches_once_and_old_keys_keep_working_while_published() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    f.push(ok(jwks(&["ec-256"]), None));
    kids(&ring, Some("ec-256"), at(0), &f).unwrap();
    // The IdP adds a key and starts signing with it.
    f.push(ok(jwks(&["ec-256", "ed-1"]), None));
    assert_eq!(
        kids(&ring, Some("ed-1"), at(20), &f).unwrap(),
        ["ec-256", "ed-1"]
    );
    assert_eq!(f.count(), 2);
    assert_eq!(
        kids(&ring, Some("ec-256"), at(21), &f).unwrap(),
        ["ec-256", "ed-1"]
    );
    assert_eq!(f.count(), 2);
}

#[test]
fn unknown_kid_floods_fetch_at_most_once_per_interval() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    f.push(ok(jwks(&["ec-256"]), None));
    kids(&ring, Some("ec-256"), at(0), &f).unwrap();
    for _ in 0..8 {
        f.push(ok(jwks(&["ec-256"]), None));
    }
    for i in 0..1_000u64 {
        // 1,000 random kids over 25 seconds: refetches at 10 and 20 only.
        let _ = kids(
            &ring,
            Some(&format!("random-{i}")),
            UnixTime::from_micros(at(10).as_micros() + i * 15_000),
            &f,
        );
    }
    assert_eq!(f.count(), 3);
}

#[test]
fn a_bad_response_never_replaces_a_good_set() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    f.push(ok(jwks(&["ec-256"]), None));
    kids(&ring, None, at(0), &f).unwrap();
    let bad = [
        Ok(FetchResponse {
            status: 500,
            body: b"oops".to_vec(),
            cache_control: None,
        }),
        ok("<html>maintenance</html>".into(), None),
        ok(json!({ "keys": [] }).to_string(), None),
        ok(
            json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] }).to_string(),
            None,
        ),
        Err(FetchError::Timeout),
        Err(FetchError::Connect {
            cause: "connection refused".into(),
        }),
    ];
    for (i, answer) in bad.into_iter().enumerate() {
        f.push(answer);
        let now = at(301 + 11 * i as u64); // due for refresh, past the minimum interval
        assert_eq!(
            kids(&ring, Some("ec-256"), now, &f).unwrap(),
            ["ec-256"],
            "answer {i}"
        );
    }
    assert_eq!(f.count(), 7);
}

#[test]
fn keys_expire_after_max_stale_and_then_the_provider_is_unavailable() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    f.push(ok(jwks(&["ec-256"]), None));
    kids(&ring, None, at(0), &f).unwrap();
    assert!(
        kids(&ring, None, at(3_599), &f).is_ok(),
        "stale but within max_stale"
    );
    assert_eq!(kids(&ring, None, at(3_600), &f), Err(KeysUnavailable));
    // Within the minimum interval there is no new attempt: still unavailable, no fetch.
    let before = f.count();
    assert_eq!(kids(&ring, None, at(3_601), &f), Err(KeysUnavailable));
    assert_eq!(f.count(), before);
    f.push(ok(jwks(&["ec-256"]), None));
    assert!(
        kids(&ring, None, at(3_700), &f).is_ok(),
        "recovers when the IdP does"
    );
}

#[test]
fn never_fetched_and_idp_down_is_unavailable() {
    let ring = KeyRing::new([true]);
    let f = Script::default();
    assert_eq!(kids(&ring, Some("ec-256"), at(0), &f), Err(KeysUnavailable));
}

#[test]
fn cache_control_max_age_is_honoured_within_bounds() {
    for (header, fresh) in [
        (Some("public, max-age=3600"), 3_600),
        (Some("max-age=5"), 300),
        (Some("no-store, max-age=600"), 300),
        (None, 300),
    ] {
        let mut state = KeySetState::default();
        state.apply(&cfg(), ok(jwks(&["ec-256"]), header), at(0));
        assert_eq!(state.fresh_for_s, fresh, "{header:?}");
    }
    assert_eq!(max_age("max-age=\"120\""), Some(120));
}

#[test]
fn unusable_keys_are_skipped_with_an_event() {
    let mut doc: serde_json::Value = serde_json::from_str(&jwks(&["ec-256"])).unwrap();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" }));
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kty": "weird" }));
    let (keys, events) = parse_jwks(&doc.to_string()).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(events.len(), 2);
    assert!(parse_jwks("[]").is_err());
}

#[test]
fn oidc_discovery_checks_the_issuer_and_finds_the_jwks() {
    let issuer = "https://idp.test";
    let cfg = RemoteKeys {
        source: RemoteSource::OidcIssuer(issuer.into()),
        ..cfg()
    };
    let f = Script::default();
    f.push(ok(
        json!({ "issuer": issuer, "jwks_uri": "https://idp.test/keys" }).to_string(),
        None,
    ));
    f.push(ok(jwks(&["ec-256"]), None));
    let mut state = KeySetState::default();
    let events = futures_executor::block_on(state.refresh(&cfg, &f, at(0)));
    assert!(
        matches!(events.last(), Some(KeyEvent::Refreshed { keys: 1 })),
        "{events:?}"
    );
    assert_eq!(
        *f.asked.borrow(),
        [
            "https://idp.test/.well-known/openid-configuration",
            "https://idp.test/keys"
        ]
    );

    // A discovery document for another issuer is refused.
    let f = Script::default();
    f.push(ok(
        json!({ "issuer": "https://evil.test", "jwks_uri": "https://evil.test/keys" }).to_string(),
        None,
    ));
    let mut state = KeySetState::default();
    let events = futures_executor::block_on(state.refresh(&cfg, &f, at(0)));
    assert!(
        matches!(&events[..], [KeyEvent::RefreshFailed { .. }]),
        "{events:?}"
    );
    assert_eq!(f.count(), 1);
}

#[test]
fn state_survives_serialisation_for_runtimes_without_memory() {
    let mut state = KeySetState::default();
    state.apply(&cfg(), ok(jwks(&["ec-256", "ed-1"]), None), at(0));
    let text = serde_json::to_string(&state).unwrap();
    let mut back: KeySetState = serde_json::from_str(&text).unwrap();
    back.restore();
    assert_eq!(back.keys(&cfg(), at(1)).unwrap().len(), 2);
    assert_eq!(back.plan(&cfg(), Some("ed-1"), at(1)), Plan::Use);
}

#[test]
fn key_urls_must_be_https_except_loopback() {
    assert!(check_key_url("https://idp.example/jwks").is_ok());
    assert!(check_key_url("http://127.0.0.1:8080/jwks").is_ok());
    assert!(check_key_url("http://[::1]:8080/jwks").is_ok());
    assert!(check_key_url("http://localhost/jwks").is_ok());
    assert!(check_key_url("http://idp.example/jwks").is_err());
    assert!(check_key_url("http://127.0.0.1.evil.example/jwks").is_err());
    assert!(check_key_url("file:///etc/passwd").is_err());
}

/// A fetcher whose answers take one scheduler turn, so a second request finds the fetch in
/// flight; with `polls`, it is a runtime whose requests may not queue on each other.
#[derive(Default)]
struct SlowScript {
    script: Script,
    polls: bool,
    pauses: RefCell<usize>,
}

/// Pending once, then ready: one turn of a single-threaded executor.
struct Turn(bool);

impl std::future::Future for Turn {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl Fetch for SlowScript {
    async fn get(&self, url: &str, timeout: Duration) -> Result<FetchResponse, FetchError> {
        Turn(false).await;
        self.script.get(url, timeout).await
    }

    async fn pause(&self, _: Duration) -> bool {
        if !self.polls {
            return false;
        }
        *self.pauses.borrow_mut() += 1;
        Turn(false).await;
        true
    }
}

fn two_concurrent_requests(fetch: &SlowScript) -> [Vec<String>; 2] {
    let ring = KeyRing::new([true]);
    let one = || async {
        let mut events = Vec::new();
        let (keys, _) = ring
            .keys_for(0, &cfg(), Some("ec-256"), at(0), fetch, &mut events)
            .await
            .unwrap();
        keys.iter()
            .filter_map(|k| k.kid.clone())
            .collect::<Vec<_>>()
    };
    let (a, b) = futures_executor::block_on(futures_util::future::join(one(), one()));
    [a, b]
}

#[test]
fn concurrent_requests_share_one_fetch_by_queueing_on_the_lock() {
    let f = SlowScript::default();
    f.script.push(ok(jwks(&["ec-256"]), None));
    assert_eq!(two_concurrent_requests(&f), [["ec-256"], ["ec-256"]]);
    assert_eq!(f.script.count(), 1);
    assert_eq!(*f.pauses.borrow(), 0);
}

#[test]
fn concurrent_requests_share_one_fetch_by_polling_where_they_may_not_queue() {
    let f = SlowScript {
        polls: true,
        ..SlowScript::default()
    };
    f.script.push(ok(jwks(&["ec-256"]), None));
    assert_eq!(two_concurrent_requests(&f), [["ec-256"], ["ec-256"]]);
    assert_eq!(f.script.count(), 1, "the waiter must not fetch again");
    assert!(*f.pauses.borrow() > 0, "the waiter must have polled");
}
