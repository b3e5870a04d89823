//! LLMLingua (arXiv 2310.05736) and LongLLMLingua (arXiv 2310.06839): prompt compression with a
//! small causal LM's perplexity, ported from `llmlingua` 0.2.2's `compress_prompt` (spec §4):
//! the budget controller and coarse context filter ([`rank`], `control_context_budget`), the
//! sentence filter ([`sentences`]), the question-conditioned prefix, iterative token-level
//! compression ([`itpc`]) and [`recover`]. [`Params`] carries the reference's keyword arguments
//! one to one, with its defaults; [`Method::Longllmlingua`] only changes the defaults of keys a
//! caller does not set (the LongLLMLingua recipe of the reference's README and tests).
//!
//! Nothing here knows HTTP; the model is any [`CausalScorer`].

pub mod expr;
pub mod itpc;
pub mod ppl;
pub mod py;
pub mod rank;
pub mod recover;
pub mod sentences;

use serde_json::Value;
use thiserror::Error;

pub use rank::RankMethod;
pub use recover::recover;

use crate::compress::llmlingua2::cl100k_count;
use crate::model::{Interrupted, WorkCtx};
use crate::scorer::ScorerError;
use crate::scorer::causal::CausalScorer;

/// The split token id the reference hard-codes (`<0x0A>` in Llama's vocabulary, `"."` in GPT-2's).
pub const SPLIT_TOKEN_ID: u32 = 13;
/// `prefix_bos_num`: ids kept from the front of an over-long condition prefix.
pub const PREFIX_BOS_NUM: usize = 100;

#[derive(Debug, Error)]
pub enum LlmlinguaError {
    /// The reference refuses these parameters (`TypeError` / `AssertionError`).
    #[error("invalid parameters: {0}")]
    Params(String),
    /// A feature of the reference this build does not run.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The reference itself raises on this input (the message names its exception).
    #[error("the reference raises here: {0}")]
    Reference(String),
    #[error(transparent)]
    Scorer(#[from] ScorerError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Interrupted> for LlmlinguaError {
    fn from(i: Interrupted) -> Self {
        Self::Scorer(i.into())
    }
}

/// Which recipe supplies the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `compress_prompt`'s own defaults.
    #[default]
    Llmlingua,
    /// The LongLLMLingua recipe (spec §4.1) for keys the caller leaves out.
    Longllmlingua,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llmlingua" => Ok(Self::Llmlingua),
            "longllmlingua" => Ok(Self::Longllmlingua),
            other => Err(format!(
                "unknown method {other:?} (expected llmlingua or longllmlingua)"
            )),
        }
    }
}

/// Question conditioning of the perplexity (`condition_in_question` without `_condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    None,
    Before,
    After,
}

/// The keyword arguments of `compress_prompt` (v1 path) with the reference's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub context: Vec<String>,
    /// `context` was given as a string (only affects nothing but error messages).
    pub instruction: String,
    pub question: String,
    pub rate: f64,
    pub target_token: f64,
    pub iterative_size: i64,
    pub force_context_ids: Option<Vec<i64>>,
    pub force_context_number: Option<i64>,
    pub use_sentence_level_filter: bool,
    pub use_context_level_filter: bool,
    pub use_token_level_filter: bool,
    pub keep_split: bool,
    pub keep_first_sentence: i64,
    pub keep_last_sentence: i64,
    pub keep_sentence_number: i64,
    pub high_priority_bonus: f64,
    pub context_budget: String,
    pub token_budget_ratio: f64,
    pub condition_in_question: String,
    pub reorder_context: String,
    pub dynamic_context_compression_ratio: f64,
    pub condition_compare: bool,
    pub add_instruction: bool,
    pub rank_method: String,
    pub concate_question: bool,
    pub strict_preserve_uncompressed: bool,
}

impl Params {
    /// The defaults of `method`.
    pub fn defaults(method: Method) -> Self {
        let mut p = Self {
            context: vec![" ".into()],
            instruction: String::new(),
            question: String::new(),
            rate: 0.5,
            target_token: -1.0,
            iterative_size: 200,
            force_context_ids: None,
            force_context_number: None,
            use_sentence_level_filter: false,
            use_context_level_filter: true,
            use_token_level_filter: true,
            keep_split: false,
            keep_first_sentence: 0,
            keep_last_sentence: 0,
            keep_sentence_number: 0,
            high_priority_bonus: 100.0,
            context_budget: "+100".into(),
            token_budget_ratio: 1.4,
            condition_in_question: "none".into(),
            reorder_context: "original".into(),
            dynamic_context_compression_ratio: 0.0,
            condition_compare: false,
            add_instruction: false,
            rank_method: "llmlingua".into(),
            concate_question: true,
            strict_preserve_uncompressed: true,
        };
        if method == Method::Longllmlingua {
            p.rate = 0.55;
            p.condition_in_question = "after_condition".into();
            p.reorder_context = "sort".into();
            p.dynamic_context_compression_ratio = 0.3;
            p.condition_compare = true;
            p.context_budget = "+100".into();
            p.rank_method = "longllmlingua".into();
        }
        p
    }

    /// Reads a JSON object whose keys are `compress_prompt`'s keyword arguments; keys it does not
    /// set keep `method`'s defaults. Unknown keys are refused, as Python refuses unknown keyword
    /// arguments; the LLMLingua-2-only keys are accepted and ignored, as the v1 path ignores them.
    pub fn from_json(v: &Value, method: Method) -> Result<Self, LlmlinguaError> {
        let obj = v
            .as_object()
            .ok_or_else(|| LlmlinguaError::Params("the parameters must be a JSON object".into()))?;
        let mut p = Self::defaults(method);
        let mut have_context = false;
        for (k, v) in obj {
            let k = k.as_str();
            match k {
                "context" => {
                    have_context = true;
                    p.context = match v {
                        Value::Null => vec![" ".into()],
                        Value::String(s) if s.is_empty() => vec![" ".into()],
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) if a.is_empty() => vec![" ".into()],
                        Value::Array(a) => a
                            .iter()
                            .map(|x| {
                                x.as_str().map(str::to_string).ok_or_else(|| {
                                    LlmlinguaError::Params(
                                        "context must be a string or a list of strings".into(),
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(LlmlinguaError::Params(
                                "context must be a string or a list of strings".into(),
                            ));
                        }
                    }
                }
                "instruction" => p.instruction = string(k, v)?,
                "question" => p.question = string(k, v)?,
                "rate" => p.rate = number(k, v)?,
                "target_token" => p.target_token = number(k, v)?,
                "iterative_size" => p.iterative_size = int(k, v)?,
                "force_context_ids" => {
                    p.force_context_ids = match v {
                        Value::Null => None,
                        Value::Array(a) => {
                            Some(a.iter().map(|x| int(k, x)).collect::<Result<Vec<_>, _>>()?)
                        }
                        _ => {
                            return Err(LlmlinguaError::Params(
                                "force_context_ids must be a list of integers or null".into(),
                            ));
                        }
                    }
                }
                "force_context_number" => {
                    p.force_context_number = match v {
                        Value::Null => None,
                        _ => Some(int(k, v)?),
                    }
                }
                "use_sentence_level_filter" => p.use_sentence_level_filter = boolean(k, v)?,
                "use_context_level_filter" => p.use_context_level_filter = boolean(k, v)?,
                "use_token_level_filter" => p.use_token_level_filter = boolean(k, v)?,
                "keep_split" => p.keep_split = boolean(k, v)?,
                "keep_first_sentence" => p.keep_first_sentence = int(k, v)?,
                "keep_last_sentence" => p.keep_last_sentence = int(k, v)?,
                "keep_sentence_number" => p.keep_sentence_number = int(k, v)?,
                "high_priority_bonus" => p.high_priority_bonus = number(k, v)?,
                "context_budget" => p.context_budget = string(k, v)?,
                "token_budget_ratio" => p.token_budget_ratio = number(k, v)?,
                "condition_in_question" => p.condition_in_question = string(k, v)?,
                "reorder_context" => p.reorder_context = string(k, v)?,
                "dynamic_context_compression_ratio" => {
                    p.dynamic_context_compression_ratio = number(k, v)?
                }
                "condition_compare" => p.condition_compare = boolean(k, v)?,
                "add_instruction" => p.add_instruction = boolean(k, v)?,
                "rank_method" => p.rank_method = string(k, v)?,
                "concate_question" => p.concate_question = boolean(k, v)?,
                "strict_preserve_uncompressed" => p.strict_preserve_uncompressed = boolean(k, v)?,
                // LLMLingua-2 keywords: `compress_prompt` accepts them; the v1 path ignores them.
                "target_context"
                | "context_level_rate"
                | "context_level_target_token"
                | "return_word_label"
                | "word_sep"
                | "label_sep"
                | "token_to_word"
                | "force_tokens"
                | "force_reserve_digit"
                | "drop_consecutive"
                | "chunk_end_tokens" => {}
                "context_segs" | "context_segs_rate" | "context_segs_compress" => {
                    return Err(LlmlinguaError::Unsupported(format!(
                        "{k} is internal to structured_compress_prompt"
                    )));
                }
                other => {
                    return Err(LlmlinguaError::Params(format!(
                        "compress_prompt() got an unexpected keyword argument {other:?}"
                    )));
                }
            }
        }
        if !have_context {
            return Err(LlmlinguaError::Params(
                "compress_prompt() missing 1 required positional argument: 'context'".into(),
            ));
        }
        Ok(p)
    }
}

fn string(k: &str, v: &Value) -> Result<String, LlmlinguaError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| LlmlinguaError::Params(format!("{k} must be a string")))
}

fn number(k: &str, v: &Value) -> Result<f64, LlmlinguaError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| LlmlinguaError::Params(format!("{k} must be a number"))),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(LlmlinguaError::Params(format!("{k} must be a number"))),
    }
}

fn int(k: &str, v: &Value) -> Result<i64, LlmlinguaError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| LlmlinguaError::Params(format!("{k} must be an integer"))),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(LlmlinguaError::Params(format!("{k} must be an integer"))),
    }
}

/// Python truthiness of a JSON value given for a boolean keyword.
fn boolean(k: &str, v: &Value) -> Result<bool, LlmlinguaError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|x| x != 0.0)),
        _ => Err(LlmlinguaError::Params(format!("{k} must be a boolean"))),
    }
}

/// What the reference returns, plus the intermediate results the tests and reports use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Output {
    pub compressed_prompt: String,
    pub origin_tokens: usize,
    pub compressed_tokens: usize,
    /// `f"{ratio:.1f}x"`.
    pub ratio: String,
    /// `f"{rate * 100:.1f}%"`.
    pub rate: String,
    pub saving: String,
    /// The context-level ranking `(index, score)`, when the coarse filter ran.
    #[serde(skip)]
    pub ranking: Option<Vec<(usize, f64)>>,
    /// Indices of the contexts kept, in output order, when the coarse filter ran.
    #[serde(skip)]
    pub selected: Option<Vec<i64>>,
    #[serde(skip)]
    pub dynamic_ratio: Vec<f64>,
    /// The compressed small-model ids before decoding (token filter on).
    #[serde(skip)]
    pub ids: Option<Vec<u32>>,
    /// For each of `ids`, its index among the ids of `"\n\n".join(token_contexts)`.
    #[serde(skip)]
    pub origin: Option<Vec<usize>>,
    /// The contexts the token-level filter ran on (condition prefix first, when there is one).
    #[serde(skip)]
    pub token_contexts: Vec<String>,
    /// Ids of the condition prefix at the front of `token_contexts` (0 without one).
    #[serde(skip)]
    pub start: usize,
}

/// `compress_prompt(**params)` on the v1 path.
pub fn compress_prompt<L: CausalScorer>(
    lm: &L,
    p: &Params,
    ctx: &WorkCtx,
) -> Result<Output, LlmlinguaError> {
    let tok = lm.tokenizer();
    if p.rate.is_nan() || p.rate > 1.0 {
        return Err(LlmlinguaError::Params(
            "Error: 'rate' must not exceed 1.0. The value of 'rate' indicates compression rate and must be within the range [0, 1].".into(),
        ));
    }
    if p.iterative_size < 1 {
        return Err(LlmlinguaError::Params(
            "iterative_size must be at least 1".into(),
        ));
    }
    let mut context = p.context.clone();
    if context.is_empty() {
        context = vec![" ".into()];
    }
    let method = RankMethod::parse(&p.rank_method)?;
    if method == RankMethod::Longllmlingua && p.question.is_empty() {
        return Err(LlmlinguaError::Params(
            "In the LongLLMLingua, it is necessary to set a question.".into(),
        ));
    }
    let mut cond = p.condition_in_question.clone();
    if p.condition_compare && !cond.contains("_condition") {
        cond.push_str("_condition");
    }
    match method {
        RankMethod::Longllmlingua if cond == "none" => cond = "after".into(),
        RankMethod::Llmlingua => {
            cond = if cond.contains("_condition") {
                "none_condition".into()
            } else {
                "none".into()
            }
        }
        _ => {}
    }
    let mut joined = vec![p.instruction.clone()];
    joined.extend(context.iter().cloned());
    joined.push(p.question.clone());
    let origin_tokens = cl100k_count(py::strip(&joined.join("\n\n")));

    let mut lens = Vec::with_capacity(context.len());
    for c in &context {
        lens.push(tok.len(c, true)? as i64);
    }
    let i_len = tok.len(&p.instruction, true)? as f64;
    let q_len = tok.len(&p.question, true)? as f64;
    let mut target_token = p.target_token;
    if target_token == -1.0 {
        target_token = (i_len + q_len + lens.iter().sum::<i64>() as f64) * p.rate
            - i_len
            - if p.concate_question { q_len } else { 0.0 };
    }
    let condition_flag = cond.contains("_condition");
    let condition = match cond.replace("_condition", "").as_str() {
        "none" => Condition::None,
        "before" => Condition::Before,
        "after" => Condition::After,
        other => {
            return Err(LlmlinguaError::Params(format!(
                "unknown condition_in_question {other:?} (none, before or after, optionally with _condition)"
            )));
        }
    };

    let mut out_ranking = None;
    let mut out_selected = None;
    let dynamic_ratio;
    if context.len() > 1 && p.use_context_level_filter {
        let ranking = rank::rank(lm, &context, &p.question, method, condition, ctx)?;
        let (kept, ratios, used) =
            control_context_budget(&context, &lens, target_token, p, &ranking)?;
        context = kept;
        dynamic_ratio = ratios;
        out_ranking = Some(ranking);
        out_selected = Some(used);
    } else {
        dynamic_ratio = vec![0.0; context.len()];
    }

    if p.use_sentence_level_filter {
        context = sentences::control_sentence_budget(
            lm,
            &context,
            target_token,
            p,
            method,
            condition,
            ctx,
        )?;
    }

    let mut start = 0usize;
    if condition_flag {
        let mut prefix = if p.add_instruction {
            format!("{}\n\n{}", p.question, p.instruction)
        } else {
            p.question.clone()
        };
        let max_pos = lm.max_positions() as i64;
        if tok.len(&format!("{prefix}\n\n"), true)? as i64 + p.iterative_size * 2 > max_pos {
            let ids = tok.encode(&prefix, false)?;
            let n = ids.len();
            let head = &ids[py::range(None, Some(PREFIX_BOS_NUM as i64), n)];
            let from = n as i64 - max_pos + 2 + PREFIX_BOS_NUM as i64 + 2 * p.iterative_size;
            let tail = &ids[py::range(Some(from), None, n)];
            let kept: Vec<u32> = head.iter().chain(tail).copied().collect();
            prefix = tok.decode(&kept)?;
        }
        start = prefix_length(lm, &format!("{prefix}\n\n"), &context[0])?;
        context.insert(0, prefix);
    }

    let mut out_ids = None;
    let mut out_origin = None;
    let token_contexts = context.clone();
    let compressed = if p.use_token_level_filter {
        let done = itpc::iterative_compress(
            lm,
            &context,
            &itpc::ItpcArgs {
                target_token,
                iterative_size: p.iterative_size,
                keep_split: p.keep_split,
                split_token_id: SPLIT_TOKEN_ID,
                start,
                dynamic_ratio: &dynamic_ratio,
                condition_compare: p.condition_compare,
            },
            ctx,
        )?;
        let text = tok
            .decode(&done.ids)?
            .replace("<s> ", "")
            .replace("<s>", "");
        out_origin = Some(done.origin);
        out_ids = Some(done.ids);
        text
    } else {
        if condition_flag {
            context.remove(0);
        }
        context.join("\n\n")
    };

    let mut res: Vec<&str> = Vec::new();
    if !p.instruction.is_empty() {
        res.push(&p.instruction);
    }
    if !py::strip(&compressed).is_empty() {
        res.push(&compressed);
    }
    if !p.question.is_empty() && p.concate_question {
        res.push(&p.question);
    }
    let compressed_prompt = res.join("\n\n");
    let compressed_tokens = cl100k_count(&compressed_prompt);
    let (ratio_s, rate_s, saving_s) = stats(origin_tokens, compressed_tokens);
    Ok(Output {
        compressed_prompt,
        origin_tokens,
        compressed_tokens,
        ratio: ratio_s,
        rate: rate_s,
        saving: saving_s,
        ranking: out_ranking,
        selected: out_selected,
        dynamic_ratio,
        ids: out_ids,
        origin: out_origin,
        token_contexts,
        start,
    })
}

/// The reference's `ratio`, `rate` and `saving` strings.
pub fn stats(origin: usize, compressed: usize) -> (String, String, String) {
    let saving = (origin as f64 - compressed as f64) * 0.06 / 1000.0;
    let ratio = if compressed == 0 {
        1.0
    } else {
        origin as f64 / compressed as f64
    };
    let rate = 1.0 / ratio;
    (
        format!("{ratio:.1}x"),
        format!("{:.1}%", rate * 100.0),
        format!(", Saving ${saving:.1} in GPT-4."),
    )
}

/// `get_prefix_length(prefix, text)`: the number of ids of `prefix + text[:100]` that decode to
/// exactly `prefix`.
fn prefix_length<L: CausalScorer>(
    lm: &L,
    prefix: &str,
    text: &str,
) -> Result<usize, LlmlinguaError> {
    let tok = lm.tokenizer();
    let possible = (tok.len(prefix, false)? as i64 - 3).max(1) as usize;
    let head: String = text.chars().take(100).collect();
    let full = tok.encode(&format!("{prefix}{head}"), false)?;
    if possible >= full.len() {
        return Err(LlmlinguaError::Reference(
            "UnboundLocalError: the condition prefix is too short to locate".into(),
        ));
    }
    let mut i = possible;
    while i < full.len() {
        if tok.decode(&full[..i])? == prefix {
            return Ok(i);
        }
        i += 1;
    }
    Ok(full.len() - 1)
}

/// The kept contexts, their dynamic ratios and the indices kept (`used`).
type Selection = (Vec<String>, Vec<f64>, Vec<i64>);

/// `control_context_budget` after the ranking: walks the ranking under
/// `eval("target_token" + context_budget)`, reorders, and spreads the dynamic ratios.
fn control_context_budget(
    context: &[String],
    lens: &[i64],
    target_token: f64,
    p: &Params,
    ranking: &[(usize, f64)],
) -> Result<Selection, LlmlinguaError> {
    let mut budget = if target_token < 0.0 {
        100.0
    } else {
        target_token
    };
    budget = expr::eval_budget(budget, &p.context_budget).map_err(LlmlinguaError::Params)?;
    let mut used: Vec<i64> = p.force_context_ids.clone().unwrap_or_default();
    for &(idx, _) in ranking {
        if idx >= lens.len() {
            continue;
        }
        budget -= lens[idx] as f64;
        if !used.contains(&(idx as i64)) {
            used.push(idx as i64);
        }
        // [BUG-COMPAT] `len(res) >= force_context_number` with `res` always empty.
        if budget < 0.0 || p.force_context_number.is_some_and(|n| 0 >= n) {
            break;
        }
    }
    let original_used = used.clone();
    match p.reorder_context.as_str() {
        "original" => used.sort(),
        "two_stage" => {
            let l: Vec<i64> = used.iter().step_by(2).copied().collect();
            let r: Vec<i64> = used.iter().skip(1).step_by(2).copied().collect();
            used = l.into_iter().chain(r.into_iter().rev()).collect();
        }
        _ => {}
    }
    let dynamic_ratio = if p.dynamic_context_compression_ratio > 0.0 {
        let n = used.len() as i64;
        let d = p.dynamic_context_compression_ratio.abs();
        let mut v: Vec<f64> = (-(n - 1)..n)
            .step_by(2)
            .map(|i| {
                if n > 1 {
                    i as f64 * (d / (n - 1) as f64)
                } else {
                    0.0
                }
            })
            .collect();
        v.reverse();
        // dict(zip(original_used, ratios)): a later duplicate key overwrites.
        let mut map: Vec<(i64, f64)> = Vec::new();
        for (k, r) in original_used.iter().zip(&v) {
            match map.iter_mut().find(|(kk, _)| kk == k) {
                Some(e) => e.1 = *r,
                None => map.push((*k, *r)),
            }
        }
        used.iter()
            .map(|i| {
                map.iter()
                    .find(|(k, _)| k == i)
                    .map(|(_, r)| *r)
                    .ok_or_else(|| LlmlinguaError::Reference("KeyError in dynamic ratios".into()))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![0.0; used.len()]
    };
    let n = context.len() as i64;
    let mut kept = Vec::new();
    for &i in &used {
        if i < n {
            let j = if i < 0 { i + n } else { i };
            if j < 0 {
                return Err(LlmlinguaError::Reference(format!(
                    "IndexError: force_context_ids {i} is out of range"
                )));
            }
            kept.push(context[j as usize].clone());
        }
    }
    Ok((kept, dynamic_ratio, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_format_like_python() {
        assert_eq!(
            stats(422, 293),
            (
                "1.4x".into(),
                "69.4%".into(),
                ", Saving $0.0 in GPT-4.".into()
            )
        );
        assert_eq!(stats(10, 0).0, "1.0x");
        assert_eq!(stats(1094, 474).1, "43.3%");
    }

    #[test]
    fn params_follow_the_reference_keywords() {
        let v = serde_json::json!({"context": "abc", "rate": 0.3, "force_tokens": ["x"]});
        let p = Params::from_json(&v, Method::Llmlingua).unwrap();
        assert_eq!(p.context, vec!["abc".to_string()]);
        assert_eq!(p.rate, 0.3);
        assert_eq!(p.iterative_size, 200);
        let long = Params::from_json(
            &serde_json::json!({"context": [], "question": "q"}),
            Method::Longllmlingua,
        )
        .unwrap();
        assert_eq!(long.context, vec![" ".to_string()]);
        assert_eq!(long.rank_method, "longllmlingua");
        assert!(long.condition_compare);
        let err = Params::from_json(
            &serde_json::json!({"context": "a", "ratio": 0.5}),
            Method::Llmlingua,
        );
        assert!(matches!(err, Err(LlmlinguaError::Params(m)) if m.contains("ratio")));
        assert!(Params::from_json(&serde_json::json!({"rate": 0.5}), Method::Llmlingua).is_err());
    }
}
