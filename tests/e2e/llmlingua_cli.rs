//! The CLI contract of the perplexity methods: `lingua-proxy compress --method
//! llmlingua|longllmlingua --model DIR --params FILE|- [--json]` prints the reference's
//! `compress_prompt(**params)["compressed_prompt"]` (or its result object), `--method
//! longllmlingua` supplies the LongLLMLingua recipe for keys the file leaves out, and
//! `lingua-proxy recover` is the reference's `recover`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn goldens(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/goldens").join(name)).unwrap())
        .unwrap()
}

fn case<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// Runs the binary with `params` on stdin; returns (exit code, stdout, stderr).
fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .args(args)
        .env(
            "LINGUA_PUNKT_DIR",
            root().join("tests/models/punkt_tab/english"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A CLI that refuses its arguments may exit before reading stdin: a broken
    // pipe then is the refusal we are testing, not a failure to report.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn compress_prints_the_reference_prompt_for_both_families() {
    for (file, dir) in [
        ("llmlingua_gpt2.json", "tests/models/gpt2-tiny"),
        ("llmlingua_llama.json", "tests/models/llama-tiny"),
    ] {
        let g = goldens(file);
        let model = root().join(dir);
        for name in [
            "01_plain_3ctx_rate05",
            "03_long_single_rate04",
            "12_rank_bm25",
        ] {
            let c = case(&g, name);
            let params = c["params"].to_string();
            let (code, out, err) = run(
                &[
                    "compress",
                    "--method",
                    "llmlingua",
                    "--model",
                    model.to_str().unwrap(),
                    "--params",
                    "-",
                ],
                &params,
            );
            assert_eq!(code, 0, "{err}");
            assert_eq!(
                out.strip_suffix('\n').unwrap(),
                c["result"]["compressed_prompt"].as_str().unwrap(),
                "{file} {name}"
            );
        }
        // --json: the reference's result dict plus elapsed_ms.
        let c = case(&g, "02_target150_3ctx");
        let (code, out, err) = run(
            &[
                "compress",
                "--method",
                "llmlingua",
                "--model",
                model.to_str().unwrap(),
                "--params",
                "-",
                "--json",
            ],
            &c["params"].to_string(),
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        for k in [
            "compressed_prompt",
            "origin_tokens",
            "compressed_tokens",
            "ratio",
            "rate",
            "saving",
        ] {
            assert_eq!(v[k], c["result"][k], "{file} {k}");
        }
        assert!(v["elapsed_ms"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn longllmlingua_method_supplies_the_recipe_defaults() {
    let g = goldens("llmlingua_gpt2.json");
    let c = case(&g, "05_longllmlingua_recipe");
    // Only the context and the question: rate 0.55, after_condition, sort, dynamic 0.3,
    // condition_compare and "+100" come from --method longllmlingua.
    let params = json!({"context": c["params"]["context"], "question": c["params"]["question"]});
    let dir = root().join("tests/models/gpt2-tiny");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), params.to_string()).unwrap();
    let (code, out, err) = run(
        &[
            "compress",
            "--method",
            "longllmlingua",
            "--model",
            dir.to_str().unwrap(),
            "--params",
            file.path().to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.strip_suffix('\n').unwrap(),
        c["result"]["compressed_prompt"].as_str().unwrap()
    );
    // With plain llmlingua defaults the same file gives another prompt.
    let (_, plain, _) = run(
        &[
            "compress",
            "--method",
            "llmlingua",
            "--model",
            dir.to_str().unwrap(),
            "--params",
            file.path().to_str().unwrap(),
        ],
        "",
    );
    assert_ne!(plain, out);
}

#[test]
fn recover_matches_the_reference() {
    let g = goldens("llmlingua_llama.json");
    let dir = root().join("tests/models/llama-tiny");
    for c in g["recover"].as_array().unwrap() {
        let params = json!({
            "original_prompt": c["original_prompt"],
            "compressed_prompt": c["compressed_prompt"],
            "response": c["response"],
        });
        let (code, out, err) = run(
            &[
                "recover",
                "--model",
                dir.to_str().unwrap(),
                "--params",
                "-",
                "--json",
            ],
            &params.to_string(),
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["recovered"], c["result"], "{}", c["name"]);
    }
}

#[test]
fn bad_parameters_are_refused_like_python() {
    let dir = root().join("tests/models/gpt2-tiny");
    let d = dir.to_str().unwrap();
    for (params, want) in [
        (
            r#"{"context": "a b c", "ratio": 0.5}"#,
            "unexpected keyword argument \"ratio\"",
        ),
        (r#"{"rate": 0.5}"#, "missing 1 required positional argument"),
        (
            r#"{"context": "a", "rate": 1.5}"#,
            "'rate' must not exceed 1.0",
        ),
        (
            r#"{"context": ["a", "b"], "rank_method": "longllmlingua"}"#,
            "necessary to set a question",
        ),
        (
            r#"{"context": ["a", "b"], "context_budget": "+__import__('os')"}"#,
            "context_budget",
        ),
        (
            r#"{"context": ["a", "b"], "rank_method": "bge"}"#,
            "embedding or reranker",
        ),
        ("[1, 2]", "JSON object"),
        ("{", "not valid JSON"),
    ] {
        let (code, out, err) = run(
            &[
                "compress",
                "--method",
                "llmlingua",
                "--model",
                d,
                "--params",
                "-",
            ],
            params,
        );
        assert_eq!(code, 2, "{params}: {out}");
        assert!(err.contains(want), "{params}: {err}");
    }
    let (code, _, err) = run(
        &["compress", "--method", "llmlingua", "--params", "-"],
        "{}",
    );
    assert_eq!(code, 2);
    assert!(err.contains("--model"), "{err}");
    let (code, _, err) = run(
        &[
            "compress",
            "--method",
            "llmlingua",
            "--model",
            "/nonexistent/dir",
            "--params",
            "-",
        ],
        r#"{"context": "x"}"#,
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}
