//! Shared test harness: a mock upstream and a proxy in front of it, both on loopback.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "shared by test binaries that each use part of it; tests fail loudly"
)]

pub mod faults;
pub mod load;
pub mod memload;
pub mod sdk;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use lingua_proxy::config::Config;
use lingua_proxy::headers::{HEADER_TOKENS_AFTER, HEADER_TOKENS_BEFORE};
use lingua_proxy::hook::{Passthrough, RequestHook};
use lingua_proxy::server::ServerHandle;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

/// The sum of the samples of `name` in a Prometheus exposition whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

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

    /// The sum of the samples of `name` in the proxy's `/metrics` whose labels include
    /// `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, name, labels)
    }

    pub fn mock_url(&self, path: &str) -> String {
        format!("http://{}{}", self.mock.addr, path)
    }

    /// The proxy's `/readyz` answer.
    pub async fn readyz(&self) -> serde_json::Value {
        self.get_json("/readyz").await
    }

    /// The proxy's `/stats` answer.
    pub async fn stats(&self) -> serde_json::Value {
        self.get_json("/stats").await
    }

    /// `POST /v1/chat/completions` with `body` and extra `headers`.
    pub async fn post_chat(&self, body: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// `GET path` on the proxy, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
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
    (get(HEADER_TOKENS_BEFORE), get(HEADER_TOKENS_AFTER))
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

pub async fn start_with(tweak: impl FnOnce(&mut Config), hook: Arc<dyn RequestHook>) -> Harness {
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

/// A harness whose proxy writes its event log to a temporary file (removed on drop).
pub struct Logged {
    pub h: Harness,
    pub events: PathBuf,
    /// Holds the log's folder for as long as the harness lives.
    pub dir: tempfile::TempDir,
}

/// [`start_with`], with `[telemetry] events_path` set before `tweak` runs.
pub async fn start_logged(tweak: impl FnOnce(&mut Config), hook: Arc<dyn RequestHook>) -> Logged {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let path = events.clone();
    let h = start_with(
        move |c| {
            c.telemetry.events_path = Some(path);
            tweak(c);
        },
        hook,
    )
    .await;
    Logged { h, events, dir }
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

/// A chat body whose system and tool messages are long enough for the policy to compress.
pub fn compressible_body(stream: bool) -> serde_json::Value {
    const SYSTEM: &str = "You are the operations assistant of Northwind Logistics. You help \
dispatchers plan deliveries, answer questions about shipments and explain delays to customers. \
Always check the shipment status before you answer, and never invent tracking numbers. When a \
delivery is late by more than two days, apologise and offer the customer a call back from the \
dispatch team. The warehouse in Rotterdam closes at 18:00 local time and the one in Hamburg at \
20:00. Trucks leave every morning at 06:30. Our service level promises delivery within 48 hours \
inside Germany and within 72 hours for the Netherlands, Belgium and Luxembourg. Refunds are \
handled by the billing department and you must not promise them yourself. Keep answers short, \
friendly and precise, and use metric units.";
    const TOOL: &str = "Shipment NW-2231-XK was picked up in Rotterdam on Monday morning and \
scanned at the Duisburg hub on Monday evening. On Tuesday it was loaded onto truck 14 for the \
Hamburg route, but the truck was held at the depot because of a brake inspection that took \
longer than planned. The parcel was transferred to truck 9 on Wednesday and reached the Hamburg \
warehouse on Wednesday night. Delivery to the customer is now scheduled for Thursday between \
10:00 and 14:00. The customer was notified by e-mail at 21:14 on Wednesday. No damage was \
reported during the transfer and the seal number 884213 matches the loading record.";
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function",
                "function": {"name": "shipment_status", "arguments": "{\"id\": \"NW-2231-XK\"}"}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": TOOL},
            {"role": "user", "content": "Why is my parcel NW-2231-XK late, and when will it arrive?"}
        ]
    })
}

/// A compression hook with the embedded heuristic scorer, instruction compression on and low
/// per-role minimums, so that [`compressible_body`] gets compressed.
pub fn heuristic_hook() -> lingua_proxy::hook::CompressionHook {
    use lingua_proxy::compress::{CompressionConfig, InstructionsMode, Policy, ScorerKind};
    use lingua_proxy::engine::build_compressor;
    let mut cfg = CompressionConfig {
        scorer: ScorerKind::Heuristic,
        instructions: InstructionsMode::Compress,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    let c = build_compressor(&cfg).unwrap();
    lingua_proxy::hook::CompressionHook::new(Arc::new(Policy::new(cfg, c).unwrap()))
}

/// Reads the event log until it has at least `n` lines (or 10 s pass).
pub async fn read_events(path: &std::path::Path, n: usize) -> Vec<lingua_proxy::telemetry::Event> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Only whole lines: the writer may be between the bytes of the last one.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        let events: Vec<lingua_proxy::telemetry::Event> = whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= n || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The heuristic scorer with a step of the test's own run before every scoring call (stall,
/// panic, queue on a scheduler): the scorer double of the fault and scheduling tests.
pub struct HeuristicWith<F> {
    pub id: &'static str,
    pub inner: lingua_proxy::scorer::heuristic::HeuristicScorer,
    pub before: F,
}

impl<F> HeuristicWith<F> {
    pub fn new(id: &'static str, before: F) -> Self {
        Self {
            id,
            inner: lingua_proxy::scorer::heuristic::HeuristicScorer::new(),
            before,
        }
    }
}

impl<F> lingua_proxy::scorer::Scorer for HeuristicWith<F>
where
    F: Fn(
            &[String],
            &lingua_proxy::model::WorkCtx,
        ) -> Result<(), lingua_proxy::scorer::ScorerError>
        + Send
        + Sync,
{
    fn id(&self) -> &str {
        self.id
    }
    fn word_style(&self) -> lingua_proxy::scorer::WordStyle {
        self.inner.word_style()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<String>, lingua_proxy::scorer::ScorerError> {
        self.inner.tokenize(text)
    }
    fn tokens_to_string(&self, tokens: &[String]) -> String {
        self.inner.tokens_to_string(tokens)
    }
    fn is_special(&self, token: &str) -> bool {
        self.inner.is_special(token)
    }
    fn score_chunks(
        &self,
        chunks: &[String],
        ctx: &lingua_proxy::model::WorkCtx,
    ) -> Result<Vec<lingua_proxy::scorer::ScoredChunk>, lingua_proxy::scorer::ScorerError> {
        (self.before)(chunks, ctx)?;
        self.inner.score_chunks(chunks, ctx)
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
