//! Every `x-lingua-*` header name the proxy reads or writes, defined once. A leaf module: plain
//! `&str` constants, no HTTP types, so the hook, the A/B layer, the server, tests and
//! benchmarks all spell a header the same way.
//!
//! | Header | Direction | Meaning |
//! |---|---|---|
//! | [`HEADER_COMPRESS`] `x-lingua-compress` | request | `off` / `on`: skip or force compression |
//! | [`HEADER_RATE`] `x-lingua-rate` | request | `<0..1>`: one rate for every role |
//! | [`HEADER_ARM`] `x-lingua-arm` | request, response | `raw` / `compressed`: the A/B arm forced or served |
//! | [`HEADER_MODE`] `x-lingua-ab-mode` | response | `shadow` / `mirror` when those modes applied |
//! | [`HEADER_TOKENS_BEFORE`] `x-lingua-tokens-before` | response | prompt tokens before compression |
//! | [`HEADER_TOKENS_AFTER`] `x-lingua-tokens-after` | response | prompt tokens after compression |
//! | [`HEADER_COMPRESSION_MS`] `x-lingua-compression-ms` | response | time spent compressing |
//! | [`HEADER_CACHE`] `x-lingua-cache` | response | compression cache `hit` / `miss` / `partial` |
//! | [`HEADER_SKIPPED`] `x-lingua-skipped` | response | why compression did not run |
//! | [`HEADER_REQUEST_ID`] `x-lingua-request-id` | response | the proxy's id of the request |
//!
//! Every request header starting with [`CONTROL_PREFIX`] is the proxy's own and is removed
//! before the request goes upstream.

/// Prefix of the proxy's control headers; none of them ever reaches the upstream.
pub const CONTROL_PREFIX: &str = "x-lingua-";
/// `x-lingua-compress: off|on`.
pub const HEADER_COMPRESS: &str = "x-lingua-compress";
/// `x-lingua-rate: <0..1>`.
pub const HEADER_RATE: &str = "x-lingua-rate";
/// Prompt tokens before compression.
pub const HEADER_TOKENS_BEFORE: &str = "x-lingua-tokens-before";
/// Prompt tokens after compression.
pub const HEADER_TOKENS_AFTER: &str = "x-lingua-tokens-after";
/// Milliseconds spent compressing.
pub const HEADER_COMPRESSION_MS: &str = "x-lingua-compression-ms";
/// Compression cache status of the request.
pub const HEADER_CACHE: &str = "x-lingua-cache";
/// Why compression did not run: `off`, `disabled`, `overloaded`, `too_large`, `error`, `panic`,
/// `deadline`, `cancelled`, `shutting_down`.
pub const HEADER_SKIPPED: &str = "x-lingua-skipped";
/// Request header that forces the arm, and response header naming the arm that served.
pub const HEADER_ARM: &str = "x-lingua-arm";
/// Response header: `shadow` or `mirror` when those modes applied to the request.
pub const HEADER_MODE: &str = "x-lingua-ab-mode";
/// Response header: the proxy's id of the request (the client's `x-request-id` when it sent one).
pub const HEADER_REQUEST_ID: &str = "x-lingua-request-id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_lowercase_control_header() {
        for name in [
            HEADER_COMPRESS,
            HEADER_RATE,
            HEADER_TOKENS_BEFORE,
            HEADER_TOKENS_AFTER,
            HEADER_COMPRESSION_MS,
            HEADER_CACHE,
            HEADER_SKIPPED,
            HEADER_ARM,
            HEADER_MODE,
            HEADER_REQUEST_ID,
        ] {
            assert!(name.starts_with(CONTROL_PREFIX), "{name}");
            assert_eq!(name, name.to_ascii_lowercase(), "{name}");
            assert!(http::HeaderName::from_static(name).as_str() == name);
        }
    }
}
