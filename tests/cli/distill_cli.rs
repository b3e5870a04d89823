//! `lingua-proxy distill label` and `distill filter` on JSON Lines files, through the binary.

use std::process::Command;

use serde_json::{Value, json};

fn distill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .arg("distill")
        .args(args)
        .output()
        .unwrap()
}

fn read_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn label_then_filter() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.jsonl");
    let mut lines = vec![
        json!({"id": "meeting-1", "origin": "Good evening, everyone. The council will now vote on the proposed budget for the parks department.", "comp": "Council vote on proposed budget for parks department."}),
        json!({"id": "zh", "origin": "我们明天开会讨论预算。请大家准时参加。", "comp": "明天开会讨论预算。准时参加。"}),
        json!({"id": "empty", "origin": "", "comp": "anything"}),
        // An LLM that rewrote instead of deleting: most of its words are not in the original.
        json!({"id": "rewrite", "origin": "The shipment left Rotterdam on Monday and reached Hamburg on Wednesday night.", "comp": "Package departed NL Mon, arrived DE Wed evening."}),
    ];
    for i in 0..16 {
        lines.push(json!({"id": format!("clean-{i}"), "origin": format!("Item {i} was reviewed by the team and approved for the next release."), "comp": format!("Item {i} reviewed, approved for next release.")}));
    }
    std::fs::write(
        &chunks,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let labelled = dir.path().join("labelled.jsonl");
    let out = distill(&[
        "label",
        "--input",
        chunks.to_str().unwrap(),
        "--output",
        labelled.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
    let rows = read_lines(&labelled);
    assert_eq!(rows.len(), 19, "the empty original is skipped");
    let meeting = &rows[0];
    let words: Vec<&str> = meeting["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(words.len(), meeting["labels"].as_array().unwrap().len());
    assert!(!words.contains(&","), "commas are not words");
    assert_eq!(
        meeting["retrieval"],
        "council vote on proposed budget for parks department ."
    );
    assert_eq!(meeting["variation_rate"], 0.0);
    assert_eq!(meeting["alignment_gap"], 0.0);
    // Chinese is labelled word by word, unlike the reference.
    let zh = &rows[1];
    assert_eq!(zh["retrieval"], "明 天 开 会 讨 论 预 算 。 准 时 参 加 。");
    assert!(rows[2]["variation_rate"].as_f64().unwrap() > 0.5);

    let kept = dir.path().join("kept.jsonl");
    let out = distill(&[
        "filter",
        "--input",
        labelled.to_str().unwrap(),
        "--output",
        kept.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept_rows = read_lines(&kept);
    let ids: Vec<&str> = kept_rows
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"rewrite"),
        "the rewrite has the top variation rate: {ids:?}"
    );
    assert!(ids.contains(&"meeting-1") && ids.len() >= 15, "{ids:?}");

    // The reference's tie rule: every chunk here has alignment gap 0, so stage 2 drops them all.
    let out = distill(&[
        "filter",
        "--input",
        labelled.to_str().unwrap(),
        "--output",
        kept.to_str().unwrap(),
        "--drop-ties",
    ]);
    assert!(out.status.success());
    assert!(read_lines(&kept).is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept 0 of 19"));
}
