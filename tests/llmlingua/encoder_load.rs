#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! Loading and running the LLMLingua-2 encoder on random checkpoints written by the crate.

use std::path::Path;

use lingua_encoder::random::RandomSpec;
use lingua_encoder::{Arch, LoadError, ModelFiles, Precision, TokenClassifier};

fn files(dir: &Path) -> ModelFiles {
    ModelFiles {
        dir: dir.to_path_buf(),
        config: dir.join("config.json"),
        tokenizer_json: dir.join("tokenizer.json"),
        weights: dir.join("model.safetensors"),
    }
}

fn seqs(n: usize, lens: &[usize], vocab: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 33) % (vocab as u64 - 4)) as u32 + 4
    };
    (0..n)
        .map(|i| {
            let len = lens[i % lens.len()];
            let mut v: Vec<u32> = (0..len).map(|_| next()).collect();
            v[0] = 3;
            if len > 1 {
                v[len - 1] = 3;
            }
            v
        })
        .collect()
}

fn load(dir: &Path, p: Precision) -> TokenClassifier {
    TokenClassifier::load(&files(dir), "cpu", p).unwrap()
}

#[test]
fn runs_bert_and_xlmr_and_packing_does_not_change_results() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let tmp = tempfile::tempdir().unwrap();
        RandomSpec::tiny(arch, 5).write(tmp.path(), None).unwrap();
        let m = load(tmp.path(), Precision::F32);
        assert_eq!(m.config().arch, arch);
        assert_eq!(m.max_len(), 128);
        let batch = seqs(5, &[1, 2, 17, 128, 60], 300, 9);
        let together = m.keep_probs(&batch).unwrap();
        assert_eq!(together.len(), 5);
        for (s, p) in batch.iter().zip(&together) {
            assert_eq!(s.len(), p.len());
            assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
            let alone = m.keep_probs(std::slice::from_ref(s)).unwrap();
            for (a, b) in alone[0].iter().zip(p) {
                assert!((a - b).abs() < 1e-5, "{arch:?}: packed {b} vs alone {a}");
            }
        }
        // The probabilities are not degenerate: the random model separates tokens.
        let all: Vec<f32> = together.concat();
        let (lo, hi) = all
            .iter()
            .fold((1.0f32, 0.0f32), |(l, h), x| (l.min(*x), h.max(*x)));
        assert!(
            hi - lo > 0.2,
            "{arch:?}: probabilities span only {lo}..{hi}"
        );
    }
}

#[test]
fn rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), None)
        .unwrap();
    let m = load(tmp.path(), Precision::F32);
    assert!(m.keep_probs(&[vec![]]).is_err());
    assert!(m.keep_probs(&[vec![5; 129]]).is_err());
    let e = m.keep_probs(&[vec![5, 300]]).unwrap_err().to_string();
    assert!(e.contains("300"), "{e}");
    assert!(m.keep_probs(&[]).unwrap().is_empty());
}

/// Keep/drop agreement (above or below f32's median probability) and the largest probability
/// error of `precision` against f32, on both architectures.
fn agreement_with_f32(precision: Precision) -> Vec<(Arch, f64, f32)> {
    [Arch::Bert, Arch::XlmRoberta]
        .into_iter()
        .map(|arch| {
            let tmp = tempfile::tempdir().unwrap();
            RandomSpec::tiny(arch, 21).write(tmp.path(), None).unwrap();
            let f = load(tmp.path(), Precision::F32);
            let q = load(tmp.path(), precision);
            assert_ne!(f.digest(), q.digest());
            let batch = seqs(8, &[128, 90, 33], 300, 4);
            let pf = f.keep_probs(&batch).unwrap().concat();
            let pq = q.keep_probs(&batch).unwrap().concat();
            assert_ne!(pf, pq, "{arch:?}: {precision:?} identical to f32");
            let mut sorted = pf.clone();
            sorted.sort_by(f32::total_cmp);
            let median = sorted[sorted.len() / 2];
            let agree = pf
                .iter()
                .zip(&pq)
                .filter(|(a, b)| (**a > median) == (**b > median))
                .count();
            let worst = pf
                .iter()
                .zip(&pq)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            let rate = agree as f64 / pf.len() as f64;
            eprintln!("{arch:?}: {precision:?} agrees on {rate:.4}, worst error {worst:.4}");
            (arch, rate, worst)
        })
        .collect()
}

#[test]
fn q8_agrees_with_f32() {
    for (arch, rate, worst) in agreement_with_f32(Precision::Q8) {
        assert!(
            rate >= 0.98,
            "{arch:?}: q8 agrees on {rate:.4} of keep/drop decisions"
        );
        assert!(worst < 0.05, "{arch:?}: q8 probability error {worst}");
    }
}

#[test]
fn bf16_agrees_with_f32() {
    for (arch, rate, worst) in agreement_with_f32(Precision::Bf16) {
        assert!(
            rate >= 0.99,
            "{arch:?}: bf16 agrees on {rate:.4} of keep/drop decisions"
        );
        assert!(worst < 0.01, "{arch:?}: bf16 probability error {worst}");
    }
}

#[test]
fn digest_is_stable_and_tracks_weights() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(a.path(), None)
        .unwrap();
    RandomSpec::tiny(Arch::Bert, 2)
        .write(b.path(), None)
        .unwrap();
    let d1 = load(a.path(), Precision::F32).digest().to_string();
    assert_eq!(d1, load(a.path(), Precision::F32).digest());
    assert_ne!(d1, load(b.path(), Precision::F32).digest());
}

fn err_text(e: LoadError) -> String {
    e.to_string()
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = err_text(ModelFiles::from_dir(tmp.path()).unwrap_err());
    assert!(e.contains("config.json is missing"), "{e}");
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), None)
        .unwrap();
    let e = err_text(ModelFiles::from_dir(tmp.path()).unwrap_err());
    assert!(e.contains("tokenizer.json is missing"), "{e}");
    std::fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
    let f = ModelFiles::from_dir(tmp.path()).unwrap();
    assert_eq!(f.weights, tmp.path().join("model.safetensors"));
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = err_text(ModelFiles::from_dir(tmp.path()).unwrap_err());
    assert!(
        e.contains("neither model.safetensors nor pytorch_model.bin"),
        "{e}"
    );
    let e = err_text(ModelFiles::resolve("/definitely/not/here").unwrap_err());
    assert!(e.contains("/definitely/not/here"), "{e}");
}

#[test]
fn corrupt_and_mismatched_checkpoints_name_the_file_and_problem() {
    // Truncated safetensors.
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), None)
        .unwrap();
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(
        e.contains(&w.display().to_string()) && e.contains("safetensors"),
        "{e}"
    );

    // Wrong head shape (3 labels in the weights, 2 in the config).
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), Some(("classifier.weight", vec![3, 64])))
        .unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(
        e.contains("model.safetensors") && e.contains("classifier.weight"),
        "{e}"
    );

    // XLM-R weights under a BERT config.
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::XlmRoberta, 1)
        .write(tmp.path(), None)
        .unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        RandomSpec::tiny(Arch::Bert, 1).config_json(),
    )
    .unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(
        e.contains("model.safetensors") && e.contains("bert.embeddings"),
        "{e}"
    );

    // Config contradicting itself, and a non-token-classification architecture.
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), None)
        .unwrap();
    let cfg = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"bert\"", "\"xlm-roberta\"")).unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(
        e.contains("config.json") && e.contains("contradicts"),
        "{e}"
    );
    std::fs::write(
        &cfg,
        text.replace("BertForTokenClassification", "BertForMaskedLM"),
    )
    .unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(
        e.contains("config.json") && e.contains("ForTokenClassification"),
        "{e}"
    );
    std::fs::write(&cfg, "{not json").unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "cpu", Precision::F32).unwrap_err());
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
}

#[test]
fn device_strings() {
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::Bert, 1)
        .write(tmp.path(), None)
        .unwrap();
    let e = err_text(TokenClassifier::load(&files(tmp.path()), "tpu", Precision::F32).unwrap_err());
    assert!(e.contains("tpu"), "{e}");
    if !cfg!(feature = "cuda") {
        let e = err_text(
            TokenClassifier::load(&files(tmp.path()), "cuda:0", Precision::F32).unwrap_err(),
        );
        assert!(e.contains("cuda"), "{e}");
    }
}

#[test]
fn cpu_kernels_match_the_candle_ops_path() {
    for arch in [Arch::Bert, Arch::XlmRoberta] {
        let tmp = tempfile::tempdir().unwrap();
        RandomSpec::tiny(arch, 8).write(tmp.path(), None).unwrap();
        let fast = load(tmp.path(), Precision::F32);
        let slow = TokenClassifier::load(&files(tmp.path()), "candle-cpu", Precision::F32).unwrap();
        let mut batch = seqs(3, &[128, 40, 2], 300, 3);
        if arch == Arch::XlmRoberta {
            batch.push(vec![3, 5, 1, 7, 8, 3]); // a pad id inside keeps position `pad`
        }
        let a = fast.keep_probs(&batch).unwrap();
        let b = slow.keep_probs(&batch).unwrap();
        for (x, y) in a.concat().iter().zip(&b.concat()) {
            assert!((x - y).abs() < 2e-5, "{arch:?}: kernels {x} vs candle {y}");
        }
        for p in [Precision::Q8, Precision::Bf16] {
            let e = TokenClassifier::load(&files(tmp.path()), "candle-cpu", p).unwrap_err();
            assert!(e.to_string().contains(p.as_str()), "{e}");
        }
    }
}
