//! System tests of observability with the real binary: one order placed through the gateway
//! is one trace in the control plane — the gateway, orders, catalog, the saga's steps and
//! their calls to inventory, payments and shipping, the events and their consumers — with
//! every parent link right; the dependency graph shows the calls and the events; every
//! process's metrics use only documented names and labels; the logs of that one request
//! can be read across services by its trace id; and a real Prometheus, given only the
//! control plane's service discovery, finds every instance up.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{customer, http_request, json_of, System};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn start() -> System {
    let system = System::start_with_env(
        std::path::Path::new(support::flotilla()),
        &support::repo_root(),
        &[],
        // Keep every trace, and send spans within a moment.
        &[("OTEL_TRACES_SAMPLER_ARG", "1"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    system
}

fn control_token(system: &System) -> String {
    std::fs::read_to_string(system.data_dir().join("token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn control_get(system: &System, path: &str) -> (u16, Value) {
    let token = control_token(system);
    json_of(
        http_request(
            system.control,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        )
        .unwrap(),
    )
}

/// Places one order under a trace the test started, and waits until it is confirmed and the
/// customer was told.
fn order_in_trace(system: &System, token: &str) -> String {
    let body = json!({
        "lines": [{"product_id": 3, "quantity": 1}],
        "shipping_address": {"name": "Ana Lima", "line1": "Hafenstraße 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}
    })
    .to_string();
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, order) = json_of(
        http_request(
            system.gateway,
            "POST",
            "/api/v1/orders",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "trace-1"),
                ("traceparent", &traceparent),
            ],
            &body,
        )
        .unwrap(),
    );
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let (_, notes) = json_of(
            http_request(
                system.gateway,
                "GET",
                "/api/v1/notifications",
                &[("Authorization", &format!("Bearer {token}"))],
                "",
            )
            .unwrap(),
        );
        let told = notes["items"]
            .as_array()
            .or_else(|| notes.as_array())
            .is_some_and(|items| items.iter().any(|n| n["order_id"] == id.as_str()));
        if told {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "order {id} never confirmed: {notes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The spans of the test's trace once every one named in `expected` has arrived.
fn trace_with(system: &System, expected: &[(&str, &str)]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (status, trace) = control_get(system, &format!("/v1/traces/{TRACE}"));
        let spans = trace["spans"].as_array().cloned().unwrap_or_default();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(service, name)| !spans.iter().any(|s| s["service"] == *service && s["name"] == *name))
            .collect();
        if status == 200 && missing.is_empty() {
            return spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "missing spans {missing:?}; stored: {:#?}",
            spans
                .iter()
                .map(|s| format!("{} {} ({})", s["service"], s["name"], s["kind"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn span<'a>(spans: &'a [Value], service: &str, name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["service"] == service && s["name"] == name)
        .unwrap_or_else(|| panic!("no span {service} {name}"))
}

/// The spans of `service` named `name` whose parent is `parent`.
fn children<'a>(spans: &'a [Value], parent: &Value, service: &str, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["service"] == service && s["name"] == name && s["parent_span_id"] == parent["span_id"])
        .collect()
}

fn child<'a>(spans: &'a [Value], parent: &Value, service: &str, name: &str) -> &'a Value {
    let found = children(spans, parent, service, name);
    assert!(
        !found.is_empty(),
        "no {service} `{name}` under {} `{}`",
        parent["service"],
        parent["name"]
    );
    found[0]
}

#[test]
fn one_order_is_one_trace_across_the_gateway_the_services_the_events_and_the_saga() {
    let system = start();
    let token = customer(&system, "trace@example.com");
    let order = order_in_trace(&system, &token);

    let spans = trace_with(
        &system,
        &[
            ("gateway", "POST place-order"),
            ("orders", "POST /api/v1/orders"),
            ("orders", "order reserve-stock"),
            ("orders", "order authorize-payment"),
            ("orders", "order create-shipment"),
            ("orders", "order confirm"),
            ("inventory", "POST /api/v1/inventory/reservations"),
            ("shipping", "shop.order.confirmed process"),
            ("notifications", "shop.order.confirmed process"),
            // The last to arrive can be the consumers of the first event: wait for the whole
            // trace, so the summary below counts what this snapshot holds.
            ("shipping", "shop.order.placed process"),
            ("notifications", "shop.order.placed process"),
        ],
    );

    // The request: client → gateway → orders, which prices at the catalog and writes the order.
    let gateway = span(&spans, "gateway", "POST place-order");
    assert_eq!(
        gateway["parent_span_id"], CALLER_SPAN,
        "the gateway continues the caller's trace"
    );
    assert_eq!(gateway["kind"], "server");
    assert_eq!(gateway["attributes"]["http.response.status_code"], 202);
    let placed = child(&spans, gateway, "orders", "POST /api/v1/orders");
    assert_eq!(placed["kind"], "server");
    let pricing = child(&spans, placed, "orders", "GET catalog");
    assert_eq!(pricing["kind"], "client");
    child(&spans, pricing, "catalog", "GET /api/v1/products/{id}");
    let written = child(&spans, placed, "orders", "sqlite place order");
    child(&spans, written, "orders", "shop.order.placed publish");

    // The saga: each step joins the trace of the request that started it, and its calls are
    // its children, each answered by the callee's server span.
    let steps: Vec<(&str, &str, &str)> = vec![
        ("order reserve-stock", "POST inventory", "inventory"),
        ("order authorize-payment", "POST payments", "payments"),
        ("order create-shipment", "POST shipping", "shipping"),
        ("order confirm", "POST payments", "payments"),
    ];
    for (step, call, callee) in steps {
        let step = span(&spans, "orders", step);
        assert_eq!(step["kind"], "internal");
        assert_eq!(
            step["parent_span_id"], written["span_id"],
            "{} hangs under the order's write",
            step["name"]
        );
        let call = child(&spans, step, "orders", call);
        assert_eq!(call["kind"], "client");
        let served: Vec<_> = spans
            .iter()
            .filter(|s| s["service"] == callee && s["parent_span_id"] == call["span_id"])
            .collect();
        assert_eq!(served.len(), 1, "{callee} served {}", call["name"]);
        assert_eq!(served[0]["kind"], "server");
    }

    // Choreography: the confirmation event links both consumers to its producer.
    let confirm = span(&spans, "orders", "order confirm");
    let produced = spans
        .iter()
        .find(|s| s["name"] == "shop.order.confirmed publish")
        .expect("the confirmation was published in the trace");
    assert_eq!(produced["kind"], "producer");
    assert_eq!(produced["service"], "orders");
    let _ = confirm;
    for consumer in ["shipping", "notifications"] {
        let consumed = child(&spans, produced, consumer, "shop.order.confirmed process");
        assert_eq!(consumed["kind"], "consumer");
    }

    // The trace is found by service, operation and duration, and its summary adds up.
    let (status, list) = control_get(&system, "/v1/traces?service=notifications&limit=50");
    assert_eq!(status, 200, "{list}");
    let summary = list["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == TRACE)
        .unwrap_or_else(|| panic!("the trace is listed for notifications: {list}"));
    let services: BTreeSet<&str> = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for service in [
        "gateway",
        "orders",
        "catalog",
        "inventory",
        "payments",
        "shipping",
        "notifications",
    ] {
        assert!(services.contains(service), "{service} in {services:?}");
    }
    assert_eq!(summary["span_count"].as_u64().unwrap() as usize, spans.len());
    let (_, slow) = control_get(&system, "/v1/traces?operation=POST%20orders&min_duration_ms=3600000");
    assert_eq!(slow["traces"], json!([]), "no trace lasts an hour");

    // The dependency graph, from the stored spans.
    let (status, graph) = control_get(&system, "/v1/dependencies");
    assert_eq!(status, 200, "{graph}");
    let edges: BTreeMap<(String, String, String), &Value> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                (
                    e["caller"].as_str().unwrap().to_owned(),
                    e["callee"].as_str().unwrap().to_owned(),
                    e["kind"].as_str().unwrap().to_owned(),
                ),
                e,
            )
        })
        .collect();
    for (caller, callee, kind) in [
        ("gateway", "orders", "http"),
        ("gateway", "identity", "http"),
        ("orders", "catalog", "http"),
        ("orders", "inventory", "http"),
        ("orders", "payments", "http"),
        ("orders", "shipping", "http"),
        ("orders", "shipping", "event"),
        ("orders", "notifications", "event"),
    ] {
        let edge = edges
            .get(&(caller.to_owned(), callee.to_owned(), kind.to_owned()))
            .unwrap_or_else(|| {
                panic!(
                    "no {caller} → {callee} ({kind}) in {:#?}",
                    edges.keys().collect::<Vec<_>>()
                )
            });
        assert!(edge["calls"].as_u64().unwrap() >= 1, "{edge}");
        assert!(
            edge["p99_ms"].as_f64().unwrap() >= edge["p50_ms"].as_f64().unwrap(),
            "{edge}"
        );
    }

    // The CLI: the trace drawn as a waterfall, listed by service, and its logs across services.
    let out = system.cli(&["trace", TRACE]);
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for text in [
        "gateway POST place-order",
        "orders order confirm",
        "⇢ orders POST inventory",
        "✉ notifications shop.order.co",
    ] {
        assert!(drawn.contains(text), "`{text}` in the waterfall:\n{drawn}");
    }
    let out = system.cli(&["traces", "--service", "inventory"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&TRACE[..8]));

    let logs = Command::new(support::flotilla())
        .args(["logs", "--trace", TRACE, "--data-dir"])
        .arg(system.data_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.status.success(), "{}", String::from_utf8_lossy(&logs.stderr));
    for line in ["order placed", "order confirmed", "customer notified"] {
        assert!(text.contains(line), "`{line}` in the trace's logs:\n{text}");
    }
    assert!(
        text.lines().all(|l| !l.contains("serving")),
        "only the trace's lines:\n{text}"
    );
    let _ = order;
}

use std::process::Command;

/// Each family of a Prometheus text page: its type, and the labels of its samples (none
/// when it has no sample).
fn families(text: &str) -> BTreeMap<String, (String, Option<BTreeSet<String>>)> {
    let mut out: BTreeMap<String, (String, Option<BTreeSet<String>>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.entry(name.to_owned()).or_default().0 = kind.to_owned();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix).filter(|base| out.contains_key(*base)))
            .unwrap_or(sample)
            .to_owned();
        let labels: BTreeSet<String> = line[name_end..]
            .strip_prefix('{')
            .and_then(|rest| rest.rsplit_once('}'))
            .map(|(inside, _)| {
                inside
                    .split("\",")
                    .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.trim().to_owned()))
                    .filter(|k| k != "le")
                    .collect()
            })
            .unwrap_or_default();
        out.entry(family)
            .or_default()
            .1
            .get_or_insert_with(BTreeSet::new)
            .extend(labels);
    }
    out
}

/// The documented metrics: each row `| name | type | labels |` of the tables in
/// docs/observability.md.
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(support::repo_root().join("docs/observability.md")).unwrap();
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            let name = cells.first()?.trim_matches('`');
            let kind = cells.get(1)?.trim();
            if !(name.starts_with("flotilla_")
                || name.starts_with("process_")
                || name.starts_with("tokio_")
                || name.starts_with("shop_"))
                || !["counter", "gauge", "histogram"].contains(&kind)
            {
                return None;
            }
            let labels = cells
                .get(2)?
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .filter(|l| !l.is_empty() && l != "–" && l != "-")
                .collect();
            Some((name.to_owned(), (kind.to_owned(), labels)))
        })
        .collect()
}

#[test]
fn every_instance_is_discoverable_and_exports_only_documented_metrics() {
    let system = start();
    let token = customer(&system, "metrics@example.com");
    let _ = order_in_trace(&system, &token);

    let (status, groups) = control_get(&system, "/v1/sd/prometheus");
    assert_eq!(status, 200, "{groups}");
    let groups = groups.as_array().unwrap().clone();
    let services: BTreeSet<&str> = groups.iter().filter_map(|g| g["labels"]["service"].as_str()).collect();
    for service in [
        "control",
        "gateway",
        "identity",
        "catalog",
        "inventory",
        "payments",
        "shipping",
        "orders",
        "notifications",
    ] {
        assert!(
            services.contains(service),
            "{service} in service discovery: {groups:#?}"
        );
    }

    let documented = documented();
    assert!(documented.len() > 20, "the documented list: {documented:?}");
    let mut seen = BTreeSet::new();
    for group in &groups {
        let target = group["targets"][0].as_str().unwrap();
        let path = group["labels"]["__metrics_path__"].as_str().unwrap_or("/metrics");
        let addr: std::net::SocketAddr = target.parse().unwrap();
        // As Prometheus scrapes: with the read-only credential `up` wrote (the control plane
        // answers nothing without one; services do not ask).
        let reader = std::fs::read_to_string(system.data_dir().join("read-token")).unwrap();
        let (status, text) =
            http_request(addr, "GET", path, &[("Authorization", &format!("Bearer {reader}"))], "").unwrap();
        assert_eq!(status, 200, "{target}{path}");
        for (name, (kind, labels)) in families(&text) {
            let (want_kind, want_labels) = documented
                .get(&name)
                .unwrap_or_else(|| panic!("{name} ({}) is not documented", group["labels"]["service"]));
            assert_eq!(&kind, want_kind, "type of {name}");
            // A family with no series yet shows only its header.
            if let Some(labels) = labels {
                assert_eq!(&labels, want_labels, "labels of {name}");
            }
            seen.insert(name);
        }
    }
    for name in [
        "flotilla_http_server_requests_total",
        "flotilla_http_server_request_duration_seconds",
        "flotilla_http_client_requests_total",
        "flotilla_client_breaker_state",
        "flotilla_events_published_total",
        "flotilla_events_consumed_total",
        "flotilla_events_consumer_lag_seconds",
        "flotilla_saga_steps_total",
        "flotilla_saga_outcomes_total",
        "flotilla_gateway_requests_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "tokio_workers",
    ] {
        assert!(seen.contains(name), "some process exports {name}: {seen:?}");
    }
}

/// A real Prometheus, configured with the shipped `deploy/prometheus.yml` pointed at this
/// system's control plane, finds every instance through service discovery and scrapes it.
/// Needs the `prometheus` binary: `.ci/run` installs it and sets FLOTILLA_TEST_PROMETHEUS=1,
/// which makes its absence a failure rather than a skip.
#[test]
fn prometheus_finds_every_instance_through_the_control_plane_and_sees_it_up() {
    let Some(prometheus) = ["prometheus", "/usr/bin/prometheus"].iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var("FLOTILLA_TEST_PROMETHEUS").is_err(),
            "FLOTILLA_TEST_PROMETHEUS is set but no prometheus binary was found"
        );
        eprintln!("skipped: no prometheus binary (apt-get install prometheus)");
        return;
    };
    let system = start();
    let shipped = std::fs::read_to_string(support::repo_root().join("deploy/prometheus.yml")).unwrap();
    // The shipped file points at the default control plane; this system's runs elsewhere.
    let config: String = shipped
        .lines()
        .map(|line| match (line.find("http://"), line.find("/v1/sd/prometheus")) {
            (Some(start), Some(end)) if start < end => {
                format!("{}http://{}{}\n", &line[..start], system.control, &line[end..])
            }
            // The read-only credential `up` wrote to this system's data dir.
            _ if line.trim_start().starts_with("credentials_file:") => {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!(
                    "{indent}credentials_file: {}\n",
                    system.data_dir().join("read-token").display()
                )
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(
        config.contains(&format!("http://{}/v1/sd/prometheus", system.control)),
        "the shipped config discovers through the control plane: {shipped}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let web = support::free_addr();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut std::process::Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut child);

    let expected = system.status()["instances"].as_array().unwrap().len() + 1; // + the control plane
    let started = Instant::now();
    loop {
        let answer = http_request(web, "GET", "/api/v1/targets?state=active", &[], "").ok();
        let targets = answer
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["activeTargets"].as_array().cloned())
            .unwrap_or_default();
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if targets.len() == expected && up == expected {
            let services: BTreeSet<&str> = targets.iter().filter_map(|t| t["labels"]["service"].as_str()).collect();
            assert!(
                services.contains("orders") && services.contains("gateway"),
                "{services:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{up} of {} targets up, {expected} expected: {targets:#?}",
            targets.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
