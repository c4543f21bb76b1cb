//! Central configuration's wire types: entries, revisions, resolved documents, diffs and the
//! reports instances send back about the revision they run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::validate_service_name;

/// The scope every service reads beneath its own.
pub const APPLICATION: &str = "application";
/// The profile every instance reads beneath its own.
pub const DEFAULT_PROFILE: &str = "default";
/// What a secret's value is replaced by where it may not be shown.
pub const SECRET_MASK: &str = "******";
/// The environment variable naming the profile an instance runs (`dev`, `prod`).
pub const PROFILE_ENV: &str = "FLOTILLA_PROFILE";
/// The gateway's scope; its route table is the key [`ROUTES_KEY`] there.
pub const GATEWAY_SCOPE: &str = "gateway";
/// The key of the gateway's routes and policies.
pub const ROUTES_KEY: &str = "routes";

/// One key of one scope and profile: where a value lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConfigKey {
    /// `application` or a service name.
    pub scope: String,
    /// `default`, `dev`, `prod`, ….
    pub profile: String,
    /// The key (`page_size`, `routes`).
    pub key: String,
}

impl ConfigKey {
    /// A key; check it with [`ConfigKey::validate`].
    pub fn new(scope: impl Into<String>, profile: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            scope: scope.into(),
            profile: profile.into(),
            key: key.into(),
        }
    }

    /// Checks every part; the error names the part and says why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        validate_scope(&self.scope).map_err(|r| ("scope", r))?;
        validate_profile(&self.profile).map_err(|r| ("profile", r))?;
        validate_key(&self.key).map_err(|r| ("key", r))
    }
}

impl std::fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.scope, self.profile, self.key)
    }
}

/// A scope is `application` or a service name.
pub fn validate_scope(scope: &str) -> Result<(), String> {
    validate_service_name(scope).map_err(|_| {
        format!("`{scope}` is not a scope: `application` or a service name (lowercase letters, digits and '-')")
    })
}

/// A profile: lowercase letters, digits and '-', 1-63 characters.
pub fn validate_profile(profile: &str) -> Result<(), String> {
    validate_service_name(profile).map_err(|_| {
        format!("`{profile}` is not a profile name (lowercase letters, digits and '-', starting with a letter)")
    })
}

/// A key: letters, digits, '_', '-' and '.', 1-128 characters, starting with a letter.
pub fn validate_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a key (letters, digits, '_', '-' and '.', 1-128 characters, starting with a letter)"
        ))
    }
}

/// One revision of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigEntry {
    /// `application` or a service name.
    pub scope: String,
    /// The profile.
    pub profile: String,
    /// The key.
    pub key: String,
    /// The store-wide revision this write made.
    pub revision: u64,
    /// The value; [`SECRET_MASK`] for a secret the caller may not read; `null` once deleted.
    pub value: serde_json::Value,
    /// Encrypted at rest and masked in listings.
    pub secret: bool,
    /// The write removed the key.
    #[serde(default)]
    pub deleted: bool,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who wrote it.
    pub author: String,
    /// Why.
    pub comment: String,
}

/// A write: `PUT /v1/config/{scope}/{profile}/{key}`. Compare-and-set through `If-Match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigWrite {
    /// The new value.
    pub value: serde_json::Value,
    /// Encrypt at rest and mask in listings.
    #[serde(default)]
    pub secret: bool,
    /// Who writes (defaults to `unknown`).
    #[serde(default)]
    pub author: Option<String>,
    /// Why.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `POST .../rollback`: a new revision carrying an old one's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The revision whose value comes back.
    pub revision: u64,
    /// Who.
    #[serde(default)]
    pub author: Option<String>,
    /// Why (defaults to "rollback to N").
    #[serde(default)]
    pub comment: Option<String>,
}

/// What changed at one place of a JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    /// JSON Pointer (RFC 6901) to the place; empty for the whole document.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub op: ChangeOp,
    /// The value before (absent when added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
    /// The value after (absent when removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<serde_json::Value>,
}

/// The kind of a [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    /// Present after, not before.
    Added,
    /// Present before, not after.
    Removed,
    /// Present in both, different.
    Changed,
}

/// `GET .../diff?from=A&to=B`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigDiff {
    /// The older revision.
    pub from: ConfigEntry,
    /// The newer revision.
    pub to: ConfigEntry,
    /// Every difference, in document order.
    pub changes: Vec<Change>,
}

/// Where a resolved key's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// Scope of the layer.
    pub scope: String,
    /// Profile of the layer.
    pub profile: String,
    /// Revision of that layer's entry.
    pub revision: u64,
}

/// `GET /v1/config/resolve/{service}?profile=P`: every key a service sees, its layers merged
/// (application < application+profile < service < service+profile; objects merge key by key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resolved {
    /// The newest write (deletions included) to any of the service's layers, 0 if none: what
    /// the document is "at", and the index a blocking query waits to pass.
    pub revision: u64,
    /// The service.
    pub service: String,
    /// The profile.
    pub profile: String,
    /// Key → merged value. Secrets are masked unless the caller showed the token.
    pub values: BTreeMap<String, serde_json::Value>,
    /// Key → the layers that made it, lowest first.
    pub sources: BTreeMap<String, Vec<Source>>,
    /// Keys any of whose layers is a secret: a reader keeps their values out of its logs and
    /// error messages.
    #[serde(default)]
    pub secret_keys: std::collections::BTreeSet<String>,
}

/// Whether an instance took a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ApplyStatus {
    /// Running on it.
    Applied,
    /// Did not deserialize or failed validation; the instance runs on its last good revision.
    Refused,
}

/// `PUT /v1/config/applied/{instance_id}`: what an instance did with a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplyReport {
    /// The instance's service.
    pub service: String,
    /// The revision the report is about ([`Resolved::revision`]).
    pub revision: u64,
    /// Applied or refused.
    pub status: ApplyStatus,
    /// The revision the instance runs on now (the last good one after a refusal).
    pub running: u64,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the instance applied or refused it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// One instance's latest report, as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceConfig {
    /// The instance.
    pub instance_id: String,
    /// Its report.
    #[serde(flatten)]
    pub report: ApplyReport,
}

/// Lays `over` on `base`: objects merge key by key (recursively); anything else replaces.
/// The one merge rule for store layers and for an SDK's defaults, file, environment and store.
pub fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Every difference between two JSON documents, with RFC 6901 pointers; objects are compared
/// key by key, arrays element by element, anything else as a whole.
pub fn diff(from: &serde_json::Value, to: &serde_json::Value) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_at(String::new(), from, to, &mut changes);
    changes
}

fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn diff_at(path: String, from: &serde_json::Value, to: &serde_json::Value, out: &mut Vec<Change>) {
    use serde_json::Value;
    let change = |op, from: Option<&Value>, to: Option<&Value>, path: String| Change {
        path,
        op,
        from: from.cloned(),
        to: to.cloned(),
    };
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, before) in a {
                let at = format!("{path}/{}", pointer_token(key));
                match b.get(key) {
                    Some(after) => diff_at(at, before, after, out),
                    None => out.push(change(ChangeOp::Removed, Some(before), None, at)),
                }
            }
            for (key, after) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push(change(
                    ChangeOp::Added,
                    None,
                    Some(after),
                    format!("{path}/{}", pointer_token(key)),
                ));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let at = format!("{path}/{i}");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => diff_at(at, x, y, out),
                    (Some(x), None) => out.push(change(ChangeOp::Removed, Some(x), None, at)),
                    (None, Some(y)) => out.push(change(ChangeOp::Added, None, Some(y), at)),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(change(ChangeOp::Changed, Some(a), Some(b), path)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_key_by_key_for_objects_and_replaces_the_rest() {
        let mut base = json!({"db": {"pool": 4, "url": "a"}, "flags": [1, 2], "page_size": 20});
        merge(&mut base, json!({"db": {"pool": 8}, "flags": [3], "new": true}));
        assert_eq!(
            base,
            json!({"db": {"pool": 8, "url": "a"}, "flags": [3], "page_size": 20, "new": true})
        );
    }

    #[test]
    fn diff_names_each_change_by_pointer() {
        let from = json!({"a": 1, "b": {"c": [1, 2]}, "gone": true, "x/y": 1});
        let to = json!({"a": 2, "b": {"c": [1]}, "added": "yes", "x/y": 1});
        let changes = diff(&from, &to);
        let summary: Vec<(String, ChangeOp)> = changes.iter().map(|c| (c.path.clone(), c.op)).collect();
        assert_eq!(
            summary,
            vec![
                ("/a".into(), ChangeOp::Changed),
                ("/b/c/1".into(), ChangeOp::Removed),
                ("/gone".into(), ChangeOp::Removed),
                ("/added".into(), ChangeOp::Added),
            ]
        );
        assert!(diff(&json!(5), &json!(5)).is_empty());
        assert_eq!(diff(&json!(5), &json!("5"))[0].path, "");
    }

    #[test]
    fn keys_are_checked_part_by_part() {
        assert!(ConfigKey::new("application", "default", "page_size").validate().is_ok());
        assert!(ConfigKey::new("catalog", "prod", "db.pool-size").validate().is_ok());
        assert_eq!(
            ConfigKey::new("Catalog", "default", "k").validate().unwrap_err().0,
            "scope"
        );
        assert_eq!(ConfigKey::new("catalog", "", "k").validate().unwrap_err().0, "profile");
        assert_eq!(ConfigKey::new("catalog", "dev", "1k").validate().unwrap_err().0, "key");
        assert_eq!(ConfigKey::new("catalog", "dev", "a/b").validate().unwrap_err().0, "key");
    }
}
