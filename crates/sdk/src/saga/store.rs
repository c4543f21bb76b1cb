//! Where saga instances live: one row each in the service's database (SQLite or PostgreSQL),
//! and a log of every transition. A runner takes an instance with a lease (a conditional
//! update), so two runners never run the same step at once. Runners check in every second
//! (Quartz's clustered scheduler does the same): the instances of a runner that stopped
//! checking in (its process crashed) are taken up again within seconds, without waiting out
//! their lease, which stays long enough for a slow step.

use std::sync::LazyLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use crate::store::{now_ms, Store};

/// Where an instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaStatus {
    /// Steps are running (or waiting to retry).
    Running,
    /// A step failed for good; earlier steps are being undone.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// Every earlier step was undone.
    Compensated,
    /// The state could not be read: needs a person.
    Failed,
}

impl SagaStatus {
    fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => SagaStatus::Running,
            "compensating" => SagaStatus::Compensating,
            "completed" => SagaStatus::Completed,
            "compensated" => SagaStatus::Compensated,
            _ => SagaStatus::Failed,
        }
    }
}

/// Where an instance is, as an operator reads it: [`SagaStatus`] with a running instance that
/// waits for a dependency told apart from one that is making progress.
///
/// * `running`: a step is running, or retrying a failure that counts against its attempts;
/// * `waiting`: running, but its current step found a dependency away
///   ([`super::StepError::Unavailable`]) and waits for it without giving up (`waits > 0`):
///   an order while payments is down;
/// * `compensating`: a step failed for good and the earlier ones are being undone;
/// * `done`: every step succeeded (`completed`);
/// * `failed`: it ended without succeeding — undone (`compensated`), or its state could not
///   be read (`failed`, which needs a person; [`SagaSummary::status`] tells the two apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaState {
    /// A step is running or retrying.
    Running,
    /// A step waits for a dependency that is away.
    Waiting,
    /// Earlier steps are being undone.
    Compensating,
    /// Every step succeeded.
    Done,
    /// It ended without succeeding.
    Failed,
}

impl SagaState {
    /// Every state, in the order an instance passes through them.
    pub const ALL: [SagaState; 5] = [
        SagaState::Running,
        SagaState::Waiting,
        SagaState::Compensating,
        SagaState::Done,
        SagaState::Failed,
    ];

    /// The state of an instance with this status that waited `waits` times on its current step.
    pub fn of(status: SagaStatus, waits: u32) -> Self {
        match status {
            SagaStatus::Running if waits > 0 => SagaState::Waiting,
            SagaStatus::Running => SagaState::Running,
            SagaStatus::Compensating => SagaState::Compensating,
            SagaStatus::Completed => SagaState::Done,
            SagaStatus::Compensated | SagaStatus::Failed => SagaState::Failed,
        }
    }

    /// Its name (`waiting`), as in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Waiting => "waiting",
            SagaState::Compensating => "compensating",
            SagaState::Done => "done",
            SagaState::Failed => "failed",
        }
    }

    /// The state named `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The rows of `flotilla_sagas` in this state, as an SQL condition (no parameters).
    fn condition(self) -> &'static str {
        match self {
            SagaState::Running => "status = 'running' AND waits = 0",
            SagaState::Waiting => "status = 'running' AND waits > 0",
            SagaState::Compensating => "status = 'compensating'",
            SagaState::Done => "status = 'completed'",
            SagaState::Failed => "status IN ('compensated', 'failed')",
        }
    }
}

impl std::fmt::Display for SagaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many instances of a kind are in each [`SagaState`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateCounts {
    /// Running or retrying.
    pub running: u64,
    /// Waiting for a dependency.
    pub waiting: u64,
    /// Being undone.
    pub compensating: u64,
    /// Completed.
    pub done: u64,
    /// Undone, or unreadable.
    pub failed: u64,
}

impl StateCounts {
    /// The count of one state.
    pub fn get(&self, state: SagaState) -> u64 {
        match state {
            SagaState::Running => self.running,
            SagaState::Waiting => self.waiting,
            SagaState::Compensating => self.compensating,
            SagaState::Done => self.done,
            SagaState::Failed => self.failed,
        }
    }

    fn slot(&mut self, state: SagaState) -> &mut u64 {
        match state {
            SagaState::Running => &mut self.running,
            SagaState::Waiting => &mut self.waiting,
            SagaState::Compensating => &mut self.compensating,
            SagaState::Done => &mut self.done,
            SagaState::Failed => &mut self.failed,
        }
    }

    /// Every instance counted.
    pub fn total(&self) -> u64 {
        SagaState::ALL.into_iter().map(|s| self.get(s)).sum()
    }
}

/// An instance as an operator lists it: where it is, since when, and why it is stuck —
/// without its state, which holds its owner's (users') data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaSummary {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Where it is, as an operator reads it.
    pub state: SagaState,
    /// Where it is, as stored.
    pub status: SagaStatus,
    /// The index of the step running, or (compensating) one past the last step to undo.
    pub step: i64,
    /// The name of the step it is at, when its definition is known (the endpoint fills it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_name: String,
    /// Tries of the current step so far.
    pub attempts: u32,
    /// Times the current step waited for a dependency.
    pub waits: u32,
    /// The last failure.
    #[serde(default)]
    pub last_error: String,
    /// Why it is being (or was) undone.
    #[serde(default)]
    pub reason: String,
    /// Whether that was a refusal rather than an operational failure.
    #[serde(default)]
    pub refused: bool,
    /// The W3C trace context of what started it.
    #[serde(default)]
    pub traceparent: String,
    /// When it started, ms since the epoch.
    pub created_ms: i64,
    /// When it last changed, ms since the epoch.
    pub updated_ms: i64,
}

/// An instance as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Where it is.
    pub status: SagaStatus,
    /// The step running, or (compensating) the step that failed.
    pub step: i64,
    /// Tries of the current step so far.
    pub attempts: u32,
    /// Times the current step waited for a dependency that is away (these do not count as
    /// tries; they space its retries out).
    #[serde(default)]
    pub waits: u32,
    /// The saga's state.
    pub state: serde_json::Value,
    /// The last failure.
    pub last_error: String,
    /// Why the saga is being undone: the failure that started its compensation, kept while
    /// compensations fail and retry (those are the operator's business, not its owner's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Whether that failure was a refusal (a decline, a shortage) rather than an
    /// operational failure that ran out of tries.
    #[serde(default)]
    pub refused: bool,
    /// The W3C trace context of what started the instance: its steps' spans join that trace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
}

/// One line of an instance's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The step.
    pub step: String,
    /// `done`, `retry`, `waiting`, `failed`, `compensated`, `completed`, ….
    pub event: String,
    /// Why, when it failed.
    pub detail: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// A state change of an instance, with the history lines it writes.
pub(super) enum Change<'a> {
    /// A step's action succeeded; `last` if it was the last step.
    StepDone {
        step: &'a str,
        state: &'a serde_json::Value,
        last: bool,
    },
    /// Try the current step again after `after`; `counts` against its attempts unless waiting.
    RetryLater {
        step: &'a str,
        why: &'a str,
        after: Duration,
        counts: bool,
    },
    /// Start undoing from `step` (itself included if `itself`, when it failed rather than
    /// was refused); `why` becomes the saga's reason.
    CompensateFrom { step: &'a str, why: &'a str, itself: bool },
    /// A step's compensation succeeded.
    Compensated {
        step: &'a str,
        state: &'a serde_json::Value,
    },
    /// The instance ended.
    Finish {
        status: SagaStatus,
        state: &'a serde_json::Value,
        why: &'a str,
    },
}

/// How long a runner holds an instance (longer than a step may take).
pub(super) const LEASE_MS: i64 = 30_000;

/// How often a running runner checks in.
pub(super) const CHECK_IN_MS: i64 = 1_000;

/// A runner that has not checked in for this long is gone: its instances are free.
pub(super) const GONE_AFTER_MS: i64 = 5_000;

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS flotilla_sagas (id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, step BIGINT NOT NULL, attempts BIGINT NOT NULL, state TEXT NOT NULL, last_error TEXT NOT NULL, next_run_ms BIGINT NOT NULL, leased_until BIGINT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, traceparent TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '', refused BIGINT NOT NULL DEFAULT 0, leased_by TEXT NOT NULL DEFAULT '', waits BIGINT NOT NULL DEFAULT 0)",
    // Each running runner's last check-in.
    "CREATE TABLE IF NOT EXISTS flotilla_saga_runners (id TEXT PRIMARY KEY, kind TEXT NOT NULL, checked_in_ms BIGINT NOT NULL, rate_milli BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS flotilla_saga_log (saga_id TEXT NOT NULL, seq BIGINT NOT NULL, step TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (saga_id, seq))",
    // What the runner asks for again and again: the due instances of a kind, oldest first.
    "CREATE INDEX IF NOT EXISTS flotilla_sagas_due ON flotilla_sagas (kind, next_run_ms) WHERE status IN ('running', 'compensating')",
];

/// Whether an instance of a kind is due for a runner: it is running or compensating, its time
/// has come, and nobody holds it — its lease ran out, or it is held by another runner that
/// stopped checking in. A runner never takes its own leased instances back for a late
/// check-in of its own. `{now}`, `{runner}` and `{gone}` name the placeholders (the time,
/// the runner, the last check-in a live runner has made since).
fn due(now: &str, runner: &str, gone: &str) -> String {
    format!(
        "status IN ('running', 'compensating') AND next_run_ms <= {now} \
         AND (leased_until <= {now} OR (leased_by <> {runner} AND leased_by IN \
         (SELECT id FROM flotilla_saga_runners WHERE checked_in_ms < {gone})))"
    )
}

/// Is anything of kind `$1` due (at `$2`, for runner `$3`, live since `$4`)?
static DUE_CHECK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT 1 FROM flotilla_sagas WHERE kind = $1 AND {} LIMIT 1",
        due("$2", "$3", "$4")
    )
});

/// Leases (until `$1`) up to `$4` due instances of kind `$2`, oldest first, for runner `$5`
/// (at `$3`, live since `$6`). The condition is checked again on the row the update
/// changes, so two runners on PostgreSQL never share one.
static LEASE: LazyLock<String> = LazyLock::new(|| {
    let due = due("$3", "$5", "$6");
    format!(
        "UPDATE flotilla_sagas SET leased_until = $1, leased_by = $5 \
         WHERE id IN (SELECT id FROM flotilla_sagas WHERE kind = $2 AND {due} ORDER BY next_run_ms LIMIT $4) \
         AND {due} \
         RETURNING id, kind, status, step, attempts, waits, state, last_error, traceparent, reason, refused"
    )
});

/// The saga tables of a service's database.
#[derive(Clone, Debug)]
pub struct SagaStore {
    pub(super) store: Store,
}

impl SagaStore {
    /// The tables in `store`, made if missing.
    pub async fn prepare(store: Store) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(store.pool()).await?;
        }
        // Tables made before instances carried a trace context, or kept their reason apart
        // from their last error, get the columns.
        for (column, definition) in [
            ("traceparent", "TEXT NOT NULL DEFAULT ''"),
            ("reason", "TEXT NOT NULL DEFAULT ''"),
            ("refused", "BIGINT NOT NULL DEFAULT 0"),
            ("leased_by", "TEXT NOT NULL DEFAULT ''"),
            ("waits", "BIGINT NOT NULL DEFAULT 0"),
        ] {
            if sqlx::query(&format!("SELECT {column} FROM flotilla_sagas LIMIT 0"))
                .execute(store.pool())
                .await
                .is_err()
            {
                sqlx::query(&format!("ALTER TABLE flotilla_sagas ADD COLUMN {column} {definition}"))
                    .execute(store.pool())
                    .await?;
            }
        }
        // Runners made before they told their rate.
        if sqlx::query("SELECT rate_milli FROM flotilla_saga_runners LIMIT 0")
            .execute(store.pool())
            .await
            .is_err()
        {
            sqlx::query("ALTER TABLE flotilla_saga_runners ADD COLUMN rate_milli BIGINT NOT NULL DEFAULT 0")
                .execute(store.pool())
                .await?;
        }
        Ok(Self { store })
    }

    /// Appends a line to an instance's history, inside `tx`.
    async fn log(
        tx: &mut Transaction<'_, Any>,
        id: &str,
        step: &str,
        event: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO flotilla_saga_log (saga_id, seq, step, event, detail, at_ms) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM flotilla_saga_log WHERE saga_id = $1",
        )
        .bind(id)
        .bind(step)
        .bind(event)
        .bind(detail)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A transaction on the saga tables' database, for [`SagaStore::apply`] and whatever the
    /// saga's owner records with it.
    pub(super) async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.store.pool().begin().await
    }

    /// Writes one state change and its history lines inside `tx`, if the instance is still
    /// where the runner found it (`from`: status and step). Otherwise the runner's lease ran
    /// out and another run took the instance on: an error, and nothing is written.
    pub(super) async fn apply(
        tx: &mut Transaction<'static, Any>,
        id: &str,
        from: (SagaStatus, i64),
        change: Change<'_>,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        // Each update binds its own values, then the guard: `… WHERE id AND status AND step`.
        let (update, lines): (_, Vec<(&str, &str, &str)>) = match change {
            Change::StepDone { step, state, last } => (
                // The runner goes straight on to the next step: it keeps its lease.
                sqlx::query("UPDATE flotilla_sagas SET step = step + 1, attempts = 0, waits = 0, state = $1, status = $2, next_run_ms = 0, leased_until = $3, last_error = '', updated_ms = $4 WHERE id = $5 AND status = $6 AND step = $7")
                    .bind(state.to_string())
                    .bind(if last { "completed" } else { "running" })
                    .bind(if last { 0 } else { now + LEASE_MS })
                    .bind(now),
                if last {
                    vec![(step, "done", ""), ("", "completed", "")]
                } else {
                    vec![(step, "done", "")]
                },
            ),
            Change::RetryLater {
                step,
                why,
                after,
                counts,
            } => (
                sqlx::query("UPDATE flotilla_sagas SET attempts = attempts + $1, waits = waits + 1 - $1, last_error = $2, next_run_ms = $3, leased_until = 0, updated_ms = $4 WHERE id = $5 AND status = $6 AND step = $7")
                    .bind(i64::from(counts))
                    .bind(why)
                    .bind(now + after.as_millis() as i64)
                    .bind(now),
                vec![(step, if counts { "retry" } else { "waiting" }, why)],
            ),
            // Starts undoing: the steps before the current one, and this one too if `itself`.
            Change::CompensateFrom { step, why, itself } => (
                sqlx::query("UPDATE flotilla_sagas SET status = 'compensating', step = step + $1, attempts = 0, waits = 0, last_error = $2, reason = $2, refused = $3, next_run_ms = 0, leased_until = $4, updated_ms = $5 WHERE id = $6 AND status = $7 AND step = $8")
                    .bind(i64::from(itself))
                    .bind(why)
                    .bind(i64::from(!itself))
                    .bind(now + LEASE_MS)
                    .bind(now),
                vec![(step, "failed", why)],
            ),
            Change::Compensated { step, state } => (
                sqlx::query("UPDATE flotilla_sagas SET step = step - 1, attempts = 0, waits = 0, state = $1, next_run_ms = 0, leased_until = $2, updated_ms = $3 WHERE id = $4 AND status = $5 AND step = $6")
                    .bind(state.to_string())
                    .bind(now + LEASE_MS)
                    .bind(now),
                vec![(step, "compensated", "")],
            ),
            Change::Finish { status, state, why } => (
                sqlx::query("UPDATE flotilla_sagas SET status = $1, state = $2, leased_until = 0, updated_ms = $3 WHERE id = $4 AND status = $5 AND step = $6")
                    .bind(status.as_str())
                    .bind(state.to_string())
                    .bind(now),
                vec![("", status.as_str(), why)],
            ),
        };
        let moved = update
            .bind(id)
            .bind(from.0.as_str())
            .bind(from.1)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if moved != 1 {
            return Err(lease_lost(id));
        }
        for (step, event, detail) in lines {
            Self::log(tx, id, step, event, detail).await?;
        }
        Ok(())
    }

    /// One state change in a transaction of its own.
    pub(super) async fn change(
        &self,
        id: &str,
        from: (SagaStatus, i64),
        change: Change<'_>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        Self::apply(&mut tx, id, from, change).await?;
        tx.commit().await
    }

    /// Says runner `runner` (of `kind`) is alive now and finishes `rate` instances a second;
    /// forgets runners gone for an hour.
    pub(super) async fn check_in(&self, runner: &str, kind: &str, rate: f64) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let pool = self.store.relaxed();
        sqlx::query(
            "INSERT INTO flotilla_saga_runners (id, kind, checked_in_ms, rate_milli) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET checked_in_ms = excluded.checked_in_ms, rate_milli = excluded.rate_milli",
        )
        .bind(runner)
        .bind(kind)
        .bind(now)
        .bind((rate * 1000.0) as i64)
        .execute(pool.pool())
        .await?;
        sqlx::query("DELETE FROM flotilla_saga_runners WHERE checked_in_ms < $1")
            .bind(now - 3_600_000)
            .execute(pool.pool())
            .await
            .map(|_| ())
    }

    /// The open instances of `kind` that are not waiting for a dependency (running or
    /// compensating, every runner's), and the instances a second the live runners of the
    /// kind finish, as they said at their last check-in.
    pub(super) async fn load(&self, kind: &str) -> Result<(u64, f64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM flotilla_sagas WHERE kind = $1 AND status IN ('running', 'compensating') AND waits = 0) AS open, \
             (SELECT CAST(COALESCE(SUM(rate_milli), 0) AS BIGINT) FROM flotilla_saga_runners WHERE kind = $1 AND checked_in_ms >= $2) AS rate",
        )
        .bind(kind)
        .bind(now_ms() - GONE_AFTER_MS)
        .fetch_one(self.store.pool())
        .await?;
        let open: i64 = row.try_get("open")?;
        let rate: i64 = row.try_get("rate")?;
        Ok((open.max(0) as u64, rate.max(0) as f64 / 1000.0))
    }

    /// A new running instance; `false` if the id exists.
    pub async fn insert(&self, id: &str, kind: &str, state: &serde_json::Value) -> Result<bool, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        let inserted = Self::insert_in(&mut tx, id, kind, state).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// A new running instance inside the caller's transaction, so it exists exactly when the
    /// change that starts it was committed; `false` if the id exists.
    pub async fn insert_in(
        tx: &mut Transaction<'_, Any>,
        id: &str,
        kind: &str,
        state: &serde_json::Value,
    ) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO flotilla_sagas (id, kind, status, step, attempts, state, last_error, next_run_ms, leased_until, created_ms, updated_ms, traceparent) \
             VALUES ($1, $2, 'running', 0, 0, $3, '', $4, 0, $4, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(state.to_string())
        .bind(now)
        .bind(crate::telemetry::propagation::traceparent(&tracing::Span::current()).unwrap_or_default())
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            Self::log(tx, id, "", "started", "").await?;
        }
        Ok(inserted)
    }

    /// Takes up to `limit` due instances of a kind for `runner`, for `lease`, oldest first:
    /// nobody else can take them until the lease runs out or `runner` stops checking in
    /// ([`due`] says which are due, [`LEASE`] takes them). When nothing is due it only reads.
    pub async fn lease_due(
        &self,
        kind: &str,
        limit: i64,
        lease: Duration,
        runner: &str,
    ) -> Result<Vec<SagaRecord>, sqlx::Error> {
        let now = now_ms();
        let gone = now - GONE_AFTER_MS;
        // A read first: on SQLite even an update that changes no row takes the write lock,
        // and a runner polls whether or not anything is due; a reader never waits for it.
        let any_due: Option<i64> = sqlx::query_scalar(&DUE_CHECK)
            .bind(kind)
            .bind(now)
            .bind(runner)
            .bind(gone)
            .fetch_optional(self.store.pool())
            .await?;
        if any_due.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&LEASE)
            .bind(now + lease.as_millis() as i64)
            .bind(kind)
            .bind(now)
            .bind(limit)
            .bind(runner)
            .bind(gone)
            .fetch_all(self.store.pool())
            .await?;
        rows.iter().map(record).collect()
    }

    /// One instance.
    pub async fn get(&self, id: &str) -> Result<Option<SagaRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, kind, status, step, attempts, waits, state, last_error, traceparent, reason, refused FROM flotilla_sagas WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        row.map(|r| record(&r)).transpose()
    }

    /// Instances of a kind, newest first.
    pub async fn list(&self, kind: &str, limit: i64) -> Result<Vec<SagaRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, kind, status, step, attempts, waits, state, last_error, traceparent, reason, refused FROM flotilla_sagas WHERE kind = $1 ORDER BY created_ms DESC, id LIMIT $2",
        )
        .bind(kind)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(record).collect()
    }

    /// How many instances of `kind` are in each state: one grouped scan of the kind's rows.
    pub async fn counts(&self, kind: &str) -> Result<StateCounts, sqlx::Error> {
        // Both engines: COUNT is BIGINT on PostgreSQL and an integer on SQLite; the SUM is cast
        // so it decodes as one type on both.
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n, CAST(SUM(CASE WHEN waits > 0 THEN 1 ELSE 0 END) AS BIGINT) AS waiting \
             FROM flotilla_sagas WHERE kind = $1 GROUP BY status",
        )
        .bind(kind)
        .fetch_all(self.store.pool())
        .await?;
        let mut counts = StateCounts::default();
        for row in &rows {
            let status: String = row.try_get("status")?;
            let n = row.try_get::<i64, _>("n")?.max(0) as u64;
            let waiting = row.try_get::<Option<i64>, _>("waiting")?.unwrap_or(0).max(0) as u64;
            match SagaStatus::parse(&status) {
                SagaStatus::Running => {
                    counts.waiting += waiting;
                    counts.running += n.saturating_sub(waiting);
                }
                other => *counts.slot(SagaState::of(other, 0)) += n,
            }
        }
        Ok(counts)
    }

    /// Up to `limit` instances of `kind` (in `state`, if given), the most recently changed
    /// first, without their state.
    pub async fn summaries(
        &self,
        kind: &str,
        state: Option<SagaState>,
        limit: i64,
    ) -> Result<Vec<SagaSummary>, sqlx::Error> {
        // The condition is one of five constants: nothing from the caller reaches the SQL text.
        let condition = state.map_or("1 = 1", SagaState::condition);
        let rows = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM flotilla_sagas WHERE kind = $1 AND {condition} \
             ORDER BY updated_ms DESC, id LIMIT $2"
        ))
        .bind(kind)
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(summary).collect()
    }

    /// One instance, without its state.
    pub async fn summary(&self, id: &str) -> Result<Option<SagaSummary>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {SUMMARY_COLUMNS} FROM flotilla_sagas WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?;
        row.map(|r| summary(&r)).transpose()
    }

    /// An instance's history, oldest first.
    pub async fn history(&self, id: &str) -> Result<Vec<Transition>, sqlx::Error> {
        let rows =
            sqlx::query("SELECT step, event, detail, at_ms FROM flotilla_saga_log WHERE saga_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(self.store.pool())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Transition {
                    step: r.try_get("step")?,
                    event: r.try_get("event")?,
                    detail: r.try_get("detail")?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }
}

/// The instance moved on without this runner: its lease ran out and another run took it.
fn lease_lost(id: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!(
        "saga `{id}` moved on while this runner held it: its lease ran out"
    ))
}

/// What [`summary`] reads.
const SUMMARY_COLUMNS: &str =
    "id, kind, status, step, attempts, waits, last_error, reason, refused, traceparent, created_ms, updated_ms";

fn summary(row: &sqlx::any::AnyRow) -> Result<SagaSummary, sqlx::Error> {
    let status = SagaStatus::parse(&row.try_get::<String, _>("status")?);
    let waits = row.try_get::<i64, _>("waits")? as u32;
    Ok(SagaSummary {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        state: SagaState::of(status, waits),
        status,
        step: row.try_get("step")?,
        step_name: String::new(),
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        waits,
        last_error: row.try_get("last_error")?,
        reason: row.try_get("reason")?,
        refused: row.try_get::<i64, _>("refused")? != 0,
        traceparent: row.try_get("traceparent")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn record(row: &sqlx::any::AnyRow) -> Result<SagaRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let status: String = row.try_get("status")?;
    Ok(SagaRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        status: SagaStatus::parse(&status),
        step: row.try_get("step")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        waits: row.try_get::<i64, _>("waits")? as u32,
        state: serde_json::from_str(&state).unwrap_or_default(),
        last_error: row.try_get("last_error")?,
        traceparent: row.try_get("traceparent")?,
        reason: row.try_get("reason")?,
        refused: row.try_get::<i64, _>("refused")? != 0,
    })
}
