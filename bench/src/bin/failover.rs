//! `bench/failover`: four faults, one at a time, against three catalog instances behind the
//! gateway under a steady open-loop load. For each it prints the failed requests, the p99
//! latency during the fault, how long the registry kept the instance, and when the gateway
//! last sent it a request.
//!
//! Usage: failover [--rate N] [--seconds S]   (run through `bench/failover`, which builds it)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flotilla_bench::load::Load;
use flotilla_bench::procs::http_get;
use flotilla_bench::system::System;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    Term,
    ControlPlane,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 one instance",
            Fault::Stop => "SIGSTOP one instance (hung)",
            Fault::Term => "SIGTERM one instance",
            Fault::ControlPlane => "kill -9 the control plane",
        }
    }
}

struct Row {
    fault: Fault,
    requests: usize,
    failed: usize,
    p50_before: Duration,
    p99_before: Duration,
    p99_fault: Duration,
    max_fault: Duration,
    registry: String,
    gateway: String,
}

fn main() {
    let mut rate = 500u32;
    let mut seconds = 6u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rate" => rate = args.next().and_then(|v| v.parse().ok()).unwrap_or(rate),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            _ => {
                eprintln!("usage: failover [--rate N] [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/failover");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!(
        "failover: 3 catalog instances behind the gateway, {rate} GET/s open loop, {seconds} s after each fault\n"
    );
    let mut rows = Vec::new();
    for fault in [Fault::Kill, Fault::Stop, Fault::Term, Fault::ControlPlane] {
        eprintln!("… {}", fault.label());
        rows.push(run(&binary, &repo, fault, rate, Duration::from_secs(seconds)));
    }
    println!("| fault | requests | failed | p50 / p99 before | p99 / max during the fault | registry dropped it after | gateway last sent it a request |");
    println!("|---|---:|---:|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} | {} |",
            r.fault.label(),
            r.requests,
            r.failed,
            ms(r.p50_before),
            ms(r.p99_before),
            ms(r.p99_fault),
            ms(r.max_fault),
            r.registry,
            r.gateway
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn registry_ids(system: &System) -> Vec<(String, String)> {
    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap_or_default();
    let auth = format!("Bearer {}", token.trim());
    let answer = flotilla_bench::procs::http_request(
        system.control,
        "GET",
        "/v1/registry/instances",
        &[("Authorization", &auth)],
        "",
    );
    let Ok((200, body)) = answer else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    list["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some((
                        i["instance_id"].as_str()?.to_owned(),
                        i["metadata"]["supervisor.name"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn wait(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn run(binary: &Path, repo: &Path, fault: Fault, rate: u32, after: Duration) -> Row {
    let system = System::start(binary, repo, &["--scale", "catalog=3"]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let mut requests = vec![(http::Method::GET, "/api/v1/products/7")];
    if fault == Fault::Term {
        requests.push((http::Method::POST, "/api/v1/products"));
    }
    let load = Load::start(system.gateway, rate, requests);
    std::thread::sleep(Duration::from_secs(2));
    let victims = system.instances("catalog");
    let (victim_id, victim_addr, victim_pid) = victims.first().cloned().unwrap_or_default();
    let fault_at = load.elapsed();
    let fault_wall = SystemTime::now();
    let mut until_wall = None;
    let registry = match fault {
        Fault::Kill | Fault::Stop | Fault::Term => {
            let signal = match fault {
                Fault::Kill => Signal::SIGKILL,
                Fault::Stop => Signal::SIGSTOP,
                _ => Signal::SIGTERM,
            };
            let _ = kill(Pid::from_raw(victim_pid as i32), signal);
            let dropped = wait(Duration::from_secs(10), || {
                !registry_ids(&system).iter().any(|(id, _)| *id == victim_id)
            });
            let text = dropped.map_or("never".into(), |d| format!("{:.0} ms", ms(d)));
            if fault == Fault::Stop {
                std::thread::sleep(Duration::from_secs(1));
                until_wall = Some(SystemTime::now());
                let _ = kill(Pid::from_raw(victim_pid as i32), Signal::SIGCONT);
                let back = wait(Duration::from_secs(10), || {
                    registry_ids(&system).iter().any(|(id, _)| id.starts_with("catalog-")) && {
                        system.instances("catalog").iter().any(|(_, _, p)| *p == victim_pid)
                    }
                });
                format!(
                    "{text}; back {} after SIGCONT",
                    back.map_or("never".into(), |d| format!("{:.0} ms", ms(d)))
                )
            } else {
                text
            }
        }
        Fault::ControlPlane => {
            if let Some(pid) = system.process_with_arg("control") {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
            let up = wait(Duration::from_secs(10), || {
                http_get(system.control, "/health/ready").is_ok_and(|(s, _)| s == 200)
            });
            let all = wait(Duration::from_secs(10), || {
                let names: Vec<String> = registry_ids(&system).into_iter().map(|(_, n)| n).collect();
                ["catalog-1", "catalog-2", "catalog-3", "gateway"]
                    .iter()
                    .all(|n| names.iter().any(|r| r == n))
            });
            format!(
                "n/a; restarted in {}, all re-registered {} later",
                up.map_or("never".into(), |d| format!("{:.0} ms", ms(d) + 50.0)),
                all.map_or("never".into(), |d| format!("{:.0} ms", ms(d)))
            )
        }
    };
    let remaining = (fault_at + after).saturating_sub(load.elapsed());
    std::thread::sleep(remaining);
    let report = load.stop();
    let gateway = if fault == Fault::ControlPlane {
        "n/a".to_owned()
    } else {
        last_sent(
            &system.data_dir().join("logs/gateway.log"),
            &victim_addr,
            fault_wall,
            until_wall,
        )
    };
    Row {
        fault,
        requests: report.samples.len(),
        failed: report.failures().len(),
        p50_before: report.quantile_between(0.5, Duration::ZERO, fault_at),
        p99_before: report.quantile_between(0.99, Duration::ZERO, fault_at),
        p99_fault: report.quantile_between(0.99, fault_at, fault_at + Duration::from_secs(5)),
        max_fault: report.quantile_between(1.0, fault_at, fault_at + Duration::from_secs(5)),
        registry,
        gateway,
    }
}

/// From the gateway's access log: how many requests tried the victim after the fault (and
/// before `until`), and when the last of them was sent.
fn last_sent(log: &PathBuf, victim: &str, fault: SystemTime, until: Option<SystemTime>) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return "no access log".into();
    };
    let mut last: Option<f64> = None;
    let mut count = 0usize;
    for line in text.lines() {
        let Some(stamp) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(ended) = humantime::parse_rfc3339(stamp) else {
            continue;
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let tried = field("tried=").or_else(|| field("upstream=")).unwrap_or_default();
        if !tried.split(',').any(|t| t == victim) {
            continue;
        }
        // A request is logged when it ends; it was sent its duration earlier.
        let took = field("duration_ms=").and_then(|d| d.parse::<f64>().ok()).unwrap_or(0.0);
        let Some(sent) = ended.checked_sub(Duration::from_secs_f64(took / 1000.0)) else {
            continue;
        };
        if sent < fault || until.is_some_and(|u| sent >= u) {
            continue;
        }
        count += 1;
        let offset = sent.duration_since(fault).map(ms).unwrap_or(0.0);
        last = Some(last.map_or(offset, |l: f64| l.max(offset)));
    }
    match last {
        None => "none after the fault".into(),
        Some(last) => format!(
            "{last:.0} ms after the fault ({count} request{} tried it)",
            if count == 1 { "" } else { "s" }
        ),
    }
}
