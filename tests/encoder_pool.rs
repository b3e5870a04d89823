#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The inference pool: bounded queue, overload, cancellation, batching across requests.

use std::sync::Arc;

use lingua_proxy::scorer::ScorerError;
use lingua_proxy::scorer::llmlingua2::random::RandomSpec;
use lingua_proxy::scorer::llmlingua2::{
    Arch, InferencePool, ModelFiles, PoolConfig, Precision, TokenClassifier,
};

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

#[test]
fn overload_cancellation_and_batching() {
    let (_tmp, m) = model();
    let pool = InferencePool::new(
        m.clone(),
        PoolConfig {
            workers: 1,
            queue_capacity: 3,
            max_batch_tokens: 1000,
        },
    )
    .unwrap();
    pool.pause();
    let a = vec![vec![3, 10, 11, 12, 3], vec![3, 40, 3]];
    let b = vec![vec![3, 20, 21, 3]];
    let ha = pool.try_submit(a.clone()).unwrap();
    let cancelled = pool.try_submit(vec![vec![3, 9, 3]]).unwrap();
    let hb = pool.try_submit(b.clone()).unwrap();
    assert_eq!(pool.queue_depth(), 3);
    assert!(matches!(
        pool.try_submit(vec![vec![3, 3]]),
        Err(ScorerError::Overloaded)
    ));
    // Invalid input is refused at the door, never queued.
    assert!(pool.try_submit(vec![vec![]]).is_err());
    drop(cancelled);
    pool.resume();
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
        for (x, y) in got.iter().zip(want) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    assert_eq!(pool.skipped(), 1);
    // Both live requests fit the token budget, so they ran as one forward pass.
    assert_eq!(pool.batches(), 1);
    assert_eq!(pool.queue_depth(), 0);
}

#[test]
fn token_budget_splits_batches() {
    let (_tmp, m) = model();
    let pool = InferencePool::new(
        m,
        PoolConfig {
            workers: 1,
            queue_capacity: 8,
            max_batch_tokens: 100,
        },
    )
    .unwrap();
    pool.pause();
    let hs: Vec<_> = (0..4)
        .map(|_| pool.try_submit(vec![vec![5; 60]]).unwrap())
        .collect();
    pool.resume();
    for h in hs {
        assert_eq!(h.wait().unwrap()[0].len(), 60);
    }
    assert_eq!(pool.batches(), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn async_callers_do_not_block_the_runtime() {
    let (_tmp, m) = model();
    let pool = InferencePool::new(m, PoolConfig::default()).unwrap();
    let h = pool.try_submit(vec![vec![3, 7, 8, 3]]).unwrap();
    // A timer on the same single-threaded runtime keeps ticking while we wait.
    let tick =
        tokio::spawn(async { tokio::time::sleep(std::time::Duration::from_millis(1)).await });
    let r = h.recv().await.unwrap();
    tick.await.unwrap();
    assert_eq!(r[0].len(), 4);
}
