//! System tests of `flotilla up`: the real binary, on free ports, in a temp dir.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{alive, descendants, http_get, http_request};

fn catalog_instances(status: &serde_json::Value) -> Vec<(String, u32)> {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "catalog")
        .map(|i| {
            let pid = i["metadata"]["pid"].as_str().unwrap().parse().unwrap();
            (i["instance_id"].as_str().unwrap().to_owned(), pid)
        })
        .collect()
}

#[test]
fn up_serves_restarts_a_killed_instance_and_stops_cleanly() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    system.wait_for_line(&format!("http://{}", system.gateway), Duration::from_secs(1));

    // Products through the gateway.
    let (status, body) = http_get(system.gateway, "/api/v1/products").unwrap();
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 50);
    let (status, body) = http_get(system.gateway, "/api/v1/products/99999").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("urn:flotilla:problem:not-found"), "{body}");

    // The status command sees the catalog instance, with its pid.
    let before = catalog_instances(&system.status());
    assert_eq!(before.len(), 1, "{before:?}");
    let (old_id, old_pid) = before[0].clone();
    let table = system.cli(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&old_id) && table.contains("passing"), "{table}");

    // kill -9 the catalog: the registry drops it within the TTL, the supervisor restarts
    // it, and the gateway routes to the new instance.
    let killed = Instant::now();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    let mut dropped_after = None;
    let mut replaced = None;
    while killed.elapsed() < Duration::from_secs(15) && (dropped_after.is_none() || replaced.is_none()) {
        let now = catalog_instances(&system.status());
        if dropped_after.is_none() && !now.iter().any(|(id, _)| *id == old_id) {
            dropped_after = Some(killed.elapsed());
        }
        if let Some(new) = now.iter().find(|(id, pid)| *id != old_id && *pid != old_pid) {
            replaced = Some(new.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped_after =
        dropped_after.unwrap_or_else(|| panic!("dead instance never left the registry:\n{}", system.output()));
    assert!(
        dropped_after <= Duration::from_millis(3_000 + 1_000),
        "the dead instance stayed {dropped_after:?}, past the 3 s TTL"
    );
    let (new_id, new_pid) = replaced.unwrap_or_else(|| panic!("no new catalog instance:\n{}", system.output()));
    assert!(alive(new_pid));
    system.wait_for_line("catalog-1 was killed by SIGKILL", Duration::from_secs(1));
    let mut served = false;
    for _ in 0..100 {
        if let Ok((200, body)) = http_get(system.gateway, "/api/v1/products/7") {
            assert!(body.contains("\"id\":7"), "{body}");
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served,
        "the gateway never reached the new instance {new_id}:\n{}",
        system.output()
    );

    // Ctrl-C stops everything within 5 s, and nothing is left behind.
    let children = descendants(system.child.id());
    assert!(
        children.len() >= 3,
        "expected control, gateway and catalog under up: {children:?}"
    );
    let took = system.interrupt(Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    std::thread::sleep(Duration::from_millis(100));
    let left: Vec<u32> = children.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let out = system.output();
    assert!(
        out.contains("deregistered"),
        "services deregister on the way out:\n{out}"
    );
    assert!(system.data_dir().join("logs/catalog-1.log").is_file());
}

#[test]
fn registration_without_the_token_is_refused_by_the_running_control_plane() {
    let system = support::start(&[]);
    system.wait_for_line("control plane ready", Duration::from_secs(60));
    let body = r#"{"service":"intruder","instance_id":"intruder-1","address":"127.0.0.1:9","version":"1"}"#;
    let json = [("Content-Type", "application/json")];
    let (status, problem) = http_request(system.control, "POST", "/v1/registry/instances", &json, body).unwrap();
    assert_eq!(status, 401, "{problem}");
    assert!(problem.contains("urn:flotilla:problem:unauthorized"), "{problem}");

    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let with_token = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let (status, _) = http_request(system.control, "POST", "/v1/registry/instances", &with_token, body).unwrap();
    assert_eq!(status, 201);
    let bad = body.replace("127.0.0.1:9", "nowhere");
    let (status, problem) = http_request(system.control, "POST", "/v1/registry/instances", &with_token, &bad).unwrap();
    assert_eq!(status, 400);
    assert!(problem.contains("\"name\":\"address\""), "{problem}");
}

#[test]
fn a_port_in_use_is_named_with_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    for file in ["flotilla.toml", "routes.toml"] {
        std::fs::copy(support::repo_root().join(file), dir.path().join(file)).unwrap();
    }
    let out = std::process::Command::new(support::flotilla())
        .current_dir(dir.path())
        .args(["up", "--gateway-addr", &format!("127.0.0.1:{port}")])
        .args(["--control-addr", &support::free_addr().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} is already in use")) && err.contains("--gateway-addr"),
        "{err}"
    );
}

#[test]
fn a_bad_manifest_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flotilla.toml"),
        "[services.catalog]\ninstances = 1\nreplicas = 2\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::flotilla())
        .current_dir(dir.path())
        .args(["up", "--gateway-addr", &support::free_addr().to_string()])
        .args(["--control-addr", &support::free_addr().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flotilla.toml:3:1") && err.contains("replicas"), "{err}");
}

#[test]
fn scale_grows_and_shrinks_a_running_service() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let scale = |n: &str| {
        let out = std::process::Command::new(support::flotilla())
            .args(["scale", "catalog", n, "--data-dir"])
            .arg(system.data_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let grown = scale("3");
    assert!(
        grown.contains("1 → 3") && grown.contains("catalog-2, catalog-3"),
        "{grown}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while system.instances("catalog").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "new instances never registered:\n{}",
            system.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let shrunk = scale("1");
    assert!(
        shrunk.contains("3 → 1") && shrunk.contains("catalog-3, catalog-2"),
        "{shrunk}"
    );
    assert_eq!(
        system.instances("catalog").len(),
        1,
        "removed instances deregistered before scale returned"
    );
    let (status, _) = http_get(system.gateway, "/api/v1/products/1").unwrap();
    assert_eq!(status, 200);

    let unknown = std::process::Command::new(support::flotilla())
        .args(["scale", "warehouse", "2", "--data-dir"])
        .arg(system.data_dir())
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no service `warehouse`"));
    system.interrupt(Duration::from_secs(10));
    assert!(
        !system.data_dir().join("supervisor.sock").exists(),
        "the socket goes with the supervisor"
    );
}

/// Every command finds a system on other ports from its data dir alone (`up` records where it
/// runs in `up.json`), `trace` takes the 8 hex digits the logs show, a command against nothing
/// says in one line what it tried, a second `up` on the same data dir is refused by name, a
/// closed pipe ends a command quietly, and `up.json` goes with the system.
#[test]
fn commands_find_the_running_system_from_its_data_dir_alone() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let data_dir = system.data_dir();
    let bare = |args: &[&str]| {
        std::process::Command::new(support::flotilla())
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("FLOTILLA_CONTROL_ADDR")
            .env_remove("FLOTILLA_DATA_DIR")
            .output()
            .unwrap()
    };
    // Something to trace: a request through the gateway that asks to be sampled.
    // An edited routes file, with a route the seeded table does not have.
    let routes = system.dir.path().join("routes-edited.toml");
    let shipped = std::fs::read_to_string(support::repo_root().join("routes.toml")).unwrap();
    std::fs::write(
        &routes,
        format!("{shipped}\n[[routes]]\nname = \"catalog-preview\"\nprefix = \"/catalog-preview\"\nstrip_prefix = true\nservice = \"catalog\"\n"),
    )
    .unwrap();
    assert_eq!(
        http_get(system.gateway, "/catalog-preview/api/v1/products/1")
            .unwrap()
            .0,
        404,
        "not routed before the file is applied"
    );
    let trace_id = "5eed0f1a7ace5a11ed0c0ffee0ddba11";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, _) = http_request(
        system.gateway,
        "GET",
        "/api/v1/products/1",
        &[("traceparent", &traceparent)],
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let started = Instant::now();
    loop {
        let out = bare(&["trace", &trace_id[..8], "--output", "json"]);
        if out.status.success() {
            let trace: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(trace["trace_id"], trace_id);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the trace was never found by its first 8 digits: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for args in [
        vec!["status"],
        vec!["config", "list"],
        vec!["config", "applied"],
        vec!["events", "topics"],
        vec!["traces"],
        vec!["trace", &trace_id[..8]],
        vec!["deps"],
        vec!["chaos", "clear"],
        vec!["logs"],
        vec!["scale", "catalog", "1"],
        vec!["routes", "apply", routes.to_str().unwrap()],
    ] {
        let out = bare(&args);
        assert!(
            out.status.success(),
            "`flotilla {}` without an address: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = String::from_utf8(bare(&["status"]).stdout).unwrap();
    assert!(status.contains("catalog"), "{status}");
    // The edited routes file is what the gateway follows now (`up` only seeds a new data dir).
    let started = Instant::now();
    while http_get(system.gateway, "/catalog-preview/api/v1/products/1").map_or(true, |(s, _)| s != 200) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the applied route never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tokens name the gateway as clients reach it, not a host written into the code.
    let (status, discovery) = http_get(system.gateway, "/.well-known/openid-configuration").unwrap();
    assert_eq!(status, 200, "{discovery}");
    let issuer = format!("\"issuer\":\"http://localhost:{}\"", system.gateway.port());
    assert!(discovery.contains(&issuer), "{discovery}");

    // Nothing answers where a flag points: one line, naming the address and where it came from.
    let nowhere = support::free_addr().to_string();
    let out = bare(&["status", "--control-addr", &nowhere]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&nowhere) && said.contains("--control-addr"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");

    // A second `up` on this data dir, on other ports, is refused by name.
    let second = std::process::Command::new(support::flotilla())
        .current_dir(system.dir.path())
        .args(["up", "--gateway-addr", &support::free_addr().to_string()])
        .args(["--control-addr", &support::free_addr().to_string()])
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("already runs on"), "{said}");

    // A reader that goes away: the command stops quietly, as `head` expects.
    let mut piped = std::process::Command::new(support::flotilla())
        .args(["status", "--data-dir"])
        .arg(&data_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let out = piped.wait_with_output().unwrap();
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(141),
        "the status a shell gives a tool stopped by SIGPIPE"
    );

    assert!(data_dir.join("up.json").exists());
    system.interrupt(Duration::from_secs(30));
    assert!(!data_dir.join("up.json").exists(), "up.json goes with the system");
}

/// `flotilla restart catalog` under 200 requests a second through the gateway: the one
/// instance is replaced by one that registered first, the old one drains, and no request
/// fails.
#[test]
fn restart_replaces_every_instance_without_a_failed_request() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let before = catalog_instances(&system.status());
    assert_eq!(before.len(), 1, "{before:?}");
    let load = support::load::Load::start(system.gateway, 200, vec![(http::Method::GET, "/api/v1/products/1")]);
    std::thread::sleep(Duration::from_secs(1));
    let out = std::process::Command::new(support::flotilla())
        .args(["restart", "catalog", "--data-dir"])
        .arg(system.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("catalog-1 → catalog-2"), "{said}");
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    if !report.failures().is_empty() {
        eprintln!(
            "the gateway's last warnings:\n{}",
            system.warnings("gateway", 20).join("\n")
        );
    }
    support::assert_no_failures(&report);
    let after = catalog_instances(&system.status());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].1, before[0].1, "a new process serves");
    assert!(!alive(before[0].1), "the old one exited");
    system.interrupt(Duration::from_secs(30));
}

#[test]
fn an_edited_manifest_rescales_and_replaces_instances_while_up_runs() {
    let system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let manifest = system.dir.path().join("flotilla.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let catalog = "[services.catalog]\ncommand = \"flotilla\"\nargs = [\"service\", \"catalog\"]\ninstances = 1\nenv = { RUST_LOG = \"info\" }\n";
    assert!(text.contains(catalog), "the shipped manifest's catalog entry: {text}");

    // Two instances instead of one.
    let two = catalog.replace("instances = 1", "instances = 2");
    std::fs::write(&manifest, text.replace(catalog, &two)).unwrap();
    system.wait_for_line("catalog 1 → 2 instances", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    while catalog_instances(&system.status()).len() < 2 {
        assert!(Instant::now() < deadline, "a second catalog registered");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Its environment changed: both replaced one at a time, serving throughout.
    let before: Vec<u32> = catalog_instances(&system.status())
        .iter()
        .map(|(_, pid)| *pid)
        .collect();
    let load = support::load::Load::start(system.gateway, 100, vec![(http::Method::GET, "/api/v1/products/1")]);
    let changed = two.replace("RUST_LOG = \"info\"", "RUST_LOG = \"info\", CATALOG_PAGE_SIZE = \"15\"");
    std::fs::write(&manifest, text.replace(catalog, &changed)).unwrap();
    system.wait_for_line(
        "catalog's command or environment changed — replaced 2 instances",
        Duration::from_secs(60),
    );
    let report = load.stop();
    assert!(
        report.failures().is_empty(),
        "{} requests failed during the replacement",
        report.failures().len()
    );
    let after: Vec<u32> = catalog_instances(&system.status())
        .iter()
        .map(|(_, pid)| *pid)
        .collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "new processes: {before:?} → {after:?}"
    );
    let (_, page) = http_get(system.gateway, "/api/v1/products").unwrap();
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["per_page"], 15, "the new environment is in force: {page}");
}
