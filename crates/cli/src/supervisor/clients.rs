//! Secrets for a new data dir. Orders calls inventory, payments and shipping with its own
//! OAuth client-credentials token, so `up` makes the client once — a random secret, stored as
//! a config secret both where identity checks it (`identity/default/clients`) and where orders
//! reads it (`orders/default/client`); and identity seals its signing keys with a key `up`
//! makes once (`identity/default/seal_key`). What exists is left alone.

use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE};
use flotilla::config::{ConfigClient, ConfigClientError, Write};
use rand::Rng;

use super::UpError;

/// The client `up` makes, with what it may do.
const ORDERS_CLIENT: &str = "orders";

fn write(comment: &str, expect: Option<u64>) -> Write {
    Write {
        expect,
        author: Some("flotilla up".into()),
        comment: Some(comment.into()),
    }
}

/// Makes orders' client unless orders already has one; says what it did.
pub(super) async fn seed(control: &str, token: &str) -> Result<Option<String>, UpError> {
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let orders_key = ConfigKey::new(flotilla_orders::SERVICE, DEFAULT_PROFILE, "client");
    match client.get(&orders_key).await {
        Ok(entry) if !entry.deleted => return Ok(None),
        Ok(_) | Err(ConfigClientError::NotFound(_)) => {}
        Err(err) => return Err(UpError::Seed(err.to_string())),
    }
    let secret: String = {
        let mut rng = rand::rng();
        (0..48).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
    };

    // Identity first: a client identity knows but orders does not is harmless.
    let identity_key = ConfigKey::new("identity", DEFAULT_PROFILE, "clients");
    let (mut clients, revision) = match client.get(&identity_key).await {
        Ok(entry) if !entry.deleted => (entry.value.as_array().cloned().unwrap_or_default(), entry.revision),
        Ok(entry) => (Vec::new(), entry.revision),
        Err(ConfigClientError::NotFound(_)) => (Vec::new(), 0),
        Err(err) => return Err(UpError::Seed(err.to_string())),
    };
    clients.retain(|c| c["id"] != ORDERS_CLIENT);
    clients.push(serde_json::json!({"id": ORDERS_CLIENT, "secret": secret, "scope": flotilla_orders::SCOPES}));
    let made = write("orders' client credentials, made by `flotilla up`", Some(revision));
    client
        .set(&identity_key, serde_json::Value::Array(clients), true, made)
        .await
        .map_err(|e| UpError::Seed(format!("identity/default/clients: {e}")))?;
    let value = serde_json::json!({"id": ORDERS_CLIENT, "secret": secret});
    let made = write("orders' client credentials, made by `flotilla up`", Some(0));
    match client.set(&orders_key, value, true, made).await {
        Ok(_) => Ok(Some(
            "orders: made its client credentials (config secrets identity/default/clients, orders/default/client)"
                .into(),
        )),
        // Another `up` made them at the same moment: theirs stand.
        Err(ConfigClientError::Conflict(_)) => Ok(None),
        Err(err) => Err(UpError::Seed(format!("orders/default/client: {err}"))),
    }
}

/// Makes the key identity seals its signing keys with (32 random bytes, a config secret in
/// scope `identity`, so it lives with the control plane and not in identity's database),
/// unless there is one; says what it did.
pub(super) async fn seed_seal_key(control: &str, token: &str) -> Result<Option<String>, UpError> {
    use base64::Engine;
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let key = ConfigKey::new("identity", DEFAULT_PROFILE, "seal_key");
    match client.get(&key).await {
        Ok(entry) if !entry.deleted => return Ok(None),
        Ok(_) | Err(ConfigClientError::NotFound(_)) => {}
        Err(err) => return Err(UpError::Seed(err.to_string())),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let value = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    let made = write(
        "the key identity seals its signing keys with, made by `flotilla up`",
        Some(0),
    );
    match client.set(&key, value, true, made).await {
        Ok(_) => Ok(Some(
            "identity: made the key its signing keys are sealed with (config secret identity/default/seal_key)".into(),
        )),
        Err(ConfigClientError::Conflict(_)) => Ok(None),
        Err(err) => Err(UpError::Seed(format!("identity/default/seal_key: {err}"))),
    }
}
