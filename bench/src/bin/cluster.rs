//! `bench/cluster`: cluster mode's figures, in one run.
//!
//! 1. Lease expiry to watcher notification, the registry in memory and on a 3-node NATS
//!    JetStream cluster (R3), TTL 3 s: probes renewed once and then left to expire, one every
//!    400 ms beside 100 instances that keep heartbeating (so no expiry is a mass one); for
//!    each, the time from its last renewal to a blocking-query watcher hearing it is gone.
//! 2. Faults under 200 requests a second through the gateway of `flotilla up --cluster`: a
//!    control-plane replica killed, a NATS node killed, two NATS nodes stopped for 20 s. For
//!    each, the requests that failed, and how long until a watcher of every replica (the SDK's
//!    `Discovery`, as a gateway holds) saw a change written right after the fault: the time
//!    for watchers to be whole again.
//!
//! Config rollout through the cluster is `bench/config --cluster`.
//!
//! Usage: cluster [--probes N]   (run through `bench/cluster`, which builds it)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::api::Registration;
use flotilla::discovery::{Discovery, RegistryClient};
use flotilla_bench::load::Load;
use flotilla_bench::system::System;
use flotilla_control::registry::{Preservation, Registry};
use flotilla_control::store::server::{self, LocalCluster};
use flotilla_control::store::{Nats, NatsSpec};
use flotilla_control::RegistryConfig;

const LEASE: RegistryConfig = RegistryConfig {
    heartbeat: Duration::from_secs(1),
    ttl: Duration::from_secs(3),
};

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

fn registration(id: &str) -> Registration {
    Registration {
        service: "bench".into(),
        instance_id: id.into(),
        address: "127.0.0.1:9".into(),
        version: "1".into(),
        metadata: Default::default(),
    }
}

/// Milliseconds from each probe's last renewal to the watcher hearing it expired.
async fn expiry_to_notice(registry: Arc<Registry>, probes: usize) -> Vec<f64> {
    let keepers: Vec<String> = (0..100).map(|i| format!("keeper-{i}")).collect();
    for id in &keepers {
        registry
            .register(registration(id))
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
    }
    let keeping = tokio::spawn({
        let (registry, keepers) = (registry.clone(), keepers.clone());
        async move {
            loop {
                tokio::time::sleep(LEASE.heartbeat).await;
                for id in &keepers {
                    let _ = registry.heartbeat(id).await;
                }
            }
        }
    });
    // The watcher: every change, and the moment each probe left the list.
    let gone: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = tokio::spawn({
        let (registry, gone) = (registry.clone(), gone.clone());
        async move {
            let mut index = registry.revision();
            let mut listed: std::collections::HashSet<String> = Default::default();
            loop {
                let list = registry.list_after(None, index, Duration::from_secs(30)).await;
                index = list.index;
                let now: std::collections::HashSet<String> =
                    list.instances.into_iter().map(|i| i.instance_id).collect();
                let mut gone = gone.lock().unwrap_or_else(|e| e.into_inner());
                for id in listed.difference(&now) {
                    gone.entry(id.clone()).or_insert_with(Instant::now);
                }
                listed = now;
            }
        }
    });
    let mut renewed = HashMap::new();
    for n in 0..probes {
        let id = format!("probe-{n}");
        registry
            .register(registration(&id))
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        registry
            .heartbeat(&id)
            .await
            .unwrap_or_else(|e| panic!("heartbeat: {e}"));
        renewed.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(LEASE.ttl * 3).await;
    keeping.abort();
    watching.abort();
    let gone = gone.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut delays: Vec<f64> = renewed
        .iter()
        .filter_map(|(id, at)| gone.get(id).map(|seen| seen.duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    assert_eq!(delays.len(), probes, "every probe expired and was noticed");
    delays.sort_by(|a, b| a.total_cmp(b));
    delays
}

/// A watcher of every replica, the probe written right after a fault, and the time until it
/// saw the probe (and until the write was taken).
async fn whole_again(replicas: &str, token: &str, discovery: &Discovery, probe: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let client = RegistryClient::new(replicas, Some(token.to_owned()));
    let mut registration = registration(probe);
    registration.service = "probe".into();
    loop {
        if client.register(&registration).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = started.elapsed();
    loop {
        let seen = discovery
            .snapshot()
            .services
            .get("probe")
            .is_some_and(|list| list.iter().any(|i| i.instance_id == probe));
        if seen {
            let _ = client.deregister(probe).await;
            return (taken, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the watcher never saw {probe}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn cli(system: &System, args: &[&str]) {
    let out = std::process::Command::new(flotilla_bench::procs::flotilla_beside_me("bench/cluster"))
        .current_dir(system.dir.path())
        .args(args)
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .unwrap_or_else(|e| panic!("flotilla {args:?}: {e}"));
    assert!(
        out.status.success(),
        "flotilla {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let mut probes = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--probes", Some(n)) => probes = n,
            _ => {
                eprintln!("usage: cluster [--probes N]");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let nats_server = server::find_or_install().unwrap_or_else(|e| panic!("{e}"));

    // 1. Lease expiry to notification.
    eprintln!("… lease expiry, {probes} probes in memory and on a 3-node NATS cluster");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (memory, nats) = runtime.block_on(async {
        let memory = Arc::new(Registry::new(LEASE));
        let expiring = tokio::spawn({
            let memory = memory.clone();
            async move { memory.run_expiry(std::future::pending::<()>()).await }
        });
        let in_memory = expiry_to_notice(memory, probes).await;
        expiring.abort();

        let mut cluster = LocalCluster::start(&nats_server, dir.path(), 3).unwrap_or_else(|e| panic!("{e}"));
        cluster
            .wait_ready(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = Nats::connect(&NatsSpec {
            servers: cluster.urls(),
            replicas: 3,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let registry = Arc::new(
            Registry::on_nats(LEASE, &store, Preservation::default())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let following = tokio::spawn({
            let registry = registry.clone();
            async move { registry.run_expiry(std::future::pending::<()>()).await }
        });
        registry.wait_synced(Duration::from_secs(10)).await;
        let on_nats = expiry_to_notice(registry, probes).await;
        following.abort();
        drop(cluster);
        (in_memory, on_nats)
    });

    // 2. Faults under load through a cluster.
    eprintln!("… flotilla up --cluster, 200 requests a second through the gateway");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let prefix = format!("bench{}", std::process::id());
    let mut system = System::start_with_env(
        &flotilla_bench::procs::flotilla_beside_me("bench/cluster"),
        &repo,
        &["--cluster", "--database-prefix", &prefix],
        &[("FLOTILLA_NATS_SERVER", nats_server.to_str().unwrap_or("nats-server"))],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let token = std::fs::read_to_string(system.data_dir().join("token"))
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let running: serde_json::Value = serde_json::from_slice(
        &std::fs::read(system.data_dir().join("up.json")).unwrap_or_else(|e| panic!("up.json: {e}")),
    )
    .unwrap_or_default();
    let replicas = running["control"].as_str().unwrap_or_default().to_owned();
    let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
    let discovery = runtime.block_on(async {
        let discovery = Discovery::spawn(RegistryClient::new(&replicas, Some(token.clone())), async move {
            let _ = watch_stopped.await;
        });
        discovery.ready().await;
        discovery
    });
    let faults: [(&str, &[&[&str]], Duration); 3] = [
        (
            "kill -9 a control-plane replica",
            &[&["chaos", "kill", "control-1"]],
            Duration::from_secs(6),
        ),
        (
            "kill -9 a NATS node",
            &[&["chaos", "kill", "nats-1"]],
            Duration::from_secs(8),
        ),
        (
            "stop 2 of 3 NATS nodes for 20 s",
            &[
                &["chaos", "pause", "nats-2", "--for", "20s"],
                &["chaos", "pause", "nats-3", "--for", "20s"],
            ],
            Duration::from_secs(26),
        ),
    ];
    let mut rows = Vec::new();
    for (n, (label, commands, span)) in faults.iter().enumerate() {
        eprintln!("… {label}");
        let load = Load::start(system.gateway, 200, vec![(http::Method::GET, "/api/v1/products/1")]);
        std::thread::sleep(Duration::from_secs(2));
        for command in commands.iter() {
            cli(&system, command);
        }
        let (taken, whole) = runtime.block_on(whole_again(&replicas, &token, &discovery, &format!("probe-{n}")));
        let rest = span.saturating_sub(whole);
        std::thread::sleep(rest);
        let report = load.stop();
        rows.push((*label, report.samples.len(), report.failures().len(), taken, whole));
        // Let the system settle (a killed process is restarted) before the next fault.
        std::thread::sleep(Duration::from_secs(5));
    }
    let _ = stop_watch.send(());
    system.interrupt(Duration::from_secs(60));
    flotilla_bench::system::drop_cluster_databases(&prefix);

    let ms = |v: &[f64], q: f64| format!("{:.0} ms", quantile(v, q));
    println!(
        "\nlease expiry to watcher notification (TTL {} s, heartbeat {} s; {probes} probes beside 100 live instances)\n",
        LEASE.ttl.as_secs(),
        LEASE.heartbeat.as_secs()
    );
    println!("| registry | p50 | p99 | max | beyond the TTL (p99) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [
        ("in memory (embedded)", &memory),
        ("NATS JetStream, 3 nodes, R3", &nats),
    ] {
        println!(
            "| {name} | {} | {} | {} | {:.0} ms |",
            ms(v, 0.5),
            ms(v, 0.99),
            ms(v, 1.0),
            quantile(v, 0.99) - LEASE.ttl.as_secs_f64() * 1000.0
        );
    }
    println!("\nfaults under 200 requests a second through the gateway of `flotilla up --cluster`\n");
    println!("| fault | requests | failed | a write taken after | watchers whole again after |");
    println!("|---|---:|---:|---:|---:|");
    for (label, requests, failed, taken, whole) in rows {
        println!(
            "| {label} | {requests} | {failed} | {:.0} ms | {:.0} ms |",
            taken.as_secs_f64() * 1000.0,
            whole.as_secs_f64() * 1000.0
        );
    }
}
