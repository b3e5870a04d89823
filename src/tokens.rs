//! Target-model tokenizers (tiktoken) for counting prompt tokens.

use tiktoken_rs::CoreBPE;

/// The tiktoken encodings the proxy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// Parses `o200k_base` / `cl100k_base`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(Self::O200kBase),
            "cl100k_base" => Some(Self::Cl100kBase),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    pub fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// The encoding of an OpenAI model family: o200k_base for gpt-4o, gpt-4.1, gpt-5 and the
    /// o-series; cl100k_base for gpt-4 and gpt-3.5; `None` for anything else.
    pub fn for_known_model(model: &str) -> Option<Self> {
        // Strip a provider prefix such as `openai/gpt-4o` (OpenRouter style).
        let m = model.rsplit('/').next().unwrap_or(model);
        let o_series = m.len() > 1
            && m.starts_with('o')
            && m[1..].chars().next().is_some_and(|c| c.is_ascii_digit());
        if m.starts_with("gpt-4o")
            || m.starts_with("gpt-4.1")
            || m.starts_with("gpt-4.5")
            || m.starts_with("gpt-5")
            || m.starts_with("chatgpt-4o")
            || m.starts_with("gpt-oss")
            || o_series
        {
            Some(Self::O200kBase)
        } else if m.starts_with("gpt-4") || m.starts_with("gpt-3.5") || m.starts_with("gpt-35") {
            Some(Self::Cl100kBase)
        } else {
            None
        }
    }
}

/// The tokenizer for `model`, o200k_base when the model is unknown.
pub fn for_model(model: &str) -> &'static CoreBPE {
    Encoding::for_known_model(model)
        .unwrap_or(Encoding::O200kBase)
        .bpe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        use Encoding::*;
        for (m, e) in [
            ("gpt-4o-mini", Some(O200kBase)),
            ("gpt-4.1", Some(O200kBase)),
            ("gpt-5-nano", Some(O200kBase)),
            ("o3-mini", Some(O200kBase)),
            ("o1", Some(O200kBase)),
            ("openai/gpt-4o", Some(O200kBase)),
            ("gpt-4-turbo", Some(Cl100kBase)),
            ("gpt-3.5-turbo", Some(Cl100kBase)),
            ("llama-3-70b", None),
            ("omni", None),
        ] {
            assert_eq!(Encoding::for_known_model(m), e, "{m}");
        }
        assert_eq!(for_model("gpt-4").encode_ordinary("hello world").len(), 2);
    }
}
