//! The identity service's knobs, from the control plane's config store (scope `identity`)
//! over these defaults, followed live.

use serde::{Deserialize, Serialize};

/// Token lifetimes, throttling and the service clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// `iss` of every token, and the OIDC issuer: the URL clients reach identity at.
    pub issuer: String,
    /// `aud` of every access token.
    pub audience: String,
    /// How long an access token lives.
    pub access_token_seconds: u64,
    /// How long a refresh token lives.
    pub refresh_token_seconds: u64,
    /// A new signing key after this long; the old one stays in the JWKS until its tokens
    /// have expired.
    pub key_rotation_seconds: u64,
    /// Sign-in attempts of one address at one account before each further one waits (1 s,
    /// doubling up to the window).
    pub max_failures_per_account: u32,
    /// Sign-in attempts of one address at any accounts before each further one waits.
    pub max_failures_per_ip: u32,
    /// Sign-in attempts at one account, from every address it never signed in from
    /// together, before each further one waits. Addresses it signed in from are not held back.
    pub max_failures_per_account_all_addresses: u32,
    /// The throttling window: quiet this long forgets a key; also the longest wait.
    pub failure_window_seconds: u64,
    /// Clients that may use the `client_credentials` grant (services). Store their secrets
    /// as config secrets.
    pub clients: Vec<ServiceClient>,
    /// The first administrator: made (with the `admin` role) when no account has this email.
    /// Store it as a config secret.
    pub admin: Option<AdminAccount>,
    /// The key identity's signing keys are sealed with at rest (AES-256-GCM; 32 bytes,
    /// base64), kept out of identity's database so that a stolen copy of it signs nothing.
    /// A config secret: `flotilla up` makes one for a new data dir.
    pub seal_key: Option<String>,
    /// Or a file holding the 32-byte key (a mounted Kubernetes Secret); it wins over
    /// `seal_key`.
    pub seal_key_file: Option<std::path::PathBuf>,
}

/// The account an operator bootstraps administration with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAccount {
    /// Its email.
    pub email: String,
    /// Its password (10 to 128 characters).
    pub password: String,
}

/// A confidential client: a service calling others on its own behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceClient {
    /// `client_id`.
    pub id: String,
    /// `client_secret` (at least 32 characters).
    pub secret: String,
    /// The scopes it may ask for (space-separated).
    #[serde(default)]
    pub scope: String,
    /// Roles its tokens carry.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            // Tokens name the URL clients reach the gateway at.
            issuer: flotilla::auth::public_url(),
            audience: "shop".into(),
            access_token_seconds: 900,
            refresh_token_seconds: 30 * 24 * 3600,
            key_rotation_seconds: 24 * 3600,
            max_failures_per_account: 5,
            max_failures_per_ip: 20,
            max_failures_per_account_all_addresses: 20,
            failure_window_seconds: 900,
            clients: Vec::new(),
            admin: None,
            seal_key: None,
            seal_key_file: None,
        }
    }
}

impl flotilla::app::Settings for IdentityConfig {
    /// A configuration identity can run with.
    fn validate(&self) -> Result<(), String> {
        if !(self.issuer.starts_with("http://") || self.issuer.starts_with("https://")) {
            return Err(format!("issuer must be an http(s) URL, not `{}`", self.issuer));
        }
        if self.audience.is_empty() {
            return Err("audience must not be empty".into());
        }
        if !(60..=86_400).contains(&self.access_token_seconds) {
            return Err("access_token_seconds must be 60 to 86400".into());
        }
        if self.refresh_token_seconds < self.access_token_seconds {
            return Err("refresh_token_seconds must be at least access_token_seconds".into());
        }
        if self.key_rotation_seconds < self.access_token_seconds {
            return Err("key_rotation_seconds must be at least access_token_seconds".into());
        }
        if self.max_failures_per_account == 0
            || self.max_failures_per_ip == 0
            || self.max_failures_per_account_all_addresses == 0
            || self.failure_window_seconds == 0
        {
            return Err("throttling limits and window must be above zero".into());
        }
        if self.seal_key_file.is_none() {
            if let Some(key) = &self.seal_key {
                crate::keys::sealer_from_base64(key).map_err(|e| format!("seal_key: {e}"))?;
            }
        }
        if let Some(admin) = &self.admin {
            let sign_up = crate::accounts::SignUp {
                email: admin.email.clone(),
                password: admin.password.clone(),
                name: "Administrator".into(),
            };
            sign_up.validate().map_err(|e| format!("admin: {e}"))?;
        }
        for client in &self.clients {
            if client.id.is_empty() || client.id == crate::tokens::SHOP_WEB {
                return Err(format!("clients: `{}` is not a usable client id", client.id));
            }
            if client.secret.len() < 32 {
                return Err(format!(
                    "clients: the secret of `{}` must be at least 32 characters",
                    client.id
                ));
            }
        }
        Ok(())
    }
}
