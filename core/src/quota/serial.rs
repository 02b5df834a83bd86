//! Quota state in a store that applies one step at a time per key: a Cloudflare Durable Object,
//! one object per quota key, whose input gate delivers one request at a time while its storage
//! calls are in flight, so read–step–write is atomic without compare-and-swap. What the caller
//! asks ([`StepRequest`]), what the store keeps, and when it may forget a state
//! ([`on_expiry`]), so that storage holds only keys active within their window.

use serde::{Deserialize, Serialize};

use super::{step, Rate, State, Verdict};
use crate::time::UnixTime;

/// What the caller asks the store holding one quota key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRequest {
    /// The quota's rate.
    pub rate: Rate,
    /// The caller's clock, µs since the epoch (the core decides with one `now` per request).
    pub now: u64,
    /// Only say what the step's verdict would be, and write nothing ([`CounterStore::peek`]).
    ///
    /// [`CounterStore::peek`]: super::CounterStore::peek
    /// Absent on the wire for a spend, which keeps the form it always had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peek: bool,
}

impl StepRequest {
    /// The ask for one request under `rate` at `now`.
    pub fn new(rate: Rate, now: UnixTime) -> Self {
        StepRequest {
            rate,
            now: now.as_micros(),
            peek: false,
        }
    }

    /// The ask for the verdict alone: nothing is written.
    pub fn peek(rate: Rate, now: UnixTime) -> Self {
        StepRequest {
            peek: true,
            ..StepRequest::new(rate, now)
        }
    }

    /// Apply the ask to the stored `current` state: the verdict, and the state to store, with an
    /// expiry alarm at its [`State::expires_at`]; `None` when nothing changed (a refusal), so
    /// nothing is written.
    pub fn apply(&self, current: Option<State>) -> (Verdict, Option<State>) {
        let (verdict, next) = step(current, UnixTime::from_micros(self.now), self.rate);
        (
            verdict,
            (!self.peek && current != Some(next)).then_some(next),
        )
    }
}

/// What the store does when a state's expiry alarm rings at `now`: look again at the returned
/// instant if a later step pushed the state out, or (`None`) delete it, since it means nothing.
pub fn on_expiry(current: Option<State>, now: UnixTime) -> Option<UnixTime> {
    current.map(|s| s.expires_at()).filter(|at| *at > now)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn rate(limit: u32) -> Rate {
        Rate {
            limit: NonZeroU32::new(limit).unwrap(),
            window_us: 10_000_000,
        }
    }

    #[test]
    fn an_admission_is_stored_and_a_refusal_writes_nothing() {
        let now = UnixTime::from_secs(100);
        let ask = StepRequest::new(rate(1), now);
        let (admitted, stored) = ask.apply(None);
        assert!(admitted.allowed);
        let stored = stored.expect("an admission changes the state");
        assert_eq!(
            stored.expires_at(),
            now.saturating_add(std::time::Duration::from_secs(10))
        );
        let (refused, unchanged) = ask.apply(Some(stored));
        assert!(!refused.allowed);
        assert_eq!(unchanged, None);
    }

    #[test]
    fn a_state_is_deleted_at_its_expiry_unless_pushed_out() {
        let expires = UnixTime::from_secs(200);
        let state = State {
            tat: expires.as_micros(),
        };
        assert_eq!(
            on_expiry(Some(state), UnixTime::from_secs(150)),
            Some(expires)
        );
        assert_eq!(on_expiry(Some(state), expires), None);
        assert_eq!(on_expiry(None, expires), None);
    }

    #[test]
    fn the_ask_travels_as_json() {
        let ask = StepRequest::new(rate(3), UnixTime::from_micros(42));
        let text = serde_json::to_string(&ask).unwrap();
        assert_eq!(
            text,
            r#"{"rate":{"limit":3,"window_us":10000000},"now":42}"#
        );
        assert_eq!(serde_json::from_str::<StepRequest>(&text).unwrap(), ask);
        let peek = StepRequest::peek(rate(3), UnixTime::from_micros(42));
        let text = serde_json::to_string(&peek).unwrap();
        assert!(text.ends_with(r#""now":42,"peek":true}"#), "{text}");
        assert_eq!(serde_json::from_str::<StepRequest>(&text).unwrap(), peek);
    }

    #[test]
    fn a_peek_says_the_verdict_and_writes_nothing() {
        let now = UnixTime::from_secs(100);
        let (spent, written) = StepRequest::new(rate(1), now).apply(None);
        assert!(spent.allowed);
        let written = written.expect("a spend writes");
        let (peeked, none) = StepRequest::peek(rate(1), now).apply(Some(written));
        assert!(!peeked.allowed, "the spent key is over its limit");
        assert_eq!(none, None);
        let (fresh, none) = StepRequest::peek(rate(1), now).apply(None);
        assert!(fresh.allowed);
        assert_eq!(none, None);
    }
}
