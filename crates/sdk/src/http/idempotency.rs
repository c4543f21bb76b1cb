//! Idempotency keys (the IETF `Idempotency-Key` header, as Stripe uses it): the first request
//! with a key runs and its answer is kept; a repeat with the same request gets that answer
//! again (`Idempotent-Replayed: true`), whatever happened in between; a repeat while the first
//! still runs is `409` with `Retry-After` saying when its hold ends; the key reused for another
//! request is `422`. A transient failure (5xx) is not kept, so a retry runs again. Payments and
//! orders share it; the answers live in the service's own database, in the table [`prepare`]
//! makes.
//!
//! A run holds its key for a short [`HOLD`] that it renews while it works, so a holder that
//! is gone (its process crashed, or its request was dropped when the caller's deadline passed)
//! frees the key within seconds, not after a long fixed lease. Because a paused holder can
//! thus lose its key to a retry, a work that writes gives [`once`] its transaction uncommitted
//! ([`Answer::with`]): the answer is written in that transaction only while the run still holds
//! the key, so the work and its answer commit together, and a run that lost its key rolls its
//! work back and gives the winner's answer. No committed work is ever run again.

use std::future::Future;
use std::time::Duration;

use crate::store::{now_ms, GroupedTx, Store};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_api::Problem;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How long a run holds its key unless it renews it (it does, every third of this, while its
/// work runs): a holder that is gone lets a retry in within this.
pub const HOLD: Duration = Duration::from_secs(3);

/// The table of keys and kept answers; `holder` names the run holding a key that has no
/// answer yet.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status BIGINT, response TEXT, locked_until BIGINT NOT NULL, created_ms BIGINT NOT NULL, holder TEXT NOT NULL DEFAULT '')";

/// The problem slug of a `409` answered while a request with the same key still runs: the
/// caller's request is neither refused nor done, and a later retry gets the first one's answer.
pub const IN_PROGRESS: &str = "request-in-progress";

/// Makes the keys table if it is missing (and gives a table made before holds were named
/// its `holder` column).
pub async fn prepare(store: &Store) -> Result<(), sqlx::Error> {
    sqlx::query(SCHEMA).execute(store.pool()).await?;
    if sqlx::query("SELECT holder FROM idempotency_keys LIMIT 0")
        .execute(store.pool())
        .await
        .is_err()
    {
        sqlx::query("ALTER TABLE idempotency_keys ADD COLUMN holder TEXT NOT NULL DEFAULT ''")
            .execute(store.pool())
            .await?;
    }
    Ok(())
}

fn internal(err: sqlx::Error) -> Response {
    tracing::error!(error = %err, "idempotency store failed");
    Problem::internal().into_response()
}

/// The key a request carries, scoped to its caller (two callers' keys never meet); a
/// missing or malformed header is a 400 problem naming it.
pub fn key(headers: &HeaderMap, caller: &str) -> Result<String, Problem> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| Problem::invalid_field("Idempotency-Key", "this operation needs an Idempotency-Key header"))?;
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Problem::invalid_field(
            "Idempotency-Key",
            "1 to 255 printable characters",
        ));
    }
    Ok(format!("{caller}:{key}"))
}

/// What identifies a request: its operation and its body.
pub fn fingerprint(operation: &str, body: &serde_json::Value) -> String {
    Sha256::digest(format!("{operation}\n{body}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a work under [`once`] answers: a status and a body, and, when the work wrote to the
/// database, its transaction, still open: the answer is kept in it, so both commit together.
#[derive(Debug)]
pub struct Answer {
    status: StatusCode,
    body: serde_json::Value,
    tx: Option<GroupedTx>,
}

impl Answer {
    /// The answer of a work that wrote nothing (a refusal, or a repeat that found its effect
    /// already done): kept on its own.
    pub fn new(status: StatusCode, body: serde_json::Value) -> Self {
        Self { status, body, tx: None }
    }

    /// The answer of a work whose writes are in `tx`, uncommitted: [`once`] keeps the answer
    /// in it and commits, or rolls it back if the run lost its key meanwhile.
    pub fn with(status: StatusCode, body: serde_json::Value, tx: GroupedTx) -> Self {
        Self {
            status,
            body,
            tx: Some(tx),
        }
    }

    /// A refusal as the answer.
    pub fn problem(problem: Problem) -> Self {
        let (status, body) = problem_answer(problem);
        Self::new(status, body)
    }
}

/// Runs `work` once per key; repeats get its answer.
pub async fn once<F, Fut>(store: &Store, key: &str, fingerprint: &str, work: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Answer>,
{
    once_holding(store, key, fingerprint, HOLD, work).await
}

/// [`once`] with a given hold (tests use short ones).
async fn once_holding<F, Fut>(store: &Store, key: &str, fingerprint: &str, hold: Duration, work: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Answer>,
{
    let held = match Hold::take(store, key, fingerprint, hold).await {
        Ok(held) => held,
        Err(response) => return response,
    };
    let answer = held.renewing(work()).await;
    held.keep(answer).await
}

/// A key held by this run until it keeps its answer or lets go; dropped unfinished (the
/// request's future was dropped), it lets go in the background, so a retry need not wait.
struct Hold {
    store: Store,
    key: String,
    fingerprint: String,
    token: String,
    hold: Duration,
    finished: bool,
}

impl Hold {
    /// Takes the key: a new one, or one whose holder let its hold run out. Otherwise the
    /// answer to give instead: the kept one, `422` for another request, or `409` while
    /// another run holds it.
    async fn take(store: &Store, key: &str, fingerprint: &str, hold: Duration) -> Result<Hold, Response> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let held = |store: &Store| Hold {
            store: store.clone(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            token: token.clone(),
            hold,
            finished: false,
        };
        let hold_ms = hold.as_millis() as i64;
        // A race with another taker is settled by the row: at most a few rounds.
        for _ in 0..3 {
            let now = now_ms();
            // The claim needs no sync of its own: if the work commits something durable, that
            // commit syncs the log the claim was written to before it; if the work leaves
            // nothing, a claim lost to a power failure only lets a retry run again.
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, status, response, locked_until, created_ms, holder) VALUES ($1, $2, NULL, NULL, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(fingerprint)
            .bind(now + hold_ms)
            .bind(now)
            .bind(&token)
            .execute(store.relaxed().pool())
            .await
            .map_err(internal)?;
            if claimed.rows_affected() == 1 {
                return Ok(held(store));
            }
            match earlier(store, key, fingerprint).await? {
                Earlier::Answered(response) => return Err(response),
                // Released between our insert and read (a transient failure): claim again.
                Earlier::Missing => continue,
                Earlier::Running { locked_until, .. } if locked_until >= now => {
                    return Err(in_progress(Duration::from_millis((locked_until - now) as u64)));
                }
                Earlier::Running { locked_until, holder } => {
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET locked_until = $1, holder = $2 WHERE key = $3 AND status IS NULL AND holder = $4 AND locked_until = $5",
                    )
                    .bind(now + hold_ms)
                    .bind(&token)
                    .bind(key)
                    .bind(&holder)
                    .bind(locked_until)
                    .execute(store.relaxed().pool())
                    .await
                    .map_err(internal)?;
                    if taken.rows_affected() == 1 {
                        tracing::info!(key, "took over an idempotency key whose holder is gone");
                        return Ok(held(store));
                    }
                }
            }
        }
        Err(in_progress(hold))
    }

    /// Runs `work`, renewing the hold every third of it until the work is done. The renewals
    /// run beside the work, never in its way: a renewal waiting on a busy database must not
    /// hold the work up.
    async fn renewing<T>(&self, work: impl Future<Output = T>) -> T {
        let every = self.hold / 3;
        let renewals = async {
            let mut next = tokio::time::Instant::now() + every;
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                self.renew().await;
            }
        };
        tokio::select! {
            done = work => done,
            never = renewals => never,
        }
    }

    async fn renew(&self) {
        let renewed = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $1 WHERE key = $2 AND holder = $3 AND status IS NULL",
        )
        .bind(now_ms() + self.hold.as_millis() as i64)
        .bind(&self.key)
        .bind(&self.token)
        .execute(self.store.relaxed().pool())
        .await;
        match renewed {
            Ok(done) if done.rows_affected() == 0 => {
                tracing::warn!(key = %self.key, "this run's idempotency hold was taken over; its work will not be kept");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(key = %self.key, error = %err, "renewing an idempotency hold failed"),
        }
    }

    /// Keeps `answer` under the key (in the work's transaction, when it has one) and gives it;
    /// a run that lost its key meanwhile rolls its work back and gives the key's answer.
    async fn keep(mut self, answer: Answer) -> Response {
        let Answer { status, body, tx } = answer;
        if status.is_server_error() {
            // Not kept: a retry runs again. Whatever the work wrote rolls back with `tx`.
            drop(tx);
            self.release().await;
            return respond(status, body);
        }
        let keep = || {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $1, response = $2, locked_until = 0 WHERE key = $3 AND holder = $4 AND status IS NULL",
            )
            .bind(i64::from(status.as_u16()))
            .bind(body.to_string())
            .bind(&self.key)
            .bind(&self.token)
        };
        let wrote = tx.is_some();
        let kept = match tx {
            Some(mut tx) => match keep().execute(&mut **tx).await {
                Ok(done) if done.rows_affected() == 1 => tx.commit().await.map(|()| true),
                Ok(_) => tx.rollback().await.map(|()| false),
                Err(err) => Err(err),
            },
            // The work wrote nothing: an answer lost to a power failure only lets a retry do
            // that nothing again, so it needs no sync of its own.
            None => keep()
                .execute(self.store.relaxed().pool())
                .await
                .map(|done| done.rows_affected() == 1),
        };
        match kept {
            Ok(true) => {
                self.finished = true;
                respond(status, body)
            }
            Ok(false) => {
                // Another run took the key over while this one was held up: its answer is the
                // key's, and this run's work (if it wrote) was rolled back.
                self.finished = true;
                tracing::warn!(key = %self.key, "the idempotency key was taken over while this run worked; giving the key's answer");
                match earlier(&self.store, &self.key, &self.fingerprint).await {
                    Ok(Earlier::Answered(response)) => response,
                    Ok(Earlier::Running { locked_until, .. }) if wrote => {
                        in_progress(Duration::from_millis((locked_until - now_ms()).max(0) as u64))
                    }
                    Ok(_) if wrote => in_progress(Duration::ZERO),
                    // Nothing was written: this run's answer is as good as the other's.
                    Ok(_) => respond(status, body),
                    Err(response) => response,
                }
            }
            Err(err) => {
                tracing::error!(key = %self.key, error = %err, "could not keep an idempotent answer");
                self.release().await;
                if wrote {
                    // The work's transaction did not commit: nothing happened.
                    Problem::internal().into_response()
                } else {
                    respond(status, body)
                }
            }
        }
    }

    /// Lets go of the key (no answer kept): the next request with it runs.
    async fn release(&mut self) {
        self.finished = true;
        if let Err(err) = release(&self.store, &self.key, &self.token).await {
            tracing::warn!(key = %self.key, error = %err, "releasing an idempotency key failed; its hold runs out");
        }
    }
}

async fn release(store: &Store, key: &str, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND holder = $2 AND status IS NULL")
        .bind(key)
        .bind(token)
        .execute(store.relaxed().pool())
        .await
        .map(|_| ())
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The request was dropped mid-work (its caller's deadline passed): whatever the work
        // wrote rolled back with its transaction, so the key is free again at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, token) = (self.store.clone(), std::mem::take(&mut self.key), self.token.clone());
            runtime.spawn(async move {
                if let Err(err) = release(&store, &key, &token).await {
                    tracing::warn!(key, error = %err, "releasing a dropped idempotency hold failed; it runs out");
                }
            });
        }
    }
}

/// What a key already holds.
enum Earlier {
    /// Nothing.
    Missing,
    /// An answer to give again (or a refusal: the key was used for another request).
    Answered(Response),
    /// A run that has not answered, holding the key until then (or renewing it).
    Running {
        /// When the hold runs out, ms since the epoch.
        locked_until: i64,
        /// The run holding it.
        holder: String,
    },
}

async fn earlier(store: &Store, key: &str, fingerprint: &str) -> Result<Earlier, Response> {
    let row =
        sqlx::query("SELECT fingerprint, status, response, locked_until, holder FROM idempotency_keys WHERE key = $1")
            .bind(key)
            .fetch_optional(store.pool())
            .await
            .map_err(internal)?;
    let Some(row) = row else {
        return Ok(Earlier::Missing);
    };
    let earlier: String = row.try_get("fingerprint").unwrap_or_default();
    if earlier != fingerprint {
        return Ok(Earlier::Answered(
            Problem::new(422, "idempotency-key-reused", "Idempotency key reused")
                .with_detail("this Idempotency-Key was used for another request; use a new key")
                .into_response(),
        ));
    }
    let status: Option<i64> = row.try_get("status").unwrap_or(None);
    if let Some(status) = status {
        let body: Option<String> = row.try_get("response").unwrap_or(None);
        let body: serde_json::Value = body.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default();
        return Ok(Earlier::Answered(replay(status, body, true)));
    }
    Ok(Earlier::Running {
        locked_until: row.try_get("locked_until").unwrap_or(i64::MAX),
        holder: row.try_get("holder").unwrap_or_default(),
    })
}

/// `409` while another run holds the key, with `Retry-After`: the whole seconds its hold has
/// left (at least one), after which a retry gets the answer or takes the key over.
pub fn in_progress(left: Duration) -> Response {
    let seconds = left.as_millis().div_ceil(1000).max(1);
    let mut response = Problem::new(409, IN_PROGRESS, "Request in progress")
        .with_detail(format!(
            "a request with this Idempotency-Key is still running; retry in {seconds} s"
        ))
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// For work that keeps its answer in its own transaction ([`keep_in`]) instead of running
/// under [`once`]: what an earlier request with this key answered (again, marked replayed),
/// `422` if the key was used for another request, `409` while a run under [`once`] holds it;
/// `None` when the work should run.
pub async fn recall(store: &Store, key: &str, fingerprint: &str) -> Option<Response> {
    match earlier(store, key, fingerprint).await {
        Ok(Earlier::Missing) => None,
        Ok(Earlier::Answered(response)) => Some(response),
        Ok(Earlier::Running { locked_until, .. }) => {
            let left = locked_until - now_ms();
            (left >= 0).then(|| in_progress(Duration::from_millis(left as u64)))
        }
        Err(response) => Some(response),
    }
}

/// Keeps the answer to the request with `key` inside the transaction that does its work, so
/// the work and its answer commit together (one durable commit where [`once`] needs two).
/// `false` when another request with the key answered first: roll back and [`recall`] it.
/// Answers with a 5xx status are not kept (a retry runs again); give those to [`respond`].
pub async fn keep_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &str,
    fingerprint: &str,
    status: StatusCode,
    body: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    if status.is_server_error() {
        return Ok(true);
    }
    let now = now_ms();
    // A run under `once` that is gone (its hold ran out) is answered for.
    let kept = sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint, status, response, locked_until, created_ms) VALUES ($1, $2, $3, $4, 0, $5) \
         ON CONFLICT (key) DO UPDATE SET status = excluded.status, response = excluded.response, locked_until = 0 \
         WHERE idempotency_keys.status IS NULL AND idempotency_keys.locked_until < $5 AND idempotency_keys.fingerprint = excluded.fingerprint",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(i64::from(status.as_u16()))
    .bind(body.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(kept.rows_affected() == 1)
}

/// A work's answer as a response, the way [`once`] gives it: `application/json`, or
/// `application/problem+json` for an error status. For the same work run without a key.
pub fn respond(status: StatusCode, body: serde_json::Value) -> Response {
    replay(i64::from(status.as_u16()), body, false)
}

/// A problem as an answer's status and body, for [`keep_in`].
pub fn problem_answer(problem: Problem) -> (StatusCode, serde_json::Value) {
    (
        problem.status_code(),
        serde_json::to_value(&problem).unwrap_or_default(),
    )
}

fn replay(status: i64, body: serde_json::Value, replayed: bool) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let problem = status.is_client_error() || status.is_server_error();
    let mut response = (status, body.to_string()).into_response();
    let content_type = if problem {
        "application/problem+json"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests;
