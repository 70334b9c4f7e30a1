//! The local provider against the real host: network namespaces, veths, a
//! bridge and cgroups v1. Needs root; skipped (loudly) otherwise.
//!
//! Every test gets its own bridge (`bt<random>`), address range (a free
//! `10.214.<n>.0/24` or smaller), cgroup root (`/berth-test-<random>`) and state
//! directory, so tests run in parallel and beside a running berth. Traffic
//! goes only to addresses of those namespaces and the test bridge.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_providers::{
    AddressRange, AgentCommand, Instance, InstanceProvider, InstanceState, LaunchSpec, LocalConfig,
    LocalProvider, ProviderError,
};
use rand::Rng;

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A provider on a bridge, range, cgroup root and state directory of its
/// own; everything is torn down on drop, failed test or not.
struct Fixture {
    provider: LocalProvider,
    config: LocalConfig,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(test: &str, prefix: u8) -> Option<Self> {
        if !is_root() {
            eprintln!(
                "SKIPPED {test}: the local provider tests need root (network namespaces, cgroups)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rng();
        let tag: u32 = rng.random();
        let config = LocalConfig {
            bridge: format!("bt{tag:08x}"),
            range: free_range(prefix),
            cgroup_root: format!("/berth-test-{tag:08x}"),
            state_dir: dir.path().join("instances"),
            stop_timeout: Duration::from_secs(2),
            ..LocalConfig::default()
        };
        let provider = LocalProvider::new(config.clone()).unwrap();
        assert!(provider.is_privileged());
        Some(Self {
            provider,
            config,
            _dir: dir,
        })
    }

    /// A second provider object on the same state, as a restarted server makes.
    fn reopen(&self) -> LocalProvider {
        LocalProvider::new(self.config.clone()).unwrap()
    }

    fn cgroup_dir(&self, controller: &str, instance_id: &str) -> PathBuf {
        Path::new(CGROUP_MOUNT)
            .join(controller)
            .join(self.config.cgroup_root.trim_start_matches('/'))
            .join(instance_id)
    }

    fn launch(&self, memory_mib: u64, vcpus: u32, script: &str) -> Instance {
        launch_with(&self.provider, memory_mib, vcpus, script)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = self.provider.destroy() {
            eprintln!("cleanup of {}: {e}", self.config.bridge);
        }
    }
}

/// A `10.214.<n>.0/<prefix>` range no address on the host is in.
fn free_range(prefix: u8) -> AddressRange {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rng = rand::rng();
    loop {
        let n: u8 = rng.random_range(1..=254);
        if !used.contains(&format!(" 10.214.{n}.")) {
            return AddressRange::new(Ipv4Addr::new(10, 214, n, 0), prefix).unwrap();
        }
    }
}

fn launch_with(provider: &LocalProvider, memory_mib: u64, vcpus: u32, script: &str) -> Instance {
    let spec = LaunchSpec {
        instance_id: berth_providers::new_instance_id(),
        instance_type: "t3.micro".into(),
        vcpus,
        memory_mib,
        gpus: 0,
        subnet: "subnet-0123456789abcdef0".into(),
        now: 1_700_000_000.0,
        agent: AgentCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("BERTH_TEST".into(), "yes".into())],
        },
    };
    let i = provider.launch(&spec).unwrap();
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.launched_at, 1_700_000_000.0);
    i
}

fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether `pid` still runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Every pid in `dir` and the cgroups below it.
fn pids_below(dir: &Path) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(pids_below(&e.path()));
            }
        }
    }
    out
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Pings `to` from inside the namespace `netns`.
fn ping(netns: &str, to: Ipv4Addr) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", netns, "busybox", "ping", "-c", "1", "-W", "2",
        ])
        .arg(to.to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn netns_name(i: &Instance) -> String {
    i.netns_path
        .as_ref()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn two_instances_get_namespaces_addresses_and_limits() {
    let Some(fx) = Fixture::new("two_instances_get_namespaces_addresses_and_limits", 24) else {
        return;
    };
    let script = "echo \"agent $BERTH_INSTANCE_ID $BERTH_PRIVATE_IP $BERTH_TEST\"; exec sleep 1000";
    let a = fx.launch(48, 2, script);
    let b = fx.launch(32, 1, script);

    // namespaces and addresses
    for i in [&a, &b] {
        let ns = i.netns_path.as_ref().unwrap();
        assert_eq!(
            ns,
            &PathBuf::from(format!("/run/netns/berth-{}", i.instance_id))
        );
        assert!(ns.exists(), "{}", ns.display());
        assert!(fx.config.range.contains(i.private_ip.unwrap()));
        assert_eq!(
            i.cgroup.as_deref(),
            Some(format!("{}/{}", fx.config.cgroup_root, i.instance_id).as_str())
        );
        assert_eq!(i.availability_zone, "us-east-1d");
    }
    let (ip_a, ip_b) = (a.private_ip.unwrap(), b.private_ip.unwrap());
    assert_ne!(ip_a, ip_b);
    assert_ne!(ip_a, fx.config.range.gateway());
    assert_eq!(fx.provider.gateway(), Some(fx.config.range.gateway()));

    // they reach each other and the bridge, and only these addresses are used
    let gw = fx.config.range.gateway();
    assert!(ping(&netns_name(&a), ip_b), "a -> b");
    assert!(ping(&netns_name(&b), ip_a), "b -> a");
    assert!(ping(&netns_name(&a), gw), "a -> bridge");
    assert!(ping(&netns_name(&b), gw), "b -> bridge");

    for (i, memory_mib, vcpus) in [(&a, 48u64, 2u64), (&b, 32, 1)] {
        let pid = fx.provider.agent_pid(&i.instance_id).unwrap().unwrap();
        assert!(alive(pid));
        // the agent runs in the instance's namespace, not the host's
        let agent_ns = ns_id(&PathBuf::from(format!("/proc/{pid}/ns/net"))).unwrap();
        assert_eq!(Some(agent_ns), ns_id(i.netns_path.as_ref().unwrap()));
        assert_ne!(Some(agent_ns), ns_id(Path::new("/proc/self/ns/net")));
        // in its own session
        let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(sid.as_raw() as u32, pid);
        // and in its cgroups, with the limits of its size
        let mem = fx.cgroup_dir("memory", &i.instance_id);
        assert!(read(&mem.join("cgroup.procs"))
            .lines()
            .any(|l| l == pid.to_string()));
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")),
            (memory_mib << 20).to_string()
        );
        let cpu = fx.cgroup_dir("cpu", &i.instance_id);
        assert!(read(&cpu.join("cgroup.procs"))
            .lines()
            .any(|l| l == pid.to_string()));
        let period: u64 = read(&cpu.join("cpu.cfs_period_us")).parse().unwrap();
        assert_eq!(
            read(&cpu.join("cpu.cfs_quota_us")),
            (vcpus * period).to_string()
        );
        assert_eq!(read(&cpu.join("cpu.shares")), (vcpus * 1024).to_string());
        for extra in ["pids", "cpuacct"] {
            let dir = fx.cgroup_dir(extra, &i.instance_id);
            if Path::new(CGROUP_MOUNT).join(extra).exists() {
                assert!(
                    read(&dir.join("cgroup.procs"))
                        .lines()
                        .any(|l| l == pid.to_string()),
                    "{extra}"
                );
            }
        }
        // output goes to the log, environment as documented
        let log = fx.provider.agent_log(&i.instance_id);
        let want = format!("agent {} {} yes", i.instance_id, i.private_ip.unwrap());
        wait_for("the agent's log line", || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains(&want))
        });
    }

    let listed: Vec<_> = fx.provider.list().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| i.state == InstanceState::Running));
}

#[test]
fn instance_memory_limit_caps_sub_cgroups() {
    let Some(fx) = Fixture::new("instance_memory_limit_caps_sub_cgroups", 28) else {
        return;
    };
    let i = fx.launch(32, 1, "exec sleep 1000");
    let mem = fx.cgroup_dir("memory", &i.instance_id);
    let task = mem.join("task-1");
    std::fs::create_dir(&task).unwrap();
    // a task in a cgroup below the instance's, wanting 200 MiB: tail keeps
    // the whole newline-free stream in memory
    let script = format!(
        "echo $$ > {}/cgroup.procs && head -c 209715200 /dev/zero | tail",
        task.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(!out.status.success(), "200 MiB fit into a 32 MiB instance");
    assert_eq!(
        out.status.code(),
        Some(137),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // the kill is counted where the victim lived; the limit hit was the instance's
    let oom = read(&task.join("memory.oom_control"));
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "{oom}");
    let num = |file: &str| -> u64 {
        std::fs::read_to_string(mem.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        read(&task.join("memory.limit_in_bytes"))
            .parse::<u64>()
            .unwrap()
            > 32 << 20
    );
    // usage ran up to the instance's limit and no further (failcnt is not
    // tracked by every kernel, the peak is)
    let peak = num("memory.max_usage_in_bytes");
    assert!(peak <= 32 << 20 && peak > 24 << 20, "peak {peak}");
    // the agent itself lives on
    let pid = fx.provider.agent_pid(&i.instance_id).unwrap().unwrap();
    assert!(alive(pid));
    fx.provider.terminate(&i.instance_id).unwrap();
    assert!(!task.exists());
    assert!(!mem.exists());
}

#[test]
fn terminate_kills_everything_and_removes_the_instance() {
    let Some(fx) = Fixture::new("terminate_kills_everything_and_removes_the_instance", 24) else {
        return;
    };
    // the agent starts a task in a sub-cgroup and a double-forked orphan,
    // then ignores SIGTERM, so terminate has to escalate
    let script = r#"
cg=/sys/fs/cgroup/memory$BERTH_CGROUP
mkdir $cg/task
sh -c "echo \$\$ > $cg/task/cgroup.procs; exec sleep 1001" &
sh -c "setsid sleep 1002 & exit 0"
trap '' TERM
exec sleep 1000
"#;
    let i = fx.launch(64, 1, script);
    let other = fx.launch(32, 1, "exec sleep 1000");
    let agent = fx.provider.agent_pid(&i.instance_id).unwrap().unwrap();
    let mem = fx.cgroup_dir("memory", &i.instance_id);
    wait_for("agent, task and orphan to settle", || {
        let pids = pids_below(&mem);
        pids.len() == 3 && pids.iter().all(|p| comm(*p).as_deref() == Some("sleep"))
    });
    let pids = pids_below(&mem);
    assert!(pids.contains(&agent));
    let task: Vec<u32> = read(&mem.join("task/cgroup.procs"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(task.len(), 1);
    assert_eq!(ppid(task[0]), Some(agent));
    let orphans: Vec<_> = pids
        .iter()
        .filter(|p| ppid(**p).is_some_and(|pp| !pids.contains(&pp)))
        .collect();
    assert_eq!(
        orphans.len(),
        2,
        "the agent and the double-forked sleep: {pids:?}"
    );

    fx.provider.terminate(&i.instance_id).unwrap();
    for pid in &pids {
        assert!(!alive(*pid), "{pid} survived terminate");
    }
    assert!(!i.netns_path.as_ref().unwrap().exists());
    for controller in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        assert!(
            !fx.cgroup_dir(controller, &i.instance_id).exists(),
            "{controller}"
        );
    }
    let ports: Vec<_> = std::fs::read_dir(format!("/sys/class/net/{}/brif", fx.config.bridge))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "only the other instance's veth is left: {ports:?}"
    );
    let state = |id: &str| {
        fx.provider
            .list()
            .unwrap()
            .into_iter()
            .find(|x| x.instance_id == id)
            .unwrap()
            .state
    };
    assert_eq!(state(&i.instance_id), InstanceState::Terminated);
    // twice, and an instance never launched, are fine
    fx.provider.terminate(&i.instance_id).unwrap();
    fx.provider.terminate("i-00000000000000000").unwrap();
    // the other instance is untouched
    assert_eq!(state(&other.instance_id), InstanceState::Running);
    assert!(alive(
        fx.provider.agent_pid(&other.instance_id).unwrap().unwrap()
    ));
    assert!(ping(&netns_name(&other), fx.config.range.gateway()));
}

#[test]
fn a_restarted_provider_adopts_instances_and_sweeps_leftovers() {
    let Some(fx) = Fixture::new(
        "a_restarted_provider_adopts_instances_and_sweeps_leftovers",
        24,
    ) else {
        return;
    };
    let a = fx.launch(32, 1, "exec sleep 1000");
    let b = fx.launch(32, 1, "exec sleep 1000");
    let pid_a = fx.provider.agent_pid(&a.instance_id).unwrap().unwrap();
    let pid_b = fx.provider.agent_pid(&b.instance_id).unwrap().unwrap();

    // "restart": a new provider object on the same state directory
    let restarted = fx.reopen();
    let mut listed = restarted.list().unwrap();
    listed.sort_by(|x, y| x.instance_id.cmp(&y.instance_id));
    let mut launched = vec![a.clone(), b.clone()];
    launched.sort_by(|x, y| x.instance_id.cmp(&y.instance_id));
    assert_eq!(listed, launched);

    // a cgroup some crashed run left without a record, with a process in it
    let stray_id = berth_providers::new_instance_id();
    let stray = fx.cgroup_dir("memory", &stray_id);
    std::fs::create_dir_all(&stray).unwrap();
    let mut stray_proc = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs; exec sleep 1000",
                stray.display()
            ),
        ])
        .spawn()
        .unwrap();
    wait_for("the stray process", || !pids_below(&stray).is_empty());

    let report = restarted.sweep(&[a.instance_id.as_str()]).unwrap();
    assert_eq!(report.instances, vec![b.instance_id.clone()]);
    assert_eq!(report.namespaces, vec![format!("berth-{}", b.instance_id)]);
    assert!(
        report.cgroups.iter().any(|c| c.ends_with(&stray_id)),
        "{report:?}"
    );
    assert!(report.processes >= 2, "{report:?}");
    assert!(!stray.exists());
    let _ = stray_proc.wait();
    assert!(!alive(pid_b));
    assert!(!b.netns_path.as_ref().unwrap().exists());
    assert!(!fx.cgroup_dir("memory", &b.instance_id).exists());
    // the kept instance is untouched
    assert!(alive(pid_a));
    assert!(a.netns_path.as_ref().unwrap().exists());
    assert!(ping(&netns_name(&a), fx.config.range.gateway()));

    // a new launch never takes the live instance's address
    let c = launch_with(&restarted, 32, 1, "exec sleep 1000");
    assert_ne!(c.private_ip, a.private_ip);
    assert!(ping(&netns_name(&c), a.private_ip.unwrap()));

    // the restarted provider terminates the instance it did not spawn
    restarted.terminate(&a.instance_id).unwrap();
    assert!(!alive(pid_a));
    assert!(!a.netns_path.as_ref().unwrap().exists());
    let states: std::collections::BTreeMap<_, _> = fx
        .provider
        .list()
        .unwrap()
        .into_iter()
        .map(|i| (i.instance_id, i.state))
        .collect();
    assert_eq!(
        states,
        [
            (a.instance_id, InstanceState::Terminated),
            (b.instance_id, InstanceState::Terminated),
            (c.instance_id, InstanceState::Running)
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn addresses_are_never_shared_by_live_instances() {
    // a /29 holds the bridge and five instances
    let Some(fx) = Fixture::new("addresses_are_never_shared_by_live_instances", 29) else {
        return;
    };
    let mut live: Vec<Instance> = (0..5)
        .map(|_| fx.launch(16, 1, "exec sleep 1000"))
        .collect();
    let addrs: BTreeSet<_> = live.iter().map(|i| i.private_ip.unwrap()).collect();
    assert_eq!(addrs.len(), 5);
    let spec = LaunchSpec {
        instance_id: berth_providers::new_instance_id(),
        instance_type: "t3.micro".into(),
        vcpus: 1,
        memory_mib: 16,
        subnet: "subnet-1".into(),
        agent: AgentCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exec sleep 1000".into()],
            env: vec![],
        },
        ..LaunchSpec::default()
    };
    assert!(matches!(
        fx.provider.launch(&spec),
        Err(ProviderError::AddressesExhausted { .. })
    ));
    // the failed launch left nothing behind
    assert!(!Path::new(&format!("/run/netns/berth-{}", spec.instance_id)).exists());

    let gone = live.remove(1);
    fx.provider.terminate(&gone.instance_id).unwrap();
    let next = fx.launch(16, 1, "exec sleep 1000");
    assert_eq!(next.private_ip, gone.private_ip, "the only free address");
    live.push(next);
    let addrs: BTreeSet<_> = live.iter().map(|i| i.private_ip.unwrap()).collect();
    assert_eq!(addrs.len(), 5);

    // capacity: more memory than the host share is refused
    let huge = LaunchSpec {
        instance_id: berth_providers::new_instance_id(),
        memory_mib: fx.provider.capacity_mib() + 1,
        ..spec
    };
    assert!(matches!(
        fx.provider.launch(&huge),
        Err(ProviderError::InsufficientCapacity { .. })
    ));
}

#[test]
fn a_failing_agent_start_cleans_up() {
    let Some(fx) = Fixture::new("a_failing_agent_start_cleans_up", 24) else {
        return;
    };
    let spec = LaunchSpec {
        instance_id: berth_providers::new_instance_id(),
        instance_type: "t3.micro".into(),
        vcpus: 1,
        memory_mib: 16,
        agent: AgentCommand {
            program: "/nonexistent/berth".into(),
            ..AgentCommand::default()
        },
        ..LaunchSpec::default()
    };
    match fx.provider.launch(&spec) {
        Err(ProviderError::Spawn { command, .. }) => assert_eq!(command, "/nonexistent/berth"),
        other => panic!("{other:?}"),
    }
    assert!(!Path::new(&format!("/run/netns/berth-{}", spec.instance_id)).exists());
    assert!(!fx.cgroup_dir("memory", &spec.instance_id).exists());
    let listed = fx.provider.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, InstanceState::Terminated);
}

/// Set for the child process `an_instance_outlives_the_server` starts.
const HELPER_ENV: &str = "BERTH_PROVIDERS_TEST_LAUNCH";

/// Not a test by itself: `an_instance_outlives_the_server` runs it in a
/// separate process that launches one instance and exits, like a server
/// going away. Without the variable it does nothing.
#[test]
fn helper_launch_and_exit() {
    let Ok(arg) = std::env::var(HELPER_ENV) else {
        return;
    };
    let parts: Vec<&str> = arg.split('|').collect();
    let [bridge, range, cgroup_root, state_dir, instance_id] = parts[..] else {
        panic!("bad {HELPER_ENV}: {arg}");
    };
    let config = LocalConfig {
        bridge: bridge.into(),
        range: range.parse().unwrap(),
        cgroup_root: cgroup_root.into(),
        state_dir: state_dir.into(),
        ..LocalConfig::default()
    };
    let provider = LocalProvider::new(config).unwrap();
    let spec = LaunchSpec {
        instance_id: instance_id.into(),
        instance_type: "t3.micro".into(),
        vcpus: 1,
        memory_mib: 32,
        agent: AgentCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exec sleep 1000".into()],
            env: vec![],
        },
        ..LaunchSpec::default()
    };
    provider.launch(&spec).unwrap();
}

#[test]
fn an_instance_outlives_the_server() {
    let Some(fx) = Fixture::new("an_instance_outlives_the_server", 24) else {
        return;
    };
    let id = berth_providers::new_instance_id();
    let arg = [
        fx.config.bridge.clone(),
        fx.config.range.to_string(),
        fx.config.cgroup_root.clone(),
        fx.config.state_dir.display().to_string(),
        id.clone(),
    ]
    .join("|");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_launch_and_exit",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(HELPER_ENV, arg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // the launching process is gone; the instance is not
    let pid = fx.provider.agent_pid(&id).unwrap().unwrap();
    assert!(
        alive(pid),
        "the agent died with the process that launched it"
    );
    let listed = fx.provider.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, InstanceState::Running);
    assert!(ping(&netns_name(&listed[0]), fx.config.range.gateway()));
    fx.provider.terminate(&id).unwrap();
    assert!(!alive(pid));
    assert!(!listed[0].netns_path.as_ref().unwrap().exists());
}

fn all_addresses(p: &LocalProvider, instances: &[&Instance]) -> Vec<Ipv4Addr> {
    let mut out = vec![];
    for i in instances {
        out.push(i.private_ip.unwrap());
        out.extend(
            p.task_addresses(&i.instance_id)
                .unwrap()
                .values()
                .map(|t| t.address),
        );
    }
    out
}

#[test]
fn task_addresses_never_collide_with_instances_or_tasks_across_a_restart() {
    // a /28: the bridge and thirteen instances or tasks
    let Some(fx) = Fixture::new(
        "task_addresses_never_collide_with_instances_or_tasks_across_a_restart",
        28,
    ) else {
        return;
    };
    let range = fx.config.range;
    let a = fx.launch(16, 1, "exec sleep 1000");
    let b = fx.launch(16, 1, "exec sleep 1000");
    let p = &fx.provider;
    let ta1 = p.allocate_task_address(&a.instance_id, "task-a1").unwrap();
    assert_eq!(ta1.prefix, 28);
    assert_eq!(ta1.gateway, range.gateway());
    assert!(range.contains(ta1.address));
    // idempotent for the same instance and task
    assert_eq!(
        p.allocate_task_address(&a.instance_id, "task-a1").unwrap(),
        ta1
    );
    p.allocate_task_address(&a.instance_id, "task-a2").unwrap();
    p.allocate_task_address(&b.instance_id, "task-b1").unwrap();
    let before = all_addresses(p, &[&a, &b]);
    assert_eq!(before.len(), 5);
    assert_eq!(
        before.iter().collect::<BTreeSet<_>>().len(),
        5,
        "{before:?}"
    );
    assert!(!before.contains(&range.gateway()));
    // the record on disk holds them
    let rec = std::fs::read_to_string(
        fx.config
            .state_dir
            .join(&a.instance_id)
            .join("instance.json"),
    )
    .unwrap();
    assert!(rec.contains("task-a2"), "{rec}");

    // a restarted server sees them and never hands them out again
    let restarted = fx.reopen();
    assert_eq!(
        restarted.task_addresses(&a.instance_id).unwrap(),
        p.task_addresses(&a.instance_id).unwrap()
    );
    assert_eq!(
        restarted
            .allocate_task_address(&a.instance_id, "task-a1")
            .unwrap(),
        ta1
    );
    let c = launch_with(&restarted, 16, 1, "exec sleep 1000");
    assert!(!before.contains(&c.private_ip.unwrap()));
    // fill the range with tasks: every address is handed out exactly once
    let mut n = 0;
    loop {
        match restarted.allocate_task_address(&c.instance_id, &format!("task-c{n}")) {
            Ok(_) => n += 1,
            Err(ProviderError::AddressesExhausted {
                instance_id,
                range: r,
            }) => {
                assert_eq!(instance_id, c.instance_id);
                assert_eq!(r, range.to_string());
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 13 - 6);
    let all = all_addresses(&restarted, &[&a, &b, &c]);
    assert_eq!(all.len(), 13);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 13, "{all:?}");

    // terminating an instance frees its address and its tasks'
    let freed: BTreeSet<Ipv4Addr> = all_addresses(p, &[&a]).into_iter().collect();
    p.terminate(&a.instance_id).unwrap();
    assert!(p.task_addresses(&a.instance_id).unwrap().is_empty());
    assert!(matches!(
        p.allocate_task_address(&a.instance_id, "task-a3"),
        Err(ProviderError::UnknownInstance { .. })
    ));
    let again: BTreeSet<Ipv4Addr> = (0..3)
        .map(|k| {
            restarted
                .allocate_task_address(&b.instance_id, &format!("task-b{}", k + 2))
                .unwrap()
                .address
        })
        .collect();
    assert_eq!(again, freed);
    // release is idempotent and makes the address free again
    let gone = p.task_addresses(&b.instance_id).unwrap()["task-b1"].address;
    p.release_task_address(&b.instance_id, "task-b1").unwrap();
    p.release_task_address(&b.instance_id, "task-b1").unwrap();
    p.release_task_address(&b.instance_id, "never-there")
        .unwrap();
    p.release_task_address("i-00000000000000000", "task-b1")
        .unwrap();
    assert!(!p
        .task_addresses(&b.instance_id)
        .unwrap()
        .contains_key("task-b1"));
    assert_eq!(
        restarted
            .allocate_task_address(&c.instance_id, "task-last")
            .unwrap()
            .address,
        gone
    );
    assert!(matches!(
        p.allocate_task_address("i-00000000000000000", "task"),
        Err(ProviderError::UnknownInstance { .. })
    ));
}

#[test]
fn task_addresses_exhaust_a_29_and_sweep_frees_them() {
    // a /29: the bridge and five instances or tasks
    let Some(fx) = Fixture::new("task_addresses_exhaust_a_29_and_sweep_frees_them", 29) else {
        return;
    };
    let p = &fx.provider;
    let a = fx.launch(16, 1, "exec sleep 1000");
    let b = fx.launch(16, 1, "exec sleep 1000");
    for t in ["t1", "t2"] {
        p.allocate_task_address(&a.instance_id, t).unwrap();
    }
    let t3 = p.allocate_task_address(&b.instance_id, "t3").unwrap();
    assert!(matches!(
        p.allocate_task_address(&b.instance_id, "t4"),
        Err(ProviderError::AddressesExhausted { .. })
    ));
    // instances cannot take task addresses either
    let spec = LaunchSpec {
        instance_id: berth_providers::new_instance_id(),
        instance_type: "t3.micro".into(),
        vcpus: 1,
        memory_mib: 16,
        agent: AgentCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exec sleep 1000".into()],
            env: vec![],
        },
        ..LaunchSpec::default()
    };
    assert!(matches!(
        p.launch(&spec),
        Err(ProviderError::AddressesExhausted { .. })
    ));
    assert!(!Path::new(&format!("/run/netns/berth-{}", spec.instance_id)).exists());
    // a released task address is the only free one
    p.release_task_address(&b.instance_id, "t3").unwrap();
    let c = fx.launch(16, 1, "exec sleep 1000");
    assert_eq!(c.private_ip, Some(t3.address));
    assert!(ping(&netns_name(&c), fx.config.range.gateway()));

    // a restarted server sweeps a and b away, and their task addresses with them
    let restarted = fx.reopen();
    assert!(matches!(
        restarted.allocate_task_address(&b.instance_id, "t5"),
        Err(ProviderError::AddressesExhausted { .. })
    ));
    let report = restarted.sweep(&[c.instance_id.as_str()]).unwrap();
    let mut released = report.task_addresses.clone();
    released.sort();
    let mut want = vec![
        format!("{}/t1", a.instance_id),
        format!("{}/t2", a.instance_id),
    ];
    want.sort();
    assert_eq!(released, want, "{report:?}");
    for i in [&a, &b] {
        assert!(restarted.task_addresses(&i.instance_id).unwrap().is_empty());
    }
    let fresh: BTreeSet<Ipv4Addr> = ["t6", "t7", "t8", "t9"]
        .iter()
        .map(|t| {
            restarted
                .allocate_task_address(&c.instance_id, t)
                .unwrap()
                .address
        })
        .collect();
    assert_eq!(fresh.len(), 4);
    assert!(!fresh.contains(&c.private_ip.unwrap()));
    assert!(matches!(
        restarted.allocate_task_address(&c.instance_id, "t10"),
        Err(ProviderError::AddressesExhausted { .. })
    ));
}
