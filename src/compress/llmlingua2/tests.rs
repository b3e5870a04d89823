#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Hand-worked examples of the selection with toy tokenizers (no model, no tokenizer.json).

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

const SP: char = '\u{2581}';

/// A toy tokenizer in the style of XLM-R (Metaspace) or BERT (WordPiece): whitespace words,
/// ASCII punctuation split off, `[NEWk]` atomic, words longer than 6 characters split into
/// 4-character pieces. Scores each token from a table keyed by its pure text (default 0.5).
struct Toy {
    style: WordStyle,
    probs: HashMap<String, f32>,
    seen: Mutex<Vec<String>>,
}

impl Toy {
    fn new(style: WordStyle, probs: &[(&str, f32)]) -> Self {
        Self {
            style,
            probs: probs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn word_pieces(&self, word: &str, out: &mut Vec<String>) {
        let chars: Vec<char> = word.chars().collect();
        let pieces: Vec<String> = if chars.len() > 6 {
            chars.chunks(4).map(|c| c.iter().collect()).collect()
        } else {
            vec![word.to_string()]
        };
        for (i, p) in pieces.into_iter().enumerate() {
            match (self.style, i) {
                (WordStyle::Metaspace, 0) => out.push(format!("{SP}{p}")),
                (WordStyle::Metaspace, _) => out.push(p),
                (WordStyle::WordPiece, 0) => out.push(p),
                (WordStyle::WordPiece, _) => out.push(format!("##{p}")),
            }
        }
    }

    fn segment(&self, text: &str, out: &mut Vec<String>) {
        for ws in text.split_whitespace() {
            let mut first = true;
            let mut cur = String::new();
            let flush = |cur: &mut String, first: &mut bool, out: &mut Vec<String>| {
                if !cur.is_empty() {
                    if *first || self.style == WordStyle::WordPiece {
                        self.word_pieces(cur, out);
                    } else {
                        out.push(cur.clone());
                    }
                    cur.clear();
                    *first = false;
                }
            };
            for ch in ws.chars() {
                if ch.is_ascii_punctuation() {
                    flush(&mut cur, &mut first, out);
                    if first && self.style == WordStyle::Metaspace {
                        out.push(format!("{SP}{ch}"));
                    } else {
                        out.push(ch.to_string());
                    }
                    first = false;
                } else {
                    cur.push(ch);
                }
            }
            flush(&mut cur, &mut first, out);
        }
    }
}

impl Scorer for Toy {
    fn id(&self) -> &str {
        "toy"
    }
    fn word_style(&self) -> WordStyle {
        self.style
    }
    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(pos) = rest.find("[NEW") {
            let Some(end) = rest[pos..].find(']') else {
                break;
            };
            self.segment(&rest[..pos], &mut out);
            out.push(rest[pos..pos + end + 1].to_string());
            rest = &rest[pos + end + 1..];
        }
        self.segment(rest, &mut out);
        Ok(out)
    }
    fn tokens_to_string(&self, tokens: &[String]) -> String {
        let mut s = String::new();
        for (i, t) in tokens.iter().enumerate() {
            match self.style {
                WordStyle::Metaspace => {
                    if i == 0 {
                        s.push_str(&t.replace(SP, ""));
                    } else {
                        s.push_str(&t.replace(SP, " "));
                    }
                }
                WordStyle::WordPiece => {
                    if i == 0 {
                        s.push_str(t);
                    } else if let Some(r) = t.strip_prefix("##") {
                        s.push_str(r);
                    } else {
                        s.push(' ');
                        s.push_str(t);
                    }
                }
            }
        }
        if self.style == WordStyle::WordPiece {
            s = s.replace(" .", ".").replace(" ,", ",").replace(" ?", "?");
        }
        s
    }
    fn is_special(&self, token: &str) -> bool {
        matches!(token, "<unk>" | "<s>" | "</s>" | "[CLS]" | "[SEP]")
    }
    fn score_chunks(
        &self,
        chunks: &[String],
        _ctx: &crate::model::WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError> {
        self.seen.lock().unwrap().extend(chunks.iter().cloned());
        let (cls, sep) = match self.style {
            WordStyle::Metaspace => ("<unk>", "<unk>"),
            WordStyle::WordPiece => ("[CLS]", "[SEP]"),
        };
        chunks
            .iter()
            .map(|c| {
                let mut tokens = vec![cls.to_string()];
                tokens.extend(self.tokenize(c)?);
                tokens.push(sep.to_string());
                let probs = tokens
                    .iter()
                    .map(|t| {
                        let pure = t.trim_start_matches(SP).trim_start_matches("##");
                        *self.probs.get(pure).unwrap_or(&0.5)
                    })
                    .collect();
                Ok(ScoredChunk { tokens, probs })
            })
            .collect()
    }
}

/// Twelve filler words with probability 0.01: they hold most of the token weight, so the
/// rate-0.5 threshold is exactly 0.01 and every word above it is kept.
const FILL: &str = " z z z z z z z z z z z z";

fn fill_probs(extra: &[(&'static str, f32)]) -> Vec<(&'static str, f32)> {
    let mut v = vec![("z", 0.01_f32)];
    v.extend_from_slice(extra);
    v
}

fn opts() -> Llmlingua2Options {
    Llmlingua2Options::default()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn defaults_match_the_reference_public_entry_point() {
    let o = Llmlingua2Options::default();
    assert_eq!(o.rate, 0.5);
    assert_eq!(o.target_token, -1);
    assert!(o.use_context_level_filter);
    assert!(o.use_token_level_filter);
    assert_eq!(o.context_level_rate, 1.0);
    assert_eq!(o.chunk_end_tokens, strings(&[".", "\n"]));
    assert_eq!(o.token_to_word, TokenToWord::Mean);
    assert!(!o.numpy1_percentile);
}

#[test]
fn spec_toy_example_keeps_cat_and_forced_period() {
    // §2.8: ▁The 0.2, ▁cat 0.9, ▁sat 0.6, "." forced; rate 0.5.
    let toy = Toy::new(
        WordStyle::Metaspace,
        &[("The", 0.2), ("cat", 0.9), ("sat", 0.6), (".", 0.1)],
    );
    let o = Llmlingua2Options {
        force_tokens: strings(&["."]),
        ..opts()
    };
    // With the real cl100k counts (3,3,3,1) the weighted list sorted is 0.2×3, 0.6×3, 0.9×3,
    // 1.0; q = 51 → virtual index 9·0.51 = 4.59 → a[4] = a[5] = 0.6 → threshold 0.6 (f32), so
    // ▁sat ties with the threshold and is dropped by the strict `>`.
    for w in ["\u{2581}The", "\u{2581}cat", "\u{2581}sat"] {
        assert_eq!(cl100k_count(w), 3, "{w}");
    }
    let out = compress_prompt(&toy, &["The cat sat."], &o).unwrap();
    assert_eq!(out.compressed_prompt, "cat.");
    assert_eq!(out.compressed_prompt_list, strings(&["cat."]));
    assert_eq!(out.origin_tokens, cl100k_count("The cat sat."));
    assert_eq!(out.compressed_tokens, cl100k_count("cat."));
    assert_eq!(out.ratio, "2.0x");
    assert_eq!(out.rate, "50.0%");
    assert_eq!(out.saving, ", Saving $0.0 in GPT-4.");
    assert_eq!(out.fn_labeled_original_prompt, None);
}

#[test]
fn word_labels_strip_metaspace_and_use_reference_separators() {
    let toy = Toy::new(
        WordStyle::Metaspace,
        &[("The", 0.2), ("cat", 0.9), ("sat", 0.6)],
    );
    let o = Llmlingua2Options {
        force_tokens: strings(&["."]),
        return_word_label: true,
        ..opts()
    };
    let out = compress_prompt(&toy, &["The cat sat."], &o).unwrap();
    assert_eq!(
        out.fn_labeled_original_prompt.as_deref(),
        Some("The 0\t\t|\t\tcat 1\t\t|\t\tsat 0\t\t|\t\t. 1")
    );
}

#[test]
fn threshold_ties_are_dropped_unless_the_threshold_is_one() {
    // All words 0.5 → threshold 0.5 → strict `>` drops everything.
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let out = compress_prompt(&toy, &["a b c d"], &opts()).unwrap();
    assert_eq!(out.compressed_prompt, "");
    assert_eq!(out.compressed_tokens, 0);
    assert_eq!(out.ratio, "1.0x");
    assert_eq!(out.rate, "100.0%");
    // Everything forced → threshold 1.0 → the p == thr == 1.0 rule keeps all.
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let o = Llmlingua2Options {
        force_tokens: strings(&["a", "b"]),
        ..opts()
    };
    let out = compress_prompt(&toy, &["a b a b"], &o).unwrap();
    assert_eq!(out.compressed_prompt, "a b a b");
}

#[test]
fn mean_and_first_token_to_word() {
    // "elephants" → ▁elep | hant | s (3 pieces): mean = (0.9+0.1+0.1)/3 ≈ 0.367, first = 0.9.
    // Threshold: q = 51 over big 0.6×3, elephants ×4, x 0.5×3 → 0.5 (mean) / 0.6 (first).
    let probs = [
        ("elep", 0.9),
        ("hant", 0.1),
        ("s", 0.1),
        ("big", 0.6),
        ("x", 0.5),
    ];
    let text = "big elephants x";
    let toy = Toy::new(WordStyle::Metaspace, &probs);
    let mean = compress_prompt(&toy, &[text], &opts()).unwrap();
    assert_eq!(mean.compressed_prompt, "big");
    let o = Llmlingua2Options {
        token_to_word: TokenToWord::First,
        ..opts()
    };
    let first = compress_prompt(&toy, &[text], &o).unwrap();
    assert_eq!(first.compressed_prompt, "elephants");
}

#[test]
fn multi_piece_force_token_gets_a_placeholder_and_extra_space() {
    // "\n" tokenises to nothing → placeholder [NEW0]; the word after it gets a ▁ → " Next".
    let toy = Toy::new(
        WordStyle::Metaspace,
        &fill_probs(&[
            ("Hello", 0.9),
            ("world", 0.001),
            ("Next", 0.9),
            ("line", 0.001),
        ]),
    );
    let o = Llmlingua2Options {
        force_tokens: strings(&["\n", "."]),
        ..opts()
    };
    let text = format!("Hello world.\n\nNext line{FILL}");
    let out = compress_prompt(&toy, &[text.as_str()], &o).unwrap();
    assert_eq!(out.compressed_prompt, "Hello.\n\n Next");
    // The model saw the placeholders, not the newlines.
    let seen = toy.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![format!("Hello world.[NEW0][NEW0] Next line{FILL}")]
    );
}

#[test]
fn placeholder_index_is_the_force_token_position_and_dict_order_is_kept() {
    // "x" is one toy token (no placeholder); "a b" is two → [NEW1]; repeated "a b" → [NEW2]
    // overwrites the value but keeps the position.
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let force = strings(&["x", "a b", "a b"]);
    let map = TokenMap::build(&toy, &force).unwrap();
    assert_eq!(map.entries, vec![("a b".to_string(), "[NEW2]".to_string())]);
    assert_eq!(map.substitute("a b c a b"), "[NEW2] c [NEW2]");
    assert_eq!(map.restore("[NEW2] c"), "a b c");
}

#[test]
fn drop_consecutive_suppresses_repeated_force_tokens() {
    // "drop" (0.001) is below the 0.01 threshold, so without drop_consecutive three forced
    // periods in a row are kept; with it, the repeats are zeroed (nothing kept in between).
    let toy = Toy::new(
        WordStyle::Metaspace,
        &fill_probs(&[("keep", 0.95), ("drop", 0.001), ("also", 0.9)]),
    );
    let text = format!("keep. drop. drop. also.{FILL}");
    let text = text.as_str();
    let base = Llmlingua2Options {
        force_tokens: strings(&["."]),
        ..opts()
    };
    let out = compress_prompt(&toy, &[text], &base).unwrap();
    assert_eq!(out.compressed_prompt, "keep... also.");
    let o = Llmlingua2Options {
        drop_consecutive: true,
        ..base
    };
    let out = compress_prompt(&toy, &[text], &o).unwrap();
    assert_eq!(out.compressed_prompt, "keep. also.");
}

#[test]
fn force_reserve_digit_forces_words_and_pieces_with_digits() {
    let toy = Toy::new(
        WordStyle::Metaspace,
        &fill_probs(&[("the", 0.9), ("42", 0.001)]),
    );
    let text = format!("the 42{FILL}");
    let text = text.as_str();
    let out = compress_prompt(&toy, &[text], &opts()).unwrap();
    assert_eq!(out.compressed_prompt, "the");
    let o = Llmlingua2Options {
        force_reserve_digit: true,
        ..opts()
    };
    let out = compress_prompt(&toy, &[text], &o).unwrap();
    assert_eq!(out.compressed_prompt, "the 42");
}

#[test]
fn chunks_split_after_end_tokens_and_fuse_without_separator() {
    // 600 words in sentences of 10 → the first chunk ends at the last "." within 511 tokens.
    let mut text = String::new();
    for i in 0..60 {
        for j in 0..9 {
            text.push_str(&format!("w{i}x{j} "));
        }
        text.push_str("end. ");
    }
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let tokens = toy.tokenize(&text).unwrap();
    let end: HashSet<String> = [".".to_string()].into_iter().collect();
    let chunks = chunk_context(&toy, &text, &end).unwrap();
    assert_eq!(chunks.len(), 2);
    let first_len = toy.tokenize(&chunks[0]).unwrap().len();
    assert!(first_len <= 511);
    assert!(chunks[0].ends_with("end."));
    assert_eq!(
        first_len + toy.tokenize(&chunks[1]).unwrap().len(),
        tokens.len()
    );
    // rate 1.0 → no model call; chunks are concatenated with no separator.
    let o = Llmlingua2Options {
        rate: 1.0,
        ..opts()
    };
    let out = compress_prompt(&toy, &[text.as_str()], &o).unwrap();
    assert_eq!(out.compressed_prompt, format!("{}{}", chunks[0], chunks[1]));
    assert!(out.compressed_prompt.contains("end.w"));
    assert!(toy.seen.lock().unwrap().is_empty());
}

#[test]
fn chunk_without_end_token_has_511_tokens() {
    let text = (0..1200)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let end: HashSet<String> = [".".to_string()].into_iter().collect();
    let chunks = chunk_context(&toy, &text, &end).unwrap();
    let lens: Vec<usize> = chunks
        .iter()
        .map(|c| toy.tokenize(c).unwrap().len())
        .collect();
    assert_eq!(lens, vec![511, 511, 178]);
}

#[test]
fn rate_one_returns_normalised_text_and_regex_word_labels() {
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let o = Llmlingua2Options {
        rate: 1.0,
        return_word_label: true,
        force_tokens: strings(&["\n"]),
        ..opts()
    };
    let out = compress_prompt(&toy, &["Hi   there,\nyou (ok)?"], &o).unwrap();
    assert_eq!(out.compressed_prompt, "Hi there,\n you (ok)?");
    assert_eq!(
        out.fn_labeled_original_prompt.as_deref(),
        Some("Hi 1\t\t|\t\tthere 1\t\t|\t\tyou 1\t\t|\t\t( 1\t\t|\t\tok 1\t\t|\t\t) 1\t\t|\t\t? 1")
    );
}

#[test]
fn target_token_overrides_rate() {
    // 8 words, weights differ; target 4 of 8 cl100k tokens → rate 0.5.
    let probs = [
        ("a", 0.1),
        ("b", 0.2),
        ("c", 0.3),
        ("d", 0.4),
        ("e", 0.6),
        ("f", 0.7),
        ("g", 0.8),
        ("h", 0.9),
    ];
    let toy = Toy::new(WordStyle::Metaspace, &probs);
    let text = "a b c d e f g h";
    let n = cl100k_count(text) as i64;
    let o = Llmlingua2Options {
        target_token: n / 2,
        rate: 0.99,
        ..opts()
    };
    let by_target = compress_prompt(&toy, &[text], &o).unwrap();
    let by_rate = compress_prompt(
        &toy,
        &[text],
        &Llmlingua2Options {
            rate: (n / 2) as f64 / n as f64,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(by_target.compressed_prompt, by_rate.compressed_prompt);
    assert_eq!(by_target.compressed_prompt, "e f g h");
}

#[test]
fn context_filter_drops_the_low_scoring_context_and_rebudgets() {
    let toy = Toy::new(
        WordStyle::Metaspace,
        &[("good", 0.9), ("fine", 0.8), ("bad", 0.1), ("poor", 0.2)],
    );
    let ctxs = ["good fine good fine", "bad poor bad poor"];
    // rate 0.5 → context_level_rate 0.75 → q = int(25.0) = 25 → thr between the two scores.
    let out = compress_prompt(&toy, &ctxs, &opts()).unwrap();
    assert_eq!(out.compressed_prompt_list.len(), 1);
    assert_eq!(
        out.origin_tokens,
        cl100k_count(ctxs[0]) + cl100k_count(ctxs[1])
    );
    // Within the kept context: good (0.9) > thr, fine (0.8) not.
    assert_eq!(out.compressed_prompt, "good good");
    // force_context_ids keeps the other one too (in original order).
    let o = Llmlingua2Options {
        force_context_ids: vec![1],
        return_word_label: true,
        ..opts()
    };
    let out = compress_prompt(&toy, &ctxs, &o).unwrap();
    assert_eq!(out.compressed_prompt_list.len(), 2);
    // Without the filter, both contexts are compressed independently.
    let o = Llmlingua2Options {
        use_context_level_filter: false,
        ..opts()
    };
    let out = compress_prompt(&toy, &ctxs, &o).unwrap();
    assert_eq!(out.compressed_prompt, "good good\n\n");
}

#[test]
fn context_scores_use_the_stale_first_token_probability() {
    // [BUG-COMPAT] "elephants" pieces ▁elep(0.1) hant(0.9) s(0.9): the un-forced list is
    // [0.1, 0.1, 0.1] → context score 0.1, not the mean 0.633.
    let toy = Toy::new(
        WordStyle::Metaspace,
        &[("elep", 0.1), ("hant", 0.9), ("s", 0.9), ("ok", 0.3)],
    );
    let ctxs = ["elephants", "ok"];
    let o = Llmlingua2Options {
        target_context: 1,
        use_token_level_filter: false,
        ..opts()
    };
    let out = compress_prompt(&toy, &ctxs, &o).unwrap();
    assert_eq!(out.compressed_prompt_list, strings(&["ok"]));
}

#[test]
fn wordpiece_merging_strips_every_leading_hash() {
    let toy = Toy::new(
        WordStyle::WordPiece,
        &[
            ("elep", 0.9),
            ("hant", 0.9),
            ("s", 0.9),
            ("a", 0.1),
            ("b", 0.1),
            (",", 0.1),
        ],
    );
    let out = compress_prompt(&toy, &["a elephants b, a"], &opts()).unwrap();
    assert_eq!(out.compressed_prompt, "elephants");
    let m = TokenMap {
        entries: Vec::new(),
        placeholders: HashSet::new(),
    };
    let ctx = MergeCtx {
        style: WordStyle::WordPiece,
        force_tokens: &[],
        map: &m,
        force_reserve_digit: false,
    };
    assert_eq!(ctx.pure("###x"), "x");
    assert!(!ctx.begins_word("##x"));
    assert!(ctx.begins_word("x"));
}

#[test]
fn metaspace_punctuation_rule_is_a_substring_test() {
    let m = TokenMap {
        entries: Vec::new(),
        placeholders: HashSet::new(),
    };
    let ctx = MergeCtx {
        style: WordStyle::Metaspace,
        force_tokens: &[],
        map: &m,
        force_reserve_digit: false,
    };
    assert!(ctx.begins_word("()"));
    assert!(ctx.begins_word("."));
    assert!(!ctx.begins_word(".."));
    assert!(!ctx.begins_word("),"));
    assert!(!ctx.begins_word("abc"));
    assert!(ctx.begins_word("\u{2581}abc"));
}

#[test]
fn too_many_force_tokens_is_an_error() {
    let toy = Toy::new(WordStyle::Metaspace, &[]);
    let o = Llmlingua2Options {
        force_tokens: (0..101).map(|i| format!("f{i}")).collect(),
        ..opts()
    };
    assert!(compress_prompt(&toy, &["x"], &o).is_err());
}

#[test]
fn empty_contexts_keep_their_separators() {
    let toy = Toy::new(WordStyle::Metaspace, &[("a", 0.9), ("b", 0.1)]);
    let o = Llmlingua2Options {
        use_context_level_filter: false,
        ..opts()
    };
    let out = compress_prompt(&toy, &["a b", "", "b a"], &o).unwrap();
    assert_eq!(out.compressed_prompt, "a\n\n\n\na");
}
