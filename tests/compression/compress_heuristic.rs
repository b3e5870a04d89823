#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The embedded heuristic scorer through the real LLMLingua-2 selection and the policy.

use std::sync::Arc;

use lingua_proxy::cli::compress::{CompressArgs, compress_text};
use lingua_proxy::compress::{
    Budget, CompressionConfig, Compressor, Llmlingua2Compressor, Policy, RequestOptions,
    TokenizerKind,
};
use lingua_proxy::engine::build_compressor;
use lingua_proxy::scorer::heuristic::HeuristicScorer;
use serde_json::{Value, json};

const TEXT: &str = "You are a support assistant for Acme Cloud. Customers ask about billing, \
quotas and outages. Always answer politely and never promise refunds without approval from \
the billing team. The standard quota is 500 requests per minute for the Pro plan and 50 for \
the Free plan. When a customer reports an outage, check the status page first and then \
collect the region, the time of the first error and the request identifier.\n\
Escalate to Maria Lopez in the SRE team if the outage lasts longer than 15 minutes.\n\
Do not share internal hostnames.";

fn heuristic() -> Llmlingua2Compressor {
    Llmlingua2Compressor::new(Arc::new(HeuristicScorer::new()))
}

#[test]
fn compresses_to_about_the_rate_and_keeps_key_facts() {
    let c = heuristic();
    let out = c
        .compress(
            TEXT,
            &Budget::rate(0.5),
            &lingua_proxy::model::WorkCtx::none(),
        )
        .unwrap();
    let ratio = out.compressed_tokens as f64 / out.origin_tokens as f64;
    assert!((0.3..0.75).contains(&ratio), "ratio {ratio}: {}", out.text);
    for keep in ["500", "50", "15", "never", "not", "Maria", "Lopez", "\n"] {
        assert!(out.text.contains(keep), "{keep:?} lost: {}", out.text);
    }
    // two newlines in, two newlines out: line structure survives
    assert_eq!(out.text.matches('\n').count(), 2, "{}", out.text);
    // rate 0.9 keeps more than rate 0.3
    let hi = c
        .compress(
            TEXT,
            &Budget::rate(0.9),
            &lingua_proxy::model::WorkCtx::none(),
        )
        .unwrap();
    let lo = c
        .compress(
            TEXT,
            &Budget::rate(0.3),
            &lingua_proxy::model::WorkCtx::none(),
        )
        .unwrap();
    assert!(hi.compressed_tokens > out.compressed_tokens);
    assert!(lo.compressed_tokens < out.compressed_tokens);
}

#[test]
fn target_tokens_budget() {
    let c = heuristic();
    let mut b = Budget::rate(0.5);
    b.target_tokens = Some(40);
    let out = c
        .compress(TEXT, &b, &lingua_proxy::model::WorkCtx::none())
        .unwrap();
    assert!(
        out.compressed_tokens <= 60,
        "{} tokens: {}",
        out.compressed_tokens,
        out.text
    );
}

#[test]
fn byte_identical_every_time() {
    let a = heuristic()
        .compress(
            TEXT,
            &Budget::rate(0.4),
            &lingua_proxy::model::WorkCtx::none(),
        )
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            heuristic()
                .compress(
                    TEXT,
                    &Budget::rate(0.4),
                    &lingua_proxy::model::WorkCtx::none()
                )
                .unwrap(),
            a
        );
    }
}

#[test]
fn policy_with_heuristic_keeps_code_and_shrinks_the_system_prompt() {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        min_savings: 0.05,
        scorer: lingua_proxy::compress::ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    cfg.roles.system.rate = 0.5;
    let policy = Policy::new(cfg.clone(), build_compressor(&cfg).unwrap()).unwrap();
    let code =
        "```bash\ncurl -s https://status.acme.example/api | jq '.regions[] | {name, ok}'\n```";
    let system = format!("{TEXT}\n{code}\n{TEXT}");
    let body = json!({"model": "gpt-4.1", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "Is eu-west down?"}]});
    let raw = serde_json::to_vec(&body).unwrap();
    let conv = lingua_proxy::api::chat::conversation(&body).unwrap();
    let out = policy
        .apply(&raw, &body, &conv, &RequestOptions::default())
        .unwrap();
    let sent: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    let got = sent["messages"][0]["content"].as_str().unwrap();
    assert!(got.contains(code), "{got}");
    let before = TokenizerKind::O200kBase.count(&system);
    let after = TokenizerKind::O200kBase.count(got);
    assert!(after < before * 3 / 4, "{before} -> {after}");
    assert_eq!(sent["messages"][1], body["messages"][1]);
    assert_eq!(
        out.report.tokens_after,
        after + TokenizerKind::O200kBase.count("Is eu-west down?")
    );
}

fn args() -> CompressArgs {
    CompressArgs {
        config: None,
        scorer: Some(lingua_proxy::compress::ScorerKind::Heuristic),
        model: None,
        rate: Some(0.5),
        target_tokens: None,
        force_tokens: vec![],
        role: None,
        file: None,
        json: true,
        explain: false,
        drop_consecutive: false,
        force_reserve_digit: false,
        token_to_word: None,
        precision: None,
        method: None,
        params: None,
    }
}

#[test]
fn cli_plain_and_role_modes() {
    let plain = compress_text(&args(), TEXT).unwrap();
    assert!(plain.compressed_tokens < plain.origin_tokens);
    // Plain mode is exactly the selection's `compress_prompt` over the one text.
    let direct = lingua_proxy::compress::llmlingua2::compress_prompt(
        &HeuristicScorer::new(),
        &[TEXT],
        &lingua_proxy::compress::llmlingua2::Llmlingua2Options {
            rate: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(plain.compressed_prompt, direct.compressed_prompt);
    assert_eq!(plain.origin_tokens, direct.origin_tokens);
    // --force-token "\n" is unescaped; "Acme" forced in
    let mut a = args();
    a.force_tokens = vec!["\\n".into(), "politely".into()];
    let forced = compress_text(&a, TEXT).unwrap();
    assert!(forced.compressed_prompt.contains("politely"));
    // role mode applies protected spans and min_tokens
    let mut a = args();
    a.role = Some("system".into());
    let short = compress_text(&a, "short text https://x.example/a").unwrap();
    assert_eq!(short.compressed_prompt, "short text https://x.example/a");
    assert_eq!(short.skipped.as_deref(), Some("below_min_tokens"));
    // llmlingua2 with a model that cannot be loaded is a clear error naming it
    let mut a = args();
    a.scorer = Some(lingua_proxy::compress::ScorerKind::Llmlingua2);
    a.model = Some("/nonexistent/llmlingua2-model".into());
    let err = format!("{:#}", compress_text(&a, TEXT).unwrap_err());
    assert!(err.contains("/nonexistent/llmlingua2-model"), "{err}");
}
