//! When the LLMLingua-2 model cannot be loaded (offline hub, corrupt weights), the proxy starts
//! anyway as `on_model_unavailable` says, and `/readyz` tells which scorer is active.
//! One test in this binary: it sets process environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

mod common;

use std::sync::Arc;

use common::start_with;
use lingua_proxy::compress::{CompressionConfig, ModelUnavailable, ScorerKind};
use lingua_proxy::headers::HEADER_COMPRESS;
use lingua_proxy::scorer::ActiveScorer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_and_corrupt_models_follow_on_model_unavailable() {
    let empty_home = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this binary; set before anything reads them.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_HOME", empty_home.path());
        std::env::remove_var("HF_HUB_CACHE");
    }
    // The default configuration names the BERT checkpoint by repo id.
    let config = CompressionConfig::default();
    assert_eq!(config.scorer, ScorerKind::Llmlingua2);
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    let Some(ActiveScorer::Heuristic {
        fallback_reason: Some(reason),
    }) = hook.active_scorer()
    else {
        panic!(
            "expected a heuristic fallback, got {:?}",
            hook.active_scorer()
        );
    };
    assert!(reason.contains("HF_HUB_OFFLINE"), "{reason}");
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let ready = h.readyz().await;
    assert_eq!(ready["scorer"]["scorer"], "heuristic", "{ready}");
    assert!(
        ready["scorer"]["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("llmlingua-2-bert")
    );
    // It still compresses, with the embedded scorer.
    let long = "The quarterly planning meeting covered the migration of the billing service, the \
        new on-call rotation, and the budget for the observability platform. "
        .repeat(20);
    // A document in a tool result (system prose is instructions, kept by default).
    let body = serde_json::json!({"model": "gpt-4o", "messages": [
        {"role": "tool", "tool_call_id": "c1", "content": long},
        {"role": "user", "content": "Summarise."}]});
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before);

    // passthrough: no compression at all, even when a request asks for it.
    let config = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        on_model_unavailable: ModelUnavailable::Passthrough,
        ..CompressionConfig::default()
    };
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    assert!(matches!(
        hook.active_scorer(),
        Some(ActiveScorer::None { .. })
    ));
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header(HEADER_COMPRESS, "on")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        h.mock.state.last_request().unwrap().body.as_ref(),
        raw.as_slice()
    );

    // fail: refuses to build, naming the model.
    let config = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        on_model_unavailable: ModelUnavailable::Fail,
        ..CompressionConfig::default()
    };
    let err = format!(
        "{:#}",
        lingua_proxy::engine::hook(&config, &Default::default())
            .err()
            .unwrap()
    );
    assert!(
        err.contains("llmlingua-2-bert-base-multilingual-cased-meetingbank"),
        "{err}"
    );

    // A corrupt checkpoint: the fallback reason names the file.
    let dir = tempfile::tempdir().unwrap();
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(format!("{src}/{f}"), dir.path().join(f)).unwrap();
    }
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let config = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        model: Some(dir.path().display().to_string()),
        ..CompressionConfig::default()
    };
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    let Some(ActiveScorer::Heuristic {
        fallback_reason: Some(reason),
    }) = hook.active_scorer()
    else {
        panic!("expected a heuristic fallback");
    };
    assert!(reason.contains("model.safetensors"), "{reason}");
}
