//! The real binary, on a free port, without a control plane: it serves its health checks and
//! its OpenAPI document, and refuses a caller without a token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child, std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn serves_health_and_its_document_and_refuses_an_anonymous_caller() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let data = std::env::temp_dir().join(format!("{{name}}-test-{}", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_{{name}}"))
        .args(["--listen", &addr.to_string()])
        .env("FLOTILLA_DATA_DIR", &data)
        .env_remove("FLOTILLA_CONTROL_ADDR")
        .env_remove("FLOTILLA_CA_FILE")
        .stdout(Stdio::null())
        .spawn()
        .expect("the service starts");
    let _running = Running(child, data);
    let started = Instant::now();
    let ready = loop {
        match get(addr, "/health/ready") {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(20) => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => panic!("not serving after 20 s: {err}"),
        }
    };
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let document = get(addr, "/openapi.json").expect("the document");
    assert!(document.contains("\"/api/v1/{{name}}\""), "{document}");
    let anonymous = get(addr, "/api/v1/{{name}}").expect("an answer");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(
        anonymous.to_ascii_lowercase().contains("application/problem+json"),
        "{anonymous}"
    );
}
