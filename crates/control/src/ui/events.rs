//! Events: every topic of the event log with its publishing rate and its consumer groups
//! (how far behind each is, what it holds in flight), the dead-letter topics with their counts,
//! a topic's newest events, and replaying dead letters to the topic they died on — the
//! operator's, CSRF-checked — so a poison event can be retried once its consumer is fixed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use flotilla_api::events::{validate_topic, Delivery, GroupInfo, TopicInfo};
use jiff::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;

use super::{page, page_with, refuse_write, with_status, Viewer};
use crate::events::{dead_letter_topic, LogError};
use crate::ControlState;

/// The dashboard's view of the event log, for the navigation bar.
const CURRENT: &str = "/ui/events";
/// What a dead-letter topic's name ends with (see [`dead_letter_topic`]).
const DEAD_LETTER_SUFFIX: &str = ".dead-letter";
/// How far back a topic's rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(300);
/// How many of a topic's newest events the rate is measured from: enough for a busy topic's
/// minute, few enough that the list page stays one cheap indexed read per topic.
const RATE_TAIL: u32 = 300;
/// How many of a topic's newest events its page shows.
const NEWEST: u32 = 50;
/// How many dead letters "Replay all" reads at a time (the log reads at most 1000).
const REPLAY_PAGE: u32 = 500;
/// How much of an event's data its row shows before the rest is folded away.
const DATA_PREVIEW: usize = 40;

/// The topic a dead-letter topic collects the dead letters of; `None` for an ordinary topic.
fn original_of(topic: &str) -> Option<&str> {
    topic.strip_suffix(DEAD_LETTER_SUFFIX).filter(|t| !t.is_empty())
}

/// A topic's publishing rate, measured from the times its newest events carry.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    /// Events per minute over [`RATE_WINDOW`].
    per_minute: f64,
    /// Every event read was inside the window and older ones exist: the rate is at least this.
    at_least: bool,
}

impl Rate {
    fn shown(&self) -> String {
        format!("{}{:.1}", if self.at_least { "≥ " } else { "" }, self.per_minute)
    }
}

/// The rate of a topic whose newest events (up to `tail`, read from the end) carry `times`:
/// those within `window` of `now`, per minute. When the read was cut at `tail` and even its
/// oldest event is inside the window, more came than were read: a lower bound. An event
/// without a time (its publisher set none) is not counted: nothing says when it came.
fn rate(times: &[Option<Timestamp>], tail: usize, older_exist: bool, now: Timestamp, window: Duration) -> Rate {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now.as_millisecond().saturating_sub(window_ms);
    let inside = |t: &Timestamp| t.as_millisecond() >= cutoff;
    let count = times.iter().flatten().filter(|t| inside(t)).count();
    let oldest = times.iter().flatten().min();
    let at_least = older_exist && times.len() >= tail && oldest.is_some_and(inside);
    let minutes = window.as_secs_f64() / 60.0;
    Rate {
        per_minute: if minutes > 0.0 { count as f64 / minutes } else { 0.0 },
        at_least,
    }
}

/// An event's time, when it carries one a clock can read.
fn time_of(delivery: &Delivery) -> Option<Timestamp> {
    delivery.event.time.as_deref().and_then(|t| t.parse().ok())
}

/// The rate of `info`'s topic from its newest events; `None` when they could not be read (the
/// page still shows everything else).
async fn rate_of(state: &ControlState, info: &TopicInfo, now: Timestamp) -> Option<Rate> {
    if info.events == 0 {
        return Some(Rate {
            per_minute: 0.0,
            at_least: false,
        });
    }
    let from = info.next_offset.saturating_sub(u64::from(RATE_TAIL));
    match state.events.read(&info.topic, from, RATE_TAIL).await {
        Ok(tail) => {
            let times: Vec<_> = tail.iter().map(time_of).collect();
            Some(rate(&times, RATE_TAIL as usize, from > 0, now, RATE_WINDOW))
        }
        Err(err) => {
            tracing::warn!(topic = %info.topic, error = %err, "the dashboard could not read a topic's tail");
            None
        }
    }
}

/// A page saying what went wrong with a request, under `status`.
fn failure(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    let content = html! {
        p class="error" role="alert" { (message) }
        p { a href=(CURRENT) { "All topics" } }
    };
    with_status(page_with(viewer, CURRENT, title, content, false), status)
}

/// The event log's failure as a page: the caller's mistake (4xx) or the log's (5xx), the
/// database's details kept for the control plane's log.
fn log_failure(viewer: &Viewer, err: LogError) -> Response {
    match err {
        LogError::Invalid { field, reason } => failure(
            viewer,
            StatusCode::BAD_REQUEST,
            "Not a valid request",
            &format!("{field}: {reason}"),
        ),
        LogError::NotFound(what) => failure(viewer, StatusCode::NOT_FOUND, "Not found", &what),
        LogError::Unavailable(reason) => failure(
            viewer,
            StatusCode::SERVICE_UNAVAILABLE,
            "Event log unavailable",
            &format!("The event log did not answer: {reason}"),
        ),
        LogError::Database(err) => {
            tracing::error!(error = %err, "the dashboard could not read the event log");
            failure(
                viewer,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Event log failed",
                "The event log failed; the control plane's log says why.",
            )
        }
    }
}

/// A group's row in a groups table: lag above zero stands out (the group is behind), as do
/// events in flight (handed out, not yet acked).
fn group_row(topic: &str, group: &GroupInfo, with_topic: bool) -> Markup {
    html! {
        tr data-topic=(topic) data-group=(group.group) data-lag=(group.lag) data-in-flight=(group.in_flight) {
            @if with_topic {
                td { a href={"/ui/events/" (topic)} { (topic) } }
            }
            th scope="row" { (group.group) }
            td class="num" { (group.next_offset) }
            td class={"num" @if group.lag > 0 { " lagging" }} { (group.lag) }
            td class={"num" @if group.in_flight > 0 { " lagging" }} { (group.in_flight) }
        }
    }
}

/// The head of a groups table.
fn group_head(with_topic: bool) -> Markup {
    html! {
        thead { tr {
            @if with_topic { th scope="col" { "Topic" } }
            th scope="col" { "Group" }
            th scope="col" class="num" { "Next offset" }
            th scope="col" class="num" { "Lag" }
            th scope="col" class="num" { "In flight" }
        } }
    }
}

/// `GET /ui/events`: every topic with its events retained, its rate and its dead letters;
/// every consumer group with its lag and what it holds in flight; the dead-letter topics.
pub(super) async fn list(viewer: Viewer, State(state): State<Arc<ControlState>>) -> Response {
    let topics = match state.events.topics().await {
        Ok(topics) => topics,
        Err(err) => return log_failure(&viewer, err),
    };
    let now = Timestamp::now();
    let dead: BTreeMap<&str, &TopicInfo> = topics
        .iter()
        .filter_map(|t| original_of(&t.topic).map(|original| (original, t)))
        .collect();
    let ordinary: Vec<&TopicInfo> = topics.iter().filter(|t| original_of(&t.topic).is_none()).collect();
    let mut rates = BTreeMap::new();
    for info in &ordinary {
        rates.insert(info.topic.as_str(), rate_of(&state, info, now).await);
    }
    let groups: Vec<(&str, &GroupInfo)> = topics
        .iter()
        .flat_map(|t| t.groups.iter().map(move |g| (t.topic.as_str(), g)))
        .collect();
    let content = html! {
        section aria-labelledby="topics-h" {
            h2 id="topics-h" { "Topics" }
            @if ordinary.is_empty() {
                p class="empty" { "No topic has had an event published to it." }
            } @else {
                div class="table-wrap" {
                    table class="topics" {
                        thead { tr {
                            th scope="col" { "Topic" }
                            th scope="col" class="num" { "Retained" }
                            th scope="col" class="num" { "Published" }
                            th scope="col" class="num" { "Per minute" }
                            th scope="col" class="num" { "Groups" }
                            th scope="col" class="num" { "Dead letters" }
                        } }
                        tbody {
                            @for info in &ordinary {
                                @let dead_letters = dead.get(info.topic.as_str()).map_or(0, |d| d.events);
                                tr data-topic=(info.topic) {
                                    th scope="row" { a href={"/ui/events/" (info.topic)} { (info.topic) } }
                                    td class="num" { (info.events) }
                                    td class="num" { (info.next_offset) }
                                    td class="num" {
                                        @match rates.get(info.topic.as_str()).copied().flatten() {
                                            Some(rate) => (rate.shown()),
                                            None => "?",
                                        }
                                    }
                                    td class="num" { (info.groups.len()) }
                                    td class={"num" @if dead_letters > 0 { " bad" }} {
                                        @if dead_letters > 0 {
                                            a href={"/ui/events/" (dead_letter_topic(&info.topic))} { (dead_letters) }
                                        } @else { "0" }
                                    }
                                }
                            }
                        }
                    }
                }
                p class="hint" {
                    "Per minute: over the last " (RATE_WINDOW.as_secs() / 60) " minutes, by the times the newest "
                    (RATE_TAIL) " events of each topic carry (≥ when more came than that)."
                }
            }
        }
        section aria-labelledby="groups-h" {
            h2 id="groups-h" { "Consumer groups" }
            @if groups.is_empty() {
                p class="empty" { "No consumer group has fetched from any topic." }
            } @else {
                div class="table-wrap" {
                    table class="groups" {
                        (group_head(true))
                        tbody { @for (topic, group) in &groups { (group_row(topic, group, true)) } }
                    }
                }
                p class="hint" { "Lag: events not yet handed to the group. In flight: handed out and not yet acked." }
            }
        }
        section aria-labelledby="dead-h" {
            h2 id="dead-h" { "Dead letters" }
            @if dead.is_empty() {
                p class="empty" { "No event has been given up on." }
            } @else {
                div class="table-wrap" {
                    table class="dead-letters" {
                        thead { tr {
                            th scope="col" { "Dead-letter topic" }
                            th scope="col" class="num" { "Dead letters" }
                            th scope="col" { "Of topic" }
                        } }
                        tbody {
                            @for (original, info) in &dead {
                                tr data-topic=(info.topic) {
                                    th scope="row" { a href={"/ui/events/" (info.topic)} { (info.topic) } }
                                    td class={"num" @if info.events > 0 { " bad" }} { (info.events) }
                                    td { a href={"/ui/events/" (original)} { (original) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&viewer, CURRENT, "Events", content)
}

/// A topic page's query: the notice after a replay.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TopicQuery {
    /// How many dead letters were just replayed (the redirect after a replay says).
    replayed: Option<String>,
}

/// Up to [`DATA_PREVIEW`] characters of an event's data, as compact JSON.
fn preview(data: &serde_json::Value) -> String {
    let text = data.to_string();
    if text.chars().count() <= DATA_PREVIEW {
        return text;
    }
    let mut cut: String = text.chars().take(DATA_PREVIEW).collect();
    cut.push('…');
    cut
}

/// An event's time as its row shows it: to the second, in UTC; as written when it does not
/// parse (the publisher's own format).
fn shown_time(time: &str) -> String {
    time.parse::<Timestamp>()
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| time.to_owned())
}

/// `GET /ui/events/{topic}`: the topic's groups and newest events; on a dead-letter topic,
/// each dead letter's reason and (for the operator) a button to replay it, or all of them.
pub(super) async fn topic(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    Query(query): Query<TopicQuery>,
) -> Response {
    if let Err(reason) = validate_topic(&topic) {
        return failure(&viewer, StatusCode::BAD_REQUEST, "Not a topic", &reason);
    }
    let topics = match state.events.topics().await {
        Ok(topics) => topics,
        Err(err) => return log_failure(&viewer, err),
    };
    let Some(info) = topics.iter().find(|t| t.topic == topic) else {
        return failure(
            &viewer,
            StatusCode::NOT_FOUND,
            "No such topic",
            &format!("The event log has no topic `{topic}`: nothing was ever published to it."),
        );
    };
    let from = info.next_offset.saturating_sub(u64::from(NEWEST));
    let mut newest = match state.events.read(&topic, from, NEWEST).await {
        Ok(events) => events,
        Err(err) => return log_failure(&viewer, err),
    };
    newest.reverse();
    let original = original_of(&topic);
    let dead_letters = topics
        .iter()
        .find(|t| t.topic == dead_letter_topic(&topic))
        .map_or(0, |t| t.events);
    let replayed = query.replayed.as_deref().and_then(|n| n.parse::<u64>().ok());
    let operator = viewer.principal.is_operator();
    let content = html! {
        @if let (Some(n), Some(original)) = (replayed, original) {
            p class="notice" role="status" data-replayed=(n) {
                "Replayed " (n) @if n == 1 { " dead letter" } @else { " dead letters" } " to "
                a href={"/ui/events/" (original)} { (original) } ", under new ids."
            }
        }
        p {
            (info.events) " events retained, " (info.next_offset) " published. "
            a href=(CURRENT) { "All topics" }
            @if let Some(original) = original {
                " · dead letters of " a href={"/ui/events/" (original)} { (original) }
            } @else if dead_letters > 0 {
                " · " a href={"/ui/events/" (dead_letter_topic(&topic))} class="bad" { (dead_letters) " dead letters" }
            }
        }
        @if !info.groups.is_empty() {
            section aria-labelledby="groups-h" {
                h2 id="groups-h" { "Consumer groups" }
                div class="table-wrap" {
                    table class="groups" {
                        (group_head(false))
                        tbody { @for group in &info.groups { (group_row(&topic, group, false)) } }
                    }
                }
            }
        }
        section aria-labelledby="events-h" {
            h2 id="events-h" { "Newest events" }
            @if original.is_some() {
                @if operator {
                    @if !newest.is_empty() {
                        form class="replay-all" method="post" action={"/ui/events/" (topic) "/replay"} {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            input type="hidden" name="all" value="on";
                            // Only the dead letters this page saw: one that dies meanwhile is
                            // looked at before it is retried.
                            input type="hidden" name="before" value=(info.next_offset);
                            button type="submit" { "Replay all" }
                        }
                    }
                    p class="hint" { "Replaying appends the event again to its topic under a new id; the dead letter stays here." }
                } @else {
                    p class="hint" { "This session is read-only: replaying dead letters needs the operator's." }
                }
            }
            @if newest.is_empty() {
                p class="empty" { "No event is retained." }
            } @else {
                div class="table-wrap" {
                    table class="events" {
                        thead { tr {
                            th scope="col" class="num" { "Offset" }
                            th scope="col" { "Id" }
                            th scope="col" { "Type" }
                            th scope="col" { "Source" }
                            th scope="col" { "Time" }
                            th scope="col" { "Subject" }
                            @if original.is_some() {
                                th scope="col" { "Reason" }
                                @if operator { th scope="col" { "Replay" } }
                            }
                            th scope="col" { "Data" }
                        } }
                        tbody {
                            @for delivery in &newest {
                                @let event = &delivery.event;
                                tr data-offset=(delivery.offset) data-id=(event.id) {
                                    td class="num" { (delivery.offset) }
                                    th scope="row" { code { (event.id) } }
                                    td { (event.kind) }
                                    td { (event.source) }
                                    td {
                                        @if let Some(time) = &event.time { time datetime=(time) { (shown_time(time)) } }
                                    }
                                    td class="subject" { (event.subject.as_deref().unwrap_or("")) }
                                    @if original.is_some() {
                                        td class="reason" { (event.deadletterreason.as_deref().unwrap_or("")) }
                                        @if operator {
                                            td {
                                                form class="replay" method="post" action={"/ui/events/" (topic) "/replay"} {
                                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                                    input type="hidden" name="offset" value=(delivery.offset);
                                                    button type="submit" aria-label={"Replay the dead letter at offset " (delivery.offset)} { "Replay" }
                                                }
                                            }
                                        }
                                    }
                                    td class="data" {
                                        details {
                                            summary { code { (preview(&event.data)) } }
                                            pre { (serde_json::to_string_pretty(&event.data).unwrap_or_default()) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if info.events > newest.len() as u64 {
                    p class="hint" { "The newest " (newest.len()) " of " (info.events) " events retained." }
                }
            }
        }
    };
    page(&viewer, CURRENT, &topic, content)
}

/// What a replay form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayRequest {
    /// The dead letter at this offset.
    One(u64),
    /// Every dead letter retained (below `before` when given: those the page showed).
    All {
        /// The dead-letter topic's next offset when the page was drawn.
        before: Option<u64>,
    },
}

/// A replay form's fields, as a browser sends them.
#[derive(Debug, Deserialize)]
struct ReplayForm {
    offset: Option<String>,
    all: Option<String>,
    before: Option<String>,
}

/// Reads a replay form's body: one offset, or "all"; a message fit to show when it is neither.
fn parse_replay(body: &[u8]) -> Result<ReplayRequest, String> {
    let form: ReplayForm =
        serde_urlencoded::from_bytes(body).map_err(|e| format!("The replay form could not be read: {e}."))?;
    let number = |field: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("`{value}` is not an offset (the `{field}` field takes a whole number)."))
    };
    if form.all.as_deref().is_some_and(|a| !a.trim().is_empty()) {
        let before = match form.before.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            Some(before) => Some(number("before", before)?),
            None => None,
        };
        return Ok(ReplayRequest::All { before });
    }
    match form.offset.as_deref() {
        Some(offset) => number("offset", offset).map(ReplayRequest::One),
        None => Err("The form names no dead letter to replay (no `offset`, and not “Replay all”).".to_owned()),
    }
}

/// Replays every dead letter of `topic` below `before`, oldest first; how many went.
async fn replay_all(state: &ControlState, topic: &str, before: Option<u64>) -> Result<u64, LogError> {
    let mut from = 0;
    let mut replayed = 0;
    loop {
        let page = state.events.read(topic, from, REPLAY_PAGE).await?;
        let Some(last) = page.last().map(|d| d.offset) else {
            return Ok(replayed);
        };
        for delivery in &page {
            if before.is_some_and(|before| delivery.offset >= before) {
                return Ok(replayed);
            }
            state.events.replay(topic, delivery.offset).await?;
            replayed += 1;
        }
        from = last + 1;
    }
}

/// `POST /ui/events/{topic}/replay`: replays one dead letter (`offset`) or all of them
/// (`all`) to the topic they died on, then back to the dead-letter topic's page with a notice.
/// The operator's only, with the session's CSRF token.
pub(super) async fn replay(
    viewer: Viewer,
    State(state): State<Arc<ControlState>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_write(&viewer, &headers, &body, "replay dead letters") {
        return refused;
    }
    if let Err(reason) = validate_topic(&topic) {
        return failure(&viewer, StatusCode::BAD_REQUEST, "Not a topic", &reason);
    }
    if original_of(&topic).is_none() {
        return failure(
            &viewer,
            StatusCode::BAD_REQUEST,
            "Not a dead-letter topic",
            &format!(
                "Only dead letters are replayed, from a `<topic>{DEAD_LETTER_SUFFIX}` topic; `{topic}` is not one."
            ),
        );
    }
    let request = match parse_replay(&body) {
        Ok(request) => request,
        Err(message) => return failure(&viewer, StatusCode::BAD_REQUEST, "Not a replay", &message),
    };
    match state.events.topics().await {
        Ok(topics) if topics.iter().any(|t| t.topic == topic) => {}
        Ok(_) => {
            return failure(
                &viewer,
                StatusCode::NOT_FOUND,
                "No such topic",
                &format!("The event log has no topic `{topic}`: no event has been dead-lettered there."),
            )
        }
        Err(err) => return log_failure(&viewer, err),
    }
    let replayed = match request {
        ReplayRequest::One(offset) => state.events.replay(&topic, offset).await.map(|_| 1),
        ReplayRequest::All { before } => replay_all(&state, &topic, before).await,
    };
    match replayed {
        Ok(n) => {
            tracing::info!(topic, replayed = n, "dead letters replayed from the dashboard");
            Redirect::to(&format!("/ui/events/{topic}?replayed={n}")).into_response()
        }
        Err(err) => log_failure(&viewer, err),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request};
    use flotilla_api::events::CloudEvent;
    use http_body_util::BodyExt;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;
    use crate::acl::Principal;
    use crate::{ControlConfig, RegistryConfig, Storage};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_rate_counts_the_window_per_minute() {
        let now = at("2026-11-30T22:10:00Z");
        let times = [
            Some(at("2026-11-30T22:00:00Z")),
            Some(at("2026-11-30T22:05:00Z")),
            Some(at("2026-11-30T22:06:00Z")),
            None,
            Some(at("2026-11-30T22:09:59Z")),
        ];
        let measured = rate(&times, 300, false, now, Duration::from_secs(300));
        assert_eq!(measured.per_minute, 3.0 / 5.0, "the one at the window's edge counts");
        assert!(!measured.at_least);
        assert_eq!(measured.shown(), "0.6");
    }

    #[test]
    fn a_tail_wholly_inside_the_window_is_a_lower_bound() {
        let now = at("2026-11-30T22:10:00Z");
        let times = vec![Some(at("2026-11-30T22:09:00Z")); 4];
        let cut = rate(&times, 4, true, now, Duration::from_secs(60));
        assert_eq!((cut.per_minute, cut.at_least), (4.0, true));
        assert_eq!(cut.shown(), "≥ 4.0");
        // The whole topic was read: exact.
        assert!(!rate(&times, 4, false, now, Duration::from_secs(60)).at_least);
        // Fewer than asked for: the whole topic too.
        assert!(!rate(&times, 10, true, now, Duration::from_secs(60)).at_least);
        assert_eq!(rate(&[], 10, false, now, Duration::from_secs(60)).per_minute, 0.0);
    }

    #[test]
    fn replay_forms_name_one_offset_or_all() {
        assert_eq!(parse_replay(b"csrf=x&offset=7"), Ok(ReplayRequest::One(7)));
        assert_eq!(
            parse_replay(b"csrf=x&all=on&before=12"),
            Ok(ReplayRequest::All { before: Some(12) })
        );
        assert_eq!(parse_replay(b"all=on"), Ok(ReplayRequest::All { before: None }));
        let bad = parse_replay(b"csrf=x&offset=seven").unwrap_err();
        assert!(bad.contains("`seven` is not an offset"), "{bad}");
        assert!(parse_replay(b"offset=-1").is_err());
        assert!(parse_replay(b"all=on&before=x").is_err());
        assert!(parse_replay(b"csrf=x").unwrap_err().contains("no `offset`"));
        assert!(parse_replay(b"offset=1&offset=2").is_err());
    }

    #[test]
    fn long_data_is_cut_for_its_row() {
        assert_eq!(preview(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
        let long = preview(&serde_json::json!({"text": "é".repeat(100)}));
        assert_eq!(long.chars().count(), DATA_PREVIEW + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn times_show_to_the_second_or_as_written() {
        assert_eq!(shown_time("2026-11-30T22:01:02.123Z"), "2026-11-30 22:01:02");
        assert_eq!(shown_time("yesterday"), "yesterday");
    }

    #[test]
    fn dead_letter_topics_name_their_topic() {
        assert_eq!(original_of("orders.dead-letter"), Some("orders"));
        assert_eq!(original_of("orders"), None);
        assert_eq!(original_of(".dead-letter"), None);
    }

    /// The dashboard over an in-memory control plane, with one dead letter in
    /// `ui.check.dead-letter`.
    async fn app() -> (axum::Router, Arc<ControlState>) {
        let (_tx, rx) = watch::channel(false);
        let config = ControlConfig {
            registry: RegistryConfig::default(),
            token: "s3cret-token".into(),
            warm_up: Duration::ZERO,
        };
        let state = Arc::new(ControlState::new(config, Storage::in_memory().await.unwrap(), rx));
        let mut dead = CloudEvent::new("/ui-test", "ui.checked", "check/1", serde_json::json!({"n": 1}));
        dead.deadletterreason = Some("boom <b>bold</b> (topic ui.check, group ui-check, offset 0)".into());
        state.events.append("ui.check.dead-letter", &[dead]).await.unwrap();
        (super::super::routes().with_state(state.clone()), state)
    }

    /// A session cookie and its CSRF token for `principal`.
    fn session(state: &ControlState, principal: &Principal) -> (String, String) {
        let session = state
            .keyring()
            .session(principal, super::super::session::now() + 3600)
            .unwrap();
        let csrf = state.keyring().csrf(&session);
        (format!("flotilla_session={session}"), csrf)
    }

    async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(path: &str, cookie: &str, form: String) -> Request<Body> {
        Request::post(path)
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap()
    }

    fn get(path: &str, cookie: &str) -> Request<Body> {
        Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_operator_replays_a_dead_letter_and_is_told() {
        let (app, state) = app().await;
        let (cookie, csrf) = session(&state, &Principal::Operator);
        let (status, _, list) = send(&app, get("/ui/events", &cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(list.contains(r#"data-topic="ui.check.dead-letter""#), "{list}");
        let (status, _, page) = send(&app, get("/ui/events/ui.check.dead-letter", &cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            page.contains("boom &lt;b&gt;bold&lt;/b&gt;"),
            "the reason, escaped: {page}"
        );
        assert!(page.contains("Replay all"));

        let form = format!("csrf={csrf}&offset=0");
        let (status, headers, _) = send(&app, post("/ui/events/ui.check.dead-letter/replay", &cookie, form)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ui/events/ui.check.dead-letter?replayed=1");
        let back = state.events.read("ui.check", 0, 10).await.unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].event.id.contains("~replay-"));
        assert_eq!(back[0].event.deadletterreason, None);
        let (_, _, page) = send(&app, get("/ui/events/ui.check.dead-letter?replayed=1", &cookie)).await;
        assert!(page.contains("Replayed 1 dead letter to"), "{page}");

        let form = format!("csrf={csrf}&all=on&before=1");
        let (status, headers, _) = send(&app, post("/ui/events/ui.check.dead-letter/replay", &cookie, form)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ui/events/ui.check.dead-letter?replayed=1");
        assert_eq!(state.events.read("ui.check", 0, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn readers_forged_forms_and_bad_input_are_refused() {
        let (app, state) = app().await;
        let reader = Principal::Reader { name: "ana".into() };
        let (reader_cookie, reader_csrf) = session(&state, &reader);
        let path = "/ui/events/ui.check.dead-letter/replay";
        let (status, _, body) = send(&app, post(path, &reader_cookie, format!("csrf={reader_csrf}&offset=0"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("read-only"), "{body}");
        let (_, _, page) = send(&app, get("/ui/events/ui.check.dead-letter", &reader_cookie)).await;
        assert!(!page.contains("Replay all"), "no button a reader cannot use");

        let (cookie, csrf) = session(&state, &Principal::Operator);
        let (status, _, _) = send(&app, post(path, &cookie, "offset=0".into())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
        let (status, _, body) = send(&app, post(path, &cookie, format!("csrf={csrf}&offset=zero"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("`zero` is not an offset"), "{body}");
        let (status, _, _) = send(&app, post(path, &cookie, format!("csrf={csrf}&offset=9"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no dead letter there");
        let unknown = "/ui/events/nothing.dead-letter/replay";
        let (status, _, _) = send(&app, post(unknown, &cookie, format!("csrf={csrf}&offset=0"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = send(
            &app,
            post("/ui/events/ui.check/replay", &cookie, format!("csrf={csrf}&offset=0")),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not a dead-letter topic");
        let (status, _, _) = send(&app, get("/ui/events/Not%20A%20Topic", &cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = send(&app, get("/ui/events/nothing", &cookie)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            state.events.read("ui.check", 0, 10).await.unwrap().is_empty(),
            "nothing replayed"
        );
    }
}
