//! The smoke run of `scripts/bench_rps.sh` (the requests-per-second benchmark): one short round
//! through this build's binary against nginx, read back from the script's own table.

use std::path::Path;
use std::process::Command;

#[test]
fn bench_rps_smoke_runs_and_reports_both_sides() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/bench_rps.sh"))
        .env("LINGUA_BENCH_BIN", env!("CARGO_BIN_EXE_lingua-proxy"))
        .env("BENCH_SECONDS", "1")
        .env("BENCH_ROUNDS", "1")
        .env("BENCH_CONNECTIONS", "8")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // | connections | side | requests/s | errors | p50 ms | p99 ms |
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| 8 |") || l.starts_with("| 1 |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for r in &rows {
        let rps: f64 = r[3].replace(',', "").parse().unwrap();
        assert!(rps > 0.0, "{stdout}");
        assert_eq!(r[4], "0", "wrk saw errors: {stdout}");
    }
    assert!(rows.iter().any(|r| r[2] == "proxied"), "{stdout}");
    // every request the proxy answered went upstream and came back 200 (status 0 is wrk
    // cutting its last requests off when a run stops)
    let statuses = stdout
        .lines()
        .find(|l| l.starts_with("proxy answers by status:"))
        .unwrap();
    let ok: u64 = statuses
        .split("200: ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(ok > 0, "{statuses}");
    for part in statuses
        .trim_start_matches("proxy answers by status:")
        .split(',')
    {
        let status = part.trim().split(':').next().unwrap();
        if status.chars().all(|c| c.is_ascii_digit()) {
            assert!(status == "200" || status == "0", "{statuses}");
        }
    }
}
