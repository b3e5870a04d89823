//! OpenAI Responses (`POST /responses`): a `response` object whose `output` holds an assistant
//! `message` item with one `output_text` part (or a `function_call` item when a function tool is
//! offered, and a `reasoning` item first when `reasoning` is asked for), top-level `usage` with
//! `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`. Streamed,
//! named SSE events from `response.created` to `response.completed` (usage inside), each with a
//! `sequence_number`, and no `[DONE]`.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::chat::content_text;
use super::tokens::{SEP, bpe_for, first_words};
use super::{
    CREATED, CacheSpace, Call, MockBody, bad_request, json_response, named_event,
    openai_model_error, parse_body, sse_response,
};

/// Reasoning tokens billed when the request asks for reasoning.
const REASONING_TOKENS: usize = 8;

/// The text of an item's `output` (a string or a list of parts).
fn output_text(output: Option<&Value>) -> String {
    output.map(content_text).unwrap_or_default()
}

/// Token ids of the whole input: `instructions`, then every item (role and text for
/// messages, name and arguments for calls, the output of `*_call_output` items, the JSON of
/// any other item), each after a separator.
fn input_tokens(model: &str, req: &Value) -> Vec<u32> {
    let bpe = bpe_for(model);
    let mut ids = Vec::new();
    let part = |ids: &mut Vec<u32>, texts: &[&str]| {
        ids.extend(SEP);
        for t in texts {
            ids.extend(bpe.encode_ordinary(t));
        }
    };
    if let Some(instr) = req.get("instructions").and_then(Value::as_str) {
        part(&mut ids, &["system", instr]);
    }
    match req.get("input") {
        Some(Value::String(s)) => part(&mut ids, &["user", s]),
        Some(Value::Array(items)) => {
            for item in items {
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
                match kind {
                    "message" => {
                        let text = content_text(item.get("content").unwrap_or(&Value::Null));
                        part(&mut ids, &[s("role"), &text]);
                    }
                    "function_call" => part(&mut ids, &[s("name"), s("arguments")]),
                    k if k.ends_with("_call_output") => {
                        part(&mut ids, &[&output_text(item.get("output"))]);
                    }
                    _ => part(&mut ids, &[&item.to_string()]),
                }
            }
        }
        _ => {}
    }
    ids.extend(SEP);
    ids
}

/// The text of the last user message of the input.
fn last_user_text(req: &Value) -> String {
    match req.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .rev()
            .find(|i| {
                i.get("type").and_then(Value::as_str).unwrap_or("message") == "message"
                    && i.get("role").and_then(Value::as_str) == Some("user")
            })
            .map(|i| content_text(i.get("content").unwrap_or(&Value::Null)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn input_len(req: &Value) -> usize {
    match req.get("input") {
        Some(Value::Array(items)) => items.len(),
        Some(_) => 1,
        None => 0,
    }
}

/// The `response` object; `output` and `usage` as given.
fn response_object(
    req: &Value,
    id: &str,
    model: &str,
    status: &str,
    output: Value,
    usage: Value,
) -> Value {
    let echo = |k: &str, default: Value| req.get(k).cloned().unwrap_or(default);
    json!({
        "id": id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": echo("instructions", Value::Null),
        "max_output_tokens": echo("max_output_tokens", Value::Null),
        "max_tool_calls": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
        "previous_response_id": echo("previous_response_id", Value::Null),
        "prompt_cache_key": echo("prompt_cache_key", Value::Null),
        "reasoning": {
            "effort": req.pointer("/reasoning/effort").cloned().unwrap_or(Value::Null),
            "summary": null
        },
        "safety_identifier": null,
        "service_tier": "default",
        "store": echo("store", json!(true)),
        "temperature": echo("temperature", json!(1.0)),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": echo("tool_choice", json!("auto")),
        "tools": echo("tools", json!([])),
        "top_logprobs": 0,
        "top_p": echo("top_p", json!(1.0)),
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": echo("metadata", json!({}))
    })
}

/// An `output_text` content part.
fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// One output item as it is while streaming (`in_progress`, empty) and when done.
enum Item {
    Reasoning(Value),
    Message { id: String, text: String },
    FunctionCall(Value),
}

impl Item {
    fn done(&self) -> Value {
        match self {
            Item::Reasoning(v) | Item::FunctionCall(v) => v.clone(),
            Item::Message { id, text } => {
                json!({"id": id, "type": "message", "status": "completed",
                "role": "assistant", "content": [text_part(text)]})
            }
        }
    }

    fn added(&self) -> Value {
        let mut v = self.done();
        match self {
            Item::Reasoning(_) => {}
            Item::Message { .. } => {
                v["status"] = json!("in_progress");
                v["content"] = json!([]);
            }
            Item::FunctionCall(_) => {
                v["status"] = json!("in_progress");
                v["arguments"] = json!("");
            }
        }
        v
    }
}

pub(crate) fn responses(call: &Call<'_>) -> Response<MockBody> {
    let state = call.state;
    let req = match parse_body(call) {
        Ok(v) => v,
        Err(e) => return bad_request(state, &e),
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    if let Some(resp) = openai_model_error(state, &model) {
        return resp;
    }
    match req.get("input") {
        Some(Value::String(_)) => {}
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {}
        _ => {
            return bad_request(
                state,
                "input must be a string or a non-empty array of items",
            );
        }
    }
    let prompt = input_tokens(&model, &req);
    let cached = state.cached_prefix(CacheSpace::Responses, &prompt);
    let suffix = call.id_suffix();
    let id = format!("resp_mock{suffix}");
    let last_is_output = req
        .get("input")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with("_call_output"));
    let tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| {
            t.iter()
                .find(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        })
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|_| {
            !last_is_output && req.get("tool_choice").and_then(Value::as_str) != Some("none")
        });
    let reasoning = req.get("reasoning").is_some_and(|r| !r.is_null());
    let encrypted = req
        .get("include")
        .and_then(Value::as_array)
        .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content"));
    let mut items = Vec::new();
    if reasoning {
        let encrypted_content = encrypted.then(|| format!("gAAAAmock{suffix}"));
        items.push(Item::Reasoning(
            json!({"id": format!("rs_mock{suffix}"), "type": "reasoning",
            "summary": [], "encrypted_content": encrypted_content}),
        ));
    }
    let reply = format!(
        "Mock response to {} input items ({} input tokens). You said: {}",
        input_len(&req),
        prompt.len(),
        first_words(&last_user_text(&req), 12)
    );
    let text_tokens = match tool {
        Some(name) => {
            items.push(Item::FunctionCall(json!({"id": format!("fc_mock{suffix}"),
                "type": "function_call", "status": "completed", "call_id": "call_mock_1",
                "name": name, "arguments": "{\"query\":\"mock\"}"})));
            12
        }
        None => {
            items.push(Item::Message {
                id: format!("msg_mock{suffix}"),
                text: reply.clone(),
            });
            bpe_for(&model).encode_ordinary(&reply).len()
        }
    };
    let reasoning_tokens = if reasoning { REASONING_TOKENS } else { 0 };
    let output_tokens = text_tokens + reasoning_tokens;
    let usage = json!({
        "input_tokens": prompt.len(),
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": prompt.len() + output_tokens
    });
    let output: Vec<Value> = items.iter().map(Item::done).collect();
    let done = response_object(&req, &id, &model, "completed", json!(output), usage);
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(state, StatusCode::OK, &done);
    }
    let mut events = Vec::new();
    let mut push = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(events.len());
        events.push(named_event(name, &data));
    };
    let start = response_object(&req, &id, &model, "in_progress", json!([]), Value::Null);
    push("response.created", json!({"response": start}));
    push("response.in_progress", json!({"response": start}));
    for (output_index, item) in items.iter().enumerate() {
        push(
            "response.output_item.added",
            json!({"output_index": output_index, "item": item.added()}),
        );
        match item {
            Item::Reasoning(_) => {}
            Item::Message { id: item_id, text } => {
                let at =
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                let with = |mut v: Value, extra: Value| {
                    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                        v.extend(extra.clone());
                    }
                    v
                };
                push(
                    "response.content_part.added",
                    with(at.clone(), json!({"part": text_part("")})),
                );
                for piece in call.pieces(text) {
                    push(
                        "response.output_text.delta",
                        with(at.clone(), json!({"delta": piece, "logprobs": []})),
                    );
                }
                push(
                    "response.output_text.done",
                    with(at.clone(), json!({"text": text, "logprobs": []})),
                );
                push(
                    "response.content_part.done",
                    with(at.clone(), json!({"part": text_part(text)})),
                );
            }
            Item::FunctionCall(v) => {
                let item_id = v["id"].clone();
                let arguments = v["arguments"].clone();
                push(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id,
                    "output_index": output_index, "delta": arguments}),
                );
                push(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id,
                    "output_index": output_index, "name": v["name"], "arguments": arguments}),
                );
            }
        }
        push(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item.done()}),
        );
    }
    push("response.completed", json!({"response": done}));
    sse_response(call, events)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{post, post_to, sse_named};
    use super::super::{MockConfig, MockUpstream};
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({"model": "gpt-4o-mini", "instructions": "Be brief.",
               "input": [{"role": "user", "content": [{"type": "input_text",
                          "text": "Summarise the deployment log for me"}]}]})
    }

    #[tokio::test]
    async fn plain_response_has_a_message_with_output_text_and_usage() {
        let (mock, resp) = post("/v1/responses", &body(), &[]).await;
        assert_eq!(resp.status, 200);
        let v = resp.json();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["instructions"], "Be brief.");
        let item = &v["output"][0];
        assert_eq!(item["type"], "message");
        assert_eq!(item["role"], "assistant");
        assert_eq!(item["content"][0]["type"], "output_text");
        let text = item["content"][0]["text"].as_str().unwrap();
        assert!(
            text.ends_with("You said: Summarise the deployment log for me"),
            "{text}"
        );
        let u = &v["usage"];
        assert!(u["input_tokens"].as_u64().unwrap() > 5);
        assert_eq!(u["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
        );
        // The request is recorded byte for byte.
        assert_eq!(
            mock.state.last_request().unwrap().body,
            body().to_string().as_bytes()
        );
        // A string input works too; a missing one is a 400 in OpenAI's shape.
        let (_m, s) = post(
            "/v1/responses",
            &json!({"model": "gpt-4o", "input": "hi there"}),
            &[],
        )
        .await;
        assert!(
            s.json()["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .ends_with("You said: hi there")
        );
        let (_m, bad) = post("/v1/responses", &json!({"model": "gpt-4o"}), &[]).await;
        assert_eq!(bad.status, 400);
        assert!(
            bad.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("input")
        );
    }

    #[tokio::test]
    async fn stream_is_named_events_with_sequence_numbers_ending_completed() {
        let (_m, plain) = post("/v1/responses", &body(), &[]).await;
        let plain = plain.json();
        let mut b = body();
        b["stream"] = json!(true);
        let (_m, resp) = post("/v1/responses", &b, &[]).await;
        assert!(resp.content_type().starts_with("text/event-stream"));
        let text = resp.text();
        assert!(!text.contains("[DONE]"));
        let events = sse_named(&text);
        for (i, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], name.as_str());
            assert_eq!(data["sequence_number"], i);
        }
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert_eq!(
            names[names.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert_eq!(events[0].1["response"]["status"], "in_progress");
        let deltas: String = events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        let plain_text = plain["output"][0]["content"][0]["text"].as_str().unwrap();
        assert_eq!(deltas, plain_text);
        let completed = &events.last().unwrap().1["response"];
        assert_eq!(completed["usage"], plain["usage"]);
        // Ids derive from the request's bytes (here with `stream`); the content is the same.
        assert_eq!(
            completed["output"][0]["content"],
            plain["output"][0]["content"]
        );
        let item_id = &completed["output"][0]["id"];
        assert!(
            events
                .iter()
                .filter(|(_, d)| d.get("item_id").is_some())
                .all(|(_, d)| &d["item_id"] == item_id)
        );
    }

    #[tokio::test]
    async fn function_tools_reasoning_and_tool_outputs() {
        let tools =
            json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
        let mut b = body();
        b["tools"] = tools.clone();
        b["reasoning"] = json!({"effort": "low"});
        b["include"] = json!(["reasoning.encrypted_content"]);
        let (_m, resp) = post("/v1/responses", &b, &[]).await;
        let v = resp.json();
        assert_eq!(v["output"][0]["type"], "reasoning");
        assert!(
            v["output"][0]["encrypted_content"]
                .as_str()
                .unwrap()
                .starts_with("gAAAA")
        );
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["name"], "lookup");
        assert_eq!(v["output"][1]["call_id"], "call_mock_1");
        assert_eq!(
            v["usage"]["output_tokens_details"]["reasoning_tokens"],
            super::REASONING_TOKENS
        );
        // The tool's output answered: a message, and the output counted as input.
        let mut next = body();
        next["tools"] = tools;
        let input = next["input"].as_array_mut().unwrap();
        input.push(v["output"][1].clone());
        input.push(
            json!({"type": "function_call_output", "call_id": "call_mock_1",
                          "output": "the lookup found forty two results"}),
        );
        let (_m, r2) = post("/v1/responses", &next, &[]).await;
        let v2 = r2.json();
        assert_eq!(v2["output"][0]["type"], "message");
        assert!(v2["usage"]["input_tokens"].as_u64() > v["usage"]["input_tokens"].as_u64());
        // Streamed, the call's arguments arrive as events.
        let mut s = b.clone();
        s["stream"] = json!(true);
        let (_m, sr) = post("/v1/responses", &s, &[]).await;
        let events = sse_named(&sr.text());
        let done = events
            .iter()
            .find(|(n, _)| n == "response.function_call_arguments.done")
            .unwrap();
        assert_eq!(done.1["arguments"], v["output"][1]["arguments"]);
    }

    #[tokio::test]
    async fn repeated_long_prefix_is_reported_cached() {
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let long = "The incident log line repeats with small changes. ".repeat(200);
        let mut b =
            json!({"model": "gpt-4o-mini", "instructions": long, "input": "first question"});
        let first = post_to(&mock, "/v1/responses", &b, &[]).await.json();
        assert_eq!(first["usage"]["input_tokens_details"]["cached_tokens"], 0);
        b["input"] = json!("second question");
        let second = post_to(&mock, "/v1/responses", &b, &[]).await.json();
        let cached = second["usage"]["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert!(cached >= 1024 && cached % 128 == 0, "{cached}");
        assert!(cached < second["usage"]["input_tokens"].as_u64().unwrap());
    }
}
