//! A/B testing: arm assignment, mirror and shadow modes, metrics and the offline report.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;

mod ab;
mod ab_metrics;
mod report;
