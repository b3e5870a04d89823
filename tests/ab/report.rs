#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! `lingua-proxy report`: figures checked against values worked out by hand, through
//! `Report::compute` and through the real binary.
//!
//! The crafted log (prices per 1M tokens: gpt-4o-mini 0.15 input / 0.075 cached / 0.60 output,
//! gpt-4o 2.50 input):
//!
//! normal mode, gpt-4o-mini, compressed arm (served):
//!   C1 prompt 100 cached 0  compl 10  total 100 ms overhead 1  cost (100·.15 + 10·.6)/1e6 = 21e-6
//!   C2 prompt 120 cached 40 compl 20  total 200 ms overhead 2  cost (80·.15 + 40·.075 + 20·.6) = 27e-6
//!   C3 prompt 140           compl 30  total 300 ms overhead 3  cost (21 + 18) = 39e-6
//!   C4 prompt 160           compl 40  total 400 ms overhead 4  cost (24 + 24) = 48e-6
//!   C5 no usage, status 0, error upstream_timeout, total 500 ms overhead 5
//!   → 5 calls, 4 with usage, mean prompt 520/4 = 130, cached 40/520, mean completion 25,
//!     cost 135e-6, mean 33.75e-6, total p50 300 p95 500 (nearest rank), overhead 3 / 5,
//!     error rate 1/5.
//!   C1 and C2 carry proxy token counts: 150 → 100 (system 100 → 60, user 50 → 40).
//! normal mode, gpt-4o-mini, raw arm (served):
//!   R1..R4 prompt 200, 220, 240, 260, completion 10..40 → mean 230, costs 36, 45, 54, 63 e-6
//!   (mean 49.5e-6); R5 status 429 without usage → error rate 1/5.
//! normal mode, "acme-<llm>" (no price), compressed arm: prompt 50 and 70, completion 5.
//! mirror mode, gpt-4o-mini-2024-07-18 (priced as gpt-4o-mini), completion 10 everywhere,
//! compressed served, raw the mirror copy:
//!   P1 300 / 400, logged agreement {exact, 1, 1} on the raw event
//!   P2 500 / 600, answers "Paris is the capital of France" (raw) / "capital of France is Paris"
//!      → exact no, F1 1, ROUGE-L 0.6
//!   P3 350 / 500, answers "a cat sat" / "cat ran away" → F1 0.4, ROUGE-L 0.4
//!   P4 400 / raw failed (status 0, no usage, no answer)
//!   P5 450 / raw event missing
//!   → 5 pairs, 1 incomplete, 1 from the field, 2 from answers, 2 without answers,
//!     exact 1/3, F1 (1 + 1 + 0.4)/3 = 0.8, ROUGE-L (1 + 0.6 + 0.4)/3 = 2/3;
//!     paired saving over P1..P3: 100, 100, 150 → mean 350/3; cost differs by tokens × 0.15e-6.
//! shadow mode, raw arm, served: gpt-4o ×2 (usage 1000 prompt tokens; tokens 1000 → 600:
//!   system 600 → 300, user 400 → 300) and "mystery" (no price, no usage, tokens 100 → 50).
//!   → 3 requests, saved 850, $ 800 · 2.5e-6 = 0.002, 1 unpriced.
//!
//! Saving per model: gpt-4o-mini 130 vs 230 → 100 (1 − 130/230); the dated model: compressed
//! (300 + 500 + 350 + 400 + 450)/5 = 400, raw (400 + 600 + 500)/3 = 500 → 100. Both models have
//! 8 calls with usage, so the overall means are (130 + 400)/2 = 265 and (230 + 500)/2 = 365.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use lingua_proxy::ab::{Arm, Mode};
use lingua_proxy::telemetry::report::{self, NO_RAW_ARM, Options, Report};
use lingua_proxy::telemetry::{Agreement, Event, Latency, PriceTable, RoleTokens, Tokens, Usage};

const MINI: &str = "gpt-4o-mini";
const DATED: &str = "gpt-4o-mini-2024-07-18";
const ACME: &str = "acme-<llm>";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b): (f64, f64) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

fn ev(second: u32, arm: Arm, mode: Mode, model: &str, served: bool) -> Event {
    Event {
        v: 1,
        time: format!("2026-11-18T10:00:{second:02}.000Z"),
        ts_ms: 1_795_000_000_000 + u64::from(second) * 1000,
        request_id: format!("r{second}"),
        arm: Some(arm),
        mode,
        served,
        route: "default".into(),
        model: Some(model.into()),
        status: 200,
        ..Event::default()
    }
}

fn usage(mut e: Event, prompt: u64, cached: Option<u64>, completion: u64) -> Event {
    e.usage = Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cached_tokens: cached,
        cache_creation_tokens: None,
    });
    e
}

fn latency(mut e: Event, total: f64, overhead: f64) -> Event {
    e.latency_ms = Latency {
        total,
        upstream: total - overhead,
        overhead,
        ..Latency::default()
    };
    e
}

fn tokens(mut e: Event, before: u64, after: u64, roles: &[(&str, u64, u64)]) -> Event {
    e.tokens = Some(Tokens {
        tokenizer: "o200k_base".into(),
        before,
        after,
        roles: roles
            .iter()
            .map(|(r, b, a)| {
                (
                    (*r).to_string(),
                    RoleTokens {
                        before: *b,
                        after: *a,
                    },
                )
            })
            .collect(),
    });
    e
}

fn pair(mut e: Event, id: &str, answer: Option<&str>) -> Event {
    e.pair_id = Some(id.into());
    e.answer = answer.map(str::to_owned);
    e
}

/// The normal-mode gpt-4o-mini traffic (both arms).
fn mini_events(start: u32) -> Vec<Event> {
    let n = |s: u32| start + s;
    let c = |s, arm| ev(n(s), arm, Mode::Normal, MINI, true);
    let roles = [("system", 100, 60), ("user", 50, 40)];
    let mut c5 = latency(c(4, Arm::Compressed), 500.0, 5.0);
    c5.status = 0;
    c5.error = Some("upstream_timeout".into());
    let mut r5 = latency(c(9, Arm::Raw), 50.0, 0.5);
    r5.status = 429;
    vec![
        tokens(
            latency(usage(c(0, Arm::Compressed), 100, Some(0), 10), 100.0, 1.0),
            150,
            100,
            &roles,
        ),
        tokens(
            latency(usage(c(1, Arm::Compressed), 120, Some(40), 20), 200.0, 2.0),
            150,
            100,
            &roles,
        ),
        latency(usage(c(2, Arm::Compressed), 140, None, 30), 300.0, 3.0),
        latency(usage(c(3, Arm::Compressed), 160, None, 40), 400.0, 4.0),
        c5,
        latency(usage(c(5, Arm::Raw), 200, None, 10), 110.0, 0.5),
        latency(usage(c(6, Arm::Raw), 220, None, 20), 210.0, 0.5),
        latency(usage(c(7, Arm::Raw), 240, None, 30), 310.0, 0.5),
        latency(usage(c(8, Arm::Raw), 260, None, 40), 410.0, 0.5),
        r5,
    ]
}

fn crafted() -> Vec<Event> {
    let mut events = mini_events(10);
    // Unknown price.
    let acme = |s| ev(s, Arm::Compressed, Mode::Normal, ACME, true);
    events.push(latency(usage(acme(20), 50, None, 5), 600.0, 6.0));
    // The earliest event sits in the middle of the file.
    events.push(latency(usage(acme(0), 70, None, 5), 700.0, 7.0));
    // Mirror pairs.
    let comp = |s| ev(s, Arm::Compressed, Mode::Mirror, DATED, true);
    let raw = |s| ev(s, Arm::Raw, Mode::Mirror, DATED, false);
    let mut p1_raw = pair(usage(raw(30), 400, None, 10), "p1", None);
    p1_raw.agreement = Some(Agreement {
        exact: true,
        f1: 1.0,
        rouge_l: 1.0,
    });
    let mut p4_raw = pair(raw(36), "p4", None);
    p4_raw.status = 0;
    p4_raw.error = Some("upstream_unreachable".into());
    events.extend([
        pair(usage(comp(30), 300, None, 10), "p1", None),
        p1_raw,
        pair(
            usage(comp(32), 500, None, 10),
            "p2",
            Some("capital of France is Paris"),
        ),
        pair(
            usage(raw(33), 600, None, 10),
            "p2",
            Some("Paris is the capital of France"),
        ),
        pair(usage(raw(34), 500, None, 10), "p3", Some("a cat sat")),
        pair(usage(comp(35), 350, None, 10), "p3", Some("cat ran away")),
        pair(usage(comp(36), 400, None, 10), "p4", Some("x")),
        p4_raw,
        pair(usage(comp(38), 450, None, 10), "p5", Some("y")),
    ]);
    // Shadow mode.
    let shadow = |s, model| ev(s, Arm::Raw, Mode::Shadow, model, true);
    let roles = [("system", 600, 300), ("user", 400, 300)];
    events.extend([
        tokens(
            usage(shadow(40, "gpt-4o"), 1000, None, 0),
            1000,
            600,
            &roles,
        ),
        tokens(
            usage(shadow(41, "gpt-4o"), 1000, None, 0),
            1000,
            600,
            &roles,
        ),
        tokens(shadow(59, "mystery"), 100, 50, &[("system", 100, 50)]),
    ]);
    events
}

fn write_log(dir: &Path, name: &str, events: &[Event], extra: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for (i, e) in events.iter().enumerate() {
        writeln!(f, "{}", serde_json::to_string(e).unwrap()).unwrap();
        if i == 2 {
            // A blank line (skipped) and whatever extra lines the caller wants.
            writeln!(f).unwrap();
            f.write_all(extra.as_bytes()).unwrap();
        }
    }
    path
}

/// The line starting (after indentation) with `start` that contains every needle.
fn line_with<'a>(text: &'a str, start: &str, needles: &[&str]) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(start) && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line {start:?} with {needles:?} in\n{text}"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
}

/// The crafted log split over two files, with one malformed line.
fn crafted_files(dir: &Path) -> [std::path::PathBuf; 2] {
    let events = crafted();
    let (a, b) = events.split_at(12);
    [
        write_log(dir, "a.jsonl", a, "{\"v\": 1, \"status\": \"oops\"}\n"),
        write_log(dir, "b.jsonl", b, ""),
    ]
}

fn check_crafted(r: &Report) {
    assert_eq!(r.events, 24);
    assert_eq!(r.modes["normal"], 12);
    assert_eq!(r.modes["mirror"], 9);
    assert_eq!(r.modes["shadow"], 3);
    let t = r.time_range.as_ref().unwrap();
    assert_eq!(t.first, "2026-11-18T10:00:00.000Z");
    assert_eq!(t.last, "2026-11-18T10:00:59.000Z");

    // Per (arm, model).
    let row = |arm: Arm, model: &str| {
        r.models
            .iter()
            .find(|m| m.arm == arm && m.model == model)
            .unwrap_or_else(|| panic!("no row for {arm:?} {model}"))
    };
    let c = &row(Arm::Compressed, MINI).stats;
    assert_eq!(
        (c.calls, c.requests, c.mirror_copies, c.with_usage),
        (5, 5, 0, 4)
    );
    assert_close!(c.mean_prompt_tokens.unwrap(), 130.0);
    assert_close!(c.cached_share.unwrap(), 40.0 / 520.0);
    assert_close!(c.mean_completion_tokens.unwrap(), 25.0);
    assert_close!(c.cost_usd.unwrap(), 135e-6);
    assert_close!(c.mean_cost_usd.unwrap(), 33.75e-6);
    assert_eq!(c.latency_total_ms.p50, Some(300.0));
    assert_eq!(c.latency_total_ms.p95, Some(500.0));
    assert_eq!(c.overhead_ms.p50, Some(3.0));
    assert_eq!(c.overhead_ms.p95, Some(5.0));
    assert_eq!(c.errors, 1);
    assert_close!(c.error_rate.unwrap(), 0.2);
    let raw = &row(Arm::Raw, MINI).stats;
    assert_close!(raw.mean_prompt_tokens.unwrap(), 230.0);
    assert_close!(raw.cost_usd.unwrap(), 198e-6);
    assert_close!(raw.mean_cost_usd.unwrap(), 49.5e-6);
    assert_close!(raw.error_rate.unwrap(), 0.2);
    assert_eq!(raw.cached_share, Some(0.0));

    // Unknown price: flagged, no money figures, counted.
    let acme = row(Arm::Compressed, ACME);
    assert!(!acme.price_known);
    assert_eq!(acme.stats.cost_usd, None);
    assert_eq!(acme.stats.mean_cost_usd, None);
    assert_eq!(acme.stats.unpriced_calls, 2);
    assert_close!(acme.stats.mean_prompt_tokens.unwrap(), 60.0);
    assert_eq!(r.unknown_price_models, vec![ACME, "mystery"]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("unknown price") && n.contains(ACME))
    );

    // Per arm: the compressed arm holds mini (5), acme (2) and the dated model's 5 served calls.
    let arm = &r.arms["compressed"];
    assert_eq!((arm.calls, arm.requests, arm.mirror_copies), (12, 12, 0));
    assert_eq!(
        (arm.with_usage, arm.priced_calls, arm.unpriced_calls),
        (11, 9, 2)
    );
    // Money leaves acme out: 135e-6 + dated (300+500+350+400+450)·0.15e-6 + 5·10·0.6e-6.
    assert_close!(
        arm.cost_usd.unwrap(),
        135e-6 + 2000.0 * 0.15e-6 + 50.0 * 0.6e-6
    );
    assert_close!(arm.mean_cost_usd.unwrap(), arm.cost_usd.unwrap() / 9.0);
    // The raw arm: mini 5, mirror copies 4, shadow 3 (served).
    let arm = &r.arms["raw"];
    assert_eq!((arm.calls, arm.requests, arm.mirror_copies), (12, 8, 4));
    assert_eq!(arm.errors, 2);

    // Saving per model.
    let s = &r.saving;
    let mini = s.per_model.iter().find(|m| m.model == MINI).unwrap();
    assert_eq!((mini.compressed_calls, mini.raw_calls), (4, 4));
    let d = &mini.prompt_tokens;
    assert_close!(d.compressed_mean, 130.0);
    assert_close!(d.raw_mean, 230.0);
    assert_close!(d.saved.value, 100.0);
    assert!(d.saved.covers(100.0) && d.saved.width() > 0.0, "{d:?}");
    // Each arm's mean lies in [its min, its max], so the difference lies in [40, 160].
    assert!(d.saved.ci_low >= 40.0 && d.saved.ci_high <= 160.0, "{d:?}");
    let rel = d.relative.unwrap();
    assert_close!(rel.value, 1.0 - 130.0 / 230.0);
    assert!(rel.covers(rel.value) && rel.width() > 0.0);
    let cost = mini.cost_usd.unwrap();
    assert_close!(cost.saved.value, 49.5e-6 - 33.75e-6);
    assert_close!(cost.relative.unwrap().value, 1.0 - 33.75 / 49.5);
    assert!(cost.saved.covers(15.75e-6) && cost.saved.width() > 0.0);

    let dated = s.per_model.iter().find(|m| m.model == DATED).unwrap();
    assert_eq!((dated.compressed_calls, dated.raw_calls), (5, 3));
    assert_close!(dated.prompt_tokens.saved.value, 100.0);
    assert_eq!(s.one_arm_models, vec![ACME, "gpt-4o"]);

    // Overall: both models weigh 8/16.
    let o = s.overall.as_ref().unwrap();
    assert_eq!(o.models, 2);
    assert_close!(o.prompt_tokens.compressed_mean, 265.0);
    assert_close!(o.prompt_tokens.raw_mean, 365.0);
    assert_close!(o.prompt_tokens.saved.value, 100.0);
    assert_close!(o.prompt_tokens.relative.unwrap().value, 1.0 - 265.0 / 365.0);
    assert!(o.prompt_tokens.saved.covers(100.0) && o.prompt_tokens.saved.width() > 0.0);
    // Cost saved per call: mini 15.75e-6 (C2's cached tokens cost half), the dated model
    // 100 × 0.15e-6 (completions match), weighted 1/2 each.
    assert_close!(o.cost_usd.unwrap().saved.value, (15.75e-6 + 15e-6) / 2.0);
    // Over the compressed arm's traffic: 4 × 100 + 5 × 100 tokens; 4 × 15.75e-6 + 5 × 15e-6.
    assert_close!(o.prompt_tokens_saved_total.value, 900.0);
    assert_close!(o.usd_saved_total.unwrap().value, 138e-6);
    assert_eq!(o.compressed_priced_calls, 9);

    // Paired (mirror) saving.
    let p = s.paired.as_ref().unwrap();
    assert_eq!((p.pairs, p.priced_pairs), (3, 3));
    assert_close!(p.prompt_tokens.saved.value, 350.0 / 3.0);
    assert_close!(p.prompt_tokens.raw_mean, 500.0);
    assert!(p.prompt_tokens.saved.ci_low >= 100.0 && p.prompt_tokens.saved.ci_high <= 150.0);
    assert!(p.prompt_tokens.saved.width() > 0.0);
    assert_close!(p.cost_usd.unwrap().saved.value, 350.0 / 3.0 * 0.15e-6);

    // Agreement.
    let a = &r.agreement;
    assert_eq!(
        (
            a.pairs,
            a.incomplete_pairs,
            a.from_field,
            a.from_answers,
            a.no_answers
        ),
        (5, 1, 1, 2, 2)
    );
    assert_close!(a.exact_match_rate.unwrap(), 1.0 / 3.0);
    assert_close!(a.mean_f1.unwrap(), 0.8);
    assert_close!(a.mean_rouge_l.unwrap(), 2.0 / 3.0);

    // Shadow.
    let sh = &r.shadow;
    assert_eq!(
        (sh.requests, sh.with_tokens, sh.unpriced_requests),
        (3, 3, 1)
    );
    assert_eq!(
        (sh.tokens.before, sh.tokens.after, sh.tokens.saved),
        (2100, 1250, 850)
    );
    assert_eq!(sh.roles["system"].saved, 650);
    assert_eq!(sh.roles["user"].saved, 200);
    assert_close!(sh.usd_saved_estimate, 800.0 * 2.5e-6);

    // Compressed-arm roles: C1 and C2.
    let roles = &r.compressed_roles;
    assert_eq!(roles.calls, 2);
    assert_eq!((roles.total.before, roles.total.after), (300, 200));
    assert_eq!(
        (roles.roles["system"].before, roles.roles["system"].after),
        (200, 120)
    );
    assert_eq!(roles.roles["user"].saved, 20);
    assert_eq!(r.bootstrap.resamples, 2000);
}

#[test]
fn load_skips_blank_lines_and_counts_malformed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let files = crafted_files(dir.path());
    let loaded = report::load(&files).unwrap();
    assert_eq!(loaded.events.len(), 24);
    assert_eq!(loaded.events, crafted());
    assert_eq!(loaded.malformed_lines, 1);
    assert!(
        loaded.malformed_examples[0].contains("a.jsonl:5"),
        "{:?}",
        loaded.malformed_examples
    );

    let missing = dir.path().join("nope.jsonl");
    let err = report::load(&[files[0].clone(), missing.clone()]).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn compute_matches_hand_computed_figures() {
    let r = Report::compute(&crafted(), &PriceTable::default());
    check_crafted(&r);
    assert_eq!(r.malformed_lines, 0);
    assert!(!r.notes.iter().any(|n| n.contains(NO_RAW_ARM)));
}

#[test]
fn bootstrap_is_deterministic_and_seeded() {
    let events = crafted();
    let prices = PriceTable::default();
    let a = Report::compute(&events, &prices);
    let b = Report::compute(&events, &prices);
    assert_eq!(a, b);
    let other = Report::compute_with(
        &events,
        &prices,
        &Options {
            seed: 42,
            ..Options::default()
        },
    );
    let ci = |r: &Report| r.saving.overall.as_ref().unwrap().prompt_tokens.saved;
    assert_ne!(ci(&a), ci(&other));
    assert_eq!(ci(&a).value, ci(&other).value);
}

#[test]
fn interval_narrows_with_more_data() {
    let prices = PriceTable::default();
    let small = mini_events(0);
    let large: Vec<Event> = (0..25).flat_map(|_| mini_events(0)).collect();
    let width = |events: &[Event]| {
        let r = Report::compute(events, &prices);
        let o = r.saving.overall.unwrap();
        assert_close!(o.prompt_tokens.saved.value, 100.0);
        assert!(o.prompt_tokens.saved.covers(100.0));
        o.prompt_tokens.saved.width()
    };
    let (ws, wl) = (width(&small), width(&large));
    // 25× the data: about a fifth of the width.
    assert!(wl < ws / 3.0 && wl > ws / 8.0, "{ws} {wl}");
}

#[test]
fn binary_json_equals_the_library_report() {
    let dir = tempfile::tempdir().unwrap();
    let files = crafted_files(dir.path());
    let out = bin()
        .arg("report")
        .arg("--json")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Report = serde_json::from_slice(&out.stdout).unwrap();
    check_crafted(&parsed);
    assert_eq!(parsed.malformed_lines, 1);
    // Byte for byte what the library computes (compared as text: serde_json's default float
    // parser is not exactly round-trip, its printer is).
    let expected = Report::compute(&crafted(), &PriceTable::default()).with_malformed_lines(1);
    let expected = serde_json::to_string_pretty(&expected).unwrap() + "\n";
    assert_eq!(String::from_utf8(out.stdout.clone()).unwrap(), expected);
    assert!(parsed.notes.iter().any(|n| n.contains("1 malformed")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a.jsonl:5"), "{stderr}");
    // Same log, same bytes.
    let again = bin()
        .arg("report")
        .arg("--json")
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn binary_text_report() {
    let dir = tempfile::tempdir().unwrap();
    let files = crafted_files(dir.path());
    let out = bin().arg("report").args(&files).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "events: 24 (1 malformed",
        "2026-11-18T10:00:00.000Z .. 2026-11-18T10:00:59.000Z",
        "unknown price",
        ACME,
        "exact match: 33.3%   mean token F1: 0.800   mean ROUGE-L: 0.667",
        "before 2100, after 1250, saved 850 (40.5%)",
        "estimated money saved: $0.00200",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // gpt-4o-mini's saving and the overall one, each with its interval.
    line_with(
        &text,
        "gpt-4o-mini",
        &["4/4", "130.0", "230.0", "100.0 [", "43.5% ["],
    );
    line_with(
        &text,
        "overall (2 models)",
        &["265.0", "365.0", "100.0 [", "27.4% ["],
    );
    line_with(&text, "overall (priced models)", &["$0.0000154 ["]);
    line_with(&text, "prompt tokens", &["3", "500.0", "116.7 ["]);
    line_with(&text, "saved over the compressed arm's traffic", &["900 ["]);
    // The per-model row of the unknown-price model says so in its money columns.
    let acme_line = text
        .lines()
        .find(|l| l.trim_start().starts_with(ACME))
        .unwrap();
    assert_eq!(acme_line.matches("unknown price").count(), 2, "{acme_line}");
    // The mini row: 5 requests, 4 with usage, 130.0 tokens, 7.7% cached, p50/p95.
    let mini_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("gpt-4o-mini "))
        .unwrap();
    for cell in [
        "130.0",
        "7.7%",
        "25.0",
        "$0.000135",
        "300.0 / 500.0",
        "3.0 / 5.0",
        "1 (20.0%)",
    ] {
        assert!(mini_line.contains(cell), "missing {cell:?} in {mini_line}");
    }
    assert!(!text.contains(NO_RAW_ARM));
}

#[test]
fn no_raw_arm_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = mini_events(0)
        .into_iter()
        .filter(|e| e.arm == Some(Arm::Compressed))
        .collect();
    let path = write_log(dir.path(), "c.jsonl", &events, "");
    let out = bin().arg("report").arg(&path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(NO_RAW_ARM), "{text}");
    assert!(text.contains("raw (no traffic)"), "{text}");
    let r = Report::compute(&events, &PriceTable::default());
    assert!(r.saving.overall.is_none() && r.saving.per_model.is_empty());
    assert!(r.notes.iter().any(|n| n == NO_RAW_ARM));
}

#[test]
fn html_is_self_contained_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let files = crafted_files(dir.path());
    let html_path = dir.path().join("report.html");
    let out = bin()
        .arg("report")
        .args(&files)
        .arg("--html")
        .arg(&html_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.matches("<svg").count() >= 5, "charts missing");
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script") && !html.contains("<link"));
    for attr in ["src=", "href="] {
        assert!(!html.contains(attr), "{attr} in the page");
    }
    // The model name from traffic is escaped everywhere.
    assert!(html.contains("acme-&lt;llm&gt;"));
    assert!(!html.contains(ACME));
    // Summary cards with the saving and its interval.
    assert!(html.contains("Prompt tokens saved"));
    assert!(html.contains(&format!("{:.1}%", (1.0 - 265.0 / 365.0) * 100.0)));
    assert!(html.contains("95% CI"));
    assert!(html.contains("unknown price"));
    assert!(html.contains("system before") && html.contains("system after"));
    // Text output still goes to stdout.
    assert!(String::from_utf8_lossy(&out.stdout).contains("lingua-proxy A/B report"));
}

#[test]
fn prices_file_adds_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let files = crafted_files(dir.path());
    let prices = dir.path().join("prices.toml");
    std::fs::write(&prices, "[\"acme-<llm>\"]\ninput = 1.0\noutput = 2.0\n").unwrap();
    let out = bin()
        .args(["report", "--json", "--prices"])
        .arg(&prices)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.unknown_price_models, vec!["mystery"]);
    let acme = r.models.iter().find(|m| m.model == ACME).unwrap();
    assert!(acme.price_known);
    // (50 + 5·2) + (70 + 5·2) per million.
    assert_close!(acme.stats.cost_usd.unwrap(), 140e-6);
}

#[test]
fn errors_exit_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let out = bin().arg("report").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("lingua-proxy report: "), "{stderr}");
    assert!(stderr.contains("missing.jsonl"), "{stderr}");

    let log = write_log(dir.path(), "x.jsonl", &mini_events(0), "");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[m]\ninput = \"cheap\"\n").unwrap();
    let out = bin()
        .args(["report", "--prices"])
        .arg(&bad)
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));

    // EVENTS is required.
    let out = bin().arg("report").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
