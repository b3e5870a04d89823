//! Protected spans and `<llmlingua …>` tags.
//!
//! A text is cut into regions: verbatim regions (protected spans, `compress=False` tag bodies)
//! and compressible regions (with an optional rate from a `rate=R` tag). Protected spans are
//! never scored; the caller replaces each by a marker that the selection always keeps and
//! puts the original bytes back afterwards.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde::de::IgnoredAny;

use super::content::{self, Kind, Prose};
use crate::model::{Interrupted, Pace, WorkCtx};

/// Loop iterations (bytes, lines, matches, candidates) between two checks of the work context.
const CHECK_EVERY: usize = 4096;

pub use crate::tokens::SPAN_MARKER;

/// Part of a text, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    /// Forwarded byte for byte.
    Verbatim(String),
    /// Compressed at the message's budget, or at `rate` when a tag gave one. `protected` holds
    /// the verbatim spans inside `text`, each replaced in `text` by [`SPAN_MARKER`].
    Compress {
        text: String,
        protected: Vec<String>,
        rate: Option<f64>,
    },
}

/// What the policy did to one region (`--explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// Forwarded byte for byte (its kind is never scored, or its role keeps it).
    Kept,
    /// Scored and compressed (or left whole when nothing could go).
    Compressed,
    /// Inside `<llmlingua, compress=False>`.
    TagKept,
    /// Runs of repeated lines collapsed with a count marker.
    CollapsedRepeats,
    /// JSON without insignificant whitespace.
    MinifiedJson,
    /// Replaced by a reference to an identical earlier tool result.
    Deduplicated,
    /// A part under the role's `min_tokens`.
    BelowMinTokens,
}

impl Transform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Compressed => "compressed",
            Self::TagKept => "tag_kept",
            Self::CollapsedRepeats => "collapsed_repeats",
            Self::MinifiedJson => "minified_json",
            Self::Deduplicated => "deduplicated",
            Self::BelowMinTokens => "below_min_tokens",
        }
    }
}

/// How one text is cut into regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentRules {
    /// `<llmlingua …>` tags steer compression (else they are plain text).
    pub tags: bool,
    /// How plain prose reads.
    pub prose: Prose,
    /// Prose read as instructions may be compressed.
    pub compress_instructions: bool,
    pub minify_json: bool,
    pub collapse_repeats: bool,
}

/// A region with what it is and what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub region: Region,
    pub kind: Kind,
    pub transform: Transform,
    /// The original text (for explanations and token counts).
    pub original: String,
}

/// Detects protected spans: fenced code, inline code, JSON that parses, URLs, e-mail addresses,
/// file paths and user patterns.
#[derive(Debug, Clone, Default)]
pub struct SpanDetector {
    keep_patterns: Vec<Regex>,
    builtin: bool,
    memo: ClassifiedMemo,
}

/// Texts shorter than this are classified directly (hashing would cost about as much).
const MEMO_MIN_BYTES: usize = 128;
/// Bytes of pieces the memo holds at most.
const MEMO_BYTES: u64 = 16 << 20;

/// [`SpanDetector::classified`] results of long texts by (xxh3-128 of the text, its length, the
/// rules): a conversation's earlier messages come back on every turn, and classifying them is
/// most of what a fully cached request costs. Shared by the clones of one detector, whose
/// patterns make the result.
#[derive(Clone)]
struct ClassifiedMemo(moka::sync::Cache<(u128, usize, ContentRules), std::sync::Arc<[Piece]>>);

impl Default for ClassifiedMemo {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .weigher(|_, pieces: &std::sync::Arc<[Piece]>| {
                    let bytes: usize = pieces.iter().map(|p| 64 + 2 * p.original.len()).sum();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .max_capacity(MEMO_BYTES)
                .build(),
        )
    }
}

impl std::fmt::Debug for ClassifiedMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifiedMemo")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

static OPEN_TAG: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"<llmlingua((?:\s*,\s*(?:rate\s*=\s*[0-9.]+|compress\s*=\s*(?:True|False)))*)\s*>")
        .expect("static regex")
});
static TAG_RATE: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"rate\s*=\s*([0-9.]+)").expect("static regex")
});
const CLOSE_TAG: &str = "</llmlingua>";

static INLINE_CODE: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"``[^\n]+?``|`[^`\n]+`").expect("static regex")
});
static URL: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r#"(?i)\b(?:(?:https?|ftp|wss?|file)://|www\.)[^\s<>"'`]+"#).expect("static regex")
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
        .expect("static regex")
});
static PATH: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(concat!(
        // absolute or home/dot-relative unix paths with at least one separator after the root
        r"(?:~|\.{1,2})?/[\w.@+-]+(?:/[\w.@+-]+)*/?",
        // relative paths with a directory and a file extension: src/compress/mod.rs
        r"|\b[\w.@+-]+(?:/[\w.@+-]+)*/[\w@+-]+\.[A-Za-z0-9]{1,10}\b",
        // windows paths
        r"|\b[A-Za-z]:\\(?:[^\\\s]+\\)*[^\\\s]*",
    ))
    .expect("static regex")
});

impl SpanDetector {
    /// `keep_patterns` must already be valid (checked by the config).
    pub fn new(keep_patterns: &[String]) -> Result<Self, regex::Error> {
        Ok(Self {
            keep_patterns: keep_patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<_, _>>()?,
            builtin: true,
            memo: ClassifiedMemo::default(),
        })
    }

    /// A detector that protects nothing (the CLI's plain mode).
    pub fn none() -> Self {
        Self::default()
    }

    /// Byte ranges of the protected spans in `text`, sorted and merged.
    pub fn find(&self, text: &str) -> Vec<Range<usize>> {
        // An unbounded pace never interrupts.
        self.find_paced(text, &mut Pace::unbounded())
            .unwrap_or_default()
    }

    /// [`SpanDetector::find`], with pace steps per line, match, byte and JSON candidate.
    pub fn find_paced(
        &self,
        text: &str,
        pace: &mut Pace<'_>,
    ) -> Result<Vec<Range<usize>>, Interrupted> {
        let mut spans: Vec<Range<usize>> = Vec::new();
        if self.builtin {
            spans.extend(fenced_code(text, pace)?);
            regex_spans(&INLINE_CODE, text, false, pace, &mut spans)?;
            regex_spans(&URL, text, true, pace, &mut spans)?;
            regex_spans(&EMAIL, text, false, pace, &mut spans)?;
            let mut paths = Vec::new();
            regex_spans(&PATH, text, true, pace, &mut paths)?;
            spans.extend(
                paths
                    .into_iter()
                    .filter(|r| path_is_plausible(text, r.clone())),
            );
            let json = json_values_counted(text, &spans, pace)?.0;
            spans.extend(json);
        }
        for re in &self.keep_patterns {
            let mut found = Vec::new();
            regex_spans(re, text, false, pace, &mut found)?;
            spans.extend(found.into_iter().filter(|r| !r.is_empty()));
        }
        Ok(merge(spans))
    }

    /// Cuts `text` into regions (tags parsed and removed, protected spans marked).
    pub fn regions(&self, text: &str) -> Vec<Region> {
        // An unbounded pace never interrupts.
        self.regions_paced(text, &mut Pace::unbounded())
            .unwrap_or_default()
    }

    /// [`SpanDetector::regions`] under `ctx`: `Err` soon after its deadline passes or it is
    /// cancelled, however long the text (the loops check it every few thousand steps).
    pub fn regions_within(&self, text: &str, ctx: &WorkCtx) -> Result<Vec<Region>, Interrupted> {
        self.regions_paced(text, &mut ctx.pace(CHECK_EVERY))
    }

    /// Cuts `text` into regions by content kind ([`content::classify`]): only prose the rules
    /// allow is compressible, with its skeleton and identifiers protected; every other block is
    /// verbatim, or transformed losslessly when the rules say so.
    pub fn classified(
        &self,
        text: &str,
        rules: ContentRules,
        ctx: &WorkCtx,
    ) -> Result<Vec<Piece>, Interrupted> {
        if text.len() < MEMO_MIN_BYTES {
            return self.classify_now(text, rules, ctx);
        }
        let key = (
            xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
            text.len(),
            rules,
        );
        if let Some(hit) = self.memo.0.get(&key) {
            return Ok(hit.to_vec());
        }
        let out = self.classify_now(text, rules, ctx)?;
        self.memo
            .0
            .insert(key, std::sync::Arc::from(out.as_slice()));
        Ok(out)
    }

    fn classify_now(
        &self,
        text: &str,
        rules: ContentRules,
        ctx: &WorkCtx,
    ) -> Result<Vec<Piece>, Interrupted> {
        let pace = &mut ctx.pace(CHECK_EVERY);
        let parts = if rules.tags {
            split_tags(text)
        } else {
            vec![(text, Tag::None)]
        };
        let mut out = Vec::new();
        for (part, tag) in parts {
            let rate = match tag {
                Tag::Keep => {
                    out.push(Piece {
                        region: Region::Verbatim(part.to_string()),
                        kind: rules.prose_kind(),
                        transform: Transform::TagKept,
                        original: part.to_string(),
                    });
                    continue;
                }
                Tag::Rate(r) => Some(r),
                Tag::None => None,
            };
            let blocks = content::classify(part, rules.prose, pace)?;
            let mut run: Option<(usize, usize, Kind)> = None;
            for b in blocks {
                let compressible = b.kind == Kind::Document
                    || (b.kind == Kind::Instructions && rules.compress_instructions);
                if compressible {
                    run = Some(match run {
                        Some((start, _, kind)) => (start, b.range.end, kind),
                        None => (b.range.start, b.range.end, b.kind),
                    });
                    continue;
                }
                if let Some((start, end, kind)) = run.take() {
                    self.push_prose(&mut out, &part[start..end], kind, rate, pace)?;
                }
                let original = &part[b.range.clone()];
                let (text, transform) = match b.kind {
                    Kind::Log if rules.collapse_repeats => content::collapse_repeats(original)
                        .map_or((None, Transform::Kept), |t| {
                            (Some(t), Transform::CollapsedRepeats)
                        }),
                    Kind::Data if rules.minify_json => content::minify_json(original)
                        .map_or((None, Transform::Kept), |t| {
                            (Some(t), Transform::MinifiedJson)
                        }),
                    _ => (None, Transform::Kept),
                };
                out.push(Piece {
                    region: Region::Verbatim(text.unwrap_or_else(|| original.to_string())),
                    kind: b.kind,
                    transform,
                    original: original.to_string(),
                });
            }
            if let Some((start, end, kind)) = run.take() {
                self.push_prose(&mut out, &part[start..end], kind, rate, pace)?;
            }
        }
        Ok(out)
    }

    /// A run of prose as compressible pieces: documents as one (the scorer sees the context,
    /// LLMLingua's coarse filter the documents), instructions line by line, so that a line that
    /// would vanish can be kept alone.
    fn push_prose(
        &self,
        out: &mut Vec<Piece>,
        text: &str,
        kind: Kind,
        rate: Option<f64>,
        pace: &mut Pace<'_>,
    ) -> Result<(), Interrupted> {
        if kind != Kind::Instructions {
            out.push(self.prose_piece(text, kind, rate, pace)?);
            return Ok(());
        }
        for line in text.split_inclusive('\n') {
            if line.trim().is_empty() {
                out.push(Piece {
                    region: Region::Verbatim(line.to_string()),
                    kind,
                    transform: Transform::Kept,
                    original: line.to_string(),
                });
            } else {
                out.push(self.prose_piece(line, kind, rate, pace)?);
            }
        }
        Ok(())
    }

    /// A compressible region of prose with its protected spans marked.
    fn prose_piece(
        &self,
        text: &str,
        kind: Kind,
        rate: Option<f64>,
        pace: &mut Pace<'_>,
    ) -> Result<Piece, Interrupted> {
        let mut spans = self.find_paced(text, pace)?;
        spans.extend(content::skeleton_spans(text, pace)?);
        let spans = merge(spans);
        let mut marked = String::with_capacity(text.len());
        let mut protected = Vec::with_capacity(spans.len());
        let mut at = 0;
        for r in spans {
            marked.push_str(&text[at..r.start]);
            marked.push_str(SPAN_MARKER);
            protected.push(text[r.clone()].to_string());
            at = r.end;
        }
        marked.push_str(&text[at..]);
        Ok(Piece {
            region: Region::Compress {
                text: marked,
                protected,
                rate,
            },
            kind,
            transform: Transform::Compressed,
            original: text.to_string(),
        })
    }

    fn regions_paced(&self, text: &str, pace: &mut Pace<'_>) -> Result<Vec<Region>, Interrupted> {
        let mut out = Vec::new();
        for (part, tag) in split_tags(text) {
            match tag {
                Tag::Keep => out.push(Region::Verbatim(part.to_string())),
                Tag::None | Tag::Rate(_) => {
                    let rate = match tag {
                        Tag::Rate(r) => Some(r),
                        _ => None,
                    };
                    let spans = self.find_paced(part, pace)?;
                    let mut marked = String::with_capacity(part.len());
                    let mut protected = Vec::with_capacity(spans.len());
                    let mut at = 0;
                    for r in spans {
                        marked.push_str(&part[at..r.start]);
                        marked.push_str(SPAN_MARKER);
                        protected.push(part[r.clone()].to_string());
                        at = r.end;
                    }
                    marked.push_str(&part[at..]);
                    out.push(Region::Compress {
                        text: marked,
                        protected,
                        rate,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl ContentRules {
    fn prose_kind(&self) -> Kind {
        match self.prose {
            Prose::Instructions => Kind::Instructions,
            Prose::Documents => Kind::Document,
        }
    }
}

/// Appends the matches of `re` in `text` to `out` (`trim`: as URLs, see [`trim_url`]).
fn regex_spans(
    re: &Regex,
    text: &str,
    trim: bool,
    pace: &mut Pace<'_>,
    out: &mut Vec<Range<usize>>,
) -> Result<(), Interrupted> {
    for m in re.find_iter(text) {
        pace.step()?;
        out.push(if trim {
            trim_url(text, m.range())
        } else {
            m.range()
        });
    }
    Ok(())
}

/// Whether `text` contains `<llmlingua` tags.
pub fn has_tags(text: &str) -> bool {
    text.contains("<llmlingua")
}

/// The text with `<llmlingua …>` / `</llmlingua>` tags removed (bodies kept).
pub fn strip_tags(text: &str) -> String {
    split_tags(text).into_iter().map(|(s, _)| s).collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tag {
    None,
    Keep,
    Rate(f64),
}

/// Splits on well-formed `<llmlingua[, rate=R][, compress=True|False]>…</llmlingua>` pairs
/// (not nested). An opening tag without a closing tag is left as text.
fn split_tags(text: &str) -> Vec<(&str, Tag)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut search = 0;
    while let Some(m) = OPEN_TAG.find_at(text, search) {
        let Some(close) = text[m.end()..].find(CLOSE_TAG).map(|i| i + m.end()) else {
            break;
        };
        let opts = &text[m.start() + "<llmlingua".len()..m.end()];
        let tag = if opts.contains("compress") && opts.contains("False") {
            Tag::Keep
        } else if let Some(r) = TAG_RATE
            .captures(opts)
            .and_then(|c| c[1].parse::<f64>().ok())
            .filter(|r| *r > 0.0 && *r <= 1.0)
        {
            Tag::Rate(r)
        } else {
            Tag::None
        };
        if m.start() > at {
            out.push((&text[at..m.start()], Tag::None));
        }
        out.push((&text[m.end()..close], tag));
        at = close + CLOSE_TAG.len();
        search = at;
    }
    if at < text.len() || out.is_empty() {
        out.push((&text[at..], Tag::None));
    }
    out
}

fn fenced_code(text: &str, pace: &mut Pace<'_>) -> Result<Vec<Range<usize>>, Interrupted> {
    let mut out = Vec::new();
    let mut open: Option<(usize, u8, usize)> = None; // (start, fence char, fence length)
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        pace.step()?;
        let trimmed = line.trim_start_matches([' ', '\t']);
        let fence_char = trimmed.as_bytes().first().copied();
        let run = |c: u8| trimmed.bytes().take_while(|b| *b == c).count();
        match open {
            None => {
                if let Some(c @ (b'`' | b'~')) = fence_char
                    && run(c) >= 3
                {
                    open = Some((line_start, c, run(c)));
                }
            }
            Some((start, c, n)) => {
                if fence_char == Some(c) && run(c) >= n && trimmed[run(c)..].trim().is_empty() {
                    let end = line_start + line.trim_end_matches(['\n', '\r']).len();
                    out.push(start..end);
                    open = None;
                }
            }
        }
        line_start += line.len();
    }
    if let Some((start, _, _)) = open {
        out.push(start..text.len());
    }
    Ok(out)
}

/// Cuts trailing punctuation and unbalanced closing brackets off a URL or path match. The
/// bracket balance of the whole match is counted once and updated as characters are cut, so a
/// match ending in a million `)` costs linear time.
fn trim_url(text: &str, r: Range<usize>) -> Range<usize> {
    let s = &text[r.clone()];
    // opens minus closes of s[..end], per bracket kind
    let mut balance = [0i64; 3];
    for c in s.chars() {
        match c {
            '(' => balance[0] += 1,
            ')' => balance[0] -= 1,
            '[' => balance[1] += 1,
            ']' => balance[1] -= 1,
            '{' => balance[2] += 1,
            '}' => balance[2] -= 1,
            _ => {}
        }
    }
    let mut end = s.len();
    while let Some(last) = s[..end].chars().next_back() {
        let kind = match last {
            ')' => Some(0),
            ']' => Some(1),
            '}' => Some(2),
            _ => None,
        };
        let unbalanced_close = kind.is_some_and(|k| balance[k] < 0);
        if matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"') || unbalanced_close {
            end -= last.len_utf8();
            if let Some(k) = kind {
                balance[k] += 1;
            }
        } else {
            break;
        }
    }
    r.start..r.start + end
}

fn path_is_plausible(text: &str, r: Range<usize>) -> bool {
    let s = &text[r.clone()];
    // A lone "/" or "a/b" style alternatives ("and/or") are not paths.
    if s.len() < 3 {
        return false;
    }
    // Don't start a path in the middle of a word ("km/h" is caught by the relative rule only
    // when it has an extension).
    let prev = text[..r.start].chars().last();
    !matches!(prev, Some(c) if c.is_alphanumeric())
}

/// Nesting deeper than serde_json's recursion limit never parses: such candidates are skipped.
const JSON_MAX_HEIGHT: u8 = 128;
/// Bytes handed to the JSON parser per byte of text, at most (plus a small constant).
const JSON_PARSE_BUDGET_PER_BYTE: usize = 8;

/// Objects and arrays that parse as JSON (not inside already-found spans), and the number of
/// bytes handed to the parser.
///
/// Candidates are bracket pairs found in one pass (string-aware inside brackets), each with its
/// nesting height and whether it holds any substance (a letter, digit or quote): "[1]"-style
/// citations and bare `[[]]` are never parsed. Candidates are tried outermost first; one that
/// parses is protected and its inner pairs are skipped. Every byte lies inside at most
/// [`JSON_MAX_HEIGHT`] candidates of height <= [`JSON_MAX_HEIGHT`], so the parse work is linear;
/// a hard budget of [`JSON_PARSE_BUDGET_PER_BYTE`] bytes per text byte stops detection on
/// adversarial input (the rest of the text is then treated as prose).
pub(crate) fn json_values_counted(
    text: &str,
    found: &[Range<usize>],
    pace: &mut Pace<'_>,
) -> Result<(Vec<Range<usize>>, usize), Interrupted> {
    struct Open {
        at: usize,
        kind: u8,
        height: u8,
        substance: bool,
    }
    let bytes = text.as_bytes();
    // (open, close, height, substance) of every matched pair, in order of the closer.
    let mut pairs: Vec<(usize, usize, u8, bool)> = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        pace.step()?;
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' || b == b'\n' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' if !stack.is_empty() => {
                in_string = true;
                if let Some(top) = stack.last_mut() {
                    top.substance = true;
                }
            }
            b'{' | b'[' => stack.push(Open {
                at: i,
                kind: b,
                height: 0,
                substance: false,
            }),
            b'}' | b']' => {
                let want = if b == b'}' { b'{' } else { b'[' };
                match stack.last() {
                    Some(top) if top.kind == want => {
                        let Some(done) = stack.pop() else { break };
                        let height = done.height.saturating_add(1);
                        pairs.push((done.at, i, height, done.substance));
                        if let Some(parent) = stack.last_mut() {
                            parent.height = parent.height.max(height);
                            parent.substance |= done.substance;
                        }
                    }
                    // a stray closer: forget the unbalanced openers
                    _ => stack.clear(),
                }
            }
            _ if b.is_ascii_alphanumeric() || b >= 0x80 => {
                if let Some(top) = stack.last_mut() {
                    top.substance = true;
                }
            }
            _ => {}
        }
    }
    pairs.sort_unstable_by_key(|p| p.0);
    let found = merge(found.to_vec());
    let in_found = |i: usize| {
        let k = found.partition_point(|r| r.start <= i);
        k > 0 && found[k - 1].contains(&i)
    };
    let budget = JSON_PARSE_BUDGET_PER_BYTE * bytes.len() + 4096;
    let mut work = 0usize;
    let mut out = Vec::new();
    let mut next_free = 0usize;
    for (open, close, height, substance) in pairs {
        pace.step()?;
        if open < next_free || !substance || height > JSON_MAX_HEIGHT || in_found(open) {
            continue;
        }
        let candidate = &text[open..=close];
        work += candidate.len();
        if work > budget {
            tracing::debug!("JSON span detection stopped: parse budget spent");
            break;
        }
        if serde_json::from_str::<IgnoredAny>(candidate).is_ok() {
            out.push(open..close + 1);
            next_free = close + 1;
        }
    }
    Ok((out, work))
}

fn merge(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.retain(|r| !r.is_empty());
    spans.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for r in spans {
        match out.last_mut() {
            Some(last) if r.start < last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classified_results_are_memoised_per_text_and_rules() {
        let d = SpanDetector::new(&["TICKET-\\d+".into()]).unwrap();
        let text = "You are the support assistant. Answer briefly and never promise refunds. \
                    Escalate TICKET-42 to the billing team at https://example.com/billing. "
            .repeat(8);
        let rules = |compress_instructions| ContentRules {
            tags: false,
            prose: Prose::Instructions,
            compress_instructions,
            minify_json: false,
            collapse_repeats: false,
        };
        let ctx = WorkCtx::none();
        let first = d.classified(&text, rules(true), &ctx).unwrap();
        assert_eq!(
            d.memo
                .0
                .get(&(
                    xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
                    text.len(),
                    rules(true)
                ))
                .map(|p| p.len()),
            Some(first.len())
        );
        assert_eq!(
            d.classified(&text, rules(true), &ctx).unwrap(),
            first,
            "a hit is the same"
        );
        assert_eq!(
            d.classify_now(&text, rules(false), &ctx).unwrap(),
            d.classified(&text, rules(false), &ctx).unwrap()
        );
        assert_ne!(
            d.classified(&text, rules(false), &ctx).unwrap(),
            first,
            "other rules, another entry"
        );
        // a detector with other patterns has its own memo
        let other = SpanDetector::new(&[]).unwrap();
        assert_eq!(
            other.classified(&text, rules(true), &ctx).unwrap(),
            other.classify_now(&text, rules(true), &ctx).unwrap()
        );
    }

    fn protected(text: &str) -> Vec<&str> {
        let d = SpanDetector::new(&[]).unwrap();
        d.find(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn each_builtin_kind() {
        let t = "Run this:\n```rust\nfn main() {}\n```\nthen `cargo test` and see https://example.com/a_(b). \
                 Mail ops@example.org about /var/log/syslog or src/compress/mod.rs and C:\\Users\\me\\x.txt. \
                 Payload {\"k\": [1, 2]} and and/or.";
        let p = protected(t);
        assert_eq!(
            p,
            [
                "```rust\nfn main() {}\n```",
                "`cargo test`",
                "https://example.com/a_(b)",
                "ops@example.org",
                "/var/log/syslog",
                "src/compress/mod.rs",
                "C:\\Users\\me\\x.txt",
                "{\"k\": [1, 2]}",
            ]
        );
    }

    #[test]
    fn json_inside_broken_json_and_prose() {
        let t = "log: {\"a\": [1, {\"b\": \"}\"}], \"c\": tru and then {\"ok\": true} end [x] \"quoted {\"k\": 1}";
        assert_eq!(protected(t), ["[1, {\"b\": \"}\"}]", "{\"ok\": true}"]);
        assert_eq!(protected("a \"quote and {\"k\": 1} b"), ["{\"k\": 1}"]);
        assert!(protected("not json {a: 1} or [x]").is_empty());
    }

    #[test]
    fn unclosed_fence_runs_to_the_end() {
        assert_eq!(protected("a\n~~~\ncode\nmore"), ["~~~\ncode\nmore"]);
    }

    #[test]
    fn keep_patterns_are_protected() {
        let d = SpanDetector::new(&[r"TICKET-\d+".into()]).unwrap();
        let t = "see TICKET-42 now";
        let r = d.find(t);
        assert_eq!(&t[r[0].clone()], "TICKET-42");
    }

    #[test]
    fn tags() {
        let t = "a <llmlingua, compress=False>keep me</llmlingua> b <llmlingua, rate=0.3>squeeze</llmlingua> c";
        let d = SpanDetector::none();
        let r = d.regions(t);
        assert_eq!(r.len(), 5);
        assert_eq!(r[1], Region::Verbatim("keep me".into()));
        assert!(
            matches!(&r[3], Region::Compress { text, rate: Some(x), .. } if text == "squeeze" && *x == 0.3)
        );
        assert_eq!(strip_tags(t), "a keep me b squeeze c");
        assert_eq!(strip_tags("x <llmlingua> y"), "x <llmlingua> y");
    }

    #[test]
    fn regions_mark_spans() {
        let d = SpanDetector::new(&[]).unwrap();
        let r = d.regions("use `x` here");
        assert_eq!(
            r,
            [Region::Compress {
                text: format!("use {SPAN_MARKER} here"),
                protected: vec!["`x`".into()],
                rate: None
            }]
        );
    }

    /// A long text past its deadline: span detection returns the deadline at the first step
    /// of each of its loops instead of scanning the text.
    #[test]
    fn expired_deadline_stops_detection_before_scanning() {
        use std::time::{Duration, Instant};
        let text = "see https://x.example/a and `code` {\"k\": [1]}\n".repeat(50_000);
        let d = SpanDetector::new(&["KEEP".into()]).unwrap();
        let ctx = WorkCtx::none();
        let mut full = ctx.pace(CHECK_EVERY);
        assert!(!d.find_paced(&text, &mut full).unwrap().is_empty());
        assert!(full.steps() > text.len(), "{}", full.steps());

        let past = WorkCtx::with_deadline(Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(d.regions_within(&text, &past), Err(Interrupted::Deadline));
        let mut pace = past.pace(CHECK_EVERY);
        assert_eq!(d.find_paced(&text, &mut pace), Err(Interrupted::Deadline));
        assert_eq!(pace.steps(), 1);
        let mut pace = past.pace(CHECK_EVERY);
        let mut out = Vec::new();
        assert_eq!(
            regex_spans(&URL, &text, true, &mut pace, &mut out),
            Err(Interrupted::Deadline)
        );
        assert_eq!((pace.steps(), out.len()), (1, 0));
        let mut pace = past.pace(CHECK_EVERY);
        assert_eq!(
            json_values_counted(&text, &[], &mut pace),
            Err(Interrupted::Deadline)
        );
        assert_eq!(pace.steps(), 1);
        // a context that is still running changes nothing
        let live = WorkCtx::with_deadline(Some(Instant::now() + Duration::from_secs(600)));
        assert_eq!(d.regions_within(&text, &live).unwrap(), d.regions(&text));
    }

    /// 2 MB inputs that were quadratic: a URL ending in a million `)` (trim_url recounted the
    /// brackets per trailing character: ~10^12 steps, it would not finish), and nested or flat
    /// brackets, where the parse work is counted.
    #[test]
    fn adversarial_brackets_take_linear_work() {
        const N: usize = 1 << 20;
        let url = format!("see http://x.example/a{}", ")".repeat(2 * N));
        assert_eq!(protected(&url), ["http://x.example/a"]);

        let nested = format!("{}{}", "[".repeat(N), "]".repeat(N));
        let nested_words = format!("{}\"k\"{}", "[".repeat(N), "]".repeat(N));
        let flat = "[\"a\"] [1, [2]] ".repeat(2 * N / 16);
        let objects = format!("{}{}", "{\"a\":[".repeat(N / 6), "]}".repeat(N / 6));
        for text in [&nested, &nested_words, &flat, &objects] {
            let (_, work) = json_values_counted(text, &[], &mut Pace::unbounded()).unwrap();
            assert!(
                work <= JSON_PARSE_BUDGET_PER_BYTE * text.len(),
                "{work} bytes parsed for {} bytes",
                text.len()
            );
            // The whole detector runs on it too (regexes, fences, merge).
            let d = SpanDetector::new(&[]).unwrap();
            let _ = d.find(text);
        }
        // Flat JSON is still found, every value of it.
        let (spans, work) = json_values_counted(&flat, &[], &mut Pace::unbounded()).unwrap();
        assert_eq!(spans.len(), 2 * (2 * N / 16));
        assert!(work <= 2 * flat.len(), "{work}");
        // Nested JSON deeper than the parser's limit is not JSON; shallower nesting is.
        let (spans, _) = json_values_counted(&nested_words, &[], &mut Pace::unbounded()).unwrap();
        assert_eq!(spans.len(), 1);
        let max = 2 * usize::from(JSON_MAX_HEIGHT) + 3;
        assert!(
            spans[0].len() <= max && spans[0].len() > max - 20,
            "{:?}",
            spans[0]
        );
    }
}
