//! The one fuzzing entry point into the crate-private response tap ([`super::observe::Tap`]):
//! arbitrary bytes, cut into arbitrary chunks, go through the tap as an upstream body would.
//! Not a public API (`crate::fuzzing` re-exports it for the fuzz targets and the corpus replay).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::observe::{EventSink, Pending, Tap};
use crate::telemetry::Event;

/// Collects the events the tap finishes.
#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn finish(&self, event: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

/// Runs the tap on one input and checks its invariants. Byte 0 holds the flags (bit 0: strip
/// the usage chunk, bits 1-2: content type SSE / SSE with parameters / JSON / other, bit 3:
/// announce the body's length as `content-length`), byte 1 seeds the chunk sizes (1 to 64
/// bytes), the rest is the upstream body.
///
/// Invariants: no panic; without stripping the client gets exactly the upstream's bytes; the
/// event is finished exactly once, when the body ends; the tap's buffer stays bounded.
pub fn sse_tap(data: &[u8]) {
    let (flags, seed, body) = match data {
        [f, s, rest @ ..] => (*f, *s, rest),
        _ => return,
    };
    let strip = flags & 1 == 1;
    let content_type = match (flags >> 1) & 3 {
        0 => "text/event-stream",
        1 => "text/event-stream; charset=utf-8",
        2 => "application/json",
        _ => "application/octet-stream",
    };
    let announce_len = flags & 8 != 0;
    let mut rng = fastrand::Rng::with_seed(u64::from(seed));
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let n = rng.usize(1..=64).min(body.len() - at);
        chunks.push(Ok(Bytes::copy_from_slice(&body[at..at + n])));
        at += n;
    }
    let sink = Arc::new(Sink::default());
    let now = Instant::now();
    let pending = Pending {
        event: Event::default(),
        sink: sink.clone(),
        started: now,
        sent: now,
        headers_at: now,
        keep_answer: flags & 16 != 0,
        log_answer: false,
        pair: None,
        drop_error: super::observe::CLIENT_DISCONNECTED,
    };
    let upstream = futures_util::stream::iter(chunks).boxed();
    // Bits 5 and 6 pick the API surface that reads the events.
    let surface = crate::api::Api::ALL[usize::from((flags >> 5) & 3)].surface();
    let mut tap = Tap::new(
        upstream,
        surface,
        Some(content_type),
        strip,
        announce_len.then_some(body.len() as u64),
        pending,
    );
    let mut out = Vec::with_capacity(body.len());
    let mut max_buffered = 0;
    loop {
        // The upstream is always ready, so the tap never waits.
        let Some(next) = tap.next().now_or_never() else {
            panic!("the tap returned Pending over a ready upstream");
        };
        max_buffered = max_buffered.max(tap.held_bytes());
        match next {
            Some(Ok(b)) => out.extend_from_slice(&b),
            Some(Err(e)) => panic!("the tap produced an error from a clean upstream: {e}"),
            None => break,
        }
    }
    let finished = sink.0.lock().map(|v| v.len()).unwrap_or(0);
    assert_eq!(
        finished, 1,
        "the event must be finished once, at the end of the body"
    );
    drop(tap);
    let finished = sink.0.lock().map(|v| v.len()).unwrap_or(0);
    assert_eq!(finished, 1, "dropping a finished tap wrote another event");
    if !strip {
        assert!(
            out == body,
            "without stripping, the client must get the upstream's bytes"
        );
    }
    assert!(
        max_buffered <= Tap::MAX_BUFFERED,
        "the tap buffered {max_buffered} bytes"
    );
}
