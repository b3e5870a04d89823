//! Shared test harness: a mock upstream and a proxy in front of it, both on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use lingua_proxy::config::Config;
use lingua_proxy::hook::{ChatHook, Passthrough};
use lingua_proxy::mock::{MockConfig, MockUpstream};
use lingua_proxy::server::ServerHandle;

pub struct Harness {
    pub mock: MockUpstream,
    pub proxy: ServerHandle,
    pub client: reqwest::Client,
}

impl Harness {
    /// `http://127.0.0.1:PORT/v1` of the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.addr, path)
    }

    pub fn mock_url(&self, path: &str) -> String {
        format!("http://{}{}", self.mock.addr, path)
    }

    /// The proxy's `/readyz` answer.
    pub async fn readyz(&self) -> serde_json::Value {
        self.client
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// `(x-lingua-tokens-before, x-lingua-tokens-after)` of a response.
pub fn token_counts(resp: &reqwest::Response) -> (usize, usize) {
    let get = |name: &str| -> usize { resp.headers()[name].to_str().unwrap().parse().unwrap() };
    (get("x-lingua-tokens-before"), get("x-lingua-tokens-after"))
}

pub fn base_config(mock: &MockUpstream) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        shutdown_grace_ms: 5_000,
        ..Config::default()
    };
    config.upstream.base_url = mock.base_url();
    config
}

pub async fn start() -> Harness {
    start_with(|_| {}, Arc::new(Passthrough)).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config), hook: Arc<dyn ChatHook>) -> Harness {
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let mut config = base_config(&mock);
    tweak(&mut config);
    config.validate().unwrap();
    let proxy = lingua_proxy::server::start(config, hook).await.unwrap();
    Harness {
        mock,
        proxy,
        client: reqwest::Client::new(),
    }
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the proxy test."}
        ],
        "stream": stream
    })
}
