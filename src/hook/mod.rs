//! The seam between the HTTP server and request rewriting (compression).
//!
//! The server parses the bodies of the requests an API surface intercepts (`crate::api`),
//! resolves each request once into a [`RequestCtx`] (surface, route, model, tokenizer, id, arm)
//! and hands both to a [`RequestHook`]; the hook returns the body to forward (or `None` to
//! forward the original bytes untouched) plus response headers to add. The server never looks
//! inside the result. `/v1/compress` calls go to [`RequestHook::compress_call`] with a context
//! resolved the same way.
//!
//! [`CompressionHook`] is the hook the proxy runs: `compression.rs` (admission, workers,
//! deadline, the outcome), `endpoint.rs` (`/v1/compress`), `background.rs` (compressing again
//! off the request path), `controls.rs` (the `x-lingua-*` request headers) and `failure.rs` (one
//! mapping from failure to reason, counter, metric and log line). `crate::engine` builds it from
//! the configuration.

mod arms;
mod background;
mod compression;
mod controls;
mod endpoint;
mod failure;

pub use arms::{ArmsHook, Named};
pub use compression::{CompressionHook, HookBuilder, HookStats};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ab::Arm;
use crate::api::Api;
use crate::api::headroom::{CompressCall, CompressReply};
use crate::compress::CacheStatus;
use crate::telemetry::Tokens;
use crate::tokens::TokenizerKind;

/// One request, resolved once where it enters the proxy: every later step reads these instead
/// of looking at the body or the routes again.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestCtx {
    /// Which API it speaks.
    pub api: Api,
    /// The route it goes to (`default` or the route's name).
    pub route: String,
    /// The body's `model`.
    pub model: Option<String>,
    /// The route's tokenizer; `None`: chosen from the model, else
    /// `[compression] default_tokenizer`.
    pub tokenizer: Option<TokenizerKind>,
    /// The client's `x-request-id` when usable, else the proxy's own.
    pub request_id: String,
    /// The A/B arm that serves the client (`None` for `/v1/compress`, which has no arms).
    pub arm: Option<Arm>,
}

impl RequestCtx {
    /// A request to `api` naming `model` on the default route, with a fresh id and no arm.
    pub fn new(api: Api, model: Option<String>) -> Self {
        Self {
            api,
            route: "default".into(),
            model,
            tokenizer: None,
            request_id: fresh_request_id(),
            arm: None,
        }
    }

    /// The tokenizer that counts this request's tokens: the route's, else the model's, else
    /// `default`.
    pub fn tokenizer_or(&self, default: TokenizerKind) -> TokenizerKind {
        self.tokenizer.unwrap_or_else(|| {
            TokenizerKind::for_model(self.model.as_deref().unwrap_or_default(), default)
        })
    }
}

/// A request id of the proxy's own.
pub fn fresh_request_id() -> String {
    format!("lp-{:016x}", fastrand::u64(..))
}

/// An intercepted request.
#[derive(Debug, Clone)]
pub struct Intercepted {
    /// What the edge resolved about it.
    pub ctx: RequestCtx,
    /// The exact bytes the client sent.
    pub raw: Bytes,
    /// The parsed body (unknown fields included, key order preserved).
    pub json: serde_json::Value,
    /// The client's request headers (already stripped of hop-by-hop headers).
    pub headers: HeaderMap,
}

impl Intercepted {
    /// A request to `api` with body `json` (its bytes: `json` serialised), resolved as on the
    /// default route: for tests and embedders that call a hook directly.
    pub fn new(api: Api, json: serde_json::Value, headers: HeaderMap) -> Self {
        let model = api.surface().model(&json).map(str::to_owned);
        Self {
            ctx: RequestCtx::new(api, model),
            raw: Bytes::from(serde_json::to_vec(&json).unwrap_or_default()),
            json,
            headers,
        }
    }
}

/// What the hook decided.
#[derive(Debug, Default)]
pub struct HookOutcome {
    /// The body to forward; `None` forwards the client's original bytes.
    pub body: Option<Bytes>,
    /// Headers added to the response sent to the client.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// When set, the request is not forwarded: the client gets this error instead (used by
    /// `on_error = "reject"`).
    pub reject: Option<Rejection>,
    /// What the hook did, for the event log and metrics (`None`: the hook does not report).
    pub report: Option<HookReport>,
    /// The client asked for its own bytes (`x-lingua-compress: off`): nothing is added either,
    /// not even the stream usage request.
    pub verbatim: bool,
}

/// What compression did to one request, as the event log and the headers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The request was rewritten.
    Compressed,
    /// The policy ran and changed nothing.
    Unchanged,
    /// Compression did not run (`off`, `disabled`, `overloaded`, ...).
    Skipped,
    /// Compression failed and the original request went upstream.
    FailOpen,
}

impl Compression {
    /// The name in events and `x-lingua-*` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Compressed => "compressed",
            Compression::Unchanged => "unchanged",
            Compression::Skipped => "skipped",
            Compression::FailOpen => "fail_open",
        }
    }
}

/// Why compression left a request as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `x-lingua-compress: off`.
    Off,
    /// Compression is disabled in the configuration.
    Disabled,
    /// The proxy is shutting down.
    ShuttingDown,
    /// The compression queue or the model queue was full.
    Overloaded,
    /// Past `max_request_tokens` (or every message past `max_message_tokens`).
    TooLarge,
    /// Past `deadline_ms`.
    Deadline,
    /// The client went away.
    Cancelled,
    /// The compressor returned an error.
    Error,
    /// Compression panicked.
    Panic,
}

impl Reason {
    /// The name in events, `/stats`, metrics and the `x-lingua-skipped` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Off => "off",
            Reason::Disabled => "disabled",
            Reason::ShuttingDown => "shutting_down",
            Reason::Overloaded => "overloaded",
            Reason::TooLarge => "too_large",
            Reason::Deadline => "deadline",
            Reason::Cancelled => "cancelled",
            Reason::Error => "error",
            Reason::Panic => "panic",
        }
    }

    /// The name in `/v1/compress` replies (the Headroom contract's name for a deadline).
    pub fn endpoint_name(self) -> &'static str {
        match self {
            Reason::Deadline => "compression_timeout",
            other => other.as_str(),
        }
    }

    /// Compression was tried and failed (fail-open), rather than not tried.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Reason::Deadline | Reason::Cancelled | Reason::Error | Reason::Panic
        )
    }
}

/// What compression did to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct HookReport {
    pub compression: Compression,
    /// Why it was skipped or failed open.
    pub reason: Option<Reason>,
    /// Prompt tokens before and after, per role (when the policy ran to completion).
    pub tokens: Option<Tokens>,
    /// How much came from the compression cache (when the policy looked anything up).
    pub cache: Option<CacheStatus>,
    /// Per message: its pieces with their content kind, transform, tokens and texts (only when
    /// the hook explains, with `[telemetry] log_content = true`).
    pub explain: Option<serde_json::Value>,
    /// With arms by compressor (`[ab.control]`): which of the two compressors ran.
    pub compressor: Option<String>,
}

/// A refusal, rendered by the server as an OpenAI-shaped error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, e.g. 503.
    pub status: u16,
    /// OpenAI `error.code`, e.g. `compression_failed`.
    pub code: String,
    pub message: String,
}

/// Rewrites intercepted requests. Implementations must never fail the request: on any internal
/// problem they return `HookOutcome::default()` (forward the original).
pub trait RequestHook: Send + Sync + 'static {
    fn on_request(&self, req: Intercepted) -> BoxFuture<'static, HookOutcome>;

    /// Answers a `/v1/compress` call (the Headroom contract). The default compresses nothing:
    /// the messages come back as they were, marked skipped.
    fn compress_call(
        &self,
        _ctx: RequestCtx,
        call: CompressCall,
    ) -> BoxFuture<'static, CompressReply> {
        Box::pin(async move { CompressReply::skipped(&call, "disabled") })
    }

    /// Facts for `/readyz` (for instance which scorer is active), as a JSON object.
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "compression": "off" })
    }

    /// Requests waiting for compression plus inference work queued in the scorer.
    fn queue_depth(&self) -> usize {
        0
    }

    /// The proxy is shutting down: cancel every queued and running compression (queued model
    /// windows are dropped, waiting compression threads return at once) and refuse new work;
    /// requests then go out uncompressed. Idempotent, never blocks.
    fn shutdown(&self) {}
}

/// The identity hook: forwards every request unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

impl RequestHook for Passthrough {
    fn on_request(&self, _req: Intercepted) -> BoxFuture<'static, HookOutcome> {
        Box::pin(async { HookOutcome::default() })
    }
}
