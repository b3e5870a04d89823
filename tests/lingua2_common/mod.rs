//! Shared helpers for the LLMLingua-2 golden tests: loading tests/goldens/lingua2.json, the
//! test checkpoints' tokenizers, and turning a recorded case into options and a replay scorer.
#![allow(dead_code, reason = "shared by test binaries that each use part of it")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lingua_proxy::compress::llmlingua2::replay::ReplayScorer;
use lingua_proxy::compress::llmlingua2::{Llmlingua2Options, Llmlingua2Output, TokenToWord};
use lingua_proxy::scorer::ScoredChunk;
use lingua_proxy::scorer::llmlingua2::tokenizer::Llmlingua2Tokenizer;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_dir(model: &str) -> PathBuf {
    let name = match model {
        "minilm" => "bert-base-multilingual-cased-minilm-l6",
        "xlmr" => "xlm-roberta-large-tiny",
        other => panic!("unknown model {other}"),
    };
    repo().join("tests").join("models").join(name)
}

pub fn load_goldens() -> Value {
    let path = repo().join("tests/goldens/lingua2.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn cases(g: &Value) -> &Vec<Value> {
    g["cases"].as_array().unwrap()
}

pub struct Tokenizers {
    map: HashMap<String, Llmlingua2Tokenizer>,
}

impl Tokenizers {
    pub fn load() -> Self {
        let mut map = HashMap::new();
        for m in ["minilm", "xlmr"] {
            map.insert(m.to_string(), tokenizer_for(&model_dir(m)));
        }
        Self { map }
    }
    pub fn get(&self, model: &str) -> &Llmlingua2Tokenizer {
        &self.map[model]
    }
}

pub fn tokenizer_for(dir: &Path) -> Llmlingua2Tokenizer {
    Llmlingua2Tokenizer::from_dir(dir).unwrap()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let f = x.as_f64().unwrap();
            let g = f as f32;
            assert_eq!(f64::from(g), f, "recorded probability is not an exact f32");
            g
        })
        .collect()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

pub fn scored(chunk: &Value) -> ScoredChunk {
    ScoredChunk {
        tokens: strings(&chunk["tokens"]),
        probs: f32s(&chunk["probs"]),
    }
}

/// The reference's keyword arguments → options (defaults = `compress_prompt`'s).
pub fn options(case: &Value) -> Llmlingua2Options {
    let mut o = Llmlingua2Options::default();
    let Some(kw) = case["options"].as_object() else {
        return o;
    };
    for (k, v) in kw {
        match k.as_str() {
            "rate" => o.rate = v.as_f64().unwrap(),
            "target_token" => o.target_token = v.as_i64().unwrap(),
            "use_context_level_filter" => o.use_context_level_filter = v.as_bool().unwrap(),
            "use_token_level_filter" => o.use_token_level_filter = v.as_bool().unwrap(),
            "target_context" => o.target_context = v.as_i64().unwrap(),
            "context_level_rate" => o.context_level_rate = v.as_f64().unwrap(),
            "context_level_target_token" => o.context_level_target_token = v.as_i64().unwrap(),
            "force_context_ids" => {
                o.force_context_ids = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect()
            }
            "token_to_word" => {
                o.token_to_word = match v.as_str().unwrap() {
                    "mean" => TokenToWord::Mean,
                    "first" => TokenToWord::First,
                    other => panic!("token_to_word {other}"),
                }
            }
            "force_tokens" => o.force_tokens = strings(v),
            "force_reserve_digit" => o.force_reserve_digit = v.as_bool().unwrap(),
            "drop_consecutive" => o.drop_consecutive = v.as_bool().unwrap(),
            "chunk_end_tokens" => o.chunk_end_tokens = strings(v),
            "return_word_label" => o.return_word_label = v.as_bool().unwrap(),
            other => panic!("unhandled option {other}"),
        }
    }
    o
}

pub fn contexts(case: &Value) -> Vec<String> {
    strings(&case["contexts"])
}

pub fn replay_scorer(tok: &Llmlingua2Tokenizer, case: &Value) -> ReplayScorer<Llmlingua2Tokenizer> {
    let mut r = ReplayScorer::new(tok.clone());
    for chunk in case["chunks"].as_array().unwrap() {
        r.record(chunk["text"].as_str().unwrap(), scored(chunk));
    }
    r
}

/// Field-by-field differences between our output and the reference's result dict.
pub fn diff(out: &Llmlingua2Output, expected: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |field: &str, ours: String, theirs: String| {
        if ours != theirs {
            d.push(format!(
                "{field}:\n    ours:   {ours:?}\n    theirs: {theirs:?}"
            ));
        }
    };
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    cmp(
        "compressed_prompt",
        out.compressed_prompt.clone(),
        s(&expected["compressed_prompt"]),
    );
    cmp(
        "compressed_prompt_list",
        format!("{:?}", out.compressed_prompt_list),
        format!("{:?}", strings(&expected["compressed_prompt_list"])),
    );
    cmp(
        "origin_tokens",
        out.origin_tokens.to_string(),
        expected["origin_tokens"].to_string(),
    );
    cmp(
        "compressed_tokens",
        out.compressed_tokens.to_string(),
        expected["compressed_tokens"].to_string(),
    );
    cmp("ratio", out.ratio.clone(), s(&expected["ratio"]));
    cmp("rate", out.rate.clone(), s(&expected["rate"]));
    cmp("saving", out.saving.clone(), s(&expected["saving"]));
    let theirs = expected
        .get("fn_labeled_original_prompt")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    cmp(
        "fn_labeled_original_prompt",
        format!("{:?}", out.fn_labeled_original_prompt),
        format!("{theirs:?}"),
    );
    d
}

/// Judges an end-to-end run (real encoder) against the reference on one golden case.
///
/// `Ok(None)`: identical output. `Ok(Some(why))`: the output differs, but only by words (at most
/// `max_words`) whose probability lies within `tol` of the threshold in either run, i.e. a
/// floating-point near-tie. `Err(why)`: a real difference.
pub fn judge_with_ties(
    case: &Value,
    ours: &Llmlingua2Output,
    ours_trace: &lingua_proxy::compress::llmlingua2::Trace,
    ref_trace: &lingua_proxy::compress::llmlingua2::Trace,
    tol: f64,
    max_words: usize,
) -> Result<Option<String>, String> {
    let d = diff(ours, &case["expected"]);
    if d.is_empty() {
        return Ok(None);
    }
    let mut why = Vec::new();
    if let (Some((cs_o, thr_o)), Some((cs_r, thr_r))) =
        (&ours_trace.context_scores, &ref_trace.context_scores)
    {
        for (i, (a, b)) in cs_o.iter().zip(cs_r.iter()).enumerate() {
            if (a >= thr_o) != (b >= thr_r) {
                let tie = (a - thr_o).abs() <= tol || (b - thr_r).abs() <= tol;
                if !tie {
                    return Err(format!(
                        "context {i} kept differently: {a} vs thr {thr_o}, ref {b} vs {thr_r}"
                    ));
                }
                why.push(format!("context {i} score tie ({a} / {b})"));
            }
        }
        if !why.is_empty() {
            return Ok(Some(why.join("; ")));
        }
    }
    if ours_trace.chunks.len() != ref_trace.chunks.len() {
        return Err(format!("different chunks: {}", d.join("; ")));
    }
    let mut flipped = 0;
    for (k, (o, r)) in ours_trace.chunks.iter().zip(&ref_trace.chunks).enumerate() {
        if o.words != r.words {
            return Err(format!("chunk {k}: different words"));
        }
        for i in 0..o.words.len() {
            if o.labels[i] != r.labels[i] {
                let mo = (o.probs[i] - o.threshold).abs();
                let mr = (r.probs[i] - r.threshold).abs();
                if mo > tol && mr > tol {
                    return Err(format!(
                        "chunk {k} word {:?}: p {} vs thr {} (ref p {} vs thr {})",
                        o.words[i], o.probs[i], o.threshold, r.probs[i], r.threshold
                    ));
                }
                flipped += 1;
                why.push(format!(
                    "chunk {k} word {:?} tie: |p-thr| {mo:.1e} (ref {mr:.1e})",
                    o.words[i]
                ));
            }
        }
    }
    if flipped == 0 {
        return Err(format!(
            "output differs without a label flip: {}",
            d.join("; ")
        ));
    }
    if flipped > max_words {
        return Err(format!("{flipped} words flipped: {}", why.join("; ")));
    }
    Ok(Some(why.join("; ")))
}
