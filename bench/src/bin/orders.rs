//! `bench/orders`: orders per second end to end on embedded defaults. `flotilla up` with the
//! shipped manifest; an administrator (bootstrapped through central config) stocks products
//! 1–20 deeply; one customer's token; then C concurrent clients place orders through the
//! gateway for D seconds (closed loop), each with its own Idempotency-Key. A consumer group
//! on the `orders` topic notes when each order's `shop.order.confirmed` arrives, so
//! order-to-confirmed is measured where another service would see it (after the outbox relay).
//!
//! Prints the POST's p50/p99, order-to-confirmed p50/p99, accepted and confirmed orders per
//! second, and how many orders were cancelled or never settled.
//!
//! Usage: orders [--clients C] [--seconds D] [--no-mtls]   (run through `bench/orders`, which
//! builds it; `--no-mtls` runs the shop without mTLS between its processes, for `bench/mtls`)

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::events::EventsClient;
use flotilla_bench::procs::cpu_seconds;
use flotilla_bench::system::System;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

fn fail(what: &str) -> ! {
    eprintln!("orders bench: {what}");
    std::process::exit(1)
}

/// The customer's token once the shop is stocked.
fn prepare(system: &System) -> String {
    flotilla_bench::shop::stocked_customer(system).unwrap_or_else(|e| fail(&e))
}

/// When each order was seen confirmed or cancelled, by id.
type Settled = Arc<Mutex<HashMap<String, (Instant, bool)>>>;

async fn watch(events: EventsClient, settled: Settled) {
    let group = format!("bench-{}", std::process::id());
    loop {
        let Ok(deliveries) = events.fetch("orders", &group, 500, Duration::from_secs(5)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let now = Instant::now();
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        if let Ok(mut settled) = settled.lock() {
            for delivery in &deliveries {
                let confirmed = delivery.event.kind == flotilla_shop_contracts::orders::CONFIRMED;
                if confirmed || delivery.event.kind == flotilla_shop_contracts::orders::CANCELLED {
                    if let Some(order) = &delivery.event.subject {
                        settled.entry(order.clone()).or_insert((now, confirmed));
                    }
                }
            }
        }
        if !offsets.is_empty() {
            let _ = events.ack("orders", &group, &offsets).await;
        }
    }
}

fn main() {
    let mut clients = 64usize;
    let mut seconds = 20u64;
    let mut extra: Vec<&str> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-mtls" {
            extra.push("--no-mtls");
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--clients", Some(v)) => clients = v as usize,
            ("--seconds", Some(v)) => seconds = v,
            _ => fail("usage: orders [--clients C] [--seconds D] [--no-mtls]"),
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/orders");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("… starting the shop");
    let mut system = System::start(&binary, &repo, &extra);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let token = prepare(&system);
    let control_token = std::fs::read_to_string(system.data_dir().join("token"))
        .map(|t| t.trim().to_owned())
        .ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));

    let settled: Settled = Arc::default();
    let cpu_before = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let (posts, placed, others, began, load_ended) = runtime.block_on(async {
        let events = EventsClient::new(&system.control.to_string(), control_token);
        tokio::spawn(watch(events, settled.clone()));
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: http::Uri = format!("http://{}/api/v1/orders", system.gateway)
            .parse()
            .unwrap_or_else(|e| fail(&format!("uri: {e}")));
        eprintln!("… {clients} clients placing orders for {seconds} s");
        let began = Instant::now();
        let until = began + Duration::from_secs(seconds);
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..clients {
            let (client, uri, token) = (client.clone(), uri.clone(), token.clone());
            workers.spawn(async move {
                let mut posts = Vec::new();
                let mut placed = Vec::new();
                let mut others: Vec<String> = Vec::new();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let product = 1 + (worker as u64 * 7 + n) % 20;
                    let body = format!(
                        r#"{{"lines":[{{"product_id":{product},"quantity":1}}],"shipping_address":{{"name":"Bench","line1":"Kai 1","city":"Hamburg","postal_code":"20457","country":"DE"}}}}"#
                    );
                    let request = http::Request::post(uri.clone())
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("bench-{worker}-{n}"))
                        .body(Full::new(Bytes::from(body)));
                    let Ok(request) = request else { continue };
                    let sent = Instant::now();
                    let response = match client.request(request).await {
                        Ok(response) => response,
                        Err(err) => {
                            others.push(format!("no answer ({err})"));
                            continue;
                        }
                    };
                    let status = response.status();
                    let Ok(bytes) = response.into_body().collect().await.map(|b| b.to_bytes()) else {
                        continue;
                    };
                    posts.push(sent.elapsed());
                    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    match answer["id"].as_str() {
                        Some(id) if status == http::StatusCode::ACCEPTED => placed.push((id.to_owned(), sent)),
                        _ => others.push(format!("{} {}", status.as_u16(), answer["type"].as_str().unwrap_or(""))),
                    }
                }
                (posts, placed, others)
            });
        }
        let (mut posts, mut placed, mut others) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(Ok((p, o, x))) = workers.join_next().await {
            posts.extend(p);
            placed.extend(o);
            others.extend(x);
        }
        let load_ended = Instant::now();
        // Let the sagas finish what was accepted.
        eprintln!("… {} orders accepted; waiting for them to settle", placed.len());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = settled.lock().map_or(0, |s| placed.iter().filter(|(id, _)| s.contains_key(id)).count());
            if done == placed.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (posts, placed, others, began, load_ended)
    });

    let cpu_after = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let settled = settled.lock().map(|s| s.clone()).unwrap_or_default();
    let mut to_confirmed: Vec<f64> = Vec::new();
    let (mut cancelled, mut unsettled) = (0usize, 0usize);
    let mut last_confirmed = began;
    for (id, sent) in &placed {
        match settled.get(id) {
            Some((at, true)) => {
                to_confirmed.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
                last_confirmed = last_confirmed.max(*at);
            }
            Some((_, false)) => cancelled += 1,
            None => unsettled += 1,
        }
    }
    let mut post_ms: Vec<f64> = posts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    post_ms.sort_by(f64::total_cmp);
    to_confirmed.sort_by(f64::total_cmp);
    let load_s = load_ended.duration_since(began).as_secs_f64();
    let confirm_s = last_confirmed.duration_since(began).as_secs_f64().max(load_s);
    println!("| figure | value |");
    println!("|---|---|");
    println!("| clients (closed loop) × seconds | {clients} × {seconds} |");
    println!(
        "| orders accepted (202) | {} ({:.0}/s) |",
        placed.len(),
        placed.len() as f64 / load_s
    );
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for other in others {
        *kinds.entry(other).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.into_iter().map(|(kind, n)| format!("{n} × {kind}")).collect();
    println!(
        "| other answers | {} |",
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        }
    );
    println!(
        "| orders confirmed | {} ({:.0}/s, first POST to last confirmation) |",
        to_confirmed.len(),
        to_confirmed.len() as f64 / confirm_s
    );
    println!("| cancelled / never settled | {cancelled} / {unsettled} |");
    println!(
        "| POST /api/v1/orders p50 / p99 | {:.1} / {:.1} ms |",
        quantile(&post_ms, 0.5),
        quantile(&post_ms, 0.99)
    );
    println!(
        "| order to confirmed (event seen) p50 / p99 | {:.0} / {:.0} ms |",
        quantile(&to_confirmed, 0.5),
        quantile(&to_confirmed, 0.99)
    );
    print_cpu(&cpu_before, &cpu_after, to_confirmed.len() + cancelled);
    system.interrupt(Duration::from_secs(30));
}

type CpuSnapshot = (std::collections::BTreeMap<String, f64>, f64);

/// Where the CPU went from the first POST to the last settled order: seconds per process,
/// milliseconds per settled order, and what that allows on this machine's cores.
fn print_cpu(before: &CpuSnapshot, after: &CpuSnapshot, settled: usize) {
    let per = settled.max(1) as f64;
    let mut rows: Vec<(String, f64)> = after
        .0
        .iter()
        .map(|(name, cpu)| (name.clone(), cpu - before.0.get(name).copied().unwrap_or(0.0)))
        .collect();
    rows.push(("the bench's clients and watcher".to_owned(), after.1 - before.1));
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    println!();
    println!("| process | CPU s | CPU ms per settled order | share |");
    println!("|---|---:|---:|---:|");
    for (name, cpu) in &rows {
        println!(
            "| {name} | {cpu:.2} | {:.2} | {:.0} % |",
            cpu * 1000.0 / per,
            cpu / total.max(1e-9) * 100.0
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "| **all** | {total:.2} | **{:.2}** | at this cost {cores:.0} cores settle at most {:.0} orders/s |",
        total * 1000.0 / per,
        cores * per / total.max(1e-9)
    );
}
