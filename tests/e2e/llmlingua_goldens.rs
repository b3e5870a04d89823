//! LLMLingua / LongLLMLingua parity with the reference (`llmlingua` 0.2.2, transformers 4.46.3)
//! on the committed tiny GPT-2 and Llama checkpoints: every golden case's `compress_prompt`
//! result (string, counts, ratio strings) and its intermediate results (ranking, selection,
//! compressed ids), every `recover` case, and NLTK's `sent_tokenize` on the goldens' texts.
//! The goldens come from `tools/make_causal_goldens.py`; no torch is needed here.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use lingua_proxy::compress::llmlingua::{self, Method, Params};
use lingua_proxy::model::{ModelConfig, PrecisionSetting, WorkCtx};
use lingua_proxy::scorer::causal::CausalModel;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn goldens(name: &str) -> Value {
    let p = root().join("tests/goldens").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The Punkt parameters scripts/test.sh builds (tools/build_punkt_data.py), or LINGUA_PUNKT_DIR.
fn punkt() {
    let dir = std::env::var_os("LINGUA_PUNKT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/models/punkt_tab/english"));
    lingua_proxy::compress::punkt::use_dir(&dir).unwrap_or_else(|e| {
        panic!("NLTK's English Punkt parameters are missing ({e}): run scripts/test.sh or tools/build_punkt_data.py")
    });
}

fn load(g: &Value) -> CausalModel {
    // The sentence-filter cases need Punkt; they report its absence as their failure.
    let _ = std::panic::catch_unwind(punkt);
    let dir = root().join(g["model"].as_str().unwrap());
    for (file, want) in g["sha256"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let got = hex::encode(Sha256::digest(&bytes));
        assert_eq!(
            &got,
            want.as_str().unwrap(),
            "{file} is not the goldens' checkpoint"
        );
    }
    CausalModel::from_dir(&dir, &ModelConfig::default()).unwrap()
}

fn run_cases(file: &str) {
    let g = goldens(file);
    let lm = load(&g);
    let mut failures = Vec::new();
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "{file}: only {} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = Params::from_json(&case["params"], Method::Llmlingua).unwrap();
        let out = match llmlingua::compress_prompt(&lm, &params, &WorkCtx::none()) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: error {e}"));
                continue;
            }
        };
        let trace = &case["trace"];
        if let Some(want) = trace["ranking"].as_array() {
            let want: Vec<u64> = want.iter().map(|p| p[0].as_u64().unwrap()).collect();
            let got: Vec<u64> = out
                .ranking
                .as_ref()
                .map(|r| r.iter().map(|(i, _)| *i as u64).collect())
                .unwrap_or_default();
            // NumPy's argsort (bm25) gives no order among equal scores (AVX-512 builds sort
            // with a network); there the two rankings must agree score for score.
            let same = if got != want && params.rank_method == "bm25" {
                let scores = llmlingua::rank::bm25_scores(&params.context, &params.question);
                let seq = |v: &[u64]| v.iter().map(|&i| scores[i as usize]).collect::<Vec<_>>();
                seq(&got) == seq(&want)
            } else {
                got == want
            };
            if !same {
                failures.push(format!("{name}: ranking {got:?}, reference {want:?}"));
            }
        }
        if let Some(want) = trace["selected"].as_array() {
            let want: Vec<i64> = want.iter().map(|v| v.as_i64().unwrap()).collect();
            if out.selected.as_ref() != Some(&want) {
                failures.push(format!(
                    "{name}: selected {:?}, reference {want:?}",
                    out.selected
                ));
            }
        }
        if let Some(want) = trace["ids"].as_array() {
            let want: Vec<u32> = want.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = out.ids.clone().unwrap_or_default();
            if got != want {
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                failures.push(format!(
                    "{name}: ids differ (ours {}, reference {}, first difference at {first:?})",
                    got.len(),
                    want.len()
                ));
            }
        }
        let r = &case["result"];
        let checks = [
            (
                "compressed_prompt",
                Value::from(out.compressed_prompt.clone()),
            ),
            ("origin_tokens", Value::from(out.origin_tokens)),
            ("compressed_tokens", Value::from(out.compressed_tokens)),
            ("ratio", Value::from(out.ratio.clone())),
            ("rate", Value::from(out.rate.clone())),
            ("saving", Value::from(out.saving.clone())),
        ];
        for (k, got) in checks {
            if r[k] != got {
                failures.push(format!("{name}: {k} = {got}, reference {}", r[k]));
            }
        }
    }
    let recover = g["recover"].as_array().unwrap();
    assert!(!recover.is_empty());
    for c in recover {
        let got = llmlingua::recover(
            lingua_proxy::scorer::causal::CausalScorer::tokenizer(&lm),
            c["original_prompt"].as_str().unwrap(),
            c["compressed_prompt"].as_str().unwrap(),
            c["response"].as_str().unwrap(),
        )
        .unwrap();
        if got != c["result"].as_str().unwrap() {
            failures.push(format!(
                "recover {}: {got:?}, reference {}",
                c["name"], c["result"]
            ));
        }
    }
    assert!(failures.is_empty(), "{file}:\n{}", failures.join("\n"));
}

#[test]
fn gpt2_goldens() {
    run_cases("llmlingua_gpt2.json");
}

#[test]
fn llama_goldens() {
    run_cases("llmlingua_llama.json");
}

#[test]
fn sent_tokenize_matches_nltk() {
    punkt();
    let g = goldens("llmlingua_gpt2.json");
    let cases = g["sentences"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<String> = c["nltk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let got = lingua_proxy::compress::punkt::sent_tokenize(text).unwrap();
        assert_eq!(got, want, "{text:?}");
    }
}

/// Which words of `orig` survive in `out` (a longest common subsequence of words).
pub(crate) fn kept_words(orig: &[&str], out: &[&str]) -> Vec<bool> {
    let (n, m) = (orig.len(), out.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if orig[i] == out[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut kept) = (0, 0, vec![false; n]);
    while i < n && j < m {
        if orig[i] == out[j] {
            kept[i] = true;
            i += 1;
            j += 1;
        } else if l[i + 1][j] >= l[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    kept
}

/// `precision = "q8"` (int8 in blocks of 32 on the shared kernels) keeps or drops the same
/// words as f32 on the goldens. LLMLingua's iterative compression feeds each window's choices
/// into the next, so one flipped token moves the ones after it, and these tiny random
/// checkpoints (per-token losses up to ~20 nats) magnify int8's error: measured 93.5% (GPT-2)
/// and 93.9% (Llama) of 8,576 words each, where candle's Q8_0 matmul, the previous q8 path,
/// scored 94.8% and 93.2% by the same measure. On a trained model (SmolLM2-135M, README) the
/// agreement is 98.4% (`scripts/bench_llmlingua.sh`); random weights have no outlier channels,
/// so here blocks and one scale per row score alike (92.6% and 95.4%). The bound catches what
/// breaks the products (a wrong scale or offset leaves a fraction of the words in place).
#[test]
fn q8_agrees_with_f32_on_the_goldens() {
    let low: Vec<String> = agreement_on_the_goldens(PrecisionSetting::Q8)
        .into_iter()
        .filter(|(_, rate)| *rate < 0.92)
        .map(|(file, rate)| format!("{file}: q8 agrees with f32 on {rate:.4} of words"))
        .collect();
    assert!(low.is_empty(), "{}", low.join("\n"));
}

/// `precision = "bf16"` (bf16 weights and activations, f32 sums) keeps or drops the same words
/// as f32 on the goldens. The same cascade as q8's applies (one flipped token moves the
/// windows after it, and these random checkpoints magnify any rounding): measured 95.4%
/// (GPT-2) and 97.4% (Llama), against q8's 93.4% and 94.8% in the same run. On a trained model
/// see `scripts/bench_llmlingua.sh`. The bound sits above q8's.
#[test]
fn bf16_agrees_with_f32_on_the_goldens() {
    const BF16_AGREEMENT: f64 = 0.95;
    let low: Vec<String> = agreement_on_the_goldens(PrecisionSetting::Bf16)
        .into_iter()
        .filter(|(_, rate)| *rate < BF16_AGREEMENT)
        .map(|(file, rate)| format!("{file}: bf16 agrees with f32 on {rate:.4} of words"))
        .collect();
    assert!(low.is_empty(), "{}", low.join("\n"));
}

/// For each causal golden file, the share of the original words that `precision` keeps or
/// drops as f32 does.
fn agreement_on_the_goldens(precision: PrecisionSetting) -> Vec<(&'static str, f64)> {
    let mut rates = Vec::new();
    for file in ["llmlingua_gpt2.json", "llmlingua_llama.json"] {
        let g = goldens(file);
        let f32_lm = load(&g);
        let dir = root().join(g["model"].as_str().unwrap());
        let cfg = ModelConfig {
            precision: Some(precision),
            ..ModelConfig::default()
        };
        let lm = CausalModel::from_dir(&dir, &cfg).unwrap();
        let (mut same, mut words) = (0usize, 0usize);
        for case in g["cases"].as_array().unwrap() {
            let params = Params::from_json(&case["params"], Method::Llmlingua).unwrap();
            let (Ok(a), Ok(b)) = (
                llmlingua::compress_prompt(&f32_lm, &params, &WorkCtx::none()),
                llmlingua::compress_prompt(&lm, &params, &WorkCtx::none()),
            ) else {
                continue;
            };
            let orig: Vec<&str> = params
                .context
                .iter()
                .flat_map(|c| c.split_whitespace())
                .collect();
            let ka = kept_words(
                &orig,
                &a.compressed_prompt.split_whitespace().collect::<Vec<_>>(),
            );
            let kb = kept_words(
                &orig,
                &b.compressed_prompt.split_whitespace().collect::<Vec<_>>(),
            );
            same += ka.iter().zip(&kb).filter(|(x, y)| x == y).count();
            words += orig.len();
        }
        let rate = same as f64 / words as f64;
        eprintln!("{file}: {precision:?} agrees with f32 on {rate:.4} of {words} words");
        assert!(words > 1000, "{file}: only {words} words compared");
        rates.push((file, rate));
    }
    rates
}
