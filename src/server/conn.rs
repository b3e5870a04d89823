//! Client connections: the accept loop, the connection cap, the TLS handshake (with `[tls]`;
//! bounded by the header read timeout), HTTP/1 and HTTP/2 timeouts, the per-connection idle
//! timeout, and shutdown (drain within the grace period, then close).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::body::{BoxError, ProxyBody};
use super::edge::{AmbiguousLength, ScanIo, ScanReport};
use super::{AppState, proxy};

/// How long the event log may take to reach the disk after the connections closed.
const FLUSH_WAIT: Duration = Duration::from_millis(700);
/// How long closed connections get to unwind before their tasks are aborted.
const CLOSE_WAIT: Duration = Duration::from_millis(100);
/// At most one "max_connections reached" warning per this interval.
const FULL_WARN_EVERY: Duration = Duration::from_secs(10);

/// What every connection task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    /// Finish the requests in flight, take no new ones.
    Drain,
    /// The grace period is over: drop the connection now.
    Close,
}

/// Requests in flight on one connection and when the last one began or ended.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    requests: AtomicU64,
}

/// Held by a response body until hyper has written it (or dropped it).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Tracked {
    inner: ProxyBody,
    _guard: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(last) + idle).await;
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
            if busy && self.last_ms.load(Ordering::Relaxed) == last {
                // a long response: look again later
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// Accepts connections until `shutdown` fires, then drains and closes them (see module docs).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = state.config.server.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(
            (cfg.http2_keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.http2_keep_alive_interval_ms)),
        )
        .keep_alive_timeout(Duration::from_millis(cfg.http2_keep_alive_timeout_ms));
    let timers = ConnTimers {
        idle: Duration::from_millis(cfg.idle_timeout_ms),
        first_request: Duration::from_millis(cfg.header_read_timeout_ms),
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut last_full_warn: Option<Instant> = None;

    'accept: loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warn.is_none_or(|t| t.elapsed() >= FULL_WARN_EVERY) {
                    last_full_warn = Some(Instant::now());
                    tracing::warn!(
                        max_connections = cfg.max_connections,
                        "max_connections reached: new connections wait unaccepted until one closes"
                    );
                }
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => break 'accept,
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => break 'accept,
                        },
                    }
                }
            }
        };
        let (stream, peer) = loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break 'accept,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok(x) => break x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            builder: builder.clone(),
            state: state.clone(),
            peer,
            timers,
            phase: phase_rx.clone(),
            slot: permit,
        };
        match &tls {
            None => {
                conns.spawn(conn.serve(stream));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                conns.spawn(async move {
                    match tokio::time::timeout(timers.first_request, handshake).await {
                        Ok(Ok(stream)) => conn.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }

    drop(listener);
    cancel_queued_inference(&state);
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let deadline = std::time::Instant::now() + grace;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        connections = conns.len(),
        "shutting down: draining in-flight requests"
    );
    let _ = phase_tx.send(Phase::Drain);
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            connections = conns.len(),
            "grace period elapsed with requests still in flight; closing their connections"
        );
        let _ = phase_tx.send(Phase::Close);
        let closed = tokio::time::timeout(CLOSE_WAIT, async {
            while conns.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !closed {
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
    // Mirror copies get what is left of the grace period; the rest are cancelled, and every
    // one of them has handed its event over when this returns.
    state.mirrors.drain(deadline).await;
    // Streams that just ended (or were cut) have handed their events over: put them on disk.
    if let Some(log) = state.telemetry.event_log().cloned() {
        let flushed = tokio::task::spawn_blocking(move || log.wait_flushed(FLUSH_WAIT))
            .await
            .unwrap_or(false);
        if !flushed {
            tracing::warn!(
                wait_ms = FLUSH_WAIT.as_millis() as u64,
                "the event log did not drain in time at shutdown"
            );
        }
    }
}

/// One accepted connection, before its first byte is read.
struct Conn {
    builder: auto::Builder<TokioExecutor>,
    state: Arc<AppState>,
    peer: std::net::SocketAddr,
    timers: ConnTimers,
    phase: watch::Receiver<Phase>,
    slot: OwnedSemaphorePermit,
}

impl Conn {
    /// Serves HTTP/1 or HTTP/2 on `io` (TCP, or TLS over it) until the connection ends.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            state,
            peer,
            timers,
            phase,
            slot,
        } = self;
        let activity = Arc::new(Activity::new());
        let report = Arc::new(ScanReport::default());
        let seen = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(ScanIo::new(io, report.clone()));
        let service_activity = activity.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            // HTTP/1 requests of a connection reach the service in order: the n-th is the one
            // the scanner numbered n.
            let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
            let http1 = req.version() < http::Version::HTTP_2;
            let blind_after = report.blind_after.load(Ordering::Relaxed);
            // A request the scanner could not follow is refused like an ambiguous one; the
            // one after which it stopped is answered, then the connection closes.
            if report.flagged.load(Ordering::Relaxed) == n || (http1 && n > blind_after) {
                req.extensions_mut().insert(AmbiguousLength);
            }
            let close = http1 && n >= blind_after;
            req.extensions_mut().insert(super::edge::PeerAddr(peer));
            let guard = service_activity.begin();
            let state = state.clone();
            async move {
                let mut response = proxy::handle(state, req).await;
                if close {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(response.map(|inner| Tracked {
                    inner,
                    _guard: guard,
                }))
            }
        });
        let conn = builder.serve_connection(io, service).into_owned();
        drive(conn, peer, activity, timers, phase, slot).await;
    }
}

/// Cancels inference work that is queued but not running, so in-flight requests fail open at
/// once instead of waiting for the scorer (the hook cancels its root work context and closes
/// the model's scheduler).
fn cancel_queued_inference(state: &AppState) {
    state.hook.shutdown();
}

#[derive(Debug, Clone, Copy)]
struct ConnTimers {
    /// No request in flight for this long: close.
    idle: Duration,
    /// No request at all within this: close. hyper's header timer only starts once it knows
    /// the protocol, which needs the first bytes; a client that sends nothing meets this one.
    first_request: Duration,
}

/// Serves one connection until it ends, goes idle, or shutdown closes it.
async fn drive<C>(
    conn: C,
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
    timers: ConnTimers,
    mut phase: watch::Receiver<Phase>,
    _slot: OwnedSemaphorePermit,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    let first_request = tokio::time::sleep(timers.first_request);
    let mut first_request = std::pin::pin!(first_request);
    let mut awaiting_first = true;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                let now = if changed.is_err() { Phase::Close } else { *phase.borrow_and_update() };
                match now {
                    Phase::Run => {}
                    Phase::Drain => {
                        if !draining {
                            draining = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                    // dropping the connection closes the socket and the response in flight
                    Phase::Close => return,
                }
            }
            () = &mut first_request, if awaiting_first => {
                awaiting_first = false;
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    tracing::debug!(%peer, "no request within the header read timeout; closing");
                    return;
                }
            }
            () = activity.idle(timers.idle), if !draining => {
                tracing::debug!(%peer, "idle connection closed");
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
