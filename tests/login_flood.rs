//! A flood of sign-ins with the real binary, in a test binary of its own so that no other
//! system shares the machine with it: the flood is meant to load the system under test, not
//! its neighbours.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

/// A 10 s flood of 32 clients on the token endpoint (made-up accounts, forged
/// `X-Forwarded-For`) leaves a customer on another address signing in (≥ 99 % of tries every
/// 100 ms) and the JWKS answering 200 throughout.
#[test]
fn a_login_flood_leaves_sign_in_and_key_distribution_working() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let report = support::login_flood::run(&system, 32, Duration::from_secs(10), Duration::from_millis(100));
    system.interrupt(Duration::from_secs(30));
    assert!(report.logins >= 20, "{report:?}");
    assert!(
        report.login_success() >= 0.99,
        "correct sign-ins: {}/{}: {:?}",
        report.logins_ok,
        report.logins,
        report.bystander_failures
    );
    assert_eq!(report.jwks_ok, report.jwks, "{:?}", report.bystander_failures);
    assert!(
        report.flood.get(&429).copied().unwrap_or(0) > 0,
        "the flood was limited: {:?}",
        report.flood
    );
}
