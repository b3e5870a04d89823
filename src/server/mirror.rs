//! Mirror copies: the arm not served to the client, sent upstream in the background so the two
//! answers can be compared. They are bounded (`[ab] max_mirror_inflight`: beyond it the copy is
//! skipped and counted, the served call is unaffected) and tracked: shutdown waits for them
//! within the grace period, then cancels the rest, and every one of them writes its event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{HeaderMap, Method, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::AppState;
use super::observe::{self, EventGuard};
use crate::telemetry::Event;

/// `error` of a mirror copy cut short by shutdown.
pub(crate) const SHUTDOWN: &str = "shutdown";
/// How long shutdown waits for cancelled mirror copies to write their events.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

/// The mirror copies in flight.
pub(crate) struct Mirrors {
    permits: Arc<Semaphore>,
    max: u32,
    cancel: watch::Sender<bool>,
    skipped: AtomicU64,
}

impl std::fmt::Debug for Mirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirrors")
            .field("max", &self.max)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// A reserved place for one mirror copy.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Mirrors {
    pub(crate) fn new(max: usize) -> Self {
        let max = u32::try_from(max.min(crate::ab::MAX_MIRROR_INFLIGHT)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            cancel: watch::channel(false).0,
            skipped: AtomicU64::new(0),
        }
    }

    /// A place for one more copy, or `None` (counted) when `max_mirror_inflight` are in flight
    /// or shutdown began.
    pub(crate) fn reserve(&self) -> Option<Slot> {
        let slot = (!*self.cancel.borrow())
            .then(|| self.permits.clone().try_acquire_owned().ok())
            .flatten();
        if slot.is_none() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("lingua_mirror_skipped_total").increment(1);
        }
        slot.map(|p| Slot { _permit: p })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.max as usize - self.permits.available_permits()
    }

    /// Mirror copies skipped since start.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Shutdown: waits until `deadline` for the copies in flight, then cancels the others (their
    /// events say `error = "shutdown"`) and waits briefly for those events to be handed over.
    pub(crate) async fn drain(&self, deadline: Instant) {
        let all = || self.permits.acquire_many(self.max);
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, all()).await.is_ok() {
            return;
        }
        tracing::warn!(
            in_flight = self.in_flight(),
            "grace period elapsed with mirror copies in flight; cancelling them"
        );
        let _ = self.cancel.send(true);
        if tokio::time::timeout(CANCEL_WAIT, all()).await.is_err() {
            tracing::warn!("cancelled mirror copies did not finish");
        }
    }
}

/// The other arm's request: what goes upstream and how its answer is recorded.
pub(crate) struct Copy {
    pub(crate) body: bytes::Bytes,
    pub(crate) event: Event,
    /// Where its answer meets the served one.
    pub(crate) pair: Arc<observe::PairSlot>,
    pub(crate) surface: &'static dyn crate::api::Surface,
    pub(crate) slot: Slot,
}

/// Sends the other arm's request in the background (to `url`, with the served request's
/// `method` and `headers`) and reads its answer to the end.
pub(crate) fn spawn(
    state: &AppState,
    copy: Copy,
    method: Method,
    url: String,
    headers: HeaderMap,
    started: Instant,
) {
    let Copy {
        body,
        event,
        pair,
        surface,
        slot,
    } = copy;
    let client = state.client.clone();
    let telemetry = state.telemetry.clone();
    let first_byte_ms = state.config.upstream.first_byte_timeout_ms;
    let limit = state.config.max_body_bytes;
    let mut cancelled = state.mirrors.cancel.subscribe();
    let call = async move {
        let mut guard = EventGuard::new(event, telemetry.clone(), started, SHUTDOWN);
        let sent = Instant::now();
        guard.sent = Some(sent);
        let result = super::upstream::send(
            &client,
            first_byte_ms,
            method,
            &url,
            headers,
            reqwest::Body::from(body),
            limit,
        )
        .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let mut event = guard.take();
                event.latency_ms.total = started.elapsed().as_secs_f64() * 1e3;
                event.latency_ms.upstream = sent.elapsed().as_secs_f64() * 1e3;
                event.error = Some(e.code().to_string());
                // the pair never meets: the served answer's agreement stays unknown
                observe::EventSink::finish(&*telemetry, event);
                return;
            }
        };
        let headers_at = Instant::now();
        let mut event = guard.take();
        event.status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let pending = observe::Pending {
            event,
            sink: telemetry.clone(),
            started,
            sent,
            headers_at,
            keep_answer: true,
            log_answer: telemetry.log_content,
            pair: Some(pair),
            drop_error: SHUTDOWN,
        };
        let content_length = response.content_length();
        let mut tap = observe::Tap::new(
            Box::pin(response.bytes_stream()),
            surface,
            content_type.as_deref(),
            false,
            content_length,
            pending,
        );
        while let Some(chunk) = tap.next().await {
            if chunk.is_err() {
                break;
            }
        }
    };
    tokio::spawn(async move {
        // Held until the copy's event is handed over (or the call is dropped).
        let _slot = slot;
        tokio::select! {
            () = call => {}
            _ = cancelled.wait_for(|c| *c) => {}
        }
    });
}
