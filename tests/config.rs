//! System test of central configuration: under steady load, a route added to the config store
//! with `flotilla config set` is followed by the running gateway with no failed request, and
//! a broken revision is refused by the gateway (which keeps its routes) and shown as refused.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{http_get, http_request, load::Load};

fn config_json(system: &support::System, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let out = system.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_gateway_follows_a_route_changed_in_the_store_without_a_failed_request() {
    let system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    assert!(
        system.output().contains("seeded the config store from routes.toml"),
        "{}",
        system.output()
    );

    let load = Load::start(
        system.gateway,
        200,
        vec![(http::Method::GET, "/api/v1/products?per_page=1")],
    );
    let (status, _) = http_get(system.gateway, "/catalog").unwrap();
    assert_eq!(status, 404, "no such route yet");

    // Add a route with the CLI, as an operator would.
    let seeded = config_json(&system, &["get", "routes", "--scope", "gateway"]);
    let mut routes = seeded["value"].as_array().unwrap().clone();
    routes.push(serde_json::json!({
        "name": "catalog-short",
        "prefix": "/catalog",
        "service": "catalog",
        "rewrite_prefix": "/api/v1/products"
    }));
    let file = system.dir.path().join("routes.json");
    std::fs::write(&file, serde_json::to_string(&routes).unwrap()).unwrap();
    let value = format!("@{}", file.display());
    let out = system.cli(&[
        "config",
        "set",
        "routes",
        "--scope",
        "gateway",
        &value,
        "-m",
        "short catalog path",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set_at = Instant::now();
    loop {
        let (status, body) = http_get(system.gateway, "/catalog?per_page=2").unwrap();
        if status == 200 {
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(page["items"].as_array().unwrap().len(), 2);
            break;
        }
        assert!(
            set_at.elapsed() < Duration::from_secs(5),
            "the gateway never took the new route"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("new route served {:?} after `config set` returned", set_at.elapsed());

    // A revision of another key of the gateway's layers leaves its table alone: applied, but
    // no route table built again (its breakers and pools are kept).
    let tables = || system.output().matches("routes from the config store in force").count();
    let before = tables();
    let out = system.cli(&["config", "set", "greeting", "\"hello\"", "--scope", "application"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revision = config_json(&system, &["get", "greeting", "--scope", "application"])["revision"]
        .as_u64()
        .unwrap();
    support::wait_until(
        "the gateway applied the unrelated revision",
        Duration::from_secs(5),
        || {
            let applied = config_json(&system, &["applied", "--service", "gateway"]);
            applied
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["revision"] == revision && g["status"] == "applied")
                .then_some(())
        },
    );
    assert_eq!(
        tables(),
        before,
        "the route table was built again for a revision that left it as it was"
    );

    // A revision the gateway cannot build (the CLI would refuse it, so straight to the API).
    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap();
    let broken = serde_json::json!({"value": [{"prefix": "/", "service": "catalog", "balance": "bogus"}]});
    let (status, body) = http_request(
        system.control,
        "PUT",
        "/v1/config/gateway/default/routes",
        &[
            ("Authorization", &format!("Bearer {}", token.trim())),
            ("Content-Type", "application/json"),
        ],
        &broken.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let broken_revision = serde_json::from_str::<serde_json::Value>(&body).unwrap()["revision"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let gateway = loop {
        let applied = config_json(&system, &["applied", "--service", "gateway"]);
        if let Some(g) = applied
            .as_array()
            .unwrap()
            .first()
            .filter(|g| g["revision"] == broken_revision)
        {
            break g.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the gateway never reported: {applied}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gateway["status"], "refused");
    assert_eq!(
        gateway["running"],
        broken_revision - 1,
        "it runs the last good revision"
    );
    assert!(gateway["error"].as_str().unwrap().contains("bogus"), "{gateway}");
    let (status, _) = http_get(system.gateway, "/catalog").unwrap();
    assert_eq!(status, 200, "the last good routes stay in force");

    // `config edit`, with an editor that changes the value, reaches every catalog instance …
    let edit = |editor: &str| {
        std::process::Command::new(support::flotilla())
            .args(["config", "edit", "page_size", "--scope", "catalog", "-m", "via editor"])
            .args(["--control-addr", &system.control.to_string()])
            .arg("--data-dir")
            .arg(system.data_dir())
            .env("EDITOR", editor)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = edit("sed -i s/null/7/");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let edited_at = Instant::now();
    loop {
        let (_, body) = http_get(system.gateway, "/api/v1/products").unwrap();
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        if page["items"].as_array().unwrap().len() == 7 {
            break;
        }
        assert!(
            edited_at.elapsed() < Duration::from_secs(5),
            "the catalog never took page_size 7: {page}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // … and one that breaks the JSON writes nothing, naming the line.
    let out = edit("sed -i s/7/7,/");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(".json:1:") && stderr.contains("nothing written"),
        "{stderr}"
    );
    let page_history = config_json(&system, &["history", "page_size", "--scope", "catalog"]);
    assert_eq!(page_history.as_array().unwrap().len(), 1, "{page_history}");
    assert_eq!(page_history[0]["value"], 7);

    // Keep the load on past the changes for a while.
    while load.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = load.stop();
    let not_ok: Vec<_> = report
        .samples
        .iter()
        .filter(|s| !matches!(s.outcome, Ok(200)))
        .collect();
    assert!(report.samples.len() > 200, "{} requests", report.samples.len());
    assert!(
        not_ok.is_empty(),
        "{} of {} requests failed: {:?}",
        not_ok.len(),
        report.samples.len(),
        &not_ok[..not_ok.len().min(3)]
    );

    let history = config_json(&system, &["history", "routes", "--scope", "gateway"]);
    let comments: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["comment"].as_str().unwrap())
        .collect();
    assert_eq!(comments, vec!["", "short catalog path", "seeded from routes.toml"]);
    assert_eq!(history[2]["author"], "flotilla up");
}
