//! `bench/login-flood`: a flood of sign-ins through the gateway — 32 clients on one machine,
//! each try a made-up account, a wrong password and a new `X-Forwarded-For` — while a
//! customer signs in with the right password from another address every 100 ms and a client
//! fetches the JWKS from a third. Prints the customer's success rate and latency, the JWKS's,
//! and what the flood got; exits non-zero when a bystander failed more than 1 %.
//!
//! Usage: login_flood [--clients N] [--seconds D]   (run through `bench/login-flood`)

use std::path::Path;
use std::time::Duration;

use flotilla_bench::login_flood;
use flotilla_bench::system::System;

fn usage() -> ! {
    eprintln!("usage: login_flood [--clients N] [--seconds D]");
    std::process::exit(2)
}

fn main() {
    let (mut clients, mut seconds) = (32usize, 10u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--clients" => clients = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/login-flood");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("… starting the shop");
    let mut system = System::start(&binary, &repo, &[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    eprintln!("… {clients} clients flood /oauth2/token for {seconds} s");
    let report = login_flood::run(
        &system,
        clients,
        Duration::from_secs(seconds),
        Duration::from_millis(100),
    );
    system.interrupt(Duration::from_secs(30));
    println!("| during the flood | tries | succeeded | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| correct sign-in (127.0.0.2, every 100 ms) | {} | {:.1} % | {:.1} ms | {:.1} ms |",
        report.logins,
        report.login_success() * 100.0,
        report.login_percentile(0.5).as_secs_f64() * 1000.0,
        report.login_percentile(0.99).as_secs_f64() * 1000.0,
    );
    println!(
        "| `GET /oauth2/jwks` (127.0.0.3, every 100 ms) | {} | {:.1} % | | |",
        report.jwks,
        report.jwks_ok as f64 * 100.0 / report.jwks.max(1) as f64
    );
    let flood: usize = report.flood.values().sum();
    let statuses: Vec<String> = report.flood.iter().map(|(s, n)| format!("{n} × {s}")).collect();
    println!(
        "\nThe flood: {flood} tries ({:.0}/s): {}",
        flood as f64 / seconds as f64,
        statuses.join(", ")
    );
    for (what, n) in &report.bystander_failures {
        println!("- bystander failure ×{n}: {what}");
    }
    if report.login_success() < 0.99 || report.jwks_ok * 100 < report.jwks * 99 {
        std::process::exit(1);
    }
}
