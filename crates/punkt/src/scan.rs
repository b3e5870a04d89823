//! Hand-written scanners for NLTK Punkt's `PunktLanguageVars` regexes (the word
//! tokenizer, `period_context_re`, `re_boundary_realignment`), which use lookaround
//! that the `regex` crate lacks, plus Python's `str.strip` whitespace. All offsets are
//! byte offsets; scans step over whole characters.

/// Python `str.isspace` (used by `strip`/`rstrip`): Unicode White_Space plus the
/// information separators U+001C..U+001F.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `\s` of Python's `regex` module: Unicode White_Space.
fn re_space(c: char) -> bool {
    c.is_whitespace()
}

/// Python `s.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python `s.rstrip()`.
pub(crate) fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

/// `_re_non_word_chars`: characters that cannot appear within words.
fn non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// `_re_word_start`: characters a word token may start with.
fn word_start(c: char) -> bool {
    !matches!(
        c,
        '(' | '"'
            | '`'
            | '{'
            | '['
            | ':'
            | ';'
            | '&'
            | '#'
            | '*'
            | '@'
            | ')'
            | '}'
            | ']'
            | '-'
            | ','
    )
}

fn char_at(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

/// Length in bytes of `_re_multi_char_punct` (`-{2,}|\.{2,}|(?:\.\s){2,}\.`) matched at
/// `i`, if it matches.
fn multi_char(s: &str, i: usize) -> Option<usize> {
    let rest = &s[i..];
    let hyphens = rest.bytes().take_while(|&b| b == b'-').count();
    if hyphens >= 2 {
        return Some(hyphens);
    }
    let periods = rest.bytes().take_while(|&b| b == b'.').count();
    if periods >= 2 {
        return Some(periods);
    }
    // (?:\.\s){2,}\. : greedy repetitions, backtracking one when no final period.
    let mut ends = Vec::new(); // byte length after k repetitions
    let mut pos = 0;
    loop {
        let mut it = rest[pos..].chars();
        match (it.next(), it.next()) {
            (Some('.'), Some(w)) if re_space(w) => {
                pos += 1 + w.len_utf8();
                ends.push(pos);
            }
            _ => break,
        }
    }
    for k in (2..=ends.len()).rev() {
        let end = ends[k - 1];
        if rest[end..].starts_with('.') {
            return Some(end + 1);
        }
    }
    None
}

/// The word-end lookahead of the word tokenizer at byte `i` of `s`.
fn word_end_at(s: &str, i: usize) -> bool {
    let Some(c) = char_at(s, i) else {
        return true; // $
    };
    if re_space(c) || non_word(c) || multi_char(s, i).is_some() {
        return true;
    }
    if c == ',' {
        let j = i + 1;
        return match char_at(s, j) {
            None => true,
            Some(d) => re_space(d) || non_word(d) || multi_char(s, j).is_some(),
        };
    }
    false
}

/// `PunktLanguageVars.word_tokenize` on one line (no `\n` in it): the tokens, as slices.
pub(crate) fn word_tokenize(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let Some(c) = char_at(s, i) else { break };
        if re_space(c) {
            i += c.len_utf8();
            continue;
        }
        if let Some(n) = multi_char(s, i) {
            out.push(&s[i..i + n]);
            i += n;
            continue;
        }
        let mut e = i + c.len_utf8();
        if word_start(c) {
            // \S+? until the word-end lookahead holds (whitespace always ends it).
            while !word_end_at(s, e) {
                match char_at(s, e) {
                    Some(d) => e += d.len_utf8(),
                    None => break,
                }
            }
        }
        out.push(&s[i..e]);
        i = e;
    }
    out
}

/// One match of `period_context_re` with NLTK's decision context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndContext {
    /// Byte offset just after the sentence-end character.
    pub end: usize,
    /// Start of the `next_tok` group, if it matched.
    pub next_tok_start: Option<usize>,
    /// The previous word + the end character + `after_tok`.
    pub context: String,
}

struct PeriodMatch {
    start: usize,
    end: usize,
    after_end: usize,
    next_tok_start: Option<usize>,
}

/// `period_context_re().finditer(text)`: `[.?!](?=(?P<after_tok>NonWord|\s+(?P<next_tok>\S+)))`.
fn period_matches(text: &str) -> Vec<PeriodMatch> {
    let mut out = Vec::new();
    for (i, c) in text.char_indices() {
        if !matches!(c, '.' | '?' | '!') {
            continue;
        }
        let j = i + 1;
        let Some(d) = char_at(text, j) else { continue };
        if non_word(d) {
            out.push(PeriodMatch {
                start: i,
                end: j,
                after_end: j + d.len_utf8(),
                next_tok_start: None,
            });
            continue;
        }
        if !re_space(d) {
            continue;
        }
        let ws_end = j + text[j..]
            .char_indices()
            .find(|&(_, x)| !re_space(x))
            .map_or(text.len() - j, |(k, _)| k);
        if ws_end == text.len() {
            continue;
        }
        let tok_end = ws_end
            + text[ws_end..]
                .char_indices()
                .find(|&(_, x)| re_space(x))
                .map_or(text.len() - ws_end, |(k, _)| k);
        out.push(PeriodMatch {
            start: i,
            end: j,
            after_end: tok_end,
            next_tok_start: Some(ws_end),
        });
    }
    out
}

/// Index of the last ASCII whitespace (`string.whitespace`) in `s`, 0 when none.
fn last_whitespace_index(s: &str) -> usize {
    s.bytes()
        .rposition(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(0)
}

/// NLTK's `_match_potential_end_contexts`.
pub(crate) fn potential_end_contexts(text: &str) -> Vec<EndContext> {
    let mut out = Vec::new();
    let mut prev_slice = (0usize, 0usize);
    let mut prev_match: Option<PeriodMatch> = None;
    let ctx = |slice: (usize, usize), m: &PeriodMatch| EndContext {
        end: m.end,
        next_tok_start: m.next_tok_start,
        context: format!("{}{}", &text[slice.0..slice.1], &text[m.start..m.after_end]),
    };
    for m in period_matches(text) {
        let before = &text[prev_slice.1..m.start];
        let mut idx = last_whitespace_index(before);
        if idx != 0 {
            idx += prev_slice.1 + 1;
        } else {
            idx = prev_slice.0;
        }
        let word_slice = (idx, m.start);
        if let Some(pm) = &prev_match
            && prev_slice.1 <= word_slice.0
        {
            out.push(ctx(prev_slice, pm));
        }
        prev_match = Some(m);
        prev_slice = word_slice;
    }
    if let Some(pm) = &prev_match {
        out.push(ctx(prev_slice, pm));
    }
    out
}

/// Closing punctuation of `re_boundary_realignment`.
fn closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
    )
}

/// `re_boundary_realignment.match(s)`
/// (`["')\]}‘’“”«»]+?(?:\s+|(?=--)|$)`, MULTILINE): (length of the match, length of
/// the match with trailing whitespace stripped).
fn boundary_realignment(s: &str) -> Option<(usize, usize)> {
    let mut e = 0;
    loop {
        let c = char_at(s, e)?;
        if !closer(c) {
            return None;
        }
        e += c.len_utf8();
        match char_at(s, e) {
            None => return Some((e, e)),
            Some(d) if re_space(d) => {
                let ws = s[e..]
                    .char_indices()
                    .find(|&(_, x)| !re_space(x))
                    .map_or(s.len() - e, |(k, _)| k);
                return Some((e + ws, e));
            }
            Some(_) if s[e..].starts_with("--") => return Some((e, e)),
            Some(_) => {}
        }
    }
}

/// NLTK's `_realign_boundaries`: moves closing quotes/brackets after a break into the
/// sentence before it, and drops empty sentences.
pub(crate) fn realign_boundaries(text: &str, slices: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut realign = 0;
    for (k, &(s1, e1)) in slices.iter().enumerate() {
        let s1 = s1 + realign;
        let Some(&(s2, e2)) = slices.get(k + 1) else {
            if s1 < e1 {
                out.push((s1, e1));
            }
            continue;
        };
        let seg = if s2 < e2 { &text[s2..e2] } else { "" };
        if let Some((end, stripped)) = boundary_realignment(seg) {
            out.push((s1, s2 + stripped));
            realign = end;
        } else {
            realign = 0;
            if s1 < e1 {
                out.push((s1, e1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokenizer_splits_punctuation_but_not_periods() {
        assert_eq!(
            word_tokenize("Hello, world (really)! e.g. this..."),
            vec![
                "Hello", ",", "world", "(", "really", ")", "!", "e.g.", "this", "..."
            ]
        );
    }

    #[test]
    fn word_tokenizer_multichar_and_spaced_ellipsis() {
        assert_eq!(
            word_tokenize("a -- b . . . c"),
            vec!["a", "--", "b", ". . .", "c"]
        );
        assert_eq!(word_tokenize("x,y 1,000"), vec!["x,y", "1,000"]);
        assert_eq!(word_tokenize("end,"), vec!["end", ","]);
    }

    #[test]
    fn period_context_needs_a_following_token_or_punctuation() {
        let m = period_matches("A. B.\" c.");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].next_tok_start, Some(3));
        assert_eq!(m[1].next_tok_start, None);
    }

    #[test]
    fn realignment_match() {
        assert_eq!(boundary_realignment("\") next"), Some((3, 2)));
        assert_eq!(boundary_realignment("\"--x"), Some((1, 1)));
        assert_eq!(boundary_realignment("\"x"), None);
        assert_eq!(boundary_realignment("x\""), None);
    }

    #[test]
    fn python_whitespace() {
        assert!(py_isspace('\u{1c}') && !re_space('\u{1c}'));
        assert_eq!(py_rstrip("a \u{3000}\n"), "a");
    }
}
