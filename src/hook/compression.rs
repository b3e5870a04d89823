//! The [`RequestHook`] that compresses intercepted requests (every API surface): admission,
//! workers, the deadline, and the outcome (the rewritten body, `x-lingua-*` headers and the
//! report for the event log).
//!
//! What bounds what:
//! - `[compression] workers` requests run the policy at once (span detection, tokenisation and
//!   selection on the blocking thread pool) and at most `queue` more may wait for a worker;
//!   beyond that a request skips compression at once (`overloaded`);
//! - the neural scorer's inference is scheduled per model ([`crate::model::Scheduler`]): memory
//!   is bounded by `[model] max_batch_tokens`, waiting work by `max_queued_tokens` (beyond it the
//!   request is refused at once and counted as `overloaded`, never as an error);
//! - `max_message_tokens` / `max_request_tokens` keep giant texts away from the scorer
//!   (`too_large`).
//!
//! Every request gets a [`WorkCtx`] with its deadline; it is cancelled when the deadline passes
//! or the hook's future is dropped (the client went away), which drops the request's queued
//! model windows and makes the compression thread return at once. Every failure (scorer error,
//! panic, deadline) forwards the original request, logs one line and increments a counter
//! (fail-open).
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use super::background::{self, Background};
use super::controls::Controls;
use super::failure::Failure;
use super::{
    Compression, HookOutcome, HookReport, Intercepted, Reason, Rejection, RequestCtx, RequestHook,
};
use crate::api::headroom::{CompressCall, CompressReply};
use crate::compress::{
    CompressError, Conversation, OnError, Outcome, Policy, RequestOptions, SkipReason,
    TokenizerKind,
};
use crate::headers::{
    HEADER_CACHE, HEADER_COMPRESSION_MS, HEADER_SKIPPED, HEADER_TOKENS_AFTER, HEADER_TOKENS_BEFORE,
};
use crate::model::{ModelQueue, Priority, WorkCtx};
use crate::scorer::ActiveScorer;
use crate::telemetry::{RoleTokens, Tokens};

/// Counters of the compression hook (also reported through the `metrics` facade).
#[derive(Debug, Default)]
pub struct HookStats {
    /// Requests that reached the hook.
    pub requests: AtomicU64,
    /// Requests forwarded with a rewritten body.
    pub compressed: AtomicU64,
    /// Requests the policy ran on without changing anything.
    pub unchanged: AtomicU64,
    /// `x-lingua-compress: off`, or compression disabled.
    pub skipped_off: AtomicU64,
    /// Skipped because the queue was full.
    pub skipped_overload: AtomicU64,
    /// Fail-open: the compressor returned an error.
    pub fail_open_error: AtomicU64,
    /// Fail-open: compression panicked.
    pub fail_open_panic: AtomicU64,
    /// Fail-open: `deadline_ms` passed.
    pub fail_open_deadline: AtomicU64,
    /// The client went away (or the proxy is shutting down) while the request was compressed.
    pub cancelled: AtomicU64,
    /// Forwarded unchanged because of `max_request_tokens` / `max_message_tokens`.
    pub skipped_too_large: AtomicU64,
    /// Messages not scored because of `max_message_tokens`.
    pub too_large_messages: AtomicU64,
    /// Background compressions queued, finished (stored in the cache), and not queued (full).
    pub background_queued: AtomicU64,
    pub background_done: AtomicU64,
    pub background_dropped: AtomicU64,
}

impl HookStats {
    /// All fail-open events.
    pub fn fail_open(&self) -> u64 {
        self.fail_open_error.load(Ordering::Relaxed)
            + self.fail_open_panic.load(Ordering::Relaxed)
            + self.fail_open_deadline.load(Ordering::Relaxed)
    }
}

/// Compresses chat-completion requests with a [`Policy`].
/// Compresses intercepted requests with a [`Policy`]; built with [`CompressionHook::builder`]
/// (or by `crate::engine` from the configuration).
#[derive(Clone)]
pub struct CompressionHook {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) policy: Arc<Policy>,
    pub(super) admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    pub(super) deadline: Duration,
    pub(super) stats: Arc<HookStats>,
    active: Option<ActiveScorer>,
    /// Workers plus queue slots: the admission semaphore's capacity.
    admission_capacity: usize,
    workers_capacity: usize,
    model_queue: Option<Arc<dyn ModelQueue>>,
    /// Parent of every request's context: cancelled by [`RequestHook::shutdown`].
    pub(super) root: WorkCtx,
    /// Background compression queue (`[compression] background = true`).
    background: Option<Background>,
    /// Report each message's pieces (kind, transform, tokens, texts) for the event log.
    explain: bool,
}

impl std::fmt::Debug for CompressionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionHook")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`CompressionHook`]: the policy, and what the hook reports about the models
/// behind it.
#[must_use]
pub struct HookBuilder {
    policy: Arc<Policy>,
    active: Option<ActiveScorer>,
    model_queue: Option<Arc<dyn ModelQueue>>,
    explain: bool,
}

impl HookBuilder {
    /// Which scorer is active (for `/readyz`) and the model schedulers behind it (queue depth,
    /// shutdown).
    pub fn scorer(
        mut self,
        active: ActiveScorer,
        model_queue: Option<Arc<dyn ModelQueue>>,
    ) -> Self {
        self.active = Some(active);
        self.model_queue = model_queue;
        self
    }

    /// Reports what was done to each piece of each message (`[telemetry] log_content = true`:
    /// the event log keeps it beside the prompt). Costs a token count per piece.
    pub fn explain(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    /// Starts the hook: bounds and deadline come from the policy's configuration; with
    /// `background = true`, the background thread starts here.
    pub fn build(self) -> CompressionHook {
        // Load both BPE tables now rather than inside the first request's deadline.
        for t in [TokenizerKind::O200kBase, TokenizerKind::Cl100kBase] {
            t.bpe();
        }
        let cfg = self.policy.config();
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        };
        let root = WorkCtx::none();
        let stats = Arc::new(HookStats::default());
        let background = if cfg.background {
            Background::start(
                self.policy.clone(),
                root.clone(),
                stats.clone(),
                cfg.background_queue,
                Duration::from_millis(cfg.background_deadline_ms),
            )
        } else {
            None
        };
        let inner = Inner {
            admission: Arc::new(Semaphore::new(workers + cfg.queue)),
            workers: Arc::new(Semaphore::new(workers)),
            deadline: Duration::from_millis(cfg.deadline_ms),
            admission_capacity: workers + cfg.queue,
            workers_capacity: workers,
            stats,
            active: self.active,
            model_queue: self.model_queue,
            root,
            background,
            explain: self.explain,
            policy: self.policy,
        };
        CompressionHook {
            inner: Arc::new(inner),
        }
    }
}

impl CompressionHook {
    /// A builder over `policy`.
    pub fn builder(policy: Arc<Policy>) -> HookBuilder {
        HookBuilder {
            policy,
            active: None,
            model_queue: None,
            explain: false,
        }
    }

    /// A hook over `policy` with nothing else set.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self::builder(policy).build()
    }

    /// Which scorer is active (when the builder was told).
    pub fn active_scorer(&self) -> Option<&ActiveScorer> {
        self.inner.active.as_ref()
    }

    pub fn stats(&self) -> Arc<HookStats> {
        self.inner.stats.clone()
    }

    /// The model scheduler's counters, when a neural scorer is loaded.
    pub fn model_stats(&self) -> Option<crate::model::SchedulerStats> {
        self.inner.model_queue.as_ref().map(|q| q.stats())
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.inner.policy
    }
}

impl RequestHook for CompressionHook {
    fn on_request(&self, req: Intercepted) -> BoxFuture<'static, HookOutcome> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.run(req).await })
    }

    fn compress_call(
        &self,
        ctx: RequestCtx,
        call: CompressCall,
    ) -> BoxFuture<'static, CompressReply> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.compress_call(ctx, call).await })
    }

    fn describe(&self) -> serde_json::Value {
        let cfg = self.inner.policy.config();
        serde_json::json!({
            "compression": if cfg.enabled { "on" } else { "off" },
            "compressor": self.inner.policy.compressor().id(),
            "scorer": self.inner.active,
            "model_scheduler": self.model_stats(),
        })
    }

    fn queue_depth(&self) -> usize {
        let i = &self.inner;
        let admitted = i.admission_capacity - i.admission.available_permits();
        let running = i.workers_capacity - i.workers.available_permits();
        let model = i
            .model_queue
            .as_ref()
            .map_or(0, |q| q.stats().queued_windows as usize);
        admitted.saturating_sub(running) + model
    }

    fn shutdown(&self) {
        let i = &self.inner;
        i.root.cancel();
        if let Some(q) = &i.model_queue {
            q.close();
        }
    }
}

/// Requests up to this size whose messages are all too short to score (see
/// [`crate::compress::policy::Policy::scores_nothing`]) are counted on the async runtime: a
/// few microseconds of work, where a worker thread would add two context switches.
const INLINE_BYTES: usize = 8 * 1024;

impl Inner {
    async fn run(self: Arc<Self>, req: Intercepted) -> HookOutcome {
        let stats = &self.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let cfg = self.policy.config();
        let c = if cfg.allow_request_overrides {
            Controls::from_headers(&req.headers)
        } else {
            Controls::default()
        };
        if c.compress == Some(false) || (!cfg.enabled && c.compress != Some(true)) {
            stats.skipped_off.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_skipped_total", "reason" => "off").increment(1);
            let mut out = skipped(if cfg.enabled {
                Reason::Off
            } else {
                Reason::Disabled
            });
            out.verbatim = c.compress == Some(false);
            return out;
        }
        if self.root.is_cancelled() {
            return skipped(Reason::ShuttingDown);
        }
        let Ok(admission) = self.admission.clone().try_acquire_owned() else {
            stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_skipped_total", "reason" => "overloaded")
                .increment(1);
            tracing::warn!("compression queue full; forwarding the original request");
            return skipped(Reason::Overloaded);
        };
        let deadline = Instant::now() + self.deadline;
        // Cancelled when this future is dropped (the client went away) or finishes: either way
        // nothing may keep running for this request.
        let work = self.root.child(Some(deadline), Priority::Normal);
        let _cancel = work.cancel_on_drop();
        let opts = RequestOptions {
            rate_override: c.rate,
            tokenizer: Some(req.ctx.tokenizer_or(cfg.default_tokenizer)),
            work: work.clone(),
            explain: self.explain,
            ..RequestOptions::default()
        };
        let surface = req.ctx.api.surface();
        let json = Arc::new(req.json);
        let retry = self.background.is_some().then(|| background::Job {
            raw: req.raw.clone(),
            json: json.clone(),
            surface,
            opts: opts.clone(),
        });
        let result = self
            .compress(
                req.raw,
                json,
                move |json| Arc::new(surface.conversation(json).unwrap_or_default()),
                opts,
                deadline,
            )
            .await;
        drop(admission);
        let f = match result {
            Ok(outcome) => {
                let cold = outcome
                    .report
                    .messages
                    .iter()
                    .any(|m| m.skipped == Some(SkipReason::TooLarge));
                if cold {
                    self.retry_in_background(retry);
                }
                return self.success(outcome);
            }
            Err(f) => f,
        };
        let reject = cfg.on_error == OnError::Reject && f.reason().is_failure();
        let then = if reject {
            "rejecting the request (on_error = \"reject\")"
        } else {
            "forwarding the original request"
        };
        let reason = f.record(stats, self.deadline, then);
        if reason == Reason::Deadline {
            self.retry_in_background(retry);
        }
        let mut out = skipped(reason);
        if reject {
            out.reject = Some(Rejection {
                status: 503,
                code: "compression_failed".into(),
                message: format!(
                    "lingua-proxy could not compress the request ({})",
                    reason.as_str()
                ),
            });
        }
        out
    }

    /// Queues the request for background compression, when that is on.
    fn retry_in_background(&self, job: Option<background::Job>) {
        if let (Some(bg), Some(job)) = (&self.background, job) {
            bg.queue(job);
        }
    }

    pub(super) async fn in_worker<T: Send + 'static>(
        &self,
        deadline: Instant,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failure> {
        let workers = self.workers.clone();
        let work = async move {
            let permit = workers
                .acquire_owned()
                .await
                .map_err(|_| Failure::Error(CompressError::Internal("pool closed".into())))?;
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                std::panic::catch_unwind(AssertUnwindSafe(f))
            });
            match task.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) | Err(_) => Err(Failure::Panic),
            }
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Deadline),
        }
    }

    /// Gets the request's conversation (a copy of every text with its path; built here unless
    /// the caller has it) and runs the policy over it, both in one worker: a large request
    /// never holds the async runtime.
    pub(super) async fn compress(
        &self,
        raw: Bytes,
        json: Arc<serde_json::Value>,
        conversation: impl FnOnce(&serde_json::Value) -> Arc<Conversation> + Send + 'static,
        opts: RequestOptions,
        deadline: Instant,
    ) -> Result<Outcome, Failure> {
        let policy = self.policy.clone();
        if raw.len() > INLINE_BYTES {
            return self
                .in_worker(deadline, move || {
                    let conv = conversation(&json);
                    policy.apply(&raw, &json, &conv, &opts)
                })
                .await?
                .map_err(Failure::Error);
        }
        let conv = conversation(&json);
        let light = policy.scores_nothing(&conv);
        let apply = move || policy.apply(&raw, &json, &conv, &opts);
        if !light {
            return self
                .in_worker(deadline, apply)
                .await?
                .map_err(Failure::Error);
        }
        // Nothing to score: counting and passing it on costs less than the two thread
        // switches a worker would.
        match std::panic::catch_unwind(AssertUnwindSafe(apply)) {
            Ok(r) => r.map_err(Failure::Error),
            Err(_) => Err(Failure::Panic),
        }
    }

    fn success(&self, outcome: Outcome) -> HookOutcome {
        let r = &outcome.report;
        let too_large_messages = r
            .messages
            .iter()
            .filter(|m| m.skipped == Some(SkipReason::TooLarge))
            .count() as u64;
        if too_large_messages > 0 {
            self.stats
                .too_large_messages
                .fetch_add(too_large_messages, Ordering::Relaxed);
            metrics::counter!("lingua_compression_too_large_messages_total")
                .increment(too_large_messages);
        }
        if r.too_large {
            self.stats.skipped_too_large.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_skipped_total", "reason" => "too_large")
                .increment(1);
            tracing::info!(
                tokens_at_least = r.tokens_before,
                "request too large to compress; forwarding it unchanged"
            );
            let mut out = skipped(Reason::TooLarge);
            if let Some(rep) = out.report.as_mut() {
                rep.tokens = Some(tokens_of(r));
            }
            return out;
        }
        let changed = outcome.body.is_some();
        if changed {
            self.stats.compressed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_requests_total", "result" => "compressed")
                .increment(1);
        } else {
            self.stats.unchanged.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_requests_total", "result" => "unchanged")
                .increment(1);
        }
        metrics::counter!("lingua_compression_tokens_before_total")
            .increment(r.tokens_before as u64);
        metrics::counter!("lingua_compression_tokens_after_total").increment(r.tokens_after as u64);
        tracing::debug!(
            tokens_before = r.tokens_before,
            tokens_after = r.tokens_after,
            cache = r.cache.as_str(),
            ms = r.elapsed.as_secs_f64() * 1000.0,
            "compression"
        );
        let response_headers = [
            header(HEADER_TOKENS_BEFORE, r.tokens_before),
            header(HEADER_TOKENS_AFTER, r.tokens_after),
            header(
                HEADER_COMPRESSION_MS,
                format!("{:.1}", r.elapsed.as_secs_f64() * 1000.0),
            ),
            header(HEADER_CACHE, r.cache.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        HookOutcome {
            body: outcome.body.map(Bytes::from),
            response_headers,
            reject: None,
            verbatim: false,
            report: Some(HookReport {
                compression: if changed {
                    Compression::Compressed
                } else {
                    Compression::Unchanged
                },
                reason: None,
                tokens: Some(tokens_of(r)),
                // no lookup happened when nothing needed compressing
                cache: (r.cache_hits + r.cache_misses > 0).then_some(r.cache),
                explain: self.explain.then(|| explain_of(r)),
                compressor: None,
            }),
        }
    }
}

fn header(name: &'static str, value: impl ToString) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_static(name),
        HeaderValue::from_str(&value.to_string()).ok()?,
    ))
}

/// Nothing rewritten, for `reason` (a fail-open when the reason is a failure).
fn skipped(reason: Reason) -> HookOutcome {
    HookOutcome {
        body: None,
        response_headers: header(HEADER_SKIPPED, reason.as_str())
            .into_iter()
            .collect(),
        reject: None,
        verbatim: false,
        report: Some(HookReport {
            compression: if reason.is_failure() {
                Compression::FailOpen
            } else {
                Compression::Skipped
            },
            reason: Some(reason),
            tokens: None,
            cache: None,
            explain: None,
            compressor: None,
        }),
    }
}

/// Per message: index, role, skip reason and pieces (the event log's `explain`).
pub(super) fn explain_of(r: &crate::compress::policy::Report) -> serde_json::Value {
    serde_json::Value::Array(
        r.messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "index": m.index,
                    "role": m.role,
                    "skipped": m.skipped,
                    "pieces": m.pieces,
                })
            })
            .collect(),
    )
}

/// The policy report in the event log's shape.
fn tokens_of(r: &crate::compress::policy::Report) -> Tokens {
    Tokens {
        tokenizer: r.tokenizer.to_string(),
        before: r.tokens_before as u64,
        after: r.tokens_after as u64,
        roles: r
            .roles
            .iter()
            .map(|(role, t)| {
                (
                    role.clone(),
                    RoleTokens {
                        before: t.tokens_before as u64,
                        after: t.tokens_after as u64,
                    },
                )
            })
            .collect(),
    }
}
