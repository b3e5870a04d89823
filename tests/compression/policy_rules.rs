#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Policy rules with a transparent, deterministic stand-in compressor (keeps every other word),
//! so each assertion can name exactly what must change and what must not.

use std::sync::{Arc, Mutex};

use lingua_proxy::api::chat;
use lingua_proxy::compress::spans::SPAN_MARKER;
use lingua_proxy::compress::{
    Budget, CacheStatus, CompressError, CompressOutput, CompressionConfig, Compressor, Policy,
    RequestOptions, SkipReason, TokenizerKind,
};
use serde_json::{Value, json};

/// Keeps words at even positions plus every force token; records each call.
#[derive(Default)]
struct EveryOther {
    calls: Mutex<Vec<(String, Budget)>>,
}

impl Compressor for EveryOther {
    fn id(&self) -> &str {
        "every-other/test"
    }
    fn compress(
        &self,
        text: &str,
        budget: &Budget,
        _: &lingua_proxy::model::WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        self.calls
            .lock()
            .unwrap()
            .push((text.to_string(), budget.clone()));
        let kept: Vec<&str> = text
            .split(' ')
            .enumerate()
            .filter(|(i, w)| {
                i % 2 == 0 || budget.force_tokens.iter().any(|f| w.contains(f.as_str()))
            })
            .map(|(_, w)| w)
            .collect();
        let out = kept.join(" ");
        Ok(CompressOutput {
            origin_tokens: text.split(' ').count(),
            compressed_tokens: kept.len(),
            text: out,
            budget_exceeded_by_units: false,
        })
    }
}

/// ~40 distinct words per sentence; `n` sentences.
fn prose(seed: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "The {seed} service number {i} handles incoming requests from many different clients \
                 and forwards them carefully to the upstream provider after checking quotas, limits \
                 and several other properties that operators configured earlier today."
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn policy(mut cfg: CompressionConfig) -> (Policy, Arc<EveryOther>) {
    // Instruction prose is compressed here (the default keeps it).
    cfg.instructions = lingua_proxy::compress::InstructionsMode::Compress;
    let c = Arc::new(EveryOther::default());
    (Policy::new(cfg, c.clone()).unwrap(), c)
}

fn run(p: &Policy, body: &Value) -> (Value, lingua_proxy::compress::Outcome) {
    let raw = serde_json::to_vec(body).unwrap();
    let conv = chat::conversation(body).unwrap_or_default();
    let out = p
        .apply(&raw, body, &conv, &RequestOptions::default())
        .unwrap();
    let sent: Value = match &out.body {
        Some(b) => serde_json::from_slice(b).unwrap(),
        None => body.clone(),
    };
    (sent, out)
}

fn content(v: &Value, i: usize) -> &str {
    v["messages"][i]["content"].as_str().unwrap()
}

fn tok(s: &str) -> usize {
    TokenizerKind::O200kBase.count(s)
}

#[test]
fn roles_and_last_user() {
    let (p, _) = policy(CompressionConfig::default());
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": prose("system", 8)},
        {"role": "developer", "content": prose("developer", 8)},
        {"role": "user", "content": prose("user", 8)},
        {"role": "assistant", "content": prose("assistant", 8)},
        {"role": "tool", "tool_call_id": "call_1", "content": prose("tool", 8)},
        {"role": "function", "name": "f", "content": prose("function", 8)},
        {"role": "user", "content": prose("last", 8)},
    ]});
    let (sent, out) = run(&p, &body);
    for i in [0, 1, 2, 4, 5] {
        assert!(
            tok(content(&sent, i)) < tok(content(&body, i)) * 3 / 4,
            "message {i} should shrink"
        );
        assert_eq!(out.report.messages[i].skipped, None);
    }
    assert_eq!(
        content(&sent, 3),
        content(&body, 3),
        "assistant is off by default"
    );
    assert_eq!(
        out.report.messages[3].skipped,
        Some(SkipReason::RoleDisabled)
    );
    assert_eq!(
        content(&sent, 6),
        content(&body, 6),
        "final user message is protected"
    );
    assert_eq!(
        out.report.messages[6].skipped,
        Some(SkipReason::ProtectedLastUser)
    );
    assert_eq!(sent["messages"][4]["tool_call_id"], "call_1");
    assert_eq!(sent["messages"][5]["name"], "f");
    // per-role totals and whole-prompt counts add up
    let r = &out.report;
    assert_eq!(
        r.tokens_before,
        (0..7).map(|i| tok(content(&body, i))).sum::<usize>()
    );
    assert_eq!(
        r.tokens_after,
        (0..7).map(|i| tok(content(&sent, i))).sum::<usize>()
    );
    assert_eq!(r.roles["user"].messages, 2);
    assert_eq!(r.roles["user"].compressed, 1);
    assert_eq!(r.tokenizer, "o200k_base");
}

#[test]
fn role_rates_reach_the_compressor() {
    let (p, c) = policy(CompressionConfig::default());
    let body = json!({"messages": [
        {"role": "system", "content": prose("s", 8)},
        {"role": "tool", "content": prose("t", 8)},
        {"role": "user", "content": "hi"},
    ]});
    run(&p, &body);
    let calls = c.calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1.rate, 0.65);
    assert_eq!(calls[1].1.rate, 0.74);
    assert!(calls[0].1.keep.units && calls[0].1.keep.negations);
    assert!(calls[0].1.force_tokens.contains(&"\n".to_string()));
    assert!(calls[0].1.force_tokens.contains(&SPAN_MARKER.to_string()));
}

#[test]
fn request_rate_override() {
    let (p, c) = policy(CompressionConfig::default());
    let body = json!({"messages": [{"role": "system", "content": prose("s", 8)}, {"role": "user", "content": "q"}]});
    let raw = serde_json::to_vec(&body).unwrap();
    let opts = RequestOptions {
        rate_override: Some(0.3),
        ..Default::default()
    };
    p.apply(&raw, &body, &chat::conversation(&body).unwrap(), &opts)
        .unwrap();
    assert_eq!(c.calls.lock().unwrap()[0].1.rate, 0.3);
}

#[test]
fn content_parts_only_text_is_compressed() {
    let (p, _) = policy(CompressionConfig::default());
    let image = json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}});
    let audio = json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}});
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": prose("part", 8)},
            image.clone(),
            audio.clone(),
            {"type": "refusal", "refusal": prose("refusal", 8)},
        ]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"q\": \"the service number\"}"}}]},
        {"role": "user", "content": "last"},
    ]});
    let (sent, out) = run(&p, &body);
    let parts = &sent["messages"][0]["content"];
    assert!(
        tok(parts[0]["text"].as_str().unwrap())
            < tok(body["messages"][0]["content"][0]["text"].as_str().unwrap())
    );
    assert_eq!(parts[1], image);
    assert_eq!(parts[2], audio);
    assert_eq!(parts[3], body["messages"][0]["content"][3]);
    assert_eq!(sent["messages"][1], body["messages"][1]);
    // only the one text literal differs from the original bytes
    let raw = serde_json::to_string(&body).unwrap();
    let new = String::from_utf8(out.body.unwrap()).unwrap();
    let old_text = serde_json::to_string(&body["messages"][0]["content"][0]["text"]).unwrap();
    let new_text = serde_json::to_string(&parts[0]["text"]).unwrap();
    assert_eq!(new, raw.replace(&old_text, &new_text));
}

#[test]
fn every_protected_span_kind_is_verbatim() {
    let (p, c) = policy(CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        keep_patterns: vec![r"TICKET-\d+".into()],
        ..CompressionConfig::default()
    });
    let spans = [
        "```python\nprint('keep   me')\nx = [1,2]\n```",
        "`cargo test --all`",
        "{\"retry\": 3, \"mode\": \"fast\"}",
        "[\"alpha\", \"beta\"]",
        "https://example.com/docs/v1?x=1&y=2",
        "ops-team@example.org",
        "/etc/lingua/proxy.toml",
        "src/compress/policy.rs",
        "TICKET-4711",
    ];
    let mut text = String::new();
    for (i, s) in spans.iter().enumerate() {
        text.push_str(&prose(&format!("k{i}"), 1));
        text.push('\n');
        text.push_str(s);
        text.push('\n');
    }
    text.push_str(&prose("end", 1));
    let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
    let (sent, out) = run(&p, &body);
    assert_eq!(out.report.messages[0].skipped, None);
    let got = content(&sent, 0);
    for s in spans {
        assert!(got.contains(s), "{s:?} missing from {got:?}");
    }
    // protected spans never reach the compressor
    let calls = c.calls.lock().unwrap();
    for s in spans {
        assert!(
            !calls.iter().any(|(t, _)| t.contains(s)),
            "{s:?} was scored"
        );
    }
}

#[test]
fn tags_keep_and_rate_and_are_removed() {
    let (p, c) = policy(CompressionConfig::default());
    let keep = prose("verbatim", 2);
    let text = format!(
        "{} <llmlingua, compress=False>{keep}</llmlingua> <llmlingua, rate=0.25>{}</llmlingua>",
        prose("head", 4),
        prose("tail", 4)
    );
    let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
    let (sent, _) = run(&p, &body);
    let got = content(&sent, 0);
    assert!(got.contains(&keep));
    assert!(!got.contains("llmlingua"));
    let calls = c.calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].1.rate, 0.65);
    assert_eq!(calls[1].1.rate, 0.25);
    assert!(!calls.iter().any(|(t, _)| t.contains("verbatim")));
}

#[test]
fn tags_are_removed_from_skipped_honored_messages_and_protected_ones_stay() {
    let (p, _) = policy(CompressionConfig::default());
    let tagged = "a <llmlingua, compress=False>b</llmlingua> c";
    let body = json!({"messages": [
        {"role": "system", "content": tagged},
        {"role": "user", "content": tagged}
    ]});
    let (sent, out) = run(&p, &body);
    // The system message is honoured (below min_tokens, still without its tags) ...
    assert_eq!(content(&sent, 0), "a b c");
    assert_eq!(
        out.report.messages[0].skipped,
        Some(SkipReason::BelowMinTokens)
    );
    // ... the final user message is never altered, tags included.
    assert_eq!(content(&sent, 1), tagged);
    assert_eq!(
        out.report.messages[1].skipped,
        Some(SkipReason::ProtectedLastUser)
    );
}

#[test]
fn protect_recent_and_last_user_off() {
    let (p, _) = policy(CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        protect_recent: 2,
        protect_last_user: false,
        ..CompressionConfig::default()
    });
    let body = json!({"messages": [
        {"role": "system", "content": prose("a", 8)},
        {"role": "user", "content": prose("b", 8)},
        {"role": "tool", "content": prose("c", 8)},
        {"role": "user", "content": prose("d", 8)},
    ]});
    let (sent, out) = run(&p, &body);
    assert_ne!(content(&sent, 0), content(&body, 0));
    assert_ne!(content(&sent, 1), content(&body, 1));
    assert_eq!(content(&sent, 2), content(&body, 2));
    assert_eq!(content(&sent, 3), content(&body, 3));
    assert_eq!(
        out.report.messages[2].skipped,
        Some(SkipReason::ProtectedRecent)
    );
    assert_eq!(
        out.report.messages[3].skipped,
        Some(SkipReason::ProtectedRecent)
    );
}

#[test]
fn min_tokens_leaves_short_messages_alone() {
    let (p, c) = policy(CompressionConfig::default());
    let short = prose("short", 2); // well under 200 tokens
    assert!(tok(&short) < 200);
    let body = json!({"messages": [{"role": "system", "content": short}, {"role": "user", "content": "q"}]});
    let (_, out) = run(&p, &body);
    assert!(out.body.is_none());
    assert_eq!(
        out.report.messages[0].skipped,
        Some(SkipReason::BelowMinTokens)
    );
    assert!(c.calls.lock().unwrap().is_empty());
    let mut cfg = CompressionConfig::default();
    cfg.roles.system.min_tokens = 10;
    let (p, _) = policy(cfg);
    assert!(run(&p, &body).1.body.is_some());
}

/// Removes only the final word.
struct Trim;
impl Compressor for Trim {
    fn id(&self) -> &str {
        "trim"
    }
    fn compress(
        &self,
        text: &str,
        _: &Budget,
        _: &lingua_proxy::model::WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        let out = text.rsplit_once(' ').map_or(text, |(a, _)| a).to_string();
        Ok(CompressOutput {
            origin_tokens: 0,
            compressed_tokens: 0,
            text: out,
            budget_exceeded_by_units: false,
        })
    }
}

#[test]
fn min_savings_forwards_unprofitable_messages_unchanged() {
    let cfg = CompressionConfig {
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        ..CompressionConfig::default()
    };
    let p = Policy::new(cfg, Arc::new(Trim)).unwrap();
    let body = json!({"messages": [{"role": "system", "content": prose("s", 8)}, {"role": "user", "content": "q"}]});
    let (_, out) = run(&p, &body);
    assert!(out.body.is_none());
    assert_eq!(
        out.report.messages[0].skipped,
        Some(SkipReason::Unprofitable)
    );
    assert_eq!(
        out.report.messages[0].tokens_after,
        out.report.messages[0].tokens_before
    );
    let p = Policy::new(
        CompressionConfig {
            // Instruction prose is compressed here (the default keeps it).
            instructions: lingua_proxy::compress::InstructionsMode::Compress,
            min_savings: 0.0,
            ..CompressionConfig::default()
        },
        Arc::new(Trim),
    )
    .unwrap();
    assert!(run(&p, &body).1.body.is_some());
}

#[test]
fn target_tokens_sets_the_rate_per_message() {
    let mut cfg = CompressionConfig::default();
    cfg.roles.system.target_tokens = Some(100);
    let (p, c) = policy(cfg);
    let text = prose("t", 8);
    let n = tok(&text);
    let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
    run(&p, &body);
    let rate = c.calls.lock().unwrap()[0].1.rate;
    let expected = 100.0 / n as f64;
    assert!((rate - expected).abs() < 0.02, "rate {rate} vs {expected}");
    // a message already under its target is left alone
    let mut cfg = CompressionConfig::default();
    cfg.roles.system.target_tokens = Some(10_000);
    let (p, _) = policy(cfg);
    let (_, out) = run(&p, &body);
    assert_eq!(
        out.report.messages[0].skipped,
        Some(SkipReason::WithinTarget)
    );
}

#[test]
fn deterministic_and_cached() {
    let (p, c) = policy(CompressionConfig::default());
    let body = json!({"messages": [{"role": "system", "content": prose("s", 8)}, {"role": "user", "content": "q"}]});
    let (_, a) = run(&p, &body);
    let (_, b) = run(&p, &body);
    assert_eq!(a.body, b.body);
    assert_eq!(a.report.cache, CacheStatus::Miss);
    assert_eq!(b.report.cache, CacheStatus::Hit);
    assert_eq!(
        c.calls.lock().unwrap().len(),
        1,
        "second request served from cache"
    );
    // a fresh policy (another replica) produces the same bytes
    let (p2, _) = policy(CompressionConfig::default());
    assert_eq!(run(&p2, &body).1.body, a.body);
    // partial: one cached message, one new
    let body2 = json!({"messages": [
        {"role": "system", "content": prose("s", 8)},
        {"role": "tool", "content": prose("new", 8)},
        {"role": "user", "content": "q"}]});
    assert_eq!(run(&p, &body2).1.report.cache, CacheStatus::Partial);
}

#[test]
fn two_turns_share_a_byte_identical_prefix() {
    let (p, _) = policy(CompressionConfig::default());
    let turn1 = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": prose("sys", 10)},
        {"role": "user", "content": "What is the quota?"}]});
    let mut turn2 = turn1.clone();
    let msgs = turn2["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": "It is 10."}));
    msgs.push(json!({"role": "user", "content": "And the limit?"}));
    let a = p
        .apply(
            &serde_json::to_vec(&turn1).unwrap(),
            &turn1,
            &chat::conversation(&turn1).unwrap(),
            &RequestOptions::default(),
        )
        .unwrap();
    let b = p
        .apply(
            &serde_json::to_vec(&turn2).unwrap(),
            &turn2,
            &chat::conversation(&turn2).unwrap(),
            &RequestOptions::default(),
        )
        .unwrap();
    let (a, b) = (a.body.unwrap(), b.body.unwrap());
    // everything up to the end of the first user message is the same bytes
    let cut = String::from_utf8(a.clone())
        .unwrap()
        .find("What is the quota?\"}")
        .unwrap()
        + 20;
    assert_eq!(a[..cut], b[..cut]);
}

#[test]
fn unknown_roles_and_empty_content_are_skipped() {
    let (p, _) = policy(CompressionConfig::default());
    let body = json!({"messages": [
        {"role": "critic", "content": prose("x", 8)},
        {"role": "system", "content": ""},
        {"role": "user", "content": "q"}]});
    let (_, out) = run(&p, &body);
    assert!(out.body.is_none());
    assert_eq!(
        out.report.messages[0].skipped,
        Some(SkipReason::UnknownRole)
    );
    assert_eq!(out.report.messages[1].skipped, Some(SkipReason::NoText));
}

#[test]
fn newlines_survive_even_when_the_compressor_keeps_them() {
    // the compressor output's layout is kept, and outer whitespace of each region restored
    let (p, _) = policy(CompressionConfig::default());
    let text = format!("\n  {}\n\n", prose("n", 8));
    let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
    let (sent, _) = run(&p, &body);
    let got = content(&sent, 0);
    assert!(got.starts_with("\n  The"));
    assert!(got.ends_with("\n\n"));
}

#[test]
fn reserved_characters_skip_the_message() {
    let (p, _) = policy(CompressionConfig::default());
    for odd in ["[NEW3]", "\u{2581}", "\u{E000}"] {
        let text = format!("{} {odd}", prose("r", 8));
        let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
        let (_, out) = run(&p, &body);
        assert!(out.body.is_none(), "{odd}");
        assert_eq!(
            out.report.messages[0].skipped,
            Some(SkipReason::ReservedCharacters)
        );
    }
    // "[NEWS]" is ordinary text
    let text = format!("{} [NEWS]", prose("r", 8));
    let body = json!({"messages": [{"role": "system", "content": text}, {"role": "user", "content": "q"}]});
    assert!(run(&p, &body).1.body.is_some());
}

/// `scores_nothing` lets the proxy count a request on the async runtime instead of a worker:
/// it must never say so for a request whose policy would call the scorer.
#[test]
fn scores_nothing_only_when_no_message_can_reach_the_scorer() {
    let cfg = CompressionConfig {
        protect_last_user: false,
        ..CompressionConfig::default()
    };
    let min = cfg.roles.get("user").unwrap().min_tokens as usize;
    let cases = [
        // short everywhere: nothing to score
        (
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]),
            true,
        ),
        // under min_tokens in tokens but not in bytes (multi-byte characters): not claimed
        (
            json!([{"role": "user", "content": "数据".repeat(min / 4 + 1)}]),
            false,
        ),
        // a document long enough to score
        (
            json!([{"role": "user", "content": prose("alpha", 12)}]),
            false,
        ),
        // a role without a budget is never scored, however long
        (
            json!([{"role": "narrator", "content": prose("beta", 12)}]),
            true,
        ),
        // one byte under min_tokens
        (
            json!([{"role": "user", "content": "x ".repeat(min / 2).trim_end()}]),
            true,
        ),
    ];
    for (messages, want) in cases {
        let (p, calls) = policy(cfg.clone());
        let body = json!({"model": "gpt-4o", "messages": messages});
        let conv = chat::conversation(&body).unwrap_or_default();
        assert_eq!(p.scores_nothing(&conv), want, "{messages}");
        run(&p, &body);
        let scored = !calls.calls.lock().unwrap().is_empty();
        if p.scores_nothing(&conv) {
            assert!(!scored, "claimed nothing to score, yet scored: {messages}");
        }
        if messages.to_string().contains("alpha") {
            assert!(scored, "the long document was not scored");
        }
    }
}
