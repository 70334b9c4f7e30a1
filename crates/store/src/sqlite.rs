//! The SQLite backend: one file per data dir, for a single server.
//!
//! Writes go through one connection behind a mutex and run as `BEGIN
//! IMMEDIATE` transactions, so SQLite's single-writer rule shows up as a
//! queue on the mutex rather than as `SQLITE_BUSY` half-way through a request.
//! Reads take a connection of their own from a small pool of read-only
//! connections: in WAL mode each sees the snapshot of its first read and never
//! waits for the writer. An in-memory database has no WAL and no second
//! connection can see it, so there reads share the writer's connection.
//!
//! The filter and sort columns are written from the document on every put and
//! never on their own, so a row's columns always describe its document.
//! Statements are cached per connection (`prepare_cached`): the hot paths
//! (RunTask, DescribeTasks) then only bind and step.

mod schema;

use crate::{
    AttributeFilter, ClientToken, Durability, Expect, Page, PlacedTask, Result, ServiceFilter,
    StoreError, TaskDefinitionFilter, TaskFilter, TaskLoad, Tx, Versioned,
};
use berth_model::ecs::{
    Attribute, CapacityProvider, Cluster, ContainerInstance, LaunchType, Service,
    ServiceDeployment, ServiceRevision, Setting, SettingName, SettingType, TargetType, Task,
    TaskDefinition, TaskDefinitionStatus,
};
use berth_model::meter::{InstanceMeter, TaskUsage};
use rusqlite::config::DbConfig;
use rusqlite::types::ValueRef;
use rusqlite::{
    CachedStatement, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, ToSql, Transaction,
    TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a statement waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection: the fixed ones plus the variants
/// of the filtered listings.
const STATEMENT_CACHE: usize = 128;
/// Idle read connections kept open for the next read.
const IDLE_READERS: usize = 4;

/// berth's state in one SQLite database.
///
/// A closure must not call `write` of the same store (nor, in memory, `read`):
/// it would wait for its own transaction.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database: reads use the writer connection.
    readers: Option<Readers>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Readers go first so the writer is the last connection and, closing,
        // checkpoints the WAL into the database file and removes it.
        if let Some(readers) = &self.readers {
            lock(&readers.idle).clear();
        }
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // Refreshes the planner's statistics where they are stale; cheap, and
        // best effort: a failure here loses nothing.
        if let Err(e) = writer.execute_batch("PRAGMA optimize") {
            tracing::debug!(error = %e, "PRAGMA optimize on close failed");
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.as_ref().map(|r| &r.path))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it when missing, and brings
    /// its schema up to date. A database from a newer berth is refused.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        let what = path.display().to_string();
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {what}: {e}")))?;
        conn.busy_timeout(BUSY_TIMEOUT).db()?;
        schema::check_not_newer(&conn, schema::MIGRATIONS.len(), &what)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{what}: cannot switch to WAL mode (journal mode is {mode})"
            )));
        }
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Process => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous).db()?;
        conn.pragma_update(None, "foreign_keys", "ON").db()?;
        prepare_statements(&conn)?;
        schema::migrate(&conn, schema::MIGRATIONS, &what)?;
        // SQLite's own absolute name of the file, so readers open the same one
        // whatever the working directory becomes.
        let path = match conn.path() {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => path.to_path_buf(),
        };
        Ok(Self {
            writer: Mutex::new(conn),
            readers: Some(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A private in-memory database, gone when the store is dropped.
    pub fn in_memory() -> Result<Self> {
        // SQLite's `memdb` VFS rather than `:memory:`: the same private
        // database, but commits cost what they cost on a file. A `:memory:`
        // database's page cache is the database, and every commit walks that
        // cache's whole hash table (`pcache1TruncateUnsafe`), which grows
        // with the database: 5 % of a simulated month. A name without a
        // leading `/` keeps the database private to this connection.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("file:berth-{}-{n}?vfs=memdb", std::process::id());
        let conn =
            Connection::open_with_flags(name, OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI)
                .db()?;
        // Nothing outlives the process, so nothing needs syncing; the
        // rollback journal stays in memory for the transactions' rollbacks.
        conn.query_row("PRAGMA journal_mode = MEMORY", [], |r| {
            r.get::<_, String>(0)
        })
        .db()?;
        conn.pragma_update(None, "synchronous", "OFF").db()?;
        conn.pragma_update(None, "foreign_keys", "ON").db()?;
        prepare_statements(&conn)?;
        schema::migrate(&conn, schema::MIGRATIONS, "the in-memory database")?;
        Ok(Self {
            writer: Mutex::new(conn),
            readers: None,
        })
    }

    /// Runs `f` over a consistent snapshot. Its writes fail.
    pub fn read<R, E>(&self, f: impl FnOnce(&dyn Tx) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        match &self.readers {
            Some(readers) => readers.with(|conn| run(conn, false, f))?,
            None => run(&lock(&self.writer), false, f),
        }
    }

    /// Rows this store's writer has changed (every write goes through it)
    /// and SQLite's `data_version` (which moves when another connection,
    /// another process, commits to the file): see [`crate::Store::change_mark`].
    pub fn change_mark(&self) -> Result<(u64, i64)> {
        let conn = lock(&self.writer);
        let others: i64 = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .db()?;
        Ok((conn.total_changes(), others))
    }

    /// Runs `f` in one write transaction, committed only when it returns `Ok`.
    pub fn write<R, E>(&self, f: impl FnOnce(&dyn Tx) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        run(&lock(&self.writer), true, f)
    }
}

/// How a connection keeps its statements: cached, and each planned once.
///
/// The query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`)
/// keeps a statement's plan whatever values are bound. Without it SQLite
/// (with STAT4) prepares a statement again on every run whose bound values
/// could change the plan (a `LIMIT ?`, an indexed `col = ?`), which cost
/// 12–17 % of the CPU of a scheduler tick; the plans are the same anyway.
fn prepare_statements(conn: &Connection) -> Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db()?;
    Ok(())
}

/// A mutex whose holder panicked is still usable: the panicking transaction was
/// rolled back when it unwound, so the connection is consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` in a transaction on `conn`: committed when writable and `f` succeeds,
/// rolled back otherwise (including when `f` panics).
fn run<R, E>(
    conn: &Connection,
    writable: bool,
    f: impl FnOnce(&dyn Tx) -> Result<R, E>,
) -> Result<R, E>
where
    E: From<StoreError>,
{
    if !conn.is_autocommit() {
        // Only reachable if a previous rollback itself failed.
        conn.execute_batch("ROLLBACK").db()?;
    }
    let behavior = if writable {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let t = Transaction::new_unchecked(conn, behavior).db()?;
    let tx = SqliteTx { conn: &t, writable };
    let out = f(&tx)?;
    if writable {
        t.commit().db()?;
    }
    Ok(out)
}

/// Read-only connections to a database file, opened on demand.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<R>(&self, f: impl FnOnce(&Connection) -> R) -> Result<R> {
        let idle = lock(&self.idle).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let out = f(&conn);
        // A connection whose closure panicked never comes back here: it is
        // dropped during the unwind.
        if conn.is_autocommit() {
            let mut idle = lock(&self.idle);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        Ok(out)
    }

    fn open(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open {} for reading: {e}",
                self.path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).db()?;
        prepare_statements(&conn)?;
        Ok(conn)
    }
}

/// rusqlite results as the store's.
trait DbResult<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResult<T> for rusqlite::Result<T> {
    fn db(self) -> Result<T> {
        self.map_err(|e| StoreError::Backend(e.to_string()))
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn conflict(what: &str, key: &str) -> StoreError {
    StoreError::Conflict {
        key: format!("{what} {key}"),
    }
}

fn corrupt(what: &str, key: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: format!("{what} {key}"),
        reason: reason.to_string(),
    }
}

/// A document without a field that keys or indexes it cannot be stored.
fn required<'a>(value: Option<&'a str>, what: &str, field: &str) -> Result<&'a str> {
    value.ok_or_else(|| StoreError::Backend(format!("cannot store a {what} without {field}")))
}

fn to_doc<T: Serialize>(value: &T, what: &str, key: &str) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("cannot serialise {what} {key}: {e}"))
    };
    // Most documents fit in 4 KiB: written into one allocation rather than
    // a growing one copied at each doubling.
    let mut out = Vec::with_capacity(4096);
    serde_json::to_writer(&mut out, value).map_err(|e| failed(&e))?;
    String::from_utf8(out).map_err(|e| failed(&e))
}

/// The document in column `idx` of `row`.
fn doc<T: DeserializeOwned>(row: &Row<'_>, idx: usize, what: &str, key: &str) -> Result<T> {
    match row.get_ref(idx).db()? {
        // Checked as UTF-8 once, whole: `from_slice` would check each
        // string of the document on its own, at several times the cost.
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => std::str::from_utf8(bytes)
            .map_err(|e| corrupt(what, key, e))
            .and_then(|text| serde_json::from_str(text).map_err(|e| corrupt(what, key, e))),
        other => Err(corrupt(
            what,
            key,
            format!("document is {:?}, not text", other.data_type()),
        )),
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A page from the rows of a listing query: `next` when it came back full.
fn page<T>(items: Vec<T>, last_key: Option<String>, limit: usize) -> Page<T> {
    let next = if limit > 0 && items.len() == limit {
        last_key
    } else {
        None
    };
    Page { items, next }
}

/// The family of a task definition ARN (`…:task-definition/FAMILY:REV`), or of a
/// bare `FAMILY:REV` / `FAMILY`.
fn family_of(task_definition_arn: &str) -> &str {
    let rest = match task_definition_arn.rfind("task-definition/") {
        Some(i) => &task_definition_arn[i + "task-definition/".len()..],
        None => task_definition_arn,
    };
    split_revision(rest).map_or(rest, |(family, _)| family)
}

/// `FAMILY:REV` → (`FAMILY`, REV).
fn split_revision(s: &str) -> Option<(&str, i64)> {
    let (family, rev) = s.rsplit_once(':')?;
    Some((family, rev.parse().ok()?))
}

/// Splits an attribute paging key made by [`attribute_key`].
fn split_attribute_key(key: &str) -> (&str, &str) {
    key.split_once('\u{0}').unwrap_or((key, ""))
}

fn attribute_key(target_id: &str, name: &str) -> String {
    format!("{target_id}\u{0}{name}")
}

/// Appends ` AND {column} = ?N` for a filter that is set.
fn filter_eq<'p>(
    sql: &mut String,
    params: &mut Vec<&'p dyn ToSql>,
    column: &str,
    value: &'p Option<String>,
) {
    if let Some(v) = value {
        params.push(v);
        sql.push_str(&format!(" AND {column} = ?{}", params.len()));
    }
}

/// The statement and parameters of a listing of tasks: `columns` of the
/// tasks `filter` selects after `after`, by ARN, at most `limit`.
fn task_listing<'p>(
    columns: &str,
    filter: &'p TaskFilter,
    after: &'p Option<&str>,
    limit: &'p i64,
) -> (String, Vec<&'p dyn ToSql>) {
    let mut sql = format!("SELECT {columns} FROM tasks WHERE cluster_arn = ?1");
    let mut params: Vec<&dyn ToSql> = vec![&filter.cluster_arn];
    filter_eq(&mut sql, &mut params, "family", &filter.family);
    filter_eq(&mut sql, &mut params, "started_by", &filter.started_by);
    filter_eq(&mut sql, &mut params, "grp", &filter.group);
    filter_eq(
        &mut sql,
        &mut params,
        "container_instance_arn",
        &filter.container_instance_arn,
    );
    filter_eq(
        &mut sql,
        &mut params,
        "desired_status",
        &filter.desired_status,
    );
    filter_eq(&mut sql, &mut params, "last_status", &filter.last_status);
    if filter.not_stopped {
        // Literally the condition of the partial indexes `tasks_live_*`
        // (migration 4), so the planner can use them: not a parameter.
        sql.push_str(" AND last_status IS NOT 'STOPPED'");
    }
    page_by_arn(sql, params, after, limit)
}

/// Ends a listing's statement: rows after `after` by ARN, at most `limit`.
fn page_by_arn<'p>(
    mut sql: String,
    mut params: Vec<&'p dyn ToSql>,
    after: &'p Option<&str>,
    limit: &'p i64,
) -> (String, Vec<&'p dyn ToSql>) {
    if let Some(after) = after {
        params.push(after);
        sql.push_str(&format!(" AND arn > ?{}", params.len()));
    }
    params.push(limit);
    sql.push_str(&format!(" ORDER BY arn LIMIT ?{}", params.len()));
    (sql, params)
}

/// The statement and parameters of a listing of container instances:
/// `columns` of a cluster's instances (of one status) after `after`, by
/// ARN, at most `limit`.
fn instance_listing<'p>(
    columns: &str,
    cluster_arn: &'p &str,
    status: &'p Option<&str>,
    after: &'p Option<&str>,
    limit: &'p i64,
) -> (String, Vec<&'p dyn ToSql>) {
    let mut sql = format!("SELECT {columns} FROM container_instances WHERE cluster_arn = ?1");
    let mut params: Vec<&dyn ToSql> = vec![cluster_arn];
    if let Some(status) = status {
        params.push(status);
        sql.push_str(&format!(" AND status = ?{}", params.len()));
    }
    page_by_arn(sql, params, after, limit)
}

/// A transaction on one connection.
struct SqliteTx<'c> {
    conn: &'c Connection,
    writable: bool,
}

const CLUSTER: &str = "cluster";
const CAPACITY_PROVIDER: &str = "capacity provider";
const TASK_DEFINITION: &str = "task definition";
const TASK: &str = "task";
const CONTAINER_INSTANCE: &str = "container instance";
const ATTRIBUTE: &str = "attribute";
const SETTING: &str = "setting";
const CLIENT_TOKEN: &str = "client token";
const SERVICE: &str = "service";
const SERVICE_DEPLOYMENT: &str = "service deployment";
const SERVICE_REVISION: &str = "service revision";

impl<'c> SqliteTx<'c> {
    fn stmt(&self, sql: &str) -> Result<CachedStatement<'c>> {
        self.conn.prepare_cached(sql).db()
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(StoreError::Backend(
                "a read transaction cannot write".into(),
            ))
        }
    }

    /// One `(version, doc)` row.
    fn get<T: DeserializeOwned>(
        &self,
        what: &str,
        key: &str,
        sql: &str,
        params: &[&dyn ToSql],
    ) -> Result<Option<Versioned<T>>> {
        let mut stmt = self.stmt(sql)?;
        let mut rows = stmt.query(params).db()?;
        match rows.next().db()? {
            None => Ok(None),
            Some(row) => Ok(Some(Versioned {
                version: row.get(0).db()?,
                value: doc(row, 1, what, key)?,
            })),
        }
    }

    /// Rows of a listing, each made an item and its paging key by `item`.
    fn list<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        limit: usize,
        mut item: impl FnMut(&Row<'_>) -> Result<(String, T)>,
    ) -> Result<Page<T>> {
        let mut stmt = self.stmt(sql)?;
        let mut rows = stmt.query(params).db()?;
        let mut items = Vec::new();
        let mut last = None;
        while let Some(row) = rows.next().db()? {
            let (key, value) = item(row)?;
            items.push(value);
            last = Some(key);
        }
        Ok(page(items, last, limit))
    }

    /// Rows of a listing of `(key, version)` pairs, paged by the key.
    fn list_versions(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        limit: usize,
    ) -> Result<Page<(String, i64)>> {
        let mut stmt = self.stmt(sql)?;
        let mut rows = stmt.query(params).db()?;
        let mut items: Vec<(String, i64)> = Vec::new();
        while let Some(row) = rows.next().db()? {
            items.push((row.get(0).db()?, row.get(1).db()?));
        }
        let last = items.last().map(|(k, _)| k.clone());
        Ok(page(items, last, limit))
    }

    /// Compare-and-swap write of a document row. `params` are the values of
    /// `?1..?N` of both statements; `update` also takes the new version as
    /// `?N+1` and the expected one as `?N+2`.
    fn put(
        &self,
        what: &str,
        key: &str,
        expect: Expect,
        insert: &str,
        update: &str,
        params: &[&dyn ToSql],
    ) -> Result<i64> {
        self.check_writable()?;
        let mapped = |e: rusqlite::Error| {
            if is_unique_violation(&e) {
                conflict(what, key)
            } else {
                StoreError::Backend(e.to_string())
            }
        };
        match expect {
            Expect::Absent => {
                self.insert(what, key, insert, params)?;
                Ok(1)
            }
            Expect::Version(expected) => {
                let next = expected.checked_add(1).ok_or_else(|| conflict(what, key))?;
                let mut all = params.to_vec();
                all.push(&next);
                all.push(&expected);
                match self.stmt(update)?.execute(&*all).map_err(mapped)? {
                    0 => Err(conflict(what, key)),
                    _ => Ok(next),
                }
            }
        }
    }

    /// Updates the document row of `table` whose `key_column` is `key`, at
    /// exactly version `expected`, to `doc` at the next version. SQLite
    /// rewrites the entries of every index holding a column an `UPDATE`
    /// sets, changed or not, so the row's indexed columns are read first
    /// and of `columns` only those whose values change are set. `fixed`
    /// columns must keep their values: a write that would change one is a
    /// conflict, as is a write at another version or of a missing row.
    /// Every column named is TEXT (or NULL).
    #[allow(clippy::too_many_arguments)]
    fn update_doc(
        &self,
        what: &str,
        table: &str,
        key_column: &str,
        key: &str,
        expected: i64,
        doc: &str,
        fixed: &[(&str, Option<&str>)],
        columns: &[(&str, Option<&str>)],
    ) -> Result<i64> {
        self.check_writable()?;
        let next = expected.checked_add(1).ok_or_else(|| conflict(what, key))?;
        let named: Vec<&str> = fixed.iter().chain(columns).map(|(c, _)| *c).collect();
        let select = format!(
            "SELECT rowid, version{}{} FROM {table} WHERE {key_column} = ?1",
            if named.is_empty() { "" } else { ", " },
            named.join(", ")
        );
        type Now = (i64, i64, Vec<Option<String>>);
        let row: Option<Now> = self
            .stmt(&select)?
            .query_row([key], |r| {
                let values = (0..named.len())
                    .map(|i| r.get(i + 2))
                    .collect::<rusqlite::Result<Vec<Option<String>>>>()?;
                Ok((r.get(0)?, r.get(1)?, values))
            })
            .optional()
            .db()?;
        let Some((rowid, version, old)) = row else {
            return Err(conflict(what, key));
        };
        let (old_fixed, old_columns) = old.split_at(fixed.len());
        let moved = fixed
            .iter()
            .zip(old_fixed)
            .any(|((_, v), o)| *v != o.as_deref());
        if version != expected || moved {
            return Err(conflict(what, key));
        }
        let mut sql = format!("UPDATE {table} SET doc = ?1, version = ?2");
        let mut params: Vec<&dyn ToSql> = vec![&doc, &next];
        for ((column, value), old) in columns.iter().zip(old_columns) {
            if *value != old.as_deref() {
                params.push(value);
                sql.push_str(&format!(", {column} = ?{}", params.len()));
            }
        }
        params.push(&rowid);
        params.push(&expected);
        sql.push_str(&format!(
            " WHERE rowid = ?{} AND version = ?{}",
            params.len() - 1,
            params.len()
        ));
        match self.stmt(&sql)?.execute(&*params).db()? {
            0 => Err(conflict(what, key)),
            _ => Ok(next),
        }
    }

    /// Inserts a row; one already there under the same key is a `Conflict`.
    fn insert(&self, what: &str, key: &str, sql: &str, params: &[&dyn ToSql]) -> Result<()> {
        self.check_writable()?;
        match self.stmt(sql)?.execute(params) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(conflict(what, key)),
            Err(e) => Err(StoreError::Backend(e.to_string())),
        }
    }

    /// Deletes a document row at exactly `version`.
    fn delete(&self, what: &str, key: &str, sql: &str, params: &[&dyn ToSql]) -> Result<()> {
        self.check_writable()?;
        match self.stmt(sql)?.execute(params).db()? {
            0 => Err(conflict(what, key)),
            _ => Ok(()),
        }
    }

    /// Executes a statement, returning how many rows it changed.
    fn exec(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize> {
        self.check_writable()?;
        self.stmt(sql)?.execute(params).db()
    }

    /// Where a task definition listing resumes after `arn`: the row's
    /// (family, revision), or what the ARN says when the row is gone.
    fn task_definition_position(&self, arn: &str, descending: bool) -> Result<(String, i64)> {
        let mut stmt = self.stmt("SELECT family, revision FROM task_definitions WHERE arn = ?1")?;
        let mut rows = stmt.query([arn]).db()?;
        if let Some(row) = rows.next().db()? {
            return Ok((row.get(0).db()?, row.get(1).db()?));
        }
        let rest = match arn.rfind("task-definition/") {
            Some(i) => &arn[i + "task-definition/".len()..],
            None => arn,
        };
        Ok(match split_revision(rest) {
            Some((family, revision)) => (family.to_owned(), revision),
            // A bare family: resume after all of its revisions.
            None if descending => (rest.to_owned(), i64::MIN),
            None => (rest.to_owned(), i64::MAX),
        })
    }
}

impl Tx for SqliteTx<'_> {
    // ---- clusters ----

    fn cluster(&self, name: &str) -> Result<Option<Versioned<Cluster>>> {
        self.get(
            CLUSTER,
            name,
            "SELECT version, doc FROM clusters WHERE cluster_name = ?1",
            &[&name],
        )
    }

    fn clusters(&self, after: Option<&str>, limit: usize) -> Result<Page<Cluster>> {
        let limit_p = limit_param(limit);
        let item = |row: &Row<'_>| -> Result<(String, Cluster)> {
            let arn: String = row.get(0).db()?;
            let value = doc(row, 1, CLUSTER, &arn)?;
            Ok((arn, value))
        };
        match after {
            Some(after) => self.list(
                "SELECT arn, doc FROM clusters WHERE arn > ?1 ORDER BY arn LIMIT ?2",
                &[&after, &limit_p],
                limit,
                item,
            ),
            None => self.list(
                "SELECT arn, doc FROM clusters ORDER BY arn LIMIT ?1",
                &[&limit_p],
                limit,
                item,
            ),
        }
    }

    fn put_cluster(&self, cluster: &Cluster, expect: Expect) -> Result<i64> {
        let name = required(cluster.cluster_name.as_deref(), CLUSTER, "clusterName")?;
        let arn = required(cluster.cluster_arn.as_deref(), CLUSTER, "clusterArn")?;
        let doc = to_doc(cluster, CLUSTER, name)?;
        self.put(
            CLUSTER,
            name,
            expect,
            "INSERT INTO clusters (cluster_name, arn, status, doc, version) VALUES (?1, ?2, ?3, ?4, 1)",
            "UPDATE clusters SET arn = ?2, status = ?3, doc = ?4, version = ?5
             WHERE cluster_name = ?1 AND version = ?6",
            &[&name, &arn, &cluster.status, &doc],
        )
    }

    // ---- capacity providers ----

    fn capacity_provider(&self, name: &str) -> Result<Option<Versioned<CapacityProvider>>> {
        self.get(
            CAPACITY_PROVIDER,
            name,
            "SELECT version, doc FROM capacity_providers WHERE name = ?1",
            &[&name],
        )
    }

    fn capacity_providers(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<CapacityProvider>> {
        let limit_p = limit_param(limit);
        let item = |row: &Row<'_>| -> Result<(String, CapacityProvider)> {
            let name: String = row.get(0).db()?;
            let value = doc(row, 1, CAPACITY_PROVIDER, &name)?;
            Ok((name, value))
        };
        match after {
            Some(after) => self.list(
                "SELECT name, doc FROM capacity_providers WHERE name > ?1 ORDER BY name LIMIT ?2",
                &[&after, &limit_p],
                limit,
                item,
            ),
            None => self.list(
                "SELECT name, doc FROM capacity_providers ORDER BY name LIMIT ?1",
                &[&limit_p],
                limit,
                item,
            ),
        }
    }

    fn put_capacity_provider(&self, cp: &CapacityProvider, expect: Expect) -> Result<i64> {
        let name = required(cp.name.as_deref(), CAPACITY_PROVIDER, "name")?;
        let status = cp.status.map(|s| s.as_str());
        let doc = to_doc(cp, CAPACITY_PROVIDER, name)?;
        self.put(
            CAPACITY_PROVIDER,
            name,
            expect,
            "INSERT INTO capacity_providers (name, arn, cluster, status, doc, version)
             VALUES (?1, ?2, ?3, ?4, ?5, 1)",
            "UPDATE capacity_providers SET arn = ?2, cluster = ?3, status = ?4, doc = ?5, version = ?6
             WHERE name = ?1 AND version = ?7",
            &[&name, &cp.capacity_provider_arn, &cp.cluster, &status, &doc],
        )
    }

    fn delete_capacity_provider(&self, name: &str, version: i64) -> Result<()> {
        self.delete(
            CAPACITY_PROVIDER,
            name,
            "DELETE FROM capacity_providers WHERE name = ?1 AND version = ?2",
            &[&name, &version],
        )
    }

    // ---- task definitions ----

    fn task_definition(
        &self,
        family: &str,
        revision: Option<i32>,
    ) -> Result<Option<Versioned<TaskDefinition>>> {
        match revision {
            Some(revision) => self.get(
                TASK_DEFINITION,
                &format!("{family}:{revision}"),
                "SELECT version, doc FROM task_definitions WHERE family = ?1 AND revision = ?2",
                &[&family, &revision],
            ),
            None => self.get(
                TASK_DEFINITION,
                family,
                "SELECT version, doc FROM task_definitions WHERE family = ?1 AND status = 'ACTIVE'
                 ORDER BY revision DESC LIMIT 1",
                &[&family],
            ),
        }
    }

    fn task_definitions(
        &self,
        filter: &TaskDefinitionFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>> {
        let family = filter.family.as_deref();
        let status = filter.status.map(|s| s.as_str());
        let position = after
            .map(|a| self.task_definition_position(a, filter.descending))
            .transpose()?;
        let limit_p = limit_param(limit);

        let mut sql = String::from("SELECT arn FROM task_definitions WHERE 1 = 1");
        let mut params: Vec<&dyn ToSql> = vec![];
        if let Some(family) = &family {
            params.push(family);
            sql.push_str(&format!(" AND family = ?{}", params.len()));
        }
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ?{}", params.len()));
        }
        if let Some((family, revision)) = &position {
            params.push(family);
            params.push(revision);
            let op = if filter.descending { "<" } else { ">" };
            let n = params.len();
            sql.push_str(&format!(" AND (family, revision) {op} (?{}, ?{n})", n - 1));
        }
        let order = if filter.descending { "DESC" } else { "ASC" };
        params.push(&limit_p);
        sql.push_str(&format!(
            " ORDER BY family {order}, revision {order} LIMIT ?{}",
            params.len()
        ));

        self.list(&sql, &params, limit, |row| {
            let arn: String = row.get(0).db()?;
            Ok((arn.clone(), arn))
        })
    }

    fn families(
        &self,
        prefix: Option<&str>,
        status: Option<TaskDefinitionStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>> {
        let prefix = prefix.unwrap_or("");
        let status = status.map(|s| s.as_str());
        let limit_p = limit_param(limit);

        let mut sql = String::from(
            "SELECT DISTINCT family FROM task_definitions
             WHERE family >= ?1 AND substr(family, 1, length(?1)) = ?1",
        );
        let mut params: Vec<&dyn ToSql> = vec![&prefix];
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ?{}", params.len()));
        }
        if let Some(after) = &after {
            params.push(after);
            sql.push_str(&format!(" AND family > ?{}", params.len()));
        }
        params.push(&limit_p);
        sql.push_str(&format!(" ORDER BY family LIMIT ?{}", params.len()));

        self.list(&sql, &params, limit, |row| {
            let family: String = row.get(0).db()?;
            Ok((family.clone(), family))
        })
    }

    fn next_revision(&self, family: &str) -> Result<i32> {
        self.check_writable()?;
        let revision: i64 = self
            .stmt(
                "INSERT INTO families (family, last_revision) VALUES (?1, 1)
                 ON CONFLICT (family) DO UPDATE SET last_revision = last_revision + 1
                 RETURNING last_revision",
            )?
            .query_row([family], |r| r.get(0))
            .db()?;
        i32::try_from(revision).map_err(|_| {
            StoreError::Backend(format!(
                "task definition family {family} has run out of revisions"
            ))
        })
    }

    fn put_task_definition(&self, td: &TaskDefinition, expect: Expect) -> Result<i64> {
        let family = required(td.family.as_deref(), TASK_DEFINITION, "family")?;
        let arn = required(
            td.task_definition_arn.as_deref(),
            TASK_DEFINITION,
            "taskDefinitionArn",
        )?;
        let key = format!("{family}:{}", td.revision);
        let status = td.status.map(|s| s.as_str());
        let doc = to_doc(td, TASK_DEFINITION, &key)?;
        let version = self.put(
            TASK_DEFINITION,
            &key,
            expect,
            "INSERT INTO task_definitions (family, revision, arn, status, doc, version)
             VALUES (?1, ?2, ?3, ?4, ?5, 1)",
            "UPDATE task_definitions SET arn = ?3, status = ?4, doc = ?5, version = ?6
             WHERE family = ?1 AND revision = ?2 AND version = ?7",
            &[&family, &td.revision, &arn, &status, &doc],
        )?;
        if expect == Expect::Absent {
            // A revision stored without next_revision still reserves its number.
            self.exec(
                "INSERT INTO families (family, last_revision) VALUES (?1, ?2)
                 ON CONFLICT (family) DO UPDATE SET last_revision = max(last_revision, excluded.last_revision)",
                &[&family, &td.revision],
            )?;
        }
        Ok(version)
    }

    fn delete_task_definition(&self, family: &str, revision: i32, version: i64) -> Result<()> {
        self.delete(
            TASK_DEFINITION,
            &format!("{family}:{revision}"),
            "DELETE FROM task_definitions WHERE family = ?1 AND revision = ?2 AND version = ?3",
            &[&family, &revision, &version],
        )
    }

    // ---- tasks ----

    fn task(&self, arn: &str) -> Result<Option<Versioned<Task>>> {
        self.get(
            TASK,
            arn,
            "SELECT version, doc FROM tasks WHERE arn = ?1",
            &[&arn],
        )
    }

    fn tasks(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<Task>>> {
        let limit_p = limit_param(limit);
        let (sql, params) = task_listing("arn, version, doc", filter, &after, &limit_p);
        self.list(&sql, &params, limit, |row| {
            let arn: String = row.get(0).db()?;
            let value = Versioned {
                version: row.get(1).db()?,
                value: doc(row, 2, TASK, &arn)?,
            };
            Ok((arn, value))
        })
    }

    fn placed_task_versions(&self, cluster_arn: &str) -> Result<Vec<PlacedTask>> {
        // The condition of the partial index `tasks_live_instance`, which
        // holds every column read: the index alone is read.
        let mut stmt = self.stmt(
            "SELECT container_instance_arn, desired_status, arn, version FROM tasks
             WHERE cluster_arn = ?1 AND container_instance_arn IS NOT NULL
               AND last_status IS NOT 'STOPPED'
             ORDER BY container_instance_arn, desired_status, arn",
        )?;
        let rows = stmt
            .query_map([cluster_arn], |r| {
                Ok(PlacedTask {
                    container_instance_arn: r.get(0)?,
                    desired_status: r.get(1)?,
                    arn: r.get(2)?,
                    version: r.get(3)?,
                })
            })
            .db()?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db()
    }

    fn task_loads(&self, cluster_arn: &str, container_instance_arn: &str) -> Result<Vec<TaskLoad>> {
        // The condition of the partial index `tasks_live_instance`.
        let mut stmt = self.stmt(
            "SELECT arn, doc FROM tasks
             WHERE cluster_arn = ?1 AND container_instance_arn = ?2
               AND last_status IS NOT 'STOPPED'
             ORDER BY desired_status, arn",
        )?;
        let mut rows = stmt.query([cluster_arn, container_instance_arn]).db()?;
        let mut out = vec![];
        while let Some(row) = rows.next().db()? {
            let arn: String = row.get(0).db()?;
            out.push(doc(row, 1, TASK, &arn)?);
        }
        Ok(out)
    }

    fn task_versions(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, i64)>> {
        let limit_p = limit_param(limit);
        let (sql, params) = task_listing("arn, version", filter, &after, &limit_p);
        self.list_versions(&sql, &params, limit)
    }

    fn task_counts(&self, cluster_arn: &str) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.stmt(
            "SELECT last_status, count(*) FROM tasks
             WHERE cluster_arn = ?1 AND last_status IS NOT NULL
             GROUP BY last_status ORDER BY last_status",
        )?;
        let rows = stmt
            .query_map([cluster_arn], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db()
    }

    fn put_task(&self, task: &Task, expect: Expect) -> Result<i64> {
        let arn = required(task.task_arn.as_deref(), TASK, "taskArn")?;
        let cluster_arn = required(task.cluster_arn.as_deref(), TASK, "clusterArn")?;
        let family = task.task_definition_arn.as_deref().map(family_of);
        let doc = to_doc(task, TASK, arn)?;
        let Expect::Version(expected) = expect else {
            self.insert(
                TASK,
                arn,
                "INSERT INTO tasks (arn, cluster_arn, family, started_by, grp, container_instance_arn,
                                    desired_status, last_status, doc, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
                &[
                    &arn,
                    &cluster_arn,
                    &family,
                    &task.started_by,
                    &task.group,
                    &task.container_instance_arn,
                    &task.desired_status,
                    &task.last_status,
                    &doc,
                ],
            )?;
            return Ok(1);
        };
        // Cluster, family, startedBy and group are fixed when a task is
        // created: a write that would change them is a conflict.
        self.update_doc(
            TASK,
            "tasks",
            "arn",
            arn,
            expected,
            &doc,
            &[
                ("cluster_arn", Some(cluster_arn)),
                ("family", family),
                ("started_by", task.started_by.as_deref()),
                ("grp", task.group.as_deref()),
            ],
            &[
                (
                    "container_instance_arn",
                    task.container_instance_arn.as_deref(),
                ),
                ("desired_status", task.desired_status.as_deref()),
                ("last_status", task.last_status.as_deref()),
            ],
        )
    }

    // ---- services ----

    fn service(&self, arn: &str) -> Result<Option<Versioned<Service>>> {
        self.get(
            SERVICE,
            arn,
            "SELECT version, doc FROM services WHERE arn = ?1",
            &[&arn],
        )
    }

    fn services(
        &self,
        filter: &ServiceFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<Service>>> {
        let limit_p = limit_param(limit);
        let mut sql = String::from("SELECT arn, version, doc FROM services WHERE cluster_arn = ?1");
        let mut params: Vec<&dyn ToSql> = vec![&filter.cluster_arn];
        if !filter.statuses.is_empty() {
            let mut marks = vec![];
            for status in &filter.statuses {
                params.push(status);
                marks.push(format!("?{}", params.len()));
            }
            sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
        }
        filter_eq(&mut sql, &mut params, "launch_type", &filter.launch_type);
        filter_eq(
            &mut sql,
            &mut params,
            "scheduling_strategy",
            &filter.scheduling_strategy,
        );
        if let Some(after) = &after {
            params.push(after);
            sql.push_str(&format!(" AND arn > ?{}", params.len()));
        }
        params.push(&limit_p);
        sql.push_str(&format!(" ORDER BY arn LIMIT ?{}", params.len()));

        self.list(&sql, &params, limit, |row| {
            let arn: String = row.get(0).db()?;
            let value = Versioned {
                version: row.get(1).db()?,
                value: doc(row, 2, SERVICE, &arn)?,
            };
            Ok((arn, value))
        })
    }

    fn put_service(&self, service: &Service, expect: Expect) -> Result<i64> {
        let arn = required(service.service_arn.as_deref(), SERVICE, "serviceArn")?;
        let cluster_arn = required(service.cluster_arn.as_deref(), SERVICE, "clusterArn")?;
        let name = required(service.service_name.as_deref(), SERVICE, "serviceName")?;
        let launch_type = service
            .launch_type
            .unwrap_or(LaunchType::ManagedInstances)
            .as_str();
        let scheduling = service.scheduling_strategy.map(|s| s.as_str());
        let doc = to_doc(service, SERVICE, arn)?;
        self.put(
            SERVICE,
            arn,
            expect,
            "INSERT INTO services (arn, cluster_arn, name, status, launch_type, scheduling_strategy,
                                   doc, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
            "UPDATE services SET cluster_arn = ?2, name = ?3, status = ?4, launch_type = ?5,
                                 scheduling_strategy = ?6, doc = ?7, version = ?8
             WHERE arn = ?1 AND version = ?9",
            &[
                &arn,
                &cluster_arn,
                &name,
                &service.status,
                &launch_type,
                &scheduling,
                &doc,
            ],
        )
    }

    fn service_deployment(&self, arn: &str) -> Result<Option<Versioned<ServiceDeployment>>> {
        self.get(
            SERVICE_DEPLOYMENT,
            arn,
            "SELECT version, doc FROM service_deployments WHERE arn = ?1",
            &[&arn],
        )
    }

    fn service_deployments(
        &self,
        service_arn: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<ServiceDeployment>>> {
        let limit_p = limit_param(limit);
        let after = after.unwrap_or("");
        self.list(
            "SELECT arn, version, doc FROM service_deployments
             WHERE service_arn = ?1 AND arn > ?2 ORDER BY arn LIMIT ?3",
            &[&service_arn, &after, &limit_p],
            limit,
            |row| {
                let arn: String = row.get(0).db()?;
                let value = Versioned {
                    version: row.get(1).db()?,
                    value: doc(row, 2, SERVICE_DEPLOYMENT, &arn)?,
                };
                Ok((arn, value))
            },
        )
    }

    fn put_service_deployment(
        &self,
        deployment: &ServiceDeployment,
        expect: Expect,
    ) -> Result<i64> {
        let arn = required(
            deployment.service_deployment_arn.as_deref(),
            SERVICE_DEPLOYMENT,
            "serviceDeploymentArn",
        )?;
        let service_arn = required(
            deployment.service_arn.as_deref(),
            SERVICE_DEPLOYMENT,
            "serviceArn",
        )?;
        let status = deployment.status.map(|s| s.as_str());
        let doc = to_doc(deployment, SERVICE_DEPLOYMENT, arn)?;
        self.put(
            SERVICE_DEPLOYMENT,
            arn,
            expect,
            "INSERT INTO service_deployments (arn, service_arn, status, doc, version)
             VALUES (?1, ?2, ?3, ?4, 1)",
            "UPDATE service_deployments SET service_arn = ?2, status = ?3, doc = ?4, version = ?5
             WHERE arn = ?1 AND version = ?6",
            &[&arn, &service_arn, &status, &doc],
        )
    }

    fn service_revision(&self, arn: &str) -> Result<Option<Versioned<ServiceRevision>>> {
        self.get(
            SERVICE_REVISION,
            arn,
            "SELECT version, doc FROM service_revisions WHERE arn = ?1",
            &[&arn],
        )
    }

    fn put_service_revision(&self, revision: &ServiceRevision, expect: Expect) -> Result<i64> {
        let arn = required(
            revision.service_revision_arn.as_deref(),
            SERVICE_REVISION,
            "serviceRevisionArn",
        )?;
        let service_arn = required(
            revision.service_arn.as_deref(),
            SERVICE_REVISION,
            "serviceArn",
        )?;
        let doc = to_doc(revision, SERVICE_REVISION, arn)?;
        self.put(
            SERVICE_REVISION,
            arn,
            expect,
            "INSERT INTO service_revisions (arn, service_arn, doc, version) VALUES (?1, ?2, ?3, 1)",
            "UPDATE service_revisions SET service_arn = ?2, doc = ?3, version = ?4
             WHERE arn = ?1 AND version = ?5",
            &[&arn, &service_arn, &doc],
        )
    }

    // ---- container instances ----

    fn container_instance(&self, arn: &str) -> Result<Option<Versioned<ContainerInstance>>> {
        self.get(
            CONTAINER_INSTANCE,
            arn,
            "SELECT version, doc FROM container_instances WHERE arn = ?1",
            &[&arn],
        )
    }

    fn container_instances(
        &self,
        cluster_arn: &str,
        status: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<ContainerInstance>>> {
        let limit_p = limit_param(limit);
        let (sql, params) =
            instance_listing("arn, version, doc", &cluster_arn, &status, &after, &limit_p);
        self.list(&sql, &params, limit, |row| {
            let arn: String = row.get(0).db()?;
            let value = Versioned {
                version: row.get(1).db()?,
                value: doc(row, 2, CONTAINER_INSTANCE, &arn)?,
            };
            Ok((arn, value))
        })
    }

    fn container_instance_versions(
        &self,
        cluster_arn: &str,
        status: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, i64)>> {
        let limit_p = limit_param(limit);
        let (sql, params) =
            instance_listing("arn, version", &cluster_arn, &status, &after, &limit_p);
        self.list_versions(&sql, &params, limit)
    }

    fn put_container_instance(
        &self,
        cluster_arn: &str,
        ci: &ContainerInstance,
        expect: Expect,
    ) -> Result<i64> {
        let arn = required(
            ci.container_instance_arn.as_deref(),
            CONTAINER_INSTANCE,
            "containerInstanceArn",
        )?;
        let doc = to_doc(ci, CONTAINER_INSTANCE, arn)?;
        let Expect::Version(expected) = expect else {
            self.insert(
                CONTAINER_INSTANCE,
                arn,
                "INSERT INTO container_instances (arn, cluster_arn, status, ec2_instance_id, doc, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                &[&arn, &cluster_arn, &ci.status, &ci.ec2_instance_id, &doc],
            )?;
            return Ok(1);
        };
        self.update_doc(
            CONTAINER_INSTANCE,
            "container_instances",
            "arn",
            arn,
            expected,
            &doc,
            &[],
            &[
                ("cluster_arn", Some(cluster_arn)),
                ("status", ci.status.as_deref()),
                ("ec2_instance_id", ci.ec2_instance_id.as_deref()),
            ],
        )
    }

    fn delete_container_instance(&self, arn: &str, version: i64) -> Result<()> {
        self.delete(
            CONTAINER_INSTANCE,
            arn,
            "DELETE FROM container_instances WHERE arn = ?1 AND version = ?2",
            &[&arn, &version],
        )
    }

    // ---- attributes ----

    fn put_attribute(&self, cluster_arn: &str, attribute: &Attribute) -> Result<()> {
        let name = required(attribute.name.as_deref(), ATTRIBUTE, "name")?;
        // An attribute without a target is stored under the empty target id.
        let target_id = attribute.target_id.as_deref().unwrap_or("");
        let target_type = attribute.target_type.map(|t| t.as_str());
        self.exec(
            "INSERT INTO attributes (cluster_arn, target_id, name, target_type, value)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (cluster_arn, target_id, name)
             DO UPDATE SET target_type = excluded.target_type, value = excluded.value",
            &[
                &cluster_arn,
                &target_id,
                &name,
                &target_type,
                &attribute.value,
            ],
        )?;
        Ok(())
    }

    fn delete_attribute(&self, cluster_arn: &str, target_id: &str, name: &str) -> Result<bool> {
        let n = self.exec(
            "DELETE FROM attributes WHERE cluster_arn = ?1 AND target_id = ?2 AND name = ?3",
            &[&cluster_arn, &target_id, &name],
        )?;
        Ok(n > 0)
    }

    fn attributes(
        &self,
        filter: &AttributeFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Attribute>> {
        let limit_p = limit_param(limit);
        let after = after.map(split_attribute_key);
        let mut sql = String::from(
            "SELECT target_id, name, target_type, value FROM attributes WHERE cluster_arn = ?1",
        );
        let mut params: Vec<&dyn ToSql> = vec![&filter.cluster_arn];
        filter_eq(&mut sql, &mut params, "target_type", &filter.target_type);
        filter_eq(&mut sql, &mut params, "name", &filter.name);
        filter_eq(&mut sql, &mut params, "value", &filter.value);
        if let Some((target_id, name)) = &after {
            params.push(target_id);
            params.push(name);
            let n = params.len();
            sql.push_str(&format!(" AND (target_id, name) > (?{}, ?{n})", n - 1));
        }
        params.push(&limit_p);
        sql.push_str(&format!(
            " ORDER BY target_id, name LIMIT ?{}",
            params.len()
        ));

        self.list(&sql, &params, limit, |row| {
            let target_id: String = row.get(0).db()?;
            let name: String = row.get(1).db()?;
            let key = attribute_key(&target_id, &name);
            let target_type = match row.get::<_, Option<String>>(2).db()? {
                None => None,
                Some(t) => Some(TargetType::parse(&t).ok_or_else(|| {
                    corrupt(ATTRIBUTE, &key, format!("unknown target type {t:?}"))
                })?),
            };
            let attribute = Attribute {
                name: Some(name),
                value: row.get(3).db()?,
                target_type,
                target_id: (!target_id.is_empty()).then_some(target_id),
            };
            Ok((key, attribute))
        })
    }

    fn attribute_count(&self, cluster_arn: &str, target_id: &str) -> Result<i64> {
        self.stmt("SELECT count(*) FROM attributes WHERE cluster_arn = ?1 AND target_id = ?2")?
            .query_row([cluster_arn, target_id], |r| r.get(0))
            .db()
    }

    // ---- account settings ----

    fn put_setting(&self, setting: &Setting) -> Result<()> {
        let name = setting
            .name
            .map(|n| n.as_str())
            .ok_or_else(|| StoreError::Backend("cannot store a setting without name".into()))?;
        let principal = setting.principal_arn.as_deref().unwrap_or("default");
        let r#type = setting.r#type.map(|t| t.as_str());
        self.exec(
            "INSERT INTO settings (principal_arn, name, value, type) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (principal_arn, name) DO UPDATE SET value = excluded.value, type = excluded.type",
            &[&principal, &name, &setting.value, &r#type],
        )?;
        Ok(())
    }

    fn delete_setting(&self, principal_arn: &str, name: &str) -> Result<bool> {
        let n = self.exec(
            "DELETE FROM settings WHERE principal_arn = ?1 AND name = ?2",
            &[&principal_arn, &name],
        )?;
        Ok(n > 0)
    }

    fn settings(&self, principal_arn: &str) -> Result<Vec<Setting>> {
        let mut stmt = self.stmt(
            "SELECT name, value, type FROM settings WHERE principal_arn = ?1 ORDER BY name",
        )?;
        let mut rows = stmt.query([principal_arn]).db()?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().db()? {
            let name: String = row.get(0).db()?;
            let key = format!("{principal_arn} {name}");
            let parsed = SettingName::parse(&name)
                .ok_or_else(|| corrupt(SETTING, &key, format!("unknown setting name {name:?}")))?;
            let r#type = match row.get::<_, Option<String>>(2).db()? {
                None => None,
                Some(t) => Some(SettingType::parse(&t).ok_or_else(|| {
                    corrupt(SETTING, &key, format!("unknown setting type {t:?}"))
                })?),
            };
            out.push(Setting {
                name: Some(parsed),
                value: row.get(1).db()?,
                principal_arn: Some(principal_arn.to_owned()),
                r#type,
            });
        }
        Ok(out)
    }

    // ---- idempotency ----

    fn client_token(&self, cluster_arn: &str, token: &str) -> Result<Option<ClientToken>> {
        let mut stmt = self.stmt(
            "SELECT request_digest, task_arns FROM client_tokens WHERE cluster_arn = ?1 AND token = ?2",
        )?;
        let mut rows = stmt.query([cluster_arn, token]).db()?;
        let Some(row) = rows.next().db()? else {
            return Ok(None);
        };
        let key = format!("{cluster_arn} {token}");
        Ok(Some(ClientToken {
            request_digest: row.get(0).db()?,
            task_arns: doc(row, 1, CLIENT_TOKEN, &key)?,
        }))
    }

    /// Records a token the first time; a second record of the same token is a `Conflict`.
    fn put_client_token(&self, cluster_arn: &str, token: &str, value: &ClientToken) -> Result<()> {
        let key = format!("{cluster_arn} {token}");
        let arns = to_doc(&value.task_arns, CLIENT_TOKEN, &key)?;
        self.insert(
            CLIENT_TOKEN,
            &key,
            "INSERT INTO client_tokens (cluster_arn, token, request_digest, task_arns) VALUES (?1, ?2, ?3, ?4)",
            &[&cluster_arn, &token, &value.request_digest, &arns],
        )
    }

    // ---- documents ----

    fn document(&self, kind: &str, key: &str) -> Result<Option<Versioned<String>>> {
        let mut stmt =
            self.stmt("SELECT version, doc FROM documents WHERE kind = ?1 AND key = ?2")?;
        let mut rows = stmt.query([kind, key]).db()?;
        match rows.next().db()? {
            None => Ok(None),
            Some(row) => Ok(Some(Versioned {
                version: row.get(0).db()?,
                value: row.get(1).db()?,
            })),
        }
    }

    fn documents(
        &self,
        kind: &str,
        parent: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Versioned<String>)>> {
        let limit_p = limit_param(limit);
        let after = after.unwrap_or("");
        let item = |row: &Row<'_>| {
            let key: String = row.get(0).db()?;
            let value = Versioned {
                version: row.get(1).db()?,
                value: row.get(2).db()?,
            };
            Ok((key.clone(), (key, value)))
        };
        match parent {
            Some(parent) => self.list(
                "SELECT key, version, doc FROM documents
                 WHERE kind = ?1 AND parent = ?2 AND key > ?3 ORDER BY key LIMIT ?4",
                &[&kind, &parent, &after, &limit_p],
                limit,
                item,
            ),
            None => self.list(
                "SELECT key, version, doc FROM documents
                 WHERE kind = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
                &[&kind, &after, &limit_p],
                limit,
                item,
            ),
        }
    }

    fn put_document(
        &self,
        kind: &str,
        key: &str,
        parent: &str,
        doc: &str,
        expect: Expect,
    ) -> Result<i64> {
        self.put(
            kind,
            key,
            expect,
            "INSERT INTO documents (kind, key, parent, doc, version) VALUES (?1, ?2, ?3, ?4, 1)",
            "UPDATE documents SET parent = ?3, doc = ?4, version = ?5
             WHERE kind = ?1 AND key = ?2 AND version = ?6",
            &[&kind, &key, &parent, &doc],
        )
    }

    fn delete_document(&self, kind: &str, key: &str, version: i64) -> Result<()> {
        self.delete(
            kind,
            key,
            "DELETE FROM documents WHERE kind = ?1 AND key = ?2 AND version = ?3",
            &[&kind, &key, &version],
        )
    }

    // ---- meta ----

    fn meta(&self, key: &str) -> Result<Option<String>> {
        let mut stmt = self.stmt("SELECT value FROM meta WHERE key = ?1")?;
        let mut rows = stmt.query([key]).db()?;
        match rows.next().db()? {
            Some(row) => Ok(Some(row.get(0).db()?)),
            None => Ok(None),
        }
    }

    fn put_meta(&self, key: &str, value: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn metas(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        // Keys compare bytewise: those starting with the prefix lie between
        // it and it followed by the greatest character.
        let end = format!("{prefix}{}", char::MAX);
        let mut stmt =
            self.stmt("SELECT key, value FROM meta WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
        let rows = stmt
            .query_map([prefix, end.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .db()?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db()
    }

    // ---- metering ----

    fn open_instance_meter(&self, m: &InstanceMeter) -> Result<bool> {
        let changed = self.exec(
            "INSERT INTO instance_meters (instance_id, cluster_arn, container_instance_arn,
                 capacity_provider, instance_type, region, purchase_option, cpu_units,
                 memory_mib, price_per_hour, fee_per_hour, price_table, fee_table,
                 launched_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (instance_id) DO NOTHING",
            &[
                &m.instance_id,
                &m.cluster_arn,
                &m.container_instance_arn,
                &m.capacity_provider,
                &m.instance_type,
                &m.region,
                &m.purchase_option.as_str(),
                &m.cpu_units,
                &(m.memory_mib as i64),
                &m.price_per_hour,
                &m.fee_per_hour,
                &m.price_table,
                &m.fee_table,
                &m.launched_at,
                &m.ended_at,
            ],
        )?;
        Ok(changed > 0)
    }

    fn void_instance_meter(&self, instance_id: &str) -> Result<bool> {
        self.exec(
            "DELETE FROM task_usage WHERE instance_id = ?1",
            &[&instance_id],
        )?;
        let changed = self.exec(
            "DELETE FROM instance_meters WHERE instance_id = ?1",
            &[&instance_id],
        )?;
        Ok(changed > 0)
    }

    fn close_instance_meter(&self, instance_id: &str, at: f64) -> Result<bool> {
        let changed = self.exec(
            "UPDATE instance_meters SET ended_at = max(launched_at, ?2)
             WHERE instance_id = ?1 AND ended_at IS NULL",
            &[&instance_id, &at],
        )?;
        self.exec(
            "UPDATE task_usage SET stopped_at = max(started_at, ?2)
             WHERE instance_id = ?1 AND stopped_at IS NULL",
            &[&instance_id, &at],
        )?;
        Ok(changed > 0)
    }

    fn open_task_usage(&self, u: &TaskUsage) -> Result<bool> {
        let changed = self.exec(
            "INSERT INTO task_usage (task_arn, instance_id, cluster_arn, grp, family, cpu_units,
                 memory_mib, gpus, architecture, started_at, stopped_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (task_arn, instance_id) DO NOTHING",
            &[
                &u.task_arn,
                &u.instance_id,
                &u.cluster_arn,
                &u.group,
                &u.family,
                &u.cpu_units,
                &(u.memory_mib as i64),
                &u.gpus,
                &u.architecture,
                &u.started_at,
                &u.stopped_at,
            ],
        )?;
        Ok(changed > 0)
    }

    fn close_task_usage(&self, task_arn: &str, instance_id: &str, at: f64) -> Result<bool> {
        let changed = self.exec(
            "UPDATE task_usage SET stopped_at = max(started_at, ?3)
             WHERE task_arn = ?1 AND instance_id = ?2 AND stopped_at IS NULL",
            &[&task_arn, &instance_id, &at],
        )?;
        Ok(changed > 0)
    }

    fn instance_meters(
        &self,
        cluster_arn: Option<&str>,
        since: f64,
        until: f64,
    ) -> Result<Vec<InstanceMeter>> {
        const COLUMNS: &str = "SELECT instance_id, cluster_arn, container_instance_arn,
                 capacity_provider, instance_type, region, purchase_option, cpu_units,
                 memory_mib, price_per_hour, fee_per_hour, price_table, fee_table,
                 launched_at, ended_at FROM instance_meters
             WHERE launched_at < ?1 AND (ended_at IS NULL OR max(ended_at, launched_at + 60) > ?2)";
        let row_to =
            |row: &Row<'_>| -> Result<InstanceMeter> {
                let option: String = row.get(6).db()?;
                let instance_id: String = row.get(0).db()?;
                let purchase_option = berth_model::meter::PurchaseOption::parse(&option)
                    .ok_or_else(|| StoreError::Corrupt {
                        key: format!("instance meter {instance_id}"),
                        reason: format!("unknown purchase option `{option}`"),
                    })?;
                let memory: i64 = row.get(8).db()?;
                Ok(InstanceMeter {
                    instance_id,
                    cluster_arn: row.get(1).db()?,
                    container_instance_arn: row.get(2).db()?,
                    capacity_provider: row.get(3).db()?,
                    instance_type: row.get(4).db()?,
                    region: row.get(5).db()?,
                    purchase_option,
                    cpu_units: row.get(7).db()?,
                    memory_mib: memory.max(0) as u64,
                    price_per_hour: row.get(9).db()?,
                    fee_per_hour: row.get(10).db()?,
                    price_table: row.get(11).db()?,
                    fee_table: row.get(12).db()?,
                    launched_at: row.get(13).db()?,
                    ended_at: row.get(14).db()?,
                })
            };
        let mut out = vec![];
        match cluster_arn {
            Some(c) => {
                let mut stmt = self.stmt(&format!(
                    "{COLUMNS} AND cluster_arn = ?3 ORDER BY instance_id"
                ))?;
                let mut rows = stmt.query(rusqlite::params![until, since, c]).db()?;
                while let Some(row) = rows.next().db()? {
                    out.push(row_to(row)?);
                }
            }
            None => {
                let mut stmt = self.stmt(&format!("{COLUMNS} ORDER BY instance_id"))?;
                let mut rows = stmt.query(rusqlite::params![until, since]).db()?;
                while let Some(row) = rows.next().db()? {
                    out.push(row_to(row)?);
                }
            }
        }
        Ok(out)
    }

    fn task_usages(&self, instance_id: &str) -> Result<Vec<TaskUsage>> {
        let mut stmt = self.stmt(
            "SELECT task_arn, instance_id, cluster_arn, grp, family, cpu_units, memory_mib, gpus,
                 architecture, started_at, stopped_at
             FROM task_usage WHERE instance_id = ?1 ORDER BY started_at, task_arn",
        )?;
        let mut rows = stmt.query([instance_id]).db()?;
        let mut out = vec![];
        while let Some(row) = rows.next().db()? {
            let memory: i64 = row.get(6).db()?;
            out.push(TaskUsage {
                task_arn: row.get(0).db()?,
                instance_id: row.get(1).db()?,
                cluster_arn: row.get(2).db()?,
                group: row.get(3).db()?,
                family: row.get(4).db()?,
                cpu_units: row.get(5).db()?,
                memory_mib: memory.max(0) as u64,
                gpus: row.get(7).db()?,
                architecture: row.get(8).db()?,
                started_at: row.get(9).db()?,
                stopped_at: row.get(10).db()?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pragma(store: &SqliteStore, name: &str) -> String {
        let conn = lock(&store.writer);
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s,
            other => format!("{other:?}"),
        })
        .unwrap()
    }

    #[test]
    fn pragmas_follow_durability() {
        let dir = tempfile::tempdir().unwrap();
        let full = SqliteStore::open(&dir.path().join("full.db"), Durability::Full).unwrap();
        assert_eq!(pragma(&full, "journal_mode"), "wal");
        assert_eq!(pragma(&full, "synchronous"), "2");
        assert_eq!(pragma(&full, "foreign_keys"), "1");
        assert_eq!(pragma(&full, "busy_timeout"), "5000");
        let process =
            SqliteStore::open(&dir.path().join("process.db"), Durability::Process).unwrap();
        assert_eq!(pragma(&process, "synchronous"), "1");
    }

    #[test]
    fn migrations_apply_only_the_missing_ones() {
        let conn = Connection::open_in_memory().unwrap();
        let first = [MIGRATION_TEST_1];
        schema::migrate(&conn, &first, "test").unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 1);
        conn.execute("INSERT INTO t1 (x) VALUES (1)", []).unwrap();

        // A newer berth adds a migration: only it runs, and the data stays.
        let both = [MIGRATION_TEST_1, MIGRATION_TEST_2];
        schema::migrate(&conn, &both, "test").unwrap();
        schema::migrate(&conn, &both, "test").unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 2);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        let applied: Vec<i64> = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(applied, [1, 2]);

        // The older berth refuses it.
        let err = schema::migrate(&conn, &first, "test").unwrap_err();
        assert!(err.to_string().contains("newer berth"), "{err}");
    }

    #[test]
    fn failed_migration_leaves_the_previous_version() {
        let conn = Connection::open_in_memory().unwrap();
        schema::migrate(&conn, &[MIGRATION_TEST_1], "test").unwrap();
        let broken = [MIGRATION_TEST_1, "CREATE TABLE t2 (y); THIS IS NOT SQL;"];
        let err = schema::migrate(&conn, &broken, "test").unwrap_err();
        assert!(err.to_string().contains("migration 2"), "{err}");
        assert_eq!(schema::version(&conn).unwrap(), 1);
        let t2: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 't2'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(t2, 0);
    }

    /// The scheduler's reads of tasks not yet stopped, by instance and by
    /// group, are planned on the partial indexes of those tasks alone.
    #[test]
    fn reads_of_tasks_not_stopped_use_the_partial_indexes() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = lock(&store.writer);
        let plan = |filter: &TaskFilter, after: Option<&str>| -> String {
            let limit = 100i64;
            let (sql, params) = task_listing("arn, version, doc", filter, &after, &limit);
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(params.as_slice(), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap();
            rows.join("; ")
        };
        let base = TaskFilter {
            cluster_arn: "c".into(),
            desired_status: Some("STOPPED".into()),
            not_stopped: true,
            ..Default::default()
        };
        let by_instance = TaskFilter {
            container_instance_arn: Some("ci".into()),
            ..base.clone()
        };
        for after in [None, Some("t")] {
            let p = plan(&by_instance, after);
            assert!(p.contains("tasks_live_instance"), "{p}");
        }
        let by_group = TaskFilter {
            group: Some("service:web".into()),
            ..base.clone()
        };
        let p = plan(&by_group, None);
        assert!(p.contains("tasks_live_group"), "{p}");
        // Versions alone: from the index, not the table.
        let limit = 100i64;
        let (sql, params) = task_listing("arn, version", &by_group, &None, &limit);
        let p: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                params.as_slice(),
                |r| r.get(3),
            )
            .unwrap();
        assert!(p.contains("COVERING INDEX tasks_live_group"), "{p}");
        // The scheduler's pending tasks: by last status, not by the desired
        // status every running task shares.
        let pending = TaskFilter {
            cluster_arn: "c".into(),
            desired_status: Some("RUNNING".into()),
            last_status: Some("PROVISIONING".into()),
            ..Default::default()
        };
        let p = plan(&pending, None);
        assert!(p.contains("tasks_cluster_last_arn"), "{p}");
        assert!(conn
            .db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
            .unwrap());
    }

    const MIGRATION_TEST_1: &str = "
        CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT '');
        CREATE TABLE t1 (x INTEGER);";
    const MIGRATION_TEST_2: &str = "ALTER TABLE t1 ADD COLUMN y TEXT;";

    #[test]
    fn family_parsing() {
        assert_eq!(
            family_of("arn:aws:ecs:us-east-1:1:task-definition/web:3"),
            "web"
        );
        assert_eq!(
            family_of("arn:aws:ecs:us-east-1:1:task-definition/a:b:12"),
            "a:b"
        );
        assert_eq!(family_of("web:7"), "web");
        assert_eq!(family_of("web"), "web");
    }

    #[test]
    fn read_transactions_cannot_write() {
        let store = SqliteStore::in_memory().unwrap();
        let err = store.read(|tx| tx.put_meta("k", "v")).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)));
        let err = store.read(|tx| tx.next_revision("f")).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)));
        assert_eq!(store.read(|tx| tx.meta("k")).unwrap(), None);
    }

    #[test]
    fn corrupt_documents_are_reported_not_panicked_on() {
        let store = SqliteStore::in_memory().unwrap();
        {
            let conn = lock(&store.writer);
            conn.execute(
                "INSERT INTO clusters (cluster_name, arn, status, doc, version) VALUES ('c', 'arn:c', NULL, '{not json', 1)",
                [],
            )
            .unwrap();
            // Not UTF-8: `{"\xff":1}`.
            conn.execute(
                "INSERT INTO clusters (cluster_name, arn, status, doc, version) VALUES ('d', 'arn:d', NULL, X'7b22ff223a317d', 1)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO settings (principal_arn, name, value, type) VALUES ('default', 'noSuchSetting', 'x', NULL)",
                [],
            )
            .unwrap();
        }
        let err = store.read(|tx| tx.cluster("c")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == "cluster c"),
            "{err}"
        );
        let err = store.read(|tx| tx.cluster("d")).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, reason } if key == "cluster d" && reason.contains("utf-8")),
            "{err}"
        );
        let err = store.read(|tx| tx.clusters(None, 10)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let err = store.read(|tx| tx.settings("default")).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
