//! Offline quality evaluation of compression: benchmark suites and the metrics that score a
//! compressed text against its original. No HTTP here; the `eval` command runs these through
//! the policy.

pub mod agent;
pub mod facts;
