//! Shutdown: in-flight requests finish within `shutdown_grace_ms`, connections still open after
//! it are closed, and the real binary exits within grace + 1 s of SIGTERM with its event log
//! complete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{chat_body, start_with};
use futures_util::StreamExt;
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sigterm_exits_within_grace_plus_one_second_with_the_event_log_complete() {
    lingua_proxy::server::install_crypto_provider();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let port = free_port();
    let grace_ms = 1000u64;
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nshutdown_grace_ms = {grace_ms}\n\
             [upstream]\nbase_url = \"{}\"\n[compression]\nscorer = \"heuristic\"\n\
             [telemetry]\nevents_path = \"{}\"\n",
            mock.base_url(),
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

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let limit = Duration::from_millis(grace_ms + 1000);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit + Duration::from_secs(5) {
            let _ = child.kill();
            panic!("the proxy did not exit within grace + 6 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = t.elapsed();
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
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.ends_with('\n'));
    let logged: Vec<lingua_proxy::telemetry::Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 3, "{text}");
    assert_eq!(logged.iter().filter(|e| e.error.is_none()).count(), 2);
    assert!(
        logged.iter().any(|e| e.stream && e.error.is_some()),
        "{text}"
    );
}
