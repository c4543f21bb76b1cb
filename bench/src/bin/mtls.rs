//! `bench/mtls`: what mTLS between the processes costs on the gateway → service hop. The
//! shop is started twice in one run, with mTLS (the default) and with `--no-mtls`; each time
//! C closed-loop clients read one product through the gateway (keep-alive, so the handshakes
//! are few and the per-request cost is the record encryption) for D seconds, and the CPU the
//! gateway and the catalog used is divided by the requests answered.
//!
//! Prints requests/s, p50/p99 and CPU µs per request for the gateway and the catalog in each
//! mode, and the difference. `bench/mtls` then runs `bench/orders` both ways for the cost of
//! one order end to end.
//!
//! Usage: mtls [--clients C] [--seconds D]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_bench::system::System;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn fail(what: &str) -> ! {
    eprintln!("mtls bench: {what}");
    std::process::exit(1)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

/// One mode's figures.
struct Hop {
    mode: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    gateway_us: f64,
    catalog_us: f64,
}

fn run(mode: &'static str, extra: &[&str], clients: usize, seconds: u64) -> Hop {
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/mtls");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("… starting the shop ({mode})");
    let mut system = System::start(&binary, &repo, extra);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let uri: http::Uri = format!("http://{}/api/v1/products/1", system.gateway)
        .parse()
        .unwrap_or_else(|e| fail(&format!("uri: {e}")));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let send = |client: Client<_, Empty<Bytes>>, uri: http::Uri| async move {
        let started = Instant::now();
        let response = client.get(uri).await.ok()?;
        let ok = response.status() == http::StatusCode::OK;
        response.into_body().collect().await.ok()?;
        ok.then(|| started.elapsed())
    };
    // Warm: connections open, breakers closed, the product cached nowhere but the catalog.
    runtime.block_on(async {
        for _ in 0..200 {
            send(client.clone(), uri.clone()).await;
        }
    });
    let cpu = |system: &System| {
        let by = system.cpu_by_process();
        (
            by.get("gateway").copied().unwrap_or(0.0),
            by.get("service catalog").copied().unwrap_or(0.0),
        )
    };
    eprintln!("… {clients} clients reading a product for {seconds} s");
    let before = cpu(&system);
    let began = Instant::now();
    let (latencies, errors) = runtime.block_on(async {
        let until = began + Duration::from_secs(seconds);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (client, uri) = (client.clone(), uri.clone());
            workers.spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < until {
                    match send(client.clone(), uri.clone()).await {
                        Some(took) => latencies.push(took.as_secs_f64() * 1000.0),
                        None => errors += 1,
                    }
                }
                (latencies, errors)
            });
        }
        let (mut all, mut errors) = (Vec::new(), 0);
        while let Some(Ok((l, e))) = workers.join_next().await {
            all.extend(l);
            errors += e;
        }
        (all, errors)
    });
    let elapsed = began.elapsed().as_secs_f64();
    let after = cpu(&system);
    system.interrupt(Duration::from_secs(30));
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let per = sorted.len().max(1) as f64;
    Hop {
        mode,
        requests: sorted.len(),
        errors,
        seconds: elapsed,
        p50_ms: quantile(&sorted, 0.5),
        p99_ms: quantile(&sorted, 0.99),
        gateway_us: (after.0 - before.0) * 1e6 / per,
        catalog_us: (after.1 - before.1) * 1e6 / per,
    }
}

fn main() {
    let mut clients = 16usize;
    let mut seconds = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--clients", Some(v)) => clients = v as usize,
            ("--seconds", Some(v)) => seconds = v,
            _ => fail("usage: mtls [--clients C] [--seconds D]"),
        }
    }
    let hops = [
        run("mTLS (default)", &[], clients, seconds),
        run("plain (--no-mtls)", &["--no-mtls"], clients, seconds),
    ];
    println!("| gateway → catalog hop, {clients} clients × {seconds} s | requests/s | p50 | p99 | gateway CPU µs/req | catalog CPU µs/req | both µs/req |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for hop in &hops {
        println!(
            "| {} | {:.0} ({} errors) | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.0} |",
            hop.mode,
            hop.requests as f64 / hop.seconds,
            hop.errors,
            hop.p50_ms,
            hop.p99_ms,
            hop.gateway_us,
            hop.catalog_us,
            hop.gateway_us + hop.catalog_us
        );
    }
    let (tls, plain) = (&hops[0], &hops[1]);
    let both = |h: &Hop| h.gateway_us + h.catalog_us;
    println!(
        "| **mTLS cost** | {:+.0} % | {:+.2} ms | {:+.2} ms | {:+.0} | {:+.0} | **{:+.0} ({:+.0} %)** |",
        (tls.requests as f64 / tls.seconds) / (plain.requests as f64 / plain.seconds).max(1e-9) * 100.0 - 100.0,
        tls.p50_ms - plain.p50_ms,
        tls.p99_ms - plain.p99_ms,
        tls.gateway_us - plain.gateway_us,
        tls.catalog_us - plain.catalog_us,
        both(tls) - both(plain),
        (both(tls) / both(plain).max(1e-9) - 1.0) * 100.0
    );
}
