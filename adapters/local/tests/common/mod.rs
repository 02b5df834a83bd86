//! What the end-to-end tests share: running the real binary, plain HTTP/1.1 over TCP, and tiny
//! servers on 127.0.0.1 standing in for origins and identity providers.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const READY: &str = "portcullis: listening on http://";
pub const WAIT: Duration = Duration::from_secs(30);

/// A process, killed and reaped when dropped so a failing test leaves nothing behind.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of `source`, read on a thread for as long as it is open (so the process never blocks
/// on a full pipe) and delivered through a channel so the test can wait with a timeout.
pub fn lines(source: impl Read + Send + 'static) -> Receiver<String> {
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

/// A running `portcullis` that printed its readiness line.
pub struct Running {
    pub process: Process,
    /// `HOST:PORT` from the readiness line.
    pub addr: String,
    /// Every stderr line before the readiness line.
    pub before_ready: Vec<String>,
    pub stdout: Receiver<String>,
    pub stderr: Receiver<String>,
}

impl Running {
    /// Wait for a stderr line (after the readiness line) that satisfies `wanted`.
    pub fn wait_stderr(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stderr, what, wanted)
    }

    /// Wait for a stdout line (an access line) that satisfies `wanted`.
    pub fn wait_stdout(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        wait_line(&self.stdout, what, wanted)
    }
}

/// The next line from `lines` that satisfies `wanted`, within [`WAIT`].
fn wait_line(lines: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line {what} ({e}); saw:\n{}", seen.join("\n")),
        }
    }
}

/// Run the binary with `args` and wait for its readiness line.
pub fn start(args: &[&str]) -> Running {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(args);
    start_command(command)
}

/// Run `command` (the binary, or something that `exec`s it) and wait for its readiness line.
pub fn start_command(mut command: Command) -> Running {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis");
    let mut process = Process(child);
    let stdout = lines(process.0.stdout.take().expect("stdout"));
    let stderr = lines(process.0.stderr.take().expect("stderr"));
    let mut before_ready = Vec::new();
    loop {
        let line = match stderr.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(e) => panic!(
                "no readiness line ({e}); stderr so far:\n{}",
                before_ready.join("\n")
            ),
        };
        if let Some(addr) = said_at(&line, "listening", READY) {
            return Running {
                process,
                addr,
                before_ready,
                stdout,
                stderr,
            };
        }
        before_ready.push(line);
    }
}

pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on a fresh connection; `Connection: close` lets the answer end at EOF.
pub fn send(addr: &str, request_head: &str) -> Answer {
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

pub fn get(addr: &str, path: &str, extra: &str) -> Answer {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// What a [`TinyServer`] answers: status, content type, body.
pub type Reply = (u16, &'static str, String);

/// A minimal HTTP/1.1 server on 127.0.0.1, one thread per connection, answering every request
/// with `reply(path)` and closing the connection. Counts the requests it answered. Runs until the
/// test process ends.
pub struct TinyServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl TinyServer {
    pub fn start(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> TinyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a tiny server");
        let addr = listener.local_addr().expect("tiny server address");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let reply = Arc::clone(&reply);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || answer(stream, &*reply, &counter));
            }
        });
        TinyServer { addr, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, reply: &dyn Fn(&str) -> Reply, hits: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let (status, content_type, body) = reply(&path);
    hits.fetch_add(1, Ordering::SeqCst);
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// An address on 127.0.0.1 with nothing listening (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// The `HOST:PORT` a process line says something listens on: the JSON `event`'s `address`
/// (the default), or what follows `text_prefix` (`--log-format text`, and `demo`).
pub fn said_at(line: &str, event: &str, text_prefix: &str) -> Option<String> {
    if let Some(addr) = line.strip_prefix(text_prefix) {
        return Some(addr.to_owned());
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let url = (value["event"] == event).then(|| value["address"].as_str())??;
    url.strip_prefix("http://").map(str::to_owned)
}

/// Whether `lines` hold a process line or event whose words are `message`: as JSON (its
/// `message`) or as text (`portcullis: MESSAGE`).
pub fn said(lines: &[String], message: &str) -> bool {
    lines.iter().any(|l| {
        l.strip_prefix("portcullis: ") == Some(message)
            || serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["message"] == message)
    })
}

/// The admin listener's `HOST:PORT`, from its start-up line (`serve --admin`).
pub fn admin_addr(gateway: &Running) -> String {
    gateway
        .before_ready
        .iter()
        .find_map(|l| said_at(l, "admin_listening", "portcullis: admin on http://"))
        .unwrap_or_else(|| panic!("no admin line in {:#?}", gateway.before_ready))
}

/// The metrics the shipped dashboard and alert rules (`deploy/`) query that `metrics` (a
/// `/metrics` text) does not expose: none, unless one was renamed on one side only. A family
/// shows only once it has a sample, so `metrics` should come from a gateway that has answered a
/// request and refreshed a key set, and failed to once.
pub fn unexposed_deploy_metrics(metrics: &str) -> Vec<String> {
    let families: Vec<(&str, &str)> = metrics
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split(' ');
            Some((words.next()?, words.next()?))
        })
        .collect();
    let exposed = |name: &str| {
        families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match *kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().any(|s| name == format!("{family}{s}"))
        })
    };
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut named = Vec::new();
    for file in ["grafana/portcullis.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(deploy.join(file)).expect("a deploy file");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("portcullis_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            named.push(format!("{file}: {name}"));
        }
    }
    assert!(
        named.len() > 10,
        "the deploy files name the metrics: {named:?}"
    );
    named
        .into_iter()
        .filter(|n| !exposed(n.rsplit(' ').next().unwrap_or_default()))
        .collect()
}
