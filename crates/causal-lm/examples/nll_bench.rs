//! Times `CausalLm::nll` on a checkpoint directory with synthetic token ids, the way LLMLingua
//! scores a long prompt: windows of `--window` new tokens on a growing KV cache, cutting the
//! oldest positions out when the model's position limit would be exceeded.
//!
//!     cargo run --release -p lingua-causal --example nll_bench -- DIR [f32|q8] [TOKENS] [WINDOW] [THREADS]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Instant;

use lingua_causal::{CausalLm, LoadOptions, Precision};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("checkpoint directory");
    let precision = match args.get(2).map(String::as_str) {
        Some("q8") => Precision::Q8,
        Some("bf16") => Precision::Bf16,
        _ => Precision::F32,
    };
    let tokens: usize = args.get(3).map_or(2000, |s| s.parse().unwrap());
    let window: usize = args.get(4).map_or(200, |s| s.parse().unwrap());
    let threads: usize = args.get(5).map_or(0, |s| s.parse().unwrap());
    let t0 = Instant::now();
    let lm = CausalLm::load(
        std::path::Path::new(dir),
        &LoadOptions { precision, threads },
    )
    .unwrap();
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let cfg = lm.config().clone();
    let ids: Vec<u32> = (0..tokens as u64)
        .map(|i| ((i * 2_654_435_761) % cfg.vocab_size.min(1000) as u64) as u32)
        .collect();
    for rep in 0..2 {
        let t = Instant::now();
        let mut cache = lm.new_cache();
        let mut total = 0.0f64;
        let mut n = 0usize;
        for chunk in ids.chunks(window) {
            if cache.len() + chunk.len() > cfg.max_position_embeddings {
                let drop = cache.len() + chunk.len() - cfg.max_position_embeddings;
                cache.remove(1, drop);
            }
            let l = lm.nll(&mut cache, chunk).unwrap();
            n += l.len();
            total += l.iter().map(|x| *x as f64).sum::<f64>();
        }
        println!(
            "{{\"rep\": {rep}, \"precision\": \"{precision:?}\", \"tokens\": {tokens}, \"window\": {window}, \
             \"load_ms\": {load_ms:.0}, \"elapsed_ms\": {:.0}, \"mean_nll\": {:.4}, \"cache_mib\": {:.1}}}",
            t.elapsed().as_secs_f64() * 1e3,
            total / n as f64,
            cache.bytes() as f64 / (1 << 20) as f64
        );
    }
}
