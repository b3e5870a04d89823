//! The proxy compresses with a local LLMLingua-2 checkpoint end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;

use common::start_with;
use lingua_proxy::compress::{CompressionConfig, ScorerKind};
use lingua_proxy::scorer::ActiveScorer;

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
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Llmlingua2,
        model: Some(model.into()),
        ..CompressionConfig::default()
    };
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
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

const RULES: &str = "Riders must not ride the escalator with strollers. Day passes cost $9 a \
month for students, and monthly plans are never refunded unless the line was closed for more \
than 3 days. Lost cards are replaced within 48 hours at any station. Send an e-mail to the \
billing-api team about incidents on cluster us-west-3 running v2.3.1, and expect answers in \
250 ms or less. Trains run only on weekdays except public holidays, at most 15% late, and never \
below -10 °C. The office at Harbour Square opens at 09:30 on 2026-03-14. ";

/// The meaning-keeping rules hold on the LLMLingua-2 path too: with the tiny checkpoint (whose
/// 300-token vocabulary turns most text into unknown tokens, the hardest case for mapping
/// token probabilities onto words) the proxy invents no word and keeps every unit whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llmlingua2_path_keeps_words_whole_and_units_together() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let mut config = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Llmlingua2,
        model: Some(model.into()),
        ..CompressionConfig::default()
    };
    config.roles.system.rate = 0.3;
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let system = RULES.repeat(2);
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Can I get my money back?"}
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
    let sent: serde_json::Value =
        serde_json::from_slice(&h.mock.state.last_request().unwrap().body).unwrap();
    let out = sent["messages"][0]["content"].as_str().unwrap();
    assert!(out.len() < system.len(), "not compressed: {out}");
    let input: Vec<&str> = system.split_whitespace().collect();
    let mut it = input.iter();
    for w in out.split_whitespace() {
        assert!(it.any(|x| *x == w), "{w:?} invented in {out:?}");
    }
    for unit in [
        "must not ride",
        "$9 a month",
        "never refunded",
        "more than 3 days.",
        "within 48 hours",
        "250 ms",
        "at most 15% late,",
        "-10 °C.",
        "us-west-3",
        "v2.3.1,",
        "at 09:30 on 2026-03-14.",
    ] {
        assert_eq!(out.matches(unit).count(), 2, "{unit:?} in {out:?}");
    }
}
