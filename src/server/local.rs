//! The proxy's own endpoints: `/healthz`, `/readyz`, `/metrics`, `/stats` and `/dashboard`,
//! and the proxy-key gate in front of them (`[auth] public_paths` lists the exceptions).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, header};

use super::AppState;
use super::body::{ProxyBody, full};
use super::error::ProxyError;

/// One of the local endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    Healthz,
    Readyz,
    Metrics,
    Stats,
    Dashboard,
}

impl Local {
    /// The local endpoint `GET path` names, when it is served.
    pub(crate) fn route(state: &AppState, method: &Method, path: &str) -> Option<Self> {
        if *method != Method::GET {
            return None;
        }
        let tele = &state.telemetry;
        match path {
            "/healthz" => Some(Self::Healthz),
            "/readyz" => Some(Self::Readyz),
            "/metrics" if tele.serve_metrics => Some(Self::Metrics),
            "/stats" if tele.serve_dashboard => Some(Self::Stats),
            "/dashboard" if tele.serve_dashboard => Some(Self::Dashboard),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::Readyz => "/readyz",
            Self::Metrics => "/metrics",
            Self::Stats => "/stats",
            Self::Dashboard => "/dashboard",
        }
    }

    /// With proxy keys configured, every local endpoint not in `public_paths` needs a key
    /// (Bearer, `x-api-key`, or HTTP Basic with the key as password, which lets a browser open
    /// the dashboard through its login prompt).
    pub(crate) fn admits(self, state: &AppState, headers: &HeaderMap) -> bool {
        let Some(keys) = &state.keys else {
            return true;
        };
        state
            .config
            .auth
            .public_paths
            .iter()
            .any(|p| p == self.path())
            || keys.admits(headers)
            || keys.admits_basic(headers)
    }

    /// The 401 for a request without a key; the dashboard's asks the browser to prompt for one.
    pub(crate) fn unauthorized(self) -> Response<ProxyBody> {
        let mut resp = ProxyError::Unauthorized.into_response();
        if self == Self::Dashboard {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Basic realm=\"lingua-proxy (any user name, the proxy key as password)\", charset=\"UTF-8\"",
                ),
            );
        }
        resp
    }

    pub(crate) fn serve(self, state: &AppState) -> Response<ProxyBody> {
        let tele = &state.telemetry;
        match self {
            Self::Healthz => json_ok(serde_json::json!({"status": "ok"})),
            Self::Readyz => {
                let mut body =
                    serde_json::json!({"status": "ready", "cpu": crate::scorer::cpu_report()});
                if let (Some(obj), serde_json::Value::Object(extra)) =
                    (body.as_object_mut(), state.hook.describe())
                {
                    obj.extend(extra);
                }
                json_ok(body)
            }
            Self::Metrics => {
                crate::telemetry::metrics::set_queue_depth(state.hook.queue_depth());
                match tele.render_metrics() {
                    Some(text) => with_type(text, "text/plain; version=0.0.4; charset=utf-8"),
                    None => ProxyError::NotFound(
                        "metrics are unavailable: another metrics recorder is installed".into(),
                    )
                    .into_response(),
                }
            }
            Self::Stats => match serde_json::to_value(tele.live.snapshot()) {
                Ok(v) => json_ok(v),
                Err(e) => ProxyError::Internal(e.to_string()).into_response(),
            },
            Self::Dashboard => with_type(
                crate::telemetry::dashboard::DASHBOARD_HTML,
                "text/html; charset=utf-8",
            ),
        }
    }
}

fn with_type(body: impl Into<Bytes>, content_type: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.into()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_ok(value: serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(value.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
