//! A/B arms: which requests are compressed and which are forwarded raw, so that a team can prove
//! the saving on its own traffic.

use serde::{Deserialize, Serialize};

use crate::headers::HEADER_ARM;

/// Which body an upstream call carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The client's request, as sent.
    Raw,
    /// The request after the compression policy.
    Compressed,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Compressed => "compressed",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Raw => Self::Compressed,
            Self::Compressed => Self::Raw,
        }
    }

    /// `raw` / `compressed` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(Self::Raw),
            "compressed" => Some(Self::Compressed),
            _ => None,
        }
    }
}

/// How the arms are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each request is forwarded in its assigned arm.
    #[default]
    Normal,
    /// Compression is computed and recorded, but every request is forwarded raw.
    Shadow,
    /// A share of requests is sent upstream in both arms; the client gets its arm's answer.
    Mirror,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Shadow => "shadow",
            Self::Mirror => "mirror",
        }
    }
}

/// `[ab]`: the compressed-vs-raw experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbConfig {
    /// Split intercepted requests between the arms. Off: every request is in `compressed`
    /// (which still honours `[compression] enabled`).
    pub enabled: bool,
    /// Share of conversations forwarded raw, in percent (0 to 100).
    pub raw_percent: f64,
    /// What makes a conversation: `header:<name>`, `user`, `prompt_cache_key`, `api_key` or
    /// `random`. When the key is missing from a request, the OpenAI `user` field is tried, then
    /// the request gets a random arm.
    pub sticky_key: String,
    pub mode: Mode,
    /// In `mirror` mode: share of conversations sent upstream in both arms, in percent.
    pub mirror_percent: f64,
    /// Honour the request header `x-lingua-arm: raw|compressed`.
    pub allow_arm_override: bool,
    /// Mixed into the hash; change it to reshuffle which conversations land in which arm.
    /// Replicas with the same salt agree.
    pub salt: String,
    /// Mirror copies in flight at most; beyond it a request is served without its mirror copy
    /// (counted in `lingua_mirror_skipped_total`). 0 turns mirror copies off.
    pub max_mirror_inflight: usize,
    /// Arms by compressor: `[ab.control]` holds `[compression]` keys, and the `raw` arm (the
    /// control) is then compressed too, with `[compression]` overlaid by them (another `model`,
    /// `scorer` or `rate`). The two arms compare two compressors instead of compressed against
    /// raw. Normal mode only.
    pub control: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The default salt. It is public, so anyone can compute which sessions land in which bucket:
/// it is refused when mirror copies are on.
pub const PUBLIC_SALT: &str = "lingua-proxy";

/// Shortest salt accepted with mirror copies on.
pub const MIN_MIRROR_SALT: usize = 16;

/// Largest accepted `max_mirror_inflight`.
pub const MAX_MIRROR_INFLIGHT: usize = 100_000;

impl Default for AbConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            raw_percent: 0.0,
            sticky_key: "header:x-session-id".into(),
            mode: Mode::Normal,
            mirror_percent: 0.0,
            allow_arm_override: true,
            salt: PUBLIC_SALT.into(),
            max_mirror_inflight: 64,
            control: None,
        }
    }
}

/// `[compression]` with `[ab.control]`'s keys in place of its own (a nested table replaces the
/// table of the same name key by key). Errors name the key at fault.
pub fn control_compression(
    base: &crate::compress::CompressionConfig,
    control: &serde_json::Map<String, serde_json::Value>,
) -> Result<crate::compress::CompressionConfig, String> {
    fn overlay(into: &mut serde_json::Value, from: &serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    overlay(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }
    let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
    overlay(&mut merged, &serde_json::Value::Object(control.clone()));
    let cfg: crate::compress::CompressionConfig =
        serde_json::from_value(merged).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// A bad `[ab]` value: the key (below `ab.`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `ab.{key}`: {reason}")]
pub struct AbConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// Where the sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(http::HeaderName),
    User,
    PromptCacheKey,
    ApiKey,
    Random,
}

impl StickyKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(name) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        match s {
            "user" => Ok(Self::User),
            "prompt_cache_key" => Ok(Self::PromptCacheKey),
            "api_key" => Ok(Self::ApiKey),
            "random" => Ok(Self::Random),
            other => Err(format!(
                "`{other}` is not one of header:<name>, user, prompt_cache_key, api_key, random"
            )),
        }
    }
}

impl AbConfig {
    pub fn validate(&self) -> Result<(), AbConfigError> {
        for (key, v) in [
            ("raw_percent", self.raw_percent),
            ("mirror_percent", self.mirror_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(AbConfigError {
                    key,
                    reason: format!("{v} is not a percentage between 0 and 100"),
                });
            }
        }
        if self.max_mirror_inflight > MAX_MIRROR_INFLIGHT {
            return Err(AbConfigError {
                key: "max_mirror_inflight",
                reason: format!(
                    "{} is above the largest accepted value, {MAX_MIRROR_INFLIGHT}",
                    self.max_mirror_inflight
                ),
            });
        }
        let mirrors =
            self.mode == Mode::Mirror && self.mirror_percent > 0.0 && self.max_mirror_inflight > 0;
        if mirrors && (self.salt == PUBLIC_SALT || self.salt.chars().count() < MIN_MIRROR_SALT) {
            return Err(AbConfigError {
                key: "salt",
                reason: format!(
                    "with mirror copies on (`mode = \"mirror\"`, `mirror_percent` > 0), the salt \
                     must be a secret of at least {MIN_MIRROR_SALT} characters, the same on every \
                     replica (for example `openssl rand -hex 16`): with the public default a \
                     client can pick session ids that are always mirrored, sending each of its \
                     requests upstream twice"
                ),
            });
        }
        StickyKey::parse(&self.sticky_key).map_err(|reason| AbConfigError {
            key: "sticky_key",
            reason,
        })?;
        if self.control.is_some() && self.mode != Mode::Normal {
            return Err(AbConfigError {
                key: "control",
                reason: format!(
                    "arms by compressor run in mode \"normal\" (this is {:?}): shadow and \
                     mirror copies compare against the raw request",
                    self.mode.as_str()
                ),
            });
        }
        Ok(())
    }
}

/// How an arm was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A hash of the sticky key (or a fallback key).
    Sticky,
    /// No key: drawn at random.
    Random,
    /// The `x-lingua-arm` header.
    Forced,
    /// A/B is off.
    Disabled,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// The arm whose answer the client gets.
    pub arm: Arm,
    pub mode: Mode,
    /// Mirror mode: also send the other arm upstream.
    pub mirror: bool,
    pub basis: Basis,
}

/// Assigns requests to arms.
#[derive(Debug, Clone)]
pub struct Assigner {
    config: AbConfig,
    key: StickyKey,
}

/// SHA-256 of the API key a request presents (`Authorization: Bearer <key>`, else
/// `x-api-key`), so the key itself is never kept. The same key gives the same digest in
/// either header. Taken before the proxy strips the client's key (with `[auth]`), it is the
/// `api_key` sticky key.
pub fn api_key_digest(headers: &http::HeaderMap) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let key = match headers.get(http::header::AUTHORIZATION) {
        Some(v) => {
            let v = v.as_bytes();
            match v.get(..7) {
                Some(p) if p.eq_ignore_ascii_case(b"bearer ") => &v[7..],
                _ => v,
            }
        }
        None => headers.get("x-api-key")?.as_bytes(),
    };
    let key = key.trim_ascii();
    if key.is_empty() {
        return None;
    }
    Some(Sha256::digest(key).into())
}

/// A point in [0, 100) from `salt`, a purpose tag and the key: the same on every replica.
fn percent_point(salt: &str, purpose: &str, key: &[u8]) -> f64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(key);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 high bits give an exactly representable fraction in [0, 1).
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

impl Assigner {
    /// `config` must have passed [`AbConfig::validate`]; an invalid sticky key falls back to
    /// `random`.
    pub fn new(config: AbConfig) -> Self {
        let key = StickyKey::parse(&config.sticky_key).unwrap_or(StickyKey::Random);
        Self { config, key }
    }

    pub fn config(&self) -> &AbConfig {
        &self.config
    }

    /// The conversation key of a request: the configured one, else `user`, else `None`.
    /// `api_key` is the [`api_key_digest`] of the client's key when the caller took it before
    /// removing the key from `headers`; `None`: it is read from `headers`.
    pub fn sticky_key(
        &self,
        headers: &http::HeaderMap,
        body: &serde_json::Value,
        api_key: Option<[u8; 32]>,
    ) -> Option<Vec<u8>> {
        let field = |name: &str| {
            body.get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| format!("{name}:{s}").into_bytes())
        };
        let primary = match &self.key {
            StickyKey::Header(name) => headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .map(|v| [b"header:".as_slice(), v].concat()),
            StickyKey::User => field("user"),
            StickyKey::PromptCacheKey => field("prompt_cache_key"),
            StickyKey::ApiKey => api_key
                .or_else(|| api_key_digest(headers))
                .map(|d| [b"key:".as_slice(), &d].concat()),
            StickyKey::Random => return None,
        };
        primary.or_else(|| field("user"))
    }

    /// Picks the arm (and whether to mirror) for one request.
    pub fn assign(&self, headers: &http::HeaderMap, body: &serde_json::Value) -> Assignment {
        self.assign_keyed(headers, body, None)
    }

    /// [`Self::assign`] with the client key's digest taken earlier (see [`Self::sticky_key`]).
    pub fn assign_keyed(
        &self,
        headers: &http::HeaderMap,
        body: &serde_json::Value,
        api_key: Option<[u8; 32]>,
    ) -> Assignment {
        let c = &self.config;
        let forced = c
            .allow_arm_override
            .then(|| headers.get(HEADER_ARM))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(Arm::parse);
        if !c.enabled {
            return Assignment {
                arm: forced.unwrap_or(Arm::Compressed),
                mode: Mode::Normal,
                mirror: false,
                basis: if forced.is_some() {
                    Basis::Forced
                } else {
                    Basis::Disabled
                },
            };
        }
        let key = self.sticky_key(headers, body, api_key);
        let (arm_point, mirror_point, basis) = match &key {
            Some(k) => (
                percent_point(&c.salt, "arm", k),
                percent_point(&c.salt, "mirror", k),
                Basis::Sticky,
            ),
            None => (
                fastrand::f64() * 100.0,
                fastrand::f64() * 100.0,
                Basis::Random,
            ),
        };
        let (arm, basis) = match forced {
            Some(arm) => (arm, Basis::Forced),
            None if c.mode == Mode::Shadow => (Arm::Raw, basis),
            None if arm_point < c.raw_percent => (Arm::Raw, basis),
            None => (Arm::Compressed, basis),
        };
        let mirror = c.mode == Mode::Mirror && mirror_point < c.mirror_percent;
        Assignment {
            arm,
            mode: if c.mode == Mode::Mirror && !mirror {
                Mode::Normal
            } else {
                c.mode
            },
            mirror,
            basis,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn cfg(raw_percent: f64) -> AbConfig {
        AbConfig {
            enabled: true,
            raw_percent,
            ..AbConfig::default()
        }
    }

    fn session(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-session-id",
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("x")),
        );
        h
    }

    #[test]
    fn split_is_within_tolerance_and_sticky() {
        let a = Assigner::new(cfg(30.0));
        let body = serde_json::json!({});
        let n = 20_000;
        let raw = (0..n)
            .filter(|i| a.assign(&session(&format!("s-{i}")), &body).arm == Arm::Raw)
            .count();
        let share = raw as f64 / n as f64;
        // binomial sd = sqrt(.3*.7/20000) ≈ 0.0032; allow 5 sd
        assert!((share - 0.30).abs() < 0.016, "raw share {share}");
        for i in 0..200 {
            let h = session(&format!("s-{i}"));
            let first = a.assign(&h, &body);
            assert_eq!(first.basis, Basis::Sticky);
            assert!((0..5).all(|_| a.assign(&h, &body) == first));
            // another replica (a fresh assigner with the same config) agrees
            assert_eq!(Assigner::new(cfg(30.0)).assign(&h, &body), first);
        }
    }

    #[test]
    fn falls_back_to_user_then_random() {
        let a = Assigner::new(cfg(50.0));
        let none = HeaderMap::new();
        let with_user = serde_json::json!({"user": "u-17"});
        let k = a.sticky_key(&none, &with_user, None);
        assert_eq!(k.as_deref(), Some(b"user:u-17".as_slice()));
        assert_eq!(a.assign(&none, &with_user).basis, Basis::Sticky);
        assert_eq!(a.assign(&none, &serde_json::json!({})).basis, Basis::Random);
        // the header wins over `user`
        let k = a.sticky_key(&session("abc"), &with_user, None);
        assert_eq!(k.as_deref(), Some(b"header:abc".as_slice()));
    }

    #[test]
    fn forced_arm_and_modes() {
        let a = Assigner::new(cfg(0.0));
        let mut h = session("s");
        h.insert(HEADER_ARM, HeaderValue::from_static("RAW"));
        let got = a.assign(&h, &serde_json::json!({}));
        assert_eq!((got.arm, got.basis), (Arm::Raw, Basis::Forced));
        let no_override = Assigner::new(AbConfig {
            allow_arm_override: false,
            ..cfg(0.0)
        });
        assert_eq!(
            no_override.assign(&h, &serde_json::json!({})).arm,
            Arm::Compressed
        );

        let shadow = Assigner::new(AbConfig {
            mode: Mode::Shadow,
            ..cfg(0.0)
        });
        let got = shadow.assign(&session("s"), &serde_json::json!({}));
        assert_eq!(
            (got.arm, got.mode, got.mirror),
            (Arm::Raw, Mode::Shadow, false)
        );

        let mirror = Assigner::new(AbConfig {
            mode: Mode::Mirror,
            mirror_percent: 100.0,
            ..cfg(0.0)
        });
        let got = mirror.assign(&session("s"), &serde_json::json!({}));
        assert_eq!(
            (got.arm, got.mode, got.mirror),
            (Arm::Compressed, Mode::Mirror, true)
        );
        let half = Assigner::new(AbConfig {
            mode: Mode::Mirror,
            mirror_percent: 50.0,
            ..cfg(0.0)
        });
        let mirrored = (0..4000)
            .filter(|i| {
                half.assign(&session(&format!("m{i}")), &serde_json::json!({}))
                    .mirror
            })
            .count();
        assert!((1800..2200).contains(&mirrored), "{mirrored}");
    }

    #[test]
    fn api_key_is_hashed_and_the_same_in_either_header() {
        let a = Assigner::new(AbConfig {
            sticky_key: "api_key".into(),
            ..cfg(50.0)
        });
        let mut bearer = HeaderMap::new();
        bearer.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer pk-one"),
        );
        let mut x_api = HeaderMap::new();
        x_api.insert("x-api-key", HeaderValue::from_static("pk-one"));
        let body = serde_json::json!({});
        let d = api_key_digest(&bearer);
        assert!(d.is_some());
        assert_eq!(d, api_key_digest(&x_api));
        assert_ne!(d, api_key_digest(&session("pk-one")));
        let key = a.sticky_key(&bearer, &body, None).unwrap_or_default();
        assert!(
            !key.windows(6).any(|w| w == b"pk-one"),
            "the key itself is not kept"
        );
        // a digest taken before the key was stripped gives the same arm as the headers
        let stripped = HeaderMap::new();
        assert_eq!(
            a.assign_keyed(&stripped, &body, d),
            a.assign(&bearer, &body)
        );
        assert_eq!(a.assign_keyed(&stripped, &body, d).basis, Basis::Sticky);
    }

    #[test]
    fn validation_names_the_key() {
        let bad = AbConfig {
            raw_percent: 120.0,
            ..AbConfig::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.key), Err("raw_percent"));
        let bad = AbConfig {
            sticky_key: "cookie".into(),
            ..AbConfig::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.key), Err("sticky_key"));
        assert!(StickyKey::parse("header:x-conversation").is_ok());
        let bad = AbConfig {
            max_mirror_inflight: MAX_MIRROR_INFLIGHT + 1,
            ..AbConfig::default()
        };
        assert_eq!(
            bad.validate().map_err(|e| e.key),
            Err("max_mirror_inflight")
        );
    }
}
