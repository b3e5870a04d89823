//! OpenAI Chat Completions (`POST /v1/chat/completions`).
//!
//! Compressible: `messages[].content` as a string, and its `{"type": "text"}` parts. Every other
//! field (`tool_calls`, `name`, `tool_call_id`, images, audio, ...) is never touched. One neutral
//! message per API message (empty ones included), so positions (`protect_recent`) and report
//! indices are the API's. Usage: `usage.prompt_tokens` (with
//! `prompt_tokens_details.cached_tokens`), in streams only with `stream_options.include_usage`.

use serde_json::Value;

use super::{Api, Seen, StreamUsage, Surface, u64_at};
use crate::compress::{Conversation, Message, Segment};
use crate::telemetry::Usage;

#[derive(Debug, Clone, Copy)]
pub struct ChatCompletions;

/// The neutral model of a Chat Completions request; `None` without a `messages` array.
pub fn conversation(json: &Value) -> Option<Conversation> {
    let messages = json.get("messages")?.as_array()?;
    let mut out = Conversation::default();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut segments = Vec::new();
        match m.get("content") {
            Some(Value::String(s)) => {
                segments.push(Segment::at(
                    vec!["messages".into(), i.into(), "content".into()],
                    s,
                ));
            }
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    if part.get("type").and_then(Value::as_str) != Some("text") {
                        continue;
                    }
                    if let Some(Value::String(s)) = part.get("text") {
                        segments.push(Segment::at(
                            vec![
                                "messages".into(),
                                i.into(),
                                "content".into(),
                                j.into(),
                                "text".into(),
                            ],
                            s,
                        ));
                    }
                }
            }
            _ => {}
        }
        out.messages.push(Message {
            index: i,
            role,
            segments,
        });
    }
    Some(out)
}

/// `usage` in OpenAI's Chat Completions / completions form.
pub(crate) fn openai_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?;
    if !u.is_object() {
        return None;
    }
    let prompt = u64_at(u, "/prompt_tokens")?;
    let completion = u64_at(u, "/completion_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: u64_at(u, "/total_tokens").unwrap_or(prompt + completion),
        cached_tokens: u64_at(u, "/prompt_tokens_details/cached_tokens"),
        cache_creation_tokens: None,
    })
}

impl Surface for ChatCompletions {
    fn api(&self) -> Api {
        Api::ChatCompletions
    }

    fn path(&self) -> &'static str {
        "/chat/completions"
    }

    fn conversation(&self, json: &Value) -> Option<Conversation> {
        conversation(json)
    }

    fn stream_usage(&self) -> StreamUsage {
        StreamUsage::OptIn
    }

    fn read_body(&self, body: &Value, seen: &mut Seen) {
        seen.usage = openai_usage(body);
        if let Some(s) = body
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
        {
            seen.push_answer(s);
        }
    }

    fn read_event(&self, _name: Option<&str>, data: &Value, seen: &mut Seen) {
        if let Some(u) = openai_usage(data) {
            seen.usage = Some(u);
        }
        if let Some(s) = data
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            seen.push_answer(s);
        }
    }

    fn prompt(&self, json: &Value) -> Option<Value> {
        json.get("messages").cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parts_only() {
        let json: Value = serde_json::from_str(
            r#"{"model":"m","messages":[
                {"role":"system","content":"S"},
                {"role":"user","content":[{"type":"text","text":"a"},
                    {"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"tool_calls":[]},
                {"role":"tool","tool_call_id":"c","content":"r"}]}"#,
        )
        .unwrap();
        let c = conversation(&json).unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[1].segments.len(), 2);
        assert_eq!(c.messages[1].segments[1].text, "b");
        assert!(c.messages[2].segments.is_empty());
        assert_eq!(c.messages[3].role, "tool");
        assert_eq!(c.cache_prefix, 0);
    }

    #[test]
    fn usage_and_answer() {
        let mut seen = Seen::new(true);
        let body = serde_json::json!({"choices":[{"message":{"content":"hi"}}],
            "usage":{"prompt_tokens":10,"completion_tokens":3,
                     "prompt_tokens_details":{"cached_tokens":4}}});
        ChatCompletions.read_body(&body, &mut seen);
        let u = seen.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.total_tokens, u.cached_tokens),
            (10, 13, Some(4))
        );
        assert_eq!(seen.answer, "hi");
        assert_eq!(openai_usage(&serde_json::json!({"usage": null})), None);
    }
}
