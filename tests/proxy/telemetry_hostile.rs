//! Telemetry under hostile input: invented role and model names, proxy keys as the sticky key,
//! bounded and tracked mirror copies, clients that leave before the response headers.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use crate::common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{compressible_body, heuristic_hook, read_events};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use lingua_proxy::ab::{AbConfig, Arm, Assigner, Mode};
use lingua_proxy::config::Config;
use lingua_proxy::headers::{HEADER_ARM, HEADER_MODE};
use lingua_proxy::telemetry::Event;

async fn setup(tweak: impl FnOnce(&mut Config)) -> common::Logged {
    common::start_logged(tweak, Arc::new(heuristic_hook())).await
}

fn events_now(path: &std::path::Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const ALLOWED_ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "other",
];

#[tokio::test]
async fn invented_roles_and_models_stay_out_of_labels_and_stats() {
    let s = setup(|_| {}).await;
    let mut body = compressible_body(false);
    for r in 0..5 {
        let messages = body["messages"].as_array_mut().unwrap();
        messages.truncate(4);
        for i in 0..2000 {
            messages.insert(
                0,
                serde_json::json!({"role": format!("invented-{r}-{i}"), "content": "hi there"}),
            );
        }
        body["model"] = format!("made-up-model-{r}").into();
        let resp =
            s.h.post_chat(&serde_json::to_vec(&body).unwrap(), &[])
                .await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let events = read_events(&s.events, 5).await;
    assert_eq!(events.len(), 5);
    for e in &events {
        let roles = &e.tokens.as_ref().expect("the policy ran").roles;
        assert!(roles.contains_key("other"), "{:?}", roles.keys());
        assert!(roles.keys().all(|k| ALLOWED_ROLES.contains(&k.as_str())));
    }

    let stats = s.h.stats().await;
    let keys: BTreeSet<&str> = stats["roles"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(keys.contains("other"), "{keys:?}");
    assert!(keys.iter().all(|k| ALLOWED_ROLES.contains(k)), "{keys:?}");
    let text = serde_json::to_string(&stats).unwrap();
    assert!(!text.contains("invented-") && !text.contains("made-up-model"));

    let exposition =
        s.h.client
            .get(s.h.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    let mut role_labels = BTreeSet::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("invented-") && !line.contains("made-up-model"),
            "a client-made name became a label: {line}"
        );
        if let Some(rest) = line.split("role=\"").nth(1) {
            role_labels.insert(rest.split('"').next().unwrap().to_owned());
        }
    }
    assert!(role_labels.contains("other"), "{role_labels:?}");
    assert!(
        role_labels
            .iter()
            .all(|r| ALLOWED_ROLES.contains(&r.as_str())),
        "{role_labels:?}"
    );
}

#[tokio::test]
async fn api_key_sticky_arm_survives_proxy_auth() {
    let ab = AbConfig {
        enabled: true,
        raw_percent: 50.0,
        sticky_key: "api_key".into(),
        allow_arm_override: false,
        ..AbConfig::default()
    };
    // Two proxy keys that hash to different arms.
    let assigner = Assigner::new(ab.clone());
    let arm_of_key = |k: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {k}").parse().unwrap(),
        );
        assigner.assign(&h, &serde_json::json!({})).arm
    };
    let keys: Vec<String> = (0..64).map(|i| format!("pk-test-{i}")).collect();
    let raw_key = keys.iter().find(|k| arm_of_key(k) == Arm::Raw).unwrap();
    let comp_key = keys
        .iter()
        .find(|k| arm_of_key(k) == Arm::Compressed)
        .unwrap();
    // SAFETY: a variable name unique to this test; set before the proxy reads it.
    unsafe {
        std::env::set_var("LP_TEST_STICKY_KEYS", format!("{raw_key},{comp_key}"));
        std::env::set_var("LP_TEST_STICKY_UPSTREAM", "sk-upstream");
    }
    let s = setup(move |c| {
        c.auth.keys_env = Some("LP_TEST_STICKY_KEYS".into());
        c.upstream.api_key_env = Some("LP_TEST_STICKY_UPSTREAM".into());
        c.ab = ab;
    })
    .await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    for round in 0..8 {
        for (key, want) in [(raw_key, Arm::Raw), (comp_key, Arm::Compressed)] {
            // either header carries the key; both give the key's arm
            let auth = if round % 2 == 0 {
                ("authorization", format!("Bearer {key}"))
            } else {
                ("x-api-key", key.clone())
            };
            let resp = s.h.post_chat(&body, &[(auth.0, &auth.1)]).await;
            assert_eq!(resp.status(), 200);
            let arm = Arm::parse(resp.headers()[HEADER_ARM].to_str().unwrap()).unwrap();
            assert_eq!(arm, want, "round {round}: the key's arm");
            resp.bytes().await.unwrap();
        }
    }
    // the proxy key never reaches the upstream
    for r in s.h.mock.state.requests() {
        assert_eq!(r.headers["authorization"], "Bearer sk-upstream");
        assert!(r.headers.get("x-api-key").is_none());
    }
}

#[tokio::test]
async fn a_client_gone_before_the_headers_still_writes_its_event() {
    let s = setup(|_| {}).await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .post(s.h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-mock-first-byte-delay-ms", "3000")
        .body(body.clone())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let events = read_events(&s.events, 1).await;
    assert_eq!(events.len(), 1, "the abandoned call is recorded");
    let e = &events[0];
    assert_eq!(e.error.as_deref(), Some("client_disconnected"));
    assert_eq!(e.status, 0);
    assert!(e.served);
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    assert!(
        e.latency_ms.total >= 250.0 && e.latency_ms.total < 2900.0,
        "recorded when the client left, not when the upstream answered: {}",
        e.latency_ms.total
    );
    // The next ordinary request is compressed and recorded normally.
    let resp = s.h.post_chat(&body, &[]).await;
    assert_eq!(resp.status(), 200);
    let (before, after) = common::token_counts(&resp);
    assert!(after < before, "compressed: {before} -> {after}");
    resp.bytes().await.unwrap();
    let events = read_events(&s.events, 2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].error, None);
    assert_eq!(events[1].status, 200);
}

#[tokio::test]
async fn mirror_copies_beyond_the_bound_are_skipped() {
    let s = setup(|c| {
        c.ab.enabled = true;
        c.ab.mode = Mode::Mirror;
        c.ab.mirror_percent = 100.0;
        c.ab.salt = "a-secret-test-salt".into();
        c.ab.max_mirror_inflight = 1;
    })
    .await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let calls = (0..4).map(|i| {
        let (h, body) = (&s.h, &body);
        async move {
            let session = format!("bound-{i}");
            let resp = h
                .post_chat(
                    body,
                    &[
                        ("x-session-id", &session),
                        ("x-mock-first-byte-delay-ms", "700"),
                    ],
                )
                .await;
            assert_eq!(resp.status(), 200, "the served call is unaffected");
            let mirrored = resp
                .headers()
                .get(HEADER_MODE)
                .is_some_and(|m| m == "mirror");
            resp.bytes().await.unwrap();
            mirrored
        }
    });
    let mirrored = futures_util::future::join_all(calls).await;
    assert_eq!(mirrored.iter().filter(|m| **m).count(), 1, "{mirrored:?}");
    assert_eq!(s.h.proxy.state.mirrors_skipped(), 3);
    let events = read_events(&s.events, 5).await;
    assert_eq!(events.len(), 5, "4 served calls and 1 mirror copy");
    assert_eq!(events.iter().filter(|e| !e.served).count(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.h.mock.state.requests().len(), 5);
}

/// An upstream that answers at once, except a body of `slow_len` bytes (the raw arm's, as the
/// client sent it), which waits `delay` first.
async fn uneven_upstream(slow_len: usize, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<Incoming>| async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if body.len() == slow_len {
                            tokio::time::sleep(delay).await;
                        }
                        let answer = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
                        let resp = http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(answer.as_bytes())))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    addr
}

async fn mirror_at_shutdown(delay: Duration, grace_ms: u64) -> (Vec<Event>, Duration) {
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let upstream = uneven_upstream(body.len(), delay).await;
    let s = setup(move |c| {
        c.upstream.base_url = format!("http://{upstream}/v1");
        c.shutdown_grace_ms = grace_ms;
        c.ab.enabled = true;
        c.ab.mode = Mode::Mirror;
        c.ab.mirror_percent = 100.0;
        c.ab.salt = "a-secret-test-salt".into();
    })
    .await;
    let resp =
        s.h.post_chat(&body, &[("x-session-id", "shutdown-1")])
            .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[HEADER_ARM], "compressed");
    assert_eq!(resp.headers()[HEADER_MODE], "mirror");
    resp.bytes().await.unwrap();
    let common::Logged {
        h,
        events,
        dir: _dir,
    } = s;
    let t = Instant::now();
    h.proxy.shutdown().await;
    // No waiting: once shutdown returns, the mirror copy's event is on disk too.
    (events_now(&events), t.elapsed())
}

#[tokio::test]
async fn shutdown_waits_for_mirror_copies() {
    let (events, took) = mirror_at_shutdown(Duration::from_millis(800), 5_000).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let copy = events.iter().find(|e| !e.served).unwrap();
    assert_eq!(copy.arm, Some(Arm::Raw));
    assert_eq!((copy.status, copy.error.as_deref()), (200, None));
    assert!(copy.usage.is_some());
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn shutdown_cancels_mirror_copies_past_the_grace_period_and_records_them() {
    let (events, took) = mirror_at_shutdown(Duration::from_secs(20), 300).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let copy = events.iter().find(|e| !e.served).unwrap();
    assert_eq!(copy.error.as_deref(), Some("shutdown"));
    assert!(took < Duration::from_secs(3), "{took:?}");
}
