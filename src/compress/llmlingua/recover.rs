//! `recover(original_prompt, compressed_prompt, response)`: puts the original spelling back into
//! the spans of a response that were copied from the compressed prompt (spec §4.9), matching
//! small-model token ids of the phrase against the original prompt's ids.

use std::collections::HashMap;

use super::LlmlinguaError;
use crate::scorer::causal::CausalTokenizer;

/// The reference's `recover`, word for word (`response.split(" ")`, Python `in` substring tests).
pub fn recover(
    tok: &CausalTokenizer,
    original_prompt: &str,
    compressed_prompt: &str,
    response: &str,
) -> Result<String, LlmlinguaError> {
    let words: Vec<&str> = response.split(' ').collect();
    let original = tok.encode(original_prompt, false)?;
    let n = words.len();
    let mut out: Vec<String> = Vec::with_capacity(n);
    let mut l = 0;
    while l < n {
        if !compressed_prompt.contains(words[l]) {
            out.push(words[l].to_string());
            l += 1;
            continue;
        }
        let mut r = l;
        while r + 1 < n && compressed_prompt.contains(&words[l..r + 2].join(" ")) {
            r += 1;
        }
        out.push(match_phrase(tok, &original, &words[l..=r].join(" "))?);
        l = r + 1;
    }
    Ok(out.join(" "))
}

/// `match_from_compressed(phrase)`: the span of the original ids that covers the most of the
/// phrase's ids (each next id within 10 positions), shortest on ties.
fn match_phrase(
    tok: &CausalTokenizer,
    original: &[u32],
    phrase: &str,
) -> Result<String, LlmlinguaError> {
    let pids = tok.encode(phrase, false)?;
    let Some(&first) = pids.first() else {
        return Err(LlmlinguaError::Reference(
            "IndexError: an empty phrase has no tokens (the response has a doubled or trailing space)"
                .into(),
        ));
    };
    let mut pos: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, id) in original.iter().enumerate() {
        if pids.contains(id) {
            pos.entry(*id).or_default().push(i);
        }
    }
    let empty = Vec::new();
    let mut res: Option<(usize, usize)> = None;
    let mut res_min = usize::MAX;
    let mut res_c = 1usize;
    for &l in pos.get(&first).unwrap_or(&empty) {
        let (mut y, mut c) = (l, 1usize);
        for id in &pids[1..] {
            let list = pos.get(id).unwrap_or(&empty);
            // bisect_right(list, y)
            let i = list.partition_point(|&p| p <= y);
            if i >= list.len() || list[i] - y > 10 {
                continue;
            }
            c += 1;
            y = list[i];
        }
        let span = y - l + 1;
        if c > res_c || (c == res_c && span < res_min) {
            res_c = c;
            res_min = span;
            res = Some((l, y + 1));
        }
    }
    match res {
        None => Ok(phrase.to_string()),
        Some((a, b)) => Ok(tok.decode(&original[a..b])?),
    }
}
