//! `lockout`: how many 401s block a client address, and for how long.

use std::num::NonZeroU32;

use serde::Deserialize;

use super::reader::{ptr, Field, Json, Reader, Unknown};
use crate::lockout::Lockout;
use crate::quota::Rate;

/// A `lockout` object as the document has it.
pub(super) type Section = Json<RawLockout>;

/// A `lockout` object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLockout {
    failures: Field<Json<u64>>,
    window_s: Field<Json<u64>>,
    block_s: Field<Json<u64>>,
    /// What is counted per: only `ip` for now, and the default.
    by: Field<Json<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// The lockout at `at`, counting under `scope` (`*` for the top level's, else the route id).
pub(super) fn read(r: &mut Reader, section: Section, at: &str, scope: &str) -> Option<Lockout> {
    let RawLockout {
        failures: Field(failures),
        window_s: Field(window_s),
        block_s: Field(block_s),
        by: Field(by),
        unknown,
    } = r.object(section, at)?;
    r.unknown(unknown, at);
    let failures = r
        .required(failures, at, "failures")
        .and_then(|v| r.integer(v, &ptr(at, "failures"), 1, 1_000_000));
    let window_s = r
        .required(window_s, at, "window_s")
        .and_then(|v| r.integer(v, &ptr(at, "window_s"), 1, 86_400));
    let block_s = r
        .required(block_s, at, "block_s")
        .and_then(|v| r.integer(v, &ptr(at, "block_s"), 1, 86_400));
    let by_ok = match by {
        None => true,
        Some(Json::Ok(by)) if by == "ip" => true,
        Some(_) => {
            r.invalid(
                ptr(at, "by"),
                "must be \"ip\" (the only lockout subject so far)",
            );
            false
        }
    };
    let (failures, window_s, block_s) = (failures?, window_s?, block_s?);
    if !by_ok {
        return None;
    }
    Some(Lockout {
        scope: scope.to_owned(),
        failures: Rate {
            limit: NonZeroU32::new(u32::try_from(failures).ok()?)?,
            window_us: window_s * 1_000_000,
        },
        block_us: block_s * 1_000_000,
    })
}
