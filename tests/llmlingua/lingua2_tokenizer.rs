#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Tokenizer glue parity with the reference (transformers 5.23 / tokenizers 0.23.3) on the two
//! test checkpoints: placeholder ids, special-token sets, word style, and for every chunk the
//! reference scored, the exact input ids (with the [BUG-COMPAT] `[CLS]`/`[SEP]` markers) and
//! the token strings the model saw.

use crate::lingua2_common;

use lingua_proxy::scorer::WordStyle;
use lingua2_common::*;

#[test]
fn placeholders_get_consecutive_ids_after_the_base_vocabulary() {
    let toks = Tokenizers::load();
    let bert = toks.get("minilm");
    assert_eq!(bert.placeholder_base(), 30522);
    assert_eq!(bert.len_with_added(), 30622);
    assert_eq!(bert.token_to_id("[NEW99]"), 30621);
    assert_eq!(bert.word_style(), WordStyle::WordPiece);
    let xlmr = toks.get("xlmr");
    assert_eq!(xlmr.placeholder_base(), 416);
    assert_eq!(xlmr.len_with_added(), 516);
    assert_eq!(xlmr.word_style(), WordStyle::Metaspace);
    // Both checkpoints' embedding tables have exactly len(tokenizer) rows.
    for (m, t) in [("minilm", bert), ("xlmr", xlmr)] {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model_dir(m).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            cfg["vocab_size"].as_u64().unwrap() as usize,
            t.len_with_added()
        );
    }
}

#[test]
fn special_token_sets_match_the_reference() {
    let toks = Tokenizers::load();
    let mut bert: Vec<_> = toks
        .get("minilm")
        .special_tokens()
        .iter()
        .cloned()
        .collect();
    bert.sort();
    // [PAD] is not special for BERT: config.pad_token_id == 0 is falsy and BERT has no EOS.
    assert_eq!(bert, ["[CLS]", "[MASK]", "[SEP]", "[UNK]"]);
    let mut x: Vec<_> = toks.get("xlmr").special_tokens().iter().cloned().collect();
    x.sort();
    assert_eq!(x, ["</s>", "<mask>", "<pad>", "<s>", "<unk>"]);
}

#[test]
fn marker_ids_follow_the_reference_bug() {
    let toks = Tokenizers::load();
    let x = toks.get("xlmr");
    let inp = x.model_input("hello world").unwrap();
    // [BUG-COMPAT] "[CLS]"/"[SEP]" are unknown to XLM-R → unk id 3 at both ends.
    assert_eq!(inp.input_ids.first(), Some(&3));
    assert_eq!(inp.input_ids.last(), Some(&3));
    assert_eq!(inp.active_tokens.first().map(String::as_str), Some("<unk>"));
    let b = toks.get("minilm");
    let inp = b.model_input("hello world").unwrap();
    assert_eq!(inp.input_ids, vec![101, 7592, 2088, 102]);
    assert!(inp.attention_mask.iter().all(|&m| m == 1));
    // A literal "[PAD]" keeps its position but is masked out, as in the reference.
    let inp = b.model_input("[PAD] a").unwrap();
    assert_eq!(inp.input_ids, vec![101, 0, 1037, 102]);
    assert_eq!(inp.attention_mask, vec![1, 0, 1, 1]);
    assert_eq!(inp.active_tokens, ["[CLS]", "a", "[SEP]"]);
}

#[test]
fn model_inputs_match_every_recorded_chunk() {
    let g = load_goldens();
    let toks = Tokenizers::load();
    let mut n = 0;
    let mut bad = Vec::new();
    for case in cases(&g) {
        let tok = toks.get(case["model"].as_str().unwrap());
        for chunk in case["chunks"].as_array().unwrap() {
            let text = chunk["text"].as_str().unwrap();
            let inp = tok.model_input(text).unwrap();
            let ids: Vec<u32> = chunk["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            // The recorder keeps the ids at mask-1 positions (a literal "[PAD]" is masked).
            let active: Vec<u32> = inp
                .input_ids
                .iter()
                .zip(inp.attention_mask.iter())
                .filter(|(_, m)| **m == 1)
                .map(|(i, _)| *i)
                .collect();
            if active != ids || inp.active_tokens != strings(&chunk["tokens"]) {
                bad.push(format!("{}: {text:?}", case["name"]));
            }
            assert!(inp.input_ids.len() <= 512);
            n += 1;
        }
    }
    assert!(n > 80, "only {n} chunks");
    assert!(
        bad.is_empty(),
        "{} chunks differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn decoder_rules_match_the_reference() {
    let toks = Tokenizers::load();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // Metaspace: every ▁ of the first token dropped, later ones become spaces.
    let x = toks.get("xlmr");
    assert_eq!(
        x.tokens_to_string(&s(&["▁a▁b", "c", "▁d", "\n", "▁e"])),
        "abc d\n e"
    );
    // WordPiece (tokenizers 0.23: cleanup applied per token).
    let b = toks.get("minilm");
    assert_eq!(
        b.tokens_to_string(&s(&[
            "john", "'", "s", "do", "n", "'", "t", "hel", "##lo", ".", "\n", "x"
        ])),
        "john ' s do n ' t hello. \n x"
    );
    // The newline is normalised away → a force token "\n" needs a placeholder.
    assert!(x.tokenize("\n").unwrap().is_empty());
    assert!(b.tokenize("\n").unwrap().is_empty());
    assert_eq!(x.tokenize("[NEW7]").unwrap(), ["[NEW7]"]);
}

#[test]
fn input_scorer_drops_masked_positions_and_checks_lengths() {
    use lingua_proxy::scorer::Scorer;
    use lingua_proxy::scorer::ScorerError;
    use lingua_proxy::scorer::llmlingua2::tokenizer::{InputScorer, ModelInput};
    let toks = Tokenizers::load();
    // A fake model: probability = position / 100.
    let s = InputScorer::new(
        toks.get("minilm").clone(),
        "fake",
        |inp: &[ModelInput], _: &lingua_proxy::model::WorkCtx| {
            Ok(inp
                .iter()
                .map(|i| (0..i.input_ids.len()).map(|k| k as f32 / 100.0).collect())
                .collect::<Vec<Vec<f32>>>())
        },
    );
    let out = s
        .score_chunks(
            &["[PAD] a b".to_string()],
            &lingua_proxy::model::WorkCtx::none(),
        )
        .unwrap();
    assert_eq!(out[0].tokens, ["[CLS]", "a", "b", "[SEP]"]);
    assert_eq!(out[0].probs, [0.0, 0.02, 0.03, 0.04]);
    let bad = InputScorer::new(
        toks.get("minilm").clone(),
        "bad",
        |_: &[ModelInput], _: &lingua_proxy::model::WorkCtx| {
            Ok::<_, ScorerError>(vec![vec![0.5_f32]])
        },
    );
    assert!(
        bad.score_chunks(&["a b".to_string()], &lingua_proxy::model::WorkCtx::none())
            .is_err()
    );
}
