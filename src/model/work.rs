//! The work context of one request: a deadline, a priority and a cancel flag (with an optional
//! parent, so one `cancel()` on the proxy's root context stops every request at shutdown).
//!
//! It is cheap to clone (one `Arc`) and is passed from the pipeline through the policy, the
//! compressor and the scorer to the [`super::Scheduler`]. Long loops call [`WorkCtx::check`]
//! every few hundred iterations; the scheduler drops queued windows of a context that is
//! cancelled or past its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use thiserror::Error;

/// Why work stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Interrupted {
    #[error("deadline exceeded")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
}

/// Scheduling class: within the scheduler every queued `Normal` window runs before any
/// `Background` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// A client is waiting.
    #[default]
    Normal,
    /// Off the request path (`[compression] background = true`).
    Background,
}

#[derive(Debug, Default)]
struct Inner {
    deadline: Option<Instant>,
    priority: Priority,
    cancelled: AtomicBool,
    parent: Option<Arc<Inner>>,
}

impl Inner {
    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
            || self.parent.as_ref().is_some_and(|p| p.cancelled())
    }
}

/// Deadline + cancellation of one unit of work (see the module docs). `Default`: no deadline,
/// never cancelled unless [`WorkCtx::cancel`] is called.
#[derive(Debug, Clone, Default)]
pub struct WorkCtx {
    inner: Arc<Inner>,
}

impl WorkCtx {
    /// No deadline, normal priority.
    pub fn none() -> Self {
        Self::default()
    }

    /// A root context with `deadline`.
    pub fn with_deadline(deadline: Option<Instant>) -> Self {
        Self {
            inner: Arc::new(Inner {
                deadline,
                ..Inner::default()
            }),
        }
    }

    /// A child: cancelled when `self` is, with its own deadline and priority.
    pub fn child(&self, deadline: Option<Instant>, priority: Priority) -> Self {
        Self {
            inner: Arc::new(Inner {
                deadline,
                priority,
                cancelled: AtomicBool::new(false),
                parent: Some(self.inner.clone()),
            }),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    pub fn priority(&self) -> Priority {
        self.inner.priority
    }

    /// Cancels this context and every child of it.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled()
    }

    /// `Err` once past the deadline or cancelled (the deadline wins when both hold).
    pub fn check(&self) -> Result<(), Interrupted> {
        // A passed deadline wins over the cancel flag: the pipeline cancels a request's
        // context when its deadline fires, and the deadline is the reason worth reporting.
        match self.inner.deadline {
            Some(d) if Instant::now() >= d => return Err(Interrupted::Deadline),
            _ => {}
        }
        if self.inner.cancelled() {
            return Err(Interrupted::Cancelled);
        }
        Ok(())
    }

    /// [`WorkCtx::check`] every `every`-th call of a loop (`i` is the loop counter): keeps the
    /// clock read out of tight loops.
    pub fn check_every(&self, i: usize, every: usize) -> Result<(), Interrupted> {
        if every == 0 || i.is_multiple_of(every) {
            self.check()
        } else {
            Ok(())
        }
    }

    /// A guard that cancels this context when dropped (the request future went away), unless
    /// [`CancelOnDrop::disarm`] was called.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            ctx: Some(self.clone()),
        }
    }
}

/// See [`WorkCtx::cancel_on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop {
    ctx: Option<WorkCtx>,
}

impl CancelOnDrop {
    /// The work finished: dropping the guard no longer cancels.
    pub fn disarm(mut self) {
        self.ctx = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.ctx.take() {
            c.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadline_cancel_parent_and_guard() {
        let root = WorkCtx::none();
        assert_eq!(root.check(), Ok(()));
        let past = WorkCtx::with_deadline(Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(past.check(), Err(Interrupted::Deadline));
        let child = root.child(None, Priority::Background);
        assert_eq!(child.priority(), Priority::Background);
        root.cancel();
        assert_eq!(child.check(), Err(Interrupted::Cancelled));

        // Cancelled after its deadline passed: the deadline is the reason reported.
        past.cancel();
        assert_eq!(past.check(), Err(Interrupted::Deadline));

        let ctx = WorkCtx::none();
        drop(ctx.cancel_on_drop());
        assert!(ctx.is_cancelled());
        let ctx = WorkCtx::none();
        ctx.cancel_on_drop().disarm();
        assert!(!ctx.is_cancelled());
    }
}
