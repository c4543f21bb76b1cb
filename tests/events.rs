//! System test of the event log through the real binary: an event a consumer keeps failing
//! on ends in the dead letters, `flotilla events` shows why, and replays it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::http_request;

#[test]
fn a_dead_letter_is_inspected_and_replayed_with_the_cli() {
    let system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));
    let token = std::fs::read_to_string(system.data_dir().join("token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let call = |method: &str, path: &str, body: &str| {
        let (status, body) = http_request(
            system.control,
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            body,
        )
        .unwrap();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (status, _) = call(
        "POST",
        "/v1/events/orders",
        r#"{"id": "e-1", "source": "/orders", "type": "shop.order.placed", "subject": "order/1", "data": {}}"#,
    );
    assert_eq!(status, 200);
    // The consumer fails on it every time it comes.
    for _ in 0..5 {
        let (_, got) = call("GET", "/v1/events/orders?group=mailer&max=1", "");
        assert_eq!(got[0]["offset"], 0, "{got}");
        let (status, _) = call(
            "POST",
            "/v1/events/orders/nack",
            r#"{"group": "mailer", "offset": 0, "reason": "smtp down"}"#,
        );
        assert_eq!(status, 204);
    }
    let (_, got) = call("GET", "/v1/events/orders?group=mailer&max=1", "");
    assert_eq!(got, serde_json::json!([]), "given up on");

    let out = system.cli(&["events", "read", "orders.dead-letter"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("smtp down") && text.contains("e-1"),
        "{text}"
    );
    let out = system.cli(&["events", "replay", "orders.dead-letter", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("onto orders at offset 1"),
        "{text}"
    );
    let (_, got) = call("GET", "/v1/events/orders?group=mailer&max=1", "");
    assert_eq!(
        got[0]["offset"], 1,
        "the replayed event comes to the group again: {got}"
    );
    let out = system.cli(&["events", "topics", "--output", "json"]);
    let topics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(topics
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["topic"] == "orders.dead-letter"));
}
