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

/// Where LLMLingua-2's compression instruction puts the text, and what follows it.
const COMPRESS_HEAD: &str = "If you understand, please compress the following text: \n";
const COMPRESS_TAIL: &str = "\nThe compressed text is: ";
/// Words the mock labeller deletes (negations are never among them).
const STOPWORDS: [&str; 36] = [
    "a", "an", "the", "of", "to", "and", "is", "are", "was", "were", "be", "been", "will", "that",
    "this", "for", "on", "in", "at", "by", "with", "it", "as", "then", "there", "which", "has",
    "have", "had", "very", "also", "just", "really", "so", "we", "our",
];

/// The mock as LLMLingua-2's labelling LLM: given the paper's instruction (spec
/// `llmlingua2-distillation.md` §1.1), a deterministic extractive compression of the text it
/// carries: stopwords dropped, everything else in order, line breaks kept.
pub(crate) fn extractive_compression(user: &str) -> Option<String> {
    let start = user.find(COMPRESS_HEAD)? + COMPRESS_HEAD.len();
    let text = user[start..].strip_suffix(COMPRESS_TAIL)?;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let mut kept = Vec::new();
            for w in line.split_whitespace() {
                let core = w.trim_matches(|c: char| !c.is_alphanumeric());
                if STOPWORDS.contains(&core.to_lowercase().as_str()) {
                    // the word goes, a sentence end after it stays
                    let tail: String = w.chars().rev().take_while(|c| *c == '.').collect();
                    if !tail.is_empty() {
                        kept.push(tail);
                    }
                } else {
                    kept.push(w.to_string());
                }
            }
            kept.join(" ")
        })
        .collect();
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labelling_llm_deletes_stopwords_only_when_asked_with_the_instruction() {
        let ask = |t: &str| format!("Compress some text... {COMPRESS_HEAD}{t}{COMPRESS_TAIL}");
        assert_eq!(
            extractive_compression(&ask("The council will vote on it.\nIt is not late."))
                .as_deref(),
            Some("council vote .\nnot late.")
        );
        assert_eq!(extractive_compression("What is the weather?"), None);
    }

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
