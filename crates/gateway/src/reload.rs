//! Route reloads, from either source: the routes file (standalone), watched for changes, or
//! the control plane's config store (key `routes` of scope `gateway`), followed by its watch.
//! A new table that parses and builds replaces the whole table in one atomic swap; requests in
//! flight finish on the old table, no connection is dropped. One with a mistake is logged
//! (source, line, key) and ignored: the gateway keeps serving the last good table.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::routes::{RouteTable, Upstreams};
use crate::Gateway;

/// What identifies a version of the file without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `path` every `every` until `shutdown` resolves.
pub async fn watch(
    gateway: Arc<Gateway>,
    path: PathBuf,
    upstreams: Upstreams,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut seen = stamp(&path);
    let mut content = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        // Editors often touch a file without changing it; only new content counts.
        let fresh = std::fs::read(&path).ok();
        if fresh == content {
            continue;
        }
        content = fresh;
        match RouteTable::load(&path) {
            Err(err) => tracing::error!(error = %err, "routes file has a mistake; keeping the routes in force"),
            Ok(specs) => match RouteTable::build(specs, &upstreams) {
                Err(err) => {
                    tracing::error!(error = %err, file = %path.display(), "routes cannot be built; keeping the routes in force")
                }
                Ok(table) => {
                    let count = table.routes().len();
                    gateway.replace_routes(table);
                    tracing::info!(routes = count, file = %path.display(), "routes reloaded");
                }
            },
        }
    }
}

/// The gateway's document in the config store (scope `gateway`): its route table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GatewayDocument {
    /// What a routes file's `[[routes]]` hold, as JSON.
    pub routes: Vec<serde_json::Value>,
}

fn table_from(document: &GatewayDocument, revision: u64, upstreams: &Upstreams) -> Result<RouteTable, String> {
    let name = format!("config store gateway/routes (revision {revision})");
    let specs =
        RouteTable::parse_json(&serde_json::Value::Array(document.routes.clone()), &name).map_err(|e| e.to_string())?;
    RouteTable::build(specs, upstreams).map_err(|e| format!("{name}: {e}"))
}

/// Follows the gateway's routes in the config store: every revision that parses and builds
/// replaces the table in one atomic swap (requests in flight finish on the old one); one that
/// does not is refused, reported to the control plane, and the last good table stays.
/// Returns the live document once the store's first answer is in (at most `first_wait`),
/// with the table it made already in force.
pub async fn follow_store(
    gateway: Arc<Gateway>,
    client: flotilla::config::ConfigClient,
    upstreams: Upstreams,
    first_wait: Duration,
) -> Result<flotilla::config::LiveConfig<GatewayDocument>, flotilla::config::ConfigError> {
    let check = upstreams.clone();
    let live = flotilla::config::ConfigLoader::<GatewayDocument>::new(flotilla_api::config::GATEWAY_SCOPE)
        .env_prefix("FLOTILLA_GATEWAY_CONFIG_")
        .validate(move |doc| table_from(doc, 0, &check).map(|_| ()))
        .start(Some(client), std::future::pending())?;
    live.ready(first_wait).await;
    let mut changes = live.watch();
    let rebuild = move |applied: &flotilla::config::Applied<GatewayDocument>| match table_from(
        &applied.value,
        applied.revision,
        &upstreams,
    ) {
        Ok(table) => {
            let count = table.routes().len();
            gateway.replace_routes(table);
            tracing::info!(
                routes = count,
                revision = applied.revision,
                "routes from the config store in force"
            );
        }
        Err(err) => tracing::error!(error = %err, "routes cannot be built; keeping the routes in force"),
    };
    // A revision of another key of the gateway's layers (`application`'s, say) leaves the
    // routes as they are: the table in force, its breakers and pools, is kept.
    let mut in_force: Option<Arc<GatewayDocument>> = None;
    let mut apply = move |applied: &flotilla::config::Applied<GatewayDocument>| {
        if in_force.as_ref() == Some(&applied.value) {
            tracing::debug!(
                revision = applied.revision,
                "a config revision that leaves the routes as they are"
            );
            return;
        }
        in_force = Some(Arc::clone(&applied.value));
        rebuild(applied)
    };
    let first = changes.borrow_and_update().clone();
    if first.revision == 0 {
        tracing::warn!("the config store holds no gateway routes yet (key `routes` of scope `gateway`)");
    }
    apply(&first);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let applied = changes.borrow_and_update().clone();
            apply(&applied);
        }
    });
    Ok(live)
}
