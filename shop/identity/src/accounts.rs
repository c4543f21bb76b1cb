//! Accounts: sign-up, lookup, and passwords hashed with argon2id (OWASP's parameters:
//! 19 MiB, 2 passes, 1 lane), on the blocking pool so a hash never stalls the runtime.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// Roles an account may hold.
pub const CUSTOMER: &str = "customer";
/// The administrator role.
pub const ADMIN: &str = "admin";

/// An account as the API shows it (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// Its id, the `sub` of its tokens.
    pub id: String,
    /// Its email, lowercased.
    pub email: String,
    /// Its display name.
    pub name: String,
    /// Its roles.
    #[schema(schema_with = roles)]
    pub roles: Vec<String>,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: i64,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The email is taken.
    #[error("an account with this email exists")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Hashing failed (it does not, short of a broken runtime).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// The roles an account may hold, for the OpenAPI document.
fn roles() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(crate::api::one_of(&[CUSTOMER, ADMIN], "A role."))
        .description(Some("Its roles."))
        .build()
}

/// What sign-up takes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// Email.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Password: 10 to 128 characters.
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    /// Display name: 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AccountError {
    AccountError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The one spelling of an email address: NFKC, lowercased, NFKC again, trimmed — so a
/// full-width, decomposed or capitalized spelling is the same address.
pub fn normalize_email(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded = email.trim().nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect()
}

/// What a normalized address looks like to a person (the UTS #39 skeleton): a Cyrillic `а`
/// for a Latin `a`, `rn` for `m`. Two addresses with one skeleton are one account's.
pub fn email_skeleton(normalized: &str) -> String {
    unicode_security::skeleton(normalized).collect()
}

/// Characters no one sees: zero-width spaces and joiners, direction marks, soft hyphens,
/// variation selectors, tags — Unicode's default-ignorable code points. An address holding
/// one would look like another's.
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// The 10,000 most common passwords (zxcvbn's list, from leaked password sets), lowercased.
static COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

/// Whether `password` is one of the 10,000 most common, whatever its case.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    COMMON_PASSWORDS.lines().any(|common| common == lower)
}

impl SignUp {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), AccountError> {
        let email = normalize_email(&self.email);
        let shaped = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            })
            && !email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || invisible(c));
        if !shaped {
            return Err(invalid("email", "not an email address"));
        }
        let length = self.password.chars().count();
        if !(10..=128).contains(&length) {
            return Err(invalid("password", "must be 10 to 128 characters"));
        }
        if self.password.chars().all(char::is_whitespace) {
            return Err(invalid("password", "must not be blank"));
        }
        if is_common(&self.password) {
            return Err(invalid(
                "password",
                "is one of the most common passwords; choose another",
            ));
        }
        if self
            .password
            .to_lowercase()
            .contains(email.split('@').next().unwrap_or_default())
        {
            return Err(invalid("password", "must not contain the email's name"));
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name", "must be 1 to 100 printable characters"));
        }
        Ok(())
    }
}

/// An argon2id hash of `password` (PHC string), made on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hashing(e.to_string()))?
}

/// Whether `password` matches `hash`, checked on the blocking pool. With no hash (no such
/// account) a fixed one is checked, so both answers take as long and reveal nothing.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    const DECOY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$QIS2jXIiKzCM9j9Np7Gi+d1SMBrKxjGb8bE1/Sw5vSk";
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DECOY.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
        && known
}

fn account(row: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    let roles: String = row.try_get("roles")?;
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        roles: roles.split_whitespace().map(str::to_owned).collect(),
        created_ms: row.try_get("created_ms")?,
    })
}

/// Creates an account with these roles.
pub async fn create(store: &Store, sign_up: SignUp, roles: &[&str]) -> Result<Account, AccountError> {
    sign_up.validate()?;
    let email = normalize_email(&sign_up.email);
    let skeleton = email_skeleton(&email);
    // Hashed whether or not the address is taken: both answers take as long.
    let hash = hash_password(sign_up.password).await?;
    let created = Account {
        id: uuid::Uuid::new_v4().to_string(),
        email,
        name: sign_up.name.trim().to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        created_ms: now_ms(),
    };
    let inserted = sqlx::query(
        "INSERT INTO accounts (id, email, name, password_hash, roles, created_ms, email_skeleton) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&created.id)
    .bind(&created.email)
    .bind(&created.name)
    .bind(&hash)
    .bind(created.roles.join(" "))
    .bind(created.created_ms)
    .bind(&skeleton)
    .execute(store.pool())
    .await;
    match inserted {
        Ok(_) => Ok(created),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AccountError::Taken),
        Err(e) => Err(e.into()),
    }
}

/// Makes the configured administrator if no account has its email; an existing account is
/// left as it is (a bootstrap never changes someone's password or roles).
pub async fn ensure_admin(store: &Store, admin: &crate::config::AdminAccount) -> Result<bool, AccountError> {
    if by_email(store, &admin.email).await?.is_some() {
        return Ok(false);
    }
    let sign_up = SignUp {
        email: admin.email.clone(),
        password: admin.password.clone(),
        name: "Administrator".into(),
    };
    match create(store, sign_up, &[ADMIN]).await {
        Ok(_) => Ok(true),
        Err(AccountError::Taken) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Fills the skeleton of accounts made before skeletons were kept; one whose skeleton an
/// older account has already is left without (it keeps signing in; no new look-alike can be
/// made). Returns how many were filled.
pub async fn fill_skeletons(store: &Store) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query("SELECT id, email FROM accounts WHERE email_skeleton IS NULL ORDER BY created_ms")
        .fetch_all(store.pool())
        .await?;
    let mut filled = 0;
    for row in rows {
        let (id, email): (String, String) = (row.try_get("id")?, row.try_get("email")?);
        let done = sqlx::query("UPDATE accounts SET email_skeleton = $1 WHERE id = $2")
            .bind(email_skeleton(&normalize_email(&email)))
            .bind(&id)
            .execute(store.pool())
            .await;
        match done {
            Ok(_) => filled += 1,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                tracing::warn!(account = %id, "an older account's address looks the same as this one's");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An account and its password hash, by email.
pub async fn by_email(store: &Store, email: &str) -> Result<Option<(Account, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT id, email, name, roles, created_ms, password_hash FROM accounts WHERE email = $1")
        .bind(normalize_email(email))
        .fetch_optional(store.pool())
        .await?;
    row.map(|r| Ok((account(&r)?, r.try_get("password_hash")?))).transpose()
}

/// An account by id.
pub async fn by_id(store: &Store, id: &str) -> Result<Option<Account>, sqlx::Error> {
    let row = sqlx::query("SELECT id, email, name, roles, created_ms FROM accounts WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.map(|r| account(&r)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_up(email: &str, password: &str, name: &str) -> SignUp {
        SignUp {
            email: email.into(),
            password: password.into(),
            name: name.into(),
        }
    }

    #[test]
    fn sign_up_fields_are_checked_by_name() {
        let field = |s: SignUp| match s.validate() {
            Err(AccountError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert!(sign_up("ana@example.com", "correct horse battery", "Ana")
            .validate()
            .is_ok());
        assert_eq!(
            field(sign_up("ana.example.com", "correct horse battery", "Ana")),
            "email"
        );
        assert_eq!(field(sign_up("ana@localhost", "correct horse battery", "Ana")), "email");
        assert_eq!(field(sign_up("ana@example.com", "short", "Ana")), "password");
        assert_eq!(
            field(sign_up("ana@example.com", "ana-is-my-password", "Ana")),
            "password"
        );
        assert_eq!(field(sign_up("ana@example.com", "correct horse battery", " ")), "name");
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery".into(), Some(hash.clone())).await);
        assert!(!verify_password("wrong horse battery".into(), Some(hash)).await);
        assert!(!verify_password("anything at all".into(), None).await);
    }
}
