//! Remote key sets (`jwks_url`, `oidc_issuer`) on a long-running process: every set fetched
//! once before the gateway reports ready, what each provider's fetch gave in the words the
//! operator reads (at start-up and from `check --online`), and how often to look for refreshes
//! that are due. The runtime only supplies the fetcher, the clock, the timer and the streams.
//!
//! A provider whose keys cannot be fetched at start-up does not stop the gateway: routes that do
//! not use it keep working, its tokens get 503 `keys-unavailable` until the IdP answers, and the
//! background refresh keeps trying (within the provider's minimum interval). Refusing to start
//! would turn one IdP's outage into an outage of every route.

use std::time::Duration;

use crate::decision::Gateway;
use crate::event::{Event, Kind, Level};
use crate::fetch::Fetch;
use crate::jwks::KeyEvent;
use crate::time::{Clock, UnixTime};

/// How often a long-running process asks [`Gateway::refresh_due`] for the key sets that are
/// due. Cheap: the core only fetches sets that are due and outside their minimum refresh
/// interval.
pub const REFRESH_TICK: Duration = Duration::from_secs(1);

/// What one provider's first fetch gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKeys {
    /// The provider's name in the policy.
    pub provider: String,
    /// The number of usable keys, or why there are none.
    pub keys: Result<usize, String>,
    /// Keys of the fetched set that were skipped, as the core describes them.
    pub skipped: Vec<String>,
}

/// One line of the `check --online` report: its output (stdout), or a diagnostic (stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckLine {
    /// A provider whose keys were fetched.
    Output(String),
    /// A skipped key, or a provider whose keys could not be had.
    Diagnostic(String),
}

impl Gateway {
    /// Fetch every remote key set now (whether due or not) and say what each gave, in policy
    /// order. Policies without remote key sets fetch nothing and get an empty list.
    pub async fn fetch_every_key_set<F: Fetch + ?Sized>(
        &self,
        fetch: &F,
        clock: &dyn Clock,
    ) -> Vec<ProviderKeys> {
        let events = self.refresh_keys(clock.now(), fetch, true).await;
        let status = self.key_status(clock.now()).await;
        status
            .into_iter()
            .map(|(provider, ready)| {
                let mut keys = None;
                let mut failure = None;
                let mut skipped = Vec::new();
                for (_, event) in events.iter().filter(|(name, _)| *name == provider) {
                    match event {
                        KeyEvent::Refreshed { keys: n } => keys = Some(*n),
                        KeyEvent::RefreshFailed { reason } => failure = Some(reason.clone()),
                        KeyEvent::SkippedKey { .. } => skipped.push(event.to_string()),
                    }
                }
                let keys = match (ready, keys, failure) {
                    (true, Some(n), _) => Ok(n),
                    (_, _, Some(reason)) => Err(reason),
                    _ => Err("no key set was fetched".to_owned()),
                };
                ProviderKeys {
                    provider,
                    keys,
                    skipped,
                }
            })
            .collect()
    }

    /// How often a long-running process should call [`Gateway::refresh_due`], or `None` when
    /// the policy has no remote key sets and no background refresh is needed at all.
    pub fn refresh_schedule(&self) -> Option<Duration> {
        let providers = &self.policy().providers;
        providers
            .iter()
            .any(|p| p.remote_keys().is_some())
            .then_some(REFRESH_TICK)
    }
}

/// The start-up events of `serve` and `demo`, one per provider (after one per skipped key),
/// with `provider`; as text, `auth provider "NAME": N keys loaded` and the like.
pub fn startup_events(fetched: &[ProviderKeys], now: UnixTime) -> Vec<Event> {
    let mut events = Vec::new();
    for p in fetched {
        let name = &p.provider;
        for skipped in &p.skipped {
            let text = format!("auth provider \"{name}\": {skipped}");
            events.push(
                Event::new(now, Level::Warn, Kind::KeySkipped, text)
                    .with("provider", name.as_str()),
            );
        }
        events.push(match &p.keys {
            Ok(n) => Event::new(
                now,
                Level::Info,
                Kind::KeySetRefreshed,
                format!("auth provider \"{name}\": {n} keys loaded"),
            )
            .with("provider", name.as_str())
            .with("keys", *n),
            Err(why) => Event::new(
                now,
                Level::Warn,
                Kind::KeySetFailed,
                format!(
                    "auth provider \"{name}\": keys unavailable: {why} \
                     (tokens for it get 503 until the IdP answers)"
                ),
            )
            .with("provider", name.as_str()),
        });
    }
    events
}

/// The `check --online` report for the policy file `file`: per provider, its skipped keys as
/// warnings, then whether its keys could be had.
pub fn check_lines(file: &str, fetched: &[ProviderKeys]) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for p in fetched {
        let name = &p.provider;
        for skipped in &p.skipped {
            lines.push(CheckLine::Diagnostic(format!(
                "{file}: auth provider \"{name}\": warning: {skipped}"
            )));
        }
        lines.push(match &p.keys {
            Ok(n) => CheckLine::Output(format!("{file}: auth provider \"{name}\": ok ({n} keys)")),
            Err(why) => {
                CheckLine::Diagnostic(format!("{file}: auth provider \"{name}\": FAILED: {why}"))
            }
        });
    }
    lines
}

/// The verdict of `check --online`: it fails if any key set could not be had.
pub fn check_verdict(fetched: &[ProviderKeys]) -> Result<(), String> {
    match fetched.iter().filter(|p| p.keys.is_err()).count() {
        0 => Ok(()),
        1 => Err("1 key set could not be fetched".into()),
        n => Err(format!("{n} key sets could not be fetched")),
    }
}

#[cfg(test)]
mod tests {
    use futures_executor::block_on;
    use serde_json::json;

    use super::*;
    use crate::config::{NoSecrets, Policy};
    use crate::fetch::{FetchError, FetchResponse, NoFetch};
    use crate::testing::keys;
    use crate::time::{FixedClock, UnixTime};

    /// An IdP that serves the test key set, plus one key the core cannot use.
    struct Idp;

    impl Fetch for Idp {
        async fn get(&self, _: &str, _: Duration) -> Result<FetchResponse, FetchError> {
            let mut jwks = keys().jwks();
            if let Some(list) = jwks["keys"].as_array_mut() {
                list.push(json!({ "kty": "oct", "k": "c2VjcmV0" }));
            }
            Ok(FetchResponse {
                status: 200,
                body: jwks.to_string().into_bytes(),
                cache_control: None,
            })
        }
    }

    fn gateway(remote: bool) -> Gateway {
        let mut idp = json!({ "type": "jwt", "issuer": "https://idp.test/", "audiences": ["api"],
                              "algorithms": ["ES256"] });
        if remote {
            idp["jwks_url"] = json!("https://idp.test/jwks.json");
        } else {
            idp["jwks"] = keys().jwks();
        }
        let policy = json!({
            "version": 1,
            "origins": { "api": { "url": "http://127.0.0.1:9999" } },
            "auth": { "idp": idp },
            "routes": [ { "id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                          "auth": { "providers": ["idp"] } } ]
        });
        match Policy::from_json(&policy.to_string(), &NoSecrets) {
            Ok(policy) => Gateway::new(policy),
            Err(e) => panic!("{e:?}"),
        }
    }

    const CLOCK: FixedClock = FixedClock(UnixTime::from_secs(1_750_000_000));

    #[test]
    fn every_remote_set_is_fetched_and_reported() {
        let fetched = block_on(gateway(true).fetch_every_key_set(&Idp, &CLOCK));
        assert_eq!(fetched.len(), 1);
        assert_eq!(fetched[0].provider, "idp");
        assert!(matches!(fetched[0].keys, Ok(n) if n > 0), "{fetched:?}");
        assert_eq!(fetched[0].skipped.len(), 1, "{fetched:?}");
    }

    #[test]
    fn a_failed_fetch_says_why() {
        let fetched = block_on(gateway(true).fetch_every_key_set(&NoFetch, &CLOCK));
        match &fetched[..] {
            [one] => assert_eq!(
                one.keys,
                Err(format!("JWKS fetch: {}", FetchError::Unsupported)),
                "{fetched:?}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_remote_key_sets_need_a_refresh_schedule() {
        assert_eq!(gateway(true).refresh_schedule(), Some(REFRESH_TICK));
        assert_eq!(gateway(false).refresh_schedule(), None);
        let none = block_on(gateway(false).fetch_every_key_set(&Idp, &CLOCK));
        assert!(none.is_empty());
    }

    fn fetched() -> Vec<ProviderKeys> {
        vec![
            ProviderKeys {
                provider: "idp".into(),
                keys: Ok(2),
                skipped: vec!["skipped key /keys/1: \"kty\" must be RSA, EC or OKP".into()],
            },
            ProviderKeys {
                provider: "other".into(),
                keys: Err("JWKS answered HTTP 500".into()),
                skipped: Vec::new(),
            },
        ]
    }

    #[test]
    fn startup_events_name_the_provider_and_the_outcome() {
        let events = startup_events(&fetched(), UnixTime::from_secs(1));
        let seen: Vec<(Kind, &str, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.text.as_str(),
                    e.field("provider").and_then(|v| v.as_str()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Kind::KeySkipped,
                    "auth provider \"idp\": skipped key /keys/1: \"kty\" must be RSA, EC or OKP",
                    Some("idp")
                ),
                (
                    Kind::KeySetRefreshed,
                    "auth provider \"idp\": 2 keys loaded",
                    Some("idp")
                ),
                (
                    Kind::KeySetFailed,
                    "auth provider \"other\": keys unavailable: JWKS answered HTTP 500 \
                     (tokens for it get 503 until the IdP answers)",
                    Some("other")
                ),
            ]
        );
    }

    #[test]
    fn check_lines_send_only_successes_to_the_output() {
        assert_eq!(
            check_lines("p.json", &fetched()),
            [
                CheckLine::Diagnostic(
                    "p.json: auth provider \"idp\": warning: skipped key /keys/1: \"kty\" must be \
                     RSA, EC or OKP"
                        .into()
                ),
                CheckLine::Output("p.json: auth provider \"idp\": ok (2 keys)".into()),
                CheckLine::Diagnostic(
                    "p.json: auth provider \"other\": FAILED: JWKS answered HTTP 500".into()
                ),
            ]
        );
    }

    #[test]
    fn the_verdict_counts_the_failures() {
        let mut all = fetched();
        assert_eq!(
            check_verdict(&all),
            Err("1 key set could not be fetched".into())
        );
        all.push(all[1].clone());
        assert_eq!(
            check_verdict(&all),
            Err("2 key sets could not be fetched".into())
        );
        assert_eq!(check_verdict(&all[..1]), Ok(()));
        assert_eq!(check_verdict(&[]), Ok(()));
    }
}
