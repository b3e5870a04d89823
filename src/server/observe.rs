//! Watching intercepted responses go by: billed usage, the answer text, the stream's usage
//! chunk, and the event written when the response ends.
//!
//! [`Tap`] wraps the upstream body. Chunks reach the client as they arrive; the tap only reads a
//! copy, except when the proxy itself asked for the usage chunk
//! (`stream_options.include_usage`): then it forwards whole SSE events, drops the usage-only
//! chunk and removes the `usage` key from the others, so the client sees what it would have seen
//! without the proxy.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;

use crate::ab::Arm;
use crate::telemetry::{Event, Usage};

/// Largest JSON response body read for usage; beyond it the body still passes, unread.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// How a chunk of a usage-enabled stream ends when it carries no usage.
const NULL_USAGE: &str = ",\"usage\":null}";
/// Largest answer text kept per call.
const MAX_ANSWER: usize = 1024 * 1024;

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

/// Reads the upstream's `usage` object.
pub(crate) fn parse_usage(v: &serde_json::Value) -> Option<Usage> {
    let u = v.get("usage")?;
    if !u.is_object() {
        return None;
    }
    let n = |key: &str| u.get(key).and_then(serde_json::Value::as_u64);
    let prompt = n("prompt_tokens")?;
    let completion = n("completion_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: n("total_tokens").unwrap_or(prompt + completion),
        cached_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(serde_json::Value::as_u64),
    })
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

enum Kind {
    /// `application/json`: buffered (up to a limit) and parsed at the end.
    Json {
        buf: Vec<u8>,
        overflow: bool,
    },
    /// `text/event-stream`.
    Sse {
        carry: BytesMut,
        strip: bool,
        ready: VecDeque<Bytes>,
    },
    Other,
}

/// A response body that watches what passes through it.
pub(crate) struct Tap {
    inner: BoxStream<'static, reqwest::Result<Bytes>>,
    kind: Kind,
    observed: Observed,
    answer: String,
    pending: Option<Pending>,
    done: bool,
    /// The upstream's `content-length`: hyper stops polling once that many bytes went out, so
    /// the end is recognised by the count.
    expected_len: Option<u64>,
    seen_len: u64,
}

impl Tap {
    /// `strip`: the proxy added `include_usage`, so the usage chunk must not reach the client.
    pub(crate) fn new(
        inner: BoxStream<'static, reqwest::Result<Bytes>>,
        content_type: Option<&str>,
        strip: bool,
        expected_len: Option<u64>,
        pending: Pending,
    ) -> Self {
        let ct = content_type.unwrap_or("").to_ascii_lowercase();
        let kind = if ct.starts_with("text/event-stream") {
            Kind::Sse {
                carry: BytesMut::new(),
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
            observed: Observed::default(),
            answer: String::new(),
            pending: Some(pending),
            done: false,
            expected_len,
            seen_len: 0,
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

    fn push_answer(&mut self, text: &str) {
        if self.answer.len() + text.len() <= MAX_ANSWER {
            self.answer.push_str(text);
        }
    }

    /// Looks at one complete SSE event; returns what to forward in its place (for `strip`).
    fn on_sse_event(&mut self, event: Bytes, strip: bool) -> Option<Bytes> {
        let text = match std::str::from_utf8(&event) {
            Ok(t) => t,
            Err(_) => return Some(event),
        };
        let mut data_lines = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d));
        let (Some(data), None) = (data_lines.next(), data_lines.next()) else {
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
        if let Some(u) = parse_usage(&value) {
            self.observed.usage = Some(u);
        }
        if keep_answer
            && let Some(s) = value
                .pointer("/choices/0/delta/content")
                .and_then(serde_json::Value::as_str)
        {
            let s = s.to_owned();
            self.push_answer(&s);
        }
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
        // Rebuild the event: other fields (`event:`, `id:`) stay, the data line is replaced.
        let ending = if text.ends_with("\r\n\r\n") {
            "\r\n\r\n"
        } else {
            "\n\n"
        };
        let mut out = String::with_capacity(text.len());
        for line in text.trim_end_matches(['\r', '\n']).lines() {
            if line.starts_with("data:") {
                out.push_str("data: ");
                out.push_str(&json);
            } else {
                out.push_str(line);
            }
            out.push_str(if ending == "\n\n" { "\n" } else { "\r\n" });
        }
        out.push_str(if ending == "\n\n" { "\n" } else { "\r\n" });
        Some(Bytes::from(out))
    }

    /// Splits complete events off `carry`.
    fn take_events(carry: &mut BytesMut) -> Vec<Bytes> {
        let mut events = Vec::new();
        while let Some(end) = find_event_end(carry) {
            events.push(carry.split_to(end).freeze());
        }
        events
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
            Kind::Sse { carry, strip, .. } => {
                let strip = *strip;
                carry.extend_from_slice(&chunk);
                let events = Self::take_events(carry);
                if !strip {
                    for e in events {
                        self.on_sse_event(e, false);
                    }
                    return Some(chunk);
                }
                let mut out = BytesMut::new();
                for e in events {
                    if let Some(b) = self.on_sse_event(e, true) {
                        out.extend_from_slice(&b);
                    }
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
                    self.observed.usage = parse_usage(&v);
                    if let Some(s) = v
                        .pointer("/choices/0/message/content")
                        .and_then(serde_json::Value::as_str)
                    {
                        let s = s.to_owned();
                        self.push_answer(&s);
                    }
                }
            }
            Kind::Sse { carry, strip, .. } => {
                // A final event without its blank line.
                if !carry.is_empty() {
                    let tail = carry.split().freeze();
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
            let mut observed = std::mem::take(&mut self.observed);
            if p.keep_answer {
                observed.answer = Some(std::mem::take(&mut self.answer));
            }
            p.finish(observed, error);
        }
    }
}

/// Index just past the first event terminator (`\n\n`, `\r\n\r\n`, `\r\r`) in `buf`.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            b'\n' if buf.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r'
                if buf.get(i + 1) == Some(&b'\n')
                    && buf.get(i + 2) == Some(&b'\r')
                    && buf.get(i + 3) == Some(&b'\n') =>
            {
                return Some(i + 4);
            }
            b'\r' if buf.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
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
        if self.pending.is_some() {
            self.finish(Some("client_disconnected"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn event_ends() {
        assert_eq!(find_event_end(b"data: x\n\ndata: y"), Some(9));
        assert_eq!(find_event_end(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: x\n"), None);
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
                cached_tokens: Some(4)
            })
        );
        assert_eq!(parse_usage(&serde_json::json!({"usage": null})), None);
    }
}
