//! Instance providers: local (network namespaces and cgroups on this host) and sim (virtual).
//!
//! # What
//!
//! berth launches "managed instances" for managed-instances capacity
//! providers and runs a `berth agent` on each. An [`InstanceProvider`] is what
//! makes an instance exist: [`launch`](InstanceProvider::launch) it with a
//! [`LaunchSpec`], [`terminate`](InstanceProvider::terminate) it,
//! [`list`](InstanceProvider::list) what there is. Two providers exist:
//!
//! - [`LocalProvider`]: each instance is a network namespace `berth-<id>` with
//!   its own address on a host bridge plus a cgroup `/berth/<id>` holding its
//!   memory and CPU share, and the agent runs inside both. Needs root; without
//!   it ([`LocalProvider::unprivileged`]) the agent runs as a plain process on
//!   loopback.
//! - [`SimProvider`]: virtual instances in memory for simulation and tests;
//!   boot delay, seeded ids and failure injection, no I/O.
//!
//! # Design
//!
//! - No clock: time comes from the caller ([`LaunchSpec::now`],
//!   [`SimProvider::advance`]); this crate never reads the system time.
//! - The caller mints instance ids ([`new_instance_id`]: `i-` + 17 hex digits)
//!   and every provider maps a subnet to an availability zone the same
//!   deterministic way ([`availability_zone_for`]).
//! - The local provider keeps one JSON record per instance under its state
//!   directory, written *before* anything is created on the host, so a
//!   restarted server lists the instances launched before it and
//!   [`LocalProvider::sweep`] can always find what a crashed run left behind.
//!   Instances (and their agents, which run detached in their own session)
//!   outlive the server.
//! - Host networking is done by running iproute2's `ip` (present wherever
//!   network namespaces are usable) rather than speaking rtnetlink: `ip netns
//!   add` already gets the bind-mounted namespace files right, and the crate
//!   stays synchronous with a small dependency tree.
//! - The agent is placed into its cgroups and namespace by a `pre_exec` hook in
//!   the forked child (write to `cgroup.procs`, `setns`, `setsid`), so it is
//!   confined before its first instruction runs and nothing it forks can
//!   escape; that hook is the only `unsafe` code (module `spawn`).
//!
//! # Limits
//!
//! - Instance addresses come from one IPv4 range, by default `10.213.0.0/16`
//!   ([`AddressRange`], [`LocalConfig::range`]): the bridge (default `berth0`)
//!   gets the first host address (`10.213.0.1`), instances the following ones,
//!   handed out round-robin and never while a live instance holds them.
//!   Instances reach each other and the host through the bridge address only:
//!   there is no NAT or forwarding, and the provider itself never contacts any
//!   address (it only configures links and addresses; what the agent connects
//!   to is the agent's business, normally the server at the bridge address).
//!   A server that listens on `127.0.0.1` only is out of the agents' reach
//!   from inside their namespaces: hand them a URL on
//!   [`LocalProvider::gateway`].
//! - Task addresses ([`InstanceProvider::allocate_task_address`], for
//!   `awsvpc` tasks) come from the same range as instance addresses and are
//!   only booked here, like an ENI's private IP: configuring them is the
//!   agent's job. The local provider hands them out in root mode only; the sim
//!   provider keeps them in memory.
//! - cgroups v1 only (controllers mounted at `/sys/fs/cgroup/<controller>`):
//!   memory and cpu are required, cpuacct, pids and freezer are used where
//!   mounted. GPUs are recorded, not isolated. There is no filesystem
//!   isolation: an instance sees the host's files.
//! - Capacity is the memory of this provider's live instances against a share
//!   of host memory ([`LocalConfig::memory_share`]); other instances on the
//!   host are not counted.
//! - A state directory is meant for one server at a time: a restarted server
//!   picks up its instances, but two processes launching into one state
//!   directory at once could race for an address.
//! - Unprivileged mode isolates nothing: no namespace, no cgroup, no limits;
//!   terminate kills the agent's process group only.
//! - An instance that crashed mid-launch stays `pending` in `list` until
//!   [`LocalProvider::sweep`] (or `terminate`) cleans it up.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod addr;
mod cgroup;
mod error;
mod ip;
mod local;
mod procfs;
mod sim;
mod spawn;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use addr::AddressRange;
pub use error::ProviderError;
pub use local::{LocalConfig, LocalProvider, SweepReport};
pub use sim::{SimConfig, SimProvider};

/// The region availability zones are named after unless configured otherwise.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The program to run inside an instance: normally `berth agent ...`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Environment variables set for the agent (on top of a minimal base; see
    /// [`LocalProvider`]).
    pub env: Vec<(String, String)>,
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// `i-` + 17 lowercase hex digits, minted by the caller ([`new_instance_id`]).
    pub instance_id: String,
    /// The instance type, e.g. `m7i.large`.
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// The subnet, e.g. `subnet-0123456789abcdef0`; mapped to a simulated AZ.
    pub subnet: String,
    /// The launch time (seconds since the epoch), from the caller's clock.
    pub now: f64,
    /// What runs inside the instance.
    pub agent: AgentCommand,
}

/// The lifecycle of an instance, as EC2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// The EC2 name: `pending`, `running`, `shutting-down`, `terminated`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    /// Whether the instance holds resources (everything but `Terminated`).
    pub fn is_live(&self) -> bool {
        !matches!(self, Self::Terminated)
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance as a provider reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub instance_id: String,
    pub instance_type: String,
    pub availability_zone: String,
    /// The instance's address (`127.0.0.1` for unprivileged local instances).
    pub private_ip: Option<Ipv4Addr>,
    /// The network namespace file (`/run/netns/berth-<id>`), local root mode only.
    pub netns_path: Option<PathBuf>,
    /// The cgroup path below each controller's mount (`/berth/<id>`), local root mode only.
    pub cgroup: Option<String>,
    pub state: InstanceState,
    /// Seconds since the epoch, as the caller passed it in [`LaunchSpec::now`].
    pub launched_at: f64,
}

/// A task's own address on an instance's network, like the private IP of the
/// ENI an `awsvpc` task gets: [`InstanceProvider::allocate_task_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskAddress {
    /// The task's address, from the same range as the instances'.
    pub address: Ipv4Addr,
    /// The prefix length of the range (the task's network is the instance's).
    pub prefix: u8,
    /// The default gateway (the range's gateway, the bridge's address in local mode).
    pub gateway: Ipv4Addr,
}

/// Makes instances exist.
pub trait InstanceProvider: Send + Sync {
    /// `"local"` or `"sim"`.
    fn name(&self) -> &'static str;
    /// Launches an instance and starts its agent.
    fn launch(&self, spec: &LaunchSpec) -> Result<Instance, ProviderError>;
    /// Stops the agent and everything else in the instance and frees what it
    /// held. Idempotent: terminating an unknown or terminated instance is fine.
    fn terminate(&self, instance_id: &str) -> Result<(), ProviderError>;
    /// Every instance this provider knows, terminated ones included, oldest first.
    fn list(&self) -> Result<Vec<Instance>, ProviderError>;
    /// The availability zone a subnet is in: deterministic, one of `<region>a`..`<region>f`.
    fn availability_zone(&self, subnet: &str) -> String;

    /// Allocates an address for a task on an instance's network (an ENI's
    /// private IP): returns the address, the prefix length and the gateway.
    ///
    /// Idempotent: asking again for the same instance and task returns the
    /// same address. The address never collides with an instance's or another
    /// task's; it stays taken until [`release_task_address`] or until the
    /// instance is terminated. Fails with [`ProviderError::UnknownInstance`]
    /// for an instance that does not exist or is not pending or running, and
    /// with [`ProviderError::AddressesExhausted`] when the range is full.
    ///
    /// The default refuses ([`ProviderError::Unsupported`]).
    ///
    /// [`release_task_address`]: InstanceProvider::release_task_address
    fn allocate_task_address(
        &self,
        instance_id: &str,
        task_id: &str,
    ) -> Result<TaskAddress, ProviderError> {
        let _ = task_id;
        Err(ProviderError::Unsupported {
            reason: format!(
                "the {} provider does not allocate task addresses (instance {instance_id})",
                self.name()
            ),
        })
    }

    /// Releases a task's address. Idempotent: unknown instances and task ids
    /// are fine.
    ///
    /// The default refuses ([`ProviderError::Unsupported`]).
    fn release_task_address(&self, instance_id: &str, task_id: &str) -> Result<(), ProviderError> {
        let _ = task_id;
        Err(ProviderError::Unsupported {
            reason: format!(
                "the {} provider does not allocate task addresses (instance {instance_id})",
                self.name()
            ),
        })
    }

    /// The task addresses an instance holds now, by task id: for a restarted
    /// server to release those of tasks that no longer exist. Empty for an
    /// unknown or terminated instance.
    ///
    /// The default refuses ([`ProviderError::Unsupported`]).
    fn task_addresses(
        &self,
        instance_id: &str,
    ) -> Result<BTreeMap<String, TaskAddress>, ProviderError> {
        Err(ProviderError::Unsupported {
            reason: format!(
                "the {} provider does not allocate task addresses (instance {instance_id})",
                self.name()
            ),
        })
    }
}

/// Whether `task_id` can name a task address: 1..=255 printable ASCII
/// characters without whitespace.
pub(crate) fn valid_task_id(task_id: &str) -> bool {
    !task_id.is_empty() && task_id.len() <= 255 && task_id.bytes().all(|b| b.is_ascii_graphic())
}

pub(crate) fn invalid_task_id(instance_id: &str, task_id: &str) -> ProviderError {
    ProviderError::InvalidTask {
        instance_id: instance_id.into(),
        task_id: task_id.into(),
        reason: "a task id is 1..=255 printable ASCII characters without whitespace".into(),
    }
}

/// A fresh random instance id: `i-` and 17 lowercase hex digits.
pub fn new_instance_id() -> String {
    use rand::Rng;
    format_instance_id(rand::rng().random::<u128>())
}

/// `i-` and the low 68 bits of `bits` as 17 hex digits.
pub(crate) fn format_instance_id(bits: u128) -> String {
    format!("i-{:017x}", bits & ((1u128 << 68) - 1))
}

/// Whether `id` has the form of an instance id (`i-` + 17 lowercase hex digits).
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The availability zone of `subnet` in `region`: a stable hash (FNV-1a) of
/// the subnet id picks one of `<region>a` .. `<region>f`.
pub fn availability_zone_for(region: &str, subnet: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in subnet.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let letter = char::from(b'a' + (h % 6) as u8);
    format!("{region}{letter}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn instance_ids_have_the_ec2_form() {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let id = new_instance_id();
            assert_eq!(id.len(), 19, "{id}");
            assert!(is_instance_id(&id), "{id}");
            seen.insert(id);
        }
        assert_eq!(seen.len(), 200);
        assert_eq!(format_instance_id(0), "i-00000000000000000");
        assert_eq!(format_instance_id(u128::MAX), "i-fffffffffffffffff");
        for bad in [
            "",
            "i-",
            "i-0123456789abcdef",
            "i-0123456789abcdef01",
            "i-0123456789ABCDEF0",
            "x-0123456789abcdef0",
            "i-../../etc/passw",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn availability_zones_are_deterministic_and_spread() {
        let a = availability_zone_for("us-east-1", "subnet-0123456789abcdef0");
        assert_eq!(
            a,
            availability_zone_for("us-east-1", "subnet-0123456789abcdef0")
        );
        let zones: BTreeSet<String> = (0..200)
            .map(|i| availability_zone_for("us-east-1", &format!("subnet-{i:017x}")))
            .collect();
        let all: BTreeSet<String> = "abcdef".chars().map(|c| format!("us-east-1{c}")).collect();
        assert_eq!(zones, all);
        // pinned, so the mapping never changes under a running deployment
        assert_eq!(availability_zone_for("us-east-1", ""), "us-east-1f");
        assert_eq!(
            availability_zone_for("us-east-1", "subnet-0123456789abcdef0"),
            "us-east-1d"
        );
        // the region only names the zone; the letter depends on the subnet alone
        let eu = availability_zone_for("eu-west-3", "subnet-0123456789abcdef0");
        assert_eq!(eu, "eu-west-3d");
    }

    #[test]
    fn states_have_ec2_names() {
        assert_eq!(InstanceState::ShuttingDown.as_str(), "shutting-down");
        assert_eq!(
            serde_json::to_string(&InstanceState::ShuttingDown).unwrap(),
            "\"shutting-down\""
        );
        assert!(InstanceState::Running.is_live());
        assert!(!InstanceState::Terminated.is_live());
    }
}
