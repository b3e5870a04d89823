//! Token counting with the target model's tokenizer (tiktoken-rs, embedded BPE files). A leaf
//! module: the scorers and the compression library both count with it, and it imports neither.

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

/// Marks the place of a protected span inside compressible text (a private-use character).
/// The compression library puts it there; scorers must treat it as a word of its own.
pub const SPAN_MARKER: &str = "\u{E000}";

/// A tiktoken encoding used for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TokenizerKind {
    /// GPT-4o, GPT-4.1, GPT-5 and the o-series.
    #[default]
    #[serde(rename = "o200k_base")]
    O200kBase,
    /// GPT-4 and GPT-3.5.
    #[serde(rename = "cl100k_base")]
    Cl100kBase,
}

/// Texts shorter than this are counted directly (hashing would cost about as much).
const MEMO_MIN_BYTES: usize = 128;

/// Token counts of long texts by (encoding, xxh3-128 of the bytes, length): at most 32,768
/// entries (about 2 MB), least recently used out first.
static COUNTS: std::sync::LazyLock<moka::sync::Cache<(TokenizerKind, u128, usize), usize>> =
    std::sync::LazyLock::new(|| moka::sync::Cache::new(32_768));

impl std::str::FromStr for TokenizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "o200k_base" => Ok(Self::O200kBase),
            "cl100k_base" => Ok(Self::Cl100kBase),
            other => Err(format!(
                "unknown tokenizer {other:?} (expected \"o200k_base\" or \"cl100k_base\")"
            )),
        }
    }
}

impl TokenizerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    /// The tokenizer of a model name; `default` for names the table does not know.
    /// A provider prefix such as `openai/` is ignored.
    pub fn for_model(model: &str, default: TokenizerKind) -> TokenizerKind {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let o_series = name.len() >= 2
            && name.starts_with('o')
            && name[1..].starts_with(|c: char| c.is_ascii_digit());
        if name.starts_with("gpt-4o")
            || name.starts_with("chatgpt-4o")
            || name.starts_with("gpt-4.1")
            || name.starts_with("gpt-4.5")
            || name.starts_with("gpt-5")
            || o_series
        {
            TokenizerKind::O200kBase
        } else if name.starts_with("gpt-4")
            || name.starts_with("gpt-3.5")
            // Anthropic publishes no tokenizer: cl100k_base is the documented estimate for
            // Claude models (billed usage is what the A/B figures use).
            || name.starts_with("claude")
        {
            TokenizerKind::Cl100kBase
        } else {
            default
        }
    }

    pub fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Number of tokens in `text`. Special-token strings count as ordinary text
    /// (`encode_ordinary`), so user text can never make counting fail.
    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        if text.len() < MEMO_MIN_BYTES {
            return self.bpe().encode_ordinary(text).len();
        }
        // A conversation's earlier messages come back on every turn: count each long text once.
        let key = (
            self,
            xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
            text.len(),
        );
        if let Some(n) = COUNTS.get(&key) {
            return n;
        }
        let n = self.bpe().encode_ordinary(text).len();
        COUNTS.insert(key, n);
        n
    }

    /// `Ok(count)` when `text` has at most `limit` tokens, else `Err(n)` with `n > limit`, an
    /// estimate of the tokens counted so far. A token is at least one byte, so a text of at most
    /// `limit` bytes is counted directly; a longer one is counted in pieces of about 16 KiB cut
    /// at whitespace, stopping as soon as the sum passes the limit: the cost is bounded by the
    /// limit, not by the text. Within the limit the exact count is returned.
    pub fn count_up_to(self, text: &str, limit: usize) -> Result<usize, usize> {
        const PIECE: usize = 16 * 1024;
        if text.len() <= limit {
            return Ok(self.count(text));
        }
        let mut total = 0usize;
        let mut at = 0usize;
        while at < text.len() {
            let mut end = (at + PIECE).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            if let Some((ws, _)) = text[end..]
                .char_indices()
                .take(256)
                .find(|(_, c)| c.is_whitespace())
            {
                end += ws;
            }
            total += self.count(&text[at..end]);
            if total > limit {
                return Err(total);
            }
            at = end;
        }
        // Seams can shift the sum by a token or two: count the (bounded) text exactly.
        Ok(self.count(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoised_counts_are_the_counts_per_text_and_encoding() {
        let long = "Refunds are reviewed by the billing team within two business days. ".repeat(20);
        let other = long.replace("two", "ten");
        assert_eq!(long.len(), other.len());
        for kind in [TokenizerKind::O200kBase, TokenizerKind::Cl100kBase] {
            let direct = |t: &str| kind.bpe().encode_ordinary(t).len();
            for _ in 0..3 {
                assert_eq!(kind.count(&long), direct(&long));
                assert_eq!(kind.count(&other), direct(&other));
            }
        }
        // a text whose two encodings differ in count keeps both apart
        let cjk = "我们明天开会讨论预算。".repeat(60);
        assert_ne!(
            TokenizerKind::O200kBase.count(&cjk),
            TokenizerKind::Cl100kBase.count(&cjk)
        );
    }

    #[test]
    fn model_table() {
        use TokenizerKind::*;
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o1-preview",
            "o3-mini",
            "o4-mini",
            "openai/gpt-4o",
        ] {
            assert_eq!(TokenizerKind::for_model(m, Cl100kBase), O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo-0125",
            "claude-sonnet-4-5",
        ] {
            assert_eq!(TokenizerKind::for_model(m, O200kBase), Cl100kBase, "{m}");
        }
        assert_eq!(TokenizerKind::for_model("llama-3", Cl100kBase), Cl100kBase);
        assert_eq!(TokenizerKind::for_model("omni", Cl100kBase), Cl100kBase);
    }

    #[test]
    fn counts_differ_by_encoding_and_ignore_special_strings() {
        let text = "Hello world <|endoftext|> done";
        assert!(TokenizerKind::Cl100kBase.count(text) > 4);
        assert!(TokenizerKind::O200kBase.count(text) > 4);
        assert_eq!(TokenizerKind::O200kBase.count(""), 0);
    }
}
