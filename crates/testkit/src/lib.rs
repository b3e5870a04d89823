//! Test support for lingua-proxy, kept out of the shipped library: [`mock`], a real HTTP server
//! that plays the upstream provider (OpenAI Chat Completions, legacy Completions, Responses and
//! Anthropic Messages), for the integration tests, the benchmarks and
//! `cargo run --example mock-upstream`.
//!
//! The crate does not depend on lingua-proxy: it only speaks the providers' wire formats, so a
//! test that passes against it says the proxy speaks them too.

pub mod mock;
