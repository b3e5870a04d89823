#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! `compress_prompt` must never panic or fail on odd input (the proxy forwards the original on
//! error, but a panic would take a worker down): random texts full of special-token strings,
//! placeholders, markers, emoji and empty contexts, with random (also out-of-range) options, on
//! both test tokenizers, scored by a deterministic fake model.

use crate::lingua2_common;

use lingua_proxy::compress::llmlingua2::{
    Llmlingua2Options, TokenToWord, cl100k_count, compress_prompt,
};
use lingua_proxy::scorer::ScorerError;
use lingua_proxy::scorer::llmlingua2::tokenizer::{InputScorer, ModelInput};
use lingua2_common::*;

const PIECES: &[&str] = &[
    "the",
    "meeting",
    "budget",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    ".",
    ",",
    "?",
    "!",
    "。",
    "：",
    "经济",
    "类别：",
    "[NEW3]",
    "[NEW99]",
    "[NEW",
    "<s>",
    "</s>",
    "<pad>",
    "<mask>",
    "<unk>",
    "[CLS]",
    "[SEP]",
    "[PAD]",
    "[MASK]",
    "[UNK]",
    "##",
    "###x",
    "▁",
    "▁▁a",
    "é",
    "e\u{301}",
    "😀",
    "12",
    "3.5",
    "١٢",
    "<|endoftext|>",
    "()",
    "{|}",
    "...",
    "$",
    "%",
    "don't",
    "John's",
];

fn random_text(r: &mut fastrand::Rng, max_pieces: usize) -> String {
    let n = r.usize(..max_pieces + 1);
    (0..n).map(|_| PIECES[r.usize(..PIECES.len())]).collect()
}

fn random_options(r: &mut fastrand::Rng) -> Llmlingua2Options {
    let mut o = Llmlingua2Options {
        rate: r.f64() * 2.0 - 0.5,
        ..Llmlingua2Options::default()
    };
    if r.usize(..2) == 0 {
        o.target_token = [-1, 0, 1, 5, 40, i64::MAX][r.usize(..6)];
    }
    o.use_context_level_filter = r.usize(..2) == 0;
    o.use_token_level_filter = r.usize(..5) != 0;
    if r.usize(..3) == 0 {
        o.target_context = r.usize(..5) as i64 - 1;
    }
    if r.usize(..3) == 0 {
        o.context_level_rate = r.f64() * 1.5;
    }
    if r.usize(..4) == 0 {
        o.context_level_target_token = r.usize(..100) as i64 - 1;
    }
    if r.usize(..3) == 0 {
        o.force_context_ids = vec![r.usize(..6)];
    }
    if r.usize(..2) == 0 {
        o.token_to_word = TokenToWord::First;
    }
    let nf = r.usize(..6);
    o.force_tokens = (0..nf)
        .map(|_| {
            [
                "\n",
                ".",
                "",
                "经济",
                "The answer is",
                "NEW",
                "##",
                "▁",
                "[NEW0]",
                "<s>",
            ][r.usize(..10)]
            .to_string()
        })
        .collect();
    o.force_reserve_digit = r.usize(..2) == 0;
    o.drop_consecutive = r.usize(..2) == 0;
    if r.usize(..4) == 0 {
        o.chunk_end_tokens = vec![",".to_string()];
    }
    o.return_word_label = r.usize(..2) == 0;
    o.numpy1_percentile = r.usize(..2) == 0;
    o
}

#[test]
fn random_inputs_never_panic_and_outputs_are_consistent() {
    let toks = Tokenizers::load();
    for model in ["minilm", "xlmr"] {
        let scorer = InputScorer::new(
            toks.get(model).clone(),
            "fake",
            |inp: &[ModelInput], _: &lingua_proxy::model::WorkCtx| {
                Ok::<_, ScorerError>(
                    inp.iter()
                        .map(|i| {
                            i.input_ids
                                .iter()
                                .enumerate()
                                .map(|(k, id)| {
                                    ((id.wrapping_mul(2_654_435_761) ^ k as u32) % 1000) as f32
                                        / 1000.0
                                })
                                .collect()
                        })
                        .collect(),
                )
            },
        );
        let mut r = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15 ^ model.len() as u64);
        for iter in 0..150 {
            let n_ctx = 1 + r.usize(..4);
            let long = r.usize(..10) == 0;
            let ctx: Vec<String> = (0..n_ctx)
                .map(|_| random_text(&mut r, if long { 700 } else { 25 }))
                .collect();
            let refs: Vec<&str> = ctx.iter().map(String::as_str).collect();
            let o = random_options(&mut r);
            let out = compress_prompt(&scorer, &refs, &o)
                .unwrap_or_else(|e| panic!("{model} iteration {iter}: {e} for {ctx:?} {o:?}"));
            assert!(out.compressed_prompt_list.len() <= n_ctx);
            assert_eq!(
                out.compressed_prompt,
                out.compressed_prompt_list.join("\n\n")
            );
            let counted: usize = out
                .compressed_prompt_list
                .iter()
                .map(|c| cl100k_count(c))
                .sum();
            assert_eq!(out.compressed_tokens, counted);
            assert_eq!(
                out.origin_tokens,
                ctx.iter().map(|c| cl100k_count(c)).sum::<usize>()
            );
            assert_eq!(
                out.fn_labeled_original_prompt.is_some(),
                o.return_word_label
            );
        }
    }
}
