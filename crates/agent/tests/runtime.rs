//! Real tests of the container runtimes: containers are started with runc (as root) or as
//! plain processes, from a busybox image layer.
//!
//! The runc tests are skipped, loudly, when not running as root, when runc is missing or when
//! the host has no static busybox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::runtime::bundle::RootfsMode;
use berth_agent::runtime::{
    cgroup, testing, ContainerLaunch, ContainerStatus, ImageConfig, Network, ProcessRuntime,
    RuncRuntime, Runtime, RuntimeError, ShimCommand,
};
use berth_model::ecs::{
    ContainerDefinition, HostEntry, KernelCapabilities, KeyValuePair, LinuxParameters, Tmpfs,
    Ulimit, UlimitName,
};

fn shim() -> ShimCommand {
    ShimCommand::new(env!("CARGO_BIN_EXE_berth-agent-shim"))
}

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

fn busybox_ok(test: &str) -> bool {
    if testing::static_busybox().is_some() {
        return true;
    }
    eprintln!("\n!!!!!!!! SKIPPED test {test}: no static busybox on this host !!!!!!!!\n");
    false
}

fn cmd(args: &[&str]) -> Option<Vec<String>> {
    Some(args.iter().map(|s| s.to_string()).collect())
}

fn sh(script: &str) -> Option<Vec<String>> {
    cmd(&["sh", "-c", script])
}

/// One test's world: a temp dir with a busybox layer, a state dir, a cgroup parent, and the
/// containers to remove at the end (also on panic).
struct World {
    tmp: tempfile::TempDir,
    layer: PathBuf,
    name: String,
    parent: String,
    rt: Box<dyn Runtime>,
    runc: bool,
}

impl World {
    fn runc(name: &str) -> World {
        Self::with(
            name,
            |state| Box::new(RuncRuntime::new(state, shim())) as Box<dyn Runtime>,
            true,
        )
    }

    fn process(name: &str) -> World {
        Self::with(
            name,
            |state| Box::new(ProcessRuntime::new(state, shim())) as Box<dyn Runtime>,
            false,
        )
    }

    fn with(name: &str, make: impl Fn(&Path) -> Box<dyn Runtime>, runc: bool) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let layer = testing::busybox_layer(&tmp.path().join("layer")).unwrap();
        let state = tmp.path().join("state");
        World {
            rt: make(&state),
            tmp,
            layer,
            name: name.to_string(),
            parent: format!("/berth-test-{}-{name}", std::process::id()),
            runc,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn id(&self, suffix: &str) -> String {
        format!("bt{}-{}-{suffix}", std::process::id(), self.name)
    }

    fn launch(&self, suffix: &str, def: ContainerDefinition) -> ContainerLaunch {
        ContainerLaunch {
            id: self.id(suffix),
            layers: vec![self.layer.clone()],
            image: ImageConfig {
                cmd: sh("echo image-cmd"),
                env: vec!["FROM_IMAGE=yes".into(), "OVER=image".into()],
                ..ImageConfig::default()
            },
            definition: def,
            network: Network::None,
            cgroup_parent: self.parent.clone(),
            hostname: None,
            log_dir: self.tmp.path().join("logs").join(suffix),
            extra_env: vec![],
            gpu_ids: vec![],
            mounts: vec![],
        }
    }

    fn wait_exit(&self, id: &str) -> ContainerStatus {
        wait_exit(self.rt.as_ref(), id)
    }

    /// Starts, waits for the exit, returns (status, stdout, stderr).
    fn run(&self, l: &ContainerLaunch) -> (ContainerStatus, String, String) {
        self.rt.start(l).unwrap();
        let st = self.wait_exit(&l.id);
        (
            st,
            read(&l.log_dir.join("stdout.log")),
            read(&l.log_dir.join("stderr.log")),
        )
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for id in self.rt.list().unwrap_or_default() {
            if let Err(e) = self.rt.remove(&id) {
                eprintln!("cleanup of {id}: {e}");
            }
        }
        if self.runc {
            let _ = cgroup::remove(&self.parent);
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_exit(rt: &dyn Runtime, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = rt.status(id).unwrap();
        if matches!(st, ContainerStatus::Exited { .. }) {
            return st;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn code(st: &ContainerStatus) -> i32 {
    match st {
        ContainerStatus::Exited { code, .. } => *code,
        other => panic!("not exited: {other:?}"),
    }
}

fn oom(st: &ContainerStatus) -> bool {
    match st {
        ContainerStatus::Exited { oom_killed, .. } => *oom_killed,
        other => panic!("not exited: {other:?}"),
    }
}

fn caps(add: &[&str]) -> Option<LinuxParameters> {
    Some(LinuxParameters {
        capabilities: Some(KernelCapabilities {
            add: Some(add.iter().map(|s| s.to_string()).collect()),
            drop: None,
        }),
        ..Default::default()
    })
}

// ------------------------------------------------------------------ runc

#[test]
fn runc_exit_code_and_command_override() {
    if !runc_ok("runc_exit_code_and_command_override") {
        return;
    }
    let w = World::runc("exit");
    // command replaces the image's Cmd
    let l = w.launch(
        "cmd",
        ContainerDefinition {
            command: sh("echo override; exit 3"),
            ..Default::default()
        },
    );
    let (st, out, _) = w.run(&l);
    assert_eq!(code(&st), 3, "{st:?}");
    assert!(!oom(&st));
    assert_eq!(out, "override\n");
    if let ContainerStatus::Exited {
        started_at,
        finished_at,
        ..
    } = st
    {
        assert!(started_at > 1.6e9 && finished_at >= started_at);
    }
    // the image's Cmd when nothing overrides it
    let (st, out, _) = w.run(&w.launch("image", ContainerDefinition::default()));
    assert_eq!((code(&st), out.as_str()), (0, "image-cmd\n"));
    // entryPoint alone clears the image's Cmd
    let (st, out, _) = w.run(&w.launch(
        "ep",
        ContainerDefinition {
            entry_point: cmd(&["echo", "from-entrypoint"]),
            ..Default::default()
        },
    ));
    assert_eq!((code(&st), out.as_str()), (0, "from-entrypoint\n"));
}

#[test]
fn runc_env_workdir_hostname() {
    if !runc_ok("runc_env_workdir_hostname") {
        return;
    }
    let w = World::runc("env");
    let mut l = w.launch(
        "c",
        ContainerDefinition {
            command: sh("echo $FROM_IMAGE $OVER $EXTRA; pwd; echo $HOSTNAME; hostname; cat /etc/hostname; echo $PATH; echo err >&2"),
            environment: Some(vec![KeyValuePair {
                name: Some("OVER".into()),
                value: Some("definition".into()),
            }]),
            working_directory: Some("/home/app".into()),
            ..Default::default()
        },
    );
    l.extra_env = vec![("EXTRA".into(), "extra".into())];
    l.hostname = Some("myhost".into());
    let (st, out, err) = w.run(&l);
    assert_eq!(code(&st), 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "yes definition extra",
            "/home/app",
            "myhost",
            "myhost",
            "myhost",
            berth_agent::runtime::config::DEFAULT_PATH
        ]
    );
    assert_eq!(err, "err\n");
}

#[test]
fn runc_memory_limit_oom_kill() {
    if !runc_ok("runc_memory_limit_oom_kill") {
        return;
    }
    let w = World::runc("oom");
    let l = w.launch(
        "c",
        ContainerDefinition {
            memory: Some(16),
            command: cmd(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]),
            ..Default::default()
        },
    );
    let (st, _, err) = w.run(&l);
    assert_eq!(code(&st), 137, "{st:?} {err}");
    assert!(oom(&st), "{st:?}");
    // the limit was really set on the container's cgroup (v1 or v2)
    let dir = cgroup::memory_dir(&format!("{}/{}", w.parent, l.id)).unwrap();
    let limit = match read(&dir.join("memory.limit_in_bytes")) {
        v1 if !v1.is_empty() => v1,
        _ => read(&dir.join("memory.max")),
    };
    assert_eq!(limit.trim(), (16u64 << 20).to_string());
    // under the limit: no OOM
    let (st, _, err) = w.run(&w.launch(
        "small",
        ContainerDefinition {
            memory: Some(16),
            command: cmd(&["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4"]),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
    assert!(!oom(&st));
}

#[test]
fn runc_parent_cgroup_limit_holds() {
    if !runc_ok("runc_parent_cgroup_limit_holds") {
        return;
    }
    let w = World::runc("parent");
    cgroup::set_memory_limit(&w.parent, 32 << 20).unwrap();
    let l = w.launch(
        "c",
        ContainerDefinition {
            command: cmd(&["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]),
            ..Default::default()
        },
    );
    let (st, _, err) = w.run(&l);
    assert_eq!(code(&st), 137, "{st:?} {err}");
    assert!(oom(&st), "{st:?}");
}

#[test]
fn runc_capabilities_net_admin() {
    if !runc_ok("runc_capabilities_net_admin") {
        return;
    }
    let w = World::runc("caps");
    let script = sh("ip addr add 10.99.0.1/24 dev lo && ip addr show lo");
    let (st, out, err) = w.run(&w.launch(
        "with",
        ContainerDefinition {
            command: script.clone(),
            linux_parameters: caps(&["NET_ADMIN"]),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
    assert!(out.contains("10.99.0.1/24"), "{out}");
    let (st, _, err) = w.run(&w.launch(
        "without",
        ContainerDefinition {
            command: script.clone(),
            ..Default::default()
        },
    ));
    assert_ne!(code(&st), 0, "NET_ADMIN should be missing");
    assert!(err.to_lowercase().contains("not permitted"), "{err}");
    let (st, _, err) = w.run(&w.launch(
        "privileged",
        ContainerDefinition {
            command: script,
            privileged: Some(true),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
    // dropping a default capability: CHOWN
    let (st, _, _) = w.run(&w.launch(
        "dropped",
        ContainerDefinition {
            command: sh("touch /f && chown 1000 /f"),
            linux_parameters: Some(LinuxParameters {
                capabilities: Some(KernelCapabilities {
                    add: None,
                    drop: Some(vec!["CAP_CHOWN".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    assert_ne!(code(&st), 0);
}

#[test]
fn runc_readonly_root_and_tmpfs() {
    if !runc_ok("runc_readonly_root_and_tmpfs") {
        return;
    }
    let w = World::runc("ro");
    let (st, out, err) = w.run(&w.launch(
        "c",
        ContainerDefinition {
            command: sh("touch /scratch/ok || exit 10; if touch /x; then exit 11; fi; grep ' /scratch ' /proc/mounts"),
            readonly_root_filesystem: Some(true),
            linux_parameters: Some(LinuxParameters {
                tmpfs: Some(vec![Tmpfs {
                    container_path: Some("/scratch".into()),
                    size: 8,
                    mount_options: None,
                }]),
                shared_memory_size: Some(32),
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{out} {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(out.contains("size=8192k"), "{out}");
    // a writable root for comparison
    let (st, _, err) = w.run(&w.launch(
        "rw",
        ContainerDefinition {
            command: sh("touch /x"),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
}

#[test]
fn runc_user() {
    if !runc_ok("runc_user") {
        return;
    }
    let w = World::runc("user");
    let (st, out, err) = w.run(&w.launch(
        "numeric",
        ContainerDefinition {
            command: sh("id -u; id -g"),
            user: Some("1000:1000".into()),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
    assert_eq!(out, "1000\n1000\n");
    let (st, out, _) = w.run(&w.launch(
        "named",
        ContainerDefinition {
            command: sh("id -un; id -u"),
            user: Some("app".into()),
            ..Default::default()
        },
    ));
    assert_eq!((code(&st), out.as_str()), (0, "app\n1000\n"));
    let e =
        w.rt.start(&w.launch(
            "ghost",
            ContainerDefinition {
                command: sh("true"),
                user: Some("ghost".into()),
                ..Default::default()
            },
        ))
        .unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidConfig(_)), "{e}");
    assert!(!w.state_dir().join(w.id("ghost")).exists());
}

#[test]
fn runc_signals() {
    if !runc_ok("runc_signals") {
        return;
    }
    let w = World::runc("sig");
    // a shell that handles TERM
    let l = w.launch(
        "trap",
        ContainerDefinition {
            command: sh("trap 'echo got-term; exit 143' TERM; echo ready; sleep 1000 & wait"),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();
    wait_for("ready", || {
        read(&l.log_dir.join("stdout.log")).contains("ready")
    });
    assert!(matches!(
        w.rt.status(&l.id).unwrap(),
        ContainerStatus::Running { .. }
    ));
    w.rt.signal(&l.id, 15).unwrap();
    let st = w.wait_exit(&l.id);
    assert_eq!(code(&st), 143);
    assert!(read(&l.log_dir.join("stdout.log")).contains("got-term"));
    assert!(matches!(
        w.rt.signal(&l.id, 15),
        Err(RuntimeError::NotRunning(_))
    ));
    assert!(matches!(
        w.rt.signal(&w.id("nope"), 15),
        Err(RuntimeError::NotFound(_))
    ));

    // sleep as pid 1 ignores TERM, but the init forwards it and exits 128+15
    let l = w.launch(
        "init",
        ContainerDefinition {
            command: cmd(&["sleep", "1000"]),
            linux_parameters: Some(LinuxParameters {
                init_process_enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    w.rt.signal(&l.id, 15).unwrap();
    assert_eq!(code(&w.wait_exit(&l.id)), 143);

    // SIGKILL
    let l = w.launch(
        "kill",
        ContainerDefinition {
            command: cmd(&["sleep", "1000"]),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();
    w.rt.signal(&l.id, 9).unwrap();
    let st = w.wait_exit(&l.id);
    assert_eq!(code(&st), 137);
    assert!(!oom(&st));
}

#[test]
fn runc_init_reaps_zombies() {
    if !runc_ok("runc_init_reaps_zombies") {
        return;
    }
    let w = World::runc("init");
    let (st, out, err) = w.run(&w.launch(
        "c",
        ContainerDefinition {
            // an orphan (the subshell's sleep) is re-parented to pid 1, the init
            command: sh("(sleep 0.2 &); sleep 1; grep -l '^State:.Z' /proc/[0-9]*/status | wc -l; tr '\\0' ' ' < /proc/1/cmdline"),
            linux_parameters: Some(LinuxParameters {
                init_process_enabled: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next().map(str::trim), Some("0"), "zombies: {out}");
    assert!(
        lines.next().unwrap_or("").starts_with("/dev/berth-init/"),
        "{out}"
    );
}

#[test]
fn runc_readoption_after_restart() {
    if !runc_ok("runc_readoption_after_restart") {
        return;
    }
    let mut w = World::runc("adopt");
    let long = w.launch(
        "long",
        ContainerDefinition {
            command: cmd(&["sleep", "1000"]),
            ..Default::default()
        },
    );
    let short = w.launch(
        "short",
        ContainerDefinition {
            command: sh("sleep 1; exit 7"),
            ..Default::default()
        },
    );
    w.rt.start(&long).unwrap();
    w.rt.start(&short).unwrap();
    let ContainerStatus::Running { pid, started_at } = w.rt.status(&long.id).unwrap() else {
        panic!("not running")
    };
    // "restart the agent": a new runtime object on the same state dir
    w.rt = Box::new(RuncRuntime::new(&w.state_dir(), shim()));
    assert_eq!(
        w.rt.list().unwrap(),
        vec![long.id.clone(), short.id.clone()]
    );
    assert_eq!(
        w.rt.status(&long.id).unwrap(),
        ContainerStatus::Running { pid, started_at }
    );
    assert!(state_alive(pid));
    std::thread::sleep(Duration::from_millis(1500));
    w.rt = Box::new(RuncRuntime::new(&w.state_dir(), shim()));
    assert_eq!(code(&w.wait_exit(&short.id)), 7);
    assert_eq!(
        w.rt.status(&long.id).unwrap(),
        ContainerStatus::Running { pid, started_at }
    );
    w.rt.signal(&long.id, 9).unwrap();
    assert_eq!(code(&w.wait_exit(&long.id)), 137);
}

fn state_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn runc_remove_leaves_nothing() {
    if !runc_ok("runc_remove_leaves_nothing") {
        return;
    }
    let w = World::runc("rm");
    let l = w.launch(
        "c",
        ContainerDefinition {
            command: cmd(&["sleep", "1000"]),
            memory: Some(64),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();
    let dir = w.state_dir().join(&l.id);
    let cg = cgroup::memory_dir(&w.parent).unwrap().join(&l.id);
    let mounted = || read(Path::new("/proc/mounts")).contains(dir.to_str().unwrap());
    assert!(mounted(), "rootfs should be an overlay mount");
    assert!(cg.is_dir());
    assert!(matches!(
        w.rt.status(&l.id).unwrap(),
        ContainerStatus::Running { .. }
    ));
    // remove while running: kills first
    w.rt.remove(&l.id).unwrap();
    assert!(!mounted());
    assert!(!dir.exists());
    assert!(!cg.exists(), "{} still exists", cg.display());
    assert_eq!(w.rt.status(&l.id).unwrap(), ContainerStatus::Missing);
    assert!(w.rt.list().unwrap().is_empty());
    let state = std::process::Command::new(berth_agent::runtime::find_runc().unwrap())
        .args(["state", &l.id])
        .output()
        .unwrap();
    assert!(!state.status.success(), "runc still knows {}", l.id);
    // idempotent
    w.rt.remove(&l.id).unwrap();
    // an exited container too; the task's cgroup can then go
    let (st, _, _) = w.run(&w.launch(
        "exited",
        ContainerDefinition {
            command: sh("exit 0"),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0);
    w.rt.remove(&w.id("exited")).unwrap();
    assert!(!read(Path::new("/proc/mounts")).contains(w.state_dir().to_str().unwrap()));
    cgroup::remove(&w.parent).unwrap();
    assert!(!cgroup::exists(&w.parent));
}

#[test]
fn runc_start_failure_is_clear() {
    if !runc_ok("runc_start_failure_is_clear") {
        return;
    }
    let w = World::runc("fail");
    let l = w.launch(
        "c",
        ContainerDefinition {
            command: cmd(&["/nonexistent-binary", "x"]),
            ..Default::default()
        },
    );
    let e = w.rt.start(&l).unwrap_err();
    match &e {
        RuntimeError::StartFailed { reason, .. } => {
            assert!(reason.contains("nonexistent-binary"), "{reason}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(!w.state_dir().join(&l.id).exists());
    assert!(!read(Path::new("/proc/mounts")).contains(w.state_dir().to_str().unwrap()));
    assert!(w.rt.list().unwrap().is_empty());
    // the id is free again
    let mut ok = l.clone();
    ok.definition.command = sh("exit 0");
    let (st, _, _) = w.run(&ok);
    assert_eq!(code(&st), 0);
    assert!(matches!(
        w.rt.start(&ok),
        Err(RuntimeError::AlreadyExists(_))
    ));
    let mut bad = ok.clone();
    bad.id = "bad/id".into();
    assert!(matches!(w.rt.start(&bad), Err(RuntimeError::InvalidId(_))));
}

#[test]
fn runc_join_network_and_etc_files() {
    if !runc_ok("runc_join_network_and_etc_files") {
        return;
    }
    let w = World::runc("net");
    let a = w.launch(
        "a",
        ContainerDefinition {
            command: sh("ip addr add 10.99.0.1/24 dev lo && echo ready && sleep 1000"),
            linux_parameters: caps(&["NET_ADMIN"]),
            ..Default::default()
        },
    );
    w.rt.start(&a).unwrap();
    wait_for("a ready", || {
        read(&a.log_dir.join("stdout.log")).contains("ready")
    });
    let ContainerStatus::Running { pid, .. } = w.rt.status(&a.id).unwrap() else {
        panic!("a not running")
    };
    let mut b = w.launch(
        "b",
        ContainerDefinition {
            command: sh("ip addr show lo; cat /etc/resolv.conf /etc/hosts"),
            dns_servers: Some(vec!["10.0.0.2".into()]),
            dns_search_domains: Some(vec!["corp.example".into()]),
            extra_hosts: Some(vec![HostEntry {
                hostname: Some("db".into()),
                ip_address: Some("10.1.2.3".into()),
            }]),
            ..Default::default()
        },
    );
    b.network = Network::Join(PathBuf::from(format!("/proc/{pid}/ns/net")));
    let (st, out, err) = w.run(&b);
    assert_eq!(code(&st), 0, "{err}");
    assert!(out.contains("10.99.0.1/24"), "b is not in a's netns: {out}");
    assert!(out.contains("nameserver 10.0.0.2"), "{out}");
    assert!(out.contains("search corp.example"), "{out}");
    assert!(out.contains("10.1.2.3\tdb"), "{out}");
    // a fresh netns has only loopback, and not a's address
    let (st, out, _) = w.run(&w.launch(
        "c",
        ContainerDefinition {
            command: sh("ip -o link | wc -l; ip addr show lo"),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0);
    assert_eq!(out.lines().next().map(str::trim), Some("1"), "{out}");
    assert!(!out.contains("10.99.0.1"));
    assert!(out.contains("127.0.0.1"), "loopback should be up: {out}");
    // the host's network: the host's interfaces and hostname
    let mut h = w.launch(
        "host",
        ContainerDefinition {
            command: sh("hostname; ip -o link | wc -l"),
            ..Default::default()
        },
    );
    h.network = Network::Host(PathBuf::from(format!(
        "/proc/{}/ns/net",
        std::process::id()
    )));
    let (st, out, err) = w.run(&h);
    assert_eq!(code(&st), 0, "{err}");
    let host_links = std::fs::read_dir("/sys/class/net").unwrap().count();
    let host_name = nix::unistd::gethostname().unwrap();
    assert_eq!(
        out,
        format!("{}\n{host_links}\n", host_name.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn runc_ulimits_cpu_and_copy_rootfs() {
    if !runc_ok("runc_ulimits_cpu_and_copy_rootfs") {
        return;
    }
    let mut w = World::runc("misc");
    w.rt = Box::new(RuncRuntime::new(&w.state_dir(), shim()).with_rootfs_mode(RootfsMode::Copy));
    let l = w.launch(
        "c",
        ContainerDefinition {
            command: sh("ulimit -n; ulimit -Hn; echo hi > /written; cat /written"),
            cpu: 256,
            ulimits: Some(vec![Ulimit {
                name: Some(UlimitName::Nofile),
                soft_limit: 1234,
                hard_limit: 2345,
            }]),
            ..Default::default()
        },
    );
    let (st, out, err) = w.run(&l);
    assert_eq!(code(&st), 0, "{err}");
    assert_eq!(out, "1234\n2345\nhi\n");
    // a copy, not a mount; the layer is untouched
    assert!(!read(Path::new("/proc/mounts")).contains(w.state_dir().to_str().unwrap()));
    assert!(!w.layer.join("written").exists());
    let shares = read(
        &PathBuf::from("/sys/fs/cgroup/cpu")
            .join(w.parent.trim_start_matches('/'))
            .join(&l.id)
            .join("cpu.shares"),
    );
    if !shares.is_empty() {
        assert_eq!(shares.trim(), "256");
    }
}

#[test]
fn runc_gpu_devices() {
    if !runc_ok("runc_gpu_devices") {
        return;
    }
    if !Path::new("/dev/nvidiactl").exists() || !Path::new("/dev/nvidia0").exists() {
        eprintln!("\n!!!!!!!! SKIPPED runc test runc_gpu_devices: no NVIDIA GPU (/dev/nvidia0, /dev/nvidiactl) on this host !!!!!!!!\n");
        return;
    }
    let w = World::runc("gpu");
    let mut l = w.launch(
        "c",
        ContainerDefinition {
            command: sh("echo $NVIDIA_VISIBLE_DEVICES; ls /dev/nvidia0 /dev/nvidiactl; head -c 0 /dev/nvidiactl && echo ctl-opened; head -c 0 /dev/nvidia0 && echo gpu-opened"),
            ..Default::default()
        },
    );
    l.gpu_ids = vec!["0".into()];
    let (st, out, err) = w.run(&l);
    assert_eq!(code(&st), 0, "{out} {err}");
    assert_eq!(
        out, "0\n/dev/nvidia0\n/dev/nvidiactl\nctl-opened\ngpu-opened\n",
        "{err}"
    );
    // without GPUs: no device node, no variable
    let (st, out, _) = w.run(&w.launch(
        "none",
        ContainerDefinition {
            command: sh("ls /dev/nvidia0 /dev/nvidiactl 2>&1; echo \"[$NVIDIA_VISIBLE_DEVICES]\""),
            ..Default::default()
        },
    ));
    assert_eq!(code(&st), 0, "{out}");
    assert!(out.contains("No such file"), "{out}");
    assert!(out.contains("[]"), "{out}");
}

// ------------------------------------------------------------------ process

#[test]
fn process_runtime_basics() {
    if !busybox_ok("process_runtime_basics") {
        return;
    }
    let w = World::process("proc");
    assert_eq!(w.rt.name(), "process");
    let workdir = w.tmp.path().join("wd");
    std::fs::create_dir_all(&workdir).unwrap();
    let mut l = w.launch(
        "c",
        ContainerDefinition {
            command: sh("echo $FROM_IMAGE $OVER $EXTRA; pwd; echo err >&2; exit 3"),
            environment: Some(vec![KeyValuePair {
                name: Some("OVER".into()),
                value: Some("definition".into()),
            }]),
            working_directory: Some(workdir.to_string_lossy().into_owned()),
            ..Default::default()
        },
    );
    l.extra_env = vec![("EXTRA".into(), "extra".into())];
    let (st, out, err) = w.run(&l);
    assert_eq!(code(&st), 3, "{err}");
    assert!(!oom(&st));
    assert_eq!(
        out,
        format!("yes definition extra\n{}\n", workdir.display())
    );
    assert_eq!(err, "err\n");
    // the program comes from the layer
    let cfg = read(&w.state_dir().join(&l.id).join("shim.json"));
    assert!(
        cfg.contains(w.layer.join("bin/busybox").to_str().unwrap()),
        "{cfg}"
    );

    let e =
        w.rt.start(&w.launch(
            "missing",
            ContainerDefinition {
                command: cmd(&["/no/such/program"]),
                ..Default::default()
            },
        ))
        .unwrap_err();
    assert!(matches!(e, RuntimeError::StartFailed { .. }), "{e}");
    assert!(e.to_string().contains("/no/such/program"), "{e}");
    assert!(!w.state_dir().join(w.id("missing")).exists());
}

#[test]
fn process_runtime_signal_and_readoption() {
    if !busybox_ok("process_runtime_signal_and_readoption") {
        return;
    }
    let mut w = World::process("procsig");
    let l = w.launch(
        "c",
        ContainerDefinition {
            command: cmd(&["sleep", "1000"]),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();
    let ContainerStatus::Running { pid, started_at } = w.rt.status(&l.id).unwrap() else {
        panic!("not running")
    };
    w.rt = Box::new(ProcessRuntime::new(&w.state_dir(), shim()));
    assert_eq!(w.rt.list().unwrap(), vec![l.id.clone()]);
    assert_eq!(
        w.rt.status(&l.id).unwrap(),
        ContainerStatus::Running { pid, started_at }
    );
    w.rt.signal(&l.id, 15).unwrap();
    assert_eq!(code(&w.wait_exit(&l.id)), 143);
    w.rt.remove(&l.id).unwrap();
    assert_eq!(w.rt.status(&l.id).unwrap(), ContainerStatus::Missing);
    assert!(w.rt.list().unwrap().is_empty());
}

#[test]
fn detect_picks_a_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = berth_agent::runtime::detect(tmp.path(), shim());
    let expected =
        if nix::unistd::geteuid().is_root() && berth_agent::runtime::find_runc().is_some() {
            "runc"
        } else {
            "process"
        };
    assert_eq!(rt.name(), expected);
    assert!(rt.list().unwrap().is_empty());
}

// ------------------------------------------------------------------ exec sessions

/// An exec helper driven through its frames, as the agent drives it.
struct Helper {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    frames: std::sync::mpsc::Receiver<(u8, Vec<u8>)>,
}

impl Helper {
    fn start(rt: &dyn Runtime, id: &str, request: &berth_agent::runtime::ExecRequest) -> Helper {
        use std::process::Stdio;
        let mut child = rt
            .exec_helper(id, request)
            .unwrap()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(Some(f)) = berth_agent::runtime::exec::frame::read(&mut stdout) {
                if tx.send(f).is_err() {
                    return;
                }
            }
        });
        Helper {
            child,
            stdin,
            frames,
        }
    }

    fn send(&mut self, tag: u8, payload: &[u8]) {
        use std::io::Write as _;
        let s = self.stdin.as_mut().unwrap();
        s.write_all(&berth_agent::runtime::exec::frame::encode(tag, payload))
            .unwrap();
        s.flush().unwrap();
    }

    /// Collects frames until `until` holds of (stdout, stderr) or the exit comes; returns
    /// (stdout, stderr, exit code, bytes of input taken).
    fn collect(&self, until: impl Fn(&str, &str) -> bool) -> (String, String, Option<i32>, u64) {
        use berth_agent::runtime::exec::frame;
        let (mut out, mut err, mut taken) = (Vec::new(), Vec::new(), 0u64);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Ok((tag, data)) = self.frames.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            match tag {
                frame::STDOUT => out.extend(data),
                frame::STDERR => err.extend(data),
                frame::INPUT_TAKEN => {
                    taken += u64::from(u32::from_be_bytes(data[..4].try_into().unwrap()))
                }
                frame::EXIT => {
                    let code = i32::from_be_bytes(data[..4].try_into().unwrap());
                    return (
                        String::from_utf8_lossy(&out).into(),
                        String::from_utf8_lossy(&err).into(),
                        Some(code),
                        taken,
                    );
                }
                frame::FAILED => panic!("exec failed: {}", String::from_utf8_lossy(&data)),
                _ => {}
            }
            let (o, e) = (String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
            if until(&o, &e) {
                return (o.into(), e.into(), None, taken);
            }
        }
        panic!(
            "timed out; stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
    }
}

#[test]
fn runc_exec_sessions() {
    use berth_agent::runtime::exec::frame;
    use berth_agent::runtime::ExecRequest;
    if !runc_ok("runc_exec_sessions") {
        return;
    }
    let w = World::runc("exec");
    let l = w.launch(
        "main",
        ContainerDefinition {
            command: sh("trap 'exit 0' TERM; sleep 1000 & wait"),
            environment: Some(vec![KeyValuePair {
                name: Some("FROM_DEF".into()),
                value: Some("yes".into()),
            }]),
            working_directory: Some("/tmp".into()),
            ..Default::default()
        },
    );
    w.rt.start(&l).unwrap();

    // Pipes: stdout and stderr apart, input taken and acknowledged, the exit code; the
    // container's environment and working directory.
    let mut h = Helper::start(
        w.rt.as_ref(),
        &l.id,
        &ExecRequest {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat; echo \"$FROM_DEF $(pwd)\"; echo err >&2; exit 4".into(),
            ],
            tty: false,
            cols: 80,
            rows: 24,
        },
    );
    assert_eq!(
        h.frames.recv_timeout(Duration::from_secs(20)).unwrap().0,
        frame::STARTED
    );
    h.send(frame::INPUT, b"abc\n");
    h.send(frame::EOF, b"");
    let (out, err, code, taken) = h.collect(|_, _| false);
    assert_eq!(out, "abc\nyes /tmp\n");
    assert_eq!(err, "err\n");
    assert_eq!(code, Some(4));
    assert_eq!(taken, 4);
    assert!(h.child.wait().unwrap().success());

    // A terminal: the size given, a resize, echo, the exit code.
    let mut h = Helper::start(
        w.rt.as_ref(),
        &l.id,
        &ExecRequest {
            argv: vec!["sh".into()],
            tty: true,
            cols: 100,
            rows: 30,
        },
    );
    assert_eq!(
        h.frames.recv_timeout(Duration::from_secs(20)).unwrap().0,
        frame::STARTED
    );
    h.send(frame::INPUT, b"busybox stty size; echo $((6*7)) $TERM\r");
    h.collect(|o, _| o.contains("30 100") && o.contains("42 xterm"));
    let mut size = 120u16.to_be_bytes().to_vec();
    size.extend(40u16.to_be_bytes());
    h.send(frame::RESIZE, &size);
    h.send(frame::INPUT, b"busybox stty size\r");
    h.collect(|o, _| o.contains("40 120"));
    h.send(frame::INPUT, b"exit 7\r");
    let (_, _, code, _) = h.collect(|_, _| false);
    assert_eq!(code, Some(7));

    // The session ends (the helper's input closes): the process is killed.
    let mut h = Helper::start(
        w.rt.as_ref(),
        &l.id,
        &ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo up; exec sleep 1000".into()],
            tty: false,
            cols: 80,
            rows: 24,
        },
    );
    h.collect(|o, _| o.contains("up"));
    drop(h.stdin.take());
    let (_, _, code, _) = h.collect(|_, _| false);
    assert_eq!(code, Some(137));
    assert!(h.child.wait().unwrap().success());

    // A command that does not exist, and a container that does not run.
    let h = Helper::start(
        w.rt.as_ref(),
        &l.id,
        &ExecRequest {
            argv: vec!["no-such-command".into()],
            tty: false,
            cols: 80,
            rows: 24,
        },
    );
    let (tag, why) = h.frames.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(tag, frame::FAILED);
    assert!(String::from_utf8_lossy(&why).contains("no-such-command"));
    w.rt.signal(&l.id, 9).unwrap();
    w.wait_exit(&l.id);
    assert!(matches!(
        w.rt.exec_helper(
            &l.id,
            &ExecRequest {
                argv: vec!["sh".into()],
                tty: false,
                cols: 1,
                rows: 1
            }
        ),
        Err(RuntimeError::NotRunning(_))
    ));
}
