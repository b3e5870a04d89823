//! OpenAI legacy Completions (`POST /completions`): `prompt` as a string, an array of strings, a
//! token array or an array of token arrays; `text_completion` objects, one choice per prompt;
//! data-only SSE ending `data: [DONE]`, with an extra usage chunk (`choices: []`) when
//! `stream_options.include_usage` is set.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::tokens::{bpe_for, first_words};
use super::{
    CREATED, CacheSpace, Call, MockBody, bad_request, data_event, json_response,
    openai_model_error, parse_body, sse_response,
};

/// One prompt of the request: its token ids and its text (decoded for token arrays).
struct Prompt {
    ids: Vec<u32>,
    text: String,
}

/// The prompts of a `prompt` field, or why it is not one.
fn prompts(model: &str, prompt: Option<&Value>) -> Result<Vec<Prompt>, String> {
    let bpe = bpe_for(model);
    let from_text = |text: &str| Prompt {
        ids: bpe.encode_ordinary(text),
        text: text.to_owned(),
    };
    let from_ids = |ids: &[Value]| -> Option<Prompt> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect::<Option<_>>()?;
        let text = bpe.decode(&ids).unwrap_or_default();
        Some(Prompt { ids, text })
    };
    let bad = || "prompt must be a string, an array of strings or an array of token arrays";
    match prompt {
        Some(Value::String(s)) => Ok(vec![from_text(s)]),
        Some(Value::Array(items)) if items.is_empty() => Err(bad().to_owned()),
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => from_ids(items)
            .map(|p| vec![p])
            .ok_or_else(|| bad().to_owned()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(from_text(s)),
                Value::Array(ids) if !ids.is_empty() => from_ids(ids),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad().to_owned()),
        _ => Err(bad().to_owned()),
    }
}

pub(crate) fn completions(call: &Call<'_>) -> Response<MockBody> {
    let state = call.state;
    let req = match parse_body(call) {
        Ok(v) => v,
        Err(e) => return bad_request(state, &e),
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-3.5-turbo-instruct")
        .to_owned();
    if let Some(resp) = openai_model_error(state, &model) {
        return resp;
    }
    let prompts = match prompts(&model, req.get("prompt")) {
        Ok(p) => p,
        Err(e) => return bad_request(state, &e),
    };
    let bpe = bpe_for(&model);
    let mut prompt_tokens = 0;
    let mut cached = 0;
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| {
            prompt_tokens += p.ids.len();
            cached += state.cached_prefix(CacheSpace::Completions, &p.ids);
            format!(
                " Mock completion of {} prompt tokens. You said: {}",
                p.ids.len(),
                first_words(&p.text, 12)
            )
        })
        .collect();
    let completion_tokens: usize = texts.iter().map(|t| bpe.encode_ordinary(t).len()).sum();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    });
    let id = format!("cmpl-mock{}", call.id_suffix());
    let object = |choices: Value| {
        json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
               "system_fingerprint": "fp_mock", "choices": choices})
    };
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let chunk = |index: usize, text: &str, finish: Value| {
            let mut c = object(json!([{"text": text, "index": index, "logprobs": null,
                                        "finish_reason": finish}]));
            if include_usage {
                c["usage"] = Value::Null;
            }
            data_event(&c)
        };
        let mut events = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            events.extend(
                call.pieces(text)
                    .iter()
                    .map(|p| chunk(index, p, Value::Null)),
            );
            events.push(chunk(index, "", json!("stop")));
        }
        if include_usage {
            let mut c = object(json!([]));
            c["usage"] = usage;
            events.push(data_event(&c));
        }
        events.push("data: [DONE]\n\n".to_owned());
        return sse_response(call, events);
    }
    let choices: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"text": text, "index": index, "logprobs": null, "finish_reason": "stop"})
        })
        .collect();
    let mut body = object(Value::Array(choices));
    body["usage"] = usage;
    json_response(state, StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{post, sse_data};
    use serde_json::{Value, json};

    #[tokio::test]
    async fn string_prompt_answers_one_text_completion() {
        let (mock, resp) = post(
            "/v1/completions",
            &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello to the proxy"}),
            &[],
        )
        .await;
        assert_eq!(resp.status, 200);
        let v = resp.json();
        assert_eq!(v["object"], "text_completion");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["finish_reason"], "stop");
        let text = choices[0]["text"].as_str().unwrap();
        assert!(text.ends_with("You said: Say hello to the proxy"), "{text}");
        let prompt = super::super::count("gpt-3.5-turbo-instruct", "Say hello to the proxy");
        assert_eq!(v["usage"]["prompt_tokens"], prompt);
        assert_eq!(
            v["usage"]["total_tokens"].as_u64().unwrap(),
            v["usage"]["prompt_tokens"].as_u64().unwrap()
                + v["usage"]["completion_tokens"].as_u64().unwrap()
        );
        assert_eq!(mock.state.requests_to("/completions").len(), 1);
    }

    #[tokio::test]
    async fn arrays_of_strings_and_token_arrays_answer_one_choice_each() {
        let ids = tiktoken_rs::o200k_base_singleton().encode_ordinary("tokens arrive here");
        let body = json!({"model": "gpt-4o-mini", "prompt": ["first prompt", ids, "third one"]});
        let (_mock, resp) = post("/v1/completions", &body, &[]).await;
        let v = resp.json();
        let texts: Vec<&str> = v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts.len(), 3);
        assert!(texts[0].ends_with("You said: first prompt"));
        assert!(
            texts[1].ends_with("You said: tokens arrive here"),
            "{}",
            texts[1]
        );
        assert!(texts[2].ends_with("You said: third one"));
        let (_mock, bad) = post(
            "/v1/completions",
            &json!({"model": "gpt-4o-mini", "prompt": [1, "x"]}),
            &[],
        )
        .await;
        assert_eq!(bad.status, 400);
        assert!(bad.json()["error"]["message"].is_string());
    }

    #[tokio::test]
    async fn stream_assembles_the_same_text_and_ends_with_usage_then_done() {
        let body = json!({"model": "gpt-4o-mini", "prompt": "Stream this prompt please"});
        let (_m, plain) = post("/v1/completions", &body, &[]).await;
        let plain = plain.json();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let (_m, resp) = post("/v1/completions", &streamed, &[]).await;
        assert!(resp.content_type().starts_with("text/event-stream"));
        assert!(resp.text().ends_with("data: [DONE]\n\n"));
        assert!(
            !resp.text().contains("event:"),
            "completions SSE is data-only"
        );
        let chunks: Vec<Value> = sse_data(&resp.text());
        let text: String = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap().iter())
            .map(|ch| ch["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, plain["choices"][0]["text"].as_str().unwrap());
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"], plain["usage"]);
        let finishes = chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"] == "stop")
            .count();
        assert_eq!(finishes, 1);
        // Without include_usage no chunk carries usage.
        streamed["stream_options"] = json!({"include_usage": false});
        let (_m, resp) = post("/v1/completions", &streamed, &[]).await;
        assert!(
            sse_data(&resp.text())
                .iter()
                .all(|c| c.get("usage").is_none())
        );
    }
}
