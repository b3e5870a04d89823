#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Parity with PyTorch (transformers) on seeded random checkpoints.
//!
//! `python tools/make_bench_model.py parity DIR` writes a BERT and an XLM-R token classifier,
//! a `pytorch_model.bin` copy of the BERT one and the PyTorch probabilities (padded batches,
//! as llmlingua runs them). Point `LINGUA_ENCODER_PARITY_DIR` at DIR to run these checks;
//! without it they report that they were not run.

use std::path::{Path, PathBuf};

use lingua_encoder::{ModelFiles, Precision, TokenClassifier};
use serde_json::Value;

fn parity_dir() -> Option<PathBuf> {
    let d = std::env::var_os("LINGUA_ENCODER_PARITY_DIR")?;
    Some(PathBuf::from(d))
}

fn files(dir: &Path, weights: &str) -> ModelFiles {
    ModelFiles {
        dir: dir.to_path_buf(),
        config: dir.join("config.json"),
        tokenizer_json: dir.join("tokenizer.json"),
        weights: dir.join(weights),
    }
}

fn check(
    dir: &Path,
    kind: &str,
    model_dir: &str,
    weights: &str,
    precision: Precision,
    tol: f32,
) -> f32 {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let r = &reference[kind];
    let seqs: Vec<Vec<u32>> = serde_json::from_value(r["seqs"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(r["probs"].clone()).unwrap();
    let m = TokenClassifier::load(&files(&dir.join(model_dir), weights), "cpu", precision).unwrap();
    let got = m.keep_probs(&seqs).unwrap();
    let mut worst = 0.0f32;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst <= tol,
        "{kind} {precision:?}: max |p - p_torch| = {worst}"
    );
    worst
}

#[test]
#[ignore = "needs LINGUA_ENCODER_PARITY_DIR from `tools/make_bench_model.py parity DIR` (torch); CI covers parity through tests/e2e/lingua2_e2e.rs"]
fn f32_matches_pytorch_within_1e4() {
    let Some(dir) = parity_dir() else {
        panic!("set LINGUA_ENCODER_PARITY_DIR (see the module docs)");
    };
    let b = check(
        &dir,
        "bert",
        "bert",
        "model.safetensors",
        Precision::F32,
        1e-4,
    );
    let x = check(
        &dir,
        "xlmr",
        "xlmr",
        "model.safetensors",
        Precision::F32,
        1e-4,
    );
    // pytorch_model.bin fallback reads the very same weights.
    let p = check(
        &dir,
        "bert",
        "bert-pth",
        "pytorch_model.bin",
        Precision::F32,
        1e-4,
    );
    eprintln!("max abs diff vs PyTorch: bert {b:e}, xlmr {x:e}, bert (pth) {p:e}");
    let f = ModelFiles::from_dir(&dir.join("bert-pth"));
    // the parity directory has no tokenizer.json; weights discovery is what matters here
    assert!(f.is_err() || f.unwrap().weights.ends_with("pytorch_model.bin"));
}

#[test]
#[ignore = "needs LINGUA_ENCODER_PARITY_DIR from `tools/make_bench_model.py parity DIR` (torch)"]
fn q8_stays_close_to_pytorch() {
    let Some(dir) = parity_dir() else {
        panic!("set LINGUA_ENCODER_PARITY_DIR (see the module docs)");
    };
    check(
        &dir,
        "bert",
        "bert",
        "model.safetensors",
        Precision::Q8,
        0.05,
    );
    check(
        &dir,
        "xlmr",
        "xlmr",
        "model.safetensors",
        Precision::Q8,
        0.05,
    );
}
