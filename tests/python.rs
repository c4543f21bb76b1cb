//! A service in another language under `up`: `examples/python/hello.py` (standard library
//! only) registers, heartbeats, follows its live config and reports it, continues the caller's
//! trace, is routed by the gateway, and deregisters when scaled to zero — on the protocol of
//! docs/protocol.md, beside the mTLS fleet as a service the manifest declares plain.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{cli_in, http_request, json_of, wait_until};

#[test]
fn a_python_service_registers_follows_its_config_joins_the_trace_and_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = support::repo_root();
    let script = repo.join("examples/python/hello.py").canonicalize().unwrap();
    let mut manifest = std::fs::read_to_string(repo.join("flotilla.toml")).unwrap();
    manifest.push_str(&format!(
        "\n[services.hello]\ncommand = \"python3\"\nargs = [{:?}, \"hello\"]\nmtls = false\n",
        script.display().to_string()
    ));
    std::fs::write(dir.path().join("flotilla.toml"), manifest).unwrap();
    let mut routes = std::fs::read_to_string(repo.join("routes.toml")).unwrap();
    routes.push_str("\n[[routes]]\nprefix = \"/api/v1/hello\"\nservice = \"hello\"\n");
    std::fs::write(dir.path().join("routes.toml"), routes).unwrap();
    let system = support::System::start_in(Path::new(support::flotilla()), dir, &[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let home = system.dir.path().to_path_buf();

    // Routed by the gateway; registered with its metadata; in the merged document.
    let (status, hello) = json_of(http_request(system.gateway, "GET", "/api/v1/hello", &[], "").unwrap());
    assert_eq!((status, hello["message"].as_str()), (200, Some("Hello")), "{hello}");
    let instances = system.status()["instances"].clone();
    let ours: Vec<&Value> = instances
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "hello")
        .collect();
    assert_eq!(ours.len(), 1, "{instances}");
    assert_eq!(ours[0]["metadata"]["language"], "python");
    assert_eq!(ours[0]["metadata"]["supervisor.name"], "hello-1");

    // Live config: changed in the store, answered by the next request, reported as applied.
    let (ok, said, _) = cli_in(&home, &["config", "set", "greeting", "Hej", "--scope", "hello"]);
    assert!(ok, "{said}");
    wait_until("the new greeting answered", Duration::from_secs(15), || {
        let (_, hello) = json_of(http_request(system.gateway, "GET", "/api/v1/hello", &[], "").ok()?);
        (hello["message"] == "Hej").then_some(())
    });
    wait_until("the revision reported as applied", Duration::from_secs(10), || {
        let (ok, applied, _) = cli_in(&home, &["config", "applied", "--service", "hello", "--output", "json"]);
        let applied: Value = serde_json::from_str(&applied).ok().filter(|_| ok)?;
        let text = applied.to_string();
        (text.contains("\"applied\"") && text.contains("hello-1")).then_some(())
    });

    // The caller's trace continues: a sampled traceparent in, the service's span under the
    // gateway's in the stored trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, _) = http_request(
        system.gateway,
        "GET",
        "/api/v1/hello",
        &[("traceparent", parent.as_str())],
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (python, spans) = wait_until("the trace with the python span", Duration::from_secs(20), || {
        let (ok, text, _) = cli_in(&home, &["trace", trace_id, "--output", "json"]);
        let trace: Value = serde_json::from_str(&text).ok().filter(|_| ok)?;
        let spans = trace["spans"].as_array()?.clone();
        let python = spans.iter().find(|s| s["service"] == "hello")?.clone();
        spans
            .iter()
            .any(|s| s["service"] == "gateway")
            .then_some((python, spans))
    });
    let parent = python["parent_span_id"].as_str().unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s["service"] == "gateway" && s["span_id"] == parent),
        "the python span hangs under one of the gateway's: {python} in {spans:?}"
    );
    assert_eq!(python["name"], "GET /api/v1/hello");

    // Scaled to zero: it deregisters (SIGTERM) at once rather than expiring.
    let stopped = Instant::now();
    let (ok, said, _) = cli_in(&home, &["scale", "hello", "0"]);
    assert!(ok, "{said}");
    wait_until("hello gone from the registry", Duration::from_secs(10), || {
        let instances = system.status()["instances"].clone();
        (!instances.as_array()?.iter().any(|i| i["service"] == "hello")).then_some(())
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(3),
        "deregistered, not expired: {:?}",
        stopped.elapsed()
    );
    assert!(system.output().contains("deregistered"), "{}", system.output());
}
