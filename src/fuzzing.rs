//! Fuzzing entry points, not a public API: each takes arbitrary bytes, runs one part of the proxy
//! on them and panics when an invariant breaks. The coverage-guided targets in `fuzz/`
//! (cargo-afl) and the corpus replay in `tests/compression/fuzz_corpus.rs` (the CI smoke run) call them.
//!
//! - [`transform`]: the request transformer (conversation parsing, policy, span detection,
//!   selection with the heuristic scorer, byte splicing). Invariants: no panic, no error, the
//!   output is valid JSON of the same shape where only string values differ, and the same input
//!   gives the same output.
//! - [`sse_tap`]: the response tap over arbitrary chunking of arbitrary bytes (see
//!   `crate::server::fuzz`).

use std::sync::OnceLock;

use serde_json::Value;

use crate::compress::{CompressionConfig, Policy, RequestOptions, ScorerKind};
use crate::engine::build_compressor;

pub use crate::server::fuzz::sse_tap;

/// Separates messages in the text mode of [`transform`].
const MESSAGE_SEPARATOR: u8 = 0xFF;
/// Roles cycled through in the text mode (the last is one the policy does not know).
const ROLES: [&str; 6] = [
    "system",
    "tool",
    "user",
    "developer",
    "assistant",
    "x-made-up",
];

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut cfg = CompressionConfig {
            scorer: ScorerKind::Heuristic,
            cache_bytes: 0,
            protect_last_user: false,
            min_savings: 0.0,
            // Instructions too: the fuzzer reaches the skeleton-keeping selection.
            instructions: crate::compress::InstructionsMode::Compress,
            ..CompressionConfig::default()
        };
        // Every role compresses from the first token, so the selection runs on short inputs.
        for role in [
            &mut cfg.roles.system,
            &mut cfg.roles.developer,
            &mut cfg.roles.user,
            &mut cfg.roles.assistant,
            &mut cfg.roles.tool,
            &mut cfg.roles.function,
            &mut cfg.roles.prompt,
        ] {
            role.enabled = true;
            role.min_tokens = 1;
            role.rate = 0.3;
        }
        cfg.keep_patterns = vec![r"KEEP-\d+".into()];
        let compressor = match build_compressor(&cfg) {
            Ok(c) => c,
            Err(e) => panic!("the heuristic compressor must build: {e}"),
        };
        match Policy::new(cfg, compressor) {
            Ok(p) => p,
            Err(e) => panic!("the fuzzing policy must be valid: {e}"),
        }
    })
}

/// The request body a fuzz input stands for. First byte even: the rest is the body as a client
/// sent it. Odd: the rest is text (lossy UTF-8) split at 0xFF into messages of cycling roles,
/// with every second message's content given as text parts, so span detection and selection see
/// arbitrary text inside a valid request.
pub fn chat_body(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let messages: Vec<Value> = rest
        .split(|b| *b == MESSAGE_SEPARATOR)
        .enumerate()
        .map(|(i, part)| {
            let text = String::from_utf8_lossy(part).into_owned();
            let role = ROLES[(i + usize::from(mode / 2)) % ROLES.len()];
            let content = if i % 2 == 1 {
                serde_json::json!([{"type": "text", "text": text}, {"type": "text", "text": "x"}])
            } else {
                Value::String(text)
            };
            serde_json::json!({"role": role, "content": content})
        })
        .collect();
    serde_json::json!({"model": "gpt-4o-mini", "messages": messages})
        .to_string()
        .into_bytes()
}

/// Runs the transformer on one input and checks its invariants.
pub fn transform(data: &[u8]) {
    let raw = chat_body(data);
    // The proxy forwards bodies that are not JSON unchanged, without calling the policy.
    let Ok(json) = serde_json::from_slice::<Value>(&raw) else {
        return;
    };
    let policy = policy();
    let opts = RequestOptions::default();
    // Every surface reads the same body its own way (a chat body is mostly empty to the others).
    for api in crate::api::Api::ALL {
        let conv = api.surface().conversation(&json).unwrap_or_default();
        let outcome = match policy.apply(&raw, &json, &conv, &opts) {
            Ok(o) => o,
            Err(e) => panic!("the policy failed on a parsable body ({api}): {e}"),
        };
        if let Some(body) = &outcome.body {
            let out: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => panic!("the rewritten body is not JSON ({api}): {e}"),
            };
            same_shape(&json, &out, &mut String::new());
        }
        let again = match policy.apply(&raw, &json, &conv, &opts) {
            Ok(o) => o,
            Err(e) => panic!("the policy failed on the second run ({api}): {e}"),
        };
        assert_eq!(
            outcome.body, again.body,
            "the same input gave another output ({api})"
        );
    }
}

/// Asserts that `b` is `a` with at most string values changed (same keys in the same order,
/// same array lengths, same numbers, booleans and nulls).
fn same_shape(a: &Value, b: &Value, path: &mut String) {
    match (a, b) {
        (Value::String(_), Value::String(_)) => {}
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            assert_eq!(kx, ky, "object keys changed at {path}");
            for (k, v) in x {
                let len = path.len();
                path.push('/');
                path.push_str(k);
                same_shape(v, &y[k], path);
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "array length changed at {path}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                same_shape(v, w, path);
                path.truncate(len);
            }
        }
        (x, y) => assert_eq!(x, y, "a non-string value changed at {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_mode_inputs_are_rewritten() {
        // Not vacuous: the fuzzing policy does rewrite ordinary text, so the shape checks run.
        let mut data = vec![1u8];
        data.extend_from_slice(
            b"The warehouse in Rotterdam closes at six and the one in Hamburg at eight, \
              trucks leave every morning and the service level promises delivery in two days.",
        );
        let raw = chat_body(&data);
        let json: Value = serde_json::from_slice(&raw).unwrap();
        let conv = crate::api::chat::conversation(&json).unwrap();
        let out = policy()
            .apply(&raw, &json, &conv, &RequestOptions::default())
            .unwrap();
        assert!(out.body.is_some());
        transform(&data);
    }

    #[test]
    #[should_panic(expected = "a non-string value changed")]
    fn shape_check_catches_a_changed_number() {
        same_shape(
            &serde_json::json!({"a": [1, "x"]}),
            &serde_json::json!({"a": [2, "y"]}),
            &mut String::new(),
        );
    }
}
