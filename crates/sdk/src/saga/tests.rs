use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::store::test_util::TestDatabase;
use crate::store::Store;

type Journal = Arc<Mutex<Vec<String>>>;

/// A three-step saga whose step `fail_at` (if any) is rejected; every effect is journaled,
/// and so is the end of its compensation.
fn order_saga(journal: &Journal, fail_at: Option<usize>) -> Saga<serde_json::Value> {
    let j = journal.clone();
    let mut saga = Saga::new("order").on_compensated(move |_id, state, why| {
        let j = j.clone();
        async move {
            j.lock().unwrap().push(format!("cancelled: {why}"));
            Ok(state)
        }
    });
    for (i, name) in ["reserve", "authorize", "ship"].into_iter().enumerate() {
        let (a, c) = (journal.clone(), journal.clone());
        saga = saga.step(
            name,
            move |_id, state: serde_json::Value| {
                let a = a.clone();
                async move {
                    if fail_at == Some(i) {
                        return Err(StepError::Rejected(format!("{name} refused")));
                    }
                    a.lock().unwrap().push(format!("do {name}"));
                    Ok(state)
                }
            },
            move |_id, state| {
                let c = c.clone();
                async move {
                    c.lock().unwrap().push(format!("undo {name}"));
                    Ok(state)
                }
            },
        );
    }
    saga
}

async fn sagas() -> (SagaStore, TestDatabase) {
    let db = TestDatabase::create("saga").await;
    let store = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    (SagaStore::prepare(store).await.unwrap(), db)
}

async fn run_to_end<S>(runner: &SagaRunner<S>, id: &str) -> SagaRecord
where
    S: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let started = std::time::Instant::now();
    loop {
        let record = runner.store().get(id).await.unwrap().unwrap();
        if !matches!(record.status, SagaStatus::Running | SagaStatus::Compensating) {
            return record;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "stuck: {record:?}");
        if runner.tick().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_saga_runs_every_step_once_and_completes() {
    let (store, db) = sagas().await;
    let journal = Journal::default();
    let runner = SagaRunner::new(order_saga(&journal, None), store);
    assert!(runner.start("o-1", &serde_json::json!({"order": 1})).await.unwrap());
    assert!(
        !runner.start("o-1", &serde_json::json!({"order": 1})).await.unwrap(),
        "idempotent by id"
    );
    let done = run_to_end(&runner, "o-1").await;
    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(*journal.lock().unwrap(), vec!["do reserve", "do authorize", "do ship"]);
    let history = runner.store().history("o-1").await.unwrap();
    assert_eq!(history.first().unwrap().event, "started");
    assert_eq!(history.last().unwrap().event, "completed");
    db.remove().await;
}

#[tokio::test]
async fn a_failure_at_each_step_undoes_the_earlier_steps_in_reverse_once_each() {
    let (store, db) = sagas().await;
    for fail_at in 0..3 {
        let journal = Journal::default();
        let runner = SagaRunner::new(order_saga(&journal, Some(fail_at)), store.clone());
        let id = format!("fail-{fail_at}");
        runner.start(&id, &serde_json::json!({})).await.unwrap();
        let done = run_to_end(&runner, &id).await;
        assert_eq!(done.status, SagaStatus::Compensated);
        let names = ["reserve", "authorize", "ship"];
        let mut expected: Vec<String> = names[..fail_at].iter().map(|n| format!("do {n}")).collect();
        expected.extend(names[..fail_at].iter().rev().map(|n| format!("undo {n}")));
        expected.push(format!("cancelled: {} refused", names[fail_at]));
        assert_eq!(*journal.lock().unwrap(), expected, "failing at {}", names[fail_at]);
    }
    db.remove().await;
}

#[tokio::test]
async fn a_step_waits_while_its_dependency_is_away_and_goes_on_when_it_returns() {
    let (store, db) = sagas().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let saga = Saga::new("pay")
        .step(
            "authorize",
            move |_id, state: serde_json::Value| {
                let counter = counter.clone();
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 4 {
                        Err(StepError::Unavailable("payments is down".into()))
                    } else {
                        Ok(state)
                    }
                }
            },
            |_id, state| async move { Ok(state) },
        )
        .with_policy(Duration::from_secs(1), 1);
    let runner = SagaRunner::new(saga, store);
    runner.start("p-1", &serde_json::json!({})).await.unwrap();
    let done = run_to_end(&runner, "p-1").await;
    assert_eq!(done.status, SagaStatus::Completed, "waiting never gives up");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let waits = runner
        .store()
        .history("p-1")
        .await
        .unwrap()
        .iter()
        .filter(|t| t.event == "waiting")
        .count();
    assert_eq!(waits, 4);
    db.remove().await;
}

#[tokio::test]
async fn a_saga_resumes_after_a_crash_from_its_last_recorded_step() {
    let (store, db) = sagas().await;
    let journal = Journal::default();
    {
        // The first process gets one step done; the second waits on its dependency when the
        // process dies.
        let j = journal.clone();
        let first = Saga::new("order")
            .step(
                "reserve",
                move |_id, state: serde_json::Value| {
                    let j = j.clone();
                    async move {
                        j.lock().unwrap().push("do reserve".to_owned());
                        Ok(state)
                    }
                },
                |_id, state| async move { Ok(state) },
            )
            .step(
                "authorize",
                |_id, _state: serde_json::Value| async move { Err(StepError::Unavailable("away".into())) },
                |_id, state| async move { Ok(state) },
            );
        let runner = SagaRunner::new(first, store.clone());
        runner.start("o-9", &serde_json::json!({})).await.unwrap();
        assert_eq!(runner.tick().await.unwrap(), 1);
    }
    let record = store.get("o-9").await.unwrap().unwrap();
    assert_eq!((record.status, record.step), (SagaStatus::Running, 1));
    let runner = SagaRunner::new(order_saga(&journal, None), store.clone());
    let done = run_to_end(&runner, "o-9").await;
    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(
        *journal.lock().unwrap(),
        vec!["do reserve", "do authorize", "do ship"],
        "no step ran twice"
    );
    db.remove().await;
}

#[tokio::test]
async fn a_failing_step_is_retried_then_compensated() {
    let (store, db) = sagas().await;
    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let undone = Arc::new(AtomicU32::new(0));
    let u = undone.clone();
    let saga = Saga::new("flaky")
        .step(
            "first",
            |_id, s: serde_json::Value| async move { Ok(s) },
            move |_id, s| {
                let u = u.clone();
                async move {
                    u.fetch_add(1, Ordering::SeqCst);
                    Ok(s)
                }
            },
        )
        .step(
            "second",
            move |_id, _s: serde_json::Value| {
                let t = t.clone();
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    Err(StepError::Failed("boom".into()))
                }
            },
            |_id, s| async move { Ok(s) },
        )
        .with_policy(Duration::from_secs(1), 3);
    let runner = SagaRunner::new(saga, store);
    runner.start("f-1", &serde_json::json!({})).await.unwrap();
    let done = run_to_end(&runner, "f-1").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    assert_eq!(done.last_error, "boom");
    db.remove().await;
}

/// Keeps each milestone as a row of its own table, in the saga's transaction; fails (once)
/// on the milestone named in `fail_once`.
struct Rows {
    fail_once: Mutex<Option<String>>,
}

impl Recorder<serde_json::Value> for Rows {
    fn record<'a>(
        &'a self,
        tx: &'a mut sqlx::Transaction<'static, sqlx::Any>,
        id: &'a str,
        milestone: Milestone<'a, serde_json::Value>,
    ) -> RecordFuture<'a> {
        Box::pin(async move {
            let what = match milestone {
                Milestone::Done { step, .. } => format!("done {step}"),
                Milestone::Undone { step, .. } => format!("undone {step}"),
                Milestone::Compensated { why, .. } => format!("compensated: {why}"),
            };
            sqlx::query(
                "INSERT INTO milestones (seq, saga, what) SELECT COALESCE(MAX(seq), 0) + 1, $1, $2 FROM milestones",
            )
            .bind(id)
            .bind(&what)
            .execute(&mut **tx)
            .await?;
            let mut fail = self.fail_once.lock().unwrap();
            if fail.as_deref() == Some(what.as_str()) {
                *fail = None;
                return Err(sqlx::Error::Protocol(format!("recording {what} failed")));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn milestones_are_recorded_in_the_steps_own_transactions_and_a_failed_record_undoes_the_step_record() {
    let db = TestDatabase::create("saga").await;
    let tables = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    let store = SagaStore::prepare(tables.clone()).await.unwrap();
    sqlx::query("CREATE TABLE milestones (seq BIGINT PRIMARY KEY, saga TEXT NOT NULL, what TEXT NOT NULL)")
        .execute(tables.pool())
        .await
        .unwrap();
    let journal = Journal::default();
    // The record of "authorize" fails once: its step is not marked done, so it runs again.
    let saga = order_saga(&journal, Some(2)).recorder(Rows {
        fail_once: Mutex::new(Some("done authorize".into())),
    });
    let runner = SagaRunner::new(saga, store.clone());
    runner.start("m-1", &serde_json::json!({})).await.unwrap();
    let done = run_to_end(&runner, "m-1").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    let rows: Vec<String> = sqlx::query_scalar("SELECT what FROM milestones WHERE saga = $1 ORDER BY seq")
        .bind("m-1")
        .fetch_all(tables.pool())
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            "done reserve",
            "done authorize",
            "undone authorize",
            "undone reserve",
            "compensated: ship refused"
        ]
    );
    assert_eq!(
        *journal.lock().unwrap(),
        vec![
            "do reserve",
            "do authorize",
            "do authorize",
            "undo authorize",
            "undo reserve",
            "cancelled: ship refused"
        ],
        "the step whose record failed ran again"
    );
    db.remove().await;
}

#[tokio::test]
async fn a_run_whose_lease_ran_out_writes_nothing_over_the_run_that_took_the_instance_on() {
    let (store, db) = sagas().await;
    let journal = Journal::default();
    let runner = SagaRunner::new(order_saga(&journal, None), store.clone());
    runner.start("l-1", &serde_json::json!({})).await.unwrap();
    // A run takes the instance with a lease that runs out at once (a step that hung) …
    let mut stale = store
        .lease_due("order", 10, Duration::ZERO, "stale-runner")
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    // … another run takes it on and finishes it …
    let done = run_to_end(&runner, "l-1").await;
    assert_eq!((done.status, done.step), (SagaStatus::Completed, 3));
    // … and the first one, coming back, is refused: no step is skipped or recorded twice.
    let err = runner.advance(stale.remove(0)).await.unwrap_err();
    assert!(err.to_string().contains("lease ran out"), "{err}");
    let after = store.get("l-1").await.unwrap().unwrap();
    assert_eq!((after.status, after.step), (SagaStatus::Completed, 3));
    let done_lines = store
        .history("l-1")
        .await
        .unwrap()
        .iter()
        .filter(|t| t.event == "done")
        .count();
    assert_eq!(done_lines, 3);
    db.remove().await;
}

/// Keeps the `Compensated` milestone's reason and whether it was a refusal.
#[derive(Default)]
struct Ending(Mutex<Option<(String, bool)>>);

impl Recorder<serde_json::Value> for Arc<Ending> {
    fn record<'a>(
        &'a self,
        _tx: &'a mut sqlx::Transaction<'static, sqlx::Any>,
        _id: &'a str,
        milestone: Milestone<'a, serde_json::Value>,
    ) -> RecordFuture<'a> {
        if let Milestone::Compensated { why, refused, .. } = milestone {
            *self.0.lock().unwrap() = Some((why.to_owned(), refused));
        }
        Box::pin(async { Ok(()) })
    }
}

/// `reserve` always succeeds and its compensation fails `undo_failures` times first;
/// `authorize` fails with `failure`.
fn refused_saga(failure: StepError, undo_failures: u32, ending: Arc<Ending>) -> Saga<serde_json::Value> {
    let failures = Arc::new(AtomicU32::new(0));
    Saga::new("order")
        .recorder(ending)
        .step(
            "reserve",
            |_id, state: serde_json::Value| async move { Ok(state) },
            move |_id, state| {
                let failures = failures.clone();
                async move {
                    if failures.fetch_add(1, Ordering::SeqCst) < undo_failures {
                        return Err(StepError::Unavailable("no instance of `inventory` is available".into()));
                    }
                    Ok(state)
                }
            },
        )
        .step(
            "authorize",
            move |_id, _state: serde_json::Value| {
                let failure = failure.clone();
                async move { Err(failure) }
            },
            |_id, state| async move { Ok(state) },
        )
        .with_policy(Duration::from_secs(1), 2)
}

#[tokio::test]
async fn the_reason_a_saga_is_undone_is_its_first_failure_not_a_compensations_retry() {
    let (store, db) = sagas().await;
    let ending = Arc::new(Ending::default());
    let saga = refused_saga(StepError::Rejected("payment declined".into()), 3, ending.clone());
    let runner = SagaRunner::new(saga, store.clone());
    runner.start("declined", &serde_json::json!({})).await.unwrap();
    let done = run_to_end(&runner, "declined").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(
        ending.0.lock().unwrap().clone(),
        Some(("payment declined".to_owned(), true)),
        "the decline, not `compensation: no instance …`"
    );
    assert_eq!(done.reason, "payment declined");
    assert!(done.refused);
    let history = runner.store().history("declined").await.unwrap();
    assert!(
        history.iter().any(|t| t.detail.contains("no instance of `inventory`")),
        "the compensation's failures are in the history: {history:?}"
    );
    assert_eq!(history.last().unwrap().detail, "payment declined");

    // An operational failure that ran out of tries is kept too, and marked as such.
    let ending = Arc::new(Ending::default());
    let saga = refused_saga(StepError::Failed("timed out".into()), 0, ending.clone());
    let runner = SagaRunner::new(saga, store);
    runner.start("timed-out", &serde_json::json!({})).await.unwrap();
    run_to_end(&runner, "timed-out").await;
    assert_eq!(ending.0.lock().unwrap().clone(), Some(("timed out".to_owned(), false)));
    db.remove().await;
}

#[tokio::test]
async fn a_runner_that_stops_checking_in_loses_its_instances_to_another_within_seconds() {
    let (store, db) = sagas().await;
    let lease = Duration::from_millis(store::LEASE_MS as u64);
    store.insert("s-1", "slow", &serde_json::json!({})).await.unwrap();
    // Runner A takes the instance and checks in.
    store.check_in("a", "slow", 0.0).await.unwrap();
    let taken = store.lease_due("slow", 10, lease, "a").await.unwrap();
    assert_eq!(taken.len(), 1);
    // While A checks in, its lease holds.
    assert!(store.lease_due("slow", 10, lease, "b").await.unwrap().is_empty());
    // A's process dies: no check-in for longer than a runner may miss.
    sqlx::query("UPDATE flotilla_saga_runners SET checked_in_ms = checked_in_ms - $1 WHERE id = 'a'")
        .bind(store::GONE_AFTER_MS + 1)
        .execute(store.store.pool())
        .await
        .unwrap();
    // A itself, alive after all (its check-in was only late), does not take what it runs again.
    assert!(store.lease_due("slow", 10, lease, "a").await.unwrap().is_empty());
    let taken = store.lease_due("slow", 10, lease, "b").await.unwrap();
    assert_eq!(
        taken.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["s-1"],
        "B takes it up without waiting out A's 30 s lease"
    );
    db.remove().await;
}

/// What admission reads: the open instances that are not waiting, every live runner's rate.
#[tokio::test]
async fn the_load_counts_open_instances_not_waiting_and_adds_up_live_runners_rates() {
    let (store, db) = sagas().await;
    for id in ["o-1", "o-2", "o-3", "o-4"] {
        store.insert(id, "order", &serde_json::json!({})).await.unwrap();
    }
    store
        .insert("other-kind", "refund", &serde_json::json!({}))
        .await
        .unwrap();
    // One waits for a dependency that is away; one is done.
    sqlx::query("UPDATE flotilla_sagas SET waits = 2 WHERE id = 'o-3'")
        .execute(store.store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE flotilla_sagas SET status = 'completed' WHERE id = 'o-4'")
        .execute(store.store.pool())
        .await
        .unwrap();
    store.check_in("a", "order", 12.5).await.unwrap();
    store.check_in("b", "order", 7.5).await.unwrap();
    store.check_in("gone", "order", 100.0).await.unwrap();
    store.check_in("c", "refund", 3.0).await.unwrap();
    sqlx::query("UPDATE flotilla_saga_runners SET checked_in_ms = checked_in_ms - $1 WHERE id = 'gone'")
        .bind(store::GONE_AFTER_MS + 1)
        .execute(store.store.pool())
        .await
        .unwrap();
    assert_eq!(store.load("order").await.unwrap(), (2, 20.0));
    db.remove().await;
}

/// A runner takes instances while those open finish in time, and refuses the rest with when
/// to come back; nothing it refuses is written.
#[tokio::test]
async fn a_runner_admits_while_the_open_instances_finish_in_time() {
    let (store, db) = sagas().await;
    let journal = Journal::default();
    let runner = SagaRunner::new(order_saga(&journal, None), store);
    let second = Duration::from_secs(1);
    // Nothing finished yet: a few are taken.
    runner.backlog.observe(ADMIT_BEFORE_ANY_FINISHED - 1, None);
    runner.admit(second).unwrap();
    let refused = runner.admit(second).unwrap_err();
    assert!(
        refused.what.starts_with("16 order sagas are still running"),
        "{}",
        refused.what
    );
    // The runners finish 200 a second: 200 open finish within a second.
    runner.backlog.observe(199, Some(200.0));
    runner.admit(second).unwrap();
    let refused = runner.admit(second).unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(5));
    assert!(runner.store().list("order", 10).await.unwrap().is_empty());
    db.remove().await;
}
