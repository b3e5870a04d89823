//! A mock upstream provider: a real HTTP server on loopback that answers the OpenAI Chat
//! Completions ([`chat`]), legacy Completions ([`completions`]) and Responses ([`responses`])
//! APIs and Anthropic's Messages API ([`messages`]), streamed or not, plus `/models` and
//! `/embeddings`. `usage` is counted by tiktoken, with a simulated provider prompt cache
//! (OpenAI's automatic prefix cache; Anthropic's `cache_control` breakpoints).
//!
//! It backs the integration tests, the benchmarks and `cargo run --example mock-upstream`, so the
//! whole product can be tried offline. It records every request it receives exactly (method,
//! path, headers, raw body bytes) and every response body it produces, and notices when a client
//! goes away mid-stream. Answers are deterministic functions of the request: they echo the
//! first words of the last user text, so a test can see what arrived.
//!
//! Per-request knobs (request headers, which the proxy forwards untouched):
//! `x-mock-status: 429` answers with that status and an error in the route's provider shape;
//! `x-mock-first-byte-delay-ms`, `x-mock-chunk-delay-ms` and `x-mock-chunks` shape streams.
//! A model named `mock-error-<status>` also answers with that status.

pub mod chat;
pub mod completions;
pub mod messages;
pub mod responses;
pub mod tokens;

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
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use tokens::{bpe_for, count};

type MockBody = UnsyncBoxBody<Bytes, Infallible>;

/// Fixed `created` timestamp so responses are reproducible.
pub const CREATED: u64 = 1_700_000_000;
/// Prompt caching granularity, as OpenAI documents it: prefixes of at least 1024 tokens, in
/// 128-token increments. Anthropic breakpoints also need at least 1024 tokens before them.
pub const CACHE_MIN_TOKENS: usize = 1024;
pub const CACHE_STEP: usize = 128;

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

impl RecordedRequest {
    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
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

/// Which prompt cache a prompt belongs to: the APIs tokenize differently, so their prefixes
/// never share cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheSpace {
    Chat,
    Completions,
    Responses,
    Messages,
}

impl CacheSpace {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Chat => b"chat",
            Self::Completions => b"completions",
            Self::Responses => b"responses",
            Self::Messages => b"messages",
        }
    }
}

impl MockState {
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.requests.lock().ok().and_then(|r| r.last().cloned())
    }

    /// The requests whose path ends with `suffix` (e.g. `/responses`), in arrival order.
    pub fn requests_to(&self, suffix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.path_and_query
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .ends_with(suffix)
            })
            .collect()
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

    /// Digests of every prefix of `tokens` that ends at one of `ends` (sorted), in `space`.
    fn prefix_digests(space: CacheSpace, tokens: &[u32], ends: &[usize]) -> Vec<(usize, [u8; 32])> {
        let mut hasher = Sha256::new();
        hasher.update(space.tag());
        let mut out = Vec::with_capacity(ends.len());
        let mut ends = ends.iter().peekable();
        for (i, t) in tokens.iter().enumerate() {
            hasher.update(t.to_le_bytes());
            while ends.next_if(|e| **e == i + 1).is_some() {
                out.push((i + 1, hasher.clone().finalize().into()));
            }
        }
        out
    }

    /// OpenAI's automatic prompt cache: the longest cached prefix (in tokens) of `tokens`, at
    /// 128-token steps from 1024 on; then remembers this prompt's prefixes.
    pub(crate) fn cached_prefix(&self, space: CacheSpace, tokens: &[u32]) -> usize {
        let ends: Vec<usize> = (CACHE_MIN_TOKENS..=tokens.len())
            .step_by(CACHE_STEP)
            .collect();
        let digests = Self::prefix_digests(space, tokens, &ends);
        let Ok(mut cache) = self.cache.lock() else {
            return 0;
        };
        let cached = digests
            .iter()
            .filter(|(_, d)| cache.contains(d))
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0);
        cache.extend(digests.into_iter().map(|(_, d)| d));
        cached
    }

    /// Anthropic's explicit prompt cache: `breakpoints` are the token offsets just after each
    /// block marked `cache_control`. Returns `(read, created)`: the longest breakpoint prefix
    /// already cached, and the tokens written to the cache beyond it (up to the last breakpoint
    /// of at least 1024 tokens). Then remembers every breakpoint prefix.
    pub(crate) fn breakpoint_cache(&self, tokens: &[u32], breakpoints: &[usize]) -> (usize, usize) {
        let mut ends: Vec<usize> = breakpoints
            .iter()
            .copied()
            .filter(|n| *n >= CACHE_MIN_TOKENS && *n <= tokens.len())
            .collect();
        ends.sort_unstable();
        ends.dedup();
        let digests = Self::prefix_digests(CacheSpace::Messages, tokens, &ends);
        let Ok(mut cache) = self.cache.lock() else {
            return (0, 0);
        };
        let read = digests
            .iter()
            .filter(|(_, d)| cache.contains(d))
            .map(|(n, _)| *n)
            .max()
            .unwrap_or(0);
        let last = ends.last().copied().unwrap_or(0);
        cache.extend(digests.into_iter().map(|(_, d)| d));
        (read, last.saturating_sub(read))
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

    /// `http://127.0.0.1:PORT/v1`: the base URL of the OpenAI SDKs.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`: the base URL of the Anthropic SDKs (they append `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
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

/// The provider whose wire format a route speaks (errors, request-id headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

/// What one request asks of the mock, for the API modules.
pub(crate) struct Call<'a> {
    pub state: &'a Arc<MockState>,
    pub config: &'a MockConfig,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
}

impl Call<'_> {
    /// Delay between streamed events.
    pub fn chunk_delay(&self) -> Duration {
        header_u64(self.headers, "x-mock-chunk-delay-ms")
            .map(Duration::from_millis)
            .unwrap_or(self.config.chunk_delay)
    }

    /// The pieces a streamed `text` is sent in: one word each, or `x-mock-chunks` fillers.
    pub fn pieces(&self, text: &str) -> Vec<String> {
        match header_u64(self.headers, "x-mock-chunks") {
            Some(n) => (0..n).map(|i| format!("w{i} ")).collect(),
            None => split_pieces(text),
        }
    }

    /// A stable id suffix derived from the request body.
    pub fn id_suffix(&self) -> String {
        hex::encode(&Sha256::digest(self.body)[..6])
    }
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn full_body(bytes: Bytes) -> MockBody {
    Full::new(bytes).boxed_unsync()
}

/// A JSON answer with OpenAI's response headers.
pub(crate) fn json_response(
    state: &MockState,
    status: StatusCode,
    value: &Value,
) -> Response<MockBody> {
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

/// A JSON answer with Anthropic's response headers.
pub(crate) fn anthropic_json_response(
    state: &MockState,
    status: StatusCode,
    value: &Value,
) -> Response<MockBody> {
    let mut resp = json_response(state, status, value);
    let h = resp.headers_mut();
    h.remove("x-request-id");
    h.remove("openai-processing-ms");
    h.insert("request-id", HeaderValue::from_static(messages::REQUEST_ID));
    resp
}

fn openai_error(status: StatusCode, message: &str) -> Value {
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("requests", "rate_limit_exceeded"),
        _ => ("server_error", "server_error"),
    };
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An error answer in `provider`'s shape; 429s carry `retry-after`.
fn error_response(state: &MockState, provider: Provider, status: StatusCode) -> Response<MockBody> {
    let message = format!("mock error {}", status.as_u16());
    let mut resp = match provider {
        Provider::OpenAi => json_response(state, status, &openai_error(status, &message)),
        Provider::Anthropic => {
            anthropic_json_response(state, status, &messages::error_value(status, &message))
        }
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A 400 in OpenAI's shape.
pub(crate) fn bad_request(state: &MockState, message: &str) -> Response<MockBody> {
    json_response(
        state,
        StatusCode::BAD_REQUEST,
        &openai_error(StatusCode::BAD_REQUEST, message),
    )
}

/// The status a model named `mock-error-<status>` asks for.
pub(crate) fn model_error(model: &str) -> Option<StatusCode> {
    model
        .strip_prefix("mock-error-")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
}

/// The `mock-error-<status>` answer of an OpenAI route, if the model asks for one.
pub(crate) fn openai_model_error(state: &MockState, model: &str) -> Option<Response<MockBody>> {
    model_error(model).map(|s| error_response(state, Provider::OpenAi, s))
}

/// The `mock-error-<status>` answer of an Anthropic route, if the model asks for one.
pub(crate) fn anthropic_model_error(state: &MockState, model: &str) -> Option<Response<MockBody>> {
    model_error(model).map(|s| error_response(state, Provider::Anthropic, s))
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
    let path = parts.uri.path();
    let anthropic = path.ends_with("/messages") || path.ends_with("/messages/count_tokens");
    let provider = if anthropic {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    };
    if let Some(status) = header_u64(&parts.headers, "x-mock-status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return error_response(&state, provider, status);
    }
    let call = Call {
        state: &state,
        config: &config,
        headers: &parts.headers,
        body: &body,
    };
    let post = parts.method == Method::POST;
    if post && path.ends_with("/chat/completions") {
        chat::chat(&call)
    } else if post && path.ends_with("/completions") {
        completions::completions(&call)
    } else if post && path.ends_with("/responses") {
        responses::responses(&call)
    } else if post && path.ends_with("/messages/count_tokens") {
        messages::count_tokens(&call)
    } else if post && path.ends_with("/messages") {
        messages::messages(&call)
    } else if parts.method == Method::GET && path.ends_with("/models") {
        chat::models(&state)
    } else if post && path.ends_with("/embeddings") {
        chat::embeddings(&state, &body)
    } else if anthropic {
        anthropic_json_response(
            &state,
            StatusCode::NOT_FOUND,
            &messages::error_value(StatusCode::NOT_FOUND, &format!("mock has no route {path}")),
        )
    } else {
        json_response(
            &state,
            StatusCode::NOT_FOUND,
            &openai_error(StatusCode::NOT_FOUND, &format!("mock has no route {path}")),
        )
    }
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

/// One named server-sent event (`event: <name>` + `data: <json>`), as Responses and Anthropic
/// Messages send them.
pub(crate) fn named_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// One data-only server-sent event, as Chat Completions and Completions send them.
pub(crate) fn data_event(data: &Value) -> String {
    format!("data: {data}\n\n")
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

/// Streams `events` (already formatted), recording their concatenation as the response body.
pub(crate) fn sse_response(call: &Call<'_>, events: Vec<String>) -> Response<MockBody> {
    let state = call.state.clone();
    let delay = call.chunk_delay();
    state.record_response(Bytes::from(events.concat()));
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

/// [`sse_response`] with Anthropic's `request-id` header instead of OpenAI's.
pub(crate) fn anthropic_sse_response(call: &Call<'_>, events: Vec<String>) -> Response<MockBody> {
    let mut resp = sse_response(call, events);
    let h = resp.headers_mut();
    h.remove("x-request-id");
    h.insert("request-id", HeaderValue::from_static(messages::REQUEST_ID));
    resp
}

/// The parsed JSON body of a call, or the 400 answer (in the route's shape) to send instead.
pub(crate) fn parse_body(call: &Call<'_>) -> Result<Value, String> {
    serde_json::from_slice::<Value>(call.body).map_err(|_| "body is not valid JSON".to_owned())
}

#[cfg(test)]
pub(crate) mod testing;
