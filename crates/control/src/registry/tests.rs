use std::sync::Arc;

use super::*;

fn reg(service: &str, id: &str) -> Registration {
    Registration {
        service: service.into(),
        instance_id: id.into(),
        address: "127.0.0.1:4000".into(),
        version: "1.0.0".into(),
        metadata: Default::default(),
    }
}

fn registry() -> Registry {
    Registry::new(RegistryConfig::default())
}

#[tokio::test(start_paused = true)]
async fn lease_expires_without_heartbeats() {
    let r = registry();
    r.register(reg("catalog", "a")).unwrap();
    tokio::time::advance(Duration::from_millis(2_999)).await;
    assert!(r.expire(Instant::now()).is_empty(), "still inside the ttl");
    tokio::time::advance(Duration::from_millis(1)).await;
    let gone = r.expire(Instant::now());
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].instance_id, "a");
    assert!(r.list(None).instances.is_empty());
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_the_lease_and_health_turns_late_when_they_stop() {
    let r = registry();
    r.register(reg("catalog", "a")).unwrap();
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        r.heartbeat("a").unwrap();
        assert!(r.expire(Instant::now()).is_empty());
    }
    assert_eq!(r.list(None).instances[0].health, Health::Passing);
    tokio::time::advance(Duration::from_millis(1_600)).await;
    assert_eq!(r.list(None).instances[0].health, Health::Late);
    tokio::time::advance(Duration::from_millis(1_400)).await;
    assert_eq!(r.expire(Instant::now()).len(), 1);
    assert_eq!(r.heartbeat("a"), Err(RegistryError::UnknownInstance("a".into())));
}

#[tokio::test(start_paused = true)]
async fn expiry_task_removes_at_the_deadline_and_bumps_the_revision() {
    let r = Arc::new(registry());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.run_expiry(async { stop_rx.await.unwrap_or(()) }).await }
    });
    r.register(reg("catalog", "a")).unwrap();
    let before = r.revision();
    let started = Instant::now();
    let list = r.list_after(None, before, Duration::from_secs(60)).await;
    assert!(list.instances.is_empty());
    assert_eq!(list.index, before + 1);
    assert_eq!(
        Instant::now() - started,
        Duration::from_secs(3),
        "removed exactly at the ttl"
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn blocking_query_wakes_on_change() {
    let r = Arc::new(registry());
    let index = r.revision();
    let started = Instant::now();
    let waiter = tokio::spawn({
        let r = r.clone();
        async move {
            let list = r.list_after(Some("catalog"), index, Duration::from_secs(30)).await;
            (list, Instant::now() - started)
        }
    });
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    r.register(reg("catalog", "a")).unwrap();
    let (list, waited) = waiter.await.unwrap();
    assert_eq!(list.instances.len(), 1);
    assert!(list.index > index);
    assert_eq!(
        waited,
        Duration::from_millis(250),
        "woke on the change, not the timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn blocking_query_times_out_with_the_same_index() {
    let r = registry();
    let index = r.revision();
    let started = Instant::now();
    let list = r.list_after(None, index, Duration::from_secs(5)).await;
    assert_eq!(list.index, index);
    assert_eq!(Instant::now() - started, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn stale_or_future_index_answers_at_once() {
    let r = registry();
    r.register(reg("catalog", "a")).unwrap();
    let started = Instant::now();
    r.list_after(None, 0, Duration::from_secs(5)).await;
    r.list_after(None, 1_000, Duration::from_secs(5)).await;
    assert_eq!(Instant::now(), started);
}

#[tokio::test]
async fn heartbeat_does_not_wake_watchers_but_changes_do() {
    let r = registry();
    r.register(reg("catalog", "a")).unwrap();
    let index = r.revision();
    r.heartbeat("a").unwrap();
    assert_eq!(r.revision(), index, "heartbeats are not changes");
    assert!(matches!(
        r.register(reg("catalog", "a")).unwrap(),
        Registered::Renewed(_)
    ));
    assert_eq!(r.revision(), index, "an identical re-registration is not a change");
    let mut moved = reg("catalog", "a");
    moved.address = "127.0.0.1:4001".into();
    r.register(moved).unwrap();
    assert_eq!(r.revision(), index + 1);
    r.deregister("a").unwrap();
    assert_eq!(r.revision(), index + 2);
    assert!(r.deregister("a").is_err());
}

#[test]
fn services_are_counted_and_lists_filtered() {
    let r = registry();
    r.register(reg("catalog", "c1")).unwrap();
    r.register(reg("catalog", "c2")).unwrap();
    r.register(reg("orders", "o1")).unwrap();
    let services = r.services();
    assert_eq!(services.len(), 2);
    assert_eq!((services[0].name.as_str(), services[0].instances), ("catalog", 2));
    assert_eq!(r.list(Some("orders")).instances.len(), 1);
}

#[test]
fn invalid_registration_names_the_field() {
    let r = registry();
    let mut bad = reg("catalog", "a");
    bad.address = "nowhere".into();
    match r.register(bad) {
        Err(RegistryError::Invalid { field, .. }) => assert_eq!(field, "address"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn config_needs_room_for_a_missed_heartbeat() {
    let c = RegistryConfig {
        heartbeat: Duration::from_secs(1),
        ttl: Duration::from_millis(1500),
    };
    assert!(c.validate().is_err());
    assert!(RegistryConfig::default().validate().is_ok());
}
