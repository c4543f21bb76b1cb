//! The dashboard at `/ui`, against a real `flotilla up`: refused without a session (a page
//! redirects to the sign-in form, the live stream and writes are refused), and — in a real
//! Chromium driven by Playwright (`tests/ui/dashboard.py`) — signing in, the overview listing
//! every shop service, the map after an order, a service's page, the order's trace from it as
//! a waterfall and its logs, a config key made, refused by the catalog, diffed, in conflict and
//! rolled back, a dead letter replayed, payments stopped (the overview, the map and the waiting
//! order sagas change without a reload) and back, a read-only session refused on writes, a
//! phone's width in the dark scheme, signing out; no console error.
//! Each page's load time is reported (timing is for benchmarks, not for this test).
//! Screenshots go to a temp dir, or to `docs/img` with `FLOTILLA_UPDATE_SCREENSHOTS=1`.
//!
//! The browser part needs Chromium (`/usr/bin/chromium`) and Python's `playwright`; without
//! them it is skipped with a note, unless `FLOTILLA_TEST_BROWSER=1` (as `.ci/run` sets), which
//! makes their absence a failure.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod support;

use std::time::Duration;

use support::{http_get, http_request};

fn browser_available() -> bool {
    std::path::Path::new("/usr/bin/chromium").exists()
        && std::process::Command::new("python3")
            .args(["-c", "import playwright.sync_api"])
            .status()
            .is_ok_and(|s| s.success())
}

#[test]
fn the_dashboard_is_closed_without_a_session_and_works_in_a_real_browser() {
    // Every trace kept, so the one order the browser part places draws its edges on the map.
    let system = support::System::start_with_env(
        std::path::Path::new(support::flotilla()),
        &support::repo_root(),
        &[],
        &[("OTEL_TRACES_SAMPLER_ARG", "1")],
    );
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let control = system.control;

    // Without a session: pages go to the form, the stream and writes are refused, and a
    // bearer credential is no session.
    let (status, _) = http_get(control, "/ui").unwrap();
    assert_eq!(status, 303, "a page without a session redirects to the sign-in form");
    let (status, _) = http_request(control, "GET", "/ui/live", &[("x-flotilla-fragment", "main")], "").unwrap();
    assert_eq!(status, 401);
    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let (status, _) = http_request(control, "GET", "/ui", &[("Authorization", &bearer)], "").unwrap();
    assert_eq!(status, 303, "the dashboard takes sessions, not bearer credentials");
    // Writes without a session go to the form too, and change nothing.
    let (status, _) = http_request(
        control,
        "POST",
        "/ui/config",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "scope=catalog&profile=default&key=page_size&value=7",
    )
    .unwrap();
    assert_eq!(status, 303);
    let (status, body) = http_get(control, "/ui/sign-in").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("name=\"credential\""), "{body}");
    // A service's credential opens nothing here.
    let service = std::process::Command::new(support::flotilla())
        .args(["credential", "catalog", "--data-dir"])
        .arg(system.data_dir())
        .output()
        .unwrap();
    let credential = String::from_utf8(service.stdout).unwrap();
    let form = format!("credential={}", credential.trim().replace(':', "%3A"));
    let (status, _) = http_request(
        control,
        "POST",
        "/ui/sign-in",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form,
    )
    .unwrap();
    assert_eq!(status, 303);

    if !browser_available() {
        assert!(
            std::env::var("FLOTILLA_TEST_BROWSER").is_err(),
            "FLOTILLA_TEST_BROWSER is set but Chromium or Python's playwright is missing"
        );
        eprintln!("skipping the browser part: no /usr/bin/chromium or no Python playwright");
        return;
    }
    let screenshots = match std::env::var("FLOTILLA_UPDATE_SCREENSHOTS") {
        Ok(v) if v == "1" => support::repo_root().join("docs/img"),
        _ => system.dir.path().join("screenshots"),
    };
    std::fs::create_dir_all(&screenshots).unwrap();
    let run = std::process::Command::new("python3")
        .arg(support::repo_root().join("tests/ui/dashboard.py"))
        .arg("--control")
        .arg(format!("http://{control}"))
        .arg("--gateway")
        .arg(format!("http://{}", system.gateway))
        .arg("--data-dir")
        .arg(system.data_dir())
        .arg("--flotilla")
        .arg(support::flotilla())
        .arg("--screenshots")
        .arg(&screenshots)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    eprintln!("{out}");
    assert!(run.status.success(), "the browser test failed:\n{out}\n{err}");
    for view in [
        "sign-in",
        "overview",
        "map",
        "service",
        "traces",
        "trace",
        "logs",
        "config",
        "config-diff",
        "events",
        "sagas",
        "overview-payments-down",
        "overview-phone-dark",
    ] {
        assert!(screenshots.join(format!("{view}.png")).is_file(), "{view}.png");
    }
}
