//! The trainer on the committed tiny XLM-R checkpoint: the loss falls, the saved checkpoint
//! serves the probabilities the trainer computed (padding changes nothing), and a checkpoint
//! without a classifier gets a fresh, seeded head.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;

use lingua_encoder::train::{Batch, IGNORE, TrainSettings, Trainer};
use lingua_encoder::{ModelFiles, Precision, TokenClassifier};

fn tiny() -> ModelFiles {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/models/xlm-roberta-large-tiny");
    ModelFiles::resolve(dir.to_str().unwrap()).unwrap()
}

fn settings(lr: f64) -> TrainSettings {
    TrainSettings {
        lr,
        dropout: Some(0.0),
        ..TrainSettings::default()
    }
}

/// Two sequences of different lengths whose labels follow the token id's parity.
fn batch() -> Batch {
    let seqs: Vec<Vec<u32>> = vec![
        (0..40).map(|i| 5 + (i * 7) % 400).collect(),
        (0..23).map(|i| 9 + (i * 13) % 400).collect(),
    ];
    let labels = seqs
        .iter()
        .map(|s| {
            s.iter()
                .enumerate()
                .map(|(j, id)| {
                    if j == 0 {
                        IGNORE
                    } else {
                        i64::from(id % 2 == 0)
                    }
                })
                .collect()
        })
        .collect();
    Batch { ids: seqs, labels }
}

#[test]
fn the_loss_falls_on_a_fixed_batch() {
    let mut t = Trainer::from_checkpoint(&tiny(), "cpu", settings(1e-2)).unwrap();
    assert!(t.fresh().is_empty(), "the tiny checkpoint has its head");
    let b = batch();
    let before = t.evaluate(&b).unwrap();
    assert_eq!(
        before.tokens, 61,
        "first positions and padding are not labelled"
    );
    let mut last = f32::MAX;
    for _ in 0..40 {
        let s = t.step(&b).unwrap();
        assert_eq!(s.tokens, 61);
        assert!(s.grad_norm.is_finite() && s.grad_norm > 0.0);
        last = s.loss;
    }
    let after = t.evaluate(&b).unwrap();
    assert!(
        after.loss() < 0.5 * before.loss(),
        "{} -> {}",
        before.loss(),
        after.loss()
    );
    assert!(after.accuracy() > before.accuracy(), "{last}");
}

#[test]
fn the_saved_checkpoint_serves_what_the_trainer_computed() {
    let mut t = Trainer::from_checkpoint(&tiny(), "cpu", settings(1e-2)).unwrap();
    for _ in 0..5 {
        t.step(&batch()).unwrap();
    }
    let seqs = batch().ids;
    let trained = t.keep_probs(&seqs).unwrap();
    // one at a time (no padding) gives the same probabilities as the padded batch
    let alone = t.keep_probs(&seqs[1..]).unwrap();
    for (a, b) in alone[0].iter().zip(&trained[1]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let dir = tempfile::tempdir().unwrap();
    t.save(dir.path()).unwrap();
    std::fs::copy(tiny().tokenizer_json, dir.path().join("tokenizer.json")).unwrap();
    let files = ModelFiles::resolve(dir.path().to_str().unwrap()).unwrap();
    let served = TokenClassifier::load(&files, "cpu", Precision::F32)
        .unwrap()
        .keep_probs(&seqs)
        .unwrap();
    let original = TokenClassifier::load(&tiny(), "cpu", Precision::F32)
        .unwrap()
        .keep_probs(&seqs)
        .unwrap();
    let mut moved = 0f32;
    for (s, (tr, or)) in served.iter().zip(trained.iter().zip(&original)) {
        for ((a, b), c) in s.iter().zip(tr).zip(or) {
            assert!((a - b).abs() < 1e-4, "served {a} vs trained {b}");
            moved = moved.max((a - c).abs());
        }
    }
    assert!(moved > 1e-3, "training changed the model");
}

#[test]
fn a_checkpoint_without_a_classifier_gets_a_fresh_seeded_head() {
    let src = tiny();
    let dir = tempfile::tempdir().unwrap();
    let mut tensors =
        candle_core::safetensors::load(&src.weights, &candle_core::Device::Cpu).unwrap();
    tensors.retain(|k, _| !k.starts_with("classifier."));
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src.config).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["XLMRobertaModel"]);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(&src.tokenizer_json, dir.path().join("tokenizer.json")).unwrap();
    let files = ModelFiles::resolve(dir.path().to_str().unwrap()).unwrap();
    let mut a = Trainer::from_checkpoint(&files, "cpu", settings(1e-3)).unwrap();
    assert_eq!(a.fresh(), ["classifier.weight", "classifier.bias"]);
    let mut b = Trainer::from_checkpoint(&files, "cpu", settings(1e-3)).unwrap();
    let seqs = batch().ids;
    assert_eq!(
        a.keep_probs(&seqs).unwrap(),
        b.keep_probs(&seqs).unwrap(),
        "one seed, one head"
    );
}
