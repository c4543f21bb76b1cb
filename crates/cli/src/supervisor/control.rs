//! The supervisor's own API, on a Unix socket in the data dir (`supervisor.sock`): only
//! someone who can read the data dir can scale the system. `flotilla scale` speaks it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, put};
use axum::Router;
use flotilla::http::{with_problem_fallbacks, Json};
use flotilla::Problem;
use tokio::net::UnixListener;

use super::fleet::Fleet;

/// The socket's path in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("supervisor.sock")
}

/// The body of a scale request.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The instance count wanted.
    pub instances: u32,
}

fn router(fleet: Arc<Fleet>) -> Router {
    with_problem_fallbacks(
        Router::new()
            .route("/v1/services", get(services))
            .route("/v1/services/{name}", put(put_scale))
            .with_state(fleet),
    )
}

async fn services(State(fleet): State<Arc<Fleet>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "services": fleet.counts().await }))
}

async fn put_scale(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
    Json(request): Json<ScaleRequest>,
) -> Result<Json<serde_json::Value>, Problem> {
    match fleet.scale(&name, request.instances).await {
        Ok(scaled) => Ok(Json(serde_json::to_value(scaled).unwrap_or_default())),
        Err(reason) if reason.starts_with("no service") => Err(Problem::not_found(reason)),
        Err(reason) => Err(Problem::invalid_field("instances", reason)),
    }
}

/// Serves the API until the task is dropped. A socket left by an earlier run is replaced.
pub(super) fn spawn(data_dir: &Path, fleet: Arc<Fleet>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router(fleet)).await;
    }))
}

/// Why `flotilla scale` failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// No supervisor listens in this data dir.
    #[error("no `flotilla up` is running with data dir {0} (no {1})")]
    NotRunning(PathBuf, PathBuf),
    /// The connection failed.
    #[error("talking to the supervisor: {0}")]
    Io(String),
    /// The supervisor refused.
    #[error("{0}")]
    Refused(Problem),
}

/// Asks the supervisor running in `data_dir` to run `instances` of `service`.
pub async fn scale(data_dir: &Path, service: &str, instances: u32) -> Result<serde_json::Value, ScaleError> {
    use http_body_util::{BodyExt, Full};
    let path = socket_path(data_dir);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|_| ScaleError::NotRunning(data_dir.to_path_buf(), path.clone()))?;
    let io_err = |e: &dyn std::fmt::Display| ScaleError::Io(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| io_err(&e))?;
    tokio::spawn(conn);
    let body = serde_json::to_vec(&ScaleRequest { instances }).map_err(|e| io_err(&e))?;
    let request = http::Request::put(format!("/v1/services/{service}"))
        .header(http::header::HOST, "supervisor")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| io_err(&e))?;
    let response = sender.send_request(request).await.map_err(|e| io_err(&e))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| io_err(&e))?.to_bytes();
    if !status.is_success() {
        let problem = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Problem::new(status.as_u16(), "supervisor", "Supervisor error"));
        return Err(ScaleError::Refused(problem));
    }
    serde_json::from_slice(&bytes).map_err(|e| io_err(&e))
}
