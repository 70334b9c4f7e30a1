//! Task volumes: the containers' `mountPoints` and `volumesFrom`, resolved to host paths that
//! the runtime bind-mounts ([`BindMount`]).
//!
//! ECS's bind-mount semantics:
//!
//! * A volume with `host.sourcePath` is that path on the instance. When it does not exist, the
//!   agent creates it as a directory (mode 0755, with its missing parents), as the ECS agent
//!   does through Docker, which creates a missing bind-mount source; a path that cannot be
//!   created fails the task.
//! * A volume without `host` (ECS's bind mount without a source path), or a
//!   `dockerVolumeConfiguration` with scope `task`, the `local` driver and no `driverOpts`, is
//!   a directory private to the task: `<task dir>/volumes/<name>`, created empty (mode 0755)
//!   when the task starts, shared by every container of the task that mounts it, and removed
//!   with the task. Unlike a Docker volume, it is not filled with what the image has at the
//!   container path.
//! * `volumesFrom`: a container gets every mount of the source container of the same task
//!   (its `mountPoints` and what it got through its own `volumesFrom`), read-only when
//!   `readOnly` is true, else as the source has it. A container's own `mountPoints` win over a
//!   mount from `volumesFrom` at the same `containerPath`.
//! * Refused (the task fails to start with the reason): a `mountPoints` entry naming a volume
//!   the task does not declare, a `containerPath` that is not absolute (or is `/`), two mount
//!   points at the same path, an unknown or circular `volumesFrom`, and volumes the agent
//!   cannot provide (EFS, FSx, S3 Files, EBS, shared-scope or non-local Docker volumes).

use crate::runtime::BindMount;
use berth_model::ecs::{ContainerDefinition, Scope, Volume};
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where a volume's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A path on the instance.
    Host(PathBuf),
    /// A directory private to the task.
    Task,
}

/// Why a task's volumes cannot be set up: the task's `stoppedReason`, with ECS's prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VolumeError(pub String);

fn container_error(container: &str, why: impl std::fmt::Display) -> VolumeError {
    VolumeError(format!("CannotCreateContainerError: {container}: {why}"))
}

fn volume_error(why: impl std::fmt::Display) -> VolumeError {
    VolumeError(format!("ResourceInitializationError: {why}"))
}

/// Whether `name` can name a task-private directory: ECS's volume names, 1 to 255 letters,
/// digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn source_of(v: &Volume, name: &str) -> Result<Source, VolumeError> {
    let unsupported = |kind: &str| {
        Err(volume_error(format!(
            "volume {name}: {kind} volumes are not supported on this instance"
        )))
    };
    if v.efs_volume_configuration.is_some() {
        return unsupported("EFS");
    }
    if v.fsx_windows_file_server_volume_configuration.is_some() {
        return unsupported("FSx for Windows File Server");
    }
    if v.s3files_volume_configuration.is_some() {
        return unsupported("S3 Files");
    }
    if v.configured_at_launch == Some(true) {
        return unsupported("EBS (configuredAtLaunch)");
    }
    if let Some(d) = &v.docker_volume_configuration {
        let local = d.driver.as_deref().is_none_or(|x| x == "local");
        let opts = d.driver_opts.as_ref().is_some_and(|o| !o.is_empty());
        if d.scope == Some(Scope::Shared) || !local || opts {
            return unsupported("shared-scope, non-local or driverOpts Docker");
        }
    }
    match v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
        Some(p) if Path::new(p).is_absolute() => Ok(Source::Host(PathBuf::from(p))),
        Some(p) => Err(volume_error(format!(
            "volume {name}: host.sourcePath {p:?} is not an absolute path"
        ))),
        None => Ok(Source::Task),
    }
}

/// The directory of a task's private volume `name` under the task's directory.
pub fn task_volume_dir(task_dir: &Path, name: &str) -> PathBuf {
    task_dir.join("volumes").join(name)
}

/// Resolves the mounts of every container of a task, by container name, creating the host
/// directories they need: missing `host.sourcePath` directories, and the task's private
/// volumes under `task_dir` (see the module's documentation).
pub fn resolve(
    volumes: &[Volume],
    containers: &[ContainerDefinition],
    task_dir: &Path,
) -> Result<BTreeMap<String, Vec<BindMount>>, VolumeError> {
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for v in volumes {
        // A volume without a name cannot be mounted.
        let Some(name) = v.name.as_deref() else {
            continue;
        };
        let source = source_of(v, name)?;
        if sources.insert(name.to_string(), source).is_some() {
            return Err(volume_error(format!(
                "volume {name} is declared more than once"
            )));
        }
    }

    // Each container's own mount points.
    let mut own: BTreeMap<String, Vec<(String, BindMount)>> = BTreeMap::new();
    for c in containers {
        let cname = c.name.clone().unwrap_or_default();
        let mut list: Vec<(String, BindMount)> = Vec::new();
        for mp in c.mount_points.iter().flatten() {
            let vname = mp.source_volume.as_deref().unwrap_or("");
            let Some(source) = sources.get(vname) else {
                return Err(container_error(
                    &cname,
                    format!("mount point names volume {vname:?}, which the task does not declare"),
                ));
            };
            let dest = mp.container_path.as_deref().unwrap_or("");
            let p = Path::new(dest);
            if !p.is_absolute() || p.parent().is_none() {
                return Err(container_error(
                    &cname,
                    format!(
                        "mount point of volume {vname}: containerPath {dest:?} must be an absolute path other than /"
                    ),
                ));
            }
            if list
                .iter()
                .any(|(_, m)| Path::new(&m.destination) == Path::new(dest))
            {
                return Err(container_error(
                    &cname,
                    format!("two mount points at {dest}"),
                ));
            }
            let host = match source {
                Source::Host(h) => h.clone(),
                Source::Task => {
                    if !valid_name(vname) {
                        return Err(volume_error(format!(
                            "volume {vname:?}: a name has 1 to 255 letters, digits, '-' and '_'"
                        )));
                    }
                    task_volume_dir(task_dir, vname)
                }
            };
            list.push((
                vname.to_string(),
                BindMount {
                    source: host,
                    destination: dest.to_string(),
                    read_only: mp.read_only == Some(true),
                },
            ));
        }
        own.insert(cname, list);
    }

    // Add what `volumesFrom` brings, following chains.
    let by_name: BTreeMap<String, &ContainerDefinition> = containers
        .iter()
        .map(|c| (c.name.clone().unwrap_or_default(), c))
        .collect();
    let mut done: BTreeMap<String, Vec<(String, BindMount)>> = BTreeMap::new();
    for name in by_name.keys() {
        let mut path = Vec::new();
        full_mounts(name, &by_name, &own, &mut done, &mut path)?;
    }

    // Create what the mounts need.
    let mut out = BTreeMap::new();
    for (cname, list) in done {
        for (vname, m) in &list {
            match sources.get(vname) {
                Some(Source::Task) => create_dir(&m.source).map_err(|e| {
                    volume_error(format!(
                        "volume {vname}: cannot create the task's directory {}: {e}",
                        m.source.display()
                    ))
                })?,
                Some(Source::Host(h)) => match std::fs::metadata(h) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        create_dir(h).map_err(|e| {
                            volume_error(format!(
                                "volume {vname}: host.sourcePath {} does not exist on the instance and cannot be created: {e}",
                                h.display()
                            ))
                        })?;
                        tracing::info!(volume = %vname, path = %h.display(), "created the missing host directory of a volume");
                    }
                    Err(e) => {
                        return Err(volume_error(format!(
                            "volume {vname}: host.sourcePath {} cannot be used: {e}",
                            h.display()
                        )))
                    }
                },
                None => {}
            }
        }
        out.insert(cname, list.into_iter().map(|(_, m)| m).collect());
    }
    Ok(out)
}

fn create_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
}

/// The mounts of container `name`: its own, then those of its `volumesFrom` sources not at a
/// path it already has. `path` holds the containers being resolved, to find cycles.
fn full_mounts(
    name: &str,
    by_name: &BTreeMap<String, &ContainerDefinition>,
    own: &BTreeMap<String, Vec<(String, BindMount)>>,
    done: &mut BTreeMap<String, Vec<(String, BindMount)>>,
    path: &mut Vec<String>,
) -> Result<Vec<(String, BindMount)>, VolumeError> {
    if let Some(d) = done.get(name) {
        return Ok(d.clone());
    }
    if path.iter().any(|p| p == name) {
        return Err(container_error(
            name,
            format!("volumesFrom forms a cycle: {} -> {name}", path.join(" -> ")),
        ));
    }
    let mut list = own.get(name).cloned().unwrap_or_default();
    path.push(name.to_string());
    let froms = by_name
        .get(name)
        .and_then(|c| c.volumes_from.clone())
        .unwrap_or_default();
    for vf in froms {
        let src = vf.source_container.as_deref().unwrap_or("");
        if !by_name.contains_key(src) {
            return Err(container_error(
                name,
                format!("volumesFrom names container {src:?}, which is not in the task"),
            ));
        }
        for (vname, mut m) in full_mounts(src, by_name, own, done, path)? {
            if list
                .iter()
                .any(|(_, x)| Path::new(&x.destination) == Path::new(&m.destination))
            {
                continue;
            }
            if vf.read_only == Some(true) {
                m.read_only = true;
            }
            list.push((vname, m));
        }
    }
    path.pop();
    done.insert(name.to_string(), list.clone());
    Ok(list)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_model::ecs::{
        DockerVolumeConfiguration, EFSVolumeConfiguration, HostVolumeProperties, MountPoint,
        VolumeFrom,
    };

    fn host(name: &str, path: &str) -> Volume {
        Volume {
            name: Some(name.into()),
            host: Some(HostVolumeProperties {
                source_path: Some(path.into()),
            }),
            ..Default::default()
        }
    }

    fn private(name: &str) -> Volume {
        Volume {
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn container(
        name: &str,
        mounts: &[(&str, &str, bool)],
        from: &[(&str, bool)],
    ) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
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
            volumes_from: Some(
                from.iter()
                    .map(|(c, ro)| VolumeFrom {
                        source_container: Some((*c).into()),
                        read_only: Some(*ro),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn bind(source: &Path, dest: &str, ro: bool) -> BindMount {
        BindMount {
            source: source.to_path_buf(),
            destination: dest.into(),
            read_only: ro,
        }
    }

    #[test]
    fn host_and_private_volumes_and_volumes_from() {
        let d = tempfile::tempdir().unwrap();
        let existing = d.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        let missing = d.path().join("made/by/agent");
        let task_dir = d.path().join("task");
        let volumes = vec![
            host("logs", existing.to_str().unwrap()),
            host("new", missing.to_str().unwrap()),
            private("scratch"),
        ];
        let containers = vec![
            container(
                "app",
                &[
                    ("logs", "/var/log/app", false),
                    ("scratch", "/scratch", false),
                ],
                &[],
            ),
            container("shipper", &[("new", "/out", false)], &[("app", true)]),
            container(
                "peer",
                &[("scratch", "/var/log/app", false)],
                &[("app", false)],
            ),
        ];
        let m = resolve(&volumes, &containers, &task_dir).unwrap();
        let scratch = task_dir.join("volumes/scratch");
        assert_eq!(
            m["app"],
            vec![
                bind(&existing, "/var/log/app", false),
                bind(&scratch, "/scratch", false)
            ]
        );
        assert_eq!(
            m["shipper"],
            vec![
                bind(&missing, "/out", false),
                bind(&existing, "/var/log/app", true),
                bind(&scratch, "/scratch", true)
            ]
        );
        // Its own mount point wins at /var/log/app; /scratch comes as app has it.
        assert_eq!(
            m["peer"],
            vec![
                bind(&scratch, "/var/log/app", false),
                bind(&scratch, "/scratch", false)
            ]
        );
        assert!(scratch.is_dir());
        assert!(missing.is_dir(), "a missing host path is created");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&missing).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode & 0o700, mode & !0o755), (0o700, 0), "{mode:o}");
    }

    #[test]
    fn an_unused_volume_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("never");
        let m = resolve(
            &[host("h", missing.to_str().unwrap()), private("p")],
            &[container("app", &[], &[])],
            &d.path().join("task"),
        )
        .unwrap();
        assert_eq!(m["app"], vec![]);
        assert!(!missing.exists());
        assert!(!d.path().join("task").exists());
    }

    #[test]
    fn refusals_name_the_container_and_volume() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("task");
        let err = |volumes: &[Volume], containers: &[ContainerDefinition]| {
            resolve(volumes, containers, &t).unwrap_err().0
        };
        let e = err(&[], &[container("app", &[("data", "/data", false)], &[])]);
        assert!(e.starts_with("CannotCreateContainerError: app: "), "{e}");
        assert!(e.contains("\"data\""), "{e}");
        let e = err(
            &[private("data")],
            &[container("app", &[("data", "data", false)], &[])],
        );
        assert!(e.contains("containerPath \"data\""), "{e}");
        let e = err(
            &[private("data")],
            &[container("app", &[("data", "/", false)], &[])],
        );
        assert!(e.contains("absolute path other than /"), "{e}");
        let e = err(
            &[private("a"), private("b")],
            &[container(
                "app",
                &[("a", "/x", false), ("b", "/x/", false)],
                &[],
            )],
        );
        assert!(e.contains("two mount points at"), "{e}");
        let e = err(&[private("a"), private("a")], &[container("app", &[], &[])]);
        assert!(e.contains("more than once"), "{e}");
        let e = err(&[host("a", "rel/path")], &[container("app", &[], &[])]);
        assert!(
            e.starts_with("ResourceInitializationError: volume a: host.sourcePath"),
            "{e}"
        );
        let e = err(&[], &[container("app", &[], &[("nope", false)])]);
        assert!(e.contains("volumesFrom names container \"nope\""), "{e}");
        let e = err(
            &[],
            &[
                container("a", &[], &[("b", false)]),
                container("b", &[], &[("a", false)]),
            ],
        );
        assert!(e.contains("cycle"), "{e}");
        let efs = Volume {
            name: Some("e".into()),
            efs_volume_configuration: Some(EFSVolumeConfiguration::default()),
            ..Default::default()
        };
        let e = err(&[efs], &[container("app", &[], &[])]);
        assert!(e.contains("EFS volumes are not supported"), "{e}");
        let shared = Volume {
            name: Some("s".into()),
            docker_volume_configuration: Some(DockerVolumeConfiguration {
                scope: Some(Scope::Shared),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = err(&[shared], &[container("app", &[], &[])]);
        assert!(e.contains("not supported"), "{e}");
        // A host path under a file cannot be created.
        let file = d.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let under = file.join("sub");
        let e = err(
            &[host("h", under.to_str().unwrap())],
            &[container("app", &[("h", "/h", false)], &[])],
        );
        assert!(
            e.starts_with("ResourceInitializationError: volume h: host.sourcePath ")
                && e.contains("file/sub"),
            "{e}"
        );
        // A private volume's name must be a safe directory name.
        let e = err(
            &[private("../up")],
            &[container("app", &[("../up", "/h", false)], &[])],
        );
        assert!(e.contains("a name has"), "{e}");
    }

    #[test]
    fn a_task_scoped_local_docker_volume_is_private_to_the_task() {
        let d = tempfile::tempdir().unwrap();
        let v = Volume {
            name: Some("dv".into()),
            docker_volume_configuration: Some(DockerVolumeConfiguration {
                scope: Some(Scope::Task),
                driver: Some("local".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = resolve(
            &[v],
            &[container("app", &[("dv", "/d", true)], &[])],
            d.path(),
        )
        .unwrap();
        assert_eq!(
            m["app"],
            vec![bind(&d.path().join("volumes/dv"), "/d", true)]
        );
    }
}
