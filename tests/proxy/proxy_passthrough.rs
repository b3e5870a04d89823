//! The proxy is invisible: bodies, streams, errors and headers pass through unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Harness, chat_body, start, start_with};
use futures_util::StreamExt;
use lingua_proxy::config::RouteConfig;
use lingua_proxy::headers::HEADER_COMPRESS;
use lingua_proxy::hook::Passthrough;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

async fn post(h: &Harness, path: &str, body: &[u8]) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-client")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn non_stream_bodies_are_byte_equal_both_ways() {
    let h = start().await;
    // Odd but valid formatting, unknown fields, escapes and number forms must survive.
    let body = br#"{ "model":"gpt-4o-mini", "messages":[{"role":"user","content":"h\u00e9llo \"q\"","x_extra":{"k":[1,2.50,1e3]}}],
      "unknown_top_level": {"nested": true}, "temperature": 0.70 }"#;
    let resp = post(&h, "/v1/chat/completions", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req_mock");
    let got = resp.bytes().await.unwrap();
    let seen = h.mock.state.last_request().unwrap();
    assert_eq!(
        seen.body.as_ref(),
        body.as_ref(),
        "upstream got other bytes"
    );
    assert_eq!(seen.path_and_query, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-client");
    assert_eq!(got, h.mock.state.responses()[0], "client got other bytes");
}

#[tokio::test]
async fn sse_first_event_arrives_before_upstream_finishes() {
    // Byte equality needs the upstream's exact stream: no usage chunk requested by the proxy.
    let h = start_with(|c| c.telemetry.stream_usage = false, Arc::new(Passthrough)).await;
    let body = serde_json::to_vec(&chat_body(true)).unwrap();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-chunk-delay-ms", "200")
        .header("x-mock-chunks", "5")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // The upstream still has ~1 s of chunks to send: nothing was buffered.
    assert_eq!(h.mock.state.streams_completed.load(Ordering::SeqCst), 0);
    let mut all = first.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(h.mock.state.streams_completed.load(Ordering::SeqCst), 1);
    assert_eq!(all, h.mock.state.responses()[0].to_vec());
}

#[tokio::test]
async fn sse_is_byte_equal() {
    let h = start().await;
    let mut body = chat_body(true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let raw = serde_json::to_vec(&body).unwrap();
    let got = post(&h, "/v1/chat/completions", &raw)
        .await
        .bytes()
        .await
        .unwrap();
    let sent = &h.mock.state.responses()[0];
    assert_eq!(&got, sent);
    let text = String::from_utf8(got.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        text.contains("\"choices\":[],\"usage\""),
        "usage chunk kept"
    );
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_stream() {
    let h = start().await;
    let body = serde_json::to_vec(&chat_body(true)).unwrap();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-chunk-delay-ms", "50")
        .header("x-mock-chunks", "400")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // 400 chunks at 50 ms would take 20 s; the mock must see the drop long before.
    let state = h.mock.state.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while state.streams_dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream stream kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state.streams_completed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn upstream_errors_pass_through() {
    let h = start().await;
    for (status, stream) in [
        (400, false),
        (404, true),
        (429, false),
        (500, true),
        (503, false),
    ] {
        let body = serde_json::to_vec(&chat_body(stream)).unwrap();
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .header("x-mock-status", status.to_string())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        if status == 429 {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        let got = resp.bytes().await.unwrap();
        assert_eq!(&got, h.mock.state.responses().last().unwrap(), "{status}");
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert!(v["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn models_and_embeddings_pass_through() {
    let h = start().await;
    let resp = h
        .client
        .get(h.url("/v1/models?limit=5"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(&got, &h.mock.state.responses()[0]);
    assert_eq!(
        h.mock.state.last_request().unwrap().path_and_query,
        "/v1/models?limit=5"
    );

    let body = br#"{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"float"}"#;
    let resp = post(&h, "/v1/embeddings", body).await;
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(&got, &h.mock.state.responses()[1]);
    assert_eq!(
        h.mock.state.last_request().unwrap().body.as_ref(),
        body.as_ref()
    );
}

#[tokio::test]
async fn invalid_json_is_forwarded_unchanged_and_counted() {
    let h = start().await;
    let body = b"{\"model\": \"gpt-4o\", \"messages\": [";
    let resp = post(&h, "/v1/chat/completions", body).await;
    // The upstream judges it (the mock says 400).
    assert_eq!(resp.status(), 400);
    assert_eq!(
        h.mock.state.last_request().unwrap().body.as_ref(),
        body.as_ref()
    );
    assert_eq!(h.proxy.state.stats.invalid_json.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn routes_choose_upstream_by_model() {
    let other = MockUpstream::start(MockConfig::default()).await.unwrap();
    let other_url = other.base_url();
    let h = start_with(
        |c| {
            c.routes = vec![RouteConfig {
                model_prefix: "claude-".into(),
                base_url: other_url,
                api_key_env: None,
                tokenizer: None,
                ..RouteConfig::default()
            }];
        },
        Arc::new(Passthrough),
    )
    .await;
    let mut body = chat_body(false);
    body["model"] = "claude-sonnet".into();
    let resp = post(
        &h,
        "/v1/chat/completions",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(other.state.request_count(), 1);
    assert_eq!(h.mock.state.request_count(), 0);

    // Non-chat JSON bodies are routed by their model too, and forwarded byte for byte.
    let emb = br#"{"input":"x","model":"claude-embed"}"#;
    post(&h, "/v1/embeddings", emb).await;
    assert_eq!(other.state.request_count(), 2);
    assert_eq!(
        other.state.last_request().unwrap().body.as_ref(),
        emb.as_ref()
    );

    let resp = post(
        &h,
        "/v1/chat/completions",
        &serde_json::to_vec(&chat_body(false)).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.mock.state.request_count(), 1);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = start_with(|c| c.max_body_bytes = 1024, Arc::new(Passthrough)).await;
    let big = serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]
    }))
    .unwrap();
    let resp = post(&h, "/v1/chat/completions", &big).await;
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // A streamed (chunked, no content-length) passthrough body over the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'a'; 512])).collect();
    let resp = h
        .client
        .post(h.url("/v1/files"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // The upstream never received a complete request.
    assert_eq!(h.mock.state.request_count(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_host_rewritten() {
    let h = start().await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("proxy-authorization", "Basic abc")
        .header(HEADER_COMPRESS, "off")
        .header("openai-organization", "org-1")
        .body(serde_json::to_vec(&chat_body(false)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.mock.state.last_request().unwrap();
    assert!(!seen.headers.contains_key("x-secret-hop"));
    assert!(!seen.headers.contains_key("proxy-authorization"));
    assert!(!seen.headers.contains_key(HEADER_COMPRESS));
    assert_eq!(seen.headers["openai-organization"], "org-1");
    assert_eq!(seen.headers["host"], h.mock.addr.to_string());
}

#[tokio::test]
async fn health_endpoints_answer_locally() {
    let h = start().await;
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = h.readyz().await;
    assert_eq!(r["status"], "ready");
    assert_eq!(h.mock.state.request_count(), 0);
    // the CPU tier and the kernels each runtime chose on it
    let cpu = &r["cpu"];
    let features: Vec<&str> = cpu["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let has = |f: &str| features.contains(&f);
    let avx2 = has("avx2") && has("fma");
    let avx512 = avx2 && has("avx512f") && has("avx512bw");
    let amx = has("amx-tile") && has("amx-int8") && cpu["amx_granted"] == true;
    let want = if avx512 && has("avx512vnni") && amx {
        "amx"
    } else if avx512 && has("avx512vnni") && has("avx512bf16") {
        "avx512-bf16"
    } else if avx512 && has("avx512vnni") {
        "avx512-vnni"
    } else if avx512 {
        "avx512"
    } else if avx2 && has("avxvnni") {
        "avx-vnni"
    } else if avx2 {
        "avx2-fma"
    } else {
        "portable"
    };
    // (the test harness sets no LINGUA_KERNELS ceiling)
    assert_eq!(cpu["tier"], want, "{cpu}");
    assert_eq!(cpu["detected"], want, "{cpu}");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(has("avx2"), std::arch::is_x86_feature_detected!("avx2"));
    let q8 = &cpu["kernels"]["q8_products"];
    let want_q8 = match want {
        "amx" => "int8 AMX tiles",
        "avx512-vnni" | "avx512-bf16" => "int8 AVX-512 VNNI",
        "avx-vnni" => "int8 AVX-VNNI",
        "portable" => "int8 portable",
        _ if has("avxvnni") => "int8 AVX-VNNI",
        _ => "int8 AVX2",
    };
    assert_eq!(q8, want_q8, "{cpu}");
    // Where vdpbf16ps runs, the faster of it and the widened AVX-512F kernel (timed once).
    let want_bf16: &[&str] = if avx512 && has("avx512vnni") && has("avx512bf16") {
        &["bf16 AVX512_BF16", "bf16 AVX-512F (widened)"]
    } else if avx512 {
        &["bf16 AVX-512F (widened)"]
    } else if avx2 {
        &["bf16 AVX2+FMA (widened)"]
    } else {
        &["bf16 portable"]
    };
    let bf16 = cpu["kernels"]["bf16_products"].as_str().unwrap_or_default();
    assert!(want_bf16.contains(&bf16), "{cpu}");
    let elementwise = if avx512 {
        "avx512"
    } else if avx2 {
        "avx2-fma"
    } else {
        "portable"
    };
    assert_eq!(cpu["kernels"]["elementwise"], elementwise, "{cpu}");
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let h = start_with(
        |c| c.upstream.base_url = format!("http://{dead_addr}/v1"),
        Arc::new(Passthrough),
    )
    .await;
    let resp = post(
        &h,
        "/v1/chat/completions",
        &serde_json::to_vec(&chat_body(false)).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");

    let h = start_with(
        |c| c.upstream.first_byte_timeout_ms = 200,
        Arc::new(Passthrough),
    )
    .await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-mock-first-byte-delay-ms", "2000")
        .body(serde_json::to_vec(&chat_body(false)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn idle_timeout_does_not_cut_a_flowing_stream() {
    // Chunks every 100 ms for ~1.5 s, idle timeout 400 ms: no total timeout applies.
    let h = start_with(|c| c.upstream.idle_timeout_ms = 400, Arc::new(Passthrough)).await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "100")
        .header("x-mock-chunks", "15")
        .body(serde_json::to_vec(&chat_body(true)).unwrap())
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn graceful_shutdown_lets_streams_finish() {
    let h = start().await;
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-mock-chunk-delay-ms", "50")
        .header("x-mock-chunks", "10")
        .body(serde_json::to_vec(&chat_body(true)).unwrap())
        .send()
        .await
        .unwrap();
    let addr = h.proxy.addr;
    let shutdown = tokio::spawn(h.proxy.shutdown());
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "stream cut short");
    shutdown.await.unwrap();
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let h = start_with(|c| c.telemetry.stream_usage = false, Arc::new(Passthrough)).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(h.url("/v1/chat/completions"))
        .body(serde_json::to_vec(&chat_body(true)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let got = resp.bytes().await.unwrap();
    assert_eq!(&got, &h.mock.state.responses()[0]);
}

/// `x-lingua-compress: off` forwards the client's exact bytes, streamed chat completions
/// included (the proxy adds no usage request); a route can switch the usage request off for
/// upstreams that reject `stream_options`.
#[tokio::test]
async fn compress_off_is_byte_for_byte_on_streams_and_routes_can_skip_usage() {
    let other = MockUpstream::start(MockConfig::default()).await.unwrap();
    let other_url = other.base_url();
    let h = start_with(
        |c| {
            c.routes = vec![RouteConfig {
                model_prefix: "plain-".into(),
                base_url: other_url,
                stream_usage: Some(false),
                ..RouteConfig::default()
            }];
        },
        Arc::new(common::heuristic_hook()),
    )
    .await;
    let raw = serde_json::to_vec(&chat_body(true)).unwrap();
    post(&h, "/v1/chat/completions", &raw)
        .await
        .bytes()
        .await
        .unwrap();
    let sent = h.mock.state.last_request().unwrap().body;
    assert!(
        String::from_utf8_lossy(&sent).contains("include_usage"),
        "the proxy asks for stream usage by default"
    );
    let got = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header(HEADER_COMPRESS, "off")
        .body(raw.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(h.mock.state.last_request().unwrap().body.as_ref(), &raw[..]);
    assert!(!String::from_utf8_lossy(&got).contains("\"usage\""));

    let mut body = chat_body(true);
    body["model"] = "plain-model".into();
    let raw = serde_json::to_vec(&body).unwrap();
    post(&h, "/v1/chat/completions", &raw)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(other.state.last_request().unwrap().body.as_ref(), &raw[..]);
}

/// A body of many tiny JSON values is never parsed into a tree past `max_json_values`: it goes
/// upstream byte for byte, uncompressed, and is counted; a body within the limit is compressed.
#[tokio::test]
async fn bodies_past_max_json_values_are_forwarded_unchanged() {
    let h = start_with(
        |c| {
            c.max_json_values = 400;
            c.compression.enabled = true;
        },
        Arc::new(common::heuristic_hook()),
    )
    .await;
    let fits = serde_json::to_vec(&common::compressible_body(false)).unwrap();
    let resp = post(&h, "/v1/chat/completions", &fits).await;
    assert_eq!(resp.status(), 200);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
    assert_ne!(
        h.mock.state.last_request().unwrap().body.as_ref(),
        fits.as_slice()
    );

    let mut body = common::compressible_body(false);
    let tiny = serde_json::json!({"role": "user", "content": "b"});
    for _ in 0..100 {
        body["messages"].as_array_mut().unwrap().push(tiny.clone());
    }
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = post(&h, "/v1/chat/completions", &raw).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .get(lingua_proxy::headers::HEADER_TOKENS_AFTER)
            .is_none()
    );
    assert_eq!(
        h.mock.state.last_request().unwrap().body.as_ref(),
        raw.as_slice()
    );
    assert_eq!(h.proxy.state.stats.too_complex.load(Ordering::Relaxed), 1);

    // `/v1/compress` is the judge of its own input: 400 in Headroom's shape.
    let call = serde_json::json!({"model": "gpt-4o", "messages": body["messages"]});
    let resp = post(&h, "/v1/compress", &serde_json::to_vec(&call).unwrap()).await;
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_json_values"),
        "{err}"
    );
}

/// `max_buffered_bytes` bounds the request bytes held at once: a request that does not fit
/// waits, then gets 503 in its provider's shape; once the bytes are released the next one
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bytes_past_the_budget_get_a_503() {
    let slow = MockUpstream::start(MockConfig {
        first_byte_delay: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let slow_url = slow.base_url();
    let h = start_with(
        |c| {
            c.upstream.base_url = slow_url;
            c.max_body_bytes = 64 * 1024;
            c.max_buffered_bytes = 64 * 1024;
            c.server.body_read_timeout_ms = 300;
        },
        Arc::new(Passthrough),
    )
    .await;
    let mut big = chat_body(false);
    big["messages"][1]["content"] = "x ".repeat(25_000).into();
    let big = serde_json::to_vec(&big).unwrap();
    let small = serde_json::to_vec(&chat_body(false)).unwrap();
    let first = {
        let (client, url, big) = (h.client.clone(), h.url("/v1/chat/completions"), big.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(big)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // The first request holds its 50 KB until its (slow) upstream answers.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut second = chat_body(false);
    second["messages"][1]["content"] = "y ".repeat(10_000).into();
    let resp = post(
        &h,
        "/v1/chat/completions",
        &serde_json::to_vec(&second).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "overloaded", "{err}");
    assert_eq!(err["error"]["type"], "api_error", "{err}");
    let resp = post(&h, "/v1/messages", &serde_json::to_vec(&second).unwrap()).await;
    assert_eq!(resp.status(), 503);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error", "Anthropic's shape: {err}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(post(&h, "/v1/chat/completions", &small).await.status(), 200);
    assert_eq!(slow.state.request_count(), 2);
}
