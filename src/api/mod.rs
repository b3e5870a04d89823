//! API surfaces: one module per provider API whose requests the proxy compresses.
//!
//! A [`Surface`] knows one API's JSON and nothing of HTTP framing or scoring:
//! - which route it answers ([`Surface::path`], below the upstream base URL);
//! - which texts are compressible, as the neutral [`Conversation`] whose segments carry their
//!   path into the body (the policy's edits are spliced into the client's bytes there, so every
//!   part the surface does not list is never touched, byte for byte);
//! - how billed usage and the answer text are read from a JSON body or from stream events;
//! - whether the proxy must ask for stream usage itself ([`StreamUsage`]);
//! - the shape of the errors the proxy itself produces on its route ([`ErrorShape`]).
//!
//! Everything downstream (policy, scorer, cache, A/B, event log, metrics, report) is the same
//! for every surface and only sees the [`Api`] label. Adding a surface is one file here plus
//! one line in [`Api`].

pub mod chat;
pub mod completions;
pub mod headroom;
pub mod messages;
pub mod responses;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compress::Conversation;
use crate::telemetry::Usage;

/// The APIs the proxy intercepts (the `api` field of events and label of metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI Chat Completions, `POST /v1/chat/completions`.
    #[default]
    ChatCompletions,
    /// OpenAI Responses, `POST /v1/responses`.
    Responses,
    /// Anthropic Messages, `POST /v1/messages`.
    Messages,
    /// OpenAI legacy completions, `POST /v1/completions`.
    Completions,
}

impl Api {
    pub const ALL: [Api; 4] = [
        Api::ChatCompletions,
        Api::Responses,
        Api::Messages,
        Api::Completions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::Completions => "completions",
        }
    }

    /// The surface that implements this API.
    pub fn surface(self) -> &'static dyn Surface {
        match self {
            Self::ChatCompletions => &chat::ChatCompletions,
            Self::Responses => &responses::Responses,
            Self::Messages => &messages::Messages,
            Self::Completions => &completions::Completions,
        }
    }

    /// The API a `POST` to `path` (below the base URL: `/chat/completions`) belongs to.
    pub fn for_post(path: &str) -> Option<Api> {
        Self::ALL.into_iter().find(|a| a.surface().path() == path)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a streamed answer reports usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamUsage {
    /// Only when the client asks (`stream_options.include_usage`): the proxy asks for it and
    /// removes the usage chunk and keys from what the client sees (Chat Completions, legacy
    /// completions, whose streams share that chunk format).
    OptIn,
    /// Always present in the stream (Responses, Messages): nothing to add or strip.
    Always,
}

/// The error shape of a route: what the provider's SDK parses into its usual exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
    /// Headroom's `/v1/compress`: `{"error": {"type", "message"}}`.
    Headroom,
}

impl ErrorShape {
    /// The shape of the errors the proxy produces for a request to `path` (below `/v1`, or the
    /// full path): Anthropic's on `/messages` and below, OpenAI's elsewhere.
    pub fn for_path(path: &str) -> Self {
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        if rest == "/messages" || rest.starts_with("/messages/") {
            Self::Anthropic
        } else if rest == "/compress" {
            Self::Headroom
        } else {
            Self::OpenAi
        }
    }

    /// The error body. `openai_type` and `code` are OpenAI's `error.type` and `error.code`;
    /// the Anthropic shape derives its `error.type` from the status, as the API does.
    pub fn body(self, status: u16, message: &str, openai_type: &str, code: &str) -> Value {
        match self {
            Self::OpenAi => serde_json::json!({
                "error": { "message": message, "type": openai_type, "param": null, "code": code }
            }),
            Self::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": anthropic_error_type(status), "message": message }
            }),
            Self::Headroom => serde_json::json!({
                "error": {
                    "type": if status < 500 { "invalid_request" } else { "compression_error" },
                    "message": message,
                    "code": code,
                }
            }),
        }
    }
}

/// Anthropic's `error.type` for a status (its documented table; other 4xx are
/// `invalid_request_error`, other 5xx `api_error`).
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// What a surface reads from a response: billed usage and (when asked) the answer text.
#[derive(Debug, Default)]
pub struct Seen {
    pub usage: Option<Usage>,
    /// The answer text, when [`Seen::wants_answer`].
    pub answer: String,
    pub wants_answer: bool,
}

impl Seen {
    /// Largest answer kept (mirror agreement and `log_content` need no more).
    pub const MAX_ANSWER: usize = 1024 * 1024;

    pub fn new(wants_answer: bool) -> Self {
        Self {
            wants_answer,
            ..Self::default()
        }
    }

    /// Appends answer text, up to [`Seen::MAX_ANSWER`] bytes.
    pub fn push_answer(&mut self, text: &str) {
        if self.wants_answer && self.answer.len() + text.len() <= Self::MAX_ANSWER {
            self.answer.push_str(text);
        }
    }
}

/// One API's knowledge of its requests and responses.
pub trait Surface: Send + Sync + 'static {
    fn api(&self) -> Api;

    /// The `POST` path below the upstream base URL (`/chat/completions`).
    fn path(&self) -> &'static str;

    /// The shape of errors the proxy produces on this route.
    fn error_shape(&self) -> ErrorShape {
        ErrorShape::OpenAi
    }

    /// The compressible texts, in conversation order, each with the role whose budget applies.
    /// `None` when the body is not this API's request (then it is forwarded untouched).
    fn conversation(&self, json: &Value) -> Option<Conversation>;

    fn stream_usage(&self) -> StreamUsage;

    /// Reads a complete (non-streamed) JSON response.
    fn read_body(&self, body: &Value, seen: &mut Seen);

    /// Reads one SSE event: its `event:` name (when it has one) and its `data:` JSON.
    fn read_event(&self, name: Option<&str>, data: &Value, seen: &mut Seen);

    /// What `log_content` records as the request's prompt.
    fn prompt(&self, json: &Value) -> Option<Value>;

    /// The request's model.
    fn model<'a>(&self, json: &'a Value) -> Option<&'a str> {
        json.get("model").and_then(Value::as_str)
    }

    /// Whether the client asked for a stream.
    fn stream(&self, json: &Value) -> bool {
        json.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }
}

/// The listed top-level fields of `json` that it has, as one object (`None`: none of them):
/// what `log_content` records for APIs whose prompt spans several fields.
pub(crate) fn fields(json: &Value, keys: &[&str]) -> Option<Value> {
    let out: serde_json::Map<String, Value> = keys
        .iter()
        .filter_map(|k| Some(((*k).to_string(), json.get(*k)?.clone())))
        .collect();
    (!out.is_empty()).then_some(Value::Object(out))
}

/// A `u64` field of `v`.
pub(crate) fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_shapes() {
        assert_eq!(
            Api::for_post("/chat/completions"),
            Some(Api::ChatCompletions)
        );
        assert_eq!(Api::for_post("/responses"), Some(Api::Responses));
        assert_eq!(Api::for_post("/messages"), Some(Api::Messages));
        assert_eq!(Api::for_post("/completions"), Some(Api::Completions));
        assert_eq!(Api::for_post("/messages/count_tokens"), None);
        assert_eq!(Api::for_post("/responses/resp_1"), None);
        for a in Api::ALL {
            assert_eq!(a.surface().api(), a);
        }
        assert_eq!(
            ErrorShape::for_path("/v1/messages/count_tokens"),
            ErrorShape::Anthropic
        );
        assert_eq!(ErrorShape::for_path("/v1/messages"), ErrorShape::Anthropic);
        assert_eq!(ErrorShape::for_path("/v1/messagesx"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path("/v1/responses"), ErrorShape::OpenAi);
        let b = ErrorShape::Anthropic.body(429, "slow down", "api_error", "x");
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "rate_limit_error");
        assert_eq!(b["error"]["message"], "slow down");
        let b = ErrorShape::OpenAi.body(401, "no", "invalid_request_error", "invalid_api_key");
        assert_eq!(b["error"]["code"], "invalid_api_key");
        assert_eq!(anthropic_error_type(502), "api_error");
        assert_eq!(anthropic_error_type(400), "invalid_request_error");
    }
}
