//! `flotilla config`: read, change, edit, compare and roll back the control plane's
//! configuration, and see which instance runs which revision.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use flotilla::api::config::{ApplyStatus, Change, ChangeOp, ConfigEntry, ConfigKey, GATEWAY_SCOPE, ROUTES_KEY};
use flotilla::config::{ConfigClient, ConfigClientError, Write};

/// Where a command points: the key and how to reach the control plane.
#[derive(Debug, Clone)]
pub struct Target {
    /// The control plane's address.
    pub control_addr: String,
    /// The token (from the data dir), which writes and reading secrets need.
    pub token: Option<String>,
    /// Scope, profile and key.
    pub key: ConfigKey,
}

impl Target {
    fn client(&self) -> ConfigClient {
        ConfigClient::new(&self.control_addr, self.token.clone())
    }
}

/// Who a write is from: `$USER` (or `unknown`) on this host.
pub fn author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    match std::fs::read_to_string("/etc/hostname") {
        Ok(host) if !host.trim().is_empty() => format!("{user}@{}", host.trim()),
        _ => user,
    }
}

fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn one_line(value: &serde_json::Value, width: usize) -> String {
    let text = value.to_string();
    if text.chars().count() > width {
        format!("{}…", text.chars().take(width.saturating_sub(1)).collect::<String>())
    } else {
        text
    }
}

fn explain(err: ConfigClientError, control: &str) -> anyhow::Error {
    match err {
        ConfigClientError::Http(flotilla::http::HttpError::Transport { .. }) => {
            anyhow::anyhow!("cannot reach the control plane at {control} (is `flotilla up` running? --control-addr)")
        }
        other => other.into(),
    }
}

/// A value from the command line: JSON when it parses as JSON (`20`, `true`, `{"a":1}`),
/// otherwise the text as a string; `@file` reads JSON from a file.
pub fn parse_value(text: &str, force_string: bool) -> Result<serde_json::Value> {
    if force_string {
        return Ok(serde_json::Value::String(text.to_owned()));
    }
    if let Some(path) = text.strip_prefix('@') {
        let body = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        return serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{path}:{}:{}: {e}", e.line(), e.column()));
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned())))
}

/// Checks a value before it is written where a reader has a schema (the gateway's routes).
pub fn check(key: &ConfigKey, value: &serde_json::Value) -> Result<()> {
    if key.scope == GATEWAY_SCOPE && key.key == ROUTES_KEY {
        flotilla_gateway::routes::RouteTable::parse_json(value, "routes").map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// `config get`.
pub async fn get(target: &Target, revision: Option<u64>, json: bool) -> Result<()> {
    let client = target.client();
    let entry = match revision {
        Some(revision) => client.get_at(&target.key, revision).await,
        None => client.get(&target.key).await,
    }
    .map_err(|e| explain(e, &target.control_addr))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entry)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&entry.value)?);
        eprintln!(
            "# {} revision {} by {} at {}{}",
            target.key,
            entry.revision,
            entry.author,
            when(entry.time_ms),
            if entry.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", entry.comment)
            }
        );
    }
    Ok(())
}

/// `config list`.
pub async fn list(target: &Target, scope: Option<&str>, profile: Option<&str>, json: bool) -> Result<()> {
    let entries = target
        .client()
        .list(scope, profile)
        .await
        .map_err(|e| explain(e, &target.control_addr))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<10} {:<24} {:>8}  VALUE",
        "SCOPE", "PROFILE", "KEY", "REVISION"
    );
    for e in &entries {
        println!(
            "{:<14} {:<10} {:<24} {:>8}  {}",
            e.scope,
            e.profile,
            e.key,
            e.revision,
            one_line(&e.value, 60)
        );
    }
    if entries.is_empty() {
        eprintln!("(no configuration yet: `flotilla config set KEY VALUE --scope SERVICE`)");
    }
    Ok(())
}

fn said(verb: &str, entry: &ConfigEntry) {
    println!(
        "{verb} {}/{}/{} — revision {}{}",
        entry.scope,
        entry.profile,
        entry.key,
        entry.revision,
        if entry.secret {
            " (secret, stored encrypted)"
        } else {
            ""
        }
    );
}

fn conflict_hint(err: ConfigClientError, control: &str) -> anyhow::Error {
    match err {
        ConfigClientError::Conflict(detail) => anyhow::anyhow!("not written: {detail}"),
        other => explain(other, control),
    }
}

/// `config set`.
pub async fn set(
    target: &Target,
    value: serde_json::Value,
    secret: bool,
    expect: Option<u64>,
    comment: Option<String>,
) -> Result<()> {
    check(&target.key, &value)?;
    let write = Write {
        expect,
        author: Some(author()),
        comment,
    };
    let entry = target
        .client()
        .set(&target.key, value, secret, write)
        .await
        .map_err(|e| conflict_hint(e, &target.control_addr))?;
    said("set", &entry);
    Ok(())
}

/// `config delete`.
pub async fn delete(target: &Target, expect: Option<u64>, comment: Option<String>) -> Result<()> {
    let write = Write {
        expect,
        author: Some(author()),
        comment,
    };
    let entry = target
        .client()
        .delete(&target.key, write)
        .await
        .map_err(|e| conflict_hint(e, &target.control_addr))?;
    said("deleted", &entry);
    Ok(())
}

/// `config history`.
pub async fn history(target: &Target, limit: u32, json: bool) -> Result<()> {
    let entries = target
        .client()
        .history(&target.key, limit)
        .await
        .map_err(|e| explain(e, &target.control_addr))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:>8}  {:<20}  {:<18}  {:<28}  VALUE",
        "REVISION", "TIME", "AUTHOR", "COMMENT"
    );
    for e in &entries {
        let value = if e.deleted {
            "(deleted)".to_owned()
        } else {
            one_line(&e.value, 40)
        };
        println!(
            "{:>8}  {:<20}  {:<18}  {:<28}  {value}",
            e.revision,
            when(e.time_ms),
            one_line(&serde_json::Value::String(e.author.clone()), 18).trim_matches('"'),
            one_line(&serde_json::Value::String(e.comment.clone()), 28).trim_matches('"'),
        );
    }
    Ok(())
}

/// Draws changes one per line: `~` changed, `+` added, `-` removed; coloured on a terminal.
pub fn draw_changes(changes: &[Change], colour: bool) -> String {
    let paint = |code: &str, text: String| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text
        }
    };
    let show = |v: &Option<serde_json::Value>| v.as_ref().map(|v| one_line(v, 80)).unwrap_or_default();
    let mut out = String::new();
    for c in changes {
        let path = if c.path.is_empty() { "(whole value)" } else { &c.path };
        let line = match c.op {
            ChangeOp::Changed => paint("33", format!("~ {path}: {} → {}", show(&c.from), show(&c.to))),
            ChangeOp::Added => paint("32", format!("+ {path}: {}", show(&c.to))),
            ChangeOp::Removed => paint("31", format!("- {path}: {}", show(&c.from))),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if changes.is_empty() {
        out.push_str("(no difference)\n");
    }
    out
}

/// `config diff`.
pub async fn diff(target: &Target, from: u64, to: Option<u64>, json: bool) -> Result<()> {
    let diff = target
        .client()
        .diff(&target.key, from, to)
        .await
        .map_err(|e| explain(e, &target.control_addr))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
        return Ok(());
    }
    println!(
        "{} revision {} ({}) → {} ({})",
        target.key, diff.from.revision, diff.from.author, diff.to.revision, diff.to.author
    );
    print!("{}", draw_changes(&diff.changes, std::io::stdout().is_terminal()));
    Ok(())
}

/// `config rollback`.
pub async fn rollback(target: &Target, revision: u64, comment: Option<String>) -> Result<()> {
    let write = Write {
        expect: None,
        author: Some(author()),
        comment,
    };
    let entry = target
        .client()
        .rollback(&target.key, revision, write)
        .await
        .map_err(|e| explain(e, &target.control_addr))?;
    said(&format!("rolled back to revision {revision}:"), &entry);
    Ok(())
}

/// `config applied`: which instance runs which revision, and any refusal.
pub async fn applied(control_addr: &str, token: Option<String>, service: Option<&str>, json: bool) -> Result<()> {
    let (list, _) = ConfigClient::new(control_addr, token)
        .applied(service, None, Duration::ZERO)
        .await
        .map_err(|e| explain(e, control_addr))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<28} {:<12} {:>8}  STATUS", "INSTANCE", "SERVICE", "RUNNING");
    for i in &list {
        let status = match (i.report.status, &i.report.error) {
            (ApplyStatus::Applied, _) => "applied".to_owned(),
            (ApplyStatus::Refused, error) => format!(
                "refused revision {}: {}",
                i.report.revision,
                error.as_deref().unwrap_or("")
            ),
        };
        println!(
            "{:<28} {:<12} {:>8}  {status}",
            i.instance_id, i.report.service, i.report.running
        );
    }
    Ok(())
}

/// `config edit`: the value in `$EDITOR` as pretty JSON; checked before it is written, and
/// written only if nobody changed it meanwhile (compare-and-set on the revision read).
pub async fn edit(target: &Target, dir: &Path, comment: Option<String>) -> Result<()> {
    let client = target.client();
    let (current, revision, secret) = match client.get(&target.key).await {
        Ok(entry) => (entry.value, entry.revision, entry.secret),
        Err(ConfigClientError::NotFound(_)) => (serde_json::Value::Null, 0, false),
        Err(e) => return Err(explain(e, &target.control_addr)),
    };
    let before = serde_json::to_string_pretty(&current)? + "\n";
    let file = tempfile::Builder::new()
        .prefix(&format!("{}-{}-", target.key.scope, target.key.key))
        .suffix(".json")
        .tempfile_in(dir)
        .context("creating the file to edit")?;
    std::fs::write(file.path(), &before)?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    loop {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(file.path())
            .status()
            .with_context(|| format!("running the editor `{editor}`"))?;
        if !status.success() {
            bail!("the editor `{editor}` failed ({status}); nothing written");
        }
        let after = std::fs::read_to_string(file.path())?;
        if after == before {
            println!("no change; nothing written");
            return Ok(());
        }
        let checked = serde_json::from_str::<serde_json::Value>(&after)
            .map_err(|e| anyhow::anyhow!("{}:{}:{}: {e}", file.path().display(), e.line(), e.column()))
            .and_then(|value| check(&target.key, &value).map(|()| value));
        match checked {
            Ok(value) => {
                let write = Write {
                    expect: Some(revision),
                    author: Some(author()),
                    comment: comment.clone(),
                };
                return match client.set(&target.key, value, secret, write).await {
                    Ok(entry) => {
                        said("edited", &entry);
                        Ok(())
                    }
                    Err(ConfigClientError::Conflict(detail)) => {
                        let kept = file.into_temp_path().keep()?;
                        bail!(
                            "not written: {detail}\nyour edit is kept in {}; `flotilla config edit` again to merge it",
                            kept.display()
                        )
                    }
                    Err(e) => Err(explain(e, &target.control_addr)),
                };
            }
            Err(err) if std::io::stdin().is_terminal() => {
                eprintln!("{err:#}");
                eprint!("edit again? [Y/n] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim().eq_ignore_ascii_case("n") {
                    bail!("nothing written");
                }
            }
            Err(err) => return Err(err.context("nothing written")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(parse_value("20", false).unwrap(), json!(20));
        assert_eq!(parse_value("{\"a\":[1]}", false).unwrap(), json!({"a": [1]}));
        assert_eq!(parse_value("hello world", false).unwrap(), json!("hello world"));
        assert_eq!(parse_value("20", true).unwrap(), json!("20"));
    }

    #[test]
    fn routes_are_checked_before_they_are_written() {
        let key = ConfigKey::new("gateway", "default", "routes");
        assert!(check(&key, &json!([{"prefix": "/a", "upstreams": ["http://127.0.0.1:1"]}])).is_ok());
        let err = check(&key, &json!([{"prefx": "/a"}])).unwrap_err();
        assert!(err.to_string().contains("prefx"), "{err}");
        // Other keys have no schema here.
        assert!(check(&ConfigKey::new("catalog", "default", "routes"), &json!(1)).is_ok());
    }

    #[test]
    fn changes_are_drawn_one_per_line() {
        let changes = flotilla::api::config::diff(&json!({"a": 1, "b": 2}), &json!({"a": 3, "c": 4}));
        let drawn = draw_changes(&changes, false);
        assert_eq!(drawn, "~ /a: 1 → 3\n- /b: 2\n+ /c: 4\n");
    }
}
