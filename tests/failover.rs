//! Failover under load, with the real binary: three catalog instances behind the gateway,
//! a steady stream of requests, and one fault at a time. No request may fail.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::load::{Load, Report};
use support::{http_get, System};

/// The faults run one at a time: four systems under load at once would measure the
/// machine, not the failover.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const RATE: u32 = 100;

fn three_catalogs() -> System {
    let system = support::start(&["--scale", "catalog=3"]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    system
}

/// (instance id, pid) of each catalog instance.
fn catalogs(system: &System) -> Vec<(String, u32)> {
    system
        .instances("catalog")
        .into_iter()
        .map(|(id, _, pid)| (id, pid))
        .collect()
}

fn registered(system: &System) -> Vec<String> {
    system.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["supervisor.name"].as_str().map(str::to_owned))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    started.elapsed()
}

fn assert_no_failures(report: &Report, system: &System) {
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n{}",
        failures.len(),
        report.samples.len(),
        &failures[..failures.len().min(5)],
        system.output()
    );
    assert!(
        report.samples.len() > 150,
        "the load ran: {} requests",
        report.samples.len()
    );
}

#[test]
fn kill_9_one_instance_loses_no_get() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let system = three_catalogs();
    let load = Load::start(system.gateway, RATE, vec![(http::Method::GET, "/api/v1/products/7")]);
    std::thread::sleep(Duration::from_secs(1));
    let (victim, pid) = catalogs(&system)[0].clone();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let dropped = wait_until(
        "the registry to drop the dead instance",
        Duration::from_secs(10),
        || !catalogs(&system).iter().any(|(id, _)| *id == victim),
    );
    assert!(
        dropped <= Duration::from_secs(4),
        "registry kept a dead instance {dropped:?} (TTL 3 s)"
    );
    wait_until("the supervisor to replace it", Duration::from_secs(10), || {
        catalogs(&system).len() == 3
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_no_failures(&load.stop(), &system);
}

#[test]
fn sigstop_one_instance_loses_no_get_and_it_returns_after_sigcont() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let system = three_catalogs();
    let load = Load::start(system.gateway, RATE, vec![(http::Method::GET, "/api/v1/products/7")]);
    std::thread::sleep(Duration::from_secs(1));
    let (victim, pid) = catalogs(&system)[0].clone();
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    // Hung with its sockets open: its calls time out and move on, it is ejected, and its
    // lease runs out.
    wait_until(
        "the hung instance to leave the registry",
        Duration::from_secs(10),
        || !catalogs(&system).iter().any(|(id, _)| *id == victim),
    );
    std::thread::sleep(Duration::from_secs(1));
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    let back = wait_until("the instance to register again", Duration::from_secs(10), || {
        catalogs(&system).iter().any(|(_, p)| *p == pid)
    });
    assert!(back <= Duration::from_secs(3), "it came back after {back:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_no_failures(&load.stop(), &system);
}

#[test]
fn sigterm_one_instance_loses_no_request_of_any_method() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let system = three_catalogs();
    let load = Load::start(
        system.gateway,
        RATE,
        vec![
            (http::Method::GET, "/api/v1/products/7"),
            (http::Method::POST, "/api/v1/products"),
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let (victim, pid) = catalogs(&system)[0].clone();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    wait_until("the instance to deregister", Duration::from_secs(5), || {
        !catalogs(&system).iter().any(|(id, _)| *id == victim)
    });
    wait_until("the supervisor to replace it", Duration::from_secs(10), || {
        catalogs(&system).len() == 3
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert!(report.samples.iter().any(|s| s.method == http::Method::POST));
    assert_no_failures(&report, &system);
    let out = system.output();
    assert!(
        out.contains(&format!("deregistered instance={victim}")),
        "the instance deregistered before it stopped:\n{out}"
    );
}

#[test]
fn a_dead_control_plane_costs_no_request_and_everyone_registers_again_within_3s() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let system = three_catalogs();
    let load = Load::start(system.gateway, RATE, vec![(http::Method::GET, "/api/v1/products/7")]);
    std::thread::sleep(Duration::from_secs(1));
    let control_pid = system.process_with_arg("control").expect("the control plane process");
    kill(Pid::from_raw(control_pid as i32), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Requests keep flowing from the gateway's last view while the control plane is away.
    wait_until("the control plane to be back", Duration::from_secs(10), || {
        http_get(system.control, "/health/ready").is_ok_and(|(s, _)| s == 200)
    });
    let back = Instant::now();
    wait_until("every instance to register again", Duration::from_secs(10), || {
        let names = registered(&system);
        ["catalog-1", "catalog-2", "catalog-3", "gateway"]
            .iter()
            .all(|n| names.iter().any(|r| r == n))
    });
    let took = back.elapsed();
    assert!(took <= Duration::from_secs(3), "re-registration took {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_no_failures(&load.stop(), &system);
}
