//! Host networking through iproute2's `ip`: the bridge, network namespaces
//! and veth pairs. Every step checks first, so running it twice is harmless.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::addr::AddressRange;
use crate::ProviderError;

/// Where `ip netns` keeps its namespace files.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The longest interface name Linux takes (IFNAMSIZ - 1).
pub(crate) const MAX_IFNAME: usize = 15;

/// Runs `ip <args>`, returning its stdout.
pub(crate) fn ip(args: &[&str]) -> Result<String, ProviderError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProviderError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProviderError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The file of the named network namespace.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

pub(crate) fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Whether `name` can be an interface name.
pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Creates the bridge if missing, gives it the range's gateway address and brings it up.
pub(crate) fn ensure_bridge(bridge: &str, range: &AddressRange) -> Result<(), ProviderError> {
    if !link_exists(bridge) {
        if let Err(e) = ip(&["link", "add", "name", bridge, "type", "bridge"]) {
            // another provider may have made it at the same moment
            if !link_exists(bridge) {
                return Err(e);
            }
        }
    }
    let cidr = format!("{}/{}", range.gateway(), range.prefix());
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", bridge])?;
    if !addrs.split_whitespace().any(|w| w == cidr) {
        if let Err(e) = ip(&["addr", "add", &cidr, "dev", bridge]) {
            let addrs = ip(&["-4", "-o", "addr", "show", "dev", bridge])?;
            if !addrs.split_whitespace().any(|w| w == cidr) {
                return Err(e);
            }
        }
    }
    ip(&["link", "set", bridge, "up"])?;
    Ok(())
}

/// Deletes a link (a bridge or one end of a veth pair) if it exists.
pub(crate) fn delete_link(name: &str) -> Result<(), ProviderError> {
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", name]) {
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

/// The interfaces enslaved to `bridge`.
pub(crate) fn bridge_ports(bridge: &str) -> Result<Vec<String>, ProviderError> {
    let dir = Path::new("/sys/class/net").join(bridge).join("brif");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(ProviderError::io("reading", dir, e)),
    };
    let mut out = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| ProviderError::io("reading", &dir, e))?;
        out.push(entry.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// Creates the namespace `netns` with `eth0` (address `addr` in `range`,
/// default route via the gateway) cabled to `bridge` through the host-side
/// veth `veth`, and `lo` up.
pub(crate) fn create_instance_network(
    netns: &str,
    veth: &str,
    bridge: &str,
    range: &AddressRange,
    addr: Ipv4Addr,
) -> Result<(), ProviderError> {
    if !netns_exists(netns) {
        ip(&["netns", "add", netns])?;
    }
    if !link_exists(veth) {
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])?;
    }
    ip(&["link", "set", veth, "master", bridge])?;
    ip(&["link", "set", veth, "up"])?;
    let cidr = format!("{addr}/{}", range.prefix());
    let gateway = range.gateway().to_string();
    ip(&["-n", netns, "addr", "replace", &cidr, "dev", "eth0"])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n", netns, "route", "replace", "default", "via", &gateway, "dev", "eth0",
    ])?;
    Ok(())
}

/// Deletes the namespace `netns` if it exists.
pub(crate) fn delete_netns(netns: &str) -> Result<(), ProviderError> {
    if !netns_exists(netns) {
        return Ok(());
    }
    match ip(&["netns", "del", netns]) {
        Err(_) if !netns_exists(netns) => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(valid_ifname("berth0"));
        assert!(valid_ifname("vb0123456789abc"));
        assert!(!valid_ifname("vb0123456789abcd"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("../x"));
        assert!(!valid_ifname(".."));
    }
}
