//! Load figures for docs/reliability.md: N concurrent streaming clients (default 500) for S seconds (default
//! 60) through the release proxy binary (heuristic scorer, compression on, every request a new
//! prompt) to the in-process mock. Prints the error count, the proxy's RSS at start, half time
//! and end, and time-to-first-byte percentiles.
//!
//! `cargo build --release && cargo bench --bench load` (`LOAD_CLIENTS`, `LOAD_SECONDS`,
//! `LOAD_CHUNKS`, `LOAD_CHUNK_DELAY_MS` override the defaults).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::load::{LoadConfig, raise_fd_limit, run};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let cfg = LoadConfig {
        clients: env_or("LOAD_CLIENTS", 500) as usize,
        duration: Duration::from_secs(env_or("LOAD_SECONDS", 60)),
        chunks: env_or("LOAD_CHUNKS", 20) as u32,
        chunk_delay_ms: env_or("LOAD_CHUNK_DELAY_MS", 50),
        unique_per_request: true,
    };
    let fds = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = runtime.block_on(run(env!("CARGO_BIN_EXE_lingua-proxy").as_ref(), &cfg));
    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "load: {} clients x {:.0} s, {} chunks every {} ms, open-file limit {fds}",
        cfg.clients,
        r.elapsed.as_secs_f64(),
        cfg.chunks,
        cfg.chunk_delay_ms
    );
    println!(
        "  requests {} ({:.0}/s), errors {}, compressed {}",
        r.requests,
        r.requests as f64 / r.elapsed.as_secs_f64(),
        r.errors,
        r.compressed
    );
    println!(
        "  proxy RSS start {:.1} MiB, middle {:.1} MiB, end {:.1} MiB, peak {:.1} MiB",
        mib(r.rss_start_kb),
        mib(r.rss_mid_kb),
        mib(r.rss_end_kb),
        mib(r.rss_peak_kb)
    );
    println!(
        "  time to first byte p50 {:.1} ms, p99 {:.1} ms",
        r.ttfb_percentile(0.5).as_secs_f64() * 1e3,
        r.ttfb_percentile(0.99).as_secs_f64() * 1e3
    );
    for e in &r.error_samples {
        println!("  error: {e}");
    }
}
