use serde_json::json;

use super::*;

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

#[tokio::test]
async fn every_write_is_a_revision_with_author_and_comment_and_history_keeps_them_all() {
    let store = ConfigStore::in_memory().await.unwrap();
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

#[tokio::test]
async fn compare_and_set_refuses_a_stale_revision_and_create_only_refuses_an_existing_key() {
    let store = ConfigStore::in_memory().await.unwrap();
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

#[tokio::test]
async fn rollback_is_a_new_revision_with_the_old_value_and_deletion_is_kept_in_history() {
    let store = ConfigStore::in_memory().await.unwrap();
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

#[tokio::test]
async fn layers_resolve_application_then_service_then_profile_with_objects_merged() {
    let store = ConfigStore::in_memory().await.unwrap();
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

#[tokio::test]
async fn a_blocking_resolve_wakes_for_its_own_layers_only() {
    let store = std::sync::Arc::new(ConfigStore::in_memory().await.unwrap());
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
    // An index from the future answers at once.
    let now = store
        .resolve_after("catalog", "default", 10_000, Duration::from_secs(30), Reveal::Masked)
        .await
        .unwrap();
    assert_eq!(now.revision, shared.revision);
}

#[tokio::test]
async fn bad_keys_and_null_values_are_refused_by_field() {
    let store = ConfigStore::in_memory().await.unwrap();
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
