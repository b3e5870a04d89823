//! Distillation throughput on this machine: labelling (chunks per second), training the token
//! classifier (tokens per second) for the tiny XLM-R test checkpoint, the MiniLM-L6 test
//! checkpoint (when `scripts/setup.sh` has built it) and a bert-base-sized random checkpoint,
//! aligning the tiny Llama (and, with `LINGUA_BENCH_CAUSAL`, any Llama-family directory such as
//! the dequantised SmolLM2-135M of `scripts/fetch_smollm2.sh`), and what a 10,000-chunk corpus
//! costs in time and upstream tokens.
//!
//! ```text
//! cargo bench --bench distill            (LINGUA_BENCH_STEPS=2, LINGUA_BENCH_BATCH=4)
//! LINGUA_BENCH_CAUSAL=target/bench-model/smollm2-135m cargo bench --bench distill
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use lingua_causal::train::{AlignSettings, Aligner, Example};
use lingua_encoder::random::RandomSpec;
use lingua_encoder::train::{Batch, TrainSettings, Trainer};
use lingua_proxy::distill::chunk::{SYSTEM_PROMPT, user_prompt};
use lingua_proxy::distill::label::align;
use lingua_proxy::distill::train::{Labelled, windows};
use lingua_proxy::distill::words::split;
use lingua_proxy::scorer::llmlingua2::tokenizer::Llmlingua2Tokenizer;
use lingua_proxy::telemetry::PriceTable;
use lingua_proxy::tokens::TokenizerKind;

const STOP: [&str; 20] = [
    "a", "an", "the", "of", "to", "and", "is", "are", "was", "were", "be", "will", "that", "this",
    "for", "on", "in", "at", "with", "it",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A ~512-cl100k-token English chunk and its stopword-free compression.
fn chunk(i: usize) -> (String, String) {
    let nouns = [
        "council",
        "budget",
        "warehouse",
        "invoice",
        "customer",
        "shipment",
        "report",
        "contract",
        "engineer",
        "server",
        "release",
        "ticket",
        "driver",
        "schedule",
        "incident",
    ];
    let mut rng = fastrand::Rng::with_seed(i as u64);
    let mut text = String::new();
    while TokenizerKind::Cl100kBase.count(&text) < 480 {
        let (a, b) = (
            nouns[rng.usize(..nouns.len())],
            nouns[rng.usize(..nouns.len())],
        );
        text.push_str(&match rng.usize(..3) {
            0 => format!("The {a} was reviewed by the {b} in the morning and it is not late. "),
            1 => format!(
                "We will move the {a} to the {b} at 14:00, which is important for the team. "
            ),
            _ => format!("It is clear that the {a} and the {b} were checked on Monday. "),
        });
    }
    let comp = text
        .split_whitespace()
        .filter(|w| !STOP.contains(&w.trim_matches('.').to_lowercase().as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    (text, comp)
}

fn bench_label(n: usize) -> Vec<Labelled> {
    let chunks: Vec<(String, String)> = (0..n).map(chunk).collect();
    let t = Instant::now();
    let mut out = Vec::with_capacity(n);
    for (i, (origin, comp)) in chunks.iter().enumerate() {
        let ow = split(origin, false);
        let cw = split(comp, false);
        let ok: Vec<&str> = ow.iter().map(|w| w.key.as_str()).collect();
        let ck: Vec<&str> = cw.iter().map(|w| w.key.as_str()).collect();
        if let Some(a) = align(&ok, &ck, 400) {
            out.push(Labelled {
                source: format!("s{}", i / 4),
                origin: origin.clone(),
                labels: a.labels,
            });
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "label: {n} chunks of ~500 cl100k tokens in {secs:.2} s = {:.0} chunks/s (one thread)",
        n as f64 / secs
    );
    out
}

fn bench_train(name: &str, dir: &Path, tok_dir: &Path, labelled: &[Labelled]) {
    let Ok(files) = lingua_encoder::ModelFiles::resolve(&dir.display().to_string()) else {
        println!("train {name}: no checkpoint at {}", dir.display());
        return;
    };
    let Ok(tok) = Llmlingua2Tokenizer::from_dir(tok_dir) else {
        println!("train {name}: no tokenizer at {}", tok_dir.display());
        return;
    };
    let settings = TrainSettings::default();
    let mut trainer = match Trainer::from_checkpoint(&files, "cpu", settings) {
        Ok(t) => t,
        Err(e) => {
            println!("train {name}: {e}");
            return;
        }
    };
    let vocab = trainer.config().vocab_size as u32;
    let max_len = 512.min(trainer.max_len());
    let batch_size = env_usize("LINGUA_BENCH_BATCH", 4);
    let steps = env_usize("LINGUA_BENCH_STEPS", 2);
    let mut ws = Vec::new();
    for c in labelled.iter().take(batch_size * (steps + 1)) {
        if let Ok(w) = windows(&tok, c, max_len) {
            ws.extend(w.into_iter().map(|mut w| {
                w.ids.iter_mut().for_each(|id| *id %= vocab);
                w
            }));
        }
    }
    let batches: Vec<Batch> = ws
        .chunks(batch_size)
        .map(|c| Batch {
            ids: c.iter().map(|w| w.ids.clone()).collect(),
            labels: c.iter().map(|w| w.labels.clone()).collect(),
        })
        .collect();
    if batches.len() < 2 {
        println!("train {name}: not enough windows");
        return;
    }
    if let Err(e) = trainer.step(&batches[0]) {
        println!("train {name}: {e}");
        return;
    }
    let t = Instant::now();
    let mut tokens = 0usize;
    let mut done = 0;
    for b in batches.iter().skip(1).take(steps) {
        tokens += b.ids.iter().map(Vec::len).sum::<usize>();
        if trainer.step(b).is_err() {
            break;
        }
        done += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let tps = tokens as f64 / secs;
    println!(
        "train {name}: {} parameters, {done} steps of {batch_size} windows ({tokens} tokens) in \
         {secs:.1} s = {tps:.0} tokens/s; 10,000 chunks x 512 tokens, 1 epoch: {:.1} h",
        trainer.parameters(),
        10_000.0 * 512.0 / tps / 3600.0
    );
}

fn bench_align(name: &str, dir: &Path) {
    let mut a = match Aligner::from_dir(dir, AlignSettings::default()) {
        Ok(a) => a,
        Err(e) => {
            println!("align {name}: {e}");
            return;
        }
    };
    let vocab = a.config().vocab_size as u32;
    let steps = env_usize("LINGUA_BENCH_STEPS", 2);
    let batch: Vec<Example> = (0..4u32)
        .map(|i| {
            let ids: Vec<u32> = (0..256u32)
                .map(|j| (7 + i * 131 + j * 31) % vocab)
                .collect();
            Example {
                ids,
                answer_from: 160,
            }
        })
        .collect();
    if let Err(e) = a.step(&batch) {
        println!("align {name}: {e}");
        return;
    }
    let t = Instant::now();
    for _ in 0..steps {
        if a.step(&batch).is_err() {
            return;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let tokens = steps * batch.iter().map(|e| e.ids.len()).sum::<usize>();
    println!(
        "align {name}: {} trainable parameters, {steps} steps of 4 x 256 tokens in {secs:.1} s = \
         {:.0} tokens/s",
        a.trainable(),
        tokens as f64 / secs
    );
}

fn upstream_cost() {
    let tok = TokenizerKind::Cl100kBase;
    let (origin, comp) = chunk(0);
    let prompt = tok.count(SYSTEM_PROMPT) + tok.count(&user_prompt(&origin));
    let completion = tok.count(&comp);
    let prices = PriceTable::default();
    for model in ["gpt-4o", "gpt-4o-mini"] {
        let cost = prices
            .lookup(model)
            .map(|p| 10_000.0 * (prompt as f64 * p.input + completion as f64 * p.output) / 1e6);
        println!(
            "collect, 10,000 chunks with {model}: {} prompt + {} completion tokens per chunk, \
             {:.1}M tokens in all, ${}",
            prompt,
            completion,
            10_000.0 * (prompt + completion) as f64 / 1e6,
            cost.map_or("?".into(), |c| format!("{c:.2}"))
        );
    }
}

fn main() {
    upstream_cost();
    let labelled = bench_label(10_000);
    let tiny = root().join("tests/models/xlm-roberta-large-tiny");
    bench_train(
        "xlm-roberta tiny (hidden 32, 2 layers)",
        &tiny,
        &tiny,
        &labelled,
    );
    let minilm = root().join("tests/models/bert-base-multilingual-cased-minilm-l6");
    bench_train(
        "MiniLM-L6 (hidden 384, 6 layers)",
        &minilm,
        &minilm,
        &labelled,
    );
    let base = root().join("target/bench-model/bert-base-random");
    if !base.join("model.safetensors").exists()
        && let Err(e) = RandomSpec::bert_base(0).write(&base, None)
    {
        println!("cannot write {}: {e}", base.display());
        return;
    }
    // the random checkpoint has no tokenizer of its own: MiniLM's ids all fit its vocabulary
    if !base.join("tokenizer.json").exists()
        && let Err(e) = std::fs::copy(minilm.join("tokenizer.json"), base.join("tokenizer.json"))
    {
        println!("train bert-base-sized: no tokenizer to borrow ({e}); run scripts/setup.sh");
    }
    bench_train(
        "bert-base-sized (hidden 768, 12 layers)",
        &base,
        &minilm,
        &labelled,
    );
    bench_align("llama tiny", &root().join("tests/models/llama-tiny"));
    if let Some(d) = std::env::var_os("LINGUA_BENCH_CAUSAL") {
        bench_align(&PathBuf::from(&d).display().to_string(), Path::new(&d));
    }
}
