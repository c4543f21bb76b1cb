//! `bench/config`: how fast a configuration change reaches a fleet. `flotilla up` with N
//! catalog instances (20 by default), then C changes (100) to the catalog's `page_size`, one
//! after another; for each, the time from just before the write to the moment the last
//! instance applied it (each instance stamps its report when it swapped the new configuration
//! in; the processes share this machine's clock), and the time until the bench saw every
//! report through a blocking query (an upper bound that includes the reports' own trip).
//!
//! With `--cluster`, the same through `flotilla up --cluster`: three control-plane replicas on
//! a 3-node NATS JetStream cluster, each instance watching the replica it was given first.
//!
//! Usage: config [--instances N] [--changes C] [--cluster]   (run through `bench/config`)

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla::api::config::{ApplyStatus, ConfigKey};
use flotilla::config::{ConfigClient, Write};
use flotilla_bench::system::System;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

fn main() {
    let mut instances = 20u32;
    let mut changes = 100u32;
    let mut cluster = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--cluster" {
            cluster = true;
            continue;
        }
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--instances", Some(v)) => instances = v,
            ("--changes", Some(v)) => changes = v,
            _ => {
                eprintln!("usage: config [--instances N] [--changes C] [--cluster]");
                std::process::exit(2);
            }
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/config");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scale = format!("catalog={instances}");
    eprintln!("… starting {instances} catalog instances");
    let prefix = format!("benchconfig{}", std::process::id());
    let mut system = if cluster {
        let nats = flotilla_control::store::server::find_or_install().unwrap_or_else(|e| panic!("{e}"));
        System::start_with_env(
            &binary,
            &repo,
            &["--scale", &scale, "--cluster", "--database-prefix", &prefix],
            &[("FLOTILLA_NATS_SERVER", nats.to_str().unwrap_or("nats-server"))],
        )
    } else {
        System::start(&binary, &repo, &["--scale", &scale])
    };
    system.wait_for_line("Flotilla is up", Duration::from_secs(180));
    let token = std::fs::read_to_string(system.data_dir().join("token"))
        .map(|t| t.trim().to_owned())
        .ok();
    let running: serde_json::Value =
        serde_json::from_slice(&std::fs::read(system.data_dir().join("up.json")).unwrap_or_default())
            .unwrap_or_default();
    let control = running["control"]
        .as_str()
        .map_or_else(|| system.control.to_string(), str::to_owned);
    let client = ConfigClient::new(&control, token);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("config bench: runtime: {e}"));

    let (applied_ms, observed_ms) = runtime.block_on(async {
        // Every instance has reported the store's first answer.
        let started = Instant::now();
        loop {
            let (list, _) = client
                .applied(Some("catalog"), None, Duration::ZERO)
                .await
                .unwrap_or_default();
            if list.len() == instances as usize {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("config bench: only {} of {instances} instances reported", list.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("… {changes} changes");
        let key = ConfigKey::new("catalog", "default", "page_size");
        let (mut applied_ms, mut observed_ms) = (Vec::new(), Vec::new());
        for i in 0..changes {
            let value = serde_json::json!(10 + (i % 80));
            let (t0_ms, t0) = (now_ms(), Instant::now());
            let write = Write {
                comment: Some(format!("bench change {i}")),
                author: Some("bench/config".into()),
                ..Write::default()
            };
            let entry = client
                .set(&key, value, false, write)
                .await
                .unwrap_or_else(|e| panic!("config bench: set: {e}"));
            let mut index = None;
            loop {
                let (list, next) = client
                    .applied(Some("catalog"), index, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("config bench: applied: {e}"));
                index = Some(next);
                let done: Vec<_> = list.iter().filter(|i| i.report.revision >= entry.revision).collect();
                if let Some(refused) = done.iter().find(|i| i.report.status == ApplyStatus::Refused) {
                    panic!(
                        "config bench: {} refused revision {}: {:?}",
                        refused.instance_id, entry.revision, refused.report.error
                    );
                }
                if done.len() == instances as usize {
                    let last = done.iter().map(|i| i.report.time_ms).max().unwrap_or(t0_ms);
                    applied_ms.push(last.saturating_sub(t0_ms) as f64);
                    observed_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    panic!(
                        "config bench: only {} of {instances} applied revision {} in 10 s",
                        done.len(),
                        entry.revision
                    );
                }
            }
        }
        (applied_ms, observed_ms)
    });
    system.interrupt(Duration::from_secs(60));
    if cluster {
        flotilla_bench::system::drop_cluster_databases(&prefix);
    }

    let row = |name: &str, mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms |",
            quantile(&v, 0.5),
            quantile(&v, 0.99),
            v.last().copied().unwrap_or(0.0)
        );
    };
    let store = if cluster {
        "3 control-plane replicas on a 3-node NATS JetStream cluster"
    } else {
        "the embedded store"
    };
    println!(
        "\nconfig: {instances} catalog instances, {changes} changes to catalog/page_size, one after another, {store}\n"
    );
    println!("| from `set` to … | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    row(&format!("the last of {instances} instances applied it"), applied_ms);
    row("the bench saw every report", observed_ms);
}
