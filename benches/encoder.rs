//! Encoder throughput: the same ~2,000-token English text through this crate (f32, q8 and bf16) and,
//! when `LINGUA_REF_PYTHON` names a Python with torch + llmlingua 0.2.2, through the reference
//! (`tools/bench_reference.py`) in the same run.
//!
//! ```text
//! python tools/make_bench_model.py bench /tmp/bench/bert-base-multilingual-cased-random
//! LINGUA_BENCH_MODEL=/tmp/bench/bert-base-multilingual-cased-random \
//! LINGUA_REF_PYTHON=/work/ref-venv/bin/python cargo bench --bench encoder
//! ```
//! Without `LINGUA_BENCH_MODEL` a bert-base-sized random checkpoint is written by the crate
//! itself (under `target/`) and the text is mapped to ids by hashing words.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lingua_encoder::random::RandomSpec;
use lingua_encoder::{ModelFiles, Precision, TokenClassifier};

const WINDOW: usize = 510;

/// What the bench times, f32 first (the others are compared with it).
const PRECISIONS: [Precision; 3] = [Precision::F32, Precision::Q8, Precision::Bf16];

/// Keep/drop at the median (rate 0.5), token level, each precision against f32.
fn print_agreement(f: &[f32], others: &[(Precision, Vec<f32>)]) {
    let median = |v: &[f32]| {
        let mut s = v.to_vec();
        s.sort_by(f32::total_cmp);
        s[s.len() / 2]
    };
    let tf = median(f);
    for (p, q) in others {
        let tq = median(q);
        let agree = f
            .iter()
            .zip(q)
            .filter(|(a, b)| (**a > tf) == (**b > tq))
            .count();
        let worst = f
            .iter()
            .zip(q)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "  {} vs f32: {:.2}% of token keep/drop decisions agree at rate 0.5, max |dp| {worst:.4}",
            p.as_str(),
            100.0 * agree as f64 / f.len() as f64
        );
    }
}

fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LINGUA_BENCH_MODEL") {
        return PathBuf::from(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-model/bert-base-random");
    if !d.join("model.safetensors").exists() {
        eprintln!(
            "writing a bert-base-sized random checkpoint to {}",
            d.display()
        );
        if let Err(e) = RandomSpec::bert_base(0).write(&d, None) {
            panic!("cannot write the bench model: {e}");
        }
    }
    d
}

fn windows(dir: &Path, text: &str) -> Vec<Vec<u32>> {
    let ids: Vec<u32> = match tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")) {
        Ok(mut tok) => {
            let _ = tok.with_truncation(None);
            tok.with_padding(None);
            match tok.encode(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                Err(e) => {
                    panic!("tokenizer failed: {e}");
                }
            }
        }
        Err(_) => {
            // No tokenizer: about 1.1 ids per word, hashed into the vocabulary.
            text.split_whitespace()
                .flat_map(|w| {
                    let h = w
                        .bytes()
                        .fold(1469598103u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
                    let n = if w.len() > 7 { 2 } else { 1 };
                    (0..n).map(move |i| 1000 + (h.wrapping_add(i) % 100_000))
                })
                .collect()
        }
    };
    ids.chunks(WINDOW)
        .map(|w| {
            let mut v = Vec::with_capacity(w.len() + 2);
            v.push(101);
            v.extend_from_slice(w);
            v.push(102);
            v
        })
        .collect()
}

/// CPU seconds used by this process (all threads), from /proc/self/stat (10 ms ticks).
/// Under contention from other processes this is steadier than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after the command: state(0) ... utime(11) stime(12)
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("LINGUA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if std::env::var_os("LINGUA_ENCODER_PROFILE").is_some() {
        // The encoder logs a per-stage time breakdown of every forward pass at info level.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = model_dir();
    let text_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/meeting.txt");
    let text = std::fs::read_to_string(&text_path).unwrap_or_default();
    let batch = windows(&dir, &text);
    let tokens: usize = batch.iter().map(Vec::len).sum();
    let files = ModelFiles {
        dir: dir.clone(),
        config: dir.join("config.json"),
        tokenizer_json: dir.join("tokenizer.json"),
        weights: dir.join("model.safetensors"),
    };
    println!(
        "encoder bench: {} windows, {tokens} model tokens, {runs} runs after a warm-up, model {}",
        batch.len(),
        dir.display()
    );
    let cpu = lingua_kernels::tier::report();
    println!(
        "  tier {} ({}; q8: {}, bf16: {})",
        cpu["tier"].as_str().unwrap_or("?"),
        cpu["features"],
        cpu["kernels"]["q8_products"].as_str().unwrap_or("?"),
        cpu["kernels"]["bf16_products"].as_str().unwrap_or("?")
    );
    let mut ours = Vec::new();
    let mut outputs: Vec<(Precision, Vec<f32>)> = Vec::new();
    for precision in PRECISIONS {
        let m = match TokenClassifier::load(&files, "cpu", precision) {
            Ok(m) => m,
            Err(e) => {
                panic!("load failed: {e}");
            }
        };
        if let Ok(p) = m.keep_probs(&batch) {
            outputs.push((precision, p.concat()));
        }
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let (t, c) = (Instant::now(), cpu_seconds());
            let r = m.keep_probs(&batch);
            times.push(t.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c);
            assert!(r.is_ok());
        }
        let med = median(times.clone());
        let med_cpu = median(cpu);
        println!(
            "  lingua-proxy {:>3}: median {:.3} s wall ({:.0} tokens/s), {:.2} CPU-s \
             ({:.0} tokens per CPU-s)  runs {:?}",
            precision.as_str(),
            med,
            tokens as f64 / med,
            med_cpu,
            tokens as f64 / med_cpu,
            times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>()
        );
        ours.push((precision, tokens as f64 / med, tokens as f64 / med_cpu));
    }

    if let [(_, f), others @ ..] = &outputs[..] {
        print_agreement(f, others);
    }

    // The whole LLMLingua-2 path as the proxy runs it: tokenizer glue, the model scheduler and the
    // selection (`compress_prompt(text, rate=0.5)`), timed like the reference's end to end.
    let mut ours_e2e = Vec::new();
    for precision in PRECISIONS {
        let model_cfg = lingua_proxy::model::ModelConfig {
            precision: Some(match precision {
                Precision::F32 => lingua_proxy::model::PrecisionSetting::F32,
                Precision::Q8 => lingua_proxy::model::PrecisionSetting::Q8,
                Precision::Bf16 => lingua_proxy::model::PrecisionSetting::Bf16,
            }),
            ..Default::default()
        };
        let loaded = match lingua_proxy::scorer::llmlingua2::scorer::load(
            &dir.display().to_string(),
            &model_cfg,
        ) {
            Ok(l) => l,
            Err(e) => {
                panic!("load failed: {e}");
            }
        };
        let opts = lingua_proxy::compress::llmlingua2::Llmlingua2Options {
            rate: 0.5,
            ..Default::default()
        };
        let run = || {
            lingua_proxy::compress::llmlingua2::compress_prompt(
                loaded.scorer.as_ref(),
                &[&text],
                &opts,
            )
        };
        assert!(run().is_ok());
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            assert!(run().is_ok());
            times.push(t.elapsed().as_secs_f64());
        }
        let med = median(times);
        println!(
            "  lingua-proxy {:>3} compress_prompt end to end: median {:.3} s ({:.0} model tokens/s)",
            precision.as_str(),
            med,
            tokens as f64 / med
        );
        ours_e2e.push((precision, tokens as f64 / med));
    }
    let Some(py) = std::env::var_os("LINGUA_REF_PYTHON") else {
        println!("  (set LINGUA_REF_PYTHON to time the PyTorch reference side by side)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_reference.py");
    let out = std::process::Command::new(py)
        .arg(&script)
        .arg("--model")
        .arg(&dir)
        .arg("--text")
        .arg(&text_path)
        .arg("--runs")
        .arg(runs.to_string())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("reference failed: {}", String::from_utf8_lossy(&o.stderr));
            return;
        }
        Err(e) => {
            eprintln!("cannot run the reference: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with('{')) else {
        eprintln!("reference printed no result: {stdout}");
        return;
    };
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    let fwd = v["forward"]["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    let fwd_cpu = v["forward"]["tokens_per_cpu_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let e2e = v["compress"]["model_tokens_per_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!(
        "  reference (torch {}, {} threads): forward {:.0} tokens/s (median {:.3} s, \
         {:.0} tokens per CPU-s); compress_prompt end to end {:.0} tokens/s (median {:.3} s)",
        v["torch"].as_str().unwrap_or("?"),
        v["threads"],
        fwd,
        v["forward"]["median_s"].as_f64().unwrap_or(f64::NAN),
        fwd_cpu,
        e2e,
        v["compress"]["median_s"].as_f64().unwrap_or(f64::NAN),
    );
    let bf16 = v["compress_bf16"]["model_tokens_per_s"].as_f64();
    match bf16 {
        Some(b) => println!(
            "  reference under torch.autocast(bfloat16): compress_prompt end to end {b:.0} \
             tokens/s (median {:.3} s)",
            v["compress_bf16"]["median_s"].as_f64().unwrap_or(f64::NAN)
        ),
        None => println!("  (no bf16 instructions on this CPU: PyTorch's bf16 autocast not timed)"),
    }
    for ((p, tps, tpc), (_, e2e_ours)) in ours.into_iter().zip(ours_e2e) {
        println!(
            "  ratio {:>3}: forward {:.2}x the reference (wall), {:.2}x per CPU-second; \
             compress_prompt end to end {:.2}x the reference (wall){}",
            p.as_str(),
            tps / fwd,
            tpc / fwd_cpu,
            e2e_ours / e2e,
            bf16.map(|b| format!(", {:.2}x its bf16 autocast", e2e_ours / b))
                .unwrap_or_default()
        );
    }
}
