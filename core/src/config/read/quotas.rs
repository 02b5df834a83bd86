//! `quotas`: named request budgets that routes draw on.
//!
//! A quota that loads has a non-zero limit over a whole number of seconds, something to count
//! per, and an explicit choice for a failing counter store, which defaults to refusing: a store
//! outage must not lift every limit at once.

use std::num::NonZeroU32;

use http::HeaderName;
use serde::Deserialize;

use super::super::{OnStoreError, Quota, QuotaBy};
use super::names::read_named;
use super::reader::{ptr, Field, Json, Named, Reader, Unknown};
use crate::quota::Rate;

/// The `quotas` object as the document has it.
pub(super) type Section = Json<Named<Json<RawQuota>>>;

/// One entry of `quotas`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawQuota {
    limit: Field<Json<u64>>,
    window_s: Field<Json<u64>>,
    by: Field<Json<String>>,
    on_store_error: Field<Json<String>>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Every quota in document order; `None` for one that did not load (its problems are reported).
pub(super) fn read(r: &mut Reader, section: Section, at: &str) -> Vec<(String, Option<Quota>)> {
    read_named(r, section, at, read_quota)
}

fn read_quota(r: &mut Reader, name: &str, raw: Json<RawQuota>, at: &str) -> Option<Quota> {
    let RawQuota {
        limit: Field(limit),
        window_s: Field(window_s),
        by: Field(by),
        on_store_error: Field(on_store_error),
        unknown,
    } = r.object(raw, at)?;
    r.unknown(unknown, at);
    let limit = r
        .required(limit, at, "limit")
        .and_then(|l| r.integer(l, &ptr(at, "limit"), 1, 1_000_000_000));
    let window = r
        .required(window_s, at, "window_s")
        .and_then(|w| r.integer(w, &ptr(at, "window_s"), 1, 31_536_000));
    let by = r
        .required(by, at, "by")
        .and_then(|b| r.string(b, &ptr(at, "by")))
        .and_then(|b| {
            let parsed = match b.as_str() {
                "consumer" => Some(QuotaBy::Consumer),
                "ip" => Some(QuotaBy::Ip),
                "route" => Some(QuotaBy::Route),
                other => other
                    .strip_prefix("header:")
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .map(QuotaBy::Header),
            };
            if parsed.is_none() {
                r.invalid(
                    ptr(at, "by"),
                    "must be \"consumer\", \"ip\", \"route\" or \"header:NAME\"",
                );
            }
            parsed
        });
    let on_store_error = match on_store_error {
        None => Some(None),
        Some(Json::Ok(v)) if v == "deny" => Some(Some(OnStoreError::Deny)),
        Some(Json::Ok(v)) if v == "allow" => Some(Some(OnStoreError::Allow)),
        Some(_) => {
            r.invalid(ptr(at, "on_store_error"), "must be \"deny\" or \"allow\"");
            None
        }
    };
    let limit = NonZeroU32::new(u32::try_from(limit?).ok()?)?;
    Some(Quota {
        name: name.to_owned(),
        rate: Rate {
            limit,
            window_us: window? * 1_000_000,
        },
        by: by?,
        on_store_error: on_store_error?,
    })
}
