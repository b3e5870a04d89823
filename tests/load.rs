//! The short load run of the reliability suite: concurrent streaming clients through the proxy
//! binary (heuristic scorer, compression on) to the mock. Asserts zero errors and that the
//! proxy's RSS stays flat in the second half of the run. The long run with figures is
//! `cargo bench --bench load`; `LOAD_CLIENTS` and `LOAD_SECONDS` size both.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::load::{LoadConfig, run};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_under_load_have_no_errors_and_flat_rss() {
    let cfg = LoadConfig {
        clients: env_or("LOAD_CLIENTS", 200) as usize,
        duration: Duration::from_secs(env_or("LOAD_SECONDS", 10)),
        chunks: 10,
        chunk_delay_ms: 50,
        unique_per_request: false,
    };
    let r = run(env!("CARGO_BIN_EXE_lingua-proxy").as_ref(), &cfg).await;
    eprintln!(
        "load: {} requests, {} errors, {} compressed, RSS {} / {} / {} KiB (peak {}), ttfb p50 {:?} p99 {:?}",
        r.requests,
        r.errors,
        r.compressed,
        r.rss_start_kb,
        r.rss_mid_kb,
        r.rss_end_kb,
        r.rss_peak_kb,
        r.ttfb_percentile(0.5),
        r.ttfb_percentile(0.99)
    );
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    assert!(r.requests >= cfg.clients as u64);
    assert!(r.compressed > 0, "compression never ran");
    assert!(r.rss_mid_kb > 0 && r.rss_end_kb > 0, "RSS was not read");
    // Flat: the second half of the run adds at most a quarter (or 32 MiB) to the RSS.
    let allowed = (r.rss_mid_kb / 4).max(32 * 1024);
    assert!(
        r.rss_end_kb <= r.rss_mid_kb + allowed,
        "RSS grew from {} KiB to {} KiB in the second half",
        r.rss_mid_kb,
        r.rss_end_kb
    );
}

/// Issue 18's probe: 1.15 million tiny messages (31 MB, under `max_body_bytes`), three at once,
/// with the default limits. Such a body is never parsed into a tree (more than
/// `max_json_values`): it goes upstream unchanged, the process stays far under a gigabyte and
/// shrinks back, and `/healthz` keeps answering. `cargo bench --bench memory` prints the figures
/// for 1, 3 and 10 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_json_values_cost_bounded_memory_and_return_it() {
    let r = common::memload::run(
        env!("CARGO_BIN_EXE_lingua-proxy").as_ref(),
        3,
        1_150_000,
        250.0,
    )
    .await;
    eprintln!("{r:?}");
    assert!(r.body_bytes > 30_000_000, "{}", r.body_bytes);
    assert_eq!(r.statuses, vec![200; 3]);
    assert_eq!(
        r.forwarded_unchanged, 3,
        "the bodies must reach the upstream as sent"
    );
    assert!(r.rss_peak_mib < 1024.0, "peak {} MiB", r.rss_peak_mib);
    assert!(
        r.settled_after_s.is_some(),
        "RSS still {} MiB 10 s after the answers",
        r.rss_after_mib
    );
    assert!(r.healthz_polls > 0);
    assert!(
        r.healthz_max_ms < 500.0,
        "/healthz took {} ms",
        r.healthz_max_ms
    );
}
