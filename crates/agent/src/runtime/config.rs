//! The pure part of the mapping from an ECS container definition and an OCI image config to a
//! container's process: command line, environment, user, capabilities, rlimits.
//!
//! Everything here follows Docker's semantics (which ECS on EC2 inherits) and touches neither
//! the host nor runc, so it is unit-tested on its own.

use std::collections::BTreeSet;

use berth_model::ecs::{ContainerDefinition, Ulimit, UlimitName};
use oci_spec::runtime::{
    Capabilities, Capability, PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
};

use super::{ImageConfig, RuntimeError};

/// The `PATH` a container gets when neither the image nor the definition sets one (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability `oci-spec` knows (what `"ALL"` and `privileged` grant).
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// The process's argv, Docker's rules: the definition's `entryPoint` replaces the image's
/// `Entrypoint` *and clears its `Cmd`*; the definition's `command` replaces the image's `Cmd`;
/// the result is entrypoint followed by cmd.
pub fn resolve_args(
    image: &ImageConfig,
    def: &ContainerDefinition,
) -> Result<Vec<String>, RuntimeError> {
    let (entrypoint, cmd) = match &def.entry_point {
        Some(ep) => (ep.clone(), def.command.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            def.command
                .clone()
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    match args.first() {
        None => Err(RuntimeError::InvalidConfig(
            "no command: neither the image (Entrypoint/Cmd) nor the container definition \
             (entryPoint/command) gives one"
                .into(),
        )),
        Some(a) if a.is_empty() => Err(RuntimeError::InvalidConfig(
            "the command's first word is empty".into(),
        )),
        Some(_) => Ok(args),
    }
}

/// Sets `key` in an ordered environment, replacing an existing entry in place.
pub fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

/// The process environment, in order: the image's `Env`, the definition's `environment` over
/// it, `extra_env` over that, then `PATH` (when missing), `HOSTNAME` (when not set explicitly)
/// and `NVIDIA_VISIBLE_DEVICES` (when GPUs are assigned).
pub fn merge_env(
    image_env: &[String],
    def: &ContainerDefinition,
    extra: &[(String, String)],
    hostname: Option<&str>,
    gpu_ids: &[String],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in image_env {
        if let Some((k, v)) = entry.split_once('=') {
            if !k.is_empty() {
                set_env(&mut env, k, v);
            }
        }
    }
    for kv in def.environment.iter().flatten() {
        if let Some(name) = kv.name.as_deref().filter(|n| !n.is_empty()) {
            set_env(&mut env, name, kv.value.as_deref().unwrap_or(""));
        }
    }
    for (k, v) in extra {
        set_env(&mut env, k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    if let Some(h) = hostname {
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.insert(1, ("HOSTNAME".to_string(), h.to_string()));
        }
    }
    if !gpu_ids.is_empty() {
        set_env(&mut env, "NVIDIA_VISIBLE_DEVICES", &gpu_ids.join(","));
    }
    env
}

/// One side of a `user` value: a numeric id or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdOrName {
    /// Numeric.
    Id(u32),
    /// A name to look up in the container's `/etc/passwd` or `/etc/group`.
    Name(String),
}

impl IdOrName {
    fn parse(s: &str) -> IdOrName {
        match s.parse::<u32>() {
            Ok(n) => IdOrName::Id(n),
            Err(_) => IdOrName::Name(s.to_string()),
        }
    }
}

/// Parses a Docker `user` value: `"uid"`, `"uid:gid"`, `"name"`, `"name:group"` (any mix).
pub fn parse_user(s: &str) -> Result<(IdOrName, Option<IdOrName>), RuntimeError> {
    let s = s.trim();
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() || g.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(RuntimeError::InvalidConfig(format!(
            "invalid user {s:?}: expected uid, uid:gid, name or name:group"
        )));
    }
    Ok((IdOrName::parse(u), g.map(IdOrName::parse)))
}

/// The user a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups from the container's `/etc/group`.
    pub additional_gids: Vec<u32>,
    /// The user's name when known.
    pub name: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|m| !m.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves a `user` value against the container's `/etc/passwd` and `/etc/group` contents
/// (Docker's rules): no user is root; a name must exist in passwd; a uid without a group takes
/// its passwd entry's gid (0 when it has none); a group name must exist in group;
/// supplementary groups are the groups that list the user's name.
pub fn resolve_user(
    user: Option<&str>,
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, RuntimeError> {
    let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(ResolvedUser {
            name: Some("root".into()),
            ..ResolvedUser::default()
        });
    };
    let (u, g) = parse_user(user)?;
    let entry = match &u {
        IdOrName::Name(n) => Some(passwd_entries(passwd).find(|e| e.name == n).ok_or_else(
            || {
                RuntimeError::InvalidConfig(format!(
                    "user {n:?} not found in the image's /etc/passwd"
                ))
            },
        )?),
        IdOrName::Id(id) => passwd_entries(passwd).find(|e| e.uid == *id),
    };
    let uid = match (&u, &entry) {
        (IdOrName::Id(id), _) => *id,
        (IdOrName::Name(_), Some(e)) => e.uid,
        (IdOrName::Name(n), None) => {
            return Err(RuntimeError::InvalidConfig(format!("user {n:?} not found")))
        }
    };
    let gid = match &g {
        Some(IdOrName::Id(gid)) => *gid,
        Some(IdOrName::Name(gn)) => group_entries(group)
            .find(|e| e.name == gn)
            .map(|e| e.gid)
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!(
                    "group {gn:?} not found in the image's /etc/group"
                ))
            })?,
        None => entry.as_ref().map(|e| e.gid).unwrap_or(0),
    };
    let name = entry.as_ref().map(|e| e.name.to_string());
    let mut additional: BTreeSet<u32> = BTreeSet::new();
    if let Some(n) = &name {
        for e in group_entries(group) {
            if e.members.contains(&n.as_str()) && e.gid != gid {
                additional.insert(e.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional.into_iter().collect(),
        name,
    })
}

/// Parses a capability name, with or without `CAP_`, any case.
pub fn parse_capability(name: &str) -> Result<Capability, RuntimeError> {
    serde_json::from_value(serde_json::Value::String(name.trim().to_string()))
        .map_err(|_| RuntimeError::InvalidConfig(format!("unknown capability {name:?}")))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL") || name.trim().eq_ignore_ascii_case("CAP_ALL")
}

/// The capability's number (its bit in `/proc/<pid>/status` masks).
pub fn capability_number(c: Capability) -> u32 {
    match c {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// The capabilities of a `CapBnd:`-style hexadecimal mask.
pub fn capabilities_of_mask(mask: u64) -> Capabilities {
    ALL_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| mask & (1u64 << capability_number(*c)) != 0)
        .collect()
}

/// The capability bounding set of this process (`CapBnd` of `/proc/self/status`): what a
/// container started from here can get at most.
pub fn own_bounding_set() -> Option<Capabilities> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16)
        .ok()
        .map(capabilities_of_mask)
}

/// The capability set of a container, Docker's rules (moby `TweakCapabilities`): privileged →
/// all; `add` containing `ALL` → all but `drop`; `drop` containing `ALL` → only `add`; else the
/// default set minus `drop`, plus `add`. "All" means all of `available` (the agent's own
/// bounding set — a container cannot get more) when given.
pub fn capabilities(
    add: &[String],
    drop: &[String],
    privileged: bool,
    available: Option<&Capabilities>,
) -> Result<Capabilities, RuntimeError> {
    let all: Capabilities = ALL_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| available.is_none_or(|a| a.contains(c)))
        .collect();
    if privileged {
        return Ok(all);
    }
    let parse_list = |names: &[String]| -> Result<Capabilities, RuntimeError> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| parse_capability(n))
            .collect()
    };
    let added = parse_list(add)?;
    let dropped = parse_list(drop)?;
    let set = if add.iter().any(|n| is_all(n)) {
        all.difference(&dropped).copied().collect()
    } else if drop.iter().any(|n| is_all(n)) {
        added
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| !dropped.contains(c))
            .chain(added)
            .collect()
    };
    Ok(set)
}

/// The rlimit type of an ECS ulimit name.
pub fn rlimit_type(name: UlimitName) -> PosixRlimitType {
    match name {
        UlimitName::Core => PosixRlimitType::RlimitCore,
        UlimitName::Cpu => PosixRlimitType::RlimitCpu,
        UlimitName::Data => PosixRlimitType::RlimitData,
        UlimitName::Fsize => PosixRlimitType::RlimitFsize,
        UlimitName::Locks => PosixRlimitType::RlimitLocks,
        UlimitName::Memlock => PosixRlimitType::RlimitMemlock,
        UlimitName::Msgqueue => PosixRlimitType::RlimitMsgqueue,
        UlimitName::Nice => PosixRlimitType::RlimitNice,
        UlimitName::Nofile => PosixRlimitType::RlimitNofile,
        UlimitName::Nproc => PosixRlimitType::RlimitNproc,
        UlimitName::Rss => PosixRlimitType::RlimitRss,
        UlimitName::Rtprio => PosixRlimitType::RlimitRtprio,
        UlimitName::Rttime => PosixRlimitType::RlimitRttime,
        UlimitName::Sigpending => PosixRlimitType::RlimitSigpending,
        UlimitName::Stack => PosixRlimitType::RlimitStack,
    }
}

/// ECS `ulimits` as OCI rlimits (a negative value means unlimited); later entries of the same
/// name win. Without ulimits, the process inherits the shim's limits (Docker inherits the
/// daemon's).
pub fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<PosixRlimit>, RuntimeError> {
    let value = |v: i32| u64::try_from(v).unwrap_or(u64::MAX);
    let mut out: Vec<PosixRlimit> = Vec::new();
    for u in ulimits {
        let name = u
            .name
            .ok_or_else(|| RuntimeError::InvalidConfig("ulimit without a name".into()))?;
        let (soft, hard) = (value(u.soft_limit), value(u.hard_limit));
        if soft > hard {
            return Err(RuntimeError::InvalidConfig(format!(
                "ulimit {}: softLimit {} is above hardLimit {}",
                name.as_str(),
                u.soft_limit,
                u.hard_limit
            )));
        }
        let typ = rlimit_type(name);
        out.retain(|r| r.typ() != typ);
        let r = PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|e| RuntimeError::InvalidConfig(format!("ulimit: {e}")))?;
        out.push(r);
    }
    Ok(out)
}

/// Whether `dockerSecurityOptions` asks for `no-new-privileges`.
pub fn no_new_privileges(def: &ContainerDefinition) -> bool {
    def.docker_security_options.iter().flatten().any(|o| {
        let o = o.trim();
        o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true"
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_model::ecs::KeyValuePair;

    fn image(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ImageConfig {
            entrypoint: ep.map(v),
            cmd: cmd.map(v),
            ..ImageConfig::default()
        }
    }

    fn def(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerDefinition {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ContainerDefinition {
            entry_point: ep.map(v),
            command: cmd.map(v),
            ..ContainerDefinition::default()
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = image(Some(&["/ep", "-x"]), Some(&["cmd", "1"]));
        assert_eq!(
            resolve_args(&img, &def(None, None)).unwrap(),
            ["/ep", "-x", "cmd", "1"]
        );
        // command alone replaces Cmd, keeps Entrypoint
        assert_eq!(
            resolve_args(&img, &def(None, Some(&["c2"]))).unwrap(),
            ["/ep", "-x", "c2"]
        );
        // entryPoint alone replaces Entrypoint and clears Cmd
        assert_eq!(
            resolve_args(&img, &def(Some(&["/ep2"]), None)).unwrap(),
            ["/ep2"]
        );
        // both
        assert_eq!(
            resolve_args(&img, &def(Some(&["/ep2"]), Some(&["a", "b"]))).unwrap(),
            ["/ep2", "a", "b"]
        );
        // image Cmd only
        let img2 = image(None, Some(&["sh", "-c", "x"]));
        assert_eq!(
            resolve_args(&img2, &def(None, None)).unwrap(),
            ["sh", "-c", "x"]
        );
        // empty entryPoint resets the image's
        assert_eq!(
            resolve_args(&img, &def(Some(&[]), Some(&["only"]))).unwrap(),
            ["only"]
        );
        // nothing
        assert!(matches!(
            resolve_args(&image(None, None), &def(None, None)),
            Err(RuntimeError::InvalidConfig(_))
        ));
        assert!(resolve_args(&img, &def(Some(&[]), None)).is_err());
    }

    #[test]
    fn env_merges_in_order() {
        let mut d = def(None, None);
        d.environment = Some(vec![
            KeyValuePair {
                name: Some("A".into()),
                value: Some("def".into()),
            },
            KeyValuePair {
                name: Some("C".into()),
                value: None,
            },
        ]);
        let env = merge_env(
            &["A=img".into(), "B=img=x".into(), "junk".into()],
            &d,
            &[("B".into(), "extra".into())],
            Some("h1"),
            &["0".into(), "1".into()],
        );
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("def"));
        assert_eq!(get("B"), Some("extra"));
        assert_eq!(get("C"), Some(""));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(get("HOSTNAME"), Some("h1"));
        assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), Some("0,1"));
        assert_eq!(get("junk"), None);

        let env = merge_env(
            &["PATH=/x".into(), "HOSTNAME=mine".into()],
            &d,
            &[],
            Some("h"),
            &[],
        );
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/x"));
        assert_eq!(get("HOSTNAME"), Some("mine"));
        assert_eq!(get("NVIDIA_VISIBLE_DEVICES"), None);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1001:app:/home/app:/bin/sh\n\
                          nobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:root\n";

    #[test]
    fn user_parsing() {
        assert_eq!(parse_user("1000").unwrap(), (IdOrName::Id(1000), None));
        assert_eq!(
            parse_user("1000:1000").unwrap(),
            (IdOrName::Id(1000), Some(IdOrName::Id(1000)))
        );
        assert_eq!(
            parse_user("app:staff").unwrap(),
            (
                IdOrName::Name("app".into()),
                Some(IdOrName::Name("staff".into()))
            )
        );
        assert!(parse_user(":1").is_err());
        assert!(parse_user("1:").is_err());
        assert!(parse_user("1:2:3").is_err());
    }

    #[test]
    fn user_resolution() {
        let r = resolve_user(None, PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        let r = resolve_user(Some("1000:1000"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.additional_gids, vec![50]);
        let r = resolve_user(Some("1000"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        let r = resolve_user(Some("4242"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.name), (4242, 0, None));
        let r = resolve_user(Some("app"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1001));
        assert_eq!(r.name.as_deref(), Some("app"));
        let r = resolve_user(Some("app:staff"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 50));
        assert!(r.additional_gids.is_empty());
        let r = resolve_user(Some("nobody:7"), PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 7));
        assert!(resolve_user(Some("ghost"), PASSWD, GROUP).is_err());
        assert!(resolve_user(Some("app:ghosts"), PASSWD, GROUP).is_err());
        assert!(resolve_user(Some("ghost"), "", "").is_err());
    }

    fn names(set: &Capabilities) -> Vec<String> {
        let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn capabilities_add_drop() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let default = capabilities(&[], &[], false, None).unwrap();
        assert_eq!(default.len(), 14);
        assert!(!default.contains(&Capability::NetAdmin));

        let c = capabilities(
            &s(&["NET_ADMIN", "cap_sys_time"]),
            &s(&["CAP_CHOWN", "kill"]),
            false,
            None,
        )
        .unwrap();
        assert!(c.contains(&Capability::NetAdmin));
        assert!(c.contains(&Capability::SysTime));
        assert!(!c.contains(&Capability::Chown));
        assert!(!c.contains(&Capability::Kill));
        assert_eq!(c.len(), 14);

        let c = capabilities(&s(&["ALL"]), &s(&["SYS_ADMIN"]), false, None).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!c.contains(&Capability::SysAdmin));

        let c = capabilities(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"]), false, None).unwrap();
        assert_eq!(names(&c), ["NET_BIND_SERVICE"]);

        // add wins over drop in the default case, like Docker
        let c = capabilities(&s(&["NET_ADMIN"]), &s(&["NET_ADMIN"]), false, None).unwrap();
        assert!(c.contains(&Capability::NetAdmin));

        let c = capabilities(&[], &s(&["ALL"]), true, None).unwrap();
        assert_eq!(c.len(), ALL_CAPABILITIES.len());

        assert!(matches!(
            capabilities(&s(&["CAP_BOGUS"]), &[], false, None),
            Err(RuntimeError::InvalidConfig(_))
        ));
        assert_eq!(parse_capability("Cap_Net_Raw").unwrap(), Capability::NetRaw);

        // "all" is bounded by what is available
        let avail = capabilities_of_mask(0x1fffeffffff);
        assert!(!avail.contains(&Capability::SysResource));
        assert_eq!(avail.len(), 40);
        let c = capabilities(&[], &[], true, Some(&avail)).unwrap();
        assert_eq!(c, avail);
        let c = capabilities(&s(&["ALL"]), &[], false, Some(&avail)).unwrap();
        assert_eq!(c, avail);
        for (i, c) in ALL_CAPABILITIES.iter().enumerate() {
            assert!(ALL_CAPABILITIES[i + 1..]
                .iter()
                .all(|d| capability_number(*d) != capability_number(*c)));
        }
        assert!(own_bounding_set().is_some());
    }

    #[test]
    fn ulimits_map_to_rlimits() {
        let u = |n: UlimitName, s: i32, h: i32| Ulimit {
            name: Some(n),
            soft_limit: s,
            hard_limit: h,
        };
        let r = rlimits(&[
            u(UlimitName::Nofile, 100, 200),
            u(UlimitName::Core, -1, -1),
            u(UlimitName::Nofile, 300, 400),
        ])
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].typ(), PosixRlimitType::RlimitCore);
        assert_eq!(r[0].soft(), u64::MAX);
        assert_eq!(r[1].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((r[1].soft(), r[1].hard()), (300, 400));
        assert!(rlimits(&[u(UlimitName::Nofile, 5, 1)]).is_err());
    }

    #[test]
    fn security_options() {
        let mut d = def(None, None);
        assert!(!no_new_privileges(&d));
        d.docker_security_options = Some(vec!["no-new-privileges".into()]);
        assert!(no_new_privileges(&d));
    }
}
