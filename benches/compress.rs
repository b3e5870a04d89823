//! Policy + embedded heuristic scorer throughput on a 2,000- and a 20,000-token conversation,
//! uncached and cached, and the multi-turn case: 10 turns over a 2,000-token system prompt,
//! each turn's compression time against turn 1's (the cache should make turns 2 to 10 cost
//! under 5% of turn 1). Run: `cargo bench --bench compress` (prints one line per case);
//! `LINGUA_BENCH_MODEL=DIR` adds the multi-turn case with that LLMLingua-2 checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use lingua_proxy::compress::{
    CompressionConfig, InstructionsMode, Policy, RequestOptions, ScorerKind, TokenizerKind,
};
use lingua_proxy::engine::build_compressor;
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "the",
    "service",
    "request",
    "returns",
    "a",
    "list",
    "of",
    "records",
    "for",
    "each",
    "customer",
    "account",
    "and",
    "includes",
    "billing",
    "details",
    "when",
    "available",
    "in",
    "region",
    "Europe",
    "with",
    "latency",
    "measured",
    "over",
    "five",
    "minutes",
    "error",
    "budget",
    "remaining",
    "is",
    "computed",
    "from",
    "successful",
    "responses",
    "not",
    "counting",
    "retries",
    "that",
    "were",
    "throttled",
    "by",
    "gateway",
    "policy",
    "configured",
    "Alice",
    "deployment",
    "pipeline",
    "uses",
    "canary",
    "stages",
    "before",
    "promotion",
    "to",
    "production",
    "cluster",
    "2024",
    "version",
    "3.2",
    "dashboard",
    "shows",
    "p99",
    "values",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "min", "tor", "ve", "sal", "dri", "pen", "qua", "rix", "mo", "zel", "tan", "bu",
    "fen", "gor", "hal", "ist", "jun", "ner",
];

/// Deterministic pseudo-prose of about `tokens` o200k tokens: common words mixed with one in
/// four rare pseudo-words (2-3 syllables, ~8,000 forms) so word-level memoisation is not flattered.
fn prose(seed: u64, tokens: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    let mut n = 0;
    while n < tokens {
        let mut sentence = Vec::new();
        for _ in 0..12 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x >> 33) as usize;
            if r.is_multiple_of(4) {
                let n = 2 + (r >> 3) % 2;
                let w: String = (0..n)
                    .map(|k| SYLLABLES[(r >> (5 + 5 * k)) % SYLLABLES.len()])
                    .collect();
                sentence.push(w);
            } else {
                sentence.push(WORDS[r % WORDS.len()].to_string());
            }
        }
        let s = format!("{}. ", sentence.join(" "));
        n += TokenizerKind::O200kBase.count(&s);
        out.push_str(&s);
        if n % 97 < 14 {
            out.push('\n');
        }
    }
    out
}

/// system + alternating user/assistant/tool turns, about `total` tokens.
fn conversation(total: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": prose(1, total / 5)})];
    let mut seed = 2;
    let mut left = total - total / 5;
    while left > 0 {
        let chunk = (total / 10).max(250).min(left);
        let role = ["user", "assistant", "tool"][seed as usize % 3];
        let mut m = json!({"role": role, "content": prose(seed, chunk)});
        if role == "tool" {
            m["tool_call_id"] = json!(format!("call_{seed}"));
        }
        messages.push(m);
        left -= chunk;
        seed += 1;
    }
    messages.push(json!({"role": "user", "content": "Summarise the above."}));
    json!({"model": "gpt-4o", "messages": messages})
}

fn bench(name: &str, policy: &Policy, body: &Value, min_time: Duration) {
    let raw = serde_json::to_vec(body).unwrap();
    let opts = RequestOptions::default();
    let conv = lingua_proxy::api::chat::conversation(body).unwrap();
    let first = policy.apply(&raw, body, &conv, &opts).unwrap();
    let tokens = first.report.tokens_before;
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < min_time || times.len() < 5 {
        let t = Instant::now();
        let out = policy.apply(&raw, body, &conv, &opts).unwrap();
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{name:<28} tokens={tokens:>6} after={:>6} runs={:>4} median={:>9.3} ms  {:>10.0} tokens/s",
        first.report.tokens_after,
        times.len(),
        median.as_secs_f64() * 1000.0,
        tokens as f64 / median.as_secs_f64()
    );
}

/// Turn `t` (1-based) of an agent conversation: a 2,000-token system prompt, then per earlier
/// turn a user question and an assistant answer (about 40 and 120 tokens), then the question.
fn turn(t: usize) -> Value {
    let mut messages = vec![json!({"role": "system", "content": prose(101, 2_000)})];
    for k in 1..t {
        messages.push(json!({"role": "user", "content": prose(200 + k as u64, 40)}));
        messages.push(json!({"role": "assistant", "content": prose(300 + k as u64, 120)}));
    }
    messages.push(json!({"role": "user", "content": prose(200 + t as u64, 40)}));
    json!({"model": "gpt-4o", "messages": messages})
}

/// The 10 turns in order on a fresh policy, `reps` times; the median time of each turn.
fn multi_turn(name: &str, cfg: &CompressionConfig, reps: usize) {
    let bodies: Vec<(Vec<u8>, Value)> = (1..=10)
        .map(|t| {
            let v = turn(t);
            (serde_json::to_vec(&v).unwrap(), v)
        })
        .collect();
    let opts = RequestOptions::default();
    let mut times = vec![Vec::new(); bodies.len()];
    for _ in 0..reps {
        let policy = Policy::new(cfg.clone(), build_compressor(cfg).unwrap()).unwrap();
        for (i, (raw, body)) in bodies.iter().enumerate() {
            let conv = lingua_proxy::api::chat::conversation(body).unwrap();
            let t = Instant::now();
            let out = policy.apply(raw, body, &conv, &opts).unwrap();
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(out);
        }
    }
    let medians: Vec<f64> = times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let later = &medians[1..];
    let worst = later.iter().copied().fold(0.0, f64::max);
    println!(
        "multi-turn {name:<18} turn 1 {:.3} ms; turns 2-10 {} ms; worst {:.1}% of turn 1",
        medians[0],
        later
            .iter()
            .map(|m| format!("{m:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        100.0 * worst / medians[0]
    );
}

fn main() {
    // the system prompt is compressed (by default instructions are kept whole and turn 1
    // would do no scoring at all)
    let multi = CompressionConfig {
        scorer: ScorerKind::Heuristic,
        instructions: InstructionsMode::Compress,
        ..CompressionConfig::default()
    };
    multi_turn("heuristic", &multi, 7);
    if let Ok(model) = std::env::var("LINGUA_BENCH_MODEL") {
        let cfg = CompressionConfig {
            scorer: ScorerKind::Llmlingua2,
            model: Some(model),
            instructions: InstructionsMode::Compress,
            ..CompressionConfig::default()
        };
        multi_turn("llmlingua2", &cfg, 3);
    }
    let min_time = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let uncached = CompressionConfig {
        cache_bytes: 0,
        scorer: ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    let cached = CompressionConfig {
        scorer: ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    let p_uncached = Policy::new(uncached.clone(), build_compressor(&uncached).unwrap()).unwrap();
    let p_cached = Policy::new(cached.clone(), build_compressor(&cached).unwrap()).unwrap();
    for size in [2_000, 20_000] {
        let body = conversation(size);
        bench(
            &format!("heuristic uncached {size}"),
            &p_uncached,
            &body,
            min_time,
        );
        bench(
            &format!("heuristic cached {size}"),
            &p_cached,
            &body,
            min_time,
        );
    }
}
