//! Arms by compressor (`[ab.control]`): one hook per A/B arm. The `compressed` arm runs the
//! `[compression]` hook, the `raw` arm (the control) runs the hook built from `[compression]`
//! overlaid by `[ab.control]`, and each report names the compressor that ran, so the event log
//! and the report compare two compressors (a distilled scorer against the released one) on the
//! same traffic.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{CompressCall, CompressReply, HookOutcome, Intercepted, RequestCtx, RequestHook};
use crate::ab::Arm;

/// A compressor hook and the name its events carry.
pub struct Named {
    pub name: String,
    pub hook: Arc<dyn RequestHook>,
}

/// Dispatches each request to its arm's hook.
pub struct ArmsHook {
    treatment: Named,
    control: Named,
}

impl ArmsHook {
    pub fn new(treatment: Named, control: Named) -> Self {
        Self { treatment, control }
    }

    fn arm(&self, arm: Option<Arm>) -> &Named {
        match arm {
            Some(Arm::Raw) => &self.control,
            _ => &self.treatment,
        }
    }
}

impl RequestHook for ArmsHook {
    fn on_request(&self, req: Intercepted) -> BoxFuture<'static, HookOutcome> {
        let named = self.arm(req.ctx.arm);
        let name = named.name.clone();
        let run = named.hook.on_request(req);
        Box::pin(async move {
            let mut outcome = run.await;
            if let Some(r) = &mut outcome.report {
                r.compressor = Some(name);
            }
            outcome
        })
    }

    /// `/v1/compress` names no arm: the `[compression]` hook answers.
    fn compress_call(
        &self,
        ctx: RequestCtx,
        call: CompressCall,
    ) -> BoxFuture<'static, CompressReply> {
        self.arm(ctx.arm).hook.compress_call(ctx, call)
    }

    fn describe(&self) -> serde_json::Value {
        let mut d = self.treatment.hook.describe();
        if let Some(o) = d.as_object_mut() {
            o.insert(
                "arms".into(),
                serde_json::json!({
                    "compressed": self.treatment.name,
                    "raw": self.control.name,
                    "control": self.control.hook.describe(),
                }),
            );
        }
        d
    }

    fn queue_depth(&self) -> usize {
        self.treatment.hook.queue_depth() + self.control.hook.queue_depth()
    }

    fn shutdown(&self) {
        self.treatment.hook.shutdown();
        self.control.hook.shutdown();
    }
}
