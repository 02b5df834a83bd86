//! What a gateway adds to a request, measured from the client: sequential requests over one
//! kept-alive connection, timed from the first byte written to the last byte read, for a few
//! policy cases and for the origin called directly.
//!
//! Sequential on purpose: with one request in flight, a case's latency minus the public route's
//! is the work that case adds inside the gateway (a single-threaded runtime such as workerd does
//! nothing else meanwhile), which is how the README's per-request CPU figures for uncached
//! signatures are taken. Throughput under concurrency is `bench/`'s job, not this module's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use std::collections::BTreeMap;

use crate::jose::{self, Key};
use crate::origin::RecordingOrigin;
use crate::target::Target;

/// One measured case.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was asked (e.g. `RS256, uncached`).
    pub case: String,
    /// Requests timed (after warm-up).
    pub requests: usize,
    /// Median, in microseconds.
    pub p50_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
}

/// A request to time: path and headers; `fresh` makes the headers anew for each request.
pub struct Case<'a> {
    /// Shown in the table.
    pub name: String,
    /// Host and port (`127.0.0.1:8787`).
    pub addr: String,
    /// Request target.
    pub path: String,
    /// The status every answer must have; anything else aborts the measurement.
    pub status: u16,
    /// Extra request headers, made for request number `i`.
    pub headers: Box<dyn FnMut(usize) -> Vec<(String, String)> + 'a>,
}

/// Time `requests` requests of each case after `warmup` untimed ones. The cases take turns, one
/// request each, so a change in the machine's load while measuring touches every case alike.
pub fn measure(
    mut cases: Vec<Case<'_>>,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Vec<Figure>> {
    let mut conns = cases
        .iter()
        .map(|c| Conn::open(&c.addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut times = vec![Vec::with_capacity(requests); cases.len()];
    for i in 0..warmup + requests {
        for ((case, conn), times) in cases.iter_mut().zip(&mut conns).zip(&mut times) {
            let headers = (case.headers)(i);
            let started = Instant::now();
            let status = conn
                .get(&case.addr, &case.path, &headers)
                .with_context(|| format!("{}: request {i}", case.name))?;
            let took = started.elapsed();
            if status != case.status {
                bail!(
                    "{}: request {i} answered {status}, expected {}",
                    case.name,
                    case.status
                );
            }
            if i >= warmup {
                times.push(took);
            }
        }
    }
    Ok(cases
        .into_iter()
        .zip(&mut times)
        .map(|(case, times)| figure(case.name, times))
        .collect())
}

fn figure(case: String, times: &mut [Duration]) -> Figure {
    times.sort();
    let at = |q: f64| {
        let i = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1)) - 1;
        times.get(i).map_or(0, |d| d.as_micros() as u64)
    };
    Figure {
        case,
        requests: times.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// The figures as a Markdown table, each case also shown relative to `baseline` (by name).
pub fn table(figures: &[Figure], baseline: &str) -> String {
    let base = figures
        .iter()
        .find(|f| f.case == baseline)
        .map(|f| f.p50_us);
    let mut out = String::from(
        "| case | requests | p50 | p99 | p50 minus baseline |\n|---|---:|---:|---:|---:|\n",
    );
    for f in figures {
        let delta = match base {
            Some(b) if f.case != baseline => {
                format!("{:+.2} ms", (f.p50_us as f64 - b as f64) / 1000.0)
            }
            _ => "(baseline)".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} ms | {:.2} ms | {delta} |\n",
            f.case,
            f.requests,
            f.p50_us as f64 / 1000.0,
            f.p99_us as f64 / 1000.0
        ));
    }
    out
}

/// A policy for measuring: `/public/*` open, `/jwt/*` behind one provider with the suite's
/// RS256, ES256 and HS256 keys inline (`secret_env` `TEST_HS_SECRET` holds the HMAC secret), all to
/// `origin`. The token cache holds repeated tokens; fresh tokens always miss it.
pub fn policy(origin: &str, keys: &BTreeMap<String, Key>) -> anyhow::Result<Value> {
    let mut jwks = Vec::new();
    for name in ["rsa-1", "ec-p256-1"] {
        let key = keys.get(name).ok_or_else(|| anyhow!("no key {name}"))?;
        let line = key
            .public_jwk_line()?
            .ok_or_else(|| anyhow!("{name} has no public JWK"))?;
        jwks.push(serde_json::from_str::<Value>(&line)?);
    }
    Ok(json!({
        "version": 1,
        "origins": {"o": {"url": origin}},
        "auth": {
            "idp": {"type": "jwt", "issuer": "https://idp.test", "audiences": ["api"],
                    "algorithms": ["RS256", "ES256"], "jwks": {"keys": jwks}},
            "shared": {"type": "jwt", "issuer": "https://idp.test", "audiences": ["api"],
                       "algorithms": ["HS256"], "secret_env": "TEST_HS_SECRET"}
        },
        "routes": [
            {"id": "public", "path": "/public/{*rest}", "methods": ["GET"], "origin": "o", "auth": "none"},
            {"id": "jwt", "path": "/jwt/{*rest}", "methods": ["GET"], "origin": "o",
             "auth": {"providers": ["idp", "shared"]}}
        ]
    }))
}

/// A token from `key` for [`policy`], unique by `n`, valid for an hour from `now_s`.
pub fn token(key: &Key, n: usize, now_s: u64) -> anyhow::Result<String> {
    jose::signed(
        key,
        &json!({"iss": "https://idp.test", "aud": "api", "sub": format!("user-{n}"),
                "iat": now_s, "exp": now_s + 3600, "jti": format!("m-{n}")}),
    )
}

/// The standard set of cases against a gateway at `gateway` running [`policy`] (HMAC key
/// `hs-1` as `TEST_HS_SECRET`), plus the origin at `origin` called directly.
pub fn standard_cases<'a>(
    gateway: &str,
    origin: &str,
    keys: &'a BTreeMap<String, Key>,
) -> anyhow::Result<Vec<Case<'a>>> {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let key = |name: &str| keys.get(name).ok_or_else(|| anyhow!("no key {name}"));
    let bearer = |t: String| vec![("authorization".to_owned(), format!("Bearer {t}"))];
    let (rsa, ec, hs) = (key("rsa-1")?, key("ec-p256-1")?, key("hs-1")?);
    let hs_repeated = token(hs, 0, now_s)?;
    let ec_repeated = token(ec, 0, now_s)?;
    let case =
        |name: &str, addr: &str, path: &str, headers: Box<dyn FnMut(usize) -> _ + 'a>| Case {
            name: name.to_owned(),
            addr: addr.to_owned(),
            path: path.to_owned(),
            status: 200,
            headers,
        };
    Ok(vec![
        case(
            "origin direct",
            origin,
            "/public/x",
            Box::new(|_| Vec::new()),
        ),
        case(
            "public route",
            gateway,
            "/public/x",
            Box::new(|_| Vec::new()),
        ),
        case(
            "HS256, cached",
            gateway,
            "/jwt/x",
            Box::new(move |_| bearer(hs_repeated.clone())),
        ),
        case(
            "ES256, cached",
            gateway,
            "/jwt/x",
            Box::new(move |_| bearer(ec_repeated.clone())),
        ),
        case(
            "ES256, uncached",
            gateway,
            "/jwt/x",
            Box::new(move |i| bearer(token(ec, 1_000_000 + i, now_s).unwrap_or_default())),
        ),
        case(
            "RS256, uncached",
            gateway,
            "/jwt/x",
            Box::new(move |i| bearer(token(rsa, 2_000_000 + i, now_s).unwrap_or_default())),
        ),
    ])
}

/// Start `target` with [`policy`] in front of a fresh origin on 127.0.0.1 and measure
/// [`standard_cases`], `requests` timed requests each after `warmup`, taking turns. Returns the figures and a
/// Markdown table whose baseline is the public route.
pub fn run_standard(
    target: &mut dyn Target,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<(Vec<Figure>, String)> {
    let keys = jose::load_keys(&crate::suite_dir().join("keys"))?;
    let hs: Value = serde_json::from_str(&std::fs::read_to_string(
        crate::suite_dir().join("keys").join("hs-1.json"),
    )?)?;
    let secret = hs["secret"]
        .as_str()
        .ok_or_else(|| anyhow!("hs-1.json has no secret"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let origin = runtime.block_on(RecordingOrigin::start("127.0.0.1:0"))?;
    let secrets = BTreeMap::from([("TEST_HS_SECRET".to_owned(), secret.to_owned())]);
    let base = target.start(&policy(&origin.url(), &keys)?.to_string(), &secrets)?;
    let strip = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    };
    let cases = standard_cases(&strip(&base), &strip(&origin.url()), &keys)?;
    let figures = measure(cases, warmup, requests);
    target.stop();
    let figures = figures?;
    let table = table(&figures, "public route");
    Ok((figures, table))
}

/// One kept-alive HTTP/1.1 connection, reopened when the server closes it.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// `GET path`; the status, with the body read and dropped.
    fn get(&mut self, addr: &str, path: &str, headers: &[(String, String)]) -> anyhow::Result<u16> {
        match self.exchange(addr, path, headers) {
            Ok((status, keep)) => {
                if !keep {
                    *self = Conn::open(addr)?;
                }
                Ok(status)
            }
            Err(_) => {
                // The server may have closed an idle connection: one retry on a new one.
                *self = Conn::open(addr)?;
                let (status, keep) = self.exchange(addr, path, headers)?;
                if !keep {
                    *self = Conn::open(addr)?;
                }
                Ok(status)
            }
        }
    }

    fn exchange(
        &mut self,
        addr: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> anyhow::Result<(u16, bool)> {
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.reader.get_mut().write_all(head.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no status line: {line:?}"))?;
        let (mut length, mut chunked, mut keep) = (None, false, true);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => keep = !value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| anyhow!("bad chunk size {line:?}"))?;
                std::io::copy(&mut (&mut self.reader).take(size + 2), &mut std::io::sink())?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            std::io::copy(&mut (&mut self.reader).take(n), &mut std::io::sink())?;
        } else {
            std::io::copy(&mut self.reader, &mut std::io::sink())?;
            keep = false;
        }
        Ok((status, keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_order_statistics() {
        let mut times: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let f = figure("x".into(), &mut times);
        assert_eq!((f.requests, f.p50_us, f.p99_us), (100, 50, 99));
        let mut one = vec![Duration::from_micros(7)];
        assert_eq!(figure("y".into(), &mut one).p99_us, 7);
    }
}
