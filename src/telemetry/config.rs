//! `[telemetry]`: the event log, `/metrics`, `/stats` and the dashboard.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// JSON-lines event log, one line per upstream call of an intercepted chat completion.
    /// Unset: no event log (metrics and `/stats` still work).
    pub events_path: Option<PathBuf>,
    /// Rotate the event log when it would grow past this many bytes.
    pub rotate_bytes: u64,
    /// Rotated files kept (`events.jsonl.1` is the newest).
    pub keep_files: usize,
    /// Events queued for the writer thread; beyond this they are dropped and counted.
    pub queue: usize,
    /// Bytes the queued events may hold (prompts and answers with `log_content = true`
    /// included). Past it an event's content is left out (`content_omitted: true`), and an
    /// event that still does not fit is dropped and counted.
    pub queue_bytes: u64,
    /// Write prompts and answers into the event log (off: only counts and timings).
    pub log_content: bool,
    /// Ask the upstream for the usage chunk of streams (`stream_options.include_usage`) so that
    /// streamed requests report billed tokens too; the extra chunk is removed from the stream
    /// unless the client asked for it.
    pub stream_usage: bool,
    /// Serve `GET /metrics` (Prometheus text format).
    pub metrics: bool,
    /// Serve `GET /stats` and `GET /dashboard`.
    pub dashboard: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            events_path: None,
            rotate_bytes: 64 * 1024 * 1024,
            keep_files: 5,
            queue: 8192,
            queue_bytes: 64 * 1024 * 1024,
            log_content: false,
            stream_usage: true,
            metrics: true,
            dashboard: true,
        }
    }
}
