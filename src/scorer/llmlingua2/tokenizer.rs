//! Tokenizer glue for LLMLingua-2 checkpoints: loads `tokenizer.json` with the `tokenizers`
//! crate and reproduces what the reference (`llmlingua` 0.2.2 on transformers 5) does with it
//! (spec §0, §2.4, §2.5):
//!
//! * the 100 placeholders `[NEW0]`…`[NEW99]` are registered as special added tokens, in order,
//!   and must get the ids `base + i`;
//! * [`Llmlingua2Tokenizer::tokenize`] = HF `tokenizer.tokenize(text)` (no special tokens added,
//!   truncation and padding from `tokenizer.json` disabled, as transformers does per call);
//! * [`Llmlingua2Tokenizer::tokens_to_string`] = HF `convert_tokens_to_string` = the decoder of
//!   `tokenizer.json` applied to token strings (the Rust crate's WordPiece cleanup matches the
//!   Python `tokenizers` 0.23 the reference runs with: cleanup per token);
//! * the special-token set = the named special tokens of the tokenizer config;
//! * [`Llmlingua2Tokenizer::model_input`] builds the ids the model sees, including the reference's
//!   [BUG-COMPAT] `[CLS]`/`[SEP]`/`[PAD]` marker strings (unknown to XLM-R, so they become the unk
//!   id there).
//!
//! The word style comes from the tokenizer itself (decoder, else model type), never from the
//! model's name.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::ModelWrapper;
use tokenizers::{AddedToken, Decoder, Tokenizer};

use crate::model::WorkCtx;
use crate::scorer::{ScoredChunk, Scorer, ScorerError, WordStyle};

/// Number of force-token placeholders the reference registers (`max_force_token`).
pub const N_PLACEHOLDERS: usize = 100;
/// The reference's `max_seq_len`.
pub const MAX_SEQ_LEN: usize = 512;

/// [BUG-COMPAT] The marker strings `TokenClfDataset` uses for every model (it is built without
/// `model_name`, so it always takes the BERT branch).
pub const CLS_MARKER: &str = "[CLS]";
pub const SEP_MARKER: &str = "[SEP]";
pub const PAD_MARKER: &str = "[PAD]";

/// The ids and mask of one chunk as the reference feeds them to the model (unpadded: the
/// reference pads to 512 with masked `[PAD]` slots, which does not change the active outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    /// `convert_tokens_to_ids(["[CLS]"] + tokenize(chunk) + ["[SEP]"])`, truncated to 512.
    pub input_ids: Vec<u32>,
    /// 1 for every position whose token string is not `"[PAD]"`.
    pub attention_mask: Vec<u32>,
    /// `convert_ids_to_tokens` of the active (mask 1) ids: what [`ScoredChunk::tokens`] holds.
    pub active_tokens: Vec<String>,
}

/// A loaded LLMLingua-2 tokenizer.
#[derive(Clone)]
pub struct Llmlingua2Tokenizer {
    tok: Tokenizer,
    style: WordStyle,
    special: HashSet<String>,
    unk_id: u32,
    placeholder_base: u32,
    id: String,
}

fn tok_err(e: impl std::fmt::Display) -> ScorerError {
    ScorerError::Tokenizer(e.to_string())
}

/// A special token entry of `tokenizer_config.json` / `special_tokens_map.json`: a string or an
/// `AddedToken` dict with `content`.
fn token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ScorerError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(tok_err)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ScorerError::Tokenizer(format!("{}: {e}", path.display())))
}

const NAMED_SPECIALS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl Llmlingua2Tokenizer {
    /// Loads `dir/tokenizer.json` plus the special-token names from `tokenizer_config.json` /
    /// `special_tokens_map.json` and `pad_token_id` from `config.json` (each optional).
    pub fn from_dir(dir: &Path) -> Result<Self, ScorerError> {
        let tok = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            ScorerError::Tokenizer(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        let mut named: Vec<(String, String)> = Vec::new();
        for file in ["special_tokens_map.json", "tokenizer_config.json"] {
            if let Some(v) = read_json(&dir.join(file))? {
                for key in NAMED_SPECIALS {
                    if let Some(s) = v.get(key).and_then(token_content) {
                        named.retain(|(k, _)| k != key);
                        named.push((key.to_string(), s));
                    }
                }
            }
        }
        let pad_token_id = read_json(&dir.join("config.json"))?
            .and_then(|c| c.get("pad_token_id").and_then(|p| p.as_u64()));
        Self::new(tok, &named, pad_token_id)
    }

    /// `named`: the named special tokens (`unk_token` → `"<unk>"`, …); when empty, the
    /// defaults of the tokenizer class for the detected word style are used.
    /// `config_pad_token_id`: `config.pad_token_id` of the checkpoint.
    pub fn new(
        mut tok: Tokenizer,
        named: &[(String, String)],
        config_pad_token_id: Option<u64>,
    ) -> Result<Self, ScorerError> {
        let style = detect_style(&tok)?;
        let mut named: Vec<(String, String)> = named.to_vec();
        if named.is_empty() {
            let defaults: &[(&str, &str)] = match style {
                WordStyle::Metaspace => &[
                    ("bos_token", "<s>"),
                    ("eos_token", "</s>"),
                    ("unk_token", "<unk>"),
                    ("sep_token", "</s>"),
                    ("pad_token", "<pad>"),
                    ("cls_token", "<s>"),
                    ("mask_token", "<mask>"),
                ],
                WordStyle::WordPiece => &[
                    ("unk_token", "[UNK]"),
                    ("sep_token", "[SEP]"),
                    ("pad_token", "[PAD]"),
                    ("cls_token", "[CLS]"),
                    ("mask_token", "[MASK]"),
                ],
            };
            named = defaults
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        let get = |k: &str| named.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        // `load_model` with pad_to_left: pad_token_id := config.pad_token_id if truthy, else
        // the eos id (None for BERT, which drops the pad token from the special set).
        let pad = match config_pad_token_id {
            Some(id) if id != 0 => u32::try_from(id).ok().and_then(|id| tok.id_to_token(id)),
            _ => get("eos_token"),
        };
        let mut special: HashSet<String> = named
            .iter()
            .filter(|(k, _)| k != "pad_token")
            .map(|(_, v)| v.clone())
            .collect();
        if let Some(p) = pad {
            special.insert(p);
        }

        tok.with_truncation(None).map_err(tok_err)?;
        tok.with_padding(None);

        let unk = get("unk_token").ok_or_else(|| tok_err("the tokenizer has no unk token"))?;
        let unk_id = tok
            .token_to_id(&unk)
            .ok_or_else(|| tok_err(format!("unk token {unk} is not in the vocabulary")))?;

        // Register [NEW0]..[NEW99] as the reference does: special added tokens, not
        // normalised, no strip, not single-word, in index order. Fresh ids follow the base
        // vocabulary; a tokenizer.json that already carries them must have them consecutive.
        let base = tok.get_vocab_size(true) as u32;
        let placeholders: Vec<AddedToken> = (0..N_PLACEHOLDERS)
            .map(|i| AddedToken::from(format!("[NEW{i}]"), true))
            .collect();
        let already = tok.token_to_id("[NEW0]");
        tok.add_special_tokens(placeholders).map_err(tok_err)?;
        let placeholder_base = already.unwrap_or(base);
        for i in 0..N_PLACEHOLDERS {
            let want = placeholder_base + i as u32;
            let got = tok.token_to_id(&format!("[NEW{i}]"));
            if got != Some(want) {
                return Err(tok_err(format!(
                    "placeholder [NEW{i}] got id {got:?}, expected {want}"
                )));
            }
        }
        let id = format!(
            "lingua2-tokenizer:{}:{}",
            match style {
                WordStyle::Metaspace => "metaspace",
                WordStyle::WordPiece => "wordpiece",
            },
            placeholder_base
        );
        Ok(Self {
            tok,
            style,
            special,
            unk_id,
            placeholder_base,
            id,
        })
    }

    pub fn word_style(&self) -> WordStyle {
        self.style
    }

    /// Id of `[NEW0]`; `[NEWi]` is `placeholder_base() + i`.
    pub fn placeholder_base(&self) -> u32 {
        self.placeholder_base
    }

    /// `len(tokenizer)`: base vocabulary + added tokens (incl. the placeholders).
    pub fn len_with_added(&self) -> usize {
        self.tok.get_vocab_size(true)
    }

    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// The named special tokens that word merging skips.
    pub fn special_tokens(&self) -> &HashSet<String> {
        &self.special
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    /// HF `tokenizer.tokenize(text)`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        let enc = self.tok.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_tokens().to_vec())
    }

    /// HF `convert_tokens_to_string`: the decoder on token strings (`" ".join` without one).
    pub fn tokens_to_string(&self, tokens: &[String]) -> String {
        match self.tok.get_decoder() {
            Some(d) => d
                .decode(tokens.to_vec())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" "),
        }
    }

    pub fn is_special(&self, token: &str) -> bool {
        self.special.contains(token)
    }

    /// HF `convert_tokens_to_ids`: unknown strings map to the unk id.
    pub fn token_to_id(&self, token: &str) -> u32 {
        self.tok.token_to_id(token).unwrap_or(self.unk_id)
    }

    /// HF `convert_ids_to_tokens`.
    pub fn id_to_token(&self, id: u32) -> String {
        self.tok.id_to_token(id).unwrap_or_default()
    }

    /// What `TokenClfDataset` builds for one chunk string (spec §2.5), without the padding.
    ///
    /// [BUG-COMPAT] `"[CLS]"` / `"[SEP]"` are used for every model: for XLM-R they are not in
    /// the vocabulary, so the model sees the unk id (3) at both ends instead of `<s>`/`</s>`.
    /// Sequences longer than 512 are truncated (dropping `[SEP]`, or content).
    pub fn model_input(&self, chunk: &str) -> Result<ModelInput, ScorerError> {
        let mut seq = Vec::with_capacity(MAX_SEQ_LEN);
        seq.push(CLS_MARKER.to_string());
        seq.extend(self.tokenize(chunk)?);
        seq.push(SEP_MARKER.to_string());
        seq.truncate(MAX_SEQ_LEN);
        let attention_mask: Vec<u32> = seq.iter().map(|t| u32::from(t != PAD_MARKER)).collect();
        let input_ids: Vec<u32> = seq.iter().map(|t| self.token_to_id(t)).collect();
        let active_tokens = input_ids
            .iter()
            .zip(attention_mask.iter())
            .filter(|(_, m)| **m == 1)
            .map(|(id, _)| self.id_to_token(*id))
            .collect();
        Ok(ModelInput {
            input_ids,
            attention_mask,
            active_tokens,
        })
    }
}

fn detect_style(tok: &Tokenizer) -> Result<WordStyle, ScorerError> {
    match tok.get_decoder() {
        Some(DecoderWrapper::Metaspace(_)) => return Ok(WordStyle::Metaspace),
        Some(DecoderWrapper::WordPiece(_)) => return Ok(WordStyle::WordPiece),
        _ => {}
    }
    match tok.get_model() {
        ModelWrapper::Unigram(_) => Ok(WordStyle::Metaspace),
        ModelWrapper::WordPiece(_) => Ok(WordStyle::WordPiece),
        _ => Err(tok_err(
            "unsupported tokenizer: need a WordPiece (BERT) or Metaspace/Unigram (XLM-R) tokenizer",
        )),
    }
}

/// The tokenizer alone as a [`Scorer`] that cannot score: for tests that replay recorded
/// probabilities (`compress::llmlingua2::replay::ReplayScorer`, feature `test-support`) and for callers that only
/// need tokenisation. `score_chunks` always fails.
impl Scorer for Llmlingua2Tokenizer {
    fn id(&self) -> &str {
        &self.id
    }
    fn word_style(&self) -> WordStyle {
        self.style
    }
    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        Llmlingua2Tokenizer::tokenize(self, text)
    }
    fn tokens_to_string(&self, tokens: &[String]) -> String {
        Llmlingua2Tokenizer::tokens_to_string(self, tokens)
    }
    fn is_special(&self, token: &str) -> bool {
        Llmlingua2Tokenizer::is_special(self, token)
    }
    fn score_chunks(
        &self,
        _chunks: &[String],
        _ctx: &WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError> {
        Err(ScorerError::Unavailable(
            "a bare tokenizer cannot score chunks".to_string(),
        ))
    }
}

/// A [`Scorer`] made of this tokenizer glue and any model function that maps
/// [`ModelInput`]s to class-1 keep probabilities, one per input position (`input_ids.len()`).
/// The function gets the caller's [`WorkCtx`] and must honour it (the proxy's function hands the
/// inputs to the model's scheduler).
/// Positions with attention mask 0 are dropped, as the reference's `masked_select` does.
pub struct InputScorer<F> {
    tokenizer: Llmlingua2Tokenizer,
    infer: F,
    id: String,
}

impl<F> InputScorer<F>
where
    F: Fn(&[ModelInput], &WorkCtx) -> Result<Vec<Vec<f32>>, ScorerError> + Send + Sync,
{
    /// `id` must identify everything that changes the probabilities (weights digest,
    /// precision…); it ends up in cache keys.
    pub fn new(tokenizer: Llmlingua2Tokenizer, id: impl Into<String>, infer: F) -> Self {
        Self {
            tokenizer,
            infer,
            id: id.into(),
        }
    }

    pub fn tokenizer(&self) -> &Llmlingua2Tokenizer {
        &self.tokenizer
    }
}

impl<F> Scorer for InputScorer<F>
where
    F: Fn(&[ModelInput], &WorkCtx) -> Result<Vec<Vec<f32>>, ScorerError> + Send + Sync,
{
    fn id(&self) -> &str {
        &self.id
    }
    fn word_style(&self) -> WordStyle {
        self.tokenizer.style
    }
    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        self.tokenizer.tokenize(text)
    }
    fn tokens_to_string(&self, tokens: &[String]) -> String {
        self.tokenizer.tokens_to_string(tokens)
    }
    fn is_special(&self, token: &str) -> bool {
        self.tokenizer.is_special(token)
    }
    fn score_chunks(
        &self,
        chunks: &[String],
        ctx: &WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError> {
        let mut inputs = Vec::with_capacity(chunks.len());
        for (i, c) in chunks.iter().enumerate() {
            ctx.check_every(i, 16)?;
            inputs.push(self.tokenizer.model_input(c)?);
        }
        let probs = (self.infer)(&inputs, ctx)?;
        if probs.len() != inputs.len() {
            return Err(ScorerError::Model(format!(
                "model returned {} sequences for {}",
                probs.len(),
                inputs.len()
            )));
        }
        inputs
            .into_iter()
            .zip(probs)
            .map(|(inp, p)| {
                if p.len() != inp.input_ids.len() {
                    return Err(ScorerError::Model(format!(
                        "model returned {} probabilities for {} positions",
                        p.len(),
                        inp.input_ids.len()
                    )));
                }
                let probs = p
                    .into_iter()
                    .zip(inp.attention_mask.iter())
                    .filter(|(_, m)| **m == 1)
                    .map(|(x, _)| x)
                    .collect();
                Ok(ScoredChunk {
                    tokens: inp.active_tokens,
                    probs,
                })
            })
            .collect()
    }
}
