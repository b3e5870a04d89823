//! OpenAI Chat Completions (`POST /chat/completions`, streamed or not, tool calls included),
//! plus `GET /models` and `POST /embeddings`.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tokens::{NAME, SEP, bpe_for, extractive_compression, first_words};
use super::{
    CREATED, CacheSpace, Call, MockBody, MockState, bad_request, data_event, json_response,
    openai_model_error, parse_body, sse_response,
};

/// The text of a message's `content` (string or text parts).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Counts prompt tokens the way OpenAI's cookbook does: 3 per message, plus role and content
/// (and 1 for a name), plus 3 to prime the reply. Returns the token ids of the whole prompt.
pub fn prompt_tokens(model: &str, messages: &[Value]) -> Vec<u32> {
    let bpe = bpe_for(model);
    let mut ids = Vec::new();
    for m in messages {
        ids.extend(SEP);
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        ids.extend(bpe.encode_ordinary(role));
        ids.extend(bpe.encode_ordinary(&content_text(m.get("content").unwrap_or(&Value::Null))));
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            ids.push(NAME);
            ids.extend(bpe.encode_ordinary(name));
        }
    }
    ids.extend(SEP);
    ids
}

pub(crate) fn chat(call: &Call<'_>) -> Response<MockBody> {
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
    let empty = Vec::new();
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if messages.is_empty() {
        return bad_request(state, "messages must be a non-empty array");
    }
    let prompt = prompt_tokens(&model, messages);
    let cached = state.cached_prefix(CacheSpace::Chat, &prompt);
    let last = messages.last();
    let last_role = last
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tool = req
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.pointer("/function/name"))
        .and_then(Value::as_str)
        .filter(|_| {
            last_role != "tool" && req.get("tool_choice").and_then(Value::as_str) != Some("none")
        });
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let reply = extractive_compression(&last_user).unwrap_or_else(|| {
        format!(
            "Mock reply to {} messages ({} prompt tokens). You said: {}",
            messages.len(),
            prompt.len(),
            first_words(&last_user, 12)
        )
    });
    let bpe = bpe_for(&model);
    let id = format!("chatcmpl-mock{}", call.id_suffix());
    let (completion_tokens, finish) = match tool {
        Some(_) => (12, "tool_calls"),
        None => (bpe.encode_ordinary(&reply).len(), "stop"),
    };
    let usage = json!({
        "prompt_tokens": prompt.len(),
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.len() + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    });
    let tool_call = tool.map(|name| {
        json!({"id": "call_mock_1", "type": "function",
               "function": {"name": name, "arguments": "{\"query\":\"mock\"}"}})
    });
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let chunk = |delta: Value, finish: Value, usage: Value| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                "model": model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            if include_usage {
                c["usage"] = usage;
            }
            data_event(&c)
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        )];
        match &tool_call {
            Some(call) => {
                let mut call = call.clone();
                call["index"] = json!(0);
                events.push(chunk(
                    json!({"tool_calls": [call]}),
                    Value::Null,
                    Value::Null,
                ));
            }
            None => events.extend(
                call.pieces(&reply)
                    .iter()
                    .map(|p| chunk(json!({"content": p}), Value::Null, Value::Null)),
            ),
        }
        events.push(chunk(json!({}), json!(finish), Value::Null));
        if include_usage {
            let c = json!({"id": id, "object": "chat.completion.chunk", "created": CREATED,
                "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage});
            events.push(data_event(&c));
        }
        events.push("data: [DONE]\n\n".to_owned());
        return sse_response(call, events);
    }
    let message = match tool_call {
        Some(call) => {
            json!({"role": "assistant", "content": null, "tool_calls": [call], "refusal": null})
        }
        None => json!({"role": "assistant", "content": reply, "refusal": null}),
    };
    json_response(
        state,
        StatusCode::OK,
        &json!({"id": id, "object": "chat.completion", "created": CREATED, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage}),
    )
}

pub(crate) fn models(state: &MockState) -> Response<MockBody> {
    let data: Vec<Value> = [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "text-embedding-3-small",
    ]
    .iter()
    .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "lingua-mock"}))
    .collect();
    json_response(
        state,
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    )
}

pub(crate) fn embeddings(state: &MockState, body: &Bytes) -> Response<MockBody> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad_request(state, "body is not valid JSON");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("text-embedding-3-small");
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let bpe = bpe_for("gpt-4");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            tokens += bpe.encode_ordinary(text).len();
            let digest = Sha256::digest(text.as_bytes());
            let v: Vec<f64> = digest[..8]
                .iter()
                .map(|b| f64::from(*b) / 255.0 - 0.5)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json_response(
        state,
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{post, post_to, sse_data};
    use super::super::{MockConfig, MockUpstream};
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Summarise the deployment log for me"}]})
    }

    #[tokio::test]
    async fn plain_and_streamed_chat_agree() {
        let (mock, plain) = post("/v1/chat/completions", &body(), &[("x-extra", "1")]).await;
        assert_eq!(plain.headers["x-request-id"], "req_mock");
        let plain = plain.json();
        assert_eq!(plain["object"], "chat.completion");
        let text = plain["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.ends_with("You said: Summarise the deployment log for me"));
        let seen = mock.state.last_request().unwrap();
        assert_eq!(seen.body, body().to_string().as_bytes());
        assert_eq!(seen.headers["x-extra"], "1");
        assert_eq!(seen.path_and_query, "/v1/chat/completions");
        let mut b = body();
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        let (_m, resp) = post("/v1/chat/completions", &b, &[]).await;
        let text_stream = resp.text();
        assert!(text_stream.ends_with("data: [DONE]\n\n"));
        let chunks = sse_data(&text_stream);
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(streamed, text);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"], plain["usage"]);
    }

    #[tokio::test]
    async fn tool_calls_errors_and_the_prompt_cache() {
        let mut b = body();
        b["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
        let (_m, resp) = post("/v1/chat/completions", &b, &[]).await;
        let v = resp.json();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "lookup"
        );
        let (_m, err) = post("/v1/chat/completions", &body(), &[("x-mock-status", "503")]).await;
        assert_eq!(err.status, 503);
        assert_eq!(err.json()["error"]["type"], "server_error");
        let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
        let mut long = body();
        long["messages"][0]["content"] = json!("A long and stable system prompt. ".repeat(300));
        let first = post_to(&mock, "/v1/chat/completions", &long, &[])
            .await
            .json();
        assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        long["messages"][1]["content"] = json!("another question");
        let second = post_to(&mock, "/v1/chat/completions", &long, &[])
            .await
            .json();
        let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert!(cached >= 1024 && cached % 128 == 0, "{cached}");
        // The same text sent to another API is not a cache hit: the caches are per API.
        let resp = json!({"model": "gpt-4o-mini", "instructions": long["messages"][0]["content"],
                          "input": "another question"});
        let r = post_to(&mock, "/v1/responses", &resp, &[]).await.json();
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 0);
        assert_eq!(mock.state.requests_to("/chat/completions").len(), 2);
        assert_eq!(mock.state.requests_to("/responses").len(), 1);
    }
}
