//! Time as a value. The core never reads a clock: every decision takes `now` from the adapter,
//! so vectors can run with a fixed clock and wasm builds never touch `SystemTime::now()`.

use core::future::Future;
use core::pin::pin;
use core::time::Duration;

use futures_util::future::{select, Either};

/// Microseconds since the Unix epoch, as the adapter's clock saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        UnixTime(micros)
    }

    /// The instant `millis` milliseconds after the epoch (JavaScript's `Date.now()`).
    pub const fn from_millis(millis: u64) -> Self {
        UnixTime(millis.saturating_mul(1_000))
    }

    /// The instant JavaScript's `Date.now()` names, fractions of a millisecond dropped. A value
    /// that is not a finite positive number reads as the epoch rather than failing requests.
    pub fn from_millis_f64(millis: f64) -> Self {
        let millis = if millis.is_finite() && millis > 0.0 {
            millis as u64
        } else {
            0
        };
        UnixTime::from_millis(millis)
    }

    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        UnixTime(secs.saturating_mul(1_000_000))
    }

    /// The instant `since_epoch` after the epoch, saturating far in the future.
    pub fn from_duration(since_epoch: Duration) -> Self {
        UnixTime(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
    }

    /// The instant `time` names. A time before the epoch (a clock set before 1970) reads as the
    /// epoch rather than failing requests; one past what microseconds hold saturates.
    pub fn from_system_time(time: std::time::SystemTime) -> Self {
        let micros = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        UnixTime(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        UnixTime(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }

    /// RFC 3339 text in UTC with microseconds, as written into every log line.
    pub fn to_rfc3339(self) -> String {
        let secs = (self.0 / 1_000_000) as i64;
        let nanos = ((self.0 % 1_000_000) * 1_000) as u32;
        match chrono::DateTime::from_timestamp(secs, nanos) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            None => String::from("invalid-time"),
        }
    }
}

/// The runtime's clock, for the core's own measurements (how long the gateway and the origin
/// took, when an event happened). Decisions still take their instant as a value
/// ([`crate::RequestContext::now`]), so they can be replayed.
pub trait Clock {
    /// Now, by the runtime's wall clock.
    fn now(&self) -> UnixTime;
}

/// A clock that stands still, for tests and for callers that measure nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub UnixTime);

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0
    }
}

/// `future`'s output, or `None` if `timer` resolves first; `future` is then dropped, which
/// cancels whatever it was waiting on. The core reads no clock, so the runtime supplies the
/// timer (a sleep for the timeout on its own clock): every runtime bounds an origin request, a
/// key-set fetch or a store call the same way.
pub async fn within<F: Future, T: Future>(timer: T, future: F) -> Option<F::Output> {
    match select(pin!(future), pin!(timer)).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_the_future_unless_the_timer_ends_first() {
        use futures_executor::block_on;
        let ready = std::future::ready(7);
        assert_eq!(
            block_on(within(std::future::pending::<()>(), ready)),
            Some(7)
        );
        let never = std::future::pending::<u8>();
        assert_eq!(block_on(within(std::future::ready(()), never)), None);
    }

    #[test]
    fn a_duration_since_the_epoch_saturates() {
        let d = Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            UnixTime::from_duration(d).as_micros(),
            1_700_000_000_123_456
        );
        assert_eq!(UnixTime::from_duration(Duration::MAX).as_micros(), u64::MAX);
        assert_eq!(UnixTime::from_duration(Duration::ZERO).as_secs(), 0);
    }

    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn a_system_time_is_its_microseconds_since_the_epoch_and_never_before_it() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            UnixTime::from_system_time(at).as_micros(),
            1_700_000_000_123_456
        );
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(UnixTime::from_system_time(before).as_micros(), 0);
        assert!(UnixTime::from_system_time(SystemTime::now()).as_secs() > 1_700_000_000);
    }

    #[test]
    fn javascript_milliseconds_that_are_not_a_positive_number_are_the_epoch() {
        let at = UnixTime::from_millis_f64(1_700_000_000_123.9);
        assert_eq!(at.as_micros(), 1_700_000_000_123_000);
        for odd in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0] {
            assert_eq!(UnixTime::from_millis_f64(odd).as_micros(), 0, "{odd}");
        }
    }
}
