//! The test host against the probe fixture (`fixtures/probe`, a spin-sdk 5 component): each
//! Spin interface the host implements, seen from inside a real component, over real HTTP.
//!
//! Builds the fixture first (`cargo build --target wasm32-wasip2 --release --locked`, quick when
//! nothing changed). Run with `cargo test --release` (a debug build would compile wasmtime again).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_portcullis-spin-host");

/// The fixture in the checkout being tested. Read at run time, not baked in with `env!`: the test
/// binary lives in a target directory shared by every clone on the machine (see
/// `scripts/test-spin`), and cargo does not rebuild it when the same sources sit at another path.
fn probe_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("fixtures/probe")
}

fn build_probe() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--release",
                "--locked",
            ])
            .current_dir(probe_dir())
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("building the probe failed ({status})"))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A running `portcullis-spin-host up` on the probe.
struct Host {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Host {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Host {
        match Host::try_start(args, env) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    /// Start on a free port; `Err` with the output if it exits before serving.
    fn try_start(args: &[&str], env: &[(&str, &str)]) -> Result<Host, String> {
        build_probe();
        let mut command = Command::new(HOST);
        command
            .arg("up")
            .arg("-f")
            .arg(probe_dir().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("SPIN_VARIABLE_SECRET_WORD", "swordfish")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|e| e.to_string())?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let kept = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                kept.lock().expect("lock").push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "exited before serving; stdout:\n{seen}\nstderr:\n{}",
                    stderr.lock().expect("lock").join("\n")
                ));
            }
            seen.push_str(&line);
            if let Some(url) = line.trim().strip_prefix("Serving http://") {
                let addr = url.to_owned();
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while out.read_line(&mut sink).unwrap_or(0) > 0 {
                        sink.clear();
                    }
                });
                return Ok(Host {
                    child,
                    addr,
                    stderr,
                });
            }
        }
    }

    /// Send `head` (request line and headers, without the blank line) plus `body`.
    fn send(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = head.replace('\n', "\r\n").into_bytes();
        raw.extend_from_slice(
            format!(
                "\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            )
            .as_bytes(),
        );
        raw.extend_from_slice(body);
        stream.write_all(&raw).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, dechunk(body))
    }

    fn get(&self, target: &str) -> (u16, String) {
        self.send(&format!("GET {target} HTTP/1.1"), b"")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Whether stderr shows `needle` within 5 s (it arrives through a pipe, after the answer).
    fn logged(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undo chunked transfer coding if the body looks chunked (the probe's answers are short text).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_owned();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// An origin answering `200 origin-ok` to everything, counting requests.
struct Origin {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn origin() -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\norigin-ok",
            );
        }
    });
    Origin { port, hits }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spin-host-probe-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn spin_headers_are_appended_after_the_clients() {
    let host = Host::start(&["--state-dir", ""], &[]);
    let (status, body) = host.send(
        "GET /headers?x=1 HTTP/1.1\nspin-client-addr: 6.6.6.6:1\nConnection: x-hop\nx-hop: 1",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    let addrs: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("spin-client-addr: "))
        .collect();
    assert_eq!(addrs.len(), 2, "{body}");
    assert_eq!(addrs[0], "6.6.6.6:1", "the client's copy stays, as in Spin");
    assert!(
        addrs[1].starts_with("127.0.0.1:"),
        "Spin's own value comes last: {body}"
    );
    for expected in [
        format!("spin-full-url: http://{}/headers?x=1", host.addr),
        "spin-path-info: /headers".to_owned(),
        "spin-matched-route: /...".to_owned(),
        "spin-raw-component-route: /...".to_owned(),
        "spin-component-route: ".to_owned(),
        "spin-base-path: /".to_owned(),
        "x-hop: 1".to_owned(),
    ] {
        assert!(
            lines.contains(&expected.as_str()),
            "missing {expected:?} in:\n{body}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("connection:")),
        "Spin removes Connection: {body}"
    );
}

#[test]
fn a_non_utf8_header_value_is_answered_500_without_the_component() {
    let host = Host::start(&["--state-dir", ""], &[]);
    let mut stream = TcpStream::connect(&host.addr).expect("connect");
    stream
        .write_all(
            b"GET /headers HTTP/1.1\r\nHost: x\r\nx-bin: \xff\xfe\r\nConnection: close\r\n\r\n",
        )
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    assert!(
        !text.contains("spin-full-url"),
        "the component must not run: {text}"
    );
    assert_eq!(host.get("/.well-known/spin/health"), (200, "OK".to_owned()));
}

#[test]
fn key_value_seeding_reads_writes_and_labels() {
    let host = Host::start(&["--state-dir", "", "--key-value", "seeded=a=b"], &[]);
    assert_eq!(host.get("/kv/get?seeded"), (200, "a=b".to_owned()));
    assert_eq!(host.get("/kv/get?absent").0, 404);
    assert_eq!(host.send("PUT /kv/set?k HTTP/1.1", b"v1").0, 200);
    assert_eq!(host.get("/kv/get?k"), (200, "v1".to_owned()));
    assert_eq!(host.get("/kv/increment?n"), (200, "1".to_owned()));
    assert_eq!(host.get("/kv/increment?n"), (200, "2".to_owned()));
    let (status, body) = host.get("/kv/open?other");
    assert_eq!((status, body.as_str()), (403, "Error::AccessDenied"));
}

#[test]
fn compare_and_swap_is_exact_under_concurrency() {
    for state in ["memory", "sqlite"] {
        let dir = temp_dir(state);
        let state_dir = if state == "memory" {
            String::new()
        } else {
            dir.to_string_lossy().into_owned()
        };
        let host = Arc::new(Host::start(&["--state-dir", &state_dir], &[]));
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let host = host.clone();
                std::thread::spawn(move || host.get("/kv/cas-incr?counter"))
            })
            .collect();
        let mut seen: Vec<u64> = handles
            .into_iter()
            .map(|h| {
                let (status, body) = h.join().expect("thread");
                assert_eq!(status, 200, "{body}");
                body.parse().expect("number")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=20).collect::<Vec<u64>>(),
            "{state}: each increment once"
        );
        assert_eq!(
            host.get("/kv/get?counter"),
            (200, "20".to_owned()),
            "{state}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn sqlite_state_survives_a_restart_and_takes_live_edits() {
    let dir = temp_dir("persist");
    let state = dir.to_string_lossy().into_owned();
    {
        let host = Host::start(&["--state-dir", &state, "--key-value", "policy=v1"], &[]);
        assert_eq!(host.get("/kv/get?policy"), (200, "v1".to_owned()));
        // A test edits the store of the running host; the next request sees it.
        let status = Command::new(HOST)
            .args(["kv-set", "--state-dir", &state, "policy", "v2"])
            .status()
            .expect("kv-set");
        assert!(status.success());
        assert_eq!(host.get("/kv/get?policy"), (200, "v2".to_owned()));
    }
    let host = Host::start(&["--state-dir", &state], &[]);
    assert_eq!(host.get("/kv/get?policy"), (200, "v2".to_owned()));
    let status = Command::new(HOST)
        .args(["kv-delete", "--state-dir", &state, "policy"])
        .status()
        .expect("kv-delete");
    assert!(status.success());
    assert_eq!(host.get("/kv/get?policy").0, 404);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn variables_and_environment() {
    let host = Host::start(&["--state-dir", "", "--variable", "greeting=hi"], &[]);
    assert_eq!(host.get("/var?greeting"), (200, "hi, world".to_owned()));
    assert_eq!(host.get("/var?secret_word"), (200, "swordfish".to_owned()));
    let (status, body) = host.get("/var?allowed_port");
    assert_eq!(
        status, 404,
        "an application variable the component does not map"
    );
    assert!(body.starts_with("Error::Undefined"), "{body}");
    let (status, body) = host.get("/var?Bad");
    assert_eq!(status, 404);
    assert!(body.starts_with("Error::InvalidName"), "{body}");
    assert_eq!(
        host.get("/env?PROBE_ENV"),
        (200, "from-manifest".to_owned())
    );
    assert_eq!(
        host.get("/env?HOME").0,
        404,
        "the host's environment is not passed on"
    );
}

#[test]
fn a_required_variable_without_a_value_stops_the_start() {
    build_probe();
    let out = Command::new(HOST)
        .arg("up")
        .arg("-f")
        .arg(probe_dir().join("spin.toml"))
        .args(["--listen", "127.0.0.1:0", "--state-dir", ""])
        .env_remove("SPIN_VARIABLE_SECRET_WORD")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("Serving"), "{stdout}");
    assert!(stderr.contains("secret_word"), "{stderr}");
}

#[test]
fn outbound_requests_only_to_allowed_hosts() {
    let allowed = origin();
    let other = origin();
    let port = allowed.port.to_string();
    let host = Host::start(
        &["--state-dir", ""],
        &[("SPIN_VARIABLE_ALLOWED_PORT", &port)],
    );
    let (status, body) = host.get(&format!("/fetch?http://127.0.0.1:{}/x", allowed.port));
    assert_eq!((status, body.as_str()), (200, "200 origin-ok"));
    assert_eq!(allowed.hits.load(Ordering::SeqCst), 1);
    let (status, body) = host.get(&format!("/fetch?http://127.0.0.1:{}/x", other.port));
    assert_eq!(status, 502);
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        other.hits.load(Ordering::SeqCst),
        0,
        "nothing may reach a refused host"
    );
    let (status, body) = host.get(&format!("/fetch?http://localhost:{}/x", allowed.port));
    assert!(
        status == 502 && body.contains("HttpRequestDenied"),
        "a name is not its address: {body}"
    );
    assert!(
        host.logged("allowed_outbound_hosts"),
        "the refusal is logged: {}",
        host.stderr()
    );
}

/// Spin 3.x's wasmtime answers `ready()` for a passed deadline with true; wasmtime 48 would say
/// false on every fresh timer (see `answer_past_deadlines_as_ready` in host.rs).
#[test]
fn a_passed_deadline_is_ready() {
    let host = Host::start(&["--state-dir", ""], &[]);
    assert_eq!(host.get("/past-deadline-ready"), (200, "true".to_owned()));
}

#[test]
fn a_trap_is_an_empty_500_and_the_host_keeps_serving() {
    let host = Host::start(&["--state-dir", ""], &[]);
    assert_eq!(host.get("/trap"), (500, String::new()));
    assert_eq!(host.get("/kv/get?nothing").0, 404);
    assert!(host.logged("traps on purpose"), "{}", host.stderr());
}

#[test]
fn bad_command_lines_and_manifests_are_refused() {
    let out = Command::new(HOST)
        .args(["up", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let dir = temp_dir("bad-manifest");
    std::fs::write(
        dir.join("spin.toml"),
        "spin_manifest_version = 2\n[application]\nname = \"x\"\n[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n",
    )
    .expect("write");
    let out = Command::new(HOST)
        .arg("up")
        .arg("-f")
        .arg(&dir)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only HTTP triggers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
