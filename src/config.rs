//! Configuration: built-in defaults, then the TOML file, then `LINGUA_PROXY_*` environment
//! variables (`__` separates nesting levels), then command-line flags.
//!
//! Every key is documented in `proxy.toml` and docs/configuration.md. Loading validates
//! every value and names the offending key in its error, before anything listens.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ab::AbConfig;
use crate::compress::{CompressionConfig, TokenizerKind};
use crate::model::ModelConfig;
use crate::telemetry::{Price, TelemetryConfig};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "LINGUA_PROXY_";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    Missing { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Figment(String),
    #[error("invalid configuration: key `{key}`: {message} (expected {expected})")]
    Invalid {
        key: String,
        message: String,
        expected: &'static str,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>, expected: &'static str) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
            expected,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the proxy listens on.
    pub listen: String,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: u64,
    /// Bytes of buffered request bodies the process holds at once, counting each body and an
    /// estimate of its parsed form; past it a request waits (up to
    /// `server.body_read_timeout_ms`), then gets 503 `overloaded`.
    pub max_buffered_bytes: u64,
    /// JSON values (objects, arrays, keys, scalars) an intercepted body may have to be parsed
    /// and compressed; a body with more is forwarded unchanged (`/v1/compress` answers 400).
    pub max_json_values: u64,
    /// How long in-flight requests and streams may run after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// The client-facing edge: timeouts, connection cap, Origin/Host checks.
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub routes: Vec<RouteConfig>,
    /// `POST /v1/compress` (the Headroom contract).
    pub compress_endpoint: CompressEndpointConfig,
    pub log: LogConfig,
    pub compression: CompressionConfig,
    /// Where compressed texts are cached: in each process, or shared between replicas.
    pub cache: CacheConfig,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of cleartext.
    pub tls: TlsConfig,
    /// Where the model runs and how its scheduler is sized.
    pub model: ModelConfig,
    pub ab: AbConfig,
    pub telemetry: TelemetryConfig,
    /// Extra or replaced prices, US dollars per million tokens, by model name prefix.
    pub prices: BTreeMap<String, Price>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_json_values: 262_144,
            shutdown_grace_ms: 30_000,
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            auth: AuthConfig::default(),
            routes: Vec::new(),
            compress_endpoint: CompressEndpointConfig::default(),
            log: LogConfig::default(),
            compression: CompressionConfig::default(),
            cache: CacheConfig::default(),
            tls: TlsConfig::default(),
            model: ModelConfig::default(),
            ab: AbConfig::default(),
            telemetry: TelemetryConfig::default(),
            prices: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL requests are forwarded to: `/v1/<rest>` goes to `<base_url>/<rest>`.
    pub base_url: String,
    /// Name of an environment variable holding the upstream API key. When set, its value
    /// replaces the client's credentials; otherwise the client's headers pass through.
    pub api_key_env: Option<String>,
    /// How that key is sent: `authorization` (Bearer) or `x-api-key`.
    pub key_header: KeyHeader,
    /// TCP + TLS connect timeout.
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response headers arrive.
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed while reading a response body (no total timeout on streams).
    pub idle_timeout_ms: u64,
    /// PEM file of extra CAs trusted for upstream TLS (a private CA), beside the platform's
    /// roots.
    pub ca_path: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: None,
            key_header: KeyHeader::Authorization,
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 600_000,
            idle_timeout_ms: 300_000,
            ca_path: None,
        }
    }
}

/// The client-facing edge (docs/reliability.md, "Hardened edge").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Time a client has to send a request's headers. While an HTTP/1 connection waits for its
    /// next request the same timer runs, so it also bounds keep-alive idleness.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a buffered request body (chat completions and JSON bodies the
    /// proxy reads in full), and the longest silence inside a streamed (passthrough) body.
    pub body_read_timeout_ms: u64,
    /// A connection (HTTP/1 or HTTP/2) with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval (0 disables pings).
    pub http2_keep_alive_interval_ms: u64,
    /// How long an HTTP/2 ping may stay unanswered before the connection is closed.
    pub http2_keep_alive_timeout_ms: u64,
    /// Connections served at once; further connections wait (unaccepted) until one closes.
    pub max_connections: usize,
    /// Browser origins allowed to call the proxy (`*` allows any). Empty: only same-origin
    /// pages (Origin host equals Host). Requests without `Origin` (SDKs, curl) always pass.
    pub allowed_origins: Vec<String>,
    /// When listening on a loopback address without `[auth]`, refuse requests whose Host is not
    /// a loopback name (DNS rebinding).
    pub loopback_host_check: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            idle_timeout_ms: 120_000,
            http2_keep_alive_interval_ms: 20_000,
            http2_keep_alive_timeout_ms: 20_000,
            max_connections: 1024,
            allowed_origins: Vec::new(),
            loopback_host_check: true,
        }
    }
}

/// Optional proxy credentials clients must present.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Environment variable holding a comma-separated list of accepted proxy keys.
    pub keys_env: Option<String>,
    /// File with one accepted proxy key per line (`#` starts a comment).
    pub keys_file: Option<PathBuf>,
    /// Local endpoints (`/healthz`, `/readyz`, `/metrics`, `/stats`, `/dashboard`) answered
    /// without a proxy key. Proxied paths always need one.
    pub public_paths: Vec<String>,
    /// Start on a non-loopback address with an injected upstream key (`api_key_env`) and no
    /// proxy keys. Off: that combination is refused, since anyone who reaches the proxy would
    /// spend the operator's key.
    pub allow_unauthenticated: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys_env: None,
            keys_file: None,
            public_paths: vec!["/healthz".into()],
            allow_unauthenticated: false,
        }
    }
}

impl AuthConfig {
    /// True when proxy keys are configured.
    pub fn enabled(&self) -> bool {
        self.keys_env.is_some() || self.keys_file.is_some()
    }
}

/// The local endpoints `[auth] public_paths` may name.
pub const LOCAL_PATHS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/stats", "/dashboard"];

/// How an upstream's key is sent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and compatible APIs).
    #[default]
    Authorization,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
}

/// `[compress_endpoint]`: the Headroom-compatible `POST /v1/compress`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressEndpointConfig {
    /// Serve `POST /v1/compress` at all.
    pub enabled: bool,
    /// Answer callers that are not on loopback (they get 404 otherwise). With `[auth]`, the
    /// proxy key is required either way.
    pub allow_remote: bool,
}

impl Default for CompressEndpointConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_remote: false,
        }
    }
}

/// Chooses another upstream by the request's path and/or `model`; the first route whose every
/// given condition matches wins (a route with neither matches nothing).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The `route` label of metrics and events; defaults to the model or path prefix.
    #[serde(default)]
    pub name: Option<String>,
    /// Requests whose `model` starts with this (empty: any model).
    #[serde(default)]
    pub model_prefix: String,
    /// Requests whose path starts with this, e.g. `/v1/messages` (empty: any path).
    #[serde(default)]
    pub path_prefix: String,
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// How the key of `api_key_env` is sent: `authorization` (Bearer) or `x-api-key`.
    #[serde(default)]
    pub key_header: KeyHeader,
    /// Tokenizer for counting this route's prompt tokens (`o200k_base`, `cl100k_base`);
    /// unset: chosen from the model name, else `compression.default_tokenizer`.
    #[serde(default)]
    pub tokenizer: Option<TokenizerKind>,
    /// With `[auth]` and no `api_key_env` of its own, send `[upstream]`'s key to this route's
    /// host. Off: a key goes only to the host it was configured for (a route on the same
    /// scheme, host and port as `upstream.base_url` gets it anyway).
    #[serde(default)]
    pub use_default_key: bool,
    /// Ask streamed Chat Completions and completions on this route for the usage chunk
    /// (`stream_options.include_usage`); unset: `[telemetry] stream_usage`. Off for upstreams
    /// that reject `stream_options`.
    #[serde(default)]
    pub stream_usage: Option<bool>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// The TLS listener: set both paths to serve HTTPS. The files are read again on SIGHUP and
/// when they change, without dropping a connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

/// Where compressed texts are cached. `[compression] cache_bytes` sizes the in-process cache,
/// which stays in front of a shared one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `memory`: each process its own cache. `redis`: also a Redis shared by every replica,
    /// so a conversation compressed on one is a cache hit on the others.
    pub backend: CacheBackend,
    /// `redis://[user:password@]host:port[/db]` (or `unix:///path`); required with `redis`.
    pub redis_url: Option<String>,
    /// Prefix of every key the proxy writes (several deployments can share one Redis).
    pub key_prefix: String,
    /// How long an entry lives in Redis, in seconds.
    pub ttl_s: u64,
    /// A Redis lookup slower than this is a miss; after a failure lookups are skipped for a
    /// second while the connection recovers by itself, so an outage never holds a request.
    pub timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: CacheBackend::Memory,
            redis_url: None,
            key_prefix: "lingua:".into(),
            ttl_s: 86_400,
            timeout_ms: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `lingua_proxy=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Command-line overrides, applied last.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub upstream: Option<String>,
}

impl Config {
    /// Loads defaults, then `file` (required to exist when given), then the environment, then
    /// `overrides`, and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, config_env(ENV_PREFIX))
    }

    /// Like [`Config::load`] with an explicit environment provider (tests use this).
    pub fn load_with_env(
        file: Option<&Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing {
                    path: path.to_owned(),
                    message: "no such file".into(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env);
        if let Some(listen) = &overrides.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(upstream) = &overrides.upstream {
            figment = figment.merge(Serialized::default("upstream.base_url", upstream));
        }
        let config: Config = figment.extract().map_err(|e| {
            let messages: Vec<String> = e.into_iter().map(|e| describe_figment(&e)).collect();
            ConfigError::Figment(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: addresses, URLs, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_body_bytes",
                "must be positive",
                "a number of bytes > 0",
            ));
        }
        if self.max_buffered_bytes < self.max_body_bytes {
            return Err(ConfigError::invalid(
                "max_buffered_bytes",
                "must be at least `max_body_bytes` (one largest body must fit)",
                "a number of bytes >= max_body_bytes",
            ));
        }
        if self.max_json_values == 0 {
            return Err(ConfigError::invalid(
                "max_json_values",
                "must be positive",
                "a number of JSON values > 0",
            ));
        }
        validate_base_url("upstream.base_url", &self.upstream.base_url)?;
        for (key, value) in [
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
            (
                "upstream.first_byte_timeout_ms",
                self.upstream.first_byte_timeout_ms,
            ),
            ("upstream.idle_timeout_ms", self.upstream.idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    key,
                    "must be positive",
                    "milliseconds > 0",
                ));
            }
        }
        self.validate_server()?;
        self.refuse_open_relay()?;
        validate_env_name("upstream.api_key_env", self.upstream.api_key_env.as_deref())?;
        validate_env_name("auth.keys_env", self.auth.keys_env.as_deref())?;
        for (i, route) in self.routes.iter().enumerate() {
            validate_base_url(&format!("routes[{i}].base_url"), &route.base_url)?;
            validate_env_name(
                &format!("routes[{i}].api_key_env"),
                route.api_key_env.as_deref(),
            )?;
            if route.model_prefix.is_empty() && route.path_prefix.is_empty() {
                return Err(ConfigError::invalid(
                    format!("routes[{i}]"),
                    "has neither model_prefix nor path_prefix",
                    "a non-empty model name prefix, path prefix, or both",
                ));
            }
            if !route.path_prefix.is_empty() && !route.path_prefix.starts_with('/') {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].path_prefix"),
                    format!("`{}` does not start with `/`", route.path_prefix),
                    "a request path prefix such as `/v1/messages`",
                ));
            }
        }
        if self.auth.enabled() {
            // With proxy auth the client's key is a proxy key, never an upstream key, so
            // every upstream needs its own.
            if self.upstream.api_key_env.is_none() {
                return Err(ConfigError::invalid(
                    "upstream.api_key_env",
                    "must be set when [auth] proxy keys are configured",
                    "the name of an environment variable holding the upstream key",
                ));
            }
        }
        self.compression
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: format!("compression.{}", e.key),
                message: e.reason.clone(),
                expected: "a value as documented in proxy.toml",
            })?;
        self.model
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                key: format!("model.{key}"),
                message: reason,
                expected: "a value as documented in proxy.toml",
            })?;
        self.ab.validate().map_err(|e| {
            ConfigError::invalid(
                format!("ab.{}", e.key),
                e.reason.clone(),
                "a value as documented in proxy.toml",
            )
        })?;
        if let Some(control) = &self.ab.control {
            crate::ab::control_compression(&self.compression, control).map_err(|reason| {
                ConfigError::invalid("ab.control", reason, "keys of the [compression] table")
            })?;
        }
        if self.telemetry.rotate_bytes < 4096 {
            return Err(ConfigError::invalid(
                "telemetry.rotate_bytes",
                format!("{} is too small", self.telemetry.rotate_bytes),
                "a number of bytes >= 4096",
            ));
        }
        if self.telemetry.queue == 0 {
            return Err(ConfigError::invalid(
                "telemetry.queue",
                "must be positive",
                "a number of events > 0",
            ));
        }
        if self.telemetry.queue_bytes == 0 {
            return Err(ConfigError::invalid(
                "telemetry.queue_bytes",
                "must be positive",
                "a number of bytes > 0",
            ));
        }
        for (model, p) in &self.prices {
            let values = [Some(p.input), p.cached_input, Some(p.output)];
            if values
                .into_iter()
                .flatten()
                .any(|v| !(v.is_finite() && v >= 0.0))
            {
                return Err(ConfigError::invalid(
                    format!("prices.{model}"),
                    "prices must be finite and non-negative",
                    "US dollars per million tokens, e.g. input = 2.5",
                ));
            }
        }
        self.validate_cache()?;
        if self.tls.cert_path.is_some() != self.tls.key_path.is_some() {
            return Err(ConfigError::invalid(
                if self.tls.cert_path.is_none() {
                    "tls.cert_path"
                } else {
                    "tls.key_path"
                },
                "is required when the other TLS path is set",
                "cert_path and key_path, both PEM files",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::invalid(
                "log.level",
                e.to_string(),
                "a tracing filter such as `info`",
            )
        })?;
        Ok(())
    }

    fn validate_cache(&self) -> Result<(), ConfigError> {
        let c = &self.cache;
        if c.backend == CacheBackend::Redis {
            let url = c.redis_url.as_deref().unwrap_or_default();
            if redis::Client::open(url).is_err() {
                return Err(ConfigError::invalid(
                    "cache.redis_url",
                    if url.is_empty() {
                        "is required with backend = \"redis\"".to_string()
                    } else {
                        "is not a Redis URL".to_string()
                    },
                    "redis://host:6379/0",
                ));
            }
        }
        for (key, value) in [("cache.ttl_s", c.ttl_s), ("cache.timeout_ms", c.timeout_ms)] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    key,
                    "must be positive",
                    "a number > 0",
                ));
            }
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        for (key, value) in [
            ("server.header_read_timeout_ms", s.header_read_timeout_ms),
            ("server.body_read_timeout_ms", s.body_read_timeout_ms),
            ("server.idle_timeout_ms", s.idle_timeout_ms),
            (
                "server.http2_keep_alive_timeout_ms",
                s.http2_keep_alive_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    key,
                    "must be positive",
                    "milliseconds > 0",
                ));
            }
        }
        if s.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be positive",
                "a number of connections > 0",
            ));
        }
        for (i, origin) in s.allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || origin
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| u.scheme().is_some() && u.host().is_some() && u.path() == "/");
            if !ok || origin.ends_with('/') {
                return Err(ConfigError::invalid(
                    format!("server.allowed_origins[{i}]"),
                    format!("`{origin}` is not an origin"),
                    "scheme://host[:port] without a path, or \"*\"",
                ));
            }
        }
        for (i, path) in self.auth.public_paths.iter().enumerate() {
            if !LOCAL_PATHS.contains(&path.as_str()) {
                return Err(ConfigError::invalid(
                    format!("auth.public_paths[{i}]"),
                    format!("`{path}` is not a local endpoint"),
                    "some of /healthz, /readyz, /metrics, /stats, /dashboard",
                ));
            }
        }
        Ok(())
    }

    /// A non-loopback listener that injects an upstream key needs proxy keys (or the operator's
    /// explicit `auth.allow_unauthenticated = true`): otherwise it is an open relay for the key.
    fn refuse_open_relay(&self) -> Result<(), ConfigError> {
        let injects = self.upstream.api_key_env.is_some()
            || self.routes.iter().any(|r| r.api_key_env.is_some());
        let public = !self.listen_addr()?.ip().is_loopback();
        if public && injects && !self.auth.enabled() && !self.auth.allow_unauthenticated {
            return Err(ConfigError::invalid(
                "auth",
                format!(
                    "`{}` is reachable from other hosts and the proxy injects an upstream key \
                     (api_key_env), but no proxy keys are configured: anyone who reaches it would \
                     spend that key",
                    self.listen
                ),
                "auth.keys_env or auth.keys_file, a loopback listen address, or \
                 auth.allow_unauthenticated = true to accept the risk",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "listen",
                format!("`{}` is not a socket address", self.listen),
                "HOST:PORT such as 127.0.0.1:8080",
            )
        })
    }
}

fn validate_base_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = match value.parse::<http::Uri>() {
        Ok(uri) => {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some()
                && uri.query().is_none()
        }
        Err(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("`{value}` is not a usable base URL"),
            "an http:// or https:// URL without a query, e.g. https://api.openai.com/v1",
        ))
    }
}

fn validate_env_name(key: &str, value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(name)
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Err(ConfigError::invalid(
                key,
                format!("`{name}` is not an environment variable name"),
                "a variable name such as OPENAI_API_KEY",
            ))
        }
        _ => Ok(()),
    }
}

/// The `PREFIX*` environment variables that name a configuration key (`__` between levels).
/// Others with the prefix are not configuration: `LINGUA_PROXY_CONFIG` (the file, read by the
/// command line), the variables `keys_env` and `api_key_env` name (`LINGUA_PROXY_KEYS`), and
/// whatever else an operator calls so. They are left out instead of failing as unknown keys; a
/// misspelt key below a known table (`LINGUA_PROXY_UPSTREAM__BASE_ULR`) still fails.
pub fn config_env(prefix: &str) -> Env {
    let tables: Vec<String> = serde_json::to_value(Config::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    Env::prefixed(prefix).split("__").filter(move |key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        tables.iter().any(|t| t.eq_ignore_ascii_case(top))
    })
}

/// Renders a figment error as "key `a.b`: message (in source)".
fn describe_figment(e: &figment::Error) -> String {
    let key = if e.path.is_empty() {
        None
    } else {
        Some(e.path.join("."))
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    match key {
        Some(key) => format!("key `{key}`: {}{source}", e.kind),
        None => format!("{}{source}", e.kind),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        unsafe_code,
        reason = "the tests set environment variables before starting threads"
    )]
    use super::*;
    use std::io::Write;

    fn write(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    fn no_env() -> Env {
        Env::prefixed("LINGUA_PROXY_TEST_UNUSED_PREFIX_")
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_with_env(None, &Overrides::default(), no_env()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.max_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn layering_file_env_flags() {
        let f = write(
            "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 1000\n[upstream]\nbase_url = \"http://a.example/v1\"\n",
        );
        let c = Config::load_with_env(Some(f.path()), &Overrides::default(), no_env()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.upstream.base_url, "http://a.example/v1");

        // SAFETY-free: figment's Env reads a snapshot; use a unique prefix to stay isolated.
        let prefix = "LINGUA_PROXY_T1_";
        let env = Env::prefixed(prefix).split("__");
        // Env values come from the process environment.
        // SAFETY: tests in this module use unique variable names.
        unsafe {
            std::env::set_var(format!("{prefix}UPSTREAM__BASE_URL"), "http://b.example/v1");
            std::env::set_var(format!("{prefix}MAX_BODY_BYTES"), "2000");
        }
        let c = Config::load_with_env(Some(f.path()), &Overrides::default(), env).unwrap();
        assert_eq!(c.upstream.base_url, "http://b.example/v1");
        assert_eq!(c.max_body_bytes, 2000);

        let env = Env::prefixed(prefix).split("__");
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            upstream: Some("http://c.example".into()),
        };
        let c = Config::load_with_env(Some(f.path()), &flags, env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.upstream.base_url, "http://c.example");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let f = write("max_body_bytes = \"lots\"\n");
        let e = Config::load_with_env(Some(f.path()), &Overrides::default(), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_body_bytes"), "{e}");
    }

    /// Variables with the prefix that are not configuration (`LINGUA_PROXY_CONFIG`, the keys
    /// `keys_env` names) stay out of the config layer; configuration keys and misspelt nested
    /// keys still reach it.
    #[test]
    fn only_configuration_variables_are_merged() {
        let prefix = "LINGUA_PROXY_T2_";
        // SAFETY: tests in this module use unique variable names.
        unsafe {
            std::env::set_var(format!("{prefix}CONFIG"), "proxy.toml");
            std::env::set_var(format!("{prefix}KEYS"), "k1,k2");
            std::env::set_var(format!("{prefix}LOG__LEVEL"), "debug");
        }
        let c = Config::load_with_env(None, &Overrides::default(), config_env(prefix)).unwrap();
        assert_eq!(c.log.level, "debug");
        let raw = Env::prefixed(prefix).split("__");
        assert!(Config::load_with_env(None, &Overrides::default(), raw).is_err());
        let prefix = "LINGUA_PROXY_T3_";
        // SAFETY: as above.
        unsafe { std::env::set_var(format!("{prefix}UPSTREAM__BASE_ULR"), "http://x.example") };
        let e = Config::load_with_env(None, &Overrides::default(), config_env(prefix))
            .unwrap_err()
            .to_string();
        assert!(e.contains("base_ulr"), "{e}");
    }

    /// A public listener injecting the operator's key without proxy keys is refused, unless
    /// the operator says so; loopback, or proxy keys, are fine.
    #[test]
    fn an_open_relay_for_the_upstream_key_is_refused() {
        let mut c = Config {
            listen: "0.0.0.0:8080".into(),
            ..Config::default()
        };
        c.upstream.api_key_env = Some("OPENAI_API_KEY".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("auth") && e.contains("allow_unauthenticated"),
            "{e}"
        );
        c.auth.allow_unauthenticated = true;
        c.validate().unwrap();
        c.auth.allow_unauthenticated = false;
        c.auth.keys_env = Some("LINGUA_PROXY_KEYS".into());
        c.validate().unwrap();
        c.auth.keys_env = None;
        c.listen = "127.0.0.1:8080".into();
        c.validate().unwrap();
        // Without an injected key the client's own key passes through: no relay.
        c.listen = "0.0.0.0:8080".into();
        c.upstream.api_key_env = None;
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_rejected() {
        let f = write("[upstream]\nbase_ur = \"http://x\"\n");
        let e = Config::load_with_env(Some(f.path()), &Overrides::default(), no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("base_ur"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            ("listen = \"nowhere\"\n", "listen"),
            ("[upstream]\nbase_url = \"ftp://x\"\n", "upstream.base_url"),
            (
                "[upstream]\nidle_timeout_ms = 0\n",
                "upstream.idle_timeout_ms",
            ),
            (
                "[[routes]]\nmodel_prefix = \"gpt\"\nbase_url = \"nope\"\n",
                "routes[0].base_url",
            ),
            ("[auth]\nkeys_env = \"KEYS\"\n", "upstream.api_key_env"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            (
                "[server]\nheader_read_timeout_ms = 0\n",
                "server.header_read_timeout_ms",
            ),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            (
                "[server]\nallowed_origins = [\"https://a.example/x\"]\n",
                "server.allowed_origins[0]",
            ),
            (
                "[auth]\npublic_paths = [\"/v1/models\"]\n",
                "auth.public_paths[0]",
            ),
        ] {
            let f = write(toml);
            let e = Config::load_with_env(Some(f.path()), &Overrides::default(), no_env())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = Config::load_with_env(
            Some(Path::new("/nonexistent/proxy.toml")),
            &Overrides::default(),
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/proxy.toml"), "{e}");
    }
}
