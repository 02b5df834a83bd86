//! End to end through the real binary: `portcullis demo` on ephemeral ports, its echo origin on
//! 127.0.0.1, plain HTTP/1.1 over TCP from the test. The full behaviour suite is the conformance
//! runner's job (tests/); this checks that the native glue holds together.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{get, Running, WAIT};
use serde_json::Value;

/// A running demo.
struct Demo {
    running: Running,
    addr: String,
    token: String,
}

fn start() -> Demo {
    let running = common::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--origin-listen",
        "127.0.0.1:0",
    ]);
    let token = running
        .before_ready
        .iter()
        .find_map(|line| line.strip_prefix("TOKEN='")?.strip_suffix('\''))
        .expect("the demo printed no TOKEN line before the readiness line")
        .to_owned();
    Demo {
        addr: running.addr.clone(),
        running,
        token,
    }
}

/// The next log line, parsed; every line on stdout must be one JSON object.
fn next_log(demo: &Demo) -> Value {
    let line = demo
        .running
        .stdout
        .recv_timeout(WAIT)
        .expect("a log line on stdout");
    let value: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    for field in [
        "time",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "decision",
        "reason",
        "consumer",
        "gateway_us",
        "origin_us",
    ] {
        assert!(value.get(field).is_some(), "log line lacks {field}: {line}");
    }
    value
}

#[test]
fn the_demo_loads_its_own_key_set_before_it_is_ready() {
    let demo = start();
    assert!(
        demo.running
            .before_ready
            .iter()
            .any(|l| l == "portcullis: auth provider \"demo-jwt\": 1 keys loaded"),
        "{:#?}",
        demo.running.before_ready
    );
    let header = demo.token.split('.').next().expect("a token header");
    assert!(
        header.starts_with("eyJhbGciOiJFUzI1NiIs"),
        "not an ES256 token: {header}"
    );
}

#[test]
fn forwards_an_allowed_request_refuses_a_missing_token_and_logs_both() {
    let demo = start();

    let allowed = get(
        &demo.addr,
        "/v1/orders/42?x=1",
        &format!("Authorization: Bearer {}\r\n", demo.token),
    );
    assert_eq!(allowed.status, 200, "{}\n\n{}", allowed.head, allowed.body);
    let echoed: Value =
        serde_json::from_str(allowed.body.trim()).expect("the echo origin answers JSON");
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/v1/orders/42");
    assert_eq!(echoed["query"], "x=1");
    assert_eq!(echoed["headers"]["x-portcullis-consumer"], "demo-user");
    let allowed_id = allowed
        .header("x-portcullis-request-id")
        .expect("request id on the response")
        .to_owned();
    assert_eq!(allowed_id.len(), 32);
    assert_eq!(
        echoed["headers"]["x-portcullis-request-id"],
        allowed_id.as_str()
    );

    let log = next_log(&demo);
    assert_eq!(log["request_id"], allowed_id.as_str());
    assert_eq!(log["decision"], "forward");
    assert_eq!(log["status"], 200);
    assert_eq!(log["route"], "get-order");
    assert_eq!(log["consumer"], "demo-user");
    assert!(
        log["origin_us"].is_u64() && log["gateway_us"].is_u64(),
        "{log}"
    );

    let refused = get(&demo.addr, "/v1/orders/42", "");
    assert_eq!(refused.status, 401, "{}\n\n{}", refused.head, refused.body);
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let problem: Value = serde_json::from_str(refused.body.trim()).expect("a problem document");
    assert_eq!(problem["status"], 401);

    let log = next_log(&demo);
    assert_eq!(log["decision"], "reject");
    assert_eq!(log["status"], 401);
    assert_eq!(log["request_id"], problem["request_id"]);
    assert!(log["origin_us"].is_null(), "{log}");
}

#[test]
fn a_huge_request_head_is_refused_not_hung() {
    let demo = start();
    let huge = "a".repeat(200 * 1024);
    let answer = get(&demo.addr, "/v1/health", &format!("X-Big: {huge}\r\n"));
    assert_eq!(answer.status, 431, "{}", answer.head);
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly() {
    let mut demo = start();
    assert_eq!(get(&demo.addr, "/v1/health", "").status, 200);
    let pid = demo.running.process.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(exit) = demo
            .running
            .process
            .0
            .try_wait()
            .expect("wait for the demo")
        {
            assert!(exit.success(), "exited with {exit}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
