//! The small LM's tokenizer as the reference's v1 path calls it through transformers 4.46:
//! `tokenizer(text, add_special_tokens=...)` (truncation and padding of `tokenizer.json` off, as
//! transformers does per call) and `decode(ids)` (special tokens kept, then transformers'
//! `clean_up_tokenization` when `tokenizer_config.json` says `clean_up_tokenization_spaces`;
//! transformers 4.46's default is `false`).

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::scorer::ScorerError;

/// Token ids with each token's byte range.
pub type IdsWithOffsets = (Vec<u32>, Vec<(usize, usize)>);

#[derive(Clone)]
pub struct CausalTokenizer {
    tok: Tokenizer,
    clean_up: bool,
    bos: Option<String>,
    id: String,
}

impl std::fmt::Debug for CausalTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalTokenizer")
            .field("id", &self.id)
            .field("clean_up", &self.clean_up)
            .finish()
    }
}

impl CausalTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let path = dir.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config = serde_json::Value::Null;
        let cfg_path = dir.join("tokenizer_config.json");
        if let Ok(raw) = std::fs::read(&cfg_path) {
            config =
                serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        }
        let mut hasher = Sha256::new();
        hasher.update(&bytes);
        hasher.update(config.to_string().as_bytes());
        let id = hex::encode(&hasher.finalize()[..8]);
        Self::from_bytes(&bytes, &config, id).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The tokenizer of a GGUF file, rebuilt from its vocabulary and merges
    /// (`lingua_causal::gguf`).
    pub fn from_gguf(path: &Path) -> Result<Self, String> {
        let g = lingua_causal::gguf::Gguf::open(path).map_err(|e| e.to_string())?;
        let (json, config) = g.tokenizer().map_err(|e| e.to_string())?;
        let config: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        hasher.update(json.as_bytes());
        hasher.update(config.to_string().as_bytes());
        let id = hex::encode(&hasher.finalize()[..8]);
        Self::from_bytes(json.as_bytes(), &config, id)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `tokenizer.json` bytes plus the parsed `tokenizer_config.json` (or `Null`).
    pub fn from_bytes(
        tokenizer_json: &[u8],
        config: &serde_json::Value,
        id: String,
    ) -> Result<Self, String> {
        let mut tok = Tokenizer::from_bytes(tokenizer_json).map_err(|e| e.to_string())?;
        tok.with_truncation(None).map_err(|e| e.to_string())?;
        tok.with_padding(None);
        let clean_up = config
            .get("clean_up_tokenization_spaces")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let bos = match config.get("bos_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        Ok(Self {
            tok,
            clean_up,
            bos,
            id,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `tokenizer(text, add_special_tokens=special).input_ids`.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, ScorerError> {
        self.tok
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ScorerError::Tokenizer(e.to_string()))
    }

    /// The ids of `text` (no special tokens) with each token's byte range in `text`.
    pub fn encode_offsets(&self, text: &str) -> Result<IdsWithOffsets, ScorerError> {
        let e = self
            .tok
            .encode(text, false)
            .map_err(|e| ScorerError::Tokenizer(e.to_string()))?;
        Ok((e.get_ids().to_vec(), e.get_offsets().to_vec()))
    }

    /// `len(tokenizer(text, add_special_tokens=special).input_ids)`.
    pub fn len(&self, text: &str, special: bool) -> Result<usize, ScorerError> {
        self.encode(text, special).map(|v| v.len())
    }

    /// `tokenizer.decode(ids)`: special tokens kept, clean-up as configured.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ScorerError> {
        let text = self
            .tok
            .decode(ids, false)
            .map_err(|e| ScorerError::Tokenizer(e.to_string()))?;
        Ok(if self.clean_up {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// The configured BOS string (`<s>` for Llama), if any.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_deref()
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
}

/// transformers' `clean_up_tokenization`: spaces before punctuation and English contractions.
pub fn clean_up_tokenization(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_transformers_order() {
        assert_eq!(clean_up_tokenization("a , b . c ' d"), "a, b. c'd");
        assert_eq!(
            clean_up_tokenization("I do n't know , they 're"),
            "I don't know, they're"
        );
    }
}
