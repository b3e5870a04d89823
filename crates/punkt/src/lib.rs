//! NLTK-compatible Punkt sentence splitting.
//!
//! This crate owns a port of the behaviour of NLTK 3.10's `PunktSentenceTokenizer`
//! (`nltk.sent_tokenize(text)` with the English `punkt_tab` model and
//! `realign_boundaries=True`): the parameter loader for NLTK's `punkt_tab` directory
//! layout ([`PunktParams`]) and the splitter ([`SentenceTokenizer`]). It does not train
//! models. All positions are byte offsets into UTF-8 text; every scan steps over whole
//! characters so that they coincide with NLTK's code-point slicing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

mod scan;

/// Errors of loading Punkt parameters.
#[derive(Debug, thiserror::Error)]
pub enum PunktError {
    /// A parameter file could not be read.
    #[error("cannot read Punkt parameter file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a parameter file is malformed.
    #[error("malformed line {line} of {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No English model was found in any of the searched places.
    #[error(
        "NLTK punkt_tab English model not found; looked in: {}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every directory that was looked at.
        searched: Vec<PathBuf>,
    },
}

/// Orthographic context flags, as NLTK stores them in `ortho_context.tab`.
const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

/// The learned parameters of a Punkt model.
#[derive(Debug, Clone, Default)]
pub struct PunktParams {
    /// Abbreviation types (lower case, without the final period).
    pub abbrev_types: HashSet<String>,
    /// Collocations `(type, next type)` whose first word ends in a period.
    pub collocations: HashSet<(String, String)>,
    /// Types that often start sentences.
    pub sent_starters: HashSet<String>,
    /// Orthographic context flags per type.
    pub ortho_context: HashMap<String, u32>,
}

/// Reads a file's lines the way NLTK's `TabDecoder` does: iterating the file yields
/// lines split at `\n` (universal newlines are off for these files in practice: the
/// files contain only `\n`), and one trailing `\n` is removed from each line.
fn read_lines(path: &Path) -> Result<Vec<String>, PunktError> {
    let text = std::fs::read_to_string(path).map_err(|source| PunktError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Python text mode translates "\r\n" and "\r" to "\n".
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    for l in &mut lines {
        if l.ends_with('\n') {
            l.pop();
        }
    }
    Ok(lines)
}

impl PunktParams {
    /// Loads NLTK's punkt_tab directory layout (abbrev_types.txt, collocations.tab,
    /// sent_starters.txt, ortho_context.tab), e.g. NLTK_DATA/tokenizers/punkt_tab/english.
    pub fn from_dir(dir: &Path) -> Result<Self, PunktError> {
        let mut params = PunktParams::default();
        let colloc = dir.join("collocations.tab");
        for (i, line) in read_lines(&colloc)?.into_iter().enumerate() {
            let parts: Vec<&str> = line.split('\t').collect();
            match parts.as_slice() {
                [a, b] => {
                    params
                        .collocations
                        .insert(((*a).to_owned(), (*b).to_owned()));
                }
                _ => {
                    return Err(PunktError::Malformed {
                        path: colloc,
                        line: i + 1,
                        reason: format!("expected 2 tab-separated fields, got {}", parts.len()),
                    });
                }
            }
        }
        params.sent_starters = read_lines(&dir.join("sent_starters.txt"))?
            .into_iter()
            .collect();
        params.abbrev_types = read_lines(&dir.join("abbrev_types.txt"))?
            .into_iter()
            .collect();
        let ortho = dir.join("ortho_context.tab");
        for (i, line) in read_lines(&ortho)?.into_iter().enumerate() {
            let parts: Vec<&str> = line.split('\t').collect();
            let malformed = |reason: String| PunktError::Malformed {
                path: ortho.clone(),
                line: i + 1,
                reason,
            };
            match parts.as_slice() {
                [typ, flags] => {
                    let v: u32 = flags
                        .trim()
                        .parse()
                        .map_err(|e| malformed(format!("flags {flags:?}: {e}")))?;
                    params.ortho_context.insert((*typ).to_owned(), v);
                }
                _ => {
                    return Err(malformed(format!(
                        "expected 2 tab-separated fields, got {}",
                        parts.len()
                    )));
                }
            }
        }
        Ok(params)
    }

    /// The directories [`PunktParams::find_english`] searches, in order.
    pub fn english_search_path() -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = Vec::new();
        if let Some(v) = std::env::var_os("NLTK_DATA") {
            for p in std::env::split_paths(&v) {
                if !p.as_os_str().is_empty() {
                    roots.push(p);
                }
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            roots.push(PathBuf::from(home).join("nltk_data"));
        }
        for p in [
            "/usr/share/nltk_data",
            "/usr/local/share/nltk_data",
            "/usr/lib/nltk_data",
            "/usr/local/lib/nltk_data",
        ] {
            roots.push(PathBuf::from(p));
        }
        roots
            .into_iter()
            .map(|r| r.join("tokenizers").join("punkt_tab").join("english"))
            .collect()
    }

    /// Finds english the way NLTK does: $NLTK_DATA entries (':'-separated), then ~/nltk_data,
    /// /usr/share/nltk_data, /usr/local/share/nltk_data, /usr/lib/nltk_data,
    /// /usr/local/lib/nltk_data, each + "/tokenizers/punkt_tab/english".
    pub fn find_english() -> Result<Self, PunktError> {
        let searched = Self::english_search_path();
        for dir in &searched {
            if dir.is_dir() {
                return Self::from_dir(dir);
            }
        }
        Err(PunktError::NotFound { searched })
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(typ).copied().unwrap_or(0)
    }
}

/// A word token with the annotations of both passes (NLTK's `PunktToken`).
#[derive(Debug, Clone)]
struct Token {
    tok: String,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

/// A token that is a number (NLTK's `PunktToken._RE_NUMERIC`), on the lower-cased token.
static RE_NUMERIC: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"^-?[.,]?\d[\d,.\-]*\.?$").expect("static regex")
});
/// A single letter and a period (`_RE_INITIAL`); `\w` and `\d` are Unicode, as in NLTK.
static RE_INITIAL: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"^[^\W\d]\.$").expect("static regex")
});
/// Two or more periods (`_RE_ELLIPSIS`).
static RE_ELLIPSIS: LazyLock<Regex> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern; compiled by the tests"
    )]
    Regex::new(r"^\.\.+$").expect("static regex")
});

impl Token {
    fn new(tok: &str) -> Self {
        let lower = tok.to_lowercase();
        let typ = if RE_NUMERIC.is_match(&lower) {
            "##number##".to_owned()
        } else {
            lower
        };
        Token {
            tok: tok.to_owned(),
            typ,
            period_final: tok.ends_with('.'),
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }

    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }

    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }

    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_uppercase)
    }

    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_lowercase)
    }
}

/// The outcome of NLTK's orthographic heuristic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ortho {
    Starter,
    NotStarter,
    Unknown,
}

/// NLTK's `PunktSentenceTokenizer` with fixed parameters. `Send + Sync`.
#[derive(Debug)]
pub struct SentenceTokenizer {
    params: PunktParams,
}

impl SentenceTokenizer {
    /// A splitter with these parameters.
    pub fn new(params: PunktParams) -> Self {
        SentenceTokenizer { params }
    }

    /// = nltk.sent_tokenize(text) (language english): the sentence strings.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        self.span_tokenize(text)
            .into_iter()
            .map(|(s, e)| text[s..e].to_owned())
            .collect()
    }

    /// The byte spans of the same sentences in `text`.
    pub fn span_tokenize(&self, text: &str) -> Vec<(usize, usize)> {
        let slices = self.slices_from_text(text);
        scan::realign_boundaries(text, &slices)
    }

    fn slices_from_text(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut last_break = 0;
        for ctx in scan::potential_end_contexts(text) {
            if self.text_contains_sentbreak(&ctx.context) {
                out.push((last_break, ctx.end));
                last_break = ctx.next_tok_start.unwrap_or(ctx.end);
            }
        }
        out.push((last_break, scan::py_rstrip(text).len()));
        out
    }

    /// Whether a sentence break is found before the last token of `text`.
    fn text_contains_sentbreak(&self, text: &str) -> bool {
        let mut tokens = self.tokenize_words(text);
        for t in &mut tokens {
            self.first_pass(t);
        }
        let mut found = false;
        for i in 0..tokens.len() {
            if found {
                return true;
            }
            if i + 1 < tokens.len() {
                let (a, b) = tokens.split_at_mut(i + 1);
                self.second_pass(&mut a[i], &b[0]);
            }
            if tokens[i].sentbreak {
                found = true;
            }
        }
        false
    }

    fn tokenize_words(&self, text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        for line in text.split('\n') {
            if scan::py_strip(line).is_empty() {
                continue;
            }
            for w in scan::word_tokenize(line) {
                out.push(Token::new(w));
            }
        }
        out
    }

    fn first_pass(&self, t: &mut Token) {
        let tok = t.tok.as_str();
        if tok == "." || tok == "?" || tok == "!" {
            t.sentbreak = true;
        } else if RE_ELLIPSIS.is_match(tok) {
            t.ellipsis = true;
        } else if t.period_final && !tok.ends_with("..") {
            let stem = tok[..tok.len() - 1].to_lowercase();
            let last = stem.rsplit('-').next().unwrap_or("");
            if self.params.abbrev_types.contains(&stem) || self.params.abbrev_types.contains(last) {
                t.abbr = true;
            } else {
                t.sentbreak = true;
            }
        }
    }

    fn second_pass(&self, t1: &mut Token, t2: &Token) {
        if !t1.period_final {
            return;
        }
        let typ = t1.type_no_period().to_owned();
        let next_typ = t2.type_no_sentperiod();
        let is_initial = RE_INITIAL.is_match(&t1.tok);
        if self
            .params
            .collocations
            .contains(&(typ.clone(), next_typ.to_owned()))
        {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if (t1.abbr || t1.ellipsis) && !is_initial {
            if self.ortho_heuristic(t2) == Ortho::Starter {
                t1.sentbreak = true;
                return;
            }
            if t2.first_upper() && self.params.sent_starters.contains(next_typ) {
                t1.sentbreak = true;
                return;
            }
        }
        if is_initial || typ == "##number##" {
            let h = self.ortho_heuristic(t2);
            if h == Ortho::NotStarter {
                t1.sentbreak = false;
                t1.abbr = true;
                return;
            }
            if h == Ortho::Unknown
                && is_initial
                && t2.first_upper()
                && self.params.ortho(next_typ) & ORTHO_LC == 0
            {
                t1.sentbreak = false;
                t1.abbr = true;
            }
        }
    }

    fn ortho_heuristic(&self, t: &Token) -> Ortho {
        if matches!(t.tok.as_str(), ";" | ":" | "," | "." | "!" | "?") {
            return Ortho::NotStarter;
        }
        let ctx = self.params.ortho(t.type_no_sentperiod());
        if t.first_upper() && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
            return Ortho::Starter;
        }
        if t.first_lower() && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
            return Ortho::NotStarter;
        }
        Ortho::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> PunktParams {
        let mut p = PunktParams::default();
        for a in ["dr", "mr", "e.g", "i.e", "u.s", "etc", "no"] {
            p.abbrev_types.insert(a.to_owned());
        }
        p
    }

    #[test]
    fn splits_plain_sentences() {
        let t = SentenceTokenizer::new(params());
        assert_eq!(
            t.tokenize("Hello there. How are you? Fine!"),
            vec!["Hello there.", "How are you?", "Fine!"]
        );
    }

    #[test]
    fn abbreviation_does_not_break() {
        let t = SentenceTokenizer::new(params());
        assert_eq!(
            t.tokenize("Dr. Smith went home. He slept."),
            vec!["Dr. Smith went home.", "He slept."]
        );
    }

    #[test]
    fn closing_quote_is_realigned() {
        let t = SentenceTokenizer::new(params());
        assert_eq!(
            t.tokenize("He said \"stop.\" Then he left."),
            vec!["He said \"stop.\"", "Then he left."]
        );
    }

    #[test]
    fn spans_are_byte_offsets() {
        let t = SentenceTokenizer::new(params());
        let text = "Über alles. Ça va.";
        let spans = t.span_tokenize(text);
        assert_eq!(spans, vec![(0, 12), (13, 20)]);
        assert_eq!(&text[13..20], "Ça va.");
    }

    #[test]
    fn trailing_whitespace_is_dropped_and_empty_text_has_no_sentence() {
        let t = SentenceTokenizer::new(params());
        assert_eq!(t.tokenize("One.  \n"), vec!["One."]);
        assert!(t.tokenize("").is_empty());
        assert!(t.tokenize("   \n ").is_empty());
    }

    #[test]
    fn hyphenated_abbreviation_uses_last_part() {
        let t = SentenceTokenizer::new(params());
        let mut tok = Token::new("ex-dr.");
        t.first_pass(&mut tok);
        assert!(tok.abbr && !tok.sentbreak);
    }

    #[test]
    fn numbers_get_number_type() {
        assert_eq!(Token::new("3.5").typ, "##number##");
        assert_eq!(Token::new("-1,000.").typ, "##number##");
        assert_eq!(Token::new("a3").typ, "a3");
    }

    #[test]
    fn not_found_names_every_place() {
        let e = PunktError::NotFound {
            searched: vec![PathBuf::from("/x/a"), PathBuf::from("/y/b")],
        };
        let s = e.to_string();
        assert!(s.contains("/x/a") && s.contains("/y/b"), "{s}");
    }

    #[test]
    fn tokenizer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<SentenceTokenizer>();
    }
}
