//! Sagas, orchestrated and durable: a saga is an ordered list of steps, each an action and a
//! compensation. Its state (serde) is written to the service's database after every step, so
//! a saga interrupted by a crash resumes from its last written step in the next process. When
//! a step fails for good, the compensations of the steps already done run in reverse order,
//! each until it succeeds. A step that cannot run yet (`StepError::Unavailable`: payments is
//! down) waits and retries with backoff without giving up, so the saga resumes by itself when
//! the dependency returns. Every transition is logged, and sagas can be listed and inspected.
//!
//! A step that failed for good by `Failed` (or timed out) is compensated too, since its effect
//! may have happened before the failure was seen; a `Rejected` step is not (the other side
//! said no, so nothing happened). Compensations must therefore undo "nothing" gracefully.
//!
//! A saga's owner keeps its own record of each step (an order's events) through a
//! [`Recorder`], written in the transaction that records the saga's progress: one commit per
//! step, and the two never disagree.
//!
//! Actions and compensations must be idempotent (a crash after a step's effect and before its
//! record makes it run again): give downstream calls the saga id as their idempotency key.
//!
//! A service whose runners were made through its app's setup ([`crate::app::Setup::saga_runner`])
//! serves them to the control plane for the dashboard, and to nobody else ([`endpoint`]).

pub mod endpoint;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::admission::{Backlog, Overloaded};
use crate::telemetry::{metrics, span};

pub use endpoint::SagaEndpoint;
use store::Change;
pub use store::{SagaRecord, SagaState, SagaStatus, SagaStore, SagaSummary, StateCounts, Transition};

/// Why a step did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// Failed, maybe transiently: retried up to the step's attempts, then the saga compensates.
    #[error("{0}")]
    Failed(String),
    /// Failed for good (a decline, a shortage): the saga compensates at once.
    #[error("{0}")]
    Rejected(String),
    /// A dependency is away: the step waits and retries without giving up.
    #[error("{0}")]
    Unavailable(String),
}

type Boxed<S> = Pin<Box<dyn Future<Output = Result<S, StepError>> + Send>>;
type Run<S> = Arc<dyn Fn(String, S) -> Boxed<S> + Send + Sync>;

/// One step: what it does, how it is undone, how long and how often it may try.
pub struct Step<S> {
    /// Its name (in the log and the status).
    pub name: String,
    action: Run<S>,
    compensation: Run<S>,
    /// One try gives up after this.
    pub timeout: Duration,
    /// Tries before the saga compensates (`Unavailable` does not count).
    pub attempts: u32,
}

type Finally<S> = Arc<dyn Fn(String, S, String) -> Boxed<S> + Send + Sync>;

/// A point in an instance's life its owner may keep a record of (an order's event).
#[derive(Debug)]
pub enum Milestone<'a, S> {
    /// A step's action succeeded; `state` is what it returned.
    Done {
        /// The step.
        step: &'a str,
        /// The state after it.
        state: &'a S,
    },
    /// A step's compensation succeeded.
    Undone {
        /// The step.
        step: &'a str,
        /// The state after it.
        state: &'a S,
    },
    /// Every completed step was undone; the instance ends.
    Compensated {
        /// The state at the end.
        state: &'a S,
        /// Why the saga failed: the failure that started its compensation (never a
        /// compensation's own failure, which is retried and logged, not the owner's news).
        why: &'a str,
        /// Whether that was a refusal (a decline, a shortage: tell the customer) rather
        /// than an operational failure that ran out of tries (tell them something general).
        refused: bool,
    },
}

impl<'a, S> Milestone<'a, S> {
    /// The step it is about (none for the saga's end) and how the metrics count it.
    fn counted(&self) -> (&'a str, &'static str) {
        match self {
            Milestone::Done { step, .. } => (step, "done"),
            Milestone::Undone { step, .. } => (step, "compensated"),
            Milestone::Compensated { .. } => ("", "compensated"),
        }
    }
}

/// What a recorder's write returns.
pub type RecordFuture<'a> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'a>>;

/// Writes the owner's record of a milestone inside the transaction that records the saga's
/// own progress: both commit or neither, and a step costs one commit, not two. Runs again
/// if the step runs again after a crash, so it must tolerate repeats.
pub trait Recorder<S>: Send + Sync {
    /// Writes what `milestone` means to the owner into `tx`.
    fn record<'a>(
        &'a self,
        tx: &'a mut sqlx::Transaction<'static, sqlx::Any>,
        id: &'a str,
        milestone: Milestone<'a, S>,
    ) -> RecordFuture<'a>;

    /// After such a transaction committed (to wake an outbox relay).
    fn committed(&self) {}
}

/// A saga's definition: its kind and its steps, in order.
pub struct Saga<S> {
    /// The kind (`order`), stored with each instance.
    pub kind: String,
    steps: Vec<Step<S>>,
    on_compensated: Option<Finally<S>>,
    recorder: Option<Arc<dyn Recorder<S>>>,
}

impl<S> Saga<S>
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A saga of this kind with no steps yet.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            steps: Vec::new(),
            on_compensated: None,
            recorder: None,
        }
    }

    /// Keeps the owner's record of each milestone in the saga's own transactions.
    pub fn recorder(mut self, recorder: impl Recorder<S> + 'static) -> Self {
        self.recorder = Some(Arc::new(recorder));
        self
    }

    /// What to do once every completed step was undone (tell others; recording the
    /// cancellation is the [`Recorder`]'s): gets the id, the state and why the saga failed; retried until it succeeds,
    /// so it must be idempotent like a compensation. It also runs when the first step fails.
    pub fn on_compensated<F, Fut>(mut self, finally: F) -> Self
    where
        F: Fn(String, S, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, StepError>> + Send + 'static,
    {
        self.on_compensated = Some(Arc::new(move |id, s, why| Box::pin(finally(id, s, why))));
        self
    }

    /// Adds a step. Both functions get the saga id and the state, and return the new state.
    pub fn step<A, AF, C, CF>(mut self, name: impl Into<String>, action: A, compensation: C) -> Self
    where
        A: Fn(String, S) -> AF + Send + Sync + 'static,
        AF: Future<Output = Result<S, StepError>> + Send + 'static,
        C: Fn(String, S) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<S, StepError>> + Send + 'static,
    {
        self.steps.push(Step {
            name: name.into(),
            action: Arc::new(move |id, s| Box::pin(action(id, s))),
            compensation: Arc::new(move |id, s| Box::pin(compensation(id, s))),
            timeout: Duration::from_secs(10),
            attempts: 3,
        });
        self
    }

    /// Sets the last step's per-try timeout and attempts.
    pub fn with_policy(mut self, timeout: Duration, attempts: u32) -> Self {
        if let Some(step) = self.steps.last_mut() {
            step.timeout = timeout;
            step.attempts = attempts.max(1);
        }
        self
    }

    /// The steps' names, in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }
}

/// Runs the sagas of one definition from the store. Clones share the definition, the store
/// and the wake-up, so a request handler can start instances the running loop picks up at once.
pub struct SagaRunner<S> {
    saga: Arc<Saga<S>>,
    store: SagaStore,
    wake: Arc<tokio::sync::Notify>,
    /// This runner's name on the leases it takes and in its check-ins.
    id: Arc<str>,
    /// The instances open and the rate they finish at, for [`SagaRunner::admit`].
    backlog: Backlog,
}

impl<S> Clone for SagaRunner<S> {
    fn clone(&self) -> Self {
        Self {
            saga: Arc::clone(&self.saga),
            store: self.store.clone(),
            wake: Arc::clone(&self.wake),
            id: Arc::clone(&self.id),
            backlog: self.backlog.clone(),
        }
    }
}

/// How many instances one tick advances at once (their steps mostly wait on other services).
const CONCURRENCY: usize = 64;

/// Instances admitted before any has finished (and a rate is known): few, since a slow
/// deployment may take a second for each.
const ADMIT_BEFORE_ANY_FINISHED: u64 = 16;

/// How often a runner reads the open instances and every runner's rate, for admission.
const LOAD_EVERY: Duration = Duration::from_millis(200);

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * (1u64 << attempt.min(7))).min(Duration::from_secs(5))
}

/// How long a step waiting for a dependency that is away waits before it asks again: soon at
/// first, then every 2 s at most, so hundreds of waiting instances do not hammer the database
/// (and the dependency) while it is away, and notice its return within 2 s.
fn wait_backoff(waits: u32) -> Duration {
    Duration::from_millis(100 * (1u64 << waits.min(5))).min(Duration::from_secs(2))
}

impl<S> SagaRunner<S>
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A runner of `saga`'s instances kept in `store`.
    pub fn new(saga: Saga<S>, store: SagaStore) -> Self {
        Self {
            saga: Arc::new(saga),
            store,
            wake: Arc::new(tokio::sync::Notify::new()),
            id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            backlog: Backlog::new(ADMIT_BEFORE_ANY_FINISHED),
        }
    }

    /// Whether one more instance would finish within `within`, by the instances open (every
    /// runner's, waiting ones aside) and the rate the runners finish them at: call it before
    /// anything is written for a new instance, and refuse the work with what it answers
    /// (`503` with `Retry-After`) when it says no. A service whose dependency is away keeps
    /// taking instances: they wait apart and do not count.
    pub fn admit(&self, within: Duration) -> Result<(), Overloaded> {
        let kind = &self.saga.kind;
        self.backlog.admit(within, |open| {
            format!(
                "{open} {kind} sagas are still running, more than finish within {} ms",
                within.as_millis()
            )
        })
    }

    /// Starts an instance (idempotent by id: a second start of the same id changes nothing).
    pub async fn start(&self, id: &str, state: &S) -> Result<bool, sqlx::Error> {
        let state = serde_json::to_value(state).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let started = self.store.insert(id, &self.saga.kind, &state).await?;
        self.wake();
        Ok(started)
    }

    /// Starts an instance inside the caller's transaction: it exists exactly when the change
    /// that starts it commits. Call [`SagaRunner::wake`] after the commit.
    pub async fn start_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        state: &S,
    ) -> Result<bool, sqlx::Error> {
        let state = serde_json::to_value(state).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        SagaStore::insert_in(tx, id, &self.saga.kind, &state).await
    }

    /// Tells the running loop an instance is due now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs every due instance one step on, several at once; returns how many steps ran.
    pub async fn tick(&self) -> Result<usize, sqlx::Error> {
        let lease = Duration::from_millis(store::LEASE_MS as u64);
        let due = self
            .store
            .lease_due(&self.saga.kind, CONCURRENCY as i64, lease, &self.id)
            .await?;
        let mut running = tokio::task::JoinSet::new();
        for record in due {
            let runner = self.clone();
            running.spawn(async move { runner.advance(record).await });
        }
        let mut ran = 0;
        let mut failed = None;
        while let Some(joined) = running.join_next().await {
            self.backlog.left(1);
            match joined {
                Ok(Ok(())) => ran += 1,
                Ok(Err(err)) => failed = Some(err),
                Err(panicked) => failed = Some(sqlx::Error::Protocol(format!("a saga step panicked: {panicked}"))),
            }
        }
        match failed {
            Some(err) if ran == 0 => Err(err),
            _ => Ok(ran),
        }
    }

    /// Runs a leased instance step after step for as long as each goes straight on (keeping
    /// the lease between them); stops at a wait, a retry or the end.
    async fn advance(&self, mut record: SagaRecord) -> Result<(), sqlx::Error> {
        let id = record.id.clone();
        while let Some(next) = self.transition(&id, record).await? {
            record = next;
        }
        Ok(())
    }

    /// One step or compensation of a leased instance; the record to go on with when the
    /// instance is due again at once (still leased).
    async fn transition(&self, id: &str, record: SagaRecord) -> Result<Option<SagaRecord>, sqlx::Error> {
        let Ok(state) = serde_json::from_value::<S>(record.state.clone()) else {
            self.store
                .change(
                    id,
                    (record.status, record.step),
                    Change::Finish {
                        status: SagaStatus::Failed,
                        state: &record.state,
                        why: "state does not deserialize",
                    },
                )
                .await?;
            metrics::add(metrics::SAGA_OUTCOMES, &[&self.saga.kind, "failed"], 1.0);
            return Ok(None);
        };
        let go_on = |status: SagaStatus, step: i64, state: serde_json::Value, last_error: String| {
            Some(SagaRecord {
                status,
                step,
                attempts: 0,
                waits: 0,
                state,
                last_error,
                ..record.clone()
            })
        };
        let steps = &self.saga.steps;
        match record.status {
            SagaStatus::Running => {
                let Some(step) = steps.get(record.step as usize) else {
                    self.store
                        .change(
                            id,
                            (record.status, record.step),
                            Change::Finish {
                                status: SagaStatus::Completed,
                                state: &record.state,
                                why: "",
                            },
                        )
                        .await?;
                    return Ok(None);
                };
                let span = span::saga_step(&self.saga.kind, &step.name, false, id, &record.traceparent);
                let outcome = tokio::time::timeout(step.timeout, (step.action)(id.to_owned(), state))
                    .instrument(span.clone())
                    .await
                    .unwrap_or_else(|_| Err(StepError::Failed(format!("timed out after {:?}", step.timeout))));
                if let Err(err) = &outcome {
                    span::record_error(&span, err);
                }
                // A step done counts once its record is written (`record`): a failed record
                // runs it again.
                if let Err(err) = &outcome {
                    let label = match err {
                        StepError::Unavailable(_) => "waiting",
                        StepError::Failed(_) if record.attempts + 1 < step.attempts => "retry",
                        StepError::Failed(_) => "failed",
                        StepError::Rejected(_) => "rejected",
                    };
                    metrics::add(metrics::SAGA_STEPS, &[&self.saga.kind, &step.name, label], 1.0);
                }
                match outcome {
                    Ok(state) => {
                        let next = serde_json::to_value(&state).unwrap_or(record.state.clone());
                        let done = record.step as usize + 1 == steps.len();
                        let change = Change::StepDone {
                            step: &step.name,
                            state: &next,
                            last: done,
                        };
                        let milestone = Milestone::Done {
                            step: &step.name,
                            state: &state,
                        };
                        // In the step's span: what the owner records (an event it publishes)
                        // belongs to the step's trace.
                        if !self.record(id, &record, change, milestone).instrument(span).await? {
                            return Ok(None);
                        }
                        if !done {
                            return Ok(go_on(SagaStatus::Running, record.step + 1, next, String::new()));
                        }
                        metrics::add(metrics::SAGA_OUTCOMES, &[&self.saga.kind, "completed"], 1.0);
                    }
                    Err(StepError::Unavailable(why)) => {
                        self.retry_later(id, &record, &step.name, &why, false).await?;
                    }
                    Err(StepError::Failed(why)) if record.attempts + 1 < step.attempts => {
                        self.retry_later(id, &record, &step.name, &why, true).await?;
                    }
                    // A step that failed (or timed out) may have had its effect before the
                    // failure: its own compensation runs too. A rejected step had none.
                    Err(StepError::Failed(why)) => {
                        let change = Change::CompensateFrom {
                            step: &step.name,
                            why: &why,
                            itself: true,
                        };
                        self.store.change(id, (record.status, record.step), change).await?;
                        return Ok(go_on(
                            SagaStatus::Compensating,
                            record.step + 1,
                            record.state.clone(),
                            why.clone(),
                        )
                        .map(|next| SagaRecord {
                            reason: why,
                            refused: false,
                            ..next
                        }));
                    }
                    Err(StepError::Rejected(why)) => {
                        let change = Change::CompensateFrom {
                            step: &step.name,
                            why: &why,
                            itself: false,
                        };
                        self.store.change(id, (record.status, record.step), change).await?;
                        return Ok(
                            go_on(SagaStatus::Compensating, record.step, record.state.clone(), why.clone()).map(
                                |next| SagaRecord {
                                    reason: why,
                                    refused: true,
                                    ..next
                                },
                            ),
                        );
                    }
                }
            }
            SagaStatus::Compensating => {
                // Why the saga is undone; instances that began compensating before the reason
                // was kept apart have only their last error.
                let reason = if record.reason.is_empty() {
                    record.last_error.as_str()
                } else {
                    record.reason.as_str()
                };
                // `step` is one past the last step to undo: undo them, last first.
                if record.step == 0 {
                    let mut state = state;
                    if let Some(finally) = &self.saga.on_compensated {
                        let outcome = tokio::time::timeout(
                            Duration::from_secs(10),
                            finally(id.to_owned(), state.clone(), reason.to_owned()),
                        )
                        .await
                        .unwrap_or_else(|_| Err(StepError::Failed("timed out".into())));
                        match outcome {
                            Ok(next) => state = next,
                            Err(err) => {
                                let why = format!("after compensation: {err}");
                                self.retry_later(id, &record, "", &why, true).await?;
                                return Ok(None);
                            }
                        }
                    }
                    let last = serde_json::to_value(&state).unwrap_or(record.state.clone());
                    let change = Change::Finish {
                        status: SagaStatus::Compensated,
                        state: &last,
                        why: reason,
                    };
                    let milestone = Milestone::Compensated {
                        state: &state,
                        why: reason,
                        refused: record.refused,
                    };
                    self.record(id, &record, change, milestone).await?;
                    return Ok(None);
                }
                let step = &steps[record.step as usize - 1];
                let span = span::saga_step(&self.saga.kind, &step.name, true, id, &record.traceparent);
                let outcome = tokio::time::timeout(step.timeout, (step.compensation)(id.to_owned(), state))
                    .instrument(span.clone())
                    .await
                    .unwrap_or_else(|_| Err(StepError::Failed("compensation timed out".into())));
                if let Err(err) = &outcome {
                    span::record_error(&span, err);
                }
                if outcome.is_err() {
                    metrics::add(metrics::SAGA_STEPS, &[&self.saga.kind, &step.name, "retry"], 1.0);
                }
                match outcome {
                    Ok(state) => {
                        let next = serde_json::to_value(&state).unwrap_or(record.state.clone());
                        let change = Change::Compensated {
                            step: &step.name,
                            state: &next,
                        };
                        let milestone = Milestone::Undone {
                            step: &step.name,
                            state: &state,
                        };
                        if !self.record(id, &record, change, milestone).instrument(span).await? {
                            return Ok(None);
                        }
                        return Ok(go_on(
                            SagaStatus::Compensating,
                            record.step - 1,
                            next,
                            record.last_error.clone(),
                        ));
                    }
                    Err(err) => {
                        // A compensation is retried until it succeeds: it must not be skipped.
                        let why = format!("compensation: {err}");
                        self.retry_later(id, &record, &step.name, &why, true).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// A state change and the owner's record of its milestone, in one transaction, counted
    /// in the metrics once written. When that fails, the step (or compensation) that reached
    /// the milestone is done again after a backoff: `Ok(false)`.
    async fn record(
        &self,
        id: &str,
        record: &SagaRecord,
        change: Change<'_>,
        milestone: Milestone<'_, S>,
    ) -> Result<bool, sqlx::Error> {
        let (step, label) = milestone.counted();
        let written = async {
            let mut tx = self.store.begin().await?;
            SagaStore::apply(&mut tx, id, (record.status, record.step), change).await?;
            if let Some(recorder) = &self.saga.recorder {
                recorder.record(&mut tx, id, milestone).await?;
            }
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => {
                if let Some(recorder) = &self.saga.recorder {
                    recorder.committed();
                }
                if step.is_empty() {
                    metrics::add(metrics::SAGA_OUTCOMES, &[&self.saga.kind, label], 1.0);
                } else {
                    metrics::add(metrics::SAGA_STEPS, &[&self.saga.kind, step, label], 1.0);
                }
                Ok(true)
            }
            Err(err) => {
                span::record_error(&tracing::Span::current(), &err);
                tracing::warn!(error = %err, saga = %id, step, "recording a saga step failed; it runs again");
                // Counted, so its backoff grows (to 5 s) when the record keeps failing.
                let why = format!("recording the step: {err}");
                self.retry_later(id, record, step, &why, true).await?;
                Ok(false)
            }
        }
    }

    async fn retry_later(
        &self,
        id: &str,
        record: &SagaRecord,
        step: &str,
        why: &str,
        counts: bool,
    ) -> Result<(), sqlx::Error> {
        let change = Change::RetryLater {
            step,
            why,
            after: if counts {
                backoff(record.attempts)
            } else {
                wait_backoff(record.waits)
            },
            counts,
        };
        self.store.change(id, (record.status, record.step), change).await
    }

    /// Checks in every second for as long as it is polled, with the rate it finishes
    /// instances at, so other runners know this one is alive and leave its instances alone;
    /// and reads every runner's open instances and rates five times a second for
    /// [`SagaRunner::admit`].
    async fn check_ins(&self) {
        let mut next_check_in = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_check_in {
                next_check_in += Duration::from_millis(store::CHECK_IN_MS as u64);
                if let Err(err) = self
                    .store
                    .check_in(&self.id, &self.saga.kind, self.backlog.rate())
                    .await
                {
                    tracing::warn!(error = %err, kind = %self.saga.kind, "a saga runner's check-in failed");
                }
            }
            match self.store.load(&self.saga.kind).await {
                Ok((open, rate)) => self.backlog.observe(open, Some(rate)),
                Err(err) => tracing::warn!(error = %err, kind = %self.saga.kind, "reading the open sagas failed"),
            }
            tokio::time::sleep(LOAD_EVERY).await;
        }
    }

    /// Runs due instances until the process ends: up to 128 at once, each in its own task
    /// from lease to its next wait; more are taken as soon as some finish, an instance
    /// starts, or at least every `every` (for retries that come due). Checks in every second
    /// meanwhile; a runner that stopped checking in (its process died) loses its instances
    /// to the others within seconds.
    pub async fn run(self, every: Duration) {
        let mut running = tokio::task::JoinSet::new();
        let limit = CONCURRENCY * 2;
        let lease = Duration::from_millis(store::LEASE_MS as u64);
        // A task of its own: a check-in polled only from this loop would hold the relaxed
        // pool's connection while the loop waits for that very connection.
        let checking_in = self.clone();
        let check_ins = AbortOnDrop(tokio::spawn(async move { checking_in.check_ins().await }));
        loop {
            let free = limit.saturating_sub(running.len());
            if free > 0 {
                // Taking due instances leases them in the same statement: the ones running
                // are leased, so they are never taken twice.
                match self
                    .store
                    .lease_due(&self.saga.kind, free as i64, lease, &self.id)
                    .await
                {
                    Ok(due) => {
                        for record in due {
                            let runner = self.clone();
                            running.spawn(async move {
                                let id = record.id.clone();
                                (id, runner.advance(record).await)
                            });
                        }
                    }
                    Err(err) => {
                        tracing::error!(error = %err, kind = %self.saga.kind, "saga runner failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    finished(joined);
                    let mut left = 1;
                    // Every other one done by now too: one refill for all of them.
                    while let Some(joined) = running.try_join_next() {
                        finished(joined);
                        left += 1;
                    }
                    self.backlog.left(left);
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
            if check_ins.0.is_finished() {
                tracing::error!(kind = %self.saga.kind, "a saga runner's check-ins stopped");
            }
        }
    }

    /// The store (to list and inspect instances).
    pub fn store(&self) -> &SagaStore {
        &self.store
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reports an instance's task that ended badly (the instance is taken up again when its
/// lease runs out).
fn finished(joined: Result<(String, Result<(), sqlx::Error>), tokio::task::JoinError>) {
    match joined {
        Ok((_, Ok(()))) => {}
        Ok((id, Err(err))) => {
            tracing::error!(error = %err, saga = %id, "saga step could not be recorded; retrying after its lease");
        }
        Err(panicked) => tracing::error!(error = %panicked, "a saga task panicked"),
    }
}

#[cfg(test)]
mod tests;
