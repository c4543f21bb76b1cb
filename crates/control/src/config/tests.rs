use serde_json::json;

use std::sync::Arc;

use super::*;
use crate::store::testing::{self, TestStore};

/// A store with its cache kept true by its own task, stopped when dropped; on NATS, with the
/// test's own server.
struct Fixture {
    store: Arc<ConfigStore>,
    _stop: tokio::sync::oneshot::Sender<()>,
    nats: Option<TestStore>,
}

fn follow(store: ConfigStore) -> (Arc<ConfigStore>, tokio::sync::oneshot::Sender<()>) {
    let store = Arc::new(store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn({
        let store = store.clone();
        async move {
            store
                .run_follow(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    (store, stop)
}

async fn synced(store: &ConfigStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !store.synced() {
        assert!(tokio::time::Instant::now() < deadline, "the store did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Fixture {
    async fn embedded() -> Self {
        let (store, stop) = follow(ConfigStore::in_memory().await.unwrap());
        Self {
            store,
            _stop: stop,
            nats: None,
        }
    }

    async fn nats() -> Self {
        let nats = testing::nats(1).await;
        let (store, stop) = follow(ConfigStore::on_nats(&nats.nats, Sealer::ephemeral()).await.unwrap());
        synced(&store).await;
        Self {
            store,
            _stop: stop,
            nats: Some(nats),
        }
    }

    /// Another replica over the same NATS store (sharing the sealing key is the operator's
    /// part: here an ephemeral one, so secrets are not read through it).
    async fn replica(&self) -> (Arc<ConfigStore>, tokio::sync::oneshot::Sender<()>) {
        let nats = self.nats.as_ref().expect("a NATS store");
        let (store, stop) = follow(
            ConfigStore::on_nats(&nats.replica().await, Sealer::ephemeral())
                .await
                .unwrap(),
        );
        synced(&store).await;
        (store, stop)
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $name() { super::$name(super::Fixture::embedded().await.store).await } )*
        }
        mod on_nats {
            $( #[tokio::test] async fn $name() {
                let fixture = super::Fixture::nats().await;
                super::$name(fixture.store.clone()).await
            } )*
        }
    };
}

suite!(
    every_write_is_a_revision_with_author_and_comment_and_history_keeps_them_all,
    compare_and_set_refuses_a_stale_revision_and_create_only_refuses_an_existing_key,
    rollback_is_a_new_revision_with_the_old_value_and_deletion_is_kept_in_history,
    layers_resolve_application_then_service_then_profile_with_objects_merged,
    bad_keys_and_null_values_are_refused_by_field,
    a_blocking_resolve_wakes_for_its_own_layers_only
);

fn key(scope: &str, profile: &str, k: &str) -> ConfigKey {
    ConfigKey::new(scope, profile, k)
}

fn by(author: &str, comment: &str) -> WriteOptions {
    WriteOptions {
        expect: None,
        author: author.into(),
        comment: comment.into(),
    }
}

fn expecting(revision: u64) -> WriteOptions {
    WriteOptions {
        expect: Some(revision),
        ..by("ops", "")
    }
}

async fn every_write_is_a_revision_with_author_and_comment_and_history_keeps_them_all(store: Arc<ConfigStore>) {
    let k = key("catalog", "default", "page_size");
    let first = store.set(&k, json!(20), false, by("ana", "first")).await.unwrap();
    let second = store.set(&k, json!(50), false, by("bo", "bigger pages")).await.unwrap();
    assert!(second.revision > first.revision);
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!(50));
    let history = store.history(&k, 10, Reveal::Masked).await.unwrap();
    let seen: Vec<(u64, Value, &str, &str)> = history
        .iter()
        .map(|e| (e.revision, e.value.clone(), e.author.as_str(), e.comment.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (second.revision, json!(50), "bo", "bigger pages"),
            (first.revision, json!(20), "ana", "first")
        ]
    );
    assert!(history.iter().all(|e| e.time_ms > 0));
    assert_eq!(
        store.at(&k, first.revision, Reveal::Masked).await.unwrap().value,
        json!(20)
    );
}

async fn compare_and_set_refuses_a_stale_revision_and_create_only_refuses_an_existing_key(store: Arc<ConfigStore>) {
    let k = key("application", "default", "greeting");
    let created = store.set(&k, json!("hi"), false, expecting(0)).await.unwrap();
    match store.set(&k, json!("again"), false, expecting(0)).await {
        Err(ConfigError::Conflict {
            expected: 0, current, ..
        }) => assert_eq!(current, created.revision),
        other => panic!("create-only over an existing key: {other:?}"),
    }
    let moved = store
        .set(&k, json!("hello"), false, expecting(created.revision))
        .await
        .unwrap();
    // A writer still holding the first revision loses, and nothing is written.
    assert!(matches!(
        store.set(&k, json!("stale"), false, expecting(created.revision)).await,
        Err(ConfigError::Conflict { .. })
    ));
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!("hello"));
    assert_eq!(store.revision(), moved.revision);
}

async fn rollback_is_a_new_revision_with_the_old_value_and_deletion_is_kept_in_history(store: Arc<ConfigStore>) {
    let k = key("catalog", "prod", "flags");
    let v1 = store
        .set(&k, json!({"search": true}), false, by("a", ""))
        .await
        .unwrap();
    let v2 = store
        .set(&k, json!({"search": false}), false, by("a", ""))
        .await
        .unwrap();
    let back = store.rollback(&k, v1.revision, by("b", "")).await.unwrap();
    assert!(back.revision > v2.revision);
    assert_eq!(back.comment, format!("rollback to revision {}", v1.revision));
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!({"search": true}));
    let deleted = store.delete(&k, by("c", "gone")).await.unwrap();
    assert!(deleted.deleted);
    assert!(matches!(store.get(&k, Reveal::Masked), Err(ConfigError::NotFound(_))));
    assert_eq!(store.history(&k, 10, Reveal::Masked).await.unwrap().len(), 4);
    // Rolling back over a deletion restores; a revision of another key is refused.
    store.rollback(&k, v2.revision, by("d", "")).await.unwrap();
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!({"search": false}));
    let other = key("catalog", "prod", "other");
    assert!(matches!(
        store.rollback(&other, v2.revision, by("d", "")).await,
        Err(ConfigError::NoSuchRevision { .. })
    ));
}

async fn layers_resolve_application_then_service_then_profile_with_objects_merged(store: Arc<ConfigStore>) {
    let w = by("t", "");
    store
        .set(
            &key("application", "default", "db"),
            json!({"pool": 4, "timeout": "1s"}),
            false,
            w.clone(),
        )
        .await
        .unwrap();
    store
        .set(&key("application", "default", "page_size"), json!(10), false, w.clone())
        .await
        .unwrap();
    store
        .set(&key("application", "prod", "page_size"), json!(15), false, w.clone())
        .await
        .unwrap();
    store
        .set(&key("catalog", "default", "page_size"), json!(20), false, w.clone())
        .await
        .unwrap();
    let top = store
        .set(&key("catalog", "prod", "db"), json!({"pool": 16}), false, w.clone())
        .await
        .unwrap();
    store
        .set(&key("orders", "default", "page_size"), json!(99), false, w.clone())
        .await
        .unwrap();

    let prod = store.resolve("catalog", "prod", Reveal::Masked).unwrap();
    assert_eq!(prod.values["page_size"], json!(20));
    assert_eq!(prod.values["db"], json!({"pool": 16, "timeout": "1s"}));
    assert_eq!(prod.sources["db"].len(), 2);
    assert_eq!(prod.revision, top.revision);
    let dev = store.resolve("catalog", "dev", Reveal::Masked).unwrap();
    assert_eq!(dev.values["db"], json!({"pool": 4, "timeout": "1s"}));
    // A service with no layer of its own sees the application's.
    let other = store.resolve("shipping", "prod", Reveal::Masked).unwrap();
    assert_eq!(other.values["page_size"], json!(15));
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_masked_in_listings_and_shown_only_when_revealed() {
    let dir = tempfile::tempdir().unwrap();
    let store = ConfigStore::open(dir.path()).await.unwrap();
    let k = key("payments", "default", "provider_key");
    let written = store
        .set(&k, json!("sk_live_abc123"), true, by("ops", "rotate"))
        .await
        .unwrap();
    assert_eq!(written.value, json!(SECRET_MASK));
    assert_eq!(store.list(None, None)[0].value, json!(SECRET_MASK));
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!(SECRET_MASK));
    assert_eq!(store.get(&k, Reveal::Secrets).unwrap().value, json!("sk_live_abc123"));
    let resolved = store.resolve("payments", "default", Reveal::Masked).unwrap();
    assert_eq!(resolved.values["provider_key"], json!(SECRET_MASK));
    let history = store.history(&k, 5, Reveal::Masked).await.unwrap();
    assert_eq!(history[0].value, json!(SECRET_MASK));
    drop(store);
    // Not a byte of the plain value reaches the disk.
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!bytes.windows(14).any(|w| w == b"sk_live_abc123"));
    }
}

#[tokio::test]
async fn a_restarted_store_has_every_revision_and_counts_on_from_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("catalog", "default", "page_size");
    let last = {
        let store = ConfigStore::open(dir.path()).await.unwrap();
        store.set(&k, json!(20), false, by("a", "")).await.unwrap();
        store
            .set(&key("payments", "default", "token"), json!("t0p"), true, by("a", ""))
            .await
            .unwrap();
        store.set(&k, json!(30), false, by("a", "")).await.unwrap()
    };
    let store = ConfigStore::open(dir.path()).await.unwrap();
    assert_eq!(store.revision(), last.revision);
    assert_eq!(store.get(&k, Reveal::Masked).unwrap().value, json!(30));
    assert_eq!(store.history(&k, 10, Reveal::Masked).await.unwrap().len(), 2);
    let secret = store
        .get(&key("payments", "default", "token"), Reveal::Secrets)
        .unwrap();
    assert_eq!(secret.value, json!("t0p"));
    let next = store.set(&k, json!(40), false, by("a", "")).await.unwrap();
    assert!(next.revision > last.revision);
}

async fn a_blocking_resolve_wakes_for_its_own_layers_only(store: Arc<ConfigStore>) {
    let first = store
        .set(&key("catalog", "default", "page_size"), json!(20), false, by("a", ""))
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .resolve_after(
                    "catalog",
                    "default",
                    first.revision,
                    Duration::from_secs(30),
                    Reveal::Masked,
                )
                .await
                .unwrap()
        }
    });
    tokio::task::yield_now().await;
    // Another service's change does not wake it …
    store
        .set(&key("orders", "default", "page_size"), json!(5), false, by("a", ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    // … the application's does.
    let shared = store
        .set(
            &key("application", "default", "feature"),
            json!(true),
            false,
            by("a", ""),
        )
        .await
        .unwrap();
    let resolved = waiter.await.unwrap();
    assert_eq!(resolved.revision, shared.revision);
    assert_eq!(resolved.values["feature"], json!(true));
}

#[tokio::test]
async fn an_index_from_the_future_answers_at_once_from_a_store_of_its_own() {
    let store = ConfigStore::in_memory().await.unwrap();
    let shared = store
        .set(
            &key("application", "default", "feature"),
            json!(true),
            false,
            by("a", ""),
        )
        .await
        .unwrap();
    // The store was reset (its file replaced): waiting for that revision would never end.
    let now = store
        .resolve_after("catalog", "default", 10_000, Duration::from_secs(30), Reveal::Masked)
        .await
        .unwrap();
    assert_eq!(now.revision, shared.revision);
}

async fn bad_keys_and_null_values_are_refused_by_field(store: Arc<ConfigStore>) {
    let bad = store
        .set(&key("Catalog", "default", "k"), json!(1), false, by("a", ""))
        .await;
    assert!(matches!(bad, Err(ConfigError::Invalid { field: "scope", .. })));
    let null = store
        .set(&key("catalog", "default", "k"), Value::Null, false, by("a", ""))
        .await;
    assert!(matches!(null, Err(ConfigError::Invalid { field: "value", .. })));
    assert_eq!(store.revision(), 0);
}

#[tokio::test]
async fn replicas_on_nats_race_a_compare_and_set_and_exactly_one_wins() {
    let fixture = Fixture::nats().await;
    let (other, _stop) = fixture.replica().await;
    let k = key("catalog", "default", "limit");
    for round in 0..10 {
        let expect = fixture.store.get(&k, Reveal::Masked).map_or(0, |e| e.revision);
        let (a, b) = tokio::join!(
            fixture.store.set(&k, json!(round * 2), false, expecting(expect)),
            other.set(&k, json!(round * 2 + 1), false, expecting(expect)),
        );
        let won = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {a:?} / {b:?}");
        let lost = if a.is_ok() { &b } else { &a };
        assert!(matches!(lost, Err(ConfigError::Conflict { .. })), "{lost:?}");
        let winner = a.as_ref().or(b.as_ref()).unwrap();
        // The winner's revision is the same number on both replicas, with the same value.
        let seen = other
            .resolve_after("catalog", "default", expect, Duration::from_secs(5), Reveal::Masked)
            .await
            .unwrap();
        assert_eq!(seen.revision, winner.revision);
        assert_eq!(seen.values["limit"], winner.value);
    }
}

#[tokio::test]
async fn a_replica_that_starts_later_has_every_revision_beyond_a_buckets_64_and_secrets_stay_sealed() {
    let fixture = Fixture::nats().await;
    let keys = tempfile::tempdir().unwrap();
    let sealer = || Sealer::from_file(&keys.path().join("config.key")).unwrap();
    let nats = fixture.nats.as_ref().unwrap();
    let (first, _first_stop) = follow(ConfigStore::on_nats(&nats.nats, sealer()).await.unwrap());
    synced(&first).await;
    let k = key("catalog", "default", "page_size");
    let mut last = None;
    for n in 0..80 {
        last = Some(first.set(&k, json!(n), false, by("a", "")).await.unwrap());
    }
    let secret = key("payments", "default", "provider_key");
    first
        .set(&secret, json!("sk_live_abc123"), true, by("ops", ""))
        .await
        .unwrap();
    let (later, _later_stop) = follow(ConfigStore::on_nats(&nats.replica().await, sealer()).await.unwrap());
    synced(&later).await;
    assert_eq!(later.revision(), first.revision());
    assert_eq!(later.history(&k, 1000, Reveal::Masked).await.unwrap().len(), 80);
    assert_eq!(later.get(&k, Reveal::Masked).unwrap().revision, last.unwrap().revision);
    assert_eq!(
        later.get(&secret, Reveal::Secrets).unwrap().value,
        json!("sk_live_abc123")
    );
    // The stream itself holds the secret sealed, never plain.
    let stream = nats.nats.jetstream.get_stream(nats::STREAM).await.unwrap();
    let raw = stream
        .get_last_raw_message_by_subject(&nats::subject(&secret))
        .await
        .unwrap();
    assert!(!raw.payload.windows(14).any(|w| w == b"sk_live_abc123"));
    // Applied reports written through one replica are seen by the other.
    let report = ApplyReport {
        service: "catalog".into(),
        revision: 3,
        status: flotilla_api::config::ApplyStatus::Applied,
        running: 3,
        error: None,
        time_ms: 1,
    };
    first.report("catalog-1", report.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, reports) = later.reports(|_| true);
        if reports
            .iter()
            .any(|r| r.instance_id == "catalog-1" && r.report == report)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the report did not reach the other replica"
        );
        later.reports_after(0, Duration::from_millis(100)).await;
    }
}
