//! The `lingua-proxy` command line: `serve`, `compress`, `report` and `eval`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lingua_proxy::cli::compress::CompressArgs;
use lingua_proxy::config::{Config, LogFormat, Overrides};
use lingua_proxy::hook::RequestHook;

/// Returns freed memory to the system: after a large request the process shrinks back
/// (docs/reliability.md, "Memory per request").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "lingua-proxy",
    version,
    about = "OpenAI-compatible proxy that compresses prompts with LLMLingua-2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ServeArgs),
    /// Compress text from stdin (or --file) and print the result.
    Compress(CompressArgs),
    /// Restore original spellings in a response to an LLMLingua-compressed prompt (`recover`).
    Recover(lingua_proxy::cli::llmlingua::RecoverArgs),
    /// Report the A/B saving (per arm and model, with confidence intervals) from event logs.
    Report(lingua_proxy::cli::report::ReportArgs),
    /// Offline quality benchmarks (`eval facts`: fact retention per scorer and budget).
    Eval(lingua_proxy::cli::eval::EvalArgs),
    /// LLMLingua-2 data distillation: `label` (align compressions to their originals) and
    /// `filter` (the two-stage quality filter).
    Distill(lingua_proxy::cli::distill::DistillArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (defaults apply to every key it leaves out).
    #[arg(long, env = "LINGUA_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream base URL (overrides `upstream.base_url`).
    #[arg(long)]
    upstream: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A kernel ceiling that names no tier is refused before any model loads.
    if let Err(e) = lingua_kernels::tier::env_ceiling() {
        eprintln!("lingua-proxy: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Compress(args) => match lingua_proxy::cli::compress::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lingua-proxy compress: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Recover(args) => match lingua_proxy::cli::llmlingua::run_recover(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lingua-proxy recover: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Report(args) => match lingua_proxy::cli::report::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lingua-proxy report: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Eval(args) => match lingua_proxy::cli::eval::run_command(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lingua-proxy eval: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Distill(args) => match lingua_proxy::cli::distill::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lingua-proxy distill: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lingua-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let hook: Arc<dyn RequestHook> = match lingua_proxy::engine::serve_hook(&config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lingua-proxy: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // An idle blocking thread (one that scanned or parsed a large body) exits after 1 s
        // instead of 10 s, handing the memory it freed back to the system sooner.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lingua-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let code = runtime.block_on(async move {
        let handle = match lingua_proxy::server::start(config, hook).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("lingua-proxy: {e}");
                return ExitCode::from(2);
            }
        };
        let trigger = handle.shutdown_trigger();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received");
            arm_exit_watchdog(grace);
            let _ = trigger.send(true);
        });
        handle.join().await;
        ExitCode::SUCCESS
    });
    // Dropping a runtime waits for its blocking tasks (a scorer mid-batch): do not. The server
    // has closed every connection and flushed the event log by now.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Exits the process if shutdown has not finished within the grace period plus 0.95 s (the
/// server's own steps take at most grace + 0.9 s), whatever a scorer thread is doing.
fn arm_exit_watchdog(grace: Duration) {
    let spawned = std::thread::Builder::new()
        .name("exit-watchdog".into())
        .spawn(move || {
            std::thread::sleep(grace + Duration::from_millis(950));
            tracing::error!("shutdown did not finish within the grace period; exiting now");
            #[expect(
                clippy::disallowed_methods,
                reason = "the watchdog ends the process whatever a scorer thread is doing"
            )]
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog");
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
