//! The embedded dashboard page (placeholder until the real page lands).

pub const DASHBOARD_HTML: &str = "<!doctype html><title>lingua-proxy</title>";
