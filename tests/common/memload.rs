//! Memory per request: N concurrent chat requests made of many tiny JSON values (issue 18's
//! probe: 1.15 million `{"role":"a","content":"b"}` messages, 31 MB) through the proxy binary
//! with the default limits, while `/healthz` is polled. Reports the proxy's RSS before, at its
//! peak and after the answers, how long it took to fall back under `settle_mib`, and the
//! slowest `/healthz`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use super::load::{rss_kb, start_proxy};

/// A chat completion upstream that only drains each body and records its digest: the testkit
/// mock parses every body into a tree, which for these bodies would cost the measuring process
/// seconds of CPU and a gigabyte each, and skew what is measured.
struct DrainUpstream {
    addr: std::net::SocketAddr,
    digests: Arc<std::sync::Mutex<Vec<[u8; 32]>>>,
}

impl DrainUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let digests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = digests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let digest = tokio::task::spawn_blocking(move || {
                                <[u8; 32]>::from(Sha256::digest(&body))
                            })
                            .await
                            .unwrap();
                            seen.lock().unwrap().push(digest);
                            let answer = r#"{"id":"chatcmpl-drain","object":"chat.completion","created":0,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(answer.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, digests }
    }
}

/// `{"model":…,"messages":[{"role":"a","content":"b"}, …]}` with `messages` entries.
pub fn tiny_messages_body(messages: usize) -> Vec<u8> {
    let mut body = br#"{"model":"gpt-4o-mini","messages":["#.to_vec();
    for i in 0..messages {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"role":"a","content":"b"}"#);
    }
    body.extend_from_slice(b"]}");
    body
}

#[derive(Debug)]
pub struct MemReport {
    pub concurrent: usize,
    pub body_bytes: usize,
    pub statuses: Vec<u16>,
    /// Bodies the upstream received byte for byte as sent.
    pub forwarded_unchanged: usize,
    pub rss_start_mib: f64,
    pub rss_peak_mib: f64,
    /// RSS when the last answer arrived, and the lowest seen until 3 s after (retained).
    pub rss_answered_mib: f64,
    pub rss_after_mib: f64,
    /// Seconds from the last answer until RSS was under `settle_mib` (`None`: not within 10 s).
    pub settled_after_s: Option<f64>,
    pub healthz_max_ms: f64,
    pub healthz_polls: u64,
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Runs `concurrent` requests of `messages` tiny messages each through `binary`.
pub async fn run(binary: &Path, concurrent: usize, messages: usize, settle_mib: f64) -> MemReport {
    lingua_proxy::server::install_crypto_provider();
    let upstream = DrainUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(binary, &format!("http://{}", upstream.addr), dir.path()).await;
    let pid = proxy.child.id();
    let addr = proxy.addr;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss_kb(pid).0;

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Polled from a thread of its own: what is measured is the proxy, not this process.
    let health = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let (mut worst, mut polls) = (Duration::ZERO, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = client
                        .get(format!("http://{addr}/healthz"))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    let took = if ok {
                        t.elapsed()
                    } else {
                        Duration::from_secs(10)
                    };
                    worst = worst.max(took);
                    polls += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (worst, polls)
            })
        })
    };

    let body = Bytes::from(tiny_messages_body(messages));
    let client = reqwest::Client::new();
    let sends: Vec<_> = (0..concurrent)
        .map(|_| {
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                client
                    .post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(120))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        statuses.push(s.await.unwrap_or(0));
    }
    let answered = Instant::now();
    let rss_answered = rss_kb(pid).0;
    let mut lowest = rss_answered;
    let mut settled_after_s = None;
    while answered.elapsed() < Duration::from_secs(10) {
        let now = rss_kb(pid).0;
        lowest = lowest.min(now);
        if settled_after_s.is_none() && mib(now) < settle_mib {
            settled_after_s = Some(answered.elapsed().as_secs_f64());
        }
        // Retained: what is left 3 s after the answers (or at 10 s when not settled by then).
        if settled_after_s.is_some() && answered.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (worst, polls) = health.join().unwrap();
    let sent = <[u8; 32]>::from(Sha256::digest(&body));
    let forwarded_unchanged = upstream
        .digests
        .lock()
        .unwrap()
        .iter()
        .filter(|d| **d == sent)
        .count();
    MemReport {
        concurrent,
        body_bytes: body.len(),
        statuses,
        forwarded_unchanged,
        rss_start_mib: mib(rss_start),
        rss_peak_mib: mib(peak.load(Ordering::Relaxed)),
        rss_answered_mib: mib(rss_answered),
        rss_after_mib: mib(lowest),
        settled_after_s,
        healthz_max_ms: worst.as_secs_f64() * 1e3,
        healthz_polls: polls,
    }
}
