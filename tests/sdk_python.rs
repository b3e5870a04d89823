//! Drives tests/sdk/openai_e2e.py (the official `openai` Python SDK) against the real proxy and
//! the mock upstream, both on loopback. The virtualenv is created by `scripts/test.sh`
//! (`.venv/`, or the interpreter named by `LINGUA_PYTHON`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("LINGUA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `bash scripts/test.sh` (it creates the virtualenv with the openai SDK)",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_end_to_end() {
    let h = common::start().await;
    let base = h.url("/v1");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_e2e.py");
    let python = python();
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&base)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
    // Every SDK call reached the upstream through the proxy.
    assert!(h.mock.state.request_count() >= 6);
}
