//! Request handling: local endpoints, authentication, the chat-completion hook and forwarding.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

use super::body::{BoxError, ProxyBody, full};
use super::error::ProxyError;
use super::headers::{strip_control_headers, strip_hop_by_hop};
use super::{AppState, Stats, Upstream};
use crate::hook::{ChatRequest, HookOutcome};

/// Entry point for every request.
pub(crate) async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return json_ok(serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            let mut body = serde_json::json!({"status": "ready"});
            if let (Some(obj), serde_json::Value::Object(extra)) =
                (body.as_object_mut(), state.hook.describe())
            {
                obj.extend(extra);
            }
            return json_ok(body);
        }
        _ => {}
    }
    Stats::bump(&state.stats.requests);
    let response = match forward(&state, req).await {
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
            e.into_response()
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

fn json_ok(value: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(value.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
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

enum OutBody {
    Buffered(Bytes),
    Streamed(reqwest::Body),
}

async fn forward(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);

    if let Some(keys) = &state.keys {
        if !keys.admits(&headers) {
            return Err(ProxyError::Unauthorized);
        }
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
    }

    let limit = state.config.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(ProxyError::BodyTooLarge { limit });
    }

    let rest = upstream_path(parts.uri.path());
    let is_chat = parts.method == Method::POST && rest == "/chat/completions";
    let wants_model_peek = !is_chat
        && !state.routes.is_empty()
        && parts.method == Method::POST
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));

    let mut extra_response_headers = Vec::new();
    let mut model: Option<String> = None;
    let body = if is_chat || wants_model_peek {
        let raw = collect_limited(incoming, limit).await?;
        if is_chat {
            Stats::bump(&state.stats.intercepted);
            match serde_json::from_slice::<serde_json::Value>(&raw) {
                Ok(json) => {
                    model = json
                        .get("model")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned);
                    let outcome: HookOutcome = state
                        .hook
                        .on_chat_request(ChatRequest {
                            raw: raw.clone(),
                            json,
                            headers: headers.clone(),
                        })
                        .await;
                    if let Some(r) = outcome.reject {
                        return Err(ProxyError::Rejected(r));
                    }
                    extra_response_headers = outcome.response_headers;
                    match outcome.body {
                        Some(rewritten) => {
                            headers.remove(header::CONTENT_LENGTH);
                            OutBody::Buffered(rewritten)
                        }
                        None => OutBody::Buffered(raw),
                    }
                }
                Err(_) => {
                    // Not ours to judge: the upstream decides what to say about it.
                    Stats::bump(&state.stats.invalid_json);
                    tracing::debug!("chat completion body is not valid JSON; forwarding unchanged");
                    OutBody::Buffered(raw)
                }
            }
        } else {
            model = peek_model(&raw);
            OutBody::Buffered(raw)
        }
    } else {
        let limited = Limited::new(incoming, limit as usize);
        OutBody::Streamed(reqwest::Body::wrap(limited))
    };
    strip_control_headers(&mut headers);

    let upstream = state.upstream_for(model.as_deref());
    let url = match parts.uri.query() {
        Some(q) => format!("{}{}?{}", upstream.base_url, rest, q),
        None => format!("{}{}", upstream.base_url, rest),
    };
    prepare_upstream_headers(&mut headers, upstream, &body);

    let body = match body {
        OutBody::Buffered(b) => reqwest::Body::from(b),
        OutBody::Streamed(b) => b,
    };
    let request = state
        .client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream request: {e}")))?;

    let first_byte = state.config.upstream.first_byte_timeout_ms;
    let upstream_response = match tokio::time::timeout(
        Duration::from_millis(first_byte),
        state.client.execute(request),
    )
    .await
    {
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout(format!(
                "no response headers within {first_byte} ms"
            )));
        }
        Ok(Err(e)) => return Err(classify_send_error(e, limit)),
        Ok(Ok(r)) => r,
    };

    let status = upstream_response.status();
    let mut response_headers = upstream_response.headers().clone();
    strip_hop_by_hop(&mut response_headers);
    let stream = upstream_response
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(|e| -> BoxError {
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

/// Reads the whole body, failing with 413 past `limit` bytes.
async fn collect_limited(incoming: Incoming, limit: u64) -> Result<Bytes, ProxyError> {
    match Limited::new(incoming, limit as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BadRequestBody(e.to_string())),
    }
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

fn prepare_upstream_headers(headers: &mut HeaderMap, upstream: &Upstream, body: &OutBody) {
    // reqwest derives Host from the URL.
    headers.remove(header::HOST);
    if matches!(body, OutBody::Buffered(_)) {
        // reqwest sets the length of a buffered body itself.
        headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(auth) = &upstream.authorization {
        headers.insert(header::AUTHORIZATION, auth.clone());
    }
}

fn classify_send_error(e: reqwest::Error, limit: u64) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return ProxyError::BodyTooLarge { limit };
        }
        source = err.source();
    }
    let timeout = e.is_timeout();
    let message = describe_reqwest(e);
    if timeout {
        return ProxyError::UpstreamTimeout(message);
    }
    ProxyError::UpstreamUnreachable(message)
}

/// A one-line description without the URL's query (which may carry secrets).
fn describe_reqwest(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
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
