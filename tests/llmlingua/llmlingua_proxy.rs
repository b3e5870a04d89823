//! The proxy compresses a RAG-shaped request with LongLLMLingua end to end (the tiny GPT-2
//! checkpoint as the causal LM): documents in the system message are ranked against the user's
//! question, whole words only are deleted, the question is untouched, later turns forward the
//! same bytes for the same message, and a slow LM fails open.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start_with;
use lingua_proxy::compress::llmlingua::Method;
use lingua_proxy::compress::llmlingua_compressor::LlmlinguaCompressor;
use lingua_proxy::compress::{CompressionConfig, MethodKind, Policy, ScorerKind};
use lingua_proxy::headers::HEADER_SKIPPED;
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::model::{ModelConfig, WorkCtx};
use lingua_proxy::scorer::ScorerError;
use lingua_proxy::scorer::causal::{CausalModel, CausalScorer, CausalTokenizer};
use serde_json::{Value, json};

const GPT2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/gpt2-tiny");

const DOCS: [&str; 8] = [
    "The city of Veloria lies on the northern bank of the river Amsel, which flows east into the \
     Grey Sea. Its old harbour was rebuilt in 1921 after a fire destroyed most of the wooden piers.",
    "Veloria's main export is glass. About 3,400 workers are employed in the furnaces of the \
     southern district, and the guild does not allow night shifts longer than 8 hours.",
    "The regional train leaves the central station every 20 minutes. Tickets cost 4 euros and \
     are valid for 90 minutes on every tram and bus of the network.",
    "The annual lantern festival takes place in October. Visitors walk from the cathedral to the \
     harbour, and the mayor lights the first lantern at exactly 7 pm.",
    "The university was founded in 1388 and has about 21,000 students. Its library keeps a copy \
     of the first printed map of the coast, which is never lent to other institutions.",
    "Winters in Veloria are mild, with an average January temperature of 3 degrees. Snow falls \
     on fewer than 10 days a year, but fog is frequent over the river.",
    "The football club Amsel Veloria plays in the second division. Its stadium holds 18,500 \
     spectators and was renovated in 2019 with a new roof over the east stand.",
    "Local cuisine is known for smoked eel and rye bread. The covered market opens at 6 am from \
     Monday to Saturday and closes on public holidays.",
];
const QUESTION: &str = "Which river flows through the city of Veloria, and where does it go?";

fn system() -> String {
    DOCS.join("\n\n")
}

fn config() -> CompressionConfig {
    let mut c = CompressionConfig {
        scorer: ScorerKind::Heuristic,
        model: None,
        method: MethodKind::Longllmlingua,
        cache_bytes: 0,
        deadline_ms: 60_000,
        ..CompressionConfig::default()
    };
    c.roles.system.min_tokens = 0;
    // RAG documents in the system message: its prose reads as documents.
    c.roles.system.prose = lingua_proxy::compress::Prose::Documents;
    c.roles.system.rate = 0.5;
    c
}

fn model() -> ModelConfig {
    ModelConfig {
        causal_model: Some(GPT2.into()),
        ..ModelConfig::default()
    }
}

fn body(messages: Value) -> Value {
    json!({"model": "gpt-4o-mini", "messages": messages})
}

fn sent(h: &common::Harness) -> Value {
    serde_json::from_slice(&h.mock.state.last_request().unwrap().body).unwrap()
}

/// Every word of `out` is a word of `orig`, in order (whole words deleted, nothing invented);
/// documents may be reordered, so this is checked per output document.
fn whole_words_of(out: &str, docs: &[&str]) {
    for piece in out.split("\n\n") {
        let words: Vec<&str> = piece.split_whitespace().collect();
        let found = docs.iter().any(|d| {
            let mut it = d.split_whitespace();
            words.iter().all(|w| it.any(|o| o == *w))
        });
        assert!(found, "not whole words of one document: {piece:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_request_is_compressed_with_longllmlingua() {
    let hook = lingua_proxy::engine::hook(&config(), &model())
        .unwrap()
        .build();
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let turn1 = body(json!([
        {"role": "system", "content": system()},
        {"role": "user", "content": QUESTION}
    ]));
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&turn1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(HEADER_SKIPPED).is_none());
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
    let s1 = sent(&h);
    let sys1 = s1["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(sys1.len() < system().len());
    whole_words_of(&sys1, &DOCS);
    assert_eq!(
        s1["messages"][1], turn1["messages"][1],
        "the question is untouched"
    );
    // Facts stay whole: a number is never kept without its unit.
    for (n, unit) in [
        ("3,400", "workers"),
        ("18,500", "spectators"),
        ("21,000", "students"),
    ] {
        if sys1.contains(n) {
            assert!(
                sys1.contains(&format!("{n} {unit}")),
                "{n} without {unit}: {sys1}"
            );
        }
    }

    // Each window's KV cache is measured into /metrics (the recorder is shared by the test
    // binary, so other tests' windows may be counted too; none are without this request).
    let (count, sum) = (
        h.metric("lingua_causal_kv_cache_bytes_count", &[]).await,
        h.metric("lingua_causal_kv_cache_bytes_sum", &[]).await,
    );
    assert!(
        count >= 1.0 && sum > 0.0,
        "KV cache not reported: {count} {sum}"
    );

    // The next turn: same system message, a new question at the end. The system message is
    // compressed for the question that followed it, so its bytes are the same.
    let turn2 = body(json!([
        {"role": "system", "content": system()},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The Amsel flows through Veloria into the Grey Sea."},
        {"role": "user", "content": "How long is a train ticket valid?"}
    ]));
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&turn2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s2 = sent(&h);
    assert_eq!(s2["messages"][0]["content"].as_str().unwrap(), sys1);
    assert_eq!(s2["messages"][3], turn2["messages"][3]);

    // Same request again: byte-identical upstream bodies.
    h.client
        .post(h.url("/v1/chat/completions"))
        .json(&turn2)
        .send()
        .await
        .unwrap();
    let reqs = h.mock.state.requests();
    assert_eq!(reqs[reqs.len() - 1].body, reqs[reqs.len() - 2].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_in_a_tool_result_are_ranked_against_the_question() {
    let mut cfg = config();
    cfg.method = MethodKind::Llmlingua2;
    cfg.roles.tool.method = Some(MethodKind::Longllmlingua);
    cfg.roles.tool.min_tokens = 0;
    cfg.roles.system.enabled = false;
    let hook = lingua_proxy::engine::hook(&cfg, &model()).unwrap().build();
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let req = body(json!([
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "search", "arguments": "{\"q\":\"Veloria river\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": system()},
        {"role": "user", "content": "Answer in one sentence."}
    ]));
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = sent(&h);
    let tool = s["messages"][2]["content"].as_str().unwrap();
    assert!(tool.len() < system().len(), "{tool}");
    whole_words_of(tool, &DOCS);
    assert_eq!(
        s["messages"][1], req["messages"][1],
        "the tool call is untouched"
    );
    assert_eq!(s["messages"][2]["tool_call_id"], "call_1");
}

/// The tiny GPT-2, 300 ms per model step.
struct SlowLm {
    inner: CausalModel,
}

impl CausalScorer for SlowLm {
    type Cache = <CausalModel as CausalScorer>::Cache;
    fn tokenizer(&self) -> &CausalTokenizer {
        self.inner.tokenizer()
    }
    fn max_positions(&self) -> usize {
        self.inner.max_positions()
    }
    fn new_cache(&self) -> Self::Cache {
        self.inner.new_cache()
    }
    fn cache_len(&self, c: &Self::Cache) -> usize {
        self.inner.cache_len(c)
    }
    fn truncate(&self, c: &mut Self::Cache, len: usize) {
        self.inner.truncate(c, len)
    }
    fn remove(&self, c: &mut Self::Cache, s: usize, n: usize) {
        self.inner.remove(c, s, n)
    }
    fn nll(
        &self,
        c: &mut Self::Cache,
        ids: &[u32],
        ctx: &WorkCtx,
    ) -> Result<Vec<f32>, ScorerError> {
        std::thread::sleep(Duration::from_millis(300));
        self.inner.nll(c, ids, ctx)
    }
    fn id(&self) -> &str {
        "slow"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_causal_lm_fails_open() {
    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        deadline_ms: 200,
        ..config()
    };
    let lm = CausalModel::from_dir(std::path::Path::new(GPT2), &ModelConfig::default()).unwrap();
    let compressor = LlmlinguaCompressor::new(
        Arc::new(SlowLm { inner: lm }),
        Method::Longllmlingua,
        "\n\n",
    );
    let hook = CompressionHook::new(Arc::new(Policy::new(cfg, Arc::new(compressor)).unwrap()));
    let stats = hook.stats();
    let h = start_with(|_| {}, Arc::new(hook)).await;
    let req = body(json!([
        {"role": "system", "content": system()},
        {"role": "user", "content": QUESTION}
    ]));
    let raw = serde_json::to_vec(&req).unwrap();
    let t = Instant::now();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_SKIPPED], "deadline");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        h.mock.state.last_request().unwrap().body,
        raw,
        "original forwarded"
    );
    assert_eq!(stats.fail_open(), 1);
}

#[test]
fn a_missing_causal_lm_follows_on_model_unavailable() {
    use lingua_proxy::compress::ModelUnavailable;
    // No [model] causal_model: the LongLLMLingua roles fall back to the llmlingua2 method.
    let hook = lingua_proxy::engine::hook(&config(), &ModelConfig::default())
        .unwrap()
        .build();
    assert!(hook.active_scorer().is_some());
    let missing = ModelConfig {
        causal_model: Some("/nonexistent/causal-lm".into()),
        ..ModelConfig::default()
    };
    assert!(lingua_proxy::engine::hook(&config(), &missing).is_ok());
    // "fail" refuses to start, naming the model.
    let strict = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        on_model_unavailable: ModelUnavailable::Fail,
        ..config()
    };
    let err = lingua_proxy::engine::hook(&strict, &missing).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/causal-lm"), "{err}");
    let err = lingua_proxy::engine::hook(&strict, &ModelConfig::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("causal_model"), "{err}");
}
