//! A/B arms, shadow and mirror modes, the stream usage chunk, the event log, `/metrics` and
//! `/stats`, through the real proxy and the mock upstream on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, compressible_body, heuristic_hook, read_events, start_with};
use lingua_proxy::ab::{Arm, Mode};
use lingua_proxy::config::Config;
use lingua_proxy::headers::{HEADER_ARM, HEADER_MODE, HEADER_REQUEST_ID};
use lingua_proxy::telemetry::Event;
use serde_json::Value;

type Setup = common::Logged;

async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    common::start_logged(
        move |c| {
            c.ab.enabled = true;
            tweak(c);
        },
        Arc::new(heuristic_hook()),
    )
    .await
}

fn arm_of(resp: &reqwest::Response) -> Arm {
    Arm::parse(resp.headers()[HEADER_ARM].to_str().unwrap()).unwrap()
}

/// Waits until the mock has recorded `n` requests.
async fn mock_requests(h: &Harness, n: usize) -> Vec<lingua_proxy_testkit::mock::RecordedRequest> {
    for _ in 0..500 {
        let r = h.mock.state.requests();
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.mock.state.requests()
}

/// The `data:` payloads of an SSE stream, parsed (`[DONE]` kept as a string).
fn sse_events(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())))
        .collect()
}

#[tokio::test]
async fn arms_split_within_tolerance_and_stick_per_session() {
    let s = setup(|c| c.ab.raw_percent = 50.0).await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let mut arms = BTreeMap::new();
    let n = 120;
    for i in 0..n {
        let resp =
            s.h.post_chat(&body, &[("x-session-id", &format!("session-{i}"))])
                .await;
        assert_eq!(resp.status(), 200);
        arms.insert(i, arm_of(&resp));
        resp.bytes().await.unwrap();
    }
    let raw = arms.values().filter(|a| **a == Arm::Raw).count();
    // Binomial(120, 0.5): sd ≈ 5.5; 35..=85 is more than 4.5 sd either side.
    assert!((35..=85).contains(&raw), "{raw} of {n} raw");
    let seen = s.h.mock.state.requests();
    for (i, arm) in &arms {
        let upstream = &seen[*i].body;
        match arm {
            Arm::Raw => assert_eq!(
                upstream.as_ref(),
                body.as_slice(),
                "raw arm must be untouched"
            ),
            Arm::Compressed => {
                assert!(upstream.len() < body.len(), "compressed arm not compressed")
            }
        }
    }
    // The same session lands in the same arm every time.
    for i in 0..20 {
        let resp =
            s.h.post_chat(&body, &[("x-session-id", &format!("session-{i}"))])
                .await;
        assert_eq!(arm_of(&resp), arms[&i], "session-{i} changed arm");
    }
    // Without the session header, the OpenAI `user` field is the key.
    let mut with_user = compressible_body(false);
    with_user["user"] = "user-42".into();
    let with_user = serde_json::to_vec(&with_user).unwrap();
    let first = arm_of(&s.h.post_chat(&with_user, &[]).await);
    for _ in 0..5 {
        assert_eq!(arm_of(&s.h.post_chat(&with_user, &[]).await), first);
    }
    let events = read_events(&s.events, n + 26).await;
    assert_eq!(events.len(), n + 26);
    let raw_events = events
        .iter()
        .take(n)
        .filter(|e| e.arm == Some(Arm::Raw))
        .count();
    assert_eq!(
        raw_events, raw,
        "the event log agrees with the response headers"
    );
}

#[tokio::test]
async fn forced_arm_overrides_the_split_and_never_reaches_upstream() {
    let s = setup(|c| c.ab.raw_percent = 0.0).await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let resp = s.h.post_chat(&body, &[(HEADER_ARM, "raw")]).await;
    assert_eq!(arm_of(&resp), Arm::Raw);
    let resp = s.h.post_chat(&body, &[]).await;
    assert_eq!(arm_of(&resp), Arm::Compressed);
    let seen = s.h.mock.state.requests();
    assert_eq!(seen[0].body.as_ref(), body.as_slice());
    assert!(seen[1].body.len() < body.len());
    assert!(seen.iter().all(|r| !r.headers.contains_key(HEADER_ARM)));

    let s = setup(|c| {
        c.ab.raw_percent = 100.0;
        c.ab.allow_arm_override = false;
    })
    .await;
    let resp = s.h.post_chat(&body, &[(HEADER_ARM, "compressed")]).await;
    assert_eq!(arm_of(&resp), Arm::Raw, "overrides are off");
}

#[tokio::test]
async fn shadow_forwards_raw_and_records_the_saving() {
    let s = setup(|c| c.ab.mode = Mode::Shadow).await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    let resp = s.h.post_chat(&body, &[("x-session-id", "shadow-1")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(arm_of(&resp), Arm::Raw);
    assert_eq!(resp.headers()[HEADER_MODE], "shadow");
    let answer: Value = resp.json().await.unwrap();
    let seen = s.h.mock.state.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.as_ref(),
        body.as_slice(),
        "shadow must forward the raw bytes"
    );

    let events = read_events(&s.events, 1).await;
    let e = &events[0];
    assert_eq!(
        (e.arm, e.mode, e.served),
        (Some(Arm::Raw), Mode::Shadow, true)
    );
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    let t = e.tokens.as_ref().unwrap();
    assert!(t.after < t.before, "{t:?}");
    assert!(t.roles["system"].after < t.roles["system"].before);
    assert!(t.roles["tool"].after < t.roles["tool"].before);
    // What was billed is the raw prompt.
    let usage = e.usage.unwrap();
    assert_eq!(
        usage.prompt_tokens,
        answer["usage"]["prompt_tokens"].as_u64().unwrap()
    );

    let stats = s.h.stats().await;
    assert_eq!(stats["ab"]["mode"], "shadow");
    assert_eq!(
        stats["totals"]["tokens_saved"].as_u64().unwrap(),
        t.before - t.after
    );
    assert!(stats["totals"]["usd_saved_estimate"].as_f64().unwrap() > 0.0);
}

async fn mirror_case(stream: bool) {
    let s = setup(|c| {
        c.ab.mode = Mode::Mirror;
        c.ab.mirror_percent = 100.0;
        c.ab.salt = "a-secret-test-salt".into();
        c.telemetry.log_content = true;
    })
    .await;
    let body = serde_json::to_vec(&compressible_body(stream)).unwrap();
    let resp = s.h.post_chat(&body, &[("x-session-id", "mirror-1")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(arm_of(&resp), Arm::Compressed);
    assert_eq!(resp.headers()[HEADER_MODE], "mirror");
    let got = resp.bytes().await.unwrap();

    let seen = mock_requests(&s.h, 2).await;
    assert_eq!(seen.len(), 2, "mirror sends both arms upstream");
    let parsed: Vec<Value> = seen
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let raw_idx = parsed
        .iter()
        .position(|p| p["messages"] == compressible_body(stream)["messages"])
        .expect("one upstream request carries the raw messages");
    let comp_idx = 1 - raw_idx;
    assert_ne!(parsed[comp_idx]["messages"], parsed[raw_idx]["messages"]);

    // The client got exactly one answer: the compressed arm's.
    let responses = s.h.mock.state.responses();
    let comp_response = responses
        .iter()
        .find(|r| {
            let text = String::from_utf8_lossy(r);
            let id = |v: &Value| v["id"].as_str().map(str::to_owned);
            let first = if stream {
                sse_events(r.as_ref()).first().and_then(id)
            } else {
                serde_json::from_slice::<Value>(r)
                    .ok()
                    .as_ref()
                    .and_then(id)
            };
            let mine = if stream {
                sse_events(&got).first().and_then(id)
            } else {
                serde_json::from_slice::<Value>(&got)
                    .ok()
                    .as_ref()
                    .and_then(id)
            };
            !text.is_empty() && first == mine
        })
        .expect("the client's answer came from one of the two calls");
    let _ = comp_response;
    if stream {
        let client_events = sse_events(&got);
        assert_eq!(client_events.last().unwrap(), "[DONE]");
        assert!(
            client_events.iter().all(|e| e.get("usage").is_none()),
            "usage chunk leaked"
        );
    } else {
        let v: Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["object"], "chat.completion");
    }

    let events = read_events(&s.events, 2).await;
    assert_eq!(events.len(), 2);
    let pair = events[0].pair_id.clone().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.pair_id.as_deref() == Some(pair.as_str()))
    );
    assert!(events.iter().all(|e| e.mode == Mode::Mirror));
    let served: Vec<&Event> = events.iter().filter(|e| e.served).collect();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].arm, Some(Arm::Compressed));
    let copy = events.iter().find(|e| !e.served).unwrap();
    assert_eq!(copy.arm, Some(Arm::Raw));
    let (u_served, u_copy) = (served[0].usage.unwrap(), copy.usage.unwrap());
    assert!(
        u_served.prompt_tokens < u_copy.prompt_tokens,
        "{u_served:?} vs {u_copy:?}"
    );
    let answers: Vec<&str> = events
        .iter()
        .map(|e| e.answer.as_deref().unwrap())
        .collect();
    assert!(
        answers.iter().all(|a| a.starts_with("Mock reply")),
        "{answers:?}"
    );
    let agreement = events
        .iter()
        .find_map(|e| e.agreement)
        .expect("the later call scores agreement");
    let expected = lingua_proxy::telemetry::agreement::agreement(
        copy.answer.as_deref().unwrap(),
        served[0].answer.as_deref().unwrap(),
    );
    assert_eq!(agreement, expected);
    assert!(agreement.f1 > 0.3 && agreement.f1 < 1.0, "{agreement:?}");
    assert!(
        served[0].prompt.is_some() && copy.prompt.is_some(),
        "log_content logs prompts"
    );
}

#[tokio::test]
async fn mirror_sends_both_arms_and_returns_one_answer() {
    mirror_case(false).await;
}

#[tokio::test]
async fn mirror_streams_the_clients_arm_and_records_both() {
    mirror_case(true).await;
}

#[tokio::test]
async fn stream_usage_is_requested_upstream_and_stripped_for_the_client() {
    let s = setup(|_| {}).await;
    let body = serde_json::to_vec(&compressible_body(true)).unwrap();
    let got = s.h.post_chat(&body, &[]).await.bytes().await.unwrap();
    let seen = s.h.mock.state.requests();
    let upstream: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
    let upstream_events = sse_events(&s.h.mock.state.responses()[0]);
    let client_events = sse_events(&got);
    // The upstream sent one usage-only chunk more; every other event is the same minus `usage`.
    assert_eq!(upstream_events.len(), client_events.len() + 1);
    let usage_chunk = upstream_events
        .iter()
        .find(|e| e["choices"] == Value::Array(vec![]))
        .unwrap();
    let mut expected: Vec<Value> = upstream_events
        .iter()
        .filter(|e| *e != usage_chunk)
        .cloned()
        .collect();
    for e in &mut expected {
        if let Some(o) = e.as_object_mut() {
            assert!(o.remove("usage").is_some_and(|u| u.is_null()));
        }
    }
    assert_eq!(client_events, expected);
    let events = read_events(&s.events, 1).await;
    let usage = events[0].usage.unwrap();
    assert_eq!(
        usage.prompt_tokens,
        usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(usage.completion_tokens > 0);

    // A client that asked for usage gets the upstream's stream byte for byte.
    let mut asked = compressible_body(true);
    asked["stream_options"] = serde_json::json!({"include_usage": true});
    let got =
        s.h.post_chat(&serde_json::to_vec(&asked).unwrap(), &[])
            .await
            .bytes()
            .await
            .unwrap();
    assert_eq!(got, s.h.mock.state.responses()[1]);
    let events = read_events(&s.events, 2).await;
    assert!(events[1].usage.is_some());

    // Off: the request goes upstream as the policy left it, and streams carry no usage.
    let s = setup(|c| c.telemetry.stream_usage = false).await;
    let got = s.h.post_chat(&body, &[]).await.bytes().await.unwrap();
    let upstream: Value = serde_json::from_slice(&s.h.mock.state.requests()[0].body).unwrap();
    assert!(upstream.get("stream_options").is_none());
    assert_eq!(got, s.h.mock.state.responses()[0]);
    assert!(read_events(&s.events, 1).await[0].usage.is_none());
}

#[tokio::test]
async fn event_log_records_every_field() {
    let s = setup(|_| {}).await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    for _ in 0..2 {
        let resp =
            s.h.post_chat(&body, &[("x-request-id", "req-abc-123")])
                .await;
        assert_eq!(resp.headers()[HEADER_REQUEST_ID], "req-abc-123");
        resp.bytes().await.unwrap();
    }
    // A prompt past the provider cache's minimum (1024 tokens), sent twice.
    let mut long = compressible_body(false);
    long["messages"][3]["content"] = "Please summarise the shipment history. ".repeat(200).into();
    let long = serde_json::to_vec(&long).unwrap();
    for _ in 0..2 {
        s.h.post_chat(&long, &[]).await.bytes().await.unwrap();
    }
    let mut failing = compressible_body(false);
    failing["model"] = "mock-error-500".into();
    let resp =
        s.h.post_chat(&serde_json::to_vec(&failing).unwrap(), &[])
            .await;
    assert_eq!(resp.status(), 500);
    resp.bytes().await.unwrap();

    let events = read_events(&s.events, 5).await;
    assert_eq!(events.len(), 5);
    let e = &events[0];
    assert_eq!(e.v, 1);
    assert_eq!(e.request_id, "req-abc-123");
    assert!(e.time.ends_with('Z') && e.time.len() == 24, "{}", e.time);
    let now = lingua_proxy::telemetry::now_ms();
    assert!(e.ts_ms <= now && now - e.ts_ms < 60_000);
    assert_eq!(
        (e.arm, e.mode, e.served),
        (Some(Arm::Compressed), Mode::Normal, true)
    );
    assert_eq!(e.route, "default");
    assert_eq!(e.model.as_deref(), Some("gpt-4o-mini"));
    assert!(!e.stream);
    assert_eq!(e.status, 200);
    assert_eq!(e.error, None);
    assert_eq!(e.compression.as_deref(), Some("compressed"));
    assert_eq!(e.cache.as_deref(), Some("miss"));
    assert_eq!(
        events[1].cache.as_deref(),
        Some("hit"),
        "the second identical request hits the cache"
    );
    let t = e.tokens.as_ref().unwrap();
    assert_eq!(t.tokenizer, "o200k_base");
    assert_eq!(t.before, t.roles.values().map(|r| r.before).sum::<u64>());
    assert_eq!(t.after, t.roles.values().map(|r| r.after).sum::<u64>());
    let u = e.usage.unwrap();
    assert!(u.prompt_tokens > 0 && u.completion_tokens > 0);
    assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    // The mock's simulated provider cache: the second identical long prompt is partly cached.
    assert_eq!(u.cached_tokens, Some(0));
    assert_eq!(events[2].usage.unwrap().cached_tokens, Some(0));
    let cached = events[3].usage.unwrap().cached_tokens.unwrap();
    assert!(cached >= 1024 && cached <= events[3].usage.unwrap().prompt_tokens);
    let l = e.latency_ms;
    assert!(l.total >= l.upstream && l.upstream >= l.upstream_headers && l.upstream > 0.0);
    assert!((l.overhead - (l.total - l.upstream)).abs() < 1e-6);
    assert!(l.compression > 0.0 && l.compression <= l.overhead);
    assert!(
        e.answer.is_none() && e.prompt.is_none(),
        "content is off by default"
    );
    let failed = &events[4];
    assert_eq!(failed.status, 500);
    assert!(failed.usage.is_none());
    assert!(failed.request_id.starts_with("lp-"));

    // An unreachable upstream is recorded with the proxy's status.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.jsonl");
    let p2 = path.clone();
    let h = start_with(
        move |c| {
            c.upstream.base_url = format!("http://127.0.0.1:{port}/v1");
            c.telemetry.events_path = Some(p2);
        },
        Arc::new(heuristic_hook()),
    )
    .await;
    let resp = h.post_chat(&body, &[]).await;
    assert_eq!(resp.status(), 502);
    let e = &read_events(&path, 1).await[0];
    assert_eq!(
        (e.status, e.error.as_deref()),
        (502, Some("upstream_unreachable"))
    );
}

#[tokio::test]
async fn shutdown_puts_every_event_on_disk() {
    let s = setup(|c| c.ab.raw_percent = 50.0).await;
    let body = serde_json::to_vec(&compressible_body(true)).unwrap();
    for i in 0..20 {
        s.h.post_chat(&body, &[("x-session-id", &format!("s{i}"))])
            .await
            .bytes()
            .await
            .unwrap();
    }
    let common::Logged {
        h,
        events,
        dir: _dir,
    } = s;
    h.proxy.shutdown().await;
    // No waiting: once shutdown returns, the log is complete.
    let lines = std::fs::read_to_string(&events).unwrap();
    assert_eq!(lines.lines().count(), 20);
}

/// A client that repeats its `x-request-id` cannot merge mirror pairs: the pair id is the
/// proxy's own, the client's id stays the event's `request_id`.
#[tokio::test]
async fn pair_ids_are_the_proxys_own() {
    let s = setup(|c| {
        c.ab.mode = Mode::Mirror;
        c.ab.mirror_percent = 100.0;
        c.ab.salt = "a-secret-test-salt".into();
    })
    .await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    for _ in 0..3 {
        let resp =
            s.h.post_chat(&body, &[("x-request-id", "same-id"), ("x-session-id", "m")])
                .await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let events = read_events(&s.events, 6).await;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e.request_id == "same-id"));
    let mut pairs: Vec<String> = events.iter().map(|e| e.pair_id.clone().unwrap()).collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert!(pairs.iter().all(|p| p != "same-id"));
}
