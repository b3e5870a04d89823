//! The event log's record: one JSON line per upstream call of an intercepted chat completion.
//!
//! A normal request writes one event. A mirrored request writes two events (one per arm) that
//! share `pair_id`; only one of them has `served = true`. The schema is versioned by `v`; fields
//! are only ever added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ab::{Arm, Mode};

/// Current value of [`Event::v`].
pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// Schema version ([`EVENT_VERSION`]).
    pub v: u32,
    /// When the proxy received the request, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The same instant in Unix milliseconds.
    pub ts_ms: u64,
    /// The request id (the client's `x-request-id` when it sent a usable one, else generated).
    pub request_id: String,
    /// Which body this upstream call carried.
    pub arm: Option<Arm>,
    pub mode: Mode,
    /// Whether this call's answer went to the client (false only for the mirror copy).
    pub served: bool,
    /// For mirrored requests: the client request's id, shared by both events of the pair.
    pub pair_id: Option<String>,
    /// The upstream route: `default` or the route's name.
    pub route: String,
    /// The API of the intercepted request (absent in events written before it was recorded:
    /// those are all `chat_completions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<crate::api::Api>,
    /// The request's `model`.
    pub model: Option<String>,
    pub stream: bool,
    /// Prompt text tokens counted by the proxy (target tokenizer), when the policy ran.
    pub tokens: Option<Tokens>,
    /// The upstream's billed usage, from the JSON body or the stream's usage chunk.
    pub usage: Option<Usage>,
    pub latency_ms: Latency,
    /// HTTP status the client (or, for a mirror copy, the proxy) got; 0 when no response came.
    pub status: u16,
    /// Why the call did not complete normally: `upstream_timeout`, `upstream_unreachable`,
    /// `client_disconnected`, `upstream_body_error`, `rejected`.
    pub error: Option<String>,
    /// What compression did: `compressed`, `unchanged`, `skipped`, `fail_open`, `not_run`.
    pub compression: Option<String>,
    /// With arms by compressor (`[ab.control]`): the compressor of this call's arm, for
    /// instance `llmlingua2:distilled` or `heuristic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressor: Option<String>,
    /// Compression cache: `hit`, `miss`, `partial`.
    pub cache: Option<String>,
    /// Why compression failed open (`deadline`, `error`, `panic`) or was skipped (`off`,
    /// `disabled`, `overloaded`).
    pub fail_open: Option<String>,
    /// For mirror pairs: agreement of the two answers, written on the event that finished last.
    pub agreement: Option<Agreement>,
    /// The answer text (only with `log_content = true`).
    pub answer: Option<String>,
    /// The forwarded request's messages (only with `log_content = true`).
    pub prompt: Option<serde_json::Value>,
    /// What compression did to each message (only with `log_content = true`): its pieces with
    /// content kind, transform, tokens and texts before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<serde_json::Value>,
    /// The prompt, answer and explanation were left out: the event log's queue was at
    /// `queue_bytes`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_omitted: bool,
}

impl Event {
    /// Heap bytes the event holds, roughly: fixed fields plus its content.
    pub fn approx_bytes(&self) -> u64 {
        const FIXED: u64 = 1024;
        FIXED
            + self.answer.as_ref().map_or(0, |a| a.len() as u64)
            + self.prompt.as_ref().map_or(0, value_bytes)
            + self.explain.as_ref().map_or(0, value_bytes)
    }

    /// Drops the prompt, answer and explanation, keeping counts and timings.
    pub fn omit_content(&mut self) {
        self.answer = None;
        self.prompt = None;
        self.explain = None;
        self.content_omitted = true;
    }
}

/// Heap bytes of a JSON value: its strings and a node for each value.
fn value_bytes(v: &serde_json::Value) -> u64 {
    const NODE: u64 = 128;
    let mut total = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += NODE;
        match v {
            serde_json::Value::String(s) => total += s.len() as u64,
            serde_json::Value::Array(a) => stack.extend(a),
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    total += NODE + k.len() as u64;
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    total
}

/// Prompt tokens before and after compression, total and per role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tokens {
    /// Which tokenizer counted them (`o200k_base`, `cl100k_base`).
    pub tokenizer: String,
    pub before: u64,
    /// What was (or, in shadow mode and the raw arm, would have been) forwarded.
    pub after: u64,
    pub roles: BTreeMap<String, RoleTokens>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleTokens {
    pub before: u64,
    pub after: u64,
}

/// The upstream's billed usage, the same for every API: `prompt_tokens` counts every input
/// token (for Anthropic `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`),
/// `completion_tokens` the output (`output_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache: OpenAI's
    /// `prompt_tokens_details.cached_tokens` / `input_tokens_details.cached_tokens`,
    /// Anthropic's `cache_read_input_tokens` (absent when the upstream does not report it).
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`; billed above the input price).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
}

/// Milliseconds. `overhead = total - upstream`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// From the request's arrival to the last byte of the response.
    pub total: f64,
    /// From sending upstream to the upstream's last byte.
    pub upstream: f64,
    /// Time spent in the compression hook.
    pub compression: f64,
    /// `total - upstream`: what the proxy added.
    pub overhead: f64,
    /// Time to the upstream's response headers, measured from sending upstream.
    pub upstream_headers: f64,
}

/// How close two answers are (see [`crate::telemetry::agreement`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Agreement {
    pub exact: bool,
    pub f1: f64,
    pub rouge_l: f64,
}
