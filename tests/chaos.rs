//! The shop under faults, with the real binary: orders through the gateway for 60 s while
//! `flotilla chaos` kills or pauses a random process every 2–3 s (any shop service, the
//! gateway, the control plane) and pauses payments for 10 s once, with cancellations made at
//! every step of the order saga; then every invariant checked exactly from the services'
//! databases and APIs: no order lost or duplicated, stock conserved, one captured payment per
//! confirmed order and no authorization left standing, every cancelled order compensated,
//! one shipment and one notification each, no event lost, and customers told the business
//! reason. `bench/chaos` runs the long version and prints its figures.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use flotilla_bench::chaos::{self, Options};

#[test]
fn under_kills_and_pauses_of_every_kind_of_process_no_order_or_payment_goes_wrong() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(90));
    let report = chaos::run(&system, &Options::short());
    let table = report.table();
    println!("{table}");
    assert!(report.faults.len() >= 15, "faults were made: {:?}", report.faults);
    assert!(
        report.faults.iter().any(|f| f.said.contains("control"))
            || report.faults.iter().any(|f| f.said.contains("gateway")),
        "the platform's own processes were hit too: {:?}",
        report.faults
    );
    assert_eq!(
        report.accepted + report.refused_at_once,
        report.orders,
        "every order accepted after retries, or refused at once for want of stock\n{table}"
    );
    let broken: Vec<String> = report
        .violations()
        .iter()
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(
        broken.is_empty(),
        "invariants broken:\n{}\n\n{table}",
        broken.join("\n")
    );
    system.interrupt(Duration::from_secs(60));
}
