//! Alignment training on the committed tiny Llama: the answer loss falls, the saved checkpoint
//! scores exactly what the trainer computed, and LoRA trains only its adapters.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use lingua_causal::train::{AlignSettings, Aligner, Example, Lora};
use lingua_causal::{CausalLm, LoadOptions};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/models/llama-tiny")
}

/// Prompts of varying ids, each answered by the same short pattern.
fn examples() -> Vec<Example> {
    (0..6u32)
        .map(|i| {
            let mut ids: Vec<u32> = (0..12).map(|j| 5 + (i * 31 + j * 17) % 900).collect();
            let answer_from = ids.len();
            ids.extend([40, 41, 42, 43, 40, 41, 42, 43]);
            Example { ids, answer_from }
        })
        .collect()
}

fn copy_config(to: &Path) {
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny().join(f), to.join(f)).unwrap();
    }
}

/// What the serving model says of the answer tokens, summed.
fn served_nll(dir: &Path, ex: &Example) -> f64 {
    let lm = CausalLm::load(dir, &LoadOptions::default()).unwrap();
    let mut cache = lm.new_cache();
    let nll = lm.nll(&mut cache, &ex.ids).unwrap();
    nll[ex.answer_from - 1..]
        .iter()
        .map(|x| f64::from(*x))
        .sum()
}

#[test]
fn full_fine_tuning_lowers_the_answer_loss_and_saves_what_serving_reads() {
    let settings = AlignSettings {
        lr: 3e-3,
        ..AlignSettings::default()
    };
    let mut a = Aligner::from_dir(&tiny(), settings).unwrap();
    let ex = examples();
    // before training, trainer and serving agree
    let before = a.evaluate(&ex[..1]).unwrap();
    assert!((before.nll - served_nll(&tiny(), &ex[0])).abs() < 1e-2 * before.nll.abs().max(1.0));
    let start = a.evaluate(&ex).unwrap();
    for _ in 0..15 {
        let s = a.step(&ex).unwrap();
        assert_eq!(s.tokens, 6 * 8);
    }
    let end = a.evaluate(&ex).unwrap();
    assert!(
        end.perplexity() < 0.5 * start.perplexity(),
        "{} -> {}",
        start.perplexity(),
        end.perplexity()
    );
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    copy_config(dir.path());
    let trained = a.evaluate(&ex[..1]).unwrap().nll;
    let served = served_nll(dir.path(), &ex[0]);
    assert!(
        (trained - served).abs() < 1e-2 * trained.abs().max(1.0),
        "{trained} vs {served}"
    );
}

#[test]
fn lora_trains_adapters_only_and_merges_them_on_save() {
    let settings = AlignSettings {
        lr: 1e-2,
        lora: Some(Lora {
            rank: 4,
            alpha: 8.0,
        }),
        ..AlignSettings::default()
    };
    let mut a = Aligner::from_dir(&tiny(), settings).unwrap();
    let c = a.config().clone();
    // q_proj (heads·hd × hidden) and v_proj (kv·hd × hidden) per layer, rank 4
    let q = 4 * (c.hidden + c.heads * c.head_dim);
    let v = 4 * (c.hidden + c.kv_heads * c.head_dim);
    assert_eq!(a.trainable(), c.layers * (q + v));
    let ex = examples();
    let start = a.evaluate(&ex).unwrap();
    for _ in 0..15 {
        a.step(&ex).unwrap();
    }
    let end = a.evaluate(&ex).unwrap();
    assert!(
        end.mean() < start.mean(),
        "{} -> {}",
        start.mean(),
        end.mean()
    );
    let dir = tempfile::tempdir().unwrap();
    a.save(dir.path()).unwrap();
    copy_config(dir.path());
    let before =
        candle_core::safetensors::load(tiny().join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let after = candle_core::safetensors::load(
        dir.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(before.len(), after.len());
    for (name, t) in &before {
        let diff = (t - &after[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let adapted = name.contains("q_proj.weight") || name.contains("v_proj.weight");
        assert_eq!(diff > 0.0, adapted, "{name}: {diff}");
    }
    let trained = a.evaluate(&ex[..1]).unwrap().nll;
    let served = served_nll(dir.path(), &ex[0]);
    assert!(
        (trained - served).abs() < 1e-2 * trained.abs().max(1.0),
        "{trained} vs {served}"
    );
}

#[test]
fn gpt2_is_refused_with_a_reason() {
    let gpt2 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/models/gpt2-tiny");
    let e = Aligner::from_dir(&gpt2, AlignSettings::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("GPT-2"), "{e}");
}
