//! Policy reloads against the real `portcullis serve`: `SIGHUP` under a running load, a file that
//! does not validate, quota state across reloads, and `--watch` seeing a file replaced by a
//! rename. Loopback only; each test bounded by [`common::WAIT`].

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, Running, TinyServer};
use portcullis_core::PolicyVersion;
use serde_json::{json, Value};

fn origin() -> TinyServer {
    TinyServer::start(|_| (200, "application/json", r#"{"origin":true}"#.to_owned()))
}

/// A policy with one open route per name in `routes` (`/NAME`), and `/q` under an IP quota of
/// `limit` per hour when given.
fn policy(origin: &TinyServer, routes: &[&str], limit: Option<u32>) -> String {
    let mut list: Vec<Value> = routes
        .iter()
        .map(|r| json!({ "id": r, "methods": ["GET"], "path": format!("/{r}"), "origin": "o", "auth": "none" }))
        .collect();
    let mut doc =
        json!({ "version": 1, "origins": { "o": { "url": format!("http://{}", origin.addr) } } });
    if let Some(limit) = limit {
        doc["quotas"] = json!({ "per-ip": { "limit": limit, "window_s": 3600, "by": "ip" } });
        list.push(json!({ "id": "q", "methods": ["GET"], "path": "/q", "origin": "o", "auth": "none", "quota": "per-ip" }));
    }
    doc["routes"] = Value::Array(list);
    doc.to_string()
}

fn version(text: &str) -> String {
    PolicyVersion::of_text(text).expect("JSON").to_string()
}

fn file(name: &str, text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "reload-{name}-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, text).expect("write the policy");
    path
}

fn serve(config: &Path, watch: bool) -> Running {
    let path = config.to_str().expect("a UTF-8 path");
    let mut args = vec!["serve", "--config", path, "--listen", "127.0.0.1:0"];
    if watch {
        args.push("--watch");
    }
    common::start(&args)
}

fn hangup(gateway: &Running) {
    let pid = libc::pid_t::try_from(gateway.process.0.id()).expect("a pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP");
}

/// Poll `check` every 50 ms until it holds, within [`common::WAIT`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

#[test]
fn a_reload_under_load_fails_no_request_and_later_lines_carry_the_new_version() {
    let origin = origin();
    let (old, new) = (
        policy(&origin, &["a"], None),
        policy(&origin, &["a", "b"], None),
    );
    let config = file("load", &old);
    let gateway = serve(&config, false);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (gateway.addr.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    statuses.push(get(&addr, "/a", "").status);
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&config, &new).expect("write");
    hangup(&gateway);
    eventually("/b served after SIGHUP", || {
        get(&gateway.addr, "/b", "").status == 200
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let statuses: Vec<u16> = load
        .into_iter()
        .flat_map(|t| t.join().expect("load"))
        .collect();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "reload under load: {} requests, {failed} not 200",
        statuses.len()
    );
    assert!(statuses.len() > 50, "the load ran: {}", statuses.len());
    assert_eq!(failed, 0, "a request failed during the reload");

    let loaded = gateway.wait_stderr("policy_loaded for the new version", |l| {
        let v = json_line(l);
        v["event"] == "policy_loaded" && v["policy"] == version(&new).as_str()
    });
    assert_eq!(
        json_line(&loaded)["previous"],
        version(&old).as_str(),
        "{loaded}"
    );
    assert_eq!(json_line(&loaded)["routes"], 2, "{loaded}");
    gateway.wait_stdout("an access line under the new version", |l| {
        let v = json_line(l);
        v["route"] == "b" && v["policy"] == version(&new).as_str()
    });
}

#[test]
fn an_invalid_file_keeps_the_live_policy_and_the_rejection_names_why() {
    let origin = origin();
    let good = policy(&origin, &["a"], None);
    let config = file("invalid", &good);
    let gateway = serve(&config, false);
    let broken = r#"{"version": 1, "origins": {}, "routes": [], "bogus": true}"#;
    std::fs::write(&config, broken).expect("write");
    hangup(&gateway);
    let rejected = gateway.wait_stderr("policy_rejected", |l| {
        json_line(l)["event"] == "policy_rejected"
    });
    let v = json_line(&rejected);
    assert_eq!(
        v["policy"],
        version(&good).as_str(),
        "the version that stays: {rejected}"
    );
    assert_eq!(v["rejected"], version(broken).as_str(), "{rejected}");
    assert!(
        v["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["pointer"] == "/bogus")),
        "{rejected}"
    );
    assert_eq!(
        get(&gateway.addr, "/a", "").status,
        200,
        "the last good policy serves"
    );
    // Not even readable: still the last good policy.
    std::fs::remove_file(&config).expect("remove");
    hangup(&gateway);
    gateway.wait_stderr("policy_unavailable", |l| {
        json_line(l)["event"] == "policy_unavailable"
    });
    assert_eq!(get(&gateway.addr, "/a", "").status, 200);
}

#[test]
fn quota_state_survives_a_reload_unless_the_quota_changed() {
    let origin = origin();
    let config = file("quota", &policy(&origin, &["a"], Some(3)));
    let gateway = serve(&config, false);
    for _ in 0..3 {
        assert_eq!(get(&gateway.addr, "/q", "").status, 200);
    }
    assert_eq!(get(&gateway.addr, "/q", "").status, 429);

    // Another route, the same quota: still spent.
    let same = policy(&origin, &["a", "b"], Some(3));
    std::fs::write(&config, &same).expect("write");
    hangup(&gateway);
    eventually("the reload", || get(&gateway.addr, "/b", "").status == 200);
    assert_eq!(get(&gateway.addr, "/q", "").status, 429, "quota state kept");

    // A new limit is a new quota: it starts afresh.
    std::fs::write(&config, policy(&origin, &["a", "b"], Some(5))).expect("write");
    hangup(&gateway);
    eventually("the new quota", || {
        get(&gateway.addr, "/q", "").status == 200
    });
}

#[test]
fn watch_sees_the_file_replaced_by_a_rename() {
    let origin = origin();
    let config = file("watch", &policy(&origin, &["a"], None));
    let gateway = serve(&config, true);
    assert_eq!(get(&gateway.addr, "/b", "").status, 404);
    let next = config.with_extension("json.new");
    std::fs::write(&next, policy(&origin, &["a", "b"], None)).expect("write");
    std::fs::rename(&next, &config).expect("rename");
    eventually("/b served after the rename, with no signal", || {
        get(&gateway.addr, "/b", "").status == 200
    });
}

#[test]
fn stderr_is_json_lines_only_unless_text_is_asked() {
    let origin = origin();
    let good = policy(&origin, &["a"], None);
    let config = file("json", &good);
    let gateway = serve(&config, false);
    std::fs::write(&config, r#"{"version": 1, "bogus": 1}"#).expect("write");
    hangup(&gateway);
    // Every line until the rejection, and what follows it.
    let mut lines = gateway.before_ready.clone();
    let deadline = Instant::now() + common::WAIT;
    while !lines
        .iter()
        .any(|l| json_line(l)["event"] == "policy_rejected")
    {
        assert!(Instant::now() < deadline, "no policy_rejected: {lines:#?}");
        if let Ok(line) = gateway.stderr.recv_timeout(Duration::from_millis(100)) {
            lines.push(line);
        }
    }
    lines.extend(gateway.stderr.try_iter());
    assert!(lines.len() >= 2, "{lines:#?}");
    for line in &lines {
        let v = json_line(line);
        for member in ["time", "level", "event", "message"] {
            assert!(v[member].is_string(), "{member} missing in {line:?}");
        }
    }

    // A policy refused at start: its errors as one policy_rejected event, and no listening.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = stderr.lines().map(json_line).collect();
    assert!(events.iter().all(|v| v["event"].is_string()), "{stderr}");
    assert!(
        events.iter().any(|v| v["event"] == "policy_rejected"
            && v["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["pointer"] == "/bogus"))),
        "{stderr}"
    );

    // Text for people, when asked: the same lines as words.
    std::fs::write(&config, &good).expect("write");
    let path = config.to_str().expect("UTF-8");
    let text = common::start(&[
        "serve",
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ]);
    assert!(
        text.before_ready
            .iter()
            .all(|l| l.starts_with("portcullis: ")),
        "{:#?}",
        text.before_ready
    );
}
