//! Token counting for the mock's `usage`: the tiktoken encoding of the model (the same table the
//! proxy uses, so counts agree), and the ids of a prompt for the simulated prompt cache.

use tiktoken_rs::CoreBPE;

/// Marks structure between the parts of a prompt (message boundaries, roles), outside every
/// encoding's vocabulary of ordinary text, as the chat format's special tokens are.
pub(crate) const SEP: [u32; 3] = [200_000, 200_001, 200_002];
/// Precedes a participant's name.
pub(crate) const NAME: u32 = 200_003;

/// The encoding of `model`: `o200k_base` for GPT-4o, GPT-4.1, GPT-4.5, GPT-5 and the o-series,
/// `cl100k_base` for GPT-4 and GPT-3.5, `o200k_base` for every other name (Claude included).
/// A provider prefix such as `openai/` is ignored.
pub fn bpe_for(model: &str) -> &'static CoreBPE {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let o_series = name.len() >= 2
        && name.starts_with('o')
        && name[1..].starts_with(|c: char| c.is_ascii_digit());
    let o200k = name.starts_with("gpt-4o")
        || name.starts_with("chatgpt-4o")
        || name.starts_with("gpt-4.1")
        || name.starts_with("gpt-4.5")
        || name.starts_with("gpt-5")
        || o_series;
    if !o200k && (name.starts_with("gpt-4") || name.starts_with("gpt-3.5")) {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

/// Tokens of `text` in `model`'s encoding (special-token strings count as text).
pub fn count(model: &str, text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        bpe_for(model).encode_ordinary(text).len()
    }
}

/// The first `n` words of `text`, joined by one space: what the mock echoes back.
pub(crate) fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_table_matches_the_encodings() {
        let text = "Hello world, the quick brown fox: 12345 <|endoftext|>";
        let o200k = tiktoken_rs::o200k_base_singleton()
            .encode_ordinary(text)
            .len();
        let cl100k = tiktoken_rs::cl100k_base_singleton()
            .encode_ordinary(text)
            .len();
        assert_ne!(o200k, cl100k, "the sample must tell the encodings apart");
        for m in [
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5",
            "o3-mini",
            "openai/gpt-4o",
            "claude-x",
        ] {
            assert_eq!(count(m, text), o200k, "{m}");
        }
        for m in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo"] {
            assert_eq!(count(m, text), cl100k, "{m}");
        }
        assert_eq!(count("gpt-4o", ""), 0);
    }
}
