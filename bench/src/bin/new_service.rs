//! `bench/new-service`: how long from `flotilla new service` to the first answer through the
//! gateway of a running system, as a new user would do it: `up` runs the shop; the service is
//! scaffolded into a fresh directory outside the workspace, built on the checkout's SDK, and
//! added to the manifest and routes, which `up` follows. Two services in one run: the first
//! may compile the SDK's dependencies (cold unless an earlier run left them in
//! `target/scaffolded`), the second shows the warm build every later service gets.
//!
//! Prints, per service: scaffold + build seconds, seconds from the manifest entry to the first
//! answer through the gateway (401: routed, registered, checking tokens), and the total; and
//! the lines of start-up code the service has beyond its handlers.
//!
//! Usage: new_service

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_bench::procs::http_get;
use flotilla_bench::system::System;

fn fail(what: &str) -> ! {
    eprintln!("new-service bench: {what}");
    std::process::exit(1)
}

/// Lines of code that are not module declarations, comments or blank.
fn start_up_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("pub mod "))
        .count()
}

struct Timing {
    name: &'static str,
    build: f64,
    to_answer: f64,
    lines: usize,
}

fn add(system: &System, work: &Path, name: &'static str, target: &Path, binary: &Path) -> Timing {
    let dir = work.join(name);
    eprintln!("… flotilla new service {name}");
    let started = Instant::now();
    let out = Command::new(binary)
        .current_dir(system.dir.path())
        .args(["new", "service", name, "--path"])
        .arg(&dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap_or_else(|e| fail(&format!("running flotilla new service: {e}")));
    if !out.status.success() {
        fail(&format!(
            "flotilla new service {name}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let total = started.elapsed();
    // The command waits for the first answer itself and says how long each part took.
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let number_before = |marker: &str| -> Option<f64> {
        let at = said.find(marker)?;
        let head = said[..at].trim_end().trim_end_matches('s');
        let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.'))? + 1;
        head[start..].parse().ok()
    };
    let to_answer = number_before("after it was added").unwrap_or_else(|| {
        fail(&format!(
            "flotilla new service {name} did not say when it answered:\n{said}"
        ))
    });
    // Still answering through the gateway now.
    match http_get(system.gateway, &format!("/api/v1/{name}")) {
        Ok((401, _)) => {}
        other => fail(&format!("{name} through the gateway: {other:?}")),
    }
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    Timing {
        name,
        build: total.as_secs_f64() - to_answer,
        to_answer,
        lines: start_up_lines(&read("src/main.rs")) + start_up_lines(&read("src/lib.rs")),
    }
}

fn main() {
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/new-service");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = repo.join("target/scaffolded");
    eprintln!("… starting the shop");
    let system = System::start(&binary, &repo, &[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let work = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let timings: Vec<Timing> = ["reviews", "ratings"]
        .into_iter()
        .map(|name| add(&system, work.path(), name, &target, &binary))
        .collect();
    println!("| service | scaffold + build | manifest entry → first answer | total | start-up lines |");
    println!("|---|---:|---:|---:|---:|");
    for (t, build) in timings.iter().zip(["first build", "warm build"]) {
        println!(
            "| {} ({build}) | {:.1} s | {:.2} s | {:.1} s | {} |",
            t.name,
            t.build,
            t.to_answer,
            t.build + t.to_answer,
            t.lines
        );
    }
}
