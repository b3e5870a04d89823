//! The load driver shared by `tests/load.rs` (short run, asserted) and `benches/load.rs` (the
//! docs/reliability.md figures): the proxy binary as a child process in front of the in-process mock, with
//! the heuristic scorer, and N concurrent streaming clients for a while. The child's RSS is read
//! from `/proc/<pid>/status`, so the figures are the proxy's, not the clients' or the mock's.
#![allow(unsafe_code, reason = "raises the open-file limit with setrlimit")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lingua_proxy::headers::HEADER_TOKENS_AFTER;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

/// What a load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub clients: usize,
    pub duration: Duration,
    /// Pieces per streamed answer and the mock's delay between them.
    pub chunks: u32,
    pub chunk_delay_ms: u64,
    /// Every request carries a new system prompt (a compression cache miss each time); otherwise
    /// each client repeats its own.
    pub unique_per_request: bool,
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Time to the first body byte of each successful stream.
    pub ttfb: Vec<Duration>,
    /// Proxy RSS (KiB) before the load, at half time and at the end.
    pub rss_start_kb: u64,
    pub rss_mid_kb: u64,
    pub rss_end_kb: u64,
    /// The proxy's peak RSS (`VmHWM`, KiB).
    pub rss_peak_kb: u64,
    /// Requests the proxy compressed (the `x-lingua-tokens-after` header was present).
    pub compressed: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn ttfb_percentile(&self, p: f64) -> Duration {
        let mut v = self.ttfb.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// Raises the soft limit of open files to the hard limit (each stream holds a few descriptors).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit calls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The proxy binary, running.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve` against `upstream` with the heuristic scorer and waits for `/healthz`.
pub async fn start_proxy(binary: &Path, upstream: &str, dir: &Path) -> ProxyProcess {
    let config = format!(
        r#"[upstream]
base_url = "{upstream}"
[log]
level = "warn"
[compression]
scorer = "heuristic"
# a cache that fills within seconds, so that RSS reaches its plateau early in the run
cache_bytes = 8388608
[compression.roles.system]
min_tokens = 50
[compression.roles.tool]
min_tokens = 50
"#
    );
    start_proxy_with(binary, &config, &dir.join("load.toml")).await
}

/// Starts `binary serve` with the configuration `toml` (written to `path`, `listen` set to a
/// free loopback port) and waits for `/healthz`.
pub async fn start_proxy_with(binary: &Path, toml: &str, path: &Path) -> ProxyProcess {
    let port = super::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = path.to_path_buf();
    std::fs::write(&config, format!("listen = \"{addr}\"\n{toml}")).unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Owned at once, so that a failing test below still kills the process.
    let process = ProxyProcess { child, addr };
    lingua_proxy::server::install_crypto_provider();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the proxy did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    process
}

fn body(client: usize, n: u64, unique: bool) -> serde_json::Value {
    let mut b = super::compressible_body(true);
    let tag = if unique {
        format!(" Ticket {client}-{n}.")
    } else {
        format!(" Desk {client}.")
    };
    let system = format!(
        "{}{tag}",
        b["messages"][0]["content"].as_str().unwrap_or("")
    );
    b["messages"][0]["content"] = serde_json::json!(system);
    b
}

/// Runs the load against a started proxy.
pub async fn run(binary: &Path, cfg: &LoadConfig) -> LoadReport {
    raise_fd_limit();
    // reqwest is built without a default TLS provider.
    lingua_proxy::server::install_crypto_provider();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(binary, &mock.base_url(), dir.path()).await;
    let pid = proxy.child.id();
    let url = format!("http://{}/v1/chat/completions", proxy.addr);
    let (rss_start_kb, _) = rss_kb(pid);

    let requests = Arc::new(AtomicU64::new(0));
    let compressed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.clients);
    for c in 0..cfg.clients {
        let url = url.clone();
        let cfg = cfg.clone();
        let requests = requests.clone();
        let compressed = compressed.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let mut ttfb = Vec::new();
            let mut errors = Vec::new();
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                requests.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match one_stream(&client, &url, &body(c, n, cfg.unique_per_request), &cfg).await {
                    Ok((first, was_compressed)) => {
                        ttfb.push(first - t);
                        if was_compressed {
                            compressed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            (ttfb, errors)
        }));
    }
    let mid = tokio::time::sleep_until((started + cfg.duration / 2).into());
    mid.await;
    let (rss_mid_kb, _) = rss_kb(pid);
    let mut report = LoadReport {
        rss_start_kb,
        rss_mid_kb,
        ..LoadReport::default()
    };
    for t in tasks {
        let (ttfb, errors) = t.await.unwrap();
        report.ttfb.extend(ttfb);
        report.errors += errors.len() as u64;
        for e in errors {
            if report.error_samples.len() < 5 {
                report.error_samples.push(e);
            }
        }
    }
    report.elapsed = started.elapsed();
    let (rss_end_kb, rss_peak_kb) = rss_kb(pid);
    report.rss_end_kb = rss_end_kb;
    report.rss_peak_kb = rss_peak_kb;
    report.requests = requests.load(Ordering::Relaxed);
    report.compressed = compressed.load(Ordering::Relaxed);
    drop(proxy);
    report
}

/// One streamed request read to its end: the instant of the first body byte, and whether the
/// proxy compressed it.
async fn one_stream(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    cfg: &LoadConfig,
) -> Result<(Instant, bool), String> {
    let resp = client
        .post(url)
        .header("x-mock-chunks", cfg.chunks.to_string())
        .header("x-mock-chunk-delay-ms", cfg.chunk_delay_ms.to_string())
        .json(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let was_compressed = resp.headers().contains_key(HEADER_TOKENS_AFTER);
    let mut stream = resp.bytes_stream();
    let mut first = None;
    let mut tail = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        if first.is_none() && !chunk.is_empty() {
            first = Some(Instant::now());
        }
        tail.extend_from_slice(&chunk);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    if !tail.ends_with(b"data: [DONE]\n\n") {
        return Err("stream ended without [DONE]".into());
    }
    Ok((first.unwrap_or_else(Instant::now), was_compressed))
}
