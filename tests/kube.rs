//! The Kubernetes deployment (`deploy/kubernetes`), checked offline and for real as far as this
//! machine goes: both overlays render; every workload follows the platform's conventions
//! (probes on the declared ports and the health paths, resources, a restricted security
//! context, a drain that fits the grace period, a disruption budget, pinned images, the
//! autoscalers' numbers the manifest's); the network policies let in exactly the callers the
//! services allow; and the `single` overlay, run by the rehearsal as local processes,
//! serves a sign-up → order → CONFIRMED through its gateway. Broken on purpose, it fails.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod support;

#[path = "kube/rehearsal.rs"]
mod rehearsal;
#[path = "kube/render.rs"]
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rehearsal::Rehearsal;
use render::{container_port, pod_spec, render, selects, Rendered};
use support::{http_get, http_request, json_of};

const OVERLAYS: [&str; 2] = ["single", "cluster"];

/// How long a Flotilla process may take to drain after SIGTERM (deregister and drain 3.2 s,
/// background tasks 3 s; the gateway and control plane less): what the grace period must
/// leave after the preStop sleep.
const DRAIN: u64 = 7;

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn is_flotilla(container: &Value) -> bool {
    container["image"].as_str().is_some_and(|i| i.contains("/flotilla:"))
}

#[test]
fn every_workload_follows_the_conventions_in_both_overlays() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let mut problems = Vec::new();
        for workload in rendered.workloads() {
            let who = format!("{overlay}: {} {}", workload["kind"].as_str().unwrap(), name(workload));
            let spec = pod_spec(workload);
            let pod_security = &spec["securityContext"];
            if pod_security["runAsNonRoot"] != true {
                problems.push(format!("{who}: runAsNonRoot"));
            }
            if pod_security["seccompProfile"]["type"] != "RuntimeDefault" {
                problems.push(format!("{who}: seccomp RuntimeDefault"));
            }
            if spec["automountServiceAccountToken"] != false {
                problems.push(format!("{who}: automountServiceAccountToken: false"));
            }
            let job = workload["kind"] == "Job";
            for container in spec["containers"].as_array().unwrap() {
                let image = container["image"].as_str().unwrap_or_default();
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                if tag.is_empty() || tag == "latest" || tag.contains('/') {
                    problems.push(format!("{who}: image {image} is not pinned by tag"));
                }
                let security = &container["securityContext"];
                if security["allowPrivilegeEscalation"] != false
                    || security["readOnlyRootFilesystem"] != true
                    || security["capabilities"]["drop"] != json!(["ALL"])
                {
                    problems.push(format!("{who}: container securityContext {security}"));
                }
                let resources = &container["resources"];
                for (part, what) in [("requests", "cpu"), ("requests", "memory"), ("limits", "memory")] {
                    if resources[part][what].is_null() {
                        problems.push(format!("{who}: no {part}.{what}"));
                    }
                }
                if job {
                    continue;
                }
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    if container[probe].is_null() {
                        problems.push(format!("{who}: no {probe}"));
                    }
                }
                if is_flotilla(container) {
                    for (probe, path) in [
                        ("readinessProbe", "/health/ready"),
                        ("livenessProbe", "/health/live"),
                        ("startupProbe", "/health/live"),
                    ] {
                        let get = &container[probe]["httpGet"];
                        if get["path"] != path {
                            problems.push(format!("{who}: {probe} path {} (want {path})", get["path"]));
                        }
                        if container_port(container, &get["port"]).is_none() {
                            problems.push(format!("{who}: {probe} port {} is not declared", get["port"]));
                        }
                    }
                    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64();
                    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
                    match pre_stop {
                        None => problems.push(format!("{who}: no preStop sleep")),
                        Some(sleep) if grace <= sleep + DRAIN => problems.push(format!(
                            "{who}: grace {grace}s does not cover preStop {sleep}s + drain {DRAIN}s"
                        )),
                        Some(_) => {}
                    }
                } else if container["lifecycle"]["preStop"].is_null() {
                    problems.push(format!("{who}: no preStop"));
                }
            }
            if !job {
                let labels = &workload["spec"]["template"]["metadata"]["labels"];
                let budget = rendered
                    .of_kind("PodDisruptionBudget")
                    .any(|pdb| selects(&pdb["spec"]["selector"], labels));
                if !budget {
                    problems.push(format!("{who}: no PodDisruptionBudget"));
                }
            }
        }
        // Every HPA scales something that exists, on CPU, by the v2 API.
        for hpa in rendered.of_kind("HorizontalPodAutoscaler") {
            let target = &hpa["spec"]["scaleTargetRef"];
            if rendered
                .get(
                    target["kind"].as_str().unwrap_or_default(),
                    target["name"].as_str().unwrap_or_default(),
                )
                .is_none()
            {
                problems.push(format!("{overlay}: HPA {} scales nothing", name(hpa)));
            }
            if hpa["apiVersion"] != "autoscaling/v2" {
                problems.push(format!("{overlay}: HPA {} is not autoscaling/v2", name(hpa)));
            }
        }
        assert!(
            rendered.get("HorizontalPodAutoscaler", "gateway").is_some(),
            "{overlay}: the gateway autoscales"
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// Every `FLOTILLA_*` variable the manifests set is one the binary reads (a string in its
/// sources): a misspelt variable is ignored by a process, so it is caught here.
#[test]
fn every_flotilla_variable_the_manifests_set_is_one_the_binary_reads() {
    let mut known = BTreeSet::new();
    let mut stack = vec![support::repo_root().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("FLOTILLA_") && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                        known.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(known.contains("FLOTILLA_CONTROL_ADDR") && known.contains("FLOTILLA_ADVERTISE"));
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let mut set = BTreeSet::new();
        for config in rendered.of_kind("ConfigMap") {
            set.extend(config["data"].as_object().into_iter().flatten().map(|(k, _)| k.clone()));
        }
        for workload in rendered.workloads() {
            for container in pod_spec(workload)["containers"].as_array().unwrap() {
                set.extend(
                    container["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["name"].as_str().map(str::to_owned)),
                );
            }
        }
        let unknown: Vec<_> = set
            .iter()
            .filter(|v| v.starts_with("FLOTILLA_") && !known.contains(*v))
            .collect();
        assert!(
            unknown.is_empty(),
            "{overlay}: variables the binary never reads: {unknown:?}"
        );
    }
}

/// The services' network policies let in the gateway and exactly the services each allows to
/// call it (its `CALLERS`), on its mTLS port; and the control plane, whose dashboard reads
/// each instance's metrics and SDK endpoints.
#[test]
fn network_policies_let_in_exactly_the_callers_each_service_allows() {
    let callers: BTreeMap<&str, &[&str]> = [
        ("catalog", flotilla_catalog::CALLERS),
        ("identity", flotilla_identity::CALLERS),
        ("inventory", flotilla_inventory::CALLERS),
        ("payments", flotilla_payments::CALLERS),
        ("shipping", flotilla_shipping::CALLERS),
        ("orders", flotilla_orders::CALLERS),
        ("notifications", flotilla_notifications::CALLERS),
    ]
    .into();
    let rendered = render("single");
    assert!(
        rendered
            .get("NetworkPolicy", "default-deny-ingress")
            .is_some_and(|p| p["spec"]["podSelector"] == json!({}) && p["spec"]["ingress"].is_null()),
        "ingress is denied by default"
    );
    for (service, allowed) in callers {
        let policy = rendered
            .get("NetworkPolicy", service)
            .unwrap_or_else(|| panic!("{service} has a policy"));
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        let mtls = rules
            .iter()
            .find(|r| r["ports"].as_array().unwrap().iter().any(|p| p["port"] == "mtls"))
            .unwrap();
        let from: BTreeSet<String> = mtls["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|peer| {
                let labels = &peer["podSelector"]["matchLabels"];
                match labels["app.kubernetes.io/name"].as_str() {
                    Some(name) => name.to_owned(),
                    None => {
                        assert_eq!(labels["app.kubernetes.io/part-of"], "flotilla", "{service}: {peer}");
                        "*".to_owned()
                    }
                }
            })
            .collect();
        let wanted: BTreeSet<String> = allowed.iter().map(|c| (*c).to_owned()).collect();
        assert_eq!(from, wanted, "{service}: the policy's callers and its CALLERS");
        assert_eq!(
            ports_from_control(policy),
            BTreeSet::from(["admin".to_owned(), "mtls".to_owned()]),
            "{service}: the dashboard reads its metrics and its SDK endpoints (sagas)"
        );
    }
    let gateway = rendered.get("NetworkPolicy", "gateway").unwrap();
    assert_eq!(
        ports_from_control(gateway),
        BTreeSet::from(["admin".to_owned()]),
        "the dashboard reads the gateway's metrics and routes"
    );
}

/// The ports a policy opens to the control plane's pods.
fn ports_from_control(policy: &Value) -> BTreeSet<String> {
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| {
            rule["from"].as_array().is_some_and(|peers| {
                peers
                    .iter()
                    .any(|p| p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "control")
            })
        })
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .filter_map(|port| port["port"].as_str().map(str::to_owned))
        .collect()
}

/// Each service's `autoscale` line of flotilla.toml, in force or commented out (the shipped
/// manifest writes them but leaves them off under `up`, so benchmarks and fault tests keep
/// their counts): what the cluster overlay must use.
fn autoscale_lines(text: &str) -> BTreeMap<String, toml::Value> {
    let mut service = None;
    let mut found = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[services.").and_then(|l| l.strip_suffix(']')) {
            service = Some(name.to_owned());
        } else if line.starts_with('[') {
            service = None;
        }
        let setting = line.trim_start_matches('#').trim_start();
        if let (Some(name), true) = (&service, setting.starts_with("autoscale")) {
            let parsed: toml::Value = toml::from_str(setting).unwrap();
            found.insert(name.clone(), parsed["autoscale"].clone());
        }
    }
    found
}

/// The cluster overlay autoscales every service with the numbers `flotilla up` uses for it
/// (flotilla.toml's `autoscale` and `resources`), and requests what the manifest requests.
#[test]
fn autoscalers_and_requests_carry_the_manifests_numbers() {
    let text = std::fs::read_to_string(support::repo_root().join("flotilla.toml")).unwrap();
    let manifest: toml::Value = toml::from_str(&text).unwrap();
    let autoscale_of = autoscale_lines(&text);
    let rendered = render("cluster");
    let services = manifest["services"].as_table().unwrap();
    for (service, entry) in services {
        let hpa = rendered
            .get("HorizontalPodAutoscaler", service)
            .unwrap_or_else(|| panic!("{service} autoscales in the cluster overlay"));
        let deployment = rendered.get("Deployment", service).unwrap();
        let container = &pod_spec(deployment)["containers"][0];
        if let Some(cpu) = entry
            .get("resources")
            .and_then(|r| r.get("cpu"))
            .and_then(|c| c.as_str())
        {
            assert_eq!(container["resources"]["requests"]["cpu"], cpu, "{service}: cpu request");
        }
        if let Some(memory) = entry
            .get("resources")
            .and_then(|r| r.get("memory"))
            .and_then(|c| c.as_str())
        {
            assert_eq!(
                container["resources"]["requests"]["memory"], memory,
                "{service}: memory request"
            );
        }
        if let Some(limit) = entry
            .get("resources")
            .and_then(|r| r.get("memory_limit"))
            .and_then(|c| c.as_str())
        {
            assert_eq!(
                container["resources"]["limits"]["memory"], limit,
                "{service}: memory limit"
            );
        }
        let autoscale = autoscale_of
            .get(service)
            .unwrap_or_else(|| panic!("{service}: an autoscale line in flotilla.toml"));
        if let Some(live) = entry.get("autoscale") {
            assert_eq!(live, autoscale, "{service}");
        }
        let spec = &hpa["spec"];
        let int = |key: &str| autoscale.get(key).and_then(|v| v.as_integer());
        if let Some(min) = int("min") {
            assert_eq!(spec["minReplicas"], min, "{service}: min");
        }
        assert_eq!(spec["maxReplicas"], int("max").unwrap(), "{service}: max");
        assert_eq!(
            spec["metrics"][0]["resource"]["target"]["averageUtilization"],
            int("target_cpu").unwrap(),
            "{service}: target cpu"
        );
        let window = autoscale
            .get("scale_down_window")
            .and_then(|w| w.as_str())
            .map_or(300, |w| humantime::parse_duration(w).unwrap().as_secs());
        assert_eq!(
            spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"], window,
            "{service}: scale-down window"
        );
    }
}

fn rehearse(rendered: &Rendered, within: Duration) -> Result<Rehearsal, rehearsal::Failed> {
    let mut rehearsal = Rehearsal::start(rendered, Path::new(support::flotilla()))?;
    rehearsal.wait_ready(within)?;
    Ok(rehearsal)
}

#[test]
fn the_single_overlay_runs_the_shop_from_sign_up_to_a_confirmed_order() {
    let rendered = render("single");
    let started = Instant::now();
    let rehearsal = rehearse(&rendered, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("every pod ready and the seed Job done in {:?}", started.elapsed());
    // Started all at once, in no order: whoever is early waits for the control plane rather
    // than crashing into the kubelet's back-off.
    assert_eq!(
        rehearsal.restarted(),
        Vec::<(String, u32)>::new(),
        "{}",
        rehearsal.log("identity")
    );
    let gateway = rehearsal.service("gateway", 80).expect("the gateway Service's port 80");

    // The routes come from the store the seed Job filled; the catalog answers through them.
    support::wait_until("the catalog through the gateway", Duration::from_secs(30), || {
        http_get(gateway, "/api/v1/products?per_page=3")
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    let token = support::customer_at(gateway, "ana@example.com");
    let body = json!({
        "lines": [{"product_id": 1, "quantity": 1}],
        "shipping_address": {"name": "Ana Lima", "line1": "Hafenstraße 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}
    })
    .to_string();
    let auth = format!("Bearer {token}");
    let (status, accepted) = json_of(
        http_request(
            gateway,
            "POST",
            "/api/v1/orders",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "rehearsal-1"),
            ],
            &body,
        )
        .unwrap(),
    );
    assert_eq!(status, 202, "{accepted}\n{}", rehearsal.log("orders"));
    let id = accepted["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let order = loop {
        let path = format!("/api/v1/orders/{id}");
        let (status, order) = json_of(http_request(gateway, "GET", &path, &[("Authorization", &auth)], "").unwrap());
        if status == 200 && order["status"] == "CONFIRMED" {
            break order;
        }
        assert!(
            Instant::now() < deadline,
            "the order is not CONFIRMED within 60 s: {order}\n{}",
            rehearsal.log("orders")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(order["status"], "CONFIRMED");
    // Registered at the address it advertises (the pod IP, here loopback), not the 0.0.0.0 it
    // listens on.
    let logs = rehearsal.log("catalog");
    let registered = logs
        .lines()
        .find(|l| l.contains("\"message\":\"registered\""))
        .unwrap_or_else(|| panic!("catalog registered: {logs}"));
    assert!(registered.contains("\"address\":\"127.0.0.1:"), "{registered}");
}

/// The rehearsal is a test that can fail: a wrong probe path, an unknown flag, a port the
/// process does not listen on and a missing variable each make it fail, naming what is wrong.
#[test]
fn the_rehearsal_fails_a_wrong_probe_path_an_unknown_flag_a_wrong_port_and_a_missing_variable() {
    type Breakage = (&'static str, fn(&mut Rendered));
    let cases: [Breakage; 4] = [
        ("probe path", |r| {
            let container = &mut r.get_mut("Deployment", "catalog")["spec"]["template"]["spec"]["containers"][0];
            container["readinessProbe"]["httpGet"]["path"] = json!("/healthz");
        }),
        ("unknown flag", |r| {
            let container = &mut r.get_mut("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0];
            container["args"]
                .as_array_mut()
                .unwrap()
                .push(json!("--drain-timeout=5s"));
        }),
        ("wrong port", |r| {
            // The probes and the port list say 9100; the process still listens where its
            // variable says (9000).
            let container = &mut r.get_mut("Deployment", "payments")["spec"]["template"]["spec"]["containers"][0];
            container["ports"][1]["containerPort"] = json!(9100);
        }),
        ("missing variable", |r| {
            // Without it the admin listener takes a loopback port of its own: the declared
            // probe port answers nothing.
            let container = &mut r.get_mut("Deployment", "inventory")["spec"]["template"]["spec"]["containers"][0];
            container["env"]
                .as_array_mut()
                .unwrap()
                .retain(|e| e["name"] != "FLOTILLA_ADMIN_LISTEN");
        }),
    ];
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(what, breaks)| {
                scope.spawn(move || {
                    let mut rendered = render("single");
                    breaks(&mut rendered);
                    match rehearse(&rendered, Duration::from_secs(45)) {
                        Ok(_) => panic!("the rehearsal passed with a broken {what}"),
                        Err(failed) => format!("{what}: {failed}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{}", failures.join("\n---\n"));
    assert!(
        failures[0].contains("catalog") && failures[0].contains("/healthz"),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].contains("gateway") && failures[1].contains("--drain-timeout"),
        "{}",
        failures[1]
    );
    assert!(
        failures[2].contains("payments") && failures[2].contains("on port 9100"),
        "{}",
        failures[2]
    );
    assert!(
        failures[3].contains("inventory") && failures[3].contains("on port 9000"),
        "{}",
        failures[3]
    );
}
