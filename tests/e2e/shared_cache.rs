//! The shared compression cache with a real `redis-server` (Debian's, started here on a
//! loopback port) and proxy processes side by side, as replicas behind a load balancer would
//! run: turn 2 through replica B hits what replica A compressed for turn 1, byte for byte;
//! racing replicas write identical bytes; A/B arms agree across replicas; and Redis killed
//! mid-run loses no request, then comes back without a restart of the proxies.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::load::{ProxyProcess, start_proxy_with};
use lingua_proxy::headers::{HEADER_ARM, HEADER_CACHE};
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};
use serde_json::{Value, json};

/// A `redis-server` on a loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn start() -> Self {
        Self::start_on(common::free_port())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lingua-proxy"))
}

/// A replica: the heuristic scorer compressing the system and tool prose of
/// [`common::compressible_body`], the cache as `cache` says (a TOML `[cache]` body).
async fn replica(dir: &Path, name: &str, upstream: &str, cache: &str, extra: &str) -> ProxyProcess {
    let toml = format!(
        r#"[upstream]
base_url = "{upstream}"
[log]
level = "warn"
[compression]
scorer = "heuristic"
instructions = "compress"
{extra}
[compression.roles.system]
min_tokens = 50
[compression.roles.tool]
min_tokens = 50
[cache]
{cache}
"#
    );
    start_proxy_with(&binary(), &toml, &dir.join(format!("{name}.toml"))).await
}

fn shared(redis: &Redis, prefix: &str) -> String {
    format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 200",
        redis.url()
    )
}

async fn chat(p: &ProxyProcess, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", p.addr))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.timeout(Duration::from_secs(30)).send().await.unwrap()
}

fn cache_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(HEADER_CACHE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Turn 1's messages, an answer, and a new question: what a client sends next.
fn turn_two(turn_one: &Value) -> Value {
    let mut b = turn_one.clone();
    let msgs = b["messages"].as_array_mut().unwrap();
    msgs.push(json!({"role": "assistant", "content": "It was held at the depot."}));
    msgs.push(json!({"role": "user", "content": "Can the driver use the loading dock?"}));
    b
}

/// The system and tool texts the mock received in request `i` of `/chat/completions`.
fn forwarded_prefix(mock: &MockUpstream, i: usize) -> (String, String) {
    let r = &mock.state.requests_to("/chat/completions")[i];
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (
        v["messages"][0]["content"].as_str().unwrap().to_owned(),
        v["messages"][2]["content"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_two_on_another_replica_hits_what_the_first_compressed() {
    let redis = Redis::start();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = mock.base_url();
    let a = replica(dir.path(), "a", &up, &shared(&redis, "t2:"), "").await;
    let b = replica(dir.path(), "b", &up, &shared(&redis, "t2:"), "").await;
    // A replica on its own cache only: the control.
    let c = replica(dir.path(), "c", &up, "backend = \"memory\"", "").await;

    let one = common::compressible_body(false);
    let r1 = chat(&a, &one, &[]).await;
    assert_eq!(r1.status(), 200);
    assert_eq!(cache_of(&r1), "miss");
    let _ = r1.bytes().await.unwrap();
    let two = turn_two(&one);
    // The write to Redis happens right after turn 1 is compressed; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r2 = chat(&b, &two, &[]).await;
    assert_eq!(r2.status(), 200);
    assert_eq!(
        cache_of(&r2),
        "hit",
        "turn 2 on replica B reads replica A's compression"
    );
    let _ = r2.bytes().await.unwrap();
    let r3 = chat(&c, &two, &[]).await;
    assert_eq!(
        cache_of(&r3),
        "miss",
        "a replica without the shared cache compresses again"
    );
    let _ = r3.bytes().await.unwrap();

    let (sys1, tool1) = forwarded_prefix(&mock, 0);
    let (sys2, tool2) = forwarded_prefix(&mock, 1);
    assert_ne!(
        sys1,
        one["messages"][0]["content"].as_str().unwrap(),
        "turn 1 was compressed"
    );
    assert_eq!(
        sys1, sys2,
        "the compressed system prompt is byte-identical on both replicas"
    );
    assert_eq!(tool1, tool2, "so is the compressed tool output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_write_identical_bytes() {
    let redis = Redis::start();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = mock.base_url();
    // No local cache: every lookup goes to Redis.
    let a = replica(
        dir.path(),
        "a",
        &up,
        &shared(&redis, "race:"),
        "cache_bytes = 0",
    )
    .await;
    let b = replica(
        dir.path(),
        "b",
        &up,
        &shared(&redis, "race:"),
        "cache_bytes = 0",
    )
    .await;
    let body = common::compressible_body(false);
    let (ra, rb) = tokio::join!(chat(&a, &body, &[]), chat(&b, &body, &[]));
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    let _ = (ra.bytes().await.unwrap(), rb.bytes().await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Whichever write landed last, it is what both computed.
    let again = chat(&a, &body, &[]).await;
    assert_eq!(cache_of(&again), "hit");
    let _ = again.bytes().await.unwrap();
    let bodies: Vec<Vec<u8>> = mock
        .state
        .requests_to("/chat/completions")
        .iter()
        .map(|r| r.body.to_vec())
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(
        bodies[0], bodies[1],
        "both replicas compressed to the same bytes"
    );
    assert_eq!(bodies[0], bodies[2], "the stored entry is those bytes");

    // The entries in Redis are under the prefix and the format version.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("race:*").query(&mut conn).unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("race:v1:")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arms_agree_across_replicas() {
    let redis = Redis::start();
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = mock.base_url();
    let ab = "[ab]\nenabled = true\nraw_percent = 50.0\nsalt = \"replicas-share-this-salt\"\n";
    let cache = format!("{}\n{ab}", shared(&redis, "ab:"));
    let a = replica(dir.path(), "a", &up, &cache, "").await;
    let b = replica(dir.path(), "b", &up, &cache, "").await;
    let body = common::chat_body(false);
    let mut arms = std::collections::BTreeSet::new();
    for i in 0..12 {
        let session = format!("session-{i}");
        let h = [("x-session-id", session.as_str())];
        let ra = chat(&a, &body, &h).await;
        let rb = chat(&b, &body, &h).await;
        let arm = |r: &reqwest::Response| r.headers()[HEADER_ARM].to_str().unwrap().to_owned();
        assert_eq!(
            arm(&ra),
            arm(&rb),
            "session {i} gets one arm on every replica"
        );
        arms.insert(arm(&ra));
    }
    assert_eq!(arms.len(), 2, "both arms are in use: {arms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_loses_no_request_and_comes_back() {
    let mut redis = Redis::start();
    let port = redis.port;
    let mock = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let up = mock.base_url();
    let a = replica(dir.path(), "a", &up, &shared(&redis, "kill:"), "").await;
    let b = replica(dir.path(), "b", &up, &shared(&redis, "kill:"), "").await;
    let distinct = |i: usize| {
        let mut body = common::compressible_body(false);
        let system = format!(
            "{} Desk {i}.",
            body["messages"][0]["content"].as_str().unwrap()
        );
        body["messages"][0]["content"] = json!(system);
        body
    };
    for i in 0..20 {
        if i == 5 {
            redis.kill();
        }
        let started = Instant::now();
        let r = chat(if i % 2 == 0 { &a } else { &b }, &distinct(i), &[]).await;
        assert_eq!(r.status(), 200, "request {i}");
        let _ = r.bytes().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} took {:?} with Redis down",
            started.elapsed()
        );
    }
    // Redis is back (empty) on the same port: after the one-second rest, the replicas use it
    // again without a restart.
    let _redis = Redis::start_on(port);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for k in 100.. {
        // A new text each round: B must not answer from its own cache.
        let body = distinct(k);
        let fresh = chat(&a, &body, &[]).await;
        let _ = fresh.bytes().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shared_hit = chat(&b, &body, &[]).await;
        let cache = cache_of(&shared_hit);
        let _ = shared_hit.bytes().await.unwrap();
        if cache == "hit" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never used Redis again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
