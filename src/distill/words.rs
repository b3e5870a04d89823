//! Words for labelling, in the spec's "native mode" (§2.8): a rule tokenizer approximating
//! spaCy's English tokenizer, with each word's surface text kept beside its match key.
//!
//! - Whitespace separates words; a whitespace run holding a line break is a word itself (spaCy
//!   emits `\n` and `\n\n`); other whitespace is not.
//! - Leading and trailing punctuation is peeled off into words of its own; commas (`,` and the
//!   full-width `，`) are dropped, as the reference drops `,`.
//! - Inside a word, `-`, `/`, `+`, `=`, `…` between letters or digits split it (`e-mail` →
//!   `e - mail`, `30+20` → `30 + 20`); digit groups (`1,000,000`, `3.5`) stay whole.
//! - English contractions split off `n't`, `'s`, `'m`, `'re`, `'ve`, `'ll`, `'d`.
//! - CJK: every Han ideograph and every hiragana is a word; a katakana run is one word. The
//!   reference leaves a whole Chinese sentence as one word, so nothing in it can be labelled.
//!
//! The key is the lower-cased surface; with `normalise`, a light English suffix folding
//! (plural -s/-es, -ed, -ing) lets "parks" match "park". The reference's keys are spaCy lemmas,
//! so it folds tense and plurals by part of speech, and also sometimes gives one surface two
//! lemmas in two contexts (spec example 1); native keys never do.

/// One word: what the text says, and what alignment compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub surface: String,
    pub key: String,
}

fn is_cjk_single(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F // Han
        | 0x3040..=0x309F) // hiragana
}

fn is_katakana(c: char) -> bool {
    matches!(c as u32, 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9D)
}

fn is_dropped(s: &str) -> bool {
    s == "," || s == "，"
}

const CONTRACTIONS: [&str; 7] = ["n't", "'s", "'m", "'re", "'ve", "'ll", "'d"];

/// Splits `text` into words (see the module docs).
pub fn split(text: &str, normalise: bool) -> Vec<Word> {
    let mut out = Vec::new();
    let mut push = |surface: &str| {
        if surface.is_empty() || is_dropped(surface) {
            return;
        }
        out.push(Word {
            surface: surface.to_string(),
            key: key(surface, normalise),
        });
    };
    let mut rest = text;
    while !rest.is_empty() {
        let ws_len = rest
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        if ws_len > 0 {
            let ws = &rest[..ws_len];
            if ws.contains('\n') {
                // spaCy keeps the line breaks (and what follows them on the line) as one word
                push(
                    ws.trim_start_matches([' ', '\t'])
                        .trim_end_matches([' ', '\t']),
                );
            }
            rest = &rest[ws_len..];
            continue;
        }
        let end = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        split_chunk(&rest[..end], &mut push);
        rest = &rest[end..];
    }
    out
}

/// One whitespace-free chunk: CJK runs, then punctuation peeling, infixes and contractions.
fn split_chunk(chunk: &str, push: &mut impl FnMut(&str)) {
    let mut start = 0;
    let mut iter = chunk.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_cjk_single(c) {
            split_latin(&chunk[start..i], push);
            push(&chunk[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        } else if is_katakana(c) {
            split_latin(&chunk[start..i], push);
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = iter.peek() {
                if !is_katakana(d) {
                    break;
                }
                end = j + d.len_utf8();
                iter.next();
            }
            push(&chunk[i..end]);
            start = end;
        } else if !c.is_alphanumeric() && c as u32 >= 0x3000 && c as u32 <= 0x303F {
            // CJK punctuation (。、「」) is a word of its own
            split_latin(&chunk[start..i], push);
            push(&chunk[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    split_latin(&chunk[start..], push);
}

fn split_latin(s: &str, push: &mut impl FnMut(&str)) {
    if s.is_empty() {
        return;
    }
    if !s.chars().any(char::is_alphanumeric) {
        // `--`, `...`, `$`: punctuation standing alone is one word
        push(s);
        return;
    }
    // Leading punctuation, one character a word.
    let mut core = s;
    let mut lead = Vec::new();
    while let Some(c) = core.chars().next() {
        if c.is_alphanumeric() || (c == '\'' && core.len() > 1 && !core[1..].starts_with('\'')) {
            break;
        }
        lead.push(&core[..c.len_utf8()]);
        core = &core[c.len_utf8()..];
    }
    // Trailing punctuation, kept in order.
    let mut trail = Vec::new();
    while let Some(c) = core.chars().next_back() {
        if c.is_alphanumeric() {
            break;
        }
        // a period inside an abbreviation (U.S.) stays when the core has other periods
        if c == '.' && core[..core.len() - 1].contains('.') && core.len() > 2 {
            break;
        }
        let at = core.len() - c.len_utf8();
        trail.push(&core[at..]);
        core = &core[..at];
    }
    for p in lead {
        push(p);
    }
    split_infixes(core, push);
    for p in trail.into_iter().rev() {
        push(p);
    }
}

/// `e-mail` → `e - mail`, `30+20` → `30 + 20`, `don't` → `do n't`; digit groups stay.
fn split_infixes(s: &str, push: &mut impl FnMut(&str)) {
    if s.is_empty() {
        return;
    }
    let lower = s.to_lowercase();
    for c in CONTRACTIONS {
        if lower.len() > c.len() && lower.ends_with(c) && s.is_char_boundary(s.len() - c.len()) {
            let at = s.len() - c.len();
            split_infixes(&s[..at], push);
            push(&s[at..]);
            return;
        }
    }
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut start = 0;
    for (n, &(i, c)) in chars.iter().enumerate() {
        let between = n > 0
            && n + 1 < chars.len()
            && chars[n - 1].1.is_alphanumeric()
            && chars[n + 1].1.is_alphanumeric();
        let digit_group = (c == ',' || c == '.')
            && n > 0
            && n + 1 < chars.len()
            && chars[n - 1].1.is_ascii_digit()
            && chars[n + 1].1.is_ascii_digit();
        if between && !digit_group && matches!(c, '-' | '/' | '+' | '=' | '…' | ',') {
            push(&s[start..i]);
            push(&s[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    push(&s[start..]);
}

/// The match key of a surface word.
pub fn key(surface: &str, normalise: bool) -> String {
    let lower = surface.to_lowercase();
    if !normalise || !lower.chars().all(|c| c.is_ascii_alphabetic()) || lower.len() < 4 {
        return lower;
    }
    for (suffix, keep) in [("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")] {
        // "class", "status", "plus", "analysis" are not plurals
        if let Some(stem) = lower.strip_suffix(suffix)
            && stem.len() >= 3
            && !["ss", "us", "is"].iter().any(|e| lower.ends_with(e))
        {
            return format!("{stem}{keep}");
        }
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surfaces(text: &str) -> Vec<String> {
        split(text, false).into_iter().map(|w| w.surface).collect()
    }

    #[test]
    fn english_rules_like_spacy_tokens() {
        assert_eq!(
            surfaces("The cats were running."),
            ["The", "cats", "were", "running", "."]
        );
        assert_eq!(
            surfaces("I'm sure it isn't the Mayor's decision,"),
            [
                "I", "'m", "sure", "it", "is", "n't", "the", "Mayor", "'s", "decision"
            ]
        );
        assert_eq!(
            surfaces("Item 12-345, the $1,000,000 plan -- approved.\n\nNext."),
            [
                "Item",
                "12",
                "-",
                "345",
                "the",
                "$",
                "1,000,000",
                "plan",
                "--",
                "approved",
                ".",
                "\n\n",
                "Next",
                "."
            ]
        );
        assert_eq!(
            surfaces("3 hours/chapter 30+20"),
            ["3", "hours", "/", "chapter", "30", "+", "20"]
        );
        assert_eq!(
            surfaces("U.S. e-mail 3.5%"),
            ["U.S.", "e", "-", "mail", "3.5", "%"]
        );
    }

    #[test]
    fn cjk_text_yields_words() {
        assert_eq!(
            surfaces("我们明天开会。请准时参加，谢谢"),
            [
                "我", "们", "明", "天", "开", "会", "。", "请", "准", "时", "参", "加", "谢", "谢"
            ]
        );
        assert_eq!(surfaces("テスト中です"), ["テスト", "中", "で", "す"]);
    }

    #[test]
    fn keys_fold_case_and_optionally_suffixes() {
        assert_eq!(key("Parks", false), "parks");
        assert_eq!(key("Parks", true), "park");
        assert_eq!(key("running", true), "runn");
        assert_eq!(key("runs", true), key("run", true));
        assert_eq!(key("class", true), "class");
        assert_eq!(key("3.5", true), "3.5");
    }
}
