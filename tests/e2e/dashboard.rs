#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The live dashboard (`GET /dashboard`), rendered by a real headless Chromium.
//!
//! The page draws the compressed arm in `#1c7ed6` and the raw arm in `#e8590c` with `fillRect`,
//! so a screenshot's exact pixels of those two colours tell which arms it drew. Chromium is the
//! Debian `chromium` package (`scripts/test.sh` installs it); `LINGUA_PROXY_CHROMIUM` may name
//! another binary.

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::start_with;
use lingua_proxy::ab::{Arm, Mode};
use lingua_proxy::compress::{CompressionConfig, Policy, ScorerKind};
use lingua_proxy::engine::build_compressor;
use lingua_proxy::headers::HEADER_ARM;
use lingua_proxy::hook::CompressionHook;
use lingua_proxy::telemetry::dashboard::DASHBOARD_HTML;
use lingua_proxy::telemetry::live::AbSummary;
use lingua_proxy::telemetry::{
    Event, Latency, LiveStats, PriceTable, RoleTokens, StatsSnapshot, Tokens, Usage,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const COMPRESSED: [u8; 3] = [0x1c, 0x7e, 0xd6];
const RAW: [u8; 3] = [0xe8, 0x59, 0x0c];
/// The legend and table swatches of one arm cover fewer than 500 pixels; its bars cover
/// thousands (one full-height bar alone is 34 x ~180 px).
const BARS_DRAWN: usize = 1500;
/// An arm without data must not appear at all (a little slack for stray anti-aliasing).
const NOT_DRAWN: usize = 10;

// ---------- Chromium ----------

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("LINGUA_PROXY_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "LINGUA_PROXY_CHROMIUM={} is not a file",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "headless Chromium is needed for the dashboard tests: install the Debian `chromium` \
         package (`apt-get install -y --no-install-recommends chromium`; scripts/test.sh does \
         this) or set LINGUA_PROXY_CHROMIUM to a Chromium binary"
    );
}

/// A decoded screenshot plus the DOM after the page's scripts ran.
struct Rendered {
    width: u32,
    height: u32,
    /// RGB, row-major.
    rgb: Vec<u8>,
    dom: String,
}

impl Rendered {
    /// Pixels of exactly this colour.
    fn count(&self, color: [u8; 3]) -> usize {
        self.rgb.chunks_exact(3).filter(|p| *p == color).count()
    }
}

fn decode_png(bytes: Vec<u8>) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    let rgb = buf
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, rgb)
}

/// Loads `url` in headless Chromium at 1280x1000, lets the page run for 4 s of virtual time
/// (its first `/stats` poll and render), then returns the screenshot and the DOM. With
/// `LINGUA_PROXY_DASHBOARD_SHOTS=<dir>` the screenshot is also kept there as `<name>.png`.
async fn render(url: &str, name: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("shot.png");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        // Tests run as root in CI containers, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
        "--window-size=1280,1000",
        "--virtual-time-budget=4000",
        "--dump-dom",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.path().join("profile").display()
    ))
    .arg(format!("--screenshot={}", shot.display()))
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium did not finish within 90 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot at {} ({e}): {stderr}", shot.display()));
    if let Some(keep) = std::env::var_os("LINGUA_PROXY_DASHBOARD_SHOTS") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(PathBuf::from(keep).join(format!("{name}.png")), &png).unwrap();
    }
    let (width, height, rgb) = decode_png(png);
    let rendered = Rendered {
        width,
        height,
        rgb,
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    eprintln!(
        "{name}: {} compressed px, {} raw px",
        rendered.count(COMPRESSED),
        rendered.count(RAW)
    );
    rendered
}

fn body_tag(dom: &str) -> &str {
    let start = dom.find("<body").expect("a <body> in the DOM");
    let end = start + dom[start..].find('>').unwrap();
    &dom[start..=end]
}

fn assert_rendered(r: &Rendered) {
    assert_eq!((r.width, r.height), (1280, 1000));
    assert!(
        body_tag(&r.dom).contains("data-rendered=\"1\""),
        "the page never rendered a /stats answer: {}",
        body_tag(&r.dom)
    );
}

// ---------- the page on its own ----------

/// `<script src>`, `<link href>`, `<img src>`, CSS `url(...)`/`@import` or an absolute fetch:
/// anything the page would load besides itself and `/stats`.
fn external_references(html: &str) -> Vec<String> {
    let patterns = [
        r#"(?i)<(?:script|link|img|iframe|source|embed|object|video|audio)\b[^>]*\b(?:src|href|data|srcset)\s*="#,
        r#"(?i)\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//"#,
        r#"(?i)url\(\s*["']?\s*(?:https?:|//|/)"#,
        r"(?i)@import",
        r#"(?i)fetch\(\s*["'`](?:https?:)?//"#,
    ];
    patterns
        .iter()
        .flat_map(|p| {
            regex::Regex::new(p)
                .unwrap()
                .find_iter(html)
                .map(|m| m.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn page_is_self_contained() {
    assert!(DASHBOARD_HTML.starts_with("<!doctype html>"));
    assert_eq!(external_references(DASHBOARD_HTML), Vec::<String>::new());
    assert!(DASHBOARD_HTML.contains("fetch(\"/stats\""));
    // the check itself finds what it must
    for bad in [
        r#"<script src="https://cdn.example/chart.js"></script>"#,
        r#"<link rel="stylesheet" href="//fonts.example/css">"#,
        r#"<img src="http://example.com/logo.png">"#,
        r#"<style>body { background: url("https://example.com/bg.png") }</style>"#,
    ] {
        assert!(!external_references(bad).is_empty(), "{bad}");
    }
}

/// A loopback HTTP/1.1 server answering `/dashboard` with the page and `/stats` with whatever
/// snapshot the test put in the slot.
async fn fixture_server(stats: Arc<Mutex<StatsSnapshot>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/dashboard" => ("200 OK", "text/html; charset=utf-8", DASHBOARD_HTML.into()),
                    "/stats" => (
                        "200 OK",
                        "application/json",
                        serde_json::to_string(&*stats.lock().unwrap()).unwrap(),
                    ),
                    _ => ("404 Not Found", "text/plain", String::from("not found")),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\
                     cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/dashboard")
}

/// One served upstream call as the proxy records it.
fn event(arm: Arm, ts_ms: u64, prompt_tokens: u64, overhead_ms: f64) -> Event {
    let compressed = arm == Arm::Compressed;
    let before = 1_450;
    let after = if compressed { 880 } else { before };
    Event {
        v: 1,
        ts_ms,
        arm: Some(arm),
        mode: Mode::Normal,
        served: true,
        route: "default".into(),
        model: Some("gpt-4o-mini".into()),
        tokens: Some(Tokens {
            tokenizer: "o200k_base".into(),
            before,
            after,
            roles: BTreeMap::from([
                (
                    "system".into(),
                    RoleTokens {
                        before: 600,
                        after: if compressed { 330 } else { 600 },
                    },
                ),
                (
                    "tool".into(),
                    RoleTokens {
                        before: 780,
                        after: if compressed { 480 } else { 780 },
                    },
                ),
                (
                    "user".into(),
                    RoleTokens {
                        before: 70,
                        after: 70,
                    },
                ),
            ]),
        }),
        usage: Some(Usage {
            prompt_tokens,
            completion_tokens: 120,
            total_tokens: prompt_tokens + 120,
            cached_tokens: Some(0),
            cache_creation_tokens: None,
        }),
        latency_ms: Latency {
            total: 800.0 + overhead_ms,
            upstream: 800.0,
            compression: if compressed { overhead_ms - 0.3 } else { 0.0 },
            overhead: overhead_ms,
            upstream_headers: 300.0,
        },
        status: 200,
        compression: Some(if compressed { "compressed" } else { "not_run" }.into()),
        cache: compressed.then(|| "miss".into()),
        ..Event::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_draws_bars_only_for_arms_with_data() {
    let live = LiveStats::new(
        AbSummary {
            enabled: true,
            mode: Mode::Normal,
            raw_percent: 20.0,
            mirror_percent: 0.0,
        },
        PriceTable::default(),
    );
    let slot = Arc::new(Mutex::new(live.snapshot()));
    let url = fixture_server(slot.clone()).await;

    let empty = render(&url, "fixture-empty").await;
    assert_rendered(&empty);
    assert!(empty.dom.contains("no data yet"));
    assert!(
        empty.count(COMPRESSED) <= NOT_DRAWN && empty.count(RAW) <= NOT_DRAWN,
        "arm colours drawn for an empty snapshot: compressed {} px, raw {} px",
        empty.count(COMPRESSED),
        empty.count(RAW)
    );

    let now = lingua_proxy::telemetry::now_ms();
    for i in 0..6 {
        live.record(&event(Arm::Compressed, now - 40_000 + i * 5_000, 900, 12.0));
    }
    *slot.lock().unwrap() = live.snapshot();
    let compressed_only = render(&url, "fixture-compressed-only").await;
    assert_rendered(&compressed_only);
    assert!(
        compressed_only.count(COMPRESSED) >= BARS_DRAWN,
        "compressed arm not drawn: {} px",
        compressed_only.count(COMPRESSED)
    );
    assert!(
        compressed_only.count(RAW) <= NOT_DRAWN,
        "raw arm drawn without raw data: {} px",
        compressed_only.count(RAW)
    );

    for i in 0..3 {
        live.record(&event(Arm::Raw, now - 30_000 + i * 7_000, 1_480, 0.4));
    }
    let both = live.snapshot();
    assert!(both.arms["raw"].mean_cost_usd.is_some());
    *slot.lock().unwrap() = both;
    let both = render(&url, "fixture-both").await;
    assert_rendered(&both);
    for (arm, color) in [("compressed", COMPRESSED), ("raw", RAW)] {
        assert!(
            both.count(color) >= BARS_DRAWN,
            "{arm} arm not drawn: {} px",
            both.count(color)
        );
    }
}

// ---------- the real proxy ----------

const SYSTEM: &str = "You are the support assistant of Helios Solar, a company that installs \
rooftop photovoltaic systems and home batteries. You answer questions from homeowners about \
their installation, their monitoring app and their invoices. Be friendly and precise, and never \
guess: when you do not know a value, say so and offer to open a ticket. Installations include \
a ten year warranty on the inverter and a twenty five year performance warranty on the panels. \
Battery capacity is reported in kilowatt hours and power in kilowatts; always keep both units \
apart. A technician visit costs nothing during the warranty period. Outside it, the call-out fee \
is 95 euros plus parts. The monitoring app refreshes every fifteen minutes, and a gap of up to \
an hour after a firmware update is normal. If the customer reports smoke, burning smells or \
sparks, tell them to switch off the isolator next to the inverter and to call the emergency \
line at once, before anything else. Answer in the customer's language and keep it short.";

const TOOL: &str = "Customer record 55-9012: installation completed on 14 March at \
Lindenstrasse 8, twelve panels of 410 watt peak each facing south-west at a pitch of 35 degrees, \
one hybrid inverter of 5 kilowatts and one battery of 10 kilowatt hours. Last firmware update of \
the inverter on 2 November at 02:10, version 3.4.1. Monitoring shows normal production in \
October with 312 kilowatt hours, then a drop to zero between 2 November 02:10 and 2 November \
05:40, after which production resumed. The battery reports a state of health of 98 percent. \
There are no open tickets. The last invoice, number 2026-1187 over 49 euros for the monitoring \
subscription, was paid on 1 November by direct debit. The customer's contract includes the \
premium monitoring option with e-mail alerts, and the alert for zero production was sent at \
03:10 on 2 November to the address on file.";

fn heuristic_hook() -> CompressionHook {
    let mut cfg = CompressionConfig {
        // Instruction prose is compressed here (the default keeps it).
        instructions: lingua_proxy::compress::InstructionsMode::Compress,
        scorer: ScorerKind::Heuristic,
        ..CompressionConfig::default()
    };
    cfg.roles.system.min_tokens = 50;
    cfg.roles.tool.min_tokens = 50;
    let compressor = build_compressor(&cfg).unwrap();
    CompressionHook::new(Arc::new(Policy::new(cfg, compressor).unwrap()))
}

fn compressible_body(i: usize) -> serde_json::Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Why did my app show no production on 2 November?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "customer_record",
                "arguments": "{\"id\": \"55-9012\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": TOOL},
            {"role": "user", "content": format!("And is everything fine now? (question {i})")}
        ]
    })
}

async fn stats(h: &common::Harness) -> StatsSnapshot {
    let resp = h.client.get(h.url("/stats")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_ab_traffic_through_the_proxy() {
    let h = start_with(|_| {}, Arc::new(heuristic_hook())).await;

    let resp = h.client.get(h.url("/dashboard")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/html"), "content-type: {ctype}");
    let page = resp.text().await.unwrap();
    assert_eq!(external_references(&page), Vec::<String>::new());
    assert!(!page.contains("http://") && !page.contains("https://"));

    // Before any traffic: both arms present and empty, nothing drawn in their colours.
    let s = stats(&h).await;
    assert_eq!(s.arms["compressed"].requests, 0);
    assert_eq!(s.arms["raw"].requests, 0);
    let before = render(&h.url("/dashboard"), "proxy-before").await;
    assert_rendered(&before);
    assert!(before.dom.contains("no data yet"));
    assert!(
        before.count(COMPRESSED) <= NOT_DRAWN && before.count(RAW) <= NOT_DRAWN,
        "arm colours drawn without traffic: compressed {}, raw {}",
        before.count(COMPRESSED),
        before.count(RAW)
    );

    // Traffic in both arms, forced per request.
    const PER_ARM: u64 = 4;
    for i in 0..PER_ARM as usize {
        for arm in ["compressed", "raw"] {
            let resp = h
                .client
                .post(h.url("/v1/chat/completions"))
                .header("authorization", "Bearer sk-client")
                .header(HEADER_ARM, arm)
                .json(&compressible_body(i))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{arm} request {i}");
            let answer: serde_json::Value = resp.json().await.unwrap();
            assert!(answer["choices"].is_array(), "{answer}");
        }
    }

    // Events are recorded once each response is finished: wait until /stats has them all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = stats(&h).await;
        if s.arms["compressed"].requests >= PER_ARM && s.arms["raw"].requests >= PER_ARM {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/stats never showed {PER_ARM} requests per arm: compressed {}, raw {}",
            s.arms["compressed"].requests,
            s.arms["raw"].requests
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (c, r) = (&s.arms["compressed"], &s.arms["raw"]);
    assert!(
        c.mean_prompt_tokens.unwrap() < r.mean_prompt_tokens.unwrap(),
        "the compressed arm bills fewer prompt tokens: {:?} vs {:?}",
        c.mean_prompt_tokens,
        r.mean_prompt_tokens
    );
    assert!(c.mean_cost_usd.is_some() && r.mean_cost_usd.is_some());
    assert!(s.totals.tokens_saved > 0);

    let after = render(&h.url("/dashboard"), "proxy-after").await;
    assert_rendered(&after);
    assert!(
        after.count(COMPRESSED) >= BARS_DRAWN,
        "compressed arm not drawn: {} px",
        after.count(COMPRESSED)
    );
    assert!(
        after.count(RAW) >= BARS_DRAWN,
        "raw arm not drawn: {} px",
        after.count(RAW)
    );
}
