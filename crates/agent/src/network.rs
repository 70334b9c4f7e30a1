//! `awsvpc` task networking on an instance: one network namespace per task,
//! holding the task's own address on the instance's network.
//!
//! # What
//!
//! An `awsvpc` task gets an address of its own (on AWS, the private IP of an
//! ENI attached to the instance; in berth, an address the server books with
//! the instance provider). [`create_task_netns`] makes the network namespace
//! `berth-t-<first 20 characters of the task id>`
//! (`/run/netns/berth-t-…`, [`task_netns_path`]) with `lo` up and an `eth0`
//! holding that address, with a default route via the gateway; the task's
//! containers join it by path (`Network::Join`). [`delete_task_netns`]
//! removes it.
//!
//! # Design
//!
//! - `eth0` is a macvlan (mode `bridge`) on the instance's own interface
//!   (`parent_if`, normally the instance's `eth0`), created straight into the
//!   task namespace and named there (`ip link add link <parent> name eth0
//!   netns <ns> type macvlan mode bridge`), so no temporary link is ever left
//!   in the instance's namespace. A macvlan has its own MAC address, so on the
//!   instance's network the task is a host of its own, like an ENI. The MAC
//!   is derived from the IPv4 address (`0a:58:` + its four bytes, as the CNI
//!   bridge plugin does): an address released and handed to a new task keeps
//!   its MAC, so ARP caches on the network never point at a stale one.
//! - Everything is done by running iproute2's `ip`, as the providers crate
//!   does for instances: `ip netns add` gets the bind-mounted namespace file
//!   right. Errors name the command that failed and what it printed.
//! - The functions run where the agent runs: as root, inside the instance's
//!   network namespace (the `ip` processes inherit it, so the parent interface
//!   is looked up there) and in the host's mount namespace (so `/run/netns` is
//!   the host's and `ip netns add` works). They block (they wait for `ip`):
//!   call them from `spawn_blocking` in async code.
//! - [`create_task_netns`] converges rather than starting over: a namespace
//!   that already has `eth0` with the wanted address is reused as it is (an
//!   agent restarted while its tasks run), one a crash left half made is
//!   finished; one whose `eth0` holds another address is refused
//!   ([`NetworkError::Conflict`]), since a task may still use it. A namespace
//!   this call created and could not finish is deleted again.
//!
//! # Limits
//!
//! - Tasks share the instance's link: their traffic goes over the instance's
//!   `eth0` (veth) and the host bridge like the instance's own, with no
//!   bandwidth or packet-rate isolation between them.
//! - A macvlan cannot talk to its parent interface: the instance itself
//!   (the agent, and `host`/`bridge` mode tasks on it) cannot reach its own
//!   `awsvpc` tasks' addresses, nor they the instance's address. Tasks on one
//!   instance reach each other (bridge mode), and everything reaches
//!   everything across instances and the host bridge.
//! - No per-task security groups: nothing filters what reaches a task's
//!   address. No DNS configuration either (the containers' `resolv.conf` is
//!   the runtime's business).
//! - Names are cut to the first 20 characters of the task id: two tasks whose
//!   ids share those would share a namespace name (and the second create
//!   fails with [`NetworkError::Conflict`] unless the addresses match). ECS
//!   task ids are 32 random hex digits.
//! - Deleting a namespace while processes still run in it removes its name
//!   and its `eth0` (so the address is free at once), but the namespace
//!   itself lives on, with `lo` only, until they exit: stop the task's
//!   containers first.
//! - IPv4 only.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `ip netns` keeps its namespace files.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of task network namespace names: `berth-t-<first 20 chars of the task id>`.
pub const TASK_NETNS_PREFIX: &str = "berth-t-";
/// How many characters of the task id go into the namespace name.
const TASK_ID_CHARS: usize = 20;
/// The task's interface inside its namespace.
const TASK_IF: &str = "eth0";
/// The longest interface name Linux takes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// A task's address on the instance's network: the address, the prefix
/// length of the network and the default gateway (what the instance provider
/// hands out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskAddress {
    /// The task's own address.
    pub address: Ipv4Addr,
    /// The prefix length of the instance's network (1..=30).
    pub prefix: u8,
    /// The default gateway, on that network.
    pub gateway: Ipv4Addr,
}

impl TaskAddress {
    /// `address/prefix`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }

    fn validate(&self) -> Result<(), NetworkError> {
        let bad = |reason: String| {
            Err(NetworkError::InvalidAddress {
                address: *self,
                reason,
            })
        };
        if !(1..=30).contains(&self.prefix) {
            return bad(format!("prefix /{} is outside /1../30", self.prefix));
        }
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        let (a, g) = (u32::from(self.address), u32::from(self.gateway));
        if a & mask != g & mask {
            return bad(format!(
                "the gateway {} is not on {}",
                self.gateway,
                self.cidr()
            ));
        }
        if a == g {
            return bad("the address is the gateway's".into());
        }
        if a & !mask == 0 || a & !mask == !mask {
            return bad("the address is the network's or its broadcast".into());
        }
        Ok(())
    }
}

/// What went wrong setting up or removing a task's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The task id cannot name a namespace.
    #[error("task id {task_id:?} cannot name a network namespace: {reason}")]
    InvalidTaskId { task_id: String, reason: String },

    /// The parent interface name is not an interface name.
    #[error("{name:?} is not an interface name (1..=15 letters, digits, '-', '_', '.')")]
    InvalidInterface { name: String },

    /// The address cannot be configured.
    #[error("task address {} via {}: {reason}", address.cidr(), address.gateway)]
    InvalidAddress {
        address: TaskAddress,
        reason: String,
    },

    /// The namespace exists but is set up for something else.
    #[error("task network namespace {netns} exists but {reason}")]
    Conflict { netns: String, reason: String },

    /// `ip` ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// `ip` could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// The name of a task's network namespace: `berth-t-` + the first 20
/// characters of the task id.
pub fn task_netns_name(task_id: &str) -> String {
    let short: String = task_id.chars().take(TASK_ID_CHARS).collect();
    format!("{TASK_NETNS_PREFIX}{short}")
}

/// The file of a task's network namespace: `/run/netns/berth-t-…`, what the
/// task's containers join.
pub fn task_netns_path(task_id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(task_netns_name(task_id))
}

/// Creates the task's network namespace with `lo` up and `eth0` (a macvlan in
/// bridge mode on `parent_if` of the current namespace) holding `addr`, with
/// a default route via `addr.gateway`; returns its file
/// ([`task_netns_path`]).
///
/// Idempotent: a namespace that already has `eth0` with this address is
/// reused (its `lo`, `eth0` and default route are set again), a half-made one
/// is finished, one whose `eth0` holds another address is refused
/// ([`NetworkError::Conflict`]). A namespace this call created is deleted
/// again when a later step fails.
pub fn create_task_netns(
    task_id: &str,
    parent_if: &str,
    addr: &TaskAddress,
) -> Result<PathBuf, NetworkError> {
    validate_task_id(task_id)?;
    if !valid_ifname(parent_if) {
        return Err(NetworkError::InvalidInterface {
            name: parent_if.into(),
        });
    }
    addr.validate()?;
    let netns = task_netns_name(task_id);
    let path = task_netns_path(task_id);
    let created = !path.exists()
        && match ip(&["netns", "add", &netns]) {
            Ok(_) => true,
            // someone else made it at the same moment: theirs, not ours to remove
            Err(_) if path.exists() => false,
            Err(e) => return Err(e),
        };
    match configure(&netns, parent_if, addr) {
        Ok(reused) => {
            tracing::info!(
                task_id,
                netns,
                address = %addr.cidr(),
                gateway = %addr.gateway,
                reused,
                "task network namespace ready"
            );
            Ok(path)
        }
        Err(e) => {
            if created {
                if let Err(cleanup) = delete_netns(&netns) {
                    tracing::warn!(netns, error = %cleanup, "removing a half-made task network namespace");
                }
            }
            Err(e)
        }
    }
}

/// Deletes the task's network namespace if it exists, removing its `eth0`
/// first: the address stops answering at once, even when processes still
/// hold the namespace (or the kernel has yet to tear it down). Idempotent.
pub fn delete_task_netns(task_id: &str) -> Result<(), NetworkError> {
    validate_task_id(task_id)?;
    delete_netns(&task_netns_name(task_id))
}

/// Gives `eth0` in `netns` the address (making the macvlan if missing) and
/// brings everything up. Returns whether `eth0` was there already.
fn configure(netns: &str, parent_if: &str, addr: &TaskAddress) -> Result<bool, NetworkError> {
    let cidr = addr.cidr();
    let links = ip(&["-n", netns, "-o", "link", "show"])?;
    let reused = link_names(&links).any(|n| n == TASK_IF);
    if reused {
        let addrs = ip(&["-n", netns, "-4", "-o", "addr", "show", "dev", TASK_IF])?;
        let held = inet_addresses(&addrs);
        if !held.contains(&cidr) {
            if !held.is_empty() {
                return Err(NetworkError::Conflict {
                    netns: netns.into(),
                    reason: format!("its {TASK_IF} holds {}, not {cidr}", held.join(", ")),
                });
            }
            ip(&["-n", netns, "addr", "add", &cidr, "dev", TASK_IF])?;
        }
    } else {
        let mac = mac_for(addr.address);
        ip(&[
            "link", "add", "link", parent_if, "name", TASK_IF, "address", &mac, "netns", netns,
            "type", "macvlan", "mode", "bridge",
        ])?;
        ip(&["-n", netns, "addr", "add", &cidr, "dev", TASK_IF])?;
    }
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&["-n", netns, "link", "set", TASK_IF, "up"])?;
    let gateway = addr.gateway.to_string();
    ip(&[
        "-n", netns, "route", "replace", "default", "via", &gateway, "dev", TASK_IF,
    ])?;
    Ok(reused)
}

fn delete_netns(netns: &str) -> Result<(), NetworkError> {
    let path = Path::new(NETNS_DIR).join(netns);
    if !path.exists() {
        return Ok(());
    }
    // the kernel dismantles a namespace asynchronously, and not at all while
    // processes hold it: take the address away now
    let has_eth0 = || {
        ip(&["-n", netns, "-o", "link", "show"])
            .is_ok_and(|links| link_names(&links).any(|n| n == TASK_IF))
    };
    if has_eth0() {
        if let Err(e) = ip(&["-n", netns, "link", "del", TASK_IF]) {
            if has_eth0() {
                return Err(e);
            }
        }
    }
    match ip(&["netns", "del", netns]) {
        Err(_) if !path.exists() => Ok(()),
        other => other.map(drop),
    }
}

/// The MAC address of the task interface holding `addr`: `0a:58:` (locally
/// administered, unicast) and the four bytes of the address. An address that
/// moves to a new task keeps its MAC, so the neighbours' ARP caches stay right.
fn mac_for(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Task ids name namespaces (and so files under `/run/netns`): letters,
/// digits, `-` and `_` only.
fn validate_task_id(task_id: &str) -> Result<(), NetworkError> {
    let bad = |reason: &str| {
        Err(NetworkError::InvalidTaskId {
            task_id: task_id.into(),
            reason: reason.into(),
        })
    };
    if task_id.is_empty() {
        return bad("it is empty");
    }
    if !task_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, '-' and '_' may be used");
    }
    Ok(())
}

/// Whether `name` can be an interface name.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The interface names of `ip -o link show` output (`2: eth0@if5: <...> ...`).
fn link_names(out: &str) -> impl Iterator<Item = &str> {
    out.lines().filter_map(|l| {
        let name = l.split_whitespace().nth(1)?.trim_end_matches(':');
        Some(name.split('@').next().unwrap_or(name))
    })
}

/// The `a.b.c.d/n` addresses of `ip -4 -o addr show` output.
fn inet_addresses(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next().map(str::to_string)
        })
        .collect()
}

/// Runs `ip <args>`, returning its stdout.
fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetworkError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetworkError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn addr(a: [u8; 4], prefix: u8, g: [u8; 4]) -> TaskAddress {
        TaskAddress {
            address: a.into(),
            prefix,
            gateway: g.into(),
        }
    }

    #[test]
    fn names_and_paths() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(task_netns_name(id), "berth-t-0123456789abcdef0123");
        assert_eq!(
            task_netns_path(id),
            PathBuf::from("/run/netns/berth-t-0123456789abcdef0123")
        );
        assert_eq!(task_netns_name("short"), "berth-t-short");
        assert!(validate_task_id(id).is_ok());
        for bad in ["", "../x", "a/b", "a b", ".", "t\n"] {
            assert!(
                matches!(
                    validate_task_id(bad),
                    Err(NetworkError::InvalidTaskId { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("eth0.100"));
        assert!(!valid_ifname("a-name-too-long-x"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a/b"));
    }

    #[test]
    fn addresses_are_checked() {
        assert!(addr([10, 0, 0, 5], 24, [10, 0, 0, 1]).validate().is_ok());
        assert_eq!(addr([10, 0, 0, 5], 24, [10, 0, 0, 1]).cidr(), "10.0.0.5/24");
        for (bad, why) in [
            (addr([10, 0, 0, 5], 24, [10, 0, 1, 1]), "not on"),
            (addr([10, 0, 0, 1], 24, [10, 0, 0, 1]), "gateway's"),
            (addr([10, 0, 0, 0], 24, [10, 0, 0, 1]), "broadcast"),
            (addr([10, 0, 0, 255], 24, [10, 0, 0, 1]), "broadcast"),
            (addr([10, 0, 0, 5], 31, [10, 0, 0, 4]), "prefix"),
            (addr([10, 0, 0, 5], 0, [10, 0, 0, 1]), "prefix"),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn macs_follow_addresses() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 213, 0, 5)), "0a:58:0a:d5:00:05");
        assert_eq!(mac_for(Ipv4Addr::new(255, 1, 2, 3)), "0a:58:ff:01:02:03");
    }

    #[test]
    fn parses_ip_output() {
        let links = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN\\    link/loopback 00:00:00:00:00:00\n\
                     2: eth0@if256: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\\    link/ether 5a:6e:80:e8:52:24 link-netnsid 0\n";
        assert_eq!(link_names(links).collect::<Vec<_>>(), ["lo", "eth0"]);
        let addrs = "2: eth0    inet 10.217.9.100/24 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                     2: eth0    inet 10.217.9.101/24 scope global secondary eth0\\       valid_lft forever\n";
        assert_eq!(
            inet_addresses(addrs),
            ["10.217.9.100/24", "10.217.9.101/24"]
        );
        assert!(inet_addresses("").is_empty());
    }

    #[test]
    fn bad_input_fails_before_running_anything() {
        let a = addr([10, 0, 0, 5], 24, [10, 0, 0, 1]);
        assert!(matches!(
            create_task_netns("../etc", "eth0", &a),
            Err(NetworkError::InvalidTaskId { .. })
        ));
        assert!(matches!(
            create_task_netns("t1", "not an if", &a),
            Err(NetworkError::InvalidInterface { .. })
        ));
        assert!(matches!(
            create_task_netns("t1", "eth0", &addr([10, 0, 0, 5], 24, [10, 1, 0, 1])),
            Err(NetworkError::InvalidAddress { .. })
        ));
        assert!(matches!(
            delete_task_netns(""),
            Err(NetworkError::InvalidTaskId { .. })
        ));
    }
}
