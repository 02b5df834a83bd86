//! End to end through the real binary: `portcullis demo` on ephemeral ports, its echo origin on
//! 127.0.0.1, plain HTTP/1.1 over TCP from the test. The full behaviour suite is the conformance
//! runner's job (tests/); this checks that the native glue holds together.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

const READY: &str = "portcullis: listening on http://";
const WAIT: Duration = Duration::from_secs(30);

/// A running demo.
struct Demo {
    process: Process,
    addr: String,
    token: String,
    stdout: Receiver<String>,
}

/// The demo process, killed and reaped when dropped so a failing test leaves nothing behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of `source`, delivered through a channel so the test can wait with a timeout.
fn lines(source: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn start() -> Demo {
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--origin-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis demo");
    let mut process = Process(child);
    let stdout = lines(process.0.stdout.take().expect("stdout"));
    let stderr = lines(process.0.stderr.take().expect("stderr"));
    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let line = match stderr.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(e) => {
                panic!(
                    "no readiness line ({e}); stderr so far:\n{}",
                    seen.join("\n")
                );
            }
        };
        if let Some(t) = line
            .strip_prefix("TOKEN='")
            .and_then(|t| t.strip_suffix('\''))
        {
            token = Some(t.to_owned());
        }
        if let Some(addr) = line.strip_prefix(READY) {
            let addr = addr.to_owned();
            let token = token.expect("the demo printed no TOKEN line before the readiness line");
            // Keep draining stderr so the demo never blocks on a full pipe.
            std::thread::spawn(move || while stderr.recv().is_ok() {});
            return Demo {
                process,
                addr,
                token,
                stdout,
            };
        }
        seen.push(line);
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on a fresh connection; `Connection: close` lets the answer end at EOF.
fn send(addr: &str, request_head: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream.set_read_timeout(Some(WAIT)).expect("set timeout");
    stream
        .write_all(request_head.as_bytes())
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(addr: &str, path: &str, extra: &str) -> Answer {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// The next log line, parsed; every line on stdout must be one JSON object.
fn next_log(demo: &Demo) -> Value {
    let line = demo
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
    let pid = demo.process.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(exit) = demo.process.0.try_wait().expect("wait for the demo") {
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
