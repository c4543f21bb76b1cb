use std::path::Path;
use std::time::Instant;

use flotilla_api::telemetry::TraceQuery;
use rand::rngs::StdRng;

use super::*;
use crate::manifest::Program;
use crate::supervisor::control;

fn candidate(name: &str, service: &str, pid: Option<u32>, paused: bool) -> Candidate {
    Candidate {
        name: name.into(),
        service: service.into(),
        pid,
        paused,
    }
}

fn processes() -> Vec<Candidate> {
    vec![
        candidate("control", "control", Some(10), false),
        candidate("gateway", "gateway", Some(11), false),
        candidate("orders-1", "orders", Some(20), false),
        candidate("orders-2", "orders", Some(21), true),
        candidate("orders-3", "orders", None, false),
        candidate("payments-1", "payments", Some(30), false),
    ]
}

fn picks(target: &str, paused_ok: bool, seed: u64) -> Vec<String> {
    let list = processes();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..40)
        .map(|_| choose(target, &list, paused_ok, &mut rng).unwrap().name.clone())
        .collect()
}

fn distinct(names: &[String]) -> std::collections::BTreeSet<&str> {
    names.iter().map(String::as_str).collect()
}

#[test]
fn a_service_is_one_of_its_running_instances_and_random_is_any_process() {
    let pause = picks("orders", false, 1);
    assert_eq!(
        distinct(&pause),
        ["orders-1"].into(),
        "not the paused one, nor the restarting one"
    );
    let kill = picks("orders", true, 1);
    assert_eq!(distinct(&kill), ["orders-1", "orders-2"].into());
    let any = picks(RANDOM, true, 2);
    assert_eq!(
        distinct(&any),
        ["control", "gateway", "orders-1", "orders-2", "payments-1"].into()
    );
    assert_eq!(any, picks(RANDOM, true, 2), "the same seed, the same choices");
    assert_ne!(any, picks(RANDOM, true, 3));
    assert_eq!(distinct(&picks("payments-1", false, 4)), ["payments-1"].into());
}

#[test]
fn a_target_that_cannot_be_hit_says_why() {
    let list = processes();
    let mut rng = StdRng::seed_from_u64(0);
    let err = choose("ordres", &list, true, &mut rng).unwrap_err();
    assert!(matches!(err, ChaosError::UnknownTarget { .. }));
    assert!(err.to_string().contains("orders-1, orders-2"), "{err}");
    assert!(matches!(
        choose("orders-3", &list, true, &mut rng),
        Err(ChaosError::NotRunning(_))
    ));
    let err = choose("orders-2", &list, false, &mut rng).unwrap_err();
    assert_eq!(err, ChaosError::NotRunning("orders-2 is paused already".into()));
    let stopped = vec![candidate("orders-1", "orders", None, false)];
    assert!(matches!(
        choose("orders", &stopped, true, &mut rng),
        Err(ChaosError::NotRunning(_))
    ));
    let problem: Problem = err.into();
    assert_eq!(problem.status, 409);
}

const TOKEN: &str = "test-token";

/// A control plane on a free port, to receive the fault spans.
async fn control_plane() -> std::net::SocketAddr {
    let storage = flotilla_control::Storage::in_memory().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = flotilla_control::ControlConfig {
        registry: Default::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    tokio::spawn(flotilla_control::serve(
        listener,
        config,
        storage,
        std::future::pending(),
    ));
    addr
}

/// The scheduling state of a process (`S` sleeping, `R` running, `T` stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('?')
}

async fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_of(fleet: &Fleet, name: &str) -> Option<u32> {
    fleet.processes().get(name).and_then(|p| p.pid.get())
}

fn request(kind: ProcessFault, target: &str, duration_ms: Option<u64>) -> FaultRequest {
    FaultRequest {
        kind,
        target: target.into(),
        duration_ms,
        seed: None,
    }
}

async fn refused(dir: &Path, fault: FaultRequest) -> Problem {
    match control::inject(dir, &fault).await {
        Err(control::SupervisorError::Refused(problem)) => problem,
        other => panic!("{fault:?} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_pauses_through_the_socket_restart_stop_and_continue_processes_and_are_traced() {
    let dir = tempfile::tempdir().unwrap();
    let output = Arc::new(Output::new(&dir.path().join("logs"), 10).unwrap());
    let fleet = Arc::new(Fleet::new(
        output.clone(),
        Vec::new(),
        flotilla_control::acl::Keyring::new("test"),
    ));
    // A process that handles SIGTERM, as services do: while stopped it would hold the signal.
    let program = Program {
        command: "sh".into(),
        args: vec!["-c".into(), "trap 'exit 0' TERM; while :; do sleep 0.05; done".into()],
        env: Default::default(),
    };
    fleet.add("sleeper", program, 2).await;
    fleet.scale("sleeper", 2).await.unwrap();
    let control_addr = control_plane().await;
    let exporter = SpanExporter::new(&control_addr.to_string(), Some(TOKEN.into()));
    let chaos = Chaos::new(fleet.clone(), output.clone(), Some(exporter));
    let registry = flotilla::discovery::RegistryClient::new(&control_addr.to_string(), Some(TOKEN.into()));
    let autoscaler = Arc::new(super::super::autoscale::Autoscaler::new(
        fleet.clone(),
        output,
        registry,
    ));
    let _api = control::spawn(dir.path(), fleet.clone(), chaos, autoscaler).unwrap();
    wait_until("both running", Duration::from_secs(5), || {
        pid_of(&fleet, "sleeper-1").is_some() && pid_of(&fleet, "sleeper-2").is_some()
    })
    .await;

    // A kill: the supervisor starts it again, with a new pid.
    let first = pid_of(&fleet, "sleeper-1").unwrap();
    let killed = control::inject(dir.path(), &request(ProcessFault::Kill, "sleeper-1", None))
        .await
        .unwrap();
    assert_eq!((killed.process.as_str(), killed.pid), ("sleeper-1", first));
    wait_until("restarted", Duration::from_secs(5), || {
        pid_of(&fleet, "sleeper-1").is_some_and(|pid| pid != first)
    })
    .await;

    // A pause of one instance of the service, continued by the supervisor after its time.
    let mut pause = request(ProcessFault::Pause, "sleeper", Some(400));
    pause.seed = Some(7);
    let paused = control::inject(dir.path(), &pause).await.unwrap();
    assert!(paused.process.starts_with("sleeper-"), "{paused:?}");
    wait_until("stopped", Duration::from_secs(2), || state(paused.pid) == 'T').await;
    let list = control::faults(dir.path()).await.unwrap();
    assert_eq!(list.active.len(), 1);
    assert_eq!(
        list.recent.iter().map(|r| r.kind).collect::<Vec<_>>(),
        [ProcessFault::Pause, ProcessFault::Kill]
    );
    let again = refused(dir.path(), request(ProcessFault::Pause, &paused.process, Some(100))).await;
    assert_eq!(again.status, 409);
    wait_until("continued", Duration::from_secs(3), || state(paused.pid) != 'T').await;
    let started = Instant::now();
    loop {
        let list = control::faults(dir.path()).await.unwrap();
        if list.active.is_empty() && list.recent[0].ended_ms.is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the pause is not listed as ended: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A long pause ended early by a clear.
    let long = control::inject(dir.path(), &request(ProcessFault::Pause, "sleeper-2", Some(60_000)))
        .await
        .unwrap();
    wait_until("stopped", Duration::from_secs(2), || state(long.pid) == 'T').await;
    let resumed = control::resume(dir.path(), Some("sleeper")).await.unwrap();
    assert_eq!(
        resumed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [long.id.as_str()]
    );
    assert_ne!(state(long.pid), 'T');
    assert!(control::faults(dir.path()).await.unwrap().active.is_empty());

    // Requests that cannot be made are refused with a reason.
    assert_eq!(
        refused(dir.path(), request(ProcessFault::Kill, "nobody", None))
            .await
            .status,
        404
    );
    assert_eq!(
        refused(dir.path(), request(ProcessFault::Pause, "sleeper", None))
            .await
            .status,
        400
    );
    assert_eq!(
        refused(dir.path(), request(ProcessFault::Kill, "sleeper", Some(5)))
            .await
            .status,
        400
    );

    // Every fault is a span of `chaos` in the trace store.
    let telemetry = crate::traces::TelemetryClient::new(&control_addr.to_string(), Some(TOKEN.into()));
    let query = TraceQuery {
        service: Some("chaos".into()),
        ..TraceQuery::default()
    };
    let started = Instant::now();
    let names = loop {
        let list = telemetry.traces(&query).await.unwrap();
        let names: Vec<String> = list.traces.iter().map(|t| t.root_name.clone()).collect();
        if names.len() >= 3 || started.elapsed() > Duration::from_secs(5) {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(names.contains(&"chaos kill sleeper-1".to_owned()), "{names:?}");
    assert!(names.contains(&format!("chaos pause {}", paused.process)), "{names:?}");
    assert!(names.contains(&"chaos pause sleeper-2".to_owned()), "{names:?}");

    // A paused process still stops gracefully: it is continued, gets SIGTERM and exits
    // at once instead of waiting out its grace and being killed.
    let held = control::inject(dir.path(), &request(ProcessFault::Pause, "sleeper-1", Some(60_000)))
        .await
        .unwrap();
    wait_until("stopped", Duration::from_secs(2), || state(held.pid) == 'T').await;
    let stopping = Instant::now();
    fleet.stop_all().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "took {:?}",
        stopping.elapsed()
    );
    assert!(fleet.processes().is_empty());
}
