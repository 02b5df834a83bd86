//! The conformance vectors, and behaviour particular to Spin (policy from the key-value store,
//! quotas by compare-and-swap, `allowed_outbound_hosts`, Spin's inbound headers), against the
//! Spin adapter under `spin up` or the test host `portcullis-spin-host` (see
//! `src/target_spin.rs` for which runs, and `tests/spin-host/README.md` for the host).
//!
//! Ignored by default: they need the test host (or the Spin CLI) and the `wasm32-wasip2`
//! target. `scripts/test-spin` builds both and runs
//! `cargo test -p portcullis-conformance --test spin -- --ignored --test-threads 1`.
//! Expected failures are listed, with reasons, in `tests/xfail/spin.json`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use portcullis_conformance::origin::RecordingOrigin;
use portcullis_conformance::runner::{self, XFail};
use portcullis_conformance::target::Target;
use portcullis_conformance::target_spin::{build_component, SpinSetup, SpinTarget};
use portcullis_conformance::{suite_dir, vector, vectors_dir};
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The setup, after building the component once per test binary.
fn setup() -> SpinSetup {
    static SETUP: OnceLock<Result<SpinSetup, String>> = OnceLock::new();
    match SETUP.get_or_init(|| {
        build_component()
            .and_then(|()| SpinSetup::from_env())
            .map_err(|e| format!("{e:#}"))
    }) {
        Ok(s) => s.clone(),
        Err(e) => panic!("cannot set up Spin: {e}"),
    }
}

fn target() -> SpinTarget {
    let setup = setup();
    println!(
        "running the component {} under {}{}",
        setup.component.display(),
        setup.up.display(),
        if setup.is_real_spin() {
            " (the Spin CLI)"
        } else {
            " (the test host)"
        }
    );
    SpinTarget::new(setup).expect("spin target")
}

fn xfail() -> XFail {
    XFail::load(&suite_dir().join("xfail").join("spin.json"))
        .expect("tests/xfail/spin.json is valid")
}

/// Every vector file, one `up` (with a fresh state directory) per file. `$PORTCULLIS_VECTORS`
/// (comma-separated stems) runs only those files; `$PORTCULLIS_VECTOR_FILES` (comma-separated
/// paths) runs those files instead.
#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn vectors() {
    let _guard = serial();
    let mut target = target();
    let only = std::env::var("PORTCULLIS_VECTORS").ok();
    let files: Vec<PathBuf> = match std::env::var("PORTCULLIS_VECTOR_FILES") {
        // Files from elsewhere (a vector being written, a variant of one), by path.
        Ok(paths) => paths.split(',').map(PathBuf::from).collect(),
        Err(_) => vector::vector_files(&vectors_dir())
            .expect("vectors dir")
            .into_iter()
            .filter(|f| {
                let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                only.as_deref()
                    .is_none_or(|o| o.split(',').any(|s| s == stem))
            })
            .collect(),
    };
    let xfail = xfail();
    let reports = runner::run_files(&mut target, &files, &xfail, "127.0.0.1:0").expect("runner");
    let mut failed = Vec::new();
    let mut total = runner::Summary::default();
    let mut known = Vec::new();
    for report in &reports {
        let summary = report.summary();
        println!("{}: {}", report.stem, summary.line());
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
    if only.is_none() && std::env::var_os("PORTCULLIS_VECTOR_FILES").is_none() {
        let stale = xfail.unused(&known);
        assert!(
            stale.is_empty(),
            "xfail entries that name no case (remove them): {stale:?}"
        );
    }
    println!(
        "all files: {} ({} expected failures)",
        total.line(),
        total.xfailed
    );
    assert!(failed.is_empty(), "failing files: {failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Spin-only behaviour. Each test starts its own origin and `up`.

/// A tokio runtime holding recording origins for the test's life.
struct Origins {
    _runtime: tokio::runtime::Runtime,
    list: Vec<RecordingOrigin>,
}

fn origins(n: usize) -> Origins {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let list = (0..n)
        .map(|_| {
            runtime
                .block_on(RecordingOrigin::start("127.0.0.1:0"))
                .expect("origin")
        })
        .collect();
    Origins {
        _runtime: runtime,
        list,
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A policy with route `/{prefix}/*` (open) to `origin`; with `quota`, also `/q` (API key `k1`
/// of consumer `c1`, `quota` requests per hour) and `/ip` (open, one request per hour per client
/// address).
fn policy(origin: &str, prefix: &str, quota: Option<u32>) -> Value {
    let mut doc = json!({
        "version": 1,
        "origins": {"o": {"url": origin}},
        "routes": [{"id": "open", "path": format!("/{prefix}/{{*rest}}"), "methods": ["GET"],
                    "origin": "o", "auth": "none"}],
    });
    if let Some(limit) = quota {
        doc["auth"] = json!({"keys": {"type": "api_key", "header": "x-api-key",
            "keys": [{"sha256": sha256_hex("k1-TEST-ONLY-key"), "consumer": "c1"}]}});
        doc["quotas"] = json!({
            "per-consumer": {"limit": limit, "window_s": 3600, "by": "consumer"},
            "per-ip": {"limit": 1, "window_s": 3600, "by": "ip"},
        });
        let routes = doc["routes"].as_array_mut().expect("routes");
        routes.push(
            json!({"id": "quota", "path": "/q", "methods": ["GET"], "origin": "o",
                           "auth": {"providers": ["keys"]}, "quota": "per-consumer"}),
        );
        routes.push(
            json!({"id": "ip", "path": "/ip", "methods": ["GET"], "origin": "o",
                           "auth": "none", "quota": "per-ip"}),
        );
    }
    doc
}

/// `GET path` with extra headers; returns (status, body). Panics only on transport failure.
/// The target's recent output once it mentions `needle`, or after 5 s. Its stdout and stderr are
/// drained by separate threads, so an event may arrive a moment after the request's own line.
fn logged(target: &SpinTarget, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let logs = target.diagnostics();
        if logs.contains(needle) || std::time::Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn policy_replaced_in_the_store_takes_effect_on_the_next_request() {
    let _guard = serial();
    let o = origins(1);
    let origin = o.list[0].url();
    let mut target = target();
    let base = target
        .start(&policy(&origin, "a", None).to_string(), &BTreeMap::new())
        .expect("start");
    assert_eq!(get(&base, "/a/x", &[]).0, 200);
    assert_eq!(get(&base, "/b/x", &[]).0, 404);

    // Every request reads the store: no TTL, no restart.
    target
        .put_config(&policy(&origin, "b", None).to_string())
        .expect("put");
    assert_eq!(get(&base, "/b/x", &[]).0, 200, "{}", target.diagnostics());
    assert_eq!(get(&base, "/a/x", &[]).0, 404);
    // The audit record names the version that went live, and the access lines carry it.
    let version = runner::canonical_version(&policy(&origin, "b", None).to_string()).expect("JSON");
    let logs = logged(&target, &format!("\"policy\":\"{version}\""));
    assert!(
        logs.lines()
            .any(|l| l.contains("\"event\":\"policy_loaded\"")
                && l.contains(&format!("\"policy\":\"{version}\""))),
        "policy_loaded with {version}:\n{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("\"decision\":\"forward\"")
            && l.contains(&format!("\"policy\":\"{version}\""))),
        "an access line with {version}:\n{logs}"
    );
    target
        .put_config(&policy(&origin, "c", None).to_string())
        .expect("put");
    assert_eq!(get(&base, "/c/x", &[]).0, 200);
    target.stop();
}

#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn broken_or_missing_policy_answers_503_and_forwards_nothing() {
    let _guard = serial();
    let o = origins(1);
    let origin = &o.list[0];
    let mut target = target();
    let no_policy = |base: &str, id: &str| {
        let (status, body) = get(base, "/a/x", &[("x-conformance-id", id)]);
        assert_eq!(status, 503, "{id}: {body}");
        assert!(
            body.contains("urn:portcullis:problem:no-policy"),
            "{id}: {body}"
        );
        assert_eq!(origin.count(id), 0, "{id}: nothing may be forwarded");
    };

    // No policy at all.
    let base = target.start_with(None, &BTreeMap::new()).expect("start");
    no_policy(&base, "np-missing");

    // A policy that does not validate, from the start.
    let base = target
        .start_with(
            Some(r#"{"version": 1, "origins": {}, "routes": [], "bogus": true}"#),
            &BTreeMap::new(),
        )
        .expect("start");
    no_policy(&base, "np-invalid");
    // Not even JSON.
    target.put_config("{not json").expect("put");
    no_policy(&base, "np-not-json");

    // A good policy, then a broken one in its place: Spin keeps nothing between requests, so
    // the broken one is what the next request reads, and it refuses instead of guessing.
    target
        .put_config(&policy(&origin.url(), "a", None).to_string())
        .expect("put");
    assert_eq!(get(&base, "/a/x", &[]).0, 200);
    target.put_config(r#"{"version": 2}"#).expect("put");
    no_policy(&base, "np-replaced");
    let rejected = runner::canonical_version(r#"{"version": 2}"#).expect("JSON");
    let logs = logged(&target, &format!("\"rejected\":\"{rejected}\""));
    assert!(
        logs.lines()
            .any(|l| l.contains("\"event\":\"policy_rejected\"")
                && l.contains(&format!("\"rejected\":\"{rejected}\""))
                && l.contains("\"pointer\":\"/version\"")),
        "policy_rejected with {rejected} and every pointer:\n{logs}"
    );
    // Each request is a fresh instance, yet the same broken value is reported once: the store's
    // memo remembers that it was refused.
    no_policy(&base, "np-replaced-again");
    no_policy(&base, "np-replaced-again-2");
    std::thread::sleep(Duration::from_millis(500));
    let lines = target.log_lines().expect("spin keeps its log lines");
    let reports = lines
        .lock()
        .expect("log lines")
        .iter()
        .filter(|l| {
            l.contains("\"event\":\"policy_rejected\"")
                && l.contains(&format!("\"rejected\":\"{rejected}\""))
        })
        .count();
    assert_eq!(
        reports, 1,
        "a broken value is reported once, not per request"
    );

    // Deleted.
    target
        .put_config(&policy(&origin.url(), "a", None).to_string())
        .expect("put");
    assert_eq!(get(&base, "/a/x", &[]).0, 200);
    target.delete_config().expect("delete");
    no_policy(&base, "np-deleted");
    target.stop();
}

#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn quota_is_exact_with_20_concurrent_requests_and_survives_a_restart() {
    let _guard = serial();
    let o = origins(1);
    let origin = &o.list[0];
    let mut target = target();
    let base = target
        .start(
            &policy(&origin.url(), "a", Some(12)).to_string(),
            &BTreeMap::new(),
        )
        .expect("start");
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
    let arrived: usize = (0..20).map(|i| origin.count(&format!("burst-{i}"))).sum();
    assert_eq!(arrived, 12, "the origin saw exactly the admitted requests");

    // The counters are in the store's SQLite file: a restart on it does not reset them.
    let base = target.restart().expect("restart");
    let (status, body) = get(&base, "/q", &[("x-api-key", "k1-TEST-ONLY-key")]);
    assert_eq!(status, 429, "quota state lost across a restart: {body}");
    target.stop();
}

#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn an_origin_not_in_allowed_outbound_hosts_is_refused() {
    let _guard = serial();
    let o = origins(2);
    let (allowed, other) = (&o.list[0], &o.list[1]);
    let mut target = target();
    let allowed_host = allowed.url();
    target.set_allowed_outbound_hosts(&[&allowed_host]);
    let mut doc = policy(&allowed.url(), "a", None);
    doc["origins"]["other"] = json!({"url": other.url()});
    doc["routes"].as_array_mut().expect("routes").push(
        json!({"id": "other", "path": "/b/{*rest}", "methods": ["GET"],
                     "origin": "other", "auth": "none"}),
    );
    let base = target
        .start(&doc.to_string(), &BTreeMap::new())
        .expect("start");
    let (status, body) = get(&base, "/a/x", &[("x-conformance-id", "ob-allowed")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(allowed.count("ob-allowed"), 1);
    let (status, body) = get(&base, "/b/x", &[("x-conformance-id", "ob-refused")]);
    assert_eq!(status, 502, "a refused origin is unreachable: {body}");
    assert!(
        body.contains("application/problem+json") || body.contains("urn:portcullis:problem:"),
        "{body}"
    );
    assert_eq!(
        other.count("ob-refused"),
        0,
        "nothing may reach a refused host"
    );
    if !target.setup().is_real_spin() {
        let logs = logged(&target, "allowed_outbound_hosts");
        assert!(
            logs.contains("allowed_outbound_hosts"),
            "the host logs the refusal:\n{logs}"
        );
    }
    target.stop();
}

#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn a_client_sent_spin_client_addr_is_not_believed() {
    let _guard = serial();
    let o = origins(1);
    let origin = &o.list[0];
    let mut target = target();
    let base = target
        .start(
            &policy(&origin.url(), "a", Some(5)).to_string(),
            &BTreeMap::new(),
        )
        .expect("start");
    // Spin appends its own spin-client-addr after any the client sent; the adapter must use
    // Spin's (the last). Quota by ip: a second request from the same peer is over the limit,
    // whatever address it claims.
    let (status, body) = get(
        &base,
        "/ip",
        &[
            ("spin-client-addr", "203.0.113.1:1"),
            ("x-conformance-id", "sca-1"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(
        &base,
        "/ip",
        &[
            ("spin-client-addr", "203.0.113.2:1"),
            ("x-conformance-id", "sca-2"),
        ],
    );
    assert_eq!(
        status, 429,
        "a claimed address escaped the per-ip quota: {body}"
    );
    let forwarded = origin.take("sca-1");
    assert_eq!(forwarded.len(), 1, "the first request arrived once");
    assert_eq!(origin.count("sca-2"), 0, "the second was refused");
    let xff = forwarded[0]
        .headers
        .iter()
        .find(|(n, _)| n == "x-forwarded-for")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    assert!(
        xff.ends_with("127.0.0.1") && !xff.contains("203.0.113"),
        "x-forwarded-for names the claimed address: {xff:?}"
    );
    target.stop();
}

/// The repository's own `spin.toml` runs (under the test host or Spin) as shipped.
#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn the_repository_manifest_runs() {
    let _guard = serial();
    let setup = setup();
    let root = portcullis_conformance::target_spin::repo_root();
    let example = std::fs::read_to_string(root.join("examples/portcullis.json")).expect("example");
    let state = std::env::temp_dir().join(format!("portcullis-spin-repo-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = std::process::Command::new(&setup.up)
        .arg("up")
        .arg("-f")
        .arg(root.join("spin.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--key-value")
        .arg(format!("config={example}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "not serving");
        assert!(child.try_wait().expect("wait").is_none(), "exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = get(&base, "/no-such-route", &[]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("urn:portcullis:problem:not-found"), "{body}");
}

/// Figures: latency added versus the origin called directly, per policy case (client side, from
/// `latency::run_standard`), and inside the host per request (with the test host's
/// `PORTCULLIS_SPIN_HOST_TIMINGS`): instantiation, and instantiation plus decision (time to the
/// response head minus the time spent waiting for the origin). Printed, not judged.
#[test]
#[ignore = "needs the Spin test host (scripts/test-spin) or the Spin CLI"]
fn latency_and_per_request_cost_figures() {
    let _guard = serial();
    let mut target = target();
    target.set_env("PORTCULLIS_SPIN_HOST_TIMINGS", "1");
    let (warmup, requests) = (10, 200);
    let (figures, table) =
        portcullis_conformance::latency::run_standard(&mut target, warmup, requests)
            .expect("measure");
    println!("spin, sequential requests on one connection:\n{table}");
    assert_eq!(figures.len(), 6);

    let timings = target.take_timings();
    if timings.is_empty() {
        println!("(no host timings: the Spin CLI does not print them)");
        return;
    }
    // The gateway cases take turns, one request each, in this order (the origin-direct case
    // sends nothing through the host); the warm-up request of `start` is on `/`.
    let names = [
        "public route",
        "HS256, cached",
        "ES256, cached",
        "ES256, uncached",
        "RS256, uncached",
    ];
    let lines: Vec<Value> = timings
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["path"] != "/")
        .collect();
    if lines.len() != names.len() * (warmup + requests) {
        println!(
            "(host timings: {} lines for {} requests; retried connections shift them, so no breakdown)",
            lines.len(),
            names.len() * (warmup + requests)
        );
        return;
    }
    let mut per_case: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); names.len()];
    for (i, line) in lines.iter().enumerate().skip(names.len() * warmup) {
        let n = |k: &str| line[k].as_u64().unwrap_or(0);
        let (inst, decide) = &mut per_case[i % names.len()];
        inst.push(n("instantiate_us"));
        decide.push(n("head_us").saturating_sub(n("outbound_us")));
    }
    let pct = |v: &mut Vec<u64>, q: f64| {
        v.sort_unstable();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!("inside the test host, per request ({requests} each):");
    println!("| case | instantiation p50 | p99 | instantiation + decision p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (name, (inst, decide)) in names.iter().zip(per_case.iter_mut()) {
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            pct(inst, 0.5),
            pct(inst, 0.99),
            pct(decide, 0.5),
            pct(decide, 0.99)
        );
    }
}
