//! A/B testing: arm assignment, mirror and shadow modes and the offline report (the metrics test
//! is `tests/ab_metrics.rs`, alone: it reads the process-wide recorder).
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;

mod ab;
mod arms_by_compressor;
mod report;
