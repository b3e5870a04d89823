//! Watching intercepted responses go by: billed usage, the answer text, the stream's usage
//! chunk, and the event written when the response ends. What a body or an event means is the
//! API surface's ([`Surface::read_body`], [`Surface::read_event`]); the tap only frames.
//!
//! [`Tap`] wraps the upstream body. Chunks reach the client as they arrive; the tap only reads a
//! copy, except when the proxy itself asked for the usage chunk
//! (`stream_options.include_usage`): then it forwards whole SSE events, drops the usage-only
//! chunk and removes the `usage` key from the others, so the client sees what it would have seen
//! without the proxy.
//!
//! The tap never holds more than a bounded amount: a JSON body is read up to 16 MiB, one SSE
//! event up to 1 MiB (a longer event passes through unread), the answer text up to 1 MiB.
//!
//! [`EventGuard`] holds an intercepted call's event until its response body exists, so a call
//! whose client goes away earlier (while compressing, or waiting for the upstream's headers)
//! is still recorded, with `error = "client_disconnected"`.

mod sse;

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;

use crate::ab::Arm;
use crate::api::{Seen, Surface};
use crate::telemetry::{Event, Usage};

/// Largest JSON response body read for usage; beyond it the body still passes, unread.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// How a chunk of a usage-enabled stream ends when it carries no usage.
const NULL_USAGE: &str = ",\"usage\":null}";
/// Largest SSE event buffered for reading; a longer one passes through unread.
const MAX_SSE_EVENT: usize = 1024 * 1024;
/// `error` of an event whose client went away before the response ended.
pub(crate) const CLIENT_DISCONNECTED: &str = "client_disconnected";

/// Adds `"stream_options":{"include_usage":true}` to a JSON object body. Without a
/// `stream_options` key the text is inserted after the opening brace, leaving every other byte
/// as it was; otherwise the document is rewritten. `None`: not a JSON object.
///
/// `has_stream_options`: whether the request (as the client sent it) has the key; without it the
/// body is not parsed again.
pub(crate) fn inject_include_usage(body: &[u8], has_stream_options: bool) -> Option<Bytes> {
    let mut value = serde_json::Value::Null;
    let existing = if has_stream_options {
        value = serde_json::from_slice(body).ok()?;
        value.as_object_mut()?.get_mut("stream_options")
    } else {
        None
    };
    match existing {
        None => {
            let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
            if body.get(start) != Some(&b'{') {
                return None;
            }
            let rest = &body[start + 1..];
            let empty = rest.iter().all(|b| b.is_ascii_whitespace() || *b == b'}');
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(&body[..=start]);
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            Some(Bytes::from(out))
        }
        Some(serde_json::Value::Object(opts)) => {
            opts.insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_vec(&value).ok().map(Bytes::from)
        }
        // Not ours to fix: the upstream will reject it as the client wrote it.
        Some(_) => None,
    }
}

/// Reads an OpenAI-style `usage` object (Chat Completions, completions).
#[cfg(test)]
pub(crate) fn parse_usage(v: &serde_json::Value) -> Option<Usage> {
    crate::api::chat::openai_usage(v)
}

/// What the finished call reports.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub usage: Option<Usage>,
    pub answer: Option<String>,
}

/// Both answers of a mirror pair meet here; the later one computes the agreement.
#[derive(Debug, Default)]
pub(crate) struct PairSlot {
    /// The first finisher's answer (`Some(None)`: it finished without one).
    first: Mutex<Option<Option<String>>>,
}

impl PairSlot {
    /// Deposits this call's answer; returns the agreement when the other answer is already in.
    fn meet(&self, arm: Arm, answer: Option<String>) -> Option<crate::telemetry::Agreement> {
        let mut guard = match self.first.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match guard.take() {
            None => {
                *guard = Some(answer);
                None
            }
            Some(other) => {
                // A pair is one call per arm: the other answer is the other arm's.
                let (raw, compressed) = if arm == Arm::Raw {
                    (answer?, other?)
                } else {
                    (other?, answer?)
                };
                Some(crate::telemetry::agreement::agreement(&raw, &compressed))
            }
        }
    }
}

/// Receives finished events (the server's telemetry).
pub(crate) trait EventSink: Send + Sync + 'static {
    fn finish(&self, event: Event);
}

/// Everything needed to complete an event when the response ends.
pub(crate) struct Pending {
    pub event: Event,
    pub sink: Arc<dyn EventSink>,
    pub started: Instant,
    pub sent: Instant,
    pub headers_at: Instant,
    pub keep_answer: bool,
    pub log_answer: bool,
    pub pair: Option<Arc<PairSlot>>,
    /// `error` when the body is dropped before its end.
    pub drop_error: &'static str,
}

impl Pending {
    /// Completes the event with what was observed and hands it to the sink.
    pub(crate) fn finish(mut self, observed: Observed, error: Option<&str>) {
        let now = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let lat = &mut self.event.latency_ms;
        lat.total = ms(now - self.started);
        lat.upstream = ms(now - self.sent);
        lat.upstream_headers = ms(self.headers_at - self.sent);
        lat.overhead = (lat.total - lat.upstream).max(0.0);
        self.event.usage = observed.usage;
        if let Some(e) = error {
            self.event.error = Some(e.to_string());
        }
        if let (Some(pair), Some(arm)) = (&self.pair, self.event.arm) {
            self.event.agreement = pair.meet(arm, observed.answer.clone());
        }
        if self.log_answer {
            self.event.answer = observed.answer;
        }
        self.sink.finish(self.event);
    }
}

/// An intercepted call's event before a [`Tap`] takes it over. Dropped while still armed (the
/// request's future was dropped: the client went away, or shutdown cut a mirror call), it
/// finishes the event itself with `drop_error`, so no call goes unrecorded.
pub(crate) struct EventGuard {
    event: Event,
    armed: bool,
    sink: Arc<dyn EventSink>,
    started: Instant,
    /// When the request went upstream, once it did.
    pub sent: Option<Instant>,
    drop_error: &'static str,
}

impl EventGuard {
    pub(crate) fn new(
        event: Event,
        sink: Arc<dyn EventSink>,
        started: Instant,
        drop_error: &'static str,
    ) -> Self {
        Self {
            event,
            armed: true,
            sink,
            started,
            sent: None,
            drop_error,
        }
    }

    /// Disarms the guard: the caller finishes the event.
    pub(crate) fn take(mut self) -> Event {
        self.armed = false;
        std::mem::take(&mut self.event)
    }
}

impl Deref for EventGuard {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

impl DerefMut for EventGuard {
    fn deref_mut(&mut self) -> &mut Event {
        &mut self.event
    }
}

impl Drop for EventGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut event = std::mem::take(&mut self.event);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let lat = &mut event.latency_ms;
        lat.total = ms(self.started.elapsed());
        lat.upstream = self.sent.map_or(0.0, |s| ms(s.elapsed()));
        lat.overhead = (lat.total - lat.upstream).max(0.0);
        if event.error.is_none() {
            event.error = Some(self.drop_error.to_owned());
        }
        self.sink.finish(event);
    }
}

enum Kind {
    /// `application/json`: buffered (up to a limit) and parsed at the end.
    Json {
        buf: Vec<u8>,
        overflow: bool,
    },
    /// `text/event-stream`.
    Sse {
        /// The current event's bytes so far (at most `max_event`).
        carry: BytesMut,
        /// How much of `carry` the splitter has seen.
        scanned: usize,
        splitter: sse::EventSplitter,
        /// The current event outgrew `max_event`: its bytes pass through unread until it ends.
        oversized: bool,
        /// The last complete event was dropped (strip mode): an LF completing its CR line
        /// ending, split off with the next event, is dropped too.
        last_dropped: bool,
        strip: bool,
        ready: VecDeque<Bytes>,
    },
    Other,
}

/// A response body that watches what passes through it.
pub(crate) struct Tap {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    kind: Kind,
    surface: &'static dyn Surface,
    seen: Seen,
    pending: Option<Pending>,
    done: bool,
    /// The upstream's `content-length`: hyper stops polling once that many bytes went out, so
    /// the end is recognised by the count.
    expected_len: Option<u64>,
    seen_len: u64,
    /// Largest SSE event read ([`MAX_SSE_EVENT`]; smaller in tests).
    max_event: usize,
}

impl Tap {
    /// `strip`: the proxy added `include_usage`, so the usage chunk must not reach the client.
    pub(crate) fn new(
        inner: BoxStream<'static, reqwest::Result<Bytes>>,
        surface: &'static dyn Surface,
        content_type: Option<&str>,
        strip: bool,
        expected_len: Option<u64>,
        pending: Pending,
    ) -> Self {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let kind = if ct.starts_with("text/event-stream") {
            Kind::Sse {
                carry: BytesMut::new(),
                scanned: 0,
                splitter: sse::EventSplitter::default(),
                oversized: false,
                last_dropped: false,
                strip,
                ready: VecDeque::new(),
            }
        } else if ct.starts_with("application/json") {
            Kind::Json {
                buf: Vec::new(),
                overflow: false,
            }
        } else {
            Kind::Other
        };
        Self {
            inner,
            kind,
            surface,
            seen: Seen::new(pending.keep_answer),
            pending: Some(pending),
            done: false,
            expected_len,
            seen_len: 0,
            max_event: MAX_SSE_EVENT,
        }
    }

    /// Most bytes [`Self::held_bytes`] may ever report.
    pub(crate) const MAX_BUFFERED: usize = MAX_JSON_BODY;

    /// Bytes the tap holds (a JSON body read for usage, an SSE event not yet complete).
    pub(crate) fn held_bytes(&self) -> usize {
        match &self.kind {
            Kind::Json { buf, .. } => buf.len(),
            Kind::Sse { carry, ready, .. } => {
                carry.len() + ready.iter().map(Bytes::len).sum::<usize>()
            }
            Kind::Other => 0,
        }
    }

    fn keep_answer(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.keep_answer)
    }

    /// Looks at one complete SSE event; returns what to forward in its place (for `strip`).
    fn on_sse_event(&mut self, event: Bytes, strip: bool) -> Option<Bytes> {
        let text = match std::str::from_utf8(&event) {
            Ok(t) => t,
            Err(_) => return Some(event),
        };
        let (first, more) = {
            let mut data_lines = sse::lines(text).filter_map(|(at, l)| {
                let d = l.strip_prefix("data:")?;
                Some((at, l.len(), d.strip_prefix(' ').unwrap_or(d)))
            });
            (data_lines.next(), data_lines.next().is_some())
        };
        let (Some((data_at, data_len, data)), false) = (first, more) else {
            return Some(event);
        };
        let keep_answer = self.keep_answer();
        let has_usage = data.contains("\"usage\"");
        if !has_usage && !keep_answer {
            return Some(event);
        }
        // Fast path for the common chunk of a usage-enabled stream: `"usage":null` as the last
        // key (OpenAI's order). It carries no usage; when stripping, cut exactly those bytes.
        if !keep_answer && data.ends_with(NULL_USAGE) && data.matches("\"usage\"").count() == 1 {
            if !strip {
                return Some(event);
            }
            let body = text.trim_end_matches(['\r', '\n']);
            if body.ends_with(NULL_USAGE) {
                let cut = body.len() - NULL_USAGE.len();
                let mut out = String::with_capacity(text.len());
                out.push_str(&body[..cut]);
                out.push('}');
                out.push_str(&text[body.len()..]);
                return Some(Bytes::from(out));
            }
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(data) else {
            return Some(event);
        };
        // The `event:` name is only needed once the event is worth reading.
        let name = sse::lines(text).find_map(|(_, l)| {
            let n = l.strip_prefix("event:")?;
            Some(n.strip_prefix(' ').unwrap_or(n))
        });
        self.surface.read_event(name, &value, &mut self.seen);
        if !(strip && has_usage) {
            return Some(event);
        }
        let usage_only = value
            .get("choices")
            .and_then(serde_json::Value::as_array)
            .is_some_and(Vec::is_empty)
            && value.get("usage").is_some_and(|u| !u.is_null());
        if usage_only {
            return None;
        }
        let Some(obj) = value.as_object_mut() else {
            return Some(event);
        };
        if obj.remove("usage").is_none() {
            return Some(event);
        }
        let Ok(json) = serde_json::to_string(&value) else {
            return Some(event);
        };
        // Replace the data line; every other byte (`event:`, `id:`, line endings) stays.
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..data_at]);
        out.push_str("data: ");
        out.push_str(&json);
        out.push_str(&text[data_at + data_len..]);
        Some(Bytes::from(out))
    }

    fn on_chunk(&mut self, chunk: Bytes) -> Option<Bytes> {
        match &mut self.kind {
            Kind::Other => Some(chunk),
            Kind::Json { buf, overflow } => {
                if !*overflow {
                    if buf.len() + chunk.len() > MAX_JSON_BODY {
                        *overflow = true;
                        buf.clear();
                    } else {
                        buf.extend_from_slice(&chunk);
                    }
                }
                Some(chunk)
            }
            Kind::Sse {
                carry,
                scanned,
                splitter,
                oversized,
                last_dropped,
                strip,
                ..
            } => {
                let strip = *strip;
                let mut dropped = *last_dropped;
                // Bytes forwarded unread, before and after the events (strip mode).
                let mut head = Bytes::new();
                let mut tail = Bytes::new();
                let mut rest = chunk.clone();
                if *oversized {
                    // The rest of an over-long event goes by without being buffered.
                    match splitter.next_end(&rest) {
                        Some(end) => {
                            head = rest.split_to(end);
                            *oversized = false;
                        }
                        None => head = std::mem::take(&mut rest),
                    }
                }
                let mut events = Vec::new();
                if !rest.is_empty() {
                    carry.extend_from_slice(&rest);
                    while let Some(end) = splitter.next_end(&carry[*scanned..]) {
                        let end = *scanned + end;
                        // Only events within the cap are read.
                        events.push((end <= self.max_event, carry.split_to(end).freeze()));
                        *scanned = 0;
                    }
                    *scanned = carry.len();
                    if carry.len() > self.max_event {
                        tracing::debug!(
                            bytes = carry.len(),
                            "SSE event longer than the tap reads; passing it through unread"
                        );
                        *oversized = true;
                        *scanned = 0;
                        tail = carry.split().freeze();
                    }
                }
                if !strip {
                    for (readable, e) in events {
                        if readable {
                            self.on_sse_event(e, false);
                        }
                    }
                    return Some(chunk);
                }
                let mut out = BytesMut::new();
                if !head.is_empty() {
                    out.extend_from_slice(&head);
                    dropped = false;
                }
                for (readable, mut e) in events {
                    // An event longer than one byte that starts with an LF: that LF completes
                    // the previous event's CR (a lone LF would be a blank line of its own).
                    if e.len() > 1 && e.first() == Some(&b'\n') {
                        let lf = e.split_to(1);
                        if !dropped {
                            out.extend_from_slice(&lf);
                        }
                    }
                    let kept = if readable {
                        self.on_sse_event(e, true)
                    } else {
                        Some(e)
                    };
                    dropped = kept.is_none();
                    if let Some(b) = kept {
                        out.extend_from_slice(&b);
                    }
                }
                if !tail.is_empty() {
                    out.extend_from_slice(&tail);
                    dropped = false;
                }
                if let Kind::Sse { last_dropped, .. } = &mut self.kind {
                    *last_dropped = dropped;
                }
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }

    /// End of the upstream body: what is left to forward.
    fn on_end(&mut self) -> Option<Bytes> {
        let mut rest = None;
        match &mut self.kind {
            Kind::Json { buf, overflow } => {
                if !*overflow && let Ok(v) = serde_json::from_slice::<serde_json::Value>(buf) {
                    self.surface.read_body(&v, &mut self.seen);
                }
            }
            Kind::Sse {
                carry,
                strip,
                oversized,
                last_dropped,
                ..
            } => {
                // A final event without its blank line (an over-long one went by unread).
                if !carry.is_empty() && !*oversized {
                    let mut tail = carry.split().freeze();
                    if *strip && *last_dropped && tail.first() == Some(&b'\n') {
                        tail = tail.slice(1..);
                    }
                    let strip = *strip;
                    let out = self.on_sse_event(tail.clone(), strip);
                    if strip {
                        rest = out;
                    }
                }
            }
            Kind::Other => {}
        }
        rest
    }

    /// The upstream body is complete: completes the event; returns what is left to forward.
    fn end(&mut self) -> Option<Bytes> {
        self.done = true;
        let rest = self.on_end();
        self.finish(None);
        rest
    }

    fn finish(&mut self, error: Option<&str>) {
        if let Some(p) = self.pending.take() {
            let seen = std::mem::take(&mut self.seen);
            let observed = Observed {
                usage: seen.usage,
                answer: p.keep_answer.then_some(seen.answer),
            };
            p.finish(observed, error);
        }
    }
}

impl Stream for Tap {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Kind::Sse { ready, .. } = &mut this.kind
                && let Some(b) = ready.pop_front()
            {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.seen_len += chunk.len() as u64;
                    let out = this.on_chunk(chunk);
                    if this.expected_len.is_some_and(|n| this.seen_len >= n) {
                        // The last byte: finish now, hyper may not poll again.
                        let rest = this.end();
                        let out = match (out, rest) {
                            (Some(a), Some(b)) => Some([a, b].concat().into()),
                            (a, b) => a.or(b),
                        };
                        if let Some(out) = out {
                            return Poll::Ready(Some(Ok(out)));
                        }
                        return Poll::Ready(None);
                    }
                    if let Some(out) = out {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.finish(Some("upstream_body_error"));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    if let Some(b) = this.end() {
                        return Poll::Ready(Some(Ok(b)));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(error) = self.pending.as_ref().map(|p| p.drop_error) {
            self.finish(Some(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn finish(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn sse_tap(chunks: Vec<Bytes>, strip: bool, keep_answer: bool) -> (Tap, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let now = Instant::now();
        let pending = Pending {
            event: Event::default(),
            sink: sink.clone(),
            started: now,
            sent: now,
            headers_at: now,
            keep_answer,
            log_answer: keep_answer,
            pair: None,
            drop_error: CLIENT_DISCONNECTED,
        };
        let inner = futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed();
        let tap = Tap::new(
            inner,
            crate::api::Api::ChatCompletions.surface(),
            Some("text/event-stream"),
            strip,
            None,
            pending,
        );
        (tap, sink)
    }

    /// Polls the tap to its end (its inner stream is always ready).
    fn drain(tap: &mut Tap, mut each: impl FnMut(&Tap)) -> Vec<u8> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut *tap).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Ready(None) => return out,
                Poll::Pending => panic!("an always-ready stream is pending"),
            }
            each(tap);
        }
    }

    fn split_at(stream: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(stream.len());
        bounds
            .windows(2)
            .map(|w| Bytes::copy_from_slice(&stream[w[0]..w[1]]))
            .collect()
    }

    const CHUNK: &str =
        r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}"#;
    const USAGE: &str = r#"{"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

    /// A usage-enabled stream whose events end in `(line ending, blank line)` forms taken in
    /// turn from `forms`; returns it and what the client must see when the tap strips usage.
    fn usage_stream(forms: &[(&str, &str)]) -> (String, String) {
        let form = |i: usize| forms[i % forms.len()];
        let mut without_usage: serde_json::Value = serde_json::from_str(CHUNK).unwrap();
        without_usage.as_object_mut().unwrap().remove("usage");
        let stripped = serde_json::to_string(&without_usage).unwrap();
        let (mut stream, mut want) = (String::new(), String::new());
        let (le, bl) = form(0);
        stream += &format!("event: chunk{le}data: {CHUNK}{le}{bl}");
        want += &format!("event: chunk{le}data: {stripped}{le}{bl}");
        let (le, bl) = form(1);
        stream += &format!(": keep-alive{le}{bl}");
        want += &format!(": keep-alive{le}{bl}");
        let (le, bl) = form(2);
        stream += &format!("data: {USAGE}{le}{bl}");
        let (le, bl) = form(3);
        stream += &format!("data: [DONE]{le}{bl}");
        want += &format!("data: [DONE]{le}{bl}");
        (stream, want)
    }

    fn check_usage(sink: &Collect, what: &str) {
        let events = sink.0.lock().unwrap();
        assert_eq!(events.len(), 1, "{what}");
        let usage = events[0]
            .usage
            .unwrap_or_else(|| panic!("no usage: {what}"));
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens),
            (5, 2),
            "{what}"
        );
        assert_eq!(events[0].error, None, "{what}");
    }

    #[test]
    fn strips_usage_in_every_blank_line_form_at_every_chunk_boundary() {
        let forms: [&[(&str, &str)]; 6] = [
            &[("\n", "\n")],
            &[("\r\n", "\r\n")],
            &[("\r", "\r")],
            &[("\n", "\r\n")],
            &[("\r\n", "\n")],
            &[("\n", "\n"), ("\r", "\r"), ("\n", "\r\n"), ("\r\n", "\r\n")],
        ];
        for f in forms {
            let (stream, want) = usage_stream(f);
            let bytes = stream.as_bytes();
            for keep_answer in [false, true] {
                let mut cuts: Vec<Vec<usize>> = (1..bytes.len()).map(|c| vec![c]).collect();
                cuts.push(Vec::new());
                cuts.push((1..bytes.len()).collect());
                for cut in cuts {
                    let what = format!("{f:?} keep_answer={keep_answer} cuts={cut:?}");
                    let (mut tap, sink) = sse_tap(split_at(bytes, &cut), true, keep_answer);
                    let out = drain(&mut tap, |_| {});
                    assert_eq!(String::from_utf8_lossy(&out), want, "{what}");
                    drop(tap);
                    check_usage(&sink, &what);
                    if keep_answer {
                        let answer = sink.0.lock().unwrap()[0].answer.clone();
                        assert_eq!(answer.as_deref(), Some("Hel"), "{what}");
                    }
                }
                // Without stripping every byte passes as it came; usage is still read.
                let (mut tap, sink) = sse_tap(split_at(bytes, &[7, 50]), false, keep_answer);
                assert_eq!(drain(&mut tap, |_| {}), bytes);
                drop(tap);
                check_usage(&sink, &format!("{f:?} unstripped"));
            }
        }
    }

    #[test]
    fn an_over_long_event_passes_through_unread() {
        let long = format!(
            "data: {{\"usage\":{{\"prompt_tokens\":9}},\"pad\":\"{}\"}}\n\n",
            "x".repeat(300)
        );
        let (rest, want_rest) = usage_stream(&[("\n", "\n")]);
        let stream = format!("{long}{rest}");
        let want = format!("{long}{want_rest}");
        let bytes = stream.as_bytes();
        for cut in (1..bytes.len()).step_by(7) {
            let (mut tap, sink) = sse_tap(
                split_at(bytes, &[cut, (cut + 3).min(bytes.len())]),
                true,
                false,
            );
            tap.max_event = 200;
            let out = drain(&mut tap, |t| {
                if let Kind::Sse { carry, .. } = &t.kind {
                    assert!(carry.len() <= 200, "the tap buffered {} bytes", carry.len());
                }
            });
            // The long event reaches the client as it was (not inspected, so not stripped);
            // the events after it are handled as usual.
            assert_eq!(String::from_utf8_lossy(&out), want, "cut at {cut}");
            drop(tap);
            check_usage(&sink, &format!("cut at {cut}"));
        }
    }

    #[test]
    fn a_stream_that_never_ends_an_event_is_not_buffered() {
        // 8 MiB in 4 KiB chunks, no blank line: the tap holds at most 1 MiB plus one chunk,
        // and scans each byte once.
        let chunk = Bytes::from(format!("data: {}\n", "y".repeat(4089)));
        let chunks = vec![chunk.clone(); 2048];
        let (mut tap, _sink) = sse_tap(chunks, true, false);
        let mut max = 0;
        let out = drain(&mut tap, |t| {
            if let Kind::Sse { carry, .. } = &t.kind {
                max = max.max(carry.len());
            }
        });
        assert_eq!(
            out.len(),
            chunk.len() * 2048,
            "every byte still reaches the client"
        );
        assert!(max <= MAX_SSE_EVENT + chunk.len(), "buffered {max} bytes");
        let Kind::Sse { splitter, .. } = &tap.kind else {
            panic!("not an SSE tap");
        };
        assert_eq!(splitter.scanned(), out.len() as u64);
    }

    #[test]
    fn a_dropped_guard_still_records_the_call() {
        let sink = Arc::new(Collect::default());
        let event = Event {
            request_id: "r1".into(),
            ..Event::default()
        };
        let guard = EventGuard::new(event, sink.clone(), Instant::now(), CLIENT_DISCONNECTED);
        drop(guard);
        let taken = EventGuard::new(Event::default(), sink.clone(), Instant::now(), "x").take();
        assert_eq!(taken.error, None);
        let events = sink.0.lock().unwrap();
        assert_eq!(events.len(), 1, "a disarmed guard records nothing");
        assert_eq!(events[0].request_id, "r1");
        assert_eq!(events[0].error.as_deref(), Some(CLIENT_DISCONNECTED));
    }

    #[test]
    fn inject_keeps_bytes() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let out = inject_include_usage(body, false).unwrap_or_default();
        assert_eq!(
            &out[..],
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
        );
        let body = br#"{"model":"m","stream_options":{"include_usage":false}}"#;
        let out = inject_include_usage(body, true).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(inject_include_usage(b"[1]", false), None);
        assert_eq!(
            inject_include_usage(br#"{"stream_options":3}"#, true),
            None,
            "a malformed stream_options is passed on as the client wrote it"
        );
    }

    #[test]
    fn usage_parsing() {
        let v = serde_json::json!({"usage": {"prompt_tokens": 10, "completion_tokens": 3,
            "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            parse_usage(&v),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 3,
                total_tokens: 13,
                cached_tokens: Some(4),
                cache_creation_tokens: None,
            })
        );
        assert_eq!(parse_usage(&serde_json::json!({"usage": null})), None);
    }
}
