#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The `[compression]` table read from TOML, and the `compress` command's config handling.

use std::io::Write;

use lingua_proxy::cli::compress::{CompressArgs, compress_text, load_config};
use lingua_proxy::compress::{OnError, ScorerKind, TokenizerKind};

fn file(toml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

#[test]
fn reads_every_key_kind() {
    let f = file(
        r#"
[compression]
scorer = "heuristic"
protect_recent = 2
min_savings = 0.1
keep_patterns = ["TICKET-\\d+"]
force_tokens = ["\n", "?"]
deadline_ms = 300
on_error = "reject"
default_tokenizer = "cl100k_base"
cache_bytes = 0

[compression.roles.tool]
rate = 0.3
min_tokens = 10

[compression.roles.assistant]
enabled = true
target_tokens = 100
"#,
    );
    let c = load_config(Some(&f.path().to_path_buf())).unwrap();
    assert_eq!(c.scorer, ScorerKind::Heuristic);
    assert_eq!(c.protect_recent, 2);
    assert_eq!(c.on_error, OnError::Reject);
    assert_eq!(c.default_tokenizer, TokenizerKind::Cl100kBase);
    assert_eq!(c.roles.tool.rate, 0.3);
    assert_eq!(c.roles.tool.min_tokens, 10);
    assert!(c.roles.assistant.enabled);
    assert_eq!(c.roles.assistant.target_tokens, Some(100));
    assert_eq!(
        c.roles.system.rate,
        lingua_proxy::compress::CompressionConfig::default()
            .roles
            .system
            .rate,
        "unset keys keep their defaults"
    );
    assert_eq!(c.force_tokens, ["\n", "?"]);
}

#[test]
fn errors_name_the_key() {
    let f = file("[compression.roles.user]\nrate = 1.5\n");
    let e = load_config(Some(&f.path().to_path_buf()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("roles.user.rate"), "{e}");
    let f = file("[compression]\nbogus = 1\n");
    let e = format!(
        "{:#}",
        load_config(Some(&f.path().to_path_buf())).unwrap_err()
    );
    assert!(e.contains("bogus"), "{e}");
    let f = file("[compression.roles.critic]\nrate = 0.5\n");
    assert!(load_config(Some(&f.path().to_path_buf())).is_err());
    let f = file("# no [compression] table\n");
    assert!(
        load_config(Some(&f.path().to_path_buf())).is_ok(),
        "no [compression]: defaults"
    );
}

#[test]
fn role_mode_uses_the_config_file() {
    let f = file("[compression.roles.tool]\nrate = 0.3\nmin_tokens = 5\n");
    let text = "The deployment pipeline promotes the canary build to production after the \
                error budget check passes and the latency dashboard stays green for an hour.";
    let args = CompressArgs {
        config: Some(f.path().to_path_buf()),
        scorer: Some(ScorerKind::Heuristic),
        model: None,
        rate: None,
        target_tokens: None,
        force_tokens: vec![],
        role: Some("tool".into()),
        file: None,
        json: true,
        explain: false,
        drop_consecutive: false,
        force_reserve_digit: false,
        token_to_word: None,
        precision: None,
        method: None,
        params: None,
    };
    let r = compress_text(&args, text).unwrap();
    assert_eq!(r.skipped, None);
    assert!(r.compressed_tokens * 2 < r.origin_tokens, "{r:?}");
    let mut a = args.clone();
    a.role = Some("critic".into());
    assert!(compress_text(&a, text).is_err());
}
