//! A stand-in origin for the demo: it answers every request with what it received, so a user
//! can see exactly what the gateway forwarded (the identity headers it added, the credentials
//! it removed). It can also stand in for the demo's identity provider, publishing a key set at
//! [`JWKS_PATH`].

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::body::{self, RelayBody};

/// Where the echo publishes the key set it was given.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Serve `listener` forever (the demo ends with the process), answering `GET` [`JWKS_PATH`] with
/// `jwks` when there is one.
pub async fn run(listener: TcpListener, jwks: Option<Bytes>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let jwks = jwks.clone();
        let service = service_fn(move |request| answer(request, jwks.clone()));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

/// `200 application/json`: the key set, or a description of the request.
async fn answer(
    request: Request<Incoming>,
    jwks: Option<Bytes>,
) -> Result<Response<RelayBody>, Infallible> {
    let (parts, mut incoming) = request.into_parts();
    if let Some(jwks) =
        jwks.filter(|_| parts.method == http::Method::GET && parts.uri.path() == JWKS_PATH)
    {
        let mut response = Response::new(body::full(jwks));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    // Count rather than collect: the echo must not hold a large upload in memory.
    let mut body_length: u64 = 0;
    while let Some(Ok(frame)) = incoming.frame().await {
        if let Some(data) = frame.data_ref() {
            body_length += data.len() as u64;
        }
    }
    let text = describe(&parts, body_length).to_string();
    let mut response = Response::new(body::full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The JSON document the echo answers with. Repeated headers are joined with ", " as HTTP
/// allows; values that are not UTF-8 are shown lossily.
pub fn describe(parts: &http::request::Parts, body_length: u64) -> Value {
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_length": body_length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_method_path_query_headers_and_length() {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/orders?x=1")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .unwrap_or_default();
        let (parts, ()) = request.into_parts();
        let doc = describe(&parts, 42);
        assert_eq!(doc["method"], "POST");
        assert_eq!(doc["path"], "/v1/orders");
        assert_eq!(doc["query"], "x=1");
        assert_eq!(doc["headers"]["x-a"], "1, 2");
        assert_eq!(doc["body_length"], 42);
    }
}
