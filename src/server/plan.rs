//! What an intercepted request becomes upstream: its A/B arm (and, in mirror mode, the other
//! arm's copy), the hook where the arm needs it, the events that record it, the usage request
//! added to a stream and the response headers that name the arm. Sending is
//! [`upstream`](super::upstream)'s; reading the answer is [`observe`](super::observe)'s.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::error::ProxyError;
use super::observe::{self, EventGuard, inject_include_usage};
use super::{AppState, Upstream, intake, mirror};
use crate::ab::{Arm, Assignment, Mode};
use crate::api::{StreamUsage, Surface};
use crate::headers::{HEADER_ARM, HEADER_MODE, HEADER_REQUEST_ID};
use crate::hook::{HookOutcome, HookReport, Intercepted, RequestCtx};
use crate::telemetry::Event;
use crate::telemetry::event::EVENT_VERSION;

/// An intercepted request on its way upstream: what to send and what to record.
pub(super) struct Plan {
    /// The API surface that reads its answer.
    pub(super) surface: &'static dyn Surface,
    /// The body of the arm that serves the client.
    pub(super) body: Bytes,
    /// The event of the served call (completed when the response ends; recorded as
    /// `client_disconnected` when the request is dropped before).
    pub(super) event: EventGuard,
    /// The other arm's copy, for a mirrored request.
    pub(super) mirror: Option<mirror::Copy>,
    /// Where the two answers of a mirrored request meet.
    pub(super) pair: Option<Arc<observe::PairSlot>>,
    /// The proxy added `include_usage`: strip the usage chunk from the client's stream.
    pub(super) strip_usage: bool,
    pub(super) keep_answer: bool,
    pub(super) response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// A parsed request body: the client's bytes and their parse.
pub(super) struct Parsed {
    pub(super) raw: Bytes,
    pub(super) json: serde_json::Value,
}

/// Assigns the arm, runs the hook where the arm or mode needs it, and decides what goes upstream.
/// `api_key`: the digest of the client's key, taken before it was stripped.
pub(super) async fn plan(
    state: &AppState,
    upstream: &Upstream,
    mut ctx: RequestCtx,
    parsed: Parsed,
    headers: &HeaderMap,
    api_key: Option<[u8; 32]>,
    started: Instant,
) -> Result<Plan, (ProxyError, Event)> {
    let Parsed { raw, json } = parsed;
    let tele = &state.telemetry;
    let surface = ctx.api.surface();
    let (assignment, mirror_slot) = assign(state, headers, &json, api_key);
    ctx.arm = Some(assignment.arm);
    let stream = surface.stream(&json);
    let usage = UsageRequest {
        wanted: surface.stream_usage() == StreamUsage::OptIn
            && stream
            && !is_true(json.pointer("/stream_options/include_usage"))
            && upstream.stream_usage.unwrap_or(tele.stream_usage),
        has_stream_options: json.get("stream_options").is_some(),
    };
    let mut event = EventGuard::new(
        event_of(&ctx, &assignment, stream),
        tele.clone(),
        started,
        observe::CLIENT_DISCONNECTED,
    );
    // With arms by compressor the raw arm is the control compressor's.
    let control = state.config.ab.control.is_some();
    let run_hook = assignment.arm == Arm::Compressed
        || control
        || assignment.mode == Mode::Shadow
        || assignment.mirror;
    let mut outcome = HookOutcome::default();
    let mut hook_ms = 0.0;
    if run_hook {
        let t = Instant::now();
        let request = Intercepted {
            ctx: ctx.clone(),
            raw: raw.clone(),
            json,
            headers: headers.clone(),
        };
        outcome = state.hook.on_request(request).await;
        hook_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    // What compression did belongs to the compressed arm's event (the served raw request in
    // shadow mode).
    let describe = |e: &mut Event| {
        if let Some(r) = &outcome.report {
            describe_compression(e, r, tele.log_content);
        }
        e.latency_ms.compression = hook_ms;
    };
    let compressed = outcome.body.clone();
    let mut response_headers = Vec::new();
    let mut copy = None;
    let body = match (
        assignment.mode,
        assignment.arm == Arm::Compressed || control,
    ) {
        (Mode::Shadow, _) => {
            describe(&mut event);
            response_headers = std::mem::take(&mut outcome.response_headers);
            raw.clone()
        }
        (_, true) => {
            describe(&mut event);
            if let Some(r) = outcome.reject.take() {
                event.status = r.status;
                event.error = Some("rejected".into());
                return Err((ProxyError::Rejected(r), event.take()));
            }
            response_headers = std::mem::take(&mut outcome.response_headers);
            match (&compressed, assignment.mirror) {
                (Some(c), true) => {
                    let mut e = event.clone();
                    e.arm = Some(Arm::Raw);
                    e.served = false;
                    e.compression = Some("not_run".into());
                    e.fail_open = None;
                    e.tokens = None;
                    e.cache = None;
                    e.explain = None;
                    e.latency_ms.compression = 0.0;
                    copy = Some((raw.clone(), e));
                    c.clone()
                }
                _ => compressed.clone().unwrap_or_else(|| raw.clone()),
            }
        }
        (_, false) => {
            if assignment.mirror
                && outcome.reject.is_none()
                && let Some(c) = &compressed
            {
                let mut e = event.clone();
                e.arm = Some(Arm::Compressed);
                e.served = false;
                describe(&mut e);
                copy = Some((c.clone(), e));
            }
            raw.clone()
        }
    };
    if let Some((_, copy_event)) = &mut copy {
        // The pair id is the proxy's own: a client's `x-request-id` (kept as `request_id`) could
        // be repeated to merge pairs in the report.
        let pair = pair_id();
        event.pair_id = Some(pair.clone());
        copy_event.pair_id = Some(pair);
    } else if event.mode == Mode::Mirror {
        // Nothing to compare (compression left the request as it was): no mirror copy.
        event.mode = Mode::Normal;
    }
    if tele.log_content {
        // Each copy's prompt as forwarded, parsed off the runtime.
        event.prompt = logged_prompt(surface, &body).await;
        if let Some((sent, copy_event)) = &mut copy {
            copy_event.prompt = logged_prompt(surface, sent).await;
        }
    }

    // `x-lingua-compress: off` means the client's bytes: no usage request either.
    let inject = usage.wanted && !outcome.verbatim;
    let (body, strip_usage) = match inject.then(|| usage.add(&body)).flatten() {
        Some(b) => (b, true),
        None => (body, false),
    };
    let pair = copy
        .is_some()
        .then(|| Arc::new(observe::PairSlot::default()));
    let mirror = match (copy, mirror_slot, &pair) {
        (Some((body, event)), Some(slot), Some(pair)) => Some(mirror::Copy {
            body: if inject {
                usage.add(&body).unwrap_or(body)
            } else {
                body
            },
            event,
            pair: pair.clone(),
            surface,
            slot,
        }),
        _ => None,
    };

    let header = |name: &'static str, value: &str| {
        HeaderValue::from_str(value)
            .ok()
            .map(|v| (HeaderName::from_static(name), v))
    };
    response_headers.extend(header(HEADER_ARM, assignment.arm.as_str()));
    response_headers.extend(header(HEADER_REQUEST_ID, &ctx.request_id));
    if event.mode != Mode::Normal {
        response_headers.extend(header(HEADER_MODE, event.mode.as_str()));
    }
    Ok(Plan {
        surface,
        body,
        keep_answer: tele.log_content || mirror.is_some(),
        event,
        mirror,
        pair,
        strip_usage,
        response_headers,
    })
}

/// The arm, and a place for the mirror copy when the assignment asks for one: over
/// `max_mirror_inflight`, the request is served without its copy.
fn assign(
    state: &AppState,
    headers: &HeaderMap,
    json: &serde_json::Value,
    api_key: Option<[u8; 32]>,
) -> (Assignment, Option<mirror::Slot>) {
    let mut assignment = state.assigner.assign_keyed(headers, json, api_key);
    let mut slot = None;
    if assignment.mirror {
        slot = state.mirrors.reserve();
        if slot.is_none() {
            assignment.mirror = false;
            assignment.mode = Mode::Normal;
        }
    }
    (assignment, slot)
}

/// The served call's event, before the hook and the upstream fill it in.
fn event_of(ctx: &RequestCtx, assignment: &Assignment, stream: bool) -> Event {
    let ts_ms = crate::telemetry::now_ms();
    Event {
        v: EVENT_VERSION,
        time: crate::telemetry::rfc3339_ms(ts_ms),
        ts_ms,
        request_id: ctx.request_id.clone(),
        arm: Some(assignment.arm),
        mode: assignment.mode,
        served: true,
        route: ctx.route.clone(),
        api: Some(ctx.api),
        model: ctx.model.clone(),
        stream,
        compression: Some("not_run".into()),
        ..Event::default()
    }
}

/// What the hook reported, written into an event.
fn describe_compression(e: &mut Event, r: &HookReport, log_content: bool) {
    e.compression = Some(r.compression.as_str().to_owned());
    e.fail_open = r.reason.map(|r| r.as_str().to_owned());
    e.tokens = r.tokens.clone();
    e.cache = r.cache.map(|c| c.as_str().to_owned());
    e.compressor.clone_from(&r.compressor);
    if log_content {
        e.explain = r.explain.clone();
    }
}

/// Asking a stream for its usage chunk (the client did not).
#[derive(Clone, Copy)]
struct UsageRequest {
    wanted: bool,
    has_stream_options: bool,
}

impl UsageRequest {
    fn add(self, body: &Bytes) -> Option<Bytes> {
        inject_include_usage(body, self.has_stream_options)
    }
}

/// A fresh id for the two events of a mirrored request.
fn pair_id() -> String {
    format!(
        "lp-pair-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn is_true(v: Option<&serde_json::Value>) -> bool {
    v.and_then(serde_json::Value::as_bool).unwrap_or(false)
}

/// The messages of a forwarded body, for the event log (`log_content = true`).
async fn logged_prompt(surface: &'static dyn Surface, body: &Bytes) -> Option<serde_json::Value> {
    let body = body.clone();
    intake::off_runtime(move || {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| surface.prompt(&v))
    })
    .await
    .ok()
    .flatten()
}

/// Finishes an event that never got a response body (the proxy answered with an error).
pub(super) fn finish_failed(
    state: &AppState,
    mut event: Event,
    started: Instant,
    err: &ProxyError,
) {
    let total = started.elapsed().as_secs_f64() * 1e3;
    event.latency_ms.total = total;
    event.latency_ms.overhead = total;
    if event.status == 0 {
        event.status = err.status().as_u16();
    }
    if event.error.is_none() {
        event.error = Some(err.code().to_string());
    }
    observe::EventSink::finish(&*state.telemetry, event);
}
