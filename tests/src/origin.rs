//! The recording origin: an HTTP/1.1 server on 127.0.0.1 that remembers every request it gets.
//!
//! Requests are filed under their `x-conformance-id` header (the runner puts a unique one on every
//! request), so a case can ask "did the origin see this request, and how?". The origin answers
//! `200 {"ok":true}` unless the request asks otherwise:
//! - `x-origin-delay-ms: N` — wait N ms before answering (recorded first, so a 504 case can still
//!   see that the request arrived);
//! - `x-origin-status: N` — answer with status N;
//! - `x-origin-response-header: name=value` (repeatable) — add that header to the response.
//!   A Worker's `fetch` joins repeated request headers into one comma-separated line (the Fetch
//!   Standard's "combine"), so one line may also hold several `name=value` entries separated by
//!   `, ` where the next entry starts with a header name and `=`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The header that correlates a gateway request with what the origin received.
pub const ID_HEADER: &str = "x-conformance-id";

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Method.
    pub method: String,
    /// Request target exactly as received (path and query).
    pub target: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

type Records = Arc<Mutex<HashMap<String, Vec<Record>>>>;

/// A running recording origin. Dropping it stops the server.
#[derive(Debug)]
pub struct RecordingOrigin {
    addr: SocketAddr,
    records: Records,
    task: JoinHandle<()>,
}

impl RecordingOrigin {
    /// Start on `listen` (use `127.0.0.1:0` for any free port). Must run inside a tokio runtime.
    pub async fn start(listen: &str) -> anyhow::Result<RecordingOrigin> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let records: Records = Arc::default();
        let shared = records.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let records = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, records.clone()));
                    let _ = http1::Builder::new()
                        .max_buf_size(4 << 20)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RecordingOrigin {
            addr,
            records,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, the value of `${ORIGIN}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received with correlation id `id` (usually zero or one).
    pub fn take(&self, id: &str) -> Vec<Record> {
        self.records
            .lock()
            .map(|mut r| r.remove(id).unwrap_or_default())
            .unwrap_or_default()
    }

    /// How many requests arrived with correlation id `id`, without removing them.
    pub fn count(&self, id: &str) -> usize {
        self.records
            .lock()
            .map(|r| r.get(id).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    records: Records,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = header(ID_HEADER).unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.to_string());
    let record = Record {
        method: parts.method.as_str().to_owned(),
        target,
        headers,
        body,
    };
    if let Ok(mut map) = records.lock() {
        map.entry(id).or_default().push(record);
    }
    if let Some(ms) = header("x-origin-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let status = header("x-origin-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    let lines = parts.headers.get_all("x-origin-response-header");
    for (name, value) in lines
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(response_header_entries)
    {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            h.append(name, value);
        }
    }
    Ok(response)
}

/// The `name=value` entries of one `x-origin-response-header` line, which holds one entry, or
/// several joined by `, ` when the request passed through a Fetch API `Headers` (a segment that
/// does not start with `token=` continues the previous entry's value, so `vary=A, B` stays one).
fn response_header_entries(line: &str) -> Vec<(String, String)> {
    let starts_entry = |segment: &str| {
        segment.split_once('=').is_some_and(|(name, _)| {
            !name.trim().is_empty()
                && name
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    let mut entries: Vec<(String, String)> = Vec::new();
    for segment in line.split(',') {
        match entries.last_mut() {
            Some((_, value)) if !starts_entry(segment) => {
                value.push(',');
                value.push_str(segment);
            }
            _ => {
                if let Some((name, value)) = segment.split_once('=') {
                    entries.push((name.trim().to_owned(), value.to_owned()));
                }
            }
        }
    }
    entries
        .into_iter()
        .map(|(name, value)| (name, value.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::response_header_entries;

    #[test]
    fn one_entry_per_line_or_several_joined_by_fetch() {
        let pairs = |line| response_header_entries(line);
        assert_eq!(
            pairs("vary=X-Tenant"),
            vec![("vary".into(), "X-Tenant".into())]
        );
        assert_eq!(
            pairs("access-control-allow-origin=*, vary=X-Tenant, Accept"),
            vec![
                ("access-control-allow-origin".into(), "*".into()),
                ("vary".into(), "X-Tenant, Accept".into())
            ]
        );
        assert_eq!(pairs("no-equals-sign"), vec![]);
    }
}
