//! Optional proxy credentials, compared in constant time: keys are kept as SHA-256 digests and
//! a presented key is hashed before the comparison, so neither its bytes nor its length shows
//! in the time taken (`subtle`'s slice comparison returns early when the lengths differ).

use std::path::Path;

use http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The set of keys a client may present to the proxy, as digests.
pub struct ProxyKeys {
    keys: Vec<[u8; 32]>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl std::fmt::Debug for ProxyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyKeys({} keys)", self.keys.len())
    }
}

impl ProxyKeys {
    /// Reads keys from the environment variable `env` (comma-separated) and/or `file` (one per
    /// line, `#` comments). Returns `Ok(None)` when neither is configured.
    pub fn load(env: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, String> {
        if env.is_none() && file.is_none() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        if let Some(name) = env {
            let value = std::env::var(name).map_err(|_| {
                format!("auth.keys_env names `{name}`, but that environment variable is not set")
            })?;
            keys.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| digest(k.as_bytes())),
            );
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.keys_file `{}`: {e}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|k| digest(k.as_bytes())),
            );
        }
        if keys.is_empty() {
            return Err("[auth] is configured but lists no keys".into());
        }
        Ok(Some(Self { keys }))
    }

    /// True when the request carries one of the keys as `Authorization: Bearer <key>` or
    /// `x-api-key: <key>`. Every configured key is compared, in constant time.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let mut presented: Vec<&[u8]> = Vec::with_capacity(2);
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let b = v.as_bytes();
            if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
                presented.push(b[7..].trim_ascii());
            }
        }
        if let Some(v) = headers.get("x-api-key") {
            presented.push(v.as_bytes().trim_ascii());
        }
        let mut ok = subtle::Choice::from(0u8);
        for p in &presented {
            ok |= self.matches(p);
        }
        bool::from(ok)
    }

    /// True when `value` (a header's bytes, e.g. `X-Headroom-Proxy-Token`) is a proxy key.
    pub fn admits_token(&self, value: &[u8]) -> bool {
        bool::from(self.matches(value.trim_ascii()))
    }

    /// True when the request carries `Authorization: Basic` whose password (any user name) is
    /// one of the keys. Accepted on local endpoints only, so a browser can open the dashboard.
    pub fn admits_basic(&self, headers: &HeaderMap) -> bool {
        use base64::Engine;
        let Some(v) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let b = v.as_bytes();
        if b.len() <= 6 || !b[..6].eq_ignore_ascii_case(b"basic ") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b[6..].trim_ascii())
        else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|c| *c == b':') else {
            return false;
        };
        bool::from(self.matches(&decoded[colon + 1..]))
    }

    /// Whether `presented` is one of the keys: its digest against every key's digest, each
    /// comparison over 32 bytes.
    fn matches(&self, presented: &[u8]) -> subtle::Choice {
        let d = digest(presented);
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.keys {
            ok |= d.ct_eq(k);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn keys() -> ProxyKeys {
        ProxyKeys {
            keys: vec![digest(b"alpha"), digest(b"beta")],
        }
    }

    /// Keys are held as digests and every comparison is of two 32-byte digests, whatever the
    /// presented key's length (a length mismatch no longer returns early).
    #[test]
    fn comparisons_are_of_fixed_length_digests() {
        let k = keys();
        assert!(k.keys.iter().all(|d| d.len() == 32));
        assert!(!k.keys.iter().any(|d| d.starts_with(b"alpha")));
        for presented in [&b"a"[..], b"alph", b"alpha-but-longer", b""] {
            assert!(!bool::from(k.matches(presented)));
        }
        assert!(bool::from(k.matches(b"alpha")));
        assert!(k.admits_token(b" beta "));
    }

    #[test]
    fn bearer_and_x_api_key() {
        let k = keys();
        let mut h = HeaderMap::new();
        assert!(!k.admits(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer beta"),
        );
        assert!(k.admits(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bet"),
        );
        assert!(!k.admits(&h));
        h.insert("x-api-key", HeaderValue::from_static("alpha"));
        assert!(k.admits(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic alpha"),
        );
        assert!(!k.admits(&h));
    }

    #[test]
    fn basic_password_is_the_key() {
        let k = keys();
        let mut h = HeaderMap::new();
        // "anyone:beta"
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW55b25lOmJldGE="),
        );
        assert!(k.admits_basic(&h));
        assert!(!k.admits(&h), "Basic is for local endpoints only");
        // "beta:wrong"
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YmV0YTp3cm9uZw=="),
        );
        assert!(!k.admits_basic(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert!(!k.admits_basic(&h));
    }

    #[test]
    fn loads_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "# comment\n k1 \n\nk2\n").unwrap();
        let k = ProxyKeys::load(None, Some(&p)).unwrap().unwrap();
        assert_eq!(k.keys.len(), 2);
        assert!(ProxyKeys::load(None, None).unwrap().is_none());
        std::fs::write(&p, "# none\n").unwrap();
        assert!(ProxyKeys::load(None, Some(&p)).is_err());
    }
}
