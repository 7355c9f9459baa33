//! The fleet's durable state, on SQLite (one file, WAL) or PostgreSQL (shared by N instances):
//! per-thing engine state with optimistic versions, recorded reports (duplicates recognised by
//! `(thing, report_id)`), violation events and active violations for all things with the agent's
//! list/verify semantics, the latest datapoints and the computed fleet thresholds, leases for
//! periodic jobs, retention.
//!
//! One code path for both engines (sqlx's Any driver, `$n` parameters on both), one schema
//! (`schema.rs`) migrated at [`Store::open`]. Correctness with several instances comes from the
//! database: a unique key per report, `UPDATE … WHERE version = expected` for the engine state,
//! and an upsert with a condition for leases. Every write of one report is one transaction.
//!
//! Errors: [`StoreError::Unavailable`] means "not now" (database down, full, busy): the ingest
//! withholds `accepted` and retries. Bad data in the database is [`StoreError::Corrupt`], never a
//! panic.

mod error;
mod schema;
mod violations;

pub use error::StoreError;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use defender_agent::detect::fleet::ThingState as EngineState;
use defender_agent::detect::validate::{criteria_type, CriteriaType};
use defender_agent::detect::{ActiveViolation, Behavior, ViolationEvent};
use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{
    Acquire, Any, AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Executor, Row, Transaction,
};

/// The store's result.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// One file (created when missing), WAL journal.
    Sqlite {
        /// The database file; its `-wal` and `-shm` files live beside it.
        path: PathBuf,
    },
    /// A PostgreSQL server (plain TCP or a Unix socket: `?host=/dir`).
    Postgres {
        /// `postgresql://user@host:port/db`.
        url: String,
    },
}

impl Engine {
    /// The SQLite file's name in `state_dir`.
    pub const SQLITE_FILE: &'static str = "fleet.db";

    /// SQLite in `state_dir/fleet.db`.
    pub fn sqlite_in(state_dir: &Path) -> Engine {
        Engine::Sqlite {
            path: state_dir.join(Self::SQLITE_FILE),
        }
    }

    /// "sqlite" or "postgres" (the config's `[store] engine`).
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Postgres { .. } => "postgres",
        }
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database.
    pub engine: Engine,
    /// How long events, reports and datapoints are kept ([`Store::purge_expired`]).
    pub retention: Duration,
    /// Pool size.
    pub max_connections: u32,
    /// How long an operation waits for a connection before it is [`StoreError::Unavailable`]
    /// (with PostgreSQL down, this is how long a call takes to fail).
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the file lock.
    pub busy_timeout: Duration,
}

impl Settings {
    /// Default retention (the issue's `retention_days = 14`).
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 86_400);

    /// Defaults for `engine`.
    pub fn new(engine: Engine) -> Settings {
        let max_connections = match engine {
            Engine::Sqlite { .. } => 4,
            Engine::Postgres { .. } => 8,
        };
        Settings {
            engine,
            retention: Self::DEFAULT_RETENTION,
            max_connections,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A report to record with its evaluation (see [`Store::record_report`]).
#[derive(Debug, Clone, Copy)]
pub struct ReportRecord<'a> {
    /// The thing.
    pub thing: &'a str,
    /// The report's `reportId` (with `thing`, the unique key).
    pub report_id: i64,
    /// The report's time (epoch ms): its id when that is a plausible epoch second, else arrival.
    pub report_time_ms: i64,
    /// Arrival time (epoch ms).
    pub received_ms: i64,
    /// Size of the payload as received.
    pub payload_bytes: i64,
    /// The version read with [`Store::load_thing`]; 0 for a thing without a row.
    pub expected_version: i64,
    /// The thing's fleet Detect state after evaluating this report.
    pub state: &'a EngineState,
    /// Events the evaluation emitted.
    pub events: &'a [ViolationEvent],
    /// The thing's active violations after the evaluation (all of them, replacing the stored
    /// ones), or `None` when unchanged.
    pub active: Option<&'a [ActiveViolation]>,
    /// Datapoints at `report_time_ms` worth keeping for the fleet thresholds (the latest per
    /// (profile, behavior, thing) is kept; an older one never replaces a newer one).
    pub datapoints: &'a [Datapoint],
}

/// One behavior's datapoint value for one thing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datapoint {
    /// Profile.
    pub profile: String,
    /// Behavior.
    pub behavior: String,
    /// The value the engine computed.
    pub value: f64,
}

/// What [`Store::record_report`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Committed; the thing's state now has this version.
    Recorded {
        /// The new version.
        version: i64,
    },
    /// `(thing, report_id)` was recorded before: nothing was written.
    Duplicate,
    /// The thing's version is not `expected_version` (another writer won): nothing was
    /// written; reload and evaluate again.
    Conflict,
}

/// A thing's stored engine state.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingState {
    /// The engine state.
    pub state: EngineState,
    /// Pass as `expected_version` with the next report.
    pub version: i64,
    /// Latest report time recorded (epoch ms).
    pub last_report_ms: Option<i64>,
}

/// A thing seen by the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThingSeen {
    /// Thing name.
    pub thing: String,
    /// Arrival of its first report (epoch ms).
    pub first_seen_ms: i64,
    /// Latest arrival (epoch ms).
    pub last_seen_ms: i64,
    /// Latest report time (epoch ms).
    pub last_report_ms: Option<i64>,
    /// Reports recorded (duplicates not counted).
    pub report_count: i64,
}

/// A computed fleet threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetThreshold {
    /// Profile.
    pub profile: String,
    /// Behavior (a STATISTICAL one).
    pub behavior: String,
    /// The percentile over the population; `None` when the population was too small.
    pub value: Option<f64>,
    /// How many things contributed.
    pub population: i64,
    /// When it was computed (epoch ms).
    pub computed_at_ms: i64,
}

/// What a purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Violation events.
    pub events: u64,
    /// Report rows (their ids are no longer recognised as duplicates).
    pub reports: u64,
    /// Datapoints.
    pub datapoints: u64,
    /// Verification states left without an event or active violation.
    pub verifications: u64,
    /// Ingest counter rows (per minute and name).
    pub counters: u64,
}

/// Counts for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Things seen.
    pub things: i64,
    /// Reports recorded since the start (duplicates not counted).
    pub reports_total: i64,
    /// Report rows kept (within retention).
    pub reports_retained: i64,
    /// Violation events kept.
    pub violation_events: i64,
    /// Active violations.
    pub active_violations: i64,
    /// Bytes on disk: the SQLite file with its WAL, or the PostgreSQL database.
    pub size_bytes: i64,
}

/// Called once per report recorded, after its transaction committed (see [`Store::on_commit`]).
pub type CommitHook = dyn Fn(&ReportRecord<'_>) + Send + Sync;

/// The store. Cheap to clone (a shared pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    postgres: bool,
    sqlite_path: Option<PathBuf>,
    retention: Duration,
    on_commit: Option<Arc<CommitHook>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine_name())
            .field("sqlite_path", &self.sqlite_path)
            .field("retention", &self.retention)
            .field("on_commit", &self.on_commit.is_some())
            .finish()
    }
}

/// One ingest counter of one minute ([`Store::add_counters`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// Start of the UTC minute (epoch ms).
    pub minute_ms: i64,
    /// `received`, `accepted`, `recorded`, `dropped` or `rejected.<ErrorCode>`.
    pub name: String,
    /// How many.
    pub count: i64,
}

/// Key of the PostgreSQL advisory lock that serialises migrations between instances.
const MIGRATION_LOCK: i64 = 0x6465_6665_6e64;

fn criteria_text(b: &Behavior) -> Option<&'static str> {
    criteria_type(b).map(|c| match c {
        CriteriaType::Static => "STATIC",
        CriteriaType::Statistical => "STATISTICAL",
        CriteriaType::MachineLearning => "MACHINE_LEARNING",
    })
}

fn suppressed(b: &Behavior) -> i64 {
    i64::from(b.suppress_alerts == Some(true))
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Database(format!("encoding {what}: {e}")))
}

impl Store {
    /// Connects, sets SQLite up (WAL, synchronous FULL, busy timeout) and applies the
    /// migrations this build knows. A database migrated by a newer build is refused
    /// ([`StoreError::SchemaTooNew`]). Opening an up-to-date store changes nothing.
    pub async fn open(settings: Settings) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, postgres, sqlite_path) = match &settings.engine {
            Engine::Sqlite { path } => {
                if path.as_os_str().is_empty() {
                    return Err(StoreError::Config("the SQLite path is empty".into()));
                }
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(StoreError::Config(format!(
                        "the directory of the SQLite file {} does not exist",
                        path.display()
                    )));
                }
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true);
                (opts.to_url_lossy().to_string(), false, Some(path.clone()))
            }
            Engine::Postgres { url } => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(StoreError::Config(format!(
                        "url {url:?} should start with postgresql://"
                    )));
                }
                (url.clone(), true, None)
            }
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Config(format!("{}: {e}", settings.engine.name())))?;
        let busy_ms = settings.busy_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if !postgres {
                        // FULL: with WAL, a commit is on disk before record_report returns,
                        // which is what lets the ingest send `accepted` after it.
                        conn.execute(AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {busy_ms}; PRAGMA synchronous = FULL"
                        )))
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if !postgres {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&pool)
                .await?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Config(format!(
                    "SQLite refused the WAL journal (journal_mode is {mode})"
                )));
            }
        }
        let store = Store {
            pool,
            postgres,
            sqlite_path,
            retention: settings.retention,
            on_commit: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Calls `hook` for every report [`Self::record_report`] or [`Self::record_reports`]
    /// recorded, once its transaction has committed (never for a duplicate, a conflict or a
    /// batch that failed): the alarm outputs and the counters see only what is durable. The hook
    /// runs on the committer's task: it must not block (hand the work to a bounded queue).
    pub fn on_commit(mut self, hook: impl Fn(&ReportRecord<'_>) + Send + Sync + 'static) -> Store {
        self.on_commit = Some(Arc::new(hook));
        self
    }

    fn committed(&self, r: &ReportRecord<'_>) {
        if let Some(hook) = &self.on_commit {
            hook(r);
        }
    }

    /// "sqlite" or "postgres".
    pub fn engine_name(&self) -> &'static str {
        if self.postgres {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// The retention from the settings.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The pool, for tests and diagnostics (not for the service's own queries).
    #[doc(hidden)]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. SQLite: `BEGIN IMMEDIATE` takes the write lock at once (waiting up
    /// to the busy timeout) so a transaction never fails half-way on a lock upgrade.
    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(if self.postgres {
            self.pool.begin().await?
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        })
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        if self.postgres {
            // Instances starting together: one migrates, the others wait and find it done.
            sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let found: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
        )
        .fetch_one(&mut *tx)
        .await?;
        let known = schema::known_version();
        if found > known {
            let _ = tx.rollback().await;
            return Err(StoreError::SchemaTooNew { found, known });
        }
        let now = now_ms();
        for m in schema::MIGRATIONS.iter().filter(|m| m.version > found) {
            for stmt in schema::statements(m, self.postgres) {
                sqlx::raw_sql(AssertSqlSafe(stmt)).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, description, applied_at_ms) \
                 VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.description)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The schema version in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// A thing's engine state, version and latest report time; `None` for a thing never
    /// recorded. A state that does not decode is [`StoreError::Corrupt`] naming the thing.
    pub async fn load_thing(&self, thing: &str) -> Result<Option<ThingState>> {
        let Some(row) =
            sqlx::query("SELECT state, version, last_report_ms FROM things WHERE thing = $1")
                .bind(thing)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let what = || format!("engine state of thing {thing:?}");
        let text: String = row.try_get(0).map_err(|e| StoreError::corrupt(what(), e))?;
        let version: i64 = row.try_get(1).map_err(|e| StoreError::corrupt(what(), e))?;
        let last_report_ms: Option<i64> =
            row.try_get(2).map_err(|e| StoreError::corrupt(what(), e))?;
        let state: EngineState =
            serde_json::from_str(&text).map_err(|e| StoreError::corrupt(what(), e))?;
        Ok(Some(ThingState {
            state,
            version,
            last_report_ms,
        }))
    }

    /// Whether `(thing, report_id)` was recorded (and is still within retention): the ingest
    /// answers such a redelivery as accepted again before throttling it.
    pub async fn has_report(&self, thing: &str, report_id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM reports WHERE thing = $1 AND report_id = $2")
            .bind(thing)
            .bind(report_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// The stored states of `things` (each name once), in one query per 500 names: the batch
    /// form of [`Self::load_thing`] (things never recorded are absent from the result).
    pub async fn load_things(&self, things: &[&str]) -> Result<Vec<(String, ThingState)>> {
        let mut out = Vec::with_capacity(things.len());
        for chunk in things.chunks(500) {
            let sql = format!(
                "SELECT thing, state, version, last_report_ms FROM things WHERE thing IN ({})",
                placeholders(self.postgres, 1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for t in chunk {
                q = q.bind(*t);
            }
            for row in q.fetch_all(&self.pool).await? {
                let thing: String = row
                    .try_get(0)
                    .map_err(|e| StoreError::corrupt("engine state", e))?;
                let what = || format!("engine state of thing {thing:?}");
                let text: String = row.try_get(1).map_err(|e| StoreError::corrupt(what(), e))?;
                let version: i64 = row.try_get(2).map_err(|e| StoreError::corrupt(what(), e))?;
                let last_report_ms: Option<i64> =
                    row.try_get(3).map_err(|e| StoreError::corrupt(what(), e))?;
                let state: EngineState =
                    serde_json::from_str(&text).map_err(|e| StoreError::corrupt(what(), e))?;
                out.push((
                    thing,
                    ThingState {
                        state,
                        version,
                        last_report_ms,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Records a report and everything its evaluation produced in ONE transaction: the report
    /// row (unique per `(thing, report_id)`: a redelivery is [`RecordOutcome::Duplicate`] and
    /// writes nothing), the engine state if the stored version is still `expected_version`
    /// (else [`RecordOutcome::Conflict`], nothing written), the events, the active violations
    /// and the datapoints. When this returns `Recorded`, it is committed (SQLite: synchronous
    /// FULL; PostgreSQL: its `synchronous_commit`).
    pub async fn record_report(&self, r: &ReportRecord<'_>) -> Result<RecordOutcome> {
        let p = prepare(r)?;
        let mut tx = self.begin().await?;
        let outcome = write_report(&mut tx, self.postgres, r, &p).await?;
        if let RecordOutcome::Recorded { .. } = outcome {
            tx.commit().await?;
            self.committed(r);
        } else {
            let _ = tx.rollback().await;
        }
        Ok(outcome)
    }

    /// [`Self::record_report`] for several reports in one transaction (group commit: one disk
    /// flush for the batch), a duplicate or a conflict leaving the others in. The outcomes, in
    /// order, hold only once this returns `Ok`: on an error nothing of the batch is committed.
    /// Two reports of one thing in a batch: the second expects the version the first gets, and
    /// is a [`RecordOutcome::Conflict`] when the first is not recorded (it was evaluated on the
    /// first's state).
    ///
    /// Statements per batch, not per report. First, in a savepoint, the case of every batch
    /// but a few: one multi-row insert of the report rows and one multi-row write of the
    /// engine states (an update with the version check, an insert for new things); when a row
    /// count says a report was a duplicate or a state had moved on, the savepoint is rolled
    /// back and the batch written report by report (the report rows' `RETURNING` says which
    /// were new; a conflict takes its report row back). Then the events and the active
    /// violations, and the datapoints, each in multi-row statements.
    pub async fn record_reports(&self, batch: &[ReportRecord<'_>]) -> Result<Vec<RecordOutcome>> {
        let prepared = batch.iter().map(prepare).collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Option<RecordOutcome>> = vec![None; batch.len()];
        // A (thing, report_id) twice in the batch: the later ones are duplicates of the first.
        let mut keys: HashSet<(&str, i64)> = HashSet::with_capacity(batch.len());
        let mut fresh = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            if keys.insert((r.thing, r.report_id)) {
                fresh.push(i);
            } else {
                out[i] = Some(RecordOutcome::Duplicate);
            }
        }
        let mut tx = self.begin().await?;
        let mut sp = tx.begin().await?;
        let recorded = match self.write_batch(&mut sp, batch, &prepared, &fresh).await? {
            Some(versions) => {
                sp.commit().await?;
                for (i, v) in versions {
                    out[i] = Some(match v {
                        Some(version) => RecordOutcome::Recorded { version },
                        None => RecordOutcome::Conflict,
                    });
                }
                true
            }
            None => {
                sp.rollback().await?;
                false
            }
        };
        if !recorded {
            self.write_one_by_one(&mut tx, batch, &prepared, &fresh, &mut out)
                .await?;
        }
        let done: Vec<usize> = (0..batch.len())
            .filter(|&i| matches!(out[i], Some(RecordOutcome::Recorded { .. })))
            .collect();
        write_violations_of(
            &mut tx,
            self.postgres,
            done.iter().map(|&i| (&batch[i], &prepared[i])),
        )
        .await?;
        write_datapoints(&mut tx, self.postgres, done.iter().map(|&i| &batch[i])).await?;
        tx.commit().await?;
        // After the commit only: the hook (alarms, counters) sees what is durable.
        for &i in &done {
            self.committed(&batch[i]);
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or(RecordOutcome::Conflict))
            .collect())
    }

    /// The common case of [`Self::record_reports`]: every report new and every thing's first
    /// report of the batch at its expected version. `None` when a row count says otherwise
    /// (the caller rolls back); else each report's new version (`None`: a later report of a
    /// thing whose chain broke, its report row taken back).
    async fn write_batch(
        &self,
        conn: &mut AnyConnection,
        batch: &[ReportRecord<'_>],
        prepared: &[Prepared<'_>],
        fresh: &[usize],
    ) -> Result<Option<Vec<(usize, Option<i64>)>>> {
        let postgres = self.postgres;
        for chunk in fresh.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO reports (thing, report_id, report_time_ms, received_ms, \
                 payload_bytes) VALUES {} ON CONFLICT (thing, report_id) DO NOTHING",
                rows(postgres, 5, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for &i in chunk {
                let r = &batch[i];
                q = q
                    .bind(r.thing)
                    .bind(r.report_id)
                    .bind(r.report_time_ms)
                    .bind(r.received_ms)
                    .bind(r.payload_bytes);
            }
            if q.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
                return Ok(None);
            }
        }
        // Each thing's first report: one statement for the updates, one for the new things.
        let mut seen: HashSet<&str> = HashSet::with_capacity(fresh.len());
        let (mut firsts, mut later) = (Vec::new(), Vec::new());
        for &i in fresh {
            if seen.insert(batch[i].thing) {
                firsts.push(i);
            } else {
                later.push(i);
            }
        }
        let (updates, inserts): (Vec<usize>, Vec<usize>) = firsts
            .iter()
            .partition(|&&i| batch[i].expected_version != 0);
        for chunk in updates.chunks(INSERT_ROWS) {
            let sql = format!(
                "WITH v (thing, state, received_ms, report_time_ms, expected) AS (VALUES {}) \
                 UPDATE things SET state = v.state, version = things.version + 1, \
                 last_seen_ms = CASE WHEN things.last_seen_ms > v.received_ms \
                 THEN things.last_seen_ms ELSE v.received_ms END, \
                 last_report_ms = CASE WHEN things.last_report_ms IS NULL \
                 OR things.last_report_ms < v.report_time_ms \
                 THEN v.report_time_ms ELSE things.last_report_ms END, \
                 report_count = things.report_count + 1 \
                 FROM v WHERE things.thing = v.thing{} AND things.version = v.expected",
                rows(postgres, 5, chunk.len()),
                if postgres { " COLLATE \"C\"" } else { "" }
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for &i in chunk {
                q = q
                    .bind(batch[i].thing)
                    .bind(prepared[i].state.as_str())
                    .bind(batch[i].received_ms)
                    .bind(batch[i].report_time_ms)
                    .bind(batch[i].expected_version);
            }
            if q.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
                return Ok(None);
            }
        }
        for chunk in inserts.chunks(INSERT_ROWS) {
            let values = (0..chunk.len())
                .map(|r| {
                    let p = |k: usize| {
                        if postgres {
                            format!("${}", r * 4 + k)
                        } else {
                            "?".to_owned()
                        }
                    };
                    // thing, state, first_seen = last_seen = received, last_report.
                    format!("({}, {}, 1, {}, {}, {}, 1)", p(1), p(2), p(3), p(3), p(4))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO things (thing, state, version, first_seen_ms, last_seen_ms, \
                 last_report_ms, report_count) VALUES {values} ON CONFLICT (thing) DO NOTHING"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for &i in chunk {
                q = q
                    .bind(batch[i].thing)
                    .bind(prepared[i].state.as_str())
                    .bind(batch[i].received_ms);
                if !postgres {
                    // Anonymous parameters: the repeated one is bound twice.
                    q = q.bind(batch[i].received_ms);
                }
                q = q.bind(batch[i].report_time_ms);
            }
            if q.execute(&mut *conn).await?.rows_affected() != chunk.len() as u64 {
                return Ok(None);
            }
        }
        let mut versions: Vec<(usize, Option<i64>)> = firsts
            .iter()
            .map(|&i| (i, Some(batch[i].expected_version + 1)))
            .collect();
        // A thing's later reports, in order, each on the version the previous one got.
        let mut broken: HashSet<&str> = HashSet::new();
        for &i in &later {
            let r = &batch[i];
            let v = if broken.contains(r.thing) {
                None
            } else {
                write_state(conn, r, &prepared[i]).await?
            };
            if v.is_none() {
                take_back(conn, r).await?;
                broken.insert(r.thing);
            }
            versions.push((i, v));
        }
        Ok(Some(versions))
    }

    /// [`Self::record_reports`] report by report (a duplicate or a moved-on state in the
    /// batch), into `out`.
    async fn write_one_by_one(
        &self,
        conn: &mut AnyConnection,
        batch: &[ReportRecord<'_>],
        prepared: &[Prepared<'_>],
        fresh: &[usize],
        out: &mut [Option<RecordOutcome>],
    ) -> Result<()> {
        let mut inserted: HashSet<(String, i64)> = HashSet::with_capacity(fresh.len());
        for chunk in fresh.chunks(INSERT_ROWS) {
            let sql = format!(
                "INSERT INTO reports (thing, report_id, report_time_ms, received_ms, \
                 payload_bytes) VALUES {} ON CONFLICT (thing, report_id) DO NOTHING \
                 RETURNING thing, report_id",
                rows(self.postgres, 5, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for &i in chunk {
                let r = &batch[i];
                q = q
                    .bind(r.thing)
                    .bind(r.report_id)
                    .bind(r.report_time_ms)
                    .bind(r.received_ms)
                    .bind(r.payload_bytes);
            }
            for row in q.fetch_all(&mut *conn).await? {
                let key: (String, i64) = (
                    row.try_get(0)
                        .map_err(|e| StoreError::corrupt("report row", e))?,
                    row.try_get(1)
                        .map_err(|e| StoreError::corrupt("report row", e))?,
                );
                inserted.insert(key);
            }
        }
        let mut failed: HashSet<&str> = HashSet::new();
        for &i in fresh {
            let r = &batch[i];
            if !inserted.contains(&(r.thing.to_owned(), r.report_id)) {
                out[i] = Some(RecordOutcome::Duplicate);
                failed.insert(r.thing);
                continue;
            }
            let version = if failed.contains(r.thing) {
                None
            } else {
                write_state(conn, r, &prepared[i]).await?
            };
            out[i] = Some(match version {
                Some(version) => RecordOutcome::Recorded { version },
                None => {
                    take_back(conn, r).await?;
                    failed.insert(r.thing);
                    RecordOutcome::Conflict
                }
            });
        }
        Ok(())
    }

    /// The invalidation sweep's candidates: things with an active violation whose newest report
    /// is older than `before_ms`, by name (byte order), at most `limit`.
    pub async fn silent_things(&self, before_ms: i64, limit: i64) -> Result<Vec<String>> {
        let sql = if self.postgres {
            "SELECT t.thing FROM things t WHERE t.last_report_ms < $1 AND EXISTS \
             (SELECT 1 FROM active_violations a WHERE a.thing COLLATE \"C\" = t.thing) \
             ORDER BY t.thing LIMIT $2"
        } else {
            "SELECT t.thing FROM things t WHERE t.last_report_ms < $1 AND EXISTS \
             (SELECT 1 FROM active_violations a WHERE a.thing = t.thing) \
             ORDER BY t.thing LIMIT $2"
        };
        let rows = sqlx::query(sql)
            .bind(before_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .map_err(|e| StoreError::corrupt("thing name", e))
            })
            .collect()
    }

    /// What a tick without a report produced for a thing (the invalidation of violations
    /// silent for two days): its engine state, events and active violations (replacing the
    /// stored ones), in one transaction, if its stored version is still `expected_version`
    /// (else [`RecordOutcome::Conflict`] and nothing is written: a report came in between and
    /// its evaluation did the same). No report row, no datapoint; the commit hook is not
    /// called (it is the reports').
    pub async fn record_tick(
        &self,
        thing: &str,
        expected_version: i64,
        state: &EngineState,
        events: &[ViolationEvent],
        active: &[ActiveViolation],
    ) -> Result<RecordOutcome> {
        let r = ReportRecord {
            thing,
            report_id: 0,
            report_time_ms: 0,
            received_ms: 0,
            payload_bytes: 0,
            expected_version,
            state,
            events,
            active: Some(active),
            datapoints: &[],
        };
        let p = prepare(&r)?;
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE things SET state = $2, version = version + 1 WHERE thing = $1 AND version = $3",
        )
        .bind(thing)
        .bind(&p.state)
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if n.rows_affected() == 0 {
            let _ = tx.rollback().await;
            return Ok(RecordOutcome::Conflict);
        }
        write_violations_of(&mut tx, self.postgres, std::iter::once((&r, &p))).await?;
        tx.commit().await?;
        Ok(RecordOutcome::Recorded {
            version: expected_version + 1,
        })
    }

    /// Things seen, by name (byte order), at most `limit` after the name `after` (a page: pass
    /// the last name of the previous page).
    pub async fn things(&self, after: Option<&str>, limit: i64) -> Result<Vec<ThingSeen>> {
        let rows = sqlx::query(
            "SELECT thing, first_seen_ms, last_seen_ms, last_report_ms, report_count \
             FROM things WHERE ($1 IS NULL OR thing > $1) ORDER BY thing LIMIT $2",
        )
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ThingSeen {
                    thing: row.try_get(0)?,
                    first_seen_ms: row.try_get(1)?,
                    last_seen_ms: row.try_get(2)?,
                    last_report_ms: row.try_get(3)?,
                    report_count: row.try_get(4)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::corrupt("things", e))
    }

    /// The population of a fleet threshold: the latest datapoint of each thing for
    /// (profile, behavior) at or after `since_ms`, by thing name.
    pub async fn population(
        &self,
        profile: &str,
        behavior: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, f64)>> {
        let rows = sqlx::query(
            "SELECT thing, value FROM datapoints WHERE profile = $1 AND behavior = $2 \
             AND time_ms >= $3 ORDER BY thing",
        )
        .bind(profile)
        .bind(behavior)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::corrupt("datapoints", e))
    }

    /// Stores (or replaces) a computed threshold.
    pub async fn upsert_threshold(&self, t: &FleetThreshold) -> Result<()> {
        sqlx::query(
            "INSERT INTO fleet_thresholds (profile, behavior, value, population, computed_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (profile, behavior) DO UPDATE \
             SET value = excluded.value, population = excluded.population, \
             computed_at_ms = excluded.computed_at_ms",
        )
        .bind(t.profile.as_str())
        .bind(t.behavior.as_str())
        .bind(t.value)
        .bind(t.population)
        .bind(t.computed_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every stored threshold, by profile then behavior.
    pub async fn thresholds(&self) -> Result<Vec<FleetThreshold>> {
        let rows = sqlx::query(
            "SELECT profile, behavior, value, population, computed_at_ms FROM fleet_thresholds \
             ORDER BY profile, behavior",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(FleetThreshold {
                    profile: row.try_get(0)?,
                    behavior: row.try_get(1)?,
                    value: row.try_get(2)?,
                    population: row.try_get(3)?,
                    computed_at_ms: row.try_get(4)?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::corrupt("fleet_thresholds", e))
    }

    /// Takes or renews the lease of `job` until `now_ms + ttl_ms`: true when `holder` has it
    /// (it was free, expired, or already `holder`'s), false while another holder's lease runs.
    /// One statement (an upsert with a condition), so two instances racing on PostgreSQL or
    /// SQLite cannot both get it. Run a periodic job with `ttl` = its period: whoever gets the
    /// lease runs it; the others try again next period. Times come from the callers' clocks.
    pub async fn try_lease(
        &self,
        job: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO leases (job, holder, expires_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, \
             expires_ms = excluded.expires_ms \
             WHERE leases.expires_ms <= $4 OR leases.holder = excluded.holder",
        )
        .bind(job)
        .bind(holder)
        .bind(now_ms.saturating_add(ttl_ms.max(0)))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Gives a lease back early (e.g. on shutdown); a lease held by another is untouched.
    pub async fn release_lease(&self, job: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE job = $1 AND holder = $2")
            .bind(job)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// [`Self::purge_older_than`] with the settings' retention before `now_ms`.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<Purged> {
        let keep = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        self.purge_older_than(now_ms.saturating_sub(keep), 1000)
            .await
    }

    /// Deletes violation events, report rows and datapoints older than `cutoff_ms`, then the
    /// verification states nothing refers to any more, `batch` rows per statement (each its own
    /// transaction, so writers are never held up for long).
    pub async fn purge_older_than(&self, cutoff_ms: i64, batch: i64) -> Result<Purged> {
        let batch = batch.max(1);
        let cutoff_secs = defender_agent::detect::violation::ms_to_secs(cutoff_ms);
        let events = self
            .purge_loop(
                "DELETE FROM violation_events WHERE seq IN (SELECT seq FROM violation_events \
                 WHERE event_time < $1 LIMIT $2)",
                Bound::F(cutoff_secs),
                batch,
            )
            .await?;
        let reports = self
            .purge_loop(
                "DELETE FROM reports WHERE id IN (SELECT id FROM reports \
                 WHERE report_time_ms < $1 LIMIT $2)",
                Bound::I(cutoff_ms),
                batch,
            )
            .await?;
        let datapoints = self
            .purge_loop(
                "DELETE FROM datapoints WHERE (profile, behavior, thing) IN (SELECT profile, \
                 behavior, thing FROM datapoints WHERE time_ms < $1 LIMIT $2)",
                Bound::I(cutoff_ms),
                batch,
            )
            .await?;
        let verifications = self
            .purge_loop(
                "DELETE FROM verification WHERE violation_id IN (SELECT v.violation_id FROM \
                 verification v \
                 WHERE NOT EXISTS (SELECT 1 FROM violation_events e \
                 WHERE e.violation_id = v.violation_id) \
                 AND NOT EXISTS (SELECT 1 FROM active_violations a \
                 WHERE a.violation_id = v.violation_id) LIMIT $1)",
                Bound::None,
                batch,
            )
            .await?;
        let counters = self
            .purge_loop(
                "DELETE FROM ingest_counters WHERE (minute_ms, name) IN (SELECT minute_ms, name \
                 FROM ingest_counters WHERE minute_ms < $1 LIMIT $2)",
                Bound::I(cutoff_ms),
                batch,
            )
            .await?;
        Ok(Purged {
            events,
            reports,
            datapoints,
            verifications,
            counters,
        })
    }

    async fn purge_loop(&self, sql: &'static str, bound: Bound, batch: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let q = sqlx::query(sql);
            let q = match bound {
                Bound::I(v) => q.bind(v),
                Bound::F(v) => q.bind(v),
                Bound::None => q,
            };
            let n = q.bind(batch).execute(&self.pool).await?.rows_affected();
            total += n;
            if n < u64::try_from(batch).unwrap_or(u64::MAX) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Adds `counts` (name, how many) to the counters of the minute of `now_ms`, in one
    /// transaction; several instances add to the same rows. Zero counts are skipped.
    pub async fn add_counters(&self, now_ms: i64, counts: &[(&str, i64)]) -> Result<()> {
        let minute = now_ms.div_euclid(60_000) * 60_000;
        let mut tx = self.begin().await?;
        for (name, n) in counts.iter().filter(|(_, n)| *n != 0) {
            sqlx::query(
                "INSERT INTO ingest_counters (minute_ms, name, count) VALUES ($1, $2, $3) \
                 ON CONFLICT (minute_ms, name) DO UPDATE \
                 SET count = ingest_counters.count + excluded.count",
            )
            .bind(minute)
            .bind(*name)
            .bind(*n)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The counters of the minutes that start at or after `since_ms`, summed per name, by name.
    pub async fn counters_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT name, CAST(SUM(count) AS BIGINT) FROM ingest_counters WHERE minute_ms >= $1 \
             GROUP BY name ORDER BY name",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(|e| StoreError::corrupt("ingest_counters", e))
    }

    /// The start of the oldest minute with counters (`None`: nothing counted yet).
    pub async fn counters_start(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT CAST(MIN(minute_ms) AS BIGINT) FROM ingest_counters")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Counts for `status`.
    pub async fn counts(&self) -> Result<Counts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM things), \
             (SELECT CAST(COALESCE(SUM(report_count), 0) AS BIGINT) FROM things), \
             (SELECT COUNT(*) FROM reports), \
             (SELECT COUNT(*) FROM violation_events), \
             (SELECT COUNT(*) FROM active_violations)",
        )
        .fetch_one(&self.pool)
        .await?;
        let get = |i: usize| -> Result<i64> {
            row.try_get::<i64, _>(i)
                .map_err(|e| StoreError::corrupt("counts", e))
        };
        let size_bytes = match &self.sqlite_path {
            Some(path) => ["", "-wal", "-shm"]
                .iter()
                .filter_map(|suffix| {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    std::fs::metadata(p).ok()
                })
                .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
                .sum(),
            None => {
                sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(Counts {
            things: get(0)?,
            reports_total: get(1)?,
            reports_retained: get(2)?,
            violation_events: get(3)?,
            active_violations: get(4)?,
            size_bytes,
        })
    }
}

/// A report's JSON, encoded before the transaction.
struct Prepared<'a> {
    state: String,
    events: Vec<(String, &'a ViolationEvent)>,
    active: Option<Vec<(String, &'a ActiveViolation)>>,
}

fn prepare<'a>(r: &ReportRecord<'a>) -> Result<Prepared<'a>> {
    let state = to_json("engine state", r.state)?;
    let events: Vec<(String, &ViolationEvent)> = r
        .events
        .iter()
        .map(|e| {
            let mut bare = e.clone();
            bare.verification_state = None;
            bare.verification_state_description = None;
            to_json("violation event", &bare).map(|j| (j, e))
        })
        .collect::<Result<_>>()?;
    let active: Option<Vec<(String, &ActiveViolation)>> = match r.active {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|a| {
                    let mut bare = a.clone();
                    bare.verification_state = None;
                    bare.verification_state_description = None;
                    to_json("active violation", &bare).map(|j| (j, a))
                })
                .collect::<Result<_>>()?,
        ),
    };

    Ok(Prepared {
        state,
        events,
        active,
    })
}

/// The writes of one report on `conn` (a transaction). Duplicate or Conflict: the caller
/// rolls back what was written.
async fn write_report(
    conn: &mut AnyConnection,
    postgres: bool,
    r: &ReportRecord<'_>,
    p: &Prepared<'_>,
) -> Result<RecordOutcome> {
    let inserted = sqlx::query(
        "INSERT INTO reports (thing, report_id, report_time_ms, received_ms, payload_bytes) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (thing, report_id) DO NOTHING",
    )
    .bind(r.thing)
    .bind(r.report_id)
    .bind(r.report_time_ms)
    .bind(r.received_ms)
    .bind(r.payload_bytes)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(RecordOutcome::Duplicate);
    }
    let Some(version) = write_state(conn, r, p).await? else {
        return Ok(RecordOutcome::Conflict);
    };
    write_violations_of(conn, postgres, std::iter::once((r, p))).await?;
    write_datapoints(conn, postgres, std::iter::once(r)).await?;
    Ok(RecordOutcome::Recorded { version })
}

/// Deletes the report row of a report whose state could not be written.
async fn take_back(conn: &mut AnyConnection, r: &ReportRecord<'_>) -> Result<()> {
    sqlx::query("DELETE FROM reports WHERE thing = $1 AND report_id = $2")
        .bind(r.thing)
        .bind(r.report_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The engine state, if the stored version is still `expected_version`: the new version, or
/// `None` (another writer won; nothing written).
async fn write_state(
    conn: &mut AnyConnection,
    r: &ReportRecord<'_>,
    p: &Prepared<'_>,
) -> Result<Option<i64>> {
    let version = if r.expected_version == 0 {
        let n = sqlx::query(
            "INSERT INTO things (thing, state, version, first_seen_ms, last_seen_ms, \
             last_report_ms, report_count) VALUES ($1, $2, 1, $3, $3, $4, 1) \
             ON CONFLICT (thing) DO NOTHING",
        )
        .bind(r.thing)
        .bind(&p.state)
        .bind(r.received_ms)
        .bind(r.report_time_ms)
        .execute(&mut *conn)
        .await?;
        if n.rows_affected() == 0 {
            return Ok(None);
        }
        1
    } else {
        let n = sqlx::query(
            "UPDATE things SET state = $2, version = version + 1, \
             last_seen_ms = CASE WHEN last_seen_ms > $3 THEN last_seen_ms ELSE $3 END, \
             last_report_ms = CASE WHEN last_report_ms IS NULL OR last_report_ms < $4 \
             THEN $4 ELSE last_report_ms END, \
             report_count = report_count + 1 \
             WHERE thing = $1 AND version = $5",
        )
        .bind(r.thing)
        .bind(&p.state)
        .bind(r.received_ms)
        .bind(r.report_time_ms)
        .bind(r.expected_version)
        .execute(&mut *conn)
        .await?;
        if n.rows_affected() == 0 {
            return Ok(None);
        }
        r.expected_version + 1
    };
    Ok(Some(version))
}

/// The events and, when given, the active violations (replacing the thing's stored ones) of
/// several reports (in order; one for a single report), in multi-row statements: the events,
/// and each thing's active violations of its latest report that has them.
async fn write_violations_of<'a, 'b: 'a, 'c: 'a>(
    conn: &mut AnyConnection,
    postgres: bool,
    reports: impl Iterator<Item = (&'a ReportRecord<'b>, &'a Prepared<'c>)>,
) -> Result<()> {
    let mut events: Vec<&(String, &ViolationEvent)> = Vec::new();
    let mut active: HashMap<&str, &[(String, &ActiveViolation)]> = HashMap::new();
    let mut things: Vec<&str> = Vec::new();
    for (r, p) in reports {
        events.extend(p.events.iter());
        if let Some(list) = &p.active {
            if active.insert(r.thing, list).is_none() {
                things.push(r.thing);
            }
        }
    }
    for chunk in events.chunks(MULTI_ROWS) {
        let sql = format!(
            "INSERT INTO violation_events (violation_id, thing, profile, behavior, \
             criteria_type, suppressed, event_type, event_time, event) VALUES {}",
            rows(postgres, 9, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (json, e) in chunk.iter().copied() {
            q = q
                .bind(e.violation_id.as_str())
                .bind(e.thing_name.as_str())
                .bind(e.security_profile_name.as_str())
                .bind(e.behavior.name.as_str())
                .bind(criteria_text(&e.behavior))
                .bind(suppressed(&e.behavior))
                .bind(event_type_text(e))
                .bind(e.violation_event_time)
                .bind(json.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in things.chunks(MULTI_ROWS) {
        let sql = format!(
            "DELETE FROM active_violations WHERE thing IN ({})",
            placeholders(postgres, 1, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for t in chunk {
            q = q.bind(*t);
        }
        q.execute(&mut *conn).await?;
    }
    let rows_of: Vec<&(String, &ActiveViolation)> = things
        .iter()
        .filter_map(|t| active.get(t))
        .flat_map(|l| l.iter())
        .collect();
    for chunk in rows_of.chunks(MULTI_ROWS) {
        let sql = format!(
            "INSERT INTO active_violations (violation_id, thing, profile, behavior, \
             criteria_type, suppressed, start_time, violation) VALUES {}",
            rows(postgres, 8, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (json, a) in chunk.iter().copied() {
            q = q
                .bind(a.violation_id.as_str())
                .bind(a.thing_name.as_str())
                .bind(a.security_profile_name.as_str())
                .bind(a.behavior.name.as_str())
                .bind(criteria_text(&a.behavior))
                .bind(suppressed(&a.behavior))
                .bind(a.violation_start_time)
                .bind(json.as_str());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows per multi-row statement of up to 9 columns (at most 900 parameters).
const MULTI_ROWS: usize = 100;

/// The datapoints of `records` in one upsert per [`INSERT_ROWS`] rows; the latest per
/// (profile, behavior, thing) is kept, an older one never replaces a newer one (in a batch:
/// the later report wins a tie, as one upsert after the other would).
async fn write_datapoints<'a, 'b: 'a>(
    conn: &mut AnyConnection,
    postgres: bool,
    records: impl Iterator<Item = &'a ReportRecord<'b>>,
) -> Result<()> {
    // One row per key: an upsert may not touch a row twice (PostgreSQL).
    let mut latest: HashMap<(&str, &str, &str), (i64, f64)> = HashMap::new();
    let mut order = Vec::new();
    for r in records {
        for d in r.datapoints {
            let key = (d.profile.as_str(), d.behavior.as_str(), r.thing);
            match latest.get_mut(&key) {
                Some(v) => {
                    if r.report_time_ms >= v.0 {
                        *v = (r.report_time_ms, d.value);
                    }
                }
                None => {
                    latest.insert(key, (r.report_time_ms, d.value));
                    order.push(key);
                }
            }
        }
    }
    for chunk in order.chunks(INSERT_ROWS) {
        let sql = format!(
            "INSERT INTO datapoints (profile, behavior, thing, time_ms, value) VALUES {} \
             ON CONFLICT (profile, behavior, thing) DO UPDATE \
             SET time_ms = excluded.time_ms, value = excluded.value \
             WHERE excluded.time_ms >= datapoints.time_ms",
            rows(postgres, 5, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for key in chunk {
            let Some(&(time, value)) = latest.get(key) else {
                continue;
            };
            q = q.bind(key.0).bind(key.1).bind(key.2).bind(time).bind(value);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows per multi-row statement (5 parameters a row: 1,000 parameters, far below both
/// engines' limits).
const INSERT_ROWS: usize = 200;

/// `$first, $first+1, …` for `n` parameters; SQLite: `?, ?, …` (anonymous parameters: SQLite
/// looks a numbered one up by a linear search, which makes binding 1,000 of them quadratic).
fn placeholders(postgres: bool, first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| {
            if postgres {
                format!("${i}")
            } else {
                "?".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, …, $width), ($width+1, …), …` for `rows` rows.
fn rows(postgres: bool, width: usize, rows: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(postgres, r * width + 1, width)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy)]
enum Bound {
    I(i64),
    F(f64),
    None,
}

fn event_type_text(e: &ViolationEvent) -> &'static str {
    use defender_agent::detect::violation::ViolationEventType as T;
    match e.violation_event_type {
        T::InAlarm => "in-alarm",
        T::AlarmCleared => "alarm-cleared",
        T::AlarmInvalidated => "alarm-invalidated",
    }
}

/// Wall clock in epoch ms (only for `applied_at_ms`; everything else takes time as an argument).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
