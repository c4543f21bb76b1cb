//! System test of `flotilla chaos` with the real binary against a running `flotilla up`: a
//! killed instance is restarted with a new pid, a paused one is stopped (`T` in /proc) for
//! its time and runs again after, a latency rule slows the catalog's requests through the
//! gateway and marks their server spans, an abort rule answers problem+json, `clear` ends it
//! all, a schedule repeats a fault with a line for each, and every fault shows in
//! `flotilla status` and in the traces of the service `chaos`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{alive, http_request, json_of, System};

fn start() -> System {
    let system = System::start_with_env(
        Path::new(support::flotilla()),
        &support::repo_root(),
        &[],
        // Keep every trace, and send spans within a moment.
        &[("OTEL_TRACES_SAMPLER_ARG", "1"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    system
}

/// Runs `flotilla <args>` against the system; its standard output, which must be a success.
fn cli_ok(system: &System, args: &[&str]) -> String {
    let out = system.cli(args);
    assert!(
        out.status.success(),
        "flotilla {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a `chaos` command with `--output json`; its one JSON line.
fn chaos(system: &System, args: &[&str]) -> Value {
    let mut all = vec!["chaos"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = cli_ok(system, &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs a command that must fail; its standard error.
fn cli_err(system: &System, args: &[&str]) -> String {
    let out = system.cli(args);
    assert!(!out.status.success(), "flotilla {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// The scheduling state of a process (`S` sleeping, `R` running, `T` stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(done) = check() {
            return done;
        }
        assert!(started.elapsed() < within, "never {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A product GET through the gateway: its status, JSON body and time taken.
fn products(system: &System, headers: &[(&str, &str)]) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, body) = json_of(http_request(system.gateway, "GET", "/api/v1/products/1", headers, "").unwrap());
    (status, body, started.elapsed())
}

#[test]
fn chaos_kills_pauses_slows_and_fails_and_every_fault_is_seen() {
    let system = start();

    // Kill: the supervisor says so and starts orders again, with another pid.
    let orders = system.process_with_arg("orders").unwrap();
    let killed = chaos(&system, &["kill", "orders"]);
    assert_eq!(killed["fault"]["process"], "orders-1", "{killed}");
    assert_eq!(killed["fault"]["pid"], orders, "{killed}");
    system.wait_for_line(
        &format!("chaos: killed orders-1 (pid {orders})"),
        Duration::from_secs(5),
    );
    let restarted = wait_until("a new orders process", Duration::from_secs(20), || {
        system
            .process_with_arg("orders")
            .filter(|pid| *pid != orders && alive(*pid))
    });
    assert!(!alive(orders));

    // Pause: stopped during its second, running again after it.
    let paused = chaos(&system, &["pause", "payments", "--for", "1s"]);
    let pid = u32::try_from(paused["fault"]["pid"].as_u64().unwrap()).unwrap();
    assert_eq!(Some(pid), system.process_with_arg("payments"));
    wait_until("payments stopped", Duration::from_millis(500), || {
        (state(pid) == 'T').then_some(())
    });
    let status = system.status();
    assert_eq!(status["faults"]["paused"][0]["process"], "payments-1", "{status}");
    wait_until("payments running again", Duration::from_secs(3), || {
        (state(pid) != 'T').then_some(())
    });
    assert!(alive(pid), "a pause is not a kill");
    system.wait_for_line("chaos: resumed payments-1", Duration::from_secs(2));

    // Latency: every product request through the gateway takes 300 ms more, and its server
    // span in the catalog says why.
    let rule = chaos(
        &system,
        &["latency", "catalog", "300ms", "--share", "1", "--for", "60s"],
    );
    assert_eq!(rule["rule"]["kind"], "delay", "{rule}");
    wait_until("a delayed product", Duration::from_secs(10), || {
        let (status, _, took) = products(&system, &[]);
        (status == 200 && took >= Duration::from_millis(300)).then_some(())
    });
    let trace_id = "5c1f1a9e2b8d4c7fa3e6b0d9c8a7f601";
    let traceparent = format!("00-{trace_id}-a1b2c3d4e5f60718-01");
    let (status, product, took) = products(&system, &[("traceparent", &traceparent)]);
    assert_eq!(status, 200, "{product}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let marked = wait_until("the catalog's server span", Duration::from_secs(15), || {
        let out = system.cli(&["trace", trace_id, "--output", "json"]);
        let trace: Value = serde_json::from_slice(&out.stdout).ok()?;
        trace["spans"]
            .as_array()?
            .iter()
            .find(|s| s["service"] == "catalog" && s["kind"] == "server")
            .cloned()
    });
    assert_eq!(marked["attributes"]["flotilla.fault"], "delay 300ms", "{marked}");
    let status = system.status();
    assert_eq!(status["faults"]["rules"]["catalog"][0]["delay_ms"], 300, "{status}");

    // Abort: the catalog answers 503 problem+json without running its handler.
    let abort = chaos(&system, &["abort", "catalog", "--status", "503", "--share", "1"]);
    assert_eq!(abort["rule"]["kind"], "abort", "{abort}");
    let (status, problem, _) = wait_until("an aborted product", Duration::from_secs(10), || {
        let answer = products(&system, &[]);
        (answer.0 == 503).then_some(answer)
    });
    assert_eq!(status, 503);
    assert!(
        problem["type"].as_str().unwrap().starts_with("urn:flotilla:problem:"),
        "{problem}"
    );
    let catalog = system.instances("catalog");
    // At the instance itself, over mTLS as the gateway.
    let (direct, body) = support::Direct::as_service(&system, "gateway", "catalog")
        .get(catalog[0].1.parse().unwrap(), "/api/v1/products/1", None)
        .unwrap();
    assert_eq!(
        (direct, body["type"].as_str()),
        (503, Some("urn:flotilla:problem:fault-injected"))
    );
    // Health checks are on the instance's admin listener (its metrics address).
    let admin = system.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "catalog")
        .and_then(|i| i["metadata"]["metrics.address"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let (ready, _) = json_of(http_request(admin, "GET", "/health/ready", &[], "").unwrap());
    assert_eq!(ready, 200, "health checks are never failed");

    // Status lists every kind of fault, in the table and in JSON.
    let status = system.status();
    let faults = &status["faults"];
    let kinds: Vec<&str> = faults["rules"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["delay", "abort"], "{faults}");
    let recent: Vec<(&str, &str)> = faults["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["process"].as_str().unwrap()))
        .collect();
    assert_eq!(recent, [("pause", "payments-1"), ("kill", "orders-1")], "{faults}");
    let table = cli_ok(&system, &["status"]);
    assert!(table.contains("FAULTS"), "{table}");
    assert!(
        table.contains("catalog: abort 503 on 100% of requests, until cleared"),
        "{table}"
    );
    assert!(table.contains(&format!("orders-1 (pid {orders})")), "{table}");

    // Clear: the rules go, and the catalog answers again (once the gateway's breaker, which
    // the failures may have opened, lets it through).
    let cleared = chaos(&system, &["clear"]);
    assert_eq!(cleared["cleared"].as_array().unwrap().len(), 2, "{cleared}");
    wait_until("the catalog back", Duration::from_secs(30), || {
        (products(&system, &[]).0 == 200).then_some(())
    });
    assert_eq!(system.status()["faults"]["rules"], serde_json::json!({}));
    assert_eq!(system.process_with_arg("orders"), Some(restarted));

    // Every fault is a span of the service `chaos`.
    let names = wait_until("the fault spans", Duration::from_secs(10), || {
        let out = cli_ok(&system, &["traces", "--service", "chaos", "--output", "json"]);
        let list: Value = serde_json::from_str(&out).ok()?;
        let names: Vec<String> = list["traces"]
            .as_array()?
            .iter()
            .filter_map(|t| t["root_name"].as_str().map(str::to_owned))
            .collect();
        (names.len() >= 4).then_some(names)
    });
    for name in [
        "chaos kill orders-1",
        "chaos pause payments-1",
        "chaos latency catalog",
        "chaos abort catalog",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    // A schedule: the same fault again and again, a line with its time for each.
    let out = cli_ok(
        &system,
        &[
            "chaos",
            "pause",
            "shipping",
            "--for",
            "100ms",
            "--every",
            "300ms..400ms",
            "--duration",
            "1500ms",
            "--seed",
            "7",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    let pauses = lines.iter().filter(|l| l.contains("paused shipping-1 (pid")).count();
    assert!((3..=5).contains(&pauses), "{out}");
    assert!(
        lines[0].as_bytes()[2] == b':' && lines[0].as_bytes()[8] == b'.',
        "a time first: {out}"
    );
    assert!(
        lines.last().unwrap().starts_with(&format!("{pauses} faults in ")),
        "{out}"
    );
    let shipping = system.process_with_arg("shipping").unwrap();
    wait_until("shipping running", Duration::from_secs(2), || {
        (state(shipping) != 'T').then_some(())
    });

    // Mistakes are named.
    let err = cli_err(&system, &["chaos", "kill", "nobody"]);
    assert!(err.contains("no process or service `nobody`"), "{err}");
    let err = cli_err(&system, &["chaos", "latency", "catalgo", "100ms"]);
    assert!(err.contains("no service `catalgo` is registered"), "{err}");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::flotilla())
        .args(["chaos", "kill", "orders", "--data-dir"])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no `flotilla up` is running"),
        "{err}"
    );
}
