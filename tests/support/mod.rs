//! What the system tests share: the harness in `flotilla-bench`, pointed at the binary
//! under test and the repository's shipped manifest.

#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

pub use flotilla_bench::load;
pub use flotilla_bench::login_flood;
pub use flotilla_bench::mtls::Direct;
pub use flotilla_bench::procs::{alive, descendants, free_addr, http_get, http_request};
pub use flotilla_bench::system::System;

/// The `flotilla` binary under test.
pub fn flotilla() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla")
}

/// The repository's root, where the shipped manifest and routes live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `flotilla up` with the shipped manifest, on free ports in a temp dir.
pub fn start(extra: &[&str]) -> System {
    System::start(Path::new(flotilla()), &repo_root(), extra)
}

/// An answer's status and JSON body (`null` when the body is not JSON).
pub fn json_of(answer: (u16, String)) -> (u16, Value) {
    (answer.0, serde_json::from_str(&answer.1).unwrap_or(Value::Null))
}

/// Signs a customer up through the gateway and returns their access token.
pub fn customer(system: &System, email: &str) -> String {
    customer_at(system.gateway, email)
}

/// [`customer`], through the gateway at `gateway`.
pub fn customer_at(gateway: std::net::SocketAddr, email: &str) -> String {
    let body = json!({"email": email, "password": "correct horse battery", "name": "Ana"}).to_string();
    let (status, answer) = http_request(
        gateway,
        "POST",
        "/api/v1/accounts",
        &[("Content-Type", "application/json")],
        &body,
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let form = format!(
        "grant_type=password&client_id=shop-web&username={}&password=correct+horse+battery",
        email.replace('@', "%40")
    );
    let (status, tokens) = json_of(
        http_request(
            gateway,
            "POST",
            "/oauth2/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &form,
        )
        .unwrap(),
    );
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// The load ran (more than 300 requests) and not one of them failed.
///
/// # Panics
/// Naming how many failed, with the first few.
pub fn assert_no_failures(report: &load::Report) {
    assert!(report.samples.len() > 300, "the load ran: {}", report.samples.len());
    assert!(
        report.failures().is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures().len(),
        report.samples.len(),
        report.failures().iter().take(5).collect::<Vec<_>>()
    );
}

/// Polls `check` every 200 ms until it gives a value.
///
/// # Panics
/// After `within`, naming `what` was awaited.
pub fn wait_until<T>(what: &str, within: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A command of the system's CLI run in `dir` with no address flag, as a user runs it beside
/// a running `up`: it finds the system through the data dir. (Succeeded, stdout, stderr.)
pub fn cli_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(flotilla())
        .current_dir(dir)
        .args(args)
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
