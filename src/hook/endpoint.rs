//! `/v1/compress` (the Headroom contract) on the proxy's compression: the same policy,
//! admission, workers, deadline and failure mapping as a proxied request, with the call's
//! `config` as per-request options. `bypass` and `token_budget` count the messages first (in a
//! worker, bounded by `max_request_tokens`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use super::compression::{Inner, explain_of};
use super::failure::Failure;
use super::{Reason, RequestCtx};
use crate::api::headroom::{CompressCall, CompressReply};
use crate::compress::{Conversation, RequestOptions, TokenizerKind};
use crate::model::Priority;

impl Inner {
    /// A `/v1/compress` call: the same policy, admission and deadline as a proxied request,
    /// with the call's `config` as per-request options.
    pub(super) async fn compress_call(
        self: Arc<Self>,
        ctx: RequestCtx,
        call: CompressCall,
    ) -> CompressReply {
        let cfg = self.policy.config();
        let outcome = |result: &'static str| {
            metrics::counter!("lingua_compress_endpoint_total", "result" => result).increment(1);
        };
        // Parsed and read into a conversation in a worker, off the async runtime.
        let body = Bytes::from(call.body.clone());
        let (input, surface) = (body.clone(), call.shape.surface());
        let built = self
            .in_worker(Instant::now() + self.deadline, move || {
                let json = serde_json::from_slice::<serde_json::Value>(&input).ok()?;
                let conv = surface.conversation(&json).unwrap_or_default();
                Some((Arc::new(json), Arc::new(conv)))
            })
            .await;
        let Ok(Some((json, conv))) = built else {
            outcome("error");
            return CompressReply::skipped(&call, "internal_error");
        };
        let tokenizer = ctx.tokenizer_or(cfg.default_tokenizer);
        let mut opts = RequestOptions {
            tokenizer: Some(tokenizer),
            protect_recent: call.protect_recent,
            compress_user: Some(call.compress_user_messages),
            frozen_messages: call.frozen_in(&conv),
            explain: call.explain,
            ..RequestOptions::default()
        };
        if !cfg.enabled && !call.bypass {
            outcome("disabled");
            return CompressReply::skipped(&call, Reason::Disabled.endpoint_name());
        }
        if self.root.is_cancelled() {
            outcome("skipped");
            return CompressReply::skipped(&call, Reason::ShuttingDown.endpoint_name());
        }
        // Admission first: counting a large call is work like compressing it.
        let Ok(admission) = self.admission.clone().try_acquire_owned() else {
            self.stats.skipped_overload.fetch_add(1, Ordering::Relaxed);
            outcome("skipped");
            return CompressReply::skipped(&call, Reason::Overloaded.endpoint_name());
        };
        // Counted before the policy only when the reply needs it (bypass, token_budget): in a
        // worker, stopping past `max_request_tokens` as proxied traffic does.
        if call.bypass || call.token_budget.is_some() {
            let counted = self
                .count_in_worker(&conv, tokenizer, Instant::now() + self.deadline)
                .await;
            let before = match counted {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => {
                    outcome("skipped");
                    return CompressReply::skipped(&call, Reason::TooLarge.endpoint_name());
                }
                Err(_) => {
                    outcome("skipped");
                    return CompressReply::skipped(&call, Reason::Deadline.endpoint_name());
                }
            };
            if call.bypass {
                outcome("bypass");
                return CompressReply::unchanged(&call, before as u64);
            }
            if let Some(b) = call.token_budget {
                if before as u64 <= b {
                    outcome("unchanged");
                    return CompressReply::unchanged(&call, before as u64);
                }
                let budget_rate = (b as f64 / before.max(1) as f64).clamp(0.01, 1.0);
                opts.rate_override = Some(
                    call.target_ratio
                        .map_or(budget_rate, |a| a.min(budget_rate)),
                );
            }
        } else {
            opts.rate_override = call.target_ratio;
        }
        let deadline = Instant::now() + self.deadline;
        let work = self.root.child(Some(deadline), Priority::Normal);
        let _cancel = work.cancel_on_drop();
        opts.work = work.clone();
        let result = self
            .compress(body, json, move |_| conv, opts, deadline)
            .await;
        drop(admission);
        let reason = match result {
            Ok(o) if o.report.too_large => {
                tracing::info!("/v1/compress: too large to compress; returning the messages");
                Reason::TooLarge
            }
            Ok(o) => {
                let r = &o.report;
                let explain = call.explain.then(|| explain_of(r));
                let reply = match &o.body {
                    Some(b) => {
                        outcome("compressed");
                        let n = r.messages.iter().filter(|m| m.skipped.is_none()).count();
                        let transform = format!("lingua-proxy:{}", self.policy.compressor().id());
                        CompressReply::compressed(
                            &call,
                            b,
                            r.tokens_before as u64,
                            r.tokens_after as u64,
                            &transform,
                            n,
                        )
                    }
                    None => {
                        outcome("unchanged");
                        CompressReply::unchanged(&call, r.tokens_before as u64)
                    }
                };
                return CompressReply { explain, ..reply };
            }
            Err(f) => f.record(
                &self.stats,
                self.deadline,
                "returning the original messages",
            ),
        };
        outcome("skipped");
        CompressReply::skipped(&call, reason.endpoint_name())
    }

    /// The conversation's text tokens, counted in a worker; `Err(lower bound)` past
    /// `max_request_tokens`.
    async fn count_in_worker(
        &self,
        conv: &Conversation,
        tokenizer: TokenizerKind,
        deadline: Instant,
    ) -> Result<Result<usize, usize>, Failure> {
        let texts: Vec<String> = conv
            .messages
            .iter()
            .flat_map(|m| m.segments.iter().map(|s| s.text.clone()))
            .collect();
        let limit = self.policy.config().max_request_tokens;
        self.in_worker(deadline, move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            crate::compress::policy::count_within(tokenizer, &texts, limit)
        })
        .await
    }
}
