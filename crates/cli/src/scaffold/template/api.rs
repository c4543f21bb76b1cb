//! `/api/v1/{{name}}`: entries a signed-in user writes about a subject another service owns.
//! Every handler takes a verified [`Caller`]: no token, no answer (401 problem+json). Each
//! entry kept is published on the topic `{{name}}` through an outbox, in the entry's own
//! transaction.

use flotilla::app::Setup;
use flotilla::auth::{Caller, TrustedIssuer, Verifier};
use flotilla::axum::extract::{FromRef, Path, State};
use flotilla::axum::http::StatusCode;
use flotilla::axum::routing::get;
use flotilla::axum::Router;
use flotilla::config::LiveConfig;
use flotilla::events::{CloudEvent, Outbox, Relay};
use flotilla::http::Json;
use flotilla::resilience::CallError;
use flotilla::runtime::Context;
use flotilla::serde::{Deserialize, Serialize};
use flotilla::sqlx::Row;
use flotilla::store::Store;
use flotilla::utoipa::{self, OpenApi, ToSchema};
use flotilla::Problem;

use crate::config::Config;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The service's own database.
    pub store: Store,
    /// Checks the callers' tokens.
    pub tokens: Verifier,
    /// The live configuration.
    pub config: LiveConfig<Config>,
    /// Calls to other services.
    pub context: Context,
    /// Where events wait, in the entry's transaction, until the relay sends them.
    pub outbox: Outbox,
}

/// The topic entries are published on.
pub const TOPIC: &str = "{{name}}";

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.tokens.clone()
    }
}

/// One entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(crate = "flotilla::serde")]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// Who wrote it (the token's subject).
    pub owner: String,
    /// What it is about.
    pub subject: String,
    /// What it says.
    pub text: String,
    /// When it was written, in milliseconds since 1970.
    pub created_ms: i64,
}

/// A new entry.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(crate = "flotilla::serde", deny_unknown_fields)]
pub struct NewEntry {
    /// What it is about: letters, digits, `.`, `_`, `-`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub subject: String,
    /// What it says.
    #[schema(min_length = 1)]
    pub text: String,
}

#[derive(OpenApi)]
#[openapi(paths(list, add, one), components(schemas(Entry, NewEntry, Problem)))]
struct Api;

/// The routes, with the OpenAPI document made from the handlers below at `/openapi.json`; every
/// caller's token checked against the system's issuer; the outbox relayed to the events backend
/// by a background task.
pub async fn router(store: Store, setup: &Setup<Config>) -> flotilla::app::Started {
    flotilla::events::prepare(&store).await?;
    let outbox = Outbox::new();
    let relay = Relay::new(store.clone(), setup.events().await?, outbox.clone());
    setup.tasks().spawn("outbox relay", relay.run());
    let state = AppState {
        store,
        tokens: setup.verifier(&TrustedIssuer::default(), &[], &[]),
        config: setup.config().clone(),
        context: setup.context().clone(),
        outbox,
    };
    let document = flotilla::openapi::document::<Api>(
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION"),
        "Entries signed-in users write about subjects another service owns.",
    );
    Ok(Router::new()
        .route("/api/v1/{{name}}", get(list).post(add))
        .route("/api/v1/{{name}}/{id}", get(one))
        .merge(flotilla::openapi::route(document))
        .with_state(state))
}

/// The caller's own entries, newest first.
#[utoipa::path(get, path = "/api/v1/{{name}}", operation_id = "list{{Type}}", security(("bearer" = [])),
    responses((status = 200, description = "The caller's entries", body = [Entry]),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<Vec<Entry>>, Problem> {
    let rows = flotilla::sqlx::query(
        "SELECT id, owner, subject, text, created_ms FROM entries WHERE owner = $1 ORDER BY created_ms DESC LIMIT 100",
    )
    .bind(caller.subject())
    .fetch_all(state.store.pool())
    .await
    .map_err(internal)?;
    let entries = rows.iter().map(entry).collect::<Result<_, _>>().map_err(internal)?;
    Ok(Json(entries))
}

/// Writes an entry, once the subject's owner says the subject exists.
#[utoipa::path(post, path = "/api/v1/{{name}}", operation_id = "add{{Type}}", security(("bearer" = [])),
    request_body = NewEntry,
    responses((status = 201, description = "Written", body = Entry),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "A field is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The subject does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The subject's owner cannot be asked", body = Problem, content_type = "application/problem+json")))]
async fn add(
    caller: Caller,
    State(state): State<AppState>,
    Json(input): Json<NewEntry>,
) -> Result<(StatusCode, Json<Entry>), Problem> {
    let config = state.config.current();
    check(&input, &config)?;
    if !config.subject_service.is_empty() {
        let path = config.subject_path.replace("{subject}", &input.subject);
        let client = state.context.client(&config.subject_service);
        match client.get_json::<flotilla::serde_json::Value>(&path).await {
            Ok(_) => {}
            Err(CallError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                let reason = format!("{} has no `{}`", config.subject_service, input.subject);
                return Err(Problem::new(422, "unknown-subject", "Unknown subject")
                    .with_detail(reason.clone())
                    .with_param("subject", reason));
            }
            Err(err) => {
                return Err(
                    Problem::new(503, "dependency-unavailable", "A service this one needs is unavailable")
                        .with_detail(format!("asking {}: {err}", config.subject_service)),
                );
            }
        }
    }
    let entry = Entry {
        id: flotilla::uuid::Uuid::new_v4().to_string(),
        owner: caller.subject().to_owned(),
        subject: input.subject,
        text: input.text,
        created_ms: now_ms(),
    };
    // The entry and its event in one transaction: neither is kept without the other.
    let mut tx = state.store.begin_write().await.map_err(internal)?;
    flotilla::sqlx::query("INSERT INTO entries (id, owner, subject, text, created_ms) VALUES ($1, $2, $3, $4, $5)")
        .bind(&entry.id)
        .bind(&entry.owner)
        .bind(&entry.subject)
        .bind(&entry.text)
        .bind(entry.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    let data = flotilla::serde_json::to_value(&entry).map_err(|_| Problem::internal())?;
    let event = CloudEvent::new(
        concat!("/", env!("CARGO_PKG_NAME")),
        "{{name}}.entry-added",
        format!("entry/{}", entry.id),
        data,
    );
    state.outbox.add(&mut tx, TOPIC, &event).await.map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    state.outbox.committed();
    Ok((StatusCode::CREATED, Json(entry)))
}

/// One entry: its writer's, or anyone's holding the `{{name}}.read` scope.
#[utoipa::path(get, path = "/api/v1/{{name}}/{id}", operation_id = "get{{Type}}", security(("bearer" = [])),
    params(("id" = String, Path, description = "The entry's id")),
    responses((status = 200, description = "The entry", body = Entry),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn one(caller: Caller, State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Entry>, Problem> {
    let row = flotilla::sqlx::query("SELECT id, owner, subject, text, created_ms FROM entries WHERE id = $1")
        .bind(&id)
        .fetch_optional(state.store.pool())
        .await
        .map_err(internal)?;
    let found = row.as_ref().map(entry).transpose().map_err(internal)?;
    let Some(found) = found else {
        return Err(Problem::not_found("no entry"));
    };
    caller.owns(Some(&found.owner), "{{name}}.read", "entry")?;
    Ok(Json(found))
}

/// What makes an entry acceptable before anyone is asked about its subject.
fn check(input: &NewEntry, config: &Config) -> Result<(), Problem> {
    let subject_ok = (1..=64).contains(&input.subject.len())
        && input
            .subject
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !subject_ok {
        return Err(Problem::invalid_field(
            "subject",
            "1 to 64 letters, digits, `.`, `_` or `-`",
        ));
    }
    let length = input.text.trim().chars().count();
    if length == 0 || length > config.max_text {
        return Err(Problem::invalid_field(
            "text",
            format!("1 to {} characters", config.max_text),
        ));
    }
    Ok(())
}

fn entry(row: &flotilla::sqlx::any::AnyRow) -> Result<Entry, flotilla::sqlx::Error> {
    Ok(Entry {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        subject: row.try_get("subject")?,
        text: row.try_get("text")?,
        created_ms: row.try_get("created_ms")?,
    })
}

fn internal(err: flotilla::sqlx::Error) -> Problem {
    flotilla::tracing::error!(error = %err, "database");
    Problem::internal()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(subject: &str, text: &str) -> NewEntry {
        NewEntry {
            subject: subject.into(),
            text: text.into(),
        }
    }

    #[test]
    fn an_entry_needs_a_plain_subject_and_a_text_within_the_limit() {
        let config = Config {
            max_text: 10,
            ..Config::default()
        };
        assert!(check(&input("7", "fine"), &config).is_ok());
        let too_long = check(&input("7", "far too long a text"), &config).unwrap_err();
        assert_eq!(too_long.status, 400);
        assert_eq!(too_long.invalid_params[0].name, "text");
        let blank = check(&input("7", "   "), &config).unwrap_err();
        assert_eq!(blank.invalid_params[0].name, "text");
        let odd = check(&input("../admin", "hi"), &config).unwrap_err();
        assert_eq!(odd.invalid_params[0].name, "subject");
    }

    #[test]
    fn the_document_names_every_route() {
        let doc = flotilla::openapi::document::<Api>("{{name}}", "0.1.0", "test");
        for path in ["/api/v1/{{name}}", "/api/v1/{{name}}/{id}", "/openapi.json"] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        assert_eq!(doc["paths"]["/api/v1/{{name}}"]["post"]["operationId"], "add{{Type}}");
    }
}
