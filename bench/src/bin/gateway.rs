//! `bench/gateway`: the Flotilla gateway beside nginx and haproxy, each a proxy to the same
//! small fast upstream, one worker each, pinned to the same core; the upstream and the load
//! generators share the other core. For each proxy it prints requests/s at fixed concurrency
//! (wrk, closed loop), p50/p99/p99.9 at a fixed rate below the knee (open loop, latency from
//! when each request was due), proxy CPU (and CPU per request, steadier than requests/s on a
//! noisy machine) and RSS, and the ratios to nginx; then the gateway's RSS with 1,000
//! connections open. `floor` (bench/src/bin/floor.rs), a proxy that only parses and copies,
//! runs beside them as a yardstick for what the kernel and the runtime cost on their own.
//!
//! Usage: gateway [--seconds S] [--connections N] [--rate R]   (run through `bench/gateway`)

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_bench::load::Load;
use flotilla_bench::procs::{cpu_seconds, free_addr, http_get};

struct Options {
    seconds: u64,
    connections: u32,
    rate: u32,
    /// Alternating off/on runs in the tracing comparison.
    rounds: u32,
    /// Only the tracing comparison.
    tracing_only: bool,
}

struct Figures {
    name: &'static str,
    rps: f64,
    wrk_p50: String,
    wrk_p99: String,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    failed: usize,
    cpu: f64,
    rss_kb: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--otlp-sink") {
        return otlp_sink(
            args.next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| fail("--otlp-sink ADDR")),
        );
    }
    let mut o = Options {
        seconds: 10,
        connections: 50,
        rate: 5_000,
        rounds: 3,
        tracing_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tracing-only" {
            o.tracing_only = true;
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--seconds", Some(v)) => o.seconds = v,
            ("--connections", Some(v)) => o.connections = v as u32,
            ("--rate", Some(v)) => o.rate = v as u32,
            ("--rounds", Some(v)) => o.rounds = v.max(1) as u32,
            _ => {
                eprintln!("usage: gateway [--seconds S] [--connections N] [--rate R] [--rounds N] [--tracing-only]");
                std::process::exit(2);
            }
        }
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let upstream_addr = free_addr();
    let _upstream = Guard(pinned("0", &bin.join("upstream"), &[&upstream_addr.to_string()], &[]));
    wait_ready(upstream_addr, "/");
    println!(
        "gateway: {} connections for {} s (wrk), then {} requests/s for {} s (open loop); proxies pinned to core 1\n",
        o.connections, o.seconds, o.rate, o.seconds
    );

    if o.tracing_only {
        print_tracing_cost(&tracing_cost(&bin, dir.path(), upstream_addr, &o));
        return;
    }
    let mut all = Vec::new();
    for name in ["flotilla", "nginx", "haproxy", "floor"] {
        eprintln!("… {name}");
        let addr = free_addr();
        let child = start_proxy(name, &bin, dir.path(), addr, upstream_addr);
        let proxy = Guard(child);
        wait_ready(addr, "/");
        all.push(measure(name, &proxy.0, addr, &o));
    }
    let nginx = all
        .iter()
        .find(|f| f.name == "nginx")
        .map(|f| (f.rps, f.p99))
        .unwrap_or((1.0, Duration::ZERO));
    println!("| proxy | requests/s (wrk) | wrk p50 / p99 | p50 / p99 / p99.9 at {} req/s | failed | proxy CPU | CPU per request | proxy RSS | throughput vs nginx | p99 vs nginx |", o.rate);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &all {
        println!(
            "| {} | {:.0} | {} / {} | {:.2} / {:.2} / {:.2} ms | {} | {:.0} % | {:.1} µs | {:.1} MB | {:.2} × | {:.2} × |",
            f.name,
            f.rps,
            f.wrk_p50,
            f.wrk_p99,
            ms(f.p50),
            ms(f.p99),
            ms(f.p999),
            f.failed,
            f.cpu * 100.0,
            f.cpu / f.rps.max(1.0) * 1e6,
            f.rss_kb as f64 / 1024.0,
            f.rps / nginx.0,
            ms(f.p99) / ms(nginx.1).max(1e-9),
        );
    }

    eprintln!("… flotilla with JWT, a rate limit and access logs");
    let (rps, p50, p99) = with_policies(&bin, dir.path(), upstream_addr, &o);
    println!(
        "\n| flotilla with JWT verification, a rate limit and access logs | {rps:.0} requests/s | wrk p50 / p99 {p50} / {p99} | {:.2} × nginx plain |",
        rps / nginx.0
    );

    print_tracing_cost(&tracing_cost(&bin, dir.path(), upstream_addr, &o));

    eprintln!("… 1,000 open connections");
    let addr = free_addr();
    let gateway = Guard(start_proxy("flotilla", &bin, dir.path(), addr, upstream_addr));
    wait_ready(addr, "/");
    let idle = rss_kb(gateway.0.id());
    let conns = open_connections(addr, 1_000);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "\nflotilla gateway RSS: {:.1} MB idle, {:.1} MB with {} connections open (each has made a request)",
        idle as f64 / 1024.0,
        rss_kb(gateway.0.id()) as f64 / 1024.0,
        conns.len()
    );
}

/// Throughput and CPU per request of tracing off and on, one entry per round.
struct TracingCost {
    /// (requests/s, µs of gateway CPU per request) with no tracing at all.
    off: Vec<(f64, f64)>,
    /// The same with spans recorded and exported at the default sampling.
    on: Vec<(f64, f64)>,
    /// Spans the collector received during the "on" runs.
    stored: usize,
}

/// `--otlp-sink ADDR`: an OTLP/HTTP collector that decodes each export, counts its spans
/// (`GET /count`) and keeps nothing.
fn otlp_sink(addr: SocketAddr) {
    use prost::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SPANS: AtomicUsize = AtomicUsize::new(0);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        fail("a runtime for the sink");
    };
    runtime.block_on(async move {
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    let request =
                        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                            .unwrap_or_default();
                    let spans: usize = request
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .map(|s| s.spans.len())
                        .sum();
                    SPANS.fetch_add(spans, Ordering::Relaxed);
                    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::default()
                        .encode_to_vec()
                }),
            )
            .route(
                "/count",
                axum::routing::get(|| async { SPANS.load(Ordering::Relaxed).to_string() }),
            );
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let _ = axum::serve(listener, app).await;
            }
            Err(e) => fail(&format!("sink on {addr}: {e}")),
        }
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_tracing_cost(cost: &TracingCost) {
    let column = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let values: Vec<f64> = runs.iter().map(pick).collect();
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(0.0, f64::max);
        (median(values), low, high)
    };
    let (off_rps, off_rps_low, off_rps_high) = column(&cost.off, |r| r.0);
    let (on_rps, on_rps_low, on_rps_high) = column(&cost.on, |r| r.0);
    let (off_cpu, off_cpu_low, off_cpu_high) = column(&cost.off, |r| r.1);
    let (on_cpu, on_cpu_low, on_cpu_high) = column(&cost.on, |r| r.1);
    println!(
        "\n| flotilla gateway, tracing ({} alternating runs each; median, range) | requests/s (wrk) | CPU per request | spans exported |\n|---|---:|---:|---:|\n\
         | off (`OTEL_SDK_DISABLED=true`) | {off_rps:.0} ({off_rps_low:.0}–{off_rps_high:.0}) | {off_cpu:.1} µs ({off_cpu_low:.1}–{off_cpu_high:.1}) | – |\n\
         | on, default sampling (10 % + failed/slow), exported over OTLP/HTTP | {on_rps:.0} ({on_rps_low:.0}–{on_rps_high:.0}) | {on_cpu:.1} µs ({on_cpu_low:.1}–{on_cpu_high:.1}) | {} |\n\
         \ntracing costs {:.1} % of throughput ({:.1} % CPU per request), medians; goal ≤ 5 %",
        cost.off.len(),
        cost.stored,
        (1.0 - on_rps / off_rps.max(1.0)) * 100.0,
        (on_cpu / off_cpu.max(1e-9) - 1.0) * 100.0,
    );
}

/// The gateway with tracing off (`OTEL_SDK_DISABLED`) and on (default sampling, the tail
/// rule, OTLP export to a counting collector pinned beside the load), closed loop,
/// alternating runs so a drift of the machine falls on both.
fn tracing_cost(bin: &Path, dir: &Path, upstream: SocketAddr, o: &Options) -> TracingCost {
    eprintln!(
        "… tracing off, then on at the default sampling ({} rounds, alternating)",
        o.rounds
    );
    // A collector that takes spans in and counts them, pinned beside the load generator:
    // what the gateway pays for tracing, apart from what storing spans costs wherever the
    // collector runs (the control plane's cost per span is measured below).
    let sink = free_addr();
    let sink_arg = sink.to_string();
    let _sink = Guard(pinned(
        "0",
        &std::env::current_exe().unwrap_or_else(|e| fail(&e.to_string())),
        &["--otlp-sink", &sink_arg],
        &[],
    ));
    wait_ready(sink, "/count");
    let endpoint = format!("http://{sink}");
    let on_env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let off_env = [("OTEL_SDK_DISABLED", "true")];
    let routes = plain_routes(upstream);
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _round in 0..o.rounds {
        for (i, env) in [&off_env[..], &on_env[..]].into_iter().enumerate() {
            let addr = free_addr();
            let proxy = Guard(start_flotilla_with(
                bin,
                &dir.join("routes-tracing.toml"),
                &routes,
                addr,
                "warn",
                env,
            ));
            wait_ready(addr, "/");
            let pid = proxy.0.id();
            let (rps, _, _, cpu) = closed_loop(pid, addr, o);
            runs[i].push((rps, cpu / rps.max(1.0) * 1e6));
            // Stopping it flushes what it still holds.
            terminate(pid);
            drop(proxy);
        }
    }
    let stored = flotilla_bench::procs::http_get(sink, "/count")
        .ok()
        .and_then(|(_, body)| body.trim().parse().ok())
        .unwrap_or(0);
    let [off, on] = runs;
    TracingCost { off, on, stored }
}

/// Asks a process to stop (SIGTERM) and gives it a moment to flush.
fn terminate(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    std::thread::sleep(Duration::from_millis(500));
}

/// Gives up. A panic, not `exit`, so the guards of the processes started so far run.
/// The gateway with every request's bearer token verified (EdDSA, a JWKS served locally),
/// a rate limit keyed on the token's subject (high enough never to refuse) and access logs
/// written: closed-loop throughput only.
fn with_policies(bin: &Path, dir: &Path, upstream: SocketAddr, o: &Options) -> (f64, String, String) {
    let issuer = flotilla::auth::test_util::TestIssuer::new("bench");
    let jwks = serde_json::json!({ "keys": [issuer.jwk()] });
    let jwks_addr = free_addr();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
            if let Ok(listener) = tokio::net::TcpListener::bind(jwks_addr).await {
                let _ = axum::serve(listener, app).await;
            }
        });
    });
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let token = issuer.token(serde_json::json!({
        "sub": "bench-user", "iss": "https://id.bench", "aud": "bench", "exp": exp, "roles": ["customer"]
    }));
    let addr = free_addr();
    let text = format!(
        "{}auth = {{ jwks = \"http://{jwks_addr}/jwks\", issuer = \"https://id.bench\", audiences = [\"bench\"] }}\n\
         rate_limit = {{ requests = 10000000, per = \"1s\", key = \"subject\" }}\n",
        plain_routes(upstream)
    );
    let proxy = Guard(start_flotilla(
        bin,
        &dir.join("routes-policies.toml"),
        &text,
        addr,
        "info",
    ));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let authorized =
            flotilla_bench::procs::http_request(addr, "GET", "/", &[("Authorization", &format!("Bearer {token}"))], "");
        if authorized.is_ok_and(|(s, _)| s == 200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let header = vec![format!("Authorization: Bearer {token}")];
    let _ = wrk(addr, o.connections, 2, &header);
    let figures = wrk(addr, o.connections, o.seconds, &header);
    drop(proxy);
    figures
}

fn fail(message: &str) -> ! {
    panic!("gateway bench: {message}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kills its process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(core: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new("taskset")
        .args(["-c", core])
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("starting {}: {e}", program.display())))
}

/// The Flotilla gateway with one worker, pinned to core 1, routing as `routes` (written to
/// `file`) says.
fn start_flotilla(bin: &Path, file: &Path, routes: &str, addr: SocketAddr, log: &str) -> Child {
    start_flotilla_with(bin, file, routes, addr, log, &[])
}

/// [`start_flotilla`] with more environment.
fn start_flotilla_with(
    bin: &Path,
    file: &Path,
    routes: &str,
    addr: SocketAddr,
    log: &str,
    env: &[(&str, &str)],
) -> Child {
    std::fs::write(file, routes).unwrap_or_else(|e| fail(&e.to_string()));
    let file = file.display().to_string();
    let listen = addr.to_string();
    let args = ["gateway", "--workers", "1", "--listen", &listen, "--routes", &file];
    let mut all = vec![("RUST_LOG", log)];
    all.extend_from_slice(env);
    pinned("1", &bin.join("flotilla"), &args, &all)
}

fn start_proxy(name: &str, bin: &Path, dir: &Path, addr: SocketAddr, upstream: SocketAddr) -> Child {
    match name {
        "flotilla" => start_flotilla(bin, &dir.join("routes.toml"), &plain_routes(upstream), addr, "warn"),
        "nginx" => {
            let conf = dir.join("nginx.conf");
            let d = dir.display();
            let text = format!(
                "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
                 events {{ worker_connections 8192; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 upstream up {{ server {upstream}; keepalive 256; }}\n\
                 server {{\n    listen {addr} backlog=4096;\n    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n"
            );
            std::fs::write(&conf, text).unwrap_or_else(|e| fail(&e.to_string()));
            let conf = conf.display().to_string();
            pinned(
                "1",
                Path::new("/usr/sbin/nginx"),
                &["-c", &conf, "-p", &d.to_string()],
                &[],
            )
        }
        "floor" => pinned(
            "1",
            &bin.join("floor"),
            &[&addr.to_string(), &upstream.to_string()],
            &[],
        ),
        _ => {
            let conf = dir.join("haproxy.cfg");
            let text = format!(
                "global\n  nbthread 1\n  maxconn 8000\n\
                 defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n  http-reuse always\n\
                 frontend f\n  bind {addr}\n  default_backend b\n\
                 backend b\n  server s1 {upstream}\n"
            );
            std::fs::write(&conf, text).unwrap_or_else(|e| fail(&e.to_string()));
            let conf = conf.display().to_string();
            pinned("1", Path::new("/usr/sbin/haproxy"), &["-f", &conf], &[])
        }
    }
}

fn wait_ready(addr: SocketAddr, path: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if http_get(addr, path).is_ok_and(|(s, _)| s == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fail(&format!("{addr} never answered 200"));
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `wrk` on core 0 against `addr` with extra request headers: requests/s, p50, p99.
fn wrk(addr: SocketAddr, connections: u32, seconds: u64, headers: &[String]) -> (f64, String, String) {
    let mut command = Command::new("taskset");
    command.args([
        "-c",
        "0",
        "wrk",
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap_or_else(|e| fail(&format!("wrk: {e}")));
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        fail(&format!("requests were refused during the run:\n{text}"));
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    (rps, pct("50%"), pct("99%"))
}

/// `wrk` for 2 s to warm up, then for `o.seconds`: (requests/s, p50, p99, the proxy's CPU
/// share over the run).
fn closed_loop(pid: u32, addr: SocketAddr, o: &Options) -> (f64, String, String, f64) {
    let _ = wrk(addr, o.connections, 2, &[]);
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    let (rps, p50, p99) = wrk(addr, o.connections, o.seconds, &[]);
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    (rps, p50, p99, cpu)
}

/// A routes file sending everything to `upstream`.
fn plain_routes(upstream: SocketAddr) -> String {
    format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{upstream}\"]\n")
}

fn measure(name: &'static str, proxy: &Child, addr: SocketAddr, o: &Options) -> Figures {
    let pid = proxy.id();
    let (rps, wrk_p50, wrk_p99, cpu) = closed_loop(pid, addr, o);
    let load = Load::start(addr, o.rate, vec![(http::Method::GET, "/")]);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let report = load.stop();
    let all = Duration::from_secs(3600);
    Figures {
        name,
        rps,
        wrk_p50,
        wrk_p99,
        p50: report.quantile_between(0.5, Duration::ZERO, all),
        p99: report.quantile_between(0.99, Duration::ZERO, all),
        p999: report.quantile_between(0.999, Duration::ZERO, all),
        failed: report.failures().len(),
        cpu,
        rss_kb: rss_kb(pid),
    }
}

fn open_connections(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            break;
        };
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n");
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf);
        conns.push(stream);
    }
    conns
}
