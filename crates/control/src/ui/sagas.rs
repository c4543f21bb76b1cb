//! Sagas: every saga instance the services run, by state — counts per service and kind, the
//! newest instances (filtered by state at a stable URL, `?state=waiting`), and one instance's
//! step history with its timings and errors, linked to its trace. Read from the services
//! themselves ([`crate::sagas`]): each passing instance is asked at once, and one that does
//! not answer is said, never a failed page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use flotilla::saga::endpoint::{ListQuery, SagaDetail};
use flotilla::saga::{SagaState, SagaSummary, StateCounts, Transition};
use maud::{html, Markup};
use serde::Deserialize;

use super::{page, Viewer};
use crate::sagas::{Answer, ReadError};
use crate::ControlState;

/// How many instances the list shows (and asks each service for).
const SHOWN: usize = 100;

/// The list's filters, as links and a browser send them.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    state: Option<String>,
    service: Option<String>,
    kind: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The list's URL with these filters.
fn href(state: Option<SagaState>, service: Option<&str>, kind: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(state) = state {
        query.append_pair("state", state.as_str());
    }
    if let Some(service) = service {
        query.append_pair("service", service);
    }
    if let Some(kind) = kind {
        query.append_pair("kind", kind);
    }
    let query = query.finish();
    if query.is_empty() {
        "/ui/sagas".to_owned()
    } else {
        format!("/ui/sagas?{query}")
    }
}

fn saga_href(service: &str, id: &str) -> String {
    let segment = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("/ui/sagas/{}/{}", segment(service), segment(id))
}

/// How long ago, from milliseconds since the epoch.
fn ago(at_ms: i64) -> String {
    let secs = (flotilla::store::now_ms() - at_ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m {}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d {}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// A duration between two transitions.
fn took(ms: i64) -> String {
    match ms.max(0) {
        ms @ 0..=999 => format!("{ms} ms"),
        ms @ 1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The time of day (UTC) of milliseconds since the epoch.
fn clock(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_default()
}

/// The trace id of a W3C `traceparent` (`00-<trace-id>-<span-id>-<flags>`), if it has one.
fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')).then_some(id)
}

/// An instance that could not be read, said once.
fn did_not_answer<T>(answer: &Answer<T>) -> Markup {
    match &answer.result {
        Ok(_) => html! {},
        Err(err) => html! {
            p class="error" role="alert" data-instance=(answer.instance) {
                "Instance " code { (answer.instance) } " of " (answer.service) " did not answer: " (reason(err))
            }
        },
    }
}

fn reason(err: &ReadError) -> String {
    match err {
        ReadError::Http(err) => match err.status() {
            Some(status) => format!("it answered {}", status.as_u16()),
            None => flotilla::http::chain(err),
        },
        other => other.to_string(),
    }
}

fn badge(state: SagaState) -> Markup {
    html! { span class={"badge saga " (state.as_str())} { (state.as_str()) } }
}

/// `GET /ui/sagas?state=&service=&kind=`: counts by state per service and kind, and the newest
/// instances in the state asked for (every state when none).
pub(super) async fn list(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Query(filter): Query<Filter>,
) -> Response {
    let wanted = given(&filter.state).map(|s| SagaState::parse(s).ok_or(s));
    let chosen = match wanted {
        Some(Ok(state)) => Some(state),
        _ => None,
    };
    let (service, kind) = (given(&filter.service), given(&filter.kind));
    let query = ListQuery {
        status: chosen.map(|s| s.as_str().to_owned()),
        kind: kind.map(str::to_owned),
        limit: Some(SHOWN as i64),
    };
    let answers = crate::sagas::lists(&state, service, &query).await;
    // The instances of a service share its database: the same sagas, counted once (the
    // largest count of each, should one instance be behind another).
    let mut counts: BTreeMap<(String, String), StateCounts> = BTreeMap::new();
    let mut sagas: BTreeMap<(String, String), SagaSummary> = BTreeMap::new();
    for answer in &answers {
        let Ok(list) = &answer.result else { continue };
        for kind in &list.kinds {
            let seen = counts.entry((answer.service.clone(), kind.kind.clone())).or_default();
            *seen = StateCounts {
                running: seen.running.max(kind.counts.running),
                waiting: seen.waiting.max(kind.counts.waiting),
                compensating: seen.compensating.max(kind.counts.compensating),
                done: seen.done.max(kind.counts.done),
                failed: seen.failed.max(kind.counts.failed),
            };
            for saga in &kind.sagas {
                let key = (answer.service.clone(), saga.id.clone());
                if sagas.get(&key).is_none_or(|kept| kept.updated_ms < saga.updated_ms) {
                    sagas.insert(key, saga.clone());
                }
            }
        }
    }
    let mut rows: Vec<(&str, &SagaSummary)> = sagas.iter().map(|((s, _), saga)| (s.as_str(), saga)).collect();
    rows.sort_by(|a, b| b.1.updated_ms.cmp(&a.1.updated_ms).then_with(|| a.1.id.cmp(&b.1.id)));
    rows.truncate(SHOWN);
    let total = |state: SagaState| counts.values().map(|c| c.get(state)).sum::<u64>();
    let content = html! {
        nav class="saga-states" aria-label="Filter by state" {
            @if chosen.is_none() {
                a href=(href(None, service, kind)) aria-current="page" { "all" }
            } @else {
                a href=(href(None, service, kind)) { "all" }
            }
            @for s in SagaState::ALL {
                @let label = html! { (s.as_str()) " " span class="count" { (total(s)) } };
                @if chosen == Some(s) {
                    a href=(href(Some(s), service, kind)) aria-current="page" data-state=(s.as_str()) { (label) }
                } @else {
                    a href=(href(Some(s), service, kind)) data-state=(s.as_str()) { (label) }
                }
            }
        }
        @if let Some(Err(text)) = wanted {
            p class="error" role="alert" { "`" (text) "` is not a state: running, waiting, compensating, done or failed." }
        }
        @for answer in &answers { (did_not_answer(answer)) }
        @if answers.is_empty() {
            p class="empty" {
                "No passing instance runs sagas"
                @if let Some(service) = service { " in " (service) }
                ". A service shows its sagas here once its runners are made through its setup."
            }
        } @else {
            section aria-labelledby="counts-h" {
                h2 id="counts-h" { "By state" }
                @if counts.is_empty() {
                    p class="empty" { "No instance answered." }
                } @else {
                    div class="table-wrap" {
                        table class="saga-counts" {
                            thead { tr {
                                th scope="col" { "Service" }
                                th scope="col" { "Kind" }
                                @for s in SagaState::ALL { th scope="col" class="num" { (s.as_str()) } }
                            } }
                            tbody {
                                @for ((svc, k), c) in &counts {
                                    tr data-service=(svc) data-kind=(k) {
                                        th scope="row" { a href={"/ui/services/" (svc)} { (svc) } }
                                        td { (k) }
                                        @for s in SagaState::ALL {
                                            td class="num" {
                                                @if c.get(s) > 0 {
                                                    a href=(href(Some(s), Some(svc), Some(k))) { (c.get(s)) }
                                                } @else { "0" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="sagas-h" {
                h2 id="sagas-h" {
                    @match chosen { Some(s) => { "Instances " (s.as_str()) }, None => "Instances" }
                    @if let Some(k) = kind { " · " (k) }
                }
                @if rows.is_empty() {
                    p class="empty" { "None" @if let Some(s) = chosen { " is " (s.as_str()) } "." }
                } @else {
                    div class="table-wrap" {
                        table class="sagas" {
                            thead { tr {
                                th scope="col" { "Saga" }
                                th scope="col" { "Kind" }
                                th scope="col" { "Service" }
                                th scope="col" { "State" }
                                th scope="col" { "Step" }
                                th scope="col" class="num" { "Attempts" }
                                th scope="col" { "Last error" }
                                th scope="col" class="num" { "Changed" }
                            } }
                            tbody {
                                @for (svc, saga) in &rows {
                                    tr data-saga=(saga.id) data-state=(saga.state.as_str()) {
                                        th scope="row" { a href=(saga_href(svc, &saga.id)) { code { (saga.id) } } }
                                        td { (saga.kind) }
                                        td { (svc) }
                                        td { (badge(saga.state)) }
                                        td { @if saga.step_name.is_empty() { "—" } @else { (saga.step_name) } }
                                        td class="num" {
                                            (saga.attempts)
                                            @if saga.waits > 0 { " · waited " (saga.waits) "×" }
                                        }
                                        td class="saga-error" title=(saga.last_error) { (short(&saga.last_error)) }
                                        td class="num" { (ago(saga.updated_ms)) " ago" }
                                    }
                                }
                            }
                        }
                    }
                    @if rows.len() == SHOWN { p class="hint" { "The newest " (SHOWN) " shown." } }
                }
            }
        }
    };
    page(&viewer, "/ui/sagas", "Sagas", content)
}

/// A long error cut for a table cell (the whole of it in the cell's title and on the
/// saga's page).
fn short(text: &str) -> String {
    const KEPT: usize = 90;
    if text.chars().count() <= KEPT {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(KEPT).collect();
        cut.push('…');
        cut
    }
}

/// `GET /ui/sagas/{service}/{id}`: one instance — where it is, each step's state, its history
/// with the time between transitions and every error — linked to its trace.
pub(super) async fn one(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    let (found, failed) = crate::sagas::detail(&state, &service, &id).await;
    let content = html! {
        @for answer in &failed { (did_not_answer(answer)) }
        @match found.map(|a| a.result) {
            Some(Ok(detail)) => (saga(&service, &detail)),
            _ if !failed.is_empty() => p class="empty" { "Its instances could not be asked; the page tries again as it refreshes." },
            _ => p class="empty" { "No saga " code { (id) } " in " a href={"/ui/services/" (service)} { (service) } "." },
        }
        p { a href="/ui/sagas" { "All sagas" } }
    };
    page(&viewer, "/ui/sagas", &format!("Saga {id}"), content)
}

/// What each step of the definition went through, from the history: its last event.
fn step_marks(detail: &SagaDetail) -> Vec<(&str, &str)> {
    detail
        .steps
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let current = detail.saga.step_name == *name
                && matches!(
                    detail.saga.state,
                    SagaState::Running | SagaState::Waiting | SagaState::Compensating
                );
            let last = detail
                .history
                .iter()
                .rev()
                .find(|t| t.step == *name)
                .map(|t| t.event.as_str());
            let mark = match last {
                _ if current && detail.saga.state == SagaState::Waiting => "waiting",
                _ if current && detail.saga.state == SagaState::Compensating => "undoing",
                _ if current => "running",
                Some("done") => "done",
                Some("compensated") => "undone",
                Some("failed") => "failed",
                Some(other) => other,
                None if (i as i64) < detail.saga.step => "done",
                None => "pending",
            };
            (name.as_str(), mark)
        })
        .collect()
}

/// The badge class of a history line's event.
fn event_class(event: &str) -> &'static str {
    match event {
        "started" => "running",
        "done" | "completed" => "done",
        "waiting" => "waiting",
        "compensated" => "compensating",
        _ => "failed",
    }
}

fn saga(service: &str, detail: &SagaDetail) -> Markup {
    let saga = &detail.saga;
    let first = detail.history.first().map_or(saga.created_ms, |t| t.at_ms);
    let position = usize::try_from(saga.step)
        .ok()
        .filter(|_| !saga.step_name.is_empty())
        .map(|i| match saga.state {
            SagaState::Compensating => i,
            _ => i + 1,
        });
    html! {
        dl class="facts saga-facts" {
            dt { "State" } dd { (badge(saga.state)) " " span class="hint" { "(" (format!("{:?}", saga.status).to_lowercase()) ")" } }
            dt { "Service" } dd { a href={"/ui/services/" (service)} { (service) } }
            dt { "Kind" } dd { (saga.kind) }
            dt { "Step" } dd {
                @if saga.step_name.is_empty() { "—" } @else {
                    (saga.step_name)
                    @if let Some(n) = position { " (" (n) " of " (detail.steps.len()) ")" }
                }
            }
            dt { "Attempts" } dd { (saga.attempts) @if saga.waits > 0 { " · waited " (saga.waits) "× for a dependency" } }
            dt { "Started" } dd { (clock(saga.created_ms)) " · " (ago(saga.created_ms)) " ago" }
            dt { "Changed" } dd { (clock(saga.updated_ms)) " · " (ago(saga.updated_ms)) " ago" }
            @if !saga.reason.is_empty() {
                dt { "Why undone" } dd { (saga.reason) @if saga.refused { " (refused)" } }
            }
            @if !saga.last_error.is_empty() {
                dt { "Last error" } dd class="error" { (saga.last_error) }
            }
            dt { "Trace" } dd {
                @match trace_id(&saga.traceparent) {
                    Some(trace) => a href={"/ui/traces/" (trace)} data-trace=(trace) { "Trace " code { (&trace[..8]) } },
                    None => span class="hint" { "none recorded" },
                }
            }
        }
        section aria-labelledby="steps-h" {
            h2 id="steps-h" { "Steps" }
            ol class="saga-steps" {
                @for (name, mark) in step_marks(detail) {
                    li data-step=(name) data-mark=(mark) { (name) " " span class={"mark " (mark)} { (mark) } }
                }
            }
        }
        section aria-labelledby="history-h" {
            h2 id="history-h" { "History" }
            @if detail.history.is_empty() {
                p class="empty" { "No transition recorded." }
            } @else {
                @let runs = runs(&detail.history);
                ol class="saga-history" {
                    @for (i, run) in runs.iter().enumerate() {
                        (transition(run, i.checked_sub(1).map(|p| &runs[p]), first))
                    }
                }
                p class="hint" { "Times are since the saga started; beside each, the time since the line before (a step's line: how long it took). Repeated waits and retries of a step with the same error are one line." }
            }
        }
    }
}

/// Transitions in a row that say the same (a step waiting every 2 s while payments is away,
/// for as long as it is away), as one line.
#[derive(Debug, PartialEq, Eq)]
struct Run<'a> {
    /// The first of them.
    first: &'a Transition,
    /// When the last was recorded.
    last_ms: i64,
    /// How many.
    times: usize,
}

fn runs(history: &[Transition]) -> Vec<Run<'_>> {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for t in history {
        match runs.last_mut() {
            Some(run)
                if matches!(t.event.as_str(), "waiting" | "retry")
                    && (
                        run.first.step.as_str(),
                        run.first.event.as_str(),
                        run.first.detail.as_str(),
                    ) == (t.step.as_str(), t.event.as_str(), t.detail.as_str()) =>
            {
                run.last_ms = t.at_ms;
                run.times += 1;
            }
            _ => runs.push(Run {
                first: t,
                last_ms: t.at_ms,
                times: 1,
            }),
        }
    }
    runs
}

fn transition(run: &Run<'_>, before: Option<&Run<'_>>, first: i64) -> Markup {
    let t = run.first;
    html! {
        li data-event=(t.event) {
            span class="at" title=(clock(t.at_ms)) { "+" (took(t.at_ms - first)) }
            " "
            span class={"badge saga " (event_class(&t.event))} { (t.event) }
            @if !t.step.is_empty() { " " strong { (t.step) } }
            @if let Some(before) = before { " " span class="took" { "after " (took(t.at_ms - before.last_ms)) } }
            @if run.times > 1 {
                " " span class="took" title=(clock(run.last_ms)) { "· " (run.times) " times over " (took(run.last_ms - t.at_ms)) }
            }
            @if !t.detail.is_empty() && t.event != "completed" {
                p class={ @if event_class(&t.event) == "failed" || t.event == "waiting" { "error" } @else { "detail" } } { (t.detail) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_is_the_second_field_of_the_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(""), None);
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("00-<script>-x-01"), None);
    }

    #[test]
    fn filters_make_stable_urls() {
        assert_eq!(href(None, None, None), "/ui/sagas");
        assert_eq!(href(Some(SagaState::Waiting), None, None), "/ui/sagas?state=waiting");
        assert_eq!(
            href(Some(SagaState::Done), Some("orders"), Some("order")),
            "/ui/sagas?state=done&service=orders&kind=order"
        );
        assert_eq!(saga_href("orders", "a b/c"), "/ui/sagas/orders/a+b%2Fc");
    }

    #[test]
    fn each_step_is_marked_from_the_history_and_the_current_position() {
        let at = |step: &str, event: &str, at_ms| Transition {
            step: step.into(),
            event: event.into(),
            detail: String::new(),
            at_ms,
        };
        let detail = SagaDetail {
            saga: SagaSummary {
                id: "o-1".into(),
                kind: "order".into(),
                state: SagaState::Waiting,
                status: flotilla::saga::SagaStatus::Running,
                step: 1,
                step_name: "authorize".into(),
                attempts: 0,
                waits: 3,
                last_error: "payments: no instance".into(),
                reason: String::new(),
                refused: false,
                traceparent: String::new(),
                created_ms: 0,
                updated_ms: 10,
            },
            steps: vec!["reserve".into(), "authorize".into(), "ship".into()],
            history: vec![
                at("", "started", 0),
                at("reserve", "done", 5),
                at("authorize", "waiting", 10),
            ],
        };
        assert_eq!(
            step_marks(&detail),
            [("reserve", "done"), ("authorize", "waiting"), ("ship", "pending")]
        );
        assert_eq!(took(1500), "1.5 s");
        let mut history = detail.history.clone();
        history.extend([
            at("authorize", "waiting", 2010),
            at("authorize", "waiting", 4010),
            at("authorize", "done", 4500),
        ]);
        let runs = runs(&history);
        assert_eq!(
            runs.iter()
                .map(|r| (r.first.event.as_str(), r.times))
                .collect::<Vec<_>>(),
            [("started", 1), ("done", 1), ("waiting", 3), ("done", 1)],
            "a step's waits with the same error are one line"
        );
        assert_eq!((runs[2].first.at_ms, runs[2].last_ms), (10, 4010));
        assert_eq!(took(42), "42 ms");
    }
}
