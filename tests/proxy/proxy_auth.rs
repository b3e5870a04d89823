//! Proxy keys and upstream credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "sets environment variables before starting threads"
)]

use crate::common;

use std::sync::Arc;

use common::{chat_body, start_with};
use lingua_proxy::config::RouteConfig;
use lingua_proxy::hook::Passthrough;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

#[tokio::test]
async fn proxy_keys_gate_requests_and_upstream_gets_its_own_key() {
    // SAFETY: variable names unique to this test binary; set before any reader starts.
    unsafe {
        std::env::set_var("LP_TEST_PROXY_KEYS", "pk-one, pk-two");
        std::env::set_var("LP_TEST_UPSTREAM_KEY", "sk-upstream");
        std::env::set_var("LP_TEST_ROUTE_KEY", "sk-route");
    }
    let other = MockUpstream::start(MockConfig::default()).await.unwrap();
    let other_url = other.base_url();
    let h = start_with(
        |c| {
            c.auth.keys_env = Some("LP_TEST_PROXY_KEYS".into());
            c.upstream.api_key_env = Some("LP_TEST_UPSTREAM_KEY".into());
            c.routes = vec![RouteConfig {
                model_prefix: "routed-".into(),
                base_url: other_url,
                api_key_env: Some("LP_TEST_ROUTE_KEY".into()),
                tokenizer: None,
                ..RouteConfig::default()
            }];
        },
        Arc::new(Passthrough),
    )
    .await;
    let body = serde_json::to_vec(&chat_body(false)).unwrap();

    for auth in [None, Some("Bearer wrong"), Some("Bearer pk-one-and-more")] {
        let mut req = h
            .client
            .post(h.url("/v1/chat/completions"))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(h.mock.state.request_count(), 0);

    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Bearer pk-two")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.mock.state.last_request().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream");

    let resp = h
        .client
        .get(h.url("/v1/models"))
        .header("x-api-key", "pk-one")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.mock.state.last_request().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream");
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "proxy key leaked upstream"
    );

    let mut routed = chat_body(false);
    routed["model"] = "routed-model".into();
    let resp = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Bearer pk-one")
        .body(serde_json::to_vec(&routed).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        other.state.last_request().unwrap().headers["authorization"],
        "Bearer sk-route"
    );
}

#[tokio::test]
async fn without_proxy_auth_client_header_passes_or_is_replaced() {
    // No api_key_env: the client's Authorization goes upstream untouched.
    let h = start_with(|_| {}, Arc::new(Passthrough)).await;
    h.client
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client-own")
        .body(serde_json::to_vec(&chat_body(false)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.mock.state.last_request().unwrap().headers["authorization"],
        "Bearer sk-client-own"
    );

    // SAFETY: unique variable name.
    unsafe { std::env::set_var("LP_TEST_REPLACE_KEY", "sk-configured") };
    let h = start_with(
        |c| c.upstream.api_key_env = Some("LP_TEST_REPLACE_KEY".into()),
        Arc::new(Passthrough),
    )
    .await;
    h.client
        .post(h.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-client-own")
        .body(serde_json::to_vec(&chat_body(false)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.mock.state.last_request().unwrap().headers["authorization"],
        "Bearer sk-configured"
    );
}

#[tokio::test]
async fn missing_key_env_fails_at_startup() {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let mut config = common::base_config(&mock);
    config.upstream.api_key_env = Some("LP_TEST_DEFINITELY_UNSET".into());
    let err = lingua_proxy::server::start(config, Arc::new(Passthrough))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("LP_TEST_DEFINITELY_UNSET"), "{err}");
    assert!(err.contains("upstream.api_key_env"), "{err}");
}

/// With `[auth]`, the `[upstream]` key goes only to its own host: a route to another host with
/// no key of its own gets none, unless it opts in with `use_default_key`; a route on the same
/// origin gets it.
#[tokio::test]
async fn the_default_key_goes_only_to_its_own_host() {
    // SAFETY: variable names unique to this test; set before any reader starts.
    unsafe {
        std::env::set_var("LP_TEST_LEAK_PROXY_KEYS", "pk-leak");
        std::env::set_var("LP_TEST_LEAK_UPSTREAM_KEY", "sk-openai");
    }
    let llama = MockUpstream::start(MockConfig::default()).await.unwrap();
    let opted = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (llama_url, opted_url) = (llama.base_url(), opted.base_url());
    let h = start_with(
        |c| {
            c.auth.keys_env = Some("LP_TEST_LEAK_PROXY_KEYS".into());
            c.upstream.api_key_env = Some("LP_TEST_LEAK_UPSTREAM_KEY".into());
            let same_origin = format!("{}/other-path", c.upstream.base_url);
            c.routes = vec![
                RouteConfig {
                    model_prefix: "llama".into(),
                    base_url: llama_url,
                    ..RouteConfig::default()
                },
                RouteConfig {
                    model_prefix: "opted".into(),
                    base_url: opted_url,
                    use_default_key: true,
                    ..RouteConfig::default()
                },
                RouteConfig {
                    model_prefix: "same".into(),
                    base_url: same_origin,
                    ..RouteConfig::default()
                },
            ];
        },
        Arc::new(Passthrough),
    )
    .await;
    let send = |model: &'static str| {
        let mut body = chat_body(false);
        body["model"] = model.into();
        h.client
            .post(h.url("/v1/chat/completions"))
            .header("authorization", "Bearer pk-leak")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
    };
    send("llama-3").await.unwrap().bytes().await.unwrap();
    let seen = llama.state.last_request().unwrap();
    assert!(
        !seen.headers.contains_key("authorization"),
        "{:?}",
        seen.headers
    );
    send("opted-1").await.unwrap().bytes().await.unwrap();
    assert_eq!(
        opted.state.last_request().unwrap().headers["authorization"],
        "Bearer sk-openai"
    );
    send("same-1").await.unwrap().bytes().await.unwrap();
    let seen = h.mock.state.last_request().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer sk-openai");
    assert!(seen.path_and_query.contains("/other-path"));
}
