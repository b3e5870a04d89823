//! The upstream leg of a request: the body that goes (buffered or streamed), the headers it
//! goes with (credentials replaced, framing left to the client library), one send bounded by
//! the first-byte timeout, and the mapping from a failed send to the client's status.
//! Forwarding (`proxy.rs`), mirror copies (`mirror.rs`) and nothing else send upstream.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, header};

use super::Upstream;
use super::error::ProxyError;

/// The body sent upstream.
pub(super) enum OutBody {
    Buffered(Bytes),
    Streamed(reqwest::Body),
}

/// Sends one upstream request, waiting at most `first_byte_timeout_ms` for its headers.
pub(super) async fn send(
    client: &reqwest::Client,
    first_byte_ms: u64,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: reqwest::Body,
    limit: u64,
) -> Result<reqwest::Response, ProxyError> {
    let request = client
        .request(method, url)
        .headers(headers)
        .body(body)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream request: {e}")))?;
    match tokio::time::timeout(
        Duration::from_millis(first_byte_ms),
        client.execute(request),
    )
    .await
    {
        Err(_) => Err(ProxyError::UpstreamTimeout(format!(
            "no response headers within {first_byte_ms} ms"
        ))),
        Ok(Err(e)) => Err(classify_send_error(e, limit)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Readies the client's headers for `upstream`.
pub(super) fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    upstream: &Upstream,
    body: &OutBody,
) {
    // reqwest derives Host from the URL.
    headers.remove(header::HOST);
    if matches!(body, OutBody::Buffered(_)) {
        // reqwest sets the length of a buffered body itself.
        headers.remove(header::CONTENT_LENGTH);
    }
    if let Some((name, value)) = &upstream.authorization {
        // The configured key replaces whatever credentials the client sent.
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
        headers.insert(name.clone(), value.clone());
    }
}

pub(super) fn classify_send_error(e: reqwest::Error, limit: u64) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return ProxyError::BodyTooLarge { limit };
        }
        if let Some(t) = err.downcast_ref::<super::body::BodyIdleTimeout>() {
            return ProxyError::RequestTimeout(t.0);
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
