use serde_json::json;

use super::*;

fn event(id: &str, subject: &str) -> CloudEvent {
    CloudEvent {
        specversion: "1.0".into(),
        id: id.into(),
        source: "/orders".into(),
        kind: "shop.order.placed".into(),
        subject: Some(subject.into()),
        time: None,
        traceparent: None,
        data: json!({"order": subject}),
        deadletterreason: None,
    }
}

fn quick() -> LogConfig {
    LogConfig {
        ack_timeout: Duration::from_millis(100),
        max_deliveries: 3,
        ..LogConfig::default()
    }
}

#[tokio::test]
async fn appends_get_offsets_in_order_and_a_repeated_id_is_not_added_again() {
    let log = EventLog::in_memory(quick()).await.unwrap();
    let first = log
        .append("orders", &[event("e1", "o-1"), event("e2", "o-1")])
        .await
        .unwrap();
    assert_eq!(first.iter().map(|a| a.offset).collect::<Vec<_>>(), vec![0, 1]);
    let again = log
        .append("orders", &[event("e2", "o-1"), event("e3", "o-2")])
        .await
        .unwrap();
    assert_eq!((again[0].offset, again[0].duplicate), (1, true));
    assert_eq!((again[1].offset, again[1].duplicate), (2, false));
    let twice = log
        .append("orders", &[event("e4", "o-3"), event("e4", "o-3")])
        .await
        .unwrap();
    assert_eq!((twice[0].offset, twice[0].duplicate), (3, false));
    assert_eq!(
        (twice[1].offset, twice[1].duplicate),
        (3, true),
        "a repeat within one append"
    );
    let all = log.read("orders", 0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.event.id.as_str()).collect::<Vec<_>>(),
        vec!["e1", "e2", "e3", "e4"]
    );
    assert!(matches!(
        log.append("Orders", &[event("x", "y")]).await,
        Err(LogError::Invalid { field: "topic", .. })
    ));
    let mut bad = event("", "y");
    bad.source = String::new();
    assert!(matches!(
        log.append("orders", &[bad]).await,
        Err(LogError::Invalid { field: "id", .. })
    ));
}

#[tokio::test]
async fn groups_each_get_every_event_and_acked_ones_are_not_redelivered() {
    let log = EventLog::in_memory(quick()).await.unwrap();
    log.append("orders", &[event("e1", "a"), event("e2", "b"), event("e3", "c")])
        .await
        .unwrap();
    let shipping = log.fetch("orders", "shipping", 2, Duration::ZERO).await.unwrap();
    assert_eq!(shipping.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![0, 1]);
    let mail = log.fetch("orders", "notifications", 10, Duration::ZERO).await.unwrap();
    assert_eq!(mail.len(), 3, "groups are independent");
    log.ack("orders", "shipping", &[0, 1]).await.unwrap();
    let rest = log.fetch("orders", "shipping", 10, Duration::ZERO).await.unwrap();
    assert_eq!(rest.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![2]);
    log.ack("orders", "shipping", &[2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(log
        .fetch("orders", "shipping", 10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let topics = log.topics().await.unwrap();
    let shipping = topics[0].groups.iter().find(|g| g.group == "shipping").unwrap();
    assert_eq!((shipping.in_flight, shipping.lag), (0, 0));
}

#[tokio::test]
async fn an_unacked_event_comes_again_and_after_max_deliveries_goes_to_the_dead_letters() {
    let log = EventLog::in_memory(quick()).await.unwrap();
    log.append("orders", &[event("e1", "a")]).await.unwrap();
    let first = log.fetch("orders", "g", 10, Duration::ZERO).await.unwrap();
    assert_eq!(first[0].attempt, 1);
    // Not acked in time: handed out again, counted.
    let second = log.fetch("orders", "g", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!((second[0].offset, second[0].attempt), (0, 2));
    // A nack makes it due at once, with the reason kept.
    log.nack("orders", "g", 0, "handler: payments unreachable")
        .await
        .unwrap();
    let third = log.fetch("orders", "g", 10, Duration::ZERO).await.unwrap();
    assert_eq!(third[0].attempt, 3);
    log.nack("orders", "g", 0, "handler: payments unreachable")
        .await
        .unwrap();
    // Its last delivery failed: dead-lettered, not delivered again.
    assert!(log.fetch("orders", "g", 10, Duration::ZERO).await.unwrap().is_empty());
    let dead = log.read("orders.dead-letter", 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let reason = dead[0].event.deadletterreason.clone().unwrap();
    assert!(
        reason.contains("payments unreachable") && reason.contains("offset 0"),
        "{reason}"
    );
    // Replayed, it is a new event on the original topic.
    let (topic, appended) = log.replay("orders.dead-letter", 0).await.unwrap();
    assert_eq!(
        (topic.as_str(), appended.offset, appended.duplicate),
        ("orders", 1, false)
    );
    let again = log.fetch("orders", "g", 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        (again[0].offset, again[0].event.data.clone()),
        (1, json!({"order": "a"}))
    );
}

#[tokio::test]
async fn a_waiting_fetch_wakes_on_an_append() {
    let log = std::sync::Arc::new(EventLog::in_memory(quick()).await.unwrap());
    let waiter = tokio::spawn({
        let log = log.clone();
        async move { log.fetch("orders", "g", 10, Duration::from_secs(10)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    log.append("orders", &[event("e1", "a")]).await.unwrap();
    let got = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_log_survives_a_restart_with_offsets_groups_and_in_flight_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(dir.path(), quick()).await.unwrap();
        log.append("orders", &[event("e1", "a"), event("e2", "b")])
            .await
            .unwrap();
        let handed = log.fetch("orders", "g", 1, Duration::ZERO).await.unwrap();
        assert_eq!(handed[0].offset, 0);
    }
    let log = EventLog::open(dir.path(), quick()).await.unwrap();
    let dup = log
        .append("orders", &[event("e2", "b"), event("e3", "c")])
        .await
        .unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[1].offset, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = log.fetch("orders", "g", 10, Duration::ZERO).await.unwrap();
    assert_eq!(
        after.iter().map(|d| (d.offset, d.attempt)).collect::<Vec<_>>(),
        vec![(0, 2), (1, 1), (2, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_on_disk_are_synced_before_they_are_answered_and_concurrent_ones_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(SqliteLog::open(dir.path(), quick()).await.unwrap());
    let wal = log.wal.clone().expect("a log on disk syncs its write-ahead log");
    let appends: Vec<_> = (0..32)
        .map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append("orders", &[event(&format!("e{n}"), "a")]).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    let syncs = wal.syncs();
    assert!(syncs >= 1, "every answered append was synced");
    assert!(syncs <= 32, "{syncs} syncs for 32 appends");
    // Nothing more to make durable: a fetch and an ack (progress) sync nothing.
    let handed = log.fetch("orders", "g", 100, Duration::ZERO).await.unwrap();
    assert_eq!(handed.len(), 32);
    log.ack("orders", "g", &handed.iter().map(|d| d.offset).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(wal.syncs(), syncs);
    let offsets: std::collections::BTreeSet<u64> = handed.iter().map(|d| d.offset).collect();
    assert_eq!(offsets, (0..32).collect(), "one offset each, none skipped");
}

#[tokio::test]
async fn retention_keeps_at_most_the_configured_count() {
    let log = EventLog::in_memory(LogConfig {
        max_events_per_topic: 2,
        ..quick()
    })
    .await
    .unwrap();
    log.append("orders", &[event("e1", "a"), event("e2", "b"), event("e3", "c")])
        .await
        .unwrap();
    assert_eq!(log.enforce_retention().await.unwrap(), 1);
    let left = log.read("orders", 0, 10).await.unwrap();
    assert_eq!(left.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![1, 2]);
}

/// The control plane's log in cluster mode is the SDK's JetStream backend: the same calls, the
/// same semantics (offsets are stream sequences there: increasing, not consecutive).
#[tokio::test]
async fn on_nats_the_log_hands_out_redelivers_dead_letters_and_replays() {
    let store = crate::store::testing::nats(1).await;
    let log = EventLog::on_nats(&store.cluster.urls(), quick()).await.unwrap();
    let first = log
        .append("orders", &[event("e1", "a"), event("e2", "b")])
        .await
        .unwrap();
    assert!(first[1].offset > first[0].offset);
    let again = log.append("orders", &[event("e1", "a")]).await.unwrap();
    assert_eq!((again[0].offset, again[0].duplicate), (first[0].offset, true));
    let handed = log.fetch("orders", "g", 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(handed.len(), 2);
    assert_eq!(log.ack("orders", "g", &[first[1].offset]).await.unwrap(), 1);
    // e1 is nacked on every delivery: after max_deliveries it is a dead letter, with why.
    let e1 = first[0].offset;
    log.nack("orders", "g", e1, "handler: payments unreachable")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for delivery in log.fetch("orders", "g", 10, Duration::from_millis(300)).await.unwrap() {
            log.nack("orders", "g", delivery.offset, "handler: payments unreachable")
                .await
                .unwrap();
        }
        if !log.read("orders.dead-letter", 0, 10).await.unwrap().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dead-lettered");
    }
    let dead = log.read("orders.dead-letter", 0, 10).await.unwrap();
    assert_eq!(dead[0].event.id, "e1");
    assert!(dead[0]
        .event
        .deadletterreason
        .as_deref()
        .is_some_and(|r| r.contains("payments unreachable")));
    let (topic, replayed) = log.replay("orders.dead-letter", dead[0].offset).await.unwrap();
    assert_eq!(topic, "orders");
    assert!(replayed.offset > first[1].offset && !replayed.duplicate);
    let topics = log.topics().await.unwrap();
    assert!(topics.iter().any(|t| t.topic == "orders"), "{topics:?}");
    assert!(matches!(
        log.append("Orders", &[event("x", "y")]).await,
        Err(LogError::Invalid { field: "topic", .. })
    ));
}
