//! The conformance vectors, and behaviour particular to Workers (policy from KV, quotas in a
//! Durable Object), against the Cloudflare Workers adapter in `wrangler dev --local` (workerd).
//!
//! Ignored by default: they need the pinned npm tools (`npm ci` at the repository root),
//! `worker-build` and `wasm-bindgen` 0.2.130. Run them with
//! `cargo test -p portcullis-conformance --test workers -- --ignored --test-threads 1`.
//! `$PORTCULLIS_WORKER_BUILD` names a prebuilt worker-build output directory to skip the build.
//! Expected failures are listed, with reasons, in `tests/xfail/workers.json`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use portcullis_conformance::origin::RecordingOrigin;
use portcullis_conformance::runner::{self, XFail};
use portcullis_conformance::target::Target;
use portcullis_conformance::target_workers::{
    build_worker, AnalyticsBinding, WorkersTarget, RECORDED_POINT,
};
use portcullis_conformance::{suite_dir, vector, vectors_dir};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn build() -> PathBuf {
    static BUILD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILD.get_or_init(|| build_worker().map_err(|e| format!("{e:#}"))) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot build the Worker: {e}"),
    }
}

fn xfail() -> XFail {
    XFail::load(&suite_dir().join("xfail").join("workers.json"))
        .expect("tests/xfail/workers.json is valid")
}

/// Every vector file, one `wrangler dev` (with fresh state) per file.
#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn vectors() {
    let _guard = serial();
    let mut target = WorkersTarget::new(build()).expect("workers target");
    let only = std::env::var("PORTCULLIS_VECTORS").ok();
    let files: Vec<PathBuf> = vector::vector_files(&vectors_dir())
        .expect("vectors dir")
        .into_iter()
        .filter(|f| {
            let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|s| s == stem))
        })
        .collect();
    let xfail = xfail();
    let reports = runner::run_files(&mut target, &files, &xfail, "127.0.0.1:0").expect("runner");
    let mut failed = Vec::new();
    let mut total = runner::Summary::default();
    let mut known = Vec::new();
    for report in &reports {
        let summary = report.summary();
        println!("{}", summary.line());
        if summary.failed > 0 {
            failed.push(report.stem.clone());
        }
        total.add(summary);
        known.extend(
            report
                .cases
                .iter()
                .map(|c| format!("{}/{}", report.stem, c.name)),
        );
    }
    println!("all files: {}", total.line());
    assert!(failed.is_empty(), "failing files: {failed:?}");
    if only.is_none() {
        let stale = xfail.unused(&known);
        assert!(
            stale.is_empty(),
            "xfail entries that name no case (remove them): {stale:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Workers-only behaviour. Each test starts its own origin and `wrangler dev`.

/// A tokio runtime holding a recording origin for the test's life.
struct Origin {
    _runtime: tokio::runtime::Runtime,
    origin: RecordingOrigin,
}

fn origin() -> Origin {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = runtime
        .block_on(RecordingOrigin::start("127.0.0.1:0"))
        .expect("origin");
    Origin {
        _runtime: runtime,
        origin,
    }
}

/// A policy with routes `/a/*` (open) and, when `quota` is set, `/q` (API key `k1` of consumer
/// `c1`, `quota` requests per hour).
fn policy(origin: &str, ttl_s: u64, route_prefix: &str, quota: Option<u32>) -> String {
    let mut routes = vec![serde_json::json!({
        "id": "open", "path": format!("/{route_prefix}/{{*rest}}"), "methods": ["GET"],
        "origin": "o", "auth": "none"
    })];
    let mut doc = serde_json::json!({
        "version": 1,
        "config_ttl_s": ttl_s,
        "origins": {"o": {"url": origin}},
    });
    if let Some(limit) = quota {
        doc["auth"] = serde_json::json!({
            "keys": {"type": "api_key", "header": "x-api-key",
                     "keys": [{"sha256": sha256_hex("k1-TEST-ONLY-key"), "consumer": "c1"}]}
        });
        doc["quotas"] = serde_json::json!({"per-consumer": {"limit": limit, "window_s": 3600, "by": "consumer"}});
        routes.push(serde_json::json!({
            "id": "quota", "path": "/q", "methods": ["GET"], "origin": "o",
            "auth": {"providers": ["keys"]}, "quota": "per-consumer"
        }));
    }
    doc["routes"] = serde_json::Value::Array(routes);
    doc.to_string()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET path` with extra headers; returns (status, body). Panics only on transport failure.
fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Every line the target has logged so far (its buffer keeps the last 400), not only the last
/// 40 that `diagnostics` shows.
fn log_lines(target: &WorkersTarget) -> Vec<String> {
    let lines = target.log_lines();
    lines
        .and_then(|l| l.lock().ok().map(|l| l.clone()))
        .unwrap_or_default()
}

/// Poll `check` every 250 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn config_hot_reload_within_ttl_and_broken_policy_keeps_last_good() {
    let _guard = serial();
    let o = origin();
    let mut target = WorkersTarget::new(build()).expect("target");
    let base = target
        .start(&policy(&o.origin.url(), 2, "a", None), &BTreeMap::new())
        .expect("start");
    assert_eq!(get(&base, "/a/x", &[]).0, 200);
    assert_eq!(get(&base, "/b/x", &[]).0, 404);

    // A new policy in KV: served within config_ttl_s (2 s), plus KV's own propagation.
    target
        .put_config(&policy(&o.origin.url(), 2, "b", None))
        .expect("put");
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || get(&base, "/b/x", &[]).0 == 200),
        "the new policy was not picked up; {}",
        target.diagnostics()
    );
    println!("hot reload took {:?}", started.elapsed());
    assert_eq!(get(&base, "/a/x", &[]).0, 404);
    let (old, new) = (
        runner::canonical_version(&policy(&o.origin.url(), 2, "a", None)).expect("JSON"),
        runner::canonical_version(&policy(&o.origin.url(), 2, "b", None)).expect("JSON"),
    );
    let logs = target.diagnostics();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"event\":\"policy_loaded\"")
                && l.contains(&format!("\"policy\":\"{new}\""))
                && l.contains(&format!("\"previous\":\"{old}\""))),
        "policy_loaded names {new} and {old}:\n{logs}"
    );

    // A broken policy never replaces the good one, and its problems are logged with pointers.
    target
        .put_config(r#"{"version": 1, "origins": {}, "routes": [], "bogus": true}"#)
        .expect("put");
    std::thread::sleep(Duration::from_secs(5));
    for _ in 0..5 {
        assert_eq!(get(&base, "/b/x", &[]).0, 200, "last good policy kept");
    }
    let logs = target.diagnostics();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"event\":\"policy_rejected\"")
                && l.contains("\"pointer\":\"/bogus\"")
                && l.contains(&format!("\"policy\":\"{new}\""))),
        "policy_rejected with its pointers and the version that stays:\n{logs}"
    );
    // Read again every config_ttl_s (2 s) meanwhile, the same value was reported only once.
    let reports = log_lines(&target)
        .iter()
        .filter(|l| l.contains("\"event\":\"policy_rejected\"") && l.contains("/bogus"))
        .count();
    assert_eq!(reports, 1, "a broken value is reported once:\n{logs}");

    // Garbage in KV, text or not, keeps it too: bytes that are not UTF-8, binary noise, JSON
    // that is no policy, and a truncated policy.
    let good = policy(&o.origin.url(), 2, "b", None);
    let garbage: [&[u8]; 4] = [
        b"\xff\xfe\x00{\"version\": 1}\xc3\x28",
        &[
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xed, 0x9d,
        ],
        b"[1, 2, 3]",
        &good.as_bytes()[..good.len() / 2],
    ];
    for value in garbage {
        target.put_config_bytes(value).expect("put");
        std::thread::sleep(Duration::from_secs(3));
        let (status, body) = get(&base, "/b/x", &[]);
        assert_eq!(
            status,
            200,
            "last good policy kept after {value:?}: {body}\n{}",
            target.diagnostics()
        );
    }

    // And a deleted key keeps the last good policy too.
    target.delete_config().expect("delete");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(get(&base, "/b/x", &[]).0, 200);
    target.stop();
}

#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn no_policy_answers_503_and_forwards_nothing() {
    let _guard = serial();
    let o = origin();
    let mut target = WorkersTarget::new(build()).expect("target");

    // Missing key.
    let base = target.start_with(None, &BTreeMap::new()).expect("start");
    let (status, body) = get(&base, "/a/x", &[("x-conformance-id", "np1")]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("urn:portcullis:problem:no-policy"), "{body}");
    assert_eq!(o.origin.count("np1"), 0);

    // Invalid policy, never a good one.
    let base = target
        .start_with(Some(r#"{"version": 2}"#), &BTreeMap::new())
        .expect("start");
    let (status, body) = get(&base, "/a/x", &[("x-conformance-id", "np2")]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no-policy"), "{body}");
    assert_eq!(o.origin.count("np2"), 0);

    // A good policy arriving later is picked up (retried about every second).
    target
        .put_config(&policy(&o.origin.url(), 30, "a", None))
        .expect("put");
    assert!(eventually(Duration::from_secs(10), || get(
        &base,
        "/a/x",
        &[]
    )
    .0 == 200));
    target.stop();
}

/// A Durable Object that throws, and a Worker deployed without its quota binding: the quota
/// fails closed with 503 problem+json, nothing reaches the origin, and routes without a quota
/// are served as usual.
#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn quota_store_failure_answers_503_and_forwards_nothing() {
    let _guard = serial();
    let o = origin();
    let config = policy(&o.origin.url(), 30, "a", Some(100));
    let key = ("x-api-key", "k1-TEST-ONLY-key");
    let refused = |base: &str, id: &str, fault: Option<&str>, target: &WorkersTarget| {
        let mut headers = vec![key, ("x-conformance-id", id)];
        headers.extend(fault.map(|f| ("x-portcullis-fault", f)));
        let (status, body) = get(base, "/q", &headers);
        assert_eq!(status, 503, "{id}: {body}\n{}", target.diagnostics());
        assert!(
            body.contains("urn:portcullis:problem:quota-store-unavailable"),
            "{id}: {body}"
        );
        assert_eq!(o.origin.count(id), 0, "{id} reached the origin");
    };

    let mut target = WorkersTarget::new(build()).expect("target");
    let base = target.start(&config, &BTreeMap::new()).expect("start");
    refused(&base, "qs-throw-1", Some("quota-store"), &target);
    refused(&base, "qs-throw-2", Some("quota-store"), &target);
    let (status, body) = get(&base, "/q", &[key, ("x-conformance-id", "qs-after")]);
    assert_eq!(
        status, 200,
        "the object answers again once it stops throwing: {body}"
    );
    assert_eq!(o.origin.count("qs-after"), 1);
    target.stop();

    let mut target = WorkersTarget::new(build())
        .expect("target")
        .without_quota_binding();
    let base = target.start(&config, &BTreeMap::new()).expect("start");
    refused(&base, "qs-unbound", None, &target);
    assert_eq!(get(&base, "/a/x", &[]).0, 200, "a route without a quota");
    target.stop();
}

#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn quota_is_exact_under_concurrency_and_survives_a_restart() {
    let _guard = serial();
    let o = origin();
    let mut target = WorkersTarget::new(build()).expect("target");
    let base = target
        .start(
            &policy(&o.origin.url(), 30, "a", Some(12)),
            &BTreeMap::new(),
        )
        .expect("start");
    // 20 at once for one consumer: exactly 12 admitted.
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let id = format!("burst-{i}");
                get(
                    &base,
                    "/q",
                    &[("x-api-key", "k1-TEST-ONLY-key"), ("x-conformance-id", &id)],
                )
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (ok, limited),
        (12, 8),
        "statuses: {statuses:?}\n{}",
        target.diagnostics()
    );
    let arrived: usize = (0..20).map(|i| o.origin.count(&format!("burst-{i}"))).sum();
    assert_eq!(arrived, 12);

    // The state is in the SQLite-backed Durable Object: a restart does not reset it.
    let base = target.restart().expect("restart");
    let (status, body) = get(&base, "/q", &[("x-api-key", "k1-TEST-ONLY-key")]);
    assert_eq!(status, 429, "quota state lost across a restart: {body}");
    target.stop();
}

/// The Worker checks public-key signatures with WebCrypto, not the core's pure-Rust default: the
/// `policy loaded` event names the backend of the gateway that then serves requests
/// (`Gateway::verifier_name`). The vectors check what that backend answers.
#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn signature_backend_is_webcrypto() {
    let _guard = serial();
    let o = origin();
    let mut target = WorkersTarget::new(build()).expect("target");
    let base = target
        .start(&policy(&o.origin.url(), 30, "a", None), &BTreeMap::new())
        .expect("start");
    assert_eq!(get(&base, "/a/x", &[]).0, 200);
    let mut verifier = None;
    eventually(Duration::from_secs(10), || {
        verifier = target
            .diagnostics()
            .lines()
            .filter(|l| l.contains("policy loaded"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l[l.find('{')?..]).ok())
            .find_map(|event| Some(event.get("verifier")?.as_str()?.to_owned()));
        verifier.is_some()
    });
    assert_eq!(
        verifier.as_deref(),
        Some("webcrypto"),
        "the policy loaded event names the signature backend:\n{}",
        target.diagnostics()
    );
    target.stop();
}

/// The optional Analytics Engine dataset `PORTCULLIS_ANALYTICS`: one data point per request,
/// with the columns of `portcullis_core::analytics`, and never a request failed for it.
///
/// `wrangler dev --local` accepts the binding but its local dataset discards every write, so the
/// points themselves are observed through a recording dataset in the binding's place (see
/// [`AnalyticsBinding`]); with the local dataset and with no binding at all, requests are
/// answered exactly as with the recording one.
#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn analytics_engine_gets_one_data_point_per_request_and_fails_none() {
    let _guard = serial();
    let o = origin();
    let config = policy(&o.origin.url(), 30, "a", Some(1));
    let version = runner::canonical_version(&config).expect("JSON");
    let key = ("x-api-key", "k1-TEST-ONLY-key");
    let requests = |base: &str| -> Vec<u16> {
        vec![
            get(base, "/a/x", &[]).0,
            get(base, "/nowhere", &[]).0,
            get(base, "/q", &[key]).0,
            get(base, "/q", &[key]).0,
        ]
    };
    let expected = [200, 404, 200, 429];
    // Each target has run directories of its own (so the quota starts afresh): the one before
    // is dropped, its directory with it, before the next starts.
    let start = |binding| {
        let mut target = WorkersTarget::new(build())
            .expect("target")
            .with_analytics(binding);
        let base = target.start(&config, &BTreeMap::new()).expect("start");
        (target, base)
    };

    for binding in [AnalyticsBinding::Absent, AnalyticsBinding::Dataset] {
        let (mut target, base) = start(binding);
        assert_eq!(
            requests(&base),
            expected,
            "{binding:?}\n{}",
            target.diagnostics()
        );
        assert!(
            !target.diagnostics().contains("analytics_write_failed"),
            "{binding:?}: {}",
            target.diagnostics()
        );
        target.stop();
        drop(target);
    }

    let (mut target, base) = start(AnalyticsBinding::Recording);
    assert_eq!(requests(&base), expected, "{}", target.diagnostics());
    let recorded = |target: &WorkersTarget| -> Vec<serde_json::Value> {
        log_lines(target)
            .iter()
            .filter_map(|l| Some(l[l.find(RECORDED_POINT)? + RECORDED_POINT.len()..].to_owned()))
            .map(|json| serde_json::from_str(&json).expect("a data point is JSON"))
            .collect()
    };
    // The warm-up request's point, then one per request.
    assert!(
        eventually(Duration::from_secs(10), || recorded(&target).len() >= 5),
        "{}",
        target.diagnostics()
    );
    let points = recorded(&target);
    assert_eq!(points.len(), 5, "one point per request: {points:#?}");
    let columns = |point: &serde_json::Value| -> (Vec<String>, Vec<String>, Vec<f64>) {
        let texts = |name: &str| -> Vec<String> {
            point[name]
                .as_array()
                .unwrap_or_else(|| panic!("{name} in {point}"))
                .iter()
                .map(|v| v.as_str().expect("text").to_owned())
                .collect()
        };
        let doubles = point["doubles"]
            .as_array()
            .expect("doubles")
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect();
        (texts("indexes"), texts("blobs"), doubles)
    };
    let v = version.as_str();
    let want: [(&str, [&str; 7]); 4] = [
        ("open", ["open", "forward", "ok", "200", v, "", ""]),
        ("", ["", "reject", "not-found:no_route", "404", v, "", ""]),
        ("quota", ["quota", "forward", "ok", "200", v, "", ""]),
        (
            "quota",
            [
                "quota",
                "reject",
                "quota-exceeded:quota",
                "429",
                v,
                "per-consumer",
                "",
            ],
        ),
    ];
    for (point, ((index, blobs), status)) in points[1..].iter().zip(want.iter().zip(expected)) {
        let (indexes, got, doubles) = columns(point);
        assert_eq!(indexes, [*index], "{point}");
        assert_eq!(got, blobs, "{point}");
        let [double_status, gateway_us, origin_us] = doubles[..] else {
            panic!("three doubles: {point}");
        };
        assert_eq!(double_status, f64::from(status), "{point}");
        assert!(gateway_us >= 0.0, "{point}");
        let forwarded = blobs[1] == "forward";
        assert!(
            forwarded || origin_us == 0.0,
            "nothing sent, no origin time: {point}"
        );
    }
    target.stop();
    drop(target);

    // A dataset that refuses every write: every request answered all the same, and the failure
    // reported once.
    let (mut target, base) = start(AnalyticsBinding::Refusing);
    assert_eq!(requests(&base), expected, "{}", target.diagnostics());
    assert_eq!(
        requests(&base),
        [200, 404, 429, 429],
        "{}",
        target.diagnostics()
    );
    let failures = |target: &WorkersTarget| {
        log_lines(target)
            .iter()
            .filter(|l| l.contains("\"event\":\"analytics_write_failed\""))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || failures(&target) >= 1),
        "{}",
        target.diagnostics()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(failures(&target), 1, "{}", target.diagnostics());
    assert!(
        target.diagnostics().contains("refuses every write"),
        "the runtime's cause is named: {}",
        target.diagnostics()
    );
    target.stop();
}

/// The README's Workers figures: latency added by the Worker under `wrangler dev --local`
/// against the origin called directly, and the cost of an uncached RS256 and ES256 check (the
/// p50 of that case minus the public route's, requests sent one at a time, so workerd's single
/// thread does nothing else meanwhile). Printed, not judged; every request must get its 200.
#[test]
#[ignore = "needs wrangler (npm ci), worker-build and wasm-bindgen 0.2.130"]
fn latency_and_signature_cost_figures() {
    let _guard = serial();
    let mut target = WorkersTarget::new(build()).expect("target");
    let (figures, table) =
        portcullis_conformance::latency::run_standard(&mut target, 20, 300).expect("measure");
    println!("workers (wrangler dev --local), sequential requests on one connection:\n{table}");
    assert_eq!(figures.len(), 6);
}
