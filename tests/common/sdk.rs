//! Helpers for the end-to-end tests that drive the official SDKs through the proxy: running a
//! Python script that reports JSON, finding what the mock received for one client request, and
//! checking that compression only deleted whole words and touched nothing else.

use std::path::PathBuf;

use lingua_proxy_testkit::mock::{MockUpstream, RecordedRequest};

/// The Python with the SDKs: `LINGUA_PYTHON`, or the virtualenv `scripts/test.sh` creates.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("LINGUA_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `bash scripts/test.sh` (it creates the virtualenv with the SDKs)",
        venv.display()
    );
    venv
}

/// Runs `tests/sdk/<script>` with `args`; it must succeed and print one JSON object last.
pub async fn run_python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// The one request the mock received with `x-request-id: rid`.
pub fn received(mock: &MockUpstream, rid: &str) -> RecordedRequest {
    let mut found: Vec<RecordedRequest> = mock
        .state
        .requests()
        .into_iter()
        .filter(|r| r.headers.get("x-request-id").and_then(|v| v.to_str().ok()) == Some(rid))
        .collect();
    assert_eq!(found.len(), 1, "requests with x-request-id {rid}");
    found.remove(0)
}

/// `compressed` is `original` with some whole words deleted, and shorter.
pub fn assert_words_deleted(original: &str, compressed: &str) {
    assert!(
        compressed.len() < original.len(),
        "not compressed: {compressed:?}"
    );
    let mut words = original.split_whitespace();
    for kept in compressed.split_whitespace() {
        assert!(
            words.any(|w| w == kept),
            "{kept:?} is not one of the original words, in order:\n{original}\n->\n{compressed}"
        );
    }
}

/// The mock received exactly the client's body, but for each `(original, compressed)` text
/// (whose JSON form is the text itself): every other byte is the client's.
pub fn assert_only_texts_changed(client_body: &str, upstream: &[u8], texts: &[(&str, &str)]) {
    let mut expected = client_body.to_owned();
    for (original, compressed) in texts {
        assert_words_deleted(original, compressed);
        assert_eq!(expected.matches(original).count(), 1, "{original}");
        expected = expected.replacen(original, compressed, 1);
    }
    assert_eq!(String::from_utf8_lossy(upstream), expected);
}
