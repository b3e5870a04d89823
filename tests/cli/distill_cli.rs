//! `lingua-proxy distill collect`, `label` and `filter` on JSON Lines files, through the binary.

use std::process::Command;

use serde_json::{Value, json};

fn distill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .arg("distill")
        .args(args)
        .output()
        .unwrap()
}

/// `distill <step> --input <input> --output <output> <extra>`.
fn step(
    name: &str,
    input: &std::path::Path,
    output: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        name,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    distill(&args)
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
    let out = step("label", &chunks, &labelled, &[]);
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
    let out = step("filter", &labelled, &kept, &[]);
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
    let out = step("filter", &labelled, &kept, &["--drop-ties"]);
    assert!(out.status.success());
    assert!(read_lines(&kept).is_empty());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept 0 of 19"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_asks_with_the_papers_instruction_and_resumes() {
    use lingua_proxy::distill::chunk::SYSTEM_PROMPT;
    use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.jsonl");
    let long = (0..30)
        .map(|i| format!("The council reviewed item {i} and approved it after a short discussion."))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &texts,
        format!(
            "{}\n{}\n",
            json!({"id": "long", "text": long}),
            json!({"id": "short", "text": "Trucks leave every morning at 06:30."})
        ),
    )
    .unwrap();
    let output = dir.path().join("chunks.jsonl");
    let base = mock.base_url();
    let collect = |extra: Vec<String>| {
        let (texts, output, base) = (texts.clone(), output.clone(), base.clone());
        tokio::task::spawn_blocking(move || {
            let mut args: Vec<String> = [
                "collect",
                "--input",
                texts.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--base-url",
                &base,
                "--model",
                "gpt-4o-mini",
                "--chunk-tokens",
                "64",
                "--concurrency",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            distill(&args)
        })
    };
    let out = collect(vec![]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_lines(&output);
    assert!(rows.len() >= 4, "{} chunks", rows.len());
    let sent = mock.state.requests_to("/chat/completions");
    assert_eq!(sent.len(), rows.len());
    for r in &sent {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["messages"][0]["content"], SYSTEM_PROMPT);
        assert_eq!(body["temperature"], 0.3);
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(user.starts_with("Compress some text to short expressions"));
        assert!(user.ends_with("\nThe compressed text is: "));
    }
    for row in &rows {
        assert!(row["comp"].is_string() && row["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        let origin = row["origin"].as_str().unwrap();
        assert!(
            origin.ends_with('.') || row["id"] == "short:0",
            "chunks end at a period: {origin:?}"
        );
    }
    let long_chunks: String = rows
        .iter()
        .filter(|r| r["source_id"] == "long")
        .map(|r| {
            (
                r["chunk_index"].as_u64().unwrap(),
                r["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert_eq!(
        long_chunks, long,
        "the chunks put back together are the text"
    );

    // Run again: everything is answered already, nothing is sent.
    let out = collect(vec![]).await.unwrap();
    assert!(out.status.success());
    assert_eq!(
        mock.state.requests_to("/chat/completions").len(),
        rows.len()
    );
    assert_eq!(read_lines(&output).len(), rows.len());

    // A budget below the estimate: refused before anything is sent.
    std::fs::write(&texts, format!("{}\n", json!({"id": "new", "text": long}))).unwrap();
    let out = collect(vec!["--max-cost".into(), "0.000001".into()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-cost"));
    assert_eq!(
        mock.state.requests_to("/chat/completions").len(),
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_retries_rate_limits_then_gives_up_and_reports() {
    use crate::common::faults::{RawUpstream, Script};
    let upstream = RawUpstream::start(Script::Write {
        parts: vec![
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
        ],
        pause: std::time::Duration::ZERO,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        format!("{}\n", json!({"id": "t", "text": "One short sentence."})),
    )
    .unwrap();
    let output = dir.path().join("chunks.jsonl");
    let base = format!("http://{}/v1", upstream.addr);
    let (t, o) = (texts.clone(), output.clone());
    let out = tokio::task::spawn_blocking(move || {
        distill(&[
            "collect",
            "--input",
            t.to_str().unwrap(),
            "--output",
            o.to_str().unwrap(),
            "--base-url",
            &base,
            "--retries",
            "2",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 429"), "{stderr}");
    assert_eq!(
        upstream.requests.lock().unwrap().len(),
        3,
        "one call and two retries"
    );
    assert!(
        read_lines(&output).is_empty(),
        "nothing written for a chunk never answered"
    );
}

/// Texts in the shape of agent traffic: several sources, each a few sentences over a shared
/// vocabulary, deterministic.
fn corpus(sources: usize) -> String {
    let nouns = [
        "council",
        "budget",
        "truck",
        "warehouse",
        "invoice",
        "customer",
        "shipment",
        "report",
        "contract",
        "engineer",
        "server",
        "release",
        "ticket",
        "driver",
    ];
    let verbs = [
        "approved", "reviewed", "delayed", "signed", "rejected", "moved", "checked",
    ];
    let places = ["Hamburg", "Rotterdam", "Lyon", "Denver", "Osaka"];
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = String::new();
    for s in 0..sources {
        let mut text = Vec::new();
        for _ in 0..8 {
            let (n1, n2) = (
                nouns[rng.usize(..nouns.len())],
                nouns[rng.usize(..nouns.len())],
            );
            let (v, p) = (
                verbs[rng.usize(..verbs.len())],
                places[rng.usize(..places.len())],
            );
            text.push(match rng.usize(..4) {
                0 => format!("The {n1} was {v} by the {n2} in {p} on Monday."),
                1 => format!("We have also {v} the {n1} for the {n2}, which is very important."),
                2 => format!("It is not clear that the {n1} will be {v} in {p}."),
                _ => format!("There are 3 {n1}s and the {n2} has {v} them."),
            });
        }
        out.push_str(&json!({"id": format!("doc-{s}"), "text": text.join(" ")}).to_string());
        out.push('\n');
    }
    out
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `collect` (the mock as labelling LLM) → `label` → `filter` → `train` → `eval`, then the
/// distilled checkpoint compresses a request through the proxy; `align` fine-tunes the tiny
/// causal LM on the same answers and the result compresses with `--method llmlingua`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distil_a_scorer_end_to_end_and_serve_it() {
    use lingua_proxy::compress::{CompressionConfig, ScorerKind};
    use lingua_proxy::scorer::ActiveScorer;
    use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("texts.jsonl"), corpus(32)).unwrap();
    let base = mock.base_url();
    let (texts, chunks) = (p("texts.jsonl"), p("chunks.jsonl"));
    let out = tokio::task::spawn_blocking(move || {
        step(
            "collect",
            &texts,
            &chunks,
            &[
                "--base-url",
                &base,
                "--model",
                "gpt-4o-mini",
                "--chunk-tokens",
                "60",
            ],
        )
    })
    .await
    .unwrap();
    ok(&out);
    let collected = read_lines(&p("chunks.jsonl"));
    assert!(collected.len() >= 64, "{} chunks", collected.len());
    // Distribution alignment of the causal LM on the same answers.
    let aligned = p("aligned");
    let llama = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/llama-tiny");
    ok(&step(
        "align",
        &p("chunks.jsonl"),
        &aligned,
        &[
            "--model",
            llama,
            "--epochs",
            "2",
            "--lr",
            "1e-3",
            "--validation",
            "0.2",
            "--max-len",
            "256",
        ],
    ));
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(aligned.join("alignment_report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        report["best_held_out_perplexity"].as_f64().unwrap()
            < 0.5 * report["initial_held_out_perplexity"].as_f64().unwrap(),
        "{report}"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .args([
            "compress",
            "--method",
            "llmlingua",
            "--model",
            aligned.to_str().unwrap(),
            "--params",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"context": ["The council met in Hamburg on Monday. It is not clear that the budget will be approved."], "rate": 0.5}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !ok(&out).trim().is_empty(),
        "the aligned checkpoint compresses"
    );

    ok(&step(
        "label",
        &p("chunks.jsonl"),
        &p("labelled.jsonl"),
        &[],
    ));
    let labelled = read_lines(&p("labelled.jsonl"));
    for r in &labelled {
        // the mock only deletes words: everything it kept aligns back
        assert_eq!(r["variation_rate"], 0.0, "{r}");
        assert!(r["source_id"].is_string());
    }
    ok(&step("filter", &p("labelled.jsonl"), &p("kept.jsonl"), &[]));
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let ckpt = p("distilled");
    let trained = step(
        "train",
        &p("kept.jsonl"),
        &ckpt,
        &[
            "--model",
            model,
            "--epochs",
            "6",
            "--lr",
            "3e-3",
            "--batch-size",
            "8",
            "--validation",
            "0.25",
            "--seed",
            "5",
        ],
    );
    ok(&trained);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("training_report.json")).unwrap())
            .unwrap();
    let epochs = report["epochs"].as_array().unwrap();
    let loss = |i: usize, k: &str| epochs[i][k].as_f64().unwrap();
    assert!(
        loss(epochs.len() - 1, "train_loss") < loss(0, "train_loss"),
        "the training loss falls: {report}"
    );
    assert!(
        report["best_validation_loss"].as_f64().unwrap()
            < report["initial_validation_loss"].as_f64().unwrap(),
        "{report}"
    );
    // no source on both sides of the split
    let held: std::collections::HashSet<String> = read_lines(&ckpt.join("heldout.jsonl"))
        .iter()
        .map(|r| r["source_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!held.is_empty());
    assert_eq!(
        report["validation"]["chunks"].as_u64().unwrap() as usize,
        read_lines(&p("kept.jsonl"))
            .iter()
            .filter(|r| held.contains(r["source_id"].as_str().unwrap()))
            .count()
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(ckpt.join(f).exists(), "{f}");
    }
    // Resuming continues from the saved checkpoint and keeps its tokenizer intact.
    ok(&step(
        "train",
        &p("kept.jsonl"),
        &ckpt,
        &[
            "--model",
            model,
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--batch-size",
            "8",
            "--validation",
            "0.25",
            "--seed",
            "5",
            "--resume",
        ],
    ));
    let resumed: Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("training_report.json")).unwrap())
            .unwrap();
    assert_eq!(resumed["resumed"], true);
    assert!(
        resumed["initial_validation_loss"].as_f64().unwrap()
            <= report["best_validation_loss"].as_f64().unwrap() + 1e-6,
        "it starts where the first run ended: {resumed}"
    );
    assert_eq!(
        std::fs::read(ckpt.join("tokenizer.json")).unwrap(),
        std::fs::read(std::path::Path::new(model).join("tokenizer.json")).unwrap()
    );

    let out = distill(&[
        "eval",
        "--input",
        ckpt.join("heldout.jsonl").to_str().unwrap(),
        "--model",
        &format!("distilled={}", ckpt.display()),
        "--model",
        &format!("untrained={model}"),
        "--heuristic",
        "--json",
        p("eval.json").to_str().unwrap(),
        "--html",
        p("eval.html").to_str().unwrap(),
    ]);
    let table = ok(&out);
    assert!(table.contains("| distilled |"), "{table}");
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(p("eval.json")).unwrap()).unwrap();
    let row = |name: &str| {
        eval["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["scorer"] == name)
            .unwrap()
            .clone()
    };
    let (distilled, untrained) = (row("distilled"), row("untrained"));
    assert_eq!(distilled["words"], untrained["words"]);
    assert!(
        distilled["keep_f1"].as_f64().unwrap() > untrained["keep_f1"].as_f64().unwrap() + 0.05,
        "{eval}"
    );
    assert!(distilled["auc"].as_f64().unwrap() > 0.6, "{eval}");
    let page = std::fs::read_to_string(p("eval.html")).unwrap();
    assert!(page.contains("<th>distilled</th>") && page.contains("<th>heuristic</th>"));

    // With a judge: the same question about 3 held-out chunks, raw and compressed by each scorer.
    let before = mock.state.requests_to("/chat/completions").len();
    let (heldout, distilled_arg, judge_json, base) = (
        ckpt.join("heldout.jsonl"),
        format!("distilled={}", ckpt.display()),
        p("judged.json"),
        mock.base_url(),
    );
    let out = tokio::task::spawn_blocking(move || {
        distill(&[
            "eval",
            "--input",
            heldout.to_str().unwrap(),
            "--model",
            &distilled_arg,
            "--heuristic",
            "--json",
            judge_json.to_str().unwrap(),
            "--judge-base-url",
            &base,
            "--judge-sample",
            "3",
        ])
    })
    .await
    .unwrap();
    ok(&out);
    assert_eq!(
        mock.state.requests_to("/chat/completions").len() - before,
        3 * 3,
        "one raw answer per chunk, one per scorer and chunk"
    );
    let judged: Value =
        serde_json::from_str(&std::fs::read_to_string(p("judged.json")).unwrap()).unwrap();
    for r in judged["rows"].as_array().unwrap() {
        let f1 = r["judge"]["f1"].as_f64().unwrap();
        assert!(f1 > 0.0 && f1 <= 1.0, "{r}");
        assert_eq!(r["judge"]["chunks"], 3);
    }

    // The distilled checkpoint serves through the proxy, unchanged.
    let config = CompressionConfig {
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Llmlingua2,
        model: Some(ckpt.to_str().unwrap().into()),
        ..CompressionConfig::default()
    };
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    assert!(matches!(
        hook.active_scorer(),
        Some(ActiveScorer::Llmlingua2 { dir, .. }) if dir.ends_with("distilled")
    ));
    let h = crate::common::start_with(|_| {}, std::sync::Arc::new(hook)).await;
    let system = "The shipment was reviewed by the council in Hamburg on Monday, and we have also \
                  signed the contract for the driver, which is very important. "
        .repeat(12);
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "When does the truck leave?"}]});
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (before, after) = crate::common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
    let sent: Value = serde_json::from_slice(&h.mock.state.last_request().unwrap().body).unwrap();
    let sent_system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(sent_system.len() < system.len());
    assert!(sent_system.contains("Hamburg"));
}

/// `align` with prompts only: the upstream (the target LLM) answers them first, the answers are
/// kept, and a rerun asks nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn align_answers_a_prompt_set_through_the_upstream_once() {
    use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        (0..10)
            .map(|i| {
                json!({"prompt": format!("Where is shipment {i} now, and when does it arrive?")})
                    .to_string()
                    + "\n"
            })
            .collect::<String>(),
    )
    .unwrap();
    let out_dir = dir.path().join("aligned");
    let llama = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/llama-tiny");
    let run = || {
        let (prompts, out_dir, base) = (prompts.clone(), out_dir.clone(), mock.base_url());
        tokio::task::spawn_blocking(move || {
            step(
                "align",
                &prompts,
                &out_dir,
                &[
                    "--model",
                    llama,
                    "--epochs",
                    "1",
                    "--lr",
                    "1e-3",
                    "--answer-base-url",
                    &base,
                    "--validation",
                    "0.2",
                ],
            )
        })
    };
    ok(&run().await.unwrap());
    assert_eq!(mock.state.requests_to("/chat/completions").len(), 10);
    let answers = read_lines(&out_dir.join("answers.jsonl"));
    assert_eq!(answers.len(), 10);
    assert!(
        answers
            .iter()
            .all(|a| a["answer"].as_str().unwrap().starts_with("Mock reply"))
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("alignment_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["pairs"], 10);
    ok(&run().await.unwrap());
    assert_eq!(
        mock.state.requests_to("/chat/completions").len(),
        10,
        "answers are reused"
    );
    // without an upstream, a prompt alone is refused with the line named
    let out = step(
        "align",
        &prompts,
        &dir.path().join("x"),
        &["--model", llama],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
