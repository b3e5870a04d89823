#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The token classifier behind the model scheduler: batches packed across requests give the same
//! probabilities as direct forward passes, the token budget splits batches, and cancelled work
//! never runs. (The scheduler's ordering and admission rules are unit-tested with a fake backend
//! in `src/model/scheduler.rs`.)

use std::sync::Arc;

use lingua_encoder::random::RandomSpec;
use lingua_encoder::{Arch, ModelFiles, Precision, TokenClassifier};
use lingua_proxy::model::{SchedError, SchedulerConfig, WorkCtx};
use lingua_proxy::scorer::llmlingua2::pool::start;

fn model() -> (tempfile::TempDir, Arc<TokenClassifier>) {
    let tmp = tempfile::tempdir().unwrap();
    RandomSpec::tiny(Arch::XlmRoberta, 3)
        .write(tmp.path(), None)
        .unwrap();
    let files = ModelFiles {
        dir: tmp.path().to_path_buf(),
        config: tmp.path().join("config.json"),
        tokenizer_json: tmp.path().join("tokenizer.json"),
        weights: tmp.path().join("model.safetensors"),
    };
    let m = TokenClassifier::load(&files, "cpu", Precision::F32).unwrap();
    (tmp, Arc::new(m))
}

fn cfg(max_batch_tokens: usize, max_queued_tokens: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens,
        max_queued_tokens,
        thread_name: "test-model".into(),
    }
}

#[test]
fn packed_batches_match_direct_forward_passes_and_cancelled_work_never_runs() {
    let (_tmp, m) = model();
    let s = start(m.clone(), cfg(1000, 1000)).unwrap();
    s.pause();
    let a = vec![vec![3, 10, 11, 12, 3], vec![3, 40, 3]];
    let b = vec![vec![3, 20, 21, 3]];
    let ctx = WorkCtx::none();
    let ha = s.submit(&ctx, a.clone()).unwrap();
    let gone = WorkCtx::none();
    let hc = s.submit(&gone, vec![vec![3, 9, 3]]).unwrap();
    let hb = s.submit(&ctx, b.clone()).unwrap();
    assert_eq!(s.stats().queued_windows, 4);
    gone.cancel();
    assert_eq!(hc.wait().unwrap_err(), SchedError::Cancelled);
    assert_eq!(s.stats().queued_windows, 3);
    s.resume();
    let ra = ha.wait().unwrap();
    let rb = hb.wait().unwrap();
    assert_eq!(ra.len(), 2);
    assert_eq!(rb.len(), 1);
    for (got, want) in ra.iter().chain(&rb).zip(
        m.keep_probs(&a)
            .unwrap()
            .iter()
            .chain(&m.keep_probs(&b).unwrap()),
    ) {
        assert_eq!(got.len(), want.len());
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    let st = s.stats();
    // Both live requests fit the token budget: one forward pass; the cancelled window never ran.
    assert_eq!(st.batches, 1);
    assert_eq!(st.windows_run, 3);
    assert_eq!(st.windows_dropped, 1);
    assert_eq!(st.queued_windows, 0);
}

#[test]
fn token_budget_splits_batches_and_admission_counts_tokens() {
    let (_tmp, m) = model();
    let s = start(m, cfg(100, 250)).unwrap();
    s.pause();
    let ctx = WorkCtx::none();
    let hs: Vec<_> = (0..4)
        .map(|_| s.submit(&ctx, vec![vec![5; 60]]).unwrap())
        .collect();
    // 240 tokens queued: 60 more would pass 250.
    assert_eq!(
        s.submit(&ctx, vec![vec![5; 60]]).unwrap_err(),
        SchedError::Overloaded
    );
    s.resume();
    for h in hs {
        assert_eq!(h.wait().unwrap()[0].len(), 60);
    }
    assert_eq!(s.stats().batches, 4);
    assert!(s.stats().max_batch_tokens_seen <= 100);
}
