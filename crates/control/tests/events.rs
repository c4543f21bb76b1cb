//! The SDK's outbox and inbox against a real event backend: an event exists exactly when its
//! transaction committed, survives a crash before publish, a redelivered event has no second
//! effect, a repeated id is stored once, a nacked event comes again, and one nacked on every
//! delivery ends in the dead letters with why, from where it can be replayed.
//!
//! The backend is the control plane's event log, started in-process over loopback; or NATS
//! JetStream when `FLOTILLA_TEST_NATS` names a server (`nats://127.0.0.1:4222`). On a shared
//! server every run uses its own topic names and deletes its streams at the end. The broker
//! outage test starts its own `nats-server` (skipped when there is none on `PATH`).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flotilla::events::{nats, prepare, CloudEvent, Consumer, EventsClient, NatsConfig, Outbox, Relay};
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

/// The backend under test, and the topic names of this run.
struct Backend {
    client: EventsClient,
    suffix: String,
    /// The NATS server, when the backend is JetStream.
    nats: Option<String>,
    /// Streams this run created on it, deleted on drop (even when a test fails).
    streams: Mutex<Vec<String>>,
}

impl Backend {
    async fn start() -> Self {
        let suffix = format!("{:08x}", rand::random::<u32>());
        let nats = std::env::var("FLOTILLA_TEST_NATS").ok().filter(|v| !v.is_empty());
        let client = match &nats {
            Some(url) => EventsClient::connect(url, None).await.unwrap(),
            None => EventsClient::connect(&control().await.to_string(), Some(TOKEN.into()))
                .await
                .unwrap(),
        };
        assert_eq!(client.is_nats(), nats.is_some());
        Self {
            client,
            suffix,
            nats,
            streams: Mutex::new(Vec::new()),
        }
    }

    /// `name` made unique to this run.
    fn topic(&self, name: &str) -> String {
        let topic = format!("{name}-{}", self.suffix);
        let stream = nats::stream_name(&topic);
        let mut streams = self.streams.lock().unwrap();
        if !streams.contains(&stream) {
            streams.push(stream);
        }
        topic
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let Some(url) = self.nats.clone() else { return };
        let streams = std::mem::take(&mut *self.streams.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop cannot await: a thread of its own with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(client) = async_nats::connect(url.as_str()).await else {
                    return;
                };
                let js = async_nats::jetstream::new(client);
                for stream in streams {
                    let _ = js.delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
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

fn ids(deliveries: &[flotilla::events::Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.event.id.as_str()).collect()
}

#[tokio::test]
async fn the_outbox_publishes_committed_events_only_in_order_and_after_a_crash() {
    let backend = Backend::start().await;
    let client = &backend.client;
    let orders = backend.topic("orders");
    let (store, db) = service_db().await;
    let outbox = Outbox::new();

    // Rolled back: no event.
    let mut tx = store.pool().begin().await.unwrap();
    outbox.add(&mut tx, &orders, &placed("e0", "0")).await.unwrap();
    tx.rollback().await.unwrap();
    // Committed, but the process "crashes" before any relay runs.
    for (id, order) in [("e1", "1"), ("e2", "2"), ("e3", "3")] {
        let mut tx = store.pool().begin().await.unwrap();
        outbox.add(&mut tx, &orders, &placed(id, order)).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The restarted process's relay publishes them, in order.
    let relay = Relay::new(store.clone(), client.clone(), Outbox::new());
    assert_eq!(relay.drain().await.unwrap(), 3);
    assert_eq!(relay.drain().await.unwrap(), 0, "published rows are gone");
    let got = client.fetch(&orders, "audit", 10, Duration::ZERO).await.unwrap();
    assert_eq!(ids(&got), vec!["e1", "e2", "e3"]);

    // A crash after publish and before delete publishes again: the backend keeps one.
    let again = client.append(&orders, &[placed("e2", "2")]).await.unwrap();
    assert!(again[0].duplicate);
    drop(store);
    db.remove().await;
}

#[tokio::test]
async fn a_redelivered_event_has_no_second_effect_and_a_failed_one_is_handled_later() {
    let backend = Backend::start().await;
    let client = &backend.client;
    let orders = backend.topic("orders");
    let (store, db) = service_db().await;
    sqlx::query("CREATE TABLE shipped (order_id TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    client.append(&orders, &[placed("e1", "1")]).await.unwrap();
    let consumer = Consumer::new(store.clone(), client.clone(), orders.clone(), "shipping");
    let deliveries = client.fetch(&orders, "shipping", 10, Duration::ZERO).await.unwrap();
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
    client.append(&orders, &[placed("e2", "2")]).await.unwrap();
    let fail = |_: flotilla::events::Delivery, tx: sqlx::Transaction<'static, sqlx::Any>| async move {
        drop(tx);
        Err::<sqlx::Transaction<'static, sqlx::Any>, String>("payments unreachable".into())
    };
    // A broker may take a moment to offer what was just appended (JetStream under load).
    let mut e2 = None;
    for _ in 0..50 {
        let fetched = client
            .fetch(&orders, "shipping", 10, Duration::from_millis(100))
            .await
            .unwrap();
        e2 = fetched.into_iter().find(|d| d.event.id == "e2");
        if e2.is_some() {
            break;
        }
    }
    let e2 = &e2.expect("e2 offered within 5 s");
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

#[tokio::test]
async fn an_id_appended_twice_to_a_topic_is_stored_once() {
    let backend = Backend::start().await;
    let client = &backend.client;
    let orders = backend.topic("orders");
    let first = client
        .append(&orders, &[placed("e1", "1"), placed("e2", "1")])
        .await
        .unwrap();
    assert!(first.iter().all(|a| !a.duplicate));
    assert!(first[0].offset < first[1].offset);
    let again = client
        .append(&orders, &[placed("e2", "1"), placed("e3", "2")])
        .await
        .unwrap();
    assert_eq!(
        (again[0].offset, again[0].duplicate),
        (first[1].offset, true),
        "the repeat answers the first offset"
    );
    assert!(!again[1].duplicate);
    assert!(again[1].offset > first[1].offset);
    let all = client.read(&orders, 0, 10).await.unwrap();
    assert_eq!(ids(&all), vec!["e1", "e2", "e3"]);

    // Ids are unique per topic: another topic (even one sharing a stream) takes the same id.
    let eu = format!("{orders}.eu");
    let other = client.append(&eu, &[placed("e1", "9")]).await.unwrap();
    assert!(!other[0].duplicate);
    assert_eq!(ids(&client.read(&eu, 0, 10).await.unwrap()), vec!["e1"]);
    assert_eq!(client.read(&orders, 0, 10).await.unwrap().len(), 3);

    // Topics are checked before anything is sent.
    assert!(client.append("Orders", &[placed("x", "y")]).await.is_err());
}

#[tokio::test]
async fn a_nacked_event_comes_again_with_the_next_attempt() {
    let backend = Backend::start().await;
    let client = &backend.client;
    let orders = backend.topic("orders");
    client.append(&orders, &[placed("e1", "1")]).await.unwrap();
    let first = client
        .fetch(&orders, "shipping", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((ids(&first), first[0].attempt), (vec!["e1"], 1));
    client
        .nack(&orders, "shipping", first[0].offset, "payments unreachable")
        .await
        .unwrap();
    let second = client
        .fetch(&orders, "shipping", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ids(&second), vec!["e1"]);
    assert_eq!((second[0].offset, second[0].attempt), (first[0].offset, 2));
    client.ack(&orders, "shipping", &[second[0].offset]).await.unwrap();
    assert!(client
        .fetch(&orders, "shipping", 10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    // Another group gets it from the start.
    let audit = client
        .fetch(&orders, "audit", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((ids(&audit), audit[0].attempt), (vec!["e1"], 1));

    let topics = client.topics().await.unwrap();
    let topic = topics.iter().find(|t| t.topic == orders).unwrap();
    assert_eq!(topic.events, 1);
    assert!(topic.next_offset > first[0].offset);
    let shipping = topic.groups.iter().find(|g| g.group == "shipping").unwrap();
    assert_eq!((shipping.in_flight, shipping.lag), (0, 0));
    assert_eq!(shipping.next_offset, first[0].offset + 1);
    let audit = topic.groups.iter().find(|g| g.group == "audit").unwrap();
    assert_eq!((audit.in_flight, audit.lag), (1, 0));

    // Nacking what is not in flight is an error.
    assert!(client.nack(&orders, "shipping", 999_999, "no").await.is_err());
}

#[tokio::test]
async fn an_event_failing_every_delivery_is_dead_lettered_with_why_and_can_be_replayed() {
    let backend = Backend::start().await;
    let client = &backend.client;
    let orders = backend.topic("orders");
    let dead_letters = format!("{orders}.dead-letter");
    client.append(&orders, &[placed("e1", "1")]).await.unwrap();
    // Both backends allow 5 deliveries by default.
    for attempt in 1..=5 {
        let got = client
            .fetch(&orders, "mailer", 1, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!((ids(&got), got[0].attempt), (vec!["e1"], attempt));
        client
            .nack(&orders, "mailer", got[0].offset, "smtp refused")
            .await
            .unwrap();
    }
    assert!(
        client
            .fetch(&orders, "mailer", 1, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "not handed out a sixth time"
    );
    let dead = client.read(&dead_letters, 0, 10).await.unwrap();
    assert_eq!(ids(&dead), vec!["e1"]);
    let reason = dead[0].event.deadletterreason.as_deref().unwrap();
    assert!(reason.contains("smtp refused"), "{reason}");
    assert!(reason.contains("group mailer"), "{reason}");
    assert_eq!(dead[0].event.data, placed("e1", "1").data);

    // Replayed: back on the topic as a new event, without the reason.
    let replayed = client.replay(&dead_letters, dead[0].offset).await.unwrap();
    assert_eq!(replayed["topic"], orders.as_str());
    let id = replayed["id"].as_str().unwrap();
    assert!(id.starts_with("e1~replay-"), "{id}");
    let again = client
        .fetch(&orders, "mailer", 10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((ids(&again), again[0].attempt), (vec![id], 1));
    assert_eq!(again[0].offset, replayed["offset"].as_u64().unwrap());
    assert!(again[0].event.deadletterreason.is_none());
    // Replayed twice at once (an operator's double click, two control planes): two new events,
    // neither swallowed by the append's idempotence as the same id in the same millisecond was.
    let (one, two) = tokio::join!(
        client.replay(&dead_letters, dead[0].offset),
        client.replay(&dead_letters, dead[0].offset)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_ne!(one["id"], two["id"]);
    assert_ne!(one["offset"], two["offset"]);
    assert!(client.replay(&orders, 0).await.is_err(), "only dead letters replay");
}

/// A private `nats-server` with JetStream, on a port and store dir of its own.
struct Broker {
    program: PathBuf,
    port: u16,
    store: PathBuf,
    process: Option<tokio::process::Child>,
}

impl Broker {
    async fn start(program: &Path, store: &Path) -> Self {
        let port = loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if ![4222, 7070, 8080].contains(&port) {
                break port;
            }
        };
        let mut broker = Self {
            program: program.to_path_buf(),
            port,
            store: store.to_path_buf(),
            process: None,
        };
        broker.run().await;
        broker
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store) and waits until it listens.
    async fn run(&mut self) {
        let process = tokio::process::Command::new(&self.program)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, not a shutdown.
    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.unwrap();
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_exactly_once_across_a_broker_outage() {
    let Some(program) = on_path("nats-server") else {
        eprintln!("note: no nats-server on PATH; skipping the broker outage test");
        return;
    };
    let started = Instant::now();
    let store_dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&program, store_dir.path()).await;
    let config = NatsConfig {
        // Events handed to a pull request the crash cut off come again soon.
        ack_wait: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        ..NatsConfig::default()
    };
    let client = EventsClient::nats(&broker.url(), None, config).await.unwrap();
    let (store, db) = service_db().await;
    sqlx::query("CREATE TABLE handled (event_id TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let topic = format!("outage-{:08x}", rand::random::<u32>());
    let outbox = Outbox::new();
    let relay = tokio::spawn(Relay::new(store.clone(), client.clone(), outbox.clone()).run());
    let consumer = tokio::spawn(
        Consumer::new(store.clone(), client.clone(), topic.clone(), "audit").run(
            |delivery: flotilla::events::Delivery, mut tx: sqlx::Transaction<'static, sqlx::Any>| async move {
                sqlx::query("INSERT INTO handled (event_id) VALUES ($1)")
                    .bind(&delivery.event.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(tx)
            },
        ),
    );

    const EVENTS: i64 = 300;
    let produce = async {
        for i in 0..EVENTS {
            let mut tx = store.pool().begin().await.unwrap();
            outbox
                .add(&mut tx, &topic, &placed(&format!("o-{i}"), &i.to_string()))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            outbox.committed();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        broker.kill().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.run().await;
    };
    tokio::join!(produce, outage);

    let count = |sql: &'static str| {
        let pool = store.pool().clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count("SELECT COUNT(DISTINCT event_id) FROM handled").await < EVENTS {
        assert!(
            Instant::now() < deadline,
            "only {} of {EVENTS} events arrived",
            count("SELECT COUNT(DISTINCT event_id) FROM handled").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for any redelivery still due to come and be absorbed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(count("SELECT COUNT(*) FROM handled").await, EVENTS, "no double effect");
    assert_eq!(
        count("SELECT COUNT(*) FROM flotilla_outbox").await,
        0,
        "the outbox drained"
    );
    // And the stream holds each event once: the relay's retries were de-duplicated.
    let stored = client.read(&topic, 0, 1000).await.unwrap();
    let unique: std::collections::HashSet<&str> = ids(&stored).into_iter().collect();
    assert_eq!((stored.len(), unique.len()), (EVENTS as usize, EVENTS as usize));

    relay.abort();
    consumer.abort();
    broker.kill().await;
    drop(store);
    db.remove().await;
    eprintln!("broker outage test took {:.1}s", started.elapsed().as_secs_f64());
}
