//! The work context of one request: a deadline, a priority and a cancel flag (with an optional
//! parent, so one `cancel()` on the proxy's root context stops every request at shutdown).
//!
//! It is cheap to clone (one `Arc`) and is passed from the compression hook through the policy, the
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
        // A passed deadline wins over the cancel flag: the hook cancels a request's
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

    /// A [`Pace`] over this context: a loop calls [`Pace::step`] once per iteration and the
    /// context is checked every `every`-th step (the first step included).
    pub fn pace(&self, every: usize) -> Pace<'_> {
        Pace {
            ctx: Some(self),
            every: every.max(1),
            steps: 0,
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

/// Paces long loops over one text (see [`WorkCtx::pace`]): counts their iterations and checks
/// the context every few of them, so a long text stops within a few thousand steps of its
/// deadline whichever loop it is in. One pace is shared by the phases of one piece of work.
#[derive(Debug, Clone)]
pub struct Pace<'a> {
    ctx: Option<&'a WorkCtx>,
    every: usize,
    steps: usize,
}

impl Pace<'_> {
    /// A pace that never stops the work (callers without a context).
    pub fn unbounded() -> Self {
        Pace {
            ctx: None,
            every: usize::MAX,
            steps: 0,
        }
    }

    /// One iteration: `Err` when this step is a checking one and the context says stop.
    pub fn step(&mut self) -> Result<(), Interrupted> {
        let due = self.steps.is_multiple_of(self.every);
        self.steps += 1;
        match self.ctx {
            Some(ctx) if due => ctx.check(),
            _ => Ok(()),
        }
    }

    /// The iterations counted so far.
    pub fn steps(&self) -> usize {
        self.steps
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

    #[test]
    fn pace_checks_on_the_first_and_every_nth_step() {
        let ctx = WorkCtx::none();
        let mut pace = ctx.pace(4);
        for _ in 0..5 {
            pace.step().unwrap();
        }
        ctx.cancel();
        // steps 5..7 are not checking ones; step 8 is
        for _ in 5..8 {
            assert_eq!(pace.step(), Ok(()));
        }
        assert_eq!(pace.step(), Err(Interrupted::Cancelled));
        assert_eq!(pace.steps(), 9);

        let past = WorkCtx::with_deadline(Some(Instant::now() - Duration::from_millis(1)));
        let mut pace = past.pace(1000);
        assert_eq!(pace.step(), Err(Interrupted::Deadline));
        let mut free = Pace::unbounded();
        for _ in 0..10 {
            free.step().unwrap();
        }
        assert_eq!(free.steps(), 10);
    }
}
