//! Failover under load, with the real binary: three catalog instances behind the gateway,
//! a steady stream of requests, and one fault at a time. No request may fail.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::http_get;
use support::load::Load;
use support::System;

/// The faults run one at a time: four systems under load at once would measure the
/// machine, not the failover.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const RATE: u32 = 100;
const GET: (http::Method, &str) = (http::Method::GET, "/api/v1/products/7");

/// A system of three catalog instances under steady load, and the instance to be hurt.
struct Scenario {
    system: System,
    load: Load,
    victim: String,
    pid: u32,
    _serial: MutexGuard<'static, ()>,
}

impl Scenario {
    fn start(requests: Vec<(http::Method, &'static str)>) -> Scenario {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let system = support::start(&["--scale", "catalog=3"]);
        system.wait_for_line("Flotilla is up", Duration::from_secs(60));
        let load = Load::start(system.gateway, RATE, requests);
        std::thread::sleep(Duration::from_secs(1));
        let (victim, pid) = catalogs(&system)[0].clone();
        Scenario {
            system,
            load,
            victim,
            pid,
            _serial: serial,
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).unwrap();
    }

    /// Waits until the registry no longer lists the victim; returns how long that took.
    fn wait_victim_gone(&self) -> Duration {
        wait_until("the registry to drop the instance", Duration::from_secs(10), || {
            !catalogs(&self.system).iter().any(|(id, _)| *id == self.victim)
        })
    }

    fn wait_replaced(&self) {
        wait_until("the supervisor to replace it", Duration::from_secs(10), || {
            catalogs(&self.system).len() == 3
        });
    }

    /// Lets the load run a moment longer, then checks that no request failed.
    fn finish(self) -> String {
        std::thread::sleep(Duration::from_secs(1));
        let report = self.load.stop();
        let failures = report.failures();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed, e.g. {:?}\n{}",
            failures.len(),
            report.samples.len(),
            &failures[..failures.len().min(5)],
            self.system.output()
        );
        assert!(
            report.samples.len() > 150,
            "the load ran: {} requests",
            report.samples.len()
        );
        self.system.output()
    }
}

/// (instance id, pid) of each catalog instance.
fn catalogs(system: &System) -> Vec<(String, u32)> {
    system
        .instances("catalog")
        .into_iter()
        .map(|(id, _, pid)| (id, pid))
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

#[test]
fn kill_9_one_instance_loses_no_get() {
    let scenario = Scenario::start(vec![GET]);
    scenario.signal(Signal::SIGKILL);
    let dropped = scenario.wait_victim_gone();
    assert!(
        dropped <= Duration::from_secs(4),
        "registry kept a dead instance {dropped:?} (TTL 3 s)"
    );
    scenario.wait_replaced();
    scenario.finish();
}

#[test]
fn sigstop_one_instance_loses_no_get_and_it_returns_after_sigcont() {
    let scenario = Scenario::start(vec![GET]);
    // Hung with its sockets open: its calls time out and move on, it is shunned and
    // ejected, and its lease runs out.
    scenario.signal(Signal::SIGSTOP);
    scenario.wait_victim_gone();
    std::thread::sleep(Duration::from_secs(1));
    scenario.signal(Signal::SIGCONT);
    let back = wait_until("the instance to register again", Duration::from_secs(10), || {
        catalogs(&scenario.system).iter().any(|(_, p)| *p == scenario.pid)
    });
    assert!(back <= Duration::from_secs(3), "it came back after {back:?}");
    scenario.finish();
}

#[test]
fn sigterm_one_instance_loses_no_request_of_any_method() {
    let scenario = Scenario::start(vec![GET, (http::Method::POST, "/api/v1/products")]);
    scenario.signal(Signal::SIGTERM);
    let gone = scenario.wait_victim_gone();
    assert!(
        gone < Duration::from_secs(2),
        "it deregistered rather than expire: {gone:?}"
    );
    scenario.wait_replaced();
    let victim = scenario.victim.clone();
    let out = scenario.finish();
    assert!(
        out.contains(&format!("deregistered instance={victim}")),
        "the instance deregistered before it stopped:\n{out}"
    );
}

#[test]
fn a_dead_control_plane_costs_no_request_and_everyone_registers_again_within_3s() {
    let scenario = Scenario::start(vec![GET]);
    let system = &scenario.system;
    let control = system.process_with_arg("control").expect("the control plane process");
    kill(Pid::from_raw(control as i32), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Requests keep flowing from the gateway's last view while the control plane is away.
    wait_until("the control plane to be back", Duration::from_secs(10), || {
        http_get(system.control, "/health/ready").is_ok_and(|(s, _)| s == 200)
    });
    let took = wait_until("every instance to register again", Duration::from_secs(10), || {
        let status = system.status();
        let names: Vec<&str> = status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["supervisor.name"].as_str())
            .collect();
        ["catalog-1", "catalog-2", "catalog-3", "gateway"]
            .iter()
            .all(|n| names.contains(n))
    });
    assert!(took <= Duration::from_secs(3), "re-registration took {took:?}");
    scenario.finish();
}
