//! Background compression (`[compression] background = true`): a request that missed its
//! deadline, or had messages too large to score on the request path, is compressed again off
//! it, so the next request with the same text finds the result in the policy's cache. One
//! thread takes jobs from a bounded queue, one at a time, with the lowest scheduler priority,
//! its own deadline and no size limits; a full queue drops the job (counted).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::compression::HookStats;
use crate::api::Surface;
use crate::compress::{Policy, RequestOptions};
use crate::model::{Priority, WorkCtx};

/// A request to compress again off the request path.
pub(super) struct Job {
    pub(super) raw: Bytes,
    pub(super) json: Arc<serde_json::Value>,
    pub(super) surface: &'static dyn Surface,
    pub(super) opts: RequestOptions,
}

/// The queue of the background thread.
#[derive(Clone)]
pub(super) struct Background {
    tx: SyncSender<Job>,
    stats: Arc<HookStats>,
}

impl Background {
    /// Starts the thread; it stops when `root` is cancelled or the last sender is dropped.
    pub(super) fn start(
        policy: Arc<Policy>,
        root: WorkCtx,
        stats: Arc<HookStats>,
        capacity: usize,
        budget: Duration,
    ) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(capacity.max(1));
        let thread_stats = stats.clone();
        let spawned = std::thread::Builder::new()
            .name("lingua-background".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if root.is_cancelled() {
                        break;
                    }
                    run(&policy, &root, &thread_stats, job, budget);
                }
            });
        match spawned {
            Ok(_) => Some(Self { tx, stats }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the background compression thread");
                None
            }
        }
    }

    /// Queues a job; a full queue drops it (counted).
    pub(super) fn queue(&self, job: Job) {
        let result = match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.background_queued.fetch_add(1, Ordering::Relaxed);
                "queued"
            }
            Err(_) => {
                self.stats
                    .background_dropped
                    .fetch_add(1, Ordering::Relaxed);
                "dropped"
            }
        };
        metrics::counter!("lingua_compression_background_total", "result" => result).increment(1);
    }
}

fn run(policy: &Policy, root: &WorkCtx, stats: &HookStats, mut job: Job, budget: Duration) {
    job.opts.work = root.child(Some(Instant::now() + budget), Priority::Background);
    job.opts.ignore_size_limits = true;
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let conv = job.surface.conversation(&job.json).unwrap_or_default();
        policy.apply(&job.raw, &job.json, &conv, &job.opts)
    }));
    let result = match r {
        Ok(Ok(_)) => {
            stats.background_done.fetch_add(1, Ordering::Relaxed);
            "done"
        }
        Ok(Err(e)) => {
            tracing::info!(error = %e, "background compression gave up");
            "failed"
        }
        Err(_) => {
            tracing::warn!("background compression panicked");
            "failed"
        }
    };
    metrics::counter!("lingua_compression_background_total", "result" => result).increment(1);
}
