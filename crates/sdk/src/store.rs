//! A database per service: an SQLite file under the data dir by default, PostgreSQL when a
//! `DATABASE_URL` says so. Both go through sqlx's `Any` driver, so one set of migrations and
//! queries (with `$1` placeholders) serves both engines.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names an engine Flotilla does not support.
    #[error("unsupported database url `{0}` (expected sqlite: or postgres:)")]
    UnsupportedUrl(String),
    /// The data directory could not be created, or is open to other users.
    #[error(transparent)]
    DataDir(#[from] crate::data_dir::DataDirError),
    /// Connecting failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The SDK's own tables (outbox, inbox, sagas, …) could not be made.
    #[error("preparing {url}: {source}")]
    Prepare {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The migrations folder could not be read.
    #[error("reading the migrations in {dir}: {source}")]
    Migrations {
        /// The folder.
        dir: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A migration failed.
    #[error("migrating {url}: {source}")]
    Migrate {
        /// The URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// An open, migrated database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: the same file with `synchronous=NORMAL`, for [`Store::relaxed`] and for
    /// [`Store::begin_grouped`]'s transactions.
    relaxed: Option<AnyPool>,
    /// SQLite only: syncs the write-ahead log for grouped commits.
    wal: Option<Arc<WalSync>>,
    engine: Engine,
}

impl Store {
    /// The database URL for a service: `DATABASE_URL` if set, else an SQLite file
    /// `<data_dir>/<service>/<service>.db` (the directory is created private to its owner; one
    /// open to others is refused).
    pub fn url_for(service: &str, data_dir: &Path) -> Result<String, StoreError> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                return Ok(url);
            }
        }
        // Both private: a service started on its own checks what `up` would have; the database
        // and its WAL files are made its owner's only.
        crate::data_dir::restrict_new_files();
        crate::data_dir::ensure_private(data_dir)?;
        let dir = crate::data_dir::ensure_private(&data_dir.join(service))?;
        Ok(format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{service}.db")).display()
        ))
    }

    /// [`Store::open`] with the migrations read from `dir` now (`0001_init.sql`, …, sqlx's
    /// naming), for a service that does not embed them at build time.
    pub async fn open_dir(url: &str, dir: &Path) -> Result<Self, StoreError> {
        let migrator = Migrator::new(dir).await.map_err(|source| StoreError::Migrations {
            dir: dir.display().to_string(),
            source,
        })?;
        Self::open(url, &migrator).await
    }

    /// Connects and runs the migrations.
    pub async fn open(url: &str, migrator: &Migrator) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let options: AnyConnectOptions = url.parse().map_err(connect_err)?;
        let options = options.log_statements(tracing::log::LevelFilter::Debug);
        let pool = match engine {
            // One writer at a time is SQLite's nature; WAL lets readers go on beside it, and
            // synchronous=FULL makes every commit durable before it is acknowledged.
            Engine::Sqlite => sqlite_pool(4, "PRAGMA synchronous = FULL"),
            Engine::Postgres => AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .max_connections(10),
        };
        let pool = pool.connect_with(options.clone()).await.map_err(connect_err)?;
        migrator.run(&pool).await.map_err(|source| StoreError::Migrate {
            url: redact(url),
            source,
        })?;
        let (relaxed, wal) = match engine {
            Engine::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                let file: sqlx::sqlite::SqliteConnectOptions = url.parse().map_err(connect_err)?;
                // One connection: grouped commits and bookkeeping queue for it in order,
                // rather than meet at SQLite's write lock, whose busy handler sleeps.
                let relaxed = sqlite_pool(1, "PRAGMA synchronous = NORMAL")
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?;
                (Some(relaxed), Some(Arc::new(WalSync::of_database(file.get_filename()))))
            }
            _ => (None, None),
        };
        Ok(Self {
            pool,
            relaxed,
            wal,
            engine,
        })
    }

    /// A write transaction whose commit shares one fsync with the others committing at about
    /// the same time (group commit), still acknowledged only once durable: commit it with
    /// [`GroupedTx::commit`]. On SQLite it commits without a sync of its own
    /// (`synchronous=NORMAL`), and its commit then waits for one sync of the write-ahead log
    /// that started after it: while one sync runs, every commit that arrives meanwhile
    /// shares the next, and no writer holds SQLite's write lock through an fsync. It takes
    /// the write lock at once, as [`Store::begin_write`] does. On PostgreSQL, whose commits
    /// share WAL flushes by themselves, it is a plain transaction.
    pub async fn begin_grouped(&self) -> Result<GroupedTx, sqlx::Error> {
        let tx = match (&self.relaxed, self.engine) {
            (Some(relaxed), Engine::Sqlite) => relaxed.begin_with("BEGIN IMMEDIATE").await?,
            _ => self.begin_write().await?,
        };
        Ok(GroupedTx {
            tx,
            wal: self.wal.clone(),
        })
    }

    /// How many times grouped commits synced the write-ahead log (SQLite; 0 elsewhere).
    pub fn wal_syncs(&self) -> u64 {
        self.wal.as_ref().map_or(0, |wal| wal.syncs())
    }

    /// The same database for writes whose loss in a power failure only means doing them
    /// again: saga progress, relay and inbox bookkeeping of idempotent work. On SQLite its
    /// commits skip the fsync (`synchronous=NORMAL`): they survive a crash of the process,
    /// and the next synced commit (WAL frames are written in order) makes them durable too;
    /// only an operating-system crash can take the last of them. Anything acknowledged to
    /// a client (an accepted order, a kept answer) stays on the synced pool. On PostgreSQL,
    /// whose commits are group-synced anyway, it is the same pool.
    pub fn relaxed(&self) -> Store {
        Store {
            pool: self.relaxed.clone().unwrap_or_else(|| self.pool.clone()),
            relaxed: self.relaxed.clone(),
            wal: self.wal.clone(),
            engine: self.engine,
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// A span for one unit of database work (`operation`: what it does, `reserve stock`),
    /// child of the current span: the trace shows where a request's time went in the database.
    pub fn span(&self, operation: &str) -> tracing::Span {
        let system = match self.engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgresql",
        };
        crate::telemetry::span::database(system, operation)
    }

    /// A transaction that reads, then writes what it read decides. On SQLite it takes the
    /// write lock at once (`BEGIN IMMEDIATE`): a deferred transaction that read first cannot
    /// upgrade after another writer committed and fails with "database is locked" without
    /// waiting; an immediate one waits its turn (busy timeout) instead.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.engine {
            Engine::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Engine::Postgres => self.pool.begin().await,
        }
    }
}

/// A write transaction of [`Store::begin_grouped`]: use it as the transaction it holds;
/// [`GroupedTx::commit`] returns once the commit is durable. Dropped uncommitted, it rolls
/// back.
#[derive(Debug)]
pub struct GroupedTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    wal: Option<Arc<WalSync>>,
}

impl GroupedTx {
    /// Commits, then waits for a sync of the write-ahead log that started after the commit
    /// (one it leads, or one another commit leads): what returns `Ok` survives a power
    /// failure. An error means the work may or may not be durable: answer it as a failure.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        match self.wal {
            Some(wal) => wal.synced().await.map_err(sqlx::Error::Io),
            None => Ok(()),
        }
    }
}

impl GroupedTx {
    /// Rolls back what it wrote.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for GroupedTx {
    type Target = sqlx::Transaction<'static, sqlx::Any>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for GroupedTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Group commit's syncs of an SQLite database's write-ahead log. Commits without a sync
/// append their frames to the log in order; an fsync of the log afterwards makes every
/// commit before it durable, as `synchronous=FULL` would have at each commit. One sync
/// runs at a time; a commit needs one that *started* after it, so the commits that arrive
/// while a sync runs all share the next one. [`Store::begin_grouped`] uses one; a component
/// that keeps its own SQLite database (the control plane's event log) can too.
#[derive(Debug)]
pub struct WalSync {
    wal: std::path::PathBuf,
    /// Syncs started (numbered from 1).
    started: AtomicU64,
    /// The number of the last sync that completed.
    completed: AtomicU64,
    /// Whose turn it is to sync.
    turn: tokio::sync::Mutex<()>,
    /// Syncs done, for the tests and the curious.
    syncs: AtomicU64,
}

impl WalSync {
    /// Syncs of the write-ahead log of the SQLite database at `database` (SQLite keeps it
    /// beside the database, its name with `-wal` added).
    pub fn of_database(database: &Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        Self {
            wal: wal.into(),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            syncs: AtomicU64::new(0),
        }
    }

    /// Returns once a sync that started after this call began has completed: call it after
    /// a commit made with `synchronous=NORMAL`, and the commit is durable when it returns.
    pub async fn synced(&self) -> std::io::Result<()> {
        // Any sync numbered after the ones started so far starts after our commit.
        let needed = self.started.load(Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.completed.load(Ordering::SeqCst) >= needed {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || sync_file(&wal))
            .await
            .map_err(std::io::Error::other)??;
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.completed.store(number, Ordering::SeqCst);
        Ok(())
    }

    /// How many syncs were made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// fdatasync of a file by its path (opened afresh: the log may have been made anew since);
/// a log not there yet holds nothing to sync.
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// A pool of SQLite connections in WAL mode with `synchronous` set as given (`FULL` for
/// commits acknowledged to someone, `NORMAL` for [`Store::relaxed`]).
fn sqlite_pool(connections: u32, synchronous: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute(synchronous).await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
}

/// The URL with any password replaced, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Now, in milliseconds since the Unix epoch: how services' tables stamp times (`BIGINT`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Throwaway databases for tests: SQLite in a temp dir, or, when `FLOTILLA_TEST_POSTGRES`
/// names a server (`postgres://postgres@127.0.0.1:5432`), a fresh PostgreSQL database that
/// [`TestDatabase::remove`] drops again.
#[cfg(feature = "test-util")]
pub mod test_util {
    use sqlx::Executor;

    /// A database that exists for one test.
    pub struct TestDatabase {
        /// Its URL, for [`super::Store::open`].
        pub url: String,
        postgres: Option<(String, String)>,
        _dir: Option<tempfile::TempDir>,
    }

    impl TestDatabase {
        /// Creates an empty database for `service`.
        ///
        /// # Panics
        /// When the database cannot be created: a test cannot go on without it.
        pub async fn create(service: &str) -> Self {
            sqlx::any::install_default_drivers();
            match std::env::var("FLOTILLA_TEST_POSTGRES").ok().filter(|v| !v.is_empty()) {
                Some(server) => {
                    let server = server.trim_end_matches('/').to_owned();
                    let name = format!("flotilla_test_{service}_{}", uuid::Uuid::new_v4().simple());
                    let admin = format!("{server}/postgres");
                    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                        .await
                        .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"));
                    conn.execute(format!("CREATE DATABASE {name}").as_str())
                        .await
                        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
                    Self {
                        url: format!("{server}/{name}"),
                        postgres: Some((admin, name)),
                        _dir: None,
                    }
                }
                None => {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
                    let url = format!(
                        "sqlite://{}?mode=rwc",
                        dir.path().join(format!("{service}.db")).display()
                    );
                    Self {
                        url,
                        postgres: None,
                        _dir: Some(dir),
                    }
                }
            }
        }

        /// Which engine the tests run on, for messages.
        pub fn engine(&self) -> super::Engine {
            if self.postgres.is_some() {
                super::Engine::Postgres
            } else {
                super::Engine::Sqlite
            }
        }

        /// Drops a PostgreSQL database (closing its connections first); SQLite files go
        /// with their temp dir.
        pub async fn remove(self) {
            if let Some((admin, name)) = &self.postgres {
                if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn a_store_migrates_from_a_folder_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        std::fs::write(
            migrations.join("0001_reviews.sql"),
            "CREATE TABLE reviews (id TEXT PRIMARY KEY, stars INTEGER NOT NULL);",
        )
        .unwrap();
        std::fs::write(
            migrations.join("0002_text.sql"),
            "ALTER TABLE reviews ADD COLUMN body TEXT;",
        )
        .unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("reviews.db").display());
        let store = Store::open_dir(&url, &migrations).await.unwrap();
        sqlx::query("INSERT INTO reviews (id, stars, body) VALUES ('r1', 5, 'good')")
            .execute(store.pool())
            .await
            .expect("both migrations ran, in order");
        // Opening again runs nothing twice.
        Store::open_dir(&url, &migrations).await.unwrap();
        let missing = Store::open_dir(&url, &dir.path().join("nowhere"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("reading the migrations in") && missing.contains("nowhere"),
            "{missing}"
        );
    }

    /// Commits that arrive while a sync of the log runs share the next one: N units, one
    /// fsync, and none is acknowledged before it.
    #[tokio::test]
    async fn grouped_commits_arriving_together_share_one_sync_and_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        std::fs::write(
            migrations.join("0001_units.sql"),
            "CREATE TABLE units (id BIGINT PRIMARY KEY);",
        )
        .unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("units.db").display());
        let store = Store::open_dir(&url, &migrations).await.unwrap();
        let wal = store.wal.clone().expect("a file database syncs its log");
        // A sync in progress: the units commit meanwhile and wait for the next.
        let running = wal.turn.lock().await;
        let acknowledged = Arc::new(AtomicU64::new(0));
        let units: Vec<_> = (0..16)
            .map(|id| {
                let (store, acknowledged) = (store.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let mut tx = store.begin_grouped().await.unwrap();
                    sqlx::query("INSERT INTO units (id) VALUES ($1)")
                        .bind(id)
                        .execute(&mut **tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Every unit committed (a reader sees all 16) and waits for a sync of its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let committed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM units")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if committed == 16 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "only {committed} units committed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            acknowledged.load(Ordering::SeqCst),
            0,
            "no unit is acknowledged before its sync"
        );
        assert_eq!(store.wal_syncs(), 0);
        drop(running);
        for unit in units {
            unit.await.unwrap();
        }
        assert_eq!(acknowledged.load(Ordering::SeqCst), 16);
        assert_eq!(store.wal_syncs(), 1, "sixteen units, one fsync");
        // One alone gets a sync of its own: the earlier one started before it committed.
        let mut tx = store.begin_grouped().await.unwrap();
        sqlx::query("INSERT INTO units (id) VALUES (99)")
            .execute(&mut **tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.wal_syncs(), 2);
        // Dropped uncommitted: rolled back, nothing synced.
        let mut tx = store.begin_grouped().await.unwrap();
        sqlx::query("INSERT INTO units (id) VALUES (100)")
            .execute(&mut **tx)
            .await
            .unwrap();
        drop(tx);
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM units")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!((kept, store.wal_syncs()), (17, 2));
    }

    /// Replicas of a service start together on one PostgreSQL database: its migrations run
    /// once (sqlx holds an advisory lock while it migrates), and every replica opens.
    #[tokio::test]
    async fn replicas_starting_together_on_postgres_migrate_once() {
        use sqlx::Connection;
        let server = std::env::var("FLOTILLA_TEST_POSTGRES")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("flotilla_test_migrate_once_{}", std::process::id());
        let admin = format!("{server}/postgres");
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (the test needs it): {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Neither statement may run twice: a second run would fail.
        std::fs::write(
            dir.path().join("0001_orders.sql"),
            "CREATE TABLE orders (id TEXT PRIMARY KEY);",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("0002_seed.sql"),
            "INSERT INTO orders (id) VALUES ('first');",
        )
        .unwrap();
        let url = format!("{server}/{name}");
        let opened = futures_util::future::join_all((0..6).map(|_| Store::open_dir(&url, dir.path()))).await;
        for store in &opened {
            assert!(store.is_ok(), "{:?}", store.as_ref().err());
        }
        let store = opened.into_iter().next().unwrap().unwrap();
        let seeded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!((seeded, applied), (1, 2));
        store.pool().close().await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
