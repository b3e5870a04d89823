//! Drives tests/sdk/openai_e2e.py (the official `openai` Python SDK) against the real proxy and
//! the mock upstream, both on loopback, and tests/sdk/sdk_smoke.py (the `openai` and `anthropic`
//! SDKs on every API surface) against the mock directly. The virtualenv is created by
//! `scripts/test.sh` (`.venv/`, or the interpreter named by `LINGUA_PYTHON`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("LINGUA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `bash scripts/test.sh` (it creates the virtualenv with the SDKs)",
        venv.display()
    );
    venv
}

/// Runs `tests/sdk/<script>` with `args` and asserts that every check in it passed.
async fn run_sdk_script(script: &str, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(python())
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
            c.telemetry.events_path = Some(path);
        },
        std::sync::Arc::new(common::heuristic_hook()),
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
