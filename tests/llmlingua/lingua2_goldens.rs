#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Selection parity: replays the per-chunk token strings and probabilities recorded from the
//! reference (llmlingua 0.2.2, NumPy 2) on the two test checkpoints and requires our
//! `compress_prompt` to return exactly the reference's result on every golden case.
//! Tokenisation, chunking, placeholders and decoding run for real (tokenizer.json); only the
//! model is replayed. A chunk string we produce that the reference never scored fails the case.

use crate::lingua2_common;

use lingua_proxy::compress::llmlingua2::compress_prompt;
use lingua2_common::*;

#[test]
fn replayed_goldens_match_the_reference_exactly() {
    let g = load_goldens();
    let toks = Tokenizers::load();
    let mut failures = Vec::new();
    let all = cases(&g);
    assert!(all.len() >= 40, "expected at least 40 golden cases");
    for case in all {
        let name = case["name"].as_str().unwrap();
        let tok = toks.get(case["model"].as_str().unwrap());
        let scorer = replay_scorer(tok, case);
        let ctx = contexts(case);
        let refs: Vec<&str> = ctx.iter().map(String::as_str).collect();
        match compress_prompt(&scorer, &refs, &options(case)) {
            Ok(out) => {
                let d = diff(&out, &case["expected"]);
                if !d.is_empty() {
                    failures.push(format!("{name}:\n  {}", d.join("\n  ")));
                }
            }
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn goldens_cover_the_required_features() {
    let g = load_goldens();
    let all = cases(&g);
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| all.iter().filter(|c| pred(c)).count();
    for model in ["minilm", "xlmr"] {
        assert!(has(&|c| c["model"] == model) >= 20, "{model}");
        // Several chunks in one context.
        assert!(
            has(&|c| c["model"] == model
                && c["chunks"].as_array().unwrap().len() > c["contexts"].as_array().unwrap().len())
                >= 3
        );
    }
    assert!(has(&|c| c["options"]["drop_consecutive"] == true) >= 4);
    assert!(has(&|c| c["options"]["force_reserve_digit"] == true) >= 4);
    assert!(has(&|c| c["options"]["target_token"].is_i64()) >= 6);
    assert!(has(&|c| c["options"]["token_to_word"] == "first") >= 2);
    assert!(has(&|c| c["options"]["return_word_label"] == true) >= 4);
    assert!(has(&|c| c["contexts"].as_array().unwrap().len() > 1) >= 10);
    assert!(has(&|c| c["contexts"][0].as_str().unwrap().contains('新')) >= 2);
}

#[test]
fn thresholds_equal_the_reference_percentiles_and_margins_are_reported() {
    use lingua_proxy::compress::llmlingua2::compress_prompt_traced;
    let g = load_goldens();
    let toks = Tokenizers::load();
    let mut near = Vec::new();
    let mut checked = 0;
    for case in cases(&g) {
        let name = case["name"].as_str().unwrap();
        let tok = toks.get(case["model"].as_str().unwrap());
        let scorer = replay_scorer(tok, case);
        let ctx = contexts(case);
        let refs: Vec<&str> = ctx.iter().map(String::as_str).collect();
        let (_, trace) = compress_prompt_traced(&scorer, &refs, &options(case)).unwrap();
        let theirs: Vec<f64> = case["percentiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["result"].as_f64().unwrap())
            .collect();
        let mut ours: Vec<f64> = trace.chunks.iter().map(|c| c.threshold).collect();
        if let Some((_, thr)) = &trace.context_scores {
            ours.push(*thr);
        }
        for t in &ours {
            assert!(
                theirs.contains(t),
                "{name}: threshold {t} not among {theirs:?}"
            );
            checked += 1;
        }
        // Smallest distance between a model-scored word probability and its threshold: what
        // an encoder difference of that size could flip.
        let margin = trace
            .chunks
            .iter()
            .flat_map(|c| c.probs.iter().map(move |p| (p - c.threshold).abs()))
            .filter(|m| *m > 0.0)
            .fold(f64::INFINITY, f64::min);
        if margin < 1e-4 {
            near.push(format!("{name}: {margin:.2e}"));
        }
    }
    assert!(checked >= 50);
    eprintln!("cases with a word within 1e-4 of its threshold: {near:?}");
}

#[test]
fn numpy1_arithmetic_matches_the_reference_run_under_numpy1() {
    // tests/goldens/lingua2_numpy1_expected.json: the same cases run by the reference under
    // NumPy 1.26.4 (same torch, so the recorded probabilities are the same).
    let g = load_goldens();
    let path = repo().join("tests/goldens/lingua2_numpy1_expected.json");
    let np1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        np1["reference"]["numpy"]
            .as_str()
            .unwrap()
            .starts_with("1.")
    );
    let toks = Tokenizers::load();
    let mut failures = Vec::new();
    let np1_cases = np1["cases"].as_array().unwrap();
    assert_eq!(np1_cases.len(), cases(&g).len());
    for (case, exp) in cases(&g).iter().zip(np1_cases) {
        assert_eq!(case["name"], exp["name"]);
        let tok = toks.get(case["model"].as_str().unwrap());
        let scorer = replay_scorer(tok, case);
        let ctx = contexts(case);
        let refs: Vec<&str> = ctx.iter().map(String::as_str).collect();
        let mut o = options(case);
        o.numpy1_percentile = true;
        let out = compress_prompt(&scorer, &refs, &o).unwrap();
        let d = diff(&out, &exp["expected"]);
        if !d.is_empty() {
            failures.push(format!("{}:\n  {}", case["name"], d.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
