//! The policy's meaning-keeping selection ([`MeaningCompressor`]), for every scorer.
//!
//! 1. The text is cut into surface words ([`super::units::words`]).
//! 2. The scorer's token probabilities are mapped onto the words: tokens are aligned to byte
//!    offsets of the original text (by matching each token's text, with a search ahead and a
//!    one-character step as fallbacks for normalised or unknown tokens), and a word's
//!    probability is the mean over its tokens that hold a letter or digit (all its tokens when
//!    none does), as LLMLingua-2's `token_to_word = "mean"`. Texts are scored in windows of at
//!    most [`WINDOW_TOKENS`] scorer tokens cut at word (preferably sentence or line) ends.
//! 3. Words are grouped into units ([`super::units::units`]); forced units (spans, force
//!    tokens, must-keep matches, numbers and negations under the rules) are always kept.
//! 4. The remaining units are kept, preferred ones (content words of a clause that holds a
//!    forced unit) first, then by decreasing probability (a unit scores its best word; ties go
//!    to the earlier unit), until the kept words hold `rate` of the text's cl100k tokens.
//!    When the forced units alone exceed that, they are all kept and the output says so.
//! 5. The output is rebuilt from the original text: kept words in order, the original
//!    separator between adjacent kept words, a line break (with the next line's indentation)
//!    where the removed stretch had one, otherwise one space. It is always the input with whole
//!    words deleted.
//!
//! The reference-parity path (`compress` without `--role`) does not come here: it runs
//! [`super::llmlingua2::compress_prompt`] unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use super::compressor::{Budget, CompressError, CompressOutput, Compressor, OverScorer};
use super::llmlingua2::cl100k_count;
use super::spans::SPAN_MARKER;
use super::units::{Word, units_paced, words_paced};
use crate::model::WorkCtx;
use crate::model::{Interrupted, Pace};
use crate::scorer::{Scorer, ScorerError, WordStyle};

/// Scorer tokens per scoring window (the encoders take 512 with their two special tokens; a
/// window's text re-tokenised on its own may differ slightly at the edges, hence the margin).
pub const WINDOW_TOKENS: usize = 500;

/// How far (bytes) the alignment searches ahead for a token that does not match in place.
const SEARCH_AHEAD: usize = 64;

/// Loop iterations (characters, words, tokens) between two checks of the work context.
const CHECK_EVERY: usize = 1024;

/// The meaning-keeping selection over any [`Scorer`] (see the module docs).
#[derive(Debug)]
pub struct MeaningCompressor {
    over: OverScorer,
}

impl MeaningCompressor {
    pub fn new(scorer: Arc<dyn Scorer>) -> Self {
        Self {
            over: OverScorer::new("meaning-select/v1", scorer),
        }
    }

    pub fn scorer(&self) -> &Arc<dyn Scorer> {
        self.over.scorer()
    }
}

impl Compressor for MeaningCompressor {
    fn id(&self) -> &str {
        self.over.id()
    }

    fn compress(
        &self,
        text: &str,
        budget: &Budget,
        ctx: &WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        budget.check_rate()?;
        let s = select(self.over.scorer().as_ref(), text, budget, ctx)?;
        Ok(CompressOutput {
            origin_tokens: cl100k_count(text),
            compressed_tokens: cl100k_count(&s.text),
            text: s.text,
            budget_exceeded_by_units: s.budget_exceeded_by_units,
        })
    }
}

/// What [`select`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub text: String,
    pub words: Vec<Word>,
    /// Per word: kept.
    pub kept: Vec<bool>,
    /// Per word: the keep probability mapped from the scorer.
    pub probs: Vec<f64>,
    /// The forced units alone held more tokens than the budget allows (all were kept).
    pub budget_exceeded_by_units: bool,
}

/// Runs the selection on `text` (see the module docs).
pub fn select(
    scorer: &dyn Scorer,
    text: &str,
    budget: &Budget,
    ctx: &WorkCtx,
) -> Result<Selection, ScorerError> {
    select_paced(scorer, text, budget, ctx, &mut ctx.pace(CHECK_EVERY))
}

/// [`select`] with the pace its loops step (one per character, word or token): a long text
/// stops within [`CHECK_EVERY`] steps of its deadline, in whichever phase it is.
fn select_paced(
    scorer: &dyn Scorer,
    text: &str,
    budget: &Budget,
    ctx: &WorkCtx,
    pace: &mut Pace<'_>,
) -> Result<Selection, ScorerError> {
    let words = words_paced(text, pace)?;
    if words.is_empty() {
        return Ok(Selection {
            text: text.to_string(),
            words,
            kept: Vec::new(),
            probs: Vec::new(),
            budget_exceeded_by_units: false,
        });
    }
    let probs = word_probs(scorer, text, &words, ctx, pace)?;
    ctx.check()?;
    let forced = forced_words(text, &words, budget, pace)?;
    let units = units_paced(text, &words, &budget.keep, &forced, pace)?;

    let mut counts: HashMap<&str, usize> = HashMap::new();
    let tokens: Vec<usize> = words
        .iter()
        .map(|w| {
            pace.step()?;
            let s = &text[w.range.clone()];
            Ok(*counts.entry(s).or_insert_with(|| cl100k_count(s)))
        })
        .collect::<Result<_, Interrupted>>()?;
    let total: usize = tokens.iter().sum();
    let target = match budget.target_tokens {
        Some(t) => (t as f64).min(total as f64),
        None => budget.rate.min(1.0) * total as f64,
    };
    let unit_tokens = |u: &super::units::Unit| tokens[u.words.clone()].iter().sum::<usize>();

    let mut kept = vec![false; words.len()];
    let mut kept_tokens = 0usize;
    for u in units.iter().filter(|u| u.forced) {
        kept[u.words.clone()].fill(true);
        kept_tokens += unit_tokens(u);
    }
    let budget_exceeded_by_units = kept_tokens as f64 > target.ceil();
    let mut rest: Vec<(bool, f64, usize)> = units
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.forced)
        .map(|(k, u)| {
            let best = probs[u.words.clone()]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            (u.preferred, best, k)
        })
        .collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    for (_, _, k) in rest {
        if kept_tokens as f64 >= target {
            break;
        }
        pace.step()?;
        let u = &units[k];
        kept[u.words.clone()].fill(true);
        kept_tokens += unit_tokens(u);
    }
    drop_lone_markers(text, &words, &units, &mut kept);
    let text = rebuild(text, &words, &kept);
    Ok(Selection {
        text,
        words,
        kept,
        probs,
        budget_exceeded_by_units,
    })
}

/// Words that must stay: protected-span markers, words overlapping a force token (whitespace
/// force tokens are left to the line rules), and words with a digit under
/// `force_reserve_digit`.
fn forced_words(
    text: &str,
    words: &[Word],
    budget: &Budget,
    pace: &mut Pace<'_>,
) -> Result<Vec<bool>, Interrupted> {
    let mut forced = Vec::with_capacity(words.len());
    for w in words {
        pace.step()?;
        let s = &text[w.range.clone()];
        forced.push(
            s.contains(SPAN_MARKER)
                || (budget.force_reserve_digit && s.chars().any(|c| c.is_ascii_digit())),
        );
    }
    for t in &budget.force_tokens {
        if t.trim().is_empty() || t == SPAN_MARKER {
            continue;
        }
        for (at, m) in text.match_indices(t.as_str()) {
            pace.step()?;
            // the words overlapping at..end (words are in order and disjoint)
            let end = at + m.len();
            let mut i = words.partition_point(|w| w.range.end <= at);
            while let Some(w) = words.get(i).filter(|w| w.range.start < end) {
                debug_assert!(w.range.end > at);
                forced[i] = true;
                i += 1;
            }
        }
    }
    Ok(forced)
}

/// A kept list marker or heading mark (a word with no letter or digit at the start of a line)
/// whose line keeps nothing else is dropped, unless forced.
fn drop_lone_markers(text: &str, words: &[Word], units: &[super::units::Unit], kept: &mut [bool]) {
    let forced: Vec<bool> = {
        let mut f = vec![false; words.len()];
        for u in units.iter().filter(|u| u.forced) {
            f[u.words.clone()].fill(true);
        }
        f
    };
    let mut line_start = 0;
    for i in 0..=words.len() {
        let new_line = i == words.len()
            || (i > 0 && text[words[i - 1].range.end..words[i].range.start].contains('\n'));
        if !new_line || i == line_start {
            continue;
        }
        let line = line_start..i;
        let content = line.clone().any(|k| {
            kept[k]
                && text[words[k].range.clone()]
                    .chars()
                    .any(char::is_alphanumeric)
        });
        if !content {
            for k in line {
                if !forced[k] {
                    kept[k] = false;
                }
            }
        }
        line_start = i;
    }
}

/// The output: kept words with the original separators (see the module docs).
pub fn rebuild(text: &str, words: &[Word], kept: &[bool]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev: Option<usize> = None;
    for (i, w) in words.iter().enumerate() {
        if !kept.get(i).copied().unwrap_or(false) {
            continue;
        }
        if let Some(p) = prev {
            let gap = &text[words[p].range.end..w.range.start];
            let before = &text[words[i - 1].range.end..w.range.start];
            if p + 1 == i || before.contains('\n') {
                out.push_str(before);
            } else if let Some(k) = gap.rfind('\n') {
                // the last line break of the removed stretch (a blank line stays one), with
                // the indentation of the line after it
                let run = gap[..k].trim_end_matches(char::is_whitespace);
                let breaks = &gap[run.len()..=k];
                out.extend(breaks.chars().filter(|c| *c == '\n' || *c == '\r'));
                let line = &text[words[p].range.end + k + 1..];
                let indent = &line[..line.len() - line.trim_start_matches([' ', '\t']).len()];
                out.push_str(indent);
            } else if gap.chars().any(char::is_whitespace) {
                out.push(' ');
            }
        }
        out.push_str(&text[w.range.clone()]);
        prev = Some(i);
    }
    out
}

/// The scorer's text of a token without its word-boundary marker.
fn pure(style: WordStyle, token: &str) -> &str {
    match style {
        WordStyle::Metaspace => token.trim_start_matches('\u{2581}'),
        WordStyle::WordPiece => token.strip_prefix("##").unwrap_or(token),
    }
}

/// Byte offset in `text` of each token (`None`: special or whitespace tokens).
fn align(
    scorer: &dyn Scorer,
    text: &str,
    tokens: &[String],
    pace: &mut Pace<'_>,
) -> Result<Vec<Option<usize>>, Interrupted> {
    let style = scorer.word_style();
    let mut cur = 0usize;
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        pace.step()?;
        out.push(align_one(scorer, style, text, t, &mut cur));
    }
    Ok(out)
}

/// The offset of `t` at or after `*cur`, which moves past it (see [`align`]).
fn align_one(
    scorer: &dyn Scorer,
    style: WordStyle,
    text: &str,
    t: &str,
    cur: &mut usize,
) -> Option<usize> {
    if scorer.is_special(t) {
        return None;
    }
    let p = pure(style, t);
    if p.trim().is_empty() {
        return None;
    }
    let rest = &text[*cur..];
    *cur += rest.len() - rest.trim_start().len();
    if *cur >= text.len() {
        return Some(text.len().saturating_sub(1));
    }
    let rest = &text[*cur..];
    if rest.starts_with(p) {
        let at = *cur;
        *cur += p.len();
        return Some(at);
    }
    // lower-casing tokenizers (uncased BERT): the same characters, case aside
    if let Some(len) = caseless_prefix(rest, p) {
        let at = *cur;
        *cur += len;
        return Some(at);
    }
    let mut window = SEARCH_AHEAD.min(rest.len());
    while !rest.is_char_boundary(window) {
        window -= 1;
    }
    if let Some(k) = rest[..window].find(p) {
        let at = *cur + k;
        *cur = at + p.len();
        return Some(at);
    }
    // normalised or unknown token: it belongs where we are; step one character
    let at = *cur;
    *cur += rest.chars().next().map_or(1, char::len_utf8);
    Some(at)
}

/// The byte length of the prefix of `text` that equals `token` ignoring case, if any.
fn caseless_prefix(text: &str, token: &str) -> Option<usize> {
    let mut len = 0;
    let mut chars = text.chars();
    for t in token.chars() {
        let c = chars.next()?;
        if !c.to_lowercase().eq(t.to_lowercase()) {
            return None;
        }
        len += c.len_utf8();
    }
    Some(len)
}

/// The word holding (or following) byte `at`.
fn word_at(words: &[Word], at: usize) -> Option<usize> {
    let k = words.partition_point(|w| w.range.end <= at);
    (k < words.len()).then_some(k)
}

/// Per word: token probabilities mapped onto the words (see the module docs).
fn word_probs(
    scorer: &dyn Scorer,
    text: &str,
    words: &[Word],
    ctx: &WorkCtx,
    pace: &mut Pace<'_>,
) -> Result<Vec<f64>, ScorerError> {
    // Tokens per word, to cut windows at word ends.
    let tokens = scorer.tokenize(text)?;
    ctx.check()?;
    let mut per_word = vec![0usize; words.len()];
    for at in align(scorer, text, &tokens, pace)?.into_iter().flatten() {
        if let Some(k) = word_at(words, at) {
            per_word[k] += 1;
        }
    }
    let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut acc, mut good_break) = (0usize, 0usize, None::<usize>);
    for (i, &n) in per_word.iter().enumerate() {
        pace.step()?;
        if acc + n > WINDOW_TOKENS && i > start {
            let cut = good_break.filter(|&b| b > start).unwrap_or(i);
            windows.push(start..cut);
            acc = per_word[cut..i].iter().sum();
            start = cut;
            good_break = None;
        }
        acc += n;
        let s = &text[words[i].range.clone()];
        let next = words.get(i + 1).map_or(text.len(), |w| w.range.start);
        if s.ends_with(['.', '!', '?', ':', ';']) || text[words[i].range.end..next].contains('\n') {
            good_break = Some(i + 1);
        }
    }
    windows.push(start..words.len());

    let chunks: Vec<String> = windows
        .iter()
        .map(|r| text[words[r.start].range.start..words[r.end - 1].range.end].to_string())
        .collect();
    let scored = scorer.score_chunks(&chunks, ctx)?;

    let mut sums = vec![(0.0f64, 0usize, 0.0f64, 0usize); words.len()];
    for ((r, chunk), sc) in windows.iter().zip(&chunks).zip(&scored) {
        let base = words[r.start].range.start;
        let local = &words[r.clone()];
        let offsets = align(scorer, chunk, &sc.tokens, pace)?;
        for ((tok, at), p) in sc.tokens.iter().zip(offsets).zip(&sc.probs) {
            let Some(at) = at else { continue };
            let Some(k) = word_at(local, at + base) else {
                continue;
            };
            let e = &mut sums[r.start + k];
            let p = f64::from(*p);
            if pure(scorer.word_style(), tok)
                .chars()
                .any(char::is_alphanumeric)
            {
                e.0 += p;
                e.1 += 1;
            } else {
                e.2 += p;
                e.3 += 1;
            }
        }
    }
    let means: Vec<Option<f64>> = sums
        .iter()
        .map(|&(a, n, b, m)| match (n, m) {
            (0, 0) => None,
            (0, m) => Some(b / m as f64),
            (n, _) => Some(a / n as f64),
        })
        .collect();
    let known: Vec<f64> = means.iter().flatten().copied().collect();
    let fallback = if known.is_empty() {
        0.5
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    Ok(means.into_iter().map(|m| m.unwrap_or(fallback)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::units::words;
    use crate::scorer::heuristic::HeuristicScorer;
    use std::time::{Duration, Instant};

    fn budget(rate: f64) -> Budget {
        Budget::rate(rate)
    }

    fn expired() -> WorkCtx {
        WorkCtx::with_deadline(Some(Instant::now() - Duration::from_millis(1)))
    }

    /// A long text past its deadline stops at the first step of the first loop (the word
    /// cut), not after scanning it; every other paced loop stops at its first step too.
    #[test]
    fn expired_deadline_stops_long_texts_before_scanning() {
        let s = HeuristicScorer::new();
        let text = "Ann said not 5 apples, keepme. ".repeat(20_000);
        let mut b = budget(0.5);
        b.force_tokens = vec!["keepme".into()];

        // the full run, for scale
        let ctx = WorkCtx::none();
        let mut full = ctx.pace(CHECK_EVERY);
        select_paced(&s, &text, &b, &ctx, &mut full).unwrap();
        assert!(full.steps() > 600_000, "{}", full.steps());

        let ctx = expired();
        let mut pace = ctx.pace(CHECK_EVERY);
        let err = select_paced(&s, &text, &b, &ctx, &mut pace).unwrap_err();
        assert!(matches!(err, ScorerError::Deadline), "{err:?}");
        assert_eq!(pace.steps(), 1);
        assert!(matches!(
            select(&s, &text, &b, &ctx),
            Err(ScorerError::Deadline)
        ));

        // each loop on its own
        let ws = words(&text);
        let toks = s.tokenize(&text).unwrap();
        let mut pace = ctx.pace(CHECK_EVERY);
        assert_eq!(
            align(&s, &text, &toks, &mut pace),
            Err(Interrupted::Deadline)
        );
        assert_eq!(pace.steps(), 1);
        let mut pace = ctx.pace(CHECK_EVERY);
        assert_eq!(
            forced_words(&text, &ws, &b, &mut pace),
            Err(Interrupted::Deadline)
        );
        assert_eq!(pace.steps(), 1);
        let forced = vec![false; ws.len()];
        let mut pace = ctx.pace(CHECK_EVERY);
        assert_eq!(
            units_paced(&text, &ws, &b.keep, &forced, &mut pace),
            Err(Interrupted::Deadline)
        );
        assert_eq!(pace.steps(), 1);
    }

    /// A context cancelled while the scorer runs: the loops after scoring stop within
    /// [`CHECK_EVERY`] steps instead of finishing the text.
    #[test]
    fn cancel_during_scoring_stops_the_loops_after_it() {
        struct CancellingScorer(HeuristicScorer);
        impl Scorer for CancellingScorer {
            fn id(&self) -> &str {
                "cancelling"
            }
            fn word_style(&self) -> WordStyle {
                self.0.word_style()
            }
            fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
                self.0.tokenize(text)
            }
            fn tokens_to_string(&self, tokens: &[String]) -> String {
                self.0.tokens_to_string(tokens)
            }
            fn is_special(&self, token: &str) -> bool {
                self.0.is_special(token)
            }
            fn score_chunks(
                &self,
                chunks: &[String],
                ctx: &WorkCtx,
            ) -> Result<Vec<crate::scorer::ScoredChunk>, ScorerError> {
                let out = self.0.score_chunks(chunks, ctx);
                ctx.cancel();
                out
            }
        }
        let text = "The warehouse in Rotterdam closes at six tonight. ".repeat(5_000);
        let s = CancellingScorer(HeuristicScorer::new());
        let heuristic = HeuristicScorer::new();
        let ctx = WorkCtx::none();
        let mut full = ctx.pace(CHECK_EVERY);
        select_paced(&heuristic, &text, &budget(0.5), &ctx, &mut full).unwrap();

        let ctx = WorkCtx::none();
        let mut pace = ctx.pace(CHECK_EVERY);
        let err = select_paced(&s, &text, &budget(0.5), &ctx, &mut pace).unwrap_err();
        assert!(matches!(err, ScorerError::Cancelled), "{err:?}");
        // before scoring: one step per character, token and word
        let before = text.len() + heuristic.tokenize(&text).unwrap().len() + words(&text).len();
        assert!(pace.steps() > before, "{} <= {before}", pace.steps());
        assert!(
            pace.steps() <= before + CHECK_EVERY + 1,
            "{} steps, {before} before scoring",
            pace.steps()
        );
        // the loops after scoring had far more to do than they did
        assert!(
            full.steps() > before + 20 * CHECK_EVERY,
            "{} steps in all, {before} before scoring",
            full.steps()
        );
    }

    #[test]
    fn rebuild_keeps_separators_and_line_breaks() {
        let text = "alpha beta\n  gamma delta\n\nepsilon zeta";
        let ws = words(text);
        let keep = |ks: &[usize]| {
            let mut k = vec![false; ws.len()];
            for &i in ks {
                k[i] = true;
            }
            rebuild(text, &ws, &k)
        };
        assert_eq!(keep(&[0, 1, 2, 3, 4, 5]), text);
        assert_eq!(keep(&[0, 3]), "alpha\n  delta");
        assert_eq!(keep(&[0, 5]), "alpha\n\nzeta");
        assert_eq!(keep(&[1, 2]), "beta\n  gamma");
        assert_eq!(keep(&[0, 2, 5]), "alpha\n  gamma\n\nzeta");
        let cjk = "我们今天";
        let ws = words(cjk);
        assert_eq!(rebuild(cjk, &ws, &[true, false, true, true]), "我今天");
    }

    #[test]
    fn heuristic_words_stay_whole_and_units_hold() {
        let s = HeuristicScorer::new();
        let text = "Please send an e-mail to the billing-api team on cluster us-west-3 \
                    before Friday. The plan costs $9 a month and refunds arrive within 48 hours. \
                    Riders must not ride the escalator with strollers, and monthly plans are \
                    never refunded unless the service was unavailable for more than 3 days.";
        let sel = select(&s, text, &budget(0.3), &WorkCtx::none()).unwrap();
        let input: Vec<&str> = text.split_whitespace().collect();
        let mut it = input.iter();
        for w in sel.text.split_whitespace() {
            assert!(it.any(|x| x == &w), "{w:?} invented in {:?}", sel.text);
        }
        for unit in [
            "$9 a month",
            "within 48 hours",
            "must not ride",
            "never refunded",
            "more than 3 days.",
        ] {
            assert!(sel.text.contains(unit), "{unit} in {:?}", sel.text);
        }
        assert!(sel.text.len() < text.len());
    }

    #[test]
    fn budget_is_token_weighted_and_forced_units_are_reported() {
        let s = HeuristicScorer::new();
        let text = "word ".repeat(40) + "finally the important conclusion arrives here";
        let sel = select(&s, &text, &budget(0.5), &WorkCtx::none()).unwrap();
        let total = cl100k_count(&text) as f64;
        let kept = cl100k_count(&sel.text) as f64;
        assert!((kept / total - 0.5).abs() < 0.15, "{kept}/{total}");
        assert!(!sel.budget_exceeded_by_units);
        let numbers = "1 2 3 4 5 6 7 8 9 10 apples and pears";
        let sel = select(&s, numbers, &budget(0.2), &WorkCtx::none()).unwrap();
        assert!(sel.budget_exceeded_by_units);
        assert!(sel.text.starts_with("1 2 3 4 5 6 7 8 9 10 apples"));
    }

    #[test]
    fn force_tokens_and_markers_are_kept() {
        let s = HeuristicScorer::new();
        let text = format!("the a of {SPAN_MARKER} to in keepme on at by for");
        let mut b = budget(0.1);
        b.force_tokens = vec!["keepme".into()];
        let sel = select(&s, &text, &b, &WorkCtx::none()).unwrap();
        assert!(sel.text.contains(SPAN_MARKER));
        assert!(sel.text.contains("keepme"));
    }

    #[test]
    fn alignment_survives_unmatched_tokens() {
        let s = HeuristicScorer::new();
        let text = "abc déf ghi";
        let toks: Vec<String> = ["▁abc", "▁[UNK]", "▁ghi"].map(String::from).to_vec();
        let offs = align(&s, text, &toks, &mut Pace::unbounded()).unwrap();
        let ws = words(text);
        let w: Vec<Option<usize>> = offs
            .iter()
            .map(|o| o.and_then(|a| word_at(&ws, a)))
            .collect();
        assert_eq!(w, [Some(0), Some(1), Some(2)]);
        // a lower-casing tokenizer still lands every token on its word
        let text = "Starter Plans COST";
        let toks: Vec<String> = ["▁starter", "▁plan", "s", "▁cost"]
            .map(String::from)
            .to_vec();
        let ws = words(text);
        let w: Vec<Option<usize>> = align(&s, text, &toks, &mut Pace::unbounded())
            .unwrap()
            .iter()
            .map(|o| o.and_then(|a| word_at(&ws, a)))
            .collect();
        assert_eq!(w, [Some(0), Some(1), Some(1), Some(2)]);
    }

    #[test]
    fn long_texts_are_scored_in_windows() {
        let s = HeuristicScorer::new();
        let text = "This sentence has several plain words in it. ".repeat(120);
        let sel = select(&s, &text, &budget(0.5), &WorkCtx::none()).unwrap();
        assert_eq!(sel.probs.len(), sel.words.len());
        assert!(sel.kept.iter().filter(|k| **k).count() > 100);
    }

    /// A scorer with the heuristic tokenizer and pseudo-random probabilities.
    struct RandomScorer(u64);

    impl Scorer for RandomScorer {
        fn id(&self) -> &str {
            "random"
        }
        fn word_style(&self) -> WordStyle {
            WordStyle::Metaspace
        }
        fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
            Ok(HeuristicScorer::tokenize_str(text))
        }
        fn tokens_to_string(&self, tokens: &[String]) -> String {
            HeuristicScorer::detokenize(tokens)
        }
        fn is_special(&self, _token: &str) -> bool {
            false
        }
        fn score_chunks(
            &self,
            chunks: &[String],
            _ctx: &WorkCtx,
        ) -> Result<Vec<crate::scorer::ScoredChunk>, ScorerError> {
            let mut rng = fastrand::Rng::with_seed(self.0);
            Ok(chunks
                .iter()
                .map(|c| {
                    let tokens = HeuristicScorer::tokenize_str(c);
                    let probs = tokens.iter().map(|_| rng.f64() as f32).collect();
                    crate::scorer::ScoredChunk { tokens, probs }
                })
                .collect())
        }
    }

    const PIECES: &[&str] = &[
        "the",
        "a",
        "refund",
        "e-mail",
        "billing-api",
        "us-west-3",
        "v2.3.1",
        "$9",
        "15%",
        "-10",
        "°C",
        "1,000,000",
        "37.50",
        "09:30",
        "2026-03-14",
        "not",
        "never",
        "don't",
        "only",
        "unless",
        "at",
        "most",
        "more",
        "than",
        "within",
        "48",
        "hours",
        "month",
        "Maria",
        "Lopez",
        "(see",
        "below).",
        "end.",
        "ok,",
        "x-y-z",
        "[NEW1]",
        "–",
        "-",
        "#",
        "\u{E000}",
        "it's",
        "déjà",
        "naïve",
        "a/b",
        "k8s",
    ];
    const SEPS: &[&str] = &[
        " ", " ", " ", " ", "  ", "\n", "\n\n", "\n  ", "\t", " \n- ",
    ];

    fn random_text(rng: &mut fastrand::Rng) -> String {
        let n = 1 + rng.usize(..120);
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                s.push_str(SEPS[rng.usize(..SEPS.len())]);
            }
            s.push_str(PIECES[rng.usize(..PIECES.len())]);
        }
        s
    }

    /// Every output is the input with whole words deleted: its whitespace-separated words are a
    /// subsequence of the input's, for the heuristic scorer and a random-probability scorer,
    /// at random rates and rules.
    #[test]
    fn property_output_is_input_with_whole_words_deleted() {
        let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
        let heuristic = HeuristicScorer::new();
        for case in 0..400 {
            let text = random_text(&mut rng);
            let random = RandomScorer(rng.u64(..) | 1);
            let scorer: &dyn Scorer = if case % 2 == 0 { &heuristic } else { &random };
            let mut b = budget(0.05 + 0.9 * rng.f64());
            b.keep.units = rng.usize(..2) == 0;
            b.keep.negations = rng.usize(..2) == 0;
            b.force_reserve_digit = rng.usize(..4) == 0;
            let sel = select(scorer, &text, &b, &WorkCtx::none()).unwrap();
            let input: Vec<&str> = text.split_whitespace().collect();
            let mut it = input.iter();
            for w in sel.text.split_whitespace() {
                assert!(
                    it.any(|x| x == &w),
                    "case {case}: {w:?} is not in order in {text:?} -> {:?}",
                    sel.text
                );
            }
            // kept words are exactly the output's words
            let kept: Vec<&str> = sel
                .words
                .iter()
                .zip(&sel.kept)
                .filter(|(_, k)| **k)
                .map(|(w, _)| &text[w.range.clone()])
                .collect();
            assert_eq!(kept, sel.text.split_whitespace().collect::<Vec<_>>());
            // markers always survive
            assert_eq!(
                sel.text.matches(SPAN_MARKER).count(),
                text.matches(SPAN_MARKER).count()
            );
        }
    }
}
