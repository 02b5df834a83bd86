//! The side-by-side benchmark's two Rust halves; `bench/run` does the rest (starting contenders,
//! driving `wrk`, sampling memory).
//!
//! - `portcullis-bench fixtures RUN_DIR ORIGIN_URL`: the Portcullis policies (token cache on and
//!   off), the keys as PEM and the HMAC secret for HAProxy, the Hono worker's settings
//!   (`hono-config.json`, taken from the policy), token lists and the JSON body.
//! - `portcullis-bench report RUN_DIR OUT_MD OUT_SVG`: `docs/benchmarks.md` and its chart from the
//!   run's results, criterion's estimates and the artefact sizes.
//!
//! Tokens are signed with the conformance suite's TEST ONLY keys (`tests/keys/`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

mod profile;
use portcullis_conformance::jose::{self, Key};
use serde_json::{json, Value};

/// Unique tokens per algorithm for the cache-miss cases (the Portcullis instance for those runs
/// has its cache off, so reuse within the list does not turn into hits).
const UNIQUE_TOKENS: usize = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["fixtures", run, origin] => fixtures(Path::new(run), origin),
        ["report", run, md, svg] => report(Path::new(run), Path::new(md), Path::new(svg)),
        _ => bail!(
            "usage: portcullis-bench fixtures RUN_DIR ORIGIN_URL | report RUN_DIR OUT_MD OUT_SVG"
        ),
    }
}

// -------------------------------------------------------------------------------------------
// Fixtures

fn fixtures(run: &Path, origin: &str) -> anyhow::Result<()> {
    let keys = jose::load_keys(&portcullis_conformance::suite_dir().join("keys"))?;
    let key = |name: &str| keys.get(name).ok_or_else(|| anyhow!("no key {name}"));
    let (rsa, ec, hs) = (key("rsa-1")?, key("ec-p256-1")?, key("hs-1")?);
    std::fs::create_dir_all(run)?;
    let write = |name: &str, text: &str| {
        std::fs::write(run.join(name), text).with_context(|| format!("writing {name}"))
    };
    let cached = policy(origin, rsa, ec, true)?;
    write("policy.json", &cached.to_string())?;
    write("hono-config.json", &hono_config(&cached)?.to_string())?;
    write(
        "policy-nocache.json",
        &policy(origin, rsa, ec, false)?.to_string(),
    )?;
    write("rsa.pem", &rsa.public_pem()?)?;
    write("ec.pem", &ec.public_pem()?)?;
    write(
        "hs.secret",
        hs.hmac_secret()
            .ok_or_else(|| anyhow!("hs-1 is not HMAC"))?,
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for (name, key) in [("hs256", hs), ("rs256", rsa), ("es256", ec)] {
        write(&format!("{name}-one.txt"), &token(key, "user-0", now)?)?;
        let mut many = String::new();
        for i in 0..UNIQUE_TOKENS {
            many.push_str(&token(key, &format!("user-{i}"), now)?);
            many.push('\n');
        }
        write(&format!("{name}-many.txt"), &many)?;
    }
    write("over-quota.txt", &token(hs, "over-quota", now)?)?;
    let note = "x".repeat(900);
    write(
        "order.json",
        &json!({"sku": "ABC-123", "quantity": 2, "note": note}).to_string(),
    )?;
    Ok(())
}

/// The benchmark policy: `/public/*` open; `/jwt/*` for RS256/ES256 (inline JWKS) or HS256
/// tokens of issuer `https://idp.test` and audience `api`; `POST /orders` with the same tokens
/// and a JSON Schema; `GET /limited` with a quota of one request per consumer per hour;
/// `GET /counted/*`, open, with a quota so large it always admits (every request counts).
fn policy(origin: &str, rsa: &Key, ec: &Key, cache: bool) -> anyhow::Result<Value> {
    let mut jwks = Vec::new();
    for key in [rsa, ec] {
        let line = key
            .public_jwk_line()?
            .ok_or_else(|| anyhow!("no public JWK"))?;
        jwks.push(serde_json::from_str::<Value>(&line)?);
    }
    let providers = json!({"providers": ["idp", "shared"]});
    Ok(json!({
        "version": 1,
        "token_cache_entries": if cache { 10_000 } else { 0 },
        "origins": {"o": {"url": origin}},
        "auth": {
            "idp": {"type": "jwt", "issuer": "https://idp.test", "audiences": ["api"],
                    "algorithms": ["RS256", "ES256"], "jwks": {"keys": jwks}},
            "shared": {"type": "jwt", "issuer": "https://idp.test", "audiences": ["api"],
                       "algorithms": ["HS256"], "secret_env": "BENCH_HS_SECRET"}
        },
        "quotas": {
            "one-per-hour": {"limit": 1, "window_s": 3600, "by": "consumer"},
            "counted": {"limit": 1_000_000_000, "window_s": 3600, "by": "route"}
        },
        "routes": [
            {"id": "public", "path": "/public/{*rest}", "methods": ["GET"], "origin": "o",
             "auth": "none"},
            {"id": "jwt", "path": "/jwt/{*rest}", "methods": ["GET"], "origin": "o",
             "auth": providers},
            {"id": "orders", "path": "/orders", "methods": ["POST"], "origin": "o",
             "auth": providers,
             "request": {
                "max_body_bytes": 4096,
                "content_types": ["application/json"],
                "body_schema": {
                    "type": "object",
                    "required": ["sku", "quantity"],
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z0-9-]{3,32}$"},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                        "note": {"type": "string", "maxLength": 1000}
                    },
                    "additionalProperties": false
                }
             }},
            {"id": "limited", "path": "/limited", "methods": ["GET"], "origin": "o",
             "auth": providers, "quota": "one-per-hour"},
            {"id": "counted", "path": "/counted/{*rest}", "methods": ["GET"], "origin": "o",
             "auth": "none", "quota": "counted"}
        ]
    }))
}

/// The settings of the Hono worker (`bench/hono`), read out of the Portcullis policy so that the
/// two cannot drift: origin, issuer, audiences, JWKS, the body limit, content types and schema,
/// and the quota. The HMAC secret goes separately, as `BENCH_HS_SECRET` on both workers.
fn hono_config(policy: &Value) -> anyhow::Result<Value> {
    let route = |id: &str| {
        policy["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["id"] == id))
            .ok_or_else(|| anyhow!("the policy has no route {id}"))
    };
    let (idp, shared) = (&policy["auth"]["idp"], &policy["auth"]["shared"]);
    if idp["issuer"] != shared["issuer"] || idp["audiences"] != shared["audiences"] {
        bail!("the Hono worker checks one issuer and audience list for both providers");
    }
    let request = &route("orders")?["request"];
    let quota_name = route("limited")?["quota"]
        .as_str()
        .ok_or_else(|| anyhow!("route limited has no quota"))?;
    let quota = &policy["quotas"][quota_name];
    Ok(json!({
        "origin": policy["origins"]["o"]["url"],
        "issuer": idp["issuer"],
        "audiences": idp["audiences"],
        "algorithms": idp["algorithms"],
        "jwks": idp["jwks"],
        "body": {
            "max_bytes": request["max_body_bytes"],
            "content_types": request["content_types"],
            "schema": request["body_schema"]
        },
        "quota": {"name": quota_name, "limit": quota["limit"], "window_s": quota["window_s"]}
    }))
}

fn token(key: &Key, sub: &str, now: u64) -> anyhow::Result<String> {
    jose::signed(
        key,
        &json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "iat": now,
                "exp": now + 86_400}),
    )
}

// -------------------------------------------------------------------------------------------
// Report

/// One `wrk` run: a contender on a case.
#[derive(Debug, Clone)]
struct Run {
    contender: String,
    case: String,
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    /// Responses whose status was not the one the case expects, plus socket errors.
    wrong: u64,
    requests: u64,
    rss_peak_kb: Option<u64>,
    /// CPU time during the run, µs: the worker's workerd process, and wrangler's own processes
    /// (runs on workerd only).
    cpu_us: Option<(u64, u64)>,
}

/// Cases in report order, with what each means.
const CASES: &[(&str, &str)] = &[
    ("public", "public route, no auth"),
    ("hs256-cached", "HS256 token, the same on every request"),
    ("rs256-cached", "RS256 token, the same on every request"),
    ("es256-cached", "ES256 token, the same on every request"),
    (
        "hs256-unique",
        "HS256, 1000 distinct tokens, token cache off",
    ),
    (
        "rs256-unique",
        "RS256, 1000 distinct tokens, token cache off",
    ),
    (
        "es256-unique",
        "ES256, 1000 distinct tokens, token cache off",
    ),
    ("body", "HS256 + 1 KB JSON body validated by schema"),
    ("over-quota", "HS256, consumer over quota: 429"),
];

/// Native contenders, in table order.
const CONTENDERS: &[&str] = &["portcullis", "haproxy", "nginx"];

/// The two workers on workerd (`wrangler dev --local`): the Portcullis Worker, and the Hono
/// worker in `bench/hono` doing the same checks.
const WORKERD: &[&str] = &["portcullis-worker", "hono-worker"];

fn read_runs(dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".wrk.json") else {
            continue;
        };
        let Some((contender, case)) = stem.split_once("__") else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| anyhow!("{name}: no result line"))?;
        let v: Value = serde_json::from_str(line).with_context(|| name.to_owned())?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let expect_429 = case == "over-quota";
        let status_errors = n("status_errors");
        let wrong_status = if expect_429 {
            // wrk counts non-2xx as errors: the quota admits the first request, the rest are 429.
            n("requests")
                .saturating_sub(status_errors)
                .saturating_sub(1)
        } else {
            status_errors
        };
        let rss = std::fs::read_to_string(dir.join(format!("{stem}.rss")))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let cpu = std::fs::read_to_string(dir.join(format!("{stem}.cpu")))
            .ok()
            .and_then(|t| {
                let mut n = t.split_whitespace().map(str::parse::<u64>);
                Some((n.next()?.ok()?, n.next()?.ok()?))
            });
        runs.push(Run {
            contender: contender.to_owned(),
            case: case.to_owned(),
            rps: n("requests") as f64 / (n("duration_us").max(1) as f64 / 1e6),
            p50_us: n("p50_us"),
            p99_us: n("p99_us"),
            p999_us: n("p999_us"),
            wrong: wrong_status
                + n("connect_errors")
                + n("read_errors")
                + n("write_errors")
                + n("timeouts"),
            requests: n("requests"),
            rss_peak_kb: rss,
            cpu_us: cpu,
        });
    }
    Ok(runs)
}

/// Criterion medians from `target/criterion`, by benchmark id, in nanoseconds.
fn criterion(dir: &Path) -> Vec<(String, f64)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.ends_with("new/benchmark.json") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out = Vec::new();
    for file in files {
        let read = |p: &Path| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
        };
        let (Some(meta), Some(est)) = (read(&file), read(&file.with_file_name("estimates.json")))
        else {
            continue;
        };
        if let (Some(id), Some(ns)) = (
            meta["full_id"].as_str(),
            est["median"]["point_estimate"].as_f64(),
        ) {
            out.push((id.to_owned(), ns));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn report(run: &Path, md: &Path, svg: &Path) -> anyhow::Result<()> {
    let runs = read_runs(&run.join("results"))?;
    if runs.is_empty() {
        bail!("no results in {}", run.join("results").display());
    }
    let meta = std::fs::read_to_string(run.join("meta.md")).unwrap_or_default();
    let soak = std::fs::read_to_string(run.join("soak.md")).unwrap_or_default();
    let sizes = std::fs::read_to_string(run.join("sizes.md")).unwrap_or_default();
    let bench_of = |c: &str, k: &str| runs.iter().find(|r| r.contender == c && r.case == k);

    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Written by `bench/run` (do not edit by hand): every contender on the same machine, in one \
         run, in front of the same nginx origin on 127.0.0.1, driven by the same `wrk` settings. \
         Portcullis is the native gateway (`portcullis serve`, release build).\n\n",
    );
    out.push_str(&meta);
    if runs
        .iter()
        .any(|r| CONTENDERS.contains(&r.contender.as_str()))
    {
        out.push_str("\n## Requests per second and latency\n\n");
        out.push_str(
            "Latency columns are milliseconds. *vs best peer* is Portcullis' requests/s divided \
             by the best other contender's on the same case. *wrong* counts responses with \
             another status than the case expects, plus socket errors; a run with any is not \
             comparable.\n\n",
        );
        out.push_str(
            "| case | contender | req/s | p50 | p99 | p99.9 | peak RSS | wrong | vs best peer |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (case, what) in CASES {
            let best_peer = runs
                .iter()
                .filter(|r| r.case == *case && r.contender != "portcullis")
                .filter(|r| CONTENDERS.contains(&r.contender.as_str()))
                .map(|r| r.rps)
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            for contender in CONTENDERS {
                let Some(r) = bench_of(contender, case) else {
                    continue;
                };
                let ratio = match (contender, best_peer) {
                    (&"portcullis", Some(best)) if best > 0.0 => {
                        format!("{:.2}×", r.rps / best)
                    }
                    _ => String::new(),
                };
                let _ = writeln!(out, "{} {ratio} |", row(what, r));
            }
        }
    }
    out.push_str(&workerd(
        &runs,
        &std::fs::read_to_string(run.join("workerd.md")).unwrap_or_default(),
    ));
    out.push_str("\n![requests per second by case and contender](benchmarks.svg)\n\n");
    let crit = criterion(&run.join("criterion"));
    out.push_str(&operations(&runs, run));
    out.push_str(&targets(&runs, &crit));
    if let Some(profile) = profile::section(run, CASES, &["nginx", "haproxy", "portcullis"]) {
        out.push_str(&profile);
    }
    out.push_str(&soak);
    if !crit.is_empty() {
        out.push_str(
            "\n## Criterion\n\n`cargo bench -p portcullis-core --bench decision` (the core, \
             pure-Rust crypto) and `cargo bench -p portcullis --bench signature` (the native \
             gateway's `ring` backend against it), median of each benchmark:\n\n\
             | benchmark | median |\n|---|---:|\n",
        );
        for (id, ns) in &crit {
            let _ = writeln!(out, "| {id} | {} |", time(*ns));
        }
    }
    out.push_str(&sizes);
    let notes = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("notes.md"))
        .unwrap_or_default();
    out.push('\n');
    out.push_str(&notes);
    std::fs::write(md, out)?;
    std::fs::write(svg, chart(&runs))?;
    Ok(())
}

/// A results row up to its last column: case, contender, req/s, latencies, peak RSS, wrong.
fn row(what: &str, r: &Run) -> String {
    format!(
        "| {what} | {} | {:.0} | {} | {} | {} | {} | {} |",
        r.contender,
        r.rps,
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        r.rss_peak_kb
            .map_or("?".to_owned(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
        if r.wrong == 0 {
            "0".to_owned()
        } else {
            format!("**{} of {}**", r.wrong, r.requests)
        },
    )
}

/// The Portcullis Worker's requests/s over the Hono worker's on `case`, when both ran it.
fn workerd_ratio(runs: &[Run], case: &str) -> Option<f64> {
    let find = |c: &str| runs.iter().find(|r| r.contender == c && r.case == case);
    let (p, h) = (find("portcullis-worker")?, find("hono-worker")?);
    (h.rps > 0.0).then(|| p.rps / h.rps)
}

/// The section on workerd, empty when that part of the run was skipped. `settings` is the run's
/// `workerd.md` (versions, wrk settings).
fn workerd(runs: &[Run], settings: &str) -> String {
    let mut out = String::new();
    if !runs.iter().any(|r| WORKERD.contains(&r.contender.as_str())) {
        return out;
    }
    out.push_str("\n## On workerd\n\n");
    out.push_str(
        "The Portcullis Worker (`adapters/cloudflare`, Rust compiled to wasm) against a \
         TypeScript worker on Hono doing the same checks (`bench/hono`, benchmark only), each \
         under its own `wrangler dev --local`, in front of the same nginx origin. The two take \
         each case in turn. wrangler's dev tooling costs more CPU per request than either worker \
         (see the notes at the end), so compare the two workers with each other, not with the \
         native contenders above, nor with Cloudflare's edge. *÷ Hono* is the Portcullis \
         Worker's requests/s divided by the Hono worker's. *peak RSS* is the workerd process \
         that runs the worker (with its Durable Objects), not wrangler's own processes. *CPU per \
         request* is the CPU time that process used during the run over the requests answered \
         (µs), then the same for wrangler's own processes (node, and the workerd running its \
         proxies); it depends less than requests/s on what else runs on the machine.\n\n",
    );
    out.push_str(settings);
    out.push_str(
        "\n| case | contender | req/s | p50 | p99 | p99.9 | peak RSS | wrong | CPU per request: \
         worker, wrangler | ÷ Hono |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (case, what) in CASES {
        for contender in WORKERD {
            let Some(r) = runs
                .iter()
                .find(|r| r.contender == *contender && r.case == *case)
            else {
                continue;
            };
            let ratio = match (*contender, workerd_ratio(runs, case)) {
                ("portcullis-worker", Some(x)) => format!("{x:.2}×"),
                _ => String::new(),
            };
            let cpu = match r.cpu_us {
                Some((worker, tool)) if r.requests > 0 => {
                    format!("{} µs, {} µs", worker / r.requests, tool / r.requests)
                }
                _ => "?".to_owned(),
            };
            let _ = writeln!(out, "{} {cpu} | {ratio} |", row(what, r));
        }
    }
    out
}

/// `contender`'s CPU per request (µs) in each round `cpu-1`, `cpu-2`, …, in round order.
fn cpu_rounds(runs: &[Run], contender: &str) -> Vec<f64> {
    let mut rounds: Vec<&Run> = runs
        .iter()
        .filter(|r| r.contender == contender && r.case.starts_with("cpu-") && r.requests > 0)
        .collect();
    rounds.sort_by(|a, b| a.case.cmp(&b.case));
    rounds
        .iter()
        .filter_map(|r| Some(r.cpu_us?.0 as f64 / r.requests as f64))
        .collect()
}

/// What metrics add to the CPU per request, in percent: the median over the alternating
/// rounds of each round's difference (paired, so drift on the machine cancels), with each
/// side's median (µs) and every round's difference.
fn metrics_cost(runs: &[Run]) -> Option<(f64, f64, f64, Vec<f64>)> {
    let (off, on) = (
        cpu_rounds(runs, "portcullis"),
        cpu_rounds(runs, "portcullis-admin"),
    );
    if off.is_empty() || off.len() != on.len() {
        return None;
    }
    let each: Vec<f64> = off
        .iter()
        .zip(&on)
        .map(|(a, b)| (b / a - 1.0) * 100.0)
        .collect();
    Some((median(each.clone())?, median(off)?, median(on)?, each))
}

/// `contender`'s runs of the rounds `counted-1`, `counted-2`, … in round order.
fn counted_rounds<'a>(runs: &'a [Run], contender: &str) -> Vec<&'a Run> {
    let mut rounds: Vec<&Run> = runs
        .iter()
        .filter(|r| r.contender == contender && r.case.starts_with("counted-"))
        .filter(|r| r.case["counted-".len()..].parse::<u32>().is_ok())
        .collect();
    rounds.sort_by(|a, b| a.case.cmp(&b.case));
    rounds
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Median req/s, p50 and p99 (µs) of a store's rounds.
type Medians = (f64, f64, f64);

/// The Redis store against memory at full load, over alternating rounds: the median of each
/// round's req/s ratio (paired, so drift on the machine cancels), and each store's median
/// req/s, p50 and p99 (µs).
fn redis_rounds(runs: &[Run]) -> Option<(f64, [Medians; 2])> {
    let (memory, redis) = (
        counted_rounds(runs, "portcullis"),
        counted_rounds(runs, "portcullis-redis"),
    );
    if memory.is_empty() || memory.len() != redis.len() {
        return None;
    }
    let ratio = median(
        memory
            .iter()
            .zip(&redis)
            .map(|(m, r)| r.rps / m.rps.max(1.0))
            .collect(),
    )?;
    let of = |rounds: &[&Run]| -> Option<Medians> {
        Some((
            median(rounds.iter().map(|r| r.rps).collect())?,
            median(rounds.iter().map(|r| r.p50_us as f64).collect())?,
            median(rounds.iter().map(|r| r.p99_us as f64).collect())?,
        ))
    };
    Some((ratio, [of(&memory)?, of(&redis)?]))
}

/// What metrics cost natively, and what the Redis counter store costs against counting in
/// memory. The targets on both are judged in [`targets`].
fn operations(runs: &[Run], run: &Path) -> String {
    let find = |c: &str, k: &str| runs.iter().find(|r| r.contender == c && r.case == k);
    let mut out = String::new();
    if let Some((added, off, on, each)) = metrics_cost(runs) {
        let each: Vec<String> = each.iter().map(|d| format!("{d:+.1} %")).collect();
        out.push_str("\n## What metrics cost\n\n");
        let _ = writeln!(
            out,
            "The public route on two gateways, one without `--admin` (nothing counted) and one \
             with it (every request counted for `/metrics`), in {} alternating rounds at the \
             load above. The gateway's CPU time per request, median of the rounds: {off:.2} µs \
             without and {on:.2} µs with metrics. Each round's difference ({}); their median, \
             **{added:+.1} %**, is what metrics cost. Differences of a few percent either way \
             are the machine's noise between runs of the same binary.",
            each.len(),
            each.join(", ")
        );
    }
    let Some((ratio, [memory, redis])) = redis_rounds(runs) else {
        return out;
    };
    let rounds = counted_rounds(runs, "portcullis").len();
    out.push_str("\n## Quotas in Redis\n\n");
    let _ = writeln!(
        out,
        "`GET /counted/x`: an open route whose quota always admits, so every request is counted, \
         on a gateway counting in memory and on one with `--counter-store redis://…` (a local \
         `redis-server`, same machine). At full load (the wrk settings above) in {rounds} \
         alternating rounds, whose medians are shown (the req/s ratio is the median of each \
         round's ratio), and then with one connection, where latency is the time one request \
         takes rather than time queued. *added* is the Redis gateway's latency minus the \
         in-memory one's.\n\n\
         | store | req/s | p50 | p99 | p50, 1 connection | p99, 1 connection |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    let serial = |c: &str| find(c, "counted-serial");
    for (name, (rps, p50, p99), s) in [
        ("memory", memory, serial("portcullis")),
        ("Redis", redis, serial("portcullis-redis")),
    ] {
        let (s50, s99) = s.map_or(("?".into(), "?".into()), |s| (ms(s.p50_us), ms(s.p99_us)));
        let (p50, p99) = (ms(p50 as u64), ms(p99 as u64));
        let _ = writeln!(out, "| {name} | {rps:.0} | {p50} | {p99} | {s50} | {s99} |");
    }
    if let (Some(m), Some(r)) = (serial("portcullis"), serial("portcullis-redis")) {
        let _ = writeln!(
            out,
            "| *added by Redis* | {ratio:.2}× | | | {} µs | {} µs |",
            r.p50_us as i64 - m.p50_us as i64,
            r.p99_us as i64 - m.p99_us as i64
        );
    }
    out.push_str(&std::fs::read_to_string(run.join("redis.md")).unwrap_or_default());
    out.push('\n');
    out
}

/// The targets, each with where this run stands (computed, so it cannot go stale).
fn targets(runs: &[Run], crit: &[(String, f64)]) -> String {
    let find = |c: &str, k: &str| runs.iter().find(|r| r.contender == c && r.case == k);
    let bench = |id: &str| crit.iter().find(|(i, _)| i == id).map(|(_, ns)| *ns);
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let mut out = String::from(
        "## Where we stand against the targets\n\n| target | this run | |\n|---|---|---|\n",
    );
    for case in ["hs256-cached", "rs256-cached", "es256-cached"] {
        if let (Some(p), Some(h)) = (find("portcullis", case), find("haproxy", case)) {
            let ratio = p.rps / h.rps.max(1.0);
            let _ = writeln!(
                out,
                "| {case}: ≥ 1.0× HAProxy's req/s, p99 no worse | {ratio:.2}×, p99 {} vs {} ms | {} |",
                ms(p.p99_us),
                ms(h.p99_us),
                verdict(ratio >= 1.0 && p.p99_us <= h.p99_us)
            );
        }
    }
    if let (Some(p), Some(n)) = (find("portcullis", "hs256-cached"), find("nginx", "public")) {
        let ratio = p.rps / n.rps.max(1.0);
        let _ = writeln!(
            out,
            "| cached token: ≥ 0.8× the bare nginx hop | {ratio:.2}× | {} |",
            verdict(ratio >= 0.8)
        );
    }
    if let Some(ns) = bench("decide/ES256 cached+scope+quota") {
        let _ = writeln!(
            out,
            "| core decision, cached token: < 5 µs | {} | {} |",
            time(ns),
            verdict(ns < 5_000.0)
        );
    }
    if let Some(ns) = bench("signature/ES256 ring") {
        let _ = writeln!(
            out,
            "| uncached ES256 natively: < 100 µs | {} (ring) | {} |",
            time(ns),
            verdict(ns < 100_000.0)
        );
    }
    if let Some((added, off, on, _)) = metrics_cost(runs) {
        let _ = writeln!(
            out,
            "| metrics: ≤ 3 % more CPU per request on the public route | {added:+.1} % ({off:.2} → {on:.2} µs) | {} |",
            verdict(added <= 3.0)
        );
    }
    if let (Some((ratio, _)), Some(ms_), Some(rs)) = (
        redis_rounds(runs),
        find("portcullis", "counted-serial"),
        find("portcullis-redis", "counted-serial"),
    ) {
        let added = rs.p50_us as i64 - ms_.p50_us as i64;
        let _ = writeln!(
            out,
            "| Redis counter store: p50 added ≤ 150 µs on loopback (one connection) | {added} µs | {} |",
            verdict(added <= 150)
        );
        let _ = writeln!(
            out,
            "| Redis counter store: ≥ 0.7× the in-memory store's req/s | {ratio:.2}× | {} |",
            verdict(ratio >= 0.7)
        );
    }
    let ratios: Vec<(&str, f64)> = CASES
        .iter()
        .filter_map(|(case, _)| Some((*case, workerd_ratio(runs, case)?)))
        .collect();
    if let Some(&(worst, lowest)) = ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
        let met = ratios.iter().filter(|(_, x)| *x >= 1.0).count();
        // The worker's own CPU per request, Portcullis over Hono, as a range over the cases.
        let per_request = |c: &str, case: &str| {
            let r = find(c, case)?;
            let (worker, _) = r.cpu_us?;
            (r.requests > 0).then(|| worker as f64 / r.requests as f64)
        };
        let cpu: Vec<f64> = CASES
            .iter()
            .filter_map(|(case, _)| {
                Some(per_request("portcullis-worker", case)? / per_request("hono-worker", case)?)
            })
            .filter(|x| x.is_finite())
            .collect();
        let cpu = match (
            cpu.iter().copied().reduce(f64::min),
            cpu.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) => {
                format!("; the worker's CPU per request {lo:.2}–{hi:.2}× Hono's")
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| workerd: ≥ 1.0× the Hono worker's req/s, every case | {met} of {} cases; lowest \
             {lowest:.2}× ({worst}){cpu} | {} |",
            ratios.len(),
            verdict(met == ratios.len())
        );
    }
    out.push('\n');
    out
}

/// Horizontal bars: requests/s for each case, one bar per contender that ran it; the native
/// contenders and the workers on workerd in separate panels, each on its own scale.
fn chart(runs: &[Run]) -> String {
    let colours: BTreeMap<&str, &str> = [
        ("portcullis", "#1f6feb"),
        ("haproxy", "#d29922"),
        ("nginx", "#8b949e"),
        ("portcullis-worker", "#1f6feb"),
        ("hono-worker", "#e36209"),
    ]
    .into_iter()
    .collect();
    let (label_w, bar_w, row_h, gap) = (330.0, 520.0, 16.0, 12.0);
    let panels = [
        ("native, requests per second (higher is better)", CONTENDERS),
        (
            "on workerd (wrangler dev --local), requests per second, own scale",
            WORKERD,
        ),
    ];
    let mut body = String::new();
    let mut y = 0.0;
    for (title, contenders) in panels {
        let mut rows = Vec::new();
        for (case, what) in CASES {
            let bars: Vec<&Run> = contenders
                .iter()
                .filter_map(|c| runs.iter().find(|r| r.contender == *c && r.case == *case))
                .collect();
            if !bars.is_empty() {
                rows.push((*what, bars));
            }
        }
        if rows.is_empty() {
            continue;
        }
        let max = rows
            .iter()
            .flat_map(|(_, bars)| bars.iter().map(|r| r.rps))
            .fold(1.0, f64::max);
        y += 20.0;
        let _ = writeln!(
            body,
            "<text x=\"10\" y=\"{y:.1}\" font-size=\"14\">{}</text>",
            xml(title)
        );
        y += 20.0;
        for (what, bars) in rows {
            let _ = writeln!(
                body,
                "<text x=\"10\" y=\"{:.1}\">{}</text>",
                y + 12.0,
                xml(what)
            );
            for r in bars {
                let w = (r.rps / max * bar_w).max(1.0);
                let colour = colours.get(r.contender.as_str()).copied().unwrap_or("#444");
                let _ = writeln!(
                    body,
                    "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" \
                     fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\">{} {:.0}</text>",
                    row_h - 3.0,
                    label_w + w + 4.0,
                    y + 11.0,
                    r.contender,
                    r.rps
                );
                y += row_h;
            }
            y += gap;
        }
    }
    let height = y + 20.0;
    let width = label_w + bar_w + 160.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
