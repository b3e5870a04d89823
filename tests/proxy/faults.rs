//! The fault suite: the proxy in front of upstreams (and with clients and scorers) that
//! misbehave, each on loopback. Every case asserts what the client gets, what the upstream got,
//! what the event log, the proxy's counters and `/metrics` say, and that the next ordinary
//! request is compressed normally.
//!
//! Each case routes its own model prefix (`<case>-`) to the misbehaving upstream, so its
//! `lingua_requests_total{route="<case>-"}` series is its own although the Prometheus recorder
//! is shared by the whole test binary; the ordinary request goes to the default route (the mock).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::faults::{
    RawUpstream, Script, chunk, find, full_backlog, raw_exchange, refused_port, sse_content,
    sse_head,
};
use common::{compressible_body, read_events, token_counts};
use futures_util::StreamExt;
use lingua_proxy::compress::{CompressionConfig, Llmlingua2Compressor, Policy, ScorerKind};
use lingua_proxy::config::{Config, RouteConfig};
use lingua_proxy::headers::{HEADER_SKIPPED, HEADER_TOKENS_AFTER};
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::model::{Interrupted, WorkCtx};

use lingua_proxy::scorer::ScorerError;
use lingua_proxy::server::{ServerHandle, Stats};
use lingua_proxy::telemetry::Event;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};
use serde_json::{Value, json};

/// A word that makes [`fault_step`] panic.
const PANIC_WORD: &str = "panicword";
/// A word that makes [`fault_step`] take [`SLOW`] per call.
const SLOW_WORD: &str = "slowword";
const SLOW: Duration = Duration::from_secs(3);

/// Slow scoring calls that stopped early, by why (deadline, cancelled), over the whole binary.
static STOPPED_DEADLINE: AtomicUsize = AtomicUsize::new(0);
static STOPPED_CANCELLED: AtomicUsize = AtomicUsize::new(0);

/// The step [`fault_hook`]'s scorer runs before the heuristic scores: it panics or stalls when
/// a chunk carries a trigger word. A stall watches its work context, as a real scorer's
/// scheduler does.
fn fault_step(chunks: &[String], ctx: &WorkCtx) -> Result<(), ScorerError> {
    if chunks.iter().any(|c| c.contains(PANIC_WORD)) {
        panic!("the test scorer panics on request");
    }
    if chunks.iter().any(|c| c.contains(SLOW_WORD)) {
        let until = Instant::now() + SLOW;
        while Instant::now() < until {
            if let Err(why) = ctx.check() {
                match why {
                    Interrupted::Deadline => &STOPPED_DEADLINE,
                    Interrupted::Cancelled => &STOPPED_CANCELLED,
                }
                .fetch_add(1, Ordering::SeqCst);
                return Err(why.into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

fn fault_hook(deadline_ms: u64) -> Arc<CompressionHook> {
    fault_hook_with(deadline_ms, |_| {})
}

fn fault_hook_with(
    deadline_ms: u64,
    tweak: impl FnOnce(&mut CompressionConfig),
) -> Arc<CompressionHook> {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        deadline_ms,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    tweak(&mut cfg);
    let scorer = common::HeuristicWith::new("fault-test", fault_step);
    let compressor = Arc::new(Llmlingua2Compressor::new(Arc::new(scorer)));
    Arc::new(CompressionHook::new(Arc::new(
        Policy::new(cfg, compressor).unwrap(),
    )))
}

/// One fault case: the mock (default route), the proxy, and the case's own route.
struct Fx {
    name: String,
    mock: MockUpstream,
    proxy: ServerHandle,
    client: reqwest::Client,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fx {
    /// `route_base`: where `<name>-*` models go (`None`: the mock).
    async fn start(
        name: &str,
        route_base: Option<String>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with(name, route_base, tweak, fault_hook(2_000)).await
    }

    async fn start_with(
        name: &str,
        route_base: Option<String>,
        tweak: impl FnOnce(&mut Config),
        hook: Arc<CompressionHook>,
    ) -> Self {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let mut config = common::base_config(&mock);
        config.routes.push(RouteConfig {
            model_prefix: format!("{name}-"),
            base_url: route_base.unwrap_or_else(|| mock.base_url()),
            api_key_env: None,
            tokenizer: None,
            ..RouteConfig::default()
        });
        config.telemetry.events_path = Some(events.clone());
        config.telemetry.metrics = true;
        tweak(&mut config);
        config.validate().unwrap();
        let proxy = lingua_proxy::server::start(config, hook).await.unwrap();
        Self {
            name: name.to_owned(),
            mock,
            proxy,
            client: reqwest::Client::new(),
            events,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/chat/completions", self.proxy.addr)
    }

    fn route(&self) -> String {
        format!("{}-", self.name)
    }

    /// The compressible body, sent to this case's route.
    fn body(&self, stream: bool) -> Value {
        let mut b = compressible_body(stream);
        b["model"] = json!(format!("{}-model", self.name));
        b
    }

    async fn post(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url())
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn events(&self, n: usize) -> Vec<Event> {
        read_events(&self.events, n).await
    }

    /// The one event this case's route wrote.
    async fn route_event(&self) -> Event {
        let events = self.events(1).await;
        let mine: Vec<&Event> = events.iter().filter(|e| e.route == self.route()).collect();
        assert_eq!(mine.len(), 1, "{events:?}");
        mine[0].clone()
    }

    fn stat(&self, f: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        Stats::get(f(&self.proxy.state.stats))
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.proxy.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        common::metric_sum(&text, name, labels)
    }

    async fn route_requests(&self, status: &str) -> f64 {
        let route = self.route();
        self.metric(
            "lingua_requests_total",
            &[("route", &route), ("status", status)],
        )
        .await
    }

    /// An ordinary request on the default route right after the fault: answered and compressed.
    async fn assert_next_compressed(&self) {
        let before = self.mock.state.request_count();
        let body = compressible_body(false);
        let resp = self.post(&body).await;
        assert_eq!(resp.status(), 200);
        let (tokens_before, tokens_after) = token_counts(&resp);
        assert!(
            tokens_after < tokens_before,
            "{tokens_after} !< {tokens_before}"
        );
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(self.mock.state.request_count(), before + 1);
        let got = self.mock.state.last_request().unwrap();
        let sent: Value = serde_json::from_slice(&got.body).unwrap();
        assert_ne!(
            sent["messages"][0]["content"],
            body["messages"][0]["content"]
        );
    }
}

/// Asserts OpenAI's error shape and returns `error.code`.
async fn openai_error(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some(), "{v}");
    e["code"].as_str().unwrap().to_owned()
}

/// Reads a response body to its end; `Err` when it ended with an error.
async fn read_body(resp: reqwest::Response) -> (Vec<u8>, Result<(), String>) {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (out, Err(e.to_string())),
        }
    }
    (out, Ok(()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_a_502() {
    let base = format!("http://127.0.0.1:{}/v1", refused_port());
    let fx = Fx::start("refused", Some(base), |_| {}).await;
    let resp = fx.post(&fx.body(false)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(openai_error(resp).await, "upstream_unreachable");
    let e = fx.route_event().await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (502, Some("upstream_unreachable"))
    );
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    assert_eq!(fx.stat(|s| &s.upstream_errors), 1);
    assert_eq!(fx.route_requests("502").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_is_a_502() {
    let fx = Fx::start(
        "dns",
        Some("http://upstream.lingua-proxy-test.invalid/v1".into()),
        |_| {},
    )
    .await;
    let resp = fx.post(&fx.body(true)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(openai_error(resp).await, "upstream_unreachable");
    let e = fx.route_event().await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (502, Some("upstream_unreachable"))
    );
    assert_eq!(fx.stat(|s| &s.upstream_errors), 1);
    assert_eq!(fx.route_requests("502").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_a_504() {
    let (listener, _fillers) = full_backlog().await;
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let fx = Fx::start("connect", Some(base), |c| {
        c.upstream.connect_timeout_ms = 300;
    })
    .await;
    let t = Instant::now();
    let resp = fx.post(&fx.body(false)).await;
    assert_eq!(resp.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(openai_error(resp).await, "upstream_timeout");
    let e = fx.route_event().await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (504, Some("upstream_timeout"))
    );
    assert_eq!(fx.stat(|s| &s.upstream_timeouts), 1);
    assert_eq!(fx.route_requests("504").await, 1.0);
    fx.assert_next_compressed().await;
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_is_a_504() {
    let fx = Fx::start("firstbyte", None, |c| {
        c.upstream.first_byte_timeout_ms = 300;
    })
    .await;
    let resp = fx
        .client
        .post(fx.url())
        .header("x-mock-first-byte-delay-ms", "3000")
        .json(&fx.body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(openai_error(resp).await, "upstream_timeout");
    // The upstream got the (compressed) request once: no retry.
    assert_eq!(fx.mock.state.request_count(), 1);
    let got: Value = serde_json::from_slice(&fx.mock.state.requests()[0].body).unwrap();
    assert_ne!(
        got["messages"][0]["content"],
        fx.body(true)["messages"][0]["content"]
    );
    let e = fx.route_event().await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (504, Some("upstream_timeout"))
    );
    assert_eq!(fx.stat(|s| &s.upstream_timeouts), 1);
    assert_eq!(fx.route_requests("504").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_stream_never_looks_like_a_clean_end() {
    let parts = vec![
        sse_head(),
        chunk(sse_content("Hello").as_bytes()),
        chunk(sse_content(" world").as_bytes()),
    ];
    let raw = RawUpstream::start(Script::WriteThenReset {
        parts,
        pause: Duration::from_millis(50),
    })
    .await;
    let fx = Fx::start("reset", Some(raw.base_url()), |_| {}).await;

    // An HTTP client sees the stream end with an error, after the chunks that did arrive.
    let resp = fx.post(&fx.body(true)).await;
    assert_eq!(resp.status(), 200);
    let (got, end) = read_body(resp).await;
    assert!(
        end.is_err(),
        "a reset upstream must not end the stream cleanly"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("Hello") && text.contains(" world"), "{text}");
    assert!(!text.contains("[DONE]"));

    // On the wire: the chunked body never gets its terminating chunk.
    let body = serde_json::to_vec(&fx.body(true)).unwrap();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (wire, _) = raw_exchange(fx.proxy.addr, &request, Duration::from_secs(10)).await;
    let wire_text = String::from_utf8_lossy(&wire);
    assert!(wire_text.starts_with("HTTP/1.1 200"), "{wire_text}");
    assert!(
        wire_text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
    );
    assert!(wire_text.contains(" world"), "{wire_text}");
    assert!(
        find(&wire, b"\r\n0\r\n\r\n").is_none(),
        "the terminating chunk was sent: {wire_text}"
    );

    assert_eq!(raw.request_count(), 2);
    let events = fx.events(2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e.route, fx.route());
        assert_eq!(
            (e.status, e.error.as_deref()),
            (200, Some("upstream_body_error"))
        );
    }
    assert_eq!(fx.route_requests("200").await, 2.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_the_announced_length_is_an_error() {
    let body = br#"{"id":"chatcmpl-raw","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"cut"#;
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n";
    let raw = RawUpstream::start(Script::WriteThenReset {
        parts: vec![head.to_vec(), body.to_vec()],
        pause: Duration::from_millis(50),
    })
    .await;
    let fx = Fx::start("resetlen", Some(raw.base_url()), |_| {}).await;
    let resp = fx.post(&fx.body(false)).await;
    assert_eq!(resp.status(), 200);
    let (got, end) = read_body(resp).await;
    assert!(
        end.is_err(),
        "a body shorter than its content-length must fail"
    );
    assert!(got.len() < 4000);
    let e = fx.route_event().await;
    assert_eq!(e.error.as_deref(), Some("upstream_body_error"));
    assert_eq!(e.usage, None);
    assert_eq!(raw.request_count(), 1);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_upstream_streams_through_unbuffered() {
    let fx = Fx::start("trickle", None, |c| {
        c.upstream.idle_timeout_ms = 2_000;
    })
    .await;
    let sent = Instant::now();
    let resp = fx
        .client
        .post(fx.url())
        .header("x-mock-chunk-delay-ms", "40")
        .header("x-mock-chunks", "25")
        .json(&fx.body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut first_at = None;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        if first_at.is_none() && !c.is_empty() {
            first_at = Some(sent.elapsed());
        }
        got.extend_from_slice(&c);
    }
    let total = sent.elapsed();
    // Each piece is forwarded as it comes: the first long before the last.
    assert!(
        first_at.unwrap() + Duration::from_millis(500) < total,
        "first byte at {first_at:?}, end at {total:?}"
    );
    let text = String::from_utf8(got).unwrap();
    for i in 0..25 {
        assert!(
            text.contains(&format!("\"w{i} \"")),
            "piece {i} missing: {text}"
        );
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // The usage chunk the proxy asked for was captured and kept from the client.
    assert!(!text.contains("\"usage\""), "{text}");
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref()), (200, None));
    assert!(e.usage.is_some(), "the usage chunk was captured");
    assert_eq!(fx.mock.state.streams_completed.load(Ordering::SeqCst), 1);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstream_hits_the_idle_timeout() {
    let fx = Fx::start("stall", None, |c| {
        c.upstream.idle_timeout_ms = 300;
    })
    .await;
    let resp = fx
        .client
        .post(fx.url())
        .header("x-mock-chunk-delay-ms", "3000")
        .header("x-mock-chunks", "3")
        .json(&fx.body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (got, end) = read_body(resp).await;
    assert!(end.is_err(), "a stalled stream must end with an error");
    assert!(!String::from_utf8_lossy(&got).contains("[DONE]"));
    let e = fx.route_event().await;
    assert_eq!(e.error.as_deref(), Some("upstream_body_error"));
    // The proxy let go of the upstream.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.mock.state.streams_dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_before_headers_passes_through() {
    let fx = Fx::start("5xx", None, |_| {}).await;
    let resp = fx
        .client
        .post(fx.url())
        .header("x-mock-status", "503")
        .json(&fx.body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.bytes().await.unwrap();
    // The upstream's own error body, byte for byte.
    assert_eq!(body, fx.mock.state.responses()[0]);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "server_error");
    assert_eq!(fx.mock.state.request_count(), 1);
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref()), (503, None));
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    // The proxy reached the upstream: not an upstream error of the proxy's own.
    assert_eq!(fx.stat(|s| &s.upstream_errors), 0);
    assert_eq!(fx.route_requests("503").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_after_headers_reaches_the_client() {
    let error_event = "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let parts = vec![
        sse_head(),
        chunk(sse_content("partial").as_bytes()),
        chunk(error_event.as_bytes()),
        b"0\r\n\r\n".to_vec(),
    ];
    let raw = RawUpstream::start(Script::Write {
        parts,
        pause: Duration::from_millis(20),
    })
    .await;
    let fx = Fx::start("after", Some(raw.base_url()), |_| {}).await;
    let resp = fx.post(&fx.body(true)).await;
    assert_eq!(resp.status(), 200);
    let (got, end) = read_body(resp).await;
    assert!(end.is_ok(), "{end:?}");
    let expected = [sse_content("partial"), error_event.to_owned()].concat();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref(), e.usage), (200, None, None));
    assert_eq!(raw.request_count(), 1);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sse_passes_through_byte_for_byte() {
    // Not JSON, invalid UTF-8, no blank line between events, a usage-looking fragment, a `\r`
    // terminator, a comment, and a last event without its blank line.
    let mut bytes: Vec<Vec<u8>> = vec![
        b"data: {not json\n\n".to_vec(),
        b"data: \xff\xfe\"usage\"\n\n".to_vec(),
        b"data: {\"usage\": {\"prompt_tokens\": \"many\"}}\ndata: second line\n\n".to_vec(),
        b": keep-alive\r\r".to_vec(),
        b"event: x\ndata: [DONE".to_vec(),
    ];
    let body: Vec<u8> = bytes.concat();
    let mut parts = vec![sse_head()];
    parts.extend(bytes.drain(..).map(|b| chunk(&b)));
    parts.push(b"0\r\n\r\n".to_vec());
    let raw = RawUpstream::start(Script::Write {
        parts,
        pause: Duration::from_millis(5),
    })
    .await;
    let fx = Fx::start("malformed", Some(raw.base_url()), |c| {
        // The client asks for usage itself, so the proxy strips nothing.
        c.telemetry.stream_usage = true;
    })
    .await;
    let mut req = fx.body(true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = fx.post(&req).await;
    assert_eq!(resp.status(), 200);
    let (got, end) = read_body(resp).await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(got, body);
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref(), e.usage), (200, None, None));
    // With the proxy's own usage request (stripping on), nothing breaks either.
    let resp = fx.post(&fx.body(true)).await;
    assert_eq!(resp.status(), 200);
    let (_, end) = read_body(resp).await;
    assert!(end.is_ok(), "{end:?}");
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_mid_stream_releases_the_upstream() {
    let fx = Fx::start("gone", None, |_| {}).await;
    let resp = fx
        .client
        .post(fx.url())
        .header("x-mock-chunk-delay-ms", "100")
        .header("x-mock-chunks", "100")
        .json(&fx.body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.mock.state.streams_dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fx.mock.state.streams_completed.load(Ordering::SeqCst), 0);
    let e = fx.route_event().await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (200, Some("client_disconnected"))
    );
    assert_eq!(fx.route_requests("200").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_panic_fails_open() {
    // A generous deadline: unwinding (and printing a backtrace) must not count as slowness.
    let fx = Fx::start_with("panic", None, |_| {}, fault_hook(60_000)).await;
    let mut body = fx.body(false);
    let system = format!(
        "{} {PANIC_WORD}",
        body["messages"][0]["content"].as_str().unwrap()
    );
    body["messages"][0]["content"] = json!(system);
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = fx
        .client
        .post(fx.url())
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_SKIPPED], "panic");
    assert!(resp.headers().get(HEADER_TOKENS_AFTER).is_none());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    // The upstream got the client's bytes unchanged.
    assert_eq!(fx.mock.state.requests()[0].body, raw);
    let e = fx.route_event().await;
    assert_eq!(e.compression.as_deref(), Some("fail_open"));
    assert_eq!(e.fail_open.as_deref(), Some("panic"));
    assert!(
        fx.metric("lingua_compression_fail_open_total", &[("reason", "panic")])
            .await
            >= 1.0
    );
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorer_slower_than_the_deadline_fails_open() {
    let fx = Fx::start_with("slow", None, |_| {}, fault_hook(300)).await;
    let mut body = fx.body(false);
    let system = format!(
        "{} {SLOW_WORD}",
        body["messages"][0]["content"].as_str().unwrap()
    );
    body["messages"][0]["content"] = json!(system);
    let raw = serde_json::to_vec(&body).unwrap();
    let t = Instant::now();
    let resp = fx
        .client
        .post(fx.url())
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    // Answered without waiting for the scorer.
    assert!(t.elapsed() < SLOW, "{:?}", t.elapsed());
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_SKIPPED], "deadline");
    assert_eq!(fx.mock.state.requests()[0].body, raw);
    // The scorer was told to stop: no work of this request runs on after its deadline.
    wait_for(
        || STOPPED_DEADLINE.load(Ordering::SeqCst) >= 1,
        "the scorer never saw the deadline",
    )
    .await;
    let e = fx.route_event().await;
    assert_eq!(e.compression.as_deref(), Some("fail_open"));
    assert_eq!(e.fail_open.as_deref(), Some("deadline"));
    assert!(
        fx.metric(
            "lingua_compression_fail_open_total",
            &[("reason", "deadline")]
        )
        .await
            >= 1.0
    );
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_forwarded_unjudged() {
    let fx = Fx::start("nested", None, |_| {}).await;
    let depth = 100_000;
    let raw = format!(
        r#"{{"model":"nested-model","messages":[{{"role":"user","content":"hi"}}],"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let resp = fx
        .client
        .post(fx.url())
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    // The proxy cannot parse it (serde_json's depth limit) and lets the upstream judge: the
    // mock answers 400 in OpenAI's shape.
    assert_eq!(resp.status(), 400);
    assert_eq!(openai_error(resp).await, "invalid_request");
    assert_eq!(fx.mock.state.requests()[0].body, raw.as_bytes());
    assert_eq!(fx.stat(|s| &s.invalid_json), 1);

    // Deep nesting inside a message's text reaches span detection: answered normally.
    let mut body = fx.body(false);
    let nested = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let system = format!(
        "{} {nested}",
        body["messages"][0]["content"].as_str().unwrap()
    );
    body["messages"][0]["content"] = json!(system);
    let resp = fx.post(&body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(fx.mock.state.request_count(), 2);
    let sent: Value = serde_json::from_slice(&fx.mock.state.requests()[1].body).unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 4);
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref()), (200, None));
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_json_string_is_forwarded_unchanged() {
    let fx = Fx::start("utf8", None, |_| {}).await;
    let bodies: [&[u8]; 2] = [
        b"{\"model\":\"utf8-model\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9 \xff\"}]}",
        br#"{"model":"utf8-model","messages":[{"role":"user","content":"lone \ud800 surrogate"}]}"#,
    ];
    for (i, raw) in bodies.iter().enumerate() {
        let resp = fx
            .client
            .post(fx.url())
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        // The proxy is not the judge; the upstream (the mock) rejects it in OpenAI's shape.
        assert_eq!(resp.status(), 400);
        assert_eq!(openai_error(resp).await, "invalid_request");
        assert_eq!(fx.mock.state.requests()[i].body, raw.to_vec());
    }
    assert_eq!(fx.stat(|s| &s.invalid_json), 2);
    // Not intercepted: no event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fx.events(0).await.is_empty());
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_get_431_and_never_reach_the_upstream() {
    let fx = Fx::start("headers", None, |_| {}).await;
    let big = "a".repeat(1024 * 1024);
    let request = format!("GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {big}\r\n\r\n");
    let (wire, _) = raw_exchange(fx.proxy.addr, request.as_bytes(), Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let many: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n{many}\r\n");
    let (wire, _) = raw_exchange(fx.proxy.addr, request.as_bytes(), Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(fx.mock.state.request_count(), 0);
    // A large header within the limits goes through intact.
    let value = "b".repeat(64 * 1024);
    let resp = fx
        .client
        .post(fx.url())
        .header("x-client-trace", &value)
        .json(&fx.body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        fx.mock.state.requests()[0].headers["x-client-trace"],
        value.as_str()
    );
    fx.assert_next_compressed().await;
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_mid_compression_cancels_it() {
    let fx = Fx::start_with("leaves", None, |_| {}, fault_hook(60_000)).await;
    let mut body = fx.body(false);
    let system = format!(
        "{} {SLOW_WORD}",
        body["messages"][0]["content"].as_str().unwrap()
    );
    body["messages"][0]["content"] = json!(system);
    let before = STOPPED_CANCELLED.load(Ordering::SeqCst);
    let err = fx
        .client
        .post(fx.url())
        .timeout(Duration::from_millis(300))
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The compression learns that nobody waits for it and stops.
    wait_for(
        || STOPPED_CANCELLED.load(Ordering::SeqCst) > before,
        "the scorer was never cancelled",
    )
    .await;
    // Nothing went upstream for the departed client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fx.mock.state.request_count(), 0);
    assert_eq!(fx.stat(|s| &s.intercepted), 1);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mb_message_is_forwarded_unscored() {
    let fx = Fx::start("huge", None, |_| {}).await;
    let mut body = fx.body(false);
    let base = body["messages"][0]["content"].as_str().unwrap().to_owned();
    let mut text = String::with_capacity(4 * 1024 * 1024 + base.len());
    let mut i = 0;
    while text.len() < 4 * 1024 * 1024 {
        text.push_str(&format!("Section {i}. {base}\n"));
        i += 1;
    }
    body["messages"][0]["content"] = json!(text);
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = fx
        .client
        .post(fx.url())
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_SKIPPED], "too_large");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    // Forwarded byte for byte.
    assert_eq!(fx.mock.state.requests()[0].body, raw);
    let e = fx.route_event().await;
    assert_eq!(e.compression.as_deref(), Some("skipped"));
    assert_eq!(e.fail_open.as_deref(), Some("too_large"));
    assert!(
        fx.metric(
            "lingua_compression_skipped_total",
            &[("reason", "too_large")]
        )
        .await
            >= 1.0
    );
    fx.assert_next_compressed().await;
}

/// Role names the proxy may use as `role` labels and `/stats` keys.
const BOUNDED_ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "other",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_role_request_keeps_labels_and_stats_bounded() {
    const ROLES: usize = 1_000_000;
    // A million messages of ~34 bytes do not fit the default 32 MiB body limit, their five
    // million JSON values are past `max_json_values` (the body would be forwarded unread), and
    // their million tokens would make the request too large to look at (`max_request_tokens`).
    let fx = Fx::start_with(
        "roles",
        None,
        |c| {
            c.max_body_bytes = 64 * 1024 * 1024;
            c.max_buffered_bytes = 2 * 1024 * 1024 * 1024;
            c.max_json_values = 6 * ROLES as u64;
        },
        fault_hook_with(60_000, |c| c.max_request_tokens = 4 * ROLES as u64),
    )
    .await;
    let mut raw = String::with_capacity(ROLES * 36);
    raw.push_str(r#"{"model":"roles-model","messages":["#);
    for i in 0..ROLES {
        if i > 0 {
            raw.push(',');
        }
        raw.push_str(&format!(r#"{{"role":"r{i}","content":"hi"}}"#));
    }
    raw.push_str("]}");
    let resp = fx
        .client
        .post(fx.url())
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    // Nothing to compress in "hi": the upstream got the client's bytes unchanged.
    assert_eq!(fx.mock.state.request_count(), 1);
    assert!(fx.mock.state.requests()[0].body == raw.as_bytes());

    // The event counts every message, under bounded role names.
    let e = fx.route_event().await;
    assert_eq!((e.status, e.error.as_deref()), (200, None));
    let tokens = e.tokens.as_ref().expect("the policy ran");
    assert_eq!(tokens.roles.keys().collect::<Vec<_>>(), ["other"], "{e:?}");
    assert!(tokens.before >= ROLES as u64, "{}", tokens.before);

    // /stats and /metrics: no invented role became a key or a label value.
    let stats: Value = fx
        .client
        .get(format!("http://{}/stats", fx.proxy.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&String> = stats["roles"].as_object().unwrap().keys().collect();
    assert!(keys.iter().any(|k| *k == "other"), "{keys:?}");
    assert!(
        keys.iter().all(|k| BOUNDED_ROLES.contains(&k.as_str())),
        "{keys:?}"
    );
    let exposition = fx
        .client
        .get(format!("http://{}/metrics", fx.proxy.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(exposition.len() < 1024 * 1024, "{} bytes", exposition.len());
    for label in exposition.split("role=\"").skip(1) {
        let value = label.split('"').next().unwrap();
        assert!(BOUNDED_ROLES.contains(&value), "role label {value:?}");
    }
    assert!(!exposition.contains("r999999"));
    assert_eq!(fx.route_requests("200").await, 1.0);
    fx.assert_next_compressed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_before_the_headers_writes_its_event() {
    let fx = Fx::start("early", None, |_| {}).await;
    let body = fx.body(false);
    let t = Instant::now();
    let err = fx
        .client
        .post(fx.url())
        .timeout(Duration::from_millis(300))
        .header("x-mock-first-byte-delay-ms", "2000")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The upstream got the compressed request, once.
    wait_for(
        || fx.mock.state.request_count() == 1,
        "the request never reached the upstream",
    )
    .await;
    let got = fx.mock.state.requests()[0].clone();
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["model"], body["model"]);
    assert_ne!(
        sent["messages"][0]["content"],
        body["messages"][0]["content"]
    );
    // The event is written when the client left, not when the upstream answered.
    let e = fx.route_event().await;
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        (e.status, e.error.as_deref()),
        (0, Some("client_disconnected"))
    );
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    assert!(e.latency_ms.total < 1900.0, "{}", e.latency_ms.total);
    assert_eq!(fx.stat(|s| &s.intercepted), 1);
    assert_eq!(fx.stat(|s| &s.upstream_errors), 0);
    assert_eq!(fx.route_requests("0").await, 1.0);
    assert_eq!(fx.route_requests("200").await, 0.0);
    fx.assert_next_compressed().await;
}
