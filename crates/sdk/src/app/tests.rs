use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Set when the background task the app spawned is dropped: the set stopped it.
static TASK_STOPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop(&'static AtomicBool);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
struct Greeting {
    greeting: String,
}

impl Settings for Greeting {
    fn validate(&self) -> Result<(), String> {
        if self.greeting.len() > 20 {
            return Err("`greeting` is at most 20 characters".into());
        }
        Ok(())
    }
}

struct Hello;

impl App for Hello {
    const NAME: &'static str = "hello";
    const VERSION: &'static str = "1.2.3";
    type Config = Greeting;

    async fn start(setup: &Setup<Greeting>) -> Result<Router, AppError> {
        setup.tasks().spawn("background", async {
            let _stopped = SetOnDrop(&TASK_STOPPED);
            std::future::pending::<()>().await;
        });
        let config = setup.config().clone();
        Ok(Router::new()
            .route(
                "/hello",
                get(|State(config): State<LiveConfig<Greeting>>| async move {
                    let greeting = config.current().greeting.clone();
                    if greeting.is_empty() {
                        "hello".to_owned()
                    } else {
                        greeting
                    }
                }),
            )
            .with_state(config))
    }
}

async fn get_text(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn an_app_serves_its_routes_and_its_tasks_stop_with_it() {
    let listener = bind(None, "--listen").await.unwrap();
    let port = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // `run` without its process-wide parts (certificate, telemetry: global to the test binary).
    let tasks = Tasks::new();
    let app_tasks = tasks.clone();
    let running = tokio::spawn(async move {
        let served = serve::<Hello>(ServiceEnv::default(), listener, &app_tasks, async move {
            let _ = stopped.await;
        })
        .await;
        app_tasks.stop(TASKS_STOP_WITHIN).await;
        served
    });
    // Bound before the app starts: the first request waits in the backlog, never refused.
    let answer = get_text(port, "/hello").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    // The runtime's own routes come with every app.
    let ready = get_text(port, "/health/ready").await.unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(!TASK_STOPPED.load(Ordering::SeqCst));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert!(TASK_STOPPED.load(Ordering::SeqCst), "the app's task stopped with it");
    assert!(get_text(port, "/hello").await.is_err(), "the listener is closed");
}

#[test]
fn the_listen_address_comes_from_the_flag_then_the_environment() {
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>().into_iter();
    let addr: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    assert_eq!(
        listen_from(args(&["--listen", "127.0.0.1:9001"]), None).unwrap(),
        Some(addr)
    );
    assert_eq!(
        listen_from(args(&["--listen=127.0.0.1:9001"]), Some("127.0.0.1:1".into())).unwrap(),
        Some(addr)
    );
    assert_eq!(
        listen_from(args(&[]), Some("127.0.0.1:9001".into())).unwrap(),
        Some(addr)
    );
    assert_eq!(listen_from(args(&[]), Some(String::new())).unwrap(), None);
    let err = listen_from(args(&["--listen", "nowhere"]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nowhere` is not an address"), "{err}");
    let err = listen_from(args(&["--port", "1"]), None).unwrap_err().to_string();
    assert!(err.contains("unexpected argument `--port`"), "{err}");
    assert!(listen_from(args(&["--listen"]), None).is_err());
}

#[tokio::test]
async fn a_taken_port_names_the_setting_to_change() {
    let taken = bind(None, "--listen").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind(Some(addr), "--admin-listen").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("port {} is already in use", addr.port())),
        "{err}"
    );
    assert!(err.ends_with("choose another with --admin-listen"), "{err}");
}
