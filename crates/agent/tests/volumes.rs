//! Real tests of task volumes: the supervisor runs tasks with runc, from a busybox image layer,
//! whose containers mount host directories and a directory private to the task.
//!
//! Skipped, loudly, when not running as root, when runc is missing or when the host has no
//! static busybox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent::images::{ImageSource, Prepared};
use berth_agent::runtime::{cgroup, testing, ImageConfig, RuncRuntime, Runtime, ShimCommand};
use berth_agent::supervisor::{Supervisor, SupervisorConfig};
use berth_model::ecs::{
    ContainerCondition, ContainerDefinition, ContainerDependency, HostVolumeProperties, MountPoint,
    Volume, VolumeFrom,
};
use berth_protocol::{DesiredStatus, TaskReport, TaskSpec};

fn runc_ok(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "not running as root"
    } else if berth_agent::runtime::find_runc().is_none() {
        "runc not found"
    } else if testing::static_busybox().is_none() {
        "no static busybox on this host"
    } else {
        return true;
    };
    eprintln!("\n!!!!!!!! SKIPPED runc test {test}: {why} !!!!!!!!\n");
    false
}

/// Every image is the busybox layer.
struct Busybox(PathBuf);

impl ImageSource for Busybox {
    fn prepare(&self, _reference: &str) -> anyhow::Result<Prepared> {
        Ok(Prepared {
            layers: vec![self.0.clone()],
            config: ImageConfig::default(),
            digest: String::new(),
        })
    }
}

/// One test's world: a temp dir with a busybox layer and the agent's state dir, a supervisor
/// over runc, and the containers and cgroups to remove at the end (also on panic).
struct World {
    tmp: tempfile::TempDir,
    rt: Arc<RuncRuntime>,
    cgroup_root: String,
    supervisor: Supervisor,
}

impl World {
    fn new(name: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let layer = testing::busybox_layer(&tmp.path().join("layer")).unwrap();
        let state = tmp.path().join("state");
        let rt = Arc::new(RuncRuntime::new(
            &state.join("runtime"),
            ShimCommand::new(env!("CARGO_BIN_EXE_berth-agent-shim")),
        ));
        let cgroup_root = format!("/berth-test-{}-{name}", std::process::id());
        let supervisor = Supervisor::open(
            SupervisorConfig {
                state_dir: state,
                cgroup_root: cgroup_root.clone(),
                host_netns: PathBuf::from("/proc/self/ns/net"),
                uplink: "lo".into(),
            },
            rt.clone(),
            Box::new(Busybox(layer)),
            Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
            }),
        )
        .unwrap();
        World {
            tmp,
            rt,
            cgroup_root,
            supervisor,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:ecs:us-east-1:123456789012:task/c/bv{}{name}",
            std::process::id()
        )
    }

    /// Runs `spec` until it is STOPPED; returns its last report.
    fn run(&mut self, spec: &TaskSpec) -> TaskReport {
        self.supervisor.set_desired(vec![spec.clone()]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (reports, _) = self.supervisor.converge();
            if let Some(r) = reports.iter().rev().find(|r| r.task_arn == spec.task_arn) {
                if r.last_status == "STOPPED" {
                    return r.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the task did not stop: {:?}",
                self.supervisor.reports()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server drops every task: the agent forgets them.
    fn drop_all(&mut self) {
        self.supervisor.set_desired(vec![]);
        self.supervisor.converge();
        assert!(self.supervisor.reports().is_empty());
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for id in self.rt.list().unwrap_or_default() {
            if let Err(e) = self.rt.remove(&id) {
                eprintln!("cleanup of {id}: {e}");
            }
        }
        let _ = cgroup::remove(&self.cgroup_root);
    }
}

fn spec(arn: &str, volumes: Vec<Volume>, containers: Vec<ContainerDefinition>) -> TaskSpec {
    TaskSpec {
        task_arn: arn.into(),
        family: "vols".into(),
        revision: 1,
        network_mode: "none".into(),
        desired_status: DesiredStatus::Running,
        cpu: None,
        memory_mib: None,
        containers,
        gpu_ids: Default::default(),
        address: None,
        volumes,
        stop_timeout_cap: None,
    }
}

fn host_volume(name: &str, path: &Path) -> Volume {
    Volume {
        name: Some(name.into()),
        host: Some(HostVolumeProperties {
            source_path: Some(path.to_string_lossy().into_owned()),
        }),
        ..Default::default()
    }
}

fn container(
    name: &str,
    essential: bool,
    script: &str,
    mounts: &[(&str, &str, bool)],
) -> ContainerDefinition {
    ContainerDefinition {
        name: Some(name.into()),
        image: Some("busybox".into()),
        essential: Some(essential),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        mount_points: Some(
            mounts
                .iter()
                .map(|(v, p, ro)| MountPoint {
                    source_volume: Some((*v).into()),
                    container_path: Some((*p).into()),
                    read_only: Some(*ro),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn after(mut c: ContainerDefinition, deps: &[&str]) -> ContainerDefinition {
    c.depends_on = Some(
        deps.iter()
            .map(|d| ContainerDependency {
                container_name: Some((*d).into()),
                condition: Some(ContainerCondition::Success),
            })
            .collect(),
    );
    c
}

fn exit_codes(r: &TaskReport) -> Vec<(String, Option<i32>)> {
    r.containers
        .iter()
        .map(|c| (c.name.clone(), c.exit_code))
        .collect()
}

#[test]
fn runc_host_volumes_read_write_and_read_only() {
    if !runc_ok("runc_host_volumes_read_write_and_read_only") {
        return;
    }
    let mut w = World::new("hostvol");
    let rw = w.path("host-rw");
    let ro = w.path("host-ro");
    let made = w.path("not/there/yet");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("seed"), "from the host\n").unwrap();
    let arn = w.arn("host");
    let report = w.run(&spec(
        &arn,
        vec![
            host_volume("rw", &rw),
            host_volume("ro", &ro),
            host_volume("made", &made),
        ],
        vec![container(
            "app",
            true,
            "set -e; echo written-inside > /data/out; cat /ro/seed > /data/seen; \
             if touch /ro/new 2>/dev/null; then exit 9; fi; echo made > /deep/dir/x",
            &[
                ("rw", "/data", false),
                ("ro", "/ro", true),
                ("made", "/deep/dir", false),
            ],
        )],
    ));
    assert_eq!(
        exit_codes(&report),
        vec![("app".to_string(), Some(0))],
        "{report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "written-inside\n"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("seen")).unwrap(),
        "from the host\n"
    );
    assert!(!ro.join("new").exists(), "a read-only volume was written");
    assert_eq!(std::fs::read_to_string(made.join("x")).unwrap(), "made\n");
    w.drop_all();
    assert!(rw.join("out").exists(), "host volumes stay after the task");
}

#[test]
fn runc_a_private_volume_is_shared_by_the_task_and_removed_with_it() {
    if !runc_ok("runc_a_private_volume_is_shared_by_the_task_and_removed_with_it") {
        return;
    }
    let mut w = World::new("privvol");
    let out = w.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let arn = w.arn("priv");
    let task_dir = w.path("state/tasks").join(arn.rsplit('/').next().unwrap());
    let mut peer = after(
        container(
            "peer",
            false,
            "grep -q from-producer /shared/msg && ! touch /shared/peer 2>/dev/null && ! touch /out/peer 2>/dev/null",
            &[],
        ),
        &["producer"],
    );
    // Everything the consumer mounts, read-only.
    peer.volumes_from = Some(vec![VolumeFrom {
        source_container: Some("consumer".into()),
        read_only: Some(true),
    }]);
    let report = w.run(&spec(
        &arn,
        vec![
            Volume {
                name: Some("shared".into()),
                ..Default::default()
            },
            host_volume("out", &out),
        ],
        vec![
            container(
                "producer",
                false,
                "echo from-producer > /shared/msg",
                &[("shared", "/shared", false)],
            ),
            peer,
            after(
                container(
                    "consumer",
                    true,
                    "cat /shared/msg > /out/got",
                    &[("shared", "/shared", false), ("out", "/out", false)],
                ),
                &["producer", "peer"],
            ),
        ],
    ));
    assert_eq!(
        exit_codes(&report),
        vec![
            ("producer".to_string(), Some(0)),
            ("peer".to_string(), Some(0)),
            ("consumer".to_string(), Some(0)),
        ],
        "{report:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("got")).unwrap(),
        "from-producer\n"
    );
    assert!(!out.join("peer").exists());
    assert_eq!(
        std::fs::read_to_string(task_dir.join("volumes/shared/msg")).unwrap(),
        "from-producer\n",
        "the private volume lives under the task's directory"
    );
    w.drop_all();
    assert!(
        !task_dir.exists(),
        "the private volume is removed with the task"
    );
    assert!(w.rt.list().unwrap().is_empty());
}
