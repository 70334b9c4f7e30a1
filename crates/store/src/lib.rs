//! berth's durable state.
//!
//! # Design
//!
//! Resources are kept as the ECS wire shapes of [`berth_model::ecs`]
//! (a `Cluster`, a `Task`, …) serialised as JSON documents, one row each, beside
//! the few columns the API filters and sorts on, which the backend extracts from
//! the document itself so they can never disagree with it. Every row carries a
//! `version`; writes are compare-and-swap on the version read, so two writers
//! never silently overwrite each other.
//!
//! All access goes through a transaction: [`Store::read`] gives a consistent
//! snapshot, [`Store::write`] runs a closure in one transaction that commits
//! (durably, before the call returns) only when the closure returns `Ok`. An API
//! write is one `write` call, so a crash at any point leaves either all of it or
//! none of it.
//!
//! The operations a transaction offers are the [`Tx`] trait, so a second backend
//! (PostgreSQL, for several server replicas) implements `Tx` and joins
//! [`Backend`] without any change above this crate.
//!
//! # Limitations
//!
//! SQLite serialises writers: one write transaction at a time per data dir.
//! Reads run concurrently with writes (WAL).

mod sqlite;

use berth_model::ecs::{
    Attribute, CapacityProvider, Cluster, ContainerInstance, Service, ServiceDeployment,
    ServiceRevision, Setting, Task, TaskDefinition, TaskDefinitionStatus,
};
use berth_model::meter::{InstanceMeter, TaskUsage};
use std::path::Path;

pub use sqlite::SqliteStore;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap lost: the row changed (or appeared, or vanished) since it was read.
    #[error("conflict on {key}: it changed since it was read")]
    Conflict { key: String },
    /// A stored document no longer parses as its shape.
    #[error("stored {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// The database itself failed (I/O, full disk, locked beyond the timeout).
    #[error("database error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored value with the version to pass back for compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub version: i64,
    pub value: T,
}

/// How a `put_*` call relates to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The row must not exist yet (insert).
    Absent,
    /// The row must exist at exactly this version (update).
    Version(i64),
}

/// Filters of ListTasks. `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub cluster_arn: String,
    /// Task definition family (the part of the task definition ARN before `:revision`).
    pub family: Option<String>,
    pub started_by: Option<String>,
    /// The task's `group`, for example `service:web`.
    pub group: Option<String>,
    pub container_instance_arn: Option<String>,
    /// `RUNNING`, `PENDING` or `STOPPED`, compared with the task's `desiredStatus`.
    pub desired_status: Option<String>,
    /// Compared with the task's `lastStatus`.
    pub last_status: Option<String>,
    /// Only tasks whose `lastStatus` is not `STOPPED`: what is still placed
    /// or running. With the instance or the group and the desired status,
    /// such a listing reads an index of those tasks alone, so it costs the
    /// same however many tasks have stopped before.
    pub not_stopped: bool,
}

/// A task placed on an instance, as [`Tx::placed_task_versions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedTask {
    pub container_instance_arn: String,
    pub desired_status: Option<String>,
    pub arn: String,
    pub version: i64,
}

/// What a task not yet STOPPED holds on its instance, as
/// [`Tx::task_loads`] reads it: the fields of its document that say so
/// (named as in the document), the rest of it skipped, not decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct TaskLoad {
    #[serde(rename = "lastStatus", default)]
    pub last_status: Option<String>,
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub containers: Option<Vec<ContainerLoad>>,
}

/// A container of a [`TaskLoad`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ContainerLoad {
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(rename = "memoryReservation", default)]
    pub memory_reservation: Option<String>,
    #[serde(rename = "gpuIds", default)]
    pub gpu_ids: Option<Vec<String>>,
}

/// Filters of ListTaskDefinitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskDefinitionFilter {
    /// Only this family. ListTaskDefinitions calls it `familyPrefix`, but ECS
    /// matches the whole family name there.
    pub family: Option<String>,
    pub status: Option<TaskDefinitionStatus>,
    /// Newest revision first when true (sort DESC).
    pub descending: bool,
}

/// Filters of ListServices (and the counts DeleteCluster and DescribeClusters need).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    pub cluster_arn: String,
    /// Only services in one of these statuses (`ACTIVE`, `DRAINING`,
    /// `INACTIVE`); empty means any.
    pub statuses: Vec<String>,
    /// Compared with the service's launch type; a service placed by a
    /// capacity provider strategy (every berth service) has the launch type
    /// `MANAGED_INSTANCES` here, though its document has none.
    pub launch_type: Option<String>,
    /// `REPLICA` or `DAEMON`.
    pub scheduling_strategy: Option<String>,
}

/// Filters of ListAttributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeFilter {
    pub cluster_arn: String,
    pub target_type: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
}

/// A RunTask `clientToken` remembered for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// A digest of the request that used the token first.
    pub request_digest: String,
    /// The task ARNs that request created, in order.
    pub task_arns: Vec<String>,
}

/// A page of keys: `next` is the last key returned when more may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Everything a transaction can do. Reads see the transaction's snapshot and
/// its own writes. Listing calls return at most `limit` items strictly after
/// the key `after` in the listing's order, and `next` set to the last item's
/// key when exactly `limit` items came back.
pub trait Tx {
    // ---- clusters (keyed by name; ARN derivable) ----
    fn cluster(&self, name: &str) -> Result<Option<Versioned<Cluster>>>;
    /// Clusters ordered by ARN; `after` is an ARN.
    fn clusters(&self, after: Option<&str>, limit: usize) -> Result<Page<Cluster>>;
    fn put_cluster(&self, cluster: &Cluster, expect: Expect) -> Result<i64>;

    // ---- capacity providers (keyed by name, unique in the account) ----
    fn capacity_provider(&self, name: &str) -> Result<Option<Versioned<CapacityProvider>>>;
    /// Capacity providers ordered by name; `after` is a name.
    fn capacity_providers(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<CapacityProvider>>;
    fn put_capacity_provider(&self, cp: &CapacityProvider, expect: Expect) -> Result<i64>;
    fn delete_capacity_provider(&self, name: &str, version: i64) -> Result<()>;

    // ---- task definitions (keyed by family + revision) ----
    /// A revision of a family; `None` means the latest ACTIVE revision.
    fn task_definition(
        &self,
        family: &str,
        revision: Option<i32>,
    ) -> Result<Option<Versioned<TaskDefinition>>>;
    /// Task definition ARNs ordered by family, then revision (both reversed when
    /// `descending`); `after` is an ARN.
    fn task_definitions(
        &self,
        filter: &TaskDefinitionFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>>;
    /// Family names ordered by name that have at least one revision in `status`
    /// (any status when `None`); `after` is a family name.
    fn families(
        &self,
        prefix: Option<&str>,
        status: Option<TaskDefinitionStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<String>>;
    /// Reserves and returns the next revision number of a family (1 for a new
    /// family). Numbers are never reused, even after a revision is deleted.
    fn next_revision(&self, family: &str) -> Result<i32>;
    fn put_task_definition(&self, td: &TaskDefinition, expect: Expect) -> Result<i64>;
    fn delete_task_definition(&self, family: &str, revision: i32, version: i64) -> Result<()>;

    // ---- tasks (keyed by ARN) ----
    fn task(&self, arn: &str) -> Result<Option<Versioned<Task>>>;
    /// Tasks ordered by ARN; `after` is an ARN.
    fn tasks(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<Task>>>;
    /// Every task of a cluster placed on an instance and not yet STOPPED,
    /// without the documents, by instance, desired status and ARN: what a
    /// pass over all instances reads once instead of once per instance.
    fn placed_task_versions(&self, cluster_arn: &str) -> Result<Vec<PlacedTask>>;
    /// What each task placed on an instance and not yet STOPPED holds,
    /// read from the live index and the part of the documents that says
    /// so: what an instance's counts are made of.
    fn task_loads(&self, cluster_arn: &str, container_instance_arn: &str) -> Result<Vec<TaskLoad>>;
    /// The ARN and version of each task [`Tx::tasks`] lists, without the
    /// documents: what tells cheaply whether any of them changed.
    fn task_versions(
        &self,
        filter: &TaskFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, i64)>>;
    /// How many tasks of a cluster are in each `lastStatus`: `(lastStatus, count)`.
    fn task_counts(&self, cluster_arn: &str) -> Result<Vec<(String, i64)>>;
    /// A task's cluster, task definition family, `startedBy` and `group`
    /// are fixed when it is created: an update changing any of them is a
    /// `Conflict`.
    fn put_task(&self, task: &Task, expect: Expect) -> Result<i64>;

    // ---- services (keyed by ARN: `service/CLUSTER/NAME`, so a new service
    // of the name of an INACTIVE one replaces its row) ----
    fn service(&self, arn: &str) -> Result<Option<Versioned<Service>>>;
    /// Services of a cluster ordered by ARN; `after` is an ARN.
    fn services(
        &self,
        filter: &ServiceFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<Service>>>;
    fn put_service(&self, service: &Service, expect: Expect) -> Result<i64>;

    // ---- service deployments and revisions (keyed by ARN, indexed by service ARN) ----
    fn service_deployment(&self, arn: &str) -> Result<Option<Versioned<ServiceDeployment>>>;
    /// Deployments of a service ordered by ARN; `after` is an ARN.
    fn service_deployments(
        &self,
        service_arn: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<ServiceDeployment>>>;
    fn put_service_deployment(&self, deployment: &ServiceDeployment, expect: Expect)
        -> Result<i64>;
    fn service_revision(&self, arn: &str) -> Result<Option<Versioned<ServiceRevision>>>;
    fn put_service_revision(&self, revision: &ServiceRevision, expect: Expect) -> Result<i64>;

    // ---- container instances (keyed by ARN) ----
    fn container_instance(&self, arn: &str) -> Result<Option<Versioned<ContainerInstance>>>;
    /// Container instances of a cluster ordered by ARN, optionally only one `status`.
    fn container_instances(
        &self,
        cluster_arn: &str,
        status: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Versioned<ContainerInstance>>>;
    /// The ARN and version of each container instance
    /// [`Tx::container_instances`] lists, without the documents.
    fn container_instance_versions(
        &self,
        cluster_arn: &str,
        status: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, i64)>>;
    fn put_container_instance(
        &self,
        cluster_arn: &str,
        ci: &ContainerInstance,
        expect: Expect,
    ) -> Result<i64>;
    fn delete_container_instance(&self, arn: &str, version: i64) -> Result<()>;

    // ---- attributes (keyed by cluster, target id, name) ----
    /// Inserts or replaces an attribute (ECS PutAttributes semantics).
    fn put_attribute(&self, cluster_arn: &str, attribute: &Attribute) -> Result<()>;
    /// Removes an attribute; returns whether it existed.
    fn delete_attribute(&self, cluster_arn: &str, target_id: &str, name: &str) -> Result<bool>;
    /// Attributes ordered by (target id, name); `after` is the opaque key from a previous page's `next`.
    fn attributes(
        &self,
        filter: &AttributeFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Attribute>>;
    /// How many attributes a target has.
    fn attribute_count(&self, cluster_arn: &str, target_id: &str) -> Result<i64>;

    // ---- account settings (keyed by principal ARN, name) ----
    /// Account defaults are stored under the principal `"default"`.
    fn put_setting(&self, setting: &Setting) -> Result<()>;
    fn delete_setting(&self, principal_arn: &str, name: &str) -> Result<bool>;
    /// Settings of one principal ordered by name.
    fn settings(&self, principal_arn: &str) -> Result<Vec<Setting>>;

    // ---- idempotency ----
    fn client_token(&self, cluster_arn: &str, token: &str) -> Result<Option<ClientToken>>;
    fn put_client_token(&self, cluster_arn: &str, token: &str, value: &ClientToken) -> Result<()>;

    // ---- documents of the smaller kinds (keyed by kind + key, listed by parent) ----
    /// The raw JSON of one document; see [`docs`] for the typed calls.
    fn document(&self, kind: &str, key: &str) -> Result<Option<Versioned<String>>>;
    /// Documents of a kind ordered by key, only those under `parent` when
    /// given; `after` is a key. Items are `(key, document)`.
    fn documents(
        &self,
        kind: &str,
        parent: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Versioned<String>)>>;
    fn put_document(
        &self,
        kind: &str,
        key: &str,
        parent: &str,
        doc: &str,
        expect: Expect,
    ) -> Result<i64>;
    fn delete_document(&self, kind: &str, key: &str, version: i64) -> Result<()>;

    // ---- small key/value state (server identity, counters) ----
    fn meta(&self, key: &str) -> Result<Option<String>>;
    fn put_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Every entry whose key starts with `prefix`, by key.
    fn metas(&self, prefix: &str) -> Result<Vec<(String, String)>>;

    // ---- metering (see berth_model::meter) ----
    /// Opens an instance's meter; false (and nothing changed) when it has one.
    fn open_instance_meter(&self, meter: &InstanceMeter) -> Result<bool>;
    /// Removes the meter of an instance whose launch failed; false when none.
    fn void_instance_meter(&self, instance_id: &str) -> Result<bool>;
    /// Closes an instance's meter at `at` (not before its launch) and every
    /// task usage on it still open; false when it was closed or unknown.
    fn close_instance_meter(&self, instance_id: &str, at: f64) -> Result<bool>;
    /// Opens a task's usage of an instance; false when it has one.
    fn open_task_usage(&self, usage: &TaskUsage) -> Result<bool>;
    /// Closes a task's usage of an instance at `at` (not before its start);
    /// false when it was closed or unknown.
    fn close_task_usage(&self, task_arn: &str, instance_id: &str, at: f64) -> Result<bool>;
    /// The meters of instances (of one cluster, when given) that may be
    /// billed in `[since, until)`: launched before `until` and not ended
    /// (counting the 60 s minimum) before `since`; ordered by instance id.
    fn instance_meters(
        &self,
        cluster_arn: Option<&str>,
        since: f64,
        until: f64,
    ) -> Result<Vec<InstanceMeter>>;
    /// The task usages of one instance, by start.
    fn task_usages(&self, instance_id: &str) -> Result<Vec<TaskUsage>>;
}

/// Typed access to [`Tx::document`] and friends: a document is any
/// serialisable shape, stored as JSON under a kind.
pub mod docs {
    use super::{Expect, Page, Result, StoreError, Tx, Versioned};
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    fn parse<T: DeserializeOwned>(kind: &str, key: &str, raw: &str) -> Result<T> {
        serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
            key: format!("{kind} {key}"),
            reason: e.to_string(),
        })
    }

    /// The document `key` of `kind`.
    pub fn get<T: DeserializeOwned>(
        tx: &dyn Tx,
        kind: &str,
        key: &str,
    ) -> Result<Option<Versioned<T>>> {
        match tx.document(kind, key)? {
            None => Ok(None),
            Some(v) => Ok(Some(Versioned {
                version: v.version,
                value: parse(kind, key, &v.value)?,
            })),
        }
    }

    /// One page of the documents of `kind` (under `parent`), by key.
    pub fn list<T: DeserializeOwned>(
        tx: &dyn Tx,
        kind: &str,
        parent: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, Versioned<T>)>> {
        let page = tx.documents(kind, parent, after, limit)?;
        let mut items = Vec::with_capacity(page.items.len());
        for (key, v) in page.items {
            let value = parse(kind, &key, &v.value)?;
            items.push((
                key,
                Versioned {
                    version: v.version,
                    value,
                },
            ));
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Every document of `kind` (under `parent`), by key.
    pub fn all<T: DeserializeOwned>(
        tx: &dyn Tx,
        kind: &str,
        parent: Option<&str>,
    ) -> Result<Vec<(String, Versioned<T>)>> {
        super::all(|a, n| list(tx, kind, parent, a, n))
    }

    /// Writes a document (compare-and-swap on `expect`); returns its new version.
    pub fn put<T: Serialize>(
        tx: &dyn Tx,
        kind: &str,
        key: &str,
        parent: &str,
        value: &T,
        expect: Expect,
    ) -> Result<i64> {
        let doc = serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
            key: format!("{kind} {key}"),
            reason: e.to_string(),
        })?;
        tx.put_document(kind, key, parent, &doc, expect)
    }
}

/// The backends, chosen by configuration.
pub enum Backend {
    Sqlite(SqliteStore),
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: survives power loss (SQLite `synchronous=FULL`).
    #[default]
    Full,
    /// Survives a crash of the process, not of the machine (`synchronous=NORMAL`).
    Process,
}

/// berth's store: a backend behind one interface.
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens (creating and migrating when needed) the SQLite store at `path`.
    pub fn open_sqlite(path: &Path, durability: Durability) -> Result<Self> {
        Ok(Self {
            backend: Backend::Sqlite(SqliteStore::open(path, durability)?),
        })
    }

    /// An in-memory SQLite store, for tests and simulation.
    pub fn in_memory() -> Result<Self> {
        Ok(Self {
            backend: Backend::Sqlite(SqliteStore::in_memory()?),
        })
    }

    /// Runs `f` over a consistent snapshot.
    pub fn read<R, E>(&self, f: impl FnOnce(&dyn Tx) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        match &self.backend {
            Backend::Sqlite(s) => s.read(f),
        }
    }

    /// A mark that differs whenever anything stored may have changed since
    /// it was taken (a write through this store, or by another process on
    /// the same file): while it is the same, a reader can keep what it
    /// derived from the store. It may differ with nothing changed (a write
    /// rolled back), never the other way.
    pub fn change_mark(&self) -> Result<(u64, i64)> {
        match &self.backend {
            Backend::Sqlite(s) => s.change_mark(),
        }
    }

    /// Runs `f` in one write transaction, committed durably only when `f`
    /// returns `Ok`; on `Err` nothing of it is kept. A [`rider`] pending on
    /// this thread is stored in the same transaction.
    pub fn write<R, E>(&self, f: impl FnOnce(&dyn Tx) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut carried = None;
        let with_rider = |tx: &dyn Tx| {
            let out = f(tx)?;
            if let Some(r) = rider::take() {
                let put = tx.put_document(&r.kind, &r.key, &r.parent, &r.doc, Expect::Absent);
                carried = Some(r);
                put?;
            }
            Ok(out)
        };
        let result = match &self.backend {
            Backend::Sqlite(s) => s.write(with_rider),
        };
        if result.is_err() {
            // Not committed: the rider waits for the next write (or its owner).
            if let Some(r) = carried {
                rider::restore(r);
            }
        }
        result
    }
}

/// A document that rides along with the next write transaction committed on
/// this thread.
///
/// This is how an API call's audit record lands in the same commit as the
/// write it describes, at no extra commit: the edge runs the operation inside
/// [`with`], and the first [`Store::write`] the operation commits on this thread
/// stores the rider too. When nothing carried it (the operation wrote nothing,
/// or failed before committing), [`with`] hands it back to be stored by itself.
pub mod rider {
    use std::cell::RefCell;

    /// A document to store: what [`super::Tx::put_document`] takes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Rider {
        pub kind: String,
        pub key: String,
        pub parent: String,
        pub doc: String,
    }

    thread_local! {
        static NEXT: RefCell<Option<Rider>> = const { RefCell::new(None) };
    }

    /// Puts back what was pending before [`with`], even when `f` panics, so a
    /// rider never outlives its call on a pooled thread.
    struct Reset(Option<Rider>);

    impl Drop for Reset {
        fn drop(&mut self) {
            let previous = self.0.take();
            NEXT.with(|n| *n.borrow_mut() = previous);
        }
    }

    /// Runs `f` with `rider` pending on this thread. Answers `f`'s result and
    /// the rider when no committed write carried it.
    pub fn with<R>(rider: Rider, f: impl FnOnce() -> R) -> (R, Option<Rider>) {
        let previous = NEXT.with(|n| n.borrow_mut().replace(rider));
        let _reset = Reset(previous);
        let out = f();
        let left = take();
        (out, left)
    }

    pub(crate) fn take() -> Option<Rider> {
        NEXT.with(|n| n.borrow_mut().take())
    }

    pub(crate) fn restore(r: Rider) {
        NEXT.with(|n| *n.borrow_mut() = Some(r));
    }
}

/// Store failures as the API reports them: a lost compare-and-swap is a
/// `ServerException` the SDKs retry; anything else is berth's fault too.
impl From<StoreError> for berth_model::EcsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { key } => berth_model::EcsError::server(format!(
                "{key} was changed by another request at the same time; retry the request."
            )),
            StoreError::Corrupt { .. } | StoreError::Backend(_) => {
                berth_model::EcsError::server(format!("The request could not be stored: {e}"))
            }
        }
    }
}

/// Every item of a paged listing: calls `fetch(after, limit)` page after page
/// until the listing ends.
pub fn all<T>(mut fetch: impl FnMut(Option<&str>, usize) -> Result<Page<T>>) -> Result<Vec<T>> {
    const PAGE: usize = 500;
    let mut out = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = fetch(after.as_deref(), PAGE)?;
        out.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}
