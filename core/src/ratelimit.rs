//! The `RateLimit-Policy` and `RateLimit` header fields (draft-ietf-httpapi-ratelimit-headers):
//! the facts a quota tells the client, kept typed until the header text is written.
//!
//! Both an admitted request (on the origin's response) and a refused one (on the 429) carry
//! them, so the quota phase and the problem response share this one rendering.

use std::fmt;
use std::num::NonZeroU32;

/// One quota's view for the client: its name, its limit, and where the caller stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The quota's name, as the policy spells it.
    pub name: String,
    /// Requests admitted per window.
    pub limit: NonZeroU32,
    /// Window length in whole seconds.
    pub window_s: u64,
    /// Requests still admissible right now.
    pub remaining: u32,
    /// Seconds until the caller may count on the quota again: full replenishment for an
    /// admitted request, the wait before the next admission for a refused one.
    pub reset_s: u64,
}

impl RateLimit {
    /// The `RateLimit-Policy` field value: `"name";q=LIMIT;w=WINDOW`.
    pub fn policy(&self) -> PolicyField<'_> {
        PolicyField(self)
    }

    /// The `RateLimit` field value: `"name";r=REMAINING;t=RESET`.
    pub fn state(&self) -> StateField<'_> {
        StateField(self)
    }
}

/// Renders [`RateLimit::policy`].
#[derive(Debug, Clone, Copy)]
pub struct PolicyField<'a>(&'a RateLimit);

impl fmt::Display for PolicyField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RateLimit {
            name,
            limit,
            window_s,
            ..
        } = self.0;
        write!(f, "\"{name}\";q={limit};w={window_s}")
    }
}

/// Renders [`RateLimit::state`].
#[derive(Debug, Clone, Copy)]
pub struct StateField<'a>(&'a RateLimit);

impl fmt::Display for StateField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RateLimit {
            name,
            remaining,
            reset_s,
            ..
        } = self.0;
        write!(f, "\"{name}\";r={remaining};t={reset_s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_render_as_the_draft_spells_them() {
        let r = RateLimit {
            name: "per-user".into(),
            limit: NonZeroU32::new(100).unwrap(),
            window_s: 60,
            remaining: 7,
            reset_s: 12,
        };
        assert_eq!(r.policy().to_string(), "\"per-user\";q=100;w=60");
        assert_eq!(r.state().to_string(), "\"per-user\";r=7;t=12");
    }
}
