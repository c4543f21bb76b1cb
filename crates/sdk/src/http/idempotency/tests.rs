use std::time::Duration;

use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::*;
use crate::store::test_util::TestDatabase;
use crate::store::Store;

const NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// A store with the keys table and a table the works write to.
async fn store() -> (Store, TestDatabase) {
    let db = TestDatabase::create("idempotency").await;
    let store = Store::open(&db.url, &NO_MIGRATIONS).await.unwrap();
    prepare(&store).await.unwrap();
    sqlx::query("CREATE TABLE effects (id TEXT PRIMARY KEY, run TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    (store, db)
}

async fn effects(store: &Store) -> Vec<String> {
    let rows = sqlx::query("SELECT run FROM effects ORDER BY run")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.iter().map(|r| r.try_get::<String, _>("run").unwrap()).collect()
}

/// A work that writes one effect named `run` and answers 201 with it, uncommitted.
async fn write(store: &Store, run: &str) -> Answer {
    let mut tx = store.begin_grouped().await.unwrap();
    sqlx::query("INSERT INTO effects (id, run) VALUES ($1, $2)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(run)
        .execute(&mut **tx)
        .await
        .unwrap();
    Answer::with(StatusCode::CREATED, json!({ "run": run }), tx)
}

async fn body(response: Response) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_work_and_its_answer_commit_together_and_a_repeat_gets_the_answer() {
    let (store, db) = store().await;
    let first = body(once(&store, "k", "f", || write(&store, "first")).await).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let again = body(once(&store, "k", "f", || write(&store, "second")).await).await;
    assert_eq!((again.0, &again.2), (StatusCode::CREATED, &first.2));
    assert_eq!(again.1["idempotent-replayed"], "true");
    assert_eq!(effects(&store).await, ["first"], "the repeat ran nothing");
    let reused = body(once(&store, "k", "other", || write(&store, "third")).await).await;
    assert_eq!(reused.0, StatusCode::UNPROCESSABLE_ENTITY);
    db.remove().await;
}

#[tokio::test]
async fn a_server_error_rolls_the_work_back_and_keeps_nothing() {
    let (store, db) = store().await;
    let failed = once(&store, "k", "f", || async {
        let mut answer = write(&store, "failed").await;
        answer.status = StatusCode::SERVICE_UNAVAILABLE;
        answer
    })
    .await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(effects(&store).await.is_empty(), "the failed work's writes rolled back");
    let retried = once(&store, "k", "f", || write(&store, "retried")).await;
    assert_eq!(retried.status(), StatusCode::CREATED, "the retry ran at once");
    assert_eq!(effects(&store).await, ["retried"]);
    db.remove().await;
}

#[tokio::test]
async fn a_run_still_holding_its_key_is_answered_409_with_the_time_its_hold_has_left() {
    let (store, db) = store().await;
    let (started, release) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let holding = once_holding(&store, "k", "f", Duration::from_secs(6), || async {
        started.notify_one();
        release.notified().await;
        write(&store, "holder").await
    });
    let waiting = async {
        started.notified().await;
        let busy = body(once(&store, "k", "f", || write(&store, "retry")).await).await;
        release.notify_one();
        busy
    };
    let (held, busy) = tokio::join!(holding, waiting);
    assert_eq!(busy.0, StatusCode::CONFLICT);
    assert_eq!(busy.2["type"], format!("urn:flotilla:problem:{IN_PROGRESS}"));
    let left: u64 = busy.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((5..=6).contains(&left), "Retry-After is the hold's time left: {left}");
    assert_eq!(held.status(), StatusCode::CREATED);
    assert_eq!(effects(&store).await, ["holder"]);
    db.remove().await;
}

#[tokio::test]
async fn a_dropped_run_lets_go_of_its_key_at_once() {
    let (store, db) = store().await;
    let started = tokio::sync::Notify::new();
    let dropped = tokio::time::timeout(
        Duration::from_millis(100),
        once(&store, "k", "f", || async {
            started.notify_one();
            std::future::pending::<Answer>().await
        }),
    )
    .await;
    assert!(dropped.is_err(), "the caller gave up");
    // The release runs in the background: a retry shortly after runs, not 409s for the hold.
    let mut retried = None;
    for _ in 0..50 {
        let response = once(&store, "k", "f", || write(&store, "retry")).await;
        if response.status() != StatusCode::CONFLICT {
            retried = Some(response.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(retried, Some(StatusCode::CREATED));
    db.remove().await;
}

#[tokio::test]
async fn a_holder_that_was_held_up_past_its_hold_loses_the_key_and_its_work_rolls_back() {
    let (store, db) = store().await;
    let hold = Duration::from_millis(300);
    let (started, resume) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    // The first run stalls without renewing (as a paused process would): its hold runs out.
    let first = Hold::take(&store, "k", "f", hold).await.unwrap();
    let stalled = async {
        started.notify_one();
        resume.notified().await;
        let answer = write(&store, "stalled").await;
        body(first.keep(answer).await).await
    };
    let taker = async {
        started.notified().await;
        tokio::time::sleep(hold + Duration::from_millis(100)).await;
        let taken = body(once_holding(&store, "k", "f", hold, || write(&store, "taker")).await).await;
        resume.notify_one();
        taken
    };
    let (late, taken) = tokio::join!(stalled, taker);
    assert_eq!(taken.0, StatusCode::CREATED);
    assert_eq!(taken.2["run"], "taker");
    assert_eq!(
        (late.0, &late.2),
        (StatusCode::CREATED, &taken.2),
        "the late run gives the key's answer"
    );
    assert_eq!(late.1["idempotent-replayed"], "true");
    assert_eq!(effects(&store).await, ["taker"], "the late run's work rolled back");
    db.remove().await;
}

#[tokio::test]
async fn a_long_work_renews_its_hold_so_nobody_takes_the_key_meanwhile() {
    let (store, db) = store().await;
    let hold = Duration::from_millis(300);
    let started = tokio::sync::Notify::new();
    let long = once_holding(&store, "k", "f", hold, || async {
        started.notify_one();
        tokio::time::sleep(hold * 4).await;
        write(&store, "long").await
    });
    let retries = async {
        started.notified().await;
        let mut answers = Vec::new();
        for _ in 0..8 {
            tokio::time::sleep(hold / 2).await;
            answers.push(
                once_holding(&store, "k", "f", hold, || write(&store, "retry"))
                    .await
                    .status(),
            );
        }
        answers
    };
    let (long, answers) = tokio::join!(long, retries);
    assert_eq!(long.status(), StatusCode::CREATED);
    assert_eq!(
        effects(&store).await,
        ["long"],
        "no retry ran the work again: {answers:?}"
    );
    db.remove().await;
}
