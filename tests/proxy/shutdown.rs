//! Shutdown: in-flight requests finish within `shutdown_grace_ms`, connections still open after
//! it are closed, and the real binary exits within grace + 1 s of SIGTERM with its event log
//! complete.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{chat_body, start_with};
use futures_util::StreamExt;
use lingua_proxy::headers::{HEADER_COMPRESS, HEADER_SKIPPED};
use lingua_proxy::hook::Passthrough;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

/// A streaming chat request shaped by the mock's headers.
fn stream_request(
    client: &reqwest::Client,
    url: &str,
    chunks: u32,
    delay_ms: u32,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("x-mock-chunks", chunks.to_string())
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .json(&chat_body(true))
}

#[tokio::test]
async fn in_flight_streams_finish_within_grace_and_the_rest_are_closed_after_it() {
    let grace = Duration::from_millis(800);
    let h = start_with(
        |c| c.shutdown_grace_ms = grace.as_millis() as u64,
        Arc::new(Passthrough),
    )
    .await;
    let url = h.url("/v1/chat/completions");
    // ~300 ms: finishes inside the grace period
    let short = stream_request(&h.client, &url, 6, 50).send().await.unwrap();
    // ~50 s: still running when the grace period ends
    let long = stream_request(&h.client, &url, 1000, 50)
        .send()
        .await
        .unwrap();
    let mut long_body = long.bytes_stream();
    assert!(long_body.next().await.unwrap().is_ok());

    let health = h.url("/healthz");
    let t = Instant::now();
    let shutdown = tokio::spawn(h.proxy.shutdown());
    let short_text = short.text().await.expect("the short stream ends cleanly");
    assert!(
        short_text.trim_end().ends_with("data: [DONE]"),
        "{short_text}"
    );

    let mut cut = false;
    while let Some(chunk) = tokio::time::timeout(grace * 3, long_body.next())
        .await
        .expect("the long stream was not closed after the grace period")
    {
        if chunk.is_err() {
            cut = true;
            break;
        }
    }
    let closed_after = t.elapsed();
    assert!(
        cut,
        "a cut stream must end with an error, never a clean end"
    );
    assert!(
        closed_after >= grace - Duration::from_millis(50),
        "{closed_after:?}"
    );
    tokio::time::timeout(Duration::from_secs(1), shutdown)
        .await
        .expect("shutdown returns within grace + 1 s")
        .unwrap();
    assert!(
        t.elapsed() <= grace + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    // the proxy is gone
    assert!(h.client.get(health).send().await.is_err());
}

/// The real binary, serving on a free loopback port in front of `upstream`, with `extra` TOML
/// appended to its config; returns once `/healthz` answers.
struct Binary {
    child: std::process::Child,
    base: String,
    events: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    async fn start(upstream: &str, grace_ms: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        let port = common::free_port();
        let config = dir.path().join("proxy.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nshutdown_grace_ms = {grace_ms}\n\
                 [upstream]\nbase_url = \"{upstream}\"\n\
                 [telemetry]\nevents_path = \"{}\"\n\
                 [compression]\nscorer = \"heuristic\"\n{extra}",
                events.display()
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lingua-proxy"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("LINGUA_PROXY_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let ready = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the proxy exited during startup"
            );
            assert!(
                ready.elapsed() < Duration::from_secs(30),
                "the proxy never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            base,
            events,
            _dir: dir,
        }
    }

    /// Sends SIGTERM and waits for the exit (at most `limit` + 5 s); returns how long it took.
    async fn terminate(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (t.elapsed(), s);
            }
            if t.elapsed() > limit + Duration::from_secs(5) {
                let _ = self.child.kill();
                panic!("the proxy did not exit within {limit:?} + 5 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every line of the event log, which must end with a complete line.
    fn events(&self) -> Vec<lingua_proxy::telemetry::Event> {
        let text = std::fs::read_to_string(&self.events).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn sigterm_exits_within_grace_plus_one_second_with_the_event_log_complete() {
    lingua_proxy::server::install_crypto_provider();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let grace_ms = 1000u64;
    let mut proxy = Binary::start(&mock.base_url(), grace_ms, "").await;
    let client = reqwest::Client::new();
    let base = proxy.base.clone();
    let url = format!("{base}/v1/chat/completions");
    for _ in 0..2 {
        let r = client
            .post(&url)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let held = stream_request(&client, &url, 1000, 50)
        .send()
        .await
        .unwrap();
    let mut held = held.bytes_stream();
    assert!(held.next().await.unwrap().is_ok());

    let limit = Duration::from_millis(grace_ms + 1000);
    let (took, exit) = proxy.terminate(limit).await;
    assert!(took <= limit, "exit took {took:?}, limit {limit:?}");
    assert!(exit.success(), "{exit:?}");
    // the held stream was cut, not ended cleanly
    let mut cut = false;
    while let Some(chunk) = held.next().await {
        if chunk.is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut);

    // every request has its line, the cut stream included, with nothing half-written
    let logged = proxy.events();
    let text = format!("{logged:?}");
    assert_eq!(logged.len(), 3, "{text}");
    assert_eq!(logged.iter().filter(|e| e.error.is_none()).count(), 2);
    assert!(
        logged.iter().any(|e| e.stream && e.error.is_some()),
        "{text}"
    );
}

/// A system message of about `sentences` x 16 tokens, different for every `seed`.
fn heavy_text(seed: usize, sentences: usize) -> String {
    let mut s = String::with_capacity(sentences * 90);
    for j in 0..sentences {
        s.push_str(&format!(
            "Shipment {seed}-{j} left the depot in Rotterdam at {:02}:{:02} and the driver \
             reported {} parcels for the northern route. ",
            (seed + j) % 24,
            (seed * 7 + j) % 60,
            j % 97
        ));
    }
    s
}

/// Whether a streamed body ended cleanly with `[DONE]` (`Ok`) or with an error (`Err`).
async fn read_stream(resp: reqwest::Response) -> Result<String, String> {
    let mut body = resp.bytes_stream();
    let mut text = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => text.extend_from_slice(&b),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// SIGTERM with 100 streams that fit the grace period, 10 that do not, and compressions of
/// long messages still running: the process exits within grace + 1 s, the fitting streams
/// end with `[DONE]`, the others are cut (an error, never a clean end), the compressions in
/// flight are cancelled and their requests answered uncompressed, and every request has its
/// line in the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_what_fits_and_logs_every_request() {
    const SHORT: usize = 100;
    const LONG: usize = 10;
    const HEAVY: usize = 12;
    lingua_proxy::server::install_crypto_provider();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let grace_ms = 3000u64;
    // No cache, and a deadline far beyond the test: only shutdown stops the compressions.
    let mut proxy = Binary::start(
        &mock.base_url(),
        grace_ms,
        "cache_bytes = 0\ndeadline_ms = 60000\nworkers = 1\n",
    )
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", proxy.base);

    // Compression work first, one request at a time (`workers = 1`, so the machine's core count
    // does not decide how much of it is done by SIGTERM): long messages, each several seconds of scoring on this machine.
    let heavy: Vec<_> = (0..HEAVY)
        .map(|i| {
            // three long documents (user prose, each under `max_message_tokens`, so they are
            // scored rather than kept like instructions) and the question
            let mut body = chat_body(false);
            let messages = body["messages"].as_array_mut().unwrap();
            for k in 0..3 {
                let m = serde_json::json!({"role": "user", "content": heavy_text(3 * i + k, 1000)});
                messages.insert(1 + k, m);
            }
            let req = client.post(&url).json(&body);
            tokio::spawn(async move { req.send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ~0.5 s streams (they fit the 3 s grace period, with room for a loaded machine) and ~50 s ones (they do not), which skip
    // compression so that they need no policy worker (the long messages hold them)
    let short: Vec<_> = (0..SHORT)
        .map(|_| {
            let req = stream_request(&client, &url, 10, 50).header(HEADER_COMPRESS, "off");
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) => read_stream(r).await,
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let long: Vec<_> = (0..LONG)
        .map(|_| {
            let req = stream_request(&client, &url, 1000, 50).header(HEADER_COMPRESS, "off");
            tokio::spawn(async move {
                match req.send().await {
                    Ok(r) => read_stream(r).await,
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let started = Instant::now();
    while (mock
        .state
        .streams_started
        .load(std::sync::atomic::Ordering::SeqCst) as usize)
        < SHORT + LONG
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the streams never all reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "{} of {HEAVY} compressed requests reached the upstream before SIGTERM",
        mock.state.request_count() - SHORT - LONG
    );
    assert!(
        mock.state.request_count() < SHORT + LONG + HEAVY,
        "every compression finished before SIGTERM: make the messages longer"
    );

    let limit = Duration::from_millis(grace_ms + 1000);
    let (took, exit) = proxy.terminate(limit).await;
    assert!(took <= limit, "exit took {took:?}, limit {limit:?}");
    assert!(exit.success(), "{exit:?}");

    for s in short {
        let text = s
            .await
            .unwrap()
            .expect("a stream that fits the grace period ends cleanly");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    }
    for s in long {
        assert!(
            s.await.unwrap().is_err(),
            "a cut stream must end with an error"
        );
    }
    let mut cancelled = 0;
    for h in heavy {
        let resp = h
            .await
            .unwrap()
            .expect("every compression request is answered");
        assert_eq!(resp.status(), 200);
        if resp
            .headers()
            .get(HEADER_SKIPPED)
            .is_some_and(|v| v == "cancelled")
        {
            cancelled += 1;
        }
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion");
    }
    assert!(cancelled >= 1, "no compression was in flight at SIGTERM");
    eprintln!("exit {took:?} after SIGTERM; {cancelled} of {HEAVY} compressions cancelled");

    let logged = proxy.events();
    assert_eq!(logged.len(), SHORT + LONG + HEAVY, "one line per request");
    let cut = logged
        .iter()
        .filter(|e| e.stream && e.error.is_some())
        .count();
    assert_eq!(cut, LONG);
    let fail_open = logged
        .iter()
        .filter(|e| e.fail_open.as_deref() == Some("cancelled"))
        .count();
    assert_eq!(fail_open, cancelled);
}
