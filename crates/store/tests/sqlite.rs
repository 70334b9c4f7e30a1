//! The SQLite store against real database files.

#![allow(clippy::unwrap_used)]

use berth_model::ecs::{
    Attribute, CapacityProvider, CapacityProviderStatus, Cluster, Container, ContainerInstance,
    SchedulingStrategy, Service, ServiceDeployment, ServiceDeploymentStatus, ServiceRevision,
    Setting, SettingName, SettingType, TargetType, Task, TaskDefinition, TaskDefinitionStatus,
};
use berth_store::{
    AttributeFilter, ClientToken, ContainerLoad, Durability, Expect, Page, PlacedTask,
    ServiceFilter, SqliteStore, Store, StoreError, TaskDefinitionFilter, TaskFilter, TaskLoad,
    Versioned,
};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;
use tempfile::TempDir;

const ACCOUNT: &str = "arn:aws:ecs:us-east-1:000000000000";

fn file_store() -> (TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let store = Store::open_sqlite(&path, Durability::Full).unwrap();
    (dir, path, store)
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        cluster_arn: Some(format!("{ACCOUNT}:cluster/{name}")),
        cluster_name: Some(name.into()),
        status: Some("ACTIVE".into()),
        ..Default::default()
    }
}

fn cluster_arn(name: &str) -> String {
    format!("{ACCOUNT}:cluster/{name}")
}

fn capacity_provider(name: &str) -> CapacityProvider {
    CapacityProvider {
        capacity_provider_arn: Some(format!("{ACCOUNT}:capacity-provider/{name}")),
        name: Some(name.into()),
        status: Some(CapacityProviderStatus::Active),
        ..Default::default()
    }
}

fn td_arn(family: &str, revision: i32) -> String {
    format!("{ACCOUNT}:task-definition/{family}:{revision}")
}

fn task_definition(family: &str, revision: i32, status: TaskDefinitionStatus) -> TaskDefinition {
    TaskDefinition {
        task_definition_arn: Some(td_arn(family, revision)),
        family: Some(family.into()),
        revision,
        status: Some(status),
        cpu: Some("256".into()),
        ..Default::default()
    }
}

fn task(cluster: &str, id: &str, family: &str) -> Task {
    Task {
        task_arn: Some(format!("{ACCOUNT}:task/{cluster}/{id}")),
        cluster_arn: Some(cluster_arn(cluster)),
        task_definition_arn: Some(td_arn(family, 1)),
        desired_status: Some("RUNNING".into()),
        last_status: Some("PENDING".into()),
        ..Default::default()
    }
}

fn container_instance(cluster: &str, id: &str) -> ContainerInstance {
    ContainerInstance {
        container_instance_arn: Some(format!("{ACCOUNT}:container-instance/{cluster}/{id}")),
        ec2_instance_id: Some(format!("i-{id}")),
        status: Some("ACTIVE".into()),
        agent_connected: true,
        ..Default::default()
    }
}

fn attribute(target: &str, name: &str, value: Option<&str>) -> Attribute {
    Attribute {
        name: Some(name.into()),
        value: value.map(Into::into),
        target_type: Some(TargetType::ContainerInstance),
        target_id: Some(target.into()),
    }
}

/// Walks every page of a listing with `limit`, checking the paging contract,
/// and returns the items in the order they came.
fn walk<T: Clone>(limit: usize, mut list: impl FnMut(Option<&str>, usize) -> Page<T>) -> Vec<T> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = list(after.as_deref(), limit);
        assert!(page.items.len() <= limit, "page larger than the limit");
        out.extend(page.items.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(page.items.len(), limit, "next on a page that is not full");
                assert_ne!(
                    after.as_deref(),
                    Some(next.as_str()),
                    "paging does not advance"
                );
                after = Some(next);
            }
            None => {
                assert!(
                    page.items.len() < limit || limit == 0,
                    "a full page without next"
                );
                return out;
            }
        }
    }
    panic!("paging never ends");
}

// ---------------------------------------------------------------- round trips

#[test]
fn cluster_round_trip() {
    let (_dir, _path, store) = file_store();
    let mut c = cluster("default");
    c.tags = Some(vec![berth_model::ecs::Tag {
        key: Some("team".into()),
        value: Some("infra".into()),
    }]);
    assert_eq!(
        store
            .write(|tx| tx.put_cluster(&c, Expect::Absent))
            .unwrap(),
        1
    );

    let got = store.read(|tx| tx.cluster("default")).unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            version: 1,
            value: c.clone()
        }
    );
    assert_eq!(store.read(|tx| tx.cluster("missing")).unwrap(), None);

    c.status = Some("INACTIVE".into());
    c.running_tasks_count = 3;
    assert_eq!(
        store
            .write(|tx| tx.put_cluster(&c, Expect::Version(1)))
            .unwrap(),
        2
    );
    let got = store.read(|tx| tx.cluster("default")).unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            version: 2,
            value: c.clone()
        }
    );
    let page = store.read(|tx| tx.clusters(None, 10)).unwrap();
    assert_eq!(
        page,
        Page {
            items: vec![c],
            next: None
        }
    );
}

#[test]
fn capacity_provider_round_trip() {
    let (_dir, _path, store) = file_store();
    let mut cp = capacity_provider("spot");
    cp.cluster = Some("default".into());
    assert_eq!(
        store
            .write(|tx| tx.put_capacity_provider(&cp, Expect::Absent))
            .unwrap(),
        1
    );
    assert_eq!(
        store.read(|tx| tx.capacity_provider("spot")).unwrap(),
        Some(Versioned {
            version: 1,
            value: cp.clone()
        })
    );

    cp.status = Some(CapacityProviderStatus::Inactive);
    assert_eq!(
        store
            .write(|tx| tx.put_capacity_provider(&cp, Expect::Version(1)))
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .read(|tx| tx.capacity_provider("spot"))
            .unwrap()
            .unwrap()
            .value,
        cp
    );

    store
        .write(|tx| tx.delete_capacity_provider("spot", 2))
        .unwrap();
    assert_eq!(store.read(|tx| tx.capacity_provider("spot")).unwrap(), None);
}

#[test]
fn task_definition_round_trip() {
    let (_dir, _path, store) = file_store();
    let td = store
        .write(|tx| {
            let revision = tx.next_revision("web")?;
            let td = task_definition("web", revision, TaskDefinitionStatus::Active);
            assert_eq!(tx.put_task_definition(&td, Expect::Absent)?, 1);
            Ok::<_, StoreError>(td)
        })
        .unwrap();
    assert_eq!(td.revision, 1);
    assert_eq!(
        store.read(|tx| tx.task_definition("web", Some(1))).unwrap(),
        Some(Versioned {
            version: 1,
            value: td.clone()
        })
    );
    assert_eq!(
        store
            .read(|tx| tx.task_definition("web", None))
            .unwrap()
            .unwrap()
            .value,
        td
    );
    assert_eq!(
        store.read(|tx| tx.task_definition("web", Some(2))).unwrap(),
        None
    );

    let mut inactive = td.clone();
    inactive.status = Some(TaskDefinitionStatus::Inactive);
    assert_eq!(
        store
            .write(|tx| tx.put_task_definition(&inactive, Expect::Version(1)))
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .read(|tx| tx.task_definition("web", Some(1)))
            .unwrap()
            .unwrap()
            .value,
        inactive
    );
    assert_eq!(
        store.read(|tx| tx.task_definition("web", None)).unwrap(),
        None
    );

    store
        .write(|tx| tx.delete_task_definition("web", 1, 2))
        .unwrap();
    assert_eq!(
        store.read(|tx| tx.task_definition("web", Some(1))).unwrap(),
        None
    );
}

#[test]
fn task_round_trip() {
    let (_dir, _path, store) = file_store();
    let mut t = task("default", "a1", "web");
    t.group = Some("service:web".into());
    t.started_by = Some("ecs-svc/1".into());
    t.cpu = Some("256".into());
    assert_eq!(
        store.write(|tx| tx.put_task(&t, Expect::Absent)).unwrap(),
        1
    );
    let arn = t.task_arn.clone().unwrap();
    assert_eq!(
        store.read(|tx| tx.task(&arn)).unwrap(),
        Some(Versioned {
            version: 1,
            value: t.clone()
        })
    );

    t.last_status = Some("RUNNING".into());
    t.version = 2;
    assert_eq!(
        store
            .write(|tx| tx.put_task(&t, Expect::Version(1)))
            .unwrap(),
        2
    );
    assert_eq!(
        store.read(|tx| tx.task(&arn)).unwrap(),
        Some(Versioned {
            version: 2,
            value: t.clone()
        })
    );
    // The columns follow the document.
    let running = TaskFilter {
        cluster_arn: cluster_arn("default"),
        last_status: Some("RUNNING".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .read(|tx| tx.tasks(&running, None, 10))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(store.read(|tx| tx.task("nope")).unwrap(), None);

    // What is fixed at creation stays: changing it is a conflict, and
    // nothing is written.
    for change in [
        |t: &mut Task| t.started_by = Some("someone-else".into()),
        |t: &mut Task| t.group = None,
        |t: &mut Task| t.task_definition_arn = Some(td_arn("other", 1)),
        |t: &mut Task| t.cluster_arn = Some(cluster_arn("other")),
    ] {
        let mut changed = t.clone();
        change(&mut changed);
        changed.version = 3;
        let r = store.write(|tx| tx.put_task(&changed, Expect::Version(2)));
        assert!(is_conflict(r), "{changed:?}");
    }
    assert_eq!(
        store.read(|tx| tx.task(&arn)).unwrap(),
        Some(Versioned {
            version: 2,
            value: t.clone()
        })
    );
}

/// A write sets only the indexed columns that change; every listing follows
/// each kind of change (none, one, several, back to none), and a stale
/// version still conflicts.
#[test]
fn task_listings_follow_every_kind_of_write() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let mut t = task("default", "w1", "web");
    t.group = Some("service:web".into());
    t.last_status = Some("PROVISIONING".into());
    store.write(|tx| tx.put_task(&t, Expect::Absent)).unwrap();
    let arn = t.task_arn.clone().unwrap();
    let ci_a = format!("{ACCOUNT}:container-instance/default/a");
    let ci_b = format!("{ACCOUNT}:container-instance/default/b");
    // Where the task is listed: (instance, desired, last, placed on).
    let listed = |store: &Store, t: &Task| {
        store
            .read(|tx| {
                let count = |f: TaskFilter| -> Result<usize, StoreError> {
                    let ids: Vec<String> = berth_store::all(|a, n| tx.task_versions(&f, a, n))?
                        .into_iter()
                        .map(|(a, _)| a)
                        .collect();
                    Ok(ids.iter().filter(|a| **a == arn).count())
                };
                let base = TaskFilter {
                    cluster_arn: cl.clone(),
                    ..Default::default()
                };
                let on = |ci: &str| TaskFilter {
                    container_instance_arn: Some(ci.to_string()),
                    ..base.clone()
                };
                let live = |ci: &str| TaskFilter {
                    not_stopped: true,
                    desired_status: t.desired_status.clone(),
                    ..on(ci)
                };
                let placed: Vec<(String, Option<String>, i64)> = tx
                    .placed_task_versions(&cl)?
                    .into_iter()
                    .filter(|p| p.arn == arn)
                    .map(|p| (p.container_instance_arn, p.desired_status, p.version))
                    .collect();
                Ok::<_, StoreError>((
                    [count(on(&ci_a))?, count(on(&ci_b))?],
                    [count(live(&ci_a))?, count(live(&ci_b))?],
                    [
                        count(TaskFilter {
                            desired_status: Some("RUNNING".into()),
                            ..base.clone()
                        })?,
                        count(TaskFilter {
                            desired_status: Some("STOPPED".into()),
                            ..base.clone()
                        })?,
                    ],
                    [
                        count(TaskFilter {
                            last_status: t.last_status.clone(),
                            ..base.clone()
                        })?,
                        count(TaskFilter {
                            group: Some("service:web".into()),
                            desired_status: t.desired_status.clone(),
                            not_stopped: true,
                            ..base.clone()
                        })?,
                    ],
                    placed,
                ))
            })
            .unwrap()
    };
    let mut version = 1;
    let steps: [fn(&mut Task); 7] = [
        // Only the document.
        |t| t.stopped_reason = Some("waiting".into()),
        // Placed: instance and last status.
        |t| {
            t.container_instance_arn = Some(format!("{ACCOUNT}:container-instance/default/a"));
            t.last_status = Some("PENDING".into());
        },
        |t| t.last_status = Some("RUNNING".into()),
        // Moved to another instance, nothing else.
        |t| t.container_instance_arn = Some(format!("{ACCOUNT}:container-instance/default/b")),
        |t| t.desired_status = Some("STOPPED".into()),
        // Every indexed column at once.
        |t| {
            t.container_instance_arn = Some(format!("{ACCOUNT}:container-instance/default/a"));
            t.desired_status = Some("RUNNING".into());
            t.last_status = Some("PENDING".into());
        },
        // Back to no instance, and stopped.
        |t| {
            t.container_instance_arn = None;
            t.last_status = Some("STOPPED".into());
            t.desired_status = Some("STOPPED".into());
        },
    ];
    for step in steps {
        step(&mut t);
        t.version = version + 1;
        assert!(is_conflict(
            store.write(|tx| tx.put_task(&t, Expect::Version(version - 1)))
        ));
        version = store
            .write(|tx| tx.put_task(&t, Expect::Version(version)))
            .unwrap();
        assert_eq!(version, t.version);
        let (on, live, desired, last, placed) = listed(&store, &t);
        let ci = t.container_instance_arn.as_deref();
        let at = |x: &str| usize::from(ci == Some(x));
        let stopped = t.last_status.as_deref() == Some("STOPPED");
        assert_eq!(on, [at(&ci_a), at(&ci_b)], "{t:?}");
        assert_eq!(
            live,
            [
                at(&ci_a) * usize::from(!stopped),
                at(&ci_b) * usize::from(!stopped)
            ],
            "{t:?}"
        );
        let running = t.desired_status.as_deref() == Some("RUNNING");
        assert_eq!(
            desired,
            [usize::from(running), usize::from(!running)],
            "{t:?}"
        );
        assert_eq!(last, [1, usize::from(!stopped)], "{t:?}");
        let expected: Vec<_> = match ci {
            Some(ci) if !stopped => vec![(ci.to_string(), t.desired_status.clone(), version)],
            _ => vec![],
        };
        assert_eq!(placed, expected, "{t:?}");
        assert_eq!(
            store
                .read(|tx| tx.task(&arn))
                .unwrap()
                .map(|v| (v.version, v.value)),
            Some((version, t.clone()))
        );
    }
}

/// An instance's live tasks as `task_loads` reads them: what they hold,
/// nothing of another instance's or of a STOPPED task.
#[test]
fn task_loads_read_what_an_instances_live_tasks_hold() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let on = |id: &str, ci: &str, last: &str| {
        let mut t = task("default", id, "web");
        t.container_instance_arn = Some(format!("{ACCOUNT}:container-instance/default/{ci}"));
        t.last_status = Some(last.into());
        t
    };
    let mut gpu = on("t1", "a", "RUNNING");
    gpu.cpu = Some("1024".into());
    gpu.memory = Some("2048".into());
    gpu.containers = Some(vec![Container {
        name: Some("main".into()),
        cpu: Some("512".into()),
        memory_reservation: Some("256".into()),
        gpu_ids: Some(vec!["GPU-1".into()]),
        ..Default::default()
    }]);
    let mut pending = on("t2", "a", "PENDING");
    pending.desired_status = Some("STOPPED".into());
    let tasks = [
        gpu,
        pending,
        on("t3", "a", "STOPPED"),
        on("t4", "b", "RUNNING"),
    ];
    store
        .write(|tx| {
            for t in &tasks {
                tx.put_task(t, Expect::Absent)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let a = format!("{ACCOUNT}:container-instance/default/a");
    let loads = store.read(|tx| tx.task_loads(&cl, &a)).unwrap();
    assert_eq!(
        loads,
        vec![
            TaskLoad {
                last_status: Some("RUNNING".into()),
                cpu: Some("1024".into()),
                memory: Some("2048".into()),
                containers: Some(vec![ContainerLoad {
                    cpu: Some("512".into()),
                    memory: None,
                    memory_reservation: Some("256".into()),
                    gpu_ids: Some(vec!["GPU-1".into()]),
                }]),
            },
            TaskLoad {
                last_status: Some("PENDING".into()),
                ..Default::default()
            },
        ]
    );
    assert_eq!(
        store.read(|tx| tx.task_loads(&cl, "nowhere")).unwrap(),
        vec![]
    );
}

#[test]
fn container_instance_round_trip() {
    let (_dir, _path, store) = file_store();
    let mut ci = container_instance("default", "c1");
    let arn = ci.container_instance_arn.clone().unwrap();
    let cl = cluster_arn("default");
    assert_eq!(
        store
            .write(|tx| tx.put_container_instance(&cl, &ci, Expect::Absent))
            .unwrap(),
        1
    );
    assert_eq!(
        store.read(|tx| tx.container_instance(&arn)).unwrap(),
        Some(Versioned {
            version: 1,
            value: ci.clone()
        })
    );

    ci.status = Some("DRAINING".into());
    assert_eq!(
        store
            .write(|tx| tx.put_container_instance(&cl, &ci, Expect::Version(1)))
            .unwrap(),
        2
    );
    let draining = store
        .read(|tx| tx.container_instances(&cl, Some("DRAINING"), None, 10))
        .unwrap();
    assert_eq!(
        draining.items,
        vec![Versioned {
            version: 2,
            value: ci.clone()
        }]
    );
    assert!(store
        .read(|tx| tx.container_instances(&cl, Some("ACTIVE"), None, 10))
        .unwrap()
        .items
        .is_empty());
    assert!(store
        .read(|tx| tx.container_instances("other", None, None, 10))
        .unwrap()
        .items
        .is_empty());

    store
        .write(|tx| tx.delete_container_instance(&arn, 2))
        .unwrap();
    assert_eq!(store.read(|tx| tx.container_instance(&arn)).unwrap(), None);
}

/// A container instance write sets only the indexed columns that change;
/// the listings by cluster and status follow each kind of write, and a
/// stale version still conflicts.
#[test]
fn container_instance_listings_follow_every_kind_of_write() {
    let (_dir, _path, store) = file_store();
    let (a, b) = (cluster_arn("a"), cluster_arn("b"));
    let mut ci = container_instance("a", "c1");
    ci.status = Some("ACTIVE".into());
    let arn = ci.container_instance_arn.clone().unwrap();
    store
        .write(|tx| tx.put_container_instance(&a, &ci, Expect::Absent))
        .unwrap();
    let listed = |cluster: &str, status: &str| -> Vec<(String, i64)> {
        store
            .read(|tx| tx.container_instance_versions(cluster, Some(status), None, 10))
            .unwrap()
            .items
    };
    let mut version = 1;
    // (cluster, status, running tasks): a doc-only write, a status change,
    // a move to another cluster, both at once.
    for (cluster, status, running) in [
        (&a, "ACTIVE", 3),
        (&a, "DRAINING", 3),
        (&b, "DRAINING", 0),
        (&a, "ACTIVE", 1),
    ] {
        ci.status = Some(status.into());
        ci.running_tasks_count = running;
        assert!(matches!(
            store.write(|tx| tx.put_container_instance(cluster, &ci, Expect::Version(version - 1))),
            Err(StoreError::Conflict { .. })
        ));
        version = store
            .write(|tx| tx.put_container_instance(cluster, &ci, Expect::Version(version)))
            .unwrap();
        for c in [&a, &b] {
            for s in ["ACTIVE", "DRAINING"] {
                let expected = if c == cluster && s == status {
                    vec![(arn.clone(), version)]
                } else {
                    vec![]
                };
                assert_eq!(listed(c, s), expected, "{c} {s} after {cluster} {status}");
            }
        }
        assert_eq!(
            store.read(|tx| tx.container_instance(&arn)).unwrap(),
            Some(Versioned {
                version,
                value: ci.clone()
            })
        );
    }
}

#[test]
fn attribute_round_trip() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let a = attribute("c1", "stack", Some("prod"));
    let b = attribute("c1", "flag", None);
    store
        .write(|tx| {
            tx.put_attribute(&cl, &a)?;
            tx.put_attribute(&cl, &b)?;
            tx.put_attribute(&cluster_arn("other"), &a)
        })
        .unwrap();
    let filter = AttributeFilter {
        cluster_arn: cl.clone(),
        ..Default::default()
    };
    let all = store.read(|tx| tx.attributes(&filter, None, 10)).unwrap();
    assert_eq!(all.items, vec![b.clone(), a.clone()]);
    assert_eq!(store.read(|tx| tx.attribute_count(&cl, "c1")).unwrap(), 2);

    // Put replaces.
    let a2 = attribute("c1", "stack", Some("dev"));
    store.write(|tx| tx.put_attribute(&cl, &a2)).unwrap();
    assert_eq!(
        store
            .read(|tx| tx.attributes(&filter, None, 10))
            .unwrap()
            .items,
        vec![b.clone(), a2]
    );
    assert_eq!(store.read(|tx| tx.attribute_count(&cl, "c1")).unwrap(), 2);

    assert!(store
        .write(|tx| tx.delete_attribute(&cl, "c1", "stack"))
        .unwrap());
    assert!(!store
        .write(|tx| tx.delete_attribute(&cl, "c1", "stack"))
        .unwrap());
    assert_eq!(store.read(|tx| tx.attribute_count(&cl, "c1")).unwrap(), 1);
    assert_eq!(
        store
            .read(|tx| tx.attribute_count(&cluster_arn("other"), "c1"))
            .unwrap(),
        1
    );
}

#[test]
fn attribute_filters() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    store
        .write(|tx| {
            tx.put_attribute(&cl, &attribute("c1", "stack", Some("prod")))?;
            tx.put_attribute(&cl, &attribute("c2", "stack", Some("dev")))?;
            tx.put_attribute(&cl, &attribute("c2", "gpu", Some("yes")))
        })
        .unwrap();
    let names = |f: AttributeFilter| -> Vec<(String, String)> {
        store
            .read(|tx| tx.attributes(&f, None, 100))
            .unwrap()
            .items
            .into_iter()
            .map(|a| (a.target_id.unwrap(), a.name.unwrap()))
            .collect()
    };
    let base = AttributeFilter {
        cluster_arn: cl.clone(),
        ..Default::default()
    };
    let pair = |t: &str, n: &str| (t.to_owned(), n.to_owned());
    assert_eq!(
        names(AttributeFilter {
            name: Some("stack".into()),
            ..base.clone()
        }),
        vec![pair("c1", "stack"), pair("c2", "stack")]
    );
    assert_eq!(
        names(AttributeFilter {
            name: Some("stack".into()),
            value: Some("dev".into()),
            ..base.clone()
        }),
        vec![pair("c2", "stack")]
    );
    assert_eq!(
        names(AttributeFilter {
            target_type: Some("container-instance".into()),
            ..base.clone()
        })
        .len(),
        3
    );
    assert!(names(AttributeFilter {
        target_type: Some("other".into()),
        ..base.clone()
    })
    .is_empty());
}

#[test]
fn settings_round_trip() {
    let (_dir, _path, store) = file_store();
    let setting = |principal: &str, name: SettingName, value: &str| Setting {
        name: Some(name),
        value: Some(value.into()),
        principal_arn: Some(principal.into()),
        r#type: Some(SettingType::User),
    };
    let user = "arn:aws:iam::000000000000:user/alice";
    store
        .write(|tx| {
            tx.put_setting(&setting(user, SettingName::TaskLongArnFormat, "enabled"))?;
            tx.put_setting(&setting(user, SettingName::ContainerInsights, "disabled"))?;
            tx.put_setting(&setting(
                "default",
                SettingName::TaskLongArnFormat,
                "disabled",
            ))
        })
        .unwrap();
    // Replaced, not duplicated.
    store
        .write(|tx| tx.put_setting(&setting(user, SettingName::ContainerInsights, "enabled")))
        .unwrap();
    let got = store.read(|tx| tx.settings(user)).unwrap();
    assert_eq!(
        got,
        vec![
            setting(user, SettingName::ContainerInsights, "enabled"),
            setting(user, SettingName::TaskLongArnFormat, "enabled"),
        ]
    );
    assert_eq!(store.read(|tx| tx.settings("default")).unwrap().len(), 1);
    assert!(store
        .write(|tx| tx.delete_setting(user, "containerInsights"))
        .unwrap());
    assert!(!store
        .write(|tx| tx.delete_setting(user, "containerInsights"))
        .unwrap());
    assert_eq!(store.read(|tx| tx.settings(user)).unwrap().len(), 1);
    assert!(store.read(|tx| tx.settings("nobody")).unwrap().is_empty());
}

#[test]
fn client_token_and_meta_round_trip() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let token = ClientToken {
        request_digest: "abc".into(),
        task_arns: vec!["t1".into(), "t2".into()],
    };
    store
        .write(|tx| tx.put_client_token(&cl, "tok", &token))
        .unwrap();
    assert_eq!(
        store.read(|tx| tx.client_token(&cl, "tok")).unwrap(),
        Some(token.clone())
    );
    assert_eq!(
        store.read(|tx| tx.client_token(&cl, "other")).unwrap(),
        None
    );
    assert_eq!(
        store
            .read(|tx| tx.client_token("other-cluster", "tok"))
            .unwrap(),
        None
    );
    let again = store.write(|tx| tx.put_client_token(&cl, "tok", &token));
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );

    assert_eq!(store.read(|tx| tx.meta("server-id")).unwrap(), None);
    store.write(|tx| tx.put_meta("server-id", "one")).unwrap();
    store.write(|tx| tx.put_meta("server-id", "two")).unwrap();
    assert_eq!(
        store.read(|tx| tx.meta("server-id")).unwrap().as_deref(),
        Some("two")
    );

    // By prefix: only the keys that start with it, in key order.
    store
        .write(|tx| {
            for k in ["p/b", "p/a", "p", "p0", "q/a", "o/z", "p/\u{e9}"] {
                tx.put_meta(k, &format!("v-{k}"))?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let got = store.read(|tx| tx.metas("p/")).unwrap();
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/\u{e9}"]);
    assert_eq!(got[0].1, "v-p/a");
    assert!(store.read(|tx| tx.metas("none/")).unwrap().is_empty());
}

#[test]
fn in_memory_store_reads_its_writes() {
    let store = Store::in_memory().unwrap();
    store
        .write(|tx| tx.put_cluster(&cluster("a"), Expect::Absent))
        .unwrap();
    assert_eq!(
        store.read(|tx| tx.cluster("a")).unwrap().unwrap().version,
        1
    );
    let store = SqliteStore::in_memory().unwrap();
    assert_eq!(store.read(|tx| tx.cluster("a")).unwrap(), None);
}

// ---------------------------------------------------------------- compare-and-swap

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

#[test]
fn cas_conflicts() {
    let (_dir, _path, store) = file_store();
    let c = cluster("default");
    store
        .write(|tx| tx.put_cluster(&c, Expect::Absent))
        .unwrap();
    assert!(is_conflict(
        store.write(|tx| tx.put_cluster(&c, Expect::Absent))
    ));
    // Another name with the same ARN is the same cluster.
    let mut twin = cluster("twin");
    twin.cluster_arn = c.cluster_arn.clone();
    assert!(is_conflict(
        store.write(|tx| tx.put_cluster(&twin, Expect::Absent))
    ));
    assert_eq!(
        store
            .write(|tx| tx.put_cluster(&c, Expect::Version(1)))
            .unwrap(),
        2
    );
    assert!(is_conflict(
        store.write(|tx| tx.put_cluster(&c, Expect::Version(1)))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.put_cluster(&c, Expect::Version(3)))
    ));
    assert!(is_conflict(store.write(|tx| {
        tx.put_cluster(&cluster("missing"), Expect::Version(1))
    })));
    assert_eq!(
        store
            .read(|tx| tx.cluster("default"))
            .unwrap()
            .unwrap()
            .version,
        2
    );

    let cp = capacity_provider("cp");
    store
        .write(|tx| tx.put_capacity_provider(&cp, Expect::Absent))
        .unwrap();
    assert!(is_conflict(
        store.write(|tx| tx.put_capacity_provider(&cp, Expect::Absent))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.put_capacity_provider(&cp, Expect::Version(2)))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.delete_capacity_provider("cp", 2))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.delete_capacity_provider("nope", 1))
    ));
    store
        .write(|tx| tx.delete_capacity_provider("cp", 1))
        .unwrap();
    assert!(is_conflict(
        store.write(|tx| tx.delete_capacity_provider("cp", 1))
    ));

    let td = task_definition("web", 1, TaskDefinitionStatus::Active);
    store
        .write(|tx| tx.put_task_definition(&td, Expect::Absent))
        .unwrap();
    assert!(is_conflict(
        store.write(|tx| tx.put_task_definition(&td, Expect::Absent))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.put_task_definition(&td, Expect::Version(5)))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.delete_task_definition("web", 1, 2))
    ));
    store
        .write(|tx| tx.delete_task_definition("web", 1, 1))
        .unwrap();

    let t = task("default", "t", "web");
    store.write(|tx| tx.put_task(&t, Expect::Absent)).unwrap();
    assert!(is_conflict(
        store.write(|tx| tx.put_task(&t, Expect::Absent))
    ));
    assert!(is_conflict(
        store.write(|tx| tx.put_task(&t, Expect::Version(0)))
    ));
    assert_eq!(
        store
            .write(|tx| tx.put_task(&t, Expect::Version(1)))
            .unwrap(),
        2
    );

    let cl = cluster_arn("default");
    let ci = container_instance("default", "i");
    let arn = ci.container_instance_arn.clone().unwrap();
    store
        .write(|tx| tx.put_container_instance(&cl, &ci, Expect::Absent))
        .unwrap();
    assert!(is_conflict(store.write(|tx| tx.put_container_instance(
        &cl,
        &ci,
        Expect::Absent
    ))));
    assert!(is_conflict(store.write(|tx| tx.put_container_instance(
        &cl,
        &ci,
        Expect::Version(2)
    ))));
    assert!(is_conflict(
        store.write(|tx| tx.delete_container_instance(&arn, 3))
    ));
    store
        .write(|tx| tx.delete_container_instance(&arn, 1))
        .unwrap();
}

#[test]
fn documents_without_their_keys_are_refused() {
    let store = Store::in_memory().unwrap();
    let err = store
        .write(|tx| tx.put_cluster(&Cluster::default(), Expect::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    let err = store
        .write(|tx| tx.put_task(&Task::default(), Expect::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    let err = store
        .write(|tx| tx.put_attribute("c", &Attribute::default()))
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
}

#[test]
fn concurrent_cas_increments_end_with_the_exact_total() {
    let (_dir, _path, store) = file_store();
    store
        .write(|tx| tx.put_cluster(&cluster("counter"), Expect::Absent))
        .unwrap();
    let store = Arc::new(store);
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = Arc::clone(&store);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut conflicts = 0;
                for _ in 0..PER_THREAD {
                    loop {
                        // Read in a read transaction, write in another: the
                        // version is what keeps the increments from being lost.
                        let current = store.read(|tx| tx.cluster("counter")).unwrap().unwrap();
                        let mut next = current.value.clone();
                        next.running_tasks_count += 1;
                        match store
                            .write(|tx| tx.put_cluster(&next, Expect::Version(current.version)))
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let total = THREADS * PER_THREAD;
    let end = store.read(|tx| tx.cluster("counter")).unwrap().unwrap();
    assert_eq!(end.value.running_tasks_count as usize, total);
    assert_eq!(end.version as usize, total + 1);
    eprintln!("{conflicts} conflicts retried");
}

// ---------------------------------------------------------------- paging

#[test]
fn paging_clusters_and_capacity_providers() {
    let (_dir, _path, store) = file_store();
    let names: Vec<String> = (0..23).map(|i| format!("c{:02}", (i * 7) % 23)).collect();
    store
        .write(|tx| {
            for n in &names {
                tx.put_cluster(&cluster(n), Expect::Absent)?;
                tx.put_capacity_provider(&capacity_provider(n), Expect::Absent)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let mut arns: Vec<String> = names.iter().map(|n| cluster_arn(n)).collect();
    arns.sort();
    let mut sorted = names.clone();
    sorted.sort();
    for limit in [1, 2, 5, 23, 100] {
        let got: Vec<String> = walk(limit, |after, limit| {
            store.read(|tx| tx.clusters(after, limit)).unwrap()
        })
        .into_iter()
        .map(|c| c.cluster_arn.unwrap())
        .collect();
        assert_eq!(got, arns, "limit {limit}");
        let got: Vec<String> = walk(limit, |after, limit| {
            store
                .read(|tx| tx.capacity_providers(after, limit))
                .unwrap()
        })
        .into_iter()
        .map(|c| c.name.unwrap())
        .collect();
        assert_eq!(got, sorted, "limit {limit}");
    }
    // Exactly `limit` items left: next is set, and the page after it is empty.
    let page = store.read(|tx| tx.clusters(Some(&arns[20]), 2)).unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.next.as_deref(), Some(arns[22].as_str()));
    let page = store
        .read(|tx| tx.clusters(page.next.as_deref(), 2))
        .unwrap();
    assert_eq!(
        page,
        Page {
            items: vec![],
            next: None
        }
    );
}

fn seed_task_definitions(store: &Store) -> Vec<(String, i32)> {
    let mut all = Vec::new();
    store
        .write(|tx| {
            for family in ["web", "api", "worker", "web-canary", "batch"] {
                for _ in 0..4 {
                    let revision = tx.next_revision(family)?;
                    let status = if revision % 2 == 0 {
                        TaskDefinitionStatus::Inactive
                    } else {
                        TaskDefinitionStatus::Active
                    };
                    tx.put_task_definition(
                        &task_definition(family, revision, status),
                        Expect::Absent,
                    )?;
                    all.push((family.to_owned(), revision));
                }
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    all.sort();
    all
}

#[test]
fn paging_task_definitions() {
    let (_dir, _path, store) = file_store();
    let all = seed_task_definitions(&store);
    let arns = |v: &[(String, i32)]| v.iter().map(|(f, r)| td_arn(f, *r)).collect::<Vec<_>>();

    for limit in [1, 3, 4, 7, 50] {
        let asc = TaskDefinitionFilter::default();
        let got = walk(limit, |after, limit| {
            store
                .read(|tx| tx.task_definitions(&asc, after, limit))
                .unwrap()
        });
        assert_eq!(got, arns(&all), "limit {limit}");

        let desc = TaskDefinitionFilter {
            descending: true,
            ..Default::default()
        };
        let got = walk(limit, |after, limit| {
            store
                .read(|tx| tx.task_definitions(&desc, after, limit))
                .unwrap()
        });
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(got, arns(&reversed), "limit {limit}");

        let web_active = TaskDefinitionFilter {
            family: Some("web".into()),
            status: Some(TaskDefinitionStatus::Active),
            descending: false,
        };
        let got = walk(limit, |after, limit| {
            store
                .read(|tx| tx.task_definitions(&web_active, after, limit))
                .unwrap()
        });
        let expected: Vec<_> = all
            .iter()
            .filter(|(f, r)| f == "web" && r % 2 == 1)
            .cloned()
            .collect();
        assert_eq!(got, arns(&expected), "limit {limit}");
        assert_eq!(expected.len(), 2, "web-canary is another family");
    }

    // Paging resumes after a revision that was deleted in between.
    let first = store
        .read(|tx| tx.task_definitions(&TaskDefinitionFilter::default(), None, 2))
        .unwrap();
    assert_eq!(first.next.as_deref(), Some(td_arn("api", 2).as_str()));
    store
        .write(|tx| tx.delete_task_definition("api", 2, 1))
        .unwrap();
    let rest = store
        .read(|tx| tx.task_definitions(&TaskDefinitionFilter::default(), first.next.as_deref(), 2))
        .unwrap();
    assert_eq!(rest.items, vec![td_arn("api", 3), td_arn("api", 4)]);
}

#[test]
fn families_listing() {
    let (_dir, _path, store) = file_store();
    seed_task_definitions(&store);
    store
        .write(|tx| {
            let revision = tx.next_revision("retired")?;
            tx.put_task_definition(
                &task_definition("retired", revision, TaskDefinitionStatus::Inactive),
                Expect::Absent,
            )
        })
        .unwrap();
    let families = |prefix: Option<&str>, status: Option<TaskDefinitionStatus>, limit: usize| {
        walk(limit, |after, limit| {
            store
                .read(|tx| tx.families(prefix, status, after, limit))
                .unwrap()
        })
    };
    for limit in [1, 2, 10] {
        assert_eq!(
            families(None, None, limit),
            ["api", "batch", "retired", "web", "web-canary", "worker"]
        );
        assert_eq!(
            families(None, Some(TaskDefinitionStatus::Active), limit),
            ["api", "batch", "web", "web-canary", "worker"]
        );
        assert_eq!(
            families(None, Some(TaskDefinitionStatus::Inactive), limit).len(),
            6
        );
        assert_eq!(
            families(Some("w"), None, limit),
            ["web", "web-canary", "worker"]
        );
        assert_eq!(
            families(Some("web"), Some(TaskDefinitionStatus::Active), limit),
            ["web", "web-canary"]
        );
        assert!(families(Some("zzz"), None, limit).is_empty());
        assert!(families(None, Some(TaskDefinitionStatus::DeleteInProgress), limit).is_empty());
    }
}

#[test]
fn paging_tasks_and_container_instances() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let mut task_arns = Vec::new();
    let mut ci_arns = Vec::new();
    store
        .write(|tx| {
            for i in 0..31 {
                let id = format!("{:08x}", (i * 2_654_435_761u64) % 0xffff_ffff);
                let t = task("default", &id, "web");
                task_arns.push(t.task_arn.clone().unwrap());
                tx.put_task(&t, Expect::Absent)?;
                let ci = container_instance("default", &id);
                ci_arns.push(ci.container_instance_arn.clone().unwrap());
                tx.put_container_instance(&cl, &ci, Expect::Absent)?;
                // Another cluster's rows never show up.
                tx.put_task(&task("other", &id, "web"), Expect::Absent)?;
                tx.put_container_instance(
                    &cluster_arn("other"),
                    &container_instance("other", &id),
                    Expect::Absent,
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    task_arns.sort();
    ci_arns.sort();
    let filter = TaskFilter {
        cluster_arn: cl.clone(),
        ..Default::default()
    };
    for limit in [1, 4, 10, 31, 32] {
        let got: Vec<String> = walk(limit, |after, limit| {
            store.read(|tx| tx.tasks(&filter, after, limit)).unwrap()
        })
        .into_iter()
        .map(|t| t.value.task_arn.unwrap())
        .collect();
        assert_eq!(got, task_arns, "limit {limit}");
        let got: Vec<String> = walk(limit, |after, limit| {
            store
                .read(|tx| tx.container_instances(&cl, None, after, limit))
                .unwrap()
        })
        .into_iter()
        .map(|c| c.value.container_instance_arn.unwrap())
        .collect();
        assert_eq!(got, ci_arns, "limit {limit}");
    }
}

#[test]
fn paging_attributes() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let mut expected = Vec::new();
    store
        .write(|tx| {
            for target in ["b", "a", "c", "a-1"] {
                for name in ["z", "m", "a.b", "a"] {
                    tx.put_attribute(&cl, &attribute(target, name, Some("v")))?;
                    expected.push((target.to_owned(), name.to_owned()));
                }
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    expected.sort();
    let filter = AttributeFilter {
        cluster_arn: cl,
        ..Default::default()
    };
    for limit in [1, 3, 4, 16, 20] {
        let got: Vec<(String, String)> = walk(limit, |after, limit| {
            store
                .read(|tx| tx.attributes(&filter, after, limit))
                .unwrap()
        })
        .into_iter()
        .map(|a| (a.target_id.unwrap(), a.name.unwrap()))
        .collect();
        assert_eq!(got, expected, "limit {limit}");
    }
}

// ---------------------------------------------------------------- tasks

#[test]
fn task_filters() {
    let (_dir, _path, store) = file_store();
    let cl = cluster_arn("default");
    let ci1 = format!("{ACCOUNT}:container-instance/default/ci1");
    let ci2 = format!("{ACCOUNT}:container-instance/default/ci2");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let family = if i % 3 == 0 { "web" } else { "batch" };
        let mut t = task("default", &format!("t{i:02}"), family);
        t.started_by = Some(if i % 2 == 0 { "alice" } else { "bob" }.into());
        t.group = Some(if i < 6 { "service:web" } else { "family:batch" }.into());
        t.container_instance_arn = Some(if i % 4 == 0 { ci1.clone() } else { ci2.clone() });
        t.desired_status = Some(if i >= 9 { "STOPPED" } else { "RUNNING" }.into());
        t.last_status = Some(
            match i % 3 {
                0 => "RUNNING",
                1 => "PENDING",
                _ => "STOPPED",
            }
            .into(),
        );
        tasks.push(t);
    }
    store
        .write(|tx| {
            for t in &tasks {
                tx.put_task(t, Expect::Absent)?;
            }
            tx.put_task(&task("other", "x", "web"), Expect::Absent)
        })
        .unwrap();

    let check = |filter: TaskFilter, keep: &dyn Fn(&Task) -> bool| {
        let expected: Vec<&Task> = tasks.iter().filter(|t| keep(t)).collect();
        assert!(
            !expected.is_empty() && expected.len() < tasks.len(),
            "a filter that selects nothing or everything tests little"
        );
        let got = walk(2, |after, limit| {
            store.read(|tx| tx.tasks(&filter, after, limit)).unwrap()
        });
        let got: Vec<&Task> = got.iter().map(|v| &v.value).collect();
        assert_eq!(got, expected, "{filter:?}");
    };
    let base = TaskFilter {
        cluster_arn: cl.clone(),
        ..Default::default()
    };
    check(
        TaskFilter {
            family: Some("web".into()),
            ..base.clone()
        },
        &|t| t.task_definition_arn.as_deref() == Some(&td_arn("web", 1)),
    );
    check(
        TaskFilter {
            started_by: Some("alice".into()),
            ..base.clone()
        },
        &|t| t.started_by.as_deref() == Some("alice"),
    );
    check(
        TaskFilter {
            group: Some("service:web".into()),
            ..base.clone()
        },
        &|t| t.group.as_deref() == Some("service:web"),
    );
    check(
        TaskFilter {
            container_instance_arn: Some(ci1.clone()),
            ..base.clone()
        },
        &|t| t.container_instance_arn.as_ref() == Some(&ci1),
    );
    check(
        TaskFilter {
            desired_status: Some("STOPPED".into()),
            ..base.clone()
        },
        &|t| t.desired_status.as_deref() == Some("STOPPED"),
    );
    check(
        TaskFilter {
            last_status: Some("PENDING".into()),
            ..base.clone()
        },
        &|t| t.last_status.as_deref() == Some("PENDING"),
    );
    check(
        TaskFilter {
            family: Some("batch".into()),
            started_by: Some("bob".into()),
            desired_status: Some("RUNNING".into()),
            ..base.clone()
        },
        &|t| {
            t.task_definition_arn.as_deref() == Some(&td_arn("batch", 1))
                && t.started_by.as_deref() == Some("bob")
                && t.desired_status.as_deref() == Some("RUNNING")
        },
    );
    // Not yet stopped, by instance and by group with a desired status (the
    // scheduler's reads, on the partial indexes of migration 4), and alone.
    check(
        TaskFilter {
            container_instance_arn: Some(ci2.clone()),
            desired_status: Some("RUNNING".into()),
            not_stopped: true,
            ..base.clone()
        },
        &|t| {
            t.container_instance_arn.as_ref() == Some(&ci2)
                && t.desired_status.as_deref() == Some("RUNNING")
                && t.last_status.as_deref() != Some("STOPPED")
        },
    );
    check(
        TaskFilter {
            group: Some("family:batch".into()),
            desired_status: Some("STOPPED".into()),
            not_stopped: true,
            ..base.clone()
        },
        &|t| {
            t.group.as_deref() == Some("family:batch")
                && t.desired_status.as_deref() == Some("STOPPED")
                && t.last_status.as_deref() != Some("STOPPED")
        },
    );
    check(
        TaskFilter {
            not_stopped: true,
            ..base.clone()
        },
        &|t| t.last_status.as_deref() != Some("STOPPED"),
    );
    let none = TaskFilter {
        family: Some("nope".into()),
        ..base.clone()
    };
    assert!(store
        .read(|tx| tx.tasks(&none, None, 10))
        .unwrap()
        .items
        .is_empty());
    let other = TaskFilter {
        cluster_arn: cluster_arn("other"),
        ..Default::default()
    };
    assert_eq!(
        store
            .read(|tx| tx.tasks(&other, None, 10))
            .unwrap()
            .items
            .len(),
        1
    );

    // Placed and not yet stopped, in one read: by instance, desired status, ARN.
    let mut unplaced = task("default", "t99", "web");
    unplaced.container_instance_arn = None;
    unplaced.last_status = Some("PROVISIONING".into());
    store
        .write(|tx| tx.put_task(&unplaced, Expect::Absent))
        .unwrap();
    let placed = store.read(|tx| tx.placed_task_versions(&cl)).unwrap();
    let mut expected: Vec<PlacedTask> = tasks
        .iter()
        .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
        .map(|t| PlacedTask {
            container_instance_arn: t.container_instance_arn.clone().unwrap(),
            desired_status: t.desired_status.clone(),
            arn: t.task_arn.clone().unwrap(),
            version: 1,
        })
        .collect();
    expected.sort_by(|a, b| {
        (&a.container_instance_arn, &a.desired_status, &a.arn).cmp(&(
            &b.container_instance_arn,
            &b.desired_status,
            &b.arn,
        ))
    });
    assert_eq!(placed.len(), 8);
    assert_eq!(placed, expected);
    assert!(store
        .read(|tx| tx.placed_task_versions(&cluster_arn("empty")))
        .unwrap()
        .is_empty());

    let counts = store.read(|tx| tx.task_counts(&cl)).unwrap();
    assert_eq!(
        counts,
        vec![
            ("PENDING".into(), 4),
            ("PROVISIONING".into(), 1),
            ("RUNNING".into(), 4),
            ("STOPPED".into(), 4)
        ]
    );
    assert!(store
        .read(|tx| tx.task_counts(&cluster_arn("empty")))
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- task definition revisions

#[test]
fn revisions_are_never_reused() {
    let (_dir, path, store) = file_store();
    let register = |store: &Store, family: &str| {
        store
            .write(|tx| {
                let revision = tx.next_revision(family)?;
                tx.put_task_definition(
                    &task_definition(family, revision, TaskDefinitionStatus::Active),
                    Expect::Absent,
                )?;
                Ok::<_, StoreError>(revision)
            })
            .unwrap()
    };
    assert_eq!(register(&store, "web"), 1);
    assert_eq!(register(&store, "web"), 2);
    assert_eq!(register(&store, "api"), 1);
    store
        .write(|tx| tx.delete_task_definition("web", 2, 1))
        .unwrap();
    store
        .write(|tx| tx.delete_task_definition("web", 1, 1))
        .unwrap();
    assert_eq!(register(&store, "web"), 3);
    assert!(store
        .read(|tx| tx.families(None, None, None, 10))
        .unwrap()
        .items
        .contains(&"web".to_owned()));

    // A revision stored without asking next_revision still reserves its number.
    store
        .write(|tx| {
            tx.put_task_definition(
                &task_definition("api", 9, TaskDefinitionStatus::Active),
                Expect::Absent,
            )
        })
        .unwrap();
    assert_eq!(register(&store, "api"), 10);

    drop(store);
    let store = Store::open_sqlite(&path, Durability::Full).unwrap();
    assert_eq!(register(&store, "web"), 4);
}

#[test]
fn latest_active_revision_skips_inactive() {
    let store = Store::in_memory().unwrap();
    store
        .write(|tx| {
            for (revision, status) in [
                (1, TaskDefinitionStatus::Active),
                (2, TaskDefinitionStatus::Active),
                (3, TaskDefinitionStatus::Inactive),
                (4, TaskDefinitionStatus::DeleteInProgress),
            ] {
                tx.put_task_definition(&task_definition("web", revision, status), Expect::Absent)?;
            }
            tx.put_task_definition(
                &task_definition("web-other", 7, TaskDefinitionStatus::Active),
                Expect::Absent,
            )
        })
        .unwrap();
    let latest = store
        .read(|tx| tx.task_definition("web", None))
        .unwrap()
        .unwrap();
    assert_eq!(latest.value.revision, 2);
    assert_eq!(
        store
            .read(|tx| tx.task_definition("web", Some(3)))
            .unwrap()
            .unwrap()
            .value
            .revision,
        3
    );
    assert_eq!(
        store.read(|tx| tx.task_definition("nope", None)).unwrap(),
        None
    );
}

// ---------------------------------------------------------------- transactions

#[test]
fn failed_write_leaves_nothing_behind() {
    let (_dir, _path, store) = file_store();
    #[derive(Debug)]
    #[allow(dead_code)] // the store error is carried for its Debug output only
    enum AppError {
        Store(StoreError),
        Refused,
    }
    impl From<StoreError> for AppError {
        fn from(e: StoreError) -> Self {
            Self::Store(e)
        }
    }
    let result: Result<(), AppError> = store.write(|tx| {
        tx.put_cluster(&cluster("ghost"), Expect::Absent)?;
        tx.put_task(&task("ghost", "t", "web"), Expect::Absent)?;
        tx.next_revision("ghost-family")?;
        tx.put_meta("ghost", "yes")?;
        tx.put_attribute(&cluster_arn("ghost"), &attribute("c", "n", None))?;
        // The transaction sees its own writes...
        assert!(tx.cluster("ghost")?.is_some());
        Err(AppError::Refused)
    });
    assert!(matches!(result, Err(AppError::Refused)));
    // ...and nothing of them outlives it.
    assert_eq!(store.read(|tx| tx.cluster("ghost")).unwrap(), None);
    assert_eq!(store.read(|tx| tx.meta("ghost")).unwrap(), None);
    assert_eq!(
        store
            .read(|tx| tx.attribute_count(&cluster_arn("ghost"), "c"))
            .unwrap(),
        0
    );
    assert_eq!(
        store.write(|tx| tx.next_revision("ghost-family")).unwrap(),
        1
    );

    // A store error from inside the closure rolls back the earlier writes too.
    let result = store.write(|tx| {
        tx.put_cluster(&cluster("first"), Expect::Absent)?;
        tx.put_cluster(&cluster("first"), Expect::Absent)
    });
    assert!(matches!(result, Err(StoreError::Conflict { .. })));
    assert_eq!(store.read(|tx| tx.cluster("first")).unwrap(), None);
}

#[test]
fn panicking_write_rolls_back_and_the_store_still_works() {
    let (_dir, _path, store) = file_store();
    let store = Arc::new(store);
    let s = Arc::clone(&store);
    let joined = thread::spawn(move || {
        s.write(|tx| -> Result<(), StoreError> {
            tx.put_cluster(&cluster("doomed"), Expect::Absent)?;
            panic!("handler bug");
        })
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(store.read(|tx| tx.cluster("doomed")).unwrap(), None);
    store
        .write(|tx| tx.put_cluster(&cluster("doomed"), Expect::Absent))
        .unwrap();
    assert!(store.read(|tx| tx.cluster("doomed")).unwrap().is_some());
}

#[test]
fn reads_see_a_consistent_snapshot() {
    let (_dir, _path, store) = file_store();
    store
        .write(|tx| {
            tx.put_cluster(&cluster("a"), Expect::Absent)?;
            tx.put_cluster(&cluster("b"), Expect::Absent)
        })
        .unwrap();
    let store = Arc::new(store);
    let (read_started, wait_read) = mpsc::channel();
    let (write_done, wait_write) = mpsc::channel();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            wait_read.recv().unwrap();
            // Moves "one unit" from a to b in one transaction, while the
            // reader is in the middle of its snapshot.
            store
                .write(|tx| {
                    let mut a = tx.cluster("a")?.unwrap();
                    let mut b = tx.cluster("b")?.unwrap();
                    a.value.running_tasks_count -= 1;
                    b.value.running_tasks_count += 1;
                    tx.put_cluster(&a.value, Expect::Version(a.version))?;
                    tx.put_cluster(&b.value, Expect::Version(b.version))?;
                    tx.put_cluster(&cluster("c"), Expect::Absent)
                })
                .unwrap();
            write_done.send(()).unwrap();
        })
    };
    let (a, b, listed) = store
        .read(|tx| {
            let a = tx.cluster("a")?.unwrap();
            read_started.send(()).unwrap();
            wait_write.recv().unwrap();
            let b = tx.cluster("b")?.unwrap();
            let listed = tx.clusters(None, 10)?.items.len();
            Ok::<_, StoreError>((a, b, listed))
        })
        .unwrap();
    writer.join().unwrap();
    // The read saw the state before the write, all of it.
    assert_eq!((a.version, b.version), (1, 1));
    assert_eq!(a.value.running_tasks_count + b.value.running_tasks_count, 0);
    assert_eq!(listed, 2);
    // A fresh read sees the write.
    assert_eq!(
        store.read(|tx| tx.clusters(None, 10)).unwrap().items.len(),
        3
    );
    assert_eq!(
        store
            .read(|tx| tx.cluster("b"))
            .unwrap()
            .unwrap()
            .value
            .running_tasks_count,
        1
    );
}

#[test]
fn reads_do_not_wait_for_a_writer() {
    let (_dir, _path, store) = file_store();
    store
        .write(|tx| tx.put_cluster(&cluster("a"), Expect::Absent))
        .unwrap();
    let store = Arc::new(store);
    let (in_write, wait_in_write) = mpsc::channel();
    let (release, wait_release) = mpsc::channel::<()>();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            store
                .write(|tx| {
                    tx.put_cluster(&cluster("b"), Expect::Absent)?;
                    in_write.send(()).unwrap();
                    wait_release.recv_timeout(Duration::from_secs(30)).unwrap();
                    Ok::<_, StoreError>(())
                })
                .unwrap();
        })
    };
    wait_in_write.recv().unwrap();
    // The write transaction is open and holds the write lock; reads go on.
    let names: Vec<String> = store
        .read(|tx| tx.clusters(None, 10))
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.cluster_name.unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    release.send(()).unwrap();
    writer.join().unwrap();
    assert_eq!(
        store.read(|tx| tx.clusters(None, 10)).unwrap().items.len(),
        2
    );
}

#[test]
fn read_transactions_refuse_writes() {
    let (_dir, _path, store) = file_store();
    let err = store
        .read(|tx| tx.put_cluster(&cluster("a"), Expect::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert_eq!(store.read(|tx| tx.cluster("a")).unwrap(), None);
}

// ---------------------------------------------------------------- files and migrations

#[test]
fn data_survives_close_and_reopen() {
    let (_dir, path, store) = file_store();
    let t = task("default", "t1", "web");
    let cl = cluster_arn("default");
    store
        .write(|tx| {
            tx.put_cluster(&cluster("default"), Expect::Absent)?;
            tx.put_task(&t, Expect::Absent)?;
            tx.put_meta("server-id", "s1")?;
            tx.put_attribute(&cl, &attribute("c1", "stack", Some("prod")))?;
            tx.put_client_token(
                &cl,
                "tok",
                &ClientToken {
                    request_digest: "d".into(),
                    task_arns: vec!["t1".into()],
                },
            )
        })
        .unwrap();
    // Reads leave idle reader connections behind; closing still checkpoints
    // the WAL and removes it.
    assert!(store.read(|tx| tx.cluster("default")).unwrap().is_some());
    drop(store);
    let wal = path.with_extension("db-wal");
    assert!(!wal.exists(), "{} left behind", wal.display());
    for durability in [Durability::Process, Durability::Full] {
        let store = Store::open_sqlite(&path, durability).unwrap();
        assert_eq!(
            store
                .read(|tx| tx.cluster("default"))
                .unwrap()
                .unwrap()
                .value,
            cluster("default")
        );
        assert_eq!(
            store
                .read(|tx| tx.task(t.task_arn.as_deref().unwrap()))
                .unwrap()
                .unwrap()
                .value,
            t
        );
        assert_eq!(
            store.read(|tx| tx.meta("server-id")).unwrap().as_deref(),
            Some("s1")
        );
        assert_eq!(store.read(|tx| tx.attribute_count(&cl, "c1")).unwrap(), 1);
        assert!(store
            .read(|tx| tx.client_token(&cl, "tok"))
            .unwrap()
            .is_some());
    }
}

fn migrations_of(path: &Path) -> (i64, Vec<(i64, String)>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let rows = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    (version, rows)
}

#[test]
fn reopening_applies_no_migration_twice() {
    let (_dir, path, store) = file_store();
    store.write(|tx| tx.put_meta("k", "v")).unwrap();
    drop(store);
    let (version, applied) = migrations_of(&path);
    assert!(version >= 1);
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=version).collect::<Vec<_>>()
    );
    thread::sleep(Duration::from_millis(5));
    for _ in 0..3 {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        assert_eq!(store.read(|tx| tx.meta("k")).unwrap().as_deref(), Some("v"));
        drop(store);
        assert_eq!(migrations_of(&path), (version, applied.clone()));
    }
}

#[test]
fn a_database_from_a_newer_berth_is_refused() {
    let (_dir, path, store) = file_store();
    store.write(|tx| tx.put_meta("k", "v")).unwrap();
    drop(store);
    let (version, _) = migrations_of(&path);
    let future = version + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {future}"))
        .unwrap();
    let err = SqliteStore::open(&path, Durability::Full).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{message}");
    assert!(
        message.contains("newer berth") && message.contains(&future.to_string()),
        "{message}"
    );
    // Refusing changed nothing.
    assert_eq!(migrations_of(&path).0, future);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(
        SqliteStore::open(&path, Durability::Full),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn corrupt_documents_in_a_file_are_reported() {
    let (_dir, path, store) = file_store();
    let t = task("default", "t1", "web");
    let arn = t.task_arn.clone().unwrap();
    store.write(|tx| tx.put_task(&t, Expect::Absent)).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE tasks SET doc = '{\"taskArn\": 42}' WHERE arn = ?1",
            [&arn],
        )
        .unwrap();
    let err = store.read(|tx| tx.task(&arn)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key.contains(&arn)),
        "{err}"
    );
    let filter = TaskFilter {
        cluster_arn: cluster_arn("default"),
        ..Default::default()
    };
    assert!(matches!(
        store.read(|tx| tx.tasks(&filter, None, 10)),
        Err(StoreError::Corrupt { .. })
    ));
}

/// Rough numbers for the hot paths; `cargo test -p berth-store --release -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("berth.db"), Durability::Process).unwrap();
    const N: usize = 2000;
    let tasks: Vec<Task> = (0..N)
        .map(|i| task("default", &format!("{i:08}"), "web"))
        .collect();
    let start = std::time::Instant::now();
    for t in &tasks {
        store.write(|tx| tx.put_task(t, Expect::Absent)).unwrap();
    }
    let put = start.elapsed();
    let start = std::time::Instant::now();
    for t in &tasks {
        store
            .read(|tx| tx.task(t.task_arn.as_deref().unwrap()))
            .unwrap()
            .unwrap();
    }
    let get = start.elapsed();
    let filter = TaskFilter {
        cluster_arn: cluster_arn("default"),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let listed = walk(100, |after, limit| {
        store.read(|tx| tx.tasks(&filter, after, limit)).unwrap()
    });
    assert_eq!(listed.len(), N);
    eprintln!(
        "{N} tasks: put {:?}/op (one transaction each), get {:?}/op, list all {:?}",
        put / N as u32,
        get / N as u32,
        start.elapsed()
    );
}

// ---------------------------------------------------------------- services

fn service(cluster: &str, name: &str, status: &str) -> Service {
    Service {
        service_arn: Some(format!("{ACCOUNT}:service/{cluster}/{name}")),
        service_name: Some(name.into()),
        cluster_arn: Some(cluster_arn(cluster)),
        status: Some(status.into()),
        desired_count: 2,
        scheduling_strategy: Some(SchedulingStrategy::Replica),
        ..Default::default()
    }
}

#[test]
fn service_round_trip_and_compare_and_swap() {
    let (_dir, _path, store) = file_store();
    let mut s = service("c1", "web", "ACTIVE");
    let arn = s.service_arn.clone().unwrap();
    assert_eq!(
        store
            .write(|tx| tx.put_service(&s, Expect::Absent))
            .unwrap(),
        1
    );
    let err = store
        .write(|tx| tx.put_service(&s, Expect::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let got = store.read(|tx| tx.service(&arn)).unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            version: 1,
            value: s.clone()
        }
    );
    s.status = Some("DRAINING".into());
    assert_eq!(
        store
            .write(|tx| tx.put_service(&s, Expect::Version(1)))
            .unwrap(),
        2
    );
    let err = store
        .write(|tx| tx.put_service(&s, Expect::Version(1)))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(store.read(|tx| tx.service(&arn)).unwrap().unwrap().value, s);
    assert!(store.read(|tx| tx.service("nope")).unwrap().is_none());
}

#[test]
fn service_listing_filters_and_pages() {
    let (_dir, _path, store) = file_store();
    store
        .write(|tx| {
            for i in 0..7 {
                let status = ["ACTIVE", "DRAINING", "INACTIVE"][i % 3];
                tx.put_service(&service("c1", &format!("s{i}"), status), Expect::Absent)?;
            }
            let mut daemon = service("c1", "d", "ACTIVE");
            daemon.scheduling_strategy = Some(SchedulingStrategy::Daemon);
            tx.put_service(&daemon, Expect::Absent)?;
            tx.put_service(&service("c2", "other", "ACTIVE"), Expect::Absent)
        })
        .unwrap();
    let names = |filter: &ServiceFilter, limit: usize| -> Vec<String> {
        walk(limit, |after, n| {
            store.read(|tx| tx.services(filter, after, n)).unwrap()
        })
        .into_iter()
        .map(|s| s.value.service_name.unwrap())
        .collect()
    };
    let all = ServiceFilter {
        cluster_arn: cluster_arn("c1"),
        ..Default::default()
    };
    assert_eq!(
        names(&all, 3),
        ["d", "s0", "s1", "s2", "s3", "s4", "s5", "s6"]
    );
    let live = ServiceFilter {
        statuses: vec!["ACTIVE".into(), "DRAINING".into()],
        ..all.clone()
    };
    assert_eq!(names(&live, 2), ["d", "s0", "s1", "s3", "s4", "s6"]);
    let replica = ServiceFilter {
        scheduling_strategy: Some("REPLICA".into()),
        statuses: vec!["ACTIVE".into()],
        ..all.clone()
    };
    assert_eq!(names(&replica, 10), ["s0", "s3", "s6"]);
    let managed = ServiceFilter {
        launch_type: Some("MANAGED_INSTANCES".into()),
        ..all.clone()
    };
    assert_eq!(names(&managed, 100).len(), 8);
    let fargate = ServiceFilter {
        launch_type: Some("FARGATE".into()),
        ..all
    };
    assert!(names(&fargate, 100).is_empty());
}

#[test]
fn service_deployments_and_revisions_round_trip() {
    let (_dir, _path, store) = file_store();
    let svc = format!("{ACCOUNT}:service/c1/web");
    let deployment = |id: &str| ServiceDeployment {
        service_deployment_arn: Some(format!("{ACCOUNT}:service-deployment/c1/web/{id}")),
        service_arn: Some(svc.clone()),
        cluster_arn: Some(cluster_arn("c1")),
        status: Some(ServiceDeploymentStatus::InProgress),
        ..Default::default()
    };
    let revision = ServiceRevision {
        service_revision_arn: Some(format!("{ACCOUNT}:service-revision/c1/web/1")),
        service_arn: Some(svc.clone()),
        task_definition: Some(td_arn("web", 1)),
        ..Default::default()
    };
    store
        .write(|tx| {
            for id in ["b", "a", "c"] {
                tx.put_service_deployment(&deployment(id), Expect::Absent)?;
            }
            tx.put_service_deployment(
                &ServiceDeployment {
                    service_arn: Some("other".into()),
                    ..deployment("x")
                },
                Expect::Absent,
            )?;
            tx.put_service_revision(&revision, Expect::Absent)
        })
        .unwrap();
    let listed: Vec<String> = walk(2, |after, n| {
        store
            .read(|tx| tx.service_deployments(&svc, after, n))
            .unwrap()
    })
    .into_iter()
    .map(|d| d.value.service_deployment_arn.unwrap())
    .collect();
    assert_eq!(
        listed,
        ["a", "b", "c"].map(|id| format!("{ACCOUNT}:service-deployment/c1/web/{id}"))
    );
    let arn = format!("{ACCOUNT}:service-deployment/c1/web/a");
    let mut d = store
        .read(|tx| tx.service_deployment(&arn))
        .unwrap()
        .unwrap();
    d.value.status = Some(ServiceDeploymentStatus::Stopped);
    store
        .write(|tx| tx.put_service_deployment(&d.value, Expect::Version(d.version)))
        .unwrap();
    let again = store
        .read(|tx| tx.service_deployment(&arn))
        .unwrap()
        .unwrap();
    assert_eq!((again.version, again.value), (2, d.value));
    let rev_arn = revision.service_revision_arn.clone().unwrap();
    assert_eq!(
        store
            .read(|tx| tx.service_revision(&rev_arn))
            .unwrap()
            .unwrap()
            .value,
        revision
    );
    let err = store
        .write(|tx| tx.put_service_revision(&revision, Expect::Absent))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
}

#[test]
fn a_version_1_database_gains_the_service_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // What berth before services left: schema version 1 with its data.
        let store = Store::open_sqlite(&path, Durability::Full).unwrap();
        store
            .write(|tx| tx.put_cluster(&cluster("c1"), Expect::Absent))
            .unwrap();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE services; DROP TABLE service_deployments; DROP TABLE service_revisions;
             DROP TABLE documents; DROP TABLE instance_meters; DROP TABLE task_usage;
             DROP INDEX tasks_live_instance; DROP INDEX tasks_live_group;
             DROP INDEX tasks_cluster_last_arn;
             CREATE INDEX tasks_cluster_last ON tasks (cluster_arn, last_status);
             DELETE FROM schema_migrations WHERE version > 1; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = Store::open_sqlite(&path, Durability::Full).unwrap();
    assert!(store.read(|tx| tx.cluster("c1")).unwrap().is_some());
    store
        .write(|tx| tx.put_service(&service("c1", "web", "ACTIVE"), Expect::Absent))
        .unwrap();
    drop(store);
    let (version, applied) = migrations_of(&path);
    assert_eq!(version, 5);
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn documents_round_trip_page_by_parent_and_survive_a_reopen() {
    use berth_store::docs;
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Doc {
        name: String,
        n: u32,
    }
    let (_dir, path, store) = file_store();
    store
        .write(|tx| {
            for (key, parent, n) in [("a/1", "a", 1), ("a/2", "a", 2), ("b/1", "b", 3)] {
                let d = Doc {
                    name: key.into(),
                    n,
                };
                assert_eq!(docs::put(tx, "thing", key, parent, &d, Expect::Absent)?, 1);
            }
            // Another kind under the same key is another document.
            docs::put(tx, "other", "a/1", "a", &7u32, Expect::Absent)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    // Inserting twice, or updating at a stale version, is a conflict; nothing changes.
    let err = store
        .write(|tx| {
            let d = Doc {
                name: "x".into(),
                n: 0,
            };
            docs::put(tx, "thing", "a/1", "a", &d, Expect::Absent)
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .write(|tx| {
            let d = Doc {
                name: "x".into(),
                n: 0,
            };
            docs::put(tx, "thing", "a/1", "a", &d, Expect::Version(9))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    drop(store);

    let store = Store::open_sqlite(&path, Durability::Full).unwrap();
    store
        .read(|tx| {
            let one: Versioned<Doc> = docs::get(tx, "thing", "a/1")?.unwrap();
            assert_eq!((one.version, one.value.n), (1, 1));
            assert!(docs::get::<Doc>(tx, "thing", "c/1")?.is_none());
            let under_a: Vec<String> = docs::all::<Doc>(tx, "thing", Some("a"))?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(under_a, ["a/1", "a/2"]);
            let page = docs::list::<Doc>(tx, "thing", None, None, 2)?;
            assert_eq!(page.items.len(), 2);
            assert_eq!(page.next.as_deref(), Some("a/2"));
            let rest = docs::list::<Doc>(tx, "thing", None, Some("a/2"), 2)?;
            assert_eq!(rest.items[0].0, "b/1");
            assert_eq!(rest.next, None);
            assert_eq!(docs::get::<u32>(tx, "other", "a/1")?.unwrap().value, 7);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store
        .write(|tx| {
            let v = docs::get::<Doc>(tx, "thing", "a/2")?.unwrap();
            let mut d = v.value;
            d.n = 20;
            assert_eq!(
                docs::put(tx, "thing", "a/2", "a", &d, Expect::Version(1))?,
                2
            );
            assert!(tx.delete_document("thing", "b/1", 5).is_err());
            tx.delete_document("thing", "b/1", 1)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    store
        .read(|tx| {
            assert_eq!(docs::get::<Doc>(tx, "thing", "a/2")?.unwrap().value.n, 20);
            assert!(docs::get::<Doc>(tx, "thing", "b/1")?.is_none());
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn meter(id: &str, cluster: &str, launched: f64) -> berth_model::meter::InstanceMeter {
    berth_model::meter::InstanceMeter {
        instance_id: id.into(),
        cluster_arn: cluster.into(),
        container_instance_arn: format!("ci/{id}"),
        capacity_provider: "mi".into(),
        instance_type: "m7i.large".into(),
        region: "us-east-1".into(),
        purchase_option: berth_model::meter::PurchaseOption::Spot,
        cpu_units: 2048,
        memory_mib: 8192,
        price_per_hour: 0.1,
        fee_per_hour: 0.01,
        price_table: "p".into(),
        fee_table: "f".into(),
        launched_at: launched,
        ended_at: None,
    }
}

fn usage(task: &str, id: &str, started: f64) -> berth_model::meter::TaskUsage {
    berth_model::meter::TaskUsage {
        task_arn: task.into(),
        instance_id: id.into(),
        cluster_arn: "c".into(),
        group: Some("service:web".into()),
        family: None,
        cpu_units: 256,
        memory_mib: 512,
        gpus: 0,
        architecture: "x86_64".into(),
        started_at: started,
        stopped_at: None,
    }
}

#[test]
fn meters_open_and_close_once_and_survive_a_reopen() {
    let (_dir, path, store) = file_store();
    store
        .write(|tx| {
            assert!(tx.open_instance_meter(&meter("i-1", "c", 100.0))?);
            assert!(!tx.open_instance_meter(&meter("i-1", "c", 999.0))?);
            assert!(tx.open_instance_meter(&meter("i-2", "d", 100.0))?);
            assert!(tx.open_instance_meter(&meter("i-3", "c", 100.0))?);
            assert!(tx.open_task_usage(&usage("t1", "i-1", 110.0))?);
            assert!(!tx.open_task_usage(&usage("t1", "i-1", 500.0))?);
            assert!(tx.open_task_usage(&usage("t2", "i-1", 120.0))?);
            assert!(tx.close_task_usage("t1", "i-1", 130.0)?);
            assert!(!tx.close_task_usage("t1", "i-1", 900.0)?);
            assert!(tx.void_instance_meter("i-3")?);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    drop(store);
    let store = Store::open_sqlite(&path, Durability::Full).unwrap();
    store
        .write(|tx| {
            // Closing the instance closes what is still open on it.
            assert!(tx.close_instance_meter("i-1", 200.0)?);
            assert!(!tx.close_instance_meter("i-1", 300.0)?);
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let (c, all, late) = store
        .read(|tx| {
            Ok::<_, StoreError>((
                tx.instance_meters(Some("c"), 0.0, 1000.0)?,
                tx.instance_meters(None, 0.0, 1000.0)?,
                tx.instance_meters(None, 1000.0, 2000.0)?,
            ))
        })
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].launched_at, 100.0);
    assert_eq!(c[0].ended_at, Some(200.0));
    assert_eq!(
        c[0].purchase_option,
        berth_model::meter::PurchaseOption::Spot
    );
    assert_eq!(all.len(), 2);
    // i-1 ended at 200 (its minute long past); i-2 still runs.
    assert_eq!(
        late.iter()
            .map(|m| m.instance_id.as_str())
            .collect::<Vec<_>>(),
        ["i-2"]
    );
    let usages = store.read(|tx| tx.task_usages("i-1")).unwrap();
    assert_eq!(usages.len(), 2);
    assert_eq!(
        (usages[0].started_at, usages[0].stopped_at),
        (110.0, Some(130.0))
    );
    assert_eq!(
        (usages[1].started_at, usages[1].stopped_at),
        (120.0, Some(200.0))
    );
    assert!(store.read(|tx| tx.task_usages("i-3")).unwrap().is_empty());
}

#[test]
fn the_change_mark_moves_with_writes_only() {
    let (_dir, path, store) = file_store();
    let before = store.change_mark().unwrap();
    store.read(|tx| tx.meta("k")).unwrap();
    assert_eq!(store.change_mark().unwrap(), before);
    store.write(|tx| tx.put_meta("k", "v")).unwrap();
    let after = store.change_mark().unwrap();
    assert_ne!(after, before);
    // Another process writing the same file moves it too.
    {
        let other = Store::open_sqlite(&path, Durability::Full).unwrap();
        other.write(|tx| tx.put_meta("k", "w")).unwrap();
    }
    assert_ne!(store.change_mark().unwrap(), after);
}

#[test]
fn documents_read_again_are_what_is_stored_even_after_a_rollback() {
    let (_dir, _path, on_file) = file_store();
    for store in [Store::in_memory().unwrap(), on_file] {
        let mut t = task("default", "d1", "web");
        store.write(|tx| tx.put_task(&t, Expect::Absent)).unwrap();
        let arn = t.task_arn.clone().unwrap();
        let read = |store: &Store| store.read(|tx| tx.task(&arn)).unwrap().unwrap().value;
        assert_eq!(read(&store), t);
        // Version 2 written and read inside a transaction that fails: the
        // next reads see version 1 again, not what the failed one read.
        let mut uncommitted = t.clone();
        uncommitted.last_status = Some("RUNNING".into());
        uncommitted.version = 2;
        let failed: Result<(), StoreError> = store.write(|tx| {
            tx.put_task(&uncommitted, Expect::Version(1))?;
            assert_eq!(tx.task(&arn)?.unwrap().value, uncommitted);
            let listed = tx.tasks(
                &TaskFilter {
                    cluster_arn: cluster_arn("default"),
                    ..Default::default()
                },
                None,
                10,
            )?;
            assert_eq!(listed.items[0].value, uncommitted);
            Err(StoreError::Backend("fails on purpose".into()))
        });
        assert!(failed.is_err());
        assert_eq!(read(&store), t);
        // Another version 2, with other content, is read as written.
        t.last_status = Some("STOPPED".into());
        t.version = 2;
        store
            .write(|tx| tx.put_task(&t, Expect::Version(1)))
            .unwrap();
        assert_eq!(read(&store), t);
        let listed = store
            .read(|tx| {
                tx.tasks(
                    &TaskFilter {
                        cluster_arn: cluster_arn("default"),
                        ..Default::default()
                    },
                    None,
                    10,
                )
            })
            .unwrap();
        assert_eq!(listed.items[0].value, t);

        // Container instances too.
        let cl = cluster_arn("default");
        let mut ci = container_instance("default", "c9");
        let ci_arn = ci.container_instance_arn.clone().unwrap();
        store
            .write(|tx| tx.put_container_instance(&cl, &ci, Expect::Absent))
            .unwrap();
        let read_ci = |store: &Store| {
            store
                .read(|tx| tx.container_instance(&ci_arn))
                .unwrap()
                .unwrap()
        };
        assert_eq!(read_ci(&store).value, ci);
        ci.status = Some("DRAINING".into());
        let failed: Result<(), StoreError> = store.write(|tx| {
            tx.put_container_instance(&cl, &ci, Expect::Version(1))?;
            assert_eq!(tx.container_instance(&ci_arn)?.unwrap().value, ci);
            Err(StoreError::Backend("fails on purpose".into()))
        });
        assert!(failed.is_err());
        assert_eq!(read_ci(&store).value.status.as_deref(), Some("ACTIVE"));
    }
}
