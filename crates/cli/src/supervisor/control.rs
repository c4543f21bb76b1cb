//! The supervisor's own API, on a Unix socket in the data dir (`supervisor.sock`): only
//! someone who can read the data dir can scale the system or inject faults into it.
//! `flotilla scale`, `flotilla chaos` and `flotilla status` speak it, through the client
//! functions below; `GET /v1/autoscale` tells what the autoscaler measured and decided.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, put};
use axum::Router;
use flotilla::http::{with_problem_fallbacks, Json};
use flotilla::Problem;
use tokio::net::UnixListener;

use flotilla_api::faults::{FaultList, FaultRecord, FaultRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::autoscale::{AutoscaleList, Autoscaler};
use super::chaos::Chaos;
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

fn router(fleet: Arc<Fleet>, chaos: Arc<Chaos>, autoscaler: Arc<Autoscaler>) -> Router {
    with_problem_fallbacks(
        Router::new()
            .route("/v1/services", get(services))
            .route("/v1/services/{name}", put(put_scale))
            .route("/v1/services/{name}/restart", axum::routing::post(post_restart))
            .with_state(fleet)
            .merge(super::chaos::routes(chaos))
            .merge(
                Router::new()
                    .route("/v1/autoscale", get(autoscale_state))
                    .with_state(autoscaler),
            ),
    )
}

async fn autoscale_state(State(autoscaler): State<Arc<Autoscaler>>) -> Json<AutoscaleList> {
    Json(autoscaler.statuses())
}

async fn services(State(fleet): State<Arc<Fleet>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "services": fleet.counts().await }))
}

async fn post_restart(
    State(fleet): State<Arc<Fleet>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<super::fleet::Restarted>, Problem> {
    match fleet.restart(&name).await {
        Ok(restarted) => Ok(Json(restarted)),
        Err(reason) if reason.starts_with("no service") => Err(Problem::not_found(reason)),
        Err(reason) => Err(Problem::new(409, "restart-stopped", "Restart stopped").with_detail(reason)),
    }
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
pub(super) fn spawn(
    data_dir: &Path,
    fleet: Arc<Fleet>,
    chaos: Arc<Chaos>,
    autoscaler: Arc<Autoscaler>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router(fleet, chaos, autoscaler)).await;
    }))
}

/// Why a request to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No supervisor listens in this data dir.
    #[error("no `flotilla up` is running with data dir {0} (no {1}); start one, or give its --data-dir")]
    NotRunning(PathBuf, PathBuf),
    /// The connection failed.
    #[error("talking to the supervisor: {0}")]
    Io(String),
    /// The supervisor refused.
    #[error("{}", .0.detail.clone().unwrap_or_else(|| .0.title.clone()))]
    Refused(Problem),
}

/// Whether a supervisor's socket exists in `data_dir` (a running `up`, or one that died
/// without removing it).
pub fn socket_exists(data_dir: &Path) -> bool {
    socket_path(data_dir).exists()
}

/// One request to the supervisor running in `data_dir`; decodes its JSON answer.
pub async fn request<B: Serialize, T: DeserializeOwned>(
    data_dir: &Path,
    method: http::Method,
    path: &str,
    body: Option<&B>,
) -> Result<T, SupervisorError> {
    use http_body_util::{BodyExt, Full};
    let socket = socket_path(data_dir);
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|_| SupervisorError::NotRunning(data_dir.to_path_buf(), socket.clone()))?;
    let io_err = |e: &dyn std::fmt::Display| SupervisorError::Io(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| io_err(&e))?;
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "supervisor");
    let payload = match body {
        Some(body) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(body).map_err(|e| io_err(&e))?
        }
        None => Vec::new(),
    };
    let request = builder
        .body(Full::new(bytes::Bytes::from(payload)))
        .map_err(|e| io_err(&e))?;
    let response = sender.send_request(request).await.map_err(|e| io_err(&e))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| io_err(&e))?.to_bytes();
    if !status.is_success() {
        let problem = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Problem::new(status.as_u16(), "supervisor", "Supervisor error"));
        return Err(SupervisorError::Refused(problem));
    }
    serde_json::from_slice(&bytes).map_err(|e| io_err(&e))
}

/// Asks the supervisor running in `data_dir` to run `instances` of `service`.
pub async fn scale(data_dir: &Path, service: &str, instances: u32) -> Result<serde_json::Value, SupervisorError> {
    let body = ScaleRequest { instances };
    request(
        data_dir,
        http::Method::PUT,
        &format!("/v1/services/{service}"),
        Some(&body),
    )
    .await
}

/// Asks the supervisor running in `data_dir` to replace a service's instances one at a time.
/// The answer lists `replaced`: `[old, new]` instance names in order.
pub async fn restart(data_dir: &Path, service: &str) -> Result<serde_json::Value, SupervisorError> {
    request::<(), _>(
        data_dir,
        http::Method::POST,
        &format!("/v1/services/{service}/restart"),
        None,
    )
    .await
}

/// What the autoscaler of the supervisor running in `data_dir` measured and decided, per
/// autoscaled service.
pub async fn autoscale(data_dir: &Path) -> Result<AutoscaleList, SupervisorError> {
    request::<(), _>(data_dir, http::Method::GET, "/v1/autoscale", None).await
}

/// Asks the supervisor running in `data_dir` to kill or pause a process.
pub async fn inject(data_dir: &Path, fault: &FaultRequest) -> Result<FaultRecord, SupervisorError> {
    request(data_dir, http::Method::POST, "/v1/faults", Some(fault)).await
}

/// The pauses in force and the latest faults of the supervisor running in `data_dir`.
pub async fn faults(data_dir: &Path) -> Result<FaultList, SupervisorError> {
    request::<(), _>(data_dir, http::Method::GET, "/v1/faults", None).await
}

/// Ends the pauses in force now (of one process or service); returns those it ended.
pub async fn resume(data_dir: &Path, target: Option<&str>) -> Result<Vec<FaultRecord>, SupervisorError> {
    let path = match target {
        Some(target) => {
            let query =
                serde_urlencoded::to_string([("target", target)]).map_err(|e| SupervisorError::Io(e.to_string()))?;
            format!("/v1/faults?{query}")
        }
        None => "/v1/faults".to_owned(),
    };
    request::<(), _>(data_dir, http::Method::DELETE, &path, None).await
}
