//! Request handling: the edge checks ([`edge`](super::edge)) and local endpoints
//! ([`local`](super::local)) first, then `forward` as named steps: admit (authentication,
//! size), read the body, resolve and [`plan`](super::plan) what an API surface intercepts
//! ([`crate::api`]), deliver it upstream and stream the answer back. Errors take the route's
//! provider shape.

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
use super::local::Local;
use super::observe;
use super::plan::{self, Parsed, Plan};
use super::upstream::{OutBody, prepare_upstream_headers, send};
use super::{AppState, Stats, Upstream, intake, mirror};
use crate::api::{Api, ErrorShape};

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
    let response = match forward(&state, req, started).await {
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

/// A request past authentication, on its way upstream.
struct Inbound {
    method: Method,
    uri: http::Uri,
    /// The client's headers, hop-by-hop headers and (with `[auth]`) its key removed.
    headers: HeaderMap,
    /// The digest of the client's key, taken before it was stripped (the `api_key` sticky key).
    api_key: Option<[u8; 32]>,
    content_length: Option<u64>,
}

/// The body as the proxy read it.
enum InBody {
    /// An API surface's request, parsed: the hook may rewrite it.
    Intercepted { api: Api, parsed: Parsed },
    /// Read whole (to find its model, or not ours to parse) and forwarded as it came.
    Buffered { raw: Bytes, model: Option<String> },
    /// Never read by the proxy.
    Streamed(reqwest::Body),
}

/// Forwards one request: admit it, read its body, plan it when an API surface intercepts it,
/// send it upstream and stream the answer back.
async fn forward(
    state: &AppState,
    req: Request<Incoming>,
    started: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    // What this request holds of `max_buffered_bytes`, until its upstream answers.
    let mut held = intake::Reservation::default();
    let read = match admit(state, req) {
        Ok((inbound, incoming)) => read_body(state, inbound, incoming, &mut held).await,
        Err(e) => Err(e),
    };
    let result = match read {
        Ok((inbound, InBody::Intercepted { api, parsed })) => {
            return intercept(state, inbound, api, parsed, started).await;
        }
        Ok((inbound, InBody::Buffered { raw, model })) => {
            let upstream = state.upstream_for(inbound.uri.path(), model.as_deref());
            deliver(
                state,
                inbound,
                upstream,
                OutBody::Buffered(raw),
                None,
                started,
            )
            .await
        }
        Ok((inbound, InBody::Streamed(body))) => {
            let upstream = state.upstream_for(inbound.uri.path(), None);
            deliver(
                state,
                inbound,
                upstream,
                OutBody::Streamed(body),
                None,
                started,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    crate::telemetry::metrics::record_passthrough(status.as_u16());
    result
}

/// Hop-by-hop headers, proxy authentication and the declared body size.
fn admit(state: &AppState, req: Request<Incoming>) -> Result<(Inbound, Incoming), ProxyError> {
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let api_key = crate::ab::api_key_digest(&headers);
    if let Some(keys) = &state.keys {
        if !keys.admits(&headers) {
            return Err(ProxyError::Unauthorized);
        }
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
    }
    let limit = state.config.max_body_bytes;
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let inbound = Inbound {
        method: parts.method,
        uri: parts.uri,
        headers,
        api_key,
        content_length,
    };
    Ok((inbound, incoming))
}

/// Reads the body when an API surface intercepts the request or a route needs its model;
/// streams it otherwise. A body that is not valid JSON, or too complex to be worth
/// compressing, goes on unchanged.
async fn read_body(
    state: &AppState,
    inbound: Inbound,
    incoming: Incoming,
    held: &mut intake::Reservation,
) -> Result<(Inbound, InBody), ProxyError> {
    let limit = state.config.max_body_bytes;
    let body_timeout = Duration::from_millis(state.config.server.body_read_timeout_ms);
    let post = inbound.method == Method::POST;
    let api = post
        .then(|| Api::for_post(upstream_path(inbound.uri.path())))
        .flatten();
    let wants_model_peek = api.is_none()
        && post
        && state.routes.iter().any(super::Route::needs_model)
        && inbound
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
    if api.is_none() && !wants_model_peek {
        let limited = Limited::new(TimeoutBody::new(incoming, body_timeout), limit as usize);
        return Ok((inbound, InBody::Streamed(reqwest::Body::wrap(limited))));
    }
    let raw = intake::collect(
        incoming,
        inbound.content_length,
        limit,
        body_timeout,
        &state.buffered,
        held,
    )
    .await?;
    let Some(api) = api else {
        let model = peek(raw.clone()).await?;
        return Ok((inbound, InBody::Buffered { raw, model }));
    };
    Stats::bump(&state.stats.intercepted);
    let parsed = intake::parse_with(
        &raw,
        state.config.max_json_values,
        &state.buffered,
        held,
        |b| serde_json::from_slice::<serde_json::Value>(b),
    )
    .await?;
    let body = match parsed {
        intake::Parsed::Value(Ok(json)) => InBody::Intercepted {
            api,
            parsed: Parsed { raw, json },
        },
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
            let model = peek(raw.clone()).await?;
            InBody::Buffered { raw, model }
        }
        intake::Parsed::Value(Err(_)) | intake::Parsed::Invalid(_) => {
            // Not ours to judge: the upstream decides what to say about it.
            Stats::bump(&state.stats.invalid_json);
            tracing::debug!(%api, "request body is not valid JSON; forwarding unchanged");
            InBody::Buffered { raw, model: None }
        }
    };
    Ok((inbound, body))
}

/// An intercepted request: resolved once into its context and route, planned (arm, hook,
/// events), then delivered.
async fn intercept(
    state: &AppState,
    inbound: Inbound,
    api: Api,
    parsed: Parsed,
    started: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let model = api.surface().model(&parsed.json).map(str::to_owned);
    let (ctx, upstream) = state.resolve(inbound.uri.path(), api, model, &inbound.headers);
    let planned = plan::plan(
        state,
        upstream,
        ctx,
        parsed,
        &inbound.headers,
        inbound.api_key,
        started,
    )
    .await;
    let plan = match planned {
        Ok(p) => p,
        Err((e, event)) => {
            plan::finish_failed(state, event, started, &e);
            return Err(e);
        }
    };
    let body = OutBody::Buffered(plan.body.clone());
    deliver(state, inbound, upstream, body, Some(plan), started).await
}

/// Sends the request (and a planned request's mirror copy) to `upstream` and streams the
/// answer back; a planned request's answer is read on the way for its event.
async fn deliver(
    state: &AppState,
    inbound: Inbound,
    upstream: &Upstream,
    body: OutBody,
    mut plan: Option<Plan>,
    started: Instant,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Inbound {
        method,
        uri,
        mut headers,
        ..
    } = inbound;
    strip_control_headers(&mut headers);
    let rest = upstream_path(uri.path());
    let url = match uri.query() {
        Some(q) => format!("{}{}?{}", upstream.base_url, rest, q),
        None => format!("{}{}", upstream.base_url, rest),
    };
    prepare_upstream_headers(&mut headers, upstream, &body);
    if let Some(p) = &mut plan {
        // The proxy reads intercepted answers (usage, mirror agreement, stream usage
        // stripping): ask for them uncompressed. Passthrough keeps the client's header.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Some(copy) = p.mirror.take() {
            mirror::spawn(
                state,
                copy,
                method.clone(),
                url.clone(),
                headers.clone(),
                started,
            );
        }
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
        method,
        &url,
        headers,
        body,
        state.config.max_body_bytes,
    )
    .await;
    match result {
        Ok(r) => Ok(respond(state, r, plan, started, sent)),
        Err(e) => {
            if let Some(p) = plan {
                let mut event = p.event.take();
                event.latency_ms.upstream = sent.elapsed().as_secs_f64() * 1e3;
                plan::finish_failed(state, event, started, &e);
            }
            Err(e)
        }
    }
}

/// The client's response: the upstream's status, headers and body as they come, plus a
/// planned request's headers; a planned request's body passes through [`observe::Tap`].
fn respond(
    state: &AppState,
    upstream_response: reqwest::Response,
    plan: Option<Plan>,
    started: Instant,
    sent: Instant,
) -> Response<ProxyBody> {
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
    response
}

/// The `model` of a buffered body, read off the async runtime unless the body is small.
async fn peek(raw: Bytes) -> Result<Option<String>, ProxyError> {
    intake::off_runtime_if_large(raw.len(), move || peek_model(&raw)).await
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
