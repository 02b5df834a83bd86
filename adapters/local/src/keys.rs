//! Remote key sets (`jwks_url`, `oidc_issuer`) on a long-running process: fetched once before the
//! gateway reports ready, then refreshed in the background so requests rarely wait on the IdP.
//! What to fetch, when, what a response means and what to tell the operator is the core's
//! ([`portcullis_core::key_upkeep`]); this module only supplies the clock, the timer, the thread
//! and the streams.

use std::sync::Arc;

use portcullis_core::fetch::Fetch;
use portcullis_core::key_upkeep;
use portcullis_core::{Event, Gateway, LogSink};
use tokio::sync::oneshot;

use crate::context::SystemClock;
use crate::log;
use crate::serve::App;

/// Fetch every remote key set and log each provider's state (an event each). Never fails: a missing
/// key set does not stop the gateway (see [`portcullis_core::key_upkeep`]).
pub async fn load_and_report<F: Fetch + ?Sized>(gateway: &Gateway, fetch: &F) {
    let fetched = gateway.fetch_every_key_set(fetch, &SystemClock).await;
    for event in key_upkeep::startup_events(&fetched, crate::context::now()) {
        log::event(&event);
    }
}

/// The background refresh, stopped when this is dropped (so a shutdown, or an early return,
/// stops it): dropping the sender wakes the refresher's receiver.
#[derive(Debug)]
pub struct Refresher {
    _stop: Option<oneshot::Sender<()>>,
}

/// Start refreshing `app`'s remote key sets in the background, logging each event as a JSON line
/// on stderr.
///
/// The refresh runs on a thread of its own with a single-threaded runtime: the core's futures are
/// not `Send` (its traits are shared with WebAssembly runtimes), so they cannot be spawned onto
/// the multi-threaded runtime the gateway starts on.
pub fn spawn_refresher(app: Arc<App>) -> Refresher {
    let (stop, stopped) = oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name("portcullis-keys".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => {}
                        () = refresh_forever(&app) => {}
                    }
                }),
                Err(e) => not_refreshing(&e),
            }
        });
    if let Err(e) = started {
        not_refreshing(&e);
    }
    Refresher { _stop: Some(stop) }
}

/// The warning when the refresher cannot start: the gateway serves on, but its key sets will go
/// stale.
fn not_refreshing(e: &dyn std::fmt::Display) {
    log::event(&Event::key_refresher_failed(
        crate::context::now(),
        &e.to_string(),
    ));
}

/// Refresh the live gateway's key sets as they fall due. A reload may bring remote key sets to
/// a policy that had none, so the schedule is the live policy's, looked up each round.
async fn refresh_forever(app: &App) {
    loop {
        let every = app.gateway().refresh_schedule();
        tokio::time::sleep(every.unwrap_or(std::time::Duration::from_secs(1))).await;
        for event in app.gateway().refresh_due(app.fetch(), &SystemClock).await {
            log::Sink.event(&event);
        }
    }
}
