//! `bench/footprint`: what each Flotilla process costs, the source of the Kubernetes
//! manifests' resource requests and limits.
//!
//! 1. The image's size: the release `flotilla` binary as built, stripped (as the Dockerfile
//!    does), and the stripped binary gzipped at level 9 — an estimate of the image's own
//!    compressed layer, which comes on top of the distroless cc-debian12 base.
//! 2. At rest: `flotilla up` with the shipped manifest on embedded defaults, on free ports in a
//!    temp dir; once every instance is ready (and an administrator, stock and a customer are
//!    set up as `bench/orders` does), each process's RSS (`VmRSS`) and CPU (utime + stime) read
//!    from `/proc` every second for S seconds.
//! 3. Under load: C clients in a closed loop through the gateway, paced to R orders a second
//!    in all, each round a page of products, one product, an order placed (its own
//!    `Idempotency-Key`; the saga takes it to CONFIRMED) and the previous order read back;
//!    beside them a customer signs in twice a second and a new account signs up every 5 s.
//!    The same readings over the load's D seconds; a consumer group on topic `orders` counts
//!    the confirmations. The default rate (30 orders/s, `bench/chaos`'s) is one the shop keeps
//!    up with on 2 cores: unpaced (`--rate 0`, as fast as the clients go) placements take
//!    orders' database from the saga, which then barely moves until the load stops, and the
//!    saga's services and the event log look idle.
//!
//! Prints Markdown: the sizes, the load achieved, per process RSS and CPU at rest and under
//! load (average and the p99 of 1-second windows), and requests/limits derived by the rule it
//! prints beside them.
//!
//! Usage: footprint [--rest-seconds 30] [--load-seconds 30] [--clients 8] [--rate 30]
//! (run through `bench/footprint`, which builds it)

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::events::EventsClient;
use flotilla_bench::orders::{watch, Settled};
use flotilla_bench::procs::{cpu_seconds, descendants, http_request};
use flotilla_bench::shop::token_form;
use flotilla_bench::system::System;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const MIB: f64 = 1024.0 * 1024.0;

/// The processes of the shipped manifest, in the order the tables list them.
const ORDER: &[&str] = &[
    "control",
    "gateway",
    "catalog",
    "identity",
    "inventory",
    "payments",
    "shipping",
    "orders",
    "notifications",
    "up (supervisor)",
];

fn fail(what: &str) -> ! {
    eprintln!("footprint bench: {what}");
    std::process::exit(1)
}

// ---------------------------------------------------------------------------------------------
// 1. The binary.

struct Sizes {
    unstripped: u64,
    stripped: u64,
    gzipped: u64,
}

fn sizes(binary: &Path) -> Sizes {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let copy = dir.path().join("flotilla");
    std::fs::copy(binary, &copy).unwrap_or_else(|e| fail(&format!("copying {}: {e}", binary.display())));
    let unstripped = std::fs::metadata(binary).map_or(0, |m| m.len());
    let stripped = Command::new("strip").arg(&copy).status().is_ok_and(|s| s.success())
        || Command::new("objcopy")
            .arg("--strip-all")
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        fail("neither strip nor objcopy --strip-all worked (install binutils)");
    }
    let gzip = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| fail(&format!("gzip: {e}")));
    if !gzip.status.success() {
        fail("gzip -9 failed");
    }
    Sizes {
        unstripped,
        stripped: std::fs::metadata(&copy).map_or(0, |m| m.len()),
        gzipped: gzip.stdout.len() as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Readings from /proc.

/// One process at one moment.
#[derive(Clone, Copy)]
struct Reading {
    pid: u32,
    rss_kib: u64,
    hwm_kib: u64,
    cpu: f64,
}

/// Every process at one moment, by name, and the machine's busy and total jiffies.
struct Tick {
    at: Instant,
    procs: BTreeMap<String, Reading>,
    machine: (u64, u64),
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One process's memory by kind, KiB: resident in all, of it file pages (the binary and
/// libraries, shared by every process that maps them) and anonymous pages (its own heap and
/// stacks), and its proportional share (PSS: each shared page divided among the processes
/// mapping it).
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    file: u64,
    anon: u64,
    pss: u64,
}

/// [`Memory`] of `up` and every process it runs, by name.
fn memory(up: u32) -> Vec<(String, Memory)> {
    processes(up)
        .into_iter()
        .map(|(name, pid)| {
            let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|rollup| {
                    rollup
                        .lines()
                        .find_map(|l| l.strip_prefix("Pss:"))?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let memory = Memory {
                rss: status_kib(pid, "VmRSS").unwrap_or(0),
                file: status_kib(pid, "RssFile").unwrap_or(0) + status_kib(pid, "RssShmem").unwrap_or(0),
                anon: status_kib(pid, "RssAnon").unwrap_or(0),
                pss,
            };
            (name, memory)
        })
        .collect()
}

/// What a process runs: `flotilla service orders --…` → `orders`, `flotilla gateway …` →
/// `gateway`, anything else by its program's name.
fn name_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split('\0');
    let program = args.next().filter(|p| !p.is_empty())?;
    let words: Vec<&str> = args.take_while(|a| !a.is_empty() && !a.starts_with('-')).collect();
    Some(match words.as_slice() {
        ["service", name, ..] => (*name).to_owned(),
        [] => Path::new(program)
            .file_name()
            .map_or_else(|| format!("pid {pid}"), |n| n.to_string_lossy().into_owned()),
        words => words.join(" "),
    })
}

/// `up` and every process it runs, by name (a second process of the same name gets `#2`).
fn processes(up: u32) -> Vec<(String, u32)> {
    let mut out = vec![("up (supervisor)".to_owned(), up)];
    let mut kids: Vec<u32> = descendants(up);
    kids.sort_unstable();
    for pid in kids {
        let Some(name) = name_of(pid) else { continue };
        let mut unique = name.clone();
        let mut n = 1;
        while out.iter().any(|(other, _)| *other == unique) {
            n += 1;
            unique = format!("{name} #{n}");
        }
        out.push((unique, pid));
    }
    out
}

/// The machine's busy and total jiffies (all cores), from `/proc/stat`.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn tick(up: u32) -> Tick {
    let at = Instant::now();
    let machine = machine_jiffies();
    let procs = processes(up)
        .into_iter()
        .filter_map(|(name, pid)| {
            let rss_kib = status_kib(pid, "VmRSS")?;
            let reading = Reading {
                pid,
                rss_kib,
                hwm_kib: status_kib(pid, "VmHWM").unwrap_or(rss_kib),
                cpu: cpu_seconds(pid),
            };
            Some((name, reading))
        })
        .collect();
    Tick { at, procs, machine }
}

/// Reads every process once a second on a thread of its own until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Tick>>,
}

impl Sampler {
    fn start(up: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut ticks = vec![tick(up)];
            let mut n = 1u32;
            while !flag.load(Ordering::SeqCst) {
                let due = began + Duration::from_secs(u64::from(n));
                while Instant::now() < due && !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(
                        due.saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(50)),
                    );
                }
                if Instant::now() >= due {
                    ticks.push(tick(up));
                    n += 1;
                }
            }
            ticks.push(tick(up));
            ticks
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<Tick> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

/// One process over one window.
#[derive(Clone, Copy, Default)]
struct Figures {
    rss_max_mib: f64,
    cpu_avg_m: f64,
    cpu_p99_m: f64,
    hwm_mib: f64,
    restarted: bool,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

/// Per process: RSS max over the readings, CPU millicores over the window and the p99 of
/// its 1-second intervals (intervals across a restart, where the pid changed, are left out).
fn figures(ticks: &[Tick]) -> BTreeMap<String, Figures> {
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    let mut cpu: HashMap<&str, (f64, f64, Vec<f64>)> = HashMap::new();
    for tick in ticks {
        for (name, r) in &tick.procs {
            let f = out.entry(name.clone()).or_default();
            f.rss_max_mib = f.rss_max_mib.max(r.rss_kib as f64 / 1024.0);
            f.hwm_mib = f.hwm_mib.max(r.hwm_kib as f64 / 1024.0);
        }
    }
    for pair in ticks.windows(2) {
        let dt = pair[1].at.duration_since(pair[0].at).as_secs_f64();
        if dt <= 0.0 {
            continue;
        }
        for (name, after) in &pair[1].procs {
            match pair[0].procs.get(name) {
                Some(before) if before.pid == after.pid => {
                    let used = (after.cpu - before.cpu).max(0.0);
                    let entry = cpu.entry(name.as_str()).or_default();
                    entry.0 += used;
                    entry.1 += dt;
                    // A last, short interval (the stop) is too coarse for a 1-second window.
                    if dt >= 0.5 {
                        entry.2.push(used / dt * 1000.0);
                    }
                }
                Some(_) => {
                    if let Some(f) = out.get_mut(name) {
                        f.restarted = true;
                    }
                }
                None => {}
            }
        }
    }
    for (name, (used, seconds, mut windows)) in cpu {
        if let Some(f) = out.get_mut(name) {
            f.cpu_avg_m = if seconds > 0.0 { used / seconds * 1000.0 } else { 0.0 };
            windows.sort_by(f64::total_cmp);
            f.cpu_p99_m = quantile(&windows, 0.99);
        }
    }
    out
}

/// The machine's cores busy on average over the readings.
fn machine_busy(ticks: &[Tick]) -> f64 {
    let (Some(first), Some(last)) = (ticks.first(), ticks.last()) else {
        return 0.0;
    };
    let busy = last.machine.0.saturating_sub(first.machine.0) as f64;
    let total = last.machine.1.saturating_sub(first.machine.1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if total > 0.0 {
        busy / total * cores
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Setting the shop up (as `bench/orders` does).

/// Waits until the gateway serves the catalog and every service of the manifest has a
/// passing instance.
fn wait_ready(system: &System) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = system.status();
        let passing = |service: &str| {
            status["instances"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|i| i["service"] == service && i["health"].as_str() == Some("passing"))
            })
        };
        let services_ready = ORDER[2..9].iter().all(|s| passing(s));
        let gateway_ready =
            http_request(system.gateway, "GET", "/api/v1/products", &[], "").is_ok_and(|(s, _)| s == 200);
        if services_ready && gateway_ready {
            return;
        }
        if Instant::now() > deadline {
            fail(&format!("not every instance was ready within 120 s: {status}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The customer's token once the shop is stocked (as `bench/orders` does).
fn prepare(system: &System) -> String {
    flotilla_bench::shop::stocked_customer(system).unwrap_or_else(|e| fail(&e))
}

// ---------------------------------------------------------------------------------------------
// 3. The load.

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// What the load did.
#[derive(Default)]
struct Tally {
    requests: u64,
    orders: Vec<String>,
    sign_ins: u64,
    sign_ups: u64,
    /// Unexpected answers by request and status (or error).
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.orders.extend(other.orders);
        self.sign_ins += other.sign_ins;
        self.sign_ups += other.sign_ups;
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }

    fn failed(&mut self, what: &str, why: String) {
        *self.failures.entry(format!("{what} → {why}")).or_default() += 1;
    }
}

/// One request: the status and body, or why there was none.
async fn send(
    client: &HttpClient,
    method: http::Method,
    uri: String,
    headers: &[(&str, &str)],
    body: String,
) -> Result<(u16, Bytes), String> {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .map_err(|_| "no answer in 20 s".to_owned())?
        .map_err(|e| format!("no answer ({e})"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Sends one request and counts it; the body when the status is the expected one.
async fn expect(
    tally: &mut Tally,
    client: &HttpClient,
    what: &str,
    want: u16,
    (method, uri): (http::Method, String),
    headers: &[(&str, &str)],
    body: String,
) -> Option<Bytes> {
    tally.requests += 1;
    match send(client, method, uri, headers, body).await {
        Ok((status, body)) if status == want => Some(body),
        Ok((status, body)) => {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            tally.failed(what, format!("{status} {}", answer["type"].as_str().unwrap_or("")));
            None
        }
        Err(why) => {
            tally.failed(what, why);
            None
        }
    }
}

/// A customer's round: a page of products, one product, an order placed, the previous order read.
async fn shopper(
    client: HttpClient,
    gateway: String,
    token: String,
    worker: usize,
    until: Instant,
    pace: Option<Duration>,
) -> Tally {
    let mut tally = Tally::default();
    let bearer = format!("Bearer {token}");
    let mut previous: Option<String> = None;
    let mut tick = pace.map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut n = 0u64;
    while Instant::now() < until {
        if let Some(tick) = tick.as_mut() {
            tick.tick().await;
            if Instant::now() >= until {
                break;
            }
        }
        n += 1;
        let product = 1 + (worker as u64 * 7 + n) % 20;
        let page = 1 + n % 3;
        let get = http::Method::GET;
        expect(
            &mut tally,
            &client,
            "GET /api/v1/products",
            200,
            (get.clone(), format!("http://{gateway}/api/v1/products?page={page}")),
            &[],
            String::new(),
        )
        .await;
        expect(
            &mut tally,
            &client,
            "GET /api/v1/products/{id}",
            200,
            (get.clone(), format!("http://{gateway}/api/v1/products/{product}")),
            &[],
            String::new(),
        )
        .await;
        let key = format!("footprint-{worker}-{n}");
        let order = format!(
            r#"{{"lines":[{{"product_id":{product},"quantity":1}}],"shipping_address":{{"name":"Bench","line1":"Kai 1","city":"Hamburg","postal_code":"20457","country":"DE"}}}}"#
        );
        let placed = expect(
            &mut tally,
            &client,
            "POST /api/v1/orders",
            202,
            (http::Method::POST, format!("http://{gateway}/api/v1/orders")),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("idempotency-key", &key),
            ],
            order,
        )
        .await;
        if let Some(body) = placed {
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match answer["id"].as_str() {
                Some(id) => tally.orders.push(id.to_owned()),
                None => tally.failed("POST /api/v1/orders", "202 without an id".into()),
            }
        }
        if let Some(id) = previous.take() {
            expect(
                &mut tally,
                &client,
                "GET /api/v1/orders/{id}",
                200,
                (get, format!("http://{gateway}/api/v1/orders/{id}")),
                &[("authorization", &bearer)],
                String::new(),
            )
            .await;
        }
        previous = tally.orders.last().cloned();
    }
    tally
}

/// A customer signing in twice a second, and a new account every 5 s (each an argon2 hash).
async fn sign_ins(client: HttpClient, gateway: String, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= until {
            break;
        }
        n += 1;
        let form = ("content-type", "application/x-www-form-urlencoded");
        let uri = format!("http://{gateway}/oauth2/token");
        let body = token_form("bench@example.com", "correct horse battery");
        if expect(
            &mut tally,
            &client,
            "POST /oauth2/token",
            200,
            (http::Method::POST, uri),
            &[form],
            body,
        )
        .await
        .is_some()
        {
            tally.sign_ins += 1;
        }
        if n % 10 == 1 {
            let body = format!(
                r#"{{"email":"load-{}-{n}@example.com","password":"correct horse battery","name":"Load"}}"#,
                std::process::id()
            );
            let uri = format!("http://{gateway}/api/v1/accounts");
            let json = ("content-type", "application/json");
            if expect(
                &mut tally,
                &client,
                "POST /api/v1/accounts",
                202,
                (http::Method::POST, uri),
                &[json],
                body,
            )
            .await
            .is_some()
            {
                tally.sign_ups += 1;
            }
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------------
// 4. Requests and limits.

/// CPU request: the average under load rounded up — to 10m below 100m, to 50m below 1000m,
/// to 100m above; at least 10m.
fn cpu_request(avg_m: f64) -> u64 {
    let m = avg_m.max(10.0).ceil() as u64;
    let step = match m {
        0..=100 => 10,
        101..=1000 => 50,
        _ => 100,
    };
    m.div_ceil(step) * step
}

/// Rounds MiB up to a multiple of 16 Mi.
fn mi16(mib: f64) -> u64 {
    (mib.max(1.0).ceil() as u64).div_ceil(16) * 16
}

/// Memory request: the larger RSS of rest and load × 1.25, rounded up to 16Mi.
fn memory_request(rest: &Figures, load: &Figures) -> u64 {
    mi16(rest.rss_max_mib.max(load.rss_max_mib) * 1.25)
}

/// Memory limit: 2 × the request, at least 128Mi, and at least the lifetime peak × 1.25.
fn memory_limit(request: u64, load: &Figures) -> u64 {
    (2 * request).max(128).max(mi16(load.hwm_mib * 1.25))
}

/// A CPU limit for where one is required: the larger of the 1-second p99 and 2 × the request,
/// rounded up to 100m.
fn cpu_limit_if_required(request: u64, load: &Figures) -> u64 {
    let m = (load.cpu_p99_m.ceil() as u64).max(2 * request);
    m.div_ceil(100).max(1) * 100
}

// ---------------------------------------------------------------------------------------------

struct Options {
    rest: u64,
    load: u64,
    clients: usize,
    rate: Option<f64>,
}

fn options() -> Options {
    let mut o = Options {
        rest: 30,
        load: 30,
        clients: 8,
        rate: Some(30.0),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v >= 0.0);
        match (arg.as_str(), value) {
            ("--rest-seconds", Some(v)) if v >= 1.0 => o.rest = v as u64,
            ("--load-seconds", Some(v)) if v >= 1.0 => o.load = v as u64,
            ("--clients", Some(v)) if v >= 1.0 => o.clients = v as usize,
            ("--rate", Some(v)) => o.rate = (v > 0.0).then_some(v),
            _ => fail("usage: footprint [--rest-seconds S] [--load-seconds D] [--clients C] [--rate R (0: unpaced)]"),
        }
    }
    o
}

fn rank(name: &str) -> (usize, String) {
    (
        ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len()),
        name.to_owned(),
    )
}

fn main() {
    let o = options();
    let binary = flotilla_bench::procs::flotilla_beside_me("bench/footprint");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");

    eprintln!("… sizing {}", binary.display());
    let size = sizes(&binary);

    eprintln!("… starting the shop");
    let mut system = System::start(&binary, &repo, &[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(120));
    wait_ready(&system);
    let token = prepare(&system);
    let up = system.child.id();
    // Let the start-up and the setup's sign-ins (argon2) die down.
    std::thread::sleep(Duration::from_secs(10));

    eprintln!("… at rest for {} s", o.rest);
    let sampler = Sampler::start(up);
    std::thread::sleep(Duration::from_secs(o.rest));
    let rest_ticks = sampler.stop();
    let shared_at_rest = memory(up);

    let control_token = system.operator_token();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let settled: Settled = Arc::default();
    let me_before = cpu_seconds(std::process::id());
    let (tally, load_ticks, seconds, ended, me_used) = runtime.block_on(async {
        let events = EventsClient::new(&system.control.to_string(), control_token);
        tokio::spawn(watch(events, settled.clone()));
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let gateway = system.gateway.to_string();
        match o.rate {
            Some(rate) => eprintln!("… {} clients, at most {rate} orders/s, for {} s", o.clients, o.load),
            None => eprintln!("… {} clients as fast as they go, for {} s", o.clients, o.load),
        }
        let pace = o.rate.map(|r| Duration::from_secs_f64(o.clients as f64 / r));
        let sampler = Sampler::start(up);
        let began = Instant::now();
        let until = began + Duration::from_secs(o.load);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..o.clients {
            tasks.spawn(shopper(
                client.clone(),
                gateway.clone(),
                token.clone(),
                worker,
                until,
                pace,
            ));
        }
        tasks.spawn(sign_ins(client.clone(), gateway.clone(), until));
        let mut tally = Tally::default();
        while let Some(done) = tasks.join_next().await {
            if let Ok(t) = done {
                tally.merge(t);
            }
        }
        let ended = Instant::now();
        let ticks = sampler.stop();
        let me_used = cpu_seconds(std::process::id()) - me_before;
        (tally, ticks, ended.duration_since(began).as_secs_f64(), ended, me_used)
    });

    eprintln!(
        "… {} orders accepted; waiting up to 120 s for them to settle",
        tally.orders.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |until: Option<Instant>| {
        let s = settled.lock().map(|s| s.clone()).unwrap_or_default();
        let confirmed = tally
            .orders
            .iter()
            .filter(|id| s.get(*id).is_some_and(|(at, ok)| *ok && until.is_none_or(|u| *at <= u)))
            .count();
        let cancelled = tally
            .orders
            .iter()
            .filter(|id| s.get(*id).is_some_and(|(_, ok)| !*ok))
            .count();
        (confirmed, cancelled)
    };
    runtime.block_on(async {
        loop {
            let (confirmed, cancelled) = count(None);
            if confirmed + cancelled >= tally.orders.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let (confirmed_in_window, _) = count(Some(ended));
    let (confirmed, cancelled) = count(None);
    let settle_seconds = settled
        .lock()
        .ok()
        .and_then(|s| tally.orders.iter().filter_map(|id| s.get(id).map(|(at, _)| *at)).max())
        .map_or(0.0, |last| last.saturating_duration_since(ended).as_secs_f64());
    let final_ticks = vec![tick(up)];
    system.interrupt(Duration::from_secs(30));
    drop(runtime);

    // ---- print
    let rest = figures(&rest_ticks);
    let load = figures(&load_ticks);
    let lifetime = figures(&final_ticks);
    let mut names: Vec<&String> = rest.keys().chain(load.keys()).collect();
    names.sort_by_key(|n| rank(n));
    names.dedup();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("## Image size\n");
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| `target/release/flotilla` as built | {:.1} MiB |",
        size.unstripped as f64 / MIB
    );
    println!(
        "| stripped (`strip`, as the Dockerfile does) | {:.1} MiB |",
        size.stripped as f64 / MIB
    );
    println!(
        "| stripped, `gzip -9` (the image's own compressed layer, estimated) | **{:.1} MiB** |",
        size.gzipped as f64 / MIB
    );
    println!(
        "\nThe image is that layer on top of `gcr.io/distroless/cc-debian12:nonroot` (≈ 23 MiB, not measured here)."
    );

    println!("\n## Load achieved\n");
    println!("| figure | value |");
    println!("|---|---|");
    match o.rate {
        Some(rate) => println!(
            "| clients (closed loop, paced to ≤ {rate} orders/s) × seconds | {} × {seconds:.0} |",
            o.clients
        ),
        None => println!("| clients (closed loop) × seconds | {} × {seconds:.0} |", o.clients),
    }
    println!(
        "| requests through the gateway | {} ({:.0}/s) |",
        tally.requests,
        tally.requests as f64 / seconds
    );
    println!(
        "| orders accepted (202) | {} ({:.1}/s) |",
        tally.orders.len(),
        tally.orders.len() as f64 / seconds
    );
    println!(
        "| orders confirmed within the window / in all | {confirmed_in_window} ({:.1}/s) / {confirmed} (the last {settle_seconds:.1} s after the load) |",
        confirmed_in_window as f64 / seconds
    );
    println!(
        "| orders cancelled / never settled | {cancelled} / {} |",
        tally.orders.len() - confirmed - cancelled
    );
    println!(
        "| sign-ins (argon2) / sign-ups | {} / {} |",
        tally.sign_ins, tally.sign_ups
    );
    let failures: Vec<String> = tally.failures.iter().map(|(k, n)| format!("{n} × {k}")).collect();
    println!(
        "| failed or unexpected answers | {} |",
        if failures.is_empty() {
            "none".to_owned()
        } else {
            failures.join(", ")
        }
    );
    let shop_m = |f: &BTreeMap<String, Figures>| f.values().map(|f| f.cpu_avg_m).sum::<f64>();
    let me_m = me_used / seconds * 1000.0;
    let (busy_rest, busy_load) = (machine_busy(&rest_ticks) * 1000.0, machine_busy(&load_ticks) * 1000.0);
    println!(
        "| machine busy at rest / under load | {:.0}m / {:.0}m of {cores} cores (the load generator {me_m:.0}m) |",
        busy_rest, busy_load
    );
    println!(
        "| of which neither the shop nor the load generator (other work on the machine) | {:.0}m / {:.0}m |",
        (busy_rest - shop_m(&rest)).max(0.0),
        (busy_load - shop_m(&load) - me_m).max(0.0)
    );

    println!("\n## Per process\n");
    println!(
        "| process | RSS rest | CPU rest (m) | RSS load (max) | CPU load avg (m) | CPU load p99 1s (m) | RSS peak (VmHWM) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let zero = Figures::default();
    let mut totals = [0.0f64; 5];
    for name in &names {
        let (r, l) = (rest.get(*name).unwrap_or(&zero), load.get(*name).unwrap_or(&zero));
        let hwm = lifetime.get(*name).map_or(l.hwm_mib, |f| f.hwm_mib.max(l.hwm_mib));
        let restarted = if r.restarted || l.restarted { " (restarted)" } else { "" };
        println!(
            "| {name}{restarted} | {:.1} MiB | {:.0} | {:.1} MiB | {:.0} | {:.0} | {hwm:.1} MiB |",
            r.rss_max_mib, r.cpu_avg_m, l.rss_max_mib, l.cpu_avg_m, l.cpu_p99_m
        );
        for (total, v) in totals
            .iter_mut()
            .zip([r.rss_max_mib, r.cpu_avg_m, l.rss_max_mib, l.cpu_avg_m, hwm])
        {
            *total += v;
        }
    }
    println!(
        "| **all** | {:.1} MiB | {:.0} | {:.1} MiB | {:.0} | | {:.1} MiB |",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    );

    println!("\n## Memory at rest: what is shared\n");
    println!("| process | RSS | of which file pages (the binary, libraries: shared) | anonymous (its own) | PSS (shared pages divided among the processes) |");
    println!("|---|---:|---:|---:|---:|");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut sum = Memory::default();
    for (name, m) in &shared_at_rest {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            mib(m.rss),
            mib(m.file),
            mib(m.anon),
            mib(m.pss)
        );
        sum.rss += m.rss;
        sum.file += m.file;
        sum.anon += m.anon;
        sum.pss += m.pss;
    }
    println!(
        "| **all** | {:.1} MiB | {:.1} MiB | {:.1} MiB | **{:.1} MiB** |",
        mib(sum.rss),
        mib(sum.file),
        mib(sum.anon),
        mib(sum.pss)
    );
    println!(
        "\nThe sum of RSS counts the one binary's pages once per process; PSS counts each page once in all: the shop's memory is the PSS sum."
    );

    println!("\n## Suggested requests and limits\n");
    println!("| process | cpu request | memory request | memory limit | cpu limit |");
    println!("|---|---:|---:|---:|---:|");
    for name in &names {
        if name.as_str() == "up (supervisor)" {
            continue;
        }
        let (r, l) = (rest.get(*name).unwrap_or(&zero), load.get(*name).unwrap_or(&zero));
        let mut l = *l;
        l.hwm_mib = lifetime.get(*name).map_or(l.hwm_mib, |f| f.hwm_mib.max(l.hwm_mib));
        let cpu = cpu_request(l.cpu_avg_m);
        let memory = memory_request(r, &l);
        println!(
            "| {name} | {cpu}m | {memory}Mi | {}Mi | none (if one is required: {}m) |",
            memory_limit(memory, &l),
            cpu_limit_if_required(cpu, &l)
        );
    }
    println!(
        "\nRule: cpu request = CPU load avg rounded up (to 10m below 100m, to 50m below 1000m, to \
         100m above; at least 10m). Memory request = the larger RSS of rest and load × 1.25, \
         rounded up to 16Mi. Memory limit = 2 × the request, at least 128Mi and at least the \
         lifetime RSS peak (VmHWM) × 1.25. No CPU limit: a CFS quota throttles a bursty tokio \
         process for the rest of its 100 ms period (argon2 sign-ins, start-up migrations, saga \
         catch-up) and shows up as tail latency, while the request already guarantees its share \
         under contention; where a LimitRange demands one, the larger of the 1-second p99 and \
         2 × the request, rounded up to 100m. `up (supervisor)` runs only outside Kubernetes."
    );
}
