//! `lingua-proxy compress --scorer llmlingua2` prints exactly what the reference's
//! `compress_prompt(text, …)["compressed_prompt"]` returned, on the committed goldens.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::io::Write;
use std::process::{Command, Stdio};

fn golden_cases() -> Vec<serde_json::Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/goldens/lingua2.json");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    g["cases"].as_array().unwrap().clone()
}

fn run_cli(args: &[String], stdin: &str) -> std::process::Output {
    run_at_tier(None, args, stdin)
}

/// `compress` with `LINGUA_KERNELS` set to `tier` (None: no ceiling).
fn run_at_tier(
    tier: Option<&str>,
    args: &[impl AsRef<std::ffi::OsStr>],
    stdin: &str,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"));
    cmd.arg("compress").args(args).env_remove("LINGUA_KERNELS");
    if let Some(t) = tier {
        cmd.env("LINGUA_KERNELS", t);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal may exit before reading stdin; the broken pipe is then expected.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// Single-context XLM-R goldens whose options the CLI exposes.
#[test]
fn cli_matches_reference_goldens_on_the_tiny_xlmr_checkpoint() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let mut checked = 0;
    for case in golden_cases() {
        let name = case["name"].as_str().unwrap();
        let contexts = case["contexts"].as_array().unwrap();
        let opts = case["options"].as_object().unwrap();
        let supported = [
            "rate",
            "target_token",
            "force_tokens",
            "force_reserve_digit",
            "drop_consecutive",
            "token_to_word",
        ];
        if !name.starts_with("xlmr/")
            || contexts.len() != 1
            || opts.keys().any(|k| !supported.contains(&k.as_str()))
        {
            continue;
        }
        let mut args = vec![
            "--scorer".to_string(),
            "llmlingua2".into(),
            "--model".into(),
            model.into(),
            "--json".into(),
        ];
        if let Some(r) = opts.get("rate") {
            args.extend(["--rate".into(), r.to_string()]);
        }
        if let Some(t) = opts.get("target_token") {
            args.extend(["--target-tokens".into(), t.to_string()]);
        }
        for t in opts
            .get("force_tokens")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let t = t
                .as_str()
                .unwrap()
                .replace('\\', "\\\\")
                .replace('\n', "\\n");
            args.extend(["--force-token".into(), t]);
        }
        if opts.get("force_reserve_digit") == Some(&serde_json::json!(true)) {
            args.push("--force-reserve-digit".into());
        }
        if opts.get("drop_consecutive") == Some(&serde_json::json!(true)) {
            args.push("--drop-consecutive".into());
        }
        if let Some(t) = opts.get("token_to_word") {
            args.extend(["--token-to-word".into(), t.as_str().unwrap().into()]);
        }
        let out = run_cli(&args, contexts[0].as_str().unwrap());
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = &case["expected"];
        assert_eq!(
            got["compressed_prompt"], want["compressed_prompt"],
            "{name}"
        );
        assert_eq!(got["origin_tokens"], want["origin_tokens"], "{name}");
        assert_eq!(
            got["compressed_tokens"], want["compressed_tokens"],
            "{name}"
        );
        assert!(got["elapsed_ms"].as_f64().unwrap() >= 0.0);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} golden cases fit the CLI");
}

#[test]
fn cli_plain_text_output_and_bad_model() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let text = "So, I have been looking at the project and I believe we need to make some changes to the timeline.";
    let out = run_cli(
        &[
            "--scorer".into(),
            "llmlingua2".into(),
            "--model".into(),
            model.into(),
            "--rate".into(),
            "0.5".into(),
        ],
        text,
    );
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(!printed.trim().is_empty() && printed.trim().len() < text.len());

    let out = run_cli(
        &[
            "--scorer".into(),
            "llmlingua2".into(),
            "--model".into(),
            "/nonexistent/model-dir".into(),
        ],
        text,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model-dir"));
}

/// Every kernel tier (each one this CPU has, forced with `LINGUA_KERNELS`) compresses to the
/// very same text as the best tier, for both model paths and every precision: the int8 sums
/// are exact on every tier, the bf16 sums run in one order everywhere, and the element-wise
/// builds give the same bits. A ceiling that names no tier is refused before anything loads.
#[test]
fn every_kernel_tier_compresses_identically() {
    let root = env!("CARGO_MANIFEST_DIR");
    let xlmr = format!("{root}/tests/models/xlm-roberta-large-tiny");
    let llama = format!("{root}/tests/models/llama-tiny");
    let text = golden_cases()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with("xlmr/"))
        .unwrap()["contexts"][0]
        .as_str()
        .unwrap()
        .to_string();
    let params = serde_json::json!({"context": [text.clone()], "rate": 0.5}).to_string();
    let precisions = ["f32", "q8", "bf16"];
    let lingua2 = precisions.map(|p| {
        let args = vec![
            "--scorer",
            "llmlingua2",
            "--model",
            &xlmr,
            "--rate",
            "0.5",
            "--precision",
            p,
            "--json",
        ];
        (args, text.as_str())
    });
    let llmlingua = precisions.map(|p| {
        let args = vec![
            "--method",
            "llmlingua",
            "--model",
            &llama,
            "--precision",
            p,
            "--params",
            "-",
        ];
        (args, params.as_str())
    });
    let runs: Vec<(Vec<&str>, &str)> = lingua2.into_iter().chain(llmlingua).collect();
    let prompt = |out: &std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        match serde_json::from_str::<serde_json::Value>(&s) {
            Ok(v) if v.get("compressed_prompt").is_some() => {
                v["compressed_prompt"].as_str().unwrap().to_string()
            }
            _ => s,
        }
    };
    for (args, stdin) in &runs {
        let best = prompt(&run_at_tier(None, args, stdin));
        assert!(!best.trim().is_empty(), "{args:?}");
        for tier in [
            "portable",
            "avx2-fma",
            "avx-vnni",
            "avx512",
            "avx512-vnni",
            "avx512-bf16",
            "amx",
        ] {
            let got = prompt(&run_at_tier(Some(tier), args, stdin));
            assert_eq!(got, best, "LINGUA_KERNELS={tier} {args:?}");
        }
    }
    let out = run_at_tier(Some("sse9"), &runs[0].0, &text);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LINGUA_KERNELS") && err.contains("avx2-fma"),
        "{err}"
    );
}
