//! Setting the shop up for a benchmark through its gateway: tokens, an administrator, deep
//! stock, a customer — what `bench/orders`, `bench/footprint` and `bench/chaos` share.

use crate::procs::http_request;
use crate::system::System;

/// An answer's status and JSON body (`Null` when it is not JSON; status 0 when there was no
/// answer, the error in the body).
pub fn json(answer: std::io::Result<(u16, String)>) -> (u16, serde_json::Value) {
    match answer {
        Ok((status, body)) => (status, serde_json::from_str(&body).unwrap_or_default()),
        Err(err) => (0, serde_json::json!({ "error": err.to_string() })),
    }
}

/// The password grant's form for `email`.
pub fn token_form(email: &str, password: &str) -> String {
    format!(
        "grant_type=password&client_id=shop-web&username={}&password={}",
        email.replace('@', "%40"),
        password.replace(' ', "+")
    )
}

/// An access token for `email` by the password grant, if the gateway gives one.
pub fn password_token(system: &System, email: &str, password: &str) -> Option<String> {
    let (status, tokens) = json(http_request(
        system.gateway,
        "POST",
        "/oauth2/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &token_form(email, password),
    ));
    (status == 200).then(|| tokens["access_token"].as_str().unwrap_or_default().to_owned())
}

/// An administrator, then deep stock for products 1–20, then a customer: the customer's
/// token, or what went wrong.
pub fn stocked_customer(system: &System) -> Result<String, String> {
    let out = system.cli(&[
        "config",
        "set",
        "admin",
        r#"{"email":"root@example.com","password":"a long admin password"}"#,
        "--scope",
        "identity",
        "--secret",
    ]);
    if !out.status.success() {
        return Err(format!("config set admin: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let admin = (0..200)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            password_token(system, "root@example.com", "a long admin password")
        })
        .ok_or("the administrator could not sign in")?;
    for product in 1..=20 {
        let (status, body) = json(http_request(
            system.gateway,
            "PUT",
            &format!("/api/v1/inventory/{product}"),
            &[
                ("Authorization", &format!("Bearer {admin}")),
                ("Content-Type", "application/json"),
            ],
            r#"{"on_hand": 100000000}"#,
        ));
        if status != 200 {
            return Err(format!("stocking product {product}: {status} {body}"));
        }
    }
    customer(system, "bench@example.com", "Bench")
}

/// A new customer `email` signed up (password `correct horse battery`): their token, or
/// what went wrong.
pub fn customer(system: &System, email: &str, name: &str) -> Result<String, String> {
    let account = serde_json::json!({ "email": email, "password": "correct horse battery", "name": name });
    let (status, body) = json(http_request(
        system.gateway,
        "POST",
        "/api/v1/accounts",
        &[("Content-Type", "application/json")],
        &account.to_string(),
    ));
    if status != 202 {
        return Err(format!("sign-up: {status} {body}"));
    }
    password_token(system, email, "correct horse battery").ok_or_else(|| "customer token".to_owned())
}
