//! The fact-retention benchmark: a suite of texts annotated with the facts that decide an
//! answer, the metric that says which facts a compressed text still carries, a word-integrity
//! check (no invented words), and a runner that sends every text through the real [`Policy`].
//!
//! # Words
//! A text's words are its whitespace-separated runs (Unicode whitespace), each trimmed of
//! leading and trailing characters that are neither alphanumeric nor one of [`KEEP_AT_EDGES`]
//! (`$ % + - # @ ° € £ ¥`); a run left without any alphanumeric character is not a word.
//! Inside a word nothing is trimmed. So `"(us-west-3),"` is the word `us-west-3`, `$9`, `15%`,
//! `-10`, `°C`, `09:30`, `1,000` and `e-mail` are words as written, `months'` is `months`, and
//! `—` or `-` standing alone are not words. Words compare exactly (case-sensitive).
//!
//! # Facts
//! A fact is an ordered list of words that together carry one piece of meaning (`$9`, `month`;
//! `never`, `refunded`). Its *window* in a text is the smallest distance, in words, between its
//! first and last word over every in-order occurrence of all its words. A fact is **retained** by
//! a compressed text when all its words occur in order in the compressed text's words within a
//! window no wider than the fact's window in the original. Since compression only deletes words,
//! the original occurrence always fits when it survives; the bound stops stray copies of the
//! same words far apart from counting.
//!
//! # Integrity
//! A compressed text is *whole* when its words are a subsequence of the original's: the
//! selection deleted words and invented none (`an e-mail` → `an-mail` is a violation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::compress::{CompressError, Policy, RequestOptions, SkipReason, TokenizerKind};

/// Characters that stay part of a word at its start or end (signs, currency, percent, units).
pub const KEEP_AT_EDGES: &[char] = &['$', '%', '+', '-', '#', '@', '°', '€', '£', '¥'];

/// Roles a suite text may play (those the policy has budgets for).
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Trims one whitespace-separated run to its word (see the module docs); `None` when nothing
/// alphanumeric remains.
pub fn trim_word(raw: &str) -> Option<&str> {
    let keep = |c: char| c.is_alphanumeric() || KEEP_AT_EDGES.contains(&c);
    let w = raw
        .trim_start_matches(|c: char| !keep(c))
        .trim_end_matches(|c: char| !keep(c));
    w.chars().any(char::is_alphanumeric).then_some(w)
}

/// The words of a text, in order.
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().filter_map(trim_word).collect()
}

/// The smallest window (index of the last word minus index of the first) in which `tokens`
/// occur in order in `words`; `None` when they do not occur in order at all.
pub fn tightest_window<S: AsRef<str>>(words: &[&str], tokens: &[S]) -> Option<usize> {
    let (first, rest) = tokens.split_first()?;
    let mut best: Option<usize> = None;
    for (start, _) in words
        .iter()
        .enumerate()
        .filter(|(_, w)| **w == first.as_ref())
    {
        // From a fixed start, matching each next token as early as possible ends earliest.
        let mut at = start;
        let mut complete = true;
        for t in rest {
            match words[at + 1..].iter().position(|w| *w == t.as_ref()) {
                Some(off) => at += 1 + off,
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            // A later start cannot complete either.
            break;
        }
        let span = at - start;
        if best.is_none_or(|b| span < b) {
            best = Some(span);
        }
    }
    best
}

/// Whether `tokens` occur in order in `words` within `max_window` words.
pub fn retained<S: AsRef<str>>(tokens: &[S], max_window: usize, words: &[&str]) -> bool {
    tightest_window(words, tokens).is_some_and(|w| w <= max_window)
}

/// The kind of meaning a fact carries (for "lost facts by kind").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    /// A number with its unit, currency, percent or the noun it counts.
    NumberUnit,
    /// A negation with the verb, adjective or noun it governs.
    Negation,
    /// A limit: `at most`, `up to`, `only`, `within`, `more than` with what it bounds.
    Limit,
    /// A condition or exception: `if`, `unless`, `except` with its content.
    Condition,
    /// A person, product, place or organisation.
    Name,
    /// An identifier: version, code-style name, reference, file name.
    Identifier,
    /// A date, time, weekday or period.
    DateTime,
}

impl FactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NumberUnit => "number_unit",
            Self::Negation => "negation",
            Self::Limit => "limit",
            Self::Condition => "condition",
            Self::Name => "name",
            Self::Identifier => "identifier",
            Self::DateTime => "date_time",
        }
    }
}

/// One annotated fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    pub kind: FactKind,
    /// The words that carry it, in text order.
    pub tokens: Vec<String>,
    /// Its tightest window in the original text (set by the loader).
    #[serde(skip)]
    pub window: usize,
}

impl Fact {
    /// Whether a compressed text's words still carry this fact.
    pub fn retained_in(&self, compressed_words: &[&str]) -> bool {
        retained(&self.tokens, self.window, compressed_words)
    }
}

/// One text of the suite, as stored in `NN-name.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredText {
    title: String,
    role: String,
    text: String,
    facts: Vec<Fact>,
}

/// One validated text of the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteText {
    /// The file name without `.json`.
    pub id: String,
    pub title: String,
    /// The role the text plays in a conversation (picks the budget).
    pub role: String,
    pub text: String,
    pub facts: Vec<Fact>,
}

/// A suite that does not load; every message names the file and, for facts, the fact.
#[derive(Debug, Error)]
pub enum SuiteError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{id}: not a suite text: {source}")]
    Parse {
        id: String,
        source: serde_json::Error,
    },
    #[error("{id}: {reason}")]
    Text { id: String, reason: String },
    #[error("{id}: fact {index} {tokens:?}: {reason}")]
    Fact {
        id: String,
        index: usize,
        tokens: Vec<String>,
        reason: String,
    },
    #[error("{0}: no suite texts (*.json)")]
    Empty(PathBuf),
}

impl SuiteText {
    /// Parses and validates one text: a known role, a non-empty text, at least one fact, and
    /// every fact made of words (as [`words`] cuts them) that occur in order in the text.
    pub fn from_json(id: &str, json: &str) -> Result<Self, SuiteError> {
        let stored: StoredText =
            serde_json::from_str(json).map_err(|source| SuiteError::Parse {
                id: id.to_string(),
                source,
            })?;
        let text_err = |reason: String| SuiteError::Text {
            id: id.to_string(),
            reason,
        };
        if !ROLES.contains(&stored.role.as_str()) {
            return Err(text_err(format!(
                "unknown role {:?} (expected one of {})",
                stored.role,
                ROLES.join(", ")
            )));
        }
        let text_words = words(&stored.text);
        if text_words.is_empty() {
            return Err(text_err("the text has no words".into()));
        }
        if stored.facts.is_empty() {
            return Err(text_err("no facts".into()));
        }
        let mut facts = stored.facts;
        for (index, fact) in facts.iter_mut().enumerate() {
            let fact_err = |reason: String| SuiteError::Fact {
                id: id.to_string(),
                index,
                tokens: fact.tokens.clone(),
                reason,
            };
            if fact.tokens.is_empty() {
                return Err(fact_err("no tokens".into()));
            }
            if let Some(t) = fact.tokens.iter().find(|t| words(t) != [t.as_str()]) {
                return Err(fact_err(format!(
                    "{t:?} is not one word (whitespace inside, or punctuation at its edges)"
                )));
            }
            let window = tightest_window(&text_words, &fact.tokens).ok_or_else(|| {
                fact_err("its tokens do not occur in this order in the text".into())
            })?;
            fact.window = window;
        }
        Ok(Self {
            id: id.to_string(),
            title: stored.title,
            role: stored.role,
            text: stored.text,
            facts,
        })
    }
}

/// A loaded, validated suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub dir: PathBuf,
    /// In file-name order.
    pub texts: Vec<SuiteText>,
}

impl Suite {
    /// Loads every `*.json` file of `dir`; the first invalid one fails the whole suite.
    pub fn load(dir: &Path) -> Result<Self, SuiteError> {
        let io = |source| SuiteError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "json"));
        paths.sort();
        if paths.is_empty() {
            return Err(SuiteError::Empty(dir.to_path_buf()));
        }
        let mut texts = Vec::with_capacity(paths.len());
        for path in paths {
            let json = std::fs::read_to_string(&path).map_err(|source| SuiteError::Io {
                path: path.clone(),
                source,
            })?;
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            texts.push(SuiteText::from_json(&id, &json)?);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            texts,
        })
    }

    pub fn fact_count(&self) -> usize {
        self.texts.iter().map(|t| t.facts.len()).sum()
    }
}

/// A word of a compressed text that is not in the original at that place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Index of the word among the compressed text's words.
    pub position: usize,
    pub word: String,
    /// The last compressed word before it that matched the original (context).
    pub after: Option<String>,
}

/// The words of `compressed` that break "the original with whole words deleted": the fewest
/// words whose removal leaves a subsequence of the original's words (those outside a longest
/// common subsequence of the two word lists). Empty when the text is whole.
pub fn integrity(original: &str, compressed: &str) -> Vec<Violation> {
    let orig = words(original);
    let comp = words(compressed);
    let aligned = align(&orig, &comp);
    let mut after: Option<&str> = None;
    let mut out = Vec::new();
    for (position, (w, ok)) in comp.iter().zip(aligned).enumerate() {
        if ok {
            after = Some(w);
        } else {
            out.push(Violation {
                position,
                word: (*w).to_string(),
                after: after.map(str::to_string),
            });
        }
    }
    out
}

/// For each word of `comp`, whether it belongs to a longest common subsequence with `orig`
/// (a quadratic table: suite texts have hundreds of words, not millions).
fn align(orig: &[&str], comp: &[&str]) -> Vec<bool> {
    let (n, m) = (orig.len(), comp.len());
    let width = m + 1;
    // lcs[i * width + j]: LCS length of orig[i..] and comp[j..].
    let mut lcs = vec![0u32; (n + 1) * width];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * width + j] = if orig[i] == comp[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let mut kept = vec![false; m];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if orig[i] == comp[j] {
            kept[j] = true;
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * width + j] >= lcs[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    kept
}

/// Which budgets a run uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budgets {
    /// Every role's configured budget.
    Defaults,
    /// One rate for every role (the `x-lingua-rate` override).
    Rate(f64),
}

impl Budgets {
    pub fn label(self) -> String {
        match self {
            Self::Defaults => "defaults".into(),
            Self::Rate(r) => format!("{r}"),
        }
    }
}

/// A fact a compressed text lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LostFact {
    pub text: String,
    pub kind: FactKind,
    pub tokens: Vec<String>,
}

/// What the policy made of one suite text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOutcome {
    pub id: String,
    pub role: String,
    /// The rate the policy was asked for (the role's or the override).
    pub rate: f64,
    pub compressed: String,
    /// Target-tokenizer tokens before and after.
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// Why the policy left the text unchanged, if it did.
    pub skipped: Option<SkipReason>,
    pub facts: usize,
    pub lost: Vec<LostFact>,
    pub violations: Vec<Violation>,
}

/// Scores one compressed text against its suite entry.
pub fn score_text(text: &SuiteText, compressed: &str) -> (Vec<LostFact>, Vec<Violation>) {
    let cw = words(compressed);
    let lost = text
        .facts
        .iter()
        .filter(|f| !f.retained_in(&cw))
        .map(|f| LostFact {
            text: text.id.clone(),
            kind: f.kind,
            tokens: f.tokens.clone(),
        })
        .collect();
    (lost, integrity(&text.text, compressed))
}

/// Runs every suite text, as a lone message of its role, through `policy` at `budgets`
/// (positional protections do not apply: there is no conversation around it).
pub fn run(
    policy: &Policy,
    suite: &Suite,
    budgets: Budgets,
    tokenizer: TokenizerKind,
) -> Result<Vec<TextOutcome>, CompressError> {
    let opts = RequestOptions {
        rate_override: match budgets {
            Budgets::Defaults => None,
            Budgets::Rate(r) => Some(r),
        },
        tokenizer: Some(tokenizer),
        ..RequestOptions::default()
    };
    let mut out = Vec::with_capacity(suite.texts.len());
    for t in &suite.texts {
        let r = policy.compress_message(&t.role, &[t.text.as_str()], tokenizer, &opts, None)?;
        let compressed = r
            .texts
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_else(|| t.text.clone());
        let (lost, violations) = score_text(t, &compressed);
        let rate = match budgets {
            Budgets::Rate(r) => r,
            Budgets::Defaults => policy.role_rate(&t.role).unwrap_or(1.0),
        };
        out.push(TextOutcome {
            id: t.id.clone(),
            role: t.role.clone(),
            rate,
            compressed,
            tokens_before: r.tokens_before,
            tokens_after: r.tokens_after,
            skipped: r.skipped,
            facts: t.facts.len(),
            lost,
            violations,
        });
    }
    Ok(out)
}

/// Totals over a set of texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub texts: usize,
    /// Texts the policy left unchanged (see each text's `skipped`).
    pub skipped: usize,
    pub facts: usize,
    pub kept: usize,
    /// `kept / facts`.
    pub retention: f64,
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// `tokens_after / tokens_before` (target tokenizer).
    pub token_ratio: f64,
    /// `1 - token_ratio`.
    pub saving: f64,
    pub integrity_violations: usize,
}

impl Totals {
    pub fn of<'a>(texts: impl IntoIterator<Item = &'a TextOutcome>) -> Self {
        let mut t = Self::default();
        for o in texts {
            t.texts += 1;
            t.skipped += usize::from(o.skipped.is_some());
            t.facts += o.facts;
            t.kept += o.facts - o.lost.len();
            t.tokens_before += o.tokens_before;
            t.tokens_after += o.tokens_after;
            t.integrity_violations += o.violations.len();
        }
        t.retention = ratio(t.kept, t.facts);
        t.token_ratio = ratio(t.tokens_after, t.tokens_before);
        t.saving = 1.0 - t.token_ratio;
        t
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

/// Lost and total facts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindCount {
    pub lost: usize,
    pub facts: usize,
}

/// An integrity violation, with its text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextViolation {
    pub text: String,
    #[serde(flatten)]
    pub violation: Violation,
}

/// The figures of one run (one scorer, one budget setting), as printed by `eval facts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub scorer: String,
    /// `"defaults"` or the rate.
    pub budget: String,
    /// The rate each role was asked for.
    pub rates: BTreeMap<String, f64>,
    pub overall: Totals,
    pub roles: BTreeMap<String, Totals>,
    pub lost_by_kind: BTreeMap<FactKind, KindCount>,
    pub lost: Vec<LostFact>,
    pub integrity_violations: Vec<TextViolation>,
    /// Texts left unchanged, with the reason.
    pub skipped: BTreeMap<String, SkipReason>,
}

impl RunSummary {
    pub fn new(scorer: &str, budgets: Budgets, suite: &Suite, outcomes: &[TextOutcome]) -> Self {
        let mut roles: BTreeMap<String, Vec<&TextOutcome>> = BTreeMap::new();
        let mut rates = BTreeMap::new();
        for o in outcomes {
            roles.entry(o.role.clone()).or_default().push(o);
            rates.insert(o.role.clone(), o.rate);
        }
        let mut lost_by_kind: BTreeMap<FactKind, KindCount> = BTreeMap::new();
        for f in suite.texts.iter().flat_map(|t| &t.facts) {
            lost_by_kind.entry(f.kind).or_default().facts += 1;
        }
        let lost: Vec<LostFact> = outcomes.iter().flat_map(|o| o.lost.clone()).collect();
        for l in &lost {
            lost_by_kind.entry(l.kind).or_default().lost += 1;
        }
        Self {
            scorer: scorer.to_string(),
            budget: budgets.label(),
            rates,
            overall: Totals::of(outcomes),
            roles: roles.into_iter().map(|(k, v)| (k, Totals::of(v))).collect(),
            lost_by_kind,
            lost,
            integrity_violations: outcomes
                .iter()
                .flat_map(|o| {
                    o.violations.iter().map(|v| TextViolation {
                        text: o.id.clone(),
                        violation: v.clone(),
                    })
                })
                .collect(),
            skipped: outcomes
                .iter()
                .filter_map(|o| o.skipped.map(|s| (o.id.clone(), s)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_trim_punctuation_but_keep_signs_and_inner_marks() {
        assert_eq!(
            words("(us-west-3), $9 a month; 15% off -10 °C — \"never\" months' e-mail. 09:30 -"),
            [
                "us-west-3",
                "$9",
                "a",
                "month",
                "15%",
                "off",
                "-10",
                "°C",
                "never",
                "months",
                "e-mail",
                "09:30"
            ]
        );
        assert_eq!(trim_word("..."), None);
        assert_eq!(trim_word("v2.3.1."), Some("v2.3.1"));
    }

    #[test]
    fn tightest_window_takes_the_closest_occurrence() {
        let w = words("$9 for a while then $9 a month");
        assert_eq!(tightest_window(&w, &["$9", "month"]), Some(2));
        assert_eq!(tightest_window(&w, &["month", "$9"]), None);
        assert_eq!(tightest_window(&w, &["while"]), Some(0));
    }
}
