//! Asking an OpenAI-compatible chat model to compress each chunk with the paper's instruction
//! (spec §1): bounded concurrency, retries with backoff on 429, 5xx and transport errors (the
//! reference retries forever every 62 s), a cost estimate before starting and a `max_cost` guard
//! on the billed usage while running, and resumable output (chunks already answered are
//! skipped). Each answer is stored verbatim with the model and settings that produced it.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::chunk::{SYSTEM_PROMPT, chunk_origin, user_prompt};
use crate::telemetry::PriceTable;
use crate::tokens::TokenizerKind;

/// How the model is called.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `…/v1` of an OpenAI-compatible API.
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u64,
    pub concurrency: usize,
    pub retries: u32,
    /// Largest first wait between retries; doubles per attempt up to 30 s.
    pub backoff: Duration,
}

/// One chunk to send.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub source_id: Value,
    pub index: usize,
    pub origin: String,
}

/// Chunks every text (`(source id, text)`), skipping chunk ids in `done`.
pub fn jobs(texts: &[(Value, String)], chunk_tokens: usize, done: &HashSet<String>) -> Vec<Job> {
    let mut out = Vec::new();
    for (source, text) in texts {
        let key = source
            .as_str()
            .map_or_else(|| source.to_string(), str::to_owned);
        for (index, origin) in chunk_origin(text, chunk_tokens).into_iter().enumerate() {
            let id = format!("{key}:{index}");
            if !done.contains(&id) {
                out.push(Job {
                    id,
                    source_id: source.clone(),
                    index,
                    origin,
                });
            }
        }
    }
    out
}

/// Prompt tokens of the jobs (cl100k, system and user prompt) and the cost in US dollars of
/// sending them with each answer as long as its chunk (`None` when the model has no price).
pub fn estimate(jobs: &[Job], model: &str, prices: &PriceTable) -> (u64, u64, Option<f64>) {
    let tok = TokenizerKind::Cl100kBase;
    let system = tok.count(SYSTEM_PROMPT) as u64;
    let (mut prompt, mut completion) = (0u64, 0u64);
    for j in jobs {
        prompt += system + tok.count(&user_prompt(&j.origin)) as u64;
        completion += tok.count(&j.origin) as u64;
    }
    let cost = prices
        .lookup(model)
        .map(|p| (prompt as f64 * p.input + completion as f64 * p.output) / 1e6);
    (prompt, completion, cost)
}

/// What one call gave.
pub enum Answer {
    Ok { record: Value, cost: Option<f64> },
    Failed { id: String, error: String },
}

/// Sends every job, at most `concurrency` at once, handing each answer to `sink` as it comes;
/// stops sending once the billed cost reaches `max_cost`.
pub async fn run(
    settings: &Settings,
    jobs: Vec<Job>,
    prices: &PriceTable,
    max_cost: Option<f64>,
    mut sink: impl FnMut(Answer),
) -> f64 {
    let client = reqwest::Client::new();
    // The calls are polled by this one task: a cell is enough.
    let spent = std::cell::Cell::new(0.0f64);
    let over = || max_cost.is_some_and(|m| spent.get() >= m);
    let mut answers = futures_util::stream::iter(jobs)
        .map(|job| {
            let client = client.clone();
            let skip = over();
            async move {
                if skip {
                    return Answer::Failed {
                        id: job.id,
                        error: "not sent: max_cost reached".into(),
                    };
                }
                call(&client, settings, prices, job).await
            }
        })
        .buffer_unordered(settings.concurrency.max(1));
    while let Some(a) = answers.next().await {
        if let Answer::Ok { cost: Some(c), .. } = &a {
            spent.set(spent.get() + c);
        }
        sink(a);
    }
    drop(answers);
    spent.get()
}

async fn call(client: &reqwest::Client, s: &Settings, prices: &PriceTable, job: Job) -> Answer {
    let body = json!({
        "model": s.model,
        "temperature": s.temperature,
        "top_p": 1.0,
        "max_tokens": s.max_tokens,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_prompt(&job.origin)},
        ],
    });
    let url = format!("{}/chat/completions", s.base_url.trim_end_matches('/'));
    let v = match chat(
        client,
        &url,
        s.api_key.as_deref(),
        &body,
        s.retries,
        s.backoff,
    )
    .await
    {
        Ok(v) => v,
        Err(error) => return Answer::Failed { id: job.id, error },
    };
    let comp = v
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let usage = v.get("usage").cloned().unwrap_or(Value::Null);
    let cost = prices.lookup(&s.model).map(|p| {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
        (n("prompt_tokens") * p.input + n("completion_tokens") * p.output) / 1e6
    });
    let record = json!({
        "id": job.id,
        "source_id": job.source_id,
        "chunk_index": job.index,
        "origin": job.origin,
        "comp": comp,
        "model": s.model,
        "answered_by": v.get("model"),
        "temperature": s.temperature,
        "max_tokens": s.max_tokens,
        "instruction": "llmlingua2-compression-instructions-4",
        "usage": usage,
    });
    Answer::Ok { record, cost }
}

/// POSTs `body` to an OpenAI-compatible `url` and returns the answer, which has a
/// `choices[0].message.content` string. 429, 5xx, transport errors and answers without that
/// content are retried up to `retries` times, waiting `backoff` doubled each time (at most
/// 30 s) or the server's `Retry-After` (at most 60 s); the error says what the last try got.
pub async fn chat(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    body: &Value,
    retries: u32,
    backoff: Duration,
) -> Result<Value, String> {
    let mut attempt = 0u32;
    loop {
        let mut req = client
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(600));
        if let Some(key) = api_key {
            req = req.bearer_auth(key);
        }
        let (retryable, error, wait) = match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                Ok(v)
                    if v.pointer("/choices/0/message/content")
                        .is_some_and(Value::is_string) =>
                {
                    return Ok(v);
                }
                Ok(_) => (
                    true,
                    "an answer without choices[0].message.content".to_string(),
                    None,
                ),
                Err(e) => (true, format!("unreadable answer: {e}"), None),
            },
            Ok(resp) => {
                let status = resp.status();
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let retryable = status.as_u16() == 429 || status.is_server_error();
                (retryable, format!("HTTP {status}"), wait)
            }
            Err(e) => (true, format!("{e}"), None),
        };
        if !retryable || attempt >= retries {
            return Err(error);
        }
        let doubled = (backoff * 2u32.saturating_pow(attempt)).min(Duration::from_secs(30));
        tokio::time::sleep(wait.unwrap_or(doubled).min(Duration::from_secs(60))).await;
        attempt += 1;
    }
}

/// The texts worth distilling from an event log written with `[telemetry] log_content = true`:
/// of each request forwarded as the client sent it (not a compressed one), the system and tool
/// messages and every user message but the last, cut by the content classifier into blocks, of
/// which only prose (documents and instructions) is kept: code, diffs, logs and data never train
/// a word dropper. Deduplicated by content: `(content hash, text)`.
pub fn texts_from_events(events: &[Value]) -> Vec<(Value, String)> {
    use crate::compress::content::{Kind, Prose, classify};
    use crate::model::Pace;
    use sha2::{Digest, Sha256};
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in events {
        if e.get("compression").and_then(Value::as_str) == Some("compressed") {
            continue; // the logged prompt is the compressed one, not the client's
        }
        let Some(messages) = e.get("prompt").and_then(Value::as_array) else {
            continue;
        };
        let last_user = messages
            .iter()
            .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
            let wanted = matches!(role, "system" | "developer" | "tool")
                || (role == "user" && Some(i) != last_user);
            if !wanted {
                continue;
            }
            let text = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => continue,
            };
            let prose = if matches!(role, "system" | "developer") {
                Prose::Instructions
            } else {
                Prose::Documents
            };
            let Ok(blocks) = classify(&text, prose, &mut Pace::unbounded()) else {
                continue;
            };
            for b in blocks {
                if !matches!(b.kind, Kind::Document | Kind::Instructions) {
                    continue;
                }
                let Some(piece) = text.get(b.range.clone()) else {
                    continue;
                };
                let piece = piece.trim();
                if piece.split_whitespace().count() < 8 {
                    continue;
                }
                let hash = hex::encode(Sha256::digest(piece.as_bytes()));
                if seen.insert(hash.clone()) {
                    out.push((
                        Value::String(format!("sha256:{}", &hash[..16])),
                        piece.to_string(),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_logs_give_prose_once_and_never_code_or_compressed_prompts() {
        let doc = "The shipment left Rotterdam on Monday and reached the Hamburg warehouse on \
                   Wednesday night after a brake inspection delayed the truck.";
        let code = "fn main() {\n    let x = compute(1, 2);\n    println!(\"{x}\");\n}\n";
        let events = vec![
            json!({"compression": "unchanged", "prompt": [
                {"role": "system", "content": "You are a careful assistant who answers questions about shipments and never invents tracking numbers."},
                {"role": "user", "content": format!("{doc}\n\n```rust\n{code}```\n")},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "When will it arrive at the customer in Hamburg, and who signs for it?"}
            ]}),
            // the same document again, on the raw arm: kept once
            json!({"arm": "raw", "compression": "not_run", "prompt": [
                {"role": "tool", "tool_call_id": "c", "content": doc}
            ]}),
            // a compressed prompt is not the client's text
            json!({"compression": "compressed", "prompt": [
                {"role": "tool", "content": "A compressed text that must never become training data for the scorer."}
            ]}),
            json!({"compression": "unchanged"}),
        ];
        let texts = texts_from_events(&events);
        let bodies: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
        assert!(
            bodies
                .iter()
                .any(|t| t.starts_with("You are a careful assistant"))
        );
        assert_eq!(
            bodies.iter().filter(|t| **t == doc).count(),
            1,
            "{bodies:?}"
        );
        assert!(
            bodies.iter().all(|t| !t.contains("compute(1, 2)")),
            "code is never material"
        );
        assert!(bodies.iter().all(|t| !t.contains("compressed text")));
        assert!(
            bodies.iter().all(|t| !t.starts_with("When will it arrive")),
            "the last user turn is the question"
        );
    }
}
