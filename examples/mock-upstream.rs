//! A mock upstream for trying lingua-proxy offline (OpenAI Chat Completions, Completions and
//! Responses, Anthropic Messages; from the testkit crate):
//! `cargo run --release --example mock-upstream -- --listen 127.0.0.1:9090`.

use std::time::Duration;

use clap::Parser;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream};

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: std::net::SocketAddr,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 20)]
    chunk_delay_ms: u64,
    /// Delay before response headers, in milliseconds.
    #[arg(long, default_value_t = 0)]
    first_byte_delay_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mock = MockUpstream::start_on(
        args.listen,
        MockConfig {
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
            first_byte_delay: Duration::from_millis(args.first_byte_delay_ms),
        },
    )
    .await?;
    eprintln!(
        "mock upstream listening on {} (OpenAI base URL {}, Anthropic base URL {})",
        mock.addr,
        mock.base_url(),
        mock.anthropic_base_url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
