//! `POST /v1/compress`: the Headroom compression contract that Kong, LiteLLM and agentgateway
//! call, so lingua-proxy can be their compression engine. It never calls an upstream.
//!
//! Request: `messages` (required; OpenAI or Anthropic shape, answered in the shape sent),
//! `model` (required: picks the tokenizer), optional `token_budget` and
//! `config{target_ratio, protect_recent, compress_user_messages (default false),
//! frozen_message_count}` (`mode` and `session_id` are accepted and ignored), and lingua-proxy's
//! own `explain: true` (the reply gains `explain`: per message, each piece's content kind,
//! transform, tokens and texts before and after). Without a gateway
//! block, `system` and `tools` are not part of the contract and are ignored.
//!
//! Reply: `messages`, `tokens_before`, `tokens_after`, `tokens_saved`, `compression_ratio`
//! (after / before, 1.0 when nothing changed), `transforms_applied`, `transforms_summary`; a
//! call that could not be compressed (deadline, overload, size) returns the original messages
//! with `compression_skipped: true` and `skip_reason`. This module parses and answers; the
//! compression itself is the hook's ([`crate::hook::RequestHook::compress_call`]).

use serde::Serialize;
use serde_json::{Map, Value};

use super::Api;
use crate::compress::{Conversation, PathElem};

/// A validated `/v1/compress` request.
#[derive(Debug, Clone)]
pub struct CompressCall {
    /// `ChatCompletions` (OpenAI messages) or `Messages` (Anthropic messages).
    pub shape: Api,
    pub model: String,
    /// The `messages` array as sent.
    pub messages: Value,
    pub token_budget: Option<u64>,
    pub target_ratio: Option<f64>,
    pub protect_recent: Option<usize>,
    pub compress_user_messages: bool,
    pub frozen_message_count: usize,
    /// `x-headroom-bypass: true`: echo the input.
    pub bypass: bool,
    /// `explain: true`: report what each piece is and what was done to it.
    pub explain: bool,
    /// `{"model", "messages"}` as the shape's API would carry them: what the surface reads and
    /// the policy rewrites.
    pub body: Vec<u8>,
}

/// Block types only Anthropic messages carry.
const ANTHROPIC_BLOCKS: &[&str] = &[
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
];

/// Which API's message shape `messages` is in: OpenAI unless something only Anthropic has
/// appears (its block types, an image `source`), and never Anthropic when an OpenAI-only role or
/// field does. Plain text messages read the same either way.
pub fn detect_shape(messages: &[Value]) -> Api {
    let mut anthropic = false;
    for m in messages {
        if matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer" | "tool" | "function")
        ) || m.get("tool_calls").is_some()
            || m.get("tool_call_id").is_some()
        {
            return Api::ChatCompletions;
        }
        for b in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
            if kind == "image_url" || kind == "input_audio" {
                return Api::ChatCompletions;
            }
            anthropic |=
                ANTHROPIC_BLOCKS.contains(&kind) || (kind == "image" && b.get("source").is_some());
        }
    }
    if anthropic {
        Api::Messages
    } else {
        Api::ChatCompletions
    }
}

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

impl CompressCall {
    /// Parses and validates a request body; the error is the 400's message.
    pub fn parse(raw: &[u8], bypass: bool) -> Result<Self, String> {
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        let messages = obj
            .get("messages")
            .ok_or_else(|| bad("`messages` is required"))?;
        let list = messages
            .as_array()
            .ok_or_else(|| bad("`messages` must be an array"))?;
        for (i, m) in list.iter().enumerate() {
            let Some(m) = m.as_object() else {
                return Err(bad(format!("messages[{i}] must be an object")));
            };
            if !m.get("role").is_some_and(Value::is_string) {
                return Err(bad(format!("messages[{i}].role must be a string")));
            }
        }
        let model = obj
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| bad("`model` is required (a non-empty string)"))?
            .to_string();
        let token_budget = match obj.get("token_budget") {
            None | Some(Value::Null) => None,
            Some(b) => Some(
                b.as_u64()
                    .filter(|b| *b > 0)
                    .ok_or_else(|| bad("`token_budget` must be a positive integer"))?,
            ),
        };
        let empty = Map::new();
        let config = match obj.get("config") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(c)) => c,
            Some(_) => return Err(bad("`config` must be an object")),
        };
        let target_ratio = match config.get("target_ratio") {
            None | Some(Value::Null) => None,
            Some(r) => Some(
                r.as_f64()
                    .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1.0)
                    .ok_or_else(|| bad("`config.target_ratio` must be a number in (0, 1]"))?,
            ),
        };
        let count = |key: &str| -> Result<Option<usize>, String> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(n) => n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| bad(format!("`config.{key}` must be a non-negative integer"))),
            }
        };
        let protect_recent = count("protect_recent")?;
        let frozen_message_count = count("frozen_message_count")?.unwrap_or(0);
        let compress_user_messages = match config.get("compress_user_messages") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`config.compress_user_messages` must be a boolean")),
        };
        let explain = match obj.get("explain") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`explain` must be a boolean")),
        };
        let shape = detect_shape(list);
        let body = serde_json::to_vec(&serde_json::json!({
            "model": model,
            "messages": messages,
        }))
        .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            shape,
            model,
            messages: messages.clone(),
            token_budget,
            target_ratio,
            protect_recent,
            compress_user_messages,
            frozen_message_count,
            bypass,
            explain,
            body,
        })
    }

    /// How many leading neutral messages of `conv` belong to the first `frozen_message_count`
    /// API messages (a segment's path starts `messages/<i>`).
    pub fn frozen_in(&self, conv: &Conversation) -> usize {
        if self.frozen_message_count == 0 {
            return 0;
        }
        conv.messages
            .iter()
            .take_while(|m| {
                m.segments.first().is_none_or(|s| {
                    matches!(s.path.get(1), Some(PathElem::Index(i)) if *i < self.frozen_message_count)
                })
            })
            .count()
    }
}

/// The reply of a `/v1/compress` call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompressReply {
    pub messages: Value,
    pub tokens_before: u64,
    pub tokens_after: u64,
    pub tokens_saved: u64,
    pub compression_ratio: f64,
    pub transforms_applied: Vec<String>,
    pub transforms_summary: Map<String, Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub compression_skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// With `explain: true`: per message, its pieces (kind, transform, tokens, texts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Value>,
}

impl CompressReply {
    /// The original messages, nothing done, marked skipped with `reason`.
    pub fn skipped(call: &CompressCall, reason: &str) -> Self {
        Self {
            compression_skipped: true,
            skip_reason: Some(reason.to_string()),
            ..Self::unchanged(call, 0)
        }
    }

    /// The original messages: compression ran and changed nothing.
    pub fn unchanged(call: &CompressCall, tokens: u64) -> Self {
        Self {
            messages: call.messages.clone(),
            tokens_before: tokens,
            tokens_after: tokens,
            tokens_saved: 0,
            compression_ratio: 1.0,
            transforms_applied: Vec::new(),
            transforms_summary: Map::new(),
            compression_skipped: false,
            skip_reason: None,
            explain: None,
        }
    }

    /// The rewritten messages (`body` is the rewritten `{"model", "messages"}`).
    pub fn compressed(
        call: &CompressCall,
        body: &[u8],
        before: u64,
        after: u64,
        transform: &str,
        messages_compressed: usize,
    ) -> Self {
        let messages = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|mut v| v.get_mut("messages").map(Value::take));
        let Some(messages) = messages else {
            return Self::skipped(call, "internal_error");
        };
        let mut summary = Map::new();
        summary.insert(transform.to_string(), Value::from(messages_compressed));
        Self {
            messages,
            tokens_before: before,
            tokens_after: after,
            tokens_saved: before.saturating_sub(after),
            compression_ratio: if before == 0 {
                1.0
            } else {
                after as f64 / before as f64
            },
            transforms_applied: vec![transform.to_string()],
            transforms_summary: summary,
            compression_skipped: false,
            skip_reason: None,
            explain: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let openai =
            serde_json::json!([{"role":"system","content":"x"},{"role":"user","content":"y"}]);
        assert_eq!(
            detect_shape(openai.as_array().unwrap()),
            Api::ChatCompletions
        );
        let anthropic = serde_json::json!([{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t","content":"r"}]}]);
        assert_eq!(detect_shape(anthropic.as_array().unwrap()), Api::Messages);
        let plain = serde_json::json!([{"role":"user","content":[{"type":"text","text":"y"}]}]);
        assert_eq!(
            detect_shape(plain.as_array().unwrap()),
            Api::ChatCompletions
        );
    }

    #[test]
    fn validation() {
        let ok = CompressCall::parse(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
                "token_budget":100,"config":{"target_ratio":0.5,"protect_recent":2,
                "compress_user_messages":true,"frozen_message_count":1,"mode":"x"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(ok.token_budget, Some(100));
        assert_eq!(ok.target_ratio, Some(0.5));
        assert_eq!(ok.protect_recent, Some(2));
        assert!(ok.compress_user_messages);
        assert_eq!(ok.frozen_message_count, 1);
        for (body, what) in [
            (&b"nope"[..], "valid JSON"),
            (br#"[1]"#, "object"),
            (br#"{"model":"m"}"#, "`messages` is required"),
            (br#"{"model":"m","messages":{}}"#, "array"),
            (
                br#"{"model":"m","messages":[3]}"#,
                "messages[0] must be an object",
            ),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, "role"),
            (br#"{"messages":[]}"#, "`model` is required"),
            (
                br#"{"model":"m","messages":[],"token_budget":-1}"#,
                "token_budget",
            ),
            (
                br#"{"model":"m","messages":[],"config":{"target_ratio":2}}"#,
                "target_ratio",
            ),
            (
                br#"{"model":"m","messages":[],"config":[]}"#,
                "`config` must be an object",
            ),
        ] {
            let e = CompressCall::parse(body, false).unwrap_err();
            assert!(e.contains(what), "{e} lacks {what}");
        }
    }

    #[test]
    fn reply_ratio() {
        let call = CompressCall::parse(br#"{"model":"m","messages":[]}"#, false).unwrap();
        let r = CompressReply::compressed(&call, br#"{"model":"m","messages":[1]}"#, 10, 4, "t", 1);
        assert_eq!(r.messages, serde_json::json!([1]));
        assert_eq!((r.tokens_saved, r.compression_ratio), (6, 0.4));
        let s = serde_json::to_value(CompressReply::skipped(&call, "compression_timeout")).unwrap();
        assert_eq!(s["compression_skipped"], true);
        assert_eq!(s["compression_ratio"], 1.0);
        let u = serde_json::to_value(CompressReply::unchanged(&call, 5)).unwrap();
        assert!(u.get("compression_skipped").is_none());
    }
}
