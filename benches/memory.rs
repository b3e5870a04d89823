//! Memory per request, for docs/reliability.md: 1, 3 and 10 concurrent chat requests of 1.15 million tiny
//! messages each (31 MB) through the release proxy binary with the default limits, while
//! `/healthz` is polled every 20 ms. Prints peak RSS, RSS after the answers and the slowest
//! `/healthz`.
//!
//! `cargo bench --bench memory` (`MEM_MESSAGES` and `MEM_CONCURRENCY=1,3,10` override).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let messages = std::env::var("MEM_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_150_000);
    let levels: Vec<usize> = std::env::var("MEM_CONCURRENCY")
        .unwrap_or_else(|_| "1,3,10".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| at once | body | statuses | unchanged upstream | RSS start | peak | at answer | retained (3 s after) | under 250 MiB after | slowest /healthz |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in levels {
        let r = runtime.block_on(common::memload::run(
            env!("CARGO_BIN_EXE_lingua-proxy").as_ref(),
            n,
            messages,
            250.0,
        ));
        let mut statuses = r.statuses.clone();
        statuses.sort_unstable();
        statuses.dedup();
        println!(
            "| {} | {:.1} MB | {:?} | {}/{} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} | {:.0} ms |",
            n,
            r.body_bytes as f64 / 1e6,
            statuses,
            r.forwarded_unchanged,
            n,
            r.rss_start_mib,
            r.rss_peak_mib,
            r.rss_answered_mib,
            r.rss_after_mib,
            r.settled_after_s
                .map_or_else(|| "not within 10 s".into(), |s| format!("{s:.1} s")),
            r.healthz_max_ms
        );
    }
}
