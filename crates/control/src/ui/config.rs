//! Config: every key by scope and profile (secrets masked), a key's page with its value, an
//! edit form that writes compare-and-set (a conflict shows both values and lets the editor
//! choose), its history with a side-by-side diff of any two revisions and a rollback to any
//! of them, and which instance runs which revision — refusals in red with their reason.
//!
//! Secrets stay masked on every page, the operator's included: the dashboard is looked at
//! over shoulders and in screenshots; a secret is replaced, never shown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use flotilla_api::config::{diff, ApplyStatus, ChangeOp, ConfigEntry, ConfigKey, InstanceConfig, DEFAULT_PROFILE};
use maud::{html, Markup};
use serde::Deserialize;

use super::diff::{side_by_side, Row};
use super::{page, page_with, refuse_write, with_status, Viewer};
use crate::config::{ConfigError, Reveal, WriteOptions};
use crate::ControlState;

/// Revisions shown on a key's page.
const HISTORY: u32 = 50;

/// `?scope=&profile=` on the list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    scope: Option<String>,
    profile: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A value as one short line for tables.
fn brief(entry: &ConfigEntry) -> String {
    if entry.secret {
        return "••••••".to_owned();
    }
    if entry.deleted {
        return "(deleted)".to_owned();
    }
    let text = entry.value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(79).collect::<String>())
    } else {
        text
    }
}

/// A value as the editor and the diff show it.
fn pretty(entry: &ConfigEntry) -> String {
    if entry.secret {
        return format!("(secret, revision {})", entry.revision);
    }
    if entry.deleted {
        return String::new();
    }
    serde_json::to_string_pretty(&entry.value).unwrap_or_else(|_| entry.value.to_string())
}

fn key_path(key: &ConfigKey) -> String {
    format!("/ui/config/{}/{}/{}", key.scope, key.profile, key.key)
}

fn entry_key(entry: &ConfigEntry) -> ConfigKey {
    ConfigKey::new(&entry.scope, &entry.profile, &entry.key)
}

fn when(time_ms: u64) -> String {
    super::traces::clock(time_ms.saturating_mul(1_000_000))
}

/// Instances the registry holds now, with their latest report.
fn live_reports(state: &ControlState) -> Vec<InstanceConfig> {
    crate::config::http::live_reports(state).1
}

/// `GET /ui/config`: every key, grouped by scope, filtered by scope and profile; the form
/// for a new key; which revision each instance runs.
pub(super) async fn list(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Query(filter): Query<Filter>,
) -> Response {
    let every = state.config.list(None, None);
    let scopes: BTreeSet<&str> = every.iter().map(|e| e.scope.as_str()).collect();
    let profiles: BTreeSet<&str> = every.iter().map(|e| e.profile.as_str()).collect();
    let (scope, profile) = (given(&filter.scope), given(&filter.profile));
    let mut grouped: BTreeMap<&str, Vec<&ConfigEntry>> = BTreeMap::new();
    for entry in every
        .iter()
        .filter(|e| scope.is_none_or(|s| e.scope == s) && profile.is_none_or(|p| e.profile == p))
    {
        grouped.entry(entry.scope.as_str()).or_default().push(entry);
    }
    let reports = live_reports(&state);
    let content = html! {
        form class="search" method="get" action="/ui/config" role="search" {
            label { "Scope "
                select name="scope" {
                    option value="" { "every scope" }
                    @for s in &scopes { option value=(s) selected[scope == Some(*s)] { (s) } }
                }
            }
            label { "Profile "
                select name="profile" {
                    option value="" { "every profile" }
                    @for p in &profiles { option value=(p) selected[profile == Some(*p)] { (p) } }
                }
            }
            button type="submit" { "Show" }
        }
        @if grouped.is_empty() {
            p class="empty" { "No key has a value" @if scope.is_some() || profile.is_some() { " here" } "." }
        }
        @for (scope, entries) in &grouped {
            section aria-labelledby={"scope-" (scope)} {
                h2 id={"scope-" (scope)} { (scope) }
                div class="table-wrap" {
                    table class="config" {
                        thead { tr {
                            th scope="col" { "Key" }
                            th scope="col" { "Profile" }
                            th scope="col" { "Value" }
                            th scope="col" class="num" { "Revision" }
                            th scope="col" { "Written" }
                        } }
                        tbody {
                            @for entry in entries {
                                tr data-key={(entry.scope) "/" (entry.profile) "/" (entry.key)} {
                                    th scope="row" { a href=(key_path(&entry_key(entry))) { (entry.key) } }
                                    td { (entry.profile) }
                                    td { code { (brief(entry)) } @if entry.secret { " " span class="badge secret" { "secret" } } }
                                    td class="num" { (entry.revision) }
                                    td { (when(entry.time_ms)) " by " (entry.author) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if viewer.principal.is_operator() {
            section aria-labelledby="new-h" {
                h2 id="new-h" { "A new key" }
                form class="edit" method="post" action="/ui/config" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label { "Scope " input name="scope" required placeholder="application or a service" value=(scope.unwrap_or("")); }
                    label { "Profile " input name="profile" required value=(profile.unwrap_or(DEFAULT_PROFILE)); }
                    label { "Key " input name="key" required placeholder="page_size"; }
                    label class="wide" { "Value (JSON) " textarea name="value" rows="3" required placeholder="30" {} }
                    label { input type="checkbox" name="secret"; " secret" }
                    label class="wide" { "Why " input name="comment" placeholder="what this changes"; }
                    button type="submit" { "Create" }
                }
            }
        }
        (applied(&reports, None))
    };
    // Forms on the page: no live refresh under the editor's typing.
    page_with(&viewer, "/ui/config", "Config", content, false)
}

/// Which revision each live instance runs — all of them, or those a key reaches.
fn applied(reports: &[InstanceConfig], key: Option<&ConfigEntry>) -> Markup {
    let reaches = |report: &InstanceConfig| {
        key.is_none_or(|entry| entry.scope == "application" || entry.scope == report.report.service)
    };
    let shown: Vec<&InstanceConfig> = reports.iter().filter(|r| reaches(r)).collect();
    html! {
        section aria-labelledby="applied-h" id="applied" data-live-region {
            h2 id="applied-h" { "Applied on the instances" }
            @if shown.is_empty() {
                p class="empty" { "No live instance has reported a revision yet." }
            } @else {
                div class="table-wrap" {
                    table class="applied" {
                        thead { tr {
                            th scope="col" { "Instance" }
                            th scope="col" { "Service" }
                            th scope="col" class="num" { "Runs revision" }
                            th scope="col" { "Latest" }
                            @if key.is_some() { th scope="col" { "This key" } }
                        } }
                        tbody {
                            @for report in &shown {
                                @let refused = report.report.status == ApplyStatus::Refused;
                                tr data-instance=(report.instance_id) class=[refused.then_some("refused")] {
                                    th scope="row" { (report.instance_id) }
                                    td { a href={"/ui/services/" (report.report.service)} { (report.report.service) } }
                                    td class="num" { (report.report.running) }
                                    td {
                                        @if refused {
                                            span class="badge failing" { "refused " (report.report.revision) }
                                            " " span class="bad" { (report.report.error.as_deref().unwrap_or("no reason given")) }
                                        } @else {
                                            span class="badge passing" { "applied " (report.report.revision) }
                                        }
                                    }
                                    @if let Some(entry) = key {
                                        td {
                                            @if report.report.running >= entry.revision {
                                                span class="badge passing" data-runs="current" { "runs it" }
                                            } @else {
                                                span class="badge degraded" data-runs="older" { "runs an older value" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `?from=&to=&saved=` on a key's page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct KeyQuery {
    from: Option<String>,
    to: Option<String>,
    saved: Option<String>,
}

fn revision(value: &Option<String>) -> Result<Option<u64>, String> {
    match given(value) {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("`{text}` is not a revision number")),
    }
}

fn bad_key(err: (&'static str, String)) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}: {}", err.0, err.1)).into_response()
}

/// `GET /ui/config/{scope}/{profile}/{key}`: the value, the editor, the history with its
/// diff and rollbacks, the instances it reaches.
pub(super) async fn key(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    Query(query): Query<KeyQuery>,
) -> Response {
    let key = ConfigKey::new(scope, profile, key);
    if let Err(err) = key.validate() {
        return bad_key(err);
    }
    let compare = match (revision(&query.from), revision(&query.to)) {
        (Ok(from), Ok(to)) => from.map(|from| (from, to)),
        (Err(err), _) | (_, Err(err)) => {
            return with_status(
                key_page(&viewer, &state, &key, Notice::Error(err), None).await,
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let notice = match revision(&query.saved) {
        Ok(Some(saved)) => Notice::Saved(saved),
        _ => Notice::None,
    };
    key_page(&viewer, &state, &key, notice, compare).await
}

/// What a key's page says above the value.
enum Notice {
    None,
    Saved(u64),
    Error(String),
    /// The edit was refused: the error, and the text to put back in the editor.
    Invalid(String, String),
}

async fn key_page(
    viewer: &Viewer,
    state: &ControlState,
    key: &ConfigKey,
    notice: Notice,
    compare: Option<(u64, Option<u64>)>,
) -> Response {
    let title = format!("{} / {} / {}", key.scope, key.profile, key.key);
    let history = match state.config.history(key, HISTORY, Reveal::Masked).await {
        Ok(history) => history,
        Err(ConfigError::NotFound(_)) => Vec::new(),
        Err(err) => {
            let content = html! { p class="error" role="alert" { "The config store could not be read: " (err) } };
            return page(viewer, "/ui/config", &title, content);
        }
    };
    let current = history.first();
    let reports = live_reports(state);
    let editing = match &notice {
        Notice::Invalid(_, text) => text.clone(),
        _ => current.map(pretty).unwrap_or_default(),
    };
    let content = html! {
        p { a href={"/ui/config?scope=" (key.scope)} { "← every key of " (key.scope) } }
        @match &notice {
            Notice::None => {},
            Notice::Saved(revision) => p class="notice" role="status" { "Saved as revision " (revision) "." },
            Notice::Error(err) | Notice::Invalid(err, _) => p class="error" role="alert" { (err) },
        }
        @match current {
            None => p class="empty" { "This key was never written." },
            Some(entry) => {
                dl class="facts" {
                    dt { "Revision" } dd data-revision=(entry.revision) { (entry.revision) }
                    dt { "Written" } dd { (when(entry.time_ms)) " by " (entry.author) }
                    @if !entry.comment.is_empty() { dt { "Why" } dd { (entry.comment) } }
                    @if entry.secret { dt { "Secret" } dd { "sealed at rest, masked here" } }
                }
                @if entry.deleted { p class="empty" { "Deleted at this revision." } }
                @else { pre class="value" { code { (pretty(entry)) } } }
            }
        }
        @if viewer.principal.is_operator() {
            form class="edit" method="post" action=(key_path(key)) {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="expect" value=(current.filter(|e| !e.deleted).map_or(0, |e| e.revision));
                label class="wide" for="value" { "Value (JSON)" }
                textarea id="value" name="value" rows=(editing.lines().count().clamp(3, 20)) required
                    placeholder=(if current.is_some_and(|e| e.secret) { "the new secret value, as JSON" } else { "30" }) {
                    (if current.is_some_and(|e| e.secret) { "" } else { editing.as_str() })
                }
                label { input type="checkbox" name="secret" checked[current.is_some_and(|e| e.secret)]; " secret" }
                label class="wide" { "Why " input name="comment" placeholder="what this changes"; }
                button type="submit" { "Save a new revision" }
            }
        } @else {
            p class="hint" { "A read-only session: sign in with the operator's token to change config." }
        }
        @if let Some((from, to)) = compare {
            (compared(state, key, from, to).await)
        }
        @if !history.is_empty() {
            (history_table(viewer, key, &history))
        }
        @if let Some(entry) = current { (applied(&reports, Some(entry))) }
    };
    page_with(viewer, "/ui/config", &title, content, false)
}

fn history_table(viewer: &Viewer, key: &ConfigKey, history: &[ConfigEntry]) -> Markup {
    let newest = history.first().map_or(0, |e| e.revision);
    html! {
        section aria-labelledby="history-h" {
            h2 id="history-h" { "History" }
            form class="search compare" method="get" action=(key_path(key)) {
                label { "Compare "
                    select name="from" {
                        @for entry in history { option value=(entry.revision) selected[history.get(1).is_some_and(|e| e.revision == entry.revision)] { (entry.revision) } }
                    }
                }
                label { " with "
                    select name="to" {
                        @for entry in history { option value=(entry.revision) selected[entry.revision == newest] { (entry.revision) } }
                    }
                }
                button type="submit" { "Diff" }
            }
            div class="table-wrap" {
                table class="history" {
                    thead { tr {
                        th scope="col" class="num" { "Revision" }
                        th scope="col" { "Written" }
                        th scope="col" { "Value" }
                        th scope="col" { "Why" }
                        th scope="col" { "" }
                    } }
                    tbody {
                        @for (i, entry) in history.iter().enumerate() {
                            tr data-revision=(entry.revision) {
                                th scope="row" class="num" { (entry.revision) }
                                td { (when(entry.time_ms)) " by " (entry.author) }
                                td { code { (brief(entry)) } }
                                td { (entry.comment) }
                                td class="actions" {
                                    @if let Some(older) = history.get(i + 1) {
                                        a href={(key_path(key)) "?from=" (older.revision) "&to=" (entry.revision) "#diff-h"} { "diff with " (older.revision) }
                                    }
                                    @if viewer.principal.is_operator() && entry.revision != newest && !entry.deleted {
                                        form method="post" action={(key_path(key)) "/rollback"} class="inline" {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            input type="hidden" name="revision" value=(entry.revision);
                                            input type="hidden" name="expect" value=(newest);
                                            button type="submit" { "Roll back to " (entry.revision) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Two revisions side by side, and the JSON pointers that changed.
async fn compared(state: &ControlState, key: &ConfigKey, from: u64, to: Option<u64>) -> Markup {
    let from = state.config.at(key, from, Reveal::Masked).await;
    let to = match to {
        Some(to) => state.config.at(key, to, Reveal::Masked).await,
        None => match state.config.history(key, 1, Reveal::Masked).await {
            Ok(mut newest) => newest.pop().ok_or_else(|| ConfigError::NotFound(key.clone())),
            Err(err) => Err(err),
        },
    };
    let (from, to) = match (from, to) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(err), _) | (_, Err(err)) => {
            return html! { section { h2 id="diff-h" { "Diff" } p class="error" role="alert" { (err) } } };
        }
    };
    html! {
        section aria-labelledby="diff-h" class="diff" {
            h2 id="diff-h" { "Revision " (from.revision) " → " (to.revision) }
            (two_sides(&format!("revision {}", from.revision), &pretty(&from), &format!("revision {}", to.revision), &pretty(&to)))
            @if !from.secret && !to.secret {
                @let changes = diff(&from.value, &to.value);
                @if changes.is_empty() {
                    p class="empty" { "The two revisions hold the same value." }
                } @else {
                    ul class="changes" {
                        @for change in &changes {
                            li data-op=(format!("{:?}", change.op).to_lowercase()) {
                                code { (if change.path.is_empty() { "(the whole value)" } else { change.path.as_str() }) }
                                " "
                                @match change.op {
                                    ChangeOp::Added => { "added: " code { (change.to.as_ref().map(|v| v.to_string()).unwrap_or_default()) } },
                                    ChangeOp::Removed => { "removed: " code { (change.from.as_ref().map(|v| v.to_string()).unwrap_or_default()) } },
                                    ChangeOp::Changed => {
                                        code { (change.from.as_ref().map(|v| v.to_string()).unwrap_or_default()) }
                                        " → "
                                        code { (change.to.as_ref().map(|v| v.to_string()).unwrap_or_default()) }
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Two texts in columns, lines aligned, removed lines red on the left and added ones green on
/// the right.
fn two_sides(left_label: &str, left: &str, right_label: &str, right: &str) -> Markup {
    let Some(rows) = side_by_side(left, right) else {
        return html! { p class="hint" { "Too long to show line by line." } };
    };
    html! {
        div class="table-wrap" {
            table class="side-by-side" {
                thead { tr { th scope="col" colspan="2" { (left_label) } th scope="col" colspan="2" { (right_label) } } }
                tbody {
                    @for row in &rows {
                        @match row {
                            Row::Same(l, r, text) => tr { td class="ln" { (l) } td { code { (text) } } td class="ln" { (r) } td { code { (text) } } },
                            Row::Changed(l, a, r, b) => tr class="changed" { td class="ln" { (l) } td class="del" { code { (a) } } td class="ln" { (r) } td class="add" { code { (b) } } },
                            Row::Removed(l, a) => tr class="removed" { td class="ln" { (l) } td class="del" { code { (a) } } td class="ln" {} td {} },
                            Row::Added(r, b) => tr class="added" { td class="ln" {} td {} td class="ln" { (r) } td class="add" { code { (b) } } },
                        }
                    }
                }
            }
        }
    }
}

/// The editor's form.
#[derive(Debug, Deserialize)]
struct Edit {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    key: Option<String>,
    value: String,
    expect: Option<String>,
    secret: Option<String>,
    comment: Option<String>,
}

/// Who the store records as the author of a dashboard write (only the operator writes).
const AUTHOR: &str = "operator (dashboard)";

/// `POST /ui/config`: a new key (only if it has no value yet).
pub(super) async fn create(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_write(&viewer, &headers, &body, "change config") {
        return refused;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Edit>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "a form with scope, profile, key and value is expected",
        )
            .into_response();
    };
    let key = ConfigKey::new(
        given(&form.scope).unwrap_or_default(),
        given(&form.profile).unwrap_or(DEFAULT_PROFILE),
        given(&form.key).unwrap_or_default(),
    );
    if let Err(err) = key.validate() {
        return bad_key(err);
    }
    save(&viewer, &state, key, form, Some(0)).await
}

/// What every write to a key checks first: that the session may write, the key, the form.
fn checked<T: serde::de::DeserializeOwned>(
    viewer: &Viewer,
    headers: &HeaderMap,
    body: &[u8],
    (scope, profile, key): (String, String, String),
    what: &str,
) -> Result<(ConfigKey, T), Response> {
    if let Some(refused) = refuse_write(viewer, headers, body, what) {
        return Err(refused);
    }
    let key = ConfigKey::new(scope, profile, key);
    key.validate().map_err(bad_key)?;
    let form = serde_urlencoded::from_bytes::<T>(body)
        .map_err(|err| (StatusCode::BAD_REQUEST, format!("the form cannot be read: {err}")).into_response())?;
    Ok((key, form))
}

/// `POST /ui/config/{scope}/{profile}/{key}`: a new revision, compare-and-set on the revision
/// the editor was showing.
pub(super) async fn write(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (key, form) = match checked::<Edit>(&viewer, &headers, &body, (scope, profile, key), "change config") {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let expect = match revision(&form.expect) {
        Ok(expect) => expect,
        Err(err) => return (StatusCode::BAD_REQUEST, err).into_response(),
    };
    save(&viewer, &state, key, form, expect).await
}

async fn save(viewer: &Viewer, state: &ControlState, key: ConfigKey, form: Edit, expect: Option<u64>) -> Response {
    let value: serde_json::Value = match serde_json::from_str(&form.value) {
        Ok(value) => value,
        Err(err) => {
            let why = format!("The value is not JSON: {err} (a text needs quotes: \"like this\").");
            return with_status(
                key_page(viewer, state, &key, Notice::Invalid(why, form.value), None).await,
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let options = WriteOptions {
        expect,
        author: AUTHOR.to_owned(),
        comment: form.comment.unwrap_or_default(),
    };
    match state
        .config
        .set(&key, value.clone(), form.secret.is_some(), options)
        .await
    {
        Ok(entry) => Redirect::to(&format!("{}?saved={}", key_path(&key), entry.revision)).into_response(),
        Err(ConfigError::Conflict { current, expected, .. }) => {
            conflict(viewer, state, &key, expected, current, &value, form.secret.is_some()).await
        }
        Err(ConfigError::Invalid { field, reason }) => {
            let why = format!("{field}: {reason}");
            with_status(
                key_page(viewer, state, &key, Notice::Invalid(why, form.value), None).await,
                StatusCode::BAD_REQUEST,
            )
        }
        Err(err) => with_status(
            key_page(viewer, state, &key, Notice::Error(err.to_string()), None).await,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    }
}

/// Someone wrote the key while it was being edited: both values side by side, and the
/// choice to write this one over theirs (compare-and-set on their revision) or keep theirs.
async fn conflict(
    viewer: &Viewer,
    state: &ControlState,
    key: &ConfigKey,
    expected: u64,
    current: u64,
    mine: &serde_json::Value,
    secret: bool,
) -> Response {
    let theirs = state.config.get(key, Reveal::Masked).ok();
    let mine_text = serde_json::to_string_pretty(mine).unwrap_or_else(|_| mine.to_string());
    let theirs_text = theirs.as_ref().map(pretty).unwrap_or_else(|| "(no value)".to_owned());
    let title = format!("{} / {} / {}", key.scope, key.profile, key.key);
    let content = html! {
        p class="error" role="alert" data-conflict=(current) {
            "Not saved: the key moved on to revision " (current) " while you edited revision " (expected) "."
        }
        @if let Some(entry) = &theirs {
            p { "Revision " (entry.revision) " was written " (when(entry.time_ms)) " by " (entry.author)
                @if !entry.comment.is_empty() { " (" (entry.comment) ")" } "." }
        }
        (two_sides(&format!("theirs (revision {current})"), &theirs_text, "yours", &mine_text))
        form class="edit" method="post" action=(key_path(key)) {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="expect" value=(current);
            input type="hidden" name="value" value=(mine.to_string());
            @if secret { input type="hidden" name="secret" value="on"; }
            input type="hidden" name="comment" value={"over revision " (current)};
            button type="submit" { "Save yours over revision " (current) }
            " "
            a href=(key_path(key)) { "Keep theirs" }
        }
    };
    with_status(
        page_with(viewer, "/ui/config", &title, content, false),
        StatusCode::CONFLICT,
    )
}

#[derive(Debug, Deserialize)]
struct RollbackForm {
    revision: String,
    expect: Option<String>,
}

/// `POST /ui/config/{scope}/{profile}/{key}/rollback`: a new revision with an older one's
/// value.
pub(super) async fn rollback(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path((scope, profile, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (key, form) = match checked::<RollbackForm>(&viewer, &headers, &body, (scope, profile, key), "roll config back")
    {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let (Ok(Some(target)), Ok(expect)) = (revision(&Some(form.revision)), revision(&form.expect)) else {
        return (StatusCode::BAD_REQUEST, "`revision` and `expect` are revision numbers").into_response();
    };
    let options = WriteOptions {
        expect,
        author: AUTHOR.to_owned(),
        comment: format!("rolled back to revision {target}"),
    };
    match state.config.rollback(&key, target, options).await {
        Ok(entry) => Redirect::to(&format!("{}?saved={}", key_path(&key), entry.revision)).into_response(),
        Err(err @ ConfigError::Conflict { .. }) => {
            let why = format!("Not rolled back: {err}. Look at the newest revision first.");
            with_status(
                key_page(&viewer, &state, &key, Notice::Error(why), None).await,
                StatusCode::CONFLICT,
            )
        }
        Err(err) => {
            let status = match err {
                ConfigError::NotFound(_) | ConfigError::NoSuchRevision { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            with_status(
                key_page(&viewer, &state, &key, Notice::Error(err.to_string()), None).await,
                status,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: serde_json::Value, secret: bool) -> ConfigEntry {
        ConfigEntry {
            scope: "catalog".into(),
            profile: "default".into(),
            key: "page_size".into(),
            revision: 3,
            value,
            secret,
            deleted: false,
            time_ms: 0,
            author: "a".into(),
            comment: String::new(),
        }
    }

    #[test]
    fn secrets_never_show_and_long_values_are_cut() {
        assert_eq!(brief(&entry(serde_json::json!("hunter2"), true)), "••••••");
        assert!(!pretty(&entry(serde_json::json!("hunter2"), true)).contains("hunter2"));
        let long = brief(&entry(serde_json::json!("x".repeat(200)), false));
        assert_eq!(long.chars().count(), 80);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn revisions_in_forms_are_numbers_or_nothing() {
        assert_eq!(revision(&None), Ok(None));
        assert_eq!(revision(&Some(" ".into())), Ok(None));
        assert_eq!(revision(&Some("12".into())), Ok(Some(12)));
        assert!(revision(&Some("twelve".into())).unwrap_err().contains("twelve"));
    }
}
