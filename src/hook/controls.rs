//! The per-request controls a client may send (`x-lingua-compress`, `x-lingua-rate`), read
//! only when `[compression] allow_request_overrides` is on.

use http::HeaderMap;

use crate::compress::policy::parse_rate;
use crate::headers::{HEADER_COMPRESS, HEADER_RATE};

/// Per-request controls parsed from the headers.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Controls {
    /// `Some(false)`: off, `Some(true)`: on.
    pub(super) compress: Option<bool>,
    pub(super) rate: Option<f64>,
}

impl Controls {
    pub(super) fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let compress = match get(HEADER_COMPRESS).map(str::to_ascii_lowercase).as_deref() {
            Some("off" | "false" | "0") => Some(false),
            Some("on" | "true" | "1") => Some(true),
            _ => None,
        };
        Controls {
            compress,
            rate: get(HEADER_RATE).and_then(parse_rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn header_controls() {
        let mut h = HeaderMap::new();
        assert_eq!(Controls::from_headers(&h), Controls::default());
        h.insert(HEADER_COMPRESS, HeaderValue::from_static("OFF"));
        h.insert(HEADER_RATE, HeaderValue::from_static("0.3"));
        assert_eq!(
            Controls::from_headers(&h),
            Controls {
                compress: Some(false),
                rate: Some(0.3)
            }
        );
        h.insert(HEADER_RATE, HeaderValue::from_static("1.5"));
        assert_eq!(Controls::from_headers(&h).rate, None);
    }
}
