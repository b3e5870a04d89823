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
    let defaults = lingua_proxy::config::Config::default();
    assert_eq!(config.ab, defaults.ab);
    assert_eq!(config.telemetry, defaults.telemetry);
    assert_eq!(config.prices, defaults.prices);
    assert_eq!(config.model, defaults.model);
    assert_eq!(config.compression.max_message_tokens, 32768);
    assert_eq!(config.compression.max_request_tokens, 131072);
    assert!(!config.compression.background);
    // device and precision moved to [model]; the shipped file no longer sets the old keys.
    assert_eq!(config.compression.device, None);
    assert_eq!(config.compression.precision, None);
}

#[test]
fn model_table_is_validated_by_key_and_old_compression_keys_still_work() {
    use lingua_proxy::model::PrecisionSetting;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        lingua_proxy::config::Config::load(Some(&path), &lingua_proxy::config::Overrides::default())
    };
    let err = load(
        "[model]
max_batch_tokens = 0
",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.max_batch_tokens"), "{err}");
    let err = load(
        "[model]
device = \"gpu\"
",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.device"), "{err}");
    let err = load(
        "[compression]
device = \"gpu\"
",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("compression.device"), "{err}");
    let ok = load(
        "[compression]
precision = \"q8\"
[model]
threads = 2
max_batch_tokens = 1024
",
    )
    .unwrap();
    assert_eq!(ok.model.threads, 2);
    assert_eq!(ok.model.max_batch_tokens, 1024);
    let effective = ok
        .model
        .clone()
        .with_legacy(ok.compression.device.as_deref(), ok.compression.precision);
    assert_eq!(effective.precision(), PrecisionSetting::Q8);
    assert_eq!(effective.device(), "cpu");
}

#[test]
fn ab_telemetry_and_prices_are_validated_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let load = |text: &str| {
        std::fs::write(&path, text).unwrap();
        lingua_proxy::config::Config::load(Some(&path), &lingua_proxy::config::Overrides::default())
    };
    let err = load("[ab]\nraw_percent = 150\n").unwrap_err().to_string();
    assert!(err.contains("ab.raw_percent"), "{err}");
    let err = load("[ab]\nsticky_key = \"cookie\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ab.sticky_key"), "{err}");
    let err = load("[ab]\nmode = \"canary\"\n").unwrap_err().to_string();
    assert!(err.contains("mode"), "{err}");
    let err = load("[telemetry]\nrotate_bytes = 10\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("telemetry.rotate_bytes"), "{err}");
    let err = load("[prices]\n\"m\" = { input = -1.0, output = 2.0 }\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("prices.m"), "{err}");
    let ok = load(
        "[ab]\nenabled = true\nraw_percent = 10\nsticky_key = \"header:x-conversation\"\n\
         mode = \"mirror\"\nmirror_percent = 5\n[prices]\n\"my-model\" = { input = 1.0, output = 2.0 }\n",
    )
    .unwrap();
    assert_eq!(ok.ab.mode, lingua_proxy::ab::Mode::Mirror);
    assert_eq!(ok.prices["my-model"].input, 1.0);
}
