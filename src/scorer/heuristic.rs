//! The embedded scorer (`scorer = "heuristic"`): no model, no download.
//!
//! Each word gets a keep probability from its estimated self-information, `I(w) = -log2 p(w)`,
//! with the unigram probability `p(w)` estimated from the word's cl100k BPE merge ranks (a
//! Zipf estimate: BPE merges are learnt in order of pair frequency, so a low token id means a
//! frequent string, `p(rank) ≈ 1 / (rank · H)`). Words repeated within the text are discounted,
//! digits, negations, newlines, list markers at the start of a line and likely names (capitalised
//! mid-sentence, acronyms) are kept.
//! The probabilities then go through the same word-level percentile selection as LLMLingua-2.
//!
//! Tokenisation is word-level and Metaspace-style: a token that follows whitespace starts with
//! `▁`; punctuation and symbols are one token per character; `[NEW0]`…`[NEW99]` placeholders are
//! atomic; a newline run (with the indentation after it) is one `▁`-prefixed token, and the
//! decoder keeps it verbatim, so line structure survives compression.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::{ScoredChunk, Scorer, ScorerError, WordStyle, WorkCtx};
use crate::lexicon;
use crate::tokens::TokenizerKind;

/// Metaspace marker.
const META: char = '\u{2581}';

/// Bits added per BPE piece (log2 of the Zipf normaliser H ≈ 12 for a 100k vocabulary).
const ZIPF_BITS: f64 = 3.6;
/// Rank assumed for raw byte pieces (ids < 256), which only appear for rare strings.
const BYTE_RANK: f64 = 50_000.0;
/// Bonus for likely names and acronyms.
const NAME_BITS: f64 = 6.0;
/// Discount factor per earlier occurrence of the same word.
const REPEAT_DISCOUNT: f64 = 0.7;
/// Maps information to a probability: `p = I / (I + HALF_BITS)`.
const HALF_BITS: f64 = 12.0;

/// Process-wide memo of word information (Zipf-distributed words make it hit almost always).
static WORD_BITS: LazyLock<moka::sync::Cache<String, f64>> =
    LazyLock::new(|| moka::sync::Cache::new(50_000));

/// Information of a lower-cased word from its cl100k pieces (see the module docs).
fn word_bits(lower: &str) -> f64 {
    if let Some(b) = WORD_BITS.get(lower) {
        return b;
    }
    let ids = TokenizerKind::Cl100kBase
        .bpe()
        .encode_ordinary(&format!(" {lower}"));
    let bits = ids
        .iter()
        .map(|&id| {
            let rank = if id < 256 { BYTE_RANK } else { f64::from(id) };
            rank.log2() + ZIPF_BITS
        })
        .sum::<f64>();
    WORD_BITS.insert(lower.to_string(), bits);
    bits
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"^\[NEW\d{1,2}\]").expect("static regex")
});

/// Number words: kept like digits.
const NUMBER_WORDS: &[&str] = &[
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "million",
    "billion", "half", "twice", "once", "first", "second", "third", "last",
];

/// Frequent words that carry a condition, quantity or comparison; BPE ranks call them cheap,
/// so they get the same bonus as names.
const LOGIC_WORDS: &[&str] = &[
    "more", "less", "fewer", "most", "least", "than", "only", "all", "every", "each", "any",
    "must", "before", "after", "until", "if", "unless", "or", "but", "always", "because",
];

/// The embedded heuristic scorer.
#[derive(Debug, Clone, Default)]
pub struct HeuristicScorer;

impl HeuristicScorer {
    pub const ID: &'static str = "heuristic/v1";

    pub fn new() -> Self {
        Self
    }

    /// Word-level Metaspace tokenisation (see the module docs).
    pub fn tokenize_str(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut space = true; // Metaspace "prepend always"
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < text.len() {
            let rest = &text[i..];
            let Some(c) = rest.chars().next() else { break };
            if c == '\n' || c == '\r' {
                // newline run plus the indentation that follows it
                let run_end = rest
                    .char_indices()
                    .find(|(_, ch)| !ch.is_whitespace())
                    .map_or(rest.len(), |(k, _)| k);
                let run = &rest[..run_end];
                // the last newline ends the line structure; whitespace after it is indentation
                let last_nl = run.rfind('\n').map_or(run.len(), |k| k + 1);
                let lines = run[..last_nl].replace([' ', '\t'], "");
                let indent = if run_end < rest.len() {
                    &run[last_nl..]
                } else {
                    ""
                };
                out.push(format!("{META}{lines}{indent}"));
                space = true;
                i += run_end;
                continue;
            }
            if c.is_whitespace() {
                space = true;
                i += c.len_utf8();
                continue;
            }
            let prefix = if space {
                META.to_string()
            } else {
                String::new()
            };
            space = false;
            if c == '['
                && bytes.get(i + 1) == Some(&b'N')
                && let Some(m) = PLACEHOLDER.find(rest)
            {
                out.push(format!("{prefix}{}", m.as_str()));
                i += m.end();
                continue;
            }
            if is_cjk(c) {
                out.push(format!("{META}{c}"));
                i += c.len_utf8();
                continue;
            }
            if c.is_alphanumeric() || c == '_' {
                let mut end = 0;
                let mut chars = rest.char_indices().peekable();
                while let Some((k, ch)) = chars.next() {
                    let word_char = (ch.is_alphanumeric() || ch == '_') && !is_cjk(ch);
                    let apostrophe = (ch == '\'' || ch == '\u{2019}')
                        && end == k
                        && chars
                            .peek()
                            .is_some_and(|(_, n)| n.is_alphanumeric() && !is_cjk(*n));
                    if word_char || apostrophe {
                        end = k + ch.len_utf8();
                    } else {
                        break;
                    }
                }
                out.push(format!("{prefix}{}", &rest[..end]));
                i += end;
                continue;
            }
            out.push(format!("{prefix}{c}"));
            i += c.len_utf8();
        }
        out
    }

    /// The decoder: `▁` becomes one space, except at the start, after whitespace (newline
    /// tokens) and between two CJK characters.
    pub fn detokenize(tokens: &[String]) -> String {
        let mut out = String::new();
        for t in tokens {
            match t.strip_prefix(META) {
                Some(rest) => {
                    let prev = out.chars().last();
                    let next = rest.chars().next();
                    let glue = match (prev, next) {
                        (None, _) => true,
                        (Some(p), _) if p.is_whitespace() => true,
                        (_, Some(n)) if n == '\n' || n == '\r' => true,
                        (Some(p), Some(n)) => is_cjk(p) && is_cjk(n),
                        (Some(_), None) => false,
                    };
                    if !glue {
                        out.push(' ');
                    }
                    out.push_str(rest);
                }
                None => out.push_str(t),
            }
        }
        out
    }

    /// Keep probabilities for the tokens of a sequence of chunks (one text), in order.
    pub fn score_tokens(chunks: &[Vec<String>]) -> Vec<Vec<f32>> {
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut out = Vec::with_capacity(chunks.len());
        for tokens in chunks {
            let mut probs = Vec::with_capacity(tokens.len());
            let mut sentence_start = true;
            let mut line_start = true;
            for t in tokens {
                let pure = t.trim_start_matches(META);
                let first = pure.chars().next();
                let at_line_start = std::mem::replace(&mut line_start, false);
                let p: f64 = if pure.is_empty() || pure.starts_with(['\n', '\r']) {
                    sentence_start = true;
                    line_start = true;
                    1.0
                } else if at_line_start && first.is_some_and(|c| !c.is_alphanumeric()) {
                    // list markers and headings ("-", "*", "#", ">") keep the layout readable
                    1.0
                } else if PLACEHOLDER.is_match(pure) || pure == crate::tokens::SPAN_MARKER {
                    1.0
                } else if pure.chars().any(|c| c.is_numeric()) {
                    sentence_start = false;
                    1.0
                } else {
                    let lower = pure.to_lowercase();
                    let is_word = first.is_some_and(char::is_alphanumeric);
                    let key = lower.replace('\u{2019}', "'");
                    if is_word
                        && (lexicon::is_negation(&key) || NUMBER_WORDS.contains(&key.as_str()))
                    {
                        sentence_start = false;
                        1.0
                    } else {
                        let mut bits = word_bits(&lower);
                        if is_word {
                            let upper_first = first.is_some_and(char::is_uppercase);
                            let acronym = pure.chars().filter(|c| c.is_uppercase()).count() >= 2;
                            if acronym
                                || (upper_first && !sentence_start)
                                || LOGIC_WORDS.contains(&lower.as_str())
                            {
                                bits += NAME_BITS;
                            }
                            let n = seen.entry(lower).or_insert(0);
                            bits *= REPEAT_DISCOUNT.powi(*n as i32);
                            *n += 1;
                        }
                        sentence_start = matches!(pure, "." | "!" | "?" | ":");
                        (bits / (bits + HALF_BITS)).clamp(0.001, 0.999)
                    }
                };
                probs.push(p as f32);
            }
            out.push(probs);
        }
        out
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // Extensions B..
}

impl Scorer for HeuristicScorer {
    fn id(&self) -> &str {
        Self::ID
    }

    fn word_style(&self) -> WordStyle {
        WordStyle::Metaspace
    }

    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        Ok(Self::tokenize_str(text))
    }

    fn tokens_to_string(&self, tokens: &[String]) -> String {
        Self::detokenize(tokens)
    }

    fn is_special(&self, _token: &str) -> bool {
        false
    }

    fn score_chunks(
        &self,
        chunks: &[String],
        ctx: &WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError> {
        let mut tokens: Vec<Vec<String>> = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            ctx.check_every(i, 16)?;
            tokens.push(Self::tokenize_str(c));
        }
        let probs = Self::score_tokens(&tokens);
        Ok(tokens
            .into_iter()
            .zip(probs)
            .map(|(tokens, probs)| ScoredChunk { tokens, probs })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        HeuristicScorer::tokenize_str(s)
    }

    #[test]
    fn metaspace_tokens() {
        assert_eq!(
            toks("Hello, world. It's [NEW3]x"),
            ["▁Hello", ",", "▁world", ".", "▁It's", "▁[NEW3]", "x"]
        );
        assert_eq!(toks("\n"), ["▁\n"]);
        assert_eq!(toks("a\n\n  b"), ["▁a", "▁\n\n  ", "▁b"]);
        assert_eq!(toks("中文ok"), ["▁中", "▁文", "ok"]);
    }

    #[test]
    fn decode_roundtrips_normalised_text() {
        for s in [
            "Hello, world. It's fine!",
            "line one\n\n  - item two\n- item three",
            "中文 and (parens)",
            "[NEW0] after",
        ] {
            let d = HeuristicScorer::detokenize(&toks(s));
            // decoding is idempotent under re-tokenisation
            assert_eq!(HeuristicScorer::detokenize(&toks(&d)), d, "{s}");
        }
        assert_eq!(
            HeuristicScorer::detokenize(&toks("line one\n\n  - item")),
            "line one\n\n  - item"
        );
        assert_eq!(HeuristicScorer::detokenize(&toks("a   b\tc")), "a b c");
    }

    #[test]
    fn information_orders_words() {
        let t = toks("the cat sat on the mat with John not 42 the");
        let p = HeuristicScorer::score_tokens(std::slice::from_ref(&t)).remove(0);
        let get = |w: &str| p[t.iter().position(|x| x == w).unwrap()];
        assert!(get("▁cat") > get("▁the"));
        assert!(get("▁mat") > get("▁on"));
        assert_eq!(get("▁not"), 1.0);
        assert_eq!(get("▁42"), 1.0);
        assert!(get("▁John") > get("▁cat"));
        // repeated "the" is discounted
        assert!(p[10] < p[0]);
        assert!(p.iter().all(|x| *x > 0.0 && *x <= 1.0));
    }

    #[test]
    fn deterministic() {
        let s = HeuristicScorer::new();
        let chunks = vec!["Some text. Another sentence here.".to_string()];
        assert_eq!(
            s.score_chunks(&chunks, &WorkCtx::none()).unwrap(),
            s.score_chunks(&chunks, &WorkCtx::none()).unwrap()
        );
    }
}
