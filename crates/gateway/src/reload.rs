//! Route reloads: the routes file is watched, and a changed file that parses and builds
//! replaces the whole table in one atomic swap; requests in flight finish on the old table,
//! no connection is dropped. A file with a mistake is logged (file, line, key) and ignored:
//! the gateway keeps serving the last good table.

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
