//! Drives tests/sdk/openai_e2e.py (the official `openai` Python SDK) against the real proxy and
//! the mock upstream, both on loopback, and tests/sdk/sdk_smoke.py (the `openai` and `anthropic`
//! SDKs on every API surface) against the mock directly, and tests/sdk/anthropic_e2e.py (the
//! `anthropic` SDK) and tests/sdk/openai_surfaces_e2e.py (`openai`'s Responses and legacy
//! Completions) through a compressing proxy, asserting on what the mock received and what the
//! event log holds. The virtualenv is created by `scripts/test.sh` (`.venv/`, or the interpreter
//! named by `LINGUA_PYTHON`).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::sdk::{assert_only_texts_changed, received};
use lingua_proxy::api::Api;
use lingua_proxy::telemetry::Event;
use lingua_proxy_testkit::mock::RecordedRequest;
use serde_json::Value;

/// Runs `tests/sdk/<script>` with `args` and asserts that every check in it passed.
async fn run_sdk_script(script: &str, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(common::sdk::python())
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_end_to_end() {
    let h = common::start().await;
    run_sdk_script("openai_e2e.py", &[&h.url("/v1")]).await;
    // Every SDK call reached the upstream through the proxy.
    assert!(h.mock.state.request_count() >= 6);
}

/// The SDK against a proxy in mirror mode: forced arms, the arm header, and streams whose usage
/// chunk the proxy requested and removed. The event log must then hold every call's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_with_ab_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let path = events.clone();
    let h = common::start_with(
        move |c| {
            c.ab.enabled = true;
            c.ab.mode = lingua_proxy::ab::Mode::Mirror;
            c.ab.mirror_percent = 100.0;
            c.ab.salt = "a-secret-test-salt".into();
            c.telemetry.events_path = Some(path);
        },
        Arc::new(common::heuristic_hook()),
    )
    .await;
    let body = common::compressible_body(false);
    let system = body["messages"][0]["content"].as_str().unwrap();
    run_sdk_script("openai_ab.py", &[&h.url("/v1"), system]).await;
    // 4 client requests, each mirrored: 8 upstream calls, all with billed usage.
    let events = common::read_events(&events, 8).await;
    assert_eq!(events.len(), 8);
    assert_eq!(events.iter().filter(|e| e.served).count(), 4);
    assert!(events.iter().all(|e| e.usage.is_some()), "{events:?}");
    assert_eq!(events.iter().filter(|e| e.agreement.is_some()).count(), 4);
}

/// The `openai` and `anthropic` SDKs against the mock upstream alone: Chat Completions,
/// Responses, legacy Completions and Anthropic Messages, plain and streamed, parse what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdks_speak_every_api_of_the_mock() {
    use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    run_sdk_script(
        "sdk_smoke.py",
        &[&mock.base_url(), &mock.anthropic_base_url()],
    )
    .await;
    for path in [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ] {
        assert!(!mock.state.requests_to(path).is_empty(), "{path}");
    }
    // The `anthropic` SDK sends its key as `x-api-key` or, in newer versions,
    // `Authorization: Bearer`.
    for r in mock.state.requests_to("/v1/messages") {
        let key = r
            .headers
            .get("x-api-key")
            .or(r.headers.get("authorization"));
        let key = key.and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(key.ends_with("sk-ant-test"), "{key}");
        assert!(r.headers.contains_key("anthropic-version"));
    }
}

/// The heuristic scorer with low per-role minimums (as [`common::heuristic_hook`]) and legacy
/// completions' `prompt` budget on, so the scripts' realistic texts get compressed.
fn e2e_hook() -> Arc<dyn lingua_proxy::hook::RequestHook> {
    use lingua_proxy::compress::{CompressionConfig, Policy, ScorerKind};
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    cfg.roles.prompt.enabled = true;
    cfg.roles.prompt.min_tokens = 50;
    let c = lingua_proxy::engine::build_compressor(&cfg).unwrap();
    Arc::new(lingua_proxy::hook::CompressionHook::new(Arc::new(
        Policy::new(cfg, c).unwrap(),
    )))
}

/// A proxy with the compression hook and an event log in front of a fresh mock.
async fn e2e_proxy(events: &Path) -> common::Harness {
    let path = events.to_owned();
    common::start_with(move |c| c.telemetry.events_path = Some(path), e2e_hook()).await
}

/// The client's body of request `rid`, as the script reported it.
fn sent<'a>(out: &'a Value, rid: &str) -> &'a str {
    out["sent"][rid]
        .as_str()
        .unwrap_or_else(|| panic!("{rid} not sent"))
}

/// The string at `pointer` in the client's body and in the mock's.
fn both(client: &str, upstream: &RecordedRequest, pointer: &str) -> (String, String) {
    let c: Value = serde_json::from_str(client).unwrap();
    let u = upstream.json().unwrap();
    let get = |v: &Value| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    (get(&c), get(&u))
}

fn word_ratio(original: &str, compressed: &str) -> f64 {
    compressed.split_whitespace().count() as f64 / original.split_whitespace().count() as f64
}

/// The event of request `rid`.
fn event<'a>(events: &'a [Event], rid: &str) -> &'a Event {
    let mut found = events.iter().filter(|e| e.request_id == rid);
    let e = found.next().unwrap_or_else(|| panic!("no event for {rid}"));
    assert!(found.next().is_none(), "two events for {rid}");
    e
}

/// The `anthropic` SDK through the proxy: the mock receives the client's exact bytes but for
/// compressed system and tool_result texts (whole words deleted); thinking blocks arrive
/// byte-identical; upstream and proxy errors are the SDK's typed exceptions; the event log holds
/// billed usage with Anthropic's cache reads and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_through_the_proxy() {
    // SAFETY: variable names unique to this test binary; set before any reader starts.
    unsafe {
        std::env::set_var("LP_SDK_PROXY_KEYS", "pk-known");
        std::env::set_var("LP_SDK_UPSTREAM_KEY", "sk-ant-upstream");
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let h = e2e_proxy(&log).await;
    let locked = common::start_with(
        |c| {
            c.auth.keys_env = Some("LP_SDK_PROXY_KEYS".into());
            c.upstream.api_key_env = Some("LP_SDK_UPSTREAM_KEY".into());
        },
        Arc::new(lingua_proxy::hook::Passthrough),
    )
    .await;
    let out =
        common::sdk::run_python_json("anthropic_e2e.py", &[&h.url(""), &locked.url("")]).await;
    assert!(out["checks"].as_u64().unwrap() >= 13, "{out}");

    // The system prompt is compressed in every request; nothing else changes.
    for rid in [
        "e2e-plain",
        "e2e-stream",
        "e2e-tool-use",
        "e2e-thinking",
        "e2e-cache-write",
        "e2e-cache-read",
    ] {
        let client = sent(&out, rid);
        let upstream = received(&h.mock, rid);
        let (system, compressed) = both(client, &upstream, "/system");
        assert_only_texts_changed(client, &upstream.body, &[(&system, &compressed)]);
    }
    // The long tool_result is compressed too, under the tool budget (which keeps more than the
    // system budget); the tool_use it answers and its id pairing are untouched.
    let client = sent(&out, "e2e-tool-result");
    let upstream = received(&h.mock, "e2e-tool-result");
    let (system, system_c) = both(client, &upstream, "/system");
    let (tool, tool_c) = both(client, &upstream, "/messages/2/content/0/content");
    assert_only_texts_changed(
        client,
        &upstream.body,
        &[(&system, &system_c), (&tool, &tool_c)],
    );
    assert!(
        word_ratio(&tool, &tool_c) > word_ratio(&system, &system_c),
        "tool kept {} of its words, system {}",
        word_ratio(&tool, &tool_c),
        word_ratio(&system, &system_c)
    );
    // In block form too; the system block's cache_control marker stays where it was.
    let client = sent(&out, "e2e-blocks");
    let upstream = received(&h.mock, "e2e-blocks");
    let (system, system_c) = both(client, &upstream, "/system/0/text");
    let (tool, tool_c) = both(client, &upstream, "/messages/2/content/0/content/0/text");
    assert_only_texts_changed(
        client,
        &upstream.body,
        &[(&system, &system_c), (&tool, &tool_c)],
    );
    // The signed thinking block reaches the mock byte for byte.
    let thinking = out["thinking_json"].as_str().unwrap();
    assert!(sent(&out, "e2e-thinking").contains(thinking));
    let upstream = received(&h.mock, "e2e-thinking");
    assert!(String::from_utf8_lossy(&upstream.body).contains(thinking));
    // The 429 came from the mock; the 401 from the locked proxy, which called nobody.
    received(&h.mock, "e2e-rate");
    assert_eq!(locked.mock.state.request_count(), 0);

    let events = common::read_events(&log, 9).await;
    assert_eq!(events.len(), 9, "{events:?}");
    assert!(
        events.iter().all(|e| e.api == Some(Api::Messages)),
        "{events:?}"
    );
    assert_eq!(event(&events, "e2e-rate").status, 429);
    for (rid, u) in out["usage"].as_object().unwrap() {
        let e = event(&events, rid);
        let billed = e
            .usage
            .as_ref()
            .unwrap_or_else(|| panic!("{rid}: no usage"));
        let n = |k: &str| u[k].as_u64().unwrap();
        // Anthropic's input_tokens excludes cache reads and writes; the billed prompt has them.
        assert_eq!(
            billed.prompt_tokens,
            n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
            "{rid}"
        );
        assert_eq!(billed.completion_tokens, n("output_tokens"), "{rid}");
        assert_eq!(
            billed.cached_tokens.unwrap_or(0),
            n("cache_read_input_tokens"),
            "{rid}"
        );
        assert_eq!(
            billed.cache_creation_tokens.unwrap_or(0),
            n("cache_creation_input_tokens"),
            "{rid}"
        );
        assert_eq!(e.compression.as_deref(), Some("compressed"), "{rid}");
    }
    let write = event(&events, "e2e-cache-write").usage.unwrap();
    assert!(write.cache_creation_tokens.unwrap() > 0, "{write:?}");
    let read = event(&events, "e2e-cache-read").usage.unwrap();
    assert!(read.cached_tokens.unwrap() > 0, "{read:?}");
}

/// The `openai` SDK's Responses and legacy Completions through the proxy: instructions,
/// `function_call_output` and completion prompts reach the mock with whole words deleted and every
/// other byte the client's; a `reasoning` item arrives byte-identical; the event log labels each
/// call's API and holds its billed usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_responses_and_completions_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let h = e2e_proxy(&log).await;
    let out = common::sdk::run_python_json("openai_surfaces_e2e.py", &[&h.url("/v1")]).await;
    assert!(out["checks"].as_u64().unwrap() >= 10, "{out}");

    for (rid, pointer) in [
        ("e2e-responses", "/instructions"),
        ("e2e-responses-stream", "/instructions"),
        ("e2e-reasoning", "/instructions"),
        ("e2e-completions", "/prompt"),
        ("e2e-completions-stream", "/prompt"),
    ] {
        let client = sent(&out, rid);
        let upstream = received(&h.mock, rid);
        let (text, compressed) = both(client, &upstream, pointer);
        assert_only_texts_changed(client, &upstream.body, &[(&text, &compressed)]);
    }
    // The function's output is compressed under the tool budget, which keeps more than the
    // system budget of the instructions.
    let client = sent(&out, "e2e-function-output");
    let upstream = received(&h.mock, "e2e-function-output");
    let (system, system_c) = both(client, &upstream, "/instructions");
    let (tool, tool_c) = both(client, &upstream, "/input/2/output");
    assert_only_texts_changed(
        client,
        &upstream.body,
        &[(&system, &system_c), (&tool, &tool_c)],
    );
    assert!(word_ratio(&tool, &tool_c) > word_ratio(&system, &system_c));
    // The reasoning item, encrypted content included, reaches the mock byte for byte.
    let reasoning = out["reasoning_json"].as_str().unwrap();
    assert!(sent(&out, "e2e-reasoning").contains(reasoning));
    let upstream = received(&h.mock, "e2e-reasoning");
    assert!(String::from_utf8_lossy(&upstream.body).contains(reasoning));

    let events = common::read_events(&log, 6).await;
    assert_eq!(events.len(), 6, "{events:?}");
    for (rid, u) in out["usage"].as_object().unwrap() {
        let e = event(&events, rid);
        let api = if rid.starts_with("e2e-completions") {
            Api::Completions
        } else {
            Api::Responses
        };
        assert_eq!(e.api, Some(api), "{rid}");
        assert_eq!(e.compression.as_deref(), Some("compressed"), "{rid}");
        let billed = e.usage.unwrap_or_else(|| panic!("{rid}: no usage"));
        let n = |k: &str| u[k].as_u64().unwrap();
        assert_eq!(billed.prompt_tokens, n("input_tokens"), "{rid}");
        assert_eq!(billed.completion_tokens, n("output_tokens"), "{rid}");
        assert_eq!(
            billed.cached_tokens.unwrap_or(0),
            n("cached_tokens"),
            "{rid}"
        );
    }
}
