//! `bench/chaos`: the shop under faults. `flotilla up` with the shipped manifest; orders at
//! a steady rate through the gateway (each with its own Idempotency-Key, retried with the same
//! key until accepted) while `flotilla chaos` kills or pauses a random process every few
//! seconds and pauses payments once for a long while; then every invariant of the shop,
//! checked exactly from its databases and APIs. Prints Markdown tables (docs/benchmarks.md
//! keeps the last ones) and exits non-zero when an invariant broke.
//!
//! Usage: chaos [--rate R] [--seconds D] [--seed S] [--no-long-pause]
//! (run through `bench/chaos`, which builds it)

use std::path::Path;
use std::time::Duration;

use flotilla_bench::chaos::{self, Options};
use flotilla_bench::system::System;

fn usage() -> ! {
    eprintln!("usage: chaos [--rate R] [--seconds D] [--seed S] [--no-long-pause]");
    std::process::exit(2)
}

fn main() {
    let mut options = Options::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--rate" => options.rate = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => options.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => options.seed = value().parse().unwrap_or_else(|_| usage()),
            "--no-long-pause" => options.long_payments_pause = None,
            _ => usage(),
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/chaos");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("… starting the shop");
    let mut system = System::start(&binary, &repo, &[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    eprintln!("… data dir {}", system.data_dir().display());
    eprintln!(
        "… {} orders/s for {} s, a fault every {:?}–{:?}",
        options.rate, options.seconds, options.fault_every.0, options.fault_every.1
    );
    let report = chaos::run(&system, &options);
    println!("{}", report.table());
    println!("| t (s) | fault |\n|---:|---|");
    for fault in &report.faults {
        println!("| {:.1} | {} |", fault.at, fault.said.replace('\n', " "));
    }
    system.interrupt(Duration::from_secs(60));
    // For looking into a run afterwards: its logs and databases stay.
    if std::env::var_os("FLOTILLA_BENCH_KEEP").is_some() {
        system.dir.disable_cleanup(true);
        eprintln!("… kept {}", system.data_dir().display());
    }
    if !report.violations().is_empty() {
        std::process::exit(1);
    }
}
