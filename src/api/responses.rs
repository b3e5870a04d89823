//! OpenAI Responses (`POST /v1/responses`).
//!
//! Compressible:
//! - `instructions` (under the `system` budget);
//! - `input` as a string (a user message, so the final user message: protected by default);
//! - message items' string `content` and their `input_text` / `output_text` parts, under the
//!   item's role;
//! - the text `output` of `function_call_output` and every other `*_call_output` item (a string,
//!   or its `input_text` parts), under the `tool` budget.
//!
//! Never touched: `reasoning` items (`encrypted_content` included), every `call_id`,
//! `function_call.arguments`, images and files, `phase`, `previous_response_id`,
//! `prompt_cache_key`, `prompt_cache_breakpoint`, and every item type not listed above. A part
//! carrying `prompt_cache_breakpoint` marks the end of the cached prefix.
//!
//! Usage is always in the answer: the top-level `usage` of a response body, or
//! `response.usage` of the stream's `response.completed` (also `response.incomplete` /
//! `response.failed`) event.

use serde_json::Value;

use super::{Api, Seen, StreamUsage, Surface, u64_at};
use crate::compress::{Conversation, PathElem, Segment};
use crate::telemetry::Usage;

#[derive(Debug, Clone, Copy)]
pub struct Responses;

/// Text part types inside message content and call outputs.
fn is_text_part(kind: Option<&str>) -> bool {
    matches!(kind, Some("input_text" | "output_text"))
}

/// The text parts of a `content` / `output` array at `base`, and whether one of them carries a
/// cache breakpoint.
fn text_parts(parts: &[Value], base: &[PathElem]) -> (Vec<Segment>, bool) {
    let mut segments = Vec::new();
    let mut breakpoint = false;
    for (j, part) in parts.iter().enumerate() {
        breakpoint |= part.get("prompt_cache_breakpoint").is_some();
        if !is_text_part(part.get("type").and_then(Value::as_str)) {
            continue;
        }
        if let Some(Value::String(s)) = part.get("text") {
            let mut p = base.to_vec();
            p.extend([j.into(), "text".into()]);
            segments.push(Segment::at(p, s));
        }
    }
    (segments, breakpoint)
}

/// The neutral model of a Responses request; `None` when it has neither `input` nor
/// `instructions`.
pub fn conversation(json: &Value) -> Option<Conversation> {
    let obj = json.as_object()?;
    if !obj.contains_key("input") && !obj.contains_key("instructions") {
        return None;
    }
    let mut c = Conversation::default();
    if let Some(Value::String(s)) = obj.get("instructions") {
        c.push("system", vec![Segment::at(vec!["instructions".into()], s)]);
    }
    match obj.get("input") {
        Some(Value::String(s)) => c.push("user", vec![Segment::at(vec!["input".into()], s)]),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let kind = item.get("type").and_then(Value::as_str);
                let role = item.get("role").and_then(Value::as_str);
                let base: Vec<PathElem> = vec!["input".into(), i.into()];
                match (kind, role) {
                    (Some("message") | None, Some(role)) => {
                        let mut p = base.clone();
                        p.push("content".into());
                        match item.get("content") {
                            Some(Value::String(s)) => c.push(role, vec![Segment::at(p, s)]),
                            Some(Value::Array(parts)) => {
                                let (segments, breakpoint) = text_parts(parts, &p);
                                c.push(role, segments);
                                if breakpoint {
                                    c.cache_breakpoint();
                                }
                            }
                            _ => {}
                        }
                    }
                    (Some(t), _) if t.ends_with("_call_output") => {
                        let mut p = base.clone();
                        p.push("output".into());
                        match item.get("output") {
                            Some(Value::String(s)) => c.push("tool", vec![Segment::at(p, s)]),
                            Some(Value::Array(parts)) => {
                                let (segments, breakpoint) = text_parts(parts, &p);
                                c.push("tool", segments);
                                if breakpoint {
                                    c.cache_breakpoint();
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Some(c)
}

/// `usage` in the Responses form.
fn responses_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let input = u64_at(u, "/input_tokens")?;
    let output = u64_at(u, "/output_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: u64_at(u, "/total_tokens").unwrap_or(input + output),
        cached_tokens: u64_at(u, "/input_tokens_details/cached_tokens"),
        cache_creation_tokens: None,
    })
}

/// The `output_text` of a response object's message items.
fn output_text(response: &Value, seen: &mut Seen) {
    let Some(items) = response.get("output").and_then(Value::as_array) else {
        return;
    };
    for item in items {
        if item.get("type").and_then(Value::as_str) != Some("message") {
            continue;
        }
        for part in item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if part.get("type").and_then(Value::as_str) == Some("output_text")
                && let Some(t) = part.get("text").and_then(Value::as_str)
            {
                seen.push_answer(t);
            }
        }
    }
}

impl Surface for Responses {
    fn api(&self) -> Api {
        Api::Responses
    }

    fn path(&self) -> &'static str {
        "/responses"
    }

    fn conversation(&self, json: &Value) -> Option<Conversation> {
        conversation(json)
    }

    fn stream_usage(&self) -> StreamUsage {
        StreamUsage::Always
    }

    fn read_body(&self, body: &Value, seen: &mut Seen) {
        seen.usage = body.get("usage").and_then(responses_usage);
        output_text(body, seen);
    }

    fn read_event(&self, name: Option<&str>, data: &Value, seen: &mut Seen) {
        let kind = data.get("type").and_then(Value::as_str).or(name);
        match kind {
            Some("response.output_text.delta") => {
                if let Some(d) = data.get("delta").and_then(Value::as_str) {
                    seen.push_answer(d);
                }
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                if let Some(u) = data.pointer("/response/usage").and_then(responses_usage) {
                    seen.usage = Some(u);
                }
            }
            _ => {}
        }
    }

    fn prompt(&self, json: &Value) -> Option<Value> {
        super::fields(json, &["instructions", "input"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_compressible() {
        let json: Value = serde_json::from_str(
            r#"{"model":"gpt-5","instructions":"Be terse.","previous_response_id":"resp_1",
            "input":[
              {"role":"user","content":"plain"},
              {"type":"message","role":"user","content":[
                 {"type":"input_text","text":"first"},
                 {"type":"input_image","image_url":"data:x"},
                 {"type":"input_text","text":"second","prompt_cache_breakpoint":{}}]},
              {"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"opaque"},
              {"type":"function_call","call_id":"c1","name":"f","arguments":"{\"q\":\"x\"}"},
              {"type":"function_call_output","call_id":"c1","output":"tool text"},
              {"type":"shell_call_output","call_id":"c2","output":[{"type":"input_text","text":"ls"}]},
              {"type":"message","role":"assistant","phase":"commentary",
               "content":[{"type":"output_text","text":"said"}]},
              {"type":"item_reference","id":"x"}
            ]}"#,
        )
        .unwrap();
        let c = conversation(&json).unwrap();
        let got: Vec<(&str, Vec<&str>)> = c
            .messages
            .iter()
            .map(|m| {
                (
                    m.role.as_str(),
                    m.segments.iter().map(|s| s.text.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("system", vec!["Be terse."]),
                ("user", vec!["plain"]),
                ("user", vec!["first", "second"]),
                ("tool", vec!["tool text"]),
                ("tool", vec!["ls"]),
                ("assistant", vec!["said"]),
            ]
        );
        // instructions, the plain message and the one with the breakpoint
        assert_eq!(c.cache_prefix, 3);
        assert_eq!(
            c.messages[4].segments[0].path,
            vec![
                PathElem::from("input"),
                5.into(),
                "output".into(),
                0.into(),
                "text".into()
            ]
        );
        let s: Value = serde_json::from_str(r#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(conversation(&s).unwrap().messages[0].role, "user");
        assert!(conversation(&serde_json::json!({"model": "m"})).is_none());
    }

    #[test]
    fn usage_from_body_and_stream() {
        let body = serde_json::json!({"output":[{"type":"message","content":[
            {"type":"output_text","text":"Hi"}]}],
            "usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":8},
                     "output_tokens":5,"total_tokens":25}});
        let mut seen = Seen::new(true);
        Responses.read_body(&body, &mut seen);
        let u = seen.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (20, 5, Some(8))
        );
        assert_eq!(seen.answer, "Hi");

        let mut seen = Seen::new(true);
        let delta = serde_json::json!({"type":"response.output_text.delta","delta":"Yo",
            "sequence_number":3});
        Responses.read_event(Some("response.output_text.delta"), &delta, &mut seen);
        let done = serde_json::json!({"type":"response.completed","sequence_number":9,
            "response":{"usage":{"input_tokens":7,"output_tokens":2}}});
        Responses.read_event(Some("response.completed"), &done, &mut seen);
        assert_eq!(seen.answer, "Yo");
        assert_eq!(seen.usage.unwrap().total_tokens, 9);
    }
}
