//! The local provider: instances are network namespaces and cgroups on this host.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::addr::AddressRange;
use crate::cgroup::{Cgroups, POLL};
use crate::spawn::{spawn_detached, Placement};
use crate::{
    availability_zone_for, invalid_task_id, ip, is_instance_id, procfs, valid_task_id, Instance,
    InstanceProvider, InstanceState, LaunchSpec, ProviderError, TaskAddress, DEFAULT_REGION,
};

/// The file name of an instance's record in its state directory.
const RECORD: &str = "instance.json";
/// The file name of the agent's stdout and stderr in its state directory.
pub const AGENT_LOG: &str = "agent.log";
/// Prefix of instance network namespace names: `berth-<instance id>`.
pub const NETNS_PREFIX: &str = "berth-";
/// Prefix of host-side veth names: `vb` + the last 13 hex digits of the id.
const VETH_PREFIX: &str = "vb";
/// Polls given to killing everything in an instance (5 s at 20 ms).
const KILL_POLLS: u32 = 250;
/// Polls given to removing a cgroup whose last tasks are still exiting (2 s).
const REMOVE_POLLS: u32 = 100;
/// The environment variables passed on from the server to the agent; the
/// rest of the server's environment stays out of the instance.
const PASSED_ENV: [&str; 4] = ["PATH", "HOME", "RUST_LOG", "RUST_BACKTRACE"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the local provider lays out instances on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// The host bridge every instance is cabled to (default `berth0`, at most
    /// 15 characters). Created on the first launch, never removed except by
    /// [`LocalProvider::destroy`].
    pub bridge: String,
    /// The instance address range (default `10.213.0.0/16`): the bridge gets
    /// the first host address (`10.213.0.1`), instances the ones after it.
    /// It should be a private range no other network on the host uses.
    pub range: AddressRange,
    /// The parent of the instance cgroups in every controller (default `/berth`).
    pub cgroup_root: String,
    /// Where the cgroup v1 controllers are mounted (default `/sys/fs/cgroup`).
    pub cgroup_mount: PathBuf,
    /// One directory per instance with its record (`instance.json`) and the
    /// agent's output (`agent.log`); default `/var/lib/berth/instances`.
    pub state_dir: PathBuf,
    /// The region availability zones are named after (default `us-east-1`).
    pub region: String,
    /// The share of host memory instances may take together (default 0.9).
    pub memory_share: f64,
    /// Host memory in MiB; `None` reads `MemTotal` from `/proc/meminfo`.
    pub host_memory_mib: Option<u64>,
    /// How long `terminate` waits for the agent to exit after SIGTERM before
    /// SIGKILLing everything in the instance (default 10 s).
    pub stop_timeout: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            bridge: "berth0".into(),
            range: AddressRange::default(),
            cgroup_root: "/berth".into(),
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            state_dir: PathBuf::from("/var/lib/berth/instances"),
            region: DEFAULT_REGION.into(),
            memory_share: 0.9,
            host_memory_mib: None,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

impl LocalConfig {
    /// The default layout with its state under `state_dir`.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ProviderError> {
        let bad = |reason: String| Err(ProviderError::Config { reason });
        if !ip::valid_ifname(&self.bridge) {
            return bad(format!(
                "bridge name {:?} must be 1..=15 letters, digits, '-' or '_'",
                self.bridge
            ));
        }
        let root = Path::new(&self.cgroup_root);
        if !root.is_absolute()
            || root
                .components()
                .skip(1)
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return bad(format!(
                "cgroup root {:?} must be an absolute path without '..'",
                self.cgroup_root
            ));
        }
        if !(self.memory_share.is_finite() && self.memory_share > 0.0) {
            return bad(format!(
                "memory share {} must be above 0",
                self.memory_share
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            return bad("the state directory is empty".into());
        }
        Ok(())
    }
}

/// What [`LocalProvider::sweep`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Recorded instances that were not kept and are terminated now.
    pub instances: Vec<String>,
    /// Instance cgroups removed (whether or not they had a record).
    pub cgroups: Vec<String>,
    /// Host-side veths removed from the bridge.
    pub links: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Processes killed.
    pub processes: usize,
    /// Task addresses released with the instances that held them, as
    /// `<instance id>/<task id>`.
    pub task_addresses: Vec<String>,
}

/// One instance as its state directory keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    instance_id: String,
    instance_type: String,
    availability_zone: String,
    subnet: String,
    vcpus: u32,
    memory_mib: u64,
    gpus: u32,
    private_ip: Option<Ipv4Addr>,
    netns: Option<String>,
    veth: Option<String>,
    cgroup: Option<String>,
    pid: Option<u32>,
    /// The agent's start time (clock ticks after boot), to tell it from a
    /// later process that got the same pid.
    pid_start: Option<u64>,
    state: InstanceState,
    launched_at: f64,
    /// The addresses of the instance's `awsvpc` tasks, by task id; released
    /// one by one or all at once when the instance is terminated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    task_addresses: BTreeMap<String, Ipv4Addr>,
}

impl Record {
    fn instance(&self) -> Instance {
        Instance {
            instance_id: self.instance_id.clone(),
            instance_type: self.instance_type.clone(),
            availability_zone: self.availability_zone.clone(),
            private_ip: self.private_ip,
            netns_path: self.netns.as_deref().map(ip::netns_path),
            cgroup: self.cgroup.clone(),
            state: self.state,
            launched_at: self.launched_at,
        }
    }

    /// Forgets the task addresses (the instance is gone), returning them as
    /// `<instance id>/<task id>`.
    fn drop_task_addresses(&mut self) -> Vec<String> {
        std::mem::take(&mut self.task_addresses)
            .into_keys()
            .map(|task| format!("{}/{task}", self.instance_id))
            .collect()
    }
}

/// Every address held now: those of live instances and of their tasks.
fn used_addresses(records: &[Record]) -> BTreeSet<Ipv4Addr> {
    records
        .iter()
        .filter(|r| r.state.is_live())
        .flat_map(|r| {
            r.private_ip
                .into_iter()
                .chain(r.task_addresses.values().copied())
        })
        .collect()
}

enum Mode {
    /// Root: namespaces, veths and cgroups.
    Privileged(Cgroups),
    /// Plain processes on loopback.
    Unprivileged,
}

#[derive(Default)]
struct Inner {
    /// Agents this provider object spawned, kept to reap them.
    children: HashMap<String, Child>,
    /// The last address handed out; allocation goes on after it.
    cursor: Option<Ipv4Addr>,
    bridge_ready: bool,
}

/// Instances as network namespaces and cgroups on this host (root), or as
/// plain processes on loopback ([`LocalProvider::unprivileged`]).
///
/// In root mode an instance `i-…` is:
/// - the network namespace `berth-i-…` (`/run/netns/berth-i-…`) with `lo` and
///   `eth0`, the latter holding the next free address of
///   [`LocalConfig::range`] with a default route via the bridge address;
/// - the host-side veth `vb<last 13 hex digits of the id>` on the bridge;
/// - the cgroup `<cgroup root>/i-…` in the memory controller
///   (`memory.limit_in_bytes` = memory, and `memory.memsw.limit_in_bytes` where
///   swap is accounted), the cpu controller (`cpu.cfs_quota_us` = vCPUs ×
///   `cpu.cfs_period_us`, `cpu.shares` = vCPUs × 1024) and cpuacct, pids and
///   freezer where mounted;
/// - the agent, started inside both, detached in its own session, with
///   stdout and stderr appended to `<state dir>/i-…/agent.log`. Its
///   environment is `PATH`, `HOME`, `RUST_LOG` and `RUST_BACKTRACE` from the
///   server, `BERTH_INSTANCE_ID`, `BERTH_AVAILABILITY_ZONE`,
///   `BERTH_PRIVATE_IP`, `BERTH_CGROUP` (root mode) and the spec's own.
///
/// Task addresses ([`InstanceProvider::allocate_task_address`], root mode
/// only) come from the same range and round-robin cursor as instance
/// addresses and are kept in the instance's record, so no live instance or
/// task ever shares an address, across server restarts too. The provider only
/// books them: the agent configures them inside the instance. They are
/// released one by one, or all at once when the instance is terminated
/// (`terminate` or [`LocalProvider::sweep`]).
pub struct LocalProvider {
    config: LocalConfig,
    mode: Mode,
    capacity_mib: u64,
    inner: Mutex<Inner>,
}

impl LocalProvider {
    /// The root-mode provider: fails unless running as root on a host with
    /// cgroup v1 memory and cpu controllers.
    pub fn new(config: LocalConfig) -> Result<Self, ProviderError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ProviderError::Unsupported {
                reason: "the local provider needs root for network namespaces and cgroups".into(),
            });
        }
        let cgroups = Cgroups::detect(&config.cgroup_mount)
            .map_err(|reason| ProviderError::Unsupported { reason })?;
        if ip::ip(&["-V"]).is_err() {
            return Err(ProviderError::Unsupported {
                reason: "iproute2's `ip` is not runnable".into(),
            });
        }
        Self::build(config, Mode::Privileged(cgroups))
    }

    /// The unprivileged provider: no namespaces, no cgroups, no limits; each
    /// agent is a plain process on loopback. For development only.
    pub fn unprivileged(config: LocalConfig) -> Result<Self, ProviderError> {
        tracing::warn!(
            "LOCAL PROVIDER RUNS UNPRIVILEGED: instances are plain processes on loopback with no network \
             namespace, no cgroup and no memory or CPU limit; run as root for real isolation"
        );
        Self::build(config, Mode::Unprivileged)
    }

    /// Root mode where the host allows it, otherwise unprivileged (with a warning saying why).
    pub fn detect(config: LocalConfig) -> Result<Self, ProviderError> {
        match Self::new(config.clone()) {
            Ok(p) => Ok(p),
            Err(ProviderError::Unsupported { reason }) => {
                tracing::warn!(reason, "falling back to the unprivileged local provider");
                Self::unprivileged(config)
            }
            Err(e) => Err(e),
        }
    }

    fn build(config: LocalConfig, mode: Mode) -> Result<Self, ProviderError> {
        config.validate()?;
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| ProviderError::io("creating state directory", &config.state_dir, e))?;
        let host_mib = match config.host_memory_mib {
            Some(m) => m,
            None => host_memory_mib()?,
        };
        let capacity_mib = (host_mib as f64 * config.memory_share).floor() as u64;
        let provider = Self {
            config,
            mode,
            capacity_mib,
            inner: Mutex::new(Inner::default()),
        };
        let cursor = provider
            .load_all()?
            .into_iter()
            .filter(|r| {
                r.private_ip
                    .is_some_and(|a| provider.config.range.contains(a))
            })
            .max_by(|a, b| a.launched_at.total_cmp(&b.launched_at))
            .and_then(|r| r.private_ip);
        provider.lock().cursor = cursor;
        Ok(provider)
    }

    /// Whether instances get namespaces and cgroups (root mode).
    pub fn is_privileged(&self) -> bool {
        matches!(self.mode, Mode::Privileged(_))
    }

    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// The address instances reach the host at (the bridge's), root mode only.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.is_privileged().then(|| self.config.range.gateway())
    }

    /// Brings the bridge up now (root mode), so the server can listen on the
    /// gateway address before the first instance exists.
    pub fn prepare_network(&self) -> Result<(), ProviderError> {
        if !self.is_privileged() {
            return Ok(());
        }
        let mut inner = self.lock();
        if !inner.bridge_ready || !ip::link_exists(&self.config.bridge) {
            ip::ensure_bridge(&self.config.bridge, &self.config.range)?;
            inner.bridge_ready = true;
        }
        Ok(())
    }

    /// How much memory (MiB) instances may take together.
    pub fn capacity_mib(&self) -> u64 {
        self.capacity_mib
    }

    /// The agent's pid, as recorded at launch.
    pub fn agent_pid(&self, instance_id: &str) -> Result<Option<u32>, ProviderError> {
        Ok(self.load(instance_id)?.and_then(|r| r.pid))
    }

    /// Where the agent's stdout and stderr go.
    pub fn agent_log(&self, instance_id: &str) -> PathBuf {
        self.config.state_dir.join(instance_id).join(AGENT_LOG)
    }

    /// Drops the record (and log) of a terminated instance; live ones stay.
    pub fn forget(&self, instance_id: &str) -> Result<(), ProviderError> {
        let _guard = self.lock();
        match self.load(instance_id)? {
            Some(r) if r.state == InstanceState::Terminated => {
                let dir = self.config.state_dir.join(instance_id);
                std::fs::remove_dir_all(&dir).map_err(|e| ProviderError::io("removing", dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Cleans up after a previous run: terminates every recorded instance not
    /// in `keep` (killing its processes, deleting its namespace and veth and
    /// removing its cgroups) and removes cgroups under the cgroup root and
    /// veths on the bridge that belong to no kept instance. Call it at start,
    /// with the instances the server still knows. Only this provider's bridge,
    /// cgroup root and state directory are looked at, never other
    /// `berth-*` namespaces, so other berth servers on the host are safe.
    pub fn sweep(&self, keep: &[&str]) -> Result<SweepReport, ProviderError> {
        let keep: BTreeSet<&str> = keep.iter().copied().collect();
        let mut report = SweepReport::default();
        let mut first_err = None;
        let records = self.load_all()?;
        for mut record in records {
            if keep.contains(record.instance_id.as_str()) {
                continue;
            }
            if let Some(ns) = &record.netns {
                if ip::netns_exists(ns) {
                    report.namespaces.push(ns.clone());
                }
            }
            if record.state == InstanceState::Terminated && !self.holds_anything(&record) {
                if !record.task_addresses.is_empty() {
                    let _guard = self.lock();
                    report.task_addresses.extend(record.drop_task_addresses());
                    self.save(&record)?;
                }
                continue;
            }
            let child = self.lock().children.remove(&record.instance_id);
            match self.teardown(&record, child) {
                Ok(n) => {
                    report.processes += n;
                    record.state = InstanceState::Terminated;
                    let _guard = self.lock();
                    // tasks may have got addresses since the records were read
                    if let Ok(Some(current)) = self.load(&record.instance_id) {
                        record.task_addresses = current.task_addresses;
                    }
                    report.task_addresses.extend(record.drop_task_addresses());
                    self.save(&record)?;
                    report.instances.push(record.instance_id.clone());
                }
                Err(e) => {
                    tracing::warn!(instance_id = record.instance_id, error = %e, "sweep could not clean up");
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Mode::Privileged(cgroups) = &self.mode {
            for name in cgroups.children(&self.config.cgroup_root) {
                if !is_instance_id(&name) || keep.contains(name.as_str()) {
                    continue;
                }
                let rel = self.cgroup_rel(&name);
                report.processes += cgroups.kill_all(&rel, KILL_POLLS).len();
                match cgroups.remove(&rel, REMOVE_POLLS) {
                    Ok(()) => report.cgroups.push(rel),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            let kept_veths: BTreeSet<String> = keep.iter().map(|id| veth_name(id)).collect();
            for port in ip::bridge_ports(&self.config.bridge)? {
                if !is_veth_name(&port) || kept_veths.contains(&port) {
                    continue;
                }
                match ip::delete_link(&port) {
                    Ok(()) => report.links.push(port),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Terminates every instance (as `sweep(&[])`), then removes the bridge
    /// and the cgroup root. Records stay. For tests and uninstalling.
    pub fn destroy(&self) -> Result<SweepReport, ProviderError> {
        let report = self.sweep(&[])?;
        if let Mode::Privileged(cgroups) = &self.mode {
            ip::delete_link(&self.config.bridge)?;
            cgroups.remove(&self.config.cgroup_root, REMOVE_POLLS)?;
        }
        self.lock().bridge_ready = false;
        Ok(report)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // reap agents that exited on their own
        inner
            .children
            .retain(|_, child| matches!(child.try_wait(), Ok(None)));
        inner
    }

    /// Task addresses exist in root mode only: unprivileged instances share
    /// the host's loopback.
    fn require_task_addresses(&self, instance_id: &str) -> Result<(), ProviderError> {
        if self.is_privileged() {
            return Ok(());
        }
        Err(ProviderError::Unsupported {
            reason: format!(
                "unprivileged local instances have no network of their own, so no task \
                 addresses (instance {instance_id})"
            ),
        })
    }

    fn task_address(&self, address: Ipv4Addr) -> TaskAddress {
        TaskAddress {
            address,
            prefix: self.config.range.prefix(),
            gateway: self.config.range.gateway(),
        }
    }

    fn cgroup_rel(&self, instance_id: &str) -> String {
        format!(
            "{}/{}",
            self.config.cgroup_root.trim_end_matches('/'),
            instance_id
        )
    }

    fn record_path(&self, instance_id: &str) -> PathBuf {
        self.config.state_dir.join(instance_id).join(RECORD)
    }

    fn load(&self, instance_id: &str) -> Result<Option<Record>, ProviderError> {
        if !is_instance_id(instance_id) {
            return Ok(None);
        }
        let path = self.record_path(instance_id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProviderError::io("reading", path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| ProviderError::Record { path, source })
    }

    /// Every readable record, oldest first; unreadable ones are skipped with a warning.
    fn load_all(&self) -> Result<Vec<Record>, ProviderError> {
        let dir = &self.config.state_dir;
        let entries = std::fs::read_dir(dir).map_err(|e| ProviderError::io("reading", dir, e))?;
        let mut out = vec![];
        for entry in entries {
            let entry = entry.map_err(|e| ProviderError::io("reading", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_instance_id(&name) {
                continue;
            }
            match self.load(&name) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(instance_id = name, error = %e, "skipping unreadable instance record")
                }
            }
        }
        out.sort_by(|a, b| {
            a.launched_at
                .total_cmp(&b.launched_at)
                .then_with(|| a.instance_id.cmp(&b.instance_id))
        });
        Ok(out)
    }

    /// Writes the record (atomically: a temporary file renamed over it).
    fn save(&self, record: &Record) -> Result<(), ProviderError> {
        let dir = self.config.state_dir.join(&record.instance_id);
        std::fs::create_dir_all(&dir).map_err(|e| ProviderError::io("creating", &dir, e))?;
        let path = dir.join(RECORD);
        let tmp = dir.join(format!("{RECORD}.tmp"));
        let text = serde_json::to_vec_pretty(record).map_err(|source| ProviderError::Record {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|e| ProviderError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ProviderError::io("writing", &path, e))
    }

    fn validate(&self, spec: &LaunchSpec) -> Result<(), ProviderError> {
        let bad = |reason: &str| {
            Err(ProviderError::InvalidSpec {
                instance_id: spec.instance_id.clone(),
                reason: reason.into(),
            })
        };
        if !is_instance_id(&spec.instance_id) {
            return bad("the instance id must be i- and 17 lowercase hex digits");
        }
        if spec.vcpus == 0 {
            return bad("an instance needs at least one vCPU");
        }
        if spec.memory_mib == 0 {
            return bad("an instance needs memory");
        }
        if spec.agent.program.as_os_str().is_empty() {
            return bad("no agent program");
        }
        Ok(())
    }

    /// Reserves the instance: checks capacity, takes an address and writes the
    /// record (Pending) before anything exists on the host, so a crash from
    /// here on leaves something `sweep` finds.
    fn reserve(&self, spec: &LaunchSpec) -> Result<Record, ProviderError> {
        let id = &spec.instance_id;
        let mut inner = self.lock();
        if self.record_path(id).exists() {
            return Err(ProviderError::AlreadyExists {
                instance_id: id.clone(),
            });
        }
        let records = self.load_all()?;
        let used_mib: u64 = records
            .iter()
            .filter(|r| r.state.is_live())
            .map(|r| r.memory_mib)
            .sum();
        let available_mib = self.capacity_mib.saturating_sub(used_mib);
        if spec.memory_mib > available_mib {
            return Err(ProviderError::InsufficientCapacity {
                instance_id: id.clone(),
                requested_mib: spec.memory_mib,
                available_mib,
                capacity_mib: self.capacity_mib,
            });
        }
        let privileged = self.is_privileged();
        let private_ip = if privileged {
            let used = used_addresses(&records);
            let addr = self
                .config
                .range
                .allocate(&used, inner.cursor)
                .ok_or_else(|| ProviderError::AddressesExhausted {
                    instance_id: id.clone(),
                    range: self.config.range.to_string(),
                })?;
            if !inner.bridge_ready || !ip::link_exists(&self.config.bridge) {
                ip::ensure_bridge(&self.config.bridge, &self.config.range)?;
                inner.bridge_ready = true;
            }
            inner.cursor = Some(addr);
            addr
        } else {
            Ipv4Addr::LOCALHOST
        };
        let record = Record {
            instance_id: id.clone(),
            instance_type: spec.instance_type.clone(),
            availability_zone: self.availability_zone(&spec.subnet),
            subnet: spec.subnet.clone(),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            gpus: spec.gpus,
            private_ip: Some(private_ip),
            netns: privileged.then(|| format!("{NETNS_PREFIX}{id}")),
            veth: privileged.then(|| veth_name(id)),
            cgroup: privileged.then(|| self.cgroup_rel(id)),
            pid: None,
            pid_start: None,
            state: InstanceState::Pending,
            launched_at: spec.now,
            task_addresses: BTreeMap::new(),
        };
        self.save(&record)?;
        Ok(record)
    }

    /// Builds the instance around a reserved record and starts its agent.
    fn start(&self, record: &Record, spec: &LaunchSpec) -> Result<Child, ProviderError> {
        let mut placement = Placement::default();
        if let Mode::Privileged(cgroups) = &self.mode {
            if let (Some(ns), Some(veth), Some(addr)) =
                (&record.netns, &record.veth, record.private_ip)
            {
                ip::create_instance_network(
                    ns,
                    veth,
                    &self.config.bridge,
                    &self.config.range,
                    addr,
                )?;
                let path = ip::netns_path(ns);
                placement.netns =
                    Some(File::open(&path).map_err(|e| ProviderError::io("opening", path, e))?);
            }
            if let Some(rel) = &record.cgroup {
                cgroups.create(rel, spec.vcpus, spec.memory_mib)?;
                placement.cgroup_procs = cgroups.procs_files(rel)?;
            }
        }
        let log_path = self.agent_log(&record.instance_id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ProviderError::io("opening", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ProviderError::io("opening", &log_path, e))?;
        let mut cmd = Command::new(&spec.agent.program);
        cmd.args(&spec.agent.args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        for key in PASSED_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.env("BERTH_INSTANCE_ID", &record.instance_id)
            .env("BERTH_AVAILABILITY_ZONE", &record.availability_zone);
        if let Some(addr) = record.private_ip {
            cmd.env("BERTH_PRIVATE_IP", addr.to_string());
        }
        if let Some(rel) = &record.cgroup {
            cmd.env("BERTH_CGROUP", rel);
        }
        cmd.envs(spec.agent.env.iter().map(|(k, v)| (k, v)));
        spawn_detached(&mut cmd, placement).map_err(|source| ProviderError::Spawn {
            command: describe(spec),
            source,
        })
    }

    /// Whether anything of the instance may still exist on the host.
    fn holds_anything(&self, record: &Record) -> bool {
        let cgroup = match (&self.mode, &record.cgroup) {
            (Mode::Privileged(cg), Some(rel)) => cg.exists(rel),
            _ => false,
        };
        cgroup
            || record.netns.as_deref().is_some_and(ip::netns_exists)
            || record.veth.as_deref().is_some_and(ip::link_exists)
            || record
                .pid
                .is_some_and(|p| procfs::is_alive(p, record.pid_start))
    }

    /// Asks the agent to stop (SIGTERM) and waits up to the stop timeout for it to exit.
    fn stop_agent(&self, record: &Record) {
        let Some(pid) = record.pid else { return };
        if !procfs::is_alive(pid, record.pid_start) {
            return;
        }
        let result = if self.is_privileged() {
            procfs::signal(pid, Signal::SIGTERM)
        } else {
            // the agent leads its own session and process group
            procfs::signal_group(pid, Signal::SIGTERM)
        };
        if let Err(e) = result {
            tracing::warn!(instance_id = record.instance_id, pid, error = %e, "could not SIGTERM the agent");
            return;
        }
        let polls = (self.config.stop_timeout.as_millis() / POLL.as_millis()).max(1);
        for _ in 0..polls {
            if !procfs::is_alive(pid, record.pid_start) {
                return;
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(
            instance_id = record.instance_id,
            pid,
            "agent did not exit after SIGTERM; killing it"
        );
    }

    /// Kills whatever runs in the instance and removes its cgroups, veth and
    /// namespace. Every missing piece is fine. Returns the processes killed.
    fn teardown(&self, record: &Record, child: Option<Child>) -> Result<usize, ProviderError> {
        let mut killed = BTreeSet::new();
        let mut first_err = None;
        match &self.mode {
            Mode::Privileged(cgroups) => {
                if let Some(rel) = &record.cgroup {
                    killed.extend(cgroups.kill_all(rel, KILL_POLLS));
                }
                // anything that left the cgroup but not the namespace
                if let Some(ns) = &record.netns {
                    let path = ip::netns_path(ns);
                    let mut stragglers = BTreeMap::new();
                    for _ in 0..KILL_POLLS {
                        let pids = procfs::pids_in_netns(&path);
                        if pids.is_empty() {
                            break;
                        }
                        for pid in pids {
                            stragglers
                                .entry(pid)
                                .or_insert_with(|| procfs::start_time(pid));
                            let _ = procfs::signal(pid, Signal::SIGKILL);
                        }
                        std::thread::sleep(POLL);
                    }
                    procfs::wait_gone(&stragglers, KILL_POLLS);
                    killed.extend(stragglers.into_keys());
                }
                if let Some(rel) = &record.cgroup {
                    if let Err(e) = cgroups.remove(rel, REMOVE_POLLS) {
                        first_err.get_or_insert(e);
                    }
                }
                if let Some(veth) = &record.veth {
                    if let Err(e) = ip::delete_link(veth) {
                        first_err.get_or_insert(e);
                    }
                }
                if let Some(ns) = &record.netns {
                    if let Err(e) = ip::delete_netns(ns) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            Mode::Unprivileged => {
                if let Some(pid) = record.pid {
                    let recycled =
                        procfs::start_time(pid).is_some_and(|s| Some(s) != record.pid_start);
                    if !recycled {
                        if let Err(source) = procfs::signal_group(pid, Signal::SIGKILL) {
                            first_err.get_or_insert(ProviderError::Sys {
                                op: format!("SIGKILL process group {pid}"),
                                instance_id: record.instance_id.clone(),
                                source,
                            });
                        }
                        killed.insert(pid);
                        for _ in 0..KILL_POLLS {
                            if !procfs::is_alive(pid, record.pid_start) {
                                break;
                            }
                            std::thread::sleep(POLL);
                        }
                    }
                }
            }
        }
        if let Some(mut child) = child {
            // reap our own agent; it is dead or dying by now
            for _ in 0..KILL_POLLS {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(killed.len()),
        }
    }
}

impl InstanceProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Instance, ProviderError> {
        self.validate(spec)?;
        let mut record = self.reserve(spec)?;
        match self.start(&record, spec) {
            Ok(child) => {
                let pid = child.id();
                record.pid = Some(pid);
                record.pid_start = procfs::start_time(pid);
                record.state = InstanceState::Running;
                let mut inner = self.lock();
                // the agent may have asked for task addresses already: keep them
                if let Ok(Some(current)) = self.load(&record.instance_id) {
                    record.task_addresses = current.task_addresses;
                }
                inner.children.insert(record.instance_id.clone(), child);
                self.save(&record)?;
                tracing::info!(
                    instance_id = record.instance_id,
                    private_ip = ?record.private_ip,
                    pid,
                    "launched local instance"
                );
                Ok(record.instance())
            }
            Err(e) => {
                tracing::warn!(instance_id = record.instance_id, error = %e, "launch failed; cleaning up");
                if let Err(cleanup) = self.teardown(&record, None) {
                    tracing::warn!(instance_id = record.instance_id, error = %cleanup, "cleanup after failed launch");
                }
                record.state = InstanceState::Terminated;
                let _guard = self.lock();
                if let Err(save) = self.save(&record) {
                    tracing::warn!(instance_id = record.instance_id, error = %save, "recording failed launch");
                }
                Err(e)
            }
        }
    }

    fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let (mut record, child) = {
            let mut inner = self.lock();
            let Some(mut record) = self.load(instance_id)? else {
                tracing::debug!(instance_id, "terminate: no such instance");
                return Ok(());
            };
            if record.state == InstanceState::Terminated {
                return Ok(());
            }
            record.state = InstanceState::ShuttingDown;
            self.save(&record)?;
            (record, inner.children.remove(instance_id))
        };
        self.stop_agent(&record);
        let killed = self.teardown(&record, child)?;
        record.state = InstanceState::Terminated;
        let _guard = self.lock();
        let released = record.drop_task_addresses().len();
        self.save(&record)?;
        tracing::info!(
            instance_id,
            killed,
            task_addresses = released,
            "terminated local instance"
        );
        Ok(())
    }

    fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        let _guard = self.lock();
        Ok(self.load_all()?.iter().map(Record::instance).collect())
    }

    fn availability_zone(&self, subnet: &str) -> String {
        availability_zone_for(&self.config.region, subnet)
    }

    /// Takes the next free address of [`LocalConfig::range`] (round-robin,
    /// shared with instance addresses) and writes it into the instance's
    /// record before returning it, so a restarted server knows it is taken.
    /// Root mode only.
    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<TaskAddress, ProviderError> {
        self.require_task_addresses(instance_id)?;
        if !valid_task_id(task_id) {
            return Err(invalid_task_id(instance_id, task_id));
        }
        let mut inner = self.lock();
        let Some(mut record) = self.load(instance_id)? else {
            return Err(ProviderError::UnknownInstance {
                instance_id: instance_id.into(),
                reason: "does not exist".into(),
            });
        };
        if let Some(addr) = record.task_addresses.get(task_id) {
            return Ok(self.task_address(*addr));
        }
        if !matches!(
            record.state,
            InstanceState::Pending | InstanceState::Running
        ) {
            return Err(ProviderError::UnknownInstance {
                instance_id: instance_id.into(),
                reason: format!("is {}: it takes no new task addresses", record.state),
            });
        }
        let used = used_addresses(&self.load_all()?);
        let addr = self
            .config
            .range
            .allocate(&used, inner.cursor)
            .ok_or_else(|| ProviderError::AddressesExhausted {
                instance_id: instance_id.into(),
                range: self.config.range.to_string(),
            })?;
        record.task_addresses.insert(task_id.into(), addr);
        self.save(&record)?;
        inner.cursor = Some(addr);
        tracing::info!(instance_id, task_id, %addr, "allocated task address");
        Ok(self.task_address(addr))
    }

    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), ProviderError> {
        self.require_task_addresses(instance_id)?;
        let _guard = self.lock();
        let Some(mut record) = self.load(instance_id)? else {
            return Ok(());
        };
        if let Some(addr) = record.task_addresses.remove(task_id) {
            self.save(&record)?;
            tracing::info!(instance_id, task_id, %addr, "released task address");
        }
        Ok(())
    }

    fn task_addresses(
        &self,
        instance_id: &str,
    ) -> Result<BTreeMap<String, TaskAddress>, ProviderError> {
        self.require_task_addresses(instance_id)?;
        let _guard = self.lock();
        Ok(self
            .load(instance_id)?
            .filter(|r| r.state.is_live())
            .map(|r| {
                r.task_addresses
                    .into_iter()
                    .map(|(task, addr)| (task, self.task_address(addr)))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The host-side veth of an instance: `vb` + the last 13 hex digits of its id.
fn veth_name(instance_id: &str) -> String {
    let tail = instance_id
        .get(instance_id.len().saturating_sub(13)..)
        .unwrap_or(instance_id);
    format!("{VETH_PREFIX}{tail}")
}

fn is_veth_name(name: &str) -> bool {
    name.strip_prefix(VETH_PREFIX)
        .is_some_and(|t| t.len() == 13 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn describe(spec: &LaunchSpec) -> String {
    let mut s = spec.agent.program.display().to_string();
    for a in &spec.agent.args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn host_memory_mib() -> Result<u64, ProviderError> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|e| ProviderError::io("reading", path, e))?;
    parse_mem_total(&text).ok_or_else(|| ProviderError::Unsupported {
        reason: "no MemTotal in /proc/meminfo".into(),
    })
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::AgentCommand;

    #[test]
    fn names_fit_linux_limits() {
        let id = "i-0123456789abcdef0";
        let v = veth_name(id);
        assert_eq!(v, "vb456789abcdef0");
        assert!(ip::valid_ifname(&v));
        assert!(is_veth_name(&v));
        assert!(!is_veth_name("berth0"));
        assert!(!is_veth_name("vb123"));
        assert_eq!(format!("{NETNS_PREFIX}{id}"), "berth-i-0123456789abcdef0");
    }

    #[test]
    fn reads_mem_total() {
        assert_eq!(
            parse_mem_total("MemTotal:       24684084 kB\nMemFree: 1 kB\n"),
            Some(24105)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn config_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let ok = LocalConfig::with_state_dir(dir.path());
        assert!(ok.validate().is_ok());
        for bad in [
            LocalConfig {
                bridge: "a-bridge-name-too-long".into(),
                ..ok.clone()
            },
            LocalConfig {
                cgroup_root: "berth".into(),
                ..ok.clone()
            },
            LocalConfig {
                cgroup_root: "/berth/../x".into(),
                ..ok.clone()
            },
            LocalConfig {
                memory_share: 0.0,
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(ProviderError::Config { .. })),
                "{bad:?}"
            );
        }
    }

    fn spec(id: &str, memory_mib: u64) -> LaunchSpec {
        LaunchSpec {
            instance_id: id.into(),
            instance_type: "t3.micro".into(),
            vcpus: 1,
            memory_mib,
            gpus: 0,
            subnet: "subnet-1".into(),
            now: 1000.0,
            agent: AgentCommand {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), "exit 0".into()],
                env: vec![],
            },
        }
    }

    /// Unprivileged mode runs anywhere: spec checks, capacity and records.
    #[test]
    fn unprivileged_checks_specs_capacity_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalConfig {
            host_memory_mib: Some(1000),
            memory_share: 0.5,
            stop_timeout: Duration::from_millis(200),
            ..LocalConfig::with_state_dir(dir.path())
        };
        let p = LocalProvider::unprivileged(config.clone()).unwrap();
        assert_eq!(p.capacity_mib(), 500);
        assert!(matches!(
            p.launch(&spec("i-bad", 10)),
            Err(ProviderError::InvalidSpec { .. })
        ));
        assert!(matches!(
            p.launch(&LaunchSpec {
                vcpus: 0,
                ..spec("i-0000000000000000a", 10)
            }),
            Err(ProviderError::InvalidSpec { .. })
        ));
        let a = p.launch(&spec("i-0000000000000000a", 400)).unwrap();
        assert_eq!(a.private_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(a.state, InstanceState::Running);
        assert_eq!(a.netns_path, None);
        assert!(matches!(
            p.launch(&spec("i-0000000000000000a", 1)),
            Err(ProviderError::AlreadyExists { .. })
        ));
        match p.launch(&spec("i-0000000000000000b", 200)) {
            Err(ProviderError::InsufficientCapacity {
                requested_mib,
                available_mib,
                ..
            }) => assert_eq!((requested_mib, available_mib), (200, 100)),
            other => panic!("{other:?}"),
        }
        p.terminate("i-0000000000000000a").unwrap();
        p.terminate("i-0000000000000000a").unwrap();
        p.terminate("i-0000000000000000f").unwrap();
        let mut sleeper = spec("i-0000000000000000b", 200);
        sleeper.agent.args[1] = "exec sleep 1000".into();
        p.launch(&sleeper).unwrap();
        let pid = p.agent_pid("i-0000000000000000b").unwrap().unwrap();
        assert!(procfs::is_alive(pid, None));
        let again = LocalProvider::unprivileged(config).unwrap();
        let states: Vec<_> = again
            .list()
            .unwrap()
            .into_iter()
            .map(|i| (i.instance_id, i.state))
            .collect();
        assert_eq!(
            states,
            [
                ("i-0000000000000000a".to_string(), InstanceState::Terminated),
                ("i-0000000000000000b".to_string(), InstanceState::Running)
            ]
        );
        let report = again.sweep(&[]).unwrap();
        assert_eq!(report.instances, ["i-0000000000000000b"]);
        p.list().unwrap(); // p spawned the agent: this reaps it
        assert!(!procfs::is_alive(pid, None));
        again.forget("i-0000000000000000a").unwrap();
        assert_eq!(again.list().unwrap().len(), 1);
        assert_eq!(again.list().unwrap()[0].state, InstanceState::Terminated);
    }

    #[test]
    fn unprivileged_instances_have_no_task_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalConfig {
            host_memory_mib: Some(1000),
            ..LocalConfig::with_state_dir(dir.path())
        };
        let p = LocalProvider::unprivileged(config).unwrap();
        p.launch(&spec("i-0000000000000000a", 10)).unwrap();
        for result in [
            p.allocate_task_address("i-0000000000000000a", "t")
                .map(drop),
            p.release_task_address("i-0000000000000000a", "t"),
            p.task_addresses("i-0000000000000000a").map(drop),
        ] {
            assert!(
                matches!(result, Err(ProviderError::Unsupported { .. })),
                "{result:?}"
            );
        }
        p.terminate("i-0000000000000000a").unwrap();
    }

    fn record(id: &str, state: InstanceState, ip: [u8; 4], tasks: &[(&str, [u8; 4])]) -> Record {
        Record {
            instance_id: id.into(),
            instance_type: "t3.micro".into(),
            availability_zone: "us-east-1a".into(),
            subnet: "subnet-1".into(),
            vcpus: 1,
            memory_mib: 16,
            gpus: 0,
            private_ip: Some(Ipv4Addr::from(ip)),
            netns: None,
            veth: None,
            cgroup: None,
            pid: None,
            pid_start: None,
            state,
            launched_at: 0.0,
            task_addresses: tasks
                .iter()
                .map(|(t, a)| (t.to_string(), Ipv4Addr::from(*a)))
                .collect(),
        }
    }

    #[test]
    fn task_addresses_count_as_used_while_their_instance_lives() {
        let records = [
            record(
                "i-0000000000000000a",
                InstanceState::Running,
                [10, 0, 0, 2],
                &[("t1", [10, 0, 0, 3]), ("t2", [10, 0, 0, 5])],
            ),
            record(
                "i-0000000000000000b",
                InstanceState::ShuttingDown,
                [10, 0, 0, 4],
                &[("t3", [10, 0, 0, 6])],
            ),
            record(
                "i-0000000000000000c",
                InstanceState::Terminated,
                [10, 0, 0, 7],
                &[("t4", [10, 0, 0, 8])],
            ),
        ];
        let used = used_addresses(&records);
        let want: BTreeSet<Ipv4Addr> = [2, 3, 5, 4, 6]
            .into_iter()
            .map(|n| Ipv4Addr::new(10, 0, 0, n))
            .collect();
        assert_eq!(used, want);
        let mut r = records[0].clone();
        let mut dropped = r.drop_task_addresses();
        dropped.sort();
        assert_eq!(
            dropped,
            ["i-0000000000000000a/t1", "i-0000000000000000a/t2"]
        );
        assert!(r.task_addresses.is_empty());
    }

    #[test]
    fn records_keep_task_addresses_and_older_records_still_load() {
        let r = record(
            "i-0000000000000000a",
            InstanceState::Running,
            [10, 0, 0, 2],
            &[("t1", [10, 0, 0, 3])],
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.contains("\"task_addresses\":{\"t1\":\"10.0.0.3\"}"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        // records written before task addresses existed have none
        let bare = record(
            "i-0000000000000000a",
            InstanceState::Running,
            [10, 0, 0, 2],
            &[],
        );
        let json = serde_json::to_string(&bare).unwrap();
        assert!(!json.contains("task_addresses"), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), bare);
    }
}
