//! The shared compression cache: Redis behind each process's own cache, so that turn 2 of a
//! conversation compressed on replica A is a hit on replica B, byte for byte.
//!
//! - Keys are the content addresses of [`CacheKey`] (compressor id with its weights digest,
//!   budget, settings, text) under `key_prefix` and a format version, so replicas with another
//!   scorer or another format never read each other's entries.
//! - Entries are written once a compression is complete, with `SET EX`. Compression is
//!   deterministic, so two replicas racing on one key write the same bytes: last writer wins
//!   safely.
//! - Redis never holds a request: a lookup waits at most `timeout`, and a failed or slow one
//!   marks Redis down for a second, during which lookups and writes are skipped (counted) while
//!   the connection manager reconnects by itself. One log line on going down, one on coming back.
//! - The client runs on its own thread with a single-threaded runtime; the compression workers
//!   (blocking threads) talk to it over a bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::cache::{CacheKey, CompressionCache};
use super::compressor::CompressOutput;

/// Bumped when the stored value's format changes.
const FORMAT: u32 = 1;
/// How long Redis is left alone after a failure.
const BACKOFF: Duration = Duration::from_secs(1);
/// Requests waiting for the client thread; beyond it an operation is skipped.
const QUEUE: usize = 4096;

enum Op {
    Get {
        key: String,
        reply: std::sync::mpsc::SyncSender<Result<Option<Vec<u8>>, String>>,
    },
    Set {
        key: String,
        value: Vec<u8>,
    },
}

/// Whether Redis answers, shared by the client thread and the callers.
struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is left alone.
    down_until_ms: AtomicU64,
    down: AtomicBool,
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn resting(&self) -> bool {
        self.now_ms() < self.down_until_ms.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, error: &str) {
        let until = self.now_ms() + u64::try_from(BACKOFF.as_millis()).unwrap_or(1000);
        self.down_until_ms.store(until, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "shared cache (Redis) {what} failed: using the local cache \
                alone, retrying every second");
        }
    }

    fn ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("shared cache (Redis) answers again");
        }
    }
}

/// Redis as a [`CompressionCache`] (usually behind the in-process cache, see
/// [`super::cache::TieredCache`]).
pub struct RedisCache {
    tx: tokio::sync::mpsc::Sender<Op>,
    prefix: String,
    timeout: Duration,
    health: Arc<Health>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A cache on the Redis at `url`; it connects on first use and reconnects by itself. Errors
    /// only for a URL that is not Redis's or a thread that cannot start.
    pub fn connect(
        url: &str,
        key_prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let health = Arc::new(Health {
            epoch: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
        });
        let thread_health = health.clone();
        let ttl_s = ttl.as_secs().max(1);
        std::thread::Builder::new()
            .name("lingua-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "shared cache: cannot start its runtime");
                        return;
                    }
                };
                runtime.block_on(serve(client, rx, timeout, ttl_s, thread_health));
            })
            .map_err(|e| format!("cannot start the Redis client thread: {e}"))?;
        Ok(Self {
            tx,
            prefix: format!("{key_prefix}v{FORMAT}:"),
            timeout,
            health,
        })
    }

    fn key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, hex::encode(key.0))
    }
}

fn counted(result: &'static str) {
    metrics::counter!("lingua_cache_shared_total", "result" => result).increment(1);
}

impl CompressionCache for RedisCache {
    fn get(&self, key: &CacheKey) -> Option<Arc<CompressOutput>> {
        if self.health.resting() {
            counted("skipped");
            return None;
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        if self
            .tx
            .try_send(Op::Get {
                key: self.key(key),
                reply,
            })
            .is_err()
        {
            counted("skipped");
            return None;
        }
        match answer.recv_timeout(self.timeout) {
            Ok(Ok(Some(bytes))) => match serde_json::from_slice::<CompressOutput>(&bytes) {
                Ok(out) => {
                    self.health.ok();
                    counted("hit");
                    Some(Arc::new(out))
                }
                Err(_) => {
                    counted("unreadable");
                    None
                }
            },
            Ok(Ok(None)) => {
                self.health.ok();
                counted("miss");
                None
            }
            Ok(Err(e)) => {
                self.health.failed("lookup", &e);
                counted("error");
                None
            }
            Err(_) => {
                self.health.failed(
                    "lookup",
                    &format!("no answer within {} ms", self.timeout.as_millis()),
                );
                counted("timeout");
                None
            }
        }
    }

    fn insert(&self, key: CacheKey, value: Arc<CompressOutput>) {
        if self.health.resting() {
            counted("write_skipped");
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&*value) else {
            return;
        };
        let op = Op::Set {
            key: self.key(&key),
            value: bytes,
        };
        if self.tx.try_send(op).is_err() {
            counted("write_skipped");
        }
    }
}

/// The client thread: one multiplexed connection, each operation its own task.
async fn serve(
    client: redis::Client,
    mut rx: tokio::sync::mpsc::Receiver<Op>,
    timeout: Duration,
    ttl_s: u64,
    health: Arc<Health>,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(BACKOFF);
    let manager = match ConnectionManager::new_lazy_with_config(client, config) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "shared cache: cannot create the Redis client; local cache only");
            return;
        }
    };
    while let Some(op) = rx.recv().await {
        let mut conn = manager.clone();
        let health = health.clone();
        tokio::spawn(async move {
            match op {
                Op::Get { key, reply } => {
                    let r: redis::RedisResult<Option<Vec<u8>>> = conn.get(&key).await;
                    let _ = reply.send(r.map_err(|e| e.to_string()));
                }
                Op::Set { key, value } => {
                    let r: redis::RedisResult<()> = conn.set_ex(&key, value, ttl_s).await;
                    match r {
                        Ok(()) => counted("written"),
                        Err(e) => {
                            health.failed("write", &e.to_string());
                            counted("write_error");
                        }
                    }
                }
            }
        });
    }
}
