//! `POST /v1/compress` over HTTP: who may call it, the body limit, then the hook's
//! [`compress_call`](crate::hook::RequestHook::compress_call). The contract itself (parsing,
//! validation, the reply) is [`crate::api::headroom`]; this module never calls an upstream.
//!
//! Exposure: loopback callers only (others get 404, as if the route did not exist) unless
//! `[compress_endpoint] allow_remote = true`; with `[auth]`, a proxy key is required
//! (`Authorization: Bearer`, `x-api-key` or `X-Headroom-Proxy-Token`). Errors use Headroom's
//! shape: `{"error": {"type": "invalid_request", "message"}}`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use super::AppState;
use super::body::{ProxyBody, full};
use super::edge::PeerAddr;
use super::error::ProxyError;
use super::intake::{self, Parsed, Reservation};
use crate::api::ErrorShape;
use crate::api::headroom::CompressCall;

/// Header Kong and the Headroom clients send the proxy token in.
const HEADER_PROXY_TOKEN: &str = "x-headroom-proxy-token";
/// `true` echoes the input.
const HEADER_BYPASS: &str = "x-headroom-bypass";

pub(crate) async fn serve(state: &Arc<AppState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let shape = ErrorShape::Headroom;
    let loopback = req
        .extensions()
        .get::<PeerAddr>()
        .is_some_and(|p| p.0.ip().is_loopback());
    if !loopback && !state.config.compress_endpoint.allow_remote {
        return ProxyError::NotFound("/v1/compress".into()).into_response_shaped(shape);
    }
    let req_headers = req.headers().clone();
    let headers = &req_headers;
    if let Some(keys) = &state.keys {
        let token = headers
            .get(HEADER_PROXY_TOKEN)
            .is_some_and(|v| keys.admits_token(v.as_bytes()));
        if !token && !keys.admits(headers) {
            super::Stats::bump(&state.stats.rejected_auth);
            return ProxyError::Unauthorized.into_response_shaped(shape);
        }
    }
    let bypass = headers
        .get(HEADER_BYPASS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let limit = state.config.max_body_bytes;
    let timeout = Duration::from_millis(state.config.server.body_read_timeout_ms);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut held = Reservation::default();
    let call = async {
        let raw = intake::collect(
            req.into_body(),
            content_length,
            limit,
            timeout,
            &state.buffered,
            &mut held,
        )
        .await?;
        let parsed = intake::parse_with(
            &raw,
            state.config.max_json_values,
            &state.buffered,
            &mut held,
            move |b| CompressCall::parse(b, bypass),
        )
        .await?;
        let message = match parsed {
            Parsed::Value(Ok(call)) => return Ok(call),
            Parsed::Value(Err(message)) => message,
            Parsed::Invalid(e) => format!("the body is not valid JSON: {e}"),
            Parsed::TooComplex { limit } => {
                format!("the body has more than {limit} JSON values (`max_json_values`)")
            }
        };
        tracing::debug!(error = %message, "/v1/compress: invalid request");
        Err(ProxyError::BadRequest(message))
    };
    let call = match call.await {
        Ok(c) => c,
        Err(e) => return e.into_response_shaped(shape),
    };
    // Resolved as the call's messages would be on their way upstream: the route (and its
    // tokenizer) of the shape's path and the call's model.
    let path = format!("/v1{}", call.shape.surface().path());
    let (ctx, _) = state.resolve(&path, call.shape, Some(call.model.clone()), &req_headers);
    let reply = state.hook.compress_call(ctx, call).await;
    drop(held);
    match serde_json::to_vec(&reply) {
        Ok(body) => {
            let mut resp = Response::new(full(body));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ProxyError::Internal(e.to_string()).into_response_shaped(shape),
    }
}
