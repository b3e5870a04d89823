//! The binary rejects bad configuration before listening, naming the key.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

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
    assert_eq!(config.cache, defaults.cache);
    assert_eq!(config.tls, defaults.tls);
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
    // Mirror copies with the public salt: a client could pick always-mirrored session ids.
    for salt in ["", "salt = \"lingua-proxy\"\n", "salt = \"short\"\n"] {
        let err = load(&format!(
            "[ab]\nenabled = true\nmode = \"mirror\"\nmirror_percent = 5\n{salt}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ab.salt") && err.contains("secret"), "{err}");
    }
    let ok = load(
        "[ab]\nenabled = true\nraw_percent = 10\nsticky_key = \"header:x-conversation\"\n\
         mode = \"mirror\"\nmirror_percent = 5\nsalt = \"3f9a1c0e5b7d2468\"\n\
         [prices]\n\"my-model\" = { input = 1.0, output = 2.0 }\n",
    )
    .unwrap();
    assert_eq!(ok.ab.mode, lingua_proxy::ab::Mode::Mirror);
    assert_eq!(ok.prices["my-model"].input, 1.0);
}

/// Starts `lingua-proxy serve` with `args` and `env` and waits for it to listen (it logs the
/// address); returns whether it did within 20 s, and its stderr so far.
fn starts(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"));
    cmd.arg("serve")
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("LINGUA_PROXY_COMPRESSION__SCORER", "heuristic")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut log = String::new();
    let mut up = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                up |= line.contains("listening");
                log.push_str(&line);
                log.push('\n');
                if up {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (up, log)
}

/// Every environment variable the documentation names works: `LINGUA_PROXY_CONFIG` instead of `--config`,
/// and `keys_env = "LINGUA_PROXY_KEYS"` (docs' and proxy.toml's recipe) with the keys set.
#[test]
fn documented_environment_variables_start_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n").unwrap();
    let (up, log) = starts(&[], &[("LINGUA_PROXY_CONFIG", path.to_str().unwrap())]);
    assert!(up, "{log}");

    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        "listen = \"127.0.0.1:0\"\n[upstream]\napi_key_env = \"LP_TEST_UPSTREAM_KEY\"\n\
         [auth]\nkeys_env = \"LINGUA_PROXY_KEYS\"\n",
    )
    .unwrap();
    let (up, log) = starts(
        &["--config", auth.to_str().unwrap()],
        &[
            ("LINGUA_PROXY_KEYS", "k1,k2"),
            ("LP_TEST_UPSTREAM_KEY", "sk-test"),
        ],
    );
    assert!(up, "{log}");

    // Every LINGUA_PROXY_* name in README and docs/ is a configuration key or one of the
    // documented non-configuration variables.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for doc in std::fs::read_dir(root.join("docs")).unwrap() {
        readme += &std::fs::read_to_string(doc.unwrap().path()).unwrap();
    }
    let defaults = serde_json::to_value(lingua_proxy::config::Config::default()).unwrap();
    let mut names: Vec<&str> = readme
        .match_indices("LINGUA_PROXY_")
        .map(|(i, _)| {
            let rest = &readme[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let key = name
            .trim_start_matches("LINGUA_PROXY_")
            .trim_end_matches('_');
        if matches!(key, "CONFIG" | "KEYS" | "KEY" | "CHROMIUM" | "") {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        let mut v = &defaults;
        for p in &path {
            v = v.get(p).unwrap_or_else(|| {
                panic!("the documentation names {name}, not a configuration key")
            });
        }
    }
}

/// The binary refuses to be an open relay for the operator's key, and creates its event log
/// readable by the owner only.
#[test]
fn open_relay_is_refused_and_the_event_log_is_private() {
    let out = run_serve(
        "listen = \"0.0.0.0:0\"\n[upstream]\napi_key_env = \"LP_TEST_RELAY_KEY\"\n",
        &[("LP_TEST_RELAY_KEY", "sk-operator")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_unauthenticated"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"0.0.0.0:0\"\n[upstream]\napi_key_env = \"LP_TEST_RELAY_KEY\"\n\
             [auth]\nallow_unauthenticated = true\n[telemetry]\nevents_path = {events:?}\n\
             log_content = true\n"
        ),
    )
    .unwrap();
    let (up, log) = starts(
        &["--config", path.to_str().unwrap()],
        &[("LP_TEST_RELAY_KEY", "sk-operator")],
    );
    assert!(up, "{log}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&events).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn kubernetes_proxy_toml_is_valid() {
    // The ConfigMap of deploy/kubernetes: the proxy's own loader accepts it.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/base/proxy.toml"
    );
    let config = lingua_proxy::config::Config::load(
        Some(std::path::Path::new(path)),
        &lingua_proxy::config::Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:8080");
    assert_eq!(config.log.format, lingua_proxy::config::LogFormat::Json);
    assert!(!config.server.loopback_host_check);
    assert_eq!(config.auth.keys_env.as_deref(), Some("LINGUA_PROXY_KEYS"));
}

#[test]
fn cache_and_tls_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[cache]\nbackend = \"redis\"\n", "cache.redis_url"),
        (
            "[cache]\nbackend = \"redis\"\nredis_url = \"http://x\"\n",
            "cache.redis_url",
        ),
        ("[cache]\nttl_s = 0\n", "cache.ttl_s"),
        ("[tls]\ncert_path = \"/tmp/c.pem\"\n", "tls.key_path"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let err = lingua_proxy::config::Config::load(
            Some(&path),
            &lingua_proxy::config::Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}
