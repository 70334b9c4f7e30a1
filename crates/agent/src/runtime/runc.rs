//! [`RuncRuntime`]: containers through `runc`, one shim per container.
//!
//! `start` builds the bundle under `state_dir/<id>/` (see [`super::bundle`]), writes
//! `shim.json` and starts the shim (see [`super::shim`]), which runs `runc create` +
//! `runc start`, waits for the container and records its exit. `signal` is `runc kill`,
//! `remove` is `runc delete --force` + unmount + removal of the directory and the container's
//! cgroup. The container's cgroup is `<cgroup_parent>/<id>` in every hierarchy.
//!
//! Needs root (no rootless mode).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::bundle::{self, RootfsMode};
use super::shim::{self, ShimConfig, ShimMode};
use super::state::{self, ContainerDir};
use super::{
    config, ContainerLaunch, ContainerStatus, Network, Runtime, RuntimeError, ShimCommand,
};

/// How long `remove` waits for a killed container to be recorded as exited.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The runc runtime.
#[derive(Debug, Clone)]
pub struct RuncRuntime {
    state_dir: PathBuf,
    shim: ShimCommand,
    runc: PathBuf,
    runc_root: Option<PathBuf>,
    rootfs_mode: RootfsMode,
    init: Option<bundle::InitBinary>,
}

impl RuncRuntime {
    /// A runtime keeping its containers under `state_dir`, using `runc` from `PATH` (see
    /// [`super::find_runc`]), runc's default state root, and a static init from the host when
    /// one is found ([`bundle::find_init`]).
    pub fn new(state_dir: &Path, shim: ShimCommand) -> Self {
        RuncRuntime {
            state_dir: state_dir.to_path_buf(),
            shim,
            runc: super::find_runc().unwrap_or_else(|| PathBuf::from("runc")),
            runc_root: None,
            rootfs_mode: RootfsMode::Auto,
            init: bundle::find_init(),
        }
    }

    /// Uses this runc binary.
    pub fn with_runc(mut self, runc: PathBuf) -> Self {
        self.runc = runc;
        self
    }

    /// Uses this runc state root (`runc --root`).
    pub fn with_runc_root(mut self, root: PathBuf) -> Self {
        self.runc_root = Some(root);
        self
    }

    /// How root file systems are made (overlay with copy fallback, or always copy).
    pub fn with_rootfs_mode(mut self, mode: RootfsMode) -> Self {
        self.rootfs_mode = mode;
        self
    }

    /// Uses this static init for `initProcessEnabled` (`None`: run without one).
    pub fn with_init(mut self, init: Option<bundle::InitBinary>) -> Self {
        self.init = init;
        self
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn runc_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.runc);
        if let Some(root) = &self.runc_root {
            cmd.arg("--root").arg(root);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn runc(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let out = self
            .runc_cmd()
            .args(args)
            .output()
            .map_err(RuntimeError::io(format!("running {}", self.runc.display())))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RuntimeError::Command {
                command: format!("runc {}", args.join(" ")),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn container_dir(&self, id: &str) -> Result<ContainerDir, RuntimeError> {
        super::validate_id(id)?;
        Ok(ContainerDir::new(&self.state_dir, id))
    }

    fn hostname(launch: &ContainerLaunch) -> String {
        let explicit = launch
            .hostname
            .clone()
            .or_else(|| launch.definition.hostname.clone())
            .filter(|h| !h.is_empty());
        if let Some(h) = explicit {
            return h;
        }
        if let Network::Host(_) = launch.network {
            if let Ok(h) = nix::unistd::gethostname() {
                if let Some(h) = h.to_str() {
                    return h.to_string();
                }
            }
        }
        launch.id.chars().take(63).collect()
    }

    fn prepare(&self, launch: &ContainerLaunch, dir: &Path) -> Result<(), RuntimeError> {
        let def = &launch.definition;
        let args = config::resolve_args(&launch.image, def)?;
        let kind = bundle::prepare_rootfs(dir, &launch.layers, self.rootfs_mode)?;
        tracing::debug!(id = %launch.id, ?kind, "root file system ready");
        let rootfs = dir.join("rootfs");
        let user_spec = def
            .user
            .as_deref()
            .filter(|u| !u.is_empty())
            .or(launch.image.user.as_deref());
        let user = bundle::resolve_user(&rootfs, user_spec)?;
        let hostname = Self::hostname(launch);
        let env = config::merge_env(
            &launch.image.env,
            def,
            &launch.extra_env,
            Some(&hostname),
            &launch.gpu_ids,
        );
        let etc = bundle::write_etc_files(dir, def, &launch.network, &hostname)?;
        let mut devices = bundle::definition_devices(def)?;
        devices.extend(bundle::gpu_devices(&launch.gpu_ids));
        let init_enabled = def
            .linux_parameters
            .as_ref()
            .and_then(|l| l.init_process_enabled)
            == Some(true);
        if init_enabled && self.init.is_none() {
            tracing::warn!(id = %launch.id, "initProcessEnabled: no static init (tini-static, docker-init, catatonit or a static busybox) on this host; the container runs WITHOUT an init (no zombie reaping, no signal forwarding)");
        }
        let spec = bundle::build_spec(&bundle::SpecInputs {
            launch,
            args,
            env,
            user,
            hostname,
            etc: Some(etc),
            devices,
            init: if init_enabled {
                self.init.clone()
            } else {
                None
            },
            available_caps: config::own_bounding_set(),
        })?;
        let config_path = dir.join("config.json");
        spec.save(&config_path).map_err(|e| RuntimeError::Io {
            context: format!("writing {}", config_path.display()),
            source: std::io::Error::other(e),
        })?;
        std::fs::create_dir_all(&launch.log_dir).map_err(RuntimeError::io(format!(
            "creating {}",
            launch.log_dir.display()
        )))?;
        let cgroup = bundle::cgroups_path(&launch.cgroup_parent, &launch.id);
        state::write_json(
            &dir.join(state::SHIM_CONFIG),
            &ShimConfig {
                id: launch.id.clone(),
                log_dir: launch.log_dir.clone(),
                mode: ShimMode::Runc {
                    runc: self.runc.clone(),
                    root: self.runc_root.clone(),
                    bundle: dir.to_path_buf(),
                    oom_counter: super::cgroup::oom_counter_file(&cgroup),
                },
            },
        )
    }

    /// Removes what a container left on the host; `cgroup` is its cgroup when known.
    fn cleanup(&self, id: &str, dir: &Path, cgroup: Option<&str>) -> Result<(), RuntimeError> {
        if let Err(e) = self.runc(&["delete", "--force", id]) {
            let msg = e.to_string();
            if !msg.contains("does not exist") && !msg.contains("not exist") {
                tracing::warn!(id, "{msg}");
            }
        }
        if let Some(cg) = cgroup {
            if let Err(e) = super::cgroup::remove(cg) {
                tracing::warn!(id, "{e}");
            }
        }
        bundle::unmount_all(dir)?;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io {
                context: format!("removing {}", dir.display()),
                source: e,
            }),
        }
    }

    fn cgroup_of(dir: &Path) -> Option<String> {
        let spec = oci_spec::runtime::Spec::load(dir.join("config.json")).ok()?;
        let path = spec.linux().as_ref()?.cgroups_path().as_ref()?.clone();
        path.to_str().map(str::to_string)
    }
}

impl Runtime for RuncRuntime {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn start(&self, launch: &ContainerLaunch) -> Result<(), RuntimeError> {
        let cd = self.container_dir(&launch.id)?;
        if cd.path.exists() {
            return Err(RuntimeError::AlreadyExists(launch.id.clone()));
        }
        std::fs::create_dir_all(&cd.path)
            .map_err(RuntimeError::io(format!("creating {}", cd.path.display())))?;
        let cgroup = bundle::cgroups_path(&launch.cgroup_parent, &launch.id);
        let began = std::time::Instant::now();
        let mut prepared = began;
        let result = self.prepare(launch, &cd.path).and_then(|()| {
            prepared = std::time::Instant::now();
            shim::spawn(&self.shim, &cd.path, &launch.id)
        });
        match result {
            Ok(pid) => {
                tracing::info!(
                    id = %launch.id,
                    pid,
                    bundle_ms = (prepared - began).as_secs_f64() * 1e3,
                    shim_ms = prepared.elapsed().as_secs_f64() * 1e3,
                    "container started (runc)"
                );
                Ok(())
            }
            Err(e) => {
                if let Err(c) = self.cleanup(&launch.id, &cd.path, Some(&cgroup)) {
                    tracing::warn!(id = %launch.id, "cleaning up after a failed start: {c}");
                }
                Err(e)
            }
        }
    }

    fn status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let cd = self.container_dir(id)?;
        cd.status(|s| state::process_alive(s.pid, s.pid_start_ticks))
    }

    fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        if argv.is_empty() {
            return Err(RuntimeError::InvalidConfig(
                "an empty command cannot run".into(),
            ));
        }
        let mut cmd = self.runc_cmd();
        cmd.arg("exec")
            .arg(id)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(RuntimeError::io("cannot run runc exec"))?;
        let step = Duration::from_millis(20);
        let mut waited = Duration::ZERO;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status.code().unwrap_or(-1))),
                Ok(None) if waited >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(None);
                }
                Ok(None) => {
                    std::thread::sleep(step);
                    waited += step;
                }
                Err(e) => return Err(RuntimeError::io("cannot wait for runc exec")(e)),
            }
        }
    }

    fn exec_helper(&self, id: &str, request: &super::ExecRequest) -> Result<Command, RuntimeError> {
        if request.argv.is_empty() {
            return Err(RuntimeError::InvalidConfig(
                "an empty command cannot run".into(),
            ));
        }
        let cd = self.container_dir(id)?;
        match self.status(id)? {
            ContainerStatus::Running { .. } => {}
            ContainerStatus::Missing => return Err(RuntimeError::NotFound(id.to_string())),
            ContainerStatus::Exited { .. } => return Err(RuntimeError::NotRunning(id.to_string())),
        }
        let config = super::exec::HelperConfig {
            runc: self.runc.clone(),
            root: self.runc_root.clone(),
            id: id.to_string(),
            bundle: cd.path.clone(),
            request: request.clone(),
        };
        let json = serde_json::to_string(&config)
            .map_err(|e| RuntimeError::InvalidConfig(e.to_string()))?;
        let mut cmd = Command::new(&self.shim.program);
        cmd.args(&self.shim.args).arg("exec").arg(json);
        Ok(cmd)
    }

    fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        match self.status(id)? {
            ContainerStatus::Missing => Err(RuntimeError::NotFound(id.to_string())),
            ContainerStatus::Exited { .. } => Err(RuntimeError::NotRunning(id.to_string())),
            ContainerStatus::Running { .. } => {
                match self.runc(&["kill", id, &signal.to_string()]) {
                    Ok(_) => Ok(()),
                    // it exited meanwhile
                    Err(_) if !matches!(self.status(id)?, ContainerStatus::Running { .. }) => {
                        Err(RuntimeError::NotRunning(id.to_string()))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let cd = self.container_dir(id)?;
        if !cd.path.exists() {
            // maybe a runc state without a directory
            let _ = self.runc(&["delete", "--force", id]);
            return Ok(());
        }
        if let ContainerStatus::Running { .. } = self.status(id)? {
            let _ = self.runc(&["kill", id, "KILL"]);
            if !cd.wait_exit(KILL_WAIT) {
                tracing::warn!(
                    id,
                    "the container did not exit within {}s of SIGKILL",
                    KILL_WAIT.as_secs()
                );
            }
        }
        let cgroup = Self::cgroup_of(&cd.path);
        self.cleanup(id, &cd.path, cgroup.as_deref())?;
        tracing::info!(id, "container removed");
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        state::list_ids(&self.state_dir)
    }
}
