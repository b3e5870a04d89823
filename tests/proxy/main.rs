//! The proxy against the mock upstream on loopback: passthrough, edge checks, auth, the API
//! surfaces, hostile telemetry, the cache bound, injected faults and shutdown.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;

mod api_surfaces;
mod cache_bound;
mod edge;
mod faults;
mod proxy_auth;
mod proxy_passthrough;
mod shutdown;
mod telemetry_hostile;
mod tls;
