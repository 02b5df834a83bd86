//! SIGTERM against a real `portcullis serve`: requests in flight finish within `--drain-s`, new
//! connections are not taken, the exit is clean; past the drain the process exits anyway.

mod common;

use std::time::{Duration, Instant};

use common::{get, Running, TinyServer};
use serde_json::json;

/// A gateway in front of an origin that takes `delay` to answer `/slow`.
fn gateway(delay: Duration, drain_s: &str, name: &str) -> (Running, TinyServer) {
    let origin = TinyServer::start(move |path| {
        if path == "/slow" {
            std::thread::sleep(delay);
        }
        (200, "application/json", "{}".to_owned())
    });
    let config = json!({
        "version": 1,
        "origins": { "o": { "url": format!("http://{}", origin.addr), "timeout_ms": 30000 } },
        "routes": [ { "id": "any", "methods": ["GET"], "path": "/{*rest}", "origin": "o", "auth": "none" } ]
    });
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shutdown-{name}-{}.json", std::process::id()));
    std::fs::write(&path, config.to_string()).expect("write the policy");
    let path = path.to_str().expect("UTF-8").to_owned();
    let running = common::start(&[
        "serve",
        "--config",
        &path,
        "--listen",
        "127.0.0.1:0",
        "--drain-s",
        drain_s,
    ]);
    (running, origin)
}

fn terminate(running: &Running) {
    let pid = libc::pid_t::try_from(running.process.0.id()).expect("a pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// How long the process took to exit after `since`, and whether it exited 0.
fn exit_after(running: &mut Running, since: Instant) -> (Duration, bool) {
    loop {
        if let Some(status) = running.process.0.try_wait().expect("wait") {
            return (since.elapsed(), status.success());
        }
        assert!(
            since.elapsed() < common::WAIT,
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_exits_cleanly() {
    let (mut running, _origin) = gateway(Duration::from_millis(1500), "10", "finish");
    let addr = running.addr.clone();
    let slow = std::thread::spawn(move || get(&addr, "/slow", "").status);
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    terminate(&running);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(&running.addr).is_err(),
        "a new connection was accepted after SIGTERM"
    );
    assert_eq!(
        slow.join().expect("the slow request"),
        200,
        "finished, not cut off"
    );
    let (took, clean) = exit_after(&mut running, signalled);
    assert!(clean, "exit status after a drain");
    assert!(
        took >= Duration::from_millis(1000),
        "waited for the request: {took:?}"
    );
    eprintln!("shutdown: exited {took:?} after SIGTERM, once the request in flight finished");
}

#[test]
fn past_the_drain_the_process_exits_anyway_and_at_once_when_idle() {
    let (mut running, _origin) = gateway(Duration::from_secs(20), "1", "cut");
    let addr = running.addr.clone();
    // Cut off by the exit: it gets no answer, which is the point.
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            let _ = stream.write_all(b"GET /slow HTTP/1.1\r\nHost: gw\r\n\r\n");
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    terminate(&running);
    let (took, _) = exit_after(&mut running, signalled);
    assert!(
        took < Duration::from_secs(5),
        "the drain bound held: {took:?}"
    );

    let (mut idle, _origin) = gateway(Duration::ZERO, "10", "idle");
    assert_eq!(get(&idle.addr, "/fast", "").status, 200);
    let signalled = Instant::now();
    terminate(&idle);
    let (took, clean) = exit_after(&mut idle, signalled);
    assert!(
        clean && took < Duration::from_secs(2),
        "an idle gateway exits at once: {took:?}"
    );
}
