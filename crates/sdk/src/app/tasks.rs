//! A process's background tasks, tied to one cancellation token: stopped together when the
//! process stops, and awaited (within a bound) so none is cut off mid-write by the runtime's
//! exit without the process knowing.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The background work of one process (consumers, relays, sweeps, watches). Cheap to clone;
/// every clone spawns into, and stops, the same set.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// An empty set, not stopping.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` until it ends or the set stops, whichever is first. Work is dropped at an
    /// await point when the set stops, as a crash would end it: a task must be safe to end
    /// there (the outbox relay, inbox consumers and saga runner are, by design). A task that
    /// ends by itself while the set runs is logged: background work is meant to last.
    pub fn spawn<F>(&self, name: &'static str, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        let span = tracing::info_span!("task", task = name);
        self.tracker.spawn(
            async move {
                tokio::select! {
                    biased;
                    _ = token.cancelled() => {}
                    _ = work => {
                        if !token.is_cancelled() {
                            tracing::warn!(task = name, "a background task ended on its own");
                        }
                    }
                }
            }
            .instrument(span),
        );
    }

    /// Resolves once the set is told to stop: the shutdown future for a task that stops
    /// itself (a watch, a server).
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Whether the set was told to stop.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tells every task to stop and waits up to `within` for them; `false` (and a warning
    /// naming how many) when some were still running at the bound.
    pub async fn stop(&self, within: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        match tokio::time::timeout(within, self.tracker.wait()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    running = self.tracker.len(),
                    ?within,
                    "background tasks still running at shutdown"
                );
                false
            }
        }
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn stopping_ends_every_task_and_waits_for_them() {
        let tasks = Tasks::new();
        let cleaned = Arc::new(AtomicBool::new(false));
        // One task that never ends by itself, one that watches the token to finish cleanly.
        tasks.spawn("forever", std::future::pending());
        let stopped = tasks.stopped();
        let flag = cleaned.clone();
        tasks.spawn("clean", async move {
            stopped.await;
            flag.store(true, Ordering::SeqCst);
        });
        assert_eq!(tasks.len(), 2);
        assert!(tasks.stop(Duration::from_secs(1)).await, "both ended within the bound");
        assert!(tasks.is_empty());
        assert!(tasks.is_stopping());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_stop_is_reported_not_awaited_forever() {
        let tasks = Tasks::new();
        // A blocking section the token cannot interrupt: a spawned task the set does not own
        // would be dropped at exit; one the set owns is waited for, but only so long.
        let (_hold, held) = tokio::sync::oneshot::channel::<()>();
        let tracker = tasks.tracker.clone();
        tracker.spawn(async move {
            let _ = held.await;
        });
        assert!(!tasks.stop(Duration::from_millis(100)).await);
    }
}
