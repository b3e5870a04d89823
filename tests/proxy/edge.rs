//! The hardened edge against the real proxy on loopback: path normalisation, Content-Length +
//! Transfer-Encoding, Accept-Encoding, auth on local endpoints, Origin/Host checks, timeouts and
//! the connection cap. Where the behaviour is about bytes on the wire, requests are written raw.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use crate::common;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{chat_body, start_with};
use http_body_util::{BodyExt, Full};
use lingua_proxy::hook::Passthrough;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Writes `request` on a fresh connection and reads until the proxy closes it (at most 5 s).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// The JSON body of a raw response (without chunked framing: the proxy's errors are sized).
fn body_of(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

fn chat_request(path: &str, extra_headers: &str) -> Vec<u8> {
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn dot_segments_and_encoded_slashes_are_refused_before_the_upstream() {
    let h = common::start().await;
    for path in [
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1/%2e/chat/completions",
        "/v1/%2E%2E/v1/chat/completions",
        "/v1/chat%2fcompletions",
        "/v1/chat%5Ccompletions",
        "/v1/chat\\completions",
        "/v1//chat/completions",
    ] {
        let resp = raw(h.proxy.addr, &chat_request(path, "")).await;
        assert_eq!(status_of(&resp), 400, "{path}: {resp}");
        let v = body_of(&resp);
        assert_eq!(v["error"]["code"], "invalid_path", "{path}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        h.mock.state.request_count(),
        0,
        "a refused path reached the upstream"
    );
    // hyper leaves the path alone: without the check, `/v1/./chat/completions` would have been
    // forwarded (the URL parser resolves it) without being intercepted.
    let resp = raw(h.proxy.addr, &chat_request("/v1/chat/completions", "")).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(h.mock.state.request_count(), 1);
    assert_eq!(
        lingua_proxy::server::Stats::get(&h.proxy.state.stats.rejected_edge),
        8
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let h = common::start().await;
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for order in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\n{order}\r\n{chunked}"
        );
        let resp = raw(h.proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&resp), 400, "{resp}");
        assert_eq!(body_of(&resp)["error"]["code"], "ambiguous_length");
    }
    // an ordinary request first, then the ambiguous one, pipelined on one connection
    let ok = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let bad = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunked}"
    );
    let resp = raw(h.proxy.addr, format!("{ok}{bad}").as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("ambiguous_length"), "{resp}");
    assert_eq!(
        h.mock.state.request_count(),
        1,
        "only the unambiguous request went upstream"
    );
    // chunked alone is fine
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{chunked}"
    );
    assert_eq!(status_of(&raw(h.proxy.addr, req.as_bytes()).await), 200);
    assert_eq!(h.mock.state.request_count(), 2);
}

// ---------- Accept-Encoding ----------

/// An upstream that gzips its answers whenever the request allows it, and records the
/// Accept-Encoding it got.
async fn gzip_upstream() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let ae = req
                            .headers()
                            .get(http::header::ACCEPT_ENCODING)
                            .map(|v| v.to_str().unwrap().to_owned());
                        record.lock().unwrap().push(ae.clone());
                        async move {
                            let _ = req.into_body().collect().await;
                            let body = serde_json::json!({
                            "id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "hello"}}],
                            "usage": {"prompt_tokens": 21, "completion_tokens": 1, "total_tokens": 22}
                        })
                        .to_string();
                            let gzip = ae.is_some_and(|v| v.contains("gzip"));
                            let mut resp = http::Response::builder()
                                .header("content-type", "application/json");
                            let bytes = if gzip {
                                resp = resp.header("content-encoding", "gzip");
                                let mut e = flate2::write::GzEncoder::new(
                                    Vec::new(),
                                    flate2::Compression::default(),
                                );
                                std::io::Write::write_all(&mut e, body.as_bytes()).unwrap();
                                e.finish().unwrap()
                            } else {
                                body.into_bytes()
                            };
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from(bytes))).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test]
async fn intercepted_requests_ask_for_identity_and_passthrough_keeps_the_client_header() {
    let (url, seen) = gzip_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let log = events.clone();
    let h = start_with(
        move |c| {
            c.upstream.base_url = url;
            c.telemetry.events_path = Some(log);
        },
        Arc::new(Passthrough),
    )
    .await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("accept-encoding", "gzip, br")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-encoding").is_none());
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(seen.lock().unwrap()[0].as_deref(), Some("identity"));
    let logged = common::read_events(&events, 1).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(
        logged[0].usage.as_ref().unwrap().prompt_tokens,
        21,
        "usage captured"
    );

    // passthrough: the client's header goes upstream and the gzip answer comes back as is
    let resp = h
        .client
        .get(h.url("/v1/models"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap()[1].as_deref(), Some("gzip"));
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let bytes = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("hello"));
}

// ---------- auth on local endpoints ----------

#[tokio::test]
async fn local_endpoints_need_a_key_except_public_paths() {
    // SAFETY: variable names unique to this test binary.
    unsafe {
        std::env::set_var("LP_EDGE_PROXY_KEYS", "pk-edge");
        std::env::set_var("LP_EDGE_UPSTREAM_KEY", "sk-up");
    }
    let h = start_with(
        |c| {
            c.auth.keys_env = Some("LP_EDGE_PROXY_KEYS".into());
            c.upstream.api_key_env = Some("LP_EDGE_UPSTREAM_KEY".into());
        },
        Arc::new(Passthrough),
    )
    .await;
    for path in ["/metrics", "/stats", "/dashboard", "/readyz"] {
        let resp = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let basic = resp.headers().get("www-authenticate").is_some();
        assert_eq!(basic, path == "/dashboard", "{path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        let resp = h
            .client
            .get(h.url(path))
            .bearer_auth("pk-edge")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // a browser login: any user name, the key as password
    let resp = h
        .client
        .get(h.url("/stats"))
        .basic_auth("me", Some("pk-edge"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = h
        .client
        .get(h.url("/stats"))
        .basic_auth("pk-edge", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Basic is not a proxy key for proxied paths
    let resp = h
        .client
        .get(h.url("/v1/models"))
        .basic_auth("me", Some("pk-edge"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        h.client
            .get(h.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // public_paths opens the listed endpoints only
    unsafe { std::env::set_var("LP_EDGE_PROXY_KEYS_2", "pk-two") };
    let h = start_with(
        |c| {
            c.auth.keys_env = Some("LP_EDGE_PROXY_KEYS_2".into());
            c.upstream.api_key_env = Some("LP_EDGE_UPSTREAM_KEY".into());
            c.auth.public_paths = vec!["/readyz".into(), "/metrics".into()];
        },
        Arc::new(Passthrough),
    )
    .await;
    for (path, status) in [
        ("/readyz", 200),
        ("/metrics", 200),
        ("/healthz", 401),
        ("/stats", 401),
    ] {
        let resp = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
    }
}

// ---------- Origin and Host ----------

#[tokio::test]
async fn foreign_origins_and_rebound_hosts_are_refused() {
    let h = common::start().await;
    let port = h.proxy.addr.port();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "forbidden");
    let resp = h
        .client
        .get(h.url("/stats"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // same-origin pages (the dashboard) pass
    let resp = h
        .client
        .get(h.url("/stats"))
        .header("origin", format!("http://127.0.0.1:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // DNS rebinding: the page's own name arrives as Host
    for host in ["evil.example", &format!("evil.example:{port}"), "10.1.2.3"] {
        let req = format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = raw(h.proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&resp), 403, "{host}: {resp}");
    }
    let req =
        format!("GET /v1/models HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&raw(h.proxy.addr, req.as_bytes()).await), 200);
    assert_eq!(
        h.mock.state.request_count(),
        1,
        "only the loopback-named request went upstream"
    );

    // a listed origin passes; the Host check is off once proxy keys are required
    unsafe {
        std::env::set_var("LP_EDGE_ORIGIN_KEYS", "pk-o");
        std::env::set_var("LP_EDGE_ORIGIN_UP", "sk-o");
    }
    let h = start_with(
        |c| {
            c.server.allowed_origins = vec!["https://app.example".into()];
            c.auth.keys_env = Some("LP_EDGE_ORIGIN_KEYS".into());
            c.upstream.api_key_env = Some("LP_EDGE_ORIGIN_UP".into());
        },
        Arc::new(Passthrough),
    )
    .await;
    for (origin, status) in [("https://app.example", 200), ("https://evil.example", 403)] {
        let resp = h
            .client
            .get(h.url("/v1/models"))
            .header("origin", origin)
            .bearer_auth("pk-o")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{origin}");
    }
    let req = "GET /v1/models HTTP/1.1\r\nHost: proxy.internal.example\r\nAuthorization: Bearer pk-o\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw(h.proxy.addr, req.as_bytes()).await), 200);
}

// ---------- timeouts and the connection cap ----------

/// Reads until EOF; returns what came and how long it took (None: still open after `within`).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let t = Instant::now();
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some((String::from_utf8_lossy(&out).into_owned(), t.elapsed())),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let h = start_with(
        |c| {
            c.server.header_read_timeout_ms = 300;
            c.server.idle_timeout_ms = 600;
        },
        Arc::new(Passthrough),
    )
    .await;
    // a head that never ends
    let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let (got, took) = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("a slow head must not hold the connection");
    assert!(!got.contains("200 OK"), "{got}");
    assert!(took >= Duration::from_millis(250), "{took:?}");

    // a connection that sends nothing at all
    let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("a silent connection must not be held");
    assert!(got.is_empty(), "{got}");

    // a keep-alive connection that goes quiet after one request
    let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("an idle keep-alive connection must be closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn slow_body_gets_408_and_nothing_reaches_the_upstream() {
    let h = start_with(
        |c| c.server.body_read_timeout_ms = 400,
        Arc::new(Passthrough),
    )
    .await;
    let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    // trickle a few bytes, each well within the timeout, never finishing
    let mut got = Vec::new();
    let t = Instant::now();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b" ").await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert_eq!(status_of(&got), 408, "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(h.mock.state.request_count(), 0);
}

#[tokio::test]
async fn http2_connections_get_keep_alive_pings() {
    let h = start_with(
        |c| {
            c.server.http2_keep_alive_interval_ms = 200;
            c.server.http2_keep_alive_timeout_ms = 5_000;
        },
        Arc::new(Passthrough),
    )
    .await;
    let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // an empty SETTINGS frame
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut ping = false;
    while Instant::now() < deadline && !ping {
        let mut head = [0u8; 9];
        if tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
            .await
            .is_err()
        {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match (head[3], head[4]) {
            // SETTINGS without ACK: acknowledge it
            (4, 0) => s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap(),
            // PING without ACK
            (6, 0) => ping = true,
            _ => {}
        }
    }
    assert!(ping, "no HTTP/2 PING within 3 s");
}

#[tokio::test]
async fn max_connections_makes_new_connections_wait() {
    let h = start_with(|c| c.server.max_connections = 2, Arc::new(Passthrough)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(h.proxy.addr).await.unwrap();
        // a request, so the connection is surely accepted and counted
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(h.proxy.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served past max_connections = 2"
    );
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(3), third.read_exact(&mut buf))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

/// A transfer coding other than `chunked` (`gzip, chunked`) is refused with 501 before anything
/// goes upstream: decoding the chunks would drop the gzip coding and forward gzip bytes as
/// plain JSON.
#[tokio::test]
async fn unknown_transfer_codings_are_refused() {
    let h = common::start().await;
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for coding in ["gzip, chunked", "deflate,chunked", "x-custom, chunked"] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n{chunked}"
        );
        let resp = raw(h.proxy.addr, req.as_bytes()).await;
        assert_eq!(status_of(&resp), 501, "{coding}: {resp}");
        assert_eq!(
            body_of(&resp)["error"]["code"],
            "unsupported_transfer_coding"
        );
    }
    assert_eq!(h.mock.state.request_count(), 0);
    // chunked alone (any case) still goes through
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: Chunked\r\n\r\n{chunked}"
    );
    let resp = raw(h.proxy.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
}

/// The Content-Length + Transfer-Encoding refusal cannot be bypassed by an earlier request on
/// the same connection that stops the framing scanner (an `Upgrade`, `h2c`, `CONNECT`): the
/// answer to that request closes the connection, and the ambiguous request never goes upstream.
#[tokio::test]
async fn an_earlier_request_cannot_switch_the_framing_check_off() {
    let h = common::start().await;
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let smuggled = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
    );
    for first in [
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
    ] {
        let resp = raw(h.proxy.addr, format!("{first}{smuggled}").as_bytes()).await;
        assert!(
            resp.to_ascii_lowercase().contains("connection: close")
                || resp.contains("ambiguous_length"),
            "{first:?}: {resp}"
        );
        assert_eq!(h.mock.state.request_count(), 0, "{first:?}: {resp}");
    }
    // A plain request on a fresh connection still works.
    let resp = raw(h.proxy.addr, &chat_request("/v1/chat/completions", "")).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
}
