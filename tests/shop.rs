//! System test of the shop through the gateway, as a customer would use it: sign up, get a
//! token, browse and search the catalog, read `/me`, be refused admin routes, refresh the token.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{http_get, http_request};

fn token(system: &support::System, form: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_request(
        system.gateway,
        "POST",
        "/oauth2/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )
    .unwrap();
    (status, serde_json::from_str(&body).unwrap_or_default())
}

fn get_with(system: &support::System, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_request(
        system.gateway,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .unwrap();
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[test]
fn a_customer_signs_up_signs_in_browses_and_refreshes_through_the_gateway() {
    let system = support::start(&[]);
    system.wait_for_line("Flotilla is up", Duration::from_secs(60));

    let (status, body) = http_request(
        system.gateway,
        "POST",
        "/api/v1/accounts",
        &[("Content-Type", "application/json")],
        r#"{"email":"ana@example.com","password":"correct horse battery","name":"Ana"}"#,
    )
    .unwrap();
    // Accepted alike for a new address and a taken one: which addresses have accounts is not told.
    assert_eq!(status, 202, "{body}");
    let account: serde_json::Value = serde_json::from_str(&body).unwrap();

    let (status, tokens) = token(
        &system,
        "grant_type=password&client_id=shop-web&username=ana%40example.com&password=correct+horse+battery",
    );
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // Browsing and searching are public.
    let (status, body) = http_get(system.gateway, "/api/v1/products?per_page=3").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(system.gateway, "/api/v1/products?q=rust&category=books").unwrap();
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(found["items"][0]["name"].as_str().unwrap().contains("Rust"), "{found}");

    // Past browsing, everything needs a token: a product's stock too.
    let (status, _) = http_get(system.gateway, "/api/v1/inventory/1").unwrap();
    assert_eq!(status, 401);
    let (status, stock) = get_with(&system, "/api/v1/inventory/1", &access);
    assert_eq!(status, 200, "{stock}");
    assert!(stock["available"].as_i64().unwrap() > 0, "{stock}");

    // `/me` needs the token, checked by the gateway against identity's keys.
    let (status, me) = get_with(&system, "/api/v1/me", &access);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["email"], account["email"]);
    let (status, body) = http_get(system.gateway, "/api/v1/me").unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("urn:flotilla:problem"), "{body}");

    // An order's payments need a token; an order with none of the caller's is 404.
    let (status, payments) = get_with(&system, "/api/v1/payments?order_id=none-yet", &access);
    assert_eq!((status, payments["status"].as_u64()), (404, Some(404)));
    let (status, _) = http_get(system.gateway, "/api/v1/payments?order_id=none-yet").unwrap();
    assert_eq!(status, 401);

    let (status, shipments) = get_with(&system, "/api/v1/shipments?order_id=none-yet", &access);
    assert_eq!((status, shipments["status"].as_u64()), (404, Some(404)));

    // Admin routes: refused to a customer by the gateway.
    let (status, body) = http_request(
        system.gateway,
        "POST",
        "/api/v1/products",
        &[
            ("Authorization", &format!("Bearer {access}")),
            ("Content-Type", "application/json"),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_request(
        system.gateway,
        "POST",
        "/api/v1/admin/signing-keys",
        &[("Authorization", &format!("Bearer {access}"))],
        "",
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");

    // The refresh token gives a new pair; the old refresh token is spent.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, renewed) = token(
        &system,
        &format!("grant_type=refresh_token&client_id=shop-web&refresh_token={refresh}"),
    );
    assert_eq!(status, 200, "{renewed}");
    let (status, _) = get_with(&system, "/api/v1/me", renewed["access_token"].as_str().unwrap());
    assert_eq!(status, 200);
    let (status, again) = token(
        &system,
        &format!("grant_type=refresh_token&client_id=shop-web&refresh_token={refresh}"),
    );
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")));

    // An administrator, bootstrapped through central config (as a secret), may write the catalog.
    let out = system.cli(&[
        "config",
        "set",
        "admin",
        r#"{"email":"root@example.com","password":"a long admin password"}"#,
        "--scope",
        "identity",
        "--secret",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = (0..100)
        .find_map(|_| {
            let (status, tokens) = token(
                &system,
                "grant_type=password&client_id=shop-web&username=root%40example.com&password=a+long+admin+password",
            );
            if status == 200 {
                return Some(tokens["access_token"].as_str().unwrap().to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
            None
        })
        .expect("the administrator can sign in");
    let product = r#"{"sku":"KIT-777","name":"Sea-green mug","category":"kitchen","price":{"amount_minor":2450,"currency":"EUR"},"image_url":"https://images.example.com/mug.jpg"}"#;
    let (status, body) = http_request(
        system.gateway,
        "POST",
        "/api/v1/products",
        &[
            ("Authorization", &format!("Bearer {admin}")),
            ("Content-Type", "application/json"),
        ],
        product,
    )
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (_, found) = http_get(system.gateway, "/api/v1/products?q=sea%20green%20mug").unwrap();
    assert!(found.contains("KIT-777"), "{found}");

    let (status, body) = http_get(system.gateway, "/.well-known/openid-configuration").unwrap();
    assert_eq!(status, 200, "{body}");

    // One OpenAPI document for the whole shop, merged from each service's own.
    let (status, body) = http_get(system.gateway, "/api/openapi.json").unwrap();
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc.get("x-flotilla-missing").is_none(), "{}", doc["x-flotilla-missing"]);
    for path in [
        "/api/v1/products",
        "/api/v1/accounts",
        "/oauth2/token",
        "/api/v1/inventory/{product_id}",
        "/api/v1/payments",
        "/api/v1/shipments",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} is missing from the merged document"
        );
    }
    assert!(doc["components"]["schemas"]["catalog.Product"].is_object());
}
