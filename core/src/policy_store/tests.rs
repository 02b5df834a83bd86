use super::*;
use crate::config::{NoSecrets, Policy};

fn text(route: &str, ttl: u64) -> String {
    format!(
        r#"{{"version": 1, "config_ttl_s": {ttl},
            "origins": {{"api": {{"url": "http://127.0.0.1:9"}}}},
            "routes": [{{"id": "{route}", "methods": ["GET"], "path": "/{route}", "origin": "api", "auth": "none"}}]}}"#
    )
}

fn compile(text: &str, schemas: SchemaCompilation) -> Result<Gateway, ConfigErrors> {
    Policy::from_json_with(text, &NoSecrets, schemas).map(Gateway::new)
}

fn route_of(applied: &Applied) -> Option<String> {
    let gateway = applied.gateway.as_ref()?;
    gateway.policy().route_ids().next().map(str::to_owned)
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

#[test]
fn a_first_good_text_goes_live_and_asks_for_the_start_up_fetch() {
    let mut store = PolicyStore::new();
    assert!(store.claim_read(at(100)));
    let applied = store.apply(
        PolicyRead::Text(text("a", 30)),
        "kv:config",
        at(100),
        compile,
    );
    assert_eq!(route_of(&applied).as_deref(), Some("a"));
    assert!(applied.start_up);
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].level, Level::Info);
    assert_eq!(applied.events[0].text, "policy loaded");
    assert!(applied.events[0]
        .fields
        .contains(&("source", "kv:config".into())));
}

#[test]
fn the_source_is_read_again_only_after_the_ttl_and_one_request_at_a_time() {
    let mut store = PolicyStore::new();
    store.claim_read(at(100));
    store.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    assert!(!store.claim_read(at(129)));
    assert!(store.claim_read(at(130)));
    // Claimed: the next request in the same second keeps the live policy and does not read.
    assert!(!store.claim_read(at(130)));
    assert!(store.live().is_some());
}

#[test]
fn the_same_text_keeps_the_same_gateway_and_needs_no_start_up() {
    let mut store = PolicyStore::new();
    let first = store.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    let again = store.apply(PolicyRead::Text(text("a", 30)), "s", at(130), |_, _| {
        panic!("an unchanged text is not compiled again")
    });
    assert!(Arc::ptr_eq(
        first.gateway.as_ref().unwrap(),
        again.gateway.as_ref().unwrap()
    ));
    assert!(!again.start_up);
    assert!(again.events.is_empty());
}

#[test]
fn a_new_valid_text_replaces_the_live_one() {
    let mut store = PolicyStore::new();
    store.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    let applied = store.apply(PolicyRead::Text(text("b", 30)), "s", at(130), compile);
    assert_eq!(route_of(&applied).as_deref(), Some("b"));
    assert!(applied.start_up);
    assert_eq!(applied.events[0].text, "policy reloaded");
}

#[test]
fn an_invalid_text_keeps_the_last_good_policy_and_is_reported_once() {
    let mut store = PolicyStore::new();
    store.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    let broken = r#"{"version": 1, "origins": {}, "routes": [], "bogus": 1}"#.to_owned();
    let applied = store.apply(PolicyRead::Text(broken.clone()), "s", at(130), compile);
    assert_eq!(route_of(&applied).as_deref(), Some("a"), "last good kept");
    assert!(!applied.start_up);
    assert!(applied.events.iter().all(|e| e.level == Level::Warn));
    assert!(
        applied.events.iter().any(|e| e.text.contains("/bogus")),
        "each problem with its pointer: {:?}",
        applied.events
    );
    assert!(applied
        .events
        .last()
        .is_some_and(|e| e.text.ends_with("keeping the last good policy")));
    // Read again after the live policy's TTL, the same broken text says nothing new.
    assert!(!store.claim_read(at(159)));
    let again = store.apply(PolicyRead::Text(broken), "s", at(160), |_, _| {
        panic!("a refused text is not compiled again")
    });
    assert!(again.events.is_empty());
    assert_eq!(route_of(&again).as_deref(), Some("a"));
}

#[test]
fn without_a_good_policy_there_is_none_and_the_source_is_retried_within_a_second() {
    let mut store = PolicyStore::new();
    let applied = store.apply(
        PolicyRead::Text("{not json".to_owned()),
        "s",
        at(100),
        compile,
    );
    assert!(applied.gateway.is_none());
    assert!(applied
        .events
        .last()
        .is_some_and(|e| e.text.ends_with("no policy: answering 503")));
    assert!(!store.claim_read(at(100)));
    assert!(store.claim_read(at(101)));
    let missing = store.apply(
        PolicyRead::Missing("KV key \"config\"".into()),
        "s",
        at(101),
        compile,
    );
    assert!(missing.gateway.is_none());
    assert_eq!(
        missing.events[0].text,
        "KV key \"config\" is empty; no policy: answering 503"
    );
}

#[test]
fn a_missing_or_unreadable_source_keeps_the_last_good_policy() {
    let mut store = PolicyStore::new();
    store.apply(PolicyRead::Text(text("a", 5)), "s", at(100), compile);
    let failed = store.apply(
        PolicyRead::Failed("KV read failed".into()),
        "s",
        at(105),
        compile,
    );
    assert_eq!(route_of(&failed).as_deref(), Some("a"));
    assert_eq!(
        failed.events[0].text,
        "KV read failed; keeping the last good policy"
    );
    let missing = store.apply(PolicyRead::Missing("key".into()), "s", at(110), compile);
    assert_eq!(route_of(&missing).as_deref(), Some("a"));
    // The next read is one TTL of the live policy later.
    assert!(!store.claim_read(at(114)));
    assert!(store.claim_read(at(115)));
}

#[test]
fn a_memo_lets_a_later_instance_compile_lazily_and_skip_the_start_up() {
    let mut first = PolicyStore::new();
    first.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    let memo = first.memo().expect("a validated text leaves a memo");

    let mut later = PolicyStore::new();
    later.recall(&memo);
    let mut asked = None;
    let applied = later.apply(PolicyRead::Text(text("a", 30)), "s", at(101), |t, s| {
        asked = Some(s);
        compile(t, s)
    });
    assert_eq!(asked, Some(SchemaCompilation::OnFirstUse));
    assert!(!applied.start_up);
    assert!(
        applied.events.is_empty(),
        "the instance that validated it reported it loaded: {:?}",
        applied.events
    );

    // Another text is validated in full (and started up) again.
    let mut other = PolicyStore::new();
    other.recall(&memo);
    let mut asked = None;
    let applied = other.apply(PolicyRead::Text(text("b", 30)), "s", at(101), |t, s| {
        asked = Some(s);
        compile(t, s)
    });
    assert_eq!(asked, Some(SchemaCompilation::AtLoad));
    assert!(applied.start_up);

    // A memo from another build, or garbage, is ignored.
    let mut stranger = PolicyStore::new();
    stranger.recall(&Memo {
        validated: memo.validated.clone(),
        refused: None,
        by: "portcullis-core 0.0.0".into(),
    });
    stranger.recall(&Memo {
        validated: Some("zz".into()),
        refused: Some(Refused {
            text: "zz".into(),
            errors: "00".repeat(32),
            at: 100,
        }),
        by: memo.by.clone(),
    });
    assert!(stranger.memo().is_none());
}

fn refusing(
    pointer: &'static str,
) -> impl Fn(&str, SchemaCompilation) -> Result<Gateway, ConfigErrors> {
    move |_, _| {
        Err(ConfigErrors(vec![crate::config::ConfigError {
            pointer: pointer.to_owned(),
            kind: crate::config::ConfigErrorKind::Missing,
        }]))
    }
}

fn never(_: &str, _: SchemaCompilation) -> Result<Gateway, ConfigErrors> {
    panic!("a text refused lately is not validated again")
}

#[test]
fn a_refused_text_is_rechecked_after_a_while_and_reported_again_only_for_new_problems() {
    use crate::event::Kind;
    let mut store = PolicyStore::new();
    let broken = || PolicyRead::Text(text("a", 30));
    let first = store.apply(broken(), "s", at(100), refusing("/x"));
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].kind, Kind::PolicyRejected);
    let lately = store.apply(broken(), "s", at(159), never);
    assert!(lately.gateway.is_none() && lately.events.is_empty());
    // Due again: validated, refused for the same problem, nothing said.
    let same = store.apply(broken(), "s", at(160), refusing("/x"));
    assert!(same.gateway.is_none() && same.events.is_empty());
    // The recheck restarted the wait.
    assert!(store.apply(broken(), "s", at(219), never).events.is_empty());
    // Refused for something else now (the secret is set, but too short): reported.
    let other = store.apply(broken(), "s", at(220), refusing("/y"));
    assert_eq!(other.events.len(), 1);
    assert_eq!(other.events[0].kind, Kind::PolicyRejected);
    // And once what it lacked is there, it loads.
    let fixed = store.apply(broken(), "s", at(280), compile);
    assert_eq!(route_of(&fixed).as_deref(), Some("a"));
    assert_eq!(fixed.events[0].kind, Kind::PolicyLoaded);
}

#[test]
fn a_memo_tells_a_later_instance_which_text_was_refused() {
    use crate::event::Kind;
    let broken = r#"{"version": 1, "origins": {}, "routes": [], "bogus": 1}"#;
    let mut first = PolicyStore::new();
    first.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    let refused = first.apply(PolicyRead::Text(broken.into()), "s", at(130), compile);
    assert_eq!(refused.events[0].kind, Kind::PolicyRejected);
    let memo = first.memo().expect("a memo");
    assert!(memo.validated.is_some(), "what was validated is kept too");
    assert_eq!(memo.refused.as_ref().map(|r| r.at), Some(130));
    let json = serde_json::to_string(&memo).unwrap();
    assert_eq!(serde_json::from_str::<Memo>(&json).unwrap(), memo);

    // The refused text: not validated, not reported.
    let mut later = PolicyStore::new();
    later.recall(&memo);
    let again = later.apply(PolicyRead::Text(broken.into()), "s", at(131), never);
    assert!(again.gateway.is_none() && again.events.is_empty());
    // The text validated before it still goes live, lazily.
    let mut good = PolicyStore::new();
    good.recall(&memo);
    let mut asked = None;
    let live = good.apply(PolicyRead::Text(text("a", 30)), "s", at(131), |t, s| {
        asked = Some(s);
        compile(t, s)
    });
    assert!(live.gateway.is_some());
    assert_eq!(asked, Some(SchemaCompilation::OnFirstUse));
    // A refusal dated in the future postpones nothing: the text is validated again (and, its
    // problems being the same, not reported again).
    let mut skewed = PolicyStore::new();
    skewed.recall(&memo);
    let mut validated = false;
    let early = skewed.apply(PolicyRead::Text(broken.into()), "s", at(129), |t, s| {
        validated = true;
        compile(t, s)
    });
    assert!(validated && early.events.is_empty());
    // A memo written before refusals were kept (`validated` and `by` only) still reads.
    let old = format!(
        r#"{{"validated": {:?}, "by": {:?}}}"#,
        memo.validated.unwrap(),
        memo.by
    );
    let old: Memo = serde_json::from_str(&old).unwrap();
    assert!(old.refused.is_none() && old.validated.is_some());
}

#[test]
fn a_policy_broken_on_first_use_is_forgotten() {
    let mut store = PolicyStore::new();
    store.apply(PolicyRead::Text(text("a", 30)), "s", at(100), compile);
    store.forget_validation();
    assert!(store.live().is_none());
    assert!(store.memo().is_none());
}

#[test]
fn audit_events_name_both_versions_and_every_error_with_its_pointer() {
    use crate::event::Kind;
    use crate::policy_version::PolicyVersion;
    use serde_json::Value;
    let version = |t: &str| Value::from(PolicyVersion::of_text(t).expect("JSON").to_string());
    let mut store = PolicyStore::new();

    let first = store.apply(PolicyRead::Text(text("a", 30)), "f", at(100), compile);
    let [loaded] = &first.events[..] else {
        panic!("one event: {:?}", first.events);
    };
    assert_eq!(loaded.kind, Kind::PolicyLoaded);
    assert_eq!(loaded.field("policy"), Some(&version(&text("a", 30))));
    assert_eq!(loaded.field("previous"), Some(&Value::Null));
    assert_eq!(loaded.field("routes"), Some(&Value::from(1)));
    assert_eq!(loaded.field("providers"), Some(&Value::from(0)));

    let second = store.apply(PolicyRead::Text(text("b", 30)), "f", at(130), compile);
    assert_eq!(
        second.events[0].field("policy"),
        Some(&version(&text("b", 30)))
    );
    assert_eq!(
        second.events[0].field("previous"),
        Some(&version(&text("a", 30)))
    );

    let broken =
        r#"{"version": 1, "config_ttl_s": "soon", "origins": {}, "routes": [], "bogus": 1}"#;
    let refused = store.apply(PolicyRead::Text(broken.into()), "f", at(160), compile);
    let [rejected] = &refused.events[..] else {
        panic!("one event: {:?}", refused.events);
    };
    assert_eq!(rejected.kind, Kind::PolicyRejected);
    assert_eq!(rejected.level, Level::Warn);
    assert_eq!(
        rejected.field("policy"),
        Some(&version(&text("b", 30))),
        "what stays live"
    );
    assert_eq!(rejected.field("rejected"), Some(&version(broken)));
    let pointers: Vec<&str> = rejected
        .field("errors")
        .and_then(Value::as_array)
        .expect("errors")
        .iter()
        .filter_map(|e| e["pointer"].as_str())
        .collect();
    assert!(
        pointers.contains(&"/bogus") && pointers.contains(&"/config_ttl_s"),
        "{pointers:?}"
    );

    let garbage = store.apply(PolicyRead::Text("{not json".into()), "f", at(190), compile);
    assert_eq!(garbage.events[0].field("rejected"), Some(&Value::Null));
    let gone = store.apply(PolicyRead::Missing("key".into()), "f", at(220), compile);
    assert_eq!(gone.events[0].kind, Kind::PolicyUnavailable);
    assert_eq!(
        gone.events[0].field("policy"),
        Some(&version(&text("b", 30)))
    );
}
