//! Content kinds: what each piece of a text is, decided before anything is scored.
//!
//! A text is cut into line-aligned blocks, each of one [`Kind`]. Only prose may be compressed:
//! natural-language documents always, an operator's instructions only when the configuration
//! says so (and then only between their skeleton). Everything agents act on (code, diffs,
//! traces and compiler errors, logs and terminal output, structured data, header-like metadata,
//! the markdown/XML skeleton) is forwarded byte for byte, except for the lossless transforms
//! here, each switchable: JSON without insignificant whitespace, runs of repeated log lines
//! collapsed with an explicit count.
//!
//! Invariants: the blocks cover the text exactly, in order, cut at line ends; detection is
//! linear in the text (one pass over lines, a bounded look-back per paragraph) and stops at the
//! work context's deadline; the same text always yields the same blocks.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::{Interrupted, Pace};

/// What a block of text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Natural-language documents: articles, tickets, transcripts, retrieved passages, e-mails.
    Document,
    /// An operator's or agent's instructions (prose of a role whose `prose` is `instructions`).
    Instructions,
    /// The skeleton of a text: markdown headings, rules, XML-like tag lines.
    Markup,
    /// Source code, fenced or not, and line-numbered listings.
    Code,
    /// Diffs and patches.
    Diff,
    /// Stack traces, compiler errors and test-runner failures.
    Trace,
    /// Logs and terminal output (timestamps, levels, prompts, grep hits, aligned tables).
    Log,
    /// Structured data: JSON, YAML, TOML, XML, CSV, markdown tables, `key: value` lines.
    Data,
    /// Header-like metadata lines (`x-anthropic-billing-header: …`).
    Meta,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Instructions => "instructions",
            Self::Markup => "markup",
            Self::Code => "code",
            Self::Diff => "diff",
            Self::Trace => "trace",
            Self::Log => "log",
            Self::Data => "data",
            Self::Meta => "meta",
        }
    }

    /// Whether blocks of this kind are prose (the only kinds a scorer may touch).
    pub fn is_prose(self) -> bool {
        matches!(self, Self::Document | Self::Instructions)
    }

    pub const ALL: [Kind; 9] = [
        Self::Document,
        Self::Instructions,
        Self::Markup,
        Self::Code,
        Self::Diff,
        Self::Trace,
        Self::Log,
        Self::Data,
        Self::Meta,
    ];
}

/// How a role's prose is read: as instructions (kept by default) or as documents (compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prose {
    Instructions,
    #[default]
    Documents,
}

impl Prose {
    fn kind(self) -> Kind {
        match self {
            Self::Instructions => Kind::Instructions,
            Self::Documents => Kind::Document,
        }
    }
}

/// A line-aligned piece of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: Kind,
    /// Byte range in the text, from a line start to just after a line end (or the text's end).
    pub range: Range<usize>,
}

/// Per-line evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Blank,
    /// Definitely this kind, on its own.
    Strong(Kind),
    /// Looks like code (operators, keywords, a trailing brace or semicolon).
    CodeLike,
    /// `key: value` / `key = value` with a short value, or a YAML list entry of a few words.
    Pair,
    /// Plain prose.
    Prose,
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new($pat).ok());
    };
}

fn is(re: &LazyLock<Option<Regex>>, s: &str) -> bool {
    re.as_ref().is_some_and(|r| r.is_match(s))
}

re!(PROMPT, r"^(\$ \S|\S+@\S+:\S*[$#] |❯ |PS [A-Z]:\\)");
re!(HEADING, r"^ {0,3}#{1,6}(\s|$)");
re!(FRAMED, r"^\s*([-=*_#~]{2,})\s+\S.*\s([-=*_#~]{2,})\s*$");
re!(RULE, r"^ {0,3}([-*_=])( *[-*_=]){2,} *$");
re!(
    TAG_LINE,
    r#"^\s*</?[A-Za-z][\w:.-]*(\s+[\w:.-]+(=("[^"]*"|'[^']*'|[^\s>]+))?)*\s*/?>\s*$"#
);
re!(NUMBERED_LISTING, r"^\s{0,8}\d{1,7}(\t|→| {1,2}[|│] |: {2})");
re!(
    DIFF_HEAD,
    r"^(diff --git |diff -[a-zA-Z]+ |index [0-9a-f]{5,}\.\.|--- (a/|b/|/dev/null|\S+\s+\d{4}-)|\+\+\+ (a/|b/|/dev/null|\S+\s+\d{4}-)|@@ -\d+(,\d+)? \+\d+(,\d+)? @@|(new|deleted) file mode \d+|similarity index \d+%|rename (from|to) \S|Binary files .* differ$)"
);
re!(
    TRACE,
    r#"^(Traceback \(most recent call last\):|\s+File ".*", line \d+|\s+at [\w$.<>/\[\]-]+.*[(:]\S*\d|\s+at (async )?\S+ \(.*\)$|Caused by: |\s*\.\.\. \d+ (more|common frames omitted)|thread '.*' panicked at|stack backtrace:|\s*\d+: +(0x[0-9a-f]+ - )?[\w:<>$]+::|note: run with `RUST_BACKTRACE|[\w.]*(Error|Exception|Warning)(: .*)?$|\s*(at|in) [\w./\\-]+:\d+(:\d+)?$|E +\S|_{5,} .* _{5,}$|={5,} .* ={5,}$|FAILED |PASSED |ERROR |FAIL |PASS |---- \S+ stdout ----)"#
);
re!(
    COMPILER,
    r"^((error|warning|note|help)(\[[A-Z]?\d+\])?: |\s*--> \S+:\d+(:\d+)?|\s*\d*\s*\|( |$)|\s*= (note|help): |\S+:\d+:\d+: (fatal )?(error|warning|note)|\S+\(\d+,\d+\): (error|warning)|\S+:\d+:\d+ - (error|warning) |\s*\^~*\s*$)"
);
re!(
    LOG_LINE,
    r"^(\s*\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|\s*\[?\d{2}:\d{2}:\d{2}([.,]\d+)?\]? |\s*[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} |\s*\[?(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE|PANIC)\]?[\s:]|\s*(I|W|E|F)\d{4} \d{2}:\d{2}|\d{1,3}(\.\d{1,3}){3} - \S+ \[|\$ \S|\S+ (warn|error|notice|ERR!|WARN|ERROR)\b|\S+@\S+:\S*[$#] |❯ |>>> |PS [A-Z]:\\|[\w./-]+\.\w+:\d+[:-])"
);
re!(
    SEVERITY,
    r"(\b(ERROR|FATAL|WARN|WARNING|CRITICAL|PANIC|FAILED|FAIL|Traceback|Exception|panicked|panic|failed|Failed|FAILURE)\b|\b(Error|error|Warning|warning):)"
);
re!(
    CODE_START,
    r"^\s*(//|/\*|\*/|-- |<!--|def |class |async def |fn |pub |impl |use |mod |import |from \S+ import |#include|#define |#!|function |const |let |var |return\b|if \(|if .*:$|for \(|for .* in .*:$|while \(|switch \(|case .*:$|package |func |struct |enum |type \w+ = |interface |export |module\.exports|@\w+(\(|$)|try:$|try \{|except\b.*:$|catch \(|else\b|elif .*:$|SELECT |INSERT |UPDATE |CREATE |ALTER |DROP |FROM |WHERE |FROM \w|RUN |COPY |ENV |WORKDIR |CMD |ENTRYPOINT |EXPOSE )"
);
re!(
    CODE_END,
    r"([;{}\\]|\)\s*\{|=>\s*\{?|\):|\]\)|\),?|\(\))\s*$"
);
re!(
    CODE_OPS,
    r"(==|!=|=>|->|::|&&|\|\||\+=|-=|\*=|/=|<=|>=|\(\)|\$\{| = |^\s*[\w.\[\]'\x22]+\s*=\s*\S|\w\[\w*\]|\bself\.|\bthis\.|\bnew \w+\(|\w+\(\w[^)]*\)\s*$)"
);
re!(
    META,
    r"^\s*([-*]\s+)?[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)+: \S"
);
re!(TOML_SECTION, r"^\s*\[\[?[\w.\x22 -]+\]\]?\s*$");
re!(
    JSONISH,
    r#"^\s*("[^"]*"\s*:|[\[\]{}],?\s*$|[\[{]\s*$|[\]}]\s*[,\]}]*\s*$)"#
);
re!(TABLE_ROW, r"^\s*\|.*\|\s*$");

/// Evidence for one line (without its line end).
fn line_evidence(line: &str) -> Line {
    let t = line.trim();
    if t.is_empty() {
        return Line::Blank;
    }
    if is(&HEADING, line) || is(&RULE, line) || is(&TAG_LINE, line) || is(&FRAMED, line) {
        return Line::Strong(Kind::Markup);
    }
    if is(&NUMBERED_LISTING, line) {
        return Line::Strong(Kind::Code);
    }
    if is(&DIFF_HEAD, line) {
        return Line::Strong(Kind::Diff);
    }
    if is(&TABLE_ROW, line) {
        return Line::Strong(Kind::Data);
    }
    if is(&TRACE, line) || is(&COMPILER, line) {
        return Line::Strong(Kind::Trace);
    }
    if is(&LOG_LINE, line) {
        return Line::Strong(Kind::Log);
    }
    if is(&META, line) {
        return Line::Strong(Kind::Meta);
    }
    if is(&TABLE_ROW, line) || is(&TOML_SECTION, line) || is(&JSONISH, line) {
        return Line::Strong(Kind::Data);
    }
    if is(&CODE_START, line) || is(&CODE_END, line) || is(&CODE_OPS, line) {
        return Line::CodeLike;
    }
    if pair(line) {
        return Line::Pair;
    }
    // Lines that read as a status (short, or opening on the word) with a severity or failure
    // word are kept whole; in a long prose line the word itself is protected.
    if severity_line(line) {
        return Line::Strong(Kind::Log);
    }
    Line::Prose
}

/// `key: value` (or `key = value`) with a short key and a value of at most eight words, or a
/// bare `key:`.
fn pair(line: &str) -> bool {
    let lead = line.trim_start();
    let lead = lead
        .strip_prefix("- ")
        .or_else(|| lead.strip_prefix("* "))
        .unwrap_or(lead);
    let split = lead
        .split_once(": ")
        .or_else(|| lead.strip_suffix(':').map(|k| (k, "")))
        .or_else(|| lead.split_once(" = "));
    let Some((key, value)) = split else {
        return false;
    };
    !key.trim().is_empty()
        && key.len() <= 40
        && !key.contains([',', ';', '!', '?', '('])
        && key.split_whitespace().count() <= 5
        && value.split_whitespace().count() <= 8
}

/// A short line (at most 25 words) naming a severity or failure, or one whose first three
/// words do.
fn severity_line(line: &str) -> bool {
    let Some(re) = SEVERITY.as_ref() else {
        return false;
    };
    let Some(m) = re.find(line) else {
        return false;
    };
    line.split_whitespace().count() <= 25 || line[..m.start()].split_whitespace().count() < 3
}

/// Container tags whose prose is a document.
const DOCUMENT_TAGS: &[&str] = &[
    "document",
    "documents",
    "doc",
    "docs",
    "article",
    "passage",
    "passages",
    "search_result",
    "search_results",
    "result",
    "results",
    "source",
    "sources",
    "page",
    "email",
    "transcript",
    "ticket",
    "context_document",
    "retrieved",
    "html",
    "body",
    "main",
    "section",
    "div",
];

/// The name of an XML-like tag at the start of a line, and whether it closes.
fn tag_at_start(line: &str) -> Option<(String, bool)> {
    let rest = line.trim_start().strip_prefix('<')?;
    let (closing, rest) = match rest.strip_prefix('/') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
        .collect();
    let after = &rest[name.len()..];
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && after.contains('>')
        && !after[..after.find('>').unwrap_or(0)].ends_with('/')
        && (after.starts_with('>') || after.starts_with(char::is_whitespace));
    ok.then_some((name, closing))
}

/// A line of a diff body (after a diff header).
fn diff_body(line: &str) -> bool {
    line.is_empty()
        || matches!(line.as_bytes()[0], b' ' | b'+' | b'-' | b'\\')
        || is(&DIFF_HEAD, line)
}

/// Whether a line of an aligned terminal table: two or more gaps of two spaces between cells.
fn aligned(line: &str) -> bool {
    let t = line.trim();
    t.split("  ").filter(|c| !c.trim().is_empty()).count() >= 3
}

/// Cuts `text` into blocks. `prose` says how plain prose reads in this text's role.
pub fn classify(text: &str, prose: Prose, pace: &mut Pace<'_>) -> Result<Vec<Block>, Interrupted> {
    // Lines with their byte ranges (line end included).
    let mut lines: Vec<(Range<usize>, Option<Kind>, Line)> = Vec::new();
    let mut at = 0;
    for raw in text.split_inclusive('\n') {
        pace.step()?;
        let content = raw.trim_end_matches(['\n', '\r']);
        lines.push((at..at + raw.len(), None, line_evidence(content)));
        at += raw.len();
    }
    let line_text = |r: &Range<usize>| text[r.clone()].trim_end_matches(['\n', '\r']);

    // Prose inside an XML-like container reads by the container: a document's
    // (`<document>`, `<search_results>`, ...) is a document, any other's (`<system-reminder>`,
    // `<user_instructions>`, `<permissions instructions>`, ...) is instructions, whatever the
    // role: agents put their rules inside user messages so.
    let mut container: Vec<Option<Kind>> = Vec::with_capacity(lines.len());
    let mut open: Vec<(String, Kind)> = Vec::new();
    for (range, _, _) in &lines {
        pace.step()?;
        let l = line_text(range);
        let before = open.last().map(|t| t.1);
        if let Some((name, closing)) = tag_at_start(l) {
            if closing {
                if let Some(k) = open.iter().rposition(|(n, _)| *n == name) {
                    open.truncate(k);
                }
            } else if !l.contains(&format!("</{name}")) && open.len() < 64 {
                let kind = if DOCUMENT_TAGS.contains(&name.to_ascii_lowercase().as_str()) {
                    Kind::Document
                } else {
                    Kind::Instructions
                };
                open.push((name, kind));
            }
        }
        // A line that opens or closes a container belongs to it.
        container.push(open.last().map(|t| t.1).or(before));
    }

    // Pass 1: fences, diffs and trace continuations (stateful, in order).
    let mut fence: Option<(u8, usize)> = None;
    let mut in_diff = false;
    let mut in_trace = false;
    let mut in_output = false;
    for (range, kind, ev) in lines.iter_mut() {
        pace.step()?;
        let l = line_text(range);
        // The output of a shell command runs to the next blank line.
        if is(&PROMPT, l) {
            in_output = true;
        } else if l.trim().is_empty() {
            in_output = false;
        } else if in_output && fence.is_none() {
            *kind = Some(Kind::Log);
            continue;
        }
        let trimmed = l.trim_start_matches([' ', '\t']);
        let first = trimmed.as_bytes().first().copied();
        let run = |c: u8| trimmed.bytes().take_while(|b| *b == c).count();
        if let Some((c, n)) = fence {
            *kind = Some(Kind::Code);
            if first == Some(c) && run(c) >= n && trimmed[run(c)..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if let Some(c @ (b'`' | b'~')) = first
            && run(c) >= 3
        {
            fence = Some((c, run(c)));
            *kind = Some(Kind::Code);
            in_diff = false;
            in_trace = false;
            continue;
        }
        if *ev == Line::Strong(Kind::Diff) {
            in_diff = true;
        }
        if in_diff {
            if diff_body(l) {
                *kind = Some(Kind::Diff);
                continue;
            }
            in_diff = false;
        }
        if *ev == Line::Strong(Kind::Trace) {
            in_trace = true;
        } else if in_trace {
            // Indented lines under a trace header belong to it (source lines, carets).
            if l.starts_with([' ', '\t']) && !l.trim().is_empty() {
                *kind = Some(Kind::Trace);
                continue;
            }
            in_trace = false;
        }
    }

    // Pass 2: paragraphs (runs of non-blank lines not yet decided) by their majority.
    let n = lines.len();
    let mut i = 0;
    while i < n {
        pace.step()?;
        if lines[i].2 == Line::Blank || lines[i].1.is_some() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && lines[i].2 != Line::Blank && lines[i].1.is_none() {
            i += 1;
        }
        let para = start..i;
        let count =
            |f: &dyn Fn(&Line) -> bool| lines[para.clone()].iter().filter(|l| f(&l.2)).count();
        let len = para.len();
        let code = count(&|l| matches!(l, Line::CodeLike | Line::Strong(Kind::Code)));
        let pairs = count(&|l| matches!(l, Line::Pair | Line::Strong(Kind::Data | Kind::Meta)));
        let prose_lines = count(&|l| *l == Line::Prose);
        let body = &text[lines[start].0.start..lines[i - 1].0.end];
        let texts = || lines[para.clone()].iter().map(|l| line_text(&l.0));
        let indented = texts().all(|l| l.starts_with("    ") || l.starts_with('\t'));
        let aligned_lines = texts().filter(|l| aligned(l)).count();
        let multi = len >= 2;
        let paragraph_kind = if json_value(body)
            || multi && (pairs * 5 >= len * 3 && prose_lines * 4 <= len || csv(texts()))
        {
            Some(Kind::Data)
        } else if multi && (code * 2 >= len || indented) {
            Some(Kind::Code)
        } else if multi && aligned_lines * 3 >= len * 2 {
            Some(Kind::Log)
        } else {
            None
        };
        for (l, inside) in lines[para.clone()].iter_mut().zip(&container[para]) {
            l.1 = Some(match (paragraph_kind, l.2) {
                (Some(k), _) => k,
                (None, Line::Strong(k)) => k,
                (None, Line::CodeLike) => Kind::Code,
                (None, Line::Pair) => Kind::Data,
                (None, _) => inside.unwrap_or(prose.kind()),
            });
        }
    }

    // Pass 3: in a text that is mostly machine output (a log, a listing, test output), short
    // prose paragraphs are part of what surrounds them (commit subjects, captions, runner
    // notes). Headings, tables and `key: value` lines do not make a text machine output.
    let machine =
        |k: Option<Kind>| matches!(k, Some(Kind::Code | Kind::Diff | Kind::Trace | Kind::Log));
    let total = lines.iter().filter(|l| l.2 != Line::Blank).count();
    let output = lines
        .iter()
        .filter(|l| l.2 != Line::Blank && machine(l.1))
        .count();
    if total > 0 && output * 5 >= total * 3 {
        // The next machine-output kind at or after each line (one backward pass).
        let mut next_machine: Vec<Option<Kind>> = vec![None; n + 1];
        for k in (0..n).rev() {
            next_machine[k] = if machine(lines[k].1) {
                lines[k].1
            } else {
                next_machine[k + 1]
            };
        }
        let mut i = 0;
        let mut last: Option<Kind> = None;
        while i < n {
            pace.step()?;
            if lines[i].2 != Line::Blank && lines[i].1.is_some_and(Kind::is_prose) {
                let start = i;
                while i < n && lines[i].2 != Line::Blank && lines[i].1.is_some_and(Kind::is_prose) {
                    i += 1;
                }
                let next = next_machine[i];
                if i - start <= 2
                    && let Some(k) = last.or(next)
                {
                    for l in &mut lines[start..i] {
                        l.1 = Some(k);
                    }
                }
                continue;
            }
            if machine(lines[i].1) {
                last = lines[i].1;
            }
            i += 1;
        }
    }

    // Blocks: runs of one kind; a blank line joins the block before it.
    let mut blocks: Vec<Block> = Vec::new();
    for (range, kind, ev) in lines {
        let kind = match (kind, ev) {
            (Some(k), _) => k,
            (None, _) => match blocks.last() {
                Some(b) => b.kind,
                None => prose.kind(),
            },
        };
        match blocks.last_mut() {
            Some(b) if b.kind == kind => b.range.end = range.end,
            _ => blocks.push(Block { kind, range }),
        }
    }
    Ok(blocks)
}

/// Whether `s` (trimmed) is one JSON object or array.
fn json_value(s: &str) -> bool {
    let t = s.trim();
    (t.starts_with('{') && t.ends_with('}') || t.starts_with('[') && t.ends_with(']'))
        && serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
}

/// Lines with the same number (at least two) of commas and short cells.
fn csv<'a>(mut lines: impl Iterator<Item = &'a str>) -> bool {
    let Some(first) = lines.next() else {
        return false;
    };
    let commas = first.matches(',').count();
    if commas < 2 {
        return false;
    }
    let short = |l: &str| l.split(',').all(|c| c.split_whitespace().count() <= 4);
    short(first) && lines.all(|l| l.matches(',').count() == commas && short(l))
}

re!(
    LIST_MARKER,
    r"(?m)^[ \t]*(?:[-*+•]|\d{1,3}[.)]|[a-zA-Z][.)]|>)[ \t]+"
);
re!(
    LABEL,
    r"(?m)^[ \t]*(?:(?:[-*+•]|\d{1,3}[.)])[ \t]+)?[^\s:][^:\n]{0,40}?:[ \t]"
);
re!(
    INLINE_TAG,
    r#"</?[A-Za-z][\w:.-]*(?:\s+[\w:.-]+(?:=(?:"[^"]*"|'[^']*'|[^\s>]+))?)*\s*/?>"#
);
/// Punctuation around a token that is not part of it.
const TRIM: &[char] = &[
    '.', ',', ';', ':', '!', '?', '(', ')', '[', ']', '"', '\'', '“', '”', '‘', '’',
];

/// Whether a token names something an agent acts on: a flag, a path, a dotted, scoped, snake-,
/// kebab- or camel-case name, an acronym, a handle, a word with digits.
fn identifier(t: &str) -> bool {
    let b = t.as_bytes();
    if !t.chars().any(char::is_alphanumeric) {
        return false;
    }
    let joined = |sep: u8| {
        b.windows(3)
            .any(|w| w[1] == sep && w[0].is_ascii_alphanumeric() && w[2].is_ascii_alphanumeric())
    };
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    // Quantities, dates and numbers with dashes are the meaning rules' (kept with their units).
    if letters == 0 || t.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    t.contains(['_', '`', '/', '@', '\\'])
        || t.contains("::")
        || joined(b'-')
        || joined(b'.')
        || letter_then_digit(t)
        || (t.starts_with('-') && t[1..].starts_with(|c: char| c.is_alphabetic() || c == '-'))
        || t.chars()
            .zip(t.chars().skip(1))
            .any(|(a, b)| a.is_lowercase() && b.is_uppercase())
        || (letters >= 2 && t.chars().all(|c| !c.is_alphabetic() || c.is_uppercase()))
}

/// A letter before a digit (`v1`, `HTTP2`, `sha256`, `ab12cd`): a name, not a quantity.
/// Numbers with their units are the meaning rules' (`keep_units`), which keep the comparator
/// and the unit with them.
fn letter_then_digit(t: &str) -> bool {
    let mut letter = false;
    for c in t.chars() {
        if c.is_alphabetic() {
            letter = true;
        } else if c.is_ascii_digit() && letter {
            return true;
        }
    }
    false
}

/// Spans inside a prose block that the scorer must keep: the list and quote markers at line
/// starts, `key:` labels, XML-like tags, identifiers (flags, dotted, snake-, kebab- and
/// camel-case names, acronyms, words with digits).
pub fn skeleton_spans(text: &str, pace: &mut Pace<'_>) -> Result<Vec<Range<usize>>, Interrupted> {
    let mut out = Vec::new();
    // Identifiers: whitespace-separated tokens, trimmed of surrounding punctuation.
    let mut at = 0;
    for raw in text.split_inclusive(char::is_whitespace) {
        pace.step()?;
        let word = raw.trim_end_matches(char::is_whitespace);
        let trimmed = word.trim_start_matches(TRIM);
        let start = at + (word.len() - trimmed.len());
        let trimmed = trimmed.trim_end_matches(TRIM);
        if identifier(trimmed) {
            out.push(start..start + trimmed.len());
        }
        at += raw.len();
    }
    for re in [&LIST_MARKER, &LABEL, &INLINE_TAG, &SEVERITY] {
        if let Some(re) = re.as_ref() {
            for m in re.find_iter(text) {
                pace.step()?;
                // A marker keeps its word, not the space after it.
                let s = &text[m.range()];
                let end = m.start() + s.trim_end().len();
                let start = m.start() + (s.len() - s.trim_start().len());
                if start < end {
                    out.push(start..end);
                }
            }
        }
    }
    Ok(out)
}

/// The marker that replaces collapsed repeats (`{n}` more copies of the line above).
pub fn repeat_marker(n: usize) -> String {
    format!("[lingua-proxy: the line above repeats {n} more times]")
}

/// Runs of three or more identical non-blank lines collapsed into the first and a count marker.
/// `None` when nothing repeats.
pub fn collapse_repeats(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let key = line.trim_end_matches(['\n', '\r']);
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim_end_matches(['\n', '\r']) == key {
            j += 1;
        }
        let run = j - i;
        out.push_str(line);
        if run >= 3 && !key.trim().is_empty() {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&repeat_marker(run - 1));
            // Keep the last copy's line end (or none at the text's end).
            let last = lines[j - 1];
            out.push_str(&last[key.len()..]);
            changed = true;
        } else {
            for l in &lines[i + 1..j] {
                out.push_str(l);
            }
        }
        i = j;
    }
    changed.then_some(out)
}

/// `text` without the JSON whitespace outside strings, when `text` (trimmed) is one JSON value;
/// strings, escapes, key order and number spellings stay as written. `None` when it is not
/// JSON or nothing would change.
pub fn minify_json(text: &str) -> Option<String> {
    let t = text.trim();
    if !json_value(t) {
        return None;
    }
    let mut out = String::with_capacity(t.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in t.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            ' ' | '\t' | '\n' | '\r' => {}
            _ => out.push(c),
        }
    }
    let lead = &text[..text.len() - text.trim_start().len()];
    let trail = &text[text.trim_end().len()..];
    (out.len() < t.len()).then(|| format!("{lead}{out}{trail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str, prose: Prose) -> Vec<(Kind, String)> {
        classify(text, prose, &mut Pace::unbounded())
            .unwrap()
            .into_iter()
            .map(|b| (b.kind, text[b.range].to_string()))
            .collect()
    }

    #[test]
    fn blocks_cover_the_text() {
        let prose =
            "Some prose here about things.\nIt runs over three lines of text.\nAnd ends here.\n";
        let t = format!(
            "# Title\n\n{prose}\n```py\nx = 1\n```\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\n{prose}"
        );
        let t = t.as_str();
        let b = kinds(t, Prose::Documents);
        assert_eq!(b.iter().map(|(_, s)| s.as_str()).collect::<String>(), t);
        let ks: Vec<Kind> = b.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            ks,
            [
                Kind::Markup,
                Kind::Document,
                Kind::Code,
                Kind::Diff,
                Kind::Document
            ]
        );
    }

    #[test]
    fn code_listings_and_traces() {
        let listing =
            "     1\tdef parse(text: str) -> dict:\n     2\t    out = {}\n     3\t    return out\n";
        assert!(
            kinds(listing, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Code)
        );
        let arrow = "     1→use std::io;\n     2→\n     3→fn main() {}\n";
        assert!(
            kinds(arrow, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Code)
        );
        let tb = "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n    main()\nValueError: bad value\n";
        assert!(
            kinds(tb, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Trace)
        );
        let code = "def parse(text: str) -> dict:\n    key, _, value = line.partition(\":\")\n    return {key: value}\n";
        assert!(
            kinds(code, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Code)
        );
    }

    #[test]
    fn logs_meta_and_severity() {
        let t = "x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=cli;";
        assert_eq!(kinds(t, Prose::Instructions)[0].0, Kind::Meta);
        let log = "2024-05-01T10:00:00Z INFO started\n2024-05-01T10:00:01Z ERROR boom\n";
        assert!(
            kinds(log, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Log)
        );
        let t = "The build went fine overall.\nFATAL: disk full on /dev/sda1 while writing\nThen it stopped.";
        let b = kinds(t, Prose::Documents);
        assert_eq!(b[1].0, Kind::Log);
        assert!(b[1].1.starts_with("FATAL"));
    }

    #[test]
    fn data_blocks() {
        let json = "{\n  \"a\": 1,\n  \"b\": [true, null]\n}";
        assert_eq!(
            kinds(json, Prose::Documents),
            [(Kind::Data, json.to_string())]
        );
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n";
        assert!(
            kinds(yaml, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Data)
        );
        let table = "| a | b |\n|---|---|\n| 1 | 2 |\n";
        assert!(
            kinds(table, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Data)
        );
        let csv = "id,name,price\n1,apple,0.5\n2,pear,0.7\n";
        assert!(
            kinds(csv, Prose::Documents)
                .iter()
                .all(|(k, _)| *k == Kind::Data)
        );
    }

    /// Many short prose paragraphs before the machine output that dominates the text: linear
    /// (each paragraph used to look ahead to the next log line).
    #[test]
    fn short_paragraphs_in_machine_output_take_linear_work() {
        let n = 20_000;
        let text = format!(
            "{}{}",
            "a short note\n\n".repeat(n),
            "2024-05-01T10:00:00Z INFO line\n".repeat(4 * n)
        );
        let mut pace = Pace::unbounded();
        let b = classify(&text, Prose::Documents, &mut pace).unwrap();
        assert!(b.iter().all(|b| b.kind == Kind::Log));
        assert!(pace.steps() < 40 * n, "{} steps", pace.steps());
    }

    #[test]
    fn containers_decide_how_prose_reads() {
        let t = "<system-reminder>\nAlways run the tests before you commit anything here.\n</system-reminder>\n<document>\nThe lake is deep and the water is cold in every season.\n</document>\nA plain paragraph of prose follows here.";
        let b = kinds(t, Prose::Documents);
        let of = |needle: &str| b.iter().find(|(_, s)| s.contains(needle)).unwrap().0;
        assert_eq!(of("Always run"), Kind::Instructions);
        assert_eq!(of("The lake"), Kind::Document);
        assert_eq!(of("A plain paragraph"), Kind::Document);
        let t = "<system-reminder>\nNever push to main directly, open a pull request.\n</system-reminder>";
        assert!(
            kinds(t, Prose::Documents)
                .iter()
                .all(|(k, _)| *k != Kind::Document)
        );
    }

    #[test]
    fn instructions_keep_their_role() {
        let t =
            "You are a helpful agent.\n\n## Rules\n- Avoid unneeded complexity in your solution.\n";
        let b = kinds(t, Prose::Instructions);
        assert_eq!(b[0].0, Kind::Instructions);
        assert_eq!(b[1].0, Kind::Markup);
        assert_eq!(b[2].0, Kind::Instructions);
    }

    #[test]
    fn skeleton_spans_keep_markers_labels_tags_and_identifiers() {
        let t = "- Is a git repository: false\n<permissions instructions>Use skill-creator: and `x` with --force on foo.bar and snake_case, camelCase, HTTP2 v1 </permissions instructions>";
        let spans = skeleton_spans(t, &mut Pace::unbounded()).unwrap();
        let got: Vec<&str> = spans.iter().map(|r| &t[r.clone()]).collect();
        for want in [
            "-",
            "- Is a git repository:",
            "<permissions instructions>",
            "</permissions instructions>",
            "skill-creator",
            "--force",
            "foo.bar",
            "snake_case",
            "camelCase",
            "HTTP2",
            "v1",
        ] {
            assert!(got.contains(&want), "{want} not in {got:?}");
        }
        // Quantities are the meaning rules' (kept with their units), not spans.
        for not in ["48", "$9", "15%"] {
            assert!(
                !skeleton_spans("within 48 hours for $9 or 15% off", &mut Pace::unbounded())
                    .unwrap()
                    .iter()
                    .any(|r| &"within 48 hours for $9 or 15% off"[r.clone()] == not)
            );
        }
    }

    #[test]
    fn collapse_and_minify_are_lossless() {
        let t = "start\nretry\nretry\nretry\nretry\nend\n";
        let c = collapse_repeats(t).unwrap();
        assert_eq!(c, format!("start\nretry\n{}\nend\n", repeat_marker(3)));
        assert!(collapse_repeats("a\na\nb\n").is_none());
        let j = "{\n  \"a b\": \"x  y\\u00e9\",\n  \"n\": 1.50\n}\n";
        assert_eq!(
            minify_json(j).unwrap(),
            "{\"a b\":\"x  y\\u00e9\",\"n\":1.50}\n"
        );
        assert!(minify_json("not json").is_none());
        assert!(minify_json("{\"a\":1}").is_none());
    }
}
