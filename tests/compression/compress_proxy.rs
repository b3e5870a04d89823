//! Compression through the real proxy, against the mock upstream on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, start_with};
use lingua_proxy::compress::{
    Budget, CompressError, CompressOutput, CompressionConfig, Compressor, Policy, TokenizerKind,
};
use lingua_proxy::engine::build_compressor;
use lingua_proxy::headers::{
    CONTROL_PREFIX, HEADER_CACHE, HEADER_COMPRESS, HEADER_COMPRESSION_MS, HEADER_RATE,
    HEADER_SKIPPED, HEADER_TOKENS_AFTER, HEADER_TOKENS_BEFORE,
};
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::scorer::ScorerError;
use serde_json::{Value, json};

const SYSTEM: &str = "You are the operations assistant of Northwind Logistics. You help \
dispatchers plan deliveries, answer questions about shipments and explain delays to customers. \
Always check the shipment status before you answer, and never invent tracking numbers. When a \
delivery is late by more than two days, apologise and offer the customer a call back from the \
dispatch team. The warehouse in Rotterdam closes at 18:00 local time and the one in Hamburg at \
20:00. Trucks leave every morning at 06:30. Our service level promises delivery within 48 hours \
inside Germany and within 72 hours for the Netherlands, Belgium and Luxembourg. Refunds are \
handled by the billing department and you must not promise them yourself. Keep answers short, \
friendly and precise, and use metric units.\n\
To look up a shipment run:\n\
```sh\nnw-cli shipment show --id \"$ID\" --format json\n```\n\
Escalate safety incidents immediately to the duty manager on the internal hotline.";

const TOOL: &str = "Shipment NW-2231-XK was picked up in Rotterdam on Monday morning and \
scanned at the Duisburg hub on Monday evening. On Tuesday it was loaded onto truck 14 for the \
Hamburg route, but the truck was held at the depot because of a brake inspection that took \
longer than planned. The parcel was transferred to truck 9 on Wednesday and reached the Hamburg \
warehouse on Wednesday night. Delivery to the customer is now scheduled for Thursday between \
10:00 and 14:00. The customer was notified by e-mail at 21:14 on Wednesday. No damage was \
reported during the transfer and the seal number 884213 matches the loading record. The \
dispatcher on duty noted that the customer had asked for a signature on delivery, which is \
recorded in the order notes, and that the delivery address has a loading dock at the back of \
the building that the driver should use.";

const LAST_USER: &str = "Why is my parcel NW-2231-XK late, and when will it arrive?";

fn body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": "Here is a photo of the label."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function",
                "function": {"name": "shipment_status", "arguments": "{\"id\": \"NW-2231-XK\"}"}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": TOOL},
            {"role": "user", "content": LAST_USER}
        ]
    })
}

async fn harness(hook: CompressionHook) -> Harness {
    start_with(|_| {}, Arc::new(hook)).await
}

fn heuristic_hook(mut cfg: CompressionConfig) -> CompressionHook {
    cfg.scorer = lingua_proxy::compress::ScorerKind::Heuristic;
    let c = build_compressor(&cfg).unwrap();
    CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()))
}

fn config() -> CompressionConfig {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    cfg
}

async fn post(h: &Harness, body: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-client");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body.to_vec()).send().await.unwrap()
}

fn upstream_body(h: &Harness) -> Vec<u8> {
    h.mock.state.last_request().unwrap().body.to_vec()
}

fn count(s: &str) -> usize {
    TokenizerKind::O200kBase.count(s)
}

#[tokio::test]
async fn upstream_receives_a_compressed_request_that_keeps_what_matters() {
    // The tool default (0.9) keeps facts by compressing tool results gently; this test wants
    // a visible cut, so it asks for the rate it was written for.
    let mut cfg = config();
    cfg.roles.tool.rate = 0.4;
    let h = harness(heuristic_hook(cfg)).await;
    let original = body();
    let raw = serde_json::to_vec(&original).unwrap();
    let resp = post(&h, &raw, &[]).await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let answer: Value = resp.json().await.unwrap();
    assert!(answer["choices"].is_array(), "a normal answer: {answer}");

    let sent: Value = serde_json::from_slice(&upstream_body(&h)).unwrap();
    let m = &sent["messages"];
    let sys = m[0]["content"].as_str().unwrap();
    let tool = m[3]["content"].as_str().unwrap();
    assert!(
        count(sys) < count(SYSTEM) * 4 / 5,
        "system {} -> {}",
        count(SYSTEM),
        count(sys)
    );
    assert!(
        count(tool) < count(TOOL) * 3 / 4,
        "tool {} -> {}",
        count(TOOL),
        count(tool)
    );
    assert!(
        sys.contains("```sh\nnw-cli shipment show --id \"$ID\" --format json\n```"),
        "{sys}"
    );
    assert_eq!(
        m[4]["content"], LAST_USER,
        "final user message byte-identical"
    );
    assert_eq!(
        m[1], original["messages"][1],
        "image part and short user text untouched"
    );
    assert_eq!(m[2], original["messages"][2], "tool call untouched");
    assert_eq!(m[3]["tool_call_id"], "call_7");
    assert_eq!(sent["temperature"], original["temperature"]);
    // the upstream never sees the control headers
    let seen = h.mock.state.last_request().unwrap();
    assert!(
        !seen
            .headers
            .keys()
            .any(|k| k.as_str().starts_with(CONTROL_PREFIX))
    );

    let before: usize = headers[HEADER_TOKENS_BEFORE]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let after: usize = headers[HEADER_TOKENS_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text_tokens = |v: &Value| -> usize {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match &m["content"] {
                Value::String(s) => count(s),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .map(count)
                    .sum(),
                _ => 0,
            })
            .sum()
    };
    assert_eq!(before, text_tokens(&original));
    assert_eq!(after, text_tokens(&sent));
    assert!(after < before);
    assert!(
        headers[HEADER_COMPRESSION_MS]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .is_ok()
    );
    assert_eq!(headers[HEADER_CACHE], "miss");

    // the same request again: served from the cache, same bytes upstream
    let first = upstream_body(&h);
    let resp = post(&h, &raw, &[]).await;
    assert_eq!(resp.headers()[HEADER_CACHE], "hit");
    assert_eq!(upstream_body(&h), first);
}

#[tokio::test]
async fn compress_off_forwards_the_original_bytes() {
    let h = harness(heuristic_hook(config())).await;
    let raw = serde_json::to_vec(&body()).unwrap();
    let resp = post(&h, &raw, &[(HEADER_COMPRESS, "off")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream_body(&h), raw);
}

#[tokio::test]
async fn rate_header_compresses_harder() {
    let h = harness(heuristic_hook(config())).await;
    let raw = serde_json::to_vec(&body()).unwrap();
    post(&h, &raw, &[]).await;
    let default = upstream_body(&h).len();
    post(&h, &raw, &[(HEADER_RATE, "0.2")]).await;
    assert!(upstream_body(&h).len() < default);
}

struct Broken {
    sleep: Option<Duration>,
}
impl Compressor for Broken {
    fn id(&self) -> &str {
        "broken"
    }
    fn compress(
        &self,
        text: &str,
        _: &Budget,
        _: &lingua_proxy::model::WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        match self.sleep {
            Some(d) => {
                std::thread::sleep(d);
                Ok(CompressOutput {
                    text: text.chars().take(10).collect(),
                    budget_exceeded_by_units: false,
                    origin_tokens: 0,
                    compressed_tokens: 0,
                })
            }
            None => Err(ScorerError::Model("scorer exploded".into()).into()),
        }
    }
}

#[tokio::test]
async fn failing_or_slow_scorers_fail_open() {
    for (sleep, reason) in [
        (None, "error"),
        (Some(Duration::from_millis(1500)), "deadline"),
    ] {
        let cfg = CompressionConfig {
            // Instruction prose is compressed here (the default keeps it).
            instructions: lingua_proxy::compress::InstructionsMode::Compress,
            deadline_ms: 100,
            ..config()
        };
        let hook = CompressionHook::new(Arc::new(
            Policy::new(cfg, Arc::new(Broken { sleep })).unwrap(),
        ));
        let stats = hook.stats();
        let h = harness(hook).await;
        let raw = serde_json::to_vec(&body()).unwrap();
        let t = std::time::Instant::now();
        let resp = post(&h, &raw, &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[HEADER_SKIPPED], reason);
        let answer: Value = resp.json().await.unwrap();
        assert!(answer["choices"].is_array());
        assert_eq!(upstream_body(&h), raw, "original forwarded ({reason})");
        assert_eq!(stats.fail_open(), 1);
        if reason == "deadline" {
            assert!(
                t.elapsed() < Duration::from_millis(1200),
                "{:?}",
                t.elapsed()
            );
        }
    }
}

#[tokio::test]
async fn on_error_reject_answers_an_openai_error_and_forwards_nothing() {
    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        on_error: lingua_proxy::compress::OnError::Reject,
        ..config()
    };
    let hook = CompressionHook::new(Arc::new(
        Policy::new(cfg, Arc::new(Broken { sleep: None })).unwrap(),
    ));
    let h = harness(hook).await;
    let raw = serde_json::to_vec(&body()).unwrap();
    let resp = post(&h, &raw, &[]).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "compression_failed");
    assert_eq!(err["error"]["type"], "api_error");
    assert_eq!(
        h.mock.state.request_count(),
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn two_turns_forward_a_byte_identical_prefix() {
    let h = harness(heuristic_hook(config())).await;
    let turn1 = body();
    let mut turn2 = body();
    let msgs = turn2["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": "It was held for a brake inspection; it arrives Thursday."}));
    msgs.push(json!({"role": "user", "content": "Can I pick it up in Hamburg instead?"}));
    post(&h, &serde_json::to_vec(&turn1).unwrap(), &[]).await;
    let a = upstream_body(&h);
    post(&h, &serde_json::to_vec(&turn2).unwrap(), &[]).await;
    let b = upstream_body(&h);
    assert_ne!(
        a,
        serde_json::to_vec(&turn1).unwrap(),
        "turn 1 was compressed"
    );
    // the last user message of turn 1 is short (under min_tokens), so everything up to the end
    // of it is a shared prefix: the provider's prompt cache can keep hitting
    let end = String::from_utf8(a.clone())
        .unwrap()
        .find(LAST_USER)
        .unwrap()
        + LAST_USER.len();
    assert_eq!(a[..end], b[..end]);
}

/// A route's tokenizer counts the route's requests whatever decides the route (its path here;
/// before the request context it applied by model prefix only), and `/v1/compress` counts with
/// the route its shape and model would take.
#[tokio::test]
async fn a_path_route_counts_with_its_own_tokenizer() {
    let logged = common::start_logged(
        |c| {
            c.routes.push(lingua_proxy::config::RouteConfig {
                name: Some("chat".into()),
                path_prefix: "/v1/chat/completions".into(),
                base_url: c.upstream.base_url.clone(),
                tokenizer: Some(TokenizerKind::Cl100kBase),
                ..Default::default()
            });
        },
        Arc::new(common::heuristic_hook()),
    )
    .await;
    let h = &logged.h;
    let body = serde_json::to_vec(&common::compressible_body(false)).unwrap();
    let resp = h.post_chat(&body, &[]).await;
    assert_eq!(resp.status(), 200);
    let (before, _) = common::token_counts(&resp);
    let _ = resp.bytes().await.unwrap();
    let events = common::read_events(&logged.events, 1).await;
    let tokens = events[0].tokens.as_ref().expect("the policy ran");
    assert_eq!(events[0].route, "chat");
    assert_eq!(
        tokens.tokenizer, "cl100k_base",
        "the model alone would pick o200k_base"
    );
    assert_eq!(tokens.before as usize, before);

    // The same messages through /v1/compress: same route, same tokenizer, same count.
    let call = json!({
        "model": "gpt-4o-mini",
        "messages": common::compressible_body(false)["messages"],
        "config": {"compress_user_messages": false}
    });
    let reply: Value = h
        .client
        .post(h.url("/v1/compress"))
        .header("x-headroom-bypass", "true")
        .json(&call)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        reply["tokens_before"].as_u64(),
        Some(before as u64),
        "{reply}"
    );
}
