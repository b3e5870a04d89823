//! NLTK-compatible sentence splitting for the LLMLingua sentence filter: the `lingua-punkt`
//! tokenizer with NLTK's English Punkt parameters, loaded once from `LINGUA_PUNKT_DIR` or where
//! NLTK looks (`NLTK_DATA`, `~/nltk_data`, … `/tokenizers/punkt_tab/english`).

use std::sync::OnceLock;

use lingua_punkt::{PunktParams, SentenceTokenizer};

static ENGLISH: OnceLock<Result<SentenceTokenizer, String>> = OnceLock::new();

fn english() -> &'static Result<SentenceTokenizer, String> {
    ENGLISH.get_or_init(|| {
        let params = match std::env::var_os("LINGUA_PUNKT_DIR") {
            Some(dir) => PunktParams::from_dir(std::path::Path::new(&dir)),
            None => PunktParams::find_english(),
        };
        params.map(SentenceTokenizer::new).map_err(|e| {
            format!(
                "the sentence filter needs NLTK's English Punkt parameters (punkt_tab): {e}; \
                 build them with tools/build_punkt_data.py and point LINGUA_PUNKT_DIR at them"
            )
        })
    })
}

/// Loads the parameters from `dir` unless they are loaded already (tests, the CLI's
/// `--punkt-dir`). Returns the outcome of whichever load counts.
pub fn use_dir(dir: &std::path::Path) -> Result<(), String> {
    let r = ENGLISH.get_or_init(|| {
        PunktParams::from_dir(dir)
            .map(SentenceTokenizer::new)
            .map_err(|e| format!("{}: {e}", dir.display()))
    });
    r.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// `nltk.sent_tokenize(text)`.
pub fn sent_tokenize(text: &str) -> Result<Vec<String>, String> {
    match english() {
        Ok(t) => Ok(t.tokenize(text)),
        Err(e) => Err(e.clone()),
    }
}
