//! Errors the proxy itself produces, rendered in the shape of the route's provider
//! ([`ErrorShape`]: OpenAI's, Anthropic's on `/v1/messages`, Headroom's on `/v1/compress`) so
//! SDKs raise their usual exceptions (`AuthenticationError` for 401, `RateLimitError` for 429,
//! `InternalServerError` for 5xx, ...).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use thiserror::Error;

use super::body::{ProxyBody, full};
use crate::api::ErrorShape;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("invalid proxy API key")]
    Unauthorized,
    #[error("request body exceeds the proxy's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("could not read the request body: {0}")]
    BadRequestBody(String),
    #[error("upstream is unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("invalid request path: {0}")]
    InvalidPath(&'static str),
    #[error("the request carries both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)")]
    AmbiguousLength,
    #[error(
        "the request's Transfer-Encoding `{0}` is not supported: only `chunked` is (a coding the \
         proxy would drop must not reach the upstream as plain bytes)"
    )]
    UnsupportedTransferCoding(String),
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u64),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal proxy error: {0}")]
    Internal(String),
    #[error("the proxy is busy ({0}); retry shortly")]
    Overloaded(&'static str),
    #[error("{}", .0.message)]
    Rejected(crate::hook::Rejection),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequestBody(_)
            | Self::BadRequest(_)
            | Self::InvalidPath(_)
            | Self::AmbiguousLength => StatusCode::BAD_REQUEST,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::UnsupportedTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Rejected(r) => {
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    /// OpenAI's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized
            | Self::BodyTooLarge { .. }
            | Self::BadRequestBody(_)
            | Self::BadRequest(_)
            | Self::InvalidPath(_)
            | Self::AmbiguousLength
            | Self::UnsupportedTransferCoding(_)
            | Self::RequestTimeout(_)
            | Self::Forbidden(_)
            | Self::NotFound(_) => "invalid_request_error",
            Self::UpstreamUnreachable(_)
            | Self::UpstreamTimeout(_)
            | Self::Internal(_)
            | Self::Overloaded(_)
            | Self::Rejected(_) => "api_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> &str {
        match self {
            Self::Unauthorized => "invalid_api_key",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BadRequestBody(_) => "invalid_body",
            Self::BadRequest(_) => "invalid_request",
            Self::InvalidPath(_) => "invalid_path",
            Self::AmbiguousLength => "ambiguous_length",
            Self::UnsupportedTransferCoding(_) => "unsupported_transfer_coding",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::UpstreamUnreachable(_) => "upstream_unreachable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::Internal(_) => "internal_error",
            Self::Overloaded(_) => "overloaded",
            Self::Rejected(r) => &r.code,
        }
    }

    /// The error in OpenAI's shape.
    pub fn into_response(self) -> Response<ProxyBody> {
        self.into_response_shaped(ErrorShape::OpenAi)
    }

    /// The error in `shape`.
    pub fn into_response_shaped(self, shape: ErrorShape) -> Response<ProxyBody> {
        let status = self.status();
        let body = shape.body(status.as_u16(), &self.to_string(), self.kind(), self.code());
        json_error(status, &body)
    }
}

fn json_error(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Builds `{"error": {"message", "type", "param", "code"}}` with `status`.
pub fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response<ProxyBody> {
    json_error(
        status,
        &ErrorShape::OpenAi.body(status.as_u16(), message, kind, code),
    )
}
