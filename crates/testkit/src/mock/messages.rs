//! Anthropic Messages (`POST /messages`, streamed or not) and `POST /messages/count_tokens`.
//! Answers a Message with a `text` block (a `thinking` block first when `thinking` is enabled; a
//! `tool_use` block when a client tool is offered and the last turn holds no `tool_result`),
//! `usage{input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens}`
//! with a simulated `cache_control` prompt cache. Streamed: `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`, `content_block_stop`, `message_delta`
//! (stop reason and cumulative usage), `message_stop`, each `event: <name>` with a matching
//! `type` in its data. Errors in Anthropic's shape, and a `request-id` header on every answer.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::chat::content_text;
use super::tokens::{SEP, bpe_for, first_words};
use super::{
    Call, MockBody, anthropic_json_response, anthropic_model_error, anthropic_sse_response,
    named_event, parse_body,
};

/// The `request-id` header of every Anthropic answer.
pub const REQUEST_ID: &str = "req_mock_anthropic";

/// Anthropic's error body for `status`.
pub fn error_value(status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": REQUEST_ID})
}

fn invalid(call: &Call<'_>, message: &str) -> Response<MockBody> {
    anthropic_json_response(
        call.state,
        StatusCode::BAD_REQUEST,
        &error_value(StatusCode::BAD_REQUEST, message),
    )
}

/// A block's JSON without its `cache_control` marker (markers are not content).
fn without_marker(block: &Value) -> String {
    let mut b = block.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("cache_control");
    }
    b.to_string()
}

/// The text a block contributes to the prompt.
fn block_text(block: &Value) -> String {
    let s = |k: &str| {
        block
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match block.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" => s("text"),
        "thinking" => s("thinking"),
        "tool_result" => content_text(block.get("content").unwrap_or(&Value::Null)),
        "tool_use" => format!(
            "{}{}",
            s("name"),
            block.get("input").map(Value::to_string).unwrap_or_default()
        ),
        _ => without_marker(block),
    }
}

/// Token ids of the prompt (tools, then system, then messages, as Anthropic's cache orders
/// them) and the offsets just after every block marked `cache_control` (and the end, for a
/// top-level `cache_control`).
fn prompt_tokens(model: &str, req: &Value) -> (Vec<u32>, Vec<usize>) {
    let bpe = bpe_for(model);
    let mut ids = Vec::new();
    let mut breakpoints = Vec::new();
    let mut block = |ids: &mut Vec<u32>, lead: &str, text: &str, marked: bool| {
        ids.extend(SEP);
        ids.extend(bpe.encode_ordinary(lead));
        ids.extend(bpe.encode_ordinary(text));
        if marked {
            breakpoints.push(ids.len());
        }
    };
    let marked = |b: &Value| b.get("cache_control").is_some_and(|c| !c.is_null());
    for tool in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        block(&mut ids, "tool", &without_marker(tool), marked(tool));
    }
    match req.get("system") {
        Some(Value::String(s)) => block(&mut ids, "system", s, false),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                block(&mut ids, "system", &block_text(b), marked(b));
            }
        }
        _ => {}
    }
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match m.get("content") {
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    block(&mut ids, role, &block_text(b), marked(b));
                }
            }
            Some(Value::String(s)) => block(&mut ids, role, s, false),
            _ => block(&mut ids, role, "", false),
        }
    }
    if marked(req) {
        breakpoints.push(ids.len());
    }
    ids.extend(SEP);
    (ids, breakpoints)
}

/// The text of the last user message that has any (string content or text blocks).
fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        })
        .find(|t| !t.trim().is_empty())
        .unwrap_or_default()
}

/// The request's model and messages, or the message of the 400 to answer.
fn model_and_messages(req: &Value) -> Result<(String, &[Value]), &'static str> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?
        .to_owned();
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: must be a non-empty array")?;
    Ok((model, messages))
}

pub(crate) fn count_tokens(call: &Call<'_>) -> Response<MockBody> {
    let req = match parse_body(call) {
        Ok(v) => v,
        Err(e) => return invalid(call, &e),
    };
    let model = match model_and_messages(&req) {
        Ok((model, _)) => model,
        Err(e) => return invalid(call, e),
    };
    let (ids, _) = prompt_tokens(&model, &req);
    anthropic_json_response(
        call.state,
        StatusCode::OK,
        &json!({"input_tokens": ids.len()}),
    )
}

/// One content block of the answer.
enum Block {
    Thinking { thinking: String, signature: String },
    Text(String),
    ToolUse { name: String },
}

/// Arguments of the mock's tool calls.
const TOOL_INPUT: &str = "{\"query\":\"mock\"}";

impl Block {
    fn done(&self) -> Value {
        match self {
            Block::Thinking {
                thinking,
                signature,
            } => {
                json!({"type": "thinking", "thinking": thinking, "signature": signature})
            }
            Block::Text(text) => json!({"type": "text", "text": text}),
            Block::ToolUse { name } => json!({"type": "tool_use", "id": "toolu_mock_1",
                "name": name, "input": {"query": "mock"}}),
        }
    }

    /// `content_block_start`'s empty form.
    fn start(&self) -> Value {
        match self {
            Block::Thinking { .. } => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { name } => {
                json!({"type": "tool_use", "id": "toolu_mock_1", "name": name, "input": {}})
            }
        }
    }
}

pub(crate) fn messages(call: &Call<'_>) -> Response<MockBody> {
    let req = match parse_body(call) {
        Ok(v) => v,
        Err(e) => return invalid(call, &e),
    };
    let (model, messages) = match model_and_messages(&req) {
        Ok(x) => x,
        Err(e) => return invalid(call, e),
    };
    if let Some(resp) = anthropic_model_error(call.state, &model) {
        return resp;
    }
    if !req.get("max_tokens").is_some_and(Value::is_u64) {
        return invalid(call, "max_tokens: Field required");
    }
    let (ids, breakpoints) = prompt_tokens(&model, &req);
    let (read, created) = call.state.breakpoint_cache(&ids, &breakpoints);
    let input_tokens = ids.len() - read - created;
    let suffix = call.id_suffix();
    let bpe = bpe_for(&model);
    let mut blocks = Vec::new();
    if req.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled") {
        blocks.push(Block::Thinking {
            thinking: format!("Mock thinking about {} messages.", messages.len()),
            signature: format!("mocksig{suffix}"),
        });
    }
    let last_has_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|b| {
            b.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| {
            t.iter()
                .find(|t| matches!(t.get("type").and_then(Value::as_str), None | Some("custom")))
        })
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| {
            !last_has_result
                && req.pointer("/tool_choice/type").and_then(Value::as_str) != Some("none")
        });
    let stop_reason = match tool {
        Some(name) => {
            blocks.push(Block::ToolUse {
                name: name.to_owned(),
            });
            "tool_use"
        }
        None => {
            blocks.push(Block::Text(format!(
                "Mock message to {} messages ({} input tokens). You said: {}",
                messages.len(),
                ids.len(),
                first_words(&last_user_text(messages), 12)
            )));
            "end_turn"
        }
    };
    let output_tokens: usize = blocks
        .iter()
        .map(|b| match b {
            Block::Thinking { thinking, .. } => bpe.encode_ordinary(thinking).len(),
            Block::Text(t) => bpe.encode_ordinary(t).len(),
            Block::ToolUse { .. } => 12,
        })
        .sum();
    let usage = |output: usize| {
        json!({"input_tokens": input_tokens, "cache_creation_input_tokens": created,
               "cache_read_input_tokens": read, "output_tokens": output, "service_tier": "standard"})
    };
    let message = |content: Value, stop: Value, usage: Value| {
        json!({"id": format!("msg_mock{suffix}"), "type": "message", "role": "assistant",
               "model": model, "content": content, "stop_reason": stop, "stop_sequence": null,
               "usage": usage})
    };
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let content: Vec<Value> = blocks.iter().map(Block::done).collect();
        return anthropic_json_response(
            call.state,
            StatusCode::OK,
            &message(json!(content), json!(stop_reason), usage(output_tokens)),
        );
    }
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        events.push(named_event(name, &data));
    };
    push(
        "message_start",
        json!({"message": message(json!([]), Value::Null, usage(1))}),
    );
    for (index, block) in blocks.iter().enumerate() {
        push(
            "content_block_start",
            json!({"index": index, "content_block": block.start()}),
        );
        if index == 0 {
            push("ping", json!({}));
        }
        let deltas: Vec<Value> = match block {
            Block::Thinking {
                thinking,
                signature,
            } => vec![
                json!({"type": "thinking_delta", "thinking": thinking}),
                json!({"type": "signature_delta", "signature": signature}),
            ],
            Block::Text(text) => call
                .pieces(text)
                .into_iter()
                .map(|p| json!({"type": "text_delta", "text": p}))
                .collect(),
            Block::ToolUse { .. } => {
                let (a, b) = TOOL_INPUT.split_at(TOOL_INPUT.len() / 2);
                [a, b]
                    .iter()
                    .map(|p| json!({"type": "input_json_delta", "partial_json": p}))
                    .collect()
            }
        };
        for delta in deltas {
            push(
                "content_block_delta",
                json!({"index": index, "delta": delta}),
            );
        }
        push("content_block_stop", json!({"index": index}));
    }
    let mut final_usage = usage(output_tokens);
    if let Some(o) = final_usage.as_object_mut() {
        o.remove("service_tier");
    }
    push(
        "message_delta",
        json!({"delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": final_usage}),
    );
    push("message_stop", json!({}));
    anthropic_sse_response(call, events)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{post, post_to, sse_named};
    use super::super::{MockConfig, MockUpstream};
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
               "messages": [{"role": "user", "content": "Summarise the deployment log for me"}]})
    }

    #[tokio::test]
    async fn plain_message_has_text_usage_and_request_id() {
        let (mock, resp) = post("/v1/messages", &body(), &[]).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers["request-id"], super::REQUEST_ID);
        let v = resp.json();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["content"][0]["type"], "text");
        let text = v["content"][0]["text"].as_str().unwrap();
        assert!(
            text.ends_with("You said: Summarise the deployment log for me"),
            "{text}"
        );
        let u = &v["usage"];
        assert!(u["input_tokens"].as_u64().unwrap() > 5);
        assert_eq!(u["cache_read_input_tokens"], 0);
        assert_eq!(u["cache_creation_input_tokens"], 0);
        assert!(u["output_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            mock.state.last_request().unwrap().body,
            body().to_string().as_bytes()
        );
        // count_tokens agrees with the billed input.
        let mut count = body();
        count.as_object_mut().unwrap().remove("max_tokens");
        let c = post_to(&mock, "/v1/messages/count_tokens", &count, &[]).await;
        assert_eq!(c.headers["request-id"], super::REQUEST_ID);
        assert_eq!(c.json(), json!({"input_tokens": u["input_tokens"]}));
    }

    #[tokio::test]
    async fn errors_use_anthropic_shape() {
        let (_m, resp) = post("/v1/messages", &body(), &[("x-mock-status", "429")]).await;
        assert_eq!(resp.status, 429);
        assert_eq!(resp.headers["request-id"], super::REQUEST_ID);
        assert!(resp.headers.contains_key("retry-after"));
        let v = resp.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].is_string());
        let mut b = body();
        b["model"] = json!("mock-error-529");
        let (_m, over) = post("/v1/messages", &b, &[]).await;
        assert_eq!(
            (over.status, over.json()["error"]["type"].clone()),
            (529, json!("overloaded_error"))
        );
        b = body();
        b.as_object_mut().unwrap().remove("max_tokens");
        let (_m, bad) = post("/v1/messages", &b, &[]).await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
        // OpenAI routes keep OpenAI's shape.
        let (_m, oa) = post(
            "/v1/responses",
            &json!({"model": "gpt-4o", "input": "x"}),
            &[("x-mock-status", "429")],
        )
        .await;
        assert_eq!(oa.json()["error"]["code"], "rate_limit_exceeded");
    }

    #[tokio::test]
    async fn stream_events_carry_their_type_and_the_same_text_and_usage() {
        let (_m, plain) = post("/v1/messages", &body(), &[]).await;
        let plain = plain.json();
        let mut b = body();
        b["stream"] = json!(true);
        let (_m, resp) = post("/v1/messages", &b, &[]).await;
        assert!(resp.content_type().starts_with("text/event-stream"));
        assert_eq!(resp.headers["request-id"], super::REQUEST_ID);
        let events = sse_named(&resp.text());
        assert!(events.iter().all(|(n, d)| d["type"] == n.as_str()));
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
        assert_eq!(
            names[names.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let start = &events[0].1["message"];
        assert_eq!(start["content"], json!([]));
        assert!(start["stop_reason"].is_null());
        assert_eq!(
            start["usage"]["input_tokens"],
            plain["usage"]["input_tokens"]
        );
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, d)| {
                assert_eq!(d["delta"]["type"], "text_delta");
                d["delta"]["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            delta["usage"]["output_tokens"],
            plain["usage"]["output_tokens"]
        );
        assert_eq!(delta["usage"]["cache_read_input_tokens"], 0);
    }

    #[tokio::test]
    async fn thinking_tool_use_and_tool_result_round_trip() {
        let mut b = body();
        b["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        b["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
        let (_m, resp) = post("/v1/messages", &b, &[]).await;
        let v = resp.json();
        assert_eq!(v["content"][0]["type"], "thinking");
        assert!(
            v["content"][0]["signature"]
                .as_str()
                .unwrap()
                .starts_with("mocksig")
        );
        assert_eq!(v["content"][1]["type"], "tool_use");
        assert_eq!(v["stop_reason"], "tool_use");
        let mut next = b.clone();
        let msgs = next["messages"].as_array_mut().unwrap();
        msgs.push(json!({"role": "assistant", "content": v["content"]}));
        msgs.push(json!({"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": "toolu_mock_1", "content": "forty two results"}]}));
        let (_m, r2) = post("/v1/messages", &next, &[]).await;
        let v2 = r2.json();
        assert_eq!(v2["stop_reason"], "end_turn");
        assert_eq!(v2["content"][1]["type"], "text");
        // Streamed: thinking and signature deltas, then the tool input as partial JSON.
        b["stream"] = json!(true);
        let (_m, sr) = post("/v1/messages", &b, &[]).await;
        let events = sse_named(&sr.text());
        let kinds: Vec<String> = events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, d)| d["delta"]["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "thinking_delta",
                "signature_delta",
                "input_json_delta",
                "input_json_delta"
            ]
        );
        let json_text: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json_text).unwrap(),
            v["content"][1]["input"]
        );
    }

    #[tokio::test]
    async fn cache_control_breakpoints_create_then_read_the_cache() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let long = "The incident log line repeats with small changes. ".repeat(200);
        let mut b = body();
        b["system"] =
            json!([{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}]);
        let first = post_to(&mock, "/v1/messages", &b, &[]).await.json();
        let u1 = &first["usage"];
        let created = u1["cache_creation_input_tokens"].as_u64().unwrap();
        assert!(created >= 1024, "{u1}");
        assert_eq!(u1["cache_read_input_tokens"], 0);
        b["messages"][0]["content"] = json!("a different question");
        let second = post_to(&mock, "/v1/messages", &b, &[]).await.json();
        let u2 = &second["usage"];
        assert_eq!(u2["cache_read_input_tokens"].as_u64().unwrap(), created);
        assert_eq!(u2["cache_creation_input_tokens"], 0);
        // input_tokens excludes what the cache served, as Anthropic bills it.
        let count = post_to(&mock, "/v1/messages/count_tokens", &b, &[])
            .await
            .json();
        assert_eq!(
            count["input_tokens"].as_u64().unwrap(),
            u2["input_tokens"].as_u64().unwrap() + created
        );
        // Without the marker nothing is cached.
        b["system"] = json!(long);
        let plain = post_to(&mock, "/v1/messages", &b, &[]).await.json();
        assert_eq!(plain["usage"]["cache_read_input_tokens"], 0);
        assert_eq!(plain["usage"]["cache_creation_input_tokens"], 0);
    }
}
