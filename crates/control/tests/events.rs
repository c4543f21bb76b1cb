//! The SDK's outbox and inbox against a real control plane's event log over loopback: an
//! event exists exactly when its transaction committed, survives a crash before publish, and a
//! redelivered event has no second effect.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use flotilla::events::{prepare, CloudEvent, Consumer, EventsClient, Outbox, Relay};
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use flotilla_control::{ControlConfig, RegistryConfig, Storage};
use tokio::net::TcpListener;

const TOKEN: &str = "test-token";

async fn control() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    let storage = Storage::in_memory().await.unwrap();
    tokio::spawn(flotilla_control::serve(
        listener,
        config,
        storage,
        std::future::pending(),
    ));
    addr
}

fn placed(id: &str, order: &str) -> CloudEvent {
    serde_json::from_value(serde_json::json!({
        "id": id, "source": "/orders", "type": "shop.order.placed", "subject": format!("order/{order}"),
        "data": {"order": order}
    }))
    .unwrap()
}

async fn service_db() -> (Store, TestDatabase) {
    let db = TestDatabase::create("events").await;
    let store = Store::open(&db.url, &sqlx::migrate::Migrator::DEFAULT).await.unwrap();
    prepare(&store).await.unwrap();
    (store, db)
}

#[tokio::test]
async fn the_outbox_publishes_committed_events_only_in_order_and_after_a_crash() {
    let addr = control().await;
    let client = EventsClient::new(&addr.to_string(), Some(TOKEN.into()));
    let (store, db) = service_db().await;
    let outbox = Outbox::new();

    // Rolled back: no event.
    let mut tx = store.pool().begin().await.unwrap();
    outbox.add(&mut tx, "orders", &placed("e0", "0")).await.unwrap();
    tx.rollback().await.unwrap();
    // Committed, but the process "crashes" before any relay runs.
    for (id, order) in [("e1", "1"), ("e2", "2"), ("e3", "3")] {
        let mut tx = store.pool().begin().await.unwrap();
        outbox.add(&mut tx, "orders", &placed(id, order)).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The restarted process's relay publishes them, in order.
    let relay = Relay::new(store.clone(), client.clone(), Outbox::new());
    assert_eq!(relay.drain().await.unwrap(), 3);
    assert_eq!(relay.drain().await.unwrap(), 0, "published rows are gone");
    let got = client.fetch("orders", "audit", 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.event.id.as_str()).collect::<Vec<_>>(),
        vec!["e1", "e2", "e3"]
    );

    // A crash after publish and before delete publishes again: the log keeps one.
    let again = client.append("orders", &[placed("e2", "2")]).await.unwrap();
    assert!(again[0].duplicate);
    drop(store);
    db.remove().await;
}

#[tokio::test]
async fn a_redelivered_event_has_no_second_effect_and_a_failed_one_is_handled_later() {
    let addr = control().await;
    let client = EventsClient::new(&addr.to_string(), Some(TOKEN.into()));
    let (store, db) = service_db().await;
    sqlx::query("CREATE TABLE shipped (order_id TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    client.append("orders", &[placed("e1", "1")]).await.unwrap();
    let consumer = Consumer::new(store.clone(), client.clone(), "orders", "shipping");
    let deliveries = client.fetch("orders", "shipping", 10, Duration::ZERO).await.unwrap();
    let ship = |delivery: flotilla::events::Delivery, mut tx: sqlx::Transaction<'static, sqlx::Any>| async move {
        sqlx::query("INSERT INTO shipped (order_id) VALUES ($1)")
            .bind(delivery.event.data["order"].as_str().unwrap_or_default().to_owned())
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        Ok(tx)
    };
    assert!(consumer.handle_one(&deliveries[0], &ship).await.unwrap());
    // The same event again (an ack that got lost): skipped.
    assert!(!consumer.handle_one(&deliveries[0], &ship).await.unwrap());
    let shipped: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shipped")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(shipped, 1);

    // A handler that fails leaves no trace, so the next delivery is handled.
    client.append("orders", &[placed("e2", "2")]).await.unwrap();
    let fail = |_: flotilla::events::Delivery, tx: sqlx::Transaction<'static, sqlx::Any>| async move {
        drop(tx);
        Err::<sqlx::Transaction<'static, sqlx::Any>, String>("payments unreachable".into())
    };
    let second = client.fetch("orders", "shipping", 10, Duration::ZERO).await.unwrap();
    let e2 = second.iter().find(|d| d.event.id == "e2").unwrap();
    assert!(consumer.handle_one(e2, &fail).await.is_err());
    assert!(
        consumer.handle_one(e2, &ship).await.unwrap(),
        "the failure left nothing behind"
    );
    let shipped: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shipped")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(shipped, 2);
    drop(store);
    db.remove().await;
}
