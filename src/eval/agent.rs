//! The agent-integrity rules: what a compressed agent prompt may and may not have changed, checked
//! from the two texts alone (it shares no code with the classifier it judges).
//!
//! A compressed text obeys the rules when, after its lossless transforms are undone (collapsed
//! repeats expanded, JSON whitespace ignored, references to identical tool results resolved):
//! - it has the same lines as the original: none lost, none added;
//! - every structural line is byte for byte the same: code and line-numbered listings, diffs,
//!   stack traces and compiler errors, log lines (timestamps, levels, prompts), lines naming a
//!   severity or failure (`ERROR`, `FATAL`, `Error:`, `WARN`, `panic`, `Traceback`,
//!   `Exception`, `failed`), markdown headings, table rows, fences, XML-like tag lines,
//!   header-like and short `key: value` lines, JSON lines;
//! - every other line keeps its list or quote marker, its `key:` label, its XML-like tags, its
//!   identifiers (flags, dotted, snake-, kebab- and camel-case names, acronyms, words with
//!   digits, paths), its negations and conditions, at least one word, and invents no word
//!   (its words are a subsequence of the original's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::facts::{retained, tightest_window, words};
use crate::compress::{CompressError, Policy, RequestOptions, SkipReason, TokenizerKind};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule's name (`line_lost`, `structure_changed`, `identifier_lost`, ...).
    pub rule: &'static str,
    /// Where: a JSON path of the request (`messages[0].content`) and a line number.
    pub at: String,
    /// What changed, briefly.
    pub detail: String,
}

const REPEAT_PREFIX: &str = "[lingua-proxy: the line above repeats ";
const REFERENCE_PREFIX: &str = "[lingua-proxy: identical to the earlier tool result at ";

/// Words whose loss reverses or loosens a rule. The judge's own list, kept apart from
/// `crate::lexicon` on purpose: a benchmark that graded the compressor with the compressor's
/// own word list could not catch a word missing from it.
const NEGATIONS: &[&str] = &[
    "not", "never", "no", "cannot", "can't", "don't", "doesn't", "won't", "isn't", "aren't",
    "without", "unless", "except", "only", "must", "before", "after", "until", "avoid", "nor",
];

/// Severity and failure words: a line naming one is kept whole.
const SEVERITY: &[&str] = &[
    "ERROR",
    "FATAL",
    "WARN",
    "WARNING",
    "CRITICAL",
    "PANIC",
    "FAILED",
    "FAIL",
    "Traceback",
    "Exception",
    "panic",
    "panicked",
    "failed",
    "Failed",
];

const CODE_KEYWORDS: &[&str] = &[
    "def ",
    "class ",
    "fn ",
    "pub ",
    "impl ",
    "use ",
    "import ",
    "return ",
    "return;",
    "const ",
    "let ",
    "var ",
    "function ",
    "#include",
    "#!",
    "package ",
    "func ",
    "struct ",
    "enum ",
    "export ",
    "if (",
    "for (",
    "while (",
    "try:",
    "elif ",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "CREATE ",
    "RUN ",
    "COPY ",
    "FROM ",
];

/// Checks one text against its compressed form.
pub fn check_text(original: &str, compressed: &str) -> Vec<Violation> {
    check_text_at("", original, compressed)
}

fn violation(rule: &'static str, at: String, detail: impl Into<String>) -> Violation {
    Violation {
        rule,
        at,
        detail: detail.into(),
    }
}

fn check_text_at(path: &str, original: &str, compressed: &str) -> Vec<Violation> {
    if original == compressed {
        return Vec::new();
    }
    // JSON whose only change is whitespace outside strings.
    if json_without_whitespace(original).is_some()
        && json_without_whitespace(original) == json_without_whitespace(compressed)
    {
        return Vec::new();
    }
    // `<llmlingua …>` tags removed where they were honoured.
    let stripped;
    let original = if original.contains("<llmlingua") && !compressed.contains("<llmlingua") {
        stripped = strip_llmlingua_tags(original);
        stripped.as_str()
    } else {
        original
    };
    let expanded = expand_repeats(compressed);
    let o: Vec<&str> = original.split('\n').collect();
    let c: Vec<&str> = expanded.split('\n').collect();
    let at = |line: usize| format!("{path}:{}", line + 1);
    let mut out = Vec::new();
    // Align compressed lines to original ones in order: a compressed line stands for the first
    // remaining original line whose words it is a subsequence of; the lines skipped over were
    // dropped, which only plain prose with nothing protected on it may be.
    let (mut i, mut j) = (0, 0);
    while i < o.len() {
        if j < c.len() && o[i] == c[j] {
            i += 1;
            j += 1;
            continue;
        }
        if j < c.len() && !c[j].trim().is_empty() && stands_for(c[j], o[i]) {
            if let Some(why) = structural(o[i]) {
                out.push(violation(
                    "structure_changed",
                    at(i),
                    format!("{why} line changed: {:?} -> {:?}", o[i], c[j]),
                ));
            } else {
                out.extend(
                    check_prose_line(o[i], c[j])
                        .into_iter()
                        .map(|(rule, d)| violation(rule, at(i), d)),
                );
            }
            i += 1;
            j += 1;
            continue;
        }
        if j < c.len() && c[j].trim().is_empty() && o[i].trim().is_empty() {
            i += 1;
            j += 1;
            continue;
        }
        // o[i] was dropped.
        if let Some(why) = structural(o[i]) {
            out.push(violation(
                "line_lost",
                at(i),
                format!("{why} line {:?} is gone", o[i]),
            ));
        } else if !o[i].trim().is_empty() {
            out.extend(
                check_prose_line(o[i], "")
                    .into_iter()
                    .filter(|(rule, _)| *rule != "line_emptied")
                    .map(|(rule, d)| violation(rule, at(i), d)),
            );
        }
        i += 1;
    }
    if j < c.len() {
        out.push(violation(
            "line_added",
            path.to_string(),
            format!("{:?} matches no original line", c[j]),
        ));
    }
    out
}

/// Whether compressed line `c` is a (possibly damaged) form of original line `o`: its words
/// occur in order in `o`, or most of them occur in `o` at all.
fn stands_for(c: &str, o: &str) -> bool {
    let (cw, ow) = (words(c), words(o));
    subsequence(&cw, &ow) || cw.iter().filter(|w| ow.contains(w)).count() * 2 > cw.len()
}

/// Whether `a` occurs in order in `b`.
fn subsequence(a: &[&str], b: &[&str]) -> bool {
    let mut it = b.iter();
    a.iter().all(|w| it.any(|x| x == w))
}

/// Why a line must stay byte for byte, if it must.
fn structural(line: &str) -> Option<&'static str> {
    let t = line.trim();
    let lead = line.trim_start();
    if t.is_empty() {
        return None;
    }
    if lead.starts_with('#') && lead.trim_start_matches('#').starts_with(' ') {
        return Some("heading");
    }
    if t.starts_with('|') || t.starts_with("```") || t.starts_with("~~~") {
        return Some("table or fence");
    }
    if t.starts_with('<') && t.ends_with('>') {
        return Some("tag");
    }
    let digits = lead.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && (lead[digits..].starts_with('\t') || lead[digits..].starts_with('→')) {
        return Some("numbered listing");
    }
    for p in ["+++ ", "--- ", "@@ ", "diff ", "index "] {
        if line.starts_with(p) {
            return Some("diff");
        }
    }
    for p in [
        "File \"",
        "Traceback",
        "--> ",
        "Caused by:",
        "error[",
        "error:",
        "warning:",
    ] {
        if lead.starts_with(p) {
            return Some("trace");
        }
    }
    if line.starts_with(char::is_whitespace)
        && lead.starts_with("at ")
        && lead.contains(['(', ':'])
        && lead.contains(|c: char| c.is_ascii_digit())
    {
        return Some("trace");
    }
    if line.starts_with("$ ") || line.starts_with("> ") && line.contains(" --") {
        return Some("shell");
    }
    if lead.len() >= 10
        && lead.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && lead.as_bytes()[4] == b'-'
    {
        return Some("log");
    }
    if let Some(first) = severity_at(line) {
        // A status line: short, or opening on the word.
        if line.split_whitespace().count() <= 25 || first < 3 {
            return Some("severity");
        }
    }
    let mut tokens = line.split_whitespace();
    if let (Some(_), Some(level)) = (tokens.next(), tokens.next())
        && matches!(level, "warn" | "error" | "ERR!" | "WARN" | "ERROR")
    {
        return Some("log");
    }
    if CODE_KEYWORDS.iter().any(|k| lead.starts_with(k))
        || [";", "{", "}", "):", ")", "\\"]
            .iter()
            .any(|e| t.ends_with(e))
        || [
            "=>", "->", "::", "==", "!=", "&&", "||", " = ", "()", "+=", "${",
        ]
        .iter()
        .any(|op| t.contains(op))
    {
        return Some("code");
    }
    if t.starts_with('"') && t.contains("\":") || matches!(t, "{" | "}" | "[" | "]" | "}," | "],") {
        return Some("json");
    }
    if let Some((key, value)) = label(line) {
        let header = !key.contains(' ') && key.contains('-');
        if header || value.split_whitespace().count() <= 8 {
            return Some("key: value");
        }
    }
    None
}

/// The index (in whitespace-separated words) of the first severity or failure word.
fn severity_at(line: &str) -> Option<usize> {
    line.split_whitespace().position(|raw| {
        raw.split(|c: char| !c.is_alphanumeric())
            .any(|w| SEVERITY.contains(&w))
            || raw.contains("Error:")
            || raw.contains("error:")
    })
}

/// `key` and `value` of a `key: value` line (a short key before the first colon).
fn label(line: &str) -> Option<(&str, &str)> {
    let lead = line.trim_start();
    let lead = lead
        .strip_prefix("- ")
        .or_else(|| lead.strip_prefix("* "))
        .unwrap_or(lead);
    let (key, value) = lead.split_once(": ")?;
    let ok = !key.is_empty()
        && key.len() <= 40
        && !key.contains(['.', ',', ';', '!', '?', '(', '"'])
        && key.split_whitespace().count() <= 5;
    ok.then_some((key, value))
}

/// The list or quote marker at a line's start, with its indentation.
fn marker(line: &str) -> &str {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let m = if let Some(r) = ["- ", "* ", "+ ", "• ", "> "]
        .iter()
        .find(|m| rest.starts_with(**m))
    {
        r.len()
    } else {
        let d = rest.chars().take_while(char::is_ascii_digit).count();
        if d > 0 && (rest[d..].starts_with(". ") || rest[d..].starts_with(") ")) {
            d + 2
        } else {
            0
        }
    };
    &line[..indent + m]
}

/// Punctuation around a token that is not part of it.
const AROUND: &[char] = &[
    '.', ',', ';', ':', '!', '?', '(', ')', '[', ']', '"', '\'', '“', '”', '‘', '’',
];

/// The token with surrounding punctuation trimmed.
fn token(raw: &str) -> &str {
    raw.trim_matches(AROUND)
}

/// Whether a token names something an agent acts on.
fn identifier_like(t: &str) -> bool {
    if t.is_empty() || !t.chars().any(char::is_alphanumeric) {
        return false;
    }
    let chars: Vec<char> = t.chars().collect();
    let inner = |c: char| {
        chars
            .windows(3)
            .any(|w| w[1] == c && w[0].is_alphanumeric() && w[2].is_alphanumeric())
    };
    t.contains('_')
        || t.contains('`')
        || t.contains('/')
        || t.contains('@')
        || inner('-')
        || inner('.')
        || t.contains("::")
        || (t.starts_with('-') && chars.get(1).is_some_and(|c| c.is_alphabetic() || *c == '-'))
        || chars.iter().any(char::is_ascii_digit)
        || chars
            .windows(2)
            .any(|w| w[0].is_lowercase() && w[1].is_uppercase())
        || (chars.len() >= 2
            && chars.iter().filter(|c| c.is_alphabetic()).count() >= 2
            && chars.iter().all(|c| !c.is_alphabetic() || c.is_uppercase()))
}

/// XML-like tags in a line.
fn tags(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let name_ok = after
            .trim_start_matches('/')
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
        match after.find('>') {
            Some(end) if name_ok && !after[..end].contains('<') => {
                out.push(&rest[start..start + end + 2]);
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

fn check_prose_line(o: &str, c: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let ow = words(o);
    let cw = words(c);
    if !ow.is_empty() && cw.is_empty() {
        out.push(("line_emptied", format!("{o:?} lost every word")));
    }
    if marker(o) != marker(c) {
        out.push((
            "skeleton_changed",
            format!("marker {:?} -> {:?}", marker(o), marker(c)),
        ));
    }
    let mut it = ow.iter();
    for w in &cw {
        if !it.any(|x| x == w) {
            out.push(("invented_word", format!("{w:?} is not in order in {o:?}")));
            break;
        }
    }
    let kept: Vec<&str> = c.split_whitespace().map(token).collect();
    for t in o.split_whitespace().map(token) {
        if identifier_like(t) && !kept.contains(&t) {
            out.push(("identifier_lost", format!("{t:?} in {o:?} -> {c:?}")));
        }
    }
    let lower = |s: &str| s.to_lowercase().replace('’', "'");
    let kept_lower: Vec<String> = cw.iter().map(|w| lower(w)).collect();
    for w in &ow {
        let l = lower(w);
        if NEGATIONS.contains(&l.as_str()) && !kept_lower.contains(&l) {
            out.push(("negation_lost", format!("{w:?} in {o:?} -> {c:?}")));
        }
    }
    for w in o.split_whitespace() {
        if severity_at(w).is_some() && !c.split_whitespace().any(|x| x == w) {
            out.push(("severity_lost", format!("{w:?} in {o:?}")));
        }
    }
    for t in tags(o) {
        if !c.contains(t) {
            out.push(("tag_lost", format!("{t:?} in {o:?}")));
        }
    }
    if let Some((key, _)) = label(o)
        && !c.contains(&format!("{key}:"))
    {
        out.push(("label_lost", format!("{key:?}: in {o:?}")));
    }
    out
}

/// The text without `<llmlingua[, …]>` and `</llmlingua>` tags.
fn strip_llmlingua_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest
        .find("<llmlingua")
        .or_else(|| rest.find("</llmlingua>"))
    {
        let j = rest.find("</llmlingua>").filter(|j| *j < i).unwrap_or(i);
        out.push_str(&rest[..j]);
        match rest[j..].find('>') {
            Some(end) => rest = &rest[j + end + 1..],
            None => {
                rest = &rest[j..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Expands `[lingua-proxy: the line above repeats N more times]` markers.
fn expand_repeats(text: &str) -> String {
    if !text.contains(REPEAT_PREFIX) {
        return text.to_string();
    }
    let mut out: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let n = line
            .strip_prefix(REPEAT_PREFIX)
            .and_then(|r| r.strip_suffix(" more times]"))
            .and_then(|n| n.parse::<usize>().ok());
        match (n, out.last().cloned()) {
            (Some(n), Some(prev)) => out.extend(std::iter::repeat_n(prev, n)),
            _ => out.push(line.to_string()),
        }
    }
    out.join("\n")
}

/// The text without whitespace outside JSON strings, when it parses as JSON.
fn json_without_whitespace(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !ch.is_whitespace() {
            out.push(ch);
        }
    }
    Some(out)
}

/// Checks a forwarded request body against the client's: every value other than strings is
/// equal, keys keep their order, and every string that differs obeys [`check_text`] (or is a
/// reference to an identical earlier tool result).
pub fn check_bodies(original: &[u8], forwarded: &[u8]) -> Vec<Violation> {
    let (Ok(o), Ok(f)) = (
        serde_json::from_slice::<Value>(original),
        serde_json::from_slice::<Value>(forwarded),
    ) else {
        return if original == forwarded {
            Vec::new()
        } else {
            vec![violation(
                "structure_changed",
                String::new(),
                "a body that is not JSON changed",
            )]
        };
    };
    let mut out = Vec::new();
    walk(&o, &o, &f, &mut String::new(), &mut out);
    out
}

fn walk(root: &Value, o: &Value, f: &Value, path: &mut String, out: &mut Vec<Violation>) {
    match (o, f) {
        (Value::Object(a), Value::Object(b)) => {
            if !a.keys().eq(b.keys()) {
                out.push(violation("structure_changed", path.clone(), "keys differ"));
                return;
            }
            for (k, v) in a {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if let Some(w) = b.get(k) {
                    walk(root, v, w, path, out);
                }
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                out.push(violation(
                    "structure_changed",
                    path.clone(),
                    "array length differs",
                ));
                return;
            }
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(root, v, w, path, out);
                path.truncate(len);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            if let Some(target) = b
                .strip_prefix(REFERENCE_PREFIX)
                .and_then(|r| r.split_once(';'))
                .map(|(p, _)| p)
            {
                if lookup(root, target).and_then(Value::as_str) != Some(a.as_str())
                    || target == path.as_str()
                {
                    out.push(violation(
                        "bad_reference",
                        path.clone(),
                        format!("{target} does not hold the same text"),
                    ));
                }
                return;
            }
            out.extend(check_text_at(path, a, b));
        }
        _ if o != f => out.push(violation(
            "structure_changed",
            path.clone(),
            "value changed",
        )),
        _ => {}
    }
}

/// The value at a path written as `messages[3].content[0].text`.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = root;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            v = v.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// One case of the agent corpus (`benches/data/agent/NN-kind-name.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub id: String,
    /// The corpus kind (`code`, `diff`, `trace`, `compiler`, `test_failure`, `log`, `terminal`,
    /// `data`, `grep`, `prose`, `mixed`).
    pub kind: String,
    pub role: String,
    pub title: String,
    pub text: String,
    /// Ordered word lists that must survive (prose cases).
    pub facts: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    kind: String,
    #[serde(default = "tool_role")]
    role: String,
    #[serde(default)]
    title: String,
    text: Option<String>,
    /// A repository file rendered at load time (`cat-n`, `claude-read` or `plain`).
    file: Option<String>,
    render: Option<String>,
    lines: Option<[usize; 2]>,
    #[serde(default)]
    facts: Vec<FactEntry>,
}

/// A fact as a bare word list, or as the fact suite writes it (`{"kind", "tokens"}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FactEntry {
    Words(Vec<String>),
    Annotated { tokens: Vec<String> },
}

impl FactEntry {
    fn into_words(self) -> Vec<String> {
        match self {
            Self::Words(w) | Self::Annotated { tokens: w } => w,
        }
    }
}

fn tool_role() -> String {
    "tool".into()
}

/// Loads every `*.json` case of `dir`, in name order; `file` cases are read below `root`.
pub fn load_corpus(dir: &Path, root: &Path) -> Result<Vec<Case>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path.display().to_string();
        let raw = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
        let f: CaseFile = serde_json::from_str(&raw).map_err(|e| format!("{name}: {e}"))?;
        let text = match (f.text, f.file) {
            (Some(t), None) => t,
            (None, Some(file)) => render(
                &root.join(&file),
                f.render.as_deref().unwrap_or("plain"),
                f.lines,
            )
            .map_err(|e| format!("{name}: {file}: {e}"))?,
            _ => return Err(format!("{name}: give exactly one of `text` and `file`")),
        };
        let facts: Vec<Vec<String>> = f.facts.into_iter().map(FactEntry::into_words).collect();
        for fact in &facts {
            let w = words(&text);
            if tightest_window(&w, fact).is_none() {
                return Err(format!("{name}: fact {fact:?} does not occur in order"));
            }
        }
        out.push(Case {
            id: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: f.kind,
            role: f.role,
            title: f.title,
            text,
            facts,
        });
    }
    Ok(out)
}

/// A file as an agent's read tool returns it: `cat -n` (6-wide number, tab), Claude Code's
/// Read (6-wide number, `→`) or plain, lines `from..=to` (1-based).
fn render(path: &Path, how: &str, lines: Option<[usize; 2]>) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let [from, to] = lines.unwrap_or([1, usize::MAX]);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        if i + 1 > to {
            break;
        }
        match how {
            "cat-n" => out.push_str(&format!("{:>6}\t{line}\n", i + 1)),
            "claude-read" => out.push_str(&format!("{:>6}→{line}\n", i + 1)),
            "plain" => {
                out.push_str(line);
                out.push('\n');
            }
            other => {
                return Err(format!(
                    "unknown render {other:?} (cat-n, claude-read, plain)"
                ));
            }
        }
    }
    Ok(out)
}

/// What happened to one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    pub id: String,
    pub kind: String,
    pub tokens_before: usize,
    pub tokens_after: usize,
    pub skipped: Option<SkipReason>,
    /// Transforms applied, with how many pieces each.
    pub transforms: BTreeMap<&'static str, usize>,
    pub violations: Vec<Violation>,
    pub facts: usize,
    pub facts_kept: usize,
    pub compressed: String,
}

/// Runs one case through the policy as a lone message of its role.
pub fn run_case(
    policy: &Policy,
    case: &Case,
    tokenizer: TokenizerKind,
) -> Result<CaseOutcome, CompressError> {
    let opts = RequestOptions {
        explain: true,
        ..RequestOptions::default()
    };
    let r = policy.compress_message(&case.role, &[&case.text], tokenizer, &opts, None)?;
    let compressed = r
        .texts
        .first()
        .cloned()
        .flatten()
        .unwrap_or_else(|| case.text.clone());
    let mut transforms = BTreeMap::new();
    for p in &r.pieces {
        if p.before != p.after {
            *transforms.entry(p.transform.as_str()).or_insert(0) += 1;
        }
    }
    let (ow, cw) = (words(&case.text), words(&compressed));
    let facts_kept = case
        .facts
        .iter()
        .filter(|f| tightest_window(&ow, f).is_some_and(|w| retained(f, w, &cw)))
        .count();
    Ok(CaseOutcome {
        id: case.id.clone(),
        kind: case.kind.clone(),
        tokens_before: tokenizer.count(&case.text),
        tokens_after: tokenizer.count(&compressed),
        skipped: r.skipped,
        transforms,
        violations: check_text(&case.text, &compressed),
        facts: case.facts.len(),
        facts_kept,
        compressed,
    })
}

/// The client's body, the forwarded body and the violations between them.
pub type RequestCheck = (Vec<u8>, Vec<u8>, Vec<Violation>);

/// Every case as one Chat Completions request (a tool call and its result per case, then the
/// first tool result read again, and a final question), run through [`Policy::apply`], checked
/// with [`check_bodies`]. Returns the original and forwarded bodies and the violations.
pub fn run_request(policy: &Policy, cases: &[Case]) -> Result<RequestCheck, CompressError> {
    let mut messages =
        vec![serde_json::json!({"role": "system", "content": "You are a coding agent."})];
    let mut push = |i: usize, text: &str| {
        messages.push(
            serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("call_{i}"), "type": "function",
             "function": {"name": "read", "arguments": "{}"}}]}),
        );
        messages.push(serde_json::json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": text}));
    };
    for (i, c) in cases.iter().enumerate() {
        push(i, &c.text);
    }
    if let Some(first) = cases.iter().find(|c| c.kind == "code") {
        push(cases.len(), &first.text);
    }
    messages.push(serde_json::json!({"role": "user", "content": "What should I fix first?"}));
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": messages});
    let raw = serde_json::to_vec(&body).map_err(|e| CompressError::Internal(e.to_string()))?;
    let conv = crate::api::Api::ChatCompletions
        .surface()
        .conversation(&body)
        .unwrap_or_default();
    let out = policy.apply(&raw, &body, &conv, &RequestOptions::default())?;
    let forwarded = out.body.unwrap_or_else(|| raw.clone());
    let violations = check_bodies(&raw, &forwarded);
    Ok((raw, forwarded, violations))
}

/// Totals of a set of cases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindTotals {
    pub cases: usize,
    pub tokens_before: usize,
    pub tokens_after: usize,
    pub violations: usize,
    pub facts: usize,
    pub facts_kept: usize,
    pub transforms: BTreeMap<&'static str, usize>,
}

impl KindTotals {
    pub fn add(&mut self, o: &CaseOutcome) {
        self.cases += 1;
        self.tokens_before += o.tokens_before;
        self.tokens_after += o.tokens_after;
        self.violations += o.violations.len();
        self.facts += o.facts;
        self.facts_kept += o.facts_kept;
        for (t, n) in &o.transforms {
            *self.transforms.entry(t).or_insert(0) += n;
        }
    }

    /// Fraction of tokens saved.
    pub fn saving(&self) -> f64 {
        if self.tokens_before == 0 {
            0.0
        } else {
            1.0 - self.tokens_after as f64 / self.tokens_before as f64
        }
    }
}

/// Per corpus kind, and overall under `"all"`.
pub fn totals(outcomes: &[CaseOutcome]) -> BTreeMap<String, KindTotals> {
    let mut out: BTreeMap<String, KindTotals> = BTreeMap::new();
    for o in outcomes {
        out.entry(o.kind.clone()).or_default().add(o);
        out.entry("all".into()).or_default().add(o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(o: &str, c: &str) -> Vec<&'static str> {
        check_text(o, c).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn the_issues_damage_is_caught() {
        assert_eq!(
            rules("def parse(text: str) -> dict:", "def parse(text: ->"),
            ["structure_changed"]
        );
        assert_eq!(
            rules("- Is a git repository: false", "- repository:"),
            ["structure_changed"]
        );
        assert!(
            rules(
                "- Avoid unneeded complexity in your solution.",
                "- unneeded complexity solution."
            )
            .contains(&"negation_lost")
        );
        assert!(
            rules(
                "A delivery address can only be changed before the parcel reaches the final hub.",
                "delivery address can only be changed parcel reaches final hub."
            )
            .contains(&"negation_lost")
        );
        assert!(rules("# Memory\nkeep this text", "keep this text").contains(&"line_lost"));
        // A plain prose line may go; one with a negation may not.
        assert!(rules("Intro line here.\nThe rest stays.", "The rest stays.").is_empty());
        assert!(
            rules("It is not refundable.\nThe rest stays.", "The rest stays.")
                .contains(&"negation_lost")
        );
        assert!(rules("a b\nc d", "a b\nc d\ne").contains(&"line_added"));
        assert!(
            rules(
                "Use the skill-creator skill to make skills",
                "Use the skill to make skills"
            )
            .contains(&"identifier_lost")
        );
        assert!(
            rules(
                "<permissions instructions>Run tools freely here",
                "Run tools freely here"
            )
            .contains(&"tag_lost")
        );
        assert_eq!(
            rules("FATAL: disk is full now", "disk full"),
            ["structure_changed"]
        );
    }

    #[test]
    fn word_deletions_in_prose_pass() {
        assert!(
            rules(
                "The museum is quite large and it has a very nice garden.",
                "museum large has nice garden."
            )
            .is_empty()
        );
        assert_eq!(
            rules("The museum is large.", "The large museum."),
            ["invented_word"]
        );
        assert_eq!(
            rules("The museum is large and old.", "The museum large old."),
            Vec::<&str>::new()
        );
        assert_eq!(
            rules("The museum is large and old.", "The museum larger old."),
            ["invented_word"]
        );
    }

    #[test]
    fn lossless_transforms_pass() {
        let o = "start\nretry\nretry\nretry\nend";
        let c = format!("start\nretry\n{REPEAT_PREFIX}2 more times]\nend");
        assert!(check_text(o, &c).is_empty());
        assert!(check_text("{\n  \"a\": \"x  y\"\n}", "{\"a\":\"x  y\"}").is_empty());
        assert!(!check_text("{\n  \"a\": \"x  y\"\n}", "{\"a\":\"x y\"}").is_empty());
    }

    #[test]
    fn bodies_and_references() {
        let o = br#"{"m":[{"c":"same text"},{"c":"same text"}],"n":1}"#;
        let ok = br#"{"m":[{"c":"same text"},{"c":"[lingua-proxy: identical to the earlier tool result at m[0].c; not repeated to save tokens]"}],"n":1}"#;
        assert!(check_bodies(o, ok).is_empty());
        let bad = br#"{"m":[{"c":"same text"},{"c":"[lingua-proxy: identical to the earlier tool result at m[1].c; x]"}],"n":1}"#;
        assert_eq!(check_bodies(o, bad)[0].rule, "bad_reference");
        let changed = br#"{"m":[{"c":"same text"},{"c":"same text"}],"n":2}"#;
        assert_eq!(check_bodies(o, changed)[0].rule, "structure_changed");
    }
}
