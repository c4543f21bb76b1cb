//! Idempotency keys (the IETF `Idempotency-Key` header, as Stripe uses it): the first request
//! with a key runs and its answer is kept; a repeat with the same request gets that answer
//! again (`Idempotent-Replayed: true`), whatever happened in between; a repeat while the first
//! still runs is `409`; the key reused for another request is `422`. A transient failure
//! (5xx) is not kept, so a retry runs again. A run that died holding its key is taken over
//! after the lease. Payments and orders share it; the answers live in the service's own
//! database, in the table [`prepare`] makes (or a migration of the same shape).

use std::future::Future;

use crate::store::{now_ms, Store};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_api::Problem;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How long a run holds its key before another may take it over.
const LEASE_MS: i64 = 30_000;

/// The table of keys and kept answers.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status BIGINT, response TEXT, locked_until BIGINT NOT NULL, created_ms BIGINT NOT NULL)";

/// The problem slug of a `409` answered while a request with the same key still runs: the
/// caller's request is neither refused nor done, and a later retry gets the first one's answer.
pub const IN_PROGRESS: &str = "request-in-progress";

/// Makes the keys table if it is missing.
pub async fn prepare(store: &Store) -> Result<(), sqlx::Error> {
    sqlx::query(SCHEMA).execute(store.pool()).await.map(|_| ())
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

/// Runs `work` once per key; repeats get its answer.
pub async fn once<F, Fut>(store: &Store, key: &str, fingerprint: &str, work: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (StatusCode, serde_json::Value)>,
{
    let now = now_ms();
    // The claim needs no sync of its own: if the work commits something durable, that commit
    // syncs the log the claim was written to before it; if the work leaves nothing, a claim
    // lost to a power failure only lets a retry run again.
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint, status, response, locked_until, created_ms) VALUES ($1, $2, NULL, NULL, $3, $4) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(fingerprint)
    .bind(now + LEASE_MS)
    .bind(now)
    .execute(store.relaxed().pool())
    .await;
    let claimed = match claimed {
        Ok(done) => done.rows_affected() == 1,
        Err(e) => return internal(e),
    };
    if !claimed {
        match earlier(store, key, fingerprint).await {
            Ok(Earlier::Answered(response)) => return response,
            // Released between our insert and read (a transient failure): run.
            Ok(Earlier::Missing) => return Box::pin(once(store, key, fingerprint, work)).await,
            Ok(Earlier::Running { locked_until }) => {
                let taken_over = locked_until < now
                    && sqlx::query(
                        "UPDATE idempotency_keys SET locked_until = $1 WHERE key = $2 AND status IS NULL AND locked_until = $3",
                    )
                    .bind(now + LEASE_MS)
                    .bind(key)
                    .bind(locked_until)
                    .execute(store.pool())
                    .await
                    .is_ok_and(|d| d.rows_affected() == 1);
                if !taken_over {
                    return in_progress();
                }
            }
            Err(response) => return response,
        }
    }
    let (status, body) = work().await;
    let kept = if status.is_server_error() {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND status IS NULL")
            .bind(key)
            .execute(store.pool())
            .await
    } else {
        sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE key = $3")
            .bind(i64::from(status.as_u16()))
            .bind(body.to_string())
            .bind(key)
            .execute(store.pool())
            .await
    };
    if let Err(e) = kept {
        tracing::error!(error = %e, "could not keep an idempotent answer");
    }
    replay(i64::from(status.as_u16()), body, false)
}

/// What a key already holds.
enum Earlier {
    /// Nothing.
    Missing,
    /// An answer to give again (or a refusal: the key was used for another request).
    Answered(Response),
    /// A run that has not answered, holding the key until then.
    Running { locked_until: i64 },
}

async fn earlier(store: &Store, key: &str, fingerprint: &str) -> Result<Earlier, Response> {
    let row = sqlx::query("SELECT fingerprint, status, response, locked_until FROM idempotency_keys WHERE key = $1")
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
    })
}

fn in_progress() -> Response {
    let mut response = Problem::new(409, IN_PROGRESS, "Request in progress")
        .with_detail("a request with this Idempotency-Key is still running; retry shortly")
        .into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
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
        Ok(Earlier::Running { locked_until }) if locked_until < now_ms() => None,
        Ok(Earlier::Running { .. }) => Some(in_progress()),
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
    // A run under `once` that died holding the key (its lease over) is answered for.
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

/// A problem as a work's answer (status and body), for [`once`] to keep.
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
