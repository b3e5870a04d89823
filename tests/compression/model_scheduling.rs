//! Bounded, cancellable inference through the proxy: a request that misses its deadline (or
//! whose client goes away) stops using the model at once, and the next ordinary request is
//! compressed normally; giant messages are answered (too_large or fail-open) and do not take the
//! proxy down.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lingua_proxy::compress::{CompressionConfig, Llmlingua2Compressor, Policy, ScorerKind};
use lingua_proxy::headers::HEADER_SKIPPED;
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::hook::{Intercepted, RequestHook};
use lingua_proxy::model::{Backend, Scheduler, SchedulerConfig, WorkCtx};

use lingua_proxy::scorer::Scorer;

/// A slow model: every batch takes `delay`; it records which request (by the marker word in
/// the chunk) each batch served, at the moment the batch starts.
struct Slow {
    delay: Duration,
    log: Arc<Mutex<Vec<Vec<&'static str>>>>,
}

impl Backend for Slow {
    type Window = (&'static str, usize);
    type Output = ();
    type Error = String;
    fn tokens(w: &Self::Window) -> usize {
        w.1
    }
    fn forward(&mut self, batch: &[Self::Window]) -> Result<Vec<()>, String> {
        self.log
            .lock()
            .unwrap()
            .push(batch.iter().map(|w| w.0).collect());
        std::thread::sleep(self.delay);
        Ok(vec![(); batch.len()])
    }
}

fn marker(chunk: &str) -> &'static str {
    if chunk.contains("alpha") {
        "alpha"
    } else {
        "bravo"
    }
}

type Log = Arc<Mutex<Vec<Vec<&'static str>>>>;

fn slow_hook(deadline_ms: u64) -> (CompressionHook, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let sched = Arc::new(
        Scheduler::new(
            Slow {
                delay: Duration::from_millis(120),
                log: log.clone(),
            },
            SchedulerConfig {
                // about one 150-300 word piece per batch
                max_batch_tokens: 300,
                max_queued_tokens: 1_000_000,
                thread_name: "slow-model".into(),
            },
        )
        .unwrap(),
    );
    // The heuristic scorer whose scoring first has to go through the slow model's scheduler.
    let scorer: Arc<dyn Scorer> = Arc::new(common::HeuristicWith::new(
        "slow-test",
        move |chunks: &[String], ctx: &WorkCtx| {
            let windows = chunks
                .iter()
                .map(|c| (marker(c), c.split_whitespace().count().max(1)))
                .collect();
            sched.submit(ctx, windows)?.wait()?;
            Ok(())
        },
    ));
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        deadline_ms,
        cache_bytes: 0,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    let policy = Policy::new(cfg, Arc::new(Llmlingua2Compressor::new(scorer))).unwrap();
    (CompressionHook::new(Arc::new(policy)), log)
}

fn batches_of(log: &Log, who: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|b| b.contains(&who))
        .count()
}

/// `words` words of varied prose, each sentence carrying `marker`.
fn prose(marker: &str, words: usize) -> String {
    const S: &str = "The dispatcher reviews the route plan every morning and the drivers \
                     confirm each stop before they leave the depot with";
    let mut out = String::new();
    let mut n = 0;
    while n < words {
        out.push_str(S);
        out.push(' ');
        out.push_str(marker);
        out.push_str(". ");
        n += S.split_whitespace().count() + 1;
    }
    out
}

fn body(system: &str) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "What time do the trucks leave?"}
        ]
    })
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_stops_using_the_model_and_the_next_one_is_compressed() {
    let (hook, log) = slow_hook(700);
    let h = common::start_with(|_| {}, Arc::new(hook)).await;
    // ~30 pieces at 120 ms a batch: several seconds of model time, far past the deadline.
    let big = body(&prose("alpha", 6000));
    let started = Instant::now();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, HEADER_SKIPPED), Some("deadline"));
    assert!(started.elapsed() < Duration::from_millis(1500));
    let sent: serde_json::Value =
        serde_json::from_slice(&h.mock.state.last_request().unwrap().body).unwrap();
    assert_eq!(sent, big, "fail-open forwards the original");
    let ran = batches_of(&log, "alpha");
    assert!(ran >= 1, "the model was used at all");
    // No further batch of the expired request starts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(batches_of(&log, "alpha"), ran);

    // The next ordinary request is compressed within its deadline.
    let small = body(&prose("bravo", 250));
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, HEADER_SKIPPED), None);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
    assert_eq!(batches_of(&log, "alpha"), ran);
    assert!(batches_of(&log, "bravo") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_hook_future_cancels_the_work() {
    let (hook, log) = slow_hook(60_000);
    let big = body(&prose("alpha", 6000));
    let req = Intercepted::new(
        lingua_proxy::api::Api::ChatCompletions,
        big,
        http::HeaderMap::new(),
    );
    // The client goes away after 400 ms: the future is dropped.
    let r = tokio::time::timeout(Duration::from_millis(400), hook.on_request(req)).await;
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ran = batches_of(&log, "alpha");
    assert!(ran >= 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        batches_of(&log, "alpha"),
        ran,
        "work continued after cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_queued_inference_and_later_requests_pass_through() {
    let (hook, log) = slow_hook(60_000);
    let hook = Arc::new(hook);
    let big = body(&prose("alpha", 6000));
    let req = Intercepted::new(
        lingua_proxy::api::Api::ChatCompletions,
        big.clone(),
        http::HeaderMap::new(),
    );
    let running = tokio::spawn({
        let hook = hook.clone();
        async move { hook.on_request(req).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    hook.shutdown();
    let out = running.await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(out.body.is_none());
    let ran = batches_of(&log, "alpha");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(batches_of(&log, "alpha"), ran);
    let req = Intercepted::new(
        lingua_proxy::api::Api::ChatCompletions,
        big,
        http::HeaderMap::new(),
    );
    let out = hook.on_request(req).await;
    assert_eq!(
        out.report.unwrap().reason,
        Some(lingua_proxy::hook::Reason::ShuttingDown)
    );
}

/// The neural scorer on the committed tiny checkpoint.
fn neural_hook(tweak: impl FnOnce(&mut CompressionConfig)) -> CompressionHook {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/models/xlm-roberta-large-tiny"
    );
    let mut config = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Llmlingua2,
        model: Some(model.into()),
        ..CompressionConfig::default()
    };
    config.roles.system.min_tokens = 50;
    tweak(&mut config);
    let hook = lingua_proxy::engine::hook(&config, &Default::default())
        .unwrap()
        .build();
    assert!(hook.model_stats().is_some(), "the neural scorer is loaded");
    hook
}

async fn assert_next_request_is_compressed(h: &common::Harness) {
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&body(&prose("bravo", 300)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, HEADER_SKIPPED), None);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "{before} -> {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_four_megabyte_messages_are_skipped_as_too_large() {
    let hook = neural_hook(|_| {});
    let stats = hook.stats();
    let h = common::start_with(|c| c.max_body_bytes = 64 << 20, Arc::new(hook)).await;
    // 300 KB: over max_message_tokens only; 1 and 4 MB: over max_request_tokens too.
    for kb in [300usize, 1024, 4096] {
        let system = prose("alpha", kb * 1024 / 6);
        let big = body(&system);
        let started = Instant::now();
        let resp = h
            .client
            .post(h.url("/v1/chat/completions"))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, HEADER_SKIPPED), Some("too_large"), "{kb} KB");
        // Counting stops at the limit: far less than the deadline even for 4 MB.
        assert!(started.elapsed() < Duration::from_secs(2), "{kb} KB");
        let sent = h.mock.state.last_request().unwrap().body;
        assert_eq!(sent.len(), serde_json::to_vec(&big).unwrap().len());
        assert_next_request_is_compressed(&h).await;
    }
    assert_eq!(
        stats
            .skipped_too_large
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert!(
        stats
            .too_large_messages
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_message_without_size_limits_fails_open_and_frees_the_model() {
    let hook = neural_hook(|c| {
        c.max_message_tokens = 0;
        c.max_request_tokens = 0;
        c.deadline_ms = 400;
    });
    let model = hook.clone();
    let h = common::start_with(|c| c.max_body_bytes = 64 << 20, Arc::new(hook)).await;
    let big = body(&prose("alpha", (1 << 20) / 6));
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, HEADER_SKIPPED), Some("deadline"));
    // Whatever was queued for it is gone, and nothing of it runs any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s1 = model.model_stats().unwrap();
    assert_eq!(s1.queued_windows, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s2 = model.model_stats().unwrap();
    assert_eq!(s1.windows_run, s2.windows_run);
    assert!(s2.max_batch_tokens_seen <= 4096);
    assert_next_request_is_compressed(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compression_fills_the_cache_for_the_next_identical_message() {
    use lingua_proxy::engine::build_compressor;
    use std::sync::atomic::Ordering;
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        max_message_tokens: 100,
        background: true,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    let c = build_compressor(&cfg).unwrap();
    let hook = CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()));
    let big = body(&prose("alpha", 400));
    let req = || {
        Intercepted::new(
            lingua_proxy::api::Api::ChatCompletions,
            big.clone(),
            http::HeaderMap::new(),
        )
    };
    let first = hook.on_request(req()).await;
    assert!(first.body.is_none(), "the first turn goes out raw");
    assert_eq!(
        first.report.unwrap().reason,
        Some(lingua_proxy::hook::Reason::TooLarge)
    );
    let stats = hook.stats();
    let waited = Instant::now();
    while stats.background_done.load(Ordering::Relaxed) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(20),
            "background never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = hook.on_request(req()).await;
    let report = second.report.unwrap();
    assert_eq!(report.compression.as_str(), "compressed");
    assert_eq!(report.cache, Some(lingua_proxy::compress::CacheStatus::Hit));
    assert!(second.body.unwrap().len() < serde_json::to_vec(&big).unwrap().len());
    assert_eq!(stats.background_queued.load(Ordering::Relaxed), 1);
}
