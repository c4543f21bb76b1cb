//! The gateway binary on its own, from a routes file with static upstreams and no control
//! plane (as Kong's DB-less mode).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{flotilla, free_addr, http_get};

/// A one-thread HTTP upstream answering every request with the path it was asked for.
fn upstream() -> std::net::SocketAddr {
    upstream_named("")
}

/// The same, with a name in front of the path (`{"path":"<name>/x"}`).
fn upstream_named(name: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = format!("{name}{}", request_line.split_whitespace().nth(1).unwrap_or(""));
            let body = format!("{{\"path\":\"{path}\"}}");
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// `flotilla gateway` with only a routes file.
fn standalone(listen: std::net::SocketAddr, routes: &std::path::Path) -> std::process::Child {
    Command::new(flotilla())
        .args(["gateway", "--listen", &listen.to_string(), "--routes"])
        .arg(routes)
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn standalone_gateway_routes_from_a_file() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!("[[routes]]\nprefix = \"/legacy\"\nupstreams = [\"http://{upstream}\"]\nstrip_prefix = true\n"),
    )
    .unwrap();
    let listen = free_addr();
    let mut gateway = standalone(listen, &routes);
    let started = Instant::now();
    let ready = loop {
        match http_get(listen, "/-/ready") {
            Ok((200, _)) => break true,
            _ if started.elapsed() > Duration::from_secs(20) => break false,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let legacy = http_get(listen, "/legacy/orders/7");
    let missing = http_get(listen, "/elsewhere");
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(ready, "the gateway never became ready");
    let (status, body) = legacy.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "{\"path\":\"/orders/7\"}");
    let (status, body) = missing.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("urn:flotilla:problem:not-found"), "{body}");
}

#[test]
fn routes_to_a_service_without_a_control_plane_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    std::fs::write(&routes, "[[routes]]\nprefix = \"/x\"\nservice = \"catalog\"\n").unwrap();
    let out = Command::new(flotilla())
        .args(["gateway", "--listen", &free_addr().to_string(), "--routes"])
        .arg(&routes)
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes.toml") && err.contains("--control-addr"), "{err}");
}

#[test]
fn a_changed_routes_file_takes_effect_and_a_broken_one_is_ignored() {
    let (a, b) = (upstream_named("a"), upstream_named("b"));
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.toml");
    let write = |text: String| std::fs::write(&routes, text).unwrap();
    write(format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{a}\"]\n"));
    let listen = free_addr();
    let mut gateway = standalone(listen, &routes);
    let answer = || http_get(listen, "/x").ok().map(|(_, body)| body);
    let wait_for = |want: &str| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if answer().is_some_and(|b| b.contains(want)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    let first = wait_for("\"a/x\"");
    // Make sure the new file gets a new modification time even on coarse clocks.
    std::thread::sleep(Duration::from_millis(20));
    write(format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{b}\"]\n"));
    let switched = wait_for("\"b/x\"");
    write("[[routes]]\nprefix = \"/\"\nupstreamz = []\n".into());
    std::thread::sleep(Duration::from_millis(2_500));
    let kept = answer();
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(first, "the gateway never served the first routes");
    assert!(switched, "the changed routes file never took effect");
    assert!(
        kept.is_some_and(|b| b.contains("\"b/x\"")),
        "a broken file must leave the last good routes in force"
    );
}
