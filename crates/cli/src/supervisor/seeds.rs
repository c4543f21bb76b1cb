//! What services declare in the manifest they need, made once for a new data dir: a random
//! secret in their own config scope (`secrets = ["seal_key"]`: the key identity seals its
//! signing keys with), and an OAuth client registered with the service that issues tokens
//! (`oauth_client = { provider = "identity", scope = "…" }`: orders calls inventory, payments
//! and shipping with its own client-credentials token). Both are config secrets; what exists
//! is left alone. The supervisor knows no service by name.

use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE};
use flotilla::config::{ConfigClient, ConfigClientError, Write};
use rand::Rng;

use super::UpError;
use crate::manifest::{Manifest, OauthClient, ServiceEntry};

/// What `up` puts into a new store before anything starts, for a system `up` does not run
/// (a Kubernetes Job, `flotilla seed`): the routes file as the gateway's routes (unless the
/// store has routes), what each service declared (unless it exists), and the callers the
/// manifest's `calls` grant. Safe to repeat; returns what it did, line by line.
pub async fn everything(control: &str, token: &str, manifest: &Manifest) -> Result<Vec<String>, UpError> {
    let mut said = Vec::new();
    if let Some(path) = &manifest.gateway.routes {
        let routes = flotilla_gateway::routes::RouteTable::file_to_json(&flotilla::config::TomlFile::read(path)?)?;
        said.push(super::seed(control, token, routes, path).await?);
    }
    for service in &manifest.services {
        for made in declared(control, token, service).await {
            said.extend(made?);
        }
    }
    super::follow::grant_callers(control, token, manifest).await?;
    said.push(format!(
        "callers granted by the manifest's `calls`: {}",
        manifest
            .services
            .iter()
            .filter(|s| !s.calls.is_empty())
            .map(|s| format!("{} → {}", s.name, s.calls.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    Ok(said)
}

fn write(comment: String, expect: Option<u64>) -> Write {
    Write {
        expect,
        author: Some("flotilla up".into()),
        comment: Some(comment),
    }
}

/// Whether `key` holds a live value.
async fn exists(client: &ConfigClient, key: &ConfigKey) -> Result<bool, UpError> {
    match client.get(key).await {
        Ok(entry) => Ok(!entry.deleted),
        Err(ConfigClientError::NotFound(_)) => Ok(false),
        Err(err) => Err(UpError::Seed(err.to_string())),
    }
}

/// Everything `service` declared it needs (its `secrets`, its `oauth_client`), each made
/// unless it exists: for each, the line saying what was made, or why it could not be.
pub(super) async fn declared(
    control: &str,
    token: &str,
    service: &ServiceEntry,
) -> Vec<Result<Option<String>, UpError>> {
    let mut made = Vec::new();
    for key in &service.secrets {
        made.push(secret(control, token, &service.name, key).await);
    }
    if let Some(wanted) = &service.oauth_client {
        made.push(oauth_client(control, token, &service.name, wanted).await);
    }
    made
}

/// Makes `<service>/<key>` a random secret (32 bytes, base64) unless it has a value; says
/// what it did.
pub(super) async fn secret(control: &str, token: &str, service: &str, key: &str) -> Result<Option<String>, UpError> {
    use base64::Engine;
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let config_key = ConfigKey::new(service, DEFAULT_PROFILE, key);
    if exists(&client, &config_key).await? {
        return Ok(None);
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let value = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    let made = write(format!("{service}'s `{key}`, made by `flotilla up`"), Some(0));
    match client.set(&config_key, value, true, made).await {
        Ok(_) => Ok(Some(format!(
            "{service}: made its secret `{key}` (config secret {service}/default/{key})"
        ))),
        // Another `up` made it at the same moment: theirs stands.
        Err(ConfigClientError::Conflict(_)) => Ok(None),
        Err(err) => Err(UpError::Seed(format!("{service}/default/{key}: {err}"))),
    }
}

/// Registers `service`'s OAuth client with its provider unless the service has one; says
/// what it did. The provider's list first: a client the provider knows but the service does
/// not is harmless.
pub(super) async fn oauth_client(
    control: &str,
    token: &str,
    service: &str,
    wanted: &OauthClient,
) -> Result<Option<String>, UpError> {
    let client = ConfigClient::new(control, Some(token.to_owned()));
    let own_key = ConfigKey::new(service, DEFAULT_PROFILE, "client");
    if exists(&client, &own_key).await? {
        return Ok(None);
    }
    let secret: String = {
        let mut rng = rand::rng();
        (0..48).map(|_| format!("{:x}", rng.random_range(0..16u8))).collect()
    };
    let provider_key = ConfigKey::new(&wanted.provider, DEFAULT_PROFILE, "clients");
    let (mut clients, revision) = match client.get(&provider_key).await {
        Ok(entry) if !entry.deleted => (entry.value.as_array().cloned().unwrap_or_default(), entry.revision),
        Ok(entry) => (Vec::new(), entry.revision),
        Err(ConfigClientError::NotFound(_)) => (Vec::new(), 0),
        Err(err) => return Err(UpError::Seed(err.to_string())),
    };
    clients.retain(|c| c["id"] != service);
    clients.push(serde_json::json!({"id": service, "secret": secret, "scope": wanted.scope}));
    let comment = format!("{service}'s client credentials, made by `flotilla up`");
    client
        .set(
            &provider_key,
            serde_json::Value::Array(clients),
            true,
            write(comment.clone(), Some(revision)),
        )
        .await
        .map_err(|e| UpError::Seed(format!("{}/default/clients: {e}", wanted.provider)))?;
    let value = serde_json::json!({"id": service, "secret": secret});
    match client.set(&own_key, value, true, write(comment, Some(0))).await {
        Ok(_) => Ok(Some(format!(
            "{service}: registered its OAuth client with {} (config secrets {}/default/clients, {service}/default/client)",
            wanted.provider, wanted.provider
        ))),
        Err(ConfigClientError::Conflict(_)) => Ok(None),
        Err(err) => Err(UpError::Seed(format!("{service}/default/client: {err}"))),
    }
}
