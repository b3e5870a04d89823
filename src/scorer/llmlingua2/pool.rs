//! Dedicated inference threads behind a bounded queue (the text-embeddings-inference shape).
//!
//! `try_submit` never blocks: a full queue answers [`ScorerError::Overloaded`] at once, so the
//! caller can fail open. Workers take jobs in arrival order and pack several requests into one
//! forward pass up to a token budget. A request whose handle was dropped (the client went away,
//! a deadline passed) is skipped before any work is done on it.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::encoder::TokenClassifier;
use crate::scorer::ScorerError;

type Reply = Result<Vec<Vec<f32>>, ScorerError>;

/// Pool sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads, each running whole forward passes (the kernels inside use the model's
    /// own compute threads). One is right for a CPU; more only overlap queue handling.
    pub workers: usize,
    /// Requests that may wait in the queue before `try_submit` reports overload.
    pub queue_capacity: usize,
    /// Token budget of one forward pass; requests are packed until it is reached (a single
    /// request larger than the budget still runs, alone).
    pub max_batch_tokens: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            queue_capacity: 64,
            max_batch_tokens: 4096,
        }
    }
}

struct Job {
    seqs: Vec<Vec<u32>>,
    tokens: usize,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    paused: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
    skipped: AtomicU64,
    batches: AtomicU64,
}

/// The worker threads and their queue. Dropping the pool lets the workers finish what is queued
/// and joins them.
pub struct InferencePool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    model: Arc<TokenClassifier>,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool")
            .field("workers", &self.workers.len())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

/// The pending result of one submitted request. Dropping it cancels the request if it has not
/// started yet.
#[derive(Debug)]
pub struct InferenceHandle {
    rx: oneshot::Receiver<Reply>,
}

impl InferenceHandle {
    /// Blocks the calling thread until the result is ready. Do not call from async code; use
    /// [`InferenceHandle::recv`] there.
    pub fn wait(self) -> Reply {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(ScorerError::Unavailable("inference worker stopped".into())))
    }

    /// Awaits the result without blocking the async runtime.
    pub async fn recv(self) -> Reply {
        self.rx
            .await
            .unwrap_or_else(|_| Err(ScorerError::Unavailable("inference worker stopped".into())))
    }
}

impl InferencePool {
    pub fn new(model: Arc<TokenClassifier>, cfg: PoolConfig) -> Result<Self, ScorerError> {
        let shared = Arc::new(Shared {
            capacity: cfg.queue_capacity.max(1),
            ..Shared::default()
        });
        let mut pool = Self {
            shared,
            workers: Vec::new(),
            model,
        };
        for i in 0..cfg.workers.max(1) {
            let (shared, model) = (pool.shared.clone(), pool.model.clone());
            let budget = cfg.max_batch_tokens.max(1);
            let handle = std::thread::Builder::new()
                .name(format!("lingua-infer-{i}"))
                .spawn(move || worker(&shared, &model, budget))
                .map_err(|e| ScorerError::Unavailable(format!("cannot start worker: {e}")))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    pub fn model(&self) -> &Arc<TokenClassifier> {
        &self.model
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Queue>, ScorerError> {
        self.shared
            .queue
            .lock()
            .map_err(|_| ScorerError::Unavailable("inference queue poisoned".into()))
    }

    /// Queues `batch` (model input ids per chunk) without blocking; a full queue answers
    /// [`ScorerError::Overloaded`].
    pub fn try_submit(&self, batch: Vec<Vec<u32>>) -> Result<InferenceHandle, ScorerError> {
        self.model.validate(&batch)?;
        let (tx, rx) = oneshot::channel();
        let tokens = batch.iter().map(Vec::len).sum();
        {
            let mut q = self.lock()?;
            if q.closed {
                return Err(ScorerError::Unavailable("pool is shutting down".into()));
            }
            if q.jobs.len() >= self.shared.capacity {
                return Err(ScorerError::Overloaded);
            }
            q.jobs.push_back(Job {
                seqs: batch,
                tokens,
                tx,
            });
        }
        self.shared.ready.notify_one();
        Ok(InferenceHandle { rx })
    }

    /// Requests waiting in the queue (not yet taken by a worker).
    pub fn queue_depth(&self) -> usize {
        self.lock().map(|q| q.jobs.len()).unwrap_or(0)
    }

    /// Stops workers from taking new jobs (running ones finish); submissions still queue.
    pub fn pause(&self) {
        if let Ok(mut q) = self.lock() {
            q.paused = true;
        }
    }

    /// Lets workers take jobs again.
    pub fn resume(&self) {
        if let Ok(mut q) = self.lock() {
            q.paused = false;
        }
        self.shared.ready.notify_all();
    }

    /// Requests dropped by their caller before they ran, and thus skipped.
    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::SeqCst)
    }

    /// Forward passes run so far.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::SeqCst)
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closed = true;
            q.paused = false;
        }
        self.shared.ready.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(shared: &Shared, model: &TokenClassifier, budget: usize) {
    loop {
        let mut jobs: Vec<Job> = Vec::new();
        {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            loop {
                if !q.paused && !q.jobs.is_empty() {
                    break;
                }
                if q.closed && q.jobs.is_empty() {
                    return;
                }
                q = match shared.ready.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            let mut tokens = 0usize;
            while let Some(front) = q.jobs.front() {
                if front.tx.is_closed() {
                    q.jobs.pop_front();
                    shared.skipped.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                if !jobs.is_empty() && tokens + front.tokens > budget {
                    break;
                }
                let Some(job) = q.jobs.pop_front() else { break };
                tokens += job.tokens;
                jobs.push(job);
            }
        }
        if !jobs.is_empty() {
            run(jobs, shared, model);
        }
    }
}

fn run(jobs: Vec<Job>, shared: &Shared, model: &TokenClassifier) {
    let mut all: Vec<Vec<u32>> = Vec::new();
    let mut parts = Vec::with_capacity(jobs.len());
    for job in jobs {
        parts.push((job.seqs.len(), job.tx));
        all.extend(job.seqs);
    }
    shared.batches.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.keep_probs(&all)))
        .unwrap_or_else(|_| Err(ScorerError::Model("encoder panicked".into())));
    match result {
        Ok(probs) => {
            let mut it = probs.into_iter();
            for (n, tx) in parts {
                let _ = tx.send(Ok(it.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, tx) in parts {
                let _ = tx.send(Err(ScorerError::Model(msg.clone())));
            }
        }
    }
}
