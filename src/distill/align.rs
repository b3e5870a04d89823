//! Training material for distribution alignment (LLMLingua §3.3): prompt and answer pairs in
//! which the answer is the target LLM's own text, turned into token sequences for
//! `lingua_causal::train`.
//!
//! Sources: JSON Lines of `{"prompt", "answer"}`; `distill collect` output (the paper's
//! instruction with the chunk is the prompt, the LLM's compression the answer); or an event
//! log written with `log_content = true` (the forwarded messages, rendered one `role: text`
//! line each, and the upstream's answer).

use lingua_causal::train::Example;
use serde_json::Value;

use crate::distill::chunk::{SYSTEM_PROMPT, user_prompt};
use crate::scorer::causal::tokenizer::CausalTokenizer;

/// One prompt with the target LLM's answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub prompt: String,
    pub answer: String,
}

/// The text of a message's `content`: a string, or the text of its parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A pair from one JSON Lines record, or `None` when it has neither shape.
pub fn pair_of_record(r: &Value) -> Option<Pair> {
    let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    if let (Some(prompt), Some(answer)) = (s("prompt"), s("answer")) {
        return Some(Pair { prompt, answer });
    }
    let (origin, comp) = (s("origin")?, s("comp")?);
    Some(Pair {
        prompt: format!("{SYSTEM_PROMPT}\n{}", user_prompt(&origin)),
        answer: comp,
    })
}

/// Pairs from an event log: every served event with a logged prompt and a non-empty answer.
pub fn pairs_from_events(events: &[Value]) -> Vec<Pair> {
    events
        .iter()
        .filter(|e| e.get("served").and_then(Value::as_bool) != Some(false))
        .filter_map(|e| {
            let answer = e.get("answer").and_then(Value::as_str)?.trim();
            let messages = e.get("prompt").and_then(Value::as_array)?;
            if answer.is_empty() || messages.is_empty() {
                return None;
            }
            let prompt = messages
                .iter()
                .map(|m| {
                    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                    format!(
                        "{role}: {}",
                        content_text(m.get("content").unwrap_or(&Value::Null))
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Some(Pair {
                prompt,
                answer: answer.to_string(),
            })
        })
        .collect()
}

/// `prompt` (with the tokenizer's special tokens) + `"\n"`, then the answer and the end token.
/// Over `max_len`, the prompt loses its beginning first; an answer longer than the window keeps
/// its first tokens. `None` when nothing of the answer fits.
pub fn example(
    tok: &CausalTokenizer,
    pair: &Pair,
    eos: Option<u32>,
    max_len: usize,
) -> Result<Option<Example>, String> {
    let mut prompt = tok
        .encode(&format!("{}\n", pair.prompt), true)
        .map_err(|e| e.to_string())?;
    let mut answer = tok.encode(&pair.answer, false).map_err(|e| e.to_string())?;
    answer.extend(eos);
    if prompt.is_empty() || answer.is_empty() || max_len < 2 {
        return Ok(None);
    }
    answer.truncate(max_len - 1);
    let room = max_len - answer.len();
    if prompt.len() > room {
        prompt.drain(..prompt.len() - room);
    }
    let answer_from = prompt.len();
    prompt.extend(answer);
    Ok(Some(Example {
        ids: prompt,
        answer_from,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_of_both_shapes_become_pairs() {
        let p = pair_of_record(&json!({"prompt": "Q?", "answer": "A."})).unwrap();
        assert_eq!((p.prompt.as_str(), p.answer.as_str()), ("Q?", "A."));
        let c =
            pair_of_record(&json!({"origin": "The council met.", "comp": "council met."})).unwrap();
        assert!(c.prompt.starts_with(SYSTEM_PROMPT));
        assert!(c.prompt.contains("The council met."));
        assert_eq!(c.answer, "council met.");
        assert!(pair_of_record(&json!({"text": "x"})).is_none());
    }

    #[test]
    fn events_give_their_prompt_and_answer() {
        let events = vec![
            json!({"served": true, "answer": "It ships Monday.", "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "When?"}]}]}),
            json!({"served": false, "answer": "mirror copy", "prompt": [{"role": "user", "content": "x"}]}),
            json!({"served": true, "answer": "", "prompt": [{"role": "user", "content": "x"}]}),
            json!({"served": true, "prompt": [{"role": "user", "content": "x"}]}),
        ];
        let pairs = pairs_from_events(&events);
        assert_eq!(
            pairs,
            [Pair {
                prompt: "system: Be brief.\nuser: When?".into(),
                answer: "It ships Monday.".into()
            }]
        );
    }
}
