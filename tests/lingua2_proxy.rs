//! The proxy compresses with a local LLMLingua-2 checkpoint end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::start_with;
use lingua_proxy::compress::{ActiveScorer, CompressionConfig, ScorerKind};
use lingua_proxy::pipeline::CompressionHook;

const SYSTEM: &str = "You are the support assistant of Acme Cloud. Customers ask about billing, \
outages and account settings. Always answer politely and briefly, and never promise refunds \
yourself; instead explain that the billing team reviews every refund request within two \
business days. When a customer reports an outage, first check whether the status page already \
lists an incident for the region, then ask for the request identifier, the time of the failure \
and the exact error message. The board approved the new plan after a long debate about the \
budget, and the department will publish the updated policy next week. ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_compresses_with_a_local_llmlingua2_checkpoint() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let config = CompressionConfig {
        scorer: ScorerKind::Llmlingua2,
        model: Some(model.into()),
        ..CompressionConfig::default()
    };
    let hook = CompressionHook::from_config(&config).unwrap();
    match hook.active_scorer() {
        Some(ActiveScorer::Llmlingua2 { dir, .. }) => {
            assert!(dir.ends_with("xlm-roberta-large-tiny"))
        }
        other => panic!("unexpected scorer {other:?}"),
    }
    let h = start_with(|_| {}, Arc::new(hook)).await;

    let ready = h.readyz().await;
    assert_eq!(ready["scorer"]["scorer"], "llmlingua2", "{ready}");

    let system = SYSTEM.repeat(3);
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "My deploy failed with error 502, what now?"}
        ]
    });
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
    let sent: serde_json::Value =
        serde_json::from_slice(&h.mock.state.last_request().unwrap().body).unwrap();
    let sent_system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(sent_system.len() < system.len());
    assert_eq!(
        sent["messages"][1], body["messages"][1],
        "final user message untouched"
    );

    // Deterministic: the same request forwards byte-identical bytes (cache or not).
    h.client
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let reqs = h.mock.state.requests();
    assert_eq!(reqs[reqs.len() - 1].body, reqs[reqs.len() - 2].body);
}
