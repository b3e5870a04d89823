//! Helpers for the mock's own tests: one request to a fresh mock over a bare HTTP/1.1
//! connection (no client library, so the answer is seen as sent), and SSE parsing.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use http::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{MockConfig, MockUpstream};

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub fn content_type(&self) -> String {
        self.headers[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned()
    }
}

/// Sends `body` to `path` on `mock` over a plain HTTP/1.1 connection (`Connection: close`), and
/// reads the whole answer, de-chunking a chunked body.
pub async fn post_to(
    mock: &MockUpstream,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let body = body.to_string();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        mock.addr,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(mock.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut map = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').unwrap();
        map.append(
            http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    let mut rest = &raw[split + 4..];
    let chunked = map
        .get(http::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let at = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..at]).unwrap(), 16).unwrap();
            rest = &rest[at + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers: map,
        body,
    }
}

/// Starts a fresh mock and sends it one request.
pub async fn post(path: &str, body: &Value, headers: &[(&str, &str)]) -> (MockUpstream, Reply) {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let reply = post_to(&mock, path, body, headers).await;
    (mock, reply)
}

/// The JSON of every `data:` line of a data-only stream, `[DONE]` left out.
pub fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `(event name, data JSON)` of every event of a named-event stream; panics on an event
/// without exactly one `event:` and one `data:` line.
pub fn sse_named(text: &str) -> Vec<(String, Value)> {
    assert!(text.ends_with("\n\n"), "stream ends with a blank line");
    text.split("\n\n")
        .filter(|ev| !ev.is_empty())
        .map(|ev| {
            let mut lines = ev.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "one data line per event: {ev}");
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}
