//! Single-flight key-set fetches across instances that share no memory, only a store with
//! compare-and-swap (Spin, where every request runs in a fresh instance).
//!
//! [`KeyRing`](super::KeyRing)'s lock makes concurrent requests of one instance share one fetch.
//! Where instances share nothing but a store, the ring coordinates through the store instead,
//! when the adapter plugs one in ([`crate::Gateway::with_shared_key_sets`]). What is promised,
//! given a store whose compare-and-swap is exact:
//!
//! - **One fetch per need, across instances.** A request whose plan says Fetch first reads the
//!   stored state and plans again with it: another instance may have fetched already. If it still
//!   must fetch, it *claims* the fetch by writing the state with a claim (`fetching_until`) in
//!   place of exactly the text it read. Only the instance whose write lands fetches. The others
//!   read the claim and wait (polling the store on their own timer, never woken by anyone else)
//!   until the claim is released or expires, then plan again with what was published: a rotated
//!   `kid` that is now known verifies, an unknown one gets the normal rules (401 within the
//!   minimum interval). So `jwks_min_refresh_interval_s` holds across instances, as it does
//!   within one.
//! - **Published at once.** The winner writes the fetched state, claim cleared and the attempt
//!   time set, as soon as the fetch ends, not when its request ends.
//! - **Never older over newer.** Every write replaces only the text its writer read. A writer
//!   whose text was replaced meanwhile reads again and writes only if what it holds was attempted
//!   later than what is stored. So a winner that outlived its claim cannot put back an older set.
//! - **Nothing hangs.** A claim lasts the fetch's worst case ([`claim_duration`]: the fetch
//!   timeout, twice for an OIDC issuer, which may need discovery first, plus [`CLAIM_MARGIN`]). A
//!   claim whose winner died expires and the next request claims again; a waiter never waits
//!   longer than one claim of its own would last, even for a claim far in the future; every loop
//!   has a bound.
//! - **The store is a courtesy to the IdP, never a reason to weaken verification.** A store that
//!   fails, or is lost to other instances more than [`MAX_RACES`] times, makes the request fetch
//!   on its own, as it would without a shared store, and the adapter hears about it
//!   ([`SharedKeySets::warn`]). A stored text that does not decode is treated as no state.
//!
//! Time: the core never reads a clock, and a request's `now` is fixed when it arrives. While it
//! waits for another instance, a request counts time as the sum of its pauses, each as long as
//! the adapter reports it was ([`SharedKeySets::pause`]). Store calls in between are not
//! counted, so the request's idea of the time lags the truth a little: it may wait a little
//! longer for a claim to expire, never shorter. Instances compare claims with their own clocks;
//! skew between machines only moves when a dead winner's claim is taken over.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{KeyEvent, KeySetState, RemoteKeys, RemoteSource};
use crate::fetch::Fetch;
use crate::time::UnixTime;

/// A pending store operation. Boxed so that the store can be plugged into a [`crate::Gateway`]
/// at run time; not `Send`, since WebAssembly runtimes cannot offer that (like every future the
/// core's traits return).
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A store call that failed; the text is for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStoreError {
    reason: String,
}

impl SharedStoreError {
    /// A failure, described for the operator.
    pub fn new(reason: impl Into<String>) -> Self {
        SharedStoreError {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SharedStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A store that instances share, holding each key set's state as text under the key-set names
/// of [`crate::Gateway::key_set_names`].
///
/// The core relies on one property: [`SharedKeySets::replace`] is an exact compare-and-swap,
/// including on a name that holds nothing yet. Where the store's is weaker, single flight is as
/// weak; verification is never affected.
pub trait SharedKeySets: Send + Sync + fmt::Debug {
    /// The text stored under `name`, if any.
    fn read<'a>(&'a self, name: &'a str) -> Pending<'a, Result<Option<String>, SharedStoreError>>;

    /// Store `text` under `name` if it still holds exactly `expected` (`None`: nothing), and
    /// return whether it was stored. Atomic: of two instances replacing the same text, at most
    /// one succeeds.
    fn replace<'a>(
        &'a self,
        name: &'a str,
        expected: Option<&'a str>,
        text: &'a str,
    ) -> Pending<'a, Result<bool, SharedStoreError>>;

    /// Sleep about `step` on the calling request's own timer, and return how long it actually
    /// slept (at least `step`, by the adapter's clock). How a waiting request tells time.
    fn pause(&self, step: Duration) -> Pending<'_, Duration>;

    /// The core could not coordinate through the store for key set `name` and went on alone
    /// (`why` says what happened). For the operator's log, as a warning.
    fn warn(&self, name: &str, why: &str);
}

/// How long a waiting request sleeps between reads of the store.
pub const POLL_STEP: Duration = Duration::from_millis(10);

/// Added to a claim beyond its fetches' timeouts: for parsing, publishing and scheduling.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(1);

/// Writes lost to other instances, per request and key set, before going on alone.
pub const MAX_RACES: usize = 8;

/// How long a claim lasts: the fetch's worst case. An OIDC issuer may need discovery first.
pub fn claim_duration(cfg: &RemoteKeys) -> Duration {
    let fetches = match cfg.source {
        RemoteSource::JwksUrl(_) => 1,
        RemoteSource::OidcIssuer(_) => 2,
    };
    cfg.fetch_timeout
        .saturating_mul(fetches)
        .saturating_add(CLAIM_MARGIN)
}

/// A stored text as a state; anything that does not decode is no state.
pub(super) fn decode(text: &str) -> Option<KeySetState> {
    let mut state: KeySetState = serde_json::from_str(text).ok()?;
    state.restore();
    Some(state)
}

fn encode(state: &KeySetState) -> Option<String> {
    serde_json::to_string(state).ok()
}

/// Whether `stored` was attempted after `ours`, so that it must not be replaced by it.
fn newer(stored: &KeySetState, ours: &KeySetState) -> bool {
    stored.last_attempt > ours.last_attempt
}

/// Take `stored` in place of `state` unless `state` was attempted later. The claim stays in the
/// store: the state held in memory never carries one.
fn adopt(state: &mut KeySetState, mut stored: KeySetState) {
    if !newer(state, &stored) {
        stored.fetching_until = None;
        *state = stored;
    }
}

/// Bring `state` up to date through `store`, fetching only if `wants_fetch` still holds with
/// the stored state and no other instance is fetching (see the module docs). `now` is the
/// request's time; the events are this instance's fetch's, if it made one.
pub(super) async fn refresh<F: Fetch + ?Sized>(
    store: &dyn SharedKeySets,
    name: &str,
    state: &mut KeySetState,
    cfg: &RemoteKeys,
    now: UnixTime,
    fetch: &F,
    wants_fetch: impl Fn(&KeySetState, UnixTime) -> bool,
) -> Vec<KeyEvent> {
    let claim_for = claim_duration(cfg);
    // A waiter waits at most as long as a claim of its own would last, in time and in polls
    // (the second bound holds even if `pause` returns at once).
    let max_wait = claim_for.saturating_add(POLL_STEP);
    let max_polls = (max_wait.as_micros() / POLL_STEP.as_micros()).saturating_add(1);
    let mut waited = Duration::ZERO;
    let mut polls = 0u128;
    let mut races = 0;
    let mut seen: Option<String> = None;
    let (claim, at) = loop {
        let at = now.saturating_add(waited);
        let text = match store.read(name).await {
            Ok(text) => text,
            Err(e) => {
                return alone(store, name, state, cfg, fetch, at, &format!("reading: {e}")).await
            }
        };
        let stored = text.as_deref().and_then(decode);
        let claimed_until = stored.as_ref().and_then(|s| s.fetching_until);
        if text != seen {
            if let Some(stored) = stored {
                adopt(state, stored);
            }
            seen.clone_from(&text);
        }
        if !wants_fetch(state, at) {
            return Vec::new();
        }
        let claimed = claimed_until.is_some_and(|until| until > at.as_micros());
        if claimed && polls < max_polls && waited < max_wait {
            polls += 1;
            waited = waited.saturating_add(store.pause(POLL_STEP).await);
            continue;
        }
        let mut claim = state.clone();
        claim.fetching_until = Some(at.saturating_add(claim_for).as_micros());
        let Some(claim) = encode(&claim) else {
            return alone(
                store,
                name,
                state,
                cfg,
                fetch,
                at,
                "encoding the claim failed",
            )
            .await;
        };
        match store.replace(name, text.as_deref(), &claim).await {
            Ok(true) => break (claim, at),
            Ok(false) if races < MAX_RACES => {
                // Another instance wrote first (a claim, or a result): read it after a pause.
                races += 1;
                polls += 1;
                waited = waited.saturating_add(store.pause(POLL_STEP).await);
            }
            Ok(false) => {
                let why = format!("lost the store to other instances {MAX_RACES} times");
                return alone(store, name, state, cfg, fetch, at, &why).await;
            }
            Err(e) => {
                let why = format!("claiming the fetch: {e}");
                return alone(store, name, state, cfg, fetch, at, &why).await;
            }
        }
    };
    let events = state.refresh(cfg, fetch, at).await;
    publish(store, name, state, claim).await;
    events
}

/// Without coordination: fetch as an instance with no shared store would.
async fn alone<F: Fetch + ?Sized>(
    store: &dyn SharedKeySets,
    name: &str,
    state: &mut KeySetState,
    cfg: &RemoteKeys,
    fetch: &F,
    at: UnixTime,
    why: &str,
) -> Vec<KeyEvent> {
    store.warn(
        name,
        &format!("key-set store: {why}; fetching without coordinating with other instances"),
    );
    state.refresh(cfg, fetch, at).await
}

/// Write the fetched `state` in place of this instance's `claim`, or of whatever replaced it,
/// unless what is stored was attempted later.
async fn publish(store: &dyn SharedKeySets, name: &str, state: &mut KeySetState, claim: String) {
    let Some(text) = encode(state) else {
        store.warn(name, "key-set store: encoding the fetched key set failed");
        return;
    };
    let mut expected = Some(claim);
    for _ in 0..MAX_RACES {
        match store.replace(name, expected.as_deref(), &text).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                store.warn(name, &format!("key-set store: publishing the fetch: {e}"));
                return;
            }
        }
        // The claim was replaced: it expired and another instance claimed or published.
        match store.read(name).await {
            Ok(current) => {
                if let Some(stored) = current.as_deref().and_then(decode) {
                    if newer(&stored, state) {
                        adopt(state, stored);
                        return;
                    }
                }
                expected = current;
            }
            Err(e) => {
                store.warn(name, &format!("key-set store: publishing the fetch: {e}"));
                return;
            }
        }
    }
    store.warn(
        name,
        &format!("key-set store: publishing the fetch lost to other instances {MAX_RACES} times"),
    );
}

#[cfg(test)]
mod tests;
