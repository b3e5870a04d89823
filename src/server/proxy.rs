//! Request handling: the edge checks ([`edge`](super::edge)) and local endpoints
//! ([`local`](super::local)) first, then authentication, the hook for the requests an API
//! surface intercepts ([`crate::api`]), and forwarding. Errors take the route's provider shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

use super::body::{BoxError, ProxyBody, TimeoutBody};
use super::edge;
use super::error::ProxyError;
use super::headers::{strip_control_headers, strip_hop_by_hop};
use super::intake;
use super::local::Local;
use super::mirror;
use super::observe::{self, EventGuard, inject_include_usage};
use super::upstream::{OutBody, prepare_upstream_headers, send};
use super::{AppState, Stats, Upstream};
use crate::ab::{Arm, Mode};
use crate::api::{Api, ErrorShape, StreamUsage, Surface};
use crate::headers::{HEADER_ARM, HEADER_MODE};
use crate::hook::{HookOutcome, Intercepted};
use crate::telemetry::Event;
use crate::telemetry::event::EVENT_VERSION;

/// Entry point for every request.
pub(crate) async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let shape = ErrorShape::for_path(&path);
    if let Err(e) = edge_checks(&state, &req) {
        Stats::bump(&state.stats.rejected_edge);
        tracing::warn!(%method, %path, error = %e, "request refused at the edge");
        return e.into_response_shaped(shape);
    }
    if let Some(local) = Local::route(&state, &method, &path) {
        if !local.admits(&state, req.headers()) {
            Stats::bump(&state.stats.rejected_auth);
            return local.unauthorized();
        }
        return local.serve(&state);
    }
    if method == Method::POST && path == "/v1/compress" && state.config.compress_endpoint.enabled {
        return super::compress_endpoint::serve(&state, req).await;
    }
    Stats::bump(&state.stats.requests);
    let mut intercepted = false;
    let response = match forward(&state, req, started, &mut intercepted).await {
        Ok(resp) => resp,
        Err(e) => {
            match &e {
                ProxyError::Unauthorized => Stats::bump(&state.stats.rejected_auth),
                ProxyError::BodyTooLarge { .. } => Stats::bump(&state.stats.rejected_too_large),
                ProxyError::UpstreamTimeout(_) => Stats::bump(&state.stats.upstream_timeouts),
                ProxyError::UpstreamUnreachable(_) => Stats::bump(&state.stats.upstream_errors),
                _ => {}
            }
            tracing::warn!(%method, %path, error = %e, "request failed in the proxy");
            e.into_response_shaped(shape)
        }
    };
    if !intercepted {
        crate::telemetry::metrics::record_passthrough(response.status().as_u16());
    }
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        headers_ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}

/// The checks of [`edge`] in order: framing, path, Host, Origin.
fn edge_checks(state: &AppState, req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.extensions().get::<edge::AmbiguousLength>().is_some() {
        return Err(ProxyError::AmbiguousLength);
    }
    edge::check_transfer_coding(req.headers())?;
    edge::check_path(req.uri().path())?;
    let host = edge::request_host(req.uri(), req.headers());
    if state.loopback_host_check {
        edge::check_loopback_host(host)?;
    }
    edge::check_origin(req.headers(), host, &state.config.server.allowed_origins)
}

/// The path below the upstream base URL: `/v1/chat/completions` → `/chat/completions`.
/// Paths without the `/v1` prefix are taken as already relative to the base URL.
fn upstream_path(path: &str) -> &str {
    if path == "/v1" {
        ""
    } else if let Some(rest) = path.strip_prefix("/v1/") {
        // keep the leading slash
        &path[path.len() - rest.len() - 1..]
    } else {
        path
    }
}

/// An intercepted request on its way upstream: what to send and what to record.
struct Plan {
    /// The API surface that reads its answer.
    surface: &'static dyn Surface,
    /// The body of the arm that serves the client.
    body: Bytes,
    /// The other arm's body, for a mirrored request.
    mirror: Option<Bytes>,
    /// The event of the served call (completed when the response ends; recorded as
    /// `client_disconnected` when the request is dropped before).
    event: EventGuard,
    /// The event of the mirror copy.
    mirror_event: Option<Event>,
    /// The proxy added `include_usage`: strip the usage chunk from the client's stream.
    strip_usage: bool,
    keep_answer: bool,
    response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Where the two answers of a mirrored request meet.
    pair: Option<Arc<observe::PairSlot>>,
    /// The place reserved for the mirror copy.
    mirror_slot: Option<mirror::Slot>,
}

/// The client's `x-request-id` when usable, else a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("lp-{:016x}", fastrand::u64(..)), str::to_owned)
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

/// Assigns the arm, runs the hook where the arm or mode needs it, and decides what goes upstream.
/// `api_key`: the digest of the client's key, taken before it was stripped.
#[expect(
    clippy::too_many_arguments,
    reason = "one request's parts; a request context is to replace them"
)]
async fn plan_request(
    state: &AppState,
    surface: &'static dyn Surface,
    raw: Bytes,
    json: serde_json::Value,
    headers: &HeaderMap,
    upstream: &super::Upstream,
    api_key: Option<[u8; 32]>,
    started: Instant,
) -> Result<Plan, (ProxyError, Event)> {
    let tele = &state.telemetry;
    let mut assignment = state.assigner.assign_keyed(headers, &json, api_key);
    // Over `max_mirror_inflight`, the request is served without its mirror copy.
    let mut mirror_slot = None;
    if assignment.mirror {
        mirror_slot = state.mirrors.reserve();
        if mirror_slot.is_none() {
            assignment.mirror = false;
            assignment.mode = Mode::Normal;
        }
    }
    let ts_ms = crate::telemetry::now_ms();
    let id = request_id(headers);
    let stream = surface.stream(&json);
    let opt_in_usage = surface.stream_usage() == StreamUsage::OptIn;
    let client_wants_usage = is_true(json.pointer("/stream_options/include_usage"));
    let has_stream_options = json.get("stream_options").is_some();
    let event = Event {
        v: EVENT_VERSION,
        time: crate::telemetry::rfc3339_ms(ts_ms),
        ts_ms,
        request_id: id.clone(),
        arm: Some(assignment.arm),
        mode: assignment.mode,
        served: true,
        route: upstream.name.clone(),
        api: Some(surface.api()),
        model: surface.model(&json).map(str::to_owned),
        stream,
        compression: Some("not_run".into()),
        ..Event::default()
    };
    let mut event = EventGuard::new(
        event,
        state.telemetry.clone(),
        started,
        observe::CLIENT_DISCONNECTED,
    );
    let run_hook =
        assignment.arm == Arm::Compressed || assignment.mode == Mode::Shadow || assignment.mirror;

    let mut outcome = HookOutcome::default();
    let mut hook_ms = 0.0;
    if run_hook {
        let t = Instant::now();
        outcome = state
            .hook
            .on_request(Intercepted {
                api: surface.api(),
                raw: raw.clone(),
                json,
                headers: headers.clone(),
            })
            .await;
        hook_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    // What compression did belongs to the compressed arm's event (the served raw request in
    // shadow mode).
    let describe = |e: &mut Event| {
        if let Some(r) = &outcome.report {
            e.compression = Some(r.compression.as_str().to_owned());
            e.fail_open = r.reason.map(str::to_owned);
            e.tokens = r.tokens.clone();
            e.cache = r.cache.map(str::to_owned);
            if tele.log_content {
                e.explain = r.explain.clone();
            }
        }
        e.latency_ms.compression = hook_ms;
    };
    let compressed = outcome.body.clone();
    let mut response_headers = Vec::new();
    let mut mirror = None;
    let mut mirror_event = None;
    let body = match (assignment.arm, assignment.mode) {
        (_, Mode::Shadow) => {
            describe(&mut event);
            response_headers = std::mem::take(&mut outcome.response_headers);
            raw.clone()
        }
        (Arm::Compressed, _) => {
            describe(&mut event);
            if let Some(r) = outcome.reject.take() {
                event.status = r.status;
                event.error = Some("rejected".into());
                return Err((ProxyError::Rejected(r), event.take()));
            }
            response_headers = std::mem::take(&mut outcome.response_headers);
            if assignment.mirror
                && let Some(c) = &compressed
            {
                let mut copy = event.clone();
                copy.arm = Some(Arm::Raw);
                copy.served = false;
                copy.compression = Some("not_run".into());
                copy.fail_open = None;
                copy.tokens = None;
                copy.cache = None;
                copy.explain = None;
                copy.latency_ms.compression = 0.0;
                mirror = Some(raw.clone());
                mirror_event = Some(copy);
                c.clone()
            } else {
                compressed.clone().unwrap_or_else(|| raw.clone())
            }
        }
        (Arm::Raw, _) => {
            if assignment.mirror
                && outcome.reject.is_none()
                && let Some(c) = &compressed
            {
                let mut copy = event.clone();
                copy.arm = Some(Arm::Compressed);
                copy.served = false;
                describe(&mut copy);
                mirror = Some(c.clone());
                mirror_event = Some(copy);
            }
            raw.clone()
        }
    };
    if mirror.is_some() {
        // The pair id is the proxy's own: a client's `x-request-id` (kept as `request_id`) could
        // be repeated to merge pairs in the report.
        let pair = pair_id();
        event.pair_id = Some(pair.clone());
        if let Some(m) = &mut mirror_event {
            m.pair_id = Some(pair);
        }
    } else if event.mode == Mode::Mirror {
        // Nothing to compare (compression left the request as it was): no mirror copy.
        event.mode = Mode::Normal;
    }
    if tele.log_content {
        // Each copy's prompt as forwarded, parsed off the runtime.
        event.prompt = logged_prompt(surface, &body).await;
        if let (Some(copy), Some(sent)) = (&mut mirror_event, &mirror) {
            copy.prompt = logged_prompt(surface, sent).await;
        }
    }

    // `x-lingua-compress: off` means the client's bytes: no usage request either.
    let inject = opt_in_usage
        && stream
        && !client_wants_usage
        && !outcome.verbatim
        && upstream.stream_usage.unwrap_or(tele.stream_usage);
    let (body, strip_usage) = match inject
        .then(|| inject_include_usage(&body, has_stream_options))
        .flatten()
    {
        Some(b) => (b, true),
        None => (body, false),
    };
    let mirror = match mirror {
        Some(m) if inject => Some(inject_include_usage(&m, has_stream_options).unwrap_or(m)),
        other => other,
    };

    let header = |name: &'static str, value: &str| {
        HeaderValue::from_str(value)
            .ok()
            .map(|v| (http::HeaderName::from_static(name), v))
    };
    response_headers.extend(header(HEADER_ARM, assignment.arm.as_str()));
    response_headers.extend(header(crate::headers::HEADER_REQUEST_ID, &id));
    if event.mode != Mode::Normal {
        response_headers.extend(header(HEADER_MODE, event.mode.as_str()));
    }
    let mirrored = mirror_event.is_some();
    Ok(Plan {
        surface,
        body,
        mirror,
        event,
        mirror_event,
        strip_usage,
        keep_answer: tele.log_content || mirrored,
        pair: mirrored.then(|| Arc::new(observe::PairSlot::default())),
        response_headers,
        mirror_slot: mirror_slot.filter(|_| mirrored),
    })
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
fn finish_failed(state: &AppState, mut event: Event, started: Instant, err: &ProxyError) {
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

async fn forward(
    state: &AppState,
    req: Request<Incoming>,
    started: Instant,
    intercepted: &mut bool,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);

    // The `api_key` sticky key, taken before the client's key is stripped.
    let api_key = crate::ab::api_key_digest(&headers);
    if let Some(keys) = &state.keys {
        if !keys.admits(&headers) {
            return Err(ProxyError::Unauthorized);
        }
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
    }

    let limit = state.config.max_body_bytes;
    let body_timeout = Duration::from_millis(state.config.server.body_read_timeout_ms);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }

    let rest = upstream_path(parts.uri.path());
    let api = if parts.method == Method::POST {
        Api::for_post(rest)
    } else {
        None
    };
    let wants_model_peek = api.is_none()
        && state.routes.iter().any(super::Route::needs_model)
        && parts.method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));

    let mut model: Option<String> = None;
    let mut plan: Option<Plan> = None;
    // The upstream, once the request's model is known (resolved once per request).
    let mut routed: Option<&Upstream> = None;
    // What this request holds of `max_buffered_bytes`, until its upstream answers.
    let mut held = intake::Reservation::default();
    let body = if api.is_some() || wants_model_peek {
        let raw = intake::collect(
            incoming,
            content_length,
            limit,
            body_timeout,
            &state.buffered,
            &mut held,
        )
        .await?;
        if let Some(api) = api {
            let surface = api.surface();
            Stats::bump(&state.stats.intercepted);
            let parsed = intake::parse_with(
                &raw,
                state.config.max_json_values,
                &state.buffered,
                &mut held,
                |b| serde_json::from_slice::<serde_json::Value>(b),
            )
            .await?;
            match parsed {
                intake::Parsed::Value(Ok(json)) => {
                    *intercepted = true;
                    model = surface.model(&json).map(str::to_owned);
                    let upstream = state.upstream_for(parts.uri.path(), model.as_deref());
                    routed = Some(upstream);
                    match plan_request(
                        state, surface, raw, json, &headers, upstream, api_key, started,
                    )
                    .await
                    {
                        Ok(p) => {
                            headers.remove(header::CONTENT_LENGTH);
                            let body = OutBody::Buffered(p.body.clone());
                            plan = Some(p);
                            body
                        }
                        Err((e, event)) => {
                            finish_failed(state, event, started, &e);
                            return Err(e);
                        }
                    }
                }
                intake::Parsed::TooComplex { limit } => {
                    // Compressing it would cost more than it saves: its bytes go on unchanged.
                    Stats::bump(&state.stats.too_complex);
                    metrics::counter!("lingua_compression_skipped_total", "reason" => "too_complex")
                        .increment(1);
                    tracing::warn!(
                        %api,
                        max_json_values = limit,
                        "request body has more JSON values than max_json_values; forwarding unchanged"
                    );
                    let peek = raw.clone();
                    model = intake::off_runtime(move || peek_model(&peek)).await?;
                    OutBody::Buffered(raw)
                }
                intake::Parsed::Value(Err(_)) | intake::Parsed::Invalid(_) => {
                    // Not ours to judge: the upstream decides what to say about it.
                    Stats::bump(&state.stats.invalid_json);
                    tracing::debug!(%api, "request body is not valid JSON; forwarding unchanged");
                    OutBody::Buffered(raw)
                }
            }
        } else {
            let peek = raw.clone();
            model = intake::off_runtime(move || peek_model(&peek)).await?;
            OutBody::Buffered(raw)
        }
    } else {
        let limited = Limited::new(TimeoutBody::new(incoming, body_timeout), limit as usize);
        OutBody::Streamed(reqwest::Body::wrap(limited))
    };
    strip_control_headers(&mut headers);

    let upstream = routed.unwrap_or_else(|| state.upstream_for(parts.uri.path(), model.as_deref()));
    let url = match parts.uri.query() {
        Some(q) => format!("{}{}?{}", upstream.base_url, rest, q),
        None => format!("{}{}", upstream.base_url, rest),
    };
    prepare_upstream_headers(&mut headers, upstream, &body);
    if plan.is_some() {
        // The proxy reads intercepted answers (usage, mirror agreement, stream usage
        // stripping): ask for them uncompressed. Passthrough keeps the client's header.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }

    if let Some(p) = &mut plan
        && let (Some(mirror_body), Some(mirror_event), Some(pair), Some(slot)) = (
            p.mirror.take(),
            p.mirror_event.take(),
            p.pair.clone(),
            p.mirror_slot.take(),
        )
    {
        mirror::spawn(
            state,
            slot,
            parts.method.clone(),
            url.clone(),
            headers.clone(),
            mirror_body,
            mirror_event,
            started,
            pair,
            p.surface,
        );
    }

    let body = match body {
        OutBody::Buffered(b) => reqwest::Body::from(b),
        OutBody::Streamed(b) => b,
    };
    let sent = Instant::now();
    if let Some(p) = &mut plan {
        p.event.sent = Some(sent);
    }
    let result = send(
        &state.client,
        state.config.upstream.first_byte_timeout_ms,
        parts.method,
        &url,
        headers,
        body,
        limit,
    )
    .await;
    let upstream_response = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(p) = plan {
                let mut event = p.event.take();
                event.latency_ms.upstream = sent.elapsed().as_secs_f64() * 1e3;
                finish_failed(state, event, started, &e);
            }
            return Err(e);
        }
    };
    let headers_at = Instant::now();

    let status = upstream_response.status();
    let mut response_headers = upstream_response.headers().clone();
    strip_hop_by_hop(&mut response_headers);
    let content_type = response_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_length = upstream_response.content_length();
    let upstream_stream = upstream_response.bytes_stream();
    let mut extra_response_headers = Vec::new();
    let stream: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>> = match plan {
        Some(p) => {
            extra_response_headers = p.response_headers;
            let mut event = p.event.take();
            event.status = status.as_u16();
            let pending = observe::Pending {
                event,
                sink: state.telemetry.clone(),
                started,
                sent,
                headers_at,
                keep_answer: p.keep_answer,
                log_answer: state.telemetry.log_content,
                pair: p.pair,
                drop_error: observe::CLIENT_DISCONNECTED,
            };
            if p.strip_usage {
                // the body changes length when the usage chunk is removed
                response_headers.remove(header::CONTENT_LENGTH);
            }
            Box::pin(observe::Tap::new(
                Box::pin(upstream_stream),
                p.surface,
                content_type.as_deref(),
                p.strip_usage,
                content_length,
                pending,
            ))
        }
        None => Box::pin(upstream_stream),
    };
    let stream = stream.map_ok(Frame::data).map_err(|e| -> BoxError {
        tracing::warn!(error = %e, "upstream body ended with an error");
        Box::new(e)
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    for (name, value) in extra_response_headers {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// Reads `model` from a JSON body without building a full document tree.
fn peek_model(raw: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        model: Option<String>,
    }
    serde_json::from_slice::<Peek>(raw)
        .ok()
        .and_then(|p| p.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_mapping() {
        assert_eq!(upstream_path("/v1/chat/completions"), "/chat/completions");
        assert_eq!(upstream_path("/v1/models"), "/models");
        assert_eq!(upstream_path("/v1"), "");
        assert_eq!(upstream_path("/chat/completions"), "/chat/completions");
        assert_eq!(upstream_path("/v1beta/x"), "/v1beta/x");
    }

    #[test]
    fn model_peek() {
        assert_eq!(
            peek_model(br#"{"input":"x","model":"m-1"}"#).as_deref(),
            Some("m-1")
        );
        assert_eq!(peek_model(b"not json"), None);
    }
}
