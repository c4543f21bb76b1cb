//! Sagas, orchestrated and durable: a saga is an ordered list of steps, each an action and a
//! compensation. Its state (serde) is written to the service's database after every step, so
//! a saga interrupted by a crash resumes from its last written step in the next process. When
//! a step fails for good, the compensations of the steps already done run in reverse order,
//! each until it succeeds. A step that cannot run yet (`StepError::Unavailable`: payments is
//! down) waits and retries with backoff without giving up, so the saga resumes by itself when
//! the dependency returns. Every transition is logged, and sagas can be listed and inspected.
//!
//! Actions and compensations must be idempotent (a crash after a step's effect and before its
//! record makes it run again): give downstream calls the saga id as their idempotency key.

mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use store::{SagaRecord, SagaStatus, SagaStore, Transition};

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

/// A saga's definition: its kind and its steps, in order.
pub struct Saga<S> {
    /// The kind (`order`), stored with each instance.
    pub kind: String,
    steps: Vec<Step<S>>,
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
        }
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

/// Runs the sagas of one definition from the store.
pub struct SagaRunner<S> {
    saga: Arc<Saga<S>>,
    store: SagaStore,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * (1u64 << attempt.min(7))).min(Duration::from_secs(5))
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
        }
    }

    /// Starts an instance (idempotent by id: a second start of the same id changes nothing).
    pub async fn start(&self, id: &str, state: &S) -> Result<bool, sqlx::Error> {
        let state = serde_json::to_value(state).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        self.store.insert(id, &self.saga.kind, &state).await
    }

    /// Runs every due instance one step on; returns how many steps ran.
    pub async fn tick(&self) -> Result<usize, sqlx::Error> {
        let mut ran = 0;
        for id in self.store.due(&self.saga.kind, 20).await? {
            if self.advance(&id).await? {
                ran += 1;
            }
        }
        Ok(ran)
    }

    /// Runs one step (or compensation) of one instance, if it is due and not leased elsewhere.
    async fn advance(&self, id: &str) -> Result<bool, sqlx::Error> {
        let Some(record) = self.store.lease(id, Duration::from_secs(30)).await? else {
            return Ok(false);
        };
        let Ok(state) = serde_json::from_value::<S>(record.state.clone()) else {
            self.store
                .finish(id, SagaStatus::Failed, &record.state, "state does not deserialize")
                .await?;
            return Ok(true);
        };
        let steps = &self.saga.steps;
        match record.status {
            SagaStatus::Running => {
                let Some(step) = steps.get(record.step as usize) else {
                    self.store.finish(id, SagaStatus::Completed, &record.state, "").await?;
                    return Ok(true);
                };
                let outcome = tokio::time::timeout(step.timeout, (step.action)(id.to_owned(), state))
                    .await
                    .unwrap_or_else(|_| Err(StepError::Failed(format!("timed out after {:?}", step.timeout))));
                match outcome {
                    Ok(next) => {
                        let next = serde_json::to_value(&next).unwrap_or(record.state.clone());
                        let done = record.step as usize + 1 == steps.len();
                        self.store.step_done(id, &step.name, &next, done).await?;
                    }
                    Err(StepError::Unavailable(why)) => {
                        self.store
                            .retry_later(id, &step.name, &why, backoff(record.attempts), false)
                            .await?;
                    }
                    Err(StepError::Failed(why)) if record.attempts + 1 < step.attempts => {
                        self.store
                            .retry_later(id, &step.name, &why, backoff(record.attempts), true)
                            .await?;
                    }
                    Err(StepError::Failed(why) | StepError::Rejected(why)) => {
                        self.store.compensate_from(id, &step.name, &why).await?;
                    }
                }
            }
            SagaStatus::Compensating => {
                // `step` is the failed step: undo the ones before it, last first.
                if record.step == 0 {
                    self.store
                        .finish(id, SagaStatus::Compensated, &record.state, "")
                        .await?;
                    return Ok(true);
                }
                let step = &steps[record.step as usize - 1];
                let outcome = tokio::time::timeout(step.timeout, (step.compensation)(id.to_owned(), state))
                    .await
                    .unwrap_or_else(|_| Err(StepError::Failed("compensation timed out".into())));
                match outcome {
                    Ok(next) => {
                        let next = serde_json::to_value(&next).unwrap_or(record.state.clone());
                        self.store.compensated(id, &step.name, &next).await?;
                    }
                    Err(err) => {
                        // A compensation is retried until it succeeds: it must not be skipped.
                        self.store
                            .retry_later(
                                id,
                                &step.name,
                                &format!("compensation: {err}"),
                                backoff(record.attempts),
                                true,
                            )
                            .await?;
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// Runs due instances until the process ends, waking at least every `every`.
    pub async fn run(self, every: Duration) {
        loop {
            match self.tick().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => tokio::time::sleep(every).await,
                Err(err) => {
                    tracing::error!(error = %err, kind = %self.saga.kind, "saga runner failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The store (to list and inspect instances).
    pub fn store(&self) -> &SagaStore {
        &self.store
    }
}

#[cfg(test)]
mod tests;
