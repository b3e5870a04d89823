//! Prometheus metrics through the `metrics` facade.
//!
//! The recorder is process-wide: it is installed once, by the first server that starts, and
//! every server in the process shares it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::event::Event;
use super::prices::Price;

/// Compression takes from well under a millisecond (heuristic, cache hits) to seconds (a large
/// model on a long prompt, bounded by `deadline_ms`).
const COMPRESSION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];
/// The proxy's own overhead should be sub-millisecond without compression; the upper buckets
/// catch compression and stalls.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upstream calls: from fast cached answers to long generations.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
];

/// A causal LM's KV cache: from a few windows of a tiny model to a full context of a large one.
const KV_CACHE_BUCKETS: &[f64] = &[
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle; `None` when
/// another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("lingua_compression_duration_seconds".into()),
                    COMPRESSION_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("lingua_proxy_overhead_seconds".into()),
                        OVERHEAD_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("lingua_upstream_duration_seconds".into()),
                        UPSTREAM_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("lingua_causal_kv_cache_bytes".into()),
                        KV_CACHE_BUCKETS,
                    )
                });
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics is off");
                    return None;
                }
            };
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("lingua-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "lingua_requests_total",
        "Intercepted chat-completion requests by route, the arm that served them and HTTP status"
    );
    describe_counter!(
        "lingua_passthrough_requests_total",
        "Requests forwarded without interception, by HTTP status"
    );
    describe_counter!(
        "lingua_mirror_requests_total",
        "Mirror copies sent upstream (the arm not served to the client)"
    );
    describe_counter!(
        "lingua_prompt_tokens_before_total",
        "Prompt text tokens before compression (target tokenizer), by role"
    );
    describe_counter!(
        "lingua_prompt_tokens_after_total",
        "Prompt text tokens after compression (target tokenizer), by role"
    );
    describe_counter!(
        "lingua_prompt_tokens_saved_total",
        "Prompt text tokens removed by compression (target tokenizer), by role"
    );
    describe_histogram!(
        "lingua_compression_duration_seconds",
        Unit::Seconds,
        "Time spent compressing a request"
    );
    describe_histogram!(
        "lingua_causal_kv_cache_bytes",
        Unit::Bytes,
        "A request's causal-LM KV cache after each window it fed (its largest is the request's \
         peak; bounded by max_position_embeddings positions)"
    );
    describe_histogram!(
        "lingua_proxy_overhead_seconds",
        Unit::Seconds,
        "Total request time minus upstream time, by arm"
    );
    describe_histogram!(
        "lingua_upstream_duration_seconds",
        Unit::Seconds,
        "From sending upstream to the upstream's last byte, by arm"
    );
    describe_counter!(
        "lingua_compression_cache_total",
        "Compression cache outcomes per request (hit, miss, partial)"
    );
    describe_gauge!(
        "lingua_compression_cache_hit_ratio",
        "Share of requests whose compressed texts all came from the cache"
    );
    describe_counter!(
        "lingua_compression_fail_open_total",
        "Requests forwarded uncompressed because compression failed, by reason"
    );
    describe_counter!(
        "lingua_compression_skipped_total",
        "Requests not compressed by choice (header, disabled, overloaded), by reason"
    );
    describe_gauge!(
        "lingua_scorer_queue_depth",
        "Compression requests waiting for a worker plus inference batches queued in the scorer"
    );
    describe_counter!(
        "lingua_billed_tokens_total",
        "Tokens billed by the upstream (usage), by arm and kind (prompt, completion, cached)"
    );
    describe_gauge!(
        "lingua_cost_usd_total",
        "Estimated upstream cost in US dollars since start, by arm (known prices only)"
    );
    describe_gauge!(
        "lingua_saved_usd_total",
        "Estimated US dollars saved by compression since start (tokens saved x input price)"
    );
    describe_counter!(
        "lingua_mirror_skipped_total",
        "Mirror copies not sent because [ab] max_mirror_inflight were in flight"
    );
    describe_counter!(
        "lingua_events_reopened_total",
        "Times the event log was reopened because its file was moved or deleted"
    );
    describe_counter!(
        "lingua_events_dropped_total",
        "Event-log lines dropped (queue full or write error)"
    );
}

/// Records one finished upstream call of an intercepted request.
pub fn record(e: &Event, route: &str, price: Option<&Price>, cache_hit_ratio: Option<f64>) {
    let Some(arm) = e.arm else { return };
    let arm = arm.as_str();
    let api = e.api.unwrap_or_default().as_str();
    if e.served {
        counter!(
            "lingua_requests_total",
            "route" => route.to_owned(),
            "api" => api,
            "arm" => arm,
            "status" => e.status.to_string()
        )
        .increment(1);
        histogram!("lingua_proxy_overhead_seconds", "arm" => arm)
            .record(e.latency_ms.overhead / 1e3);
    } else {
        counter!("lingua_mirror_requests_total", "arm" => arm).increment(1);
    }
    histogram!("lingua_upstream_duration_seconds", "arm" => arm)
        .record(e.latency_ms.upstream / 1e3);
    if let Some(u) = &e.usage {
        counter!("lingua_billed_tokens_total", "api" => api, "arm" => arm, "kind" => "prompt")
            .increment(u.prompt_tokens);
        counter!("lingua_billed_tokens_total", "api" => api, "arm" => arm, "kind" => "completion")
            .increment(u.completion_tokens);
        counter!("lingua_billed_tokens_total", "api" => api, "arm" => arm, "kind" => "cached")
            .increment(u.cached_tokens.unwrap_or(0));
        if let Some(w) = u.cache_creation_tokens {
            counter!("lingua_billed_tokens_total", "api" => api, "arm" => arm, "kind" => "cache_write")
                .increment(w);
        }
        if let Some(p) = price {
            gauge!("lingua_cost_usd_total", "arm" => arm).increment(p.cost(u));
        }
    }
    // Compression figures count once per client request.
    if !e.served {
        return;
    }
    if let Some(t) = &e.tokens {
        if e.latency_ms.compression > 0.0 {
            histogram!("lingua_compression_duration_seconds")
                .record(e.latency_ms.compression / 1e3);
        }
        for (role, r) in &t.roles {
            // Only configured roles become labels (others: `other`), so series stay bounded.
            let role = super::labels::role_label(role);
            counter!("lingua_prompt_tokens_before_total", "role" => role).increment(r.before);
            counter!("lingua_prompt_tokens_after_total", "role" => role).increment(r.after);
            counter!("lingua_prompt_tokens_saved_total", "role" => role)
                .increment(r.before.saturating_sub(r.after));
        }
        if let Some(p) = price {
            gauge!("lingua_saved_usd_total")
                .increment(p.prompt_cost(t.before.saturating_sub(t.after)));
        }
    }
    if let Some(c) = &e.cache {
        counter!("lingua_compression_cache_total", "result" => c.clone()).increment(1);
    }
    if let Some(r) = cache_hit_ratio {
        gauge!("lingua_compression_cache_hit_ratio").set(r);
    }
}

/// Counts a request forwarded without interception.
pub fn record_passthrough(status: u16) {
    counter!("lingua_passthrough_requests_total", "status" => status.to_string()).increment(1);
}

/// Records the size of a request's causal-LM KV cache after one window.
pub fn record_kv_cache(bytes: usize) {
    histogram!("lingua_causal_kv_cache_bytes").record(bytes as f64);
}

/// Sets the scorer queue depth gauge.
pub fn set_queue_depth(depth: usize) {
    gauge!("lingua_scorer_queue_depth").set(depth as f64);
}
