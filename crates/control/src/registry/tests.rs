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
    r.register(reg("catalog", "a")).await.unwrap();
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
    r.register(reg("catalog", "a")).await.unwrap();
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(1)).await;
        r.heartbeat("a").await.unwrap();
        assert!(r.expire(Instant::now()).is_empty());
    }
    assert_eq!(r.list(None).instances[0].health, Health::Passing);
    tokio::time::advance(Duration::from_millis(1_600)).await;
    assert_eq!(r.list(None).instances[0].health, Health::Late);
    tokio::time::advance(Duration::from_millis(1_400)).await;
    assert_eq!(r.expire(Instant::now()).len(), 1);
    assert_eq!(r.heartbeat("a").await, Err(RegistryError::UnknownInstance("a".into())));
}

#[tokio::test(start_paused = true)]
async fn expiry_task_removes_at_the_deadline_and_bumps_the_revision() {
    let r = Arc::new(registry());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.run_expiry(async { stop_rx.await.unwrap_or(()) }).await }
    });
    r.register(reg("catalog", "a")).await.unwrap();
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
    r.register(reg("catalog", "a")).await.unwrap();
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
    r.register(reg("catalog", "a")).await.unwrap();
    let started = Instant::now();
    r.list_after(None, 0, Duration::from_secs(5)).await;
    r.list_after(None, 1_000, Duration::from_secs(5)).await;
    assert_eq!(Instant::now(), started);
}

#[tokio::test]
async fn heartbeat_does_not_wake_watchers_but_changes_do() {
    let r = registry();
    r.register(reg("catalog", "a")).await.unwrap();
    let index = r.revision();
    r.heartbeat("a").await.unwrap();
    assert_eq!(r.revision(), index, "heartbeats are not changes");
    assert!(matches!(
        r.register(reg("catalog", "a")).await.unwrap(),
        Registered::Renewed(_)
    ));
    assert_eq!(r.revision(), index, "an identical re-registration is not a change");
    let mut moved = reg("catalog", "a");
    moved.address = "127.0.0.1:4001".into();
    r.register(moved).await.unwrap();
    assert_eq!(r.revision(), index + 1);
    r.deregister("a").await.unwrap();
    assert_eq!(r.revision(), index + 2);
    assert!(r.deregister("a").await.is_err());
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

/// The same behaviour on both stores, on the real clock: leases in memory and in a NATS
/// bucket of the test's own.
mod on_both_stores {
    use std::sync::Arc;
    use std::time::Duration;

    use super::reg;
    use crate::registry::{Preservation, Registered, Registry, RegistryConfig, RegistryError};
    use crate::store::testing::{self, TestStore};

    const CONFIG: RegistryConfig = RegistryConfig {
        heartbeat: Duration::from_millis(250),
        ttl: Duration::from_secs(1),
    };

    /// A registry with its view kept true by its own task, stopped when dropped.
    struct Fixture {
        registry: Arc<Registry>,
        _stop: tokio::sync::oneshot::Sender<()>,
        store: Option<TestStore>,
    }

    fn follow(registry: Registry) -> (Arc<Registry>, tokio::sync::oneshot::Sender<()>) {
        let registry = Arc::new(registry);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn({
            let registry = registry.clone();
            async move {
                registry
                    .run_expiry(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        (registry, stop)
    }

    impl Fixture {
        async fn embedded() -> Self {
            let (registry, stop) = follow(Registry::new(CONFIG));
            Self {
                registry,
                _stop: stop,
                store: None,
            }
        }

        async fn nats() -> Self {
            let store = testing::nats(1).await;
            let registry = Registry::on_nats(CONFIG, &store.nats, Preservation::default())
                .await
                .unwrap();
            let (registry, stop) = follow(registry);
            assert!(registry.wait_synced(Duration::from_secs(10)).await);
            Self {
                registry,
                _stop: stop,
                store: Some(store),
            }
        }

        /// Another replica over the same store.
        async fn replica(&self) -> (Arc<Registry>, tokio::sync::oneshot::Sender<()>) {
            let store = self.store.as_ref().expect("a NATS store");
            let registry = Registry::on_nats(CONFIG, &store.replica().await, Preservation::default())
                .await
                .unwrap();
            let (registry, stop) = follow(registry);
            assert!(registry.wait_synced(Duration::from_secs(10)).await);
            (registry, stop)
        }
    }

    /// Heartbeats `id` on time until aborted.
    fn keep_alive(r: Arc<Registry>, id: &'static str) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CONFIG.heartbeat).await;
                r.heartbeat(id).await.unwrap();
            }
        })
    }

    macro_rules! suite {
        ($($name:ident),* $(,)?) => {
            mod embedded {
                $( #[tokio::test] async fn $name() { super::$name(super::Fixture::embedded().await).await } )*
            }
            mod on_nats {
                $( #[tokio::test] async fn $name() { super::$name(super::Fixture::nats().await).await } )*
            }
        };
    }

    suite!(
        only_changes_move_the_index,
        a_blocking_query_wakes_on_a_change_and_times_out_without_one,
        a_lease_without_heartbeats_expires_and_wakes_watchers,
        heartbeats_keep_a_lease_past_its_ttl,
        services_are_counted_and_a_bad_registration_names_its_field,
    );

    async fn only_changes_move_the_index(f: Fixture) {
        let r = &f.registry;
        assert!(matches!(
            r.register(reg("catalog", "a")).await.unwrap(),
            Registered::Created(_)
        ));
        let index = r.revision();
        assert_eq!(r.list(None).instances.len(), 1);
        assert!(matches!(
            r.register(reg("catalog", "a")).await.unwrap(),
            Registered::Renewed(_)
        ));
        r.heartbeat("a").await.unwrap();
        assert_eq!(r.revision(), index, "renewals are not changes");
        let mut moved = reg("catalog", "a");
        moved.address = "127.0.0.1:4001".into();
        r.register(moved).await.unwrap();
        let after_move = r.revision();
        assert!(after_move > index);
        assert_eq!(r.list(None).instances[0].address, "127.0.0.1:4001");
        r.deregister("a").await.unwrap();
        assert!(r.revision() > after_move);
        assert!(r.list(None).instances.is_empty());
        assert_eq!(r.heartbeat("a").await, Err(RegistryError::UnknownInstance("a".into())));
        assert_eq!(
            r.deregister("a").await.err(),
            Some(RegistryError::UnknownInstance("a".into()))
        );
    }

    async fn a_blocking_query_wakes_on_a_change_and_times_out_without_one(f: Fixture) {
        let r = f.registry.clone();
        let index = r.revision();
        let quiet = r.list_after(None, index, Duration::from_millis(200)).await;
        assert_eq!(quiet.index, index, "no change: the same index after the wait");
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.list_after(Some("catalog"), index, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        r.register(reg("catalog", "a")).await.unwrap();
        let list = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(list.instances.len(), 1);
        assert!(list.index > index);
    }

    async fn a_lease_without_heartbeats_expires_and_wakes_watchers(f: Fixture) {
        let r = f.registry.clone();
        r.register(reg("catalog", "kept")).await.unwrap();
        r.register(reg("catalog", "dropped")).await.unwrap();
        let registered = tokio::time::Instant::now();
        let index = r.revision();
        let keeper = keep_alive(r.clone(), "kept");
        let mut list = r.list_after(None, index, Duration::from_secs(10)).await;
        while list.instances.len() == 2 && registered.elapsed() < Duration::from_secs(10) {
            list = r.list_after(None, list.index, Duration::from_secs(10)).await;
        }
        keeper.abort();
        let ids: Vec<&str> = list.instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(ids, ["kept"]);
        assert!(registered.elapsed() >= CONFIG.ttl, "not before its ttl");
        assert!(list.index > index);
        assert_eq!(
            r.heartbeat("dropped").await,
            Err(RegistryError::UnknownInstance("dropped".into()))
        );
    }

    async fn heartbeats_keep_a_lease_past_its_ttl(f: Fixture) {
        let r = &f.registry;
        r.register(reg("catalog", "a")).await.unwrap();
        for _ in 0..10 {
            tokio::time::sleep(CONFIG.heartbeat).await;
            r.heartbeat("a").await.unwrap();
        }
        assert_eq!(r.list(None).instances.len(), 1);
        assert_eq!(r.list(None).instances[0].health, flotilla_api::Health::Passing);
    }

    async fn services_are_counted_and_a_bad_registration_names_its_field(f: Fixture) {
        let r = &f.registry;
        r.register(reg("catalog", "c1")).await.unwrap();
        r.register(reg("catalog", "c2")).await.unwrap();
        r.register(reg("orders", "o1")).await.unwrap();
        let services = r.services();
        assert_eq!(services.len(), 2);
        assert_eq!((services[0].name.as_str(), services[0].instances), ("catalog", 2));
        assert_eq!(r.list(Some("orders")).instances.len(), 1);
        let mut bad = reg("catalog", "x");
        bad.address = "nowhere".into();
        assert!(matches!(
            r.register(bad).await,
            Err(RegistryError::Invalid { field: "address", .. })
        ));
    }

    #[tokio::test]
    async fn replicas_share_one_view_at_one_index_and_a_watcher_that_moves_keeps_its_place() {
        let f = Fixture::nats().await;
        let (other, _stop) = f.replica().await;
        f.registry.register(reg("catalog", "a")).await.unwrap();
        let index = f.registry.revision();
        let seen = other.list_after(None, index - 1, Duration::from_secs(5)).await;
        assert_eq!(seen.index, index, "the store's sequence, the same on both");
        assert_eq!(seen.instances.len(), 1);
        // A watcher that held `index` on the first replica asks the other: it waits there for
        // the next change, which is written through the first.
        let waiter = tokio::spawn({
            let other = other.clone();
            async move { other.list_after(None, index, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "nothing changed yet");
        f.registry.register(reg("orders", "b")).await.unwrap();
        let list = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(list.instances.len(), 2);
        // A heartbeat through the other replica renews the lease the first one wrote.
        other.heartbeat("a").await.unwrap();
        f.registry.heartbeat("a").await.unwrap();
    }

    #[tokio::test]
    async fn a_mass_expiry_is_held_a_further_ttl_and_an_instance_that_comes_back_is_whole() {
        let f = Fixture::nats().await;
        let r = f.registry.clone();
        for id in ["k", "d1", "d2", "d3"] {
            r.register(reg("catalog", id)).await.unwrap();
        }
        let keeper = keep_alive(r.clone(), "k");
        // Three of four stop heartbeating at once: after the first goes, the rest are held.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while r.held() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no lease was held");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listed = r.list(None).instances.len();
        assert!(listed >= 3, "held leases stay listed: {listed}");
        // One of them comes back by registering again: it is whole, not held.
        let held: Vec<String> = r
            .list(None)
            .instances
            .iter()
            .filter(|i| i.instance_id != "k" && i.health == flotilla_api::Health::Late)
            .map(|i| i.instance_id.clone())
            .collect();
        let back = held.first().cloned().expect("a held instance");
        r.register(reg("catalog", &back)).await.unwrap();
        // The others are released through the store after their extra TTL.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            r.heartbeat(&back).await.unwrap();
            let mut ids: Vec<String> = r.list(None).instances.into_iter().map(|i| i.instance_id).collect();
            ids.sort();
            let mut want = vec!["k".to_owned(), back.clone()];
            want.sort();
            if ids == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "held leases were not released: {ids:?}"
            );
            tokio::time::sleep(CONFIG.heartbeat).await;
        }
        assert_eq!(r.held(), 0);
        keeper.abort();
    }
}
