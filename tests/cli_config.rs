//! The binary rejects bad configuration before listening, naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run_serve(config: &str, extra_env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"));
    cmd.arg("serve").arg("--config").arg(&path);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_value_in_file_names_the_key_and_exits_nonzero() {
    let out = run_serve(
        "listen = \"127.0.0.1:0\"\n[upstream]\nconnect_timeout_ms = \"soon\"\n",
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstream.connect_timeout_ms"), "{err}");
}

#[test]
fn bad_env_value_names_the_key() {
    let out = run_serve(
        "listen = \"127.0.0.1:0\"\n",
        &[("LINGUA_PROXY_UPSTREAM__BASE_URL", "not a url")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstream.base_url"), "{err}");
}

#[test]
fn shipped_proxy_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let config = lingua_proxy::config::Config::load(
        Some(std::path::Path::new(path)),
        &lingua_proxy::config::Overrides::default(),
    )
    .unwrap();
    // The shipped file documents the defaults; it must not silently change them.
    assert_eq!(
        config.upstream,
        lingua_proxy::config::Config::default().upstream
    );
    assert_eq!(config.max_body_bytes, 32 * 1024 * 1024);
}
