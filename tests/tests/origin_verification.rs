//! The verification code in `docs/origin-verification.md`, run as printed (Python, Node, Go)
//! against requests a real `portcullis serve` forwarded — before and after a key rotation — and
//! against tampered copies; and an origin built on the Python snippet that refuses a direct
//! request and accepts the gateway's. So the document cannot lie about the gateway.
//!
//! Needs `python3`, `node` and `go` on `PATH` (`scripts/test` installs Debian's `golang-go`
//! when missing), so it is `#[ignore]`d for plain `cargo test` and run by `scripts/test`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use portcullis_conformance::client::{self, BodyFraming, Exchange, WireRequest};
use portcullis_conformance::origin::{Record, RecordingOrigin};
use portcullis_conformance::target::{listening_url, locate_native_binary};
use serde_json::{json, Value};

const OLD: &str = "rotation-old-key-TEST-ONLY-0123456789";
const NEW: &str = "rotation-new-key-TEST-ONLY-9876543210";
const ALICE_KEY: &str = "alice-key-TEST-ONLY-0001";

fn doc() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/origin-verification.md"),
    )
    .expect("docs/origin-verification.md")
}

/// The first fenced block in `lang`.
fn snippet(doc: &str, lang: &str) -> String {
    doc.split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .unwrap_or_else(|| panic!("no ```{lang} block in the document"))
        .to_owned()
}

fn policy(origin: &str, current: &str, previous: Option<&str>) -> String {
    let mut sign = json!({ "secret_env": current });
    if let Some(p) = previous {
        sign["previous_secret_env"] = json!(p);
    }
    json!({
        "version": 1,
        "origins": { "api": { "url": format!("{origin}/base"), "timeout_ms": 5000, "sign": sign } },
        "auth": { "keys": { "type": "api_key", "keys": [
            { "sha256": "f42a1f19154c8fe05c40a32b5ef11e97acc37308755b23caf4a5a29c5a925afd", "consumer": "alice" } ] } },
        "routes": [
            { "id": "pub", "methods": ["GET"], "path": "/pub/{*rest}", "origin": "api", "auth": "none" },
            { "id": "orders", "methods": ["POST"], "path": "/orders", "origin": "api",
              "auth": { "providers": ["keys"] },
              "request": { "max_body_bytes": 1024, "body_schema": { "type": "object" } } },
            { "id": "upload", "methods": ["POST"], "path": "/upload", "origin": "api",
              "auth": { "providers": ["keys"] } }
        ]
    })
    .to_string()
}

/// A gateway, killed when dropped.
struct Gateway(std::process::Child, String);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(dir: &Path, name: &str, policy: &str) -> Gateway {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, policy).expect("policy file");
    let mut child = Command::new(locate_native_binary().expect("portcullis"))
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .env("KEY_OLD", OLD)
        .env("KEY_NEW", NEW)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portcullis serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let addr = loop {
        let line = lines.next().expect("a readiness line").expect("stderr");
        if let Some(url) = listening_url(&line) {
            break url.trim_start_matches("http://").to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Gateway(child, addr)
}

async fn send(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let request = WireRequest {
        head: head.into_bytes(),
        body: body.as_bytes().to_vec(),
        framing: BodyFraming::Plain,
        is_head: false,
        half_close: false,
    };
    match client::send(addr, &request)
        .await
        .expect("an answer")
        .exchange
    {
        Exchange::Response(r) => r.status,
        Exchange::Closed(why) => panic!("closed: {why}"),
    }
}

/// The three kinds of request, each through `gw`, tagged with `id` so the origin keeps them.
async fn forward_three(
    gw: &Gateway,
    origin: &RecordingOrigin,
    tag: &str,
) -> Vec<(Record, &'static str)> {
    let id = |kind: &str| format!("{tag}-{kind}");
    let (a, b, c) = (id("get"), id("checked"), id("streamed"));
    let json = [
        ("x-api-key", ALICE_KEY),
        ("content-type", "application/json"),
    ];
    assert_eq!(
        send(&gw.1, "GET", "/pub/a?x=1", &[("x-conformance-id", &a)], "").await,
        200
    );
    let checked = [json[0], json[1], ("x-conformance-id", b.as_str())];
    assert_eq!(
        send(&gw.1, "POST", "/orders", &checked, "{\"sku\":\"A-1\"}").await,
        200
    );
    let streamed = [json[0], ("x-conformance-id", c.as_str())];
    assert_eq!(
        send(&gw.1, "POST", "/upload", &streamed, "raw bytes").await,
        200
    );
    let one = |id: &str| {
        let mut records = origin.take(id);
        assert_eq!(records.len(), 1, "{id}");
        records.remove(0)
    };
    vec![
        (one(&a), "unsigned-payload"),
        (one(&b), "body"),
        (one(&c), "unsigned-payload"),
    ]
}

/// One verification for the snippets: what the origin received, the keys, the clock, and the
/// answer every snippet must give (`null`: refuse).
fn case(name: &str, record: &Record, keys: &[&str], now: u64, want: Option<&str>) -> Value {
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    json!({
        "name": name,
        "headers": headers,
        "method": record.method,
        "path_and_query": record.target,
        "body": base64::engine::general_purpose::STANDARD.encode(&record.body),
        "keys": keys,
        "now": now,
        "want": want,
    })
}

fn signed_at(record: &Record) -> u64 {
    let value = record
        .headers
        .iter()
        .find(|(n, _)| n == "x-portcullis-signature")
        .map(|(_, v)| v.clone())
        .expect("a signature");
    value
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=")
}

fn with_header(record: &Record, name: &str, value: Option<&str>) -> Record {
    let mut r = record.clone();
    r.headers.retain(|(n, _)| n != name);
    if let Some(v) = value {
        r.headers.push((name.to_owned(), v.to_owned()));
    }
    r
}

/// Every case: the gateway's requests before (signed with OLD) and after (with NEW) the
/// rotation, tampered copies, and the document's own vectors.
fn cases(before: &[(Record, &'static str)], after: &[(Record, &'static str)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, (record, covered)) in after.iter().enumerate() {
        let now = signed_at(record);
        out.push(case(
            &format!("after-{i}"),
            record,
            &[NEW, OLD],
            now,
            Some(covered),
        ));
        out.push(case(
            &format!("after-{i}-new-key-only"),
            record,
            &[NEW],
            now,
            Some(covered),
        ));
        out.push(case(
            &format!("after-{i}-old-key-only"),
            record,
            &[OLD],
            now,
            None,
        ));
        out.push(case(
            &format!("after-{i}-too-old"),
            record,
            &[NEW],
            now + 301,
            None,
        ));
        out.push(case(
            &format!("after-{i}-from-the-future"),
            record,
            &[NEW],
            now - 301,
            None,
        ));
        let mut path = record.clone();
        path.target.push_str("&admin=1");
        out.push(case(
            &format!("after-{i}-path-changed"),
            &path,
            &[NEW],
            now,
            None,
        ));
        let method = Record {
            method: "DELETE".into(),
            ..record.clone()
        };
        out.push(case(
            &format!("after-{i}-method-changed"),
            &method,
            &[NEW],
            now,
            None,
        ));
        let consumer = with_header(record, "x-portcullis-consumer", Some("admin"));
        out.push(case(
            &format!("after-{i}-consumer-changed"),
            &consumer,
            &[NEW],
            now,
            None,
        ));
        let id = with_header(
            record,
            "x-portcullis-request-id",
            Some("00000000000000000000000000000000"),
        );
        out.push(case(
            &format!("after-{i}-request-id-changed"),
            &id,
            &[NEW],
            now,
            None,
        ));
        let direct = with_header(record, "x-portcullis-signature", None);
        out.push(case(
            &format!("after-{i}-direct"),
            &direct,
            &[NEW],
            now,
            None,
        ));
        let garbage = with_header(record, "x-portcullis-signature", Some("t=x,v1=zz"));
        out.push(case(
            &format!("after-{i}-garbage"),
            &garbage,
            &[NEW],
            now,
            None,
        ));
    }
    // A checked body cannot be swapped; a streamed one is not covered, and says so.
    let (checked, _) = &after[1];
    let swapped = Record {
        body: b"{\"sku\":\"B-2\"}".to_vec(),
        ..checked.clone()
    };
    out.push(case(
        "checked-body-swapped",
        &swapped,
        &[NEW],
        signed_at(checked),
        None,
    ));
    let (streamed, _) = &after[2];
    let swapped = Record {
        body: b"other bytes".to_vec(),
        ..streamed.clone()
    };
    let now = signed_at(streamed);
    out.push(case(
        "streamed-body-swapped",
        &swapped,
        &[NEW],
        now,
        Some("unsigned-payload"),
    ));
    for (i, (record, covered)) in before.iter().enumerate() {
        let now = signed_at(record);
        out.push(case(
            &format!("before-{i}-during-rotation"),
            record,
            &[NEW, OLD],
            now,
            Some(covered),
        ));
        out.push(case(
            &format!("before-{i}-after-rotation"),
            record,
            &[NEW],
            now,
            None,
        ));
    }
    let doc: Vec<Value> = serde_json::from_str(&snippet(&doc(), "json")).expect("vectors");
    for (i, v) in doc.iter().enumerate() {
        let mut headers = vec![
            (
                "x-portcullis-signature".to_owned(),
                v["header"].as_str().unwrap().to_owned(),
            ),
            (
                "x-portcullis-request-id".to_owned(),
                v["request_id"].as_str().unwrap().to_owned(),
            ),
        ];
        if v["consumer"] != "-" {
            headers.push((
                "x-portcullis-consumer".into(),
                v["consumer"].as_str().unwrap().into(),
            ));
        }
        let record = Record {
            method: v["method"].as_str().unwrap().into(),
            target: v["path_and_query"].as_str().unwrap().into(),
            headers,
            body: v["body"].as_str().unwrap_or("").as_bytes().to_vec(),
        };
        let covered = if v["body"].is_null() {
            "unsigned-payload"
        } else {
            "body"
        };
        let secret = v["secret"].as_str().unwrap();
        out.push(case(
            &format!("doc-vector-{i}"),
            &record,
            &[secret],
            v["t"].as_u64().unwrap(),
            Some(covered),
        ));
    }
    out
}

const PYTHON_DRIVER: &str = r#"
import base64, json, sys
for line in sys.stdin:
    c = json.loads(line)
    got = verify_portcullis(c["headers"], c["method"], c["path_and_query"],
                            base64.b64decode(c["body"]), c["keys"], c["now"])
    print(json.dumps({"name": c["name"], "got": got}))
"#;

const NODE_DRIVER: &str = r#"
const lines = require("node:fs").readFileSync(0, "utf8").split("\n").filter(Boolean);
for (const line of lines) {
  const c = JSON.parse(line);
  const got = verifyPortcullis(c.headers, c.method, c.path_and_query,
                               Buffer.from(c.body, "base64"), c.keys, c.now);
  console.log(JSON.stringify({ name: c.name, got }));
}
"#;

const GO_DRIVER: &str = r#"
type goCase struct {
	Name         string            `json:"name"`
	Headers      map[string]string `json:"headers"`
	Method       string            `json:"method"`
	PathAndQuery string            `json:"path_and_query"`
	Body         []byte            `json:"body"`
	Keys         []string          `json:"keys"`
	Now          int64             `json:"now"`
}

func main() {
	dec := json.NewDecoder(os.Stdin)
	for {
		var c goCase
		if err := dec.Decode(&c); err != nil {
			return
		}
		h := http.Header{}
		for k, v := range c.Headers {
			h.Set(k, v)
		}
		got := VerifyPortcullis(h.Get, c.Method, c.PathAndQuery, c.Body, c.Keys, c.Now, 300)
		var out interface{} = got
		if got == "" {
			out = nil
		}
		line, _ := json.Marshal(map[string]interface{}{"name": c.Name, "got": out})
		fmt.Println(string(line))
	}
}
"#;

/// Run `program` with every case on stdin, one JSON line each; check each answer.
fn run_snippet(lang: &str, mut program: Command, cases: &[Value]) {
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the {lang} snippet: {e}"));
    let mut input = String::new();
    for c in cases {
        input.push_str(&c.to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("the snippet's output");
    assert!(
        out.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON answer"))
        .collect();
    assert_eq!(answers.len(), cases.len(), "{lang}: one answer per case");
    let wrong: Vec<String> = cases
        .iter()
        .zip(&answers)
        .filter(|(c, a)| c["want"] != a["got"])
        .map(|(c, a)| format!("{}: wanted {}, got {}", c["name"], c["want"], a["got"]))
        .collect();
    assert!(wrong.is_empty(), "{lang} snippet:\n{}", wrong.join("\n"));
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-origin-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3, node and go; scripts/test runs it"]
async fn the_documented_snippets_verify_what_the_gateway_forwards() {
    let dir = scratch();
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let before = {
        let gw = gateway(&dir, "before", &policy(&origin.url(), "KEY_OLD", None));
        forward_three(&gw, &origin, "before").await
    };
    let after = {
        let gw = gateway(
            &dir,
            "after",
            &policy(&origin.url(), "KEY_NEW", Some("KEY_OLD")),
        );
        forward_three(&gw, &origin, "after").await
    };
    let cases = cases(&before, &after);
    assert!(cases.len() > 40, "{} cases", cases.len());
    let doc = doc();

    let python = dir.join("verify.py");
    std::fs::write(
        &python,
        format!("{}\n{PYTHON_DRIVER}", snippet(&doc, "python")),
    )
    .unwrap();
    let mut command = Command::new("python3");
    command.arg(&python);
    run_snippet("Python", command, &cases);

    let node = dir.join("verify.js");
    std::fs::write(&node, format!("{}\n{NODE_DRIVER}", snippet(&doc, "js"))).unwrap();
    let mut command = Command::new("node");
    command.arg(&node);
    run_snippet("Node", command, &cases);

    let go = dir.join("verify.go");
    let go_source = snippet(&doc, "go").replacen(
        "import (",
        "import (\n\t\"encoding/json\"\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"",
        1,
    );
    std::fs::write(&go, format!("package main\n\n{go_source}\n{GO_DRIVER}")).unwrap();
    let mut command = Command::new("go");
    command
        .arg("run")
        .arg(&go)
        .env("GOCACHE", dir.join("go-cache"))
        .env("GO111MODULE", "off");
    run_snippet("Go", command, &cases);
}

const PYTHON_ORIGIN: &str = r#"
import http.server, sys, time

KEYS = [sys.argv[1]]

class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        covered = verify_portcullis(headers, self.command, self.path, body, KEYS, int(time.time()))
        self.send_response(200 if covered else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3; scripts/test runs it"]
async fn an_origin_that_checks_refuses_a_direct_request_and_accepts_the_gateways() {
    let dir = scratch().join("origin");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("origin.py");
    std::fs::write(
        &script,
        format!("{}\n{PYTHON_ORIGIN}", snippet(&doc(), "python")),
    )
    .unwrap();
    let mut origin = Command::new("python3")
        .arg(&script)
        .arg(NEW)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(origin.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let origin_addr = format!("127.0.0.1:{}", port.trim());
    let gw = gateway(
        &dir,
        "checked",
        &policy(&format!("http://{origin_addr}"), "KEY_NEW", None),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&origin_addr).is_err() {
        assert!(Instant::now() < deadline, "the origin did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        send(&origin_addr, "GET", "/base/pub/a", &[], "").await,
        401,
        "direct"
    );
    let forged = [
        ("x-portcullis-signature", "t=1767225600,v1=00"),
        ("x-portcullis-request-id", "x"),
    ];
    assert_eq!(
        send(&origin_addr, "GET", "/base/pub/a", &forged, "").await,
        401,
        "forged"
    );
    assert_eq!(
        send(&gw.1, "GET", "/pub/a?x=1", &[], "").await,
        200,
        "through the gateway"
    );
    let _ = origin.kill();
    let _ = origin.wait();
}
