//! The schema, as an ordered list of migrations.
//!
//! A database records how many migrations it has had in `PRAGMA user_version`
//! (atomic with the migration's own transaction, so a crash mid-upgrade leaves
//! the previous version intact) and, for people inspecting the file, one row
//! per migration in `schema_migrations`. Migrations are append-only: a released
//! one is never edited, a change of schema is a new entry at the end.

use super::DbResult;
use crate::{Result, StoreError};
use rusqlite::{Connection, Transaction, TransactionBehavior};

/// Every migration, in order; the schema version of a database is how many of
/// them it has had.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

const V1: &str = "
CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE clusters (
    cluster_name TEXT PRIMARY KEY,
    arn          TEXT NOT NULL UNIQUE,
    status       TEXT,
    version      INTEGER NOT NULL,
    doc          TEXT NOT NULL
);

CREATE TABLE capacity_providers (
    name    TEXT PRIMARY KEY,
    arn     TEXT,
    cluster TEXT,
    status  TEXT,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX capacity_providers_cluster ON capacity_providers (cluster);

-- The highest revision ever handed out per family, so a deleted revision's
-- number is never given again.
CREATE TABLE families (
    family        TEXT PRIMARY KEY,
    last_revision INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE task_definitions (
    family   TEXT NOT NULL,
    revision INTEGER NOT NULL,
    arn      TEXT NOT NULL UNIQUE,
    status   TEXT,
    version  INTEGER NOT NULL,
    doc      TEXT NOT NULL,
    UNIQUE (family, revision)
);
CREATE INDEX task_definitions_status ON task_definitions (status, family, revision);

CREATE TABLE tasks (
    arn                    TEXT PRIMARY KEY,
    cluster_arn            TEXT NOT NULL,
    family                 TEXT,
    started_by             TEXT,
    grp                    TEXT,
    container_instance_arn TEXT,
    desired_status         TEXT,
    last_status            TEXT,
    version                INTEGER NOT NULL,
    doc                    TEXT NOT NULL
);
CREATE INDEX tasks_cluster ON tasks (cluster_arn, arn);
CREATE INDEX tasks_cluster_family ON tasks (cluster_arn, family, arn);
CREATE INDEX tasks_cluster_started_by ON tasks (cluster_arn, started_by, arn);
CREATE INDEX tasks_cluster_group ON tasks (cluster_arn, grp, arn);
CREATE INDEX tasks_cluster_instance ON tasks (cluster_arn, container_instance_arn, arn);
CREATE INDEX tasks_cluster_desired ON tasks (cluster_arn, desired_status, arn);
CREATE INDEX tasks_cluster_last ON tasks (cluster_arn, last_status);

CREATE TABLE container_instances (
    arn             TEXT PRIMARY KEY,
    cluster_arn     TEXT NOT NULL,
    status          TEXT,
    ec2_instance_id TEXT,
    version         INTEGER NOT NULL,
    doc             TEXT NOT NULL
);
CREATE INDEX container_instances_cluster ON container_instances (cluster_arn, arn);
CREATE INDEX container_instances_cluster_status ON container_instances (cluster_arn, status, arn);
CREATE INDEX container_instances_ec2 ON container_instances (ec2_instance_id);

CREATE TABLE attributes (
    cluster_arn TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    target_type TEXT,
    value       TEXT,
    PRIMARY KEY (cluster_arn, target_id, name)
) WITHOUT ROWID;
CREATE INDEX attributes_name ON attributes (cluster_arn, name, target_id);

CREATE TABLE settings (
    principal_arn TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         TEXT,
    type          TEXT,
    PRIMARY KEY (principal_arn, name)
) WITHOUT ROWID;

CREATE TABLE client_tokens (
    cluster_arn    TEXT NOT NULL,
    token          TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    task_arns      TEXT NOT NULL,
    PRIMARY KEY (cluster_arn, token)
) WITHOUT ROWID;
";

/// Services, their deployments and revisions.
const V2: &str = "
CREATE TABLE services (
    arn                 TEXT PRIMARY KEY,
    cluster_arn         TEXT NOT NULL,
    name                TEXT NOT NULL,
    status              TEXT,
    launch_type         TEXT,
    scheduling_strategy TEXT,
    version             INTEGER NOT NULL,
    doc                 TEXT NOT NULL
);
CREATE INDEX services_cluster ON services (cluster_arn, arn);
CREATE INDEX services_cluster_status ON services (cluster_arn, status, arn);
CREATE INDEX services_cluster_name ON services (cluster_arn, name);

CREATE TABLE service_deployments (
    arn         TEXT PRIMARY KEY,
    service_arn TEXT NOT NULL,
    status      TEXT,
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX service_deployments_service ON service_deployments (service_arn, arn);

CREATE TABLE service_revisions (
    arn         TEXT PRIMARY KEY,
    service_arn TEXT NOT NULL,
    version     INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX service_revisions_service ON service_revisions (service_arn, arn);
";

/// Documents of the kinds that need no columns of their own (daemons, their
/// task definitions, deployments and revisions): a kind, a key ordered within
/// the kind, and the parent the kind is listed under.
const V3: &str = "
CREATE TABLE documents (
    kind    TEXT NOT NULL,
    key     TEXT NOT NULL,
    parent  TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc     TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE INDEX documents_parent ON documents (kind, parent, key);
";

/// Tasks not yet STOPPED, by instance and by group (a service's tasks), with
/// their desired status: what the scheduler reads every tick. Partial
/// indexes, so those reads never walk the tasks stopped before, however
/// many; used by a listing with [`crate::TaskFilter::not_stopped`], whose
/// condition is literally theirs; with the version (and the last status),
/// so a listing of ARNs and versions ([`crate::Tx::task_versions`]) reads
/// the index alone. And tasks by last status in ARN order
/// (replacing the index without the ARN), so the tasks waiting for
/// placement (PROVISIONING) are read without walking every other task.
const V4: &str = "
CREATE INDEX tasks_live_instance
    ON tasks (cluster_arn, container_instance_arn, desired_status, arn, version, last_status)
    WHERE last_status IS NOT 'STOPPED';
CREATE INDEX tasks_live_group
    ON tasks (cluster_arn, grp, desired_status, arn, version, last_status)
    WHERE last_status IS NOT 'STOPPED';
DROP INDEX tasks_cluster_last;
CREATE INDEX tasks_cluster_last_arn ON tasks (cluster_arn, last_status, arn);
";

/// Metering: one row per instance with its
/// price and fee frozen at launch, one per task's stay on an instance.
/// Written in the transactions of the state changes they record; costs are
/// computed from these alone, never from the tasks table.
const V5: &str = "
CREATE TABLE instance_meters (
    instance_id            TEXT PRIMARY KEY,
    cluster_arn            TEXT NOT NULL,
    container_instance_arn TEXT NOT NULL,
    capacity_provider      TEXT NOT NULL,
    instance_type          TEXT NOT NULL,
    region                 TEXT NOT NULL,
    purchase_option        TEXT NOT NULL,
    cpu_units              INTEGER NOT NULL,
    memory_mib             INTEGER NOT NULL,
    price_per_hour         REAL NOT NULL,
    fee_per_hour           REAL NOT NULL,
    price_table            TEXT NOT NULL,
    fee_table              TEXT NOT NULL,
    launched_at            REAL NOT NULL,
    ended_at               REAL
);
CREATE INDEX instance_meters_cluster ON instance_meters (cluster_arn, launched_at);
CREATE INDEX instance_meters_launched ON instance_meters (launched_at);

CREATE TABLE task_usage (
    task_arn     TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    cluster_arn  TEXT NOT NULL,
    grp          TEXT,
    family       TEXT,
    cpu_units    INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    gpus         INTEGER NOT NULL,
    architecture TEXT NOT NULL,
    started_at   REAL NOT NULL,
    stopped_at   REAL,
    PRIMARY KEY (task_arn, instance_id)
) WITHOUT ROWID;
CREATE INDEX task_usage_instance ON task_usage (instance_id, stopped_at);
";

/// The schema version of the database behind `conn`.
pub(super) fn version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).db()
}

/// Refuses a database written by a newer berth, whose schema this one does not know.
pub(super) fn check_not_newer(conn: &Connection, known: usize, what: &str) -> Result<()> {
    let found = version(conn)?;
    if found > known as i64 {
        return Err(StoreError::Backend(format!(
            "{what} has schema version {found}, but this berth only knows up to {known}: \
             it was written by a newer berth; run that version or restore a backup"
        )));
    }
    Ok(())
}

/// Applies the migrations `conn` has not had yet, each in its own transaction.
/// A database from a newer berth is refused before anything is applied.
pub(super) fn migrate(conn: &Connection, migrations: &[&str], what: &str) -> Result<()> {
    check_not_newer(conn, migrations.len(), what)?;
    for (i, sql) in migrations.iter().enumerate() {
        let target = i as i64 + 1;
        // Cheap check outside a transaction, so an up-to-date database opens
        // without taking the write lock.
        if version(conn)? >= target {
            continue;
        }
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate).db()?;
        // Read again under the write lock: another process may have migrated
        // the file in between.
        let current = version(&tx)?;
        if current > migrations.len() as i64 {
            return check_not_newer(&tx, migrations.len(), what);
        }
        if current >= target {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Backend(format!("migration {target} of {what} failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            [target],
        )
        .db()?;
        // PRAGMA takes no bound parameters; `target` is an integer we made.
        tx.execute_batch(&format!("PRAGMA user_version = {target}"))
            .db()?;
        tx.commit().db()?;
        tracing::info!(version = target, database = what, "applied store migration");
    }
    Ok(())
}
