//! What one request writes to a Workers Analytics Engine dataset: the same labels and timings as
//! the access line and natively `/metrics` (`portcullis_requests_total{route,decision,reason,
//! status}`, the gateway and origin durations, quota rejections by quota), as one data point.
//!
//! Where nothing can be scraped, a dataset is what a dashboard can query with SQL. Which value
//! goes into which column is a contract with those queries, so it is fixed here, once, for any
//! runtime that has such a store; the runtime only hands [`DataPoint::of`] to its binding (on
//! Workers, `writeDataPoint`). [`BLOBS`] and [`DOUBLES`] name the columns in order: `blob1` is
//! `BLOBS[0]`, `double1` is `DOUBLES[0]`. A point is sampled by the platform, never dropped or
//! summed by the gateway: count requests with `SUM(_sample_interval)`.

use crate::event::{Event, Kind, Level};
use crate::log::Tally;
use crate::time::UnixTime;

/// The longest index Analytics Engine accepts, in bytes. A longer route id (ids may have up to
/// 128 bytes) is clipped for the index only; `blob1` keeps it whole.
pub const MAX_INDEX_BYTES: usize = 96;

/// The blob columns, in order, and what each holds. Every value is text.
pub const BLOBS: [(&str, &str); 7] = [
    (
        "route",
        "the matched route's id; empty when no route matched",
    ),
    ("decision", "`forward`, `reject` or `preflight`"),
    (
        "reason",
        "`ok`, or `<problem>:<reason>` such as `unauthenticated:token_expired`",
    ),
    (
        "status",
        "the status sent to the client, as text (`\"429\"`)",
    ),
    (
        "policy",
        "the version of the policy that decided; empty when none was loaded",
    ),
    (
        "quota",
        "the quota that refused the request (429); else empty",
    ),
    (
        "store_error",
        "how the quota store failed (`unavailable`, `timeout`, `contended`, `corrupt`); else empty",
    ),
];

/// The double columns, in order, and what each holds.
pub const DOUBLES: [(&str, &str); 3] = [
    ("status", "the status sent to the client"),
    (
        "gateway_us",
        "time spent in the gateway itself, µs (the access line's `gateway_us`)",
    ),
    (
        "origin_us",
        "time waiting on the origin, µs; 0 when nothing was sent to it",
    ),
];

/// One request as an Analytics Engine data point (see the module docs for the columns).
#[derive(Debug, Clone, PartialEq)]
pub struct DataPoint {
    /// What the dataset is sampled by: the route id, clipped to [`MAX_INDEX_BYTES`]; empty when
    /// no route matched. Analytics Engine takes exactly one index.
    pub index: String,
    /// `blob1` … `blob7`, as [`BLOBS`] names them.
    pub blobs: [String; 7],
    /// `double1` … `double3`, as [`DOUBLES`] names them.
    pub doubles: [f64; 3],
}

impl DataPoint {
    /// The data point of one request's tally.
    pub fn of(tally: &Tally) -> DataPoint {
        let Tally {
            policy,
            route,
            decision,
            reason,
            status,
            gateway_us,
            origin_us,
            quota,
            store_error,
        } = tally;
        let route = route.clone().unwrap_or_default();
        let mut end = route.len().min(MAX_INDEX_BYTES);
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        DataPoint {
            index: route[..end].to_owned(),
            blobs: [
                route,
                (*decision).to_owned(),
                reason.clone(),
                status.to_string(),
                policy.map(|v| v.to_string()).unwrap_or_default(),
                quota.clone().unwrap_or_default(),
                store_error.unwrap_or_default().to_owned(),
            ],
            doubles: [
                f64::from(*status),
                *gateway_us as f64,
                origin_us.unwrap_or(0) as f64,
            ],
        }
    }
}

/// `analytics_write_failed`: the dataset refused a data point (`cause`, the runtime's words).
/// The request it was about is answered all the same; a runtime reports this once, not per
/// request, since a dataset that refuses one point usually refuses them all.
pub fn write_failed(now: UnixTime, cause: &str) -> Event {
    Event::new(
        now,
        Level::Warn,
        Kind::AnalyticsWriteFailed,
        format!("writing to the analytics dataset failed, requests are served without it: {cause}"),
    )
}

/// The columns as a Markdown table, for the Workers adapter's README.
pub fn columns_markdown() -> String {
    let mut out = String::from("| column | holds |\n| --- | --- |\n| `index1` | the route id (clipped to 96 bytes); empty when no route matched |\n");
    for (i, (name, meaning)) in BLOBS.iter().enumerate() {
        out.push_str(&format!("| `blob{}` ({name}) | {meaning} |\n", i + 1));
    }
    for (i, (name, meaning)) in DOUBLES.iter().enumerate() {
        out.push_str(&format!("| `double{}` ({name}) | {meaning} |\n", i + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicyVersion;

    fn tally() -> Tally {
        Tally {
            policy: Some(PolicyVersion::of(&serde_json::json!({"version": 1}))),
            route: Some("orders".into()),
            decision: "forward",
            reason: "ok".into(),
            status: 200,
            gateway_us: 42,
            origin_us: Some(1500),
            quota: None,
            store_error: None,
        }
    }

    #[test]
    fn a_forwarded_request_fills_every_column_in_order() {
        let point = DataPoint::of(&tally());
        let version = PolicyVersion::of(&serde_json::json!({"version": 1})).to_string();
        assert_eq!(version.len(), 12);
        assert_eq!(
            point,
            DataPoint {
                index: "orders".into(),
                blobs: [
                    "orders".into(),
                    "forward".into(),
                    "ok".into(),
                    "200".into(),
                    version,
                    String::new(),
                    String::new(),
                ],
                doubles: [200.0, 42.0, 1500.0],
            }
        );
    }

    #[test]
    fn a_refusal_names_its_reason_and_quota_and_waited_on_no_origin() {
        let refused = Tally {
            decision: "reject",
            reason: "quota-exceeded:quota".into(),
            status: 429,
            gateway_us: 7,
            origin_us: None,
            quota: Some("per-consumer".into()),
            ..tally()
        };
        let point = DataPoint::of(&refused);
        assert_eq!(point.index, "orders");
        assert_eq!(point.blobs[1], "reject");
        assert_eq!(point.blobs[2], "quota-exceeded:quota");
        assert_eq!(point.blobs[3], "429");
        assert_eq!(point.blobs[5], "per-consumer");
        assert_eq!(point.blobs[6], "");
        assert_eq!(point.doubles, [429.0, 7.0, 0.0]);
        let store_down = Tally {
            reason: "quota-store-unavailable:store_error".into(),
            status: 503,
            quota: None,
            store_error: Some("timeout"),
            ..refused
        };
        assert_eq!(DataPoint::of(&store_down).blobs[6], "timeout");
    }

    #[test]
    fn a_request_with_no_route_and_no_policy_has_empty_labels() {
        let unrouted = Tally {
            policy: None,
            route: None,
            decision: "reject",
            reason: "no-policy:no_valid_policy".into(),
            status: 503,
            origin_us: None,
            ..tally()
        };
        let point = DataPoint::of(&unrouted);
        assert_eq!(point.index, "");
        assert_eq!(point.blobs[0], "");
        assert_eq!(point.blobs[4], "", "no policy, no version");
        assert_eq!(point.blobs[3], "503");
    }

    #[test]
    fn a_long_route_id_is_clipped_for_the_index_only() {
        let long = "r".repeat(95) + "éé";
        let point = DataPoint::of(&Tally {
            route: Some(long.clone()),
            ..tally()
        });
        assert_eq!(
            point.index,
            "r".repeat(95),
            "clipped on a character boundary"
        );
        assert_eq!(point.blobs[0], long);
    }

    #[test]
    fn columns_are_named_once_each_and_a_failed_write_is_a_warning() {
        let mut names: Vec<&str> = BLOBS.iter().chain(&DOUBLES).map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        // `status` is both a blob (to group by) and a double (to compare).
        assert_eq!(names.len(), BLOBS.len() + DOUBLES.len() - 1);
        let failed = write_failed(UnixTime::from_secs(1), "too many blobs");
        assert_eq!(failed.kind, Kind::AnalyticsWriteFailed);
        assert_eq!(failed.level, Level::Warn);
        assert!(failed.text.ends_with("too many blobs"));
    }

    #[test]
    fn the_workers_readme_documents_these_columns() {
        crate::generated_docs::check(
            "adapters/cloudflare/README.md",
            "analytics",
            &columns_markdown(),
            "the_workers_readme_documents_these_columns",
        );
    }
}
