//! The latency lingua-proxy adds over calling the mock upstream directly, measured side by side
//! in one run: non-streaming (full response) and streaming (time to first byte), at concurrency
//! 1 and 64, p50 and p99.
//!
//! `cargo bench --bench proxy_overhead`. Env: `BENCH_REQUESTS` (per cell and side, default 4000),
//! `BENCH_UPSTREAM_MS` (the mock's time to first byte, default 20 ms, like a fast real upstream,
//! so that 64 requests are really in flight at once instead of 64 loops saturating two cores).
//! The 64 clients start staggered over one upstream delay, so they do not arrive in lockstep
//! bursts (which would measure the burst's queue, not the proxy).
//! Direct and proxied batches alternate in rounds so machine noise hits both sides alike.
//! Compression is off (passthrough hook): this is the proxy's own cost. A third side runs a
//! second proxy with A/B on (50% raw; the bench sends no session key, so arms are drawn at random) and the event log written to
//! a temporary file, so the telemetry's share shows as the difference of the two proxied sides.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lingua_proxy::config::Config;
use lingua_proxy::hook::Passthrough;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn one(client: &reqwest::Client, url: &str, body: &bytes::Bytes, stream: bool) -> Duration {
    let t = Instant::now();
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    if stream {
        let mut s = resp.bytes_stream();
        let _first = s.next().await;
        let elapsed = t.elapsed();
        while s.next().await.is_some() {}
        elapsed
    } else {
        let _ = resp.bytes().await.unwrap();
        t.elapsed()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    stream: bool,
    concurrency: usize,
    total: usize,
    stagger: Duration,
) -> Vec<Duration> {
    let body = bytes::Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant. ".repeat(20)},
                {"role": "user", "content": "What is the capital of France?"}
            ],
            "stream": stream
        })
        .to_string(),
    );
    let per_task = total.div_ceil(concurrency);
    let url = Arc::new(url.to_owned());
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (client, body, url) = (client.clone(), body.clone(), url.clone());
        let offset = stagger.mul_f64(i as f64 / concurrency as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut v = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                v.push(one(&client, &url, &body, stream).await);
            }
            v
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let upstream_ms: u64 = std::env::var("BENCH_UPSTREAM_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mock = MockUpstream::start(MockConfig {
        first_byte_delay: Duration::from_millis(upstream_ms),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    config.upstream.base_url = mock.base_url();
    config.log.level = "warn".into();
    let proxy = lingua_proxy::server::start(config, Arc::new(Passthrough))
        .await
        .unwrap();
    let events_dir = tempfile::tempdir().unwrap();
    let mut ab_config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    ab_config.upstream.base_url = mock.base_url();
    ab_config.log.level = "warn".into();
    ab_config.ab.enabled = true;
    ab_config.ab.raw_percent = 50.0;
    ab_config.telemetry.events_path = Some(events_dir.path().join("events.jsonl"));
    let ab_proxy = lingua_proxy::server::start(ab_config, Arc::new(Passthrough))
        .await
        .unwrap();
    let direct = format!("{}/chat/completions", mock.base_url());
    let proxied = format!("http://{}/v1/chat/completions", proxy.addr);
    let ab_proxied = format!("http://{}/v1/chat/completions", ab_proxy.addr);

    println!(
        "upstream time to first byte {upstream_ms} ms, {total} requests per cell and side, {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "| mode | concurrency | direct p50 ms | proxied p50 ms | added p50 ms | direct p99 ms | proxied p99 ms | added p99 ms | A/B+log added p50 ms | A/B+log added p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for stream in [false, true] {
        for concurrency in [1usize, 64] {
            let (dc, pc, ac) = (client(), client(), client());
            // warm-up: connections and caches on every side
            let stagger = Duration::from_millis(upstream_ms);
            run(&dc, &direct, stream, concurrency, concurrency * 2, stagger).await;
            run(&pc, &proxied, stream, concurrency, concurrency * 2, stagger).await;
            run(
                &ac,
                &ab_proxied,
                stream,
                concurrency,
                concurrency * 2,
                stagger,
            )
            .await;
            let rounds = 10;
            let (mut d, mut p, mut a) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                d.extend(run(&dc, &direct, stream, concurrency, total / rounds, stagger).await);
                p.extend(run(&pc, &proxied, stream, concurrency, total / rounds, stagger).await);
                a.extend(
                    run(
                        &ac,
                        &ab_proxied,
                        stream,
                        concurrency,
                        total / rounds,
                        stagger,
                    )
                    .await,
                );
            }
            d.sort();
            p.sort();
            a.sort();
            let (d50, p50, a50) = (
                percentile(&d, 0.5),
                percentile(&p, 0.5),
                percentile(&a, 0.5),
            );
            let (d99, p99, a99) = (
                percentile(&d, 0.99),
                percentile(&p, 0.99),
                percentile(&a, 0.99),
            );
            println!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                if stream {
                    "stream (TTFB)"
                } else {
                    "non-stream"
                },
                concurrency,
                ms(d50),
                ms(p50),
                ms(p50) - ms(d50),
                ms(d99),
                ms(p99),
                ms(p99) - ms(d99),
                ms(a50) - ms(d50),
                ms(a99) - ms(d99),
            );
        }
    }
    proxy.shutdown().await;
    ab_proxy.shutdown().await;
}
