//! Real agent clients against the proxy: Claude Code (`claude -p`, Anthropic Messages), the Codex
//! CLI (`codex exec`, Responses through a custom model provider; with its default model and with
//! one that takes top-level tools), an OpenAI Agents SDK agent (Responses) and a Pydantic AI agent
//! (Chat Completions), each with its full system prompt and tools. The mock calls the first
//! function tool a request offers, so most runs go through a tool call and its result. For each
//! client:
//!
//! 1. it runs once against a mock upstream directly, which records every request body it sends
//!    (the client's original bytes);
//! 2. each recorded request is replayed byte for byte (same path and headers) through the proxy,
//!    with the default compression configuration and the embedded heuristic scorer, to a second
//!    mock; what that mock receives must obey the agent-integrity rules relative to the original
//!    (`lingua_proxy::eval::agent::check_bodies`). Both bodies are saved under
//!    `target/agent-captures/<client>/` for inspection, with a `summary.json`;
//! 3. it runs once more end to end through the proxy and must exit 0 with the mock's answer.
//!
//! The clients are pinned in `tests/agents/package.json` (npm, installed by `scripts/test.sh`
//! into `tests/agents/node_modules`) and `tests/agents/requirements.txt` (PyPI, into `.venv`).
//! They run fully offline: a throwaway `HOME`, dummy keys, and each client's switches for
//! telemetry, error reporting, auto-update and other non-essential traffic (see
//! [`Agent::command`]). A missing install fails the test: CI provisions them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    unsafe_code,
    reason = "kill(2) on the process group the test started for a hung agent"
)]

use crate::common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lingua_proxy::compress::{Policy, ScorerKind};
use lingua_proxy::config::Config;
use lingua_proxy::eval::agent::check_bodies;
use lingua_proxy::hook::CompressionHook;
use lingua_proxy_testkit::mock::{MockConfig, MockUpstream, RecordedRequest};
use serde_json::{Value, json};

/// How long one client run may take before it is killed (it takes seconds).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The Codex CLI's default model (0.171.0's bundled catalog).
const CODEX_DEFAULT_MODEL: &str = "gpt-6.2-sol";

/// The agent clients under test.
#[derive(Debug, Clone, Copy)]
enum Agent {
    ClaudeCode,
    /// Codex with 0.171.0's default model, whose requests carry the tools in an
    /// `additional_tools` input item (the mock then answers in text at once).
    Codex,
    /// Codex with `gpt-5.5`, whose requests carry top-level `tools`: the mock calls the first,
    /// so the run goes through a function call and its output too.
    CodexToolCall,
    OpenAiAgents,
    PydanticAi,
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::CodexToolCall => "codex-tool-call",
            Self::OpenAiAgents => "openai-agents",
            Self::PydanticAi => "pydantic-ai",
        }
    }

    /// The opening words of the mock's text answer on the API this client speaks.
    fn answer(self) -> &'static str {
        match self {
            Self::ClaudeCode => "Mock message to",
            Self::Codex | Self::CodexToolCall | Self::OpenAiAgents => "Mock response to",
            Self::PydanticAi => "Mock reply to",
        }
    }

    /// The command that runs this client once against the upstream at `origin`
    /// (`http://127.0.0.1:PORT`, without `/v1`), with `home` as its (empty) home directory.
    /// The environment is cleared: only what is set here reaches the client.
    fn command(self, origin: &str, home: &Path) -> tokio::process::Command {
        let agents = repo().join("tests/agents");
        let work = home.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let base = |program: &Path| {
            let mut cmd = tokio::process::Command::new(program);
            let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
            cmd.env_clear()
                .env("PATH", path)
                .env("HOME", home)
                .env("TMPDIR", home)
                .env("LANG", "C.UTF-8")
                .env("TERM", "dumb")
                .current_dir(&work)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .process_group(0);
            cmd
        };
        match self {
            Self::ClaudeCode => {
                let mut cmd = base(&claude_bin());
                cmd.args([
                    "-p",
                    "Greet the lingua-proxy test in one short sentence.",
                    "--max-turns",
                    "4",
                ])
                .envs([
                    ("ANTHROPIC_BASE_URL", origin),
                    ("ANTHROPIC_API_KEY", "sk-ant-agent-test"),
                    // Telemetry (Statsig/OpenTelemetry), Sentry, the auto-updater, and everything
                    // else that is not the model API (release notes, model list, GrowthBook...).
                    ("DISABLE_TELEMETRY", "1"),
                    ("DISABLE_ERROR_REPORTING", "1"),
                    ("DISABLE_AUTOUPDATER", "1"),
                    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                    // No plugin marketplace install from GitHub, no feedback survey.
                    ("CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL", "1"),
                    ("CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY", "1"),
                ]);
                cmd
            }
            Self::Codex | Self::CodexToolCall => {
                let model = match self {
                    Self::Codex => CODEX_DEFAULT_MODEL,
                    _ => "gpt-5.5",
                };
                let codex_home = home.join(".codex");
                std::fs::create_dir_all(&codex_home).unwrap();
                std::fs::write(codex_home.join("config.toml"), codex_config(origin, model))
                    .unwrap();
                let mut cmd = base(Path::new(&node()));
                cmd.arg(codex_js())
                    .args([
                        "exec",
                        "--skip-git-repo-check",
                        "--sandbox",
                        "read-only",
                        "Greet the lingua-proxy test in one short sentence.",
                    ])
                    .env("CODEX_HOME", &codex_home)
                    .env("LINGUA_AGENT_TEST_KEY", "sk-codex-agent-test");
                cmd
            }
            Self::OpenAiAgents | Self::PydanticAi => {
                let (script, api) = match self {
                    Self::OpenAiAgents => ("openai_agents_client.py", "responses"),
                    _ => ("pydantic_ai_client.py", "chat"),
                };
                let mut cmd = base(&common::sdk::python());
                cmd.arg(agents.join(script))
                    .arg(format!("{origin}/v1"))
                    .arg(api)
                    .envs([
                        // The Agents SDK exports traces to OpenAI unless tracing is off (the
                        // script also calls `set_tracing_disabled(True)`).
                        ("OPENAI_AGENTS_DISABLE_TRACING", "1"),
                        ("PYTHONDONTWRITEBYTECODE", "1"),
                        ("PYTHONUNBUFFERED", "1"),
                    ]);
                cmd
            }
        }
    }
}

/// Codex's `config.toml`: one custom provider on the Responses wire API at `origin`, with its
/// key in an environment variable; no update check, analytics, feedback uploads or plugin sync
/// (the plugins feature looks up github.com and chatgpt.com at start), and no retries. `model`
/// is one of its bundled catalog, so the request carries that model's full production prompt.
fn codex_config(origin: &str, model: &str) -> String {
    format!(
        r#"model = "{model}"
model_provider = "lingua"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.lingua]
name = "lingua-proxy test"
base_url = "{origin}/v1"
env_key = "LINGUA_AGENT_TEST_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"#
    )
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn node() -> String {
    std::env::var("LINGUA_NODE").unwrap_or_else(|_| "node".to_owned())
}

fn install_hint() -> &'static str {
    "run `bash scripts/test.sh` (it runs `npm ci` in tests/agents and installs \
     tests/agents/requirements.txt into .venv)"
}

/// Claude Code's native binary (the npm package's postinstall puts it at `bin/claude.exe`).
fn claude_bin() -> PathBuf {
    let bin = repo().join("tests/agents/node_modules/@anthropic-ai/claude-code/bin/claude.exe");
    assert!(
        bin.exists(),
        "Claude Code is not installed ({} is missing): {}",
        bin.display(),
        install_hint()
    );
    bin
}

/// The Codex CLI's launcher (it runs the platform package's native binary).
fn codex_js() -> PathBuf {
    let js = repo().join("tests/agents/node_modules/@openai/codex/bin/codex.js");
    assert!(
        js.exists(),
        "the Codex CLI is not installed ({} is missing): {}",
        js.display(),
        install_hint()
    );
    js
}

/// Fails unless the virtualenv has the Python `module`.
async fn require_python_module(module: &str) {
    let python = common::sdk::python();
    let status = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)",
            module,
        ])
        .status()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: {}", python.display(), install_hint()));
    assert!(
        status.success(),
        "the Python module {module:?} is missing from {}: {}",
        python.display(),
        install_hint()
    );
}

/// Checks that the client is installed, with a clear message when it is not.
async fn require(agent: Agent) {
    match agent {
        Agent::ClaudeCode => {
            claude_bin();
        }
        Agent::Codex | Agent::CodexToolCall => {
            codex_js();
        }
        Agent::OpenAiAgents => require_python_module("agents").await,
        Agent::PydanticAi => require_python_module("pydantic_ai").await,
    }
}

/// What one client run printed.
struct Run {
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// What `mock` saw and answered, for failure messages: each request's method, path and size,
/// and the start of each answer.
fn mock_log(mock: &MockUpstream) -> String {
    let mut log = String::new();
    for r in mock.state.requests() {
        let _ = writeln!(
            log,
            "  {} {} ({} bytes)",
            r.method,
            r.path_and_query,
            r.body.len()
        );
    }
    for body in mock.state.responses() {
        let text = String::from_utf8_lossy(&body);
        let cut: String = text.chars().take(600).collect();
        let _ = writeln!(log, "  answer: {cut}");
    }
    log
}

/// Runs `agent` once against `mock` (or the proxy in front of it at `origin`), in a fresh home
/// directory; it must exit 0 within [`CLIENT_TIMEOUT`] (else its whole process group is killed)
/// and print the mock's answer.
async fn run_client(agent: Agent, origin: &str, mock: &MockUpstream) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = agent.command(origin, home.path());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "{}: cannot start {:?}: {e}: {}",
            agent.name(),
            cmd.as_std().get_program(),
            install_hint()
        )
    });
    let pid = child.id();
    let out = match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the process group this test started for the client.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            panic!(
                "{} did not finish within {CLIENT_TIMEOUT:?} (hung, or waiting on the network)",
                agent.name()
            );
        }
    };
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    };
    assert!(
        out.status.success() && run.stdout.contains(agent.answer()),
        "{} against {origin} failed ({}; the mock's answer starts {:?}):\n--- stdout\n{}\n\
         --- stderr\n{}\n--- the mock saw\n{}",
        agent.name(),
        out.status,
        agent.answer(),
        run.stdout,
        run.stderr,
        mock_log(mock)
    );
    run
}

/// The proxy's hook: the default `[compression]` configuration, with the embedded heuristic
/// scorer (the default LLMLingua-2 model would need a download).
fn default_hook() -> Arc<CompressionHook> {
    let cfg = lingua_proxy::compress::CompressionConfig {
        scorer: ScorerKind::Heuristic,
        ..Config::default().compression
    };
    let compressor = lingua_proxy::engine::build_compressor(&cfg).unwrap();
    Arc::new(CompressionHook::new(Arc::new(
        Policy::new(cfg, compressor).unwrap(),
    )))
}

/// What differs between two JSON bodies: strings changed, and structural differences.
#[derive(Debug, Default)]
struct Diff {
    strings: usize,
    changed: usize,
    /// Bytes of the changed strings, before and after.
    changed_before: usize,
    changed_after: usize,
    /// Paths where keys, lengths, types or non-string values differ.
    structural: Vec<String>,
}

fn diff(a: &Value, b: &Value, path: &str, d: &mut Diff) {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            d.strings += 1;
            if x != y {
                d.changed += 1;
                d.changed_before += x.len();
                d.changed_after += y.len();
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(v, w, &format!("{path}.{k}"), d),
                    None => d.structural.push(format!("{path}.{k} removed")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                d.structural.push(format!("{path}.{k} added"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, &format!("{path}[{i}]"), d);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            d.structural
                .push(format!("{path}: {} -> {} items", x.len(), y.len()))
        }
        _ if a != b => d.structural.push(format!("{path} changed")),
        _ => {}
    }
}

/// `target/agent-captures/<client>/`, emptied.
fn capture_dir(agent: Agent) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| repo().join("target"), Path::to_path_buf);
    let dir = target.join("agent-captures").join(agent.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The headers a replay sends: the client's, less those of its own connection.
fn replay_headers(r: &RecordedRequest) -> http::HeaderMap {
    let mut headers = r.headers.clone();
    for name in [
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "accept-encoding",
    ] {
        headers.remove(name);
    }
    headers
}

/// The whole check of one client; see the module doc.
async fn check_agent(agent: Agent) {
    require(agent).await;
    let name = agent.name();
    let dir = capture_dir(agent);

    // 1. The client against a mock: its original requests.
    let direct = MockUpstream::start(MockConfig::default()).await.unwrap();
    let run = run_client(agent, &direct.anthropic_base_url(), &direct).await;
    let captured = direct.state.requests();
    let originals: Vec<&RecordedRequest> = captured
        .iter()
        .filter(|r| r.method == http::Method::POST)
        .collect();
    println!(
        "{name}: direct run {:.1} s, {} requests ({} POST: {} bytes)",
        run.elapsed.as_secs_f64(),
        captured.len(),
        originals.len(),
        originals
            .iter()
            .map(|r| r.body.len().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(!originals.is_empty(), "{name} sent no request to the mock");

    // 2. Each original through the proxy (default compression) to a second mock.
    let h = common::start_with(|_| {}, default_hook()).await;
    let mut violations = Vec::new();
    let mut summary = Vec::new();
    for (i, original) in originals.iter().enumerate() {
        let n = i + 1;
        let before = h.mock.state.request_count();
        let resp = h
            .client
            .request(original.method.clone(), h.url(&original.path_and_query))
            .headers(replay_headers(original))
            .body(original.body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let answer = resp.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "{name} #{n} {}: the proxy answered {status}: {}",
            original.path_and_query,
            String::from_utf8_lossy(&answer)
        );
        let received = h.mock.state.requests();
        assert_eq!(
            received.len(),
            before + 1,
            "{name} #{n}: the mock behind the proxy got {} requests",
            received.len() - before
        );
        let forwarded = &received[before];
        assert_eq!(
            forwarded.path_and_query, original.path_and_query,
            "{name} #{n}: path"
        );
        std::fs::write(dir.join(format!("{n:02}-original.json")), &original.body).unwrap();
        std::fs::write(dir.join(format!("{n:02}-forwarded.json")), &forwarded.body).unwrap();
        let mut head = format!("{} {}\n", original.method, original.path_and_query);
        for (k, v) in &original.headers {
            let _ = writeln!(head, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        std::fs::write(dir.join(format!("{n:02}-headers.txt")), head).unwrap();

        let found = check_bodies(&original.body, &forwarded.body);
        let mut d = Diff::default();
        match (original.json(), forwarded.json()) {
            (Some(a), Some(b)) => diff(&a, &b, "$", &mut d),
            _ => d.structural.push("a body is not JSON".to_owned()),
        }
        let (a, b) = (original.body.len(), forwarded.body.len());
        println!(
            "{name} #{n} {} {}: {a} -> {b} bytes ({:+}, {:.1}%); {} of {} strings changed \
             ({} -> {} bytes); {} structural differences; {} violations",
            original.method,
            original.path_and_query,
            b as i64 - a as i64,
            100.0 * (b as f64 - a as f64) / a.max(1) as f64,
            d.changed,
            d.strings,
            d.changed_before,
            d.changed_after,
            d.structural.len(),
            found.len()
        );
        for s in d.structural.iter().take(10) {
            println!("    structural: {s}");
        }
        for v in found.iter().take(10) {
            println!("    violation: {v:?}");
        }
        summary.push(json!({
            "n": n,
            "method": original.method.as_str(),
            "path": original.path_and_query,
            "original_bytes": a,
            "forwarded_bytes": b,
            "strings": d.strings,
            "strings_changed": d.changed,
            "changed_bytes_before": d.changed_before,
            "changed_bytes_after": d.changed_after,
            "structural": d.structural,
            "violations": found,
        }));
        violations.extend(found.into_iter().map(|v| (n, v)));
    }
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&json!({
            "client": name,
            "direct_run_seconds": run.elapsed.as_secs_f64(),
            "requests": summary,
        }))
        .unwrap(),
    )
    .unwrap();

    // 3. The client end to end through the proxy.
    let before = h.mock.state.request_count();
    let run = run_client(agent, &h.url(""), &h.mock).await;
    let through = h.mock.state.request_count() - before;
    println!(
        "{name}: run through the proxy {:.1} s, {through} requests upstream",
        run.elapsed.as_secs_f64()
    );
    assert!(through >= 1, "{name}: nothing reached the upstream");

    assert!(
        violations.is_empty(),
        "{name}: {} integrity violations (bodies in {}):\n{}",
        violations.len(),
        dir.display(),
        violations
            .iter()
            .map(|(n, v)| format!("  #{n}: {v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_the_proxy() {
    check_agent(Agent::ClaudeCode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_through_the_proxy() {
    check_agent(Agent::Codex).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_cli_with_a_tool_call_through_the_proxy() {
    check_agent(Agent::CodexToolCall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agents_sdk_through_the_proxy() {
    check_agent(Agent::OpenAiAgents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydantic_ai_through_the_proxy() {
    check_agent(Agent::PydanticAi).await;
}
