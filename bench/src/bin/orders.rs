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
//! With `--overload F`: the confirm rate is measured first (C clients, 10 s), then F × that
//! rate is offered in an open loop for D seconds; prints what was accepted, refused (503 with
//! Retry-After) and timed out (504), and how soon every accepted order was confirmed
//! (`bench/overload`).
//!
//! Usage: orders [--clients C] [--seconds D] [--overload F] [--no-mtls]   (run through
//! `bench/orders`, which builds it; `--no-mtls` runs the shop without mTLS between its
//! processes, for `bench/mtls`)

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla::events::EventsClient;
use flotilla_bench::orders::{self as load, quantile, Answer, Placed, Settled, Tally};
use flotilla_bench::procs::cpu_seconds;
use flotilla_bench::system::System;

fn fail(what: &str) -> ! {
    eprintln!("orders bench: {what}");
    std::process::exit(1)
}

fn main() {
    let mut clients = 64usize;
    let mut seconds = 20u64;
    let mut overload: Option<f64> = None;
    let mut extra: Vec<&str> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-mtls" {
            extra.push("--no-mtls");
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0);
        match (arg.as_str(), value) {
            ("--clients", Some(v)) => clients = v as usize,
            ("--seconds", Some(v)) => seconds = v as u64,
            ("--overload", Some(v)) => overload = Some(v),
            _ => fail("usage: orders [--clients C] [--seconds D] [--overload FACTOR] [--no-mtls]"),
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/orders");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("… starting the shop");
    let mut system = System::start(&binary, &repo, &extra);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let token = flotilla_bench::shop::stocked_customer(&system).unwrap_or_else(|e| fail(&e));
    let control_token = system.operator_token();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let settled: Settled = Default::default();
    let client = load::client();
    let uri: http::Uri = format!("http://{}/api/v1/orders", system.gateway)
        .parse()
        .unwrap_or_else(|e| fail(&format!("uri: {e}")));
    runtime.spawn(load::watch(
        EventsClient::new(&system.control.to_string(), control_token),
        settled.clone(),
    ));
    if let Some(factor) = overload {
        runtime.block_on(overloaded(
            &system, &client, &uri, &token, &settled, clients, factor, seconds,
        ));
        system.interrupt(Duration::from_secs(30));
        return;
    }

    let cpu_before = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let (placed, began, load_ended) = runtime.block_on(async {
        eprintln!("… {clients} clients placing orders for {seconds} s");
        let began = Instant::now();
        let placed = load::closed_loop(
            &client,
            &uri,
            &token,
            clients,
            Duration::from_secs(seconds),
            Duration::MAX,
        )
        .await;
        let load_ended = Instant::now();
        // Let the sagas finish what was accepted.
        eprintln!("… waiting for the accepted orders to settle");
        load::settle(&placed, &settled, Duration::from_secs(120)).await;
        (placed, began, load_ended)
    });
    let cpu_after = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let tally = Tally::of(&placed, &settled);
    let last_confirmed = confirmed_until(&placed, &settled).unwrap_or(began);
    let load_s = load_ended.duration_since(began).as_secs_f64();
    let confirm_s = last_confirmed.duration_since(began).as_secs_f64().max(load_s);
    println!("| figure | value |");
    println!("|---|---|");
    println!("| clients (closed loop) × seconds | {clients} × {seconds} |");
    println!(
        "| orders accepted (202) | {} ({:.0}/s) |",
        tally.accepted,
        tally.accepted as f64 / load_s
    );
    println!(
        "| refused as overloaded (503, Retry-After) | {} |",
        tally.refused + tally.refused_without_retry_after
    );
    println!(
        "| gateway timeouts (504) / other answers | {} / {} |",
        tally.timed_out,
        tally.others_text()
    );
    println!(
        "| orders confirmed | {} ({:.0}/s, first POST to last confirmation) |",
        tally.to_confirmed_ms.len(),
        tally.to_confirmed_ms.len() as f64 / confirm_s
    );
    println!(
        "| cancelled / never settled | {} / {} |",
        tally.cancelled, tally.unsettled
    );
    println!(
        "| POST /api/v1/orders p50 / p99 | {:.1} / {:.1} ms |",
        quantile(&tally.post_ms, 0.5),
        quantile(&tally.post_ms, 0.99)
    );
    println!(
        "| order to confirmed (event seen) p50 / p99 | {:.0} / {:.0} ms |",
        quantile(&tally.to_confirmed_ms, 0.5),
        quantile(&tally.to_confirmed_ms, 0.99)
    );
    print_cpu(&cpu_before, &cpu_after, tally.to_confirmed_ms.len() + tally.cancelled);
    system.interrupt(Duration::from_secs(30));
}

/// When the last of `placed`'s confirmations was seen.
fn confirmed_until(placed: &[Placed], settled: &Settled) -> Option<Instant> {
    let settled = settled.lock().ok()?;
    placed
        .iter()
        .filter_map(|p| match &p.answer {
            Answer::Accepted(id) => settled.get(id).filter(|(_, confirmed)| *confirmed).map(|(at, _)| *at),
            _ => None,
        })
        .max()
}

/// The overload run: the confirm rate measured with `clients` closed-loop clients for 10 s,
/// then `factor` × that rate offered in an open loop for `seconds`; prints what was
/// accepted, refused and timed out, and how soon the accepted orders were confirmed.
#[allow(clippy::too_many_arguments)]
async fn overloaded(
    system: &System,
    client: &load::Gateway,
    uri: &http::Uri,
    token: &str,
    settled: &Settled,
    clients: usize,
    factor: f64,
    seconds: u64,
) {
    // Refused clients come back after 100 ms, not the second `Retry-After` says: the shop is
    // kept saturated, so what it confirms is what it can.
    eprintln!("… measuring the confirm rate: {clients} clients for 10 s");
    let began = Instant::now();
    let calibration = load::closed_loop(
        client,
        uri,
        token,
        clients,
        Duration::from_secs(10),
        Duration::from_millis(100),
    )
    .await;
    let ended = Instant::now();
    load::settle(&calibration, settled, Duration::from_secs(60)).await;
    let confirmed_in_time = {
        let settled = settled.lock().map(|s| s.clone()).unwrap_or_default();
        settled
            .values()
            .filter(|(at, confirmed)| *confirmed && *at >= began && *at <= ended)
            .count()
    };
    let rate = confirmed_in_time as f64 / ended.duration_since(began).as_secs_f64();
    let offered = rate * factor;
    eprintln!("… confirmed {rate:.0}/s; offering {offered:.0}/s for {seconds} s");
    let cpu_before = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let placed = load::offer(client, uri, token, offered, Duration::from_secs(seconds)).await;
    load::settle(&placed, settled, Duration::from_secs(120)).await;
    let cpu_after = (system.cpu_by_process(), cpu_seconds(std::process::id()));
    let tally = Tally::of(&placed, settled);
    let within = tally.to_confirmed_ms.iter().filter(|ms| **ms <= 2_000.0).count();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| confirm rate (closed loop, {clients} clients, 10 s) | {rate:.0}/s |");
    println!(
        "| offered (open loop) | {offered:.0}/s × {seconds} s = {} orders |",
        placed.len()
    );
    println!(
        "| accepted (202) | {} ({:.0}/s) |",
        tally.accepted,
        tally.accepted as f64 / seconds as f64
    );
    println!(
        "| refused as overloaded (503 with / without Retry-After) | {} / {} |",
        tally.refused, tally.refused_without_retry_after
    );
    println!("| gateway timeouts (504) | {} |", tally.timed_out);
    println!("| other answers | {} |", tally.others_text());
    println!(
        "| accepted and confirmed / cancelled / never settled | {} / {} / {} |",
        tally.to_confirmed_ms.len(),
        tally.cancelled,
        tally.unsettled
    );
    println!(
        "| order to confirmed p50 / p99 / max | {:.0} / {:.0} / {:.0} ms ({within} of {} within 2 s) |",
        quantile(&tally.to_confirmed_ms, 0.5),
        quantile(&tally.to_confirmed_ms, 0.99),
        tally.to_confirmed_ms.last().copied().unwrap_or(0.0),
        tally.to_confirmed_ms.len()
    );
    println!(
        "| POST p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        quantile(&tally.post_ms, 0.5),
        quantile(&tally.post_ms, 0.99),
        tally.post_ms.last().copied().unwrap_or(0.0)
    );
    print_cpu(&cpu_before, &cpu_after, tally.to_confirmed_ms.len() + tally.cancelled);
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
