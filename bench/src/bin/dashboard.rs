//! `bench/dashboard`: how long each dashboard page takes the control plane of a running shop,
//! against the goal of 200 ms a page.
//!
//! `flotilla up` (release, embedded defaults, every trace kept) on free ports; an administrator,
//! stock and a customer set up as `bench/orders` does, then orders placed so the traces, the
//! dependency graph, the event log and the sagas hold something; during the measurement the
//! shop keeps a load of product browsing through the gateway. Signed in with the operator's
//! token, each view is asked for R times in a row over a fresh connection (as a browser's first
//! load), timed from the request to the last byte of the page; the control plane's
//! `/health/live` — a handler that does nothing, on the same server, through the same
//! middleware — is the floor the pages are compared with.
//!
//! Then, when the machine has Chromium and Python's Playwright, the same views in the browser
//! (`bench/ui/page_loads.py`): each loaded R/4 times after a first, timed by the browser's own
//! navigation timing to DOMContentLoaded and to the load event (the stylesheet and script
//! fetched, the page drawn) — what a user waits for.
//!
//! Prints Markdown tables: per view p50, p99 and the largest, the page's size, and p50 over
//! the floor's p50; the browser's figures; then whether every view is within the goal.
//!
//! Usage: dashboard [--rounds 40] [--orders 30] [--load 20] (run through `bench/dashboard`,
//! which builds it)

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_bench::load::Load;
use flotilla_bench::procs::{http_exchange, http_request};
use flotilla_bench::shop::{json, stocked_customer};
use flotilla_bench::system::System;

/// The goal a page's load is held to.
const GOAL: Duration = Duration::from_millis(200);

fn fail(what: &str) -> ! {
    eprintln!("dashboard bench: {what}");
    std::process::exit(1)
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{name} takes a number, not {v}")))
        })
        .unwrap_or(default)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Places `n` orders as the customer; how many were accepted.
fn place_orders(system: &System, token: &str, n: u32) -> u32 {
    let order = r#"{"lines":[{"product_id":1,"quantity":1},{"product_id":2,"quantity":2}],"shipping_address":{"name":"Ana Lima","line1":"Hafenstraße 1","city":"Hamburg","postal_code":"20457","country":"DE"}}"#;
    (0..n)
        .filter(|i| {
            let key = format!("bench-dashboard-{i}");
            let (status, _) = json(http_request(
                system.gateway,
                "POST",
                "/api/v1/orders",
                &[
                    ("Authorization", &format!("Bearer {token}")),
                    ("Content-Type", "application/json"),
                    ("Idempotency-Key", &key),
                ],
                order,
            ));
            status == 202
        })
        .count() as u32
}

/// The session cookie the sign-in form sets for the operator's token.
fn sign_in(system: &System) -> String {
    let token = std::fs::read_to_string(system.data_dir().join("token"))
        .unwrap_or_else(|e| fail(&format!("the operator's token: {e}")));
    let form = format!("credential={}", token.trim());
    let (status, head, _) = http_exchange(
        None,
        system.control,
        "POST",
        "/ui/sign-in",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form,
    )
    .unwrap_or_else(|e| fail(&format!("signing in: {e}")));
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, value)| name.eq_ignore_ascii_case("set-cookie") && value.trim().starts_with("flotilla_session="))
        .and_then(|(_, value)| value.trim().split(';').next().map(str::to_owned))
        .unwrap_or_else(|| fail(&format!("signing in answered {status} without a session cookie")))
}

/// A stored trace's id (the newest of orders'), for the waterfall's page.
fn a_trace(system: &System) -> String {
    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap_or_default();
    let (_, list) = json(http_request(
        system.control,
        "GET",
        "/v1/traces?service=orders&limit=1",
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        "",
    ));
    list["traces"][0]["trace_id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| fail(&format!("no stored trace of orders: {list}")))
}

/// Asks for `path` `rounds` times (after a few to warm up): sorted durations and the size.
fn measure(system: &System, cookie: &str, path: &str, rounds: u32) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for round in 0..rounds + 3 {
        let started = Instant::now();
        let (status, _, body) = http_exchange(None, system.control, "GET", path, &[("Cookie", cookie)], "")
            .unwrap_or_else(|e| fail(&format!("GET {path}: {e}")));
        let took = started.elapsed();
        if status != 200 {
            fail(&format!(
                "GET {path} answered {status}: {}",
                &body[..body.len().min(300)]
            ));
        }
        if round >= 3 {
            times.push(took);
            size = body.len();
        }
    }
    times.sort();
    (times, size)
}

/// The browser's floor: the sign-in form, a page with the same stylesheet and nothing to
/// compute — what loading any page costs this browser on this machine.
const BROWSER_FLOOR: &str = "/ui/sign-in";

/// Per path, the browser's times to DOMContentLoaded and to the load event (ms).
type BrowserTimes = std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)>;

/// The views loaded in Chromium by `bench/ui/page_loads.py`, or why not.
fn in_browser(system: &System, views: &[(&str, String)], rounds: u32) -> Result<BrowserTimes, String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Err("no /usr/bin/chromium".into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/page_loads.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--control")
        .arg(format!("http://{}", system.control))
        .arg("--token-file")
        .arg(system.data_dir().join("token"))
        .arg("--rounds")
        .arg(rounds.to_string())
        .arg(BROWSER_FLOOR)
        .args(views.iter().skip(1).map(|(_, path)| path))
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("the browser run failed").to_owned());
    }
    let found: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the browser run's answer: {e}"))?;
    let list = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_f64)
            .collect()
    };
    Ok(found
        .as_object()
        .into_iter()
        .flatten()
        .map(|(path, times)| (path.clone(), (list(&times["dom_content_loaded"]), list(&times["load"]))))
        .collect())
}

fn main() {
    let rounds = arg("--rounds", 40);
    let orders = arg("--orders", 30);
    let load = arg("--load", 20);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = repo.join("target/release/flotilla");
    let system = System::start_with_env(&binary, &repo, &[], &[("OTEL_TRACES_SAMPLER_ARG", "1")]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    let customer = stocked_customer(&system).unwrap_or_else(|e| fail(&e));
    let placed = place_orders(&system, &customer, orders);
    // The sagas finish, the spans are exported, the metrics are read twice.
    std::thread::sleep(Duration::from_secs(12));
    let trace = a_trace(&system);
    let cookie = sign_in(&system);
    let browsing = Load::start(
        system.gateway,
        load,
        vec![
            (http::Method::GET, "/api/v1/products"),
            (http::Method::GET, "/api/v1/products/1"),
        ],
    );
    let views: Vec<(&str, String)> = vec![
        ("floor: /health/live", "/health/live".to_owned()),
        ("overview", "/ui".to_owned()),
        ("service map", "/ui/map".to_owned()),
        ("service (orders)", "/ui/services/orders".to_owned()),
        ("traces", "/ui/traces".to_owned()),
        ("trace (waterfall)", format!("/ui/traces/{trace}")),
        ("logs", "/ui/logs".to_owned()),
        ("config", "/ui/config".to_owned()),
        ("config key", "/ui/config/gateway/default/routes".to_owned()),
        ("events", "/ui/events".to_owned()),
        ("topic (orders)", "/ui/events/orders".to_owned()),
        ("sagas", "/ui/sagas".to_owned()),
    ];
    let mut rows = Vec::new();
    for (name, path) in &views {
        let (times, size) = measure(&system, &cookie, path, rounds);
        rows.push((*name, path.clone(), times, size));
    }
    let browser = in_browser(&system, &views, (rounds / 4).max(3));
    let report = browsing.stop();
    let floor = rows.first().map_or(Duration::from_micros(1), |r| quantile(&r.2, 0.5));
    println!("## Dashboard pages on the control plane of a running shop\n");
    println!(
        "`flotilla up` (release, embedded defaults), {placed} orders placed, {load} req/s of browsing through the gateway meanwhile ({} requests, {} failed); each page {rounds} times over a fresh connection, request to last byte.\n",
        report.samples.len(),
        report.failures().len()
    );
    println!("| view | p50 | p99 | max | size | p50 / floor |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut over = Vec::new();
    for (name, _, times, size) in &rows {
        let p50 = quantile(times, 0.5);
        let p99 = quantile(times, 0.99);
        println!(
            "| {name} | {} | {} | {} | {:.1} KiB | {:.1}× |",
            ms(p50),
            ms(p99),
            ms(*times.last().unwrap_or(&Duration::ZERO)),
            *size as f64 / 1024.0,
            p50.as_secs_f64() / floor.as_secs_f64().max(1e-6)
        );
        if p99 > GOAL {
            over.push(format!("{name} (p99 {})", ms(p99)));
        }
    }
    println!();
    match &browser {
        Err(why) => println!("In a browser: not measured ({why}).\n"),
        Ok(found) => {
            println!("In Chromium (headless, 1280×800, signed in; the browser's navigation timing):\n");
            println!("| view | DOMContentLoaded p50 | max | load event p50 | max |");
            println!("|---|---:|---:|---:|---:|");
            let floor = ("floor: the sign-in form", BROWSER_FLOOR.to_owned());
            for (name, path) in std::iter::once(&floor).chain(views.iter().skip(1)) {
                let Some(times) = found.get(path) else { continue };
                let (mut ready, mut loaded) = (times.0.clone(), times.1.clone());
                ready.sort_by(f64::total_cmp);
                loaded.sort_by(f64::total_cmp);
                let at = |v: &[f64], q: f64| {
                    v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
                        .copied()
                        .unwrap_or(0.0)
                };
                println!(
                    "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                    at(&ready, 0.5),
                    at(&ready, 1.0),
                    at(&loaded, 0.5),
                    at(&loaded, 1.0)
                );
                if at(&loaded, 1.0) > GOAL.as_secs_f64() * 1000.0 {
                    over.push(format!("{name} in the browser (load {:.1} ms)", at(&loaded, 1.0)));
                }
            }
            println!();
        }
    }
    if over.is_empty() {
        println!("Every view's p99 is within the goal of {}.", ms(GOAL));
    } else {
        println!("Over the goal of {}: {}.", ms(GOAL), over.join(", "));
    }
}
