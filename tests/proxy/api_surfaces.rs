//! The API surfaces through the real proxy and the four-API mock upstream on loopback:
//! Responses, Anthropic Messages and legacy completions are compressed where the surface says
//! and byte-identical elsewhere; two-turn prompt-cache prefixes stay byte-identical; shadow and
//! mirror work on every surface; routes choose by path and inject `x-api-key`; errors take
//! Anthropic's shape on `/v1/messages`; `/v1/compress` follows the Headroom contract.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, read_events};
use lingua_proxy::ab::Mode;
use lingua_proxy::api::Api;
use lingua_proxy::compress::{CompressionConfig, Policy, ScorerKind};
use lingua_proxy::config::{Config, KeyHeader, RouteConfig};
use lingua_proxy::hook::CompressionHook;
use lingua_proxy_testkit::mock::RecordedRequest;
use serde_json::{Value, json};

const SYSTEM: &str = "You are the release assistant of the Harbor platform team. You help \
engineers prepare deployments, read build logs and explain failures in plain language. Always \
read the pipeline status before you answer, and never invent build numbers or commit hashes. \
When a deployment has failed more than twice in a row, suggest pausing the release train and \
paging the on-call engineer. The staging cluster is rebuilt every night at 02:00 UTC and the \
production freeze starts on Friday at 16:00. Releases must pass the integration suite, the \
security scan and a manual approval from a maintainer. Keep answers short, friendly and precise, \
and quote the exact error line from the log when there is one.";

const TOOL: &str = "The build of the payments service started on the main branch and ran the \
unit tests first, which passed after four minutes. The integration suite then started three \
workers; the first and the second finished without errors, but the third worker timed out while \
waiting for the database container, which had not become healthy within the allowed period. \
The retry policy restarted the worker once, and the second attempt also timed out for the same \
reason. The security scan was skipped because the integration stage had failed. The log shows \
that the database container was started with an outdated image tag, and that the health check \
kept reporting that the schema migration had not finished. No artefacts were published and the \
deployment to staging was not attempted.";

/// A system prompt long enough (over 1,024 tokens even compressed) for the providers' prompt
/// caches, which the mock simulates with their minimum prefix length.
fn long_system() -> String {
    (1..=12)
        .map(|i| format!("Rule {i}. {SYSTEM}"))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn hook() -> CompressionHook {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    cfg.roles.prompt.min_tokens = 50;
    cfg.roles.prompt.enabled = true;
    let c = lingua_proxy::engine::build_compressor(&cfg).unwrap();
    CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()))
}

type Setup = common::Logged;

async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    setup_with(tweak, hook()).await
}

async fn setup_with(tweak: impl FnOnce(&mut Config), hook: CompressionHook) -> Setup {
    common::start_logged(tweak, Arc::new(hook)).await
}

async fn post(h: &Harness, path: &str, body: &Value) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap()
}

/// The requests the mock received at `suffix`, waiting until there are `n`.
async fn received(h: &Harness, suffix: &str, n: usize) -> Vec<RecordedRequest> {
    for _ in 0..200 {
        let r = h.mock.state.requests_to(suffix);
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.mock.state.requests_to(suffix)
}

/// `short` is `long` with whole words deleted (and strictly shorter).
fn words_deleted(long: &str, short: &str) -> bool {
    let mut rest = long.split_whitespace();
    short.len() < long.len()
        && short
            .split_whitespace()
            .all(|w| rest.by_ref().any(|l| l == w))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn responses_body(stream: bool) -> Value {
    json!({
        "model": "gpt-5",
        "stream": stream,
        "instructions": long_system(),
        "input": [
            {"role": "user", "content": "Why did the payments build fail?"},
            {"type": "reasoning", "id": "rs_1", "summary": [],
             "encrypted_content": "gAAAAB-opaque-reasoning-blob=="},
            {"type": "function_call", "id": "fc_1", "call_id": "call_42", "name": "read_log",
             "arguments": "{\"service\": \"payments\", \"lines\": 200}"},
            {"type": "function_call_output", "call_id": "call_42", "output": TOOL},
            {"role": "user", "content": [{"type": "input_text", "text": "And what do I fix first?"}]}
        ]
    })
}

#[tokio::test]
async fn responses_compresses_instructions_and_call_outputs_only() {
    for stream in [false, true] {
        let s = setup(|_| {}).await;
        let body = responses_body(stream);
        let resp = post(&s.h, "/v1/responses", &body).await;
        assert_eq!(resp.status(), 200);
        let (before, after) = common::token_counts(&resp);
        assert!(after < before, "{before} -> {after}");
        let got = resp.bytes().await.unwrap();
        let seen = received(&s.h, "/responses", 1).await;
        let sent = seen[0].json().unwrap();
        let instructions = sent["instructions"].as_str().unwrap();
        assert!(
            words_deleted(&long_system(), instructions),
            "{instructions}"
        );
        let output = sent["input"][3]["output"].as_str().unwrap();
        assert!(words_deleted(TOOL, output), "{output}");
        // Never touched: reasoning, the call and its arguments, call ids, the final user text.
        let client = serde_json::to_vec(&body).unwrap();
        for part in [&body["input"][1], &body["input"][2], &body["input"][4]] {
            let bytes = serde_json::to_vec(part).unwrap();
            assert!(contains(&client, &bytes));
            assert!(contains(&seen[0].body, &bytes), "{part} changed");
        }
        assert_eq!(sent["input"][3]["call_id"], "call_42");
        // The answer passes byte for byte.
        let answered = s.h.mock.state.responses();
        assert_eq!(answered.last().unwrap(), &got);
        if stream {
            let text = String::from_utf8_lossy(&got);
            assert!(text.contains("event: response.completed"));
            assert!(!text.contains("[DONE]"));
        }
        let events = read_events(&s.events, 1).await;
        assert_eq!(events[0].api, Some(Api::Responses));
        assert_eq!(events[0].stream, stream);
        let usage = events[0].usage.expect("usage read from the response");
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
        assert_eq!(events[0].compression.as_deref(), Some("compressed"));
    }
}

fn messages_body(stream: bool, turns: &[Value]) -> Value {
    let mut messages = vec![
        json!({"role": "user", "content": "The payments build is red again. Have a look."}),
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should read the build log first.",
             "signature": "EuYBCkQYAiJA-signature-bytes"},
            {"type": "text", "text": "Let me read the log."},
            {"type": "tool_use", "id": "toolu_01", "name": "read_log",
             "input": {"service": "payments"}}]}),
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": TOOL,
             "cache_control": {"type": "ephemeral"}}]}),
    ];
    messages.extend(turns.iter().cloned());
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "stream": stream,
        "system": [{"type": "text", "text": long_system(), "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
    })
}

#[tokio::test]
async fn messages_compress_system_and_tool_results_and_keep_thinking() {
    for stream in [false, true] {
        let s = setup(|_| {}).await;
        let body = messages_body(stream, &[]);
        let resp =
            s.h.client
                .post(s.h.url("/v1/messages"))
                .header("content-type", "application/json")
                .header("x-api-key", "sk-ant-client")
                .header("anthropic-version", "2023-06-01")
                .header(
                    "anthropic-beta",
                    "prompt-caching-2024-07-31,interleaved-thinking",
                )
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
        let got = resp.bytes().await.unwrap();
        let seen = received(&s.h, "/messages", 1).await;
        let r = &seen[0];
        assert_eq!(r.headers["x-api-key"], "sk-ant-client");
        assert_eq!(r.headers["anthropic-version"], "2023-06-01");
        assert_eq!(
            r.headers["anthropic-beta"],
            "prompt-caching-2024-07-31,interleaved-thinking"
        );
        let sent = r.json().unwrap();
        assert!(words_deleted(
            &long_system(),
            sent["system"][0]["text"].as_str().unwrap()
        ));
        let tool = sent["messages"][2]["content"][0]["content"]
            .as_str()
            .unwrap();
        assert!(words_deleted(TOOL, tool), "{tool}");
        // cache_control markers stay where they were; thinking and tool_use are byte-identical.
        assert_eq!(
            sent["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(
            sent["messages"][2]["content"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(sent["messages"][2]["content"][0]["tool_use_id"], "toolu_01");
        let assistant = serde_json::to_vec(&body["messages"][1]).unwrap();
        assert!(contains(&r.body, &assistant), "the assistant turn changed");
        // The final user message (only tool results here) has no user text; the first user
        // message is the last user text and is protected.
        assert_eq!(sent["messages"][0], body["messages"][0]);
        assert_eq!(s.h.mock.state.responses().last().unwrap(), &got);
        if stream {
            let text = String::from_utf8_lossy(&got);
            for e in [
                "message_start",
                "content_block_delta",
                "message_delta",
                "message_stop",
            ] {
                assert!(text.contains(&format!("event: {e}")), "{e} missing");
            }
        }
        let events = read_events(&s.events, 1).await;
        assert_eq!(events[0].api, Some(Api::Messages));
        let usage = events[0].usage.expect("usage");
        assert!(usage.prompt_tokens > 0);
        assert!(
            usage.cache_creation_tokens.unwrap_or(0) > 0,
            "the first call writes the cache: {usage:?}"
        );
    }
}

/// The second turn's forwarded prefix is byte-identical to the first turn's forwarded bytes, and
/// the mock's simulated provider cache says so too.
#[tokio::test]
async fn two_turn_prompt_cache_prefix_is_stable() {
    // Anthropic Messages: an agent turn (assistant tool_use + new tool_result, no new user text).
    let s = setup(|_| {}).await;
    let turn1 = messages_body(false, &[]);
    let turn2 = messages_body(
        false,
        &[
            json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_02", "name": "read_config",
                 "input": {"service": "payments"}}]}),
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": TOOL}]}),
        ],
    );
    assert_eq!(post(&s.h, "/v1/messages", &turn1).await.status(), 200);
    assert_eq!(post(&s.h, "/v1/messages", &turn2).await.status(), 200);
    let seen = received(&s.h, "/messages", 2).await;
    let (a, b) = (seen[0].json().unwrap(), seen[1].json().unwrap());
    assert_eq!(a["system"], b["system"]);
    let n = a["messages"].as_array().unwrap().len();
    assert_eq!(a["messages"], json!(b["messages"].as_array().unwrap()[..n]));
    // Byte level: turn 1's forwarded bytes up to the end of its last message are the start of
    // turn 2's forwarded bytes (the splice keeps the client's compact encoding).
    let array = serde_json::to_vec(&a["messages"]).unwrap();
    let at = seen[0]
        .body
        .windows(array.len())
        .position(|w| w == array.as_slice())
        .expect("turn 1's messages as forwarded");
    let prefix = &seen[0].body[..at + array.len() - 1];
    assert!(
        seen[1].body.starts_with(prefix),
        "turn 2 does not start with turn 1's forwarded bytes"
    );
    let events = read_events(&s.events, 2).await;
    let second = events[1].usage.unwrap();
    assert!(
        second.cached_tokens.unwrap_or(0) > 0,
        "the provider cache must hit on turn 2: {second:?}"
    );

    // Responses: a second turn that adds a call and its output.
    let s = setup(|_| {}).await;
    let turn1 = responses_body(false);
    let mut turn2 = turn1.clone();
    let items = turn2["input"].as_array_mut().unwrap();
    items.push(
        json!({"type": "function_call", "id": "fc_2", "call_id": "call_43",
        "name": "read_config", "arguments": "{}"}),
    );
    items.push(json!({"type": "function_call_output", "call_id": "call_43", "output": TOOL}));
    assert_eq!(post(&s.h, "/v1/responses", &turn1).await.status(), 200);
    assert_eq!(post(&s.h, "/v1/responses", &turn2).await.status(), 200);
    let seen = received(&s.h, "/responses", 2).await;
    let (a, b) = (seen[0].json().unwrap(), seen[1].json().unwrap());
    assert_eq!(a["instructions"], b["instructions"]);
    let n = a["input"].as_array().unwrap().len();
    assert_eq!(a["input"], json!(b["input"].as_array().unwrap()[..n]));
    let events = read_events(&s.events, 2).await;
    assert!(events[1].usage.unwrap().cached_tokens.unwrap_or(0) > 0);
}

#[tokio::test]
async fn freeze_cached_prefix_leaves_the_cached_part_alone() {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        freeze_cached_prefix: true,
        ..CompressionConfig::default()
    };
    // The frozen and the late tool result are the same text: no reference, compress it.
    cfg.transforms.dedupe_tool_results = false;
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    let c = lingua_proxy::engine::build_compressor(&cfg).unwrap();
    let hook = CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()));
    let s = setup_with(|_| {}, hook).await;
    let body = messages_body(
        false,
        &[json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_09", "content": TOOL}]})],
    );
    assert_eq!(post(&s.h, "/v1/messages", &body).await.status(), 200);
    let sent = received(&s.h, "/messages", 1).await[0].json().unwrap();
    // system and the first tool result lie before the last breakpoint: untouched
    assert_eq!(sent["system"], body["system"]);
    assert_eq!(sent["messages"][2], body["messages"][2]);
    // the tool result after it is compressed
    let late = sent["messages"][3]["content"][0]["content"]
        .as_str()
        .unwrap();
    assert!(words_deleted(TOOL, late));
}

#[tokio::test]
async fn legacy_completions_compress_prompt_strings_only() {
    let s = setup(|_| {}).await;
    let long = format!("{SYSTEM}\n\n{TOOL}\n\nSummary:");
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": [long, [1, 2, 3]],
        "suffix": "END", "max_tokens": 16, "stream": true});
    let resp = post(&s.h, "/v1/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert!(
        !text.contains("\"usage\""),
        "the usage chunk the proxy asked for leaked"
    );
    let sent = received(&s.h, "/completions", 1).await[0].json().unwrap();
    assert!(words_deleted(&long, sent["prompt"][0].as_str().unwrap()));
    assert_eq!(sent["prompt"][1], json!([1, 2, 3]));
    assert_eq!(sent["suffix"], "END");
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let events = read_events(&s.events, 1).await;
    assert_eq!(events[0].api, Some(Api::Completions));
    assert!(events[0].usage.is_some());

    // Off by default.
    let s = setup_with(|_| {}, common::heuristic_hook()).await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": long, "max_tokens": 8});
    assert_eq!(post(&s.h, "/v1/completions", &body).await.status(), 200);
    let sent = received(&s.h, "/completions", 1).await[0].json().unwrap();
    assert_eq!(sent["prompt"], body["prompt"]);
}

#[tokio::test]
async fn shadow_and_mirror_on_every_surface() {
    let bodies = [
        ("/v1/responses", "/responses", responses_body(false)),
        ("/v1/messages", "/messages", messages_body(false, &[])),
        (
            "/v1/completions",
            "/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": format!("{SYSTEM} {TOOL}"),
                   "max_tokens": 8}),
        ),
    ];
    for (path, suffix, body) in &bodies {
        // Shadow: the raw request is served, the compressed one only measured.
        let s = setup(|c| {
            c.ab.enabled = true;
            c.ab.mode = Mode::Shadow;
        })
        .await;
        assert_eq!(post(&s.h, path, body).await.status(), 200);
        let sent = received(&s.h, suffix, 1).await;
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].json().unwrap(),
            *body,
            "{path}: shadow forwards the original"
        );
        let events = read_events(&s.events, 1).await;
        let t = events[0].tokens.clone().unwrap();
        assert!(t.after < t.before, "{path}: shadow still measures");

        // Mirror: both arms go upstream, one answer comes back, two events share a pair id.
        let s = setup(|c| {
            c.ab.enabled = true;
            c.ab.mode = Mode::Mirror;
            c.ab.mirror_percent = 100.0;
            c.ab.salt = "a-secret-test-salt".into();
        })
        .await;
        assert_eq!(post(&s.h, path, body).await.status(), 200);
        let sent = received(&s.h, suffix, 2).await;
        assert_eq!(sent.len(), 2, "{path}: mirror sends both arms");
        let raw = sent.iter().filter(|r| r.json().unwrap() == *body).count();
        assert_eq!(raw, 1, "{path}: exactly one arm is the original");
        let events = read_events(&s.events, 2).await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].pair_id, events[1].pair_id);
        assert!(
            events.iter().all(|e| e.usage.is_some()),
            "{path}: {events:?}"
        );
        assert_eq!(events.iter().filter(|e| e.served).count(), 1);
    }
}

#[tokio::test]
async fn anthropic_route_by_path_injects_x_api_key_and_errors_in_its_shape() {
    // SAFETY: the variable is only read by this test's proxy, set before it starts.
    unsafe { std::env::set_var("LP_TEST_ANTHROPIC_KEY", "sk-ant-route") };
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let s = setup(|c| {
        c.routes = vec![RouteConfig {
            name: Some("anthropic".into()),
            path_prefix: "/v1/messages".into(),
            base_url: c.upstream.base_url.clone(),
            api_key_env: Some("LP_TEST_ANTHROPIC_KEY".into()),
            key_header: KeyHeader::XApiKey,
            ..RouteConfig::default()
        }];
        // the default upstream is dead: only the route can answer
        c.upstream.base_url = dead_url;
    })
    .await;
    let resp =
        s.h.client
            .post(s.h.url("/v1/messages"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer client-key")
            .body(serde_json::to_vec(&messages_body(false, &[])).unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = received(&s.h, "/messages", 1).await;
    assert_eq!(seen[0].headers["x-api-key"], "sk-ant-route");
    assert!(seen[0].headers.get("authorization").is_none());
    let events = read_events(&s.events, 1).await;
    assert_eq!(events[0].route, "anthropic");
    // count_tokens goes the same way, untouched
    let resp = post(
        &s.h,
        "/v1/messages/count_tokens",
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.json::<Value>().await.unwrap()["input_tokens"]
            .as_u64()
            .is_some()
    );

    // The default upstream is unreachable: chat gets OpenAI's shape ...
    let resp = post(&s.h, "/v1/chat/completions", &common::chat_body(false)).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    // ... and an error the proxy makes on /v1/messages and below has Anthropic's.
    let resp = post(&s.h, "/v1/messages/a%2fb", &json!({})).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn proxy_errors_on_messages_use_anthropics_shape() {
    let s = setup(|c| {
        c.auth.keys_env = Some("LP_TEST_SURFACE_KEYS".into());
        c.upstream.api_key_env = Some("LP_TEST_SURFACE_UPSTREAM".into());
    });
    // SAFETY: read only by this test's proxy, set before it starts.
    unsafe {
        std::env::set_var("LP_TEST_SURFACE_KEYS", "proxy-key");
        std::env::set_var("LP_TEST_SURFACE_UPSTREAM", "sk-up");
    }
    let s = s.await;
    let body = messages_body(false, &[]);
    let resp = post(&s.h, "/v1/messages", &body).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("proxy API key")
    );
    // and OpenAI's on the OpenAI routes
    let resp = post(&s.h, "/v1/responses", &responses_body(false)).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    // the proxy key as x-api-key (what Anthropic clients send) is accepted
    let resp =
        s.h.client
            .post(s.h.url("/v1/messages"))
            .header("content-type", "application/json")
            .header("x-api-key", "proxy-key")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = received(&s.h, "/messages", 1).await;
    assert!(
        seen[0].headers.get("x-api-key").is_none(),
        "the proxy key leaked"
    );
}

async fn compress(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = h
        .client
        .post(h.url("/v1/compress"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn compress_endpoint_follows_the_headroom_contract() {
    let s = setup(|_| {}).await;
    // OpenAI shape
    let openai = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "read_log", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": TOOL},
        {"role": "user", "content": "What failed?"}]});
    let (status, r) = compress(&s.h, &openai, &[]).await;
    assert_eq!(status, 200, "{r}");
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert!(words_deleted(SYSTEM, m[0]["content"].as_str().unwrap()));
    assert!(words_deleted(TOOL, m[2]["content"].as_str().unwrap()));
    assert_eq!(m[1], openai["messages"][1]);
    assert_eq!(m[3], openai["messages"][3]);
    let (before, after) = (
        r["tokens_before"].as_u64().unwrap(),
        r["tokens_after"].as_u64().unwrap(),
    );
    assert!(after < before);
    assert_eq!(r["tokens_saved"].as_u64().unwrap(), before - after);
    let ratio = r["compression_ratio"].as_f64().unwrap();
    assert!((ratio - after as f64 / before as f64).abs() < 1e-9);
    assert!(
        r["transforms_applied"][0]
            .as_str()
            .unwrap()
            .starts_with("lingua-proxy:")
    );
    assert!(r.get("compression_skipped").is_none());
    // it never called the upstream
    assert_eq!(s.h.mock.state.request_count(), 0);

    // Anthropic shape comes back in Anthropic shape
    let anthropic = messages_body(false, &[]);
    let call = json!({"model": "claude-sonnet-4-5", "messages": anthropic["messages"]});
    let (status, r) = compress(&s.h, &call, &[]).await;
    assert_eq!(status, 200);
    let m = r["messages"].as_array().unwrap();
    assert_eq!(
        m[1], anthropic["messages"][1],
        "thinking and tool_use untouched"
    );
    let tool = m[2]["content"][0]["content"].as_str().unwrap();
    assert!(words_deleted(TOOL, tool));
    assert_eq!(m[2]["content"][0]["tool_use_id"], "toolu_01");

    // frozen_message_count and a ratio target
    let (_, r) = compress(
        &s.h,
        &json!({"model": "gpt-4o", "messages": openai["messages"],
                "config": {"frozen_message_count": 1, "target_ratio": 0.5}}),
        &[],
    )
    .await;
    assert_eq!(r["messages"][0], openai["messages"][0]);
    assert!(words_deleted(
        TOOL,
        r["messages"][2]["content"].as_str().unwrap()
    ));

    // a generous token budget needs no compression
    let (_, r) = compress(
        &s.h,
        &json!({"model": "gpt-4o", "messages": openai["messages"], "token_budget": 100000}),
        &[],
    )
    .await;
    assert_eq!(r["messages"], openai["messages"]);
    assert_eq!(r["compression_ratio"], 1.0);

    // bypass echoes
    let (_, r) = compress(&s.h, &openai, &[("x-headroom-bypass", "true")]).await;
    assert_eq!(r["messages"], openai["messages"]);
    assert_eq!(r["tokens_saved"], 0);

    // bad input: 400 in Headroom's shape, naming the field
    for (bad, field) in [
        (json!({"messages": []}), "model"),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": [1]}), "messages[0]"),
        (
            json!({"model": "m", "messages": [], "config": {"target_ratio": 3}}),
            "target_ratio",
        ),
    ] {
        let (status, r) = compress(&s.h, &bad, &[]).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(r["error"]["type"], "invalid_request");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(field),
            "{r}"
        );
    }
}

#[tokio::test]
async fn compress_endpoint_fails_open_and_requires_the_key() {
    // disabled compression: the originals, marked skipped
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        enabled: false,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    let c = lingua_proxy::engine::build_compressor(&cfg).unwrap();
    let hook = CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()));
    // SAFETY: read only by this test's proxy, set before it starts.
    unsafe {
        std::env::set_var("LP_TEST_COMPRESS_KEYS", "gateway-key");
        std::env::set_var("LP_TEST_COMPRESS_UPSTREAM", "sk-up");
    }
    let s = setup_with(
        |c| {
            c.auth.keys_env = Some("LP_TEST_COMPRESS_KEYS".into());
            c.upstream.api_key_env = Some("LP_TEST_COMPRESS_UPSTREAM".into());
        },
        hook,
    )
    .await;
    let call = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": SYSTEM}]});
    let (status, r) = compress(&s.h, &call, &[]).await;
    assert_eq!(status, 401);
    assert_eq!(r["error"]["type"], "invalid_request");
    let (status, r) = compress(&s.h, &call, &[("x-headroom-proxy-token", "gateway-key")]).await;
    assert_eq!(status, 200);
    assert_eq!(r["compression_skipped"], true);
    assert_eq!(r["skip_reason"], "disabled");
    assert_eq!(r["messages"], call["messages"]);
    let (status, _) = compress(&s.h, &call, &[("authorization", "Bearer gateway-key")]).await;
    assert_eq!(status, 200);
}
