//! Surface words and semantic units for the policy's meaning-keeping selection.
//!
//! A *word* is what a reader sees as one: a whitespace-delimited run (CJK characters are one
//! word each), so hyphenated compounds (`e-mail`), identifiers (`us-west-3`, `v2.3.1`), numbers
//! with sign, separators, decimals, percent or currency (`-25`, `1,000,000`, `$15`, `20%`),
//! times and dates (`09:30`, `2026-03-14`) are single words. The selection keeps or drops whole
//! words only, so its output is always the input with whole words deleted.
//!
//! A *unit* is a run of words kept or dropped together: a number with what gives it meaning
//! (the preposition or comparator before it, the unit, currency or counted noun after it), a
//! negation or limiting word with the words it governs, a capitalised multi-word name, a phrase
//! matched by `must_keep`. The look-ahead and look-behind are short and never cross a clause end
//! (`.,;:!?`) or a line break. English word lists only, for now.

use std::ops::Range;

use regex::Regex;

use crate::lexicon;
use crate::model::{Interrupted, Pace};

/// A surface word: `range` is its bytes in the text, `core` the same without leading and
/// trailing punctuation (used for classification only; the output always copies `range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub range: Range<usize>,
    pub core: Range<usize>,
}

/// CJK ideographs, kana and hangul syllables: one word per character.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF
        | 0x20000..=0x2FA1F)
}

/// Leading characters that are not part of a word's core.
fn lead_punct(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '(' | '[' | '{' | '<' | '«' | '“' | '‘' | '*' | '_' | '`' | '¿' | '¡'
    )
}

/// Trailing characters that are not part of a word's core.
fn trail_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | ';'
            | ':'
            | '!'
            | '?'
            | ')'
            | ']'
            | '}'
            | '>'
            | '"'
            | '\''
            | '»'
            | '”'
            | '’'
            | '*'
            | '_'
            | '`'
            | '…'
    )
}

/// Cuts `text` into surface words, in order.
pub fn words(text: &str) -> Vec<Word> {
    // An unbounded pace never interrupts.
    words_paced(text, &mut Pace::unbounded()).unwrap_or_default()
}

/// [`words`], one pace step per character.
pub fn words_paced(text: &str, pace: &mut Pace<'_>) -> Result<Vec<Word>, Interrupted> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let push = |s: usize, e: usize, out: &mut Vec<Word>| {
        let w = &text[s..e];
        let lead = w.len() - w.trim_start_matches(lead_punct).len();
        let rest = &w[lead..];
        let core_len = rest.trim_end_matches(trail_punct).len();
        let core = if core_len == 0 {
            s..e
        } else {
            s + lead..s + lead + core_len
        };
        out.push(Word { range: s..e, core });
    };
    for (i, c) in text.char_indices() {
        pace.step()?;
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                push(s, i, &mut out);
            }
        } else if is_cjk(c) {
            if let Some(s) = start.take() {
                push(s, i, &mut out);
            }
            push(i, i + c.len_utf8(), &mut out);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        push(s, text.len(), &mut out);
    }
    Ok(out)
}

/// Which units to form and which words to always keep.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepRules {
    /// Numbers with their units, and capitalised multi-word names, are units; number units
    /// are always kept.
    pub units: bool,
    /// Negations and limiting words with what they govern are units, always kept.
    pub negations: bool,
    /// Regexes; a match that starts and ends on word boundaries keeps the words it covers,
    /// as one unit.
    pub must_keep: Vec<String>,
}

impl Default for KeepRules {
    fn default() -> Self {
        Self {
            units: true,
            negations: true,
            must_keep: Vec::new(),
        }
    }
}

/// A run of words kept or dropped together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Word indices.
    pub words: Range<usize>,
    /// Always kept (a number or negation unit under the rules, a forced word inside).
    pub forced: bool,
    /// Not forced, but a capitalised multi-word name or a content word in a clause that holds a
    /// forced unit (the subject of a price, the object of a rule): the selection prefers it to
    /// other words.
    pub preferred: bool,
}

/// Words that carry no content on their own (skipped by look-aheads).
const STOP: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "by", "with", "from", "and", "or", "is",
    "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those",
    "as", "into", "then", "so", "can", "could", "will", "would", "shall", "should", "may", "might",
    "do", "does", "did", "has", "have", "had", "you", "your", "we", "our", "they", "their", "he",
    "she", "his", "her", "i", "me", "my", "us", "them", "which", "who", "whom", "what", "when",
    "where", "how", "if", "also", "per", "each", "every", "any", "all", "there", "here", "but",
    "via", "about", "over", "under", "after", "before", "up", "please", "while",
];

/// Conjunctions that end a look-ahead once it has taken a content word.
const CONJUNCTIONS: &[&str] = &["and", "or", "but", "so", "then", "which", "that", "while"];

/// Words before a number that say what the number means (`within 48 hours`, `up to 10`).
const NUMBER_BEFORE: &[&str] = &[
    "within",
    "down",
    "or",
    "under",
    "over",
    "above",
    "below",
    "up",
    "to",
    "least",
    "most",
    "at",
    "than",
    "more",
    "less",
    "fewer",
    "about",
    "around",
    "approximately",
    "roughly",
    "exactly",
    "nearly",
    "almost",
    "per",
    "every",
    "after",
    "before",
    "by",
    "until",
    "till",
    "from",
    "since",
    "maximum",
    "minimum",
    "max",
    "min",
    "only",
    "just",
    "no",
    "later",
    "earlier",
    "past",
    "last",
    "next",
    "first",
    "limit",
    "cap",
    "costs",
    "cost",
    "is",
    "are",
    "was",
    "were",
    "be",
];

/// Auxiliaries a negation may follow (`do not`, `are never`).
const AUX: &[&str] = &[
    "do", "does", "did", "is", "are", "was", "were", "be", "can", "could", "will", "would",
    "should", "shall", "may", "might", "must", "has", "have", "had", "am",
];

/// Two-word limits whose second word starts the unit (`at most`, `more than`, `up to`).
fn limit_pair(prev: &str, w: &str) -> bool {
    matches!(
        (prev, w),
        ("at", "most" | "least")
            | (
                "more" | "less" | "fewer" | "later" | "earlier" | "greater" | "rather",
                "than"
            )
            | ("up", "to")
            | ("no", "more" | "less" | "later" | "earlier" | "fewer")
    )
}

/// One classified word.
#[derive(Debug, Clone)]
struct Info {
    lower: String,
    number: bool,
    stop: bool,
    negation: bool,
    capital: bool,
    /// The word ends a clause (`.,;:!?` after it).
    clause_end: bool,
    /// A line break follows the word.
    line_end: bool,
}

fn classify(text: &str, words: &[Word], pace: &mut Pace<'_>) -> Result<Vec<Info>, Interrupted> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            pace.step()?;
            let core = &text[w.core.clone()];
            let surface = &text[w.range.clone()];
            let lower = core.to_lowercase().replace('\u{2019}', "'");
            let number = core.chars().any(|c| c.is_numeric());
            let negation =
                lexicon::is_negation(&lower) || lexicon::LIMITS.contains(&lower.as_str());
            let capital = core.chars().next().is_some_and(char::is_uppercase)
                && core.chars().any(char::is_alphabetic);
            let clause_end = surface
                .trim_end_matches(['"', '\'', ')', ']', '}', '”', '’', '*', '_', '`'])
                .ends_with(['.', ',', ';', ':', '!', '?', '…']);
            let next_start = words.get(i + 1).map_or(text.len(), |n| n.range.start);
            let line_end = text[w.range.end..next_start].contains('\n');
            Ok(Info {
                stop: STOP.contains(&lower.as_str()),
                lower,
                number,
                negation,
                capital,
                clause_end,
                line_end,
            })
        })
        .collect()
}

/// Whether a unit may extend from word `i` to word `i + 1`.
fn joined(info: &[Info], i: usize) -> bool {
    info.get(i)
        .is_some_and(|w| !w.clause_end && !w.line_end && i + 1 < info.len())
}

/// Content words a number or negation governs, at most.
const GOVERNED_WORDS: usize = 3;
/// Stopwords a look-ahead skips, at most.
const SKIPPED_STOPS: usize = 2;

/// The words after `i` that a number or negation governs: up to [`GOVERNED_WORDS`] content
/// words, skipping up to [`SKIPPED_STOPS`] stopwords; a number ends the look-ahead (its own
/// unit continues it), and so does another negation once a content word was taken. Returns the
/// last word index taken.
fn look_ahead(info: &[Info], i: usize, through_negations: bool) -> usize {
    let mut last = i;
    let mut j = i;
    let mut stops = 0;
    let mut content = 0;
    let mut negations = 0;
    while joined(info, j) {
        j += 1;
        let w = &info[j];
        if w.number {
            if content == 0 {
                last = j;
            }
            break;
        }
        if w.negation {
            // a chain of negations is walked GOVERNED_WORDS deep at most: a text of a million
            // "not" stays linear
            if through_negations && content == 0 && negations < GOVERNED_WORDS {
                negations += 1;
                last = j;
                continue;
            }
            break;
        }
        if w.stop {
            // a conjunction after the governed words starts the next clause
            if content > 0 && CONJUNCTIONS.contains(&w.lower.as_str()) {
                break;
            }
            stops += 1;
            if stops > SKIPPED_STOPS {
                break;
            }
            continue;
        }
        content += 1;
        last = j;
        if content == GOVERNED_WORDS {
            break;
        }
    }
    last
}

/// One content word directly before `first` (the subject of a number or negation: `Price
/// €1,049`, `keyboard is not backlit`), when no clause end or line break separates them.
fn subject_before(info: &[Info], first: usize) -> usize {
    match first.checked_sub(1) {
        Some(p) if joined(info, p) && !info[p].stop && !info[p].number && !info[p].negation => p,
        _ => first,
    }
}

/// How far back from `i` the comparator words before a number reach (`no more than 5`).
fn number_look_behind(info: &[Info], i: usize) -> usize {
    let mut first = i;
    while first > 0 && first + 3 > i && joined(info, first - 1) {
        let prev = &info[first - 1];
        if NUMBER_BEFORE.contains(&prev.lower.as_str()) || prev.lower.starts_with('$') {
            first -= 1;
        } else {
            break;
        }
    }
    first
}

/// Groups `words` into units under `rules`. `forced[i]` marks words always kept (spans, force
/// tokens, digits); their unit is forced too. Every word belongs to exactly one unit, in order.
pub fn units(text: &str, words: &[Word], rules: &KeepRules, forced: &[bool]) -> Vec<Unit> {
    // An unbounded pace never interrupts.
    units_paced(text, words, rules, forced, &mut Pace::unbounded()).unwrap_or_default()
}

/// [`units`], with pace steps per word in each pass and per `must_keep` match.
pub fn units_paced(
    text: &str,
    words: &[Word],
    rules: &KeepRules,
    forced: &[bool],
    pace: &mut Pace<'_>,
) -> Result<Vec<Unit>, Interrupted> {
    let info = classify(text, words, pace)?;
    let n = words.len();
    // (first, last, forced) spans; overlapping spans merge.
    let mut spans: Vec<(usize, usize, bool)> = Vec::new();
    let mut names: Vec<(usize, usize)> = Vec::new();
    for i in 0..n {
        pace.step()?;
        let w = &info[i];
        if rules.units && w.number {
            let first = subject_before(&info, number_look_behind(&info, i));
            let last = look_ahead(&info, i, false);
            spans.push((first, last, true));
        }
        if rules.negations {
            let prev = i.checked_sub(1).map(|p| info[p].lower.as_str());
            let pair = prev.is_some_and(|p| limit_pair(p, &w.lower)) && joined(&info, i - 1);
            if w.negation || pair {
                let mut first = if pair { i - 1 } else { i };
                // "no more than", "not more than": the negation before the pair
                if pair && first > 0 && joined(&info, first - 1) && info[first - 1].negation {
                    first -= 1;
                }
                if first > 0
                    && joined(&info, first - 1)
                    && AUX.contains(&info[first - 1].lower.as_str())
                {
                    first -= 1;
                }
                let first = subject_before(&info, first);
                let last = look_ahead(&info, i, true);
                spans.push((first, last, true));
            }
        }
        // capitalised multi-word names: grouped, not forced; scanned from their first word
        // only, so a long run of capitalised words is walked once
        let starts_name =
            i == 0 || !(info[i - 1].capital && !info[i - 1].stop && joined(&info, i - 1));
        if rules.units && w.capital && !w.stop && joined(&info, i) && starts_name {
            let mut last = i;
            while joined(&info, last) && info[last + 1].capital && !info[last + 1].stop {
                last += 1;
            }
            if last > i {
                names.push((i, last));
                spans.push((i, last, false));
            }
        }
    }
    for pattern in &rules.must_keep {
        let Ok(re) = Regex::new(pattern) else {
            continue;
        };
        for m in re.find_iter(text) {
            pace.step()?;
            // cores are in text order and disjoint: binary searches, not scans per match
            let first = words.partition_point(|w| w.core.start < m.start());
            let first =
                (words.get(first).map(|w| w.core.start) == Some(m.start())).then_some(first);
            let last = words.partition_point(|w| w.core.end < m.end());
            let last = (words.get(last).map(|w| w.core.end) == Some(m.end())).then_some(last);
            if let (Some(a), Some(b)) = (first, last)
                && a <= b
            {
                spans.push((a, b, true));
            }
        }
    }
    spans.sort_unstable();
    let mut out: Vec<Unit> = Vec::with_capacity(n);
    let mut next = 0;
    let mut k = 0;
    while next < n {
        pace.step()?;
        // spans starting at or before `next` extend the current unit
        let mut end = next;
        let mut is_forced = forced.get(next).copied().unwrap_or(false);
        while k < spans.len() && spans[k].0 <= end {
            if spans[k].1 >= next {
                end = end.max(spans[k].1);
                is_forced |= spans[k].2;
            }
            k += 1;
        }
        is_forced |= forced.get(next..=end).is_some_and(|f| f.iter().any(|x| *x));
        out.push(Unit {
            words: next..end + 1,
            forced: is_forced,
            preferred: false,
        });
        next = end + 1;
    }
    if rules.units || rules.negations {
        prefer_fact_clauses(&info, &mut out);
    }
    // multi-word names are preferred too (names are disjoint and in order, like the units: one
    // merge-like pass)
    let mut j = 0;
    for u in out.iter_mut() {
        while names.get(j).is_some_and(|&(a, _)| a < u.words.start) {
            j += 1;
        }
        if !u.forced
            && names
                .get(j)
                .is_some_and(|&(a, b)| a < u.words.end && b < u.words.end)
        {
            u.preferred = true;
        }
    }
    Ok(out)
}

/// Marks the content units of every clause that holds a forced unit as preferred. A clause
/// ends at `.,;:!?` or a line break.
fn prefer_fact_clauses(info: &[Info], units: &mut [Unit]) {
    let mut start = 0;
    while start < units.len() {
        let mut end = start;
        while end < units.len() {
            let last = units[end].words.end - 1;
            end += 1;
            if !joined(info, last) {
                break;
            }
        }
        if units[start..end].iter().any(|u| u.forced) {
            for u in &mut units[start..end] {
                u.preferred = !u.forced && u.words.clone().any(|w| !info[w].stop);
            }
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface(text: &str) -> Vec<&str> {
        words(text).iter().map(|w| &text[w.range.clone()]).collect()
    }

    fn groups(text: &str, rules: &KeepRules) -> Vec<(String, bool)> {
        let ws = words(text);
        let forced = vec![false; ws.len()];
        units(text, &ws, rules, &forced)
            .into_iter()
            .map(|u| {
                let s = ws[u.words.start].range.start;
                let e = ws[u.words.end - 1].range.end;
                (text[s..e].to_string(), u.forced)
            })
            .collect()
    }

    fn unit_of<'a>(g: &'a [(String, bool)], needle: &str) -> &'a (String, bool) {
        g.iter()
            .find(|(s, _)| s.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {g:?}"))
    }

    #[test]
    fn surface_words_stay_whole() {
        assert_eq!(
            surface("an e-mail to billing-api on us-west-3, v2.3.1 at 09:30 (-25%) $1,000.50"),
            [
                "an",
                "e-mail",
                "to",
                "billing-api",
                "on",
                "us-west-3,",
                "v2.3.1",
                "at",
                "09:30",
                "(-25%)",
                "$1,000.50"
            ]
        );
        assert_eq!(surface("中文 ok\n\tnext"), ["中", "文", "ok", "next"]);
        let t = "(-25%),";
        let w = &words(t)[0];
        assert_eq!(&t[w.core.clone()], "-25%");
        assert_eq!(surface("  "), Vec::<&str>::new());
    }

    #[test]
    fn numbers_keep_their_units() {
        let r = KeepRules::default();
        let g = groups(
            "The plan costs $9 a month, refunds within 48 hours and calls take 250 ms at -10 °C.",
            &r,
        );
        assert_eq!(
            unit_of(&g, "$9"),
            &("plan costs $9 a month,".to_string(), true)
        );
        assert_eq!(
            unit_of(&g, "48"),
            &("refunds within 48 hours".to_string(), true)
        );
        assert_eq!(
            unit_of(&g, "250"),
            &("take 250 ms at -10 °C.".to_string(), true)
        );
        let g = groups("Keep 3 business days of logs and at most 5 users.", &r);
        assert_eq!(
            unit_of(&g, "3"),
            &("Keep 3 business days of logs".to_string(), true)
        );
        assert_eq!(unit_of(&g, "5"), &("at most 5 users.".to_string(), true));
    }

    #[test]
    fn negations_keep_what_they_govern() {
        let r = KeepRules::default();
        let g = groups(
            "Please do not ride the escalator. Monthly plans are never refunded, except annual ones.",
            &r,
        );
        assert_eq!(
            unit_of(&g, "not"),
            &("do not ride the escalator.".to_string(), true)
        );
        assert_eq!(
            unit_of(&g, "never"),
            &("plans are never refunded,".to_string(), true)
        );
        assert_eq!(
            unit_of(&g, "except"),
            &("except annual ones.".to_string(), true)
        );
        let g = groups("Agents must not share passwords. Staff can't leave", &r);
        assert_eq!(
            unit_of(&g, "must"),
            &("Agents must not share passwords.".to_string(), true)
        );
        assert_eq!(
            unit_of(&g, "can't"),
            &("Staff can't leave".to_string(), true)
        );
        let off = KeepRules {
            negations: false,
            ..KeepRules::default()
        };
        assert_eq!(unit_of(&groups("do not ride", &off), "not").0, "not");
    }

    #[test]
    fn names_group_without_forcing_and_units_stop_at_lines() {
        let r = KeepRules::default();
        let g = groups("We met Maria Lopez of Northwind Traders today", &r);
        assert_eq!(unit_of(&g, "Maria"), &("Maria Lopez".to_string(), false));
        assert_eq!(
            unit_of(&g, "Northwind"),
            &("Northwind Traders".to_string(), false)
        );
        let g = groups("costs 5\nfoo bar", &r);
        assert_eq!(unit_of(&g, "5"), &("costs 5".to_string(), true));
        assert_eq!(unit_of(&g, "foo").0, "foo");
        let off = KeepRules {
            units: false,
            negations: false,
            must_keep: vec![],
        };
        assert!(groups("We met Maria Lopez at 5 pm", &off).len() == 7);
    }

    #[test]
    fn must_keep_matches_whole_words() {
        let r = KeepRules {
            must_keep: vec!["(?i)refund".into(), "no later than".into()],
            ..KeepRules::default()
        };
        let g = groups("Refund now, refunds later, pay no later than noon", &r);
        assert_eq!(unit_of(&g, "Refund"), &("Refund".to_string(), true));
        assert_eq!(unit_of(&g, "refunds"), &("refunds".to_string(), false));
        assert!(unit_of(&g, "later than").1);
    }

    #[test]
    fn units_cover_every_word_once() {
        let text = "At most 3 of the 12 nodes, not more than 2 GB; Ann Lee never at 5";
        let ws = words(text);
        let mut forced = vec![false; ws.len()];
        forced[1] = true;
        let us = units(text, &ws, &KeepRules::default(), &forced);
        let mut next = 0;
        for u in &us {
            assert_eq!(u.words.start, next);
            assert!(u.words.end > u.words.start);
            next = u.words.end;
        }
        assert_eq!(next, ws.len());
        assert!(us[0].forced);
    }
}
