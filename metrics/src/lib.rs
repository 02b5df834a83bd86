//! # portcullis-metrics
//!
//! What `portcullis serve` exposes on its admin listener's `/metrics`, in the OpenMetrics text
//! format (which Prometheus scrapes): counted from the same records and events every runtime
//! logs, so a dashboard built on these numbers agrees with the access lines on Workers and Spin,
//! where nothing can be scraped.
//!
//! | metric | labels | from |
//! | --- | --- | --- |
//! | `portcullis_requests_total` | `route`, `decision`, `reason`, `status` | every request's tally |
//! | `portcullis_gateway_duration_seconds` (histogram) | `route` | the time the gateway adds |
//! | `portcullis_origin_duration_seconds` (histogram) | `route` | the wait on the origin |
//! | `portcullis_quota_rejections_total` | `quota` | requests a quota refused (429) |
//! | `portcullis_quota_store_errors_total` | `error`, `action` (`denied`, `allowed`) | requests whose quota store failed |
//! | `portcullis_in_flight_requests` | | requests being handled now |
//! | `portcullis_open_connections` | | client connections open now |
//! | `portcullis_policy_info` | `version` | 1 for the live policy's version |
//! | `portcullis_policy_reloads_total` | `result` (`loaded`, `rejected`, `unavailable`) | policy events |
//! | `portcullis_key_set_refreshes_total` | `provider`, `result` (`ok`, `failed`) | key-set events |
//! | `portcullis_key_set_last_success_timestamp_seconds` | `provider` | the last good refresh |
//!
//! Every label value comes from a bounded set: route ids and provider names from the policy,
//! reasons from the core's table, statuses from HTTP. Nothing a client sends becomes a label.

#![warn(missing_docs)]

use std::sync::OnceLock;

use portcullis_core::log::Tally;
use portcullis_core::{Event, Kind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    decision: &'static str,
    reason: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    quota: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    error: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderResultLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The request counter and the two histograms of one label set (handles onto the families'
/// own series: cloning one shares its value).
#[derive(Clone)]
struct Series {
    requests: Counter,
    gateway: Histogram,
    origin: Histogram,
}

/// A thread's cache of [`Series`], by a hash of (metrics instance, labels); the labels are
/// compared in full on a hit. Bounded like the label sets themselves (routes, reasons and
/// statuses come from the policy and the core's tables).
type SeriesCache = std::collections::HashMap<u64, Vec<(u64, RequestLabels, Series)>>;

thread_local! {
    static SERIES: std::cell::RefCell<SeriesCache> = std::cell::RefCell::new(SeriesCache::new());
}

/// Durations from 25 µs to about 0.8 s, doubling: the gateway's own time sits in the first
/// buckets, an origin's in the later ones.
fn durations() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

/// The process's counters (see the crate docs).
pub struct Metrics {
    /// Tells instances apart in the per-thread series cache.
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    gateway: Durations,
    origin: Durations,
    quotas: Family<QuotaLabels, Counter>,
    store_errors: Family<StoreErrorLabels, Counter>,
    in_flight: Gauge,
    connections: Gauge,
    policy: Family<VersionLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    refreshes: Family<ProviderResultLabels, Counter>,
    last_refresh: Family<ProviderLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Counters at zero, registered under their names.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let gateway: Durations = Family::new_with_constructor(durations);
        let origin: Durations = Family::new_with_constructor(durations);
        let quotas = Family::default();
        let store_errors: Family<StoreErrorLabels, Counter> = Family::default();
        // Every series at zero from the start: an operator's rate() and alert rules then see a
        // store that has never failed, rather than nothing at all.
        for error in portcullis_core::StoreError::ALL {
            for action in ["denied", "allowed"] {
                let error = error.slug();
                drop(store_errors.get_or_create(&StoreErrorLabels { error, action }));
            }
        }
        let in_flight = Gauge::default();
        let connections = Gauge::default();
        let policy = Family::default();
        let reloads = Family::default();
        let refreshes = Family::default();
        let last_refresh = Family::default();
        registry.register(
            "portcullis_requests",
            "Requests answered, by route, decision, reason and status",
            requests.clone(),
        );
        registry.register(
            "portcullis_gateway_duration_seconds",
            "Time the gateway adds to a request",
            gateway.clone(),
        );
        registry.register(
            "portcullis_origin_duration_seconds",
            "Time a forwarded request waits on its origin for the response head",
            origin.clone(),
        );
        registry.register(
            "portcullis_quota_rejections",
            "Requests a quota refused, by quota",
            quotas.clone(),
        );
        registry.register(
            "portcullis_quota_store_errors",
            "Requests whose quota store failed, by error and by what the gateway did",
            store_errors.clone(),
        );
        registry.register(
            "portcullis_in_flight_requests",
            "Requests being handled now",
            in_flight.clone(),
        );
        registry.register(
            "portcullis_open_connections",
            "Client connections open now",
            connections.clone(),
        );
        registry.register(
            "portcullis_policy_info",
            "The live policy's version (1 for it)",
            policy.clone(),
        );
        registry.register(
            "portcullis_policy_reloads",
            "Policy loads and reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "portcullis_key_set_refreshes",
            "Remote key-set fetches, by provider and result",
            refreshes.clone(),
        );
        registry.register(
            "portcullis_key_set_last_success_timestamp_seconds",
            "When each provider's key set was last fetched successfully (Unix time)",
            last_refresh.clone(),
        );
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Metrics {
            id: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            requests,
            gateway,
            origin,
            quotas,
            store_errors,
            in_flight,
            connections,
            policy,
            reloads,
            refreshes,
            last_refresh,
        }
    }

    /// Count one request.
    pub fn tally(&self, tally: &Tally) {
        // The live version is `portcullis_policy_info`, from the policy events: as a label
        // here it would split every series at each reload.
        let Tally {
            policy: _,
            route,
            decision,
            reason,
            status,
            gateway_us,
            origin_us,
            quota,
            store_error,
        } = tally;
        if let Some(error) = store_error {
            let action = match *decision {
                "forward" => "allowed",
                _ => "denied",
            };
            self.store_errors
                .get_or_create(&StoreErrorLabels { error, action })
                .inc();
        }
        if let Some(quota) = quota {
            self.quotas
                .get_or_create(&QuotaLabels {
                    quota: quota.clone(),
                })
                .inc();
        }
        let route = route.as_deref().unwrap_or_default();
        let series = self.series(route, decision, reason, *status);
        series.requests.inc();
        series.gateway.observe(seconds(*gateway_us));
        if let Some(origin_us) = origin_us {
            series.origin.observe(seconds(*origin_us));
        }
    }

    /// The series a request with these labels counts in. Looked up in the families (a lock and
    /// a key of owned strings) once per thread and label set, then kept in a per-thread cache,
    /// so that counting a request takes no lock and allocates nothing.
    fn series(&self, route: &str, decision: &'static str, reason: &str, status: u16) -> Series {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (self.id, route, decision, reason, status).hash(&mut hasher);
        let hash = hasher.finish();
        SERIES.with_borrow_mut(|cache| {
            let bucket = cache.entry(hash).or_default();
            let found = bucket.iter().find(|(id, labels, _)| {
                *id == self.id
                    && labels.route == route
                    && labels.decision == decision
                    && labels.reason == reason
                    && labels.status == status
            });
            if let Some((_, _, series)) = found {
                return series.clone();
            }
            let labels = RequestLabels {
                route: route.to_owned(),
                decision,
                reason: reason.to_owned(),
                status,
            };
            let by_route = RouteLabels {
                route: route.to_owned(),
            };
            let series = Series {
                requests: self.requests.get_or_create(&labels).clone(),
                gateway: self.gateway.get_or_create(&by_route).clone(),
                origin: self.origin.get_or_create(&by_route).clone(),
            };
            bucket.push((self.id, labels, series.clone()));
            series
        })
    }

    /// Count what an operator event says about policies and key sets; other events count for
    /// nothing here.
    pub fn event(&self, event: &Event) {
        let text = |name: &str| {
            event
                .field(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        match event.kind {
            Kind::PolicyLoaded => {
                self.reloads
                    .get_or_create(&ResultLabels { result: "loaded" })
                    .inc();
                if let Some(version) = text("policy") {
                    self.policy.clear();
                    self.policy.get_or_create(&VersionLabels { version }).set(1);
                }
            }
            Kind::PolicyRejected => {
                self.reloads
                    .get_or_create(&ResultLabels { result: "rejected" })
                    .inc();
            }
            Kind::PolicyUnavailable => {
                let result = "unavailable";
                self.reloads.get_or_create(&ResultLabels { result }).inc();
            }
            Kind::KeySetRefreshed | Kind::KeySetFailed => {
                let provider = text("provider").unwrap_or_default();
                let ok = event.kind == Kind::KeySetRefreshed;
                let result = if ok { "ok" } else { "failed" };
                let labels = ProviderResultLabels {
                    provider: provider.clone(),
                    result,
                };
                self.refreshes.get_or_create(&labels).inc();
                if ok {
                    let at = i64::try_from(event.time.as_micros() / 1_000_000).unwrap_or(i64::MAX);
                    self.last_refresh
                        .get_or_create(&ProviderLabels { provider })
                        .set(at);
                }
            }
            _ => {}
        }
    }

    /// A request being handled, until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Set the number of client connections open now (read when scraped).
    pub fn open_connections(&self, open: usize) {
        self.connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts a request in `portcullis_in_flight_requests` while it lives.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, from now on: one set, shared by every serving thread. Until this is
/// called nothing is counted, so a gateway that exposes no metrics pays nothing for them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// The process's metrics, if [`enable`]d.
pub fn enabled() -> Option<&'static Metrics> {
    METRICS.get()
}

#[cfg(test)]
mod tests {
    use portcullis_core::{Level, UnixTime};

    use super::*;

    fn tally(route: Option<&str>, reason: &str, status: u16, origin_us: Option<u64>) -> Tally {
        Tally {
            policy: None,
            route: route.map(str::to_owned),
            decision: if origin_us.is_some() {
                "forward"
            } else {
                "reject"
            },
            reason: reason.to_owned(),
            status,
            gateway_us: 40,
            origin_us,
            quota: (status == 429).then(|| "per-consumer".to_owned()),
            store_error: (status == 503).then_some("timeout"),
        }
    }

    #[test]
    fn requests_are_counted_by_their_labels_and_timed() {
        let m = Metrics::new();
        m.tally(&tally(Some("orders"), "ok", 200, Some(1500)));
        m.tally(&tally(Some("orders"), "ok", 200, Some(900)));
        m.tally(&tally(None, "not-found:no_route", 404, None));
        m.tally(&tally(Some("orders"), "quota-exceeded:quota", 429, None));
        m.tally(&tally(
            Some("orders"),
            "store-unavailable:store_error",
            503,
            None,
        ));
        let mut admitted_anyway = tally(Some("payments"), "ok", 200, Some(700));
        admitted_anyway.store_error = Some("timeout");
        m.tally(&admitted_anyway);
        let text = m.encode();
        assert!(
            text.contains(r#"portcullis_requests_total{route="orders",decision="forward",reason="ok",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_requests_total{route="",decision="reject",reason="not-found:no_route",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_origin_duration_seconds_count{route="orders"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_gateway_duration_seconds_count{route=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_quota_rejections_total{quota="per-consumer"} 1"#),
            "{text}"
        );
        for action in ["denied", "allowed"] {
            let line = format!(
                r#"portcullis_quota_store_errors_total{{error="timeout",action="{action}"}} 1"#
            );
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn instances_on_one_thread_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            a.tally(&tally(Some("orders"), "ok", 200, Some(10)));
        }
        b.tally(&tally(Some("orders"), "ok", 200, Some(10)));
        let line = |n| {
            format!(
                r#"portcullis_requests_total{{route="orders",decision="forward",reason="ok",status="200"}} {n}"#
            )
        };
        assert!(a.encode().contains(&line(3)), "{}", a.encode());
        assert!(b.encode().contains(&line(1)), "{}", b.encode());
        assert!(a
            .encode()
            .contains(r#"portcullis_gateway_duration_seconds_count{route="orders"} 3"#));
    }

    #[test]
    fn policy_and_key_set_events_move_their_counters() {
        let m = Metrics::new();
        let at = UnixTime::from_secs(1_700_000_000);
        let loaded = |v: &str| {
            Event::new(at, Level::Info, Kind::PolicyLoaded, "policy loaded").with("policy", v)
        };
        m.event(&loaded("aaaaaaaaaaaa"));
        m.event(&loaded("bbbbbbbbbbbb"));
        m.event(&Event::new(
            at,
            Level::Warn,
            Kind::PolicyRejected,
            "refused",
        ));
        m.event(&Event::new(at, Level::Info, Kind::KeySetRefreshed, "ok").with("provider", "idp"));
        m.event(&Event::new(at, Level::Warn, Kind::KeySetFailed, "no").with("provider", "idp"));
        let text = m.encode();
        assert!(
            text.contains(r#"portcullis_policy_info{version="bbbbbbbbbbbb"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("aaaaaaaaaaaa"),
            "only the live version: {text}"
        );
        assert!(
            text.contains(r#"portcullis_policy_reloads_total{result="loaded"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portcullis_policy_reloads_total{result="rejected"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"portcullis_key_set_refreshes_total{provider="idp",result="failed"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"portcullis_key_set_last_success_timestamp_seconds{provider="idp"} 1700000000"#
            ),
            "{text}"
        );
    }

    #[test]
    fn in_flight_counts_while_the_guard_lives() {
        let m = Metrics::new();
        let guard = m.in_flight();
        assert!(m.encode().contains("portcullis_in_flight_requests 1"));
        drop(guard);
        assert!(m.encode().contains("portcullis_in_flight_requests 0"));
    }
}
