#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The fail-open hook, called directly (the proxy-level tests are in compress_proxy.rs).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use lingua_proxy::compress::{
    Budget, CompressError, CompressOutput, CompressionConfig, Compressor, Policy,
};
use lingua_proxy::engine::build_compressor;
use lingua_proxy::headers::{
    HEADER_CACHE, HEADER_COMPRESS, HEADER_COMPRESSION_MS, HEADER_RATE, HEADER_SKIPPED,
    HEADER_TOKENS_AFTER, HEADER_TOKENS_BEFORE,
};
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::hook::{HookOutcome, Intercepted, RequestHook};
use lingua_proxy::scorer::ScorerError;
use serde_json::{Value, json};

fn prose(n: usize) -> String {
    "The gateway validates every incoming request against the quota table, records the latency \
     of the upstream call and rejects callers whose keys were revoked during the last rotation. "
        .repeat(n)
}

fn request(headers: &[(&'static str, &'static str)]) -> Intercepted {
    let json = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": prose(10)},
        {"role": "user", "content": "hello"}]});
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_static(v));
    }
    Intercepted::new(lingua_proxy::api::Api::ChatCompletions, json, h)
}

fn header<'a>(o: &'a HookOutcome, name: &str) -> Option<&'a str> {
    o.response_headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.to_str().ok())
}

enum Mode {
    Fail,
    Sleep(Duration),
    Panic,
}
struct Broken(Mode);
impl Compressor for Broken {
    fn id(&self) -> &str {
        "broken"
    }
    fn compress(
        &self,
        text: &str,
        _: &Budget,
        _: &lingua_proxy::model::WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        match &self.0 {
            Mode::Fail => Err(ScorerError::Model("boom".into()).into()),
            Mode::Sleep(d) => {
                std::thread::sleep(*d);
                Ok(CompressOutput {
                    text: text[..text.len() / 2].to_string(),
                    origin_tokens: 0,
                    compressed_tokens: 0,
                    budget_exceeded_by_units: false,
                })
            }
            Mode::Panic => panic!("scorer panicked"),
        }
    }
}

fn hook_with(mut cfg: CompressionConfig, c: Arc<dyn Compressor>) -> CompressionHook {
    cfg.instructions = lingua_proxy::compress::InstructionsMode::Compress;
    CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()))
}

fn heuristic_hook(mut cfg: CompressionConfig) -> CompressionHook {
    cfg.scorer = lingua_proxy::compress::ScorerKind::Heuristic;
    // Instruction prose is compressed here (the default keeps it).
    cfg.instructions = lingua_proxy::compress::InstructionsMode::Compress;
    let c = build_compressor(&cfg).unwrap();
    hook_with(cfg, c)
}

#[tokio::test]
async fn compresses_and_reports() {
    let hook = heuristic_hook(CompressionConfig::default());
    let a = hook.on_request(request(&[])).await;
    let body: Value = serde_json::from_slice(a.body.as_ref().unwrap()).unwrap();
    assert!(body["messages"][0]["content"].as_str().unwrap().len() < prose(10).len());
    let before: usize = header(&a, HEADER_TOKENS_BEFORE).unwrap().parse().unwrap();
    let after: usize = header(&a, HEADER_TOKENS_AFTER).unwrap().parse().unwrap();
    assert!(after < before);
    assert!(
        header(&a, HEADER_COMPRESSION_MS)
            .unwrap()
            .parse::<f64>()
            .is_ok()
    );
    assert_eq!(header(&a, HEADER_CACHE), Some("miss"));
    let b = hook.on_request(request(&[])).await;
    assert_eq!(header(&b, HEADER_CACHE), Some("hit"));
    assert_eq!(a.body, b.body);
    assert_eq!(hook.stats().compressed.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn header_controls() {
    let hook = heuristic_hook(CompressionConfig::default());
    let off = hook.on_request(request(&[(HEADER_COMPRESS, "off")])).await;
    assert!(off.body.is_none());
    assert_eq!(header(&off, HEADER_SKIPPED), Some("off"));
    let low = hook.on_request(request(&[(HEADER_RATE, "0.2")])).await;
    let def = hook.on_request(request(&[])).await;
    assert!(low.body.as_ref().unwrap().len() < def.body.as_ref().unwrap().len());

    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        allow_request_overrides: false,
        ..CompressionConfig::default()
    };
    let hook = heuristic_hook(cfg);
    let ignored = hook.on_request(request(&[(HEADER_COMPRESS, "off")])).await;
    assert!(ignored.body.is_some());

    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        enabled: false,
        ..CompressionConfig::default()
    };
    let hook = heuristic_hook(cfg);
    assert!(hook.on_request(request(&[])).await.body.is_none());
    let on = hook.on_request(request(&[(HEADER_COMPRESS, "on")])).await;
    assert!(on.body.is_some());
}

#[tokio::test]
async fn fail_open_on_error_panic_and_deadline() {
    let hook = hook_with(CompressionConfig::default(), Arc::new(Broken(Mode::Fail)));
    let o = hook.on_request(request(&[])).await;
    assert!(o.body.is_none());
    assert_eq!(header(&o, HEADER_SKIPPED), Some("error"));
    assert_eq!(hook.stats().fail_open_error.load(Ordering::Relaxed), 1);

    let hook = hook_with(CompressionConfig::default(), Arc::new(Broken(Mode::Panic)));
    let o = hook.on_request(request(&[])).await;
    assert!(o.body.is_none());
    assert_eq!(header(&o, HEADER_SKIPPED), Some("panic"));
    assert_eq!(hook.stats().fail_open_panic.load(Ordering::Relaxed), 1);

    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        deadline_ms: 50,
        ..CompressionConfig::default()
    };
    let hook = hook_with(
        cfg,
        Arc::new(Broken(Mode::Sleep(Duration::from_millis(400)))),
    );
    let t = std::time::Instant::now();
    let o = hook.on_request(request(&[])).await;
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "waited {:?}",
        t.elapsed()
    );
    assert!(o.body.is_none());
    assert_eq!(header(&o, HEADER_SKIPPED), Some("deadline"));
    assert_eq!(hook.stats().fail_open(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_skips_instead_of_waiting() {
    let cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        workers: 1,
        queue: 0,
        deadline_ms: 5_000,
        ..CompressionConfig::default()
    };
    let hook = hook_with(
        cfg,
        Arc::new(Broken(Mode::Sleep(Duration::from_millis(300)))),
    );
    let h2 = hook.clone();
    let slow = tokio::spawn(async move { h2.on_request(request(&[])).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::Instant::now();
    let o = hook.on_request(request(&[])).await;
    assert!(t.elapsed() < Duration::from_millis(200));
    assert!(o.body.is_none());
    assert_eq!(header(&o, HEADER_SKIPPED), Some("overloaded"));
    let first = slow.await.unwrap();
    assert!(first.body.is_some(), "the admitted request was compressed");
    assert_eq!(hook.stats().skipped_overload.load(Ordering::Relaxed), 1);
}
