//! What a failed compression was and what follows from it, decided once for proxied requests
//! and `/v1/compress` alike: the [`Reason`] (events, headers, `/stats`, the endpoint's reply),
//! the counter, the metric and the log line (never the prompt).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Reason;
use super::compression::HookStats;
use crate::compress::CompressError;
use crate::model::Interrupted;

/// Why a compression attempt produced no outcome.
pub(super) enum Failure {
    Error(CompressError),
    Panic,
    Deadline,
}

impl Failure {
    pub(super) fn reason(&self) -> Reason {
        match self {
            Failure::Error(e) if e.is_overloaded() => Reason::Overloaded,
            Failure::Error(e) => match e.interrupted() {
                Some(Interrupted::Deadline) => Reason::Deadline,
                Some(Interrupted::Cancelled) => Reason::Cancelled,
                None => Reason::Error,
            },
            Failure::Deadline => Reason::Deadline,
            Failure::Panic => Reason::Panic,
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

    /// Counts the failure, logs one line saying what happens `then` (e.g. "forwarding the
    /// original request") and answers its reason. A full model queue is a skip
    /// (`overloaded`), not a failure.
    pub(super) fn record(&self, stats: &HookStats, deadline: Duration, then: &str) -> Reason {
        let reason = self.reason();
        let name = reason.as_str();
        let counter = match reason {
            Reason::Overloaded => {
                stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("lingua_compression_skipped_total", "reason" => name)
                    .increment(1);
                tracing::warn!("model queue full; {then}");
                return reason;
            }
            Reason::Deadline => &stats.fail_open_deadline,
            Reason::Cancelled => &stats.cancelled,
            Reason::Panic => &stats.fail_open_panic,
            _ => &stats.fail_open_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lingua_compression_fail_open_total", "reason" => name).increment(1);
        let detail = self.detail(deadline);
        tracing::warn!(reason = name, error = %detail, "compression failed; {then}");
        reason
    }
}
