//! LLMLingua-2 prompt compression: a faithful port of `compress_prompt_llmlingua2` from the
//! reference Python package `llmlingua` 0.2.2 (spec §2), generic over any [`Scorer`].
//!
//! Steps: force tokens that the tokenizer splits into several pieces are replaced by `[NEWi]`
//! placeholders; each context is tokenised and cut into chunks of at most 511 tokens, preferably
//! after an end token; the scorer gives each token a keep probability; tokens are merged into
//! words; a token-weighted percentile threshold (cl100k counts) decides which words stay; kept
//! words are decoded with the tokenizer's decoder. With several contexts, an optional
//! context-level filter drops whole contexts first (§2.9).
//!
//! Places where the reference is buggy and we reproduce it anyway are marked `[BUG-COMPAT]`
//! and listed in `docs/parity.md`. Places where the reference raises an exception and we do
//! something graceful instead are marked `[DEVIATION]`.

pub mod numeric;
#[doc(hidden)]
#[cfg(feature = "test-support")]
pub mod replay;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::model::WorkCtx;
use crate::scorer::{ScoredChunk, Scorer, ScorerError, WordStyle};
use numeric::{Prob, fmt1, percentile, percentile_q, python_mean};

/// The reference's `max_seq_len`: chunks hold at most `MAX_SEQ_LEN - 2` tokens (+1, §2.4).
pub const MAX_SEQ_LEN: usize = 512;
/// How many `[NEWi]` placeholders the tokenizer carries (`max_force_token`).
pub const MAX_FORCE_TOKENS: usize = 100;
/// The reference's default `word_sep` for `fn_labeled_original_prompt`.
pub const WORD_SEP: &str = "\t\t|\t\t";
/// The reference's default `label_sep` for `fn_labeled_original_prompt`.
pub const LABEL_SEP: &str = " ";
/// Python's `string.punctuation`.
const PY_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The placeholder string for force token `i` (`[NEW0]` … `[NEW99]`).
pub fn placeholder(i: usize) -> String {
    format!("[NEW{i}]")
}

/// How a word's token probabilities are reduced to one word probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenToWord {
    /// Python `sum(p) / len(p)` (with NumPy's type promotion, see [`numeric::python_mean`]).
    #[default]
    Mean,
    /// The first token's probability.
    First,
}

/// Options of `compress_prompt`; `Default` gives the defaults seen through the reference's
/// public `PromptCompressor.compress_prompt` (spec §2.1), NumPy 2.x arithmetic.
#[derive(Debug, Clone)]
pub struct Llmlingua2Options {
    /// Fraction of tokens to keep.
    pub rate: f64,
    /// Token budget; overrides `rate` when > 0 (single stage) or >= 0 (context filter).
    pub target_token: i64,
    /// Drop whole contexts first (only with 2+ contexts). `true` through `compress_prompt`.
    pub use_context_level_filter: bool,
    pub use_token_level_filter: bool,
    pub target_context: i64,
    pub context_level_rate: f64,
    pub context_level_target_token: i64,
    /// Contexts the context filter always keeps (empty = Python `None`).
    pub force_context_ids: Vec<usize>,
    pub token_to_word: TokenToWord,
    /// Strings always kept (at most 100).
    pub force_tokens: Vec<String>,
    /// Words/tokens containing a decimal digit get probability 1.
    pub force_reserve_digit: bool,
    /// Suppress repeated force tokens with nothing kept in between.
    pub drop_consecutive: bool,
    /// Preferred chunk boundaries (exact token strings).
    pub chunk_end_tokens: Vec<String>,
    /// Fill [`Llmlingua2Output::fn_labeled_original_prompt`].
    pub return_word_label: bool,
    /// Reproduce NumPy 1.x arithmetic (float64 means, NumPy 1 percentile precision) — the era in
    /// which the reference repository's goldens were made. Default: NumPy 2.x (today's install).
    pub numpy1_percentile: bool,
    /// Deadline and cancellation of the call (passed to the scorer; checked between stages).
    pub work: WorkCtx,
}

impl Default for Llmlingua2Options {
    fn default() -> Self {
        Self {
            rate: 0.5,
            target_token: -1,
            use_context_level_filter: true,
            use_token_level_filter: true,
            target_context: -1,
            context_level_rate: 1.0,
            context_level_target_token: -1,
            force_context_ids: Vec::new(),
            token_to_word: TokenToWord::Mean,
            force_tokens: Vec::new(),
            force_reserve_digit: false,
            drop_consecutive: false,
            chunk_end_tokens: vec![".".to_string(), "\n".to_string()],
            return_word_label: false,
            numpy1_percentile: false,
            work: WorkCtx::none(),
        }
    }
}

/// The reference's result dictionary.
#[derive(Debug, Clone, PartialEq)]
pub struct Llmlingua2Output {
    /// Kept contexts' outputs joined by `"\n\n"`.
    pub compressed_prompt: String,
    pub compressed_prompt_list: Vec<String>,
    /// Σ cl100k tokens of the original contexts.
    pub origin_tokens: usize,
    /// Σ cl100k tokens of the returned contexts (separators not counted).
    pub compressed_tokens: usize,
    /// `"{origin/compressed:.1f}x"`.
    pub ratio: String,
    /// `"{compressed/origin*100:.1f}%"`.
    pub rate: String,
    /// `", Saving ${…:.1f} in GPT-4."`.
    pub saving: String,
    /// `word{LABEL_SEP}label` joined by [`WORD_SEP`], when requested.
    pub fn_labeled_original_prompt: Option<String>,
}

/// cl100k_base token count (`len(oai_tokenizer.encode(text))`).
///
/// [DEVIATION] tiktoken's `encode` raises on cl100k special-token strings such as
/// `<|endoftext|>`; we count them as ordinary text instead.
pub fn cl100k_count(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

struct Cl100kCache {
    map: HashMap<String, usize>,
}

impl Cl100kCache {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
        }
    }
    fn count(&mut self, text: &str) -> usize {
        if let Some(n) = self.map.get(text) {
            return *n;
        }
        let n = cl100k_count(text);
        self.map.insert(text.to_string(), n);
        n
    }
}

/// Force-token placeholders (`token_map` of the reference, insertion ordered).
struct TokenMap {
    /// `(original, placeholder)` in insertion order.
    entries: Vec<(String, String)>,
    placeholders: HashSet<String>,
}

impl TokenMap {
    fn build(scorer: &dyn Scorer, force_tokens: &[String]) -> Result<Self, ScorerError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, t) in force_tokens.iter().enumerate() {
            if scorer.tokenize(t)?.len() != 1 {
                // A Python dict: a repeated key keeps its first position, takes the new value.
                let ph = placeholder(i);
                match entries.iter_mut().find(|(k, _)| k == t) {
                    Some(e) => e.1 = ph,
                    None => entries.push((t.clone(), ph)),
                }
            }
        }
        let placeholders = entries.iter().map(|(_, p)| p.clone()).collect();
        Ok(Self {
            entries,
            placeholders,
        })
    }

    fn get(&self, original: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == original)
            .map(|(_, v)| v.as_str())
    }

    /// `context.replace(ori, new)` for each entry in order.
    fn substitute(&self, text: &str) -> String {
        let mut s = text.to_string();
        for (ori, ph) in &self.entries {
            // [DEVIATION] Python `s.replace("", ph)` would insert `ph` between every character.
            if !ori.is_empty() {
                s = s.replace(ori.as_str(), ph);
            }
        }
        s
    }

    /// `replace_added_token`: `token.replace(new, ori)` for each entry in order.
    fn restore(&self, text: &str) -> String {
        let mut s = text.to_string();
        for (ori, ph) in &self.entries {
            if s.contains(ph.as_str()) {
                s = s.replace(ph.as_str(), ori);
            }
        }
        s
    }
}

/// `__chunk_context`: cut a (placeholder-substituted) context into chunk strings.
fn chunk_context(
    scorer: &dyn Scorer,
    text: &str,
    chunk_end: &HashSet<String>,
) -> Result<Vec<String>, ScorerError> {
    let max_len = MAX_SEQ_LEN - 2;
    let tokens = scorer.tokenize(text)?;
    let n = tokens.len();
    let mut out = Vec::new();
    let mut st = 0;
    while st < n {
        if st + max_len > n - 1 {
            out.push(scorer.tokens_to_string(&tokens[st..n]));
            break;
        }
        let mut ed = st + max_len;
        // Scans positions ed, ed-1, …, st+1; without an end token the chunk has 511 tokens.
        for j in 0..(ed - st) {
            if chunk_end.contains(&tokens[ed - j]) {
                ed -= j;
                break;
            }
        }
        out.push(scorer.tokens_to_string(&tokens[st..=ed]));
        st = ed + 1;
    }
    Ok(out)
}

/// Words of one chunk after `__merge_token_to_word`.
struct ChunkWords {
    words: Vec<String>,
    /// Per word, per token probabilities with forcing applied.
    probs: Vec<Vec<Prob>>,
    /// Per word, "unforced" probabilities: [BUG-COMPAT] every entry is the word's FIRST token
    /// probability (the reference appends a stale variable for continuation tokens).
    probs_no_force: Vec<Vec<Prob>>,
}

static DIGIT_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\d").ok());

/// Python `re.search(r"\d", s)`: any Unicode decimal digit (category Nd).
fn has_digit(s: &str) -> bool {
    match DIGIT_RE.as_ref() {
        Some(re) => re.is_match(s),
        None => s.chars().any(|c| c.is_ascii_digit()),
    }
}

struct MergeCtx<'a> {
    style: WordStyle,
    force_tokens: &'a [String],
    map: &'a TokenMap,
    force_reserve_digit: bool,
}

impl MergeCtx<'_> {
    fn is_force(&self, s: &str) -> bool {
        self.force_tokens.iter().any(|f| f == s)
    }

    /// `get_pure_token`: XLM-R strips every leading `▁`; BERT strips every leading `#`
    /// (Python `lstrip("##")` strips characters, not the prefix).
    fn pure<'t>(&self, token: &'t str) -> &'t str {
        match self.style {
            WordStyle::Metaspace => token.trim_start_matches('\u{2581}'),
            WordStyle::WordPiece => token.trim_start_matches('#'),
        }
    }

    /// `is_begin_of_new_word`.
    fn begins_word(&self, token: &str) -> bool {
        match self.style {
            WordStyle::Metaspace => {
                // [BUG-COMPAT] `token in string.punctuation` is a substring test: "()" and ""
                // count, ".." does not.
                if PY_PUNCTUATION.contains(token)
                    || self.is_force(token)
                    || self.map.placeholders.contains(token)
                {
                    return true;
                }
                token.starts_with('\u{2581}')
            }
            WordStyle::WordPiece => {
                let pure = self.pure(token);
                if self.is_force(pure) || self.map.placeholders.contains(pure) {
                    return true;
                }
                !token.starts_with("##")
            }
        }
    }

    fn merge(&self, scorer: &dyn Scorer, chunk: &ScoredChunk) -> ChunkWords {
        let mut out = ChunkWords {
            words: Vec::new(),
            probs: Vec::new(),
            probs_no_force: Vec::new(),
        };
        let mut prob_no_force = Prob::F32(0.0);
        for (token, &p) in chunk.tokens.iter().zip(chunk.probs.iter()) {
            if scorer.is_special(token) {
                continue;
            }
            let raw = Prob::F32(p);
            // [DEVIATION] a continuation piece with no word before it raises IndexError in the
            // reference (unreachable for well-formed chunks); we start a word with it.
            if self.begins_word(token) || out.words.is_empty() {
                let pure = self.pure(token);
                prob_no_force = raw;
                let forced = self.is_force(pure) || self.map.placeholders.contains(pure);
                let prob = if forced { Prob::F64(1.0) } else { raw };
                let word = self.map.restore(token);
                let first = if self.force_reserve_digit && has_digit(&word) {
                    Prob::F64(1.0)
                } else {
                    prob
                };
                out.words.push(word);
                out.probs.push(vec![first]);
                out.probs_no_force.push(vec![prob_no_force]);
            } else {
                let pure = self.pure(token).to_string();
                let prob = if self.force_reserve_digit && has_digit(token) {
                    Prob::F64(1.0)
                } else {
                    raw
                };
                if let (Some(w), Some(ps), Some(nf)) = (
                    out.words.last_mut(),
                    out.probs.last_mut(),
                    out.probs_no_force.last_mut(),
                ) {
                    w.push_str(&pure);
                    ps.push(prob);
                    nf.push(prob_no_force);
                }
            }
        }
        out
    }
}

fn reduce_word_probs(lists: &[Vec<Prob>], mode: TokenToWord, numpy1: bool) -> Vec<Prob> {
    lists
        .iter()
        .map(|p| match mode {
            TokenToWord::Mean => python_mean(p, numpy1).unwrap_or(Prob::F64(0.0)),
            TokenToWord::First => p.first().copied().unwrap_or(Prob::F64(0.0)),
        })
        .collect()
}

fn strip_label_word(style: WordStyle, w: &str) -> String {
    match style {
        WordStyle::Metaspace => w.trim_start_matches('\u{2581}').to_string(),
        WordStyle::WordPiece => w.to_string(),
    }
}

/// Settings shared by every chunk of one call.
struct Selection<'a> {
    merge: MergeCtx<'a>,
    token_to_word: TokenToWord,
    drop_consecutive: bool,
    numpy1: bool,
    trace: Option<RefCell<Trace>>,
}

/// How one chunk's words were judged (diagnostics: near-tie analysis, debugging).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkTrace {
    /// Words as merged (XLM-R words keep their `▁`).
    pub words: Vec<String>,
    /// Final word probabilities (after forcing and drop_consecutive).
    pub probs: Vec<f64>,
    /// The token-weighted percentile threshold.
    pub threshold: f64,
    /// 1 = kept.
    pub labels: Vec<u8>,
}

/// Everything [`compress_prompt_traced`] observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Token-level decisions, one entry per scored chunk, in order.
    pub chunks: Vec<ChunkTrace>,
    /// Context-level filter: per-context scores and the threshold, when it ran.
    pub context_scores: Option<(Vec<f64>, f64)>,
}

/// Per-context result of `__compress`.
struct Compressed {
    texts: Vec<String>,
    words: Vec<Vec<String>>,
    labels: Vec<Vec<u8>>,
}

static LABEL_WORD_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // Python `\b\w+\b|[<>=/!@#$%^&*()?":{}|\\`~;_+-]`; with a greedy `\w+` the `\b`s are
    // implied. Python's `\w` = str.isalnum() or "_".
    Regex::new(r#"[\p{L}\p{N}_]+|[<>=/!@#$%^&*()?":{}|\\`~;_+\-]"#).ok()
});

fn split_string_to_words(s: &str) -> Vec<String> {
    match LABEL_WORD_RE.as_ref() {
        Some(re) => re.find_iter(s).map(|m| m.as_str().to_string()).collect(),
        None => Vec::new(),
    }
}

impl Selection<'_> {
    /// `__compress` with `reduce_rate <= 0`: placeholders restored, chunks concatenated.
    fn passthrough(&self, contexts: &[Vec<String>]) -> Compressed {
        let mut out = Compressed {
            texts: Vec::new(),
            words: Vec::new(),
            labels: Vec::new(),
        };
        for chunks in contexts {
            let mut text = String::new();
            let mut words = Vec::new();
            for chunk in chunks {
                // Here the reference restores with `chunk.replace(new, ori)` per entry: the same
                // as `restore`.
                let restored = self.merge.map.restore(chunk);
                words.extend(split_string_to_words(&restored));
                text.push_str(&restored);
            }
            out.labels.push(vec![1; words.len()]);
            out.words.push(words);
            out.texts.push(text);
        }
        out
    }

    /// `__compress` with `reduce_rate > 0` on already scored chunks (`scored` is the flat list
    /// of all chunks of `contexts`, in order).
    fn compress(
        &self,
        scorer: &dyn Scorer,
        contexts: &[Vec<String>],
        scored: &[&ScoredChunk],
        reduce_rate: f64,
    ) -> Compressed {
        let mut counts = Cl100kCache::new();
        let mut chunk_texts = Vec::with_capacity(scored.len());
        let mut chunk_words = Vec::with_capacity(scored.len());
        let mut chunk_labels = Vec::with_capacity(scored.len());
        for chunk in scored {
            let cw = self.merge.merge(scorer, chunk);
            let mut word_probs = reduce_word_probs(&cw.probs, self.token_to_word, self.numpy1);
            let force = self.merge.force_tokens;
            if self.drop_consecutive {
                // Plain per-word list, q = int(100 * reduce_rate) (no +1 here).
                let t0 = percentile(&word_probs, percentile_q(100.0 * reduce_rate), self.numpy1);
                let mut between = false;
                let mut prev: Option<&str> = None;
                for (i, word) in cw.words.iter().enumerate() {
                    if force.iter().any(|f| f == word) {
                        if between {
                            between = false;
                        } else if prev == Some(word.as_str()) {
                            word_probs[i] = Prob::F64(0.0);
                        }
                        prev = Some(word.as_str());
                    } else if let Some(t0) = t0 {
                        between |= word_probs[i].value() > t0;
                    }
                }
            }
            let mut weighted = Vec::new();
            for (word, &p) in cw.words.iter().zip(word_probs.iter()) {
                let k = counts.count(word);
                weighted.extend(std::iter::repeat_n(p, k));
            }
            // [DEVIATION] an empty list raises IndexError in the reference; we keep nothing.
            let thr = percentile(
                &weighted,
                percentile_q(100.0 * reduce_rate + 1.0),
                self.numpy1,
            )
            .unwrap_or(f64::INFINITY);
            let mut keep: Vec<String> = Vec::new();
            let mut labels = Vec::with_capacity(cw.words.len());
            for (word, p) in cw.words.iter().zip(word_probs.iter()) {
                let p = p.value();
                if p > thr || (thr == 1.0 && p == thr) {
                    if self.drop_consecutive
                        && force.iter().any(|f| f == word)
                        && keep.last() == Some(word)
                    {
                        labels.push(0);
                    } else {
                        keep.push(word.clone());
                        labels.push(1);
                    }
                } else {
                    labels.push(0);
                }
            }
            if let Some(t) = &self.trace {
                t.borrow_mut().chunks.push(ChunkTrace {
                    words: cw.words.clone(),
                    probs: word_probs.iter().map(|p| p.value()).collect(),
                    threshold: thr,
                    labels: labels.clone(),
                });
            }
            chunk_texts.push(scorer.tokens_to_string(&keep));
            let style = self.merge.style;
            chunk_words.push(
                cw.words
                    .iter()
                    .map(|w| strip_label_word(style, w))
                    .collect::<Vec<_>>(),
            );
            chunk_labels.push(labels);
        }
        let mut out = Compressed {
            texts: Vec::new(),
            words: Vec::new(),
            labels: Vec::new(),
        };
        let mut idx = 0;
        for chunks in contexts {
            let n = chunks.len();
            let range = idx..(idx + n).min(chunk_texts.len());
            out.texts.push(chunk_texts[range.clone()].concat());
            out.words.push(chunk_words[range.clone()].concat());
            out.labels.push(chunk_labels[range].concat());
            idx += n;
        }
        out
    }
}

fn score_all(
    scorer: &dyn Scorer,
    chunks: &[String],
    ctx: &WorkCtx,
) -> Result<Vec<ScoredChunk>, ScorerError> {
    let scored = scorer.score_chunks(chunks, ctx)?;
    ctx.check()?;
    if scored.len() != chunks.len() {
        return Err(ScorerError::Model(format!(
            "scorer returned {} chunks for {}",
            scored.len(),
            chunks.len()
        )));
    }
    if let Some(bad) = scored.iter().find(|c| c.tokens.len() != c.probs.len()) {
        return Err(ScorerError::Model(format!(
            "scorer returned {} tokens but {} probabilities",
            bad.tokens.len(),
            bad.probs.len()
        )));
    }
    Ok(scored)
}

fn finish(texts: Vec<String>, origin_tokens: usize, labels: Option<String>) -> Llmlingua2Output {
    let compressed_tokens: usize = texts.iter().map(|t| cl100k_count(t)).sum();
    let saving = (origin_tokens as f64 - compressed_tokens as f64) * 0.06 / 1000.0;
    let ratio = if compressed_tokens == 0 {
        1.0
    } else {
        origin_tokens as f64 / compressed_tokens as f64
    };
    Llmlingua2Output {
        compressed_prompt: texts.join("\n\n"),
        compressed_prompt_list: texts,
        origin_tokens,
        compressed_tokens,
        ratio: format!("{}x", fmt1(ratio)),
        rate: format!("{}%", fmt1(1.0 / ratio * 100.0)),
        saving: format!(", Saving ${} in GPT-4.", fmt1(saving)),
        fn_labeled_original_prompt: labels,
    }
}

fn label_string(words: &[String], labels: &[u8]) -> String {
    words
        .iter()
        .zip(labels.iter())
        .map(|(w, l)| format!("{w}{LABEL_SEP}{l}"))
        .collect::<Vec<_>>()
        .join(WORD_SEP)
}

/// `PromptCompressor.compress_prompt(context, …)` with `use_llmlingua2=True` (spec §2).
///
/// Errors: the scorer's errors, and more than [`MAX_FORCE_TOKENS`] force tokens (an
/// `AssertionError` in the reference, reported as [`ScorerError::Tokenizer`] because only 100
/// placeholders exist).
pub fn compress_prompt(
    scorer: &dyn Scorer,
    contexts: &[&str],
    opts: &Llmlingua2Options,
) -> Result<Llmlingua2Output, ScorerError> {
    compress_impl(scorer, contexts, opts, false).map(|(out, _)| out)
}

/// [`compress_prompt`] that also returns how every word was judged.
#[doc(hidden)]
pub fn compress_prompt_traced(
    scorer: &dyn Scorer,
    contexts: &[&str],
    opts: &Llmlingua2Options,
) -> Result<(Llmlingua2Output, Trace), ScorerError> {
    compress_impl(scorer, contexts, opts, true)
}

fn compress_impl(
    scorer: &dyn Scorer,
    contexts: &[&str],
    opts: &Llmlingua2Options,
    trace: bool,
) -> Result<(Llmlingua2Output, Trace), ScorerError> {
    if opts.force_tokens.len() > MAX_FORCE_TOKENS {
        return Err(ScorerError::Tokenizer(format!(
            "at most {MAX_FORCE_TOKENS} force tokens are supported, got {}",
            opts.force_tokens.len()
        )));
    }
    let map = TokenMap::build(scorer, &opts.force_tokens)?;
    let mut chunk_end: HashSet<String> = opts.chunk_end_tokens.iter().cloned().collect();
    for c in &opts.chunk_end_tokens {
        if let Some(ph) = map.get(c) {
            chunk_end.insert(ph.to_string());
        }
    }

    let mut n_original = 0usize;
    let mut chunked: Vec<Vec<String>> = Vec::with_capacity(contexts.len());
    for c in contexts {
        opts.work.check()?;
        n_original += cl100k_count(c);
        let substituted = map.substitute(c);
        chunked.push(chunk_context(scorer, &substituted, &chunk_end)?);
    }

    let numpy1 = opts.numpy1_percentile;
    let sel = Selection {
        merge: MergeCtx {
            style: scorer.word_style(),
            force_tokens: &opts.force_tokens,
            map: &map,
            force_reserve_digit: opts.force_reserve_digit,
        },
        token_to_word: opts.token_to_word,
        drop_consecutive: opts.drop_consecutive,
        numpy1,
        trace: trace.then(|| RefCell::new(Trace::default())),
    };

    if opts.use_context_level_filter && contexts.len() > 1 {
        let (out, _) =
            compress_with_context_filter(scorer, &sel, contexts, chunked, n_original, opts)?;
        let trace = sel.trace.map(RefCell::into_inner).unwrap_or_default();
        return Ok((out, trace));
    }

    let mut rate = opts.rate;
    if opts.target_token > 0 {
        // [DEVIATION] all-empty input raises ZeroDivisionError in the reference; we keep all.
        rate = if n_original == 0 {
            1.0
        } else {
            f64::min(opts.target_token as f64 / n_original as f64, 1.0)
        };
    }
    let reduce_rate = if opts.use_token_level_filter {
        f64::max(0.0, 1.0 - rate)
    } else {
        0.0
    };
    let res = if reduce_rate <= 0.0 {
        sel.passthrough(&chunked)
    } else {
        let flat: Vec<String> = chunked.iter().flatten().cloned().collect();
        let scored = score_all(scorer, &flat, &opts.work)?;
        let refs: Vec<&ScoredChunk> = scored.iter().collect();
        sel.compress(scorer, &chunked, &refs, reduce_rate)
    };
    let labels = opts.return_word_label.then(|| {
        label_string(
            &res.words.concat(),
            &res.labels.iter().flatten().copied().collect::<Vec<_>>(),
        )
    });
    let trace = sel.trace.map(RefCell::into_inner).unwrap_or_default();
    Ok((finish(res.texts, n_original, labels), trace))
}

fn compress_with_context_filter(
    scorer: &dyn Scorer,
    sel: &Selection<'_>,
    contexts: &[&str],
    chunked: Vec<Vec<String>>,
    n_original: usize,
    opts: &Llmlingua2Options,
) -> Result<(Llmlingua2Output, Trace), ScorerError> {
    let numpy1 = sel.numpy1;
    let mut rate = opts.rate;
    let mut context_level_rate = opts.context_level_rate;
    let mut context_level_target_token = opts.context_level_target_token;
    if opts.target_context <= 0 && context_level_rate >= 1.0 && context_level_target_token <= 0 {
        if opts.target_token < 0 && rate < 1.0 {
            context_level_rate = if opts.use_token_level_filter {
                (rate + 1.0) / 2.0
            } else {
                rate
            };
        }
        if opts.target_token >= 0 {
            context_level_target_token = if opts.use_token_level_filter {
                opts.target_token.saturating_mul(2)
            } else {
                opts.target_token
            };
        }
    }
    if opts.target_context >= 0 {
        context_level_rate = f64::min(opts.target_context as f64 / contexts.len() as f64, 1.0);
    }
    if context_level_target_token >= 0 {
        // [DEVIATION] ZeroDivisionError in the reference when every context is empty.
        context_level_rate = if n_original == 0 {
            1.0
        } else {
            f64::min(context_level_target_token as f64 / n_original as f64, 1.0)
        };
    }

    // `__get_context_prob`: one pass over all chunks of all contexts.
    let flat: Vec<String> = chunked.iter().flatten().cloned().collect();
    let scored = score_all(scorer, &flat, &opts.work)?;
    let mut context_scores: Vec<Prob> = Vec::with_capacity(contexts.len());
    let mut context_words: Vec<Vec<String>> = Vec::with_capacity(contexts.len());
    let mut idx = 0;
    for chunks in &chunked {
        let mut probs: Vec<Prob> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        for chunk in &scored[idx..idx + chunks.len()] {
            let cw = sel.merge.merge(scorer, chunk);
            probs.extend(reduce_word_probs(
                &cw.probs_no_force,
                sel.token_to_word,
                numpy1,
            ));
            words.extend(
                cw.words
                    .iter()
                    .map(|w| strip_label_word(sel.merge.style, w)),
            );
        }
        idx += chunks.len();
        // `sum(probs) / len(probs)`: the same promotion rules as a word mean.
        // [DEVIATION] ZeroDivisionError in the reference for a context without words; we score
        // it 0.0.
        context_scores.push(python_mean(&probs, numpy1).unwrap_or(Prob::F32(0.0)));
        context_words.push(words);
    }
    let thr = percentile(
        &context_scores,
        percentile_q(100.0 * (1.0 - context_level_rate)),
        numpy1,
    )
    .unwrap_or(f64::NEG_INFINITY);
    if let Some(t) = &sel.trace {
        t.borrow_mut().context_scores =
            Some((context_scores.iter().map(|p| p.value()).collect(), thr));
    }
    let mut kept_idx = Vec::new();
    for (i, s) in context_scores.iter().enumerate() {
        if s.value() >= thr || opts.force_context_ids.contains(&i) {
            kept_idx.push(i);
        }
    }
    let reserved: Vec<Vec<String>> = kept_idx.iter().map(|&i| chunked[i].clone()).collect();
    let n_reserved: usize = reserved.iter().flatten().map(|c| cl100k_count(c)).sum();
    if opts.target_token >= 0 {
        // [DEVIATION] ZeroDivisionError in the reference when nothing is reserved.
        rate = if n_reserved == 0 {
            1.0
        } else {
            f64::min(opts.target_token as f64 / n_reserved as f64, 1.0)
        };
    }
    let reduce_rate = if opts.use_token_level_filter {
        f64::max(0.0, 1.0 - rate)
    } else {
        0.0
    };
    let res = if reduce_rate <= 0.0 {
        sel.passthrough(&reserved)
    } else {
        // The reference runs the model again on the kept chunks; per-chunk results are
        // independent of batching, so we reuse the first pass.
        let mut starts = Vec::with_capacity(chunked.len());
        let mut acc = 0;
        for chunks in &chunked {
            starts.push(acc);
            acc += chunks.len();
        }
        let refs: Vec<&ScoredChunk> = kept_idx
            .iter()
            .flat_map(|&i| scored[starts[i]..starts[i] + chunked[i].len()].iter())
            .collect();
        sel.compress(scorer, &reserved, &refs, reduce_rate)
    };
    let labels = opts.return_word_label.then(|| {
        let mut words = Vec::new();
        let mut labels = Vec::new();
        let mut j = 0;
        for (i, cw) in context_words.iter().enumerate() {
            if kept_idx.contains(&i) {
                words.extend(res.words[j].iter().cloned());
                labels.extend(res.labels[j].iter().copied());
                j += 1;
            } else {
                words.extend(cw.iter().cloned());
                labels.extend(std::iter::repeat_n(0u8, cw.len()));
            }
        }
        label_string(&words, &labels)
    });
    Ok((finish(res.texts, n_original, labels), Trace::default()))
}

#[cfg(test)]
mod tests;
