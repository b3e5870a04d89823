//! The [`RequestHook`] that compresses intercepted requests (every API surface) and answers
//! `/v1/compress`, with one mapping from failure to skip reason, counter and log line.
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
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use crate::api::Surface;
use crate::api::headroom::{CompressCall, CompressReply};
use crate::compress::policy::parse_rate;
use crate::compress::{
    CompressError, CompressionConfig, Conversation, OnError, Outcome, Policy, RequestOptions,
    SkipReason, TokenizerKind,
};
use crate::engine::ActiveScorer;
use crate::hook::{Compression, HookOutcome, HookReport, Intercepted, RequestCtx, RequestHook};
use crate::model::{Interrupted, ModelConfig, ModelQueue, Priority, WorkCtx};
use crate::telemetry::{RoleTokens, Tokens};

use crate::headers::*;

/// Counters of the pipeline (also reported through the `metrics` facade).
#[derive(Debug, Default)]
pub struct PipelineStats {
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

impl PipelineStats {
    /// All fail-open events.
    pub fn fail_open(&self) -> u64 {
        self.fail_open_error.load(Ordering::Relaxed)
            + self.fail_open_panic.load(Ordering::Relaxed)
            + self.fail_open_deadline.load(Ordering::Relaxed)
    }
}

/// Compresses chat-completion requests with a [`Policy`].
#[derive(Clone)]
pub struct CompressionHook {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Arc<Policy>,
    admission: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    deadline: Duration,
    stats: Arc<PipelineStats>,
    active: Option<ActiveScorer>,
    /// Workers plus queue slots: the admission semaphore's capacity.
    admission_capacity: usize,
    workers_capacity: usize,
    model_queue: Option<Arc<dyn ModelQueue>>,
    /// Parent of every request's context: cancelled by [`RequestHook::shutdown`].
    root: WorkCtx,
    /// Background compression queue (`[compression] background = true`).
    background: Option<std::sync::mpsc::SyncSender<BackgroundJob>>,
    /// Report each message's pieces (kind, transform, tokens, texts) for the event log.
    explain: bool,
}

/// A request to compress again off the request path.
struct BackgroundJob {
    raw: Bytes,
    json: Arc<serde_json::Value>,
    surface: &'static dyn Surface,
    opts: RequestOptions,
}

impl std::fmt::Debug for CompressionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionHook")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

enum Failure {
    Error(CompressError),
    Panic,
    Deadline,
}

/// What a failed compression was, decided once: proxied requests and `/v1/compress` both read
/// their skip reason from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// The model queue was full: skipped, not a failure.
    Overloaded,
    Deadline,
    Cancelled,
    Error,
    Panic,
}

impl Failure {
    fn kind(&self) -> FailKind {
        match self {
            Failure::Error(e) if e.is_overloaded() => FailKind::Overloaded,
            Failure::Error(e) => match e.interrupted() {
                Some(Interrupted::Deadline) => FailKind::Deadline,
                Some(Interrupted::Cancelled) => FailKind::Cancelled,
                None => FailKind::Error,
            },
            Failure::Deadline => FailKind::Deadline,
            Failure::Panic => FailKind::Panic,
        }
    }

    /// For the log line (never the prompt).
    fn detail(&self, deadline: Duration) -> String {
        match self {
            Failure::Error(e) => e.to_string(),
            Failure::Panic => "panic inside compression".into(),
            Failure::Deadline => format!("exceeded {} ms", deadline.as_millis()),
        }
    }
}

impl FailKind {
    /// The reason in events, `/stats`, metrics and the `x-lingua-*` headers.
    fn reason(self) -> &'static str {
        match self {
            FailKind::Overloaded => "overloaded",
            FailKind::Deadline => "deadline",
            FailKind::Cancelled => "cancelled",
            FailKind::Error => "error",
            FailKind::Panic => "panic",
        }
    }

    /// The reason in `/v1/compress` answers (the Headroom contract's name for a deadline).
    fn compress_endpoint_reason(self) -> &'static str {
        match self {
            FailKind::Deadline => "compression_timeout",
            other => other.reason(),
        }
    }
}

impl CompressionHook {
    /// A hook over `policy`; bounds and deadline come from the policy's configuration.
    pub fn new(policy: Arc<Policy>) -> Self {
        // Load both BPE tables now rather than inside the first request's deadline.
        for t in [TokenizerKind::O200kBase, TokenizerKind::Cl100kBase] {
            t.bpe();
        }
        let cfg = policy.config();
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.workers
        };
        let root = WorkCtx::none();
        let stats = Arc::new(PipelineStats::default());
        let background = if cfg.background {
            start_background(
                policy.clone(),
                root.clone(),
                stats.clone(),
                cfg.background_queue,
                Duration::from_millis(cfg.background_deadline_ms),
            )
        } else {
            None
        };
        let inner = Inner {
            admission_capacity: workers + cfg.queue,
            workers_capacity: workers,
            model_queue: None,
            root,
            background,
            explain: false,
            admission: Arc::new(Semaphore::new(workers + cfg.queue)),
            workers: Arc::new(Semaphore::new(workers)),
            deadline: Duration::from_millis(cfg.deadline_ms),
            stats,
            active: None,
            policy,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Builds the scorer, policy and compressor from the `[compression]` table. When the
    /// LLMLingua-2 model is unavailable, `on_model_unavailable` decides (see
    /// [`crate::compress::build`]); with `"passthrough"` the hook forwards every request unchanged.
    pub fn from_config(config: &CompressionConfig) -> anyhow::Result<Self> {
        Self::from_configs(config, &ModelConfig::default())
    }

    /// [`Self::from_config`] with the `[model]` table.
    pub fn from_configs(config: &CompressionConfig, model: &ModelConfig) -> anyhow::Result<Self> {
        let built = crate::engine::build_with(config, model)?;
        let active = built.active.clone();
        let model_queue = built.model_queue.clone();
        let hook = match built.compressor {
            Some(compressor) => {
                let mut policy = Policy::new(config.clone(), compressor)?;
                for (role, c) in &built.role_compressors {
                    policy = policy.with_role_compressor(role, c.clone());
                }
                Self::new(Arc::new(policy))
            }
            None => {
                // No scorer: a policy that never compresses, and ignores `x-lingua-compress: on`.
                let mut off = config.clone();
                off.enabled = false;
                off.allow_request_overrides = false;
                let scorer: Arc<dyn crate::scorer::Scorer> =
                    Arc::new(crate::scorer::heuristic::HeuristicScorer::new());
                let compressor = Arc::new(crate::compress::MeaningCompressor::new(scorer));
                Self::new(Arc::new(Policy::new(off, compressor)?))
            }
        };
        Ok(hook.rebuild(|i| {
            i.active = Some(active);
            i.model_queue = model_queue;
        }))
    }

    /// Which scorer is active (set by [`Self::from_config`]).
    pub fn active_scorer(&self) -> Option<&ActiveScorer> {
        self.inner.active.as_ref()
    }

    /// Reports what was done to each piece of each message (`[telemetry] log_content = true`:
    /// the event log keeps it beside the prompt). Costs a token count per piece.
    pub fn with_explain(self, explain: bool) -> Self {
        self.rebuild(|i| i.explain = explain)
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let i = &self.inner;
        let mut inner = Inner {
            policy: i.policy.clone(),
            admission: i.admission.clone(),
            workers: i.workers.clone(),
            deadline: i.deadline,
            stats: i.stats.clone(),
            active: i.active.clone(),
            admission_capacity: i.admission_capacity,
            workers_capacity: i.workers_capacity,
            model_queue: i.model_queue.clone(),
            root: i.root.clone(),
            background: i.background.clone(),
            explain: i.explain,
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    pub fn stats(&self) -> Arc<PipelineStats> {
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

/// Starts the background compression thread: it takes jobs from a bounded queue, one at a time,
/// and runs the policy with the lowest scheduler priority, its own deadline and no size limits;
/// results land in the policy's cache.
fn start_background(
    policy: Arc<Policy>,
    root: WorkCtx,
    stats: Arc<PipelineStats>,
    capacity: usize,
    budget: Duration,
) -> Option<std::sync::mpsc::SyncSender<BackgroundJob>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<BackgroundJob>(capacity.max(1));
    let spawned = std::thread::Builder::new()
        .name("lingua-background".into())
        .spawn(move || {
            while let Ok(mut job) = rx.recv() {
                if root.is_cancelled() {
                    break;
                }
                job.opts.work = root.child(Some(Instant::now() + budget), Priority::Background);
                job.opts.ignore_size_limits = true;
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let conv = job.surface.conversation(&job.json).unwrap_or_default();
                    policy.apply(&job.raw, &job.json, &conv, &job.opts)
                }));
                match r {
                    Ok(Ok(_)) => {
                        stats.background_done.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("lingua_compression_background_total", "result" => "done")
                            .increment(1);
                    }
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "background compression gave up");
                        metrics::counter!("lingua_compression_background_total", "result" => "failed")
                            .increment(1);
                    }
                    Err(_) => {
                        tracing::warn!("background compression panicked");
                        metrics::counter!("lingua_compression_background_total", "result" => "failed")
                            .increment(1);
                    }
                }
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the background compression thread");
            None
        }
    }
}

/// Per-request controls parsed from the headers.
#[derive(Debug, Default, PartialEq)]
struct Controls {
    /// `Some(false)`: off, `Some(true)`: on.
    compress: Option<bool>,
    rate: Option<f64>,
}

fn controls(headers: &HeaderMap) -> Controls {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let compress = match get(HEADER_COMPRESS).map(str::to_ascii_lowercase).as_deref() {
        Some("off" | "false" | "0") => Some(false),
        Some("on" | "true" | "1") => Some(true),
        _ => None,
    };
    Controls {
        compress,
        rate: get(HEADER_RATE).and_then(parse_rate),
    }
}

fn header(name: &'static str, value: impl ToString) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_static(name),
        HeaderValue::from_str(&value.to_string()).ok()?,
    ))
}

fn skipped(reason: &'static str, failed: bool) -> HookOutcome {
    HookOutcome {
        body: None,
        response_headers: header(HEADER_SKIPPED, reason).into_iter().collect(),
        reject: None,
        verbatim: false,
        report: Some(HookReport {
            compression: if failed {
                Compression::FailOpen
            } else {
                Compression::Skipped
            },
            reason: Some(reason),
            tokens: None,
            cache: None,
            explain: None,
        }),
    }
}

/// Per message: index, role, skip reason and pieces (the event log's `explain`).
fn explain_of(r: &crate::compress::policy::Report) -> serde_json::Value {
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

impl Inner {
    async fn run(self: Arc<Self>, req: Intercepted) -> HookOutcome {
        let stats = &self.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let cfg = self.policy.config();
        let c = if cfg.allow_request_overrides {
            controls(&req.headers)
        } else {
            Controls::default()
        };
        if c.compress == Some(false) || (!cfg.enabled && c.compress != Some(true)) {
            stats.skipped_off.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_skipped_total", "reason" => "off").increment(1);
            let mut out = skipped(if cfg.enabled { "off" } else { "disabled" }, false);
            out.verbatim = c.compress == Some(false);
            return out;
        }
        if self.root.is_cancelled() {
            return skipped("shutting_down", false);
        }
        let Ok(admission) = self.admission.clone().try_acquire_owned() else {
            stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_compression_skipped_total", "reason" => "overloaded")
                .increment(1);
            tracing::warn!("compression queue full; forwarding the original request");
            return skipped("overloaded", false);
        };
        let deadline = Instant::now() + self.deadline;
        let tokenizer = req.ctx.tokenizer_or(cfg.default_tokenizer);
        // Cancelled when this future is dropped (the client went away) or finishes: either way
        // nothing may keep running for this request.
        let work = self.root.child(Some(deadline), Priority::Normal);
        let _cancel = work.cancel_on_drop();
        let opts = RequestOptions {
            rate_override: c.rate,
            tokenizer: Some(tokenizer),
            work: work.clone(),
            explain: self.explain,
            ..RequestOptions::default()
        };
        let surface = req.ctx.api.surface();
        let json = Arc::new(req.json);
        let retry = self.background.is_some().then(|| BackgroundJob {
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
        match result {
            Ok(outcome) => {
                let cold = outcome
                    .report
                    .messages
                    .iter()
                    .any(|m| m.skipped == Some(SkipReason::TooLarge));
                if cold && let Some(job) = retry {
                    self.queue_background(job);
                }
                self.success(outcome)
            }
            Err(f) => {
                let kind = f.kind();
                let reason = kind.reason();
                let counter = match kind {
                    FailKind::Overloaded => {
                        stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("lingua_compression_skipped_total", "reason" => reason)
                            .increment(1);
                        tracing::warn!("model queue full; forwarding the original request");
                        return skipped(reason, false);
                    }
                    FailKind::Deadline => &stats.fail_open_deadline,
                    FailKind::Cancelled => &stats.cancelled,
                    FailKind::Error => &stats.fail_open_error,
                    FailKind::Panic => &stats.fail_open_panic,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if kind == FailKind::Deadline
                    && let Some(job) = retry
                {
                    self.queue_background(job);
                }
                metrics::counter!("lingua_compression_fail_open_total", "reason" => reason)
                    .increment(1);
                let detail = f.detail(self.deadline);
                if cfg.on_error == OnError::Reject {
                    tracing::warn!(
                        reason,
                        error = %detail,
                        "compression failed; rejecting the request (on_error = \"reject\")"
                    );
                    let mut out = skipped(reason, true);
                    out.reject = Some(crate::hook::Rejection {
                        status: 503,
                        code: "compression_failed".into(),
                        message: format!("lingua-proxy could not compress the request ({reason})"),
                    });
                    return out;
                }
                tracing::warn!(
                    reason,
                    error = %detail,
                    "compression failed; forwarding the original request"
                );
                skipped(reason, true)
            }
        }
    }

    /// Queues a request for background compression; a full queue drops it (counted).
    fn queue_background(&self, job: BackgroundJob) {
        let Some(tx) = &self.background else { return };
        match tx.try_send(job) {
            Ok(()) => {
                self.stats.background_queued.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lingua_compression_background_total", "result" => "queued")
                    .increment(1);
            }
            Err(_) => {
                self.stats
                    .background_dropped
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lingua_compression_background_total", "result" => "dropped")
                    .increment(1);
            }
        }
    }

    /// A `/v1/compress` call: the same policy, admission and deadline as a proxied request,
    /// with the call's `config` as per-request options.
    async fn compress_call(self: Arc<Self>, ctx: RequestCtx, call: CompressCall) -> CompressReply {
        let cfg = self.policy.config();
        let outcome = |result: &'static str| {
            metrics::counter!("lingua_compress_endpoint_total", "result" => result).increment(1);
        };
        // Parsed and read into a conversation in a worker, off the async runtime.
        let body = Bytes::from(call.body.clone());
        let (input, surface) = (body.clone(), call.shape.surface());
        let built = self
            .in_worker(Instant::now() + self.deadline, move || {
                let json = serde_json::from_slice::<serde_json::Value>(&input).ok()?;
                let conv = surface.conversation(&json).unwrap_or_default();
                Some((Arc::new(json), Arc::new(conv)))
            })
            .await;
        let Ok(Some((json, conv))) = built else {
            outcome("error");
            return CompressReply::skipped(&call, "internal_error");
        };
        let tokenizer = ctx.tokenizer_or(cfg.default_tokenizer);
        let mut opts = RequestOptions {
            tokenizer: Some(tokenizer),
            protect_recent: call.protect_recent,
            compress_user: Some(call.compress_user_messages),
            frozen_messages: call.frozen_in(&conv),
            explain: call.explain,
            ..RequestOptions::default()
        };
        if !cfg.enabled && !call.bypass {
            outcome("disabled");
            return CompressReply::skipped(&call, "disabled");
        }
        if self.root.is_cancelled() {
            outcome("skipped");
            return CompressReply::skipped(&call, "shutting_down");
        }
        // Admission first: counting a large call is work like compressing it.
        let Ok(admission) = self.admission.clone().try_acquire_owned() else {
            self.stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
            outcome("skipped");
            return CompressReply::skipped(&call, "overloaded");
        };
        // Counted before the policy only when the reply needs it (bypass, token_budget): in a
        // worker, stopping past `max_request_tokens` as proxied traffic does.
        if call.bypass || call.token_budget.is_some() {
            let counted = self
                .count_in_worker(&conv, tokenizer, Instant::now() + self.deadline)
                .await;
            let before = match counted {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => {
                    outcome("skipped");
                    return CompressReply::skipped(&call, "too_large");
                }
                Err(_) => {
                    outcome("skipped");
                    return CompressReply::skipped(&call, "compression_timeout");
                }
            };
            if call.bypass {
                outcome("bypass");
                return CompressReply::unchanged(&call, before as u64);
            }
            if let Some(b) = call.token_budget {
                if before as u64 <= b {
                    outcome("unchanged");
                    return CompressReply::unchanged(&call, before as u64);
                }
                let budget_rate = (b as f64 / before.max(1) as f64).clamp(0.01, 1.0);
                opts.rate_override = Some(
                    call.target_ratio
                        .map_or(budget_rate, |a| a.min(budget_rate)),
                );
            }
        } else {
            opts.rate_override = call.target_ratio;
        }
        let deadline = Instant::now() + self.deadline;
        let work = self.root.child(Some(deadline), Priority::Normal);
        let _cancel = work.cancel_on_drop();
        opts.work = work.clone();
        let result = self
            .compress(body, json, move |_| conv, opts, deadline)
            .await;
        drop(admission);
        let reason = match result {
            Ok(o) if o.report.too_large => "too_large",
            Ok(o) => {
                let r = &o.report;
                let explain = call.explain.then(|| {
                    serde_json::json!(
                        r.messages
                            .iter()
                            .map(|m| serde_json::json!({
                                "index": m.index,
                                "role": m.role,
                                "skipped": m.skipped,
                                "pieces": m.pieces,
                            }))
                            .collect::<Vec<_>>()
                    )
                });
                let reply = match &o.body {
                    Some(b) => {
                        outcome("compressed");
                        let n = r.messages.iter().filter(|m| m.skipped.is_none()).count();
                        let transform = format!("lingua-proxy:{}", self.policy.compressor().id());
                        CompressReply::compressed(
                            &call,
                            b,
                            r.tokens_before as u64,
                            r.tokens_after as u64,
                            &transform,
                            n,
                        )
                    }
                    None => {
                        outcome("unchanged");
                        CompressReply::unchanged(&call, r.tokens_before as u64)
                    }
                };
                return CompressReply { explain, ..reply };
            }
            Err(f) => f.kind().compress_endpoint_reason(),
        };
        tracing::warn!(
            reason,
            "/v1/compress failed open; returning the original messages"
        );
        outcome("skipped");
        CompressReply::skipped(&call, reason)
    }

    /// Runs `f` on a blocking thread under a worker permit, by `deadline`; a panic is
    /// [`Failure::Panic`].
    async fn in_worker<T: Send + 'static>(
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

    /// The conversation's text tokens, counted in a worker; `Err(lower bound)` past
    /// `max_request_tokens`.
    async fn count_in_worker(
        &self,
        conv: &Conversation,
        tokenizer: TokenizerKind,
        deadline: Instant,
    ) -> Result<Result<usize, usize>, Failure> {
        let texts: Vec<String> = conv
            .messages
            .iter()
            .flat_map(|m| m.segments.iter().map(|s| s.text.clone()))
            .collect();
        let limit = self.policy.config().max_request_tokens;
        self.in_worker(deadline, move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            crate::compress::policy::count_within(tokenizer, &texts, limit)
        })
        .await
    }

    /// Gets the request's conversation (a copy of every text with its path; built here unless
    /// the caller has it) and runs the policy over it, both in one worker: a large request
    /// never holds the async runtime.
    async fn compress(
        &self,
        raw: Bytes,
        json: Arc<serde_json::Value>,
        conversation: impl FnOnce(&serde_json::Value) -> Arc<Conversation> + Send + 'static,
        opts: RequestOptions,
        deadline: Instant,
    ) -> Result<Outcome, Failure> {
        let policy = self.policy.clone();
        self.in_worker(deadline, move || {
            let conv = conversation(&json);
            policy.apply(&raw, &json, &conv, &opts)
        })
        .await?
        .map_err(Failure::Error)
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
            let mut out = skipped("too_large", false);
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
                cache: (r.cache_hits + r.cache_misses > 0).then(|| r.cache.as_str()),
                explain: self.explain.then(|| explain_of(r)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_controls() {
        let mut h = HeaderMap::new();
        assert_eq!(controls(&h), Controls::default());
        h.insert(HEADER_COMPRESS, HeaderValue::from_static("OFF"));
        h.insert(HEADER_RATE, HeaderValue::from_static("0.3"));
        assert_eq!(
            controls(&h),
            Controls {
                compress: Some(false),
                rate: Some(0.3)
            }
        );
        h.insert(HEADER_RATE, HeaderValue::from_static("1.5"));
        assert_eq!(controls(&h).rate, None);
    }
}
