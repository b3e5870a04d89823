//! A mock OpenAI-compatible upstream: a real HTTP server that answers chat completions (streamed
//! or not, tool calls included), `/models` and `/embeddings`, with `usage` counted by tiktoken and
//! a simulated provider prompt cache (`prompt_tokens_details.cached_tokens`).
//!
//! It backs the integration tests, the benchmarks and `cargo run --example mock-upstream`, so the
//! whole product can be tried offline. It records every request it receives and every response
//! body it produces, and notices when a client goes away mid-stream.
//!
//! Per-request knobs (request headers, which the proxy forwards untouched):
//! `x-mock-status: 429` answers with that status and an OpenAI-shaped error;
//! `x-mock-first-byte-delay-ms`, `x-mock-chunk-delay-ms` and `x-mock-chunks` shape streams.
//! A model named `mock-error-<status>` also answers with that status.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::compress::TokenizerKind;

type MockBody = UnsyncBoxBody<Bytes, Infallible>;

/// Fixed `created` timestamp so responses are reproducible.
const CREATED: u64 = 1_700_000_000;
/// Prompt caching granularity, as OpenAI documents it: prefixes of at least 1024 tokens, in
/// 128-token increments.
const CACHE_MIN_TOKENS: usize = 1024;
const CACHE_STEP: usize = 128;

/// How the mock paces its answers by default.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// Delay before the response headers.
    pub first_byte_delay: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            chunk_delay: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
        }
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path and query, as received.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the mock has seen and done; shared with tests.
#[derive(Debug, Default)]
pub struct MockState {
    requests: Mutex<Vec<RecordedRequest>>,
    /// Full response body produced for each request, in arrival order.
    responses: Mutex<Vec<Bytes>>,
    cache: Mutex<HashSet<[u8; 32]>>,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose client went away before the last byte was sent.
    pub streams_dropped: AtomicU64,
}

impl MockState {
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.requests.lock().ok().and_then(|r| r.last().cloned())
    }

    pub fn responses(&self) -> Vec<Bytes> {
        self.responses.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    fn record(&self, req: RecordedRequest) {
        if let Ok(mut r) = self.requests.lock() {
            r.push(req);
        }
    }

    fn record_response(&self, body: Bytes) {
        if let Ok(mut r) = self.responses.lock() {
            r.push(body);
        }
    }

    /// Longest cached prefix (in tokens) of `tokens`, then remembers this prompt's prefixes.
    fn cached_prefix(&self, tokens: &[u32]) -> usize {
        let Ok(mut cache) = self.cache.lock() else {
            return 0;
        };
        let mut hasher = Sha256::new();
        let mut cached = 0;
        let mut boundaries = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            hasher.update(t.to_le_bytes());
            let n = i + 1;
            if n >= CACHE_MIN_TOKENS && n % CACHE_STEP == 0 {
                let digest: [u8; 32] = hasher.clone().finalize().into();
                if cache.contains(&digest) {
                    cached = n;
                }
                boundaries.push(digest);
            }
        }
        cache.extend(boundaries);
        cached
    }
}

/// A running mock upstream.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    shutdown: watch::Sender<bool>,
}

impl MockUpstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            config,
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState::default());
        let (tx, mut rx) = watch::channel(false);
        let config = Arc::new(config);
        let st = state.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let st = st.clone();
                        let config = config.clone();
                        let service = service_fn(move |req| {
                            let st = st.clone();
                            let config = config.clone();
                            async move { Ok::<_, Infallible>(handle(st, config, req).await) }
                        });
                        let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                }
            }
        });
        Ok(Self {
            addr,
            state,
            shutdown: tx,
        })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bpe_for(model: &str) -> &'static tiktoken_rs::CoreBPE {
    TokenizerKind::for_model(model, TokenizerKind::O200kBase).bpe()
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn full_body(bytes: Bytes) -> MockBody {
    Full::new(bytes).boxed_unsync()
}

fn json_response(state: &MockState, status: StatusCode, value: &Value) -> Response<MockBody> {
    let bytes = Bytes::from(value.to_string());
    state.record_response(bytes.clone());
    let mut resp = Response::new(full_body(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-request-id", HeaderValue::from_static("req_mock"));
    h.insert("openai-processing-ms", HeaderValue::from_static("1"));
    resp
}

fn error_value(status: StatusCode, message: &str) -> Value {
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("requests", "rate_limit_exceeded"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn handle(
    state: Arc<MockState>,
    config: Arc<MockConfig>,
    req: Request<Incoming>,
) -> Response<MockBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        // The client aborted mid-body: no complete request arrived, so none is recorded.
        Err(_) => {
            return bad_request(&state, "incomplete body");
        }
    };
    state.record(RecordedRequest {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let first_byte = header_u64(&parts.headers, "x-mock-first-byte-delay-ms")
        .map(Duration::from_millis)
        .unwrap_or(config.first_byte_delay);
    if !first_byte.is_zero() {
        tokio::time::sleep(first_byte).await;
    }
    if let Some(status) = header_u64(&parts.headers, "x-mock-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return error_response(&state, status);
    }
    let path = parts.uri.path();
    if parts.method == Method::POST && path.ends_with("/chat/completions") {
        chat(&state, &config, &parts.headers, &body)
    } else if parts.method == Method::GET && path.ends_with("/models") {
        let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"]
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "lingua-mock"}))
            .collect();
        json_response(
            &state,
            StatusCode::OK,
            &json!({"object": "list", "data": data}),
        )
    } else if parts.method == Method::POST && path.ends_with("/embeddings") {
        embeddings(&state, &body)
    } else {
        json_response(
            &state,
            StatusCode::NOT_FOUND,
            &error_value(StatusCode::NOT_FOUND, &format!("mock has no route {path}")),
        )
    }
}

fn bad_request(state: &MockState, message: &str) -> Response<MockBody> {
    json_response(
        state,
        StatusCode::BAD_REQUEST,
        &error_value(StatusCode::BAD_REQUEST, message),
    )
}

fn error_response(state: &MockState, status: StatusCode) -> Response<MockBody> {
    let mut resp = json_response(
        state,
        status,
        &error_value(status, &format!("mock error {}", status.as_u16())),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The text of a message's `content` (string or text parts).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Counts prompt tokens the way OpenAI's cookbook does: 3 per message, plus role and content
/// (and 1 for a name), plus 3 to prime the reply. Returns the token ids of the whole prompt.
fn prompt_tokens(model: &str, messages: &[Value]) -> Vec<u32> {
    let bpe = bpe_for(model);
    let mut ids = Vec::new();
    for m in messages {
        ids.extend([200_000u32, 200_001, 200_002]);
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        ids.extend(bpe.encode_ordinary(role));
        ids.extend(bpe.encode_ordinary(&content_text(m.get("content").unwrap_or(&Value::Null))));
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            ids.push(200_003);
            ids.extend(bpe.encode_ordinary(name));
        }
    }
    ids.extend([200_000u32, 200_001, 200_002]);
    ids
}

fn chat(
    state: &Arc<MockState>,
    config: &MockConfig,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad_request(state, "body is not valid JSON");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    if let Some(status) = model
        .strip_prefix("mock-error-")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return error_response(state, status);
    }
    let empty = Vec::new();
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if messages.is_empty() {
        return bad_request(state, "messages must be a non-empty array");
    }
    let prompt = prompt_tokens(&model, messages);
    let cached = state.cached_prefix(&prompt);
    let last = messages.last();
    let last_role = last
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.pointer("/function/name"))
        .and_then(Value::as_str)
        .filter(|_| {
            last_role != "tool" && req.get("tool_choice").and_then(Value::as_str) != Some("none")
        });
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let echo: Vec<&str> = last_user.split_whitespace().take(12).collect();
    let reply = format!(
        "Mock reply to {} messages ({} prompt tokens). You said: {}",
        messages.len(),
        prompt.len(),
        echo.join(" ")
    );
    let bpe = bpe_for(&model);
    let digest = Sha256::digest(body);
    let id = format!("chatcmpl-mock{}", hex::encode(&digest[..6]));
    let (completion_tokens, finish) = match tool {
        Some(_) => (12, "tool_calls"),
        None => (bpe.encode_ordinary(&reply).len(), "stop"),
    };
    let usage = json!({
        "prompt_tokens": prompt.len(),
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.len() + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    });
    let tool_call = tool.map(|name| {
        json!({"id": "call_mock_1", "type": "function",
               "function": {"name": name, "arguments": "{\"query\":\"mock\"}"}})
    });
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let pieces = match header_u64(headers, "x-mock-chunks") {
            Some(n) => (0..n).map(|i| format!("w{i} ")).collect::<Vec<_>>(),
            None => split_pieces(&reply),
        };
        let chunk = |delta: Value, finish: Value, usage: Value| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                c["usage"] = usage;
            }
            format!("data: {c}\n\n")
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        )];
        match &tool_call {
            Some(call) => {
                let mut call = call.clone();
                call["index"] = json!(0);
                events.push(chunk(
                    json!({"tool_calls": [call]}),
                    Value::Null,
                    Value::Null,
                ));
            }
            None => events.extend(
                pieces
                    .iter()
                    .map(|p| chunk(json!({"content": p}), Value::Null, Value::Null)),
            ),
        }
        events.push(chunk(json!({}), json!(finish), Value::Null));
        if include_usage {
            let c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage});
            events.push(format!("data: {c}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_owned());
        state.record_response(Bytes::from(events.concat()));
        let delay = header_u64(headers, "x-mock-chunk-delay-ms")
            .map(Duration::from_millis)
            .unwrap_or(config.chunk_delay);
        return sse_response(state.clone(), events, delay);
    }
    let message = match tool_call {
        Some(call) => {
            json!({"role": "assistant", "content": null, "tool_calls": [call], "refusal": null})
        }
        None => json!({"role": "assistant", "content": reply, "refusal": null}),
    };
    json_response(
        state,
        StatusCode::OK,
        &json!({"id": id, "object": "chat.completion", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage}),
    )
}

/// Splits a reply into streamed pieces of one word each (with its trailing space).
fn split_pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        cur.push(ch);
        if ch == ' ' {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Notes in [`MockState`] whether a stream ran to its end or was dropped by the client.
struct StreamGuard {
    state: Arc<MockState>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.state.streams_completed
        } else {
            &self.state.streams_dropped
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn sse_response(state: Arc<MockState>, events: Vec<String>, delay: Duration) -> Response<MockBody> {
    state.streams_started.fetch_add(1, Ordering::SeqCst);
    let guard = StreamGuard { state, done: false };
    let n = events.len();
    let stream = futures_util::stream::unfold(
        (events.into_iter().enumerate(), guard),
        move |(mut it, mut guard)| async move {
            let (i, ev) = it.next()?;
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i + 1 == n {
                guard.done = true;
            }
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(ev))),
                (it, guard),
            ))
        },
    );
    let mut resp = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-request-id", HeaderValue::from_static("req_mock_stream"));
    resp
}

fn embeddings(state: &MockState, body: &Bytes) -> Response<MockBody> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad_request(state, "body is not valid JSON");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("text-embedding-3-small");
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let bpe = bpe_for("gpt-4");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += bpe.encode_ordinary(text).len();
            let digest = Sha256::digest(text.as_bytes());
            let v: Vec<f64> = digest[..8]
                .iter()
                .map(|b| f64::from(*b) / 255.0 - 0.5)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json_response(
        state,
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}
