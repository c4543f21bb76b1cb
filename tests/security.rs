//! System tests of the shop's defences with the real binary, each an attack that worked once:
//! a customer reading another's payments, shipments, orders and notifications, through the
//! gateway and directly at the services; a local user reading the data dir.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{customer, http_request, json_of, Direct, System};

fn get_at(addr: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    json_of(http_request(addr, "GET", path, &[("Authorization", &format!("Bearer {token}"))], "").unwrap())
}

/// Places an order through the gateway and waits until it is confirmed; its id.
fn confirmed_order(system: &System, token: &str) -> String {
    let body = json!({
        "lines": [{"product_id": 1, "quantity": 1}],
        "shipping_address": {"name": "Ana Lima", "line1": "Hafenstraße 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}
    })
    .to_string();
    let (status, accepted) = json_of(
        http_request(
            system.gateway,
            "POST",
            "/api/v1/orders",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "security-1"),
            ],
            &body,
        )
        .unwrap(),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let (_, order) = get_at(system.gateway, &format!("/api/v1/orders/{id}"), token);
        if order["status"] == "CONFIRMED" {
            return id;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not confirmed: {order}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn address_of(system: &System, service: &str) -> SocketAddr {
    let (_, address, _) = system.instances(service).into_iter().next().unwrap();
    address.trim_start_matches("http://").parse().unwrap()
}

/// OWASP API1 (broken object-level authorization): every object of one customer's order is
/// 404 to another customer, through the gateway and at the service itself, answered exactly
/// as an object that does not exist; its owner reads each of them.
#[test]
fn a_second_customer_gets_404_on_every_object_of_the_first() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let ana = customer(&system, "ana@example.com");
    let bo = customer(&system, "bo@example.com");
    let order = confirmed_order(&system, &ana);

    let (status, payments) = get_at(system.gateway, &format!("/api/v1/payments?order_id={order}"), &ana);
    assert_eq!(status, 200, "{payments}");
    let payment = payments[0]["id"].as_str().unwrap().to_owned();
    let (status, shipments) = get_at(system.gateway, &format!("/api/v1/shipments?order_id={order}"), &ana);
    assert_eq!(status, 200, "{shipments}");
    let shipment = shipments[0]["id"].as_str().unwrap().to_owned();

    let objects = [
        ("orders", format!("/api/v1/orders/{order}")),
        ("orders", format!("/api/v1/orders/{order}/saga")),
        ("payments", format!("/api/v1/payments?order_id={order}")),
        ("payments", format!("/api/v1/payments/{payment}")),
        ("shipping", format!("/api/v1/shipments?order_id={order}")),
        ("shipping", format!("/api/v1/shipments/{shipment}")),
    ];
    for (service, path) in &objects {
        // At the service itself: over mTLS, as the gateway (the one caller every service takes).
        let direct = Direct::as_service(&system, "gateway", service);
        let at_service = address_of(&system, service);
        let get = |at: SocketAddr, path: &str, token: &str| {
            if at == system.gateway {
                get_at(at, path, token)
            } else {
                direct.get(at, path, Some(token)).unwrap()
            }
        };
        for at in [system.gateway, at_service] {
            let (status, body) = get(at, path, &ana);
            assert_eq!(status, 200, "the owner reads {path} at {at}: {body}");
            let (status, body) = get(at, path, &bo);
            assert_eq!(status, 404, "a stranger reads {path} at {at}: {body}");
            // The same answer as for an object that does not exist.
            let missing = path
                .replace(&order, "00000000-0000-0000-0000-000000000000")
                .replace(&payment, "00000000-0000-0000-0000-000000000000")
                .replace(&shipment, "00000000-0000-0000-0000-000000000000");
            let (status, none) = get(at, &missing, &bo);
            assert_eq!(status, 404, "{missing} at {at}: {none}");
            assert_eq!(body["type"], none["type"], "{path} at {at}");
        }
    }
    // Notifications: each reads only their own.
    let started = Instant::now();
    loop {
        let (status, mine) = get_at(system.gateway, "/api/v1/notifications", &ana);
        assert_eq!(status, 200);
        if mine.to_string().contains(&order) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "ana was never notified: {mine}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, theirs) = Direct::as_service(&system, "gateway", "notifications")
        .get(address_of(&system, "notifications"), "/api/v1/notifications", Some(&bo))
        .unwrap();
    assert_eq!(status, 200);
    assert!(!theirs.to_string().contains(&order), "{theirs}");
    // Inventory reservations are for orders and admins only; a customer learns nothing.
    let (status, _) = Direct::as_service(&system, "gateway", "inventory")
        .get(
            address_of(&system, "inventory"),
            &format!("/api/v1/inventory/reservations/{order}"),
            Some(&ana),
        )
        .unwrap();
    assert_eq!(status, 403);
    system.interrupt(Duration::from_secs(30));
}

/// Every file and directory under `root` whose mode lets group or others in.
fn open_to_others(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut open = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                open.push((entry.path(), mode));
            }
        }
    }
    open
}

/// A local user reads nothing of the data dir: started with the usual umask 022, `up` makes
/// the data dir 0700 and every database, WAL, key, secret and log in it 0600; and a data dir
/// open to others is refused at start, naming the fix, by `up` and by the control plane.
#[test]
fn state_on_disk_is_its_owners_only_whatever_the_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let ana = customer(&system, "ana@example.com");
    confirmed_order(&system, &ana);
    let data = system.data_dir();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", data.display());
    for service in ["identity", "orders", "payments"] {
        assert!(data.join(service).join(format!("{service}.db")).exists(), "{service}");
    }
    let open = open_to_others(&data);
    assert!(open.is_empty(), "open to others: {open:?}");
    system.interrupt(Duration::from_secs(30));

    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (gateway, control) = (support::free_addr(), support::free_addr());
    for args in [
        vec![
            "up",
            "--gateway-addr",
            &gateway.to_string(),
            "--control-addr",
            &control.to_string(),
        ],
        vec!["control", "--listen", &control.to_string()],
    ] {
        let out = std::process::Command::new(support::flotilla())
            .current_dir(support::repo_root())
            .args(&args)
            .arg("--data-dir")
            .arg(&shared)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started on an open data dir");
        assert!(
            err.contains("open to other users") && err.contains("chmod -R go-rwx"),
            "{args:?}: {err}"
        );
    }
}

/// Per-address throttling cannot be dodged with a new `X-Forwarded-For` per try: the gateway
/// believes no client's forwarding headers, so thirty guesses from one machine meet one
/// address's limit and only its free attempts reach a password check.
#[test]
fn a_new_x_forwarded_for_per_guess_is_still_throttled() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    customer(&system, "ana@example.com");
    let mut checked = 0;
    for i in 0..30 {
        let forged = format!("10.0.{}.{}", i / 250, i % 250 + 1);
        let (status, _) = http_request(
            system.gateway,
            "POST",
            "/oauth2/token",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Forwarded-For", &forged),
            ],
            "grant_type=password&client_id=shop-web&username=ana%40example.com&password=guess+number+one",
        )
        .unwrap();
        assert!(status == 400 || status == 429, "{status}");
        checked += usize::from(status == 400);
    }
    assert_eq!(checked, 5, "one address's free attempts");
    system.interrupt(Duration::from_secs(30));
}

/// docs/security.md claims a defence only with a test that shows it: every test it names
/// exists in the tree.
#[test]
fn the_security_document_names_only_tests_that_exist() {
    let root = support::repo_root();
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut sources = String::new();
    let mut pending = vec![root.join("crates"), root.join("shop"), root.join("tests")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("target") {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let named: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| {
            name.len() > 20
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        })
        .collect();
    assert!(named.len() >= 10, "{named:?}");
    for name in named {
        assert!(
            sources.contains(&format!("fn {name}(")),
            "docs/security.md names `{name}`, which no test is"
        );
    }
}

/// mTLS between every process, on by default under `up`: payments is called only by the
/// services on its allow list (the gateway and orders). A caller with catalog's certificate,
/// or with none, is refused in the TLS handshake and never reaches HTTP; plain HTTP gets no
/// answer; a change of the allow list in the config store holds from the next handshake; and
/// the control plane takes a service's credential only over its mTLS listener.
#[test]
fn a_service_takes_calls_only_from_the_services_allowed_to_call_it() {
    let mut system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let payments = address_of(&system, "payments");
    let path = "/api/v1/payments?order_id=00000000-0000-0000-0000-000000000000";

    let (status, body) = Direct::as_service(&system, "orders", "payments")
        .get(payments, path, None)
        .unwrap();
    assert_eq!(status, 401, "orders passes the handshake, then needs a token: {body}");
    let catalog = Direct::as_service(&system, "catalog", "payments");
    let refused = catalog.get(payments, path, None).unwrap_err();
    assert!(
        refused.0.contains("AccessDenied") || refused.0.contains("access"),
        "{}",
        refused.0
    );
    let refused = Direct::anonymous(&system, "payments")
        .get(payments, path, None)
        .unwrap_err();
    assert!(
        refused.0.contains("CertificateRequired") || refused.0.contains("certificate"),
        "{}",
        refused.0
    );
    assert!(
        http_request(payments, "GET", path, &[], "").is_err(),
        "plain HTTP gets no answer from an mTLS listener"
    );
    // A client checks the server too: catalog is not payments.
    let orders_to_payments = Direct::as_service(&system, "orders", "payments");
    let refused = orders_to_payments
        .get(address_of(&system, "catalog"), "/api/v1/products", None)
        .unwrap_err();
    assert!(
        refused.0.contains("NotValidForName") || refused.0.contains("name"),
        "{}",
        refused.0
    );

    // The allow list is config: catalog is let in from the next handshake.
    let out = system.cli(&[
        "config",
        "set",
        "callers",
        r#"["gateway","orders","catalog"]"#,
        "--scope",
        "payments",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    loop {
        match Direct::as_service(&system, "catalog", "payments").get(payments, path, None) {
            Ok((status, _)) => {
                assert_eq!(status, 401);
                break;
            }
            Err(refused) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "catalog still refused after the change: {}",
                refused.0
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Workloads reach the control plane over mTLS only; its plain listener is the operator's.
    let log = std::fs::read_to_string(system.data_dir().join("logs/payments-1.log")).unwrap_or_default();
    assert!(log.contains("workload certificate issued"), "payments enrolled: {log}");
    let registration =
        json!({"service": "payments", "instance_id": "payments-x", "address": "127.0.0.1:9"}).to_string();
    // payments' own credential, as its process holds it.
    let (_, _, pid) = system.instances("payments").into_iter().next().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let keyring = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"FLOTILLA_TOKEN="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    let (status, body) = http_request(
        system.control,
        "POST",
        "/v1/registry/instances",
        &[
            ("Authorization", &format!("Bearer {keyring}")),
            ("Content-Type", "application/json"),
        ],
        &registration,
    )
    .unwrap();
    assert_eq!(status, 403, "a service credential on the plain listener: {body}");
    // What a cluster's bootstrap Secret holds: a credential for the service, from the operator.
    let minted = std::process::Command::new(support::flotilla())
        .args(["credential", "payments", "--data-dir"])
        .arg(system.data_dir())
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let minted = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    assert!(minted.starts_with("svc:payments:cluster:"), "{minted}");
    let (status, body) = http_request(
        system.control,
        "POST",
        "/v1/registry/instances",
        &[
            ("Authorization", &format!("Bearer {minted}")),
            ("Content-Type", "application/json"),
        ],
        &registration,
    )
    .unwrap();
    assert_eq!(
        status, 403,
        "known as payments' credential, and taken only over mTLS: {body}"
    );
    system.interrupt(Duration::from_secs(30));
}
