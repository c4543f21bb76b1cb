//! The config store with the SDK's live config over loopback: a change is applied by a
//! watching instance within milliseconds, a bad revision is refused without harm and the
//! refusal shows in the control plane, and the store survives a control plane restart.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flotilla::api::config::{ApplyStatus, ConfigKey};
use flotilla::api::Registration;
use flotilla::config::{ConfigClient, ConfigClientError, ConfigLoader, Write};
use flotilla::discovery::RegistryClient;
use flotilla_control::{ConfigStore, ControlConfig, RegistryConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "test-token";

async fn start_control(addr: SocketAddr, store: ConfigStore) -> oneshot::Sender<()> {
    let storage = flotilla_control::Storage {
        config: store,
        ..flotilla_control::Storage::in_memory().await.unwrap()
    };
    let listener = TcpListener::bind(addr).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    tokio::spawn(flotilla_control::serve(listener, config, storage, async move {
        let _ = stopped.await;
    }));
    stop
}

async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Knobs {
    page_size: u32,
    banner: String,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            page_size: 20,
            banner: "welcome".into(),
        }
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn register(addr: SocketAddr, id: &str) {
    let registry = RegistryClient::new(&addr.to_string(), Some(TOKEN.into()));
    registry
        .register(&Registration {
            service: "catalog".into(),
            instance_id: id.into(),
            address: "127.0.0.1:1".into(),
            version: "1".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_instance_applies_good_revisions_refuses_bad_ones_and_the_control_plane_shows_both() {
    let addr = free_addr().await;
    let _stop = start_control(addr, ConfigStore::in_memory().await.unwrap()).await;
    let admin = ConfigClient::new(&addr.to_string(), Some(TOKEN.into()));
    let key = ConfigKey::new("catalog", "default", "page_size");
    admin.set(&key, json!(25), false, Write::default()).await.unwrap();
    // Keys of other services in the application scope are not this service's business.
    admin
        .set(
            &ConfigKey::new("application", "default", "payments_latency"),
            json!("5ms"),
            false,
            Write::default(),
        )
        .await
        .unwrap();

    register(addr, "catalog-1-test").await;
    let live = ConfigLoader::<Knobs>::new("catalog")
        .env_prefix("TEST_KNOBS_NONE_")
        .validate(|k| {
            if k.page_size == 0 {
                Err("page_size must be at least 1".into())
            } else {
                Ok(())
            }
        })
        .start(
            Some(ConfigClient::new(&addr.to_string(), Some(TOKEN.into()))),
            std::future::pending(),
        )
        .unwrap();
    live.attach("catalog-1-test");
    live.ready(Duration::from_secs(5)).await;
    assert_eq!(live.current().page_size, 25);

    // A change reaches it while it waits on its watch.
    let set = Instant::now();
    let good = admin.set(&key, json!(40), false, Write::default()).await.unwrap();
    wait_until("the new page size", || live.current().page_size == 40).await;
    eprintln!("applied {:?} after the write", set.elapsed());
    assert_eq!(live.revision(), good.revision);

    // A value that fails validation, and one that does not deserialize: both refused.
    for bad in [json!(0), json!("forty")] {
        let refused = admin.set(&key, bad, false, Write::default()).await.unwrap();
        let mut reported = None;
        let started = Instant::now();
        while reported.is_none() && started.elapsed() < Duration::from_secs(5) {
            let (list, _) = admin.applied(Some("catalog"), None, Duration::ZERO).await.unwrap();
            reported = list
                .into_iter()
                .find(|i| i.instance_id == "catalog-1-test" && i.report.revision == refused.revision);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let report = reported.expect("the refusal was reported").report;
        assert_eq!(report.status, ApplyStatus::Refused);
        assert_eq!(report.running, good.revision, "it runs on its last good revision");
        assert!(report.error.is_some());
        assert_eq!(
            live.current().page_size,
            40,
            "the last good configuration stays in force"
        );
        assert_eq!(live.revision(), good.revision);
    }
    let msg = admin.applied(Some("catalog"), None, Duration::ZERO).await.unwrap().0[0]
        .report
        .error
        .clone()
        .unwrap();
    assert!(msg.contains("page_size") || msg.contains("invalid type"), "{msg}");

    // Rolling back to the good revision heals it.
    admin.rollback(&key, good.revision, Write::default()).await.unwrap();
    wait_until("the rollback", || live.revision() > good.revision).await;
    assert_eq!(live.current().page_size, 40);
}

#[tokio::test]
async fn compare_and_set_through_the_client_and_a_store_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr().await;
    let stop = start_control(addr, ConfigStore::open(dir.path()).await.unwrap()).await;
    let admin = ConfigClient::new(&addr.to_string(), Some(TOKEN.into()));
    let key = ConfigKey::new("gateway", "default", "routes");
    let first = admin
        .set(
            &key,
            json!({"routes": []}),
            false,
            Write {
                expect: Some(0),
                ..Write::default()
            },
        )
        .await
        .unwrap();
    let again = admin
        .set(
            &key,
            json!({"routes": [1]}),
            false,
            Write {
                expect: Some(0),
                ..Write::default()
            },
        )
        .await;
    assert!(matches!(again, Err(ConfigClientError::Conflict(_))), "{again:?}");
    let secret_key = ConfigKey::new("payments", "default", "provider_key");
    admin
        .set(&secret_key, json!("sk_1"), true, Write::default())
        .await
        .unwrap();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = free_addr().await;
    let _stop = start_control(addr, ConfigStore::open(dir.path()).await.unwrap()).await;
    let admin = ConfigClient::new(&addr.to_string(), Some(TOKEN.into()));
    let mut tries = 0;
    let entry = loop {
        match admin.get(&key).await {
            Ok(entry) => break entry,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(entry.revision, first.revision);
    assert_eq!(admin.get(&secret_key).await.unwrap().value, json!("sk_1"));
    // A reader sees secrets masked; no credential sees nothing.
    let reader = flotilla_control::acl::Keyring::new(TOKEN).reader("dashboard");
    let reader = ConfigClient::new(&addr.to_string(), reader);
    assert_eq!(reader.get(&secret_key).await.unwrap().value, json!("******"));
    let anonymous = ConfigClient::new(&addr.to_string(), None);
    assert!(anonymous.get(&secret_key).await.is_err());
}
