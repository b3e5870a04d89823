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
    let spent = std::sync::Mutex::new(0.0f64);
    let over = || max_cost.is_some_and(|m| spent.lock().map_or(true, |s| *s >= m));
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
        if let Answer::Ok { cost: Some(c), .. } = &a
            && let Ok(mut s) = spent.lock()
        {
            *s += c;
        }
        sink(a);
    }
    drop(answers);
    spent.into_inner().unwrap_or(0.0)
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
    let mut attempt = 0u32;
    loop {
        let mut req = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(600));
        if let Some(key) = &s.api_key {
            req = req.bearer_auth(key);
        }
        let (retryable, error, wait) = match req.send().await {
            Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                Ok(v) => match v
                    .pointer("/choices/0/message/content")
                    .and_then(Value::as_str)
                {
                    Some(comp) => {
                        let usage = v.get("usage").cloned().unwrap_or(Value::Null);
                        let cost = prices.lookup(&s.model).map(|p| {
                            let n =
                                |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
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
                        return Answer::Ok { record, cost };
                    }
                    None => (
                        true,
                        "an answer without choices[0].message.content".to_string(),
                        None,
                    ),
                },
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
        if !retryable || attempt >= s.retries {
            return Answer::Failed { id: job.id, error };
        }
        let backoff = (s.backoff * 2u32.saturating_pow(attempt)).min(Duration::from_secs(30));
        tokio::time::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(60))).await;
        attempt += 1;
    }
}
