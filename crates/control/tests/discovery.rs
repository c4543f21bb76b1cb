//! The control plane with real SDK clients over loopback: a service registers, a watcher
//! sees it at once, deregistration and a control plane restart are followed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla::discovery::{Discovery, RegistryClient};
use flotilla::runtime::{Service, ServiceEnv};
use flotilla_control::{ControlConfig, RegistryConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "test-token";

async fn start_control(addr: SocketAddr) -> oneshot::Sender<()> {
    start_control_warming(addr, Duration::ZERO).await
}

async fn start_control_warming(addr: SocketAddr, warm_up: Duration) -> oneshot::Sender<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ControlConfig {
        registry: RegistryConfig {
            heartbeat: Duration::from_millis(100),
            ttl: Duration::from_secs(5),
        },
        token: TOKEN.into(),
        warm_up,
    };
    let storage = flotilla_control::Storage::in_memory().await.unwrap();
    tokio::spawn(flotilla_control::serve(listener, config, storage, async move {
        let _ = stopped.await;
    }));
    stop
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn watchers_follow_registration_deregistration_and_a_control_plane_restart() {
    let control_addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let stop_control = start_control(control_addr).await;

    let (stop_watch, watch_stopped) = oneshot::channel::<()>();
    let discovery = Discovery::spawn(
        RegistryClient::new(&control_addr.to_string(), Some(TOKEN.into())),
        async move {
            let _ = watch_stopped.await;
        },
    );
    discovery.ready().await;

    let env = ServiceEnv {
        control_addr: Some(control_addr.to_string()),
        token: Some(TOKEN.into()),
        data_dir: std::env::temp_dir(),
        instance_name: Some("echo-1".into()),
        zone: Some("eu-1a".into()),
        events: None,
        advertise: None,
    };
    let listener = Service::bind(None).await.unwrap();
    let service_addr = listener.local_addr().unwrap();
    let (stop_service, service_stopped) = oneshot::channel::<()>();
    let service = tokio::spawn(Service::new("echo", "1.2.3").env(env).run(listener, async move {
        let _ = service_stopped.await;
    }));

    wait_until("the instance to appear", Duration::from_secs(5), || {
        discovery.instances("echo").len() == 1
    })
    .await;
    let instance = discovery.instances("echo")[0].clone();
    assert_eq!(instance.address, service_addr.to_string());
    assert_eq!(instance.version, "1.2.3");
    assert_eq!(instance.metadata["supervisor.name"], "echo-1");
    assert_eq!(
        instance.metadata["zone"], "eu-1a",
        "FLOTILLA_ZONE is registered as the zone"
    );
    assert_eq!(instance.pid(), Some(std::process::id()));

    // A restarted control plane starts empty; the service notices on its next heartbeat and
    // registers again, and the watcher reconciles.
    stop_control.send(()).unwrap();
    wait_until("the view to go stale", Duration::from_secs(5), || {
        discovery.snapshot().stale
    })
    .await;
    assert_eq!(
        discovery.instances("echo").len(),
        1,
        "the last view is kept while the control plane is away"
    );
    let stop_control = start_control(control_addr).await;
    wait_until("the view to be fresh again", Duration::from_secs(5), || {
        let snap = discovery.snapshot();
        !snap.stale && snap.services.get("echo").is_some_and(|i| i.len() == 1)
    })
    .await;

    // Deregistration on shutdown reaches the watcher before the service is gone.
    let stopped_at = Instant::now();
    stop_service.send(()).unwrap();
    wait_until("the instance to leave", Duration::from_secs(2), || {
        discovery.instances("echo").is_empty()
    })
    .await;
    let seen_after = stopped_at.elapsed();
    assert!(
        seen_after < Duration::from_secs(2),
        "deregistration is pushed, not left to the 5 s TTL: {seen_after:?}"
    );
    service.await.unwrap().unwrap();

    let _ = stop_watch.send(());
    let _ = stop_control.send(());
}

#[tokio::test]
async fn a_warming_registry_adds_to_a_watchers_view_and_removes_only_when_complete() {
    let control_addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let stop_control = start_control(control_addr).await;
    let client = RegistryClient::new(&control_addr.to_string(), Some(TOKEN.into()));
    let registration = |id: &str, port: u16| flotilla_api::Registration {
        service: "echo".into(),
        instance_id: id.into(),
        address: format!("127.0.0.1:{port}"),
        version: "1".into(),
        metadata: Default::default(),
    };
    client.register(&registration("echo-old", 1001)).await.unwrap();
    let (_stop_watch, watch_stopped) = oneshot::channel::<()>();
    let discovery = Discovery::spawn(
        RegistryClient::new(&control_addr.to_string(), Some(TOKEN.into())),
        async move {
            let _ = watch_stopped.await;
        },
    );
    wait_until("the first view", Duration::from_secs(5), || {
        discovery.instances("echo").len() == 1
    })
    .await;

    // The control plane crashes and comes back warming; "echo-old" never re-registers, a
    // new instance does.
    stop_control.send(()).unwrap();
    wait_until("the view to go stale", Duration::from_secs(5), || {
        discovery.snapshot().stale
    })
    .await;
    let stop_control = start_control_warming(control_addr, Duration::from_millis(1500)).await;
    client.register(&registration("echo-new", 1002)).await.unwrap();
    wait_until("the new instance to be added", Duration::from_secs(5), || {
        discovery.instances("echo").len() == 2
    })
    .await;
    let ids: Vec<String> = discovery
        .instances("echo")
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    assert_eq!(
        ids,
        ["echo-new", "echo-old"],
        "nothing is dropped while the registry warms up"
    );
    assert!(discovery.snapshot().stale);

    // Once warm, the registry's list is the truth.
    wait_until("the warm-up to end", Duration::from_secs(5), || {
        let ids: Vec<String> = discovery
            .instances("echo")
            .iter()
            .map(|i| i.instance_id.clone())
            .collect();
        ids == ["echo-new"]
    })
    .await;
    assert!(!discovery.snapshot().stale);
    let _ = stop_control.send(());
}
