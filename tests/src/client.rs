//! A raw HTTP/1.1 client over `TcpStream`.
//!
//! Ordinary clients normalise what they send (`/a/../b` becomes `/b`, `\` becomes `/`, header
//! names are lower-cased); a conformance suite must send exactly the bytes a vector says. This
//! client writes the request bytes as given, writes the body concurrently with reading the
//! response (a gateway may answer 413 before the body is sent), and reads one response framed by
//! `Content-Length`, `chunked`, or the connection closing.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every exchange must finish within this, or the gateway is declared hung.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response accepted (the gateway never sends big bodies in these tests).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// How the body goes on the wire.
#[derive(Debug, Clone)]
pub enum BodyFraming {
    /// As is, after the head (the head carries `Content-Length` or nothing).
    Plain,
    /// `Transfer-Encoding: chunked`, in chunks of this many bytes.
    Chunked(usize),
}

/// One request: head bytes (request line and headers, ending in the blank line) and a body.
#[derive(Debug, Clone)]
pub struct WireRequest {
    /// Request line, headers and the empty line.
    pub head: Vec<u8>,
    /// Body bytes (possibly empty).
    pub body: Vec<u8>,
    /// How to frame the body.
    pub framing: BodyFraming,
    /// Whether the request is `HEAD` (its response has no body).
    pub is_head: bool,
    /// Shut down the write side after the request (signals the end of input).
    pub half_close: bool,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of header `name`, joined with ", ".
    pub fn header(&self, name: &str) -> Option<String> {
        join_header(&self.headers, name)
    }

    /// Whether header `name` is present.
    pub fn has_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers.iter().any(|(n, _)| *n == name)
    }
}

/// Every value of `name` in `headers` (compared case-insensitively), joined with ", ".
pub fn join_header(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// What happened to one exchange.
#[derive(Debug)]
pub enum Exchange {
    /// A complete response.
    Response(Response),
    /// The gateway closed or reset the connection before a complete response (with why).
    Closed(String),
}

/// The result of [`send`], with how long it took.
#[derive(Debug)]
pub struct Timed {
    /// The outcome.
    pub exchange: Exchange,
    /// Wall time from connecting to the end of the response.
    pub elapsed: Duration,
}

/// Send `request` to `addr` (`host:port`) and read one response, all within [`REQUEST_TIMEOUT`].
/// An `Err` means the exchange did not finish in time (or the connection could not be made).
pub async fn send(addr: &str, request: &WireRequest) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let exchange = tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, request))
        .await
        .map_err(|_| {
            anyhow!(
                "no complete response within {} s: the gateway hung",
                REQUEST_TIMEOUT.as_secs()
            )
        })??;
    Ok(Timed {
        exchange,
        elapsed: start.elapsed(),
    })
}

async fn exchange(addr: &str, request: &WireRequest) -> anyhow::Result<Exchange> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).ok();
    let (mut reader, mut writer) = stream.into_split();
    let head = request.head.clone();
    let body = request.body.clone();
    let framing = request.framing.clone();
    let half_close = request.half_close;
    // The writer runs beside the reader: the gateway may answer (413, 401) before the body is sent.
    let write = tokio::spawn(async move {
        writer.write_all(&head).await?;
        match framing {
            BodyFraming::Plain => {
                for piece in body.chunks(64 * 1024) {
                    writer.write_all(piece).await?;
                }
            }
            BodyFraming::Chunked(size) => {
                for piece in body.chunks(size.max(1)) {
                    writer
                        .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .await?;
                    writer.write_all(piece).await?;
                    writer.write_all(b"\r\n").await?;
                }
                writer.write_all(b"0\r\n\r\n").await?;
            }
        }
        writer.flush().await?;
        if half_close {
            writer.shutdown().await?;
        }
        // Otherwise keep the write half open: some servers treat a half-close as an abort.
        Ok::<_, std::io::Error>(writer)
    });
    let result = read_response(&mut reader, request.is_head).await;
    let write_result = if write.is_finished() {
        Some(write.await)
    } else {
        // The response arrived before the whole request was written; stop writing.
        write.abort();
        None
    };
    match result {
        Ok(Some(response)) => Ok(Exchange::Response(response)),
        Ok(None) => Ok(Exchange::Closed(
            "connection closed before a complete response".into(),
        )),
        Err(e) => {
            let write_note = match write_result {
                Some(Ok(Err(w))) => format!(" (writing the request failed: {w})"),
                _ => String::new(),
            };
            Ok(Exchange::Closed(format!("{e}{write_note}")))
        }
    }
}

/// Read one final response. `Ok(None)` when the connection ended before a status line.
async fn read_response(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    is_head: bool,
) -> anyhow::Result<Option<Response>> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read a head (skipping 1xx interim responses).
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 1 << 20 {
                bail!("response head larger than 1 MiB");
            }
            if read_more(reader, &mut buf).await? == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                bail!("connection closed in the middle of the response head");
            }
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .context("response head is not UTF-8")?
            .to_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            bail!("not an HTTP/1.x status line: {status_line:?}");
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("bad header line: {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let no_body = is_head || status == 204 || status == 304;
        let chunked = join_header(&headers, "transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let body = if no_body {
            Vec::new()
        } else if chunked {
            read_chunked(reader, &mut buf).await?
        } else if let Some(len) = join_header(&headers, "content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| anyhow!("bad Content-Length in response: {len:?}"))?;
            if len > MAX_RESPONSE_BYTES {
                bail!("response body of {len} bytes is too large");
            }
            while buf.len() < len {
                if read_more(reader, &mut buf).await? == 0 {
                    bail!("connection closed after {} of {len} body bytes", buf.len());
                }
            }
            buf.truncate(len);
            buf
        } else {
            while read_more(reader, &mut buf).await? != 0 {
                if buf.len() > MAX_RESPONSE_BYTES {
                    bail!("response body too large");
                }
            }
            buf
        };
        return Ok(Some(Response {
            status,
            headers,
            body,
        }));
    }
}

async fn read_more(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = reader
        .read(&mut chunk)
        .await
        .context("reading the response")?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn read_chunked(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if read_more(reader, buf).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).context("chunk size line is not UTF-8")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size line {line:?}"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                if let Some(i) = find(buf, b"\r\n") {
                    let empty = i == 0;
                    buf.drain(..i + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if read_more(reader, buf).await? == 0 {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_RESPONSE_BYTES {
            bail!("chunked response body too large");
        }
        while buf.len() < size + 2 {
            if read_more(reader, buf).await? == 0 {
                bail!("connection closed inside a chunk");
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serve one canned response to one connection and return what the client made of it.
    async fn canned(response: &'static [u8], is_head: bool) -> Exchange {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(response).await.unwrap();
        });
        let request = WireRequest {
            head: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            body: Vec::new(),
            framing: BodyFraming::Plain,
            is_head,
            half_close: false,
        };
        send(&addr, &request).await.unwrap().exchange
    }

    fn response(e: Exchange) -> Response {
        match e {
            Exchange::Response(r) => r,
            Exchange::Closed(why) => panic!("closed: {why}"),
        }
    }

    #[tokio::test]
    async fn content_length_body() {
        let r = response(
            canned(
                b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhelloEXTRA",
                false,
            )
            .await,
        );
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("X-A").as_deref(), Some("1, 2"));
    }

    #[tokio::test]
    async fn chunked_body_with_interim_response() {
        let r = response(
            canned(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
                false,
            )
            .await,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
    }

    #[tokio::test]
    async fn body_until_close_and_head() {
        let r = response(canned(b"HTTP/1.1 200 OK\r\n\r\nto the end", false).await);
        assert_eq!(r.body, b"to the end");
        let r = response(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).await);
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn closed_without_response() {
        assert!(matches!(canned(b"", false).await, Exchange::Closed(_)));
        assert!(matches!(
            canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false).await,
            Exchange::Closed(_)
        ));
    }
}
