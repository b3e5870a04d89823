#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The fact-retention suite (`benches/data/facts`), its metric, the word-integrity check, the
//! `eval facts` command, and the CI gates on the default budgets with the embedded scorer.

use std::path::{Path, PathBuf};
use std::process::Command;

use lingua_proxy::cli::eval::policy_for;
use lingua_proxy::compress::{CompressionConfig, ScorerKind, TokenizerKind};
use lingua_proxy::eval::facts::{
    Budgets, FactKind, RunSummary, Suite, SuiteError, SuiteText, integrity, retained, run,
    score_text, words,
};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/facts")
}

fn suite() -> Suite {
    Suite::load(&suite_dir()).unwrap()
}

fn text_json(text: &str, facts: &[&[&str]]) -> String {
    let facts: Vec<serde_json::Value> = facts
        .iter()
        .map(|f| serde_json::json!({"kind": "number_unit", "tokens": f}))
        .collect();
    serde_json::json!({"title": "t", "role": "system", "text": text, "facts": facts}).to_string()
}

const PLAN: &str = "Starter costs $9 a month per agent, and refunds are never given.";

// --- the loader ---------------------------------------------------------------------------

#[test]
fn loader_accepts_facts_that_occur_in_order() {
    let t = SuiteText::from_json(
        "ok",
        &text_json(PLAN, &[&["$9", "month"], &["never", "given"]]),
    )
    .unwrap();
    assert_eq!(t.facts.len(), 2);
    assert_eq!(t.facts[0].window, 2, "$9 a month: two words apart");
    assert_eq!(t.facts[1].window, 1);
}

#[test]
fn loader_rejects_a_fact_whose_tokens_are_not_in_the_text() {
    let e = SuiteText::from_json("01-plan", &text_json(PLAN, &[&["$9", "year"]])).unwrap_err();
    assert!(matches!(e, SuiteError::Fact { index: 0, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("01-plan") && msg.contains("year") && msg.contains("do not occur"),
        "{msg}"
    );
    // Present, but in the other order.
    let e = SuiteText::from_json(
        "01-plan",
        &text_json(PLAN, &[&["$9", "month"], &["month", "$9"]]),
    )
    .unwrap_err();
    assert!(matches!(e, SuiteError::Fact { index: 1, .. }), "{e}");
    // "9" is not the word "$9": the sign is part of the word.
    assert!(SuiteText::from_json("p", &text_json(PLAN, &[&["9", "month"]])).is_err());
}

#[test]
fn loader_rejects_tokens_that_are_not_single_words_and_bad_fields() {
    for bad in [&["month,"][..], &["a month"][..], &[][..], &["—"][..]] {
        assert!(
            SuiteText::from_json("p", &text_json(PLAN, &[bad])).is_err(),
            "{bad:?} accepted"
        );
    }
    let unknown_kind =
        r#"{"title":"t","role":"system","text":"a b","facts":[{"kind":"vibe","tokens":["a"]}]}"#;
    assert!(matches!(
        SuiteText::from_json("p", unknown_kind),
        Err(SuiteError::Parse { .. })
    ));
    let unknown_role =
        r#"{"title":"t","role":"narrator","text":"a b","facts":[{"kind":"name","tokens":["a"]}]}"#;
    assert!(matches!(
        SuiteText::from_json("p", unknown_role),
        Err(SuiteError::Text { .. })
    ));
    let no_facts = r#"{"title":"t","role":"tool","text":"a b","facts":[]}"#;
    assert!(SuiteText::from_json("p", no_facts).is_err());
}

#[test]
fn a_bad_file_fails_the_whole_suite_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("01-good.json"),
        text_json(PLAN, &[&["$9", "month"]]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("02-bad.json"),
        text_json(PLAN, &[&["$19", "month"]]),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a suite file").unwrap();
    let e = Suite::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("02-bad") && e.contains("$19"), "{e}");
    std::fs::remove_file(dir.path().join("02-bad.json")).unwrap();
    let s = Suite::load(dir.path()).unwrap();
    assert_eq!(s.texts.len(), 1);
    assert_eq!(s.texts[0].id, "01-good");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Suite::load(empty.path()),
        Err(SuiteError::Empty(_))
    ));
}

// --- the metric ---------------------------------------------------------------------------

#[test]
fn metric_on_hand_made_cases() {
    let t = SuiteText::from_json(
        "p",
        &text_json(PLAN, &[&["Starter", "$9", "month"], &["never", "given"]]),
    )
    .unwrap();
    let fact = &t.facts[0]; // window 4 in the original
    let kept = |compressed: &str| fact.retained_in(&words(compressed));
    // Retained: in order, with words between them deleted, punctuation around them.
    assert!(kept("Starter $9 month agent, refunds never given."));
    assert!(kept("Starter: $9 a month"));
    assert!(kept("(Starter) $9, month."));
    // Reordered.
    assert!(!kept("$9 Starter month"));
    // Too far apart: five words from first to last, four in the original.
    assert!(!kept("Starter plan costs $9 a month"));
    // Missing a token, or the token changed (the unit, the sign, a glued neighbour).
    assert!(!kept("Starter $9 agent"));
    assert!(!kept("Starter 9 month"));
    assert!(!kept("Starter $9-month"));
    // A stray early copy does not stop a close later one from counting.
    assert!(kept("Starter x x x x x x Starter $9 month"));

    let neg = &t.facts[1];
    assert!(neg.retained_in(&words("refunds never given")));
    assert!(!neg.retained_in(&words("refunds never")));

    assert!(retained(&["15%"], 0, &words("save 15% now")));
    assert!(!retained(&["15%"], 0, &words("save 15 now")));
}

#[test]
fn integrity_reports_invented_words() {
    let original = "Send an e-mail to billing-api on cluster us-west-3 within 48 hours.";
    assert!(integrity(original, original).is_empty());
    assert!(integrity(original, "Send e-mail billing-api us-west-3 48 hours.").is_empty());
    assert!(integrity(original, "").is_empty());

    let v = integrity(original, "Send an-mail to billing-3 within 48 hours");
    let bad: Vec<&str> = v.iter().map(|v| v.word.as_str()).collect();
    assert_eq!(bad, ["an-mail", "billing-3"]);
    assert_eq!(v[0].position, 1);
    assert_eq!(v[0].after.as_deref(), Some("Send"));
    assert_eq!(v[1].after.as_deref(), Some("to"));

    // Reordering is not deletion.
    let v = integrity(original, "48 hours Send");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].word, "Send");
    // A word split in two is two invented words.
    assert_eq!(integrity(original, "Send an e mail").len(), 2);
    // A fragment that also occurs later as a word does not swallow the rest of the text.
    let v = integrity(
        "Air 14 (AA14-G3). 14-inch screen, Book 14 ships in 5 days.",
        "Air 14 AA14 14 screen Book 14 5 days",
    );
    let bad: Vec<(usize, &str)> = v.iter().map(|v| (v.position, v.word.as_str())).collect();
    assert_eq!(bad, [(2, "AA14"), (3, "14")]);
}

// --- the suite ----------------------------------------------------------------------------

#[test]
fn the_suite_has_the_promised_shape() {
    let s = suite();
    assert!(s.texts.len() >= 12, "{} texts", s.texts.len());
    for t in &s.texts {
        let n = words(&t.text).len();
        assert!((300..=500).contains(&n), "{}: {n} words", t.id);
        assert!(
            (10..=15).contains(&t.facts.len()),
            "{}: {} facts",
            t.id,
            t.facts.len()
        );
    }
    for role in ["system", "developer", "tool", "user"] {
        assert!(
            s.texts.iter().any(|t| t.role == role),
            "no {role} text in the suite"
        );
    }
    for kind in [
        FactKind::NumberUnit,
        FactKind::Negation,
        FactKind::Limit,
        FactKind::Condition,
        FactKind::Name,
        FactKind::Identifier,
        FactKind::DateTime,
    ] {
        assert!(
            s.texts
                .iter()
                .flat_map(|t| &t.facts)
                .any(|f| f.kind == kind),
            "no {kind:?} fact"
        );
    }
}

#[test]
fn every_text_keeps_all_its_facts_uncompressed() {
    for t in &suite().texts {
        let (lost, violations) = score_text(t, &t.text);
        assert!(lost.is_empty(), "{}: {lost:?}", t.id);
        assert!(violations.is_empty(), "{}: {violations:?}", t.id);
    }
}

fn heuristic_policy() -> lingua_proxy::compress::Policy {
    policy_for(&CompressionConfig::default(), ScorerKind::Heuristic, None).unwrap()
}

fn summary(budgets: Budgets) -> RunSummary {
    let s = suite();
    let policy = match budgets {
        Budgets::Defaults => heuristic_policy(),
        Budgets::Rate(_) => policy_for(
            &lingua_proxy::cli::eval::sweep_config(&CompressionConfig::default()),
            ScorerKind::Heuristic,
            None,
        )
        .unwrap(),
    };
    let outcomes = run(&policy, &s, budgets, TokenizerKind::O200kBase).unwrap();
    RunSummary::new("heuristic", budgets, &s, &outcomes)
}

#[test]
fn rate_one_leaves_every_text_whole() {
    let r = summary(Budgets::Rate(1.0));
    assert_eq!(r.overall.kept, r.overall.facts);
    assert_eq!(r.overall.tokens_after, r.overall.tokens_before);
    assert_eq!(r.skipped.len(), r.overall.texts);
    assert!(r.integrity_violations.is_empty());
}

#[test]
fn a_low_rate_saves_tokens_and_counts_every_lost_fact() {
    let s = suite();
    let r = summary(Budgets::Rate(0.3));
    assert_eq!(r.overall.facts, s.fact_count());
    assert_eq!(r.overall.texts, s.texts.len());
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert!(r.overall.token_ratio < 0.8, "{:?}", r.overall);
    let lost: usize = r.lost_by_kind.values().map(|c| c.lost).sum();
    assert_eq!(lost, r.overall.facts - r.overall.kept);
    assert_eq!(lost, r.lost.len());
}

// --- the command ----------------------------------------------------------------------------

#[test]
fn eval_facts_json_reports_every_run_and_integrity() {
    let out = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "eval",
            "facts",
            "--json",
            "--rates",
            "0.4,0.7",
            "--defaults",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = suite();
    assert_eq!(v["texts"], s.texts.len());
    assert_eq!(v["facts"], s.fact_count());
    assert_eq!(v["tokenizer"], "o200k_base");
    let runs = v["runs"].as_array().unwrap();
    let budgets: Vec<&str> = runs.iter().map(|r| r["budget"].as_str().unwrap()).collect();
    assert_eq!(budgets, ["0.4", "0.7", "defaults"]);
    for r in runs {
        assert_eq!(r["scorer"], "heuristic");
        assert_eq!(r["overall"]["facts"], s.fact_count());
        let retention = r["overall"]["retention"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&retention));
        assert!(r["overall"]["token_ratio"].as_f64().unwrap() < 1.0);
        let violations = r["integrity_violations"].as_array().unwrap();
        assert_eq!(
            r["overall"]["integrity_violations"].as_u64().unwrap() as usize,
            violations.len()
        );
        for role in ["system", "developer", "tool", "user"] {
            assert!(r["roles"][role]["facts"].as_u64().unwrap() > 0, "{role}");
        }
    }
    let defaults = CompressionConfig::default().roles;
    assert_eq!(runs[2]["rates"]["system"], defaults.system.rate);
    assert_eq!(runs[2]["rates"]["tool"], defaults.tool.rate);
    assert_eq!(runs[0]["rates"]["system"], 0.4);
    // A higher rate keeps more tokens.
    assert!(
        runs[1]["overall"]["token_ratio"].as_f64() > runs[0]["overall"]["token_ratio"].as_f64()
    );

    let md = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "facts", "--markdown", "--rates", "0.5"])
        .output()
        .unwrap();
    assert!(md.status.success());
    let md = String::from_utf8(md.stdout).unwrap();
    assert_eq!(md.lines().count(), 3, "{md}");
    assert!(
        md.lines()
            .nth(2)
            .unwrap()
            .starts_with("| heuristic | 0.5 |")
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .args(["eval", "facts", "--suite", "/nonexistent-suite-dir"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn eval_runs_the_llmlingua2_scorer_when_given_a_model() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/xlm-roberta-large-tiny");
    let policy = policy_for(
        &CompressionConfig::default(),
        ScorerKind::Llmlingua2,
        Some(model.to_str().unwrap()),
    )
    .unwrap();
    let s = suite();
    let outcomes = run(&policy, &s, Budgets::Rate(0.5), TokenizerKind::O200kBase).unwrap();
    let r = RunSummary::new("llmlingua2", Budgets::Rate(0.5), &s, &outcomes);
    assert_eq!(r.overall.facts, s.fact_count());
    assert!(r.overall.token_ratio < 0.9, "{:?}", r.overall);
}

// --- the CI gates (issue 9) -----------------------------------------------------------------

/// Retention at the default budgets with the embedded scorer must be at least 95%.
#[test]
fn retention_at_the_default_budgets_is_at_least_95_percent_with_the_embedded_scorer() {
    let r = summary(Budgets::Defaults);
    let lost: Vec<String> = r
        .lost
        .iter()
        .map(|l| format!("{}: {}", l.text, l.tokens.join(" ")))
        .collect();
    assert!(
        r.overall.retention >= 0.95,
        "retention {:.1}% ({}/{} facts) at saving {:.1}%; lost:\n{}",
        r.overall.retention * 100.0,
        r.overall.kept,
        r.overall.facts,
        r.overall.saving * 100.0,
        lost.join("\n")
    );
}

/// No compressed text of the suite contains a word that is not in its original.
#[test]
fn no_invented_words_at_the_default_budgets() {
    let r = summary(Budgets::Defaults);
    assert!(
        r.integrity_violations.is_empty(),
        "{} invented words: {:?}",
        r.integrity_violations.len(),
        r.integrity_violations
    );
}
