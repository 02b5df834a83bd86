//! Quotas shared by several `portcullis serve` processes through a real Redis: exact counts with
//! 50 concurrent clients spread over three gateways whose clocks disagree by ±5 s, on one node,
//! a three-node Cluster and a Sentinel-managed master; the Redis server killed and restarted
//! under the gateways (fail closed, `allow`, recovery without a restart).
//!
//! Needs `redis-server` and `redis-cli` on `PATH` (Debian's `redis-server` package, which
//! `scripts/test` installs when missing), so the tests are `#[ignore]`d for plain `cargo test`
//! and run by `scripts/test` with `--ignored`. Everything listens on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_conformance::client::{self, BodyFraming, Exchange, WireRequest};
use portcullis_conformance::origin::RecordingOrigin;
use portcullis_conformance::target::{listening_url, locate_native_binary};

/// Each tenant's limit in the exactness runs, and how many requests beyond it each sends.
const LIMIT: usize = 20;
const EXTRA: usize = 15;
/// Concurrent clients in the exactness runs.
const CLIENTS: usize = 50;

fn policy(origin: &str) -> String {
    serde_json::json!({
        "version": 1,
        "origins": { "api": { "url": origin, "timeout_ms": 5000 } },
        "quotas": {
            "per-tenant": { "limit": LIMIT, "window_s": 3600, "by": "header:x-tenant" },
            "wide": { "limit": 5, "window_s": 3600, "by": "header:x-tenant" },
            "narrow": { "limit": 2, "window_s": 3600, "by": "header:x-tenant" },
            "route-2": { "limit": 2, "window_s": 3600, "by": "route" },
            "lenient": { "limit": 1000, "window_s": 3600, "by": "route", "on_store_error": "allow" }
        },
        "routes": [
            { "id": "exact", "methods": ["GET"], "path": "/exact", "origin": "api", "auth": "none", "quota": "per-tenant" },
            { "id": "pair", "methods": ["GET"], "path": "/pair", "origin": "api", "auth": "none", "quota": ["wide", "narrow"] },
            { "id": "mixed", "methods": ["GET"], "path": "/mixed", "origin": "api", "auth": "none", "quota": ["wide", "route-2"] },
            { "id": "wide-only", "methods": ["GET"], "path": "/wide", "origin": "api", "auth": "none", "quota": "wide" },
            { "id": "lenient", "methods": ["GET"], "path": "/lenient", "origin": "api", "auth": "none", "quota": "lenient" }
        ]
    })
    .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-redis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A child process killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `redis-server` on 127.0.0.1, without persistence, in a directory of its own.
struct Redis {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    process: Option<Proc>,
}

impl Redis {
    fn start(name: &str, extra: &[&str]) -> Redis {
        let mut redis = Redis {
            port: free_port(),
            dir: scratch(name),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: None,
        };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server; scripts/test installs it)");
        self.process = Some(Proc(child));
        wait_for(&format!("redis-server on port {}", self.port), || {
            redis_cli(self.port, &["PING"]).is_ok_and(|out| out.trim() == "PONG")
        });
    }

    fn kill(&mut self) {
        self.process = None;
        wait_for("redis-server to stop", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `portcullis serve` (the suite's fault-injection build, for the clock offset).
struct Gateway {
    addr: String,
    admin: Option<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    /// Every stderr line after the one that said where it listens (operator events).
    stderr: Arc<Mutex<Vec<String>>>,
    _process: Proc,
}

fn gateway(policy_file: &Path, store: &str, offset_ms: i64, extra: &[&str]) -> Gateway {
    start_gateway(policy_file, store, offset_ms, extra, &[])
}

fn start_gateway(
    policy_file: &Path,
    store: &str,
    offset_ms: i64,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Gateway {
    let binary = locate_native_binary().expect("the portcullis binary");
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(policy_file)
        .args(["--listen", "127.0.0.1:0", "--counter-store", store])
        .args(extra)
        .env("PORTCULLIS_FAULT_CLOCK_OFFSET_MS", offset_ms.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start portcullis serve");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&stdout);
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let process = Proc(child);
    let (mut addr, mut admin, mut seen) = (None, None, Vec::new());
    while addr.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no readiness line; stderr:\n{}", seen.join("\n")));
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "admin_listening" {
            admin = event["address"]
                .as_str()
                .map(|a| a.trim_start_matches("http://").to_owned());
        }
        addr = listening_url(&line).map(|u| u.trim_start_matches("http://").to_owned());
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("\"counter_store\"") && !l.contains("password")),
        "the store is announced: {seen:?}"
    );
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::clone(&stderr);
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            events.lock().unwrap().push(line);
        }
    });
    Gateway {
        addr: addr.unwrap(),
        admin,
        stdout,
        stderr,
        _process: process,
    }
}

/// Status, `Content-Type` and body of `GET path` with `x-tenant: tenant` (also the origin's
/// correlation id, so the origin counts per tenant).
async fn get(addr: &str, path: &str, tenant: &str) -> (u16, String, String) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nx-tenant: {tenant}\r\nx-conformance-id: {tenant}\r\nConnection: close\r\n\r\n"
    );
    let request = WireRequest {
        head: head.into_bytes(),
        body: Vec::new(),
        framing: BodyFraming::Plain,
        is_head: false,
        half_close: false,
    };
    match client::send(addr, &request)
        .await
        .expect("an answer")
        .exchange
    {
        Exchange::Response(r) => (
            r.status,
            r.header("content-type").unwrap_or_default(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ),
        Exchange::Closed(why) => panic!("connection closed: {why}"),
    }
}

/// `LIMIT + EXTRA` requests per tenant from `CLIENTS` concurrent clients, round-robin over the
/// gateways; every tenant must see exactly `LIMIT` admitted (and forwarded) and the rest 429.
async fn exactly_the_limit(gateways: &[Gateway], origin: &RecordingOrigin, round: &str) {
    let tenants: Vec<String> = (0..4).map(|i| format!("{round}-tenant-{i}")).collect();
    let mut jobs = Vec::new();
    for i in 0..LIMIT + EXTRA {
        for tenant in &tenants {
            jobs.push((
                gateways[jobs.len() % gateways.len()].addr.clone(),
                tenant.clone(),
                i,
            ));
        }
    }
    let jobs = Arc::new(Mutex::new(jobs));
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (jobs, results) = (Arc::clone(&jobs), Arc::clone(&results));
        clients.push(tokio::spawn(async move {
            loop {
                let Some((addr, tenant, _)) = jobs.lock().unwrap().pop() else {
                    break;
                };
                let (status, _, body) = get(&addr, "/exact", &tenant).await;
                results.lock().unwrap().push((tenant, status, body));
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    let results = results.lock().unwrap();
    for tenant in &tenants {
        let statuses: Vec<u16> = results
            .iter()
            .filter(|r| &r.0 == tenant)
            .map(|r| r.1)
            .collect();
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        let odd: Vec<_> = results
            .iter()
            .filter(|r| &r.0 == tenant && r.1 != 200 && r.1 != 429)
            .collect();
        assert!(odd.is_empty(), "{tenant}: unexpected answers {odd:?}");
        assert_eq!((admitted, refused), (LIMIT, EXTRA), "{tenant} in {round}");
        assert_eq!(origin.count(tenant), LIMIT, "{tenant}: forwarded");
    }
}

/// A route's quotas are spent all or none (one slot: one script call; across Cluster slots: in
/// order, given back when a later one refuses): requests that `narrow` or `route-2` refused
/// leave `wide` (5) untouched, so 3 are left of it afterwards.
async fn refused_requests_cost_nothing(gateway: &Gateway, round: &str) {
    for (path, tenant) in [
        ("/pair", format!("{round}-pair")),
        ("/mixed", format!("{round}-mixed")),
    ] {
        let statuses: Vec<u16> = in_order(&gateway.addr, path, &tenant, 6).await;
        assert_eq!(statuses, [200, 200, 429, 429, 429, 429], "{path}");
        let after: Vec<u16> = in_order(&gateway.addr, "/wide", &tenant, 4).await;
        assert_eq!(after, [200, 200, 200, 429], "{path}: what is left of wide");
    }
}

async fn in_order(addr: &str, path: &str, tenant: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(get(addr, path, tenant).await.0);
    }
    statuses
}

async fn three_gateways(store: &str, prefix: &str) -> (RecordingOrigin, Vec<Gateway>, PathBuf) {
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let dir = scratch(prefix);
    let file = dir.join("policy.json");
    std::fs::write(&file, policy(&origin.url())).expect("policy file");
    let gateways = [-5_000, 0, 5_000]
        .into_iter()
        // A generous timeout: three debug-build gateways and 50 clients share two cores here,
        // and this test is about exact counts, not latency (bench/run measures that).
        .map(|offset| {
            let options = [
                "--counter-store-prefix",
                prefix,
                "--counter-store-timeout-ms",
                "1000",
            ];
            gateway(&file, store, offset, &options)
        })
        .collect();
    (origin, gateways, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn one_node_counts_exactly_across_three_gateways_with_skewed_clocks() {
    let redis = Redis::start("node", &[]);
    let (origin, gateways, _dir) = three_gateways(&redis.url(), "node:").await;
    for round in ["r1", "r2", "r3"] {
        exactly_the_limit(&gateways, &origin, round).await;
    }
    refused_requests_cost_nothing(&gateways[1], "node").await;
    // The clocks really disagreed: access lines written together are ~10 s apart.
    let last_time = |g: &Gateway| {
        let line = g
            .stdout
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an access line");
        let time: serde_json::Value = serde_json::from_str(&line).expect("JSON access line");
        let hms = time["time"].as_str().expect("time")[11..19].to_owned();
        let part = |i: usize| hms[i..i + 2].parse::<i64>().unwrap();
        part(0) * 3600 + part(3) * 60 + part(6)
    };
    exactly_the_limit(&gateways, &origin, "r4").await;
    let skew = (last_time(&gateways[2]) - last_time(&gateways[0])).rem_euclid(86_400);
    assert!((8..=12).contains(&skew), "clock skew {skew} s");
    // The keys are where the docs say, with the TTL GCRA needs (at most the window).
    let keys = redis_cli(
        redis.port,
        &["--scan", "--pattern", "node:{*}:per-tenant|*"],
    )
    .unwrap();
    let key = keys.lines().next().expect("a per-tenant key");
    let ttl: i64 = redis_cli(redis.port, &["PTTL", key])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "{key}: PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn a_lost_store_fails_closed_or_open_as_chosen_and_recovers_without_a_restart() {
    let mut redis = Redis::start("failover", &[]);
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let dir = scratch("failover-policy");
    let file = dir.join("policy.json");
    std::fs::write(&file, policy(&origin.url())).expect("policy file");
    let closed = gateway(&file, &redis.url(), 0, &["--admin", "127.0.0.1:0"]);
    let open = gateway(
        &file,
        &redis.url(),
        0,
        &["--counter-store-on-error", "allow"],
    );
    let admin = closed.admin.clone().expect("admin address");
    assert_eq!(get(&closed.addr, "/exact", "before").await.0, 200);
    assert_eq!(admin_status(&admin, "/readyz").await, 200);

    redis.kill();
    let forwarded = origin.count("down");
    for _ in 0..5 {
        let (status, content_type, body) = get(&closed.addr, "/exact", "down").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(content_type, "application/problem+json");
        assert!(body.contains("store"), "{body}");
    }
    assert_eq!(
        origin.count("down"),
        forwarded,
        "fail closed forwards nothing"
    );
    // A quota that says `allow` passes on the fail-closed gateway; the `allow` gateway passes all.
    assert_eq!(get(&closed.addr, "/lenient", "down-lenient").await.0, 200);
    for _ in 0..5 {
        assert_eq!(get(&open.addr, "/exact", "down-open").await.0, 200);
    }
    assert_eq!(origin.count("down-open"), 5);
    assert_eq!(admin_status(&admin, "/readyz").await, 503);
    let lines = closed.stdout.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"status\":503") && l.contains("\"store_error\":")),
        "the access line names the store failure: {lines:?}"
    );
    let metrics = admin_body(&admin, "/metrics").await;
    assert!(
        metrics.contains("portcullis_quota_store_errors_total{error=")
            && metrics.contains("action=\"denied\""),
        "{metrics}"
    );

    redis.restart();
    // Recovered: ten requests in a row counted (each serving thread reconnects on its own, so
    // one success alone says little), each on a tenant of its own.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut in_a_row, mut probe) = (0, 0);
    while in_a_row < 10 {
        assert!(Instant::now() < deadline, "the gateway did not reconnect");
        probe += 1;
        match get(&closed.addr, "/exact", &format!("probe-{probe}"))
            .await
            .0
        {
            200 => in_a_row += 1,
            _ => {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Counting again, exactly, on the restarted (empty) server.
    let statuses = in_order(&closed.addr, "/exact", "after", LIMIT + 1).await;
    assert_eq!(statuses[..LIMIT], [200; LIMIT], "{statuses:?}");
    assert_eq!(statuses[LIMIT], 429);
    assert_eq!(admin_status(&admin, "/readyz").await, 200);
}

async fn admin_status(admin: &str, path: &str) -> u16 {
    admin_get(admin, path).await.0
}

async fn admin_body(admin: &str, path: &str) -> String {
    admin_get(admin, path).await.1
}

async fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let (status, _, body) = get(admin, path, "admin").await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn a_three_node_cluster_counts_exactly() {
    let nodes: Vec<Redis> = (0..3)
        .map(|i| {
            Redis::start(
                &format!("cluster-{i}"),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let created = redis_cli(nodes[0].port, &create).unwrap();
    assert!(created.contains("All 16384 slots covered"), "{created}");
    wait_for("cluster_state:ok on every node", || {
        nodes.iter().all(|n| {
            redis_cli(n.port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
        })
    });
    let url = format!("redis+cluster://{}", addrs.join(","));
    let (origin, gateways, _dir) = three_gateways(&url, "cluster:").await;
    for round in ["c1", "c2", "c3"] {
        exactly_the_limit(&gateways, &origin, round).await;
    }
    refused_requests_cost_nothing(&gateways[0], "cluster").await;
    // The tenants' keys are spread over the nodes, not all on one.
    let holding = nodes
        .iter()
        .filter(|n| redis_cli(n.port, &["DBSIZE"]).is_ok_and(|s| s.trim() != "0"))
        .count();
    assert!(holding >= 2, "keys on {holding} node(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn the_master_sentinel_names_counts_exactly_and_is_followed_through_a_failover() {
    let mut master = Redis::start("sentinel-master", &[]);
    let port = master.port.to_string();
    let replica = Redis::start("sentinel-replica", &["--replicaof", "127.0.0.1", &port]);
    let sentinel_port = free_port();
    let dir = scratch("sentinel");
    let conf = dir.join("sentinel.conf");
    let mut file = std::fs::File::create(&conf).expect("sentinel.conf");
    writeln!(
        file,
        "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor orders 127.0.0.1 {} 1\nsentinel down-after-milliseconds orders 1000\nsentinel failover-timeout orders 5000",
        master.port
    )
    .unwrap();
    drop(file);
    let _sentinel = Proc(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel"),
    );
    wait_for("the sentinel to know the master", || {
        redis_cli(
            sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", "orders"],
        )
        .is_ok_and(|out| out.contains(&master.port.to_string()))
    });
    let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/orders");
    let (origin, gateways, _dir) = three_gateways(&url, "sentinel:").await;
    // The gateways find the master in the background; wait until one admits.
    let deadline = Instant::now() + Duration::from_secs(15);
    for g in &gateways {
        while get_raw_status(&g.addr).await != 200 {
            assert!(Instant::now() < deadline, "no gateway found the master");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for round in ["s1", "s2"] {
        exactly_the_limit(&gateways, &origin, round).await;
    }
    let keys = redis_cli(master.port, &["--scan", "--pattern", "sentinel:*"]).unwrap();
    assert!(
        keys.lines().count() >= 8,
        "the master holds the keys: {keys}"
    );

    // The master dies; Sentinel promotes the replica; the gateways find it without a restart.
    master.kill();
    wait_for("Sentinel to promote the replica", || {
        redis_cli(
            sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", "orders"],
        )
        .is_ok_and(|out| out.contains(&replica.port.to_string()))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    for g in &gateways {
        while get(&g.addr, "/wide", "after-failover").await.0 != 200 {
            assert!(
                Instant::now() < deadline,
                "a gateway did not follow the failover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let promoted = redis_cli(replica.port, &["ROLE"]).unwrap();
    assert!(promoted.starts_with("master"), "{promoted}");
}

/// A request that counts on the store (`/wide`, a tenant of its own per gateway): 200 once the
/// gateway reaches the master, 503 before.
async fn get_raw_status(addr: &str) -> u16 {
    get(addr, "/wide", &format!("probe-{addr}")).await.0
}

/// A CA and a certificate for `localhost` / 127.0.0.1 signed by it, as PEM files in `dir`:
/// `(ca.pem, server.pem, server.key)`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let server = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    let files = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, server.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn rediss_verifies_the_server_and_counts() {
    let dir = scratch("tls-certs");
    let (ca, cert, key) = certificates(&dir);
    let port = free_port();
    let (cert, key, ca_arg) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    let tls = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_arg,
        "--tls-auth-clients",
        "no",
    ];
    let server = Proc(
        Command::new("redis-server")
            .args(tls)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server with TLS"),
    );
    wait_for("redis-server with TLS", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let file = dir.join("policy.json");
    std::fs::write(&file, policy(&origin.url())).expect("policy file");
    let url = format!("rediss://localhost:{port}/0");
    // Trusting the test CA (rustls-native-certs reads SSL_CERT_FILE): counted exactly.
    let trusted = gateway_with(&file, &url, &[("SSL_CERT_FILE", &ca_arg)]);
    let statuses = in_order(&trusted.addr, "/pair", "tls", 3).await;
    assert_eq!(statuses, [200, 200, 429]);
    // Without the CA the server is not trusted: no connection, so fail closed.
    let untrusted = gateway_with(&file, &url, &[("SSL_CERT_FILE", "/nonexistent")]);
    let (status, _, body) = get(&untrusted.addr, "/pair", "tls-untrusted").await;
    assert_eq!(status, 503, "{body}");
    drop(server);
}

/// [`gateway`] with extra environment variables.
fn gateway_with(policy_file: &Path, store: &str, env: &[(&str, &str)]) -> Gateway {
    start_gateway(policy_file, store, 0, &[], env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn a_quota_key_holding_garbage_fails_closed() {
    let redis = Redis::start("garbage", &[]);
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let dir = scratch("garbage-policy");
    let file = dir.join("policy.json");
    std::fs::write(&file, policy(&origin.url())).expect("policy file");
    let g = gateway(&file, &redis.url(), 0, &[]);
    assert_eq!(get(&g.addr, "/exact", "victim").await.0, 200);
    let keys = redis_cli(
        redis.port,
        &["--scan", "--pattern", "portcullis:{*}:per-tenant|*"],
    )
    .unwrap();
    let key = keys.lines().next().expect("the victim's key").to_owned();
    for garbage in ["not-a-time", "-5", "1.5", ""] {
        redis_cli(redis.port, &["SET", &key, garbage]).unwrap();
        let before = origin.count("victim");
        let (status, _, body) = get(&g.addr, "/exact", "victim").await;
        assert_eq!(status, 503, "{garbage:?}: {body}");
        assert_eq!(origin.count("victim"), before, "nothing forwarded");
    }
    let lines = g.stdout.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"store_error\":\"corrupt\"")),
        "{lines:?}"
    );
    // A key of another type is refused by Redis itself (WRONGTYPE): also closed.
    redis_cli(redis.port, &["DEL", &key]).unwrap();
    redis_cli(redis.port, &["LPUSH", &key, "x"]).unwrap();
    assert_eq!(get(&g.addr, "/exact", "victim").await.0, 503);
}

/// `GET path` from client address `client` (through the trusted loopback peer) with API key
/// `key`: the status.
async fn get_as(addr: &str, path: &str, client: &str, key: &str) -> u16 {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nx-forwarded-for: {client}\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n"
    );
    let request = WireRequest {
        head: head.into_bytes(),
        body: Vec::new(),
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
        Exchange::Closed(why) => panic!("connection closed: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; scripts/test runs it"]
async fn a_lockout_counts_and_blocks_across_gateways_and_a_check_writes_nothing() {
    use sha2::Digest;
    const GOOD: &str = "lockout-key-TEST-ONLY-0001";
    let redis = Redis::start("lockout", &[]);
    let origin = RecordingOrigin::start("127.0.0.1:0").await.expect("origin");
    let dir = scratch("lockout-policy");
    let file = dir.join("policy.json");
    let digest = hex::encode(sha2::Sha256::digest(GOOD.as_bytes()));
    let policy = serde_json::json!({
        "version": 1,
        "client_ip": { "trusted_proxies": ["127.0.0.1/32"] },
        "lockout": { "failures": 3, "window_s": 3600, "block_s": 2 },
        "origins": { "api": { "url": origin.url(), "timeout_ms": 5000 } },
        "auth": { "keys": { "type": "api_key", "keys": [ { "sha256": digest, "consumer": "svc" } ] } },
        "routes": [ { "id": "login", "methods": ["GET"], "path": "/login", "origin": "api",
                      "auth": { "providers": ["keys"] } } ]
    });
    std::fs::write(&file, policy.to_string()).expect("policy file");
    let (a, b) = (
        gateway(&file, &redis.url(), 0, &[]),
        gateway(&file, &redis.url(), 0, &[]),
    );
    let attacker = "203.0.113.9";
    for g in [&a, &b, &a] {
        assert_eq!(get_as(&g.addr, "/login", attacker, "wrong").await, 401);
    }
    // Blocked on both gateways: the count and the block live in Redis.
    assert_eq!(get_as(&b.addr, "/login", attacker, GOOD).await, 429);
    assert_eq!(get_as(&a.addr, "/login", attacker, GOOD).await, 429);
    assert_eq!(get_as(&b.addr, "/login", "203.0.113.10", GOOD).await, 200);
    for _ in 0..20 {
        assert_eq!(get_as(&a.addr, "/login", "198.51.100.1", GOOD).await, 200);
    }
    let blocks = redis_cli(redis.port, &["--scan", "--pattern", "*:lockout:*:block|*"]).unwrap();
    assert_eq!(
        blocks.lines().count(),
        1,
        "only the blocked address has a block key; checks wrote nothing: {blocks}"
    );
    let ttl: i64 = redis_cli(redis.port, &["PTTL", blocks.trim()])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 2_000, "PTTL {ttl}");
    let started: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|g| g.stderr.lock().unwrap().clone())
        .filter(|l| l.contains("\"lockout_started\""))
        .collect();
    assert_eq!(started.len(), 1, "one block, one event: {started:?}");
    assert!(started[0].contains(attacker), "{}", started[0]);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        get_as(&b.addr, "/login", attacker, GOOD).await,
        200,
        "the block ended"
    );
}
