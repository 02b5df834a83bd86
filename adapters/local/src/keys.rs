//! Remote key sets (`jwks_url`, `oidc_issuer`) on a long-running process: fetched once before the
//! gateway reports ready, then refreshed in the background so requests rarely wait on the IdP.
//! When, how often and what a response means is the core's business
//! ([`Gateway::refresh_keys`]); this module only supplies the clock, the task and the log.
//!
//! A provider whose keys cannot be fetched at start-up does not stop the gateway: routes that do
//! not use it keep working, its tokens get the core's 503 `keys-unavailable` until the IdP
//! answers, and the background refresh keeps trying (within the provider's minimum interval).
//! Refusing to start would turn one IdP's outage into an outage of every route.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::fetch::Fetch;
use portcullis_core::jwks::KeyEvent;
use portcullis_core::{Gateway, Level, LogSink};
use tokio::sync::oneshot;

use crate::context::SystemClock;
use crate::serve::App;
use crate::{context, log};

/// How often the background task asks the core whether a key set is due. Cheap: the core only
/// fetches sets that are due and outside their minimum refresh interval.
pub const REFRESH_TICK: Duration = Duration::from_secs(1);

/// What one provider's first fetch gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The provider's name in the policy.
    pub provider: String,
    /// The number of usable keys, or why there are none.
    pub keys: Result<usize, String>,
    /// Keys of the fetched set that were skipped, as the core describes them.
    pub skipped: Vec<String>,
}

/// Fetch every remote key set now (whether due or not) and say what each gave, in policy order.
/// Policies without remote key sets fetch nothing and get an empty list.
pub async fn load_all<F: Fetch + ?Sized>(gateway: &Gateway, fetch: &F) -> Vec<Loaded> {
    let events = gateway.refresh_keys(context::now(), fetch, true).await;
    let status = gateway.key_status(context::now()).await;
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
            Loaded {
                provider,
                keys,
                skipped,
            }
        })
        .collect()
}

/// The start-up lines for `serve` and `demo`, one per provider (plus one per skipped key).
pub fn startup_lines(loaded: &[Loaded]) -> Vec<String> {
    let mut lines = Vec::new();
    for l in loaded {
        let name = &l.provider;
        for skipped in &l.skipped {
            lines.push(format!("portcullis: auth provider \"{name}\": {skipped}"));
        }
        lines.push(match &l.keys {
            Ok(n) => format!("portcullis: auth provider \"{name}\": {n} keys loaded"),
            Err(why) => format!(
                "portcullis: auth provider \"{name}\": keys unavailable: {why} \
                 (tokens for it get 503 until the IdP answers)"
            ),
        });
    }
    lines
}

/// Fetch every remote key set and print each provider's state to stderr. Never fails: see the
/// module docs for why a missing key set does not stop the gateway.
pub async fn load_and_report<F: Fetch + ?Sized>(gateway: &Gateway, fetch: &F) {
    for line in startup_lines(&load_all(gateway, fetch).await) {
        eprintln!("{line}");
    }
}

/// The background refresh, stopped when this is dropped (so a shutdown, or an early return,
/// stops it).
#[derive(Debug)]
pub struct Refresher(Option<oneshot::Sender<()>>);

impl Drop for Refresher {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Start refreshing `app`'s remote key sets in the background, logging each event as a JSON line
/// on stderr. No thread at all when the policy has no remote key sets.
///
/// The refresh runs on a thread of its own with a single-threaded runtime: the core's futures are
/// not `Send` (its traits are shared with WebAssembly runtimes), so they cannot be spawned onto
/// the multi-threaded runtime the gateway starts on.
pub async fn spawn_refresher(app: Arc<App>) -> Refresher {
    if app.gateway().key_status(context::now()).await.is_empty() {
        return Refresher(None);
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name("portcullis-keys".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    log::event(
                        Level::Warn,
                        format!("cannot start the key refresher, key sets will not refresh: {e}"),
                    );
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::select! {
                    _ = stopped => {}
                    () = refresh_forever(&app) => {}
                }
            });
        });
    if let Err(e) = started {
        log::event(
            Level::Warn,
            format!("cannot start the key refresher, key sets will not refresh: {e}"),
        );
    }
    Refresher(Some(stop))
}

async fn refresh_forever(app: &App) {
    let mut tick = tokio::time::interval(REFRESH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for event in app.gateway().refresh_due(app.fetch(), &SystemClock).await {
            log::Sink.event(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_lines_name_the_provider_and_the_outcome() {
        let lines = startup_lines(&[
            Loaded {
                provider: "idp".into(),
                keys: Ok(2),
                skipped: vec!["skipped key /keys/1: \"kty\" must be RSA, EC or OKP".into()],
            },
            Loaded {
                provider: "other".into(),
                keys: Err("JWKS answered HTTP 500".into()),
                skipped: Vec::new(),
            },
        ]);
        assert_eq!(
            lines,
            [
                "portcullis: auth provider \"idp\": skipped key /keys/1: \"kty\" must be RSA, EC or OKP",
                "portcullis: auth provider \"idp\": 2 keys loaded",
                "portcullis: auth provider \"other\": keys unavailable: JWKS answered HTTP 500 \
                 (tokens for it get 503 until the IdP answers)",
            ]
        );
    }
}
