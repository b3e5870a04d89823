//! The HTTP side: hyper service, routing, passthrough, SSE and provider-shaped errors.
//!
//! It knows nothing about scoring: the requests an API surface ([`crate::api`]) intercepts go
//! through the [`RequestHook`](crate::hook::RequestHook) it is given, and so do `/v1/compress`
//! calls ([`compress_endpoint`]).

pub mod auth;
pub mod body;
mod compress_endpoint;
mod conn;
mod edge;
pub mod error;
pub(crate) mod fuzz;
pub mod headers;
pub mod intake;
mod local;
mod mirror;
mod observe;
mod plan;
mod proxy;
mod tls;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::ab::Assigner;
use crate::config::Config;
use crate::hook::RequestHook;
use crate::telemetry::eventlog::EventLog;
use crate::telemetry::live::AbSummary;
use crate::telemetry::{Event, LiveStats, PriceTable, metrics};
use auth::ProxyKeys;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    EventLog(#[from] crate::telemetry::eventlog::EventLogError),
}

/// Counters of what the proxy did, readable while it runs.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub requests: AtomicU64,
    pub intercepted: AtomicU64,
    pub invalid_json: AtomicU64,
    /// Intercepted bodies with more than `max_json_values` values, forwarded unchanged.
    pub too_complex: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub upstream_timeouts: AtomicU64,
    pub rejected_auth: AtomicU64,
    pub rejected_too_large: AtomicU64,
    /// Refused before routing: bad path, Origin, Host, or Content-Length with Transfer-Encoding.
    pub rejected_edge: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One upstream target, with its credential resolved at startup.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// `default`, or the route's name (the `route` label of metrics and events).
    pub(crate) name: String,
    pub(crate) base_url: String,
    /// The header that carries the configured key, and its value.
    pub(crate) authorization: Option<(http::HeaderName, HeaderValue)>,
    /// Ask streams for their usage chunk (`None`: `[telemetry] stream_usage`).
    pub(crate) stream_usage: Option<bool>,
    /// The route's tokenizer (`None`: chosen from the model).
    pub(crate) tokenizer: Option<crate::tokens::TokenizerKind>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

pub(crate) struct Route {
    pub(crate) model_prefix: String,
    pub(crate) path_prefix: String,
    pub(crate) upstream: Upstream,
}

impl Route {
    /// Every condition the route sets holds for a request to `path` naming `model`.
    fn matches(&self, path: &str, model: Option<&str>) -> bool {
        (self.path_prefix.is_empty() || path.starts_with(&self.path_prefix))
            && (self.model_prefix.is_empty()
                || model.is_some_and(|m| m.starts_with(&self.model_prefix)))
    }

    /// Whether the route's choice needs the body's `model`.
    pub(crate) fn needs_model(&self) -> bool {
        !self.model_prefix.is_empty()
    }
}

/// Everything a request handler needs; shared by all connections.
pub struct AppState {
    pub config: Config,
    pub stats: Stats,
    pub(crate) client: reqwest::Client,
    pub(crate) hook: Arc<dyn RequestHook>,
    pub(crate) keys: Option<ProxyKeys>,
    pub(crate) default_upstream: Upstream,
    pub(crate) routes: Vec<Route>,
    pub(crate) assigner: Assigner,
    pub(crate) mirrors: mirror::Mirrors,
    pub telemetry: Arc<Telemetry>,
    /// Listening on loopback without proxy keys: only loopback Host names are answered.
    pub(crate) loopback_host_check: bool,
    /// Buffered request bytes held at once (`max_buffered_bytes`).
    pub(crate) buffered: intake::ByteBudget,
}

/// Where finished events go: live statistics, Prometheus metrics and the event log.
pub struct Telemetry {
    pub live: LiveStats,
    log: Option<EventLog>,
    prometheus: Option<PrometheusHandle>,
    pub(crate) log_content: bool,
    pub(crate) stream_usage: bool,
    pub(crate) serve_metrics: bool,
    pub(crate) serve_dashboard: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    fn new(config: &Config) -> Result<Self, StartError> {
        let t = &config.telemetry;
        let log = match &t.events_path {
            Some(path) => Some(EventLog::open(
                path,
                t.rotate_bytes,
                t.keep_files,
                t.queue,
                t.queue_bytes,
            )?),
            None => None,
        };
        let ab = AbSummary {
            enabled: config.ab.enabled,
            mode: config.ab.mode,
            raw_percent: config.ab.raw_percent,
            mirror_percent: config.ab.mirror_percent,
        };
        Ok(Self {
            live: LiveStats::new(ab, PriceTable::with_overrides(&config.prices)),
            log,
            prometheus: if t.metrics { metrics::install() } else { None },
            log_content: t.log_content,
            stream_usage: t.stream_usage,
            serve_metrics: t.metrics,
            serve_dashboard: t.dashboard,
        })
    }

    /// The Prometheus exposition, or `None` when metrics are off.
    pub fn render_metrics(&self) -> Option<String> {
        self.prometheus.as_ref().map(PrometheusHandle::render)
    }

    /// The event log, when configured.
    pub fn event_log(&self) -> Option<&EventLog> {
        self.log.as_ref()
    }
}

impl observe::EventSink for Telemetry {
    fn finish(&self, mut event: Event) {
        // Role names come from the client: only configured ones are kept apart.
        if let Some(t) = &mut event.tokens {
            crate::telemetry::labels::fold_roles(&mut t.roles);
        }
        let price = event
            .model
            .as_deref()
            .and_then(|m| self.live.prices().lookup(m));
        let hit_ratio = self.live.record_priced(&event, price);
        metrics::record(&event, &event.route, price, hit_ratio);
        if let Some(log) = &self.log {
            log.append(event);
        }
    }
}

impl AppState {
    pub fn new(config: Config, hook: Arc<dyn RequestHook>) -> Result<Self, StartError> {
        install_crypto_provider();
        let keys = ProxyKeys::load(
            config.auth.keys_env.as_deref(),
            config.auth.keys_file.as_deref(),
        )
        .map_err(StartError::Config)?;
        let default_upstream = resolve_upstream(
            "default",
            "upstream.api_key_env",
            &config.upstream.base_url,
            config.upstream.api_key_env.as_deref(),
            config.upstream.key_header,
        )?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| {
                if r.model_prefix.is_empty() {
                    r.path_prefix.clone()
                } else {
                    r.model_prefix.clone()
                }
            });
            let mut upstream = resolve_upstream(
                &name,
                &format!("routes[{i}].api_key_env"),
                &r.base_url,
                r.api_key_env.as_deref(),
                r.key_header,
            )?;
            // With proxy auth the client's key never goes upstream. The default upstream's key
            // goes only to its own host, or to a route that opts in by name.
            if upstream.authorization.is_none() && keys.is_some() {
                if r.use_default_key || same_origin(&r.base_url, &config.upstream.base_url) {
                    upstream.authorization = default_upstream.authorization.clone();
                } else if default_upstream.authorization.is_some() {
                    tracing::warn!(
                        route = %name,
                        "route has no api_key_env and another host than [upstream]: its requests \
                         go without an upstream key (set use_default_key = true to send it)"
                    );
                }
            }
            upstream.stream_usage = r.stream_usage;
            upstream.tokenizer = r.tokenizer;
            routes.push(Route {
                model_prefix: r.model_prefix.clone(),
                path_prefix: r.path_prefix.clone(),
                upstream,
            });
        }
        let mut client = reqwest::Client::builder();
        if let Some(path) = &config.upstream.ca_path {
            client = client.tls_certs_merge(upstream_cas(path)?);
        }
        let client = client
            .connect_timeout(Duration::from_millis(config.upstream.connect_timeout_ms))
            .read_timeout(Duration::from_millis(config.upstream.idle_timeout_ms))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        let telemetry = Arc::new(Telemetry::new(&config)?);
        let loopback_host_check = config.server.loopback_host_check
            && keys.is_none()
            && config.listen_addr().is_ok_and(|a| a.ip().is_loopback());
        let buffered = intake::ByteBudget::new(
            config.max_buffered_bytes,
            Duration::from_millis(config.server.body_read_timeout_ms),
        );
        Ok(Self {
            loopback_host_check,
            buffered,
            assigner: Assigner::new(config.ab.clone()),
            mirrors: mirror::Mirrors::new(config.ab.max_mirror_inflight),
            telemetry,
            config,
            stats: Stats::default(),
            client,
            hook,
            keys,
            default_upstream,
            routes,
        })
    }

    /// Mirror copies skipped because `[ab] max_mirror_inflight` were in flight.
    pub fn mirrors_skipped(&self) -> u64 {
        self.mirrors.skipped()
    }

    /// The context of a request to `path` speaking `api` and naming `model`, with its upstream:
    /// the route is chosen here, once.
    pub(crate) fn resolve(
        &self,
        path: &str,
        api: crate::api::Api,
        model: Option<String>,
        headers: &http::HeaderMap,
    ) -> (crate::hook::RequestCtx, &Upstream) {
        let upstream = self.upstream_for(path, model.as_deref());
        let ctx = crate::hook::RequestCtx {
            api,
            route: upstream.name.clone(),
            model,
            tokenizer: upstream.tokenizer,
            request_id: request_id(headers),
            arm: None,
        };
        (ctx, upstream)
    }

    /// The upstream for a request to `path` whose body names `model`.
    pub(crate) fn upstream_for(&self, path: &str, model: Option<&str>) -> &Upstream {
        self.routes
            .iter()
            .find(|r| r.matches(path, model))
            .map(|r| &r.upstream)
            .unwrap_or(&self.default_upstream)
    }
}

/// The CAs of `[upstream] ca_path` (PEM, one or more certificates).
fn upstream_cas(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, StartError> {
    let bad = |e: String| StartError::Config(format!("upstream.ca_path {}: {e}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The client's `x-request-id` when usable, else a fresh one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(crate::hook::fresh_request_id, str::to_owned)
}

/// Whether two base URLs share scheme, host and port.
fn same_origin(a: &str, b: &str) -> bool {
    let origin = |u: &str| {
        u.parse::<http::Uri>().ok().map(|u| {
            let scheme = u.scheme_str().unwrap_or_default().to_ascii_lowercase();
            let port = u
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            let host = u.host().unwrap_or_default().to_ascii_lowercase();
            (scheme, host, port)
        })
    };
    origin(a).is_some() && origin(a) == origin(b)
}

fn resolve_upstream(
    name: &str,
    key: &str,
    base_url: &str,
    api_key_env: Option<&str>,
    key_header: crate::config::KeyHeader,
) -> Result<Upstream, StartError> {
    let authorization = match api_key_env {
        None => None,
        Some(name) => {
            let value = std::env::var(name).map_err(|_| {
                StartError::Config(format!(
                    "{key} names `{name}`, but that environment variable is not set"
                ))
            })?;
            let (header_name, text) = match key_header {
                crate::config::KeyHeader::Authorization => (
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", value.trim()),
                ),
                crate::config::KeyHeader::XApiKey => (
                    http::HeaderName::from_static("x-api-key"),
                    value.trim().to_string(),
                ),
            };
            let mut header = HeaderValue::from_str(&text).map_err(|_| {
                StartError::Config(format!(
                    "{key}: the value of `{name}` is not a valid header value"
                ))
            })?;
            header.set_sensitive(true);
            Some((header_name, header))
        }
    };
    Ok(Upstream {
        name: name.to_string(),
        base_url: base_url.trim_end_matches('/').to_string(),
        authorization,
        stream_usage: None,
        tokenizer: None,
    })
}

/// rustls needs one process-wide crypto provider; we build with `ring` only.
pub fn install_crypto_provider() {
    // Err means another provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running proxy.
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests and streams finish within the configured
    /// grace period, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops by itself (it does not, unless shut down).
    pub async fn join(self) {
        let _ = self.task.await;
    }

    /// A sender that triggers graceful shutdown.
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds `config.listen` and serves until shut down.
pub async fn start(config: Config, hook: Arc<dyn RequestHook>) -> Result<ServerHandle, StartError> {
    let addr = config
        .listen_addr()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let state = Arc::new(AppState::new(config, hook)?);
    start_on(listener, state)
}

/// Serves on an already bound listener.
pub fn start_on(listener: TcpListener, state: Arc<AppState>) -> Result<ServerHandle, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: "listener".into(),
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    let acceptor = match (&state.config.tls.cert_path, &state.config.tls.key_path) {
        (Some(cert), Some(key)) => {
            let certs = Arc::new(tls::Certificates::load(cert, key).map_err(StartError::Config)?);
            tokio::spawn(tls::watch_files(certs.clone(), rx.clone()));
            Some(tls::acceptor(certs))
        }
        _ => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let task = tokio::spawn(conn::accept_loop(listener, state.clone(), acceptor, rx));
    tracing::info!(%addr, scheme, upstream = %state.default_upstream.base_url, "lingua-proxy listening");
    let cpu = crate::scorer::cpu_report();
    tracing::info!(tier = %cpu["tier"], kernels = %cpu["kernels"], "CPU kernels");
    Ok(ServerHandle {
        addr,
        state,
        shutdown: tx,
        task,
    })
}
