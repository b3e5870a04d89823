//! `/metrics` and `/stats` after A/B traffic. Its own test binary: the Prometheus recorder is
//! process-wide, so no other test may add to the counters while this one reads them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{compressible_body, heuristic_hook, read_events, start_with};
use lingua_proxy::headers::HEADER_ARM;

/// Parses the Prometheus text format strictly enough to catch malformed output:
/// `name{label="value",...} number` lines, with `# HELP` / `# TYPE` comments.
fn parse_exposition(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut samples = Vec::new();
    let mut typed = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| typed.get(*b).is_some_and(|k| k == "histogram"))
            .unwrap_or(&name);
        assert!(
            typed.contains_key(base),
            "sample before its TYPE line: {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_exposition_parses_and_carries_the_ab_series() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let path = events.clone();
    let h = start_with(
        move |c| {
            c.ab.enabled = true;
            c.ab.raw_percent = 50.0;
            c.telemetry.events_path = Some(path);
        },
        Arc::new(heuristic_hook()),
    )
    .await;
    let body = serde_json::to_vec(&compressible_body(false)).unwrap();
    for arm in ["raw", "compressed", "compressed"] {
        h.client
            .post(h.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header(HEADER_ARM, arm)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    h.client
        .get(h.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    read_events(&events, 3).await;
    let resp = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let samples = parse_exposition(&resp.text().await.unwrap());
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .sum::<f64>()
    };
    assert!(
        find(
            "lingua_requests_total",
            &[("route", "default"), ("arm", "raw"), ("status", "200")]
        ) >= 1.0
    );
    assert!(
        find(
            "lingua_requests_total",
            &[("arm", "compressed"), ("status", "200")]
        ) >= 2.0
    );
    assert!(find("lingua_passthrough_requests_total", &[("status", "200")]) >= 1.0);
    for role in ["system", "tool"] {
        let before = find("lingua_prompt_tokens_before_total", &[("role", role)]);
        let after = find("lingua_prompt_tokens_after_total", &[("role", role)]);
        let saved = find("lingua_prompt_tokens_saved_total", &[("role", role)]);
        assert!(
            before > after && (before - after - saved).abs() < 1e-9,
            "{role}"
        );
    }
    assert!(
        find(
            "lingua_billed_tokens_total",
            &[("arm", "raw"), ("kind", "prompt")]
        ) > 0.0
    );
    assert!(
        find(
            "lingua_billed_tokens_total",
            &[("arm", "compressed"), ("kind", "completion")]
        ) > 0.0
    );
    assert!(find("lingua_cost_usd_total", &[("arm", "compressed")]) > 0.0);
    assert!(find("lingua_compression_cache_total", &[("result", "hit")]) >= 1.0);
    let ratio = find("lingua_compression_cache_hit_ratio", &[]);
    assert!(ratio > 0.0 && ratio <= 1.0);
    // Histograms: cumulative buckets ending in +Inf that equal the count.
    for (name, labels) in [
        ("lingua_proxy_overhead_seconds", vec![("arm", "compressed")]),
        ("lingua_compression_duration_seconds", vec![]),
        ("lingua_upstream_duration_seconds", vec![("arm", "raw")]),
    ] {
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|(n, l, _)| {
                *n == format!("{name}_bucket")
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
            .collect();
        assert!(buckets.len() >= 10, "{name} has {} buckets", buckets.len());
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}"
        );
        let count = find(&format!("{name}_count"), &labels);
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count), "{name}");
        assert!(count >= 1.0);
    }
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "lingua_scorer_queue_depth")
    );

    let stats = h.stats().await;
    assert_eq!(stats["arms"]["raw"]["requests"], 1);
    assert_eq!(stats["arms"]["compressed"]["requests"], 2);
    let raw_mean = stats["arms"]["raw"]["mean_prompt_tokens"].as_f64().unwrap();
    let comp_mean = stats["arms"]["compressed"]["mean_prompt_tokens"]
        .as_f64()
        .unwrap();
    assert!(comp_mean < raw_mean, "{comp_mean} vs {raw_mean}");
    assert!(!stats["series"].as_array().unwrap().is_empty());
}
