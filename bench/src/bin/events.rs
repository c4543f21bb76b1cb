//! `bench/events`: the control plane's event log on its own. Starts `flotilla control` on a
//! free port with a fresh data dir, then one producer appends batches over HTTP while one
//! consumer group fetches (long poll) and acks; prints events/s through the log and the p50 /
//! p99 time from the append being acknowledged to the event being delivered. Runs R times,
//! each on a fresh control plane and data dir, and prints each run and the median of the runs
//! (this machine's speed moves from one minute to the next: one run proves little).
//!
//! Usage: events [--events N] [--batch B] [--runs R]   (run through `bench/events`, which
//! builds it)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla::events::{CloudEvent, EventsClient};
use flotilla_bench::procs::{flotilla_beside_me, free_addr, http_get};

fn main() {
    let mut total = 20_000u64;
    let mut batch = 100usize;
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--events", Some(v)) => total = v,
            ("--batch", Some(v)) => batch = v.clamp(1, 1000) as usize,
            ("--runs", Some(v)) => runs = v.clamp(1, 100) as usize,
            _ => {
                eprintln!("usage: events [--events N] [--batch B] [--runs R]");
                std::process::exit(2);
            }
        }
    }
    println!("\nevents: {total} events in batches of {batch}, one producer, one consumer group, {runs} runs\n");
    println!("| run | events/s through the log | append acked → delivered p50 | p99 |");
    println!("|---|---:|---:|---:|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut figures = Vec::with_capacity(runs);
    for run in 1..=runs {
        let (rate, p50, p99) = run_once(total, batch);
        println!("| {run} | {rate:.0} | {:.1} ms | {:.1} ms |", ms(p50), ms(p99));
        figures.push((rate, p50, p99));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "| **median** | **{:.0}** | {:.1} ms | **{:.1} ms** |",
        median(figures.iter().map(|f| f.0).collect()),
        median(figures.iter().map(|f| ms(f.1)).collect()),
        median(figures.iter().map(|f| ms(f.2)).collect())
    );
}

/// One run on a fresh control plane: events/s, and the p50 and p99 from append to delivery.
fn run_once(total: u64, batch: usize) -> (f64, Duration, Duration) {
    let binary = flotilla_beside_me("bench/events");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    // A data dir must be its owner's only (the control plane refuses one open to others).
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .unwrap_or_else(|e| panic!("temp dir: {e}"));
    let addr = free_addr();
    let mut control = std::process::Command::new(binary)
        .args(["control", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path())
        .env("FLOTILLA_TOKEN", "bench-token")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the control plane: {e}"));
    let started = Instant::now();
    while http_get(addr, "/health/ready").map_or(true, |(s, _)| s != 200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the control plane never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (rate, p50, p99) = runtime.block_on(async move {
        let client = EventsClient::new(&addr.to_string(), Some("bench-token".into()));
        let acked_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let consumer = {
            let client = client.clone();
            let acked_at = acked_at.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total as usize);
                let mut seen = std::collections::HashSet::new();
                while (latencies.len() as u64) < total {
                    let Ok(got) = client.fetch("bench", "consumer", 1000, Duration::from_secs(5)).await else {
                        continue;
                    };
                    let now = Instant::now();
                    let offsets: Vec<u64> = got.iter().map(|d| d.offset).collect();
                    {
                        // An event can arrive before the producer has noted its append's
                        // answer: it counts, with no wait measured (zero).
                        let at = acked_at.lock().unwrap_or_else(|e| e.into_inner());
                        for d in &got {
                            if seen.insert(d.event.id.clone()) {
                                let waited = at.get(&d.event.id).map(|t| now.saturating_duration_since(*t));
                                latencies.push(waited.unwrap_or_default());
                            }
                        }
                    }
                    let _ = client.ack("bench", "consumer", &offsets).await;
                }
                latencies
            })
        };
        let begin = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let n = batch.min((total - sent) as usize);
            let events: Vec<CloudEvent> = (0..n)
                .map(|i| {
                    serde_json::from_value(serde_json::json!({
                        "id": format!("e{}", sent + i as u64), "source": "/bench", "type": "bench.tick",
                        "subject": format!("agg/{}", (sent + i as u64) % 100), "data": {"n": sent + i as u64}
                    }))
                    .unwrap_or_else(|e| panic!("event: {e}"))
                })
                .collect();
            client
                .append("bench", &events)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"));
            let now = Instant::now();
            let mut at = acked_at.lock().unwrap_or_else(|e| e.into_inner());
            for e in &events {
                at.insert(e.id.clone(), now);
            }
            sent += n as u64;
        }
        let mut latencies = consumer.await.unwrap_or_default();
        let elapsed = begin.elapsed();
        latencies.sort();
        let q = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        (total as f64 / elapsed.as_secs_f64(), q(0.5), q(0.99))
    });
    let _ = control.kill();
    let _ = control.wait();
    (rate, p50, p99)
}
