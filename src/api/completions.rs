//! OpenAI legacy completions (`POST /v1/completions`).
//!
//! Compressible: `prompt` as a string or each string of an array of strings, under the `prompt`
//! budget (`[compression.roles.prompt]`, off by default: a bare prompt has no question apart
//! from its context, so compressing it is the operator's explicit choice). Token arrays
//! (`int[]`, `int[][]`), `suffix` and every other field pass untouched. Streams and usage are
//! Chat Completions' (data-only SSE, usage only with `stream_options.include_usage`).

use serde_json::Value;

use super::chat::openai_usage;
use super::{Api, Seen, StreamUsage, Surface};
use crate::compress::{Conversation, Segment};

#[derive(Debug, Clone, Copy)]
pub struct Completions;

/// The neutral model of a completions request: one `prompt` message per prompt string.
pub fn conversation(json: &Value) -> Option<Conversation> {
    let mut c = Conversation::default();
    match json.get("prompt")? {
        Value::String(s) => c.push("prompt", vec![Segment::at(vec!["prompt".into()], s)]),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Value::String(s) = item {
                    c.push(
                        "prompt",
                        vec![Segment::at(vec!["prompt".into(), i.into()], s)],
                    );
                }
            }
        }
        _ => {}
    }
    Some(c)
}

impl Surface for Completions {
    fn api(&self) -> Api {
        Api::Completions
    }

    fn path(&self) -> &'static str {
        "/completions"
    }

    fn conversation(&self, json: &Value) -> Option<Conversation> {
        conversation(json)
    }

    fn stream_usage(&self) -> StreamUsage {
        StreamUsage::OptIn
    }

    fn read_body(&self, body: &Value, seen: &mut Seen) {
        seen.usage = openai_usage(body);
        if let Some(t) = body.pointer("/choices/0/text").and_then(Value::as_str) {
            seen.push_answer(t);
        }
    }

    fn read_event(&self, _name: Option<&str>, data: &Value, seen: &mut Seen) {
        if let Some(u) = openai_usage(data) {
            seen.usage = Some(u);
        }
        if let Some(t) = data.pointer("/choices/0/text").and_then(Value::as_str) {
            seen.push_answer(t);
        }
    }

    fn prompt(&self, json: &Value) -> Option<Value> {
        json.get("prompt").cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_only() {
        let c = conversation(&serde_json::json!({"prompt": "one"})).unwrap();
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].role, "prompt");
        let c = conversation(&serde_json::json!({"prompt": ["a", [1, 2], "b"]})).unwrap();
        let texts: Vec<_> = c
            .messages
            .iter()
            .map(|m| m.segments[0].text.as_str())
            .collect();
        assert_eq!(texts, ["a", "b"]);
        assert_eq!(
            c.messages[1].segments[0].path,
            vec!["prompt".into(), 2.into()]
        );
        assert!(
            conversation(&serde_json::json!({"prompt": [1, 2, 3]}))
                .unwrap()
                .messages
                .is_empty()
        );
        assert!(conversation(&serde_json::json!({"model": "m"})).is_none());
    }
}
