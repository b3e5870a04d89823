//! One inference scheduler per loaded model, owned by its own thread (the text-embeddings-inference
//! shape: a queue of entries, a batching loop, a backend that only forwards batches).
//!
//! Callers [`Scheduler::submit`] a request as a list of *windows* (for the token classifier: one
//! ≤ 512-token chunk each). Windows, not requests, are queued. The model thread repeatedly takes
//! the most urgent windows, ordered by priority class, then deadline (earliest first, none last),
//! then arrival (FIFO), packing windows of different requests into one batch until
//! `max_batch_tokens` would be exceeded (a single window larger than the budget runs alone). The
//! memory of a forward pass therefore depends on the batch budget, never on the size of an input.
//!
//! Bounds and cancellation:
//! - admission: while the queue already holds windows and the new request would bring it above
//!   `max_queued_tokens`, [`Scheduler::submit`] answers [`SchedError::Overloaded`] at once;
//! - a request whose [`WorkCtx`] is cancelled or past its deadline has its queued windows dropped
//!   (when the model thread meets them, and eagerly when its [`Ticket`] is dropped): no further
//!   batch of it runs;
//! - [`Ticket::wait`] returns as soon as the result is complete, the deadline passes or the
//!   context is cancelled (polled every [`CANCEL_POLL`]); it never waits for a late batch;
//! - [`Scheduler::close`] refuses new work and fails every queued request; the model thread exits
//!   after the batch it is running. A forward pass that has started is never interrupted: it is
//!   bounded by `max_batch_tokens`, and its results for cancelled requests are discarded.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::work::{Interrupted, Priority, WorkCtx};

/// How often a waiting caller re-checks its context's cancel flag.
pub const CANCEL_POLL: Duration = Duration::from_millis(10);

/// A model that forwards batches of windows: the LLMLingua-2 token classifier today, a causal
/// LM later. The scheduler owns it on its thread.
pub trait Backend: Send + 'static {
    /// One unit of work (e.g. the input ids of one chunk).
    type Window: Send + 'static;
    /// The result for one window (e.g. one keep probability per position).
    type Output: Send + 'static;
    type Error: std::fmt::Display;

    /// The cost of a window in the batch budget (tokens).
    fn tokens(window: &Self::Window) -> usize;

    /// Runs `batch` and returns one output per window, in order.
    fn forward(&mut self, batch: &[Self::Window]) -> Result<Vec<Self::Output>, Self::Error>;
}

/// Scheduler sizing (the `[model]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget of one forward pass.
    pub max_batch_tokens: usize,
    /// Queued tokens beyond which new requests are refused (`Overloaded`).
    pub max_queued_tokens: usize,
    /// Name of the model thread.
    pub thread_name: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 4096,
            max_queued_tokens: 65536,
            thread_name: "lingua-model".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedError {
    #[error("model queue is full")]
    Overloaded,
    #[error("deadline exceeded")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
    #[error("model scheduler is shut down")]
    Closed,
    #[error("model error: {0}")]
    Backend(String),
}

impl From<Interrupted> for SchedError {
    fn from(i: Interrupted) -> Self {
        match i {
            Interrupted::Deadline => Self::Deadline,
            Interrupted::Cancelled => Self::Cancelled,
        }
    }
}

/// Counters of one scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerStats {
    /// Forward passes run.
    pub batches: u64,
    /// Windows forwarded.
    pub windows_run: u64,
    /// Queued windows dropped because their request was cancelled, expired or failed.
    pub windows_dropped: u64,
    /// Requests refused by admission.
    pub refused: u64,
    /// Largest batch run so far, in tokens.
    pub max_batch_tokens_seen: u64,
    /// Windows and tokens waiting now.
    pub queued_windows: u64,
    pub queued_tokens: u64,
}

/// The type-erased view of a scheduler the compression hook keeps (queue depth, shutdown).
pub trait ModelQueue: Send + Sync {
    fn stats(&self) -> SchedulerStats;
    /// Refuses new work and fails everything queued (see [`Scheduler::close`]).
    fn close(&self);
}

/// Queue order: priority class, deadline (earliest first, none last), arrival, window index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    class: Priority,
    no_deadline: bool,
    deadline: Option<Instant>,
    seq: u64,
    idx: usize,
}

struct Slots<O> {
    outputs: Vec<Option<O>>,
    remaining: usize,
    failed: Option<SchedError>,
}

struct Request<O> {
    ctx: WorkCtx,
    slots: Mutex<Slots<O>>,
    done: Condvar,
}

impl<O> Request<O> {
    fn lock(&self) -> MutexGuard<'_, Slots<O>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, e: SchedError) {
        let mut s = self.lock();
        if s.failed.is_none() && s.remaining > 0 {
            s.failed = Some(e);
        }
        drop(s);
        self.done.notify_all();
    }

    fn is_failed(&self) -> bool {
        self.lock().failed.is_some()
    }
}

struct Item<B: Backend> {
    req: Arc<Request<B::Output>>,
    window: B::Window,
    tokens: usize,
}

struct State<B: Backend> {
    queue: BTreeMap<Key, Item<B>>,
    queued_tokens: usize,
    seq: u64,
    paused: bool,
    closed: bool,
}

struct Shared<B: Backend> {
    state: Mutex<State<B>>,
    ready: Condvar,
    cfg: SchedulerConfig,
    batches: AtomicU64,
    windows_run: AtomicU64,
    windows_dropped: AtomicU64,
    refused: AtomicU64,
    max_batch: AtomicU64,
}

impl<B: Backend> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // A panic never happens while the lock is held (the backend runs outside it).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See the module docs. Dropping the scheduler closes it; the model thread exits after the batch
/// it is running (it is not joined, so a shutting-down process never waits for a forward pass).
pub struct Scheduler<B: Backend> {
    shared: Arc<Shared<B>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<B: Backend> std::fmt::Debug for Scheduler<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.shared.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The pending result of one submitted request. Dropping it removes the request's windows that
/// are still queued.
pub struct Ticket<B: Backend> {
    req: Arc<Request<B::Output>>,
    keys: Vec<Key>,
    shared: Arc<Shared<B>>,
}

impl<B: Backend> std::fmt::Debug for Ticket<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("windows", &self.keys.len())
            .finish()
    }
}

impl<B: Backend> Scheduler<B> {
    /// Starts the model thread, which owns `backend`.
    pub fn new(backend: B, cfg: SchedulerConfig) -> std::io::Result<Self> {
        let cfg = SchedulerConfig {
            max_batch_tokens: cfg.max_batch_tokens.max(1),
            ..cfg
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: BTreeMap::new(),
                queued_tokens: 0,
                seq: 0,
                paused: false,
                closed: false,
            }),
            ready: Condvar::new(),
            cfg,
            batches: AtomicU64::new(0),
            windows_run: AtomicU64::new(0),
            windows_dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(shared.cfg.thread_name.clone())
            .spawn(move || run(&worker, backend))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.cfg
    }

    /// Queues `windows` for `ctx` without blocking (see the module docs for admission).
    pub fn submit(&self, ctx: &WorkCtx, windows: Vec<B::Window>) -> Result<Ticket<B>, SchedError> {
        ctx.check()?;
        let n = windows.len();
        let req = Arc::new(Request {
            ctx: ctx.clone(),
            slots: Mutex::new(Slots {
                outputs: (0..n).map(|_| None).collect(),
                remaining: n,
                failed: None,
            }),
            done: Condvar::new(),
        });
        let tokens: Vec<usize> = windows.iter().map(B::tokens).collect();
        let total: usize = tokens.iter().sum();
        let mut keys = Vec::with_capacity(n);
        {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(SchedError::Closed);
            }
            if n > 0
                && st.queued_tokens > 0
                && st.queued_tokens.saturating_add(total) > self.shared.cfg.max_queued_tokens
            {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(SchedError::Overloaded);
            }
            st.seq += 1;
            let seq = st.seq;
            let deadline = ctx.deadline();
            for (idx, (window, tokens)) in windows.into_iter().zip(tokens).enumerate() {
                let key = Key {
                    class: ctx.priority(),
                    no_deadline: deadline.is_none(),
                    deadline,
                    seq,
                    idx,
                };
                st.queue.insert(
                    key,
                    Item {
                        req: req.clone(),
                        window,
                        tokens,
                    },
                );
                keys.push(key);
            }
            st.queued_tokens += total;
        }
        if n > 0 {
            self.shared.ready.notify_one();
        }
        Ok(Ticket {
            req,
            keys,
            shared: self.shared.clone(),
        })
    }

    /// Stops the model thread from taking new batches (tests, maintenance); work still queues.
    pub fn pause(&self) {
        self.shared.lock().paused = true;
    }

    pub fn resume(&self) {
        self.shared.lock().paused = false;
        self.shared.ready.notify_all();
    }

    /// Refuses new work and fails every queued request with [`SchedError::Closed`]; the batch
    /// running now finishes. Idempotent.
    pub fn close(&self) {
        let drained: Vec<Item<B>> = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.queued_tokens = 0;
            std::mem::take(&mut st.queue).into_values().collect()
        };
        self.shared
            .windows_dropped
            .fetch_add(drained.len() as u64, Ordering::Relaxed);
        for item in drained {
            item.req.fail(SchedError::Closed);
        }
        self.shared.ready.notify_all();
    }

    pub fn stats(&self) -> SchedulerStats {
        let (w, t) = {
            let st = self.shared.lock();
            (st.queue.len() as u64, st.queued_tokens as u64)
        };
        let s = &self.shared;
        SchedulerStats {
            batches: s.batches.load(Ordering::Relaxed),
            windows_run: s.windows_run.load(Ordering::Relaxed),
            windows_dropped: s.windows_dropped.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            max_batch_tokens_seen: s.max_batch.load(Ordering::Relaxed),
            queued_windows: w,
            queued_tokens: t,
        }
    }
}

impl<B: Backend> ModelQueue for Scheduler<B> {
    fn stats(&self) -> SchedulerStats {
        Scheduler::stats(self)
    }
    fn close(&self) {
        Scheduler::close(self);
    }
}

impl<B: Backend> Drop for Scheduler<B> {
    fn drop(&mut self) {
        self.close();
        // Detach: the thread sees `closed` and returns after its current batch.
        drop(self.thread.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl<B: Backend> Ticket<B> {
    /// Blocks the calling thread (never an async runtime thread) until every window has run, the
    /// request failed, or its context is cancelled or past its deadline.
    pub fn wait(self) -> Result<Vec<B::Output>, SchedError> {
        let req = self.req.clone();
        let mut s = req.lock();
        loop {
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            if s.remaining == 0 {
                return Ok(s.outputs.drain(..).flatten().collect());
            }
            req.ctx.check()?;
            let mut wait = CANCEL_POLL;
            if let Some(d) = req.ctx.deadline() {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            s = match req.done.wait_timeout(s, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl<B: Backend> Drop for Ticket<B> {
    fn drop(&mut self) {
        if self.req.lock().remaining == 0 {
            return;
        }
        let mut st = self.shared.lock();
        let mut dropped = 0u64;
        for k in &self.keys {
            if let Some(item) = st.queue.remove(k) {
                st.queued_tokens -= item.tokens;
                dropped += 1;
            }
        }
        drop(st);
        self.shared
            .windows_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }
}

/// The model thread: take a batch, run it, hand the outputs back.
fn run<B: Backend>(shared: &Shared<B>, mut backend: B) {
    let budget = shared.cfg.max_batch_tokens;
    loop {
        let mut batch: Vec<B::Window> = Vec::new();
        let mut owners: Vec<(Arc<Request<B::Output>>, usize)> = Vec::new();
        {
            let mut st = shared.lock();
            while (st.paused || st.queue.is_empty()) && !st.closed {
                st = match shared.ready.wait(st) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
            if st.closed {
                return;
            }
            let st: &mut State<B> = &mut st;
            let mut tokens = 0usize;
            while let Some(entry) = st.queue.first_entry() {
                let item = entry.get();
                if let Err(why) = item.req.ctx.check() {
                    let item = entry.remove();
                    st.queued_tokens -= item.tokens;
                    shared.windows_dropped.fetch_add(1, Ordering::Relaxed);
                    item.req.fail(why.into());
                    continue;
                }
                if item.req.is_failed() {
                    let item = entry.remove();
                    st.queued_tokens -= item.tokens;
                    shared.windows_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !batch.is_empty() && tokens + item.tokens > budget {
                    break;
                }
                let key = *entry.key();
                let item = entry.remove();
                st.queued_tokens -= item.tokens;
                tokens += item.tokens;
                owners.push((item.req, key.idx));
                batch.push(item.window);
            }
            if batch.is_empty() {
                continue;
            }
            shared.max_batch.fetch_max(tokens as u64, Ordering::Relaxed);
        }
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .windows_run
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| backend.forward(&batch)));
        let outputs = match result {
            Ok(Ok(out)) if out.len() == batch.len() => Ok(out),
            Ok(Ok(out)) => Err(SchedError::Backend(format!(
                "backend returned {} outputs for {} windows",
                out.len(),
                batch.len()
            ))),
            Ok(Err(e)) => Err(SchedError::Backend(e.to_string())),
            Err(_) => Err(SchedError::Backend("backend panicked".into())),
        };
        drop(batch);
        match outputs {
            Ok(out) => {
                for ((req, idx), o) in owners.into_iter().zip(out) {
                    let mut s = req.lock();
                    if s.failed.is_some() {
                        continue;
                    }
                    if let Some(slot) = s.outputs.get_mut(idx)
                        && slot.is_none()
                    {
                        *slot = Some(o);
                        s.remaining -= 1;
                    }
                    let complete = s.remaining == 0;
                    drop(s);
                    if complete {
                        req.done.notify_all();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "model batch failed");
                for (req, _) in owners {
                    req.fail(e.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    type Log = Arc<Mutex<Vec<Vec<(u32, usize)>>>>;

    /// Windows are `(request tag, tokens)`; the backend records every batch it ran.
    struct Fake {
        log: Log,
        gate: Option<mpsc::Receiver<()>>,
    }

    impl Backend for Fake {
        type Window = (u32, usize);
        type Output = u32;
        type Error = String;
        fn tokens(w: &Self::Window) -> usize {
            w.1
        }
        fn forward(&mut self, batch: &[Self::Window]) -> Result<Vec<u32>, String> {
            if let Some(g) = &self.gate {
                let _ = g.recv();
            }
            self.log.lock().unwrap().push(batch.to_vec());
            if batch.iter().any(|w| w.0 == 666) {
                panic!("boom");
            }
            Ok(batch.iter().map(|w| w.0 * 10).collect())
        }
    }

    fn sched(budget: usize, queued: usize) -> (Scheduler<Fake>, Log) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = Scheduler::new(
            Fake {
                log: log.clone(),
                gate: None,
            },
            SchedulerConfig {
                max_batch_tokens: budget,
                max_queued_tokens: queued,
                thread_name: "test-model".into(),
            },
        )
        .unwrap();
        (s, log)
    }

    fn tags(log: &Mutex<Vec<Vec<(u32, usize)>>>) -> Vec<Vec<u32>> {
        log.lock()
            .unwrap()
            .iter()
            .map(|b| b.iter().map(|w| w.0).collect())
            .collect()
    }

    #[test]
    fn batches_pack_requests_within_the_budget_and_follow_deadlines() {
        let (s, log) = sched(100, 10_000);
        s.pause();
        let now = Instant::now();
        let late = WorkCtx::with_deadline(Some(now + Duration::from_secs(60)));
        let early = WorkCtx::with_deadline(Some(now + Duration::from_secs(30)));
        let none = WorkCtx::none();
        let a = s.submit(&late, vec![(1, 40), (1, 40), (1, 40)]).unwrap();
        let b = s.submit(&early, vec![(2, 30), (2, 30)]).unwrap();
        let c = s.submit(&none, vec![(3, 10)]).unwrap();
        let d = s.submit(&early, vec![(4, 250)]).unwrap(); // larger than the budget: alone
        assert_eq!(s.stats().queued_windows, 7);
        s.resume();
        assert_eq!(b.wait().unwrap(), vec![20, 20]);
        assert_eq!(a.wait().unwrap(), vec![10, 10, 10]);
        assert_eq!(c.wait().unwrap(), vec![30]);
        assert_eq!(d.wait().unwrap(), vec![40]);
        // Earliest deadline first, FIFO within equal deadlines, budget respected, windows of
        // different requests packed together, no deadline last.
        assert_eq!(
            tags(&log),
            vec![vec![2, 2], vec![4], vec![1, 1], vec![1, 3]]
        );
        for batch in log.lock().unwrap().iter() {
            let t: usize = batch.iter().map(|w| w.1).sum();
            assert!(batch.len() == 1 || t <= 100, "batch of {t} tokens");
        }
        assert_eq!(s.stats().max_batch_tokens_seen, 250);
        assert_eq!(s.stats().batches, 4);
    }

    #[test]
    fn background_runs_after_normal_work() {
        let (s, log) = sched(10, 10_000);
        s.pause();
        let root = WorkCtx::none();
        let bg = s
            .submit(&root.child(None, Priority::Background), vec![(9, 5)])
            .unwrap();
        let fg = s
            .submit(
                &root.child(
                    Some(Instant::now() + Duration::from_secs(60)),
                    Priority::Normal,
                ),
                vec![(1, 10)],
            )
            .unwrap();
        s.resume();
        fg.wait().unwrap();
        bg.wait().unwrap();
        assert_eq!(tags(&log), vec![vec![1], vec![9]]);
    }

    #[test]
    fn cancelled_and_expired_windows_never_run() {
        let (s, log) = sched(10, 10_000);
        s.pause();
        let cancelled = WorkCtx::none();
        let expired = WorkCtx::with_deadline(Some(Instant::now() + Duration::from_millis(20)));
        let live = WorkCtx::none();
        let tc = s.submit(&cancelled, vec![(1, 10), (1, 10)]).unwrap();
        let te = s.submit(&expired, vec![(2, 10)]).unwrap();
        let tl = s.submit(&live, vec![(3, 10)]).unwrap();
        let dropped = s.submit(&live, vec![(4, 10)]).unwrap();
        drop(dropped); // the caller went away: removed from the queue at once
        assert_eq!(s.stats().queued_windows, 4);
        cancelled.cancel();
        assert_eq!(tc.wait().unwrap_err(), SchedError::Cancelled);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(te.wait().unwrap_err(), SchedError::Deadline);
        s.resume();
        assert_eq!(tl.wait().unwrap(), vec![30]);
        assert_eq!(tags(&log), vec![vec![3]]);
        assert_eq!(s.stats().windows_dropped, 4);
        assert_eq!(s.stats().queued_tokens, 0);
    }

    #[test]
    fn wait_returns_at_the_deadline_without_waiting_for_the_batch() {
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = Scheduler::new(
            Fake {
                log: log.clone(),
                gate: Some(rx),
            },
            SchedulerConfig::default(),
        )
        .unwrap();
        let ctx = WorkCtx::with_deadline(Some(Instant::now() + Duration::from_millis(30)));
        // The first window is taken into a batch that blocks on the gate; the second request's
        // window waits behind it.
        let t = s.submit(&ctx, vec![(1, 10)]).unwrap();
        assert_eq!(t.wait().unwrap_err(), SchedError::Deadline);
        let other = WorkCtx::with_deadline(Some(Instant::now() + Duration::from_millis(30)));
        let t2 = s.submit(&other, vec![(2, 10)]).unwrap();
        assert_eq!(t2.wait().unwrap_err(), SchedError::Deadline);
        tx.send(()).unwrap();
        tx.send(()).unwrap();
        let ok = s.submit(&WorkCtx::none(), vec![(3, 10)]).unwrap();
        assert_eq!(ok.wait().unwrap(), vec![30]);
        // The expired request's window never ran.
        assert_eq!(tags(&log), vec![vec![1], vec![3]]);
    }

    #[test]
    fn overload_by_queued_tokens() {
        let (s, _log) = sched(10, 100);
        s.pause();
        // An empty queue admits even a request above the bound (size limits bound it).
        let big = s.submit(&WorkCtx::none(), vec![(1, 150)]).unwrap();
        assert_eq!(
            s.submit(&WorkCtx::none(), vec![(2, 1)]).unwrap_err(),
            SchedError::Overloaded
        );
        drop(big);
        let a = s.submit(&WorkCtx::none(), vec![(3, 60)]).unwrap();
        assert_eq!(
            s.submit(&WorkCtx::none(), vec![(4, 60)]).unwrap_err(),
            SchedError::Overloaded
        );
        let b = s.submit(&WorkCtx::none(), vec![(5, 40)]).unwrap();
        assert_eq!(s.stats().refused, 2);
        s.resume();
        assert_eq!(a.wait().unwrap(), vec![30]);
        assert_eq!(b.wait().unwrap(), vec![50]);
    }

    #[test]
    fn shutdown_cancels_the_queue() {
        let (s, log) = sched(10, 1000);
        s.pause();
        let t = s.submit(&WorkCtx::none(), vec![(1, 5), (1, 5)]).unwrap();
        s.close();
        assert_eq!(t.wait().unwrap_err(), SchedError::Closed);
        assert_eq!(
            s.submit(&WorkCtx::none(), vec![(2, 1)]).unwrap_err(),
            SchedError::Closed
        );
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(s.stats().queued_windows, 0);
    }

    #[test]
    fn a_panicking_batch_fails_its_requests_only() {
        let (s, _log) = sched(10, 1000);
        let bad = s.submit(&WorkCtx::none(), vec![(666, 5)]).unwrap();
        assert!(matches!(bad.wait(), Err(SchedError::Backend(_))));
        let ok = s.submit(&WorkCtx::none(), vec![(7, 5)]).unwrap();
        assert_eq!(ok.wait().unwrap(), vec![70]);
        let empty = s.submit(&WorkCtx::none(), Vec::new()).unwrap();
        assert!(empty.wait().unwrap().is_empty());
    }
}
