//! Fault and abuse tests against the real native server: the `portcullis serve` binary, an origin
//! on 127.0.0.1 that records every byte it receives on each of its connections, and clients that
//! misbehave on purpose. Loopback only, and every wait is bounded, so a hang fails a test instead
//! of stalling the suite.
//!
//! What is promised, one test each:
//! - **Slowloris.** A client that trickles its request head is cut off once the header timeout
//!   (`--header-timeout-ms`) has passed, however steadily it sends. Clients that send properly
//!   are served meanwhile, and the slow request never reaches the origin.
//! - **Idle connections.** 5,000 idle connections add at most [`IDLE_RSS_BOUND_KIB`] to the
//!   gateway's resident memory, and 1,000 of them kept alive after a request at most
//!   [`KEPT_ALIVE_RSS_BOUND_KIB`] each. New clients are still served, each idle connection works,
//!   the gateway raised its own open-file limit to hold them (it was started with a soft limit of
//!   1024), and closing them gives back every descriptor.
//! - **Connection cap.** With `--max-connections N`, at most N connections are served at once;
//!   the others wait in the listen queue and are served once the header timeout frees slots. A
//!   cap the open-file limit cannot hold is lowered, with a line saying so.
//! - **Pipelining.** Requests sent back to back on one connection are answered in order, each
//!   decided by the policy on its own: a key on one does not carry over to the next, a refused one
//!   never reaches the origin, and neither does a request written in a refused one's body.
//! - **Request smuggling.** For each ambiguous framing (CL+TE, TE with obs-fold, TE with odd
//!   casing or whitespace, a chunk size that overflows, `chunked, identity`, differing
//!   `Content-Length`s, a `Content-Length` with a sign or junk), the client gets a 400 or the
//!   connection is closed after at most one answer, and the origin never receives the request
//!   hidden behind it.
//! - **Origin faults.** An origin that resets mid-response: the client's response is cut short,
//!   not hung, and an event names the request. A 100 MiB body is streamed to a client that starts
//!   reading late, with the gateway's peak resident memory growing by less than
//!   [`BIG_BODY_HWM_BOUND_KIB`]. An origin that never answers, or stops halfway through its
//!   head: 504 problem+json after its `timeout_ms`. One that stalls mid-body: the client's
//!   connection is closed once `timeout_ms` passes without bytes, with an event. A client that
//!   disconnects mid-upload: the upload to the origin is cut off too, the log says the client
//!   broke it off (400 `body_aborted`), and the gateway serves the next request and keeps no
//!   descriptor.
//!
//! Figures (memory, descriptors, timings) are printed to stderr; `cargo test --test abuse --
//! --nocapture` shows them. Linux only: memory and descriptors are read from `/proc`.

#![cfg(target_os = "linux")]

mod common;

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Running;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long any single read or write by a client or the origin may block.
const IO_WAIT: Duration = Duration::from_secs(10);

/// The API key the policy's `/admin` route accepts.
const KEY: &str = "abuse-test-key";

/// The smuggled request: a route that needs a key, sent with one. Should the gateway or the
/// origin ever read it as a request of its own, the origin's recording shows it.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: g\r\nx-api-key: abuse-test-key\r\n\r\n";

/// How many idle connections the idle test holds, and what they may add to the gateway's
/// resident memory, in KiB: 16 MiB, 3.3 KiB per connection that has sent nothing yet (measured:
/// about 1.7 KiB, a task each; see the test's output).
const IDLE_CONNECTIONS: usize = 5_000;
const IDLE_RSS_BOUND_KIB: u64 = 16 * 1024;

/// How many of them then make a request and stay open, kept alive, and what each of those may
/// add on top: 32 KiB (measured: about 16 KiB, hyper's two 8 KiB buffers and its state).
const KEPT_ALIVE: usize = 1_000;
const KEPT_ALIVE_RSS_BOUND_KIB: u64 = 32;

/// The body the big-body test relays, and what it may add to the gateway's peak resident memory:
/// 32 MiB, under a third of the body.
const BIG_BODY: u64 = 100 * 1024 * 1024;
const BIG_BODY_HWM_BOUND_KIB: u64 = 32 * 1024;

// ---------------------------------------------------------------------------------------------
// The recording origin
// ---------------------------------------------------------------------------------------------

/// How the origin answers one complete request.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with this body, keeping the connection open for more requests.
    Body(Vec<u8>),
    /// A head promising `declared` body bytes, `sent` of them, then a reset (RST).
    ResetAfter { declared: u64, sent: u64 },
    /// A head promising `declared` body bytes, `sent` of them, then nothing, the connection
    /// held open until the gateway closes it.
    StallAfter { declared: u64, sent: u64 },
    /// A body of this many bytes (byte `i` is `i % 251`), written as fast as the gateway takes it.
    Big(u64),
    /// No answer at all; the connection is held open until the gateway closes it.
    Silence,
    /// Half a response head, then nothing, the connection held open.
    HalfHead,
}

/// A request the origin received in full.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_len: u64,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Everything one origin connection carried.
#[derive(Debug, Default)]
struct Connection {
    /// Every byte received, in order.
    raw: Vec<u8>,
    /// The requests received in full.
    requests: Vec<Received>,
    /// A request whose head arrived and whose body is still coming (or never came): its request
    /// line, and the body bytes received so far.
    partial: Option<(String, u64)>,
    /// How the connection ended, once it has.
    ended: Option<String>,
}

type Connections = Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>;

/// An HTTP/1.1 origin on 127.0.0.1, a thread per connection, recording what arrives and
/// answering each complete request as `reply` says. Runs until the test process ends.
struct Origin {
    addr: SocketAddr,
    connections: Connections,
}

impl Origin {
    fn start(reply: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the origin");
        let addr = listener.local_addr().expect("origin address");
        let connections: Connections = Arc::default();
        let shared = Arc::clone(&connections);
        let reply = Arc::new(reply);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = Arc::new(Mutex::new(Connection::default()));
                lock(&shared).push(Arc::clone(&record));
                let reply = Arc::clone(&reply);
                thread::spawn(move || serve_origin_connection(stream, &record, &*reply));
            }
        });
        Origin { addr, connections }
    }

    /// An origin answering every request with its own target as the body.
    fn echoing_targets() -> Origin {
        Origin::start(|r| Reply::Body(r.target.clone().into_bytes()))
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Read the recordings.
    fn with<T>(&self, read: impl FnOnce(&[&Connection]) -> T) -> T {
        let handles: Vec<_> = lock(&self.connections).iter().map(Arc::clone).collect();
        let guards: Vec<_> = handles.iter().map(|c| lock(c)).collect();
        let views: Vec<&Connection> = guards.iter().map(|g| &**g).collect();
        read(&views)
    }

    /// `METHOD TARGET` of every request received in full, across connections.
    fn requests(&self) -> Vec<String> {
        self.with(|conns| {
            conns
                .iter()
                .flat_map(|c| c.requests.iter())
                .map(|r| format!("{} {}", r.method, r.target))
                .collect()
        })
    }

    /// Every request line that reached the origin, in full or not.
    fn request_lines(&self) -> Vec<String> {
        self.with(|conns| {
            conns
                .iter()
                .flat_map(|c| {
                    c.requests
                        .iter()
                        .map(|r| format!("{} {}", r.method, r.target))
                        .chain(c.partial.iter().map(|(line, _)| line.clone()))
                })
                .collect()
        })
    }

    /// What each connection received, for failure messages.
    fn dump(&self) -> String {
        self.with(|conns| {
            conns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let shown = &c.raw[..c.raw.len().min(2048)];
                    format!(
                        "origin connection {i} ({} bytes, ended: {:?}):\n{}",
                        c.raw.len(),
                        c.ended,
                        String::from_utf8_lossy(shown)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Wait up to `timeout` for `done` to hold over the recordings.
    fn wait_until(&self, timeout: Duration, done: impl Fn(&[&Connection]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.with(&done) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads from the origin's socket, recording every byte into its [`Connection`].
struct Recorder {
    stream: TcpStream,
    record: Arc<Mutex<Connection>>,
}

impl Read for Recorder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        lock(&self.record).raw.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn serve_origin_connection(
    stream: TcpStream,
    record: &Arc<Mutex<Connection>>,
    reply: &dyn Fn(&Received) -> Reply,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(IO_WAIT));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(Recorder {
        stream,
        record: Arc::clone(record),
    });
    let ended = loop {
        let request = match read_request(&mut reader, record) {
            Ok(Some(request)) => request,
            Ok(None) => break "closed by the gateway between requests".to_owned(),
            Err(why) => break why,
        };
        lock(record).requests.push(request.clone());
        match reply(&request) {
            Reply::Body(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if out.write_all(&[head.as_bytes(), &body].concat()).is_err() {
                    break "write failed".to_owned();
                }
            }
            Reply::ResetAfter { declared, sent } => {
                let _ = out.write_all(&partial_response(declared, sent));
                reset_on_close(&out);
                break "reset by the origin".to_owned();
            }
            Reply::StallAfter { declared, sent } => {
                let _ = out.write_all(&partial_response(declared, sent));
                break hold_until_closed(&mut reader);
            }
            Reply::Big(len) => {
                if let Err(e) = write_big(&mut out, len) {
                    break format!("writing the big body failed: {e}");
                }
            }
            Reply::Silence => break hold_until_closed(&mut reader),
            Reply::HalfHead => {
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/pl");
                break hold_until_closed(&mut reader);
            }
        }
    };
    lock(record).ended = Some(ended);
}

/// A 200 head promising `declared` bytes, and `sent` of them.
fn partial_response(declared: u64, sent: u64) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    .into_bytes();
    bytes.resize(bytes.len() + usize::try_from(sent).unwrap_or(0), b'x');
    bytes
}

/// Byte `i` of a big body.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn write_big(out: &mut TcpStream, len: u64) -> io::Result<()> {
    out.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )?;
    // 261 periods of the pattern: every chunk starts where the last one stopped.
    let chunk: Vec<u8> = (0..251 * 261).map(pattern).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64);
        out.write_all(&chunk[..n as usize])?;
        left -= n;
    }
    Ok(())
}

/// Read (and record) until the gateway closes the connection; how it closed it.
fn hold_until_closed(reader: &mut impl Read) -> String {
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return "closed by the gateway".to_owned(),
            Ok(_) => {}
            Err(e) => return format!("ended by the gateway: {e}"),
        }
    }
}

/// Make closing `stream` send a reset instead of an orderly close.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor, and a `linger` of the size passed.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// One request off the origin's connection: `Ok(None)` on a clean close before it started.
/// The body is read by `Content-Length` or as chunked, counted, and recorded as partial while
/// it arrives.
fn read_request(
    reader: &mut impl BufRead,
    record: &Mutex<Connection>,
) -> Result<Option<Received>, String> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) if lines.is_empty() && line.is_empty() => return Ok(None),
            Ok(0) => return Err("closed mid-head".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed mid-head: {e}")),
        }
        if line == b"\r\n" {
            break;
        }
        lines.push(String::from_utf8_lossy(&line).trim_end().to_owned());
    }
    let request_line = lines.first().cloned().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut received = Received {
        method,
        target,
        headers,
        body_len: 0,
    };
    let line = format!("{} {}", received.method, received.target);
    lock(record).partial = Some((line, 0));
    let progress = |n: u64| {
        if let Some((_, got)) = &mut lock(record).partial {
            *got += n;
        }
    };
    let chunked = received
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let length = received
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    received.body_len = if chunked {
        read_chunked(reader, &progress)?
    } else if let Some(length) = length {
        read_exactly(reader, length, &progress)?;
        length
    } else {
        0
    };
    lock(record).partial = None;
    Ok(Some(received))
}

fn read_exactly(
    reader: &mut impl Read,
    mut left: u64,
    progress: &dyn Fn(u64),
) -> Result<(), String> {
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        match reader.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("closed with {left} body bytes still to come")),
            Ok(n) => {
                progress(n as u64);
                left -= n as u64;
            }
            Err(e) => return Err(format!("{e} with {left} body bytes still to come")),
        }
    }
    Ok(())
}

fn read_chunked(reader: &mut impl BufRead, progress: &dyn Fn(u64)) -> Result<u64, String> {
    let mut total = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("closed after {total} chunked body bytes")),
            Ok(_) => {}
            Err(e) => return Err(format!("{e} after {total} chunked body bytes")),
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size =
            u64::from_str_radix(size, 16).map_err(|e| format!("bad chunk size {line:?}: {e}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                match reader.read_line(&mut trailer) {
                    Ok(0) => return Err("closed in the trailers".to_owned()),
                    Ok(_) if trailer == "\r\n" => return Ok(total),
                    Ok(_) => {}
                    Err(e) => return Err(format!("{e} in the trailers")),
                }
            }
        }
        read_exactly(reader, size, progress)?;
        read_exactly(reader, 2, &|_| {})?;
        total += size;
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

/// A policy with a public route `/open/{what}` (GET and POST) and `/admin`, which needs the API
/// key [`KEY`], both on `origin` with `timeout_ms`.
fn policy_file(origin: &Origin, timeout_ms: u64) -> PathBuf {
    let sha256: String = Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let policy = json!({
        "version": 1,
        "origins": { "o": { "url": origin.url(), "timeout_ms": timeout_ms } },
        "auth": {
            "keys": {
                "type": "api_key",
                "header": "x-api-key",
                "keys": [ { "sha256": sha256, "consumer": "tester", "scopes": [] } ]
            }
        },
        "routes": [
            { "id": "admin", "methods": ["GET", "POST"], "path": "/admin", "origin": "o",
              "auth": { "providers": ["keys"] } },
            { "id": "open", "methods": ["GET", "POST"], "path": "/open/{what}", "origin": "o",
              "auth": "none" }
        ]
    });
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "abuse-{}-{}.json",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, policy.to_string()).expect("write the policy");
    path
}

/// `portcullis serve` in front of `origin`, with `args` after the config and listen address.
fn gateway(origin: &Origin, timeout_ms: u64, args: &[&str]) -> Running {
    let config = policy_file(origin, timeout_ms);
    let config = config.to_str().expect("a UTF-8 path");
    let mut all = vec!["serve", "--config", config, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    common::start(&all)
}

/// The same, started by a shell that first sets the open-file limit with `ulimit` (`limit`,
/// such as `-S -n 1024`).
fn gateway_under_limit(origin: &Origin, limit: &str, args: &[&str]) -> Running {
    let config = policy_file(origin, 10_000);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    common::start_command(command)
}

fn pid(gateway: &Running) -> u32 {
    gateway.process.0.id()
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the gateway's descriptors")
        .count()
}

/// Wait up to `within` for the gateway's descriptor count to satisfy `done`, failing with
/// `what` and the count.
fn wait_descriptors(pid: u32, within: Duration, what: &str, done: impl Fn(usize) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let count = open_descriptors(pid);
        if done(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {count} descriptors after {within:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway's descriptor count once it has stopped changing for 300 ms (connections of
/// earlier requests take a moment to close after their clients leave).
fn settled_descriptors(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = open_descriptors(pid);
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        let now = open_descriptors(pid);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// The soft and hard open-file limits of process `pid`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Raise this test process's soft open-file limit to at least `needed`, or fail saying why.
fn raise_own_limit(needed: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill in, then a valid one to read.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            assert!(
                limit.rlim_max >= needed,
                "this test holds {needed} sockets, but the hard open-file limit is {}",
                limit.rlim_max
            );
            limit.rlim_cur = needed;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(IO_WAIT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_WAIT))
        .expect("write timeout");
    stream
}

/// How a read stopped before what was expected arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// The gateway closed the connection.
    Closed,
    /// The gateway reset it.
    Reset,
    /// Nothing for [`IO_WAIT`]: the gateway hung.
    Hung,
    Other(String),
}

impl Ended {
    fn of(error: &io::Error) -> Ended {
        match error.kind() {
            ErrorKind::UnexpectedEof => Ended::Closed,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Ended::Reset
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => Ended::Hung,
            _ => Ended::Other(error.to_string()),
        }
    }

    fn is_close(&self) -> bool {
        matches!(self, Ended::Closed | Ended::Reset)
    }
}

#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Response {
    head: Head,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The problem document's `type`, checking the content type on the way.
    fn problem_type(&self) -> String {
        assert_eq!(
            self.head.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let doc: Value = serde_json::from_slice(&self.body).expect("a problem document");
        doc["type"].as_str().unwrap_or_default().to_owned()
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String, Ended> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) => Err(Ended::Closed),
        Ok(_) if !line.ends_with(b"\n") => Err(Ended::Closed),
        Ok(_) => Ok(String::from_utf8_lossy(&line).trim_end().to_owned()),
        Err(e) => Err(Ended::of(&e)),
    }
}

fn read_head(reader: &mut impl BufRead) -> Result<Head, Ended> {
    let status_line = read_line(reader)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Ended::Other(format!("not a status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(Head { status, headers });
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
}

/// Read the body `head` announces, handing each piece to `sink`; on a short body, how many
/// bytes came and how the read ended.
fn read_body(
    reader: &mut impl BufRead,
    head: &Head,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, (u64, Ended)> {
    let mut got = 0u64;
    let mut take = |reader: &mut dyn Read, len: Option<u64>, got: &mut u64| {
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = len;
        loop {
            let want = left.map_or(buf.len(), |l| l.min(buf.len() as u64) as usize);
            if want == 0 {
                return Ok(());
            }
            match reader.read(&mut buf[..want]) {
                Ok(0) if left.is_none() => return Ok(()),
                Ok(0) => return Err(Ended::Closed),
                Ok(n) => {
                    sink(&buf[..n]);
                    *got += n as u64;
                    left = left.map(|l| l - n as u64);
                }
                Err(e) => return Err(Ended::of(&e)),
            }
        }
    };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|te| te.contains("chunked"));
    if chunked {
        loop {
            let line = read_line(reader).map_err(|e| (got, e))?;
            let size = u64::from_str_radix(line.split(';').next().unwrap_or_default(), 16)
                .map_err(|_| (got, Ended::Other(format!("bad chunk line {line:?}"))))?;
            if size == 0 {
                read_line(reader).map_err(|e| (got, e))?;
                return Ok(got);
            }
            take(reader, Some(size), &mut got).map_err(|e| (got, e))?;
            read_line(reader).map_err(|e| (got, e))?;
        }
    }
    let length = head
        .header("content-length")
        .map(|v| v.parse::<u64>().expect("a numeric Content-Length"));
    // Without a length the body runs to the end of the connection.
    take(reader, length, &mut got).map_err(|e| (got, e))?;
    Ok(got)
}

fn read_response(reader: &mut impl BufRead) -> Result<Response, Ended> {
    let head = read_head(reader)?;
    let mut body = Vec::new();
    read_body(reader, &head, &mut |piece| body.extend_from_slice(piece))
        .map_err(|(_, ended)| ended)?;
    Ok(Response { head, body })
}

/// Everything still to come on `reader` until the connection ends or `within` passes: the
/// bytes, and how it ended (`Hung` if it is still open).
fn rest_of(reader: &mut BufReader<TcpStream>, within: Duration) -> (Vec<u8>, Ended) {
    reader
        .get_ref()
        .set_read_timeout(Some(within))
        .expect("read timeout");
    let mut rest = Vec::new();
    let ended = match reader.read_to_end(&mut rest) {
        Ok(_) => Ended::Closed,
        Err(e) => Ended::of(&e),
    };
    (rest, ended)
}

/// One request on a fresh connection, answered in full.
fn request(addr: &str, raw: &str) -> Response {
    let mut stream = connect(addr);
    stream.write_all(raw.as_bytes()).expect("send the request");
    read_response(&mut BufReader::new(stream)).expect("an answer")
}

/// `GET path` on a fresh connection, and the head of its answer, the body still to read.
fn get_head(addr: &str, path: &str) -> (BufReader<TcpStream>, Head) {
    let mut stream = connect(addr);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: g\r\n\r\n").as_bytes())
        .expect("send the request");
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).expect("the head of an answer");
    (reader, head)
}

fn get(addr: &str, path: &str) -> Response {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: g\r\n\r\n"))
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------------------------
// Slowloris, idle connections, the connection cap
// ---------------------------------------------------------------------------------------------

#[test]
fn a_slowloris_client_is_cut_off_at_the_header_timeout_while_others_are_served() {
    const SLOW: usize = 100;
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let origin = Origin::echoing_targets();
    let gateway = gateway(&origin, 5_000, &["--header-timeout-ms", "1000"]);
    // Sent a byte per tick, never finished: at 50 ms a byte the head would take 4 s.
    let head = format!(
        "GET /open/slow HTTP/1.1\r\nHost: g\r\nX-Pad: {}\r\n",
        "a".repeat(40)
    );
    let head = head.as_bytes();

    struct Slow {
        stream: TcpStream,
        opened: Instant,
        closed: Option<Duration>,
        answer: Vec<u8>,
    }
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let stream = connect(&gateway.addr);
            stream.set_nonblocking(true).expect("nonblocking");
            Slow {
                stream,
                opened: Instant::now(),
                closed: None,
                answer: Vec::new(),
            }
        })
        .collect();
    let started = Instant::now();
    let mut served = Vec::new();
    let mut sent = 0;
    while slow.iter().any(|s| s.closed.is_none()) && started.elapsed() < Duration::from_secs(4) {
        for s in slow.iter_mut().filter(|s| s.closed.is_none()) {
            if sent < head.len() && s.stream.write(&head[sent..=sent]).is_err() {
                s.closed = Some(s.opened.elapsed());
                continue;
            }
            let mut buf = [0u8; 1024];
            match s.stream.read(&mut buf) {
                Ok(0) => s.closed = Some(s.opened.elapsed()),
                Ok(n) => s.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => s.closed = Some(s.opened.elapsed()),
            }
        }
        sent += 1;
        // A client that sends its request properly, meanwhile.
        let asked = Instant::now();
        let answer = get(&gateway.addr, "/open/fast");
        assert_eq!(answer.head.status, 200, "{answer:?}");
        served.push(asked.elapsed());
        thread::sleep(Duration::from_millis(50));
    }

    let closed: Vec<Duration> = slow.iter().filter_map(|s| s.closed).collect();
    assert_eq!(closed.len(), SLOW, "slow clients still open after 4 s");
    let (first, last) = (
        closed.iter().min().copied().unwrap_or_default(),
        closed.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        first >= TIMEOUT - Duration::from_millis(60),
        "a slow client was cut off after {first:?}, before the header timeout"
    );
    assert!(
        last <= TIMEOUT + Duration::from_millis(1000),
        "a slow client was cut off only after {last:?}"
    );
    for s in &slow {
        // Closed without an answer, or with hyper's bare 408.
        let answer = String::from_utf8_lossy(&s.answer);
        assert!(
            s.answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
            "a slow client got {answer:?}"
        );
    }
    let slowest_served = served.iter().max().copied().unwrap_or_default();
    assert!(served.len() >= 10, "only {} served", served.len());
    assert!(
        slowest_served < Duration::from_millis(500),
        "a proper client waited {slowest_served:?}"
    );
    let requests = origin.request_lines();
    assert!(
        requests.iter().all(|r| r == "GET /open/fast"),
        "{requests:?}"
    );
    eprintln!(
        "abuse: slowloris: {SLOW} slow clients cut off {}..{} ms after connecting (header \
         timeout {} ms, {} with a 408); {} proper requests served meanwhile, slowest {} ms",
        millis(first),
        millis(last),
        millis(TIMEOUT),
        slow.iter().filter(|s| !s.answer.is_empty()).count(),
        served.len(),
        millis(slowest_served)
    );
}

#[test]
fn five_thousand_idle_connections_cost_bounded_memory_and_new_clients_are_served() {
    // This process holds the idle sockets itself.
    raise_own_limit((IDLE_CONNECTIONS + 1_000) as libc::rlim_t);
    let origin = Origin::echoing_targets();
    // A common default soft limit, too low for 5,000 connections: the gateway must raise it.
    let gateway = gateway_under_limit(&origin, "-S -n 1024", &["--header-timeout-ms", "120000"]);
    let pid = pid(&gateway);
    let (soft, hard) = open_file_limits(pid);
    assert_eq!(
        soft, hard,
        "the gateway left its soft open-file limit at {soft}"
    );
    assert!(
        soft >= 2 * IDLE_CONNECTIONS as u64,
        "the hard open-file limit ({hard}) cannot hold this test"
    );
    for _ in 0..50 {
        assert_eq!(get(&gateway.addr, "/open/warm").head.status, 200);
    }
    let descriptors_before = settled_descriptors(pid);
    let rss_before = status_kib(pid, "VmRSS");

    let opening = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|_| connect(&gateway.addr))
        .collect();
    wait_descriptors(
        pid,
        Duration::from_secs(30),
        &format!("{IDLE_CONNECTIONS} connections not all accepted ({descriptors_before} before)"),
        |count| count >= descriptors_before + IDLE_CONNECTIONS,
    );
    let accepted_in = opening.elapsed();
    // Let every connection's task run and allocate what it holds while waiting.
    thread::sleep(Duration::from_millis(500));
    let rss_idle = (0..5)
        .map(|_| {
            thread::sleep(Duration::from_millis(50));
            status_kib(pid, "VmRSS")
        })
        .max()
        .unwrap_or_default();
    let added = rss_idle.saturating_sub(rss_before);

    // New clients are served, and so are requests on the oldest and newest idle connections.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        assert_eq!(get(&gateway.addr, "/open/new").head.status, 200);
        slowest = slowest.max(asked.elapsed());
    }
    assert!(
        added <= IDLE_RSS_BOUND_KIB,
        "{IDLE_CONNECTIONS} idle connections added {added} KiB of resident memory"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a new client waited {slowest:?}"
    );

    // Spread over the oldest and the newest, some of the idle connections make a request and
    // stay open, kept alive: each still works, and costs what hyper holds for it.
    let used: Vec<usize> = (0..KEPT_ALIVE / 2)
        .chain(IDLE_CONNECTIONS - KEPT_ALIVE / 2..IDLE_CONNECTIONS)
        .collect();
    for &index in &used {
        let stream = &mut idle[index];
        stream
            .write_all(b"GET /open/idle HTTP/1.1\r\nHost: g\r\n\r\n")
            .expect("send on an idle connection");
        let answer = read_response(&mut BufReader::new(&*stream)).expect("an answer");
        assert_eq!(
            answer.head.status, 200,
            "idle connection {index}: {answer:?}"
        );
        assert_eq!(answer.text(), "/open/idle");
    }
    thread::sleep(Duration::from_millis(300));
    let rss_kept = status_kib(pid, "VmRSS");
    let kept_each = rss_kept.saturating_sub(rss_idle) / KEPT_ALIVE as u64;
    assert!(
        kept_each <= KEPT_ALIVE_RSS_BOUND_KIB,
        "{KEPT_ALIVE} kept-alive connections added {kept_each} KiB each"
    );

    let peak_descriptors = open_descriptors(pid);
    drop(idle);
    wait_descriptors(
        pid,
        Duration::from_secs(10),
        &format!("still open after the idle clients left ({descriptors_before} before)"),
        |count| count <= descriptors_before + 4,
    );
    eprintln!(
        "abuse: idle: open-file limit raised from 1024 to {soft}; {IDLE_CONNECTIONS} idle \
         connections accepted in {} ms; descriptors {descriptors_before} -> {peak_descriptors} \
         -> {}; VmRSS {rss_before} KiB -> {rss_idle} KiB (+{added} KiB, {} bytes per \
         connection; bound {IDLE_RSS_BOUND_KIB} KiB); slowest new client {} ms; {KEPT_ALIVE} \
         of them kept alive after a request: VmRSS {rss_kept} KiB (+{kept_each} KiB each; \
         bound {KEPT_ALIVE_RSS_BOUND_KIB} KiB)",
        millis(accepted_in),
        open_descriptors(pid),
        added * 1024 / IDLE_CONNECTIONS as u64,
        millis(slowest)
    );
}

#[test]
fn the_connection_cap_holds_and_waiting_clients_are_served_once_slots_free() {
    const CAP: usize = 20;
    let origin = Origin::echoing_targets();
    let gateway = gateway(
        &origin,
        5_000,
        &["--max-connections", "20", "--header-timeout-ms", "1000"],
    );
    let pid = pid(&gateway);
    assert_eq!(get(&gateway.addr, "/open/warm").head.status, 200);
    let before = settled_descriptors(pid);

    // Watch the gateway's descriptors for the whole test.
    let peak = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (peak, watching) = (Arc::clone(&peak), Arc::clone(&watching));
        thread::spawn(move || {
            while watching.load(Ordering::SeqCst) {
                peak.fetch_max(open_descriptors(pid), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..2 * CAP).map(|_| connect(&gateway.addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let held = open_descriptors(pid).saturating_sub(before);
    // Queued behind the 40 idle connections: served once two header timeouts have freed slots.
    let asked = Instant::now();
    let answer = get(&gateway.addr, "/open/queued");
    let waited = asked.elapsed();
    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();
    assert_eq!(answer.head.status, 200, "{answer:?}");
    assert_eq!(held, CAP, "connections held at once under a cap of {CAP}");
    // The queued request may open one connection to the origin.
    let peak = peak.load(Ordering::SeqCst).saturating_sub(before);
    assert!(
        peak <= CAP + 1,
        "{peak} descriptors at once under a cap of {CAP}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the queued client waited {waited:?}"
    );
    drop(idle);

    // A cap the open-file limit cannot hold is lowered, and the operator told.
    let lowered = gateway_under_limit(&origin, "-n 1024", &["--max-connections", "100000"]);
    let note = "--max-connections 100000 lowered to 480: the open-file limit is 1024 \
                (two per connection, 64 spare)";
    assert!(
        common::said(&lowered.before_ready, note),
        "{:#?}",
        lowered.before_ready
    );
    eprintln!(
        "abuse: cap: {} idle connections against a cap of {CAP}: {held} held, at most {peak} \
         descriptors above the baseline; a queued client served after {} ms ({} ms from the \
         first idle connection)",
        2 * CAP,
        millis(waited),
        millis(started.elapsed())
    );
}

// ---------------------------------------------------------------------------------------------
// Pipelining and request smuggling
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_are_answered_in_order_and_each_decided_alone() {
    let origin = Origin::echoing_targets();
    let gateway = gateway(&origin, 5_000, &[]);
    let body = SMUGGLED;
    let pipeline = format!(
        "GET /admin HTTP/1.1\r\nHost: g\r\nx-api-key: {KEY}\r\n\r\n\
         GET /admin HTTP/1.1\r\nHost: g\r\n\r\n\
         GET /open/third HTTP/1.1\r\nHost: g\r\n\r\n\
         POST /admin HTTP/1.1\r\nHost: g\r\nContent-Length: {}\r\n\r\n{body}\
         GET /open/fifth HTTP/1.1\r\nHost: g\r\n\r\n",
        body.len()
    );
    let mut stream = connect(&gateway.addr);
    stream
        .write_all(pipeline.as_bytes())
        .expect("send the pipeline");
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    for _ in 0..5 {
        match read_response(&mut reader) {
            Ok(answer) => answers.push(answer),
            Err(ended) => panic!("after {} answers: {ended:?}; {answers:#?}", answers.len()),
        }
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.head.status).collect();
    assert_eq!(statuses, [200, 401, 200, 401, 200], "{answers:#?}");
    assert_eq!(answers[0].text(), "/admin");
    assert_eq!(answers[2].text(), "/open/third");
    assert_eq!(answers[4].text(), "/open/fifth");
    for refused in [&answers[1], &answers[3]] {
        assert_eq!(
            refused.problem_type(),
            "urn:portcullis:problem:unauthenticated"
        );
    }
    // Distinct requests, each with its own id.
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .filter_map(|a| a.head.header("x-portcullis-request-id"))
        .collect();
    assert_eq!(ids.len(), 5, "{answers:#?}");
    let (rest, _) = rest_of(&mut reader, Duration::from_millis(300));
    assert!(
        rest.is_empty(),
        "more answers: {}",
        String::from_utf8_lossy(&rest)
    );

    assert_eq!(
        origin.requests(),
        ["GET /admin", "GET /open/third", "GET /open/fifth"],
        "{}",
        origin.dump()
    );
    let consumer = origin.with(|conns| {
        conns
            .iter()
            .flat_map(|c| c.requests.iter())
            .find(|r| r.target == "/admin")
            .and_then(|r| r.header("x-portcullis-consumer").map(str::to_owned))
    });
    assert_eq!(consumer.as_deref(), Some("tester"));
    eprintln!("abuse: pipelining: 5 requests on one connection answered {statuses:?}, in order");
}

/// Send `raw` on a fresh connection. The gateway must answer with a 400, or close the
/// connection after one answer; it must not answer twice (a second answer is a request read
/// out of the first one's bytes); and the origin must never get the request hidden in it, nor
/// more than one request. Returns what happened, for the test's output.
fn assert_not_smuggled(shape: &str, raw: &[u8]) -> String {
    let origin = Origin::echoing_targets();
    let gateway = gateway(&origin, 5_000, &[]);
    let mut stream = connect(&gateway.addr);
    stream.write_all(raw).expect("send the request");
    let mut reader = BufReader::new(stream);
    let first = read_response(&mut reader);
    let (rest, ended) = rest_of(&mut reader, Duration::from_millis(500));
    let outcome = match &first {
        Ok(answer) => {
            assert!(
                answer.head.status == 400 || ended.is_close(),
                "{shape}: answered {} and kept the connection open: {answer:?}",
                answer.head.status
            );
            assert!(
                rest.is_empty(),
                "{shape}: a second answer: {}",
                String::from_utf8_lossy(&rest)
            );
            let kind = if answer.head.header("content-type") == Some("application/problem+json") {
                format!(" {}", answer.problem_type())
            } else {
                String::new()
            };
            format!(
                "{}{kind}, then {}",
                answer.head.status,
                if ended.is_close() {
                    "closed"
                } else {
                    "kept open"
                }
            )
        }
        Err(ended) => {
            assert!(ended.is_close(), "{shape}: no answer and {ended:?}");
            format!("closed without an answer ({ended:?})")
        }
    };
    // Give anything the gateway might still send the origin time to arrive.
    thread::sleep(Duration::from_millis(200));
    let lines = origin.request_lines();
    assert!(
        lines.iter().all(|l| !l.contains("/admin")) && lines.len() <= 1,
        "{shape}: the origin got {lines:?}\n{}",
        origin.dump()
    );
    let outcome = format!("{outcome}; origin got {lines:?}");
    eprintln!("abuse: smuggling: {shape}: {outcome}");
    outcome
}

fn shape(head: &str, body: &str) -> Vec<u8> {
    format!("POST /open/first HTTP/1.1\r\nHost: g\r\n{head}\r\n{body}").into_bytes()
}

#[test]
fn content_length_with_transfer_encoding_smuggles_nothing() {
    // CL.TE: chunked, the body ends at once and the smuggled request follows; read by length,
    // the smuggled request is body. TE.CL: the other order of the same headers.
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    assert_not_smuggled(
        "CL then TE",
        &shape(&format!("{cl}Transfer-Encoding: chunked\r\n"), &body),
    );
    assert_not_smuggled(
        "TE then CL",
        &shape(&format!("Transfer-Encoding: chunked\r\n{cl}"), &body),
    );
    // TE.CL proper: chunked, the smuggled request is the chunk; by length, only its size line.
    let chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    assert_not_smuggled(
        "TE.CL, the request in a chunk",
        &shape(
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            &chunk,
        ),
    );
}

#[test]
fn transfer_encoding_folded_over_two_lines_smuggles_nothing() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, te) in [
        (
            "obs-fold: value on the next line",
            "Transfer-Encoding:\r\n chunked\r\n",
        ),
        (
            "obs-fold: continued value",
            "Transfer-Encoding: identity\r\n chunked\r\n",
        ),
        (
            "obs-fold: tab continuation",
            "Transfer-Encoding: x\r\n\tchunked\r\n",
        ),
    ] {
        assert_not_smuggled(name, &shape(&format!("{cl}{te}"), &body));
    }
}

#[test]
fn transfer_encoding_with_odd_casing_or_whitespace_smuggles_nothing() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, te) in [
        ("upper-case value", "Transfer-Encoding: CHUNKED\r\n"),
        (
            "mixed-case name and value",
            "tRaNsFeR-eNcOdInG: cHuNkEd\r\n",
        ),
        ("space before the colon", "Transfer-Encoding : chunked\r\n"),
        ("tab before the value", "Transfer-Encoding:\tchunked\r\n"),
        (
            "vertical tab before the value",
            "Transfer-Encoding:\x0bchunked\r\n",
        ),
        (
            "form feed after the value",
            "Transfer-Encoding: chunked\x0c\r\n",
        ),
        (
            "leading space on the line",
            " Transfer-Encoding: chunked\r\n",
        ),
        (
            "a coding that only contains chunked",
            "Transfer-Encoding: xchunked\r\n",
        ),
        ("quoted", "Transfer-Encoding: \"chunked\"\r\n"),
    ] {
        assert_not_smuggled(name, &shape(&format!("{cl}{te}"), &body));
    }
    // Without Content-Length, a valid chunked request whatever the case (RFC 9112 §7: coding
    // names are case-insensitive): one request, whose body is the smuggled request as data.
    let origin = Origin::echoing_targets();
    let gateway = gateway(&origin, 5_000, &[]);
    let chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let mut stream = connect(&gateway.addr);
    stream
        .write_all(&shape("Transfer-Encoding: CHUNKED\r\n", &chunk))
        .expect("send");
    let mut reader = BufReader::new(stream);
    let answer = read_response(&mut reader).expect("an answer");
    assert_eq!(answer.head.status, 200, "{answer:?}");
    let (rest, _) = rest_of(&mut reader, Duration::from_millis(300));
    assert!(
        rest.is_empty(),
        "a second answer: {}",
        String::from_utf8_lossy(&rest)
    );
    let bodies = origin.with(|conns| {
        conns
            .iter()
            .flat_map(|c| c.requests.iter())
            .map(|r| (format!("{} {}", r.method, r.target), r.body_len))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        bodies,
        [("POST /open/first".to_owned(), SMUGGLED.len() as u64)],
        "{}",
        origin.dump()
    );
    eprintln!(
        "abuse: smuggling: upper-case value alone: 200, one request at the origin with the \
         chunk as its {}-byte body",
        SMUGGLED.len()
    );
}

#[test]
fn an_overflowing_chunk_size_smuggles_nothing() {
    // 2^64 + 1: a parser that wraps reads a 1-byte chunk, and then the smuggled request.
    for (name, size) in [
        ("chunk size 2^64+1", "10000000000000001"),
        (
            "chunk size of 32 hex digits",
            "ffffffffffffffffffffffffffffffff",
        ),
    ] {
        let body = format!("{size}\r\nA\r\n0\r\n\r\n{SMUGGLED}");
        let outcome = assert_not_smuggled(name, &shape("Transfer-Encoding: chunked\r\n", &body));
        // The client's framing broke, not the origin: the core's 400, not a 502.
        assert!(
            outcome.starts_with("400 urn:portcullis:problem:bad-request, then closed"),
            "{name}: {outcome}"
        );
    }
}

#[test]
fn chunked_then_identity_smuggles_nothing() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, head) in [
        (
            "chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n".to_owned(),
        ),
        (
            "chunked, identity with Content-Length",
            format!("{cl}Transfer-Encoding: chunked, identity\r\n"),
        ),
        (
            "chunked then identity on two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n".to_owned(),
        ),
        (
            "identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n".to_owned(),
        ),
        (
            "chunked twice on two lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_owned(),
        ),
    ] {
        assert_not_smuggled(name, &shape(&head, &body));
    }
}

#[test]
fn differing_content_lengths_smuggle_nothing() {
    let body = format!("{SMUGGLED}{SMUGGLED}");
    for (name, head) in [
        (
            "two lines, shorter first",
            format!("Content-Length: 0\r\nContent-Length: {}\r\n", body.len()),
        ),
        (
            "two lines, longer first",
            format!("Content-Length: {}\r\nContent-Length: 0\r\n", body.len()),
        ),
        ("a list", format!("Content-Length: 0, {}\r\n", body.len())),
    ] {
        assert_not_smuggled(name, &shape(&head, &body));
    }
}

#[test]
fn a_content_length_with_a_sign_or_junk_smuggles_nothing() {
    let body = SMUGGLED;
    let n = body.len();
    for (name, value) in [
        ("plus sign", format!("+{n}")),
        ("minus sign", format!("-{n}")),
        ("hex prefix", format!("0x{n:x}")),
        ("trailing junk", format!("{n}abc")),
        ("leading junk", format!("abc{n}")),
        ("two numbers", format!("{n} {n}")),
        ("decimal point", format!("{n}.0")),
        ("overflowing", "99999999999999999999999".to_owned()),
        ("empty", String::new()),
    ] {
        assert_not_smuggled(name, &shape(&format!("Content-Length: {value}\r\n"), body));
    }
}

// ---------------------------------------------------------------------------------------------
// Origin faults
// ---------------------------------------------------------------------------------------------

/// The JSON event on the gateway's stderr about request `id` whose text starts with `prefix`.
fn wait_for_event(gateway: &Running, id: &str, prefix: &str) -> Value {
    let line = gateway.wait_stderr(&format!("about {id} starting {prefix:?}"), |line| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| {
            v["request_id"] == id && v["message"].as_str().is_some_and(|e| e.starts_with(prefix))
        })
    });
    serde_json::from_str(&line).expect("a JSON event")
}

#[test]
fn an_origin_reset_mid_response_cuts_the_client_response_short_and_is_logged() {
    let origin = Origin::start(|r| match r.target.as_str() {
        "/open/reset" => Reply::ResetAfter {
            declared: 1_000_000,
            sent: 10_000,
        },
        _ => Reply::Body(b"fine".to_vec()),
    });
    let gateway = gateway(&origin, 5_000, &[]);
    let started = Instant::now();
    let (mut reader, head) = get_head(&gateway.addr, "/open/reset");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000000"));
    let cut = read_body(&mut reader, &head, &mut |_| {});
    let took = started.elapsed();
    let (got, ended) = cut.expect_err("a body cut short");
    assert!(ended.is_close(), "the client's response {ended:?}");
    assert_eq!(got, 10_000);
    assert!(took < Duration::from_secs(3), "the cut took {took:?}");
    let id = head
        .header("x-portcullis-request-id")
        .expect("a request id");
    let event = wait_for_event(
        &gateway,
        id,
        "origin response broken off after 10000 body bytes",
    );
    assert_eq!(event["level"], "warn");
    // The gateway is fine.
    assert_eq!(get(&gateway.addr, "/open/next").text(), "fine");
    eprintln!(
        "abuse: reset: client got {got} of 1000000 bytes, then {ended:?} after {} ms; event: {}",
        millis(took),
        event["message"]
    );
}

#[test]
fn a_100_mib_body_is_streamed_with_bounded_memory() {
    let origin = Origin::start(|r| match r.target.as_str() {
        "/open/big" => Reply::Big(BIG_BODY),
        _ => Reply::Body(b"fine".to_vec()),
    });
    // A short origin timeout: the client's late start must not count as the origin stalling.
    let gateway = gateway(&origin, 500, &[]);
    let pid = pid(&gateway);
    assert_eq!(get(&gateway.addr, "/open/warm").text(), "fine");
    let hwm_before = status_kib(pid, "VmHWM");

    let started = Instant::now();
    let (mut reader, head) = get_head(&gateway.addr, "/open/big");
    assert_eq!(head.status, 200);
    // Start reading late: the origin keeps writing, and only flow control holds it back.
    thread::sleep(Duration::from_secs(1));
    let mut offset = 0u64;
    let mut wrong = None;
    let got = read_body(&mut reader, &head, &mut |piece| {
        for &byte in piece {
            if wrong.is_none() && byte != pattern(offset) {
                wrong = Some(offset);
            }
            offset += 1;
        }
    });
    let took = started.elapsed();
    let hwm_after = status_kib(pid, "VmHWM");
    assert_eq!(got, Ok(BIG_BODY), "the body as relayed");
    assert_eq!(wrong, None, "first wrong byte");
    let grew = hwm_after.saturating_sub(hwm_before);
    assert!(
        grew <= BIG_BODY_HWM_BOUND_KIB,
        "relaying {BIG_BODY} bytes grew the gateway's peak resident memory by {grew} KiB"
    );
    eprintln!(
        "abuse: big body: {BIG_BODY} bytes relayed in {} ms (1 s of it waiting on the client); \
         VmHWM {hwm_before} KiB -> {hwm_after} KiB (+{grew} KiB; bound {BIG_BODY_HWM_BOUND_KIB} \
         KiB)",
        millis(took)
    );
}

#[test]
fn an_origin_that_never_answers_gets_a_504_problem_after_its_timeout() {
    let origin = Origin::start(|r| match r.target.as_str() {
        "/open/half-head" => Reply::HalfHead,
        _ => Reply::Silence,
    });
    let gateway = gateway(&origin, 500, &[]);
    let mut took = Vec::new();
    for path in ["/open/silent", "/open/half-head"] {
        let started = Instant::now();
        let answer = get(&gateway.addr, path);
        let elapsed = started.elapsed();
        assert_eq!(answer.head.status, 504, "{path}: {answer:?}");
        assert_eq!(
            answer.problem_type(),
            "urn:portcullis:problem:origin-timeout"
        );
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
            "{path}: 504 after {elapsed:?}"
        );
        took.push(millis(elapsed));
    }
    // The gateway gave up on the origin connection too.
    assert!(
        origin.wait_until(Duration::from_secs(3), |conns| conns
            .iter()
            .all(|c| c.ended.is_some())),
        "{}",
        origin.dump()
    );
    eprintln!(
        "abuse: silent origin: 504 origin-timeout after {} ms; half a head, then silence: \
         after {} ms (timeout_ms 500)",
        took[0], took[1]
    );
}

#[test]
fn an_origin_that_stalls_mid_body_has_the_client_connection_closed() {
    let origin = Origin::start(|_| Reply::StallAfter {
        declared: 1_000,
        sent: 100,
    });
    let gateway = gateway(&origin, 500, &[]);
    let (mut reader, head) = get_head(&gateway.addr, "/open/stall");
    let started = Instant::now();
    assert_eq!(head.status, 200);
    let (got, ended) = read_body(&mut reader, &head, &mut |_| {}).expect_err("a body cut short");
    let took = started.elapsed();
    assert!(ended.is_close(), "the client's response {ended:?}");
    assert_eq!(got, 100);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    let id = head
        .header("x-portcullis-request-id")
        .expect("a request id");
    let event = wait_for_event(&gateway, id, "origin response stalled after 100 body bytes");
    assert!(
        origin.wait_until(Duration::from_secs(3), |conns| conns
            .iter()
            .all(|c| c.ended.is_some())),
        "the origin connection was kept: {}",
        origin.dump()
    );
    eprintln!(
        "abuse: stalled body: client got {got} of 1000 bytes, connection closed {} ms after \
         the head (timeout_ms 500); event: {}",
        millis(took),
        event["message"]
    );
}

#[test]
fn a_client_that_disconnects_mid_upload_cancels_the_origin_request() {
    const DECLARED: u64 = 10 * 1024 * 1024;
    const SENT: usize = 256 * 1024;
    let origin = Origin::echoing_targets();
    let gateway = gateway(&origin, 5_000, &[]);
    let pid = pid(&gateway);
    assert_eq!(get(&gateway.addr, "/open/warm").head.status, 200);
    let descriptors_before = settled_descriptors(pid);

    let mut stream = connect(&gateway.addr);
    stream
        .write_all(
            format!(
                "POST /open/upload HTTP/1.1\r\nHost: g\r\nContent-Type: application/octet-stream\r\nContent-Length: {DECLARED}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send the head");
    stream
        .write_all(&vec![b'u'; SENT])
        .expect("send part of the body");
    // Wait until the upload is under way at the origin, then leave.
    assert!(
        origin.wait_until(Duration::from_secs(5), |conns| conns.iter().any(|c| c
            .partial
            .as_ref()
            .is_some_and(|(line, got)| line == "POST /open/upload" && *got > 0))),
        "the upload never reached the origin: {}",
        origin.dump()
    );
    let left = Instant::now();
    reset_on_close(&stream);
    drop(stream);

    // The origin's side is cut off too: its connection ends with the body incomplete.
    let cancelled = origin.wait_until(Duration::from_secs(5), |conns| {
        conns.iter().any(|c| {
            c.ended.is_some()
                && c.partial
                    .as_ref()
                    .is_some_and(|(line, _)| line == "POST /open/upload")
        })
    });
    let cancelled_in = left.elapsed();
    assert!(
        cancelled,
        "the origin's upload was not cancelled: {}",
        origin.dump()
    );
    let (received, how) = origin.with(|conns| {
        conns
            .iter()
            .find(|c| c.partial.is_some())
            .map(|c| (c.partial.as_ref().map_or(0, |p| p.1), c.ended.clone()))
            .unwrap_or_default()
    });
    assert!(received < DECLARED, "the origin got the whole body");
    // Logged as the client's doing, not the origin's.
    let access = gateway.wait_stdout("for the upload", |l| l.contains(r#""path":"/open/upload""#));
    let access: Value = serde_json::from_str(&access).expect("a JSON access line");
    assert_eq!(access["status"], 400, "{access}");
    assert_eq!(access["reason"], "bad-request:body_aborted", "{access}");
    let event = gateway.wait_stderr("about the broken upload", |l| {
        l.contains("client request body broke off")
    });

    // The gateway serves the next request, and keeps nothing of the aborted one.
    assert_eq!(get(&gateway.addr, "/open/next").text(), "/open/next");
    // One may be a pooled connection to the origin that the next request opened.
    wait_descriptors(
        pid,
        Duration::from_secs(5),
        &format!("still open after the aborted upload ({descriptors_before} before)"),
        |count| count <= descriptors_before + 1,
    );
    eprintln!(
        "abuse: aborted upload: origin got {received} of {DECLARED} body bytes, its request \
         ended {} ms after the client left ({how:?}); logged {} {}, event {event}; next \
         request served; descriptors back to {}",
        millis(cancelled_in),
        access["status"],
        access["reason"],
        open_descriptors(pid)
    );
}
