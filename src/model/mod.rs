//! Loaded models as scheduled, bounded resources: the [`WorkCtx`] that carries a request's
//! deadline and cancellation down to the model, the `[model]` sizing table, and the per-model
//! inference [`Scheduler`] (token-budget batching across requests, earliest deadline first,
//! admission by queued tokens). Nothing here knows about HTTP or about text selection.

pub mod config;
pub mod scheduler;
pub mod work;

pub use config::{ModelConfig, PrecisionSetting};
pub use scheduler::{
    Backend, ModelQueue, SchedError, Scheduler, SchedulerConfig, SchedulerStats, Ticket,
};
pub use work::{CancelOnDrop, Interrupted, Pace, Priority, WorkCtx};
