//! The admin listener of a real `portcullis serve --admin`: `/metrics` moves as requests are
//! answered and refused and names the live policy, `/healthz` answers, other methods and paths
//! do not, and the public port serves none of it.

mod common;

use common::{admin_addr, get, send, TinyServer};
use portcullis_core::PolicyVersion;
use serde_json::json;

fn config(origin: &TinyServer, name: &str) -> (std::path::PathBuf, String) {
    let text = json!({
        "version": 1,
        "origins": { "o": { "url": format!("http://{}", origin.addr) } },
        "routes": [ { "id": "open", "methods": ["GET"], "path": "/open", "origin": "o", "auth": "none" } ]
    })
    .to_string();
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("admin-{name}-{}.json", std::process::id()));
    std::fs::write(&path, &text).expect("write the policy");
    (path, text)
}

/// The value of the sample line that starts with `series` (name and labels), if any.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn metrics_count_what_the_gateway_answered_and_name_the_live_policy() {
    let origin = TinyServer::start(|_| (200, "application/json", "{}".to_owned()));
    let (path, text) = config(&origin, "metrics");
    let gateway = common::start(&[
        "serve",
        "--config",
        path.to_str().expect("UTF-8"),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = admin_addr(&gateway);
    assert_ne!(admin, gateway.addr);

    let forwarded =
        r#"portcullis_requests_total{route="open",decision="forward",reason="ok",status="200"}"#;
    let refused = r#"portcullis_requests_total{route="",decision="reject",reason="not-found:no_route",status="404"}"#;
    let before = get(&admin, "/metrics", "");
    assert_eq!(before.status, 200, "{}", before.body);
    assert!(before
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert_eq!(sample(&before.body, refused), None, "{}", before.body);

    for _ in 0..3 {
        assert_eq!(get(&gateway.addr, "/open", "").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&gateway.addr, "/nowhere", "").status, 404);
    }
    let after = get(&admin, "/metrics", "").body;
    assert_eq!(sample(&after, forwarded), Some(3.0), "{after}");
    assert_eq!(sample(&after, refused), Some(2.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"portcullis_origin_duration_seconds_count{route="open"}"#
        ),
        Some(3.0),
        "{after}"
    );
    let version = PolicyVersion::of_text(&text).expect("JSON").to_string();
    assert_eq!(
        sample(
            &after,
            &format!(r#"portcullis_policy_info{{version="{version}"}}"#)
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"portcullis_policy_reloads_total{result="loaded"}"#
        ),
        Some(1.0),
        "{after}"
    );
    assert!(after.ends_with("# EOF\n"), "{after}");

    // One client connection held open while scraping: counted.
    let mut held = std::net::TcpStream::connect(&gateway.addr).expect("connect");
    std::io::Write::write_all(&mut held, b"GET /open HTTP/1.1\r\nHost: gw\r\n\r\n").expect("send");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let open = sample(
        &get(&admin, "/metrics", "").body,
        "portcullis_open_connections",
    );
    assert_eq!(open, Some(1.0), "the held connection, and only it");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let open = sample(
        &get(&admin, "/metrics", "").body,
        "portcullis_open_connections",
    );
    assert_eq!(open, Some(0.0), "closed, it is no longer counted");
    assert_eq!(get(&admin, "/healthz", "").status, 200);
    assert_eq!(
        get(&admin, "/readyz", "").status,
        200,
        "no remote key sets: ready"
    );
    assert_eq!(get(&admin, "/nothing", "").status, 404);
    let post = send(&admin, &format!("POST /metrics HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
    // The public port has no admin pages: /metrics there is just an unrouted path.
    assert_eq!(get(&gateway.addr, "/metrics", "").status, 404);
}

#[test]
fn the_admin_listener_is_off_unless_asked_and_never_the_public_address() {
    let origin = TinyServer::start(|_| (200, "application/json", "{}".to_owned()));
    let (path, _) = config(&origin, "off");
    let path = path.to_str().expect("UTF-8");
    let gateway = common::start(&["serve", "--config", path, "--listen", "127.0.0.1:0"]);
    assert!(
        !gateway
            .before_ready
            .iter()
            .any(|l| l.starts_with("portcullis: admin on")),
        "{:#?}",
        gateway.before_ready
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--config",
            path,
            "--listen",
            "127.0.0.1:18799",
            "--admin",
            "127.0.0.1:18799",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be the public address"));
}
