//! Your own service in a running system, as a new user makes it: `flotilla new service` into a
//! fresh directory outside this workspace, built, added to a running `up` without a restart,
//! called through the gateway with a token (it asks the catalog over mTLS, granted by the
//! manifest's `calls`), seen in the merged OpenAPI document, in `flotilla status` and in a
//! trace — every command without address flags — refused a bad edit of the manifest, and
//! removed again by editing it.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{cli_in as cli, flotilla, http_get, http_request, json_of, wait_until};

#[test]
fn a_scaffolded_service_joins_a_running_system_is_called_traced_and_removed() {
    // Every trace kept and exported within 200 ms, so this one is there to see.
    let system = support::System::start_with_env(
        Path::new(flotilla()),
        &support::repo_root(),
        &[],
        &[("OTEL_TRACES_SAMPLER_ARG", "1"), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let dir = system.dir.path().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("reviews");

    // 1. Scaffold and build outside this workspace, on the checkout's SDK. Its own target dir,
    // kept between runs, so only the first run compiles the SDK's dependencies.
    let target = support::repo_root().join("target/scaffolded");
    let started = Instant::now();
    let out = Command::new(flotilla())
        .current_dir(&dir)
        .args(["new", "service", "reviews", "--path"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
    let built = started.elapsed();
    assert!(said.contains("added to"), "{said}");
    let manifest = std::fs::read_to_string(dir.join("flotilla.toml")).unwrap();
    assert!(
        manifest.contains("[services.reviews]") && manifest.contains("calls = [\"catalog\"]"),
        "{manifest}"
    );

    // 2. The running `up` starts it and the gateway routes to it: 401 for no token.
    system.wait_for_line("added reviews", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_answer = loop {
        let last = http_get(system.gateway, "/api/v1/reviews").ok();
        if let Some((401, body)) = &last {
            break (401, body.clone());
        }
        assert!(
            Instant::now() < deadline,
            "reviews not answering through the gateway within 30 s; last {last:?}; up said:\n{}",
            system.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(first_answer.1.contains("urn:flotilla:problem:"), "{}", first_answer.1);
    let answering = started.elapsed();
    eprintln!(
        "new service → first answer through the gateway: {:.1}s (build {:.1}s)",
        answering.as_secs_f64(),
        built.as_secs_f64()
    );

    // 3. With a token: an entry about product 1 (reviews asks the catalog over mTLS) is kept;
    // one about a product the catalog does not have is refused.
    let token = support::customer(&system, "reviewer@example.com");
    let bearer = format!("Bearer {token}");
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let body = json!({"subject": "1", "text": "Solid and well made."}).to_string();
    let (status, created) = json_of(http_request(system.gateway, "POST", "/api/v1/reviews", &headers, &body).unwrap());
    assert_eq!(status, 201, "{created}");
    let written = created["id"].as_str().unwrap().to_owned();
    let body = json!({"subject": "99999", "text": "No such thing."}).to_string();
    let (status, refused) = json_of(http_request(system.gateway, "POST", "/api/v1/reviews", &headers, &body).unwrap());
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["invalid-params"][0]["name"], "subject", "{refused}");
    let (status, list) = json_of(http_request(system.gateway, "GET", "/api/v1/reviews", &headers, "").unwrap());
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], written.as_str());

    // 4. In the merged OpenAPI document, as generated from its handlers.
    wait_until("reviews in /api/openapi.json", Duration::from_secs(15), || {
        let (_, doc) = json_of(http_get(system.gateway, "/api/openapi.json").ok()?);
        doc["paths"]["/api/v1/reviews"]["post"].is_object().then_some(())
    });

    // 5. In `flotilla status`, and in a trace that reaches the catalog.
    let (ok, table, err) = cli(&dir, &["status"]);
    assert!(ok && table.contains("reviews"), "{table}{err}");
    let trace = wait_until("a trace of reviews calling catalog", Duration::from_secs(15), || {
        let (ok, listed, _) = cli(&dir, &["traces", "--service", "reviews", "--output", "json"]);
        let listed: Value = serde_json::from_str(&listed).ok().filter(|_| ok)?;
        listed["traces"].as_array()?.iter().find_map(|summary| {
            let id = summary["trace_id"].as_str()?;
            let (ok, trace, _) = cli(&dir, &["trace", &id[..8], "--output", "json"]);
            let trace: Value = serde_json::from_str(&trace).ok().filter(|_| ok)?;
            let services: Vec<&str> = trace["spans"]
                .as_array()?
                .iter()
                .filter_map(|s| s["service"].as_str())
                .collect();
            (services.contains(&"reviews") && services.contains(&"catalog")).then_some(trace)
        })
    });
    assert!(trace["spans"].as_array().unwrap().len() >= 3, "{trace}");

    // 6. A bad edit is refused by file and line, and the running system kept.
    let broken = manifest.replace("[services.reviews]\n", "[services.reviews]\nreplicas = 2\n");
    std::fs::write(dir.join("flotilla.toml"), &broken).unwrap();
    system.wait_for_line("unknown field `replicas`", Duration::from_secs(10));
    system.wait_for_line("the running system is kept", Duration::from_secs(1));
    let (status, _) = http_request(system.gateway, "GET", "/api/v1/reviews", &headers, "").unwrap();
    assert_eq!(status, 200, "still serving");

    // 7. Removed from the manifest: drained and stopped, gone from the registry.
    std::fs::copy(support::repo_root().join("flotilla.toml"), dir.join("flotilla.toml")).unwrap();
    system.wait_for_line("removed reviews", Duration::from_secs(15));
    wait_until("reviews gone from the registry", Duration::from_secs(10), || {
        let (ok, table, _) = cli(&dir, &["status", "--output", "json"]);
        let status: Value = serde_json::from_str(&table).ok().filter(|_| ok)?;
        (!status["instances"]
            .as_array()?
            .iter()
            .any(|i| i["service"] == "reviews"))
        .then_some(())
    });
}
