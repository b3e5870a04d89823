//! The live dashboard served at `GET /dashboard`: one self-contained HTML page (inline CSS and
//! vanilla JavaScript drawing on `<canvas>`, no external assets) that polls `GET /stats` (a
//! [`super::StatsSnapshot`]) every 2 seconds.

/// The page, served as `text/html; charset=utf-8`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
