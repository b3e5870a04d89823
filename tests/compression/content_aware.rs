//! Knowing what the proxy compresses: agents' instructions, code, diffs, logs and data stay
//! intact at the defaults, savings come from documents, and `--explain` says what was done.
//! The agent corpus (`benches/data/agent/`) is the benchmark; the integrity rules are
//! `lingua_proxy::eval::agent`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use lingua_proxy::api::Api;
use lingua_proxy::cli::eval::{AgentArgs, evaluate_agent};
use lingua_proxy::compress::{
    CompressionConfig, HonorTags, InstructionsMode, Policy, Prose, RequestOptions, ScorerKind,
};
use lingua_proxy::engine::build_compressor;
use lingua_proxy::eval::agent::{check_bodies, check_text};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `text` of a corpus case.
fn corpus(name: &str) -> String {
    let path = root().join("benches/data/agent").join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["text"].as_str().unwrap().to_string()
}

/// `POST path` with a JSON body on the proxy, answered as JSON.
async fn post_json(h: &common::Harness, path: &str, body: &Value) -> Value {
    h.client
        .post(h.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn agent_args(scorer: ScorerKind, model: Option<&Path>) -> AgentArgs {
    AgentArgs {
        config: None,
        suite: root().join("benches/data/agent"),
        root: root(),
        scorer: Some(scorer),
        model: model.map(|m| m.display().to_string()),
        json: false,
        markdown: false,
    }
}

/// The defaults with the embedded scorer: no rule broken anywhere, documents save at least
/// 25% with at least 95% of their facts, everything else is byte for byte (or a lossless
/// transform), and the request-level check passes with a tool result read twice.
#[test]
fn agent_corpus_at_the_defaults_with_the_embedded_scorer() {
    let run = evaluate_agent(&agent_args(ScorerKind::Heuristic, None)).unwrap();
    let report = lingua_proxy::cli::eval::agent_text(&run, false);
    println!("{report}");
    let all = &run.kinds["all"];
    assert!(all.cases >= 40, "{report}");
    assert_eq!(all.violations, 0, "{report}");
    assert!(run.request_violations.is_empty(), "{report}");
    let prose = &run.kinds["prose"];
    assert!(
        prose.saving() >= 0.25,
        "prose saved {:.3}\n{report}",
        prose.saving()
    );
    // The corpus's facts are strict (the word a number is about: "valid for 60 days"); the
    // fact-retention gate proper is `eval facts` (tests/cli/eval_facts.rs, 95%).
    assert!(
        prose.facts_kept * 100 >= prose.facts * 90,
        "{}/{} facts\n{report}",
        prose.facts_kept,
        prose.facts
    );
    // What agents act on is forwarded as it came, but for lossless transforms.
    for c in &run.cases {
        if matches!(
            c.kind.as_str(),
            "code" | "diff" | "trace" | "compiler" | "data" | "grep"
        ) && c.transforms.is_empty()
        {
            assert_eq!(c.tokens_after, c.tokens_before, "{} changed", c.id);
        }
    }
    // The repeated log lines collapse, and the second read of a file is a reference.
    assert!(
        run.kinds["log"]
            .transforms
            .contains_key("collapsed_repeats"),
        "{report}"
    );
    let (before, after) = run.request_tokens;
    assert!(after < before, "{before} -> {after}");
}

/// The rules hold for any scorer: a random-weight LLMLingua-2 checkpoint.
#[test]
fn agent_corpus_with_a_random_weight_llmlingua2_checkpoint() {
    let model = root().join("tests/models/xlm-roberta-large-tiny");
    let run = evaluate_agent(&agent_args(ScorerKind::Llmlingua2, Some(&model))).unwrap();
    let report = lingua_proxy::cli::eval::agent_text(&run, false);
    assert_eq!(run.kinds["all"].violations, 0, "{report}");
    assert!(run.request_violations.is_empty(), "{report}");
    assert!(run.kinds["prose"].saving() > 0.0, "{report}");
}

fn policy(tweak: impl FnOnce(&mut CompressionConfig)) -> Policy {
    let mut cfg = CompressionConfig {
        scorer: ScorerKind::Heuristic,
        model: None,
        cache_bytes: 0,
        ..CompressionConfig::default()
    };
    tweak(&mut cfg);
    let c = build_compressor(&cfg).unwrap();
    Policy::new(cfg, c).unwrap()
}

fn apply(policy: &Policy, api: Api, body: &Value) -> Value {
    let raw = serde_json::to_vec(body).unwrap();
    let conv = api.surface().conversation(body).unwrap();
    let out = policy
        .apply(&raw, body, &conv, &RequestOptions::default())
        .unwrap();
    let forwarded = out.body.unwrap_or_else(|| raw.clone());
    let violations = check_bodies(&raw, &forwarded);
    assert!(violations.is_empty(), "{violations:#?}");
    serde_json::from_slice(&forwarded).unwrap()
}

const SUPPORT: &str = "You are the support assistant of Parcelway. Answer customers about their \
deliveries in a friendly and precise way, and keep every answer short.\n\n\
A delivery address can only be changed before the parcel reaches the final hub. After that, the \
customer has to contact the local depot. Never invent tracking numbers, prices or delivery dates. \
Refunds are handled by the billing team and you must not promise them yourself. When a parcel is \
late by more than two working days, apologise and offer a call back from the dispatch team. Our \
depots are open from Monday to Saturday between 07:00 and 19:00, and closed on public holidays. \
If the customer asks about a parcel that is not in the system, ask for the order number and the \
postcode, and check again before you say anything about its status. Always use the customer's \
name when they gave it, and sign every answer as the Parcelway support team.";

const CLAUDE_CODE_SYSTEM: &str = "You are an interactive agent that helps users with software \
engineering tasks. Use the instructions below and the tools available to you to assist the user.\n\n\
IMPORTANT: Assist with authorized security testing, defensive security, CTF challenges, and \
educational contexts. Refuse requests for destructive techniques. Dual-use security tools require \
clear authorization context: pentesting engagements, CTF competitions, security research.\n\n\
# Memory\nYou have a persistent memory directory at /home/user/.claude/memory. Save what you learn \
about the user's preferences there, and read it back at the start of each session.\n\n\
# Environment\n - Primary working directory: /tmp/work\n - Is a git repository: false\n\
 - Platform: linux\n - Today's date: 2026-12-07\n\n# Context management\nWhen the conversation \
grows long, summarise earlier turns and keep the parts the user asked you to remember. Avoid \
unneeded complexity in your solution, and do not add features the user did not ask for.\n";

const SOURCE: &str = "     1\tdef parse(text: str) -> dict:\n     2\t    out = {}\n     3\t    \
for line in text.splitlines():\n     4\t        key, _, value = line.partition(\":\")\n     5\t  \
      out[key.strip()] = value.strip()\n     6\t    return out\n";

const SHELL: &str = "$ cargo build --release\n   Compiling app v0.1.0 (/tmp/work)\nerror: could not \
compile `app` due to 2 previous errors\nFATAL: the deploy step did not run because the build \
failed\nError: exit status 101\n";

/// A Claude-Code-shaped Messages request at the defaults: the system blocks (the billing header
/// and the instructions), a `role: "system"` message inside `messages[]`, a line-numbered file
/// read and shell output all arrive byte for byte.
#[test]
fn claude_code_shaped_request_is_left_as_agents_need_it() {
    let p = policy(|_| {});
    let skills = format!(
        "The following skills are available (Tools: Read, Edit):\n{}",
        "- skill-creator: Guide for creating effective skills that extend the agent.\n".repeat(40)
    );
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;"},
            {"type": "text", "text": CLAUDE_CODE_SYSTEM.repeat(4), "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": "Fix the parser."},
            {"role": "system", "content": skills},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": SOURCE.repeat(20)},
                {"type": "tool_result", "tool_use_id": "t2", "content": SHELL.repeat(10)}
            ]},
            {"role": "user", "content": "Now run the tests."}
        ]
    });
    let out = apply(&p, Api::Messages, &body);
    assert_eq!(out, body);
}

/// The support prompt's rules at the defaults stay whole; with instruction compression on, the
/// skeleton and the conditions survive and no rule is broken.
#[test]
fn instructions_are_kept_by_default_and_compressed_only_within_their_skeleton() {
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": SUPPORT},
        {"role": "user", "content": "Can I change my address?"}
    ]});
    assert_eq!(apply(&policy(|_| {}), Api::ChatCompletions, &body), body);

    let p = policy(|c| {
        c.instructions = InstructionsMode::Compress;
        c.roles.system.min_tokens = 10;
    });
    for text in [SUPPORT, CLAUDE_CODE_SYSTEM] {
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": "hi"}
        ]});
        let out = apply(&p, Api::ChatCompletions, &body);
        let new = out["messages"][0]["content"].as_str().unwrap();
        assert!(new.len() < text.len(), "nothing compressed: {new}");
        assert!(check_text(text, new).is_empty(), "{new}");
        assert_eq!(new.lines().count(), text.lines().count());
    }
}

/// Each part is judged on its own size: a short system block next to a long one is untouched,
/// and documents in the long one are compressed when the role reads prose as documents.
#[test]
fn parts_are_gated_on_their_own_size() {
    let docs = corpus("47-prose-encyclopedia-lake.json");
    let docs = docs.as_str();
    let header = "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=cli;";
    let p = policy(|c| c.roles.system.prose = Prose::Documents);
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 10,
        "system": [{"type": "text", "text": header}, {"type": "text", "text": docs}],
        "messages": [{"role": "user", "content": "How deep is the lake?"}]
    });
    let out = apply(&p, Api::Messages, &body);
    assert_eq!(out["system"][0]["text"], header);
    assert!(out["system"][1]["text"].as_str().unwrap().len() < docs.len());
}

/// `<llmlingua>` tags steer only where the operator allows (`honor_tags`): in a user's earlier
/// message they are text, in the system message they work, and the final user message is never
/// altered, tags included.
#[test]
fn tags_steer_only_where_honored() {
    let doc = corpus("49-prose-news-hosepipe-ban.json");
    let doc = doc.as_str();
    let tagged = format!("<llmlingua, compress=False>{doc}</llmlingua>");
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": tagged},
        {"role": "user", "content": tagged},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": tagged}
    ]});
    let p = policy(|c| c.roles.user.min_tokens = 10);
    let out = apply(&p, Api::ChatCompletions, &body);
    // system: honoured (kept verbatim, tags removed)
    assert_eq!(out["messages"][0]["content"], doc);
    // earlier user message: the tags are text; the document is compressed around them
    let user = out["messages"][1]["content"].as_str().unwrap();
    assert!(user.starts_with("<llmlingua, compress=False>"), "{user}");
    assert!(user.len() < tagged.len());
    // final user message: untouched
    assert_eq!(out["messages"][3]["content"], tagged);
    let p = policy(|c| {
        c.honor_tags = HonorTags::All;
        c.roles.user.min_tokens = 10;
    });
    let out = apply(&p, Api::ChatCompletions, &body);
    assert_eq!(out["messages"][1]["content"], doc);
    assert_eq!(out["messages"][3]["content"], tagged);
}

/// A tool result read again, byte for byte, becomes a reference to the first read; turned off,
/// it is forwarded again.
#[test]
fn repeated_tool_results_become_references() {
    let file = SOURCE.repeat(20);
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "fix it"},
        {"role": "tool", "tool_call_id": "a", "content": file},
        {"role": "tool", "tool_call_id": "b", "content": file},
        {"role": "user", "content": "and?"}
    ]});
    let out = apply(&policy(|_| {}), Api::ChatCompletions, &body);
    assert_eq!(out["messages"][1]["content"], file.as_str());
    let second = out["messages"][2]["content"].as_str().unwrap();
    assert!(second.contains("messages[1].content"), "{second}");
    let off = policy(|c| c.transforms.dedupe_tool_results = false);
    assert_eq!(apply(&off, Api::ChatCompletions, &body), body);
}

/// `minify_json` (off by default) drops JSON whitespace and nothing else.
#[test]
fn json_minification_is_lossless_and_switchable() {
    let data = serde_json::to_string_pretty(&json!({"orders": (0..60).map(|i| json!({
        "id": format!("ord_{i}"), "total": format!("{i}.50"), "note": "leave at the  door"
    })).collect::<Vec<_>>()}))
    .unwrap();
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "tool", "tool_call_id": "a", "content": data},
        {"role": "user", "content": "sum?"}
    ]});
    assert_eq!(apply(&policy(|_| {}), Api::ChatCompletions, &body), body);
    let out = apply(
        &policy(|c| c.transforms.minify_json = true),
        Api::ChatCompletions,
        &body,
    );
    let min = out["messages"][0]["content"].as_str().unwrap();
    assert!(
        min.len() * 4 < data.len() * 3,
        "{} -> {}",
        data.len(),
        min.len()
    );
    assert!(min.contains("leave at the  door"));
    assert_eq!(
        serde_json::from_str::<Value>(min).unwrap(),
        serde_json::from_str::<Value>(&data).unwrap()
    );
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lingua-proxy")
}

/// `compress --explain` lists each piece with its kind, transform and tokens.
#[test]
fn compress_explain_lists_kinds_and_transforms() {
    let doc_text = corpus("55-mixed-issue-with-traceback.json");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc_text.as_str()).unwrap();
    let out = Command::new(binary())
        .args([
            "compress",
            "--scorer",
            "heuristic",
            "--role",
            "tool",
            "--explain",
            "--file",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("trace"), "{text}");
    assert!(text.contains("document"), "{text}");
    assert!(text.contains("compressed"), "{text}");
    assert!(text.contains("total:"), "{text}");

    let out = Command::new(binary())
        .args([
            "compress",
            "--scorer",
            "heuristic",
            "--role",
            "tool",
            "--explain",
            "--json",
            "--file",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pieces = v["pieces"].as_array().unwrap();
    assert!(
        pieces
            .iter()
            .any(|p| p["kind"] == "trace" && p["transform"] == "kept")
    );
    let joined: String = pieces
        .iter()
        .map(|p| p["after"].as_str().unwrap())
        .collect();
    assert_eq!(joined, v["compressed_prompt"].as_str().unwrap());
    assert!(check_text(doc_text.as_str(), &joined).is_empty());
    // --explain needs a role's policy.
    let out = Command::new(binary())
        .args(["compress", "--scorer", "heuristic", "--explain"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `/v1/compress` with `explain: true` answers with the pieces of each message.
#[tokio::test]
async fn compress_endpoint_explains() {
    let hook = {
        let p = policy(|_| {});
        Arc::new(lingua_proxy::hook::CompressionHook::new(Arc::new(p)))
    };
    let h = common::start_with(|_| {}, hook).await;
    let doc_text = corpus("44-prose-support-ticket-thread.json");
    let body = json!({"model": "gpt-4o", "explain": true, "messages": [
        {"role": "tool", "tool_call_id": "a", "content": format!("{}\n{SHELL}", doc_text.as_str())},
        {"role": "user", "content": "summarise"}
    ]});
    let r = post_json(&h, "/v1/compress", &body).await;
    let pieces = r["explain"][0]["pieces"].as_array().unwrap();
    assert!(
        pieces
            .iter()
            .any(|p| p["kind"] == "document" && p["transform"] == "compressed")
    );
    assert!(
        pieces
            .iter()
            .any(|p| p["kind"] == "log" || p["kind"] == "trace")
    );
    assert!(
        r["tokens_after"].as_u64() < r["tokens_before"].as_u64(),
        "{r}"
    );
    // Without it, no explanation.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("explain");
    let r = post_json(&h, "/v1/compress", &plain).await;
    assert!(r.get("explain").is_none());
}

/// With `log_content = true` the event log keeps what was done to each message's pieces; the
/// hook explains only when asked (the server builds it so from `[telemetry] log_content`).
#[tokio::test]
async fn the_event_log_explains_each_message_with_log_content() {
    let doc_text = corpus("51-prose-incident-postmortem.json");
    let tool = format!("{}\n{SHELL}", doc_text.as_str());
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": SUPPORT},
        {"role": "tool", "tool_call_id": "a", "content": tool},
        {"role": "user", "content": "What happened?"}
    ]});
    for log_content in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let path = events.clone();
        let hook = lingua_proxy::hook::CompressionHook::builder(Arc::new(policy(|_| {})))
            .explain(log_content)
            .build();
        let h = common::start_with(
            move |c| {
                c.telemetry.events_path = Some(path);
                c.telemetry.log_content = log_content;
            },
            Arc::new(hook),
        )
        .await;
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ev = common::read_events(&events, 1).await;
        let explain = ev[0].explain.clone();
        if !log_content {
            assert!(explain.is_none());
            continue;
        }
        let explain = explain.unwrap();
        let messages = explain.as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert!(!messages[0]["skipped"].is_null(), "{explain}");
        let tool_pieces = messages[1]["pieces"].as_array().unwrap();
        assert!(
            tool_pieces
                .iter()
                .any(|p| p["kind"] == "document" && p["transform"] == "compressed")
        );
        assert!(tool_pieces.iter().any(|p| p["kind"] == "log"));
        let after: String = tool_pieces
            .iter()
            .map(|p| p["after"].as_str().unwrap())
            .collect();
        let sent = h.mock.state.last_request().unwrap().json().unwrap();
        assert_eq!(sent["messages"][1]["content"], after.as_str());
    }
}

/// `/v1/compress` counts tokens (for `token_budget` and `x-headroom-bypass`) in a worker after
/// admission, stopping past `max_request_tokens`: three large calls at once leave `/healthz`
/// answering promptly and come back `too_large`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_endpoint_counts_off_the_runtime() {
    let hook = Arc::new(lingua_proxy::hook::CompressionHook::new(Arc::new(policy(
        |_| {},
    ))));
    let h = Arc::new(common::start_with(|_| {}, hook).await);
    let big = "The river carries silt from the northern hills to the delta every spring. "
        .repeat(300_000);
    let body = json!({"model": "gpt-4o", "token_budget": 10, "messages": [
        {"role": "tool", "tool_call_id": "a", "content": big},
        {"role": "user", "content": "summarise"}
    ]});
    // More calls than runtime threads: counting on the runtime would block every one of them.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let (h, body) = (h.clone(), body.clone());
            tokio::spawn(async move { post_json(&h, "/v1/compress", &body).await })
        })
        .collect();
    let mut slowest = std::time::Duration::ZERO;
    while !calls.iter().all(|c| c.is_finished()) {
        let t = std::time::Instant::now();
        let resp = h.client.get(h.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r["compression_skipped"], true, "{}", r["skip_reason"]);
        assert_eq!(r["skip_reason"], "too_large");
    }
    println!("slowest /healthz: {slowest:?}");
    assert!(
        slowest < std::time::Duration::from_millis(500),
        "/healthz took {slowest:?}"
    );
}
