//! Drives tests/sdk/node/smoke.mjs (the official `openai@6` and `@anthropic-ai/sdk` Node SDKs)
//! against the testkit's mock upstream on loopback: every API surface, plain and streamed; and
//! tests/sdk/node/proxy_e2e.mjs through a compressing proxy in front of it. The
//! packages are installed by `scripts/test.sh` (`npm ci` into `tests/sdk/node/node_modules`);
//! `LINGUA_NODE` names another `node` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use common::sdk::{assert_only_texts_changed, received};
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/node");
    assert!(
        dir.join("node_modules/openai").exists()
            && dir.join("node_modules/@anthropic-ai/sdk").exists(),
        "{} is missing the SDKs: run `bash scripts/test.sh` (it runs `npm ci` there)",
        dir.display()
    );
    dir
}

/// The API key of an Anthropic request, from `x-api-key` or `Authorization: Bearer`.
fn key_of(headers: &http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or(bearer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdks_speak_every_api_of_the_mock() {
    let dir = node_dir();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let node = std::env::var("LINGUA_NODE").unwrap_or_else(|_| "node".to_owned());
    let out = tokio::process::Command::new(node)
        .arg(dir.join("smoke.mjs"))
        .arg(mock.base_url())
        .arg(mock.anthropic_base_url())
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Node SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    // Every surface was reached, streamed and not.
    for (path, at_least) in [
        ("/v1/chat/completions", 2),
        ("/v1/responses", 3),
        ("/v1/completions", 2),
        ("/v1/messages", 4),
    ] {
        let seen = mock.state.requests_to(path);
        assert!(seen.len() >= at_least, "{path}: {} requests", seen.len());
        assert!(
            seen.iter().any(|r| r.json().unwrap()["stream"] == true),
            "{path} streamed"
        );
    }
    let anthropic = mock.state.requests_to("/v1/messages");
    // `@anthropic-ai/sdk` 1.x sends its key as `Authorization: Bearer` (0.x sent `x-api-key`).
    assert!(
        anthropic
            .iter()
            .all(|r| key_of(&r.headers) == Some("sk-ant-test"))
    );
    assert!(
        anthropic
            .iter()
            .all(|r| r.headers.contains_key("anthropic-version"))
    );
}

/// Both Node SDKs through a compressing proxy: the answers arrive (plain and streamed), and the
/// mock receives each request's exact bytes but for the system prompt, with whole words deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdks_through_the_compressing_proxy() {
    let dir = node_dir();
    let h = common::start_with(|_| {}, Arc::new(common::heuristic_hook())).await;
    let body = common::compressible_body(false);
    let system = body["messages"][0]["content"].as_str().unwrap();
    let node = std::env::var("LINGUA_NODE").unwrap_or_else(|_| "node".to_owned());
    let out = tokio::process::Command::new(node)
        .arg(dir.join("proxy_e2e.mjs"))
        .arg(h.url("/v1"))
        .arg(h.url(""))
        .arg(system)
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "Node SDK checks failed:\n{stdout}\n{stderr}"
    );
    let out: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(out["checks"].as_u64().unwrap() >= 9, "{out}");
    for (rid, pointer) in [
        ("e2e-chat", "/messages/0/content"),
        ("e2e-chat-stream", "/messages/0/content"),
        ("e2e-responses", "/instructions"),
        ("e2e-responses-stream", "/instructions"),
        ("e2e-messages", "/system"),
        ("e2e-messages-stream", "/system"),
    ] {
        let client = out["sent"][rid].as_str().unwrap_or_else(|| panic!("{rid}"));
        let upstream = received(&h.mock, rid);
        let compressed = upstream.json().unwrap();
        let compressed = compressed
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap();
        assert_only_texts_changed(client, &upstream.body, &[(system, compressed)]);
    }
}
