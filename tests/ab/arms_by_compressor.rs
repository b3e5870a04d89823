//! Arms by compressor (`[ab.control]`): both arms compress, each with its own scorer, and the
//! event log and the report say which ran; the configuration refuses what it cannot honour.

use crate::common;

use lingua_proxy::ab::Arm;
use lingua_proxy::compress::ScorerKind;
use lingua_proxy::headers::HEADER_ARM;
use lingua_proxy::telemetry::PriceTable;
use lingua_proxy::telemetry::report::Report;
use serde_json::{Value, json};

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/models/xlm-roberta-large-tiny"
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_arm_compresses_with_its_own_scorer() {
    let mock = lingua_proxy_testkit::mock::MockUpstream::start(Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut config = common::base_config(&mock);
    config.telemetry.events_path = Some(events.clone());
    config.compression.scorer = ScorerKind::Heuristic;
    config.compression.instructions = lingua_proxy::compress::InstructionsMode::Compress;
    // short enough messages for the test body to be compressed in both arms
    config.compression.roles.system.min_tokens = 50;
    config.compression.roles.tool.min_tokens = 50;
    config.ab.enabled = true;
    config.ab.raw_percent = 50.0;
    config.ab.control = Some(
        json!({"scorer": "llmlingua2", "model": TINY})
            .as_object()
            .unwrap()
            .clone(),
    );
    config.validate().unwrap();
    let hook = lingua_proxy::engine::serve_hook(&config).unwrap();
    let ready = hook.describe();
    assert_eq!(ready["arms"]["compressed"], "heuristic", "{ready}");
    assert_eq!(
        ready["arms"]["raw"], "llmlingua2:xlm-roberta-large-tiny",
        "{ready}"
    );
    let proxy = lingua_proxy::server::start(config, hook).await.unwrap();
    let h = common::Harness {
        mock,
        proxy,
        client: reqwest::Client::new(),
    };
    let body = serde_json::to_vec(&common::compressible_body(false)).unwrap();
    let mut sent = Vec::new();
    for arm in ["compressed", "raw", "compressed", "raw"] {
        let resp = h.post_chat(&body, &[(HEADER_ARM, arm)]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[HEADER_ARM], arm);
        resp.bytes().await.unwrap();
        sent.push(h.mock.state.last_request().unwrap().body);
    }
    for s in &sent {
        assert!(s.len() < body.len(), "both arms compress");
    }
    assert_ne!(sent[0], sent[1], "two scorers, two compressions");
    assert_eq!(sent[0], sent[2], "each arm is deterministic");
    assert_eq!(sent[1], sent[3]);

    let logged = common::read_events(&events, 4).await;
    for e in &logged {
        let want = match e.arm {
            Some(Arm::Compressed) => "heuristic",
            _ => "llmlingua2:xlm-roberta-large-tiny",
        };
        assert_eq!(e.compressor.as_deref(), Some(want), "{e:?}");
        assert_eq!(e.compression.as_deref(), Some("compressed"));
        assert!(e.tokens.is_some());
    }
    let report = Report::compute(&logged, &PriceTable::default());
    assert!(
        report.notes.iter().any(|n| n.contains("arms by compressor")
            && n.contains("heuristic")
            && n.contains("llmlingua2:xlm-roberta-large-tiny")),
        "{:?}",
        report.notes
    );
    let v: Value = serde_json::to_value(&report).unwrap();
    assert_eq!(
        v["arm_compressors"]["raw"][0],
        "llmlingua2:xlm-roberta-large-tiny"
    );
}

#[test]
fn control_needs_normal_mode_and_compression_keys() {
    let mut config = lingua_proxy::config::Config::default();
    config.ab.enabled = true;
    config.ab.control = Some(
        json!({"scorer": "heuristic", "roles": {"tool": {"rate": 0.3}}})
            .as_object()
            .unwrap()
            .clone(),
    );
    config.validate().unwrap();
    let merged = lingua_proxy::ab::control_compression(
        &config.compression,
        config.ab.control.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(merged.roles.tool.rate, 0.3);
    assert_eq!(
        merged.roles.system, config.compression.roles.system,
        "keys not named keep [compression]'s values"
    );
    config.ab.mode = lingua_proxy::ab::Mode::Shadow;
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("ab.control") && e.contains("normal"), "{e}");
    config.ab.mode = lingua_proxy::ab::Mode::Normal;
    config.ab.control = Some(json!({"ratee": 0.3}).as_object().unwrap().clone());
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("ab.control") && e.contains("ratee"), "{e}");
    config.ab.control = Some(json!({"scorer": "nope"}).as_object().unwrap().clone());
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("ab.control") && e.contains("nope"), "{e}");
}
