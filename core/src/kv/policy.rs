//! The policy read from an [`AtomicStore`] on every request, through a [`PolicyStore`] that lives
//! only as long as the request.
//!
//! An instance that keeps nothing between requests keeps the policy store's [`Memo`] in the
//! store instead, under [`MEMO_KEY`]. With it, a policy text is validated in full (every JSON
//! Schema compiled) and started up (its key sets fetched) only by the first request that sees
//! it; later requests compile only the schemas of the route they match. A schema that fails
//! anyway (a build with a different validator) costs that request a 503 and drops the memo
//! ([`settle`]), so the next request validates in full and refuses the policy as a whole.
//!
//! A value that does not parse or validate, a missing key and an unreadable store all mean 503
//! `no-policy` for every request. A refused text is remembered in the memo too: the first
//! request that sees it logs `policy_rejected` with each problem and its JSON pointer, later ones
//! neither validate it nor log it again (until the policy store's recheck, which reports only
//! new problems), and a changed text is validated as any new one is. Should the memo not be
//! written, the next request validates and reports again: repetition, never a different answer.

use super::AtomicStore;
use crate::config::{ConfigErrors, SchemaCompilation};
use crate::decision::Gateway;
use crate::event::{Event, Kind, Level};
use crate::exchange::Record;
use crate::policy_store::{Applied, Memo, PolicyRead, PolicyStore};
use crate::time::Clock;

/// Where the policy store's memo is kept.
pub const MEMO_KEY: &str = "portcullis:policy-checked";

/// Where the policy is: the store's name (for the operator) and the key holding the text.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    /// The store, as the operator named it.
    pub store: &'a str,
    /// The key holding the policy text.
    pub key: &'a str,
}

impl Location<'_> {
    /// The source, as events name it.
    pub fn describe(&self) -> String {
        format!("key-value store {:?} key {:?}", self.store, self.key)
    }
}

/// What is live for this request: the policy at `at` in `store` (or, when the store could not
/// even be opened, why not), compiled by `compile` with the runtime's secrets and stores as the
/// memo allows. A changed memo is written back; failing to write it only costs the next request
/// a full validation (and a refused text another report), and is reported among the events.
pub fn apply<S: AtomicStore>(
    store: Result<&S, &str>,
    at: Location<'_>,
    clock: &dyn Clock,
    compile: impl FnOnce(&S, &str, SchemaCompilation) -> Result<Gateway, ConfigErrors>,
) -> Applied {
    let source = at.describe();
    let mut policies = PolicyStore::new();
    let store = match store {
        Ok(store) => store,
        Err(why) => return policies.unreadable(why.to_owned(), &source, clock.now()),
    };
    let memo = recall(store);
    if let Some(memo) = &memo {
        policies.recall(memo);
    }
    let read = read(store, at);
    if memo.is_some() && matches!(read, PolicyRead::Missing(_)) {
        // No policy is live now: a text that comes back goes live as a new one, and is
        // reported so. Failing to delete only costs that report.
        let _ = store.delete(MEMO_KEY);
    }
    let mut applied = policies.apply(read, &source, clock.now(), |text, schemas| {
        compile(store, text, schemas)
    });
    let checked = policies.memo();
    if checked.is_some() && checked != memo {
        applied
            .events
            .extend(remember(store, checked.as_ref(), clock));
    }
    applied
}

/// After a request: one that found the policy broken (a schema that failed on first use) drops
/// the memo, so the next request validates in full and refuses the policy with every problem.
pub fn settle<S: AtomicStore>(store: &S, record: &Record) {
    if record.policy_broken {
        let _ = store.delete(MEMO_KEY);
    }
}

fn read<S: AtomicStore>(store: &S, at: Location<'_>) -> PolicyRead {
    let key = at.key;
    match store.get(key) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => PolicyRead::Text(text),
            Err(_) => PolicyRead::Failed(format!("key {key:?} does not hold UTF-8 text")),
        },
        Ok(None) => PolicyRead::Missing(format!("key {key:?} in store {:?}", at.store)),
        Err(e) => PolicyRead::Failed(format!("reading key {key:?}: {e}")),
    }
}

fn recall<S: AtomicStore>(store: &S) -> Option<Memo> {
    let bytes = store.get(MEMO_KEY).ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn remember<S: AtomicStore>(store: &S, memo: Option<&Memo>, clock: &dyn Clock) -> Option<Event> {
    let record = memo.and_then(|m| serde_json::to_vec(m).ok())?;
    let e = store.set(MEMO_KEY, &record).err()?;
    let why = format!("recording which policy was checked failed: {e}");
    Some(Event::new(
        clock.now(),
        Level::Warn,
        Kind::PolicyMemoFailed,
        why,
    ))
}
