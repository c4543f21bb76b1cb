//! The trace store: spans received over OTLP/HTTP (`POST /v1/traces`, protobuf or JSON) kept
//! in SQLite, answered as traces, trace lists and the service dependency graph; with the
//! control plane's own Prometheus metrics and Prometheus HTTP service discovery over the
//! registry (see [`http`]).
//!
//! The spans live in their own file, `telemetry.db` (WAL), apart from `control.db` and
//! `events.db`, so a flood of spans never waits on, or makes wait, a registry, config or
//! event-log write. Spans are telemetry: they are written with `synchronous = NORMAL`, so a
//! crash may lose the last moments but never corrupts the file. One connection writes (a
//! request's spans in one transaction, before it is answered); queries read through their own
//! connections, which WAL lets run beside the writer.
//!
//! The store is bounded by count (`max_spans`) and by age (`max_age`): the oldest spans (by
//! start) are pruned in batches by [`TraceStore::run_pruning`], every half minute and as soon
//! as an insert takes the store over its count. Freed pages are reused, so the file stops
//! growing at the size of `max_spans` spans.
//!
//! In cluster mode the spans live in PostgreSQL instead ([`TraceStore::on_postgres`]), shared
//! by every replica: the same queries (placeholders and the row id written in PostgreSQL's
//! words by [`Dialect`]), the same bounds, the same tests.

pub mod http;
pub mod metrics;
pub mod otlp;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_api::telemetry::{
    Dependency, DependencyGraph, DependencyKind, Span, SpanKind, SpanStatus, Trace, TraceList, TraceQuery, TraceSummary,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use sqlx::sqlite::SqliteSynchronous;
use sqlx::{PgPool, Row, SqlitePool};
use tokio::sync::Notify;

/// The bounds of the trace store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceStoreConfig {
    /// At most this many spans are kept; the oldest (by start) go first. At a few hundred
    /// bytes to a few kilobytes a span, the default keeps the file in the low hundreds of MB.
    pub max_spans: u64,
    /// Spans that started longer ago than this are dropped.
    pub max_age: Duration,
}

impl Default for TraceStoreConfig {
    /// 200,000 spans and 24 hours: a day of a laptop's shop, or the last stretch of a load test.
    fn default() -> Self {
        Self {
            max_spans: 200_000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl TraceStoreConfig {
    /// Both bounds must leave room for something.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_spans == 0 || self.max_spans > i64::MAX as u64 {
            return Err(format!("max_spans ({}) must be above zero", self.max_spans));
        }
        if self.max_age.is_zero() {
            return Err("max_age must be above zero".into());
        }
        Ok(())
    }
}

/// Why a trace store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// An argument is malformed (a trace id, a query parameter).
    #[error("{field}: {reason}")]
    Invalid {
        /// The argument at fault, as the HTTP API names it.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The configuration cannot be used.
    #[error("trace store config: {0}")]
    Config(String),
    /// A shortened trace id names more than one stored trace.
    #[error("`{0}` is the start of more than one stored trace id; give more of it")]
    Ambiguous(String),
    /// A stored row could not be read back (the file was changed by something else).
    #[error("trace store: stored span unreadable: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("trace store: {0}")]
    Database(#[from] sqlx::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> TraceError {
    TraceError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// `TraceQuery::limit` when none is given.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest `TraceQuery::limit`.
pub const MAX_LIMIT: u32 = 1000;
/// How far back the dependency graph looks when not told.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(3600);

/// Spans deleted per statement while pruning: big enough to keep up with any ingest rate,
/// small enough that an insert never waits long for the one writing connection.
const PRUNE_BATCH: i64 = 5000;
/// How often age is enforced when no insert asks for it sooner.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Rows per multi-row insert: 16 columns each, well under SQLite's bound on parameters.
const INSERT_CHUNK: usize = 100;

/// Indexes, each for a query: the trace view and its ordering (`spans_by_trace`, which also
/// covers a trace's first span and its extent), pruning and the newest-first list
/// (`spans_by_start`), the list's filters (`spans_by_service`, `spans_by_name`,
/// `spans_with_errors`), and the dependency graph's windowed scan by kind (`spans_by_kind`);
/// the primary key finds a span's parent. A span's own duration has a column but no index: no
/// query filters on it (a trace's duration spans several spans). One text for both databases
/// (`BIGINT` is an integer to SQLite).
macro_rules! spans_schema {
    () => {
        "CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    service TEXT NOT NULL,
    instance TEXT,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    duration_ns BIGINT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    peer_service TEXT,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    links TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id, start_ns, end_ns);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_by_service ON spans (service, trace_id);
CREATE INDEX IF NOT EXISTS spans_by_name ON spans (name, trace_id);
CREATE INDEX IF NOT EXISTS spans_by_kind ON spans (kind, start_ns);
CREATE INDEX IF NOT EXISTS spans_with_errors ON spans (trace_id) WHERE status = 'error';"
    };
}

const SCHEMA: &str = spans_schema!();

/// The same on PostgreSQL, made by one replica at a time (replicas starting together would
/// race on the catalog otherwise).
const PG_SCHEMA: &str = concat!(
    "SELECT pg_advisory_xact_lock(hashtext('flotilla trace store schema'));\n",
    spans_schema!()
);

const COLUMNS: &str = "trace_id, span_id, parent_span_id, service, instance, name, kind, start_ns, end_ns, status, status_message, attributes, events, links";

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn kind_str(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

fn parse_kind(text: &str) -> Result<SpanKind, TraceError> {
    Ok(match text {
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        other => return Err(TraceError::Corrupt(format!("kind `{other}`"))),
    })
}

fn status_str(status: SpanStatus) -> &'static str {
    match status {
        SpanStatus::Unset => "unset",
        SpanStatus::Ok => "ok",
        SpanStatus::Error => "error",
    }
}

fn parse_status(text: &str) -> Result<SpanStatus, TraceError> {
    Ok(match text {
        "unset" => SpanStatus::Unset,
        "ok" => SpanStatus::Ok,
        "error" => SpanStatus::Error,
        other => return Err(TraceError::Corrupt(format!("status `{other}`"))),
    })
}

/// A trace id as the store keys it: 32 hex digits, lowercased.
pub fn normalize_trace_id(text: &str) -> Result<String, TraceError> {
    if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(invalid("trace_id", format!("`{text}` is not 32 hex digits")))
    }
}

/// What an export request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans written (a re-sent span replaces its earlier copy).
    pub stored: u64,
    /// Spans refused as malformed.
    pub rejected: u64,
    /// Why, when some were refused (OTLP's `partial_success.error_message`).
    pub message: Option<String>,
}

/// The store's counters since it was opened, and its size now: what `/metrics` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans received over OTLP, well-formed or not.
    pub received: u64,
    /// Of them, refused as malformed.
    pub rejected: u64,
    /// Spans written.
    pub stored: u64,
    /// Spans dropped to keep within the bounds.
    pub pruned: u64,
    /// Spans in the store now.
    pub spans: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    rejected: AtomicU64,
    stored: AtomicU64,
    pruned: AtomicU64,
    /// The row count, refreshed while the writing connection is held, so it is exact.
    spans: AtomicU64,
}

/// Where the spans are.
enum Db {
    /// A SQLite file (or memory) of this process.
    Sqlite {
        /// The one connection that writes.
        writer: SqlitePool,
        /// Connections for queries (the writer itself for an in-memory store).
        reader: SqlitePool,
    },
    /// A PostgreSQL database every replica shares.
    Postgres(PgPool),
}

/// How the two databases spell what the queries need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A row's physical id, which breaks ties and names rows to delete.
    fn row_id(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "ctid",
        }
    }

    /// The larger of two values (SQLite's scalar `MAX`).
    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// A column compared without its index (SQLite's unary `+`; PostgreSQL plans it well).
    fn unindexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_owned(),
        }
    }

    /// The query with its placeholders as the database takes them: `?` (and `?N`) stay for
    /// SQLite; PostgreSQL's are numbered, `$1`, `$2`, …
    fn sql(self, text: &str) -> String {
        if self == Dialect::Sqlite {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 16);
        let mut next = 0;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '?' {
                out.push(c);
                continue;
            }
            out.push('$');
            if chars.peek().is_some_and(char::is_ascii_digit) {
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    out.push(d);
                }
            } else {
                next += 1;
                out.push_str(&next.to_string());
            }
        }
        out
    }
}

/// Runs `$body` with `$pool` the pool that reads, whichever database it is.
macro_rules! reading {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite { reader: $pool, .. } => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$pool` the pool that writes, whichever database it is.
macro_rules! writing {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite { writer: $pool, .. } => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// A stored span from its row, of either database.
macro_rules! span_from_row {
    ($row:expr) => {{
        let row = $row;
        (|| -> Result<Span, TraceError> {
            let json = |column: &str| -> Result<String, TraceError> { Ok(row.try_get::<String, _>(column)?) };
            let corrupt = |column: &str, e: serde_json::Error| TraceError::Corrupt(format!("{column}: {e}"));
            let attributes: BTreeMap<String, serde_json::Value> =
                serde_json::from_str(&json("attributes")?).map_err(|e| corrupt("attributes", e))?;
            Ok(Span {
                trace_id: row.try_get("trace_id")?,
                span_id: row.try_get("span_id")?,
                parent_span_id: row.try_get("parent_span_id")?,
                service: row.try_get("service")?,
                instance: row.try_get("instance")?,
                name: row.try_get("name")?,
                kind: parse_kind(&row.try_get::<String, _>("kind")?)?,
                start_unix_nano: row.try_get::<i64, _>("start_ns")?.max(0) as u64,
                end_unix_nano: row.try_get::<i64, _>("end_ns")?.max(0) as u64,
                status: parse_status(&row.try_get::<String, _>("status")?)?,
                status_message: row.try_get("status_message")?,
                attributes,
                events: serde_json::from_str(&json("events")?).map_err(|e| corrupt("events", e))?,
                links: serde_json::from_str(&json("links")?).map_err(|e| corrupt("links", e))?,
            })
        })()
    }};
}

/// The trace store. Share it behind an `Arc`; all methods take `&self`.
pub struct TraceStore {
    db: Db,
    config: TraceStoreConfig,
    counters: Counters,
    /// Told when an insert takes the store over `max_spans`.
    over_bound: Notify,
}

impl std::fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceStore")
            .field("config", &self.config)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl TraceStore {
    /// The store in `data_dir/telemetry.db`, with what an earlier run left in it.
    pub async fn open(data_dir: &Path, config: TraceStoreConfig) -> Result<Self, TraceError> {
        config.validate().map_err(TraceError::Config)?;
        let file = data_dir.join("telemetry.db");
        let writer = crate::sqlite_with(Some(&file), SCHEMA, SqliteSynchronous::Normal, 1).await?;
        // Two readers: the machine's cores, not the number of dashboards, bound useful queries.
        let reader = crate::sqlite_with(Some(&file), "", SqliteSynchronous::Normal, 2).await?;
        Self::with(Db::Sqlite { writer, reader }, config).await
    }

    /// A store in memory, for tests.
    pub async fn in_memory(config: TraceStoreConfig) -> Result<Self, TraceError> {
        config.validate().map_err(TraceError::Config)?;
        let pool = crate::sqlite(None, SCHEMA).await?;
        Self::with(
            Db::Sqlite {
                writer: pool.clone(),
                reader: pool,
            },
            config,
        )
        .await
    }

    /// The store in the PostgreSQL database at `url` (`postgres://…`), which every replica of
    /// a cluster shares; its table is made if missing (one replica at a time).
    pub async fn on_postgres(url: &str, config: TraceStoreConfig) -> Result<Self, TraceError> {
        config.validate().map_err(TraceError::Config)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(PG_SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        Self::with(Db::Postgres(pool), config).await
    }

    async fn with(db: Db, config: TraceStoreConfig) -> Result<Self, TraceError> {
        let store = Self {
            db,
            config,
            counters: Counters::default(),
            over_bound: Notify::new(),
        };
        store.refresh_count().await?;
        Ok(store)
    }

    fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite { .. } => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The bounds it keeps.
    pub fn config(&self) -> TraceStoreConfig {
        self.config
    }

    /// Counters and size.
    pub fn stats(&self) -> TraceStats {
        let c = &self.counters;
        TraceStats {
            received: c.received.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
            pruned: c.pruned.load(Ordering::Relaxed),
            spans: c.spans.load(Ordering::Relaxed),
        }
    }

    /// The database's size in bytes (pages in use and free, the write-ahead log's committed
    /// pages included).
    pub async fn size_bytes(&self) -> Result<u64, TraceError> {
        match &self.db {
            Db::Sqlite { reader, .. } => {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(reader).await?;
                let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(reader).await?;
                Ok((pages.max(0) as u64).saturating_mul(size.max(0) as u64))
            }
            Db::Postgres(pool) => {
                let size: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('spans')::BIGINT")
                    .fetch_one(pool)
                    .await?;
                Ok(size.max(0) as u64)
            }
        }
    }

    async fn refresh_count(&self) -> Result<u64, TraceError> {
        let count: i64 =
            writing!(&self.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM spans").fetch_one(pool).await?);
        let count = count.max(0) as u64;
        self.counters.spans.store(count, Ordering::Relaxed);
        Ok(count)
    }

    /// Converts and stores the spans of an OTLP export request; counts what it received,
    /// refused and stored.
    pub async fn ingest(&self, request: ExportTraceServiceRequest) -> Result<Ingested, TraceError> {
        let converted = otlp::convert(request);
        let c = &self.counters;
        c.received
            .fetch_add(converted.spans.len() as u64 + converted.rejected, Ordering::Relaxed);
        c.rejected.fetch_add(converted.rejected, Ordering::Relaxed);
        let stored = self.insert(&converted.spans).await?;
        Ok(Ingested {
            stored,
            rejected: converted.rejected,
            message: converted.message(),
        })
    }

    /// Stores spans in one transaction, durable (up to `synchronous = NORMAL`) when it
    /// returns. A span already stored under its (trace, span) ids is replaced, not repeated.
    pub async fn insert(&self, spans: &[Span]) -> Result<u64, TraceError> {
        if spans.is_empty() {
            return Ok(0);
        }
        let dialect = self.dialect();
        // PostgreSQL refuses to touch a row twice in one statement: there a span sent twice in
        // one request is kept once (its last copy), as SQLite's replace does by itself.
        let unique: Vec<&Span> = match dialect {
            Dialect::Sqlite => spans.iter().collect(),
            Dialect::Postgres => {
                let mut seen = std::collections::HashSet::new();
                let mut last: Vec<&Span> = spans
                    .iter()
                    .rev()
                    .filter(|span| seen.insert((&span.trace_id, &span.span_id)))
                    .collect();
                last.reverse();
                last
            }
        };
        let upsert = match dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " ON CONFLICT (trace_id, span_id) DO UPDATE SET parent_span_id = EXCLUDED.parent_span_id, service = EXCLUDED.service, instance = EXCLUDED.instance, name = EXCLUDED.name, kind = EXCLUDED.kind, start_ns = EXCLUDED.start_ns, end_ns = EXCLUDED.end_ns, duration_ns = EXCLUDED.duration_ns, status = EXCLUDED.status, status_message = EXCLUDED.status_message, peer_service = EXCLUDED.peer_service, attributes = EXCLUDED.attributes, events = EXCLUDED.events, links = EXCLUDED.links RETURNING (xmax = 0) AS inserted",
        };
        let verb = match dialect {
            Dialect::Sqlite => "INSERT OR REPLACE",
            Dialect::Postgres => "INSERT",
        };
        let (count, inserted): (Option<i64>, u64) = writing!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            // Rows new to the store (not replacing a copy), as PostgreSQL tells.
            let mut inserted = 0u64;
            for chunk in unique.chunks(INSERT_CHUNK) {
                let marks = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
                let sql = dialect.sql(&format!(
                    "{verb} INTO spans (trace_id, span_id, parent_span_id, service, instance, name, kind, start_ns, end_ns, duration_ns, status, status_message, peer_service, attributes, events, links) VALUES {marks}{upsert}"
                ));
                let mut insert = sqlx::query(&sql);
                for span in chunk {
                    let peer_service = span
                        .attributes
                        .get("peer.service")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    let json = |what: &'static str, v: Result<String, serde_json::Error>| {
                        v.map_err(|e| invalid(what, e.to_string()))
                    };
                    insert = insert
                        .bind(&span.trace_id)
                        .bind(&span.span_id)
                        .bind(&span.parent_span_id)
                        .bind(&span.service)
                        .bind(&span.instance)
                        .bind(&span.name)
                        .bind(kind_str(span.kind))
                        .bind(i64::try_from(span.start_unix_nano).unwrap_or(i64::MAX))
                        .bind(i64::try_from(span.end_unix_nano).unwrap_or(i64::MAX))
                        .bind(i64::try_from(span.duration_nanos()).unwrap_or(i64::MAX))
                        .bind(status_str(span.status))
                        .bind(&span.status_message)
                        .bind(peer_service)
                        .bind(json("attributes", serde_json::to_string(&span.attributes))?)
                        .bind(json("events", serde_json::to_string(&span.events))?)
                        .bind(json("links", serde_json::to_string(&span.links))?);
                }
                match dialect {
                    Dialect::Sqlite => {
                        insert.execute(&mut *tx).await?;
                    }
                    Dialect::Postgres => {
                        for row in insert.fetch_all(&mut *tx).await? {
                            inserted += u64::from(row.try_get::<bool, _>("inserted")?);
                        }
                    }
                }
            }
            // SQLite counts in the same transaction, on the one writer, so no prune slips
            // between the count and its recording. PostgreSQL would scan the table for it:
            // there the count is kept by the inserts and set right by each prune.
            let count = match dialect {
                Dialect::Sqlite => Some(sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM spans").fetch_one(&mut *tx).await?),
                Dialect::Postgres => None,
            };
            tx.commit().await?;
            (count, inserted)
        });
        let count = match count {
            Some(count) => {
                self.counters.spans.store(count.max(0) as u64, Ordering::Relaxed);
                count.max(0) as u64
            }
            None => self.counters.spans.fetch_add(inserted, Ordering::Relaxed) + inserted,
        };
        let stored = spans.len() as u64;
        self.counters.stored.fetch_add(stored, Ordering::Relaxed);
        if count > self.config.max_spans {
            self.over_bound.notify_one();
        }
        Ok(stored)
    }

    /// Every stored span of a trace, earliest first; `None` when none is stored. The id may
    /// be shortened to its first 8 or more hex digits, as logs and the CLI show it, when only
    /// one stored trace starts with them.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Trace>, TraceError> {
        let trace_id = match self.complete(trace_id).await? {
            Some(trace_id) => trace_id,
            None => return Ok(None),
        };
        let sql = self.dialect().sql(&format!(
            "SELECT {COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, end_ns, span_id"
        ));
        let spans: Vec<Span> = reading!(&self.db, pool => {
            let rows = sqlx::query(&sql).bind(&trace_id).fetch_all(pool).await?;
            rows.iter().map(|row| span_from_row!(row)).collect::<Result<Vec<_>, TraceError>>()?
        });
        if spans.is_empty() {
            return Ok(None);
        }
        Ok(Some(Trace { trace_id, spans }))
    }

    /// The whole id a full or shortened (8 to 31 hex digits) one names; `None` when no
    /// stored trace starts with it.
    async fn complete(&self, text: &str) -> Result<Option<String>, TraceError> {
        if text.len() == 32 {
            return normalize_trace_id(text).map(Some);
        }
        if !(8..32).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "trace_id",
                format!("`{text}` is neither 32 hex digits nor the first 8 or more of them"),
            ));
        }
        let prefix = text.to_ascii_lowercase();
        let (low, high) = (format!("{prefix:0<32}"), format!("{prefix:f<32}"));
        let sql = self
            .dialect()
            .sql("SELECT DISTINCT trace_id FROM spans WHERE trace_id BETWEEN ? AND ? LIMIT 2");
        let ids: Vec<String> =
            reading!(&self.db, pool => sqlx::query_scalar(&sql).bind(&low).bind(&high).fetch_all(pool).await?);
        match ids.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(TraceError::Ambiguous(prefix)),
        }
    }

    /// The newest traces that match, newest (by their earliest span's start) first. A trace
    /// matches `service` and `operation` when one of its spans has that service and that
    /// name (both, when both are given); `min_duration_ms` and `errors` apply to the trace
    /// as a whole.
    pub async fn list(&self, query: &TraceQuery) -> Result<TraceList, TraceError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(invalid("limit", format!("{limit} is not within 1..={MAX_LIMIT}")));
        }
        for (field, value) in [("service", &query.service), ("operation", &query.operation)] {
            if value.as_deref() == Some("") {
                return Err(invalid(field, "is empty"));
            }
        }
        // Each trace is found at its earliest span (ties broken as the index orders them), so
        // walking spans newest first meets traces newest first, and the limit ends the walk.
        let dialect = self.dialect();
        let mut sql = format!(
            "SELECT s.trace_id FROM spans s WHERE s.{id} = (SELECT x.{id} FROM spans x WHERE x.trace_id = s.trace_id ORDER BY x.start_ns, x.end_ns, x.{id} LIMIT 1)",
            id = dialect.row_id()
        );
        let mut texts: Vec<&str> = Vec::new();
        match (query.service.as_deref(), query.operation.as_deref()) {
            (Some(service), Some(operation)) => {
                sql.push_str(" AND s.trace_id IN (SELECT trace_id FROM spans WHERE service = ? AND name = ?)");
                texts.extend([service, operation]);
            }
            (Some(service), None) => {
                sql.push_str(" AND s.trace_id IN (SELECT trace_id FROM spans WHERE service = ?)");
                texts.push(service);
            }
            (None, Some(operation)) => {
                sql.push_str(" AND s.trace_id IN (SELECT trace_id FROM spans WHERE name = ?)");
                texts.push(operation);
            }
            (None, None) => {}
        }
        if query.errors {
            sql.push_str(" AND s.trace_id IN (SELECT trace_id FROM spans WHERE status = 'error')");
        }
        let min_duration = query
            .min_duration_ms
            .map(|ms| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX));
        if min_duration.is_some() {
            sql.push_str(" AND (SELECT MAX(x.end_ns) FROM spans x WHERE x.trace_id = s.trace_id) - s.start_ns >= ?");
        }
        let nanos = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let (since, until) = (query.since_ms.map(nanos), query.until_ms.map(nanos));
        if since.is_some() {
            sql.push_str(" AND s.start_ns >= ?");
        }
        if until.is_some() {
            sql.push_str(" AND s.start_ns < ?");
        }
        sql.push_str(" ORDER BY s.start_ns DESC, s.trace_id DESC LIMIT ?");
        let sql = dialect.sql(&sql);
        let ids: Vec<String> = reading!(&self.db, pool => {
            let mut select = sqlx::query_scalar::<_, String>(&sql);
            for text in &texts {
                select = select.bind(*text);
            }
            if let Some(min) = min_duration {
                select = select.bind(min);
            }
            for bound in [since, until].into_iter().flatten() {
                select = select.bind(bound);
            }
            select.bind(i64::from(limit)).fetch_all(pool).await?
        });
        let summaries = self.summaries(&ids).await?;
        Ok(TraceList {
            traces: ids.iter().filter_map(|id| summaries.get(id).cloned()).collect(),
        })
    }

    /// Summaries of the given traces, from the few columns a summary needs.
    async fn summaries(&self, ids: &[String]) -> Result<HashMap<String, TraceSummary>, TraceError> {
        struct Acc {
            summary: TraceSummary,
            end: u64,
            /// (is not a root, start) of the span the summary is named after: roots first.
            named_by: (bool, u64),
            services: BTreeSet<String>,
        }
        let mut acc: HashMap<String, Acc> = HashMap::new();
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = self.dialect().sql(&format!(
                "SELECT trace_id, service, name, parent_span_id IS NOT NULL AS child, start_ns, end_ns, status = 'error' AS failed FROM spans WHERE trace_id IN ({marks})"
            ));
            // Columns by position: trace_id, service, name, child, start_ns, end_ns, failed.
            type Fields = (String, String, String, bool, i64, i64, bool);
            let rows: Vec<Fields> = reading!(&self.db, pool => {
                let mut select = sqlx::query_as::<_, Fields>(&sql);
                for id in chunk {
                    select = select.bind(id);
                }
                select.fetch_all(pool).await?
            });
            for (trace_id, service, name, child, start, end, failed) in rows {
                let start = start.max(0) as u64;
                let end = end.max(0) as u64;
                let a = acc.entry(trace_id.clone()).or_insert_with(|| Acc {
                    summary: TraceSummary {
                        trace_id,
                        root_service: service.clone(),
                        root_name: name.clone(),
                        start_unix_nano: start,
                        duration_nanos: 0,
                        span_count: 0,
                        error_count: 0,
                        services: Vec::new(),
                    },
                    end,
                    named_by: (child, start),
                    services: BTreeSet::new(),
                });
                if (child, start) < a.named_by {
                    a.named_by = (child, start);
                    a.summary.root_service = service.clone();
                    a.summary.root_name = name;
                }
                a.summary.start_unix_nano = a.summary.start_unix_nano.min(start);
                a.end = a.end.max(end);
                a.summary.span_count += 1;
                a.summary.error_count += u64::from(failed);
                a.services.insert(service);
            }
        }
        Ok(acc
            .into_iter()
            .map(|(id, a)| {
                let mut summary = a.summary;
                summary.duration_nanos = a.end.saturating_sub(summary.start_unix_nano);
                summary.services = a.services.into_iter().collect();
                (id, summary)
            })
            .collect())
    }

    /// The service dependency graph of the spans that started in the last `lookback`.
    pub async fn dependencies(&self, lookback: Duration) -> Result<DependencyGraph, TraceError> {
        self.dependencies_at(now_nanos(), lookback).await
    }

    /// The graph as of `now` (nanoseconds since the Unix epoch).
    ///
    /// Edges come from joins on (trace id, parent span id), counted on the callee's span
    /// (calls, errors, nearest-rank p50 and p99 of its duration) all inside SQLite, so no
    /// span is loaded into memory:
    /// * `http`: a server span whose parent is stored and belongs to another service; or a
    ///   client span naming a `peer.service` whose server span was not stored (the callee is
    ///   not instrumented, or its spans are lost), counted on the client span;
    /// * `event`: a consumer span whose parent is a producer span of another service.
    ///
    /// (`+c.kind` keeps SQLite from looking a client's children up by kind, all server spans
    /// of the window, rather than by trace.)
    pub(crate) async fn dependencies_at(&self, now: i64, lookback: Duration) -> Result<DependencyGraph, TraceError> {
        let since = now.saturating_sub(nanos(lookback));
        let dialect = self.dialect();
        let sql = dialect.sql(&format!(
            "WITH edges AS (
                SELECT p.service AS caller, s.service AS callee, 'http' AS kind, s.duration_ns AS d, s.status = 'error' AS failed
                FROM spans s JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
                WHERE s.kind = 'server' AND s.start_ns >= ?1 AND p.service <> s.service
              UNION ALL
                SELECT s.service, s.peer_service, 'http', s.duration_ns, s.status = 'error'
                FROM spans s
                WHERE s.kind = 'client' AND s.start_ns >= ?1 AND s.peer_service IS NOT NULL AND s.peer_service <> s.service
                  AND NOT EXISTS (SELECT 1 FROM spans c WHERE c.trace_id = s.trace_id AND c.parent_span_id = s.span_id AND {unindexed_kind} = 'server')
              UNION ALL
                SELECT p.service, s.service, 'event', s.duration_ns, s.status = 'error'
                FROM spans s JOIN spans p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
                WHERE s.kind = 'consumer' AND s.start_ns >= ?1 AND p.kind = 'producer' AND p.service <> s.service
            ),
            ranked AS (
                SELECT caller, callee, kind, d, failed,
                       ROW_NUMBER() OVER (PARTITION BY caller, callee, kind ORDER BY d) AS rank,
                       COUNT(*) OVER (PARTITION BY caller, callee, kind) AS n
                FROM edges
            )
            SELECT caller, callee, kind, MAX(n) AS calls, SUM(CASE WHEN failed THEN 1 ELSE 0 END) AS errors,
                   MIN(CASE WHEN rank = {greatest}((n * 50 + 99) / 100, 1) THEN d END) AS p50,
                   MIN(CASE WHEN rank = {greatest}((n * 99 + 99) / 100, 1) THEN d END) AS p99
            FROM ranked GROUP BY caller, callee, kind ORDER BY caller, callee, kind",
            unindexed_kind = dialect.unindexed("c.kind"),
            greatest = dialect.greatest(),
        ));
        type Edge = (String, String, String, i64, i64, Option<i64>, Option<i64>);
        // Columns by position: caller, callee, kind, calls, errors, p50, p99.
        let rows: Vec<Edge> =
            reading!(&self.db, pool => sqlx::query_as::<_, Edge>(&sql).bind(since).fetch_all(pool).await?);
        let mut edges = Vec::with_capacity(rows.len());
        for (caller, callee, kind, calls, errors, p50, p99) in rows {
            let calls = calls.max(0) as u64;
            let errors = errors.max(0) as u64;
            let ms = |value: Option<i64>| value.unwrap_or(0) as f64 / 1e6;
            edges.push(Dependency {
                caller,
                callee,
                kind: if kind == "event" {
                    DependencyKind::Event
                } else {
                    DependencyKind::Http
                },
                calls,
                errors,
                error_rate: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
                p50_ms: ms(p50),
                p99_ms: ms(p99),
            });
        }
        let sql = dialect.sql("SELECT DISTINCT service FROM spans WHERE start_ns >= ?");
        let mut services: BTreeSet<String> =
            reading!(&self.db, pool => sqlx::query_scalar::<_, String>(&sql).bind(since).fetch_all(pool).await?)
                .into_iter()
                .collect();
        // A `peer.service` with no spans of its own is still a node of the graph.
        services.extend(edges.iter().flat_map(|e| [e.caller.clone(), e.callee.clone()]));
        Ok(DependencyGraph {
            services: services.into_iter().collect(),
            edges,
        })
    }

    /// Drops spans older than `max_age`, then the oldest beyond `max_spans`; returns how
    /// many went.
    pub async fn prune(&self) -> Result<u64, TraceError> {
        self.prune_at(now_nanos()).await
    }

    /// [`TraceStore::prune`] as of `now` (nanoseconds since the Unix epoch). Each batch is
    /// its own statement, and the writer is let go between batches, so inserts go on.
    pub(crate) async fn prune_at(&self, now: i64) -> Result<u64, TraceError> {
        let cutoff = now.saturating_sub(nanos(self.config.max_age));
        let max = i64::try_from(self.config.max_spans).unwrap_or(i64::MAX);
        let mut pruned = 0;
        let dialect = self.dialect();
        let by_age = dialect.sql(&format!(
            "DELETE FROM spans WHERE {id} IN (SELECT {id} FROM spans WHERE start_ns < ? ORDER BY start_ns LIMIT ?)",
            id = dialect.row_id()
        ));
        let by_count = dialect.sql(&format!(
            "DELETE FROM spans WHERE {id} IN (SELECT {id} FROM spans ORDER BY start_ns LIMIT ?)",
            id = dialect.row_id()
        ));
        loop {
            // Old spans first; then, if still too many, the oldest of the rest.
            let mut gone = writing!(&self.db, pool => sqlx::query(&by_age).bind(cutoff).bind(PRUNE_BATCH).execute(pool).await?.rows_affected());
            if gone == 0 {
                let excess = (self.refresh_count().await? as i64).saturating_sub(max);
                if excess > 0 {
                    gone = writing!(&self.db, pool => sqlx::query(&by_count).bind(excess.min(PRUNE_BATCH)).execute(pool).await?.rows_affected());
                }
            }
            self.refresh_count().await?;
            pruned += gone;
            self.counters.pruned.fetch_add(gone, Ordering::Relaxed);
            if gone == 0 {
                return Ok(pruned);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Prunes every half minute, and whenever an insert takes the store over `max_spans`,
    /// until `shutdown`.
    pub async fn run_pruning(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
                _ = self.over_bound.notified() => {}
            }
            match self.prune().await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "trace store pruned"),
                Err(err) => tracing::error!(error = %err, "trace store pruning failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
