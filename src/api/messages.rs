//! Anthropic Messages (`POST /v1/messages`).
//!
//! Compressible:
//! - `system`, a string or its text blocks (the `system` budget);
//! - text blocks (or the string content) of user and assistant messages, under that role
//!   (the final user text is protected by default, assistant text is off by default);
//! - the text content of `tool_result` blocks (a string, or its text parts), under the `tool`
//!   budget, as neutral messages of their own in block order.
//!
//! Never touched: `thinking` and `redacted_thinking` blocks and their signatures, `tool_use`,
//! `server_tool_use` and every server-tool result block, images, documents, search results,
//! `cache_control` markers (never added, moved or removed), `tool_use_id` pairing, `tools`,
//! `metadata`, and every block type not listed above.
//!
//! Cache prefix: the cached prefix runs tools → system → messages up to the block carrying the
//! last `cache_control` (a top-level `cache_control` caches everything). Compressed text is the
//! same bytes on every turn (deterministic per text, and cached), so the prefix keeps matching;
//! `[compression] freeze_cached_prefix = true` leaves it alone altogether.
//!
//! Usage: `input_tokens` excludes cache reads and writes, so the billed prompt is
//! `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`. Streams carry it in
//! `message_start.message.usage`, with the cumulative output in `message_delta.usage`.

use serde_json::Value;

use super::{Api, ErrorShape, Seen, StreamUsage, Surface, u64_at};
use crate::compress::{Conversation, PathElem, Segment};
use crate::telemetry::Usage;

#[derive(Debug, Clone, Copy)]
pub struct Messages;

/// A run of consecutive text blocks of one message.
struct Group {
    role: String,
    segments: Vec<Segment>,
}

impl Group {
    fn flush(&mut self, c: &mut Conversation) {
        c.push(self.role.clone(), std::mem::take(&mut self.segments));
    }
}

fn text_of(block: &Value) -> Option<&str> {
    (block.get("type").and_then(Value::as_str) == Some("text"))
        .then(|| block.get("text").and_then(Value::as_str))
        .flatten()
}

/// The neutral model of a Messages request; `None` without a `messages` array.
pub fn conversation(json: &Value) -> Option<Conversation> {
    let messages = json.get("messages")?.as_array()?;
    let mut c = Conversation::default();
    match json.get("system") {
        Some(Value::String(s)) => c.push("system", vec![Segment::at(vec!["system".into()], s)]),
        Some(Value::Array(blocks)) => {
            let mut group = Group {
                role: "system".into(),
                segments: Vec::new(),
            };
            let mut breakpoint = false;
            for (j, b) in blocks.iter().enumerate() {
                breakpoint |= b.get("cache_control").is_some();
                if let Some(t) = text_of(b) {
                    group.segments.push(Segment::at(
                        vec!["system".into(), j.into(), "text".into()],
                        t,
                    ));
                }
            }
            group.flush(&mut c);
            if breakpoint {
                c.cache_breakpoint();
            }
        }
        _ => {}
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let base: Vec<PathElem> = vec!["messages".into(), i.into(), "content".into()];
        match m.get("content") {
            Some(Value::String(s)) => c.push(role, vec![Segment::at(base, s)]),
            Some(Value::Array(blocks)) => {
                let mut group = Group {
                    role: role.to_string(),
                    segments: Vec::new(),
                };
                for (j, b) in blocks.iter().enumerate() {
                    let mut at = base.clone();
                    at.push(j.into());
                    if let Some(t) = text_of(b) {
                        at.push("text".into());
                        group.segments.push(Segment::at(at, t));
                        if b.get("cache_control").is_some() {
                            group.flush(&mut c);
                            c.cache_breakpoint();
                        }
                        continue;
                    }
                    // Any other block ends the run of text, so the order of the neutral
                    // messages follows the blocks.
                    group.flush(&mut c);
                    let mut breakpoint = b.get("cache_control").is_some();
                    if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                        at.push("content".into());
                        match b.get("content") {
                            Some(Value::String(s)) => c.push("tool", vec![Segment::at(at, s)]),
                            Some(Value::Array(parts)) => {
                                let mut segments = Vec::new();
                                for (k, p) in parts.iter().enumerate() {
                                    breakpoint |= p.get("cache_control").is_some();
                                    if let Some(t) = text_of(p) {
                                        let mut pat = at.clone();
                                        pat.extend([k.into(), "text".into()]);
                                        segments.push(Segment::at(pat, t));
                                    }
                                }
                                c.push("tool", segments);
                            }
                            _ => {}
                        }
                    }
                    if breakpoint {
                        c.cache_breakpoint();
                    }
                }
                group.flush(&mut c);
            }
            _ => {}
        }
    }
    if json.get("cache_control").is_some() {
        c.cache_breakpoint();
    }
    Some(c)
}

/// An Anthropic `usage` object; `prompt_tokens` counts every input token.
fn anthropic_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let input = u64_at(u, "/input_tokens")?;
    let read = u64_at(u, "/cache_read_input_tokens");
    let written = u64_at(u, "/cache_creation_input_tokens");
    let output = u64_at(u, "/output_tokens").unwrap_or(0);
    let prompt = input + read.unwrap_or(0) + written.unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt + output,
        cached_tokens: read,
        cache_creation_tokens: written,
    })
}

impl Surface for Messages {
    fn api(&self) -> Api {
        Api::Messages
    }

    fn path(&self) -> &'static str {
        "/messages"
    }

    fn error_shape(&self) -> ErrorShape {
        ErrorShape::Anthropic
    }

    fn conversation(&self, json: &Value) -> Option<Conversation> {
        conversation(json)
    }

    fn stream_usage(&self) -> StreamUsage {
        StreamUsage::Always
    }

    fn read_body(&self, body: &Value, seen: &mut Seen) {
        seen.usage = body.get("usage").and_then(anthropic_usage);
        for b in body
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = text_of(b) {
                seen.push_answer(t);
            }
        }
    }

    fn read_event(&self, name: Option<&str>, data: &Value, seen: &mut Seen) {
        let kind = data.get("type").and_then(Value::as_str).or(name);
        match kind {
            Some("message_start") => {
                if let Some(u) = data.pointer("/message/usage").and_then(anthropic_usage) {
                    seen.usage = Some(u);
                }
            }
            Some("message_delta") => {
                let Some(u) = data.get("usage").filter(|u| u.is_object()) else {
                    return;
                };
                // Cumulative: output always; input fields when the API repeats them.
                let mut usage = seen.usage.unwrap_or_default();
                if let Some(full) = anthropic_usage(u) {
                    usage = full;
                } else if let Some(out) = u64_at(u, "/output_tokens") {
                    usage.completion_tokens = out;
                    usage.total_tokens = usage.prompt_tokens + out;
                }
                seen.usage = Some(usage);
            }
            Some("content_block_delta") => {
                if data.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta")
                    && let Some(t) = data.pointer("/delta/text").and_then(Value::as_str)
                {
                    seen.push_answer(t);
                }
            }
            _ => {}
        }
    }

    fn prompt(&self, json: &Value) -> Option<Value> {
        super::fields(json, &["system", "messages"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles_and_texts(c: &Conversation) -> Vec<(String, Vec<String>)> {
        c.messages
            .iter()
            .map(|m| {
                (
                    m.role.clone(),
                    m.segments.iter().map(|s| s.text.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn blocks_in_order_with_tool_results_apart() {
        let json: Value = serde_json::from_str(
            r#"{"model":"claude-sonnet-4-5","max_tokens":10,
            "system":[{"type":"text","text":"S1"},{"type":"text","text":"S2",
                       "cache_control":{"type":"ephemeral"}}],
            "messages":[
              {"role":"user","content":"question one"},
              {"role":"assistant","content":[
                 {"type":"thinking","thinking":"hmm","signature":"sig"},
                 {"type":"text","text":"let me look"},
                 {"type":"tool_use","id":"tu1","name":"read","input":{"p":"a"}}]},
              {"role":"user","content":[
                 {"type":"tool_result","tool_use_id":"tu1","content":"file body"},
                 {"type":"tool_result","tool_use_id":"tu2","content":[
                     {"type":"text","text":"part"},{"type":"image","source":{}}]},
                 {"type":"text","text":"now fix it","cache_control":{"type":"ephemeral"}},
                 {"type":"text","text":"after"}]}
            ]}"#,
        )
        .unwrap();
        let c = conversation(&json).unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            roles_and_texts(&c),
            vec![
                ("system".into(), s(&["S1", "S2"])),
                ("user".into(), s(&["question one"])),
                ("assistant".into(), s(&["let me look"])),
                ("tool".into(), s(&["file body"])),
                ("tool".into(), s(&["part"])),
                ("user".into(), s(&["now fix it"])),
                ("user".into(), s(&["after"])),
            ]
        );
        // everything up to "now fix it" is cached
        assert_eq!(c.cache_prefix, 6);
        assert_eq!(
            c.messages[4].segments[0].path,
            vec![
                PathElem::from("messages"),
                2.into(),
                "content".into(),
                1.into(),
                "content".into(),
                0.into(),
                "text".into()
            ]
        );
        let mut auto = json.clone();
        auto["cache_control"] = serde_json::json!({"type": "ephemeral"});
        assert_eq!(conversation(&auto).unwrap().cache_prefix, 7);
    }

    #[test]
    fn usage_counts_cache_reads_and_writes() {
        let body = serde_json::json!({"content":[{"type":"text","text":"Hello"},
            {"type":"tool_use","id":"x","name":"f","input":{}}],
            "usage":{"input_tokens":10,"cache_read_input_tokens":100,
                     "cache_creation_input_tokens":20,"output_tokens":4}});
        let mut seen = Seen::new(true);
        Messages.read_body(&body, &mut seen);
        let u = seen.usage.unwrap();
        assert_eq!(u.prompt_tokens, 130);
        assert_eq!(u.cached_tokens, Some(100));
        assert_eq!(u.cache_creation_tokens, Some(20));
        assert_eq!(u.total_tokens, 134);
        assert_eq!(seen.answer, "Hello");

        let mut seen = Seen::new(true);
        let start = serde_json::json!({"type":"message_start","message":{"usage":
            {"input_tokens":5,"cache_read_input_tokens":50,"output_tokens":1}}});
        Messages.read_event(Some("message_start"), &start, &mut seen);
        let delta = serde_json::json!({"type":"content_block_delta","index":0,
            "delta":{"type":"text_delta","text":"Hi"}});
        Messages.read_event(Some("content_block_delta"), &delta, &mut seen);
        let end = serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},
            "usage":{"output_tokens":12}});
        Messages.read_event(Some("message_delta"), &end, &mut seen);
        let u = seen.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (55, 12));
        assert_eq!(u.cached_tokens, Some(50));
        assert_eq!(seen.answer, "Hi");
    }
}
