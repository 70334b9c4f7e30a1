//! Task network namespaces (`awsvpc`) against the real host. Needs root;
//! skipped (loudly) otherwise.
//!
//! Every test builds its own world: a bridge `btn<random>` with
//! `10.216.<n>.1/24` (a free `<n>`) in the root namespace standing for the
//! host bridge, and "instance" namespaces `btn-<random>-i<k>` cabled to it by
//! veths, like the local provider makes them. The functions under test run
//! inside an instance namespace, as the agent does, on a dedicated thread
//! that `setns`es into it (which moves only that thread, and the `ip`
//! processes it starts). Traffic goes only to addresses of these namespaces
//! and the test bridge. Everything is removed on drop, failed test or not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../src/network.rs"]
#[allow(dead_code)]
mod network;

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use network::{
    create_task_netns, delete_task_netns, task_netns_name, task_netns_path, NetworkError,
    TaskAddress,
};
use rand::Rng;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `ip <args>` (in the calling thread's namespace), panicking on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a fresh thread inside the named network namespace; the
/// caller's thread stays where it is.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Pings `to` once, from the namespace `netns` or (None) the root namespace.
/// Whether `to` answers a ping within a few tries: on a loaded machine the
/// first echo over a new bridge port can be lost. For the checks that an
/// address does answer; those that it does not use one [`ping`].
fn answers(netns: Option<&str>, to: Ipv4Addr) -> bool {
    (0..3).any(|_| ping(netns, to))
}

fn ping(netns: Option<&str>, to: Ipv4Addr) -> bool {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "busybox"]);
            c
        }
        None => Command::new("busybox"),
    };
    cmd.args(["ping", "-c", "1", "-W", "2"])
        .arg(to.to_string())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn link_names(netns: &str) -> Vec<String> {
    ip(&["-n", netns, "-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().nth(1)?.trim_end_matches(':');
            Some(name.split('@').next().unwrap_or(name).to_string())
        })
        .collect()
}

/// A test bridge with instance namespaces on it, removed on drop.
struct World {
    tag: String,
    bridge: String,
    /// The `<n>` of `10.216.<n>.0/24`.
    net: u8,
    instances: Vec<String>,
    veths: Vec<String>,
    tasks: RefCell<Vec<String>>,
}

/// Spreads the tests of one run over different subnets.
static NEXT_NET: AtomicU8 = AtomicU8::new(0);

impl World {
    fn new(test: &str, instances: usize) -> Option<Self> {
        if !is_root() {
            eprintln!(
                "SKIPPED {test}: the task network tests need root (network namespaces, macvlan)"
            );
            return None;
        }
        let tag = format!("{:08x}", rand::rng().random::<u32>());
        let mut world = Self {
            bridge: format!("btn{tag}"),
            net: free_net(),
            tag,
            instances: vec![],
            veths: vec![],
            tasks: RefCell::new(vec![]),
        };
        // registered before creating, so drop removes half-made pieces too
        world.veths.push(world.bridge.clone());
        ip(&["link", "add", "name", &world.bridge, "type", "bridge"]);
        let gw = format!("{}/24", world.gateway());
        ip(&["addr", "add", &gw, "dev", &world.bridge]);
        ip(&["link", "set", &world.bridge, "up"]);
        for k in 0..instances {
            let ns = format!("btn-{}-i{k}", world.tag);
            let veth = format!("vtn{}{k}", world.tag);
            world.instances.push(ns.clone());
            world.veths.push(veth.clone());
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &world.bridge, "up"]);
            let cidr = format!("{}/24", world.instance_ip(k));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            let gw = world.gateway().to_string();
            ip(&["-n", &ns, "route", "add", "default", "via", &gw]);
        }
        Some(world)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 216, self.net, host)
    }

    fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    fn instance_ip(&self, k: usize) -> Ipv4Addr {
        self.addr(10 + k as u8)
    }

    fn task_address(&self, host: u8) -> TaskAddress {
        TaskAddress {
            address: self.addr(host),
            prefix: 24,
            gateway: self.gateway(),
        }
    }

    /// A fresh task id (32 hex digits, like ECS's), removed on drop.
    fn task_id(&self) -> String {
        let id = format!("{:032x}", rand::rng().random::<u128>());
        self.tasks.borrow_mut().push(id.clone());
        id
    }

    /// `create_task_netns` run inside instance `k`, as its agent would.
    fn create(&self, k: usize, task_id: &str, addr: TaskAddress) -> Result<PathBuf, NetworkError> {
        let task_id = task_id.to_string();
        in_netns(&self.instances[k], move || {
            create_task_netns(&task_id, "eth0", &addr)
        })
    }

    /// `delete_task_netns` run inside instance `k`.
    fn delete(&self, k: usize, task_id: &str) -> Result<(), NetworkError> {
        let task_id = task_id.to_string();
        in_netns(&self.instances[k], move || delete_task_netns(&task_id))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let del = |args: &[&str]| {
            let _ = Command::new("ip").args(args).output();
        };
        for task in self.tasks.borrow().iter() {
            if task_netns_path(task).exists() {
                del(&["netns", "del", &task_netns_name(task)]);
            }
        }
        for ns in &self.instances {
            del(&["netns", "del", ns]);
        }
        for link in self.veths.iter().rev() {
            if Path::new("/sys/class/net").join(link).exists() {
                del(&["link", "del", link]);
            }
        }
    }
}

/// A `10.216.<n>` no address on the host is in.
fn free_net() -> u8 {
    let used = ip(&["-4", "-o", "addr", "show"]);
    let start: u8 = rand::rng().random_range(0..254);
    for _ in 0..254 {
        let offset = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let n = (start.wrapping_add(offset) % 254) + 1;
        if !used.contains(&format!(" 10.216.{n}.")) {
            return n;
        }
    }
    panic!("no free 10.216.<n>.0/24 on this host");
}

#[test]
fn task_namespaces_answer_on_the_instance_network() {
    let Some(w) = World::new("task_namespaces_answer_on_the_instance_network", 2) else {
        return;
    };
    let (a, b) = (w.task_id(), w.task_id());
    let (addr_a, addr_b) = (w.task_address(100), w.task_address(101));
    let path_a = w.create(0, &a, addr_a).unwrap();
    let path_b = w.create(1, &b, addr_b).unwrap();
    assert_eq!(
        path_a,
        PathBuf::from(format!("/run/netns/berth-t-{}", &a[..20]))
    );
    assert_eq!(path_a, task_netns_path(&a));
    assert!(path_a.exists() && path_b.exists());
    let (ns_a, ns_b) = (task_netns_name(&a), task_netns_name(&b));

    // lo and eth0 only, eth0 a macvlan on the instance's eth0, address and route set
    assert_eq!(link_names(&ns_a), ["lo", "eth0"]);
    let detail = ip(&["-n", &ns_a, "-d", "-o", "link", "show", "dev", "eth0"]);
    assert!(detail.contains("macvlan mode bridge"), "{detail}");
    assert!(
        detail.contains(&format!("link-netns {}", w.instances[0])),
        "eth0 must hang off the instance's eth0: {detail}"
    );
    assert!(detail.contains("state UP"), "{detail}");
    let mac = format!("0a:58:0a:d8:{:02x}:64", w.net);
    assert!(detail.contains(&format!("link/ether {mac} ")), "{detail}");
    let addrs = ip(&["-n", &ns_a, "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains(&format!("inet {}/24 ", addr_a.address)),
        "{addrs}"
    );
    let routes = ip(&["-n", &ns_a, "-4", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via {} dev eth0", w.gateway())),
        "{routes}"
    );
    let lo = ip(&["-n", &ns_a, "-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains("LOWER_UP"), "{lo}");
    // nothing left behind in the instances' namespaces
    for ns in &w.instances {
        assert_eq!(link_names(ns), ["lo", "eth0"], "{ns}");
    }

    // the bridge (the host) reaches both tasks
    assert!(answers(None, addr_a.address), "bridge -> task a");
    assert!(answers(None, addr_b.address), "bridge -> task b");
    // tasks on two instances reach each other, the gateway and the other instance
    assert!(answers(Some(&ns_a), addr_b.address), "task a -> task b");
    assert!(answers(Some(&ns_b), addr_a.address), "task b -> task a");
    assert!(answers(Some(&ns_a), w.gateway()), "task a -> bridge");
    assert!(
        answers(Some(&ns_a), w.instance_ip(1)),
        "task a -> instance 1"
    );
    assert!(
        answers(Some(&w.instances[1]), addr_a.address),
        "instance 1 -> task a"
    );

    // creating again (an agent restart) reuses the namespace as it is
    let before = ns_id(&path_a);
    assert_eq!(w.create(0, &a, addr_a).unwrap(), path_a);
    assert_eq!(ns_id(&path_a), before);
    assert_eq!(link_names(&ns_a), ["lo", "eth0"]);
    assert!(
        answers(Some(&ns_b), addr_a.address),
        "task b -> task a after re-create"
    );

    // delete removes it; the address stops answering; again is fine
    w.delete(0, &a).unwrap();
    assert!(!path_a.exists());
    assert!(!ping(None, addr_a.address), "a deleted task still answers");
    w.delete(0, &a).unwrap();
    delete_task_netns(&a).unwrap();
    // the other task is untouched
    assert!(
        answers(None, addr_b.address),
        "bridge -> task b after deleting a"
    );
    w.delete(1, &b).unwrap();
    assert!(!path_b.exists());
}

#[test]
fn two_tasks_on_one_instance_reach_each_other() {
    let Some(w) = World::new("two_tasks_on_one_instance_reach_each_other", 1) else {
        return;
    };
    let (a, b) = (w.task_id(), w.task_id());
    let (addr_a, addr_b) = (w.task_address(120), w.task_address(121));
    w.create(0, &a, addr_a).unwrap();
    w.create(0, &b, addr_b).unwrap();
    assert_eq!(link_names(&w.instances[0]), ["lo", "eth0"]);
    let (ns_a, ns_b) = (task_netns_name(&a), task_netns_name(&b));
    assert!(answers(Some(&ns_a), addr_b.address), "a -> b");
    assert!(answers(Some(&ns_b), addr_a.address), "b -> a");
    assert!(answers(None, addr_a.address), "bridge -> a");
    assert!(answers(None, addr_b.address), "bridge -> b");
    // the documented macvlan limit: the instance itself does not reach its own tasks
    assert!(
        !ping(Some(&w.instances[0]), addr_a.address),
        "macvlan reached its parent: update the module's docs"
    );
}

#[test]
fn create_finishes_half_made_namespaces_and_refuses_conflicts() {
    let Some(w) = World::new(
        "create_finishes_half_made_namespaces_and_refuses_conflicts",
        1,
    ) else {
        return;
    };
    // a crash right after `ip netns add`: no eth0 yet
    let a = w.task_id();
    ip(&["netns", "add", &task_netns_name(&a)]);
    let before = ns_id(&task_netns_path(&a));
    let addr_a = w.task_address(130);
    let path = w.create(0, &a, addr_a).unwrap();
    assert_eq!(ns_id(&path), before, "the half-made namespace was finished");
    assert!(answers(None, addr_a.address));

    // the same task id with another address is refused, and nothing changes
    match w.create(0, &a, w.task_address(131)) {
        Err(NetworkError::Conflict { netns, reason }) => {
            assert_eq!(netns, task_netns_name(&a));
            assert!(reason.contains(&addr_a.address.to_string()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(answers(None, addr_a.address));
    assert!(!ping(None, w.addr(131)));

    // a parent that does not exist: the error names the command, and the
    // namespace this call made is gone again
    let b = w.task_id();
    let b_copy = b.clone();
    let e = in_netns(&w.instances[0], move || {
        create_task_netns(
            &b_copy,
            "nope0",
            &TaskAddress {
                address: Ipv4Addr::new(10, 216, 0, 9),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 216, 0, 1),
            },
        )
    })
    .unwrap_err();
    match &e {
        NetworkError::Command { command, .. } => {
            assert!(command.starts_with("ip link add link nope0 "), "{command}")
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("nope0"), "{e}");
    assert!(!task_netns_path(&b).exists());

    w.delete(0, &a).unwrap();
    assert!(!path.exists());
}

#[test]
fn delete_takes_the_address_away_while_a_process_holds_the_namespace() {
    let Some(w) = World::new(
        "delete_takes_the_address_away_while_a_process_holds_the_namespace",
        1,
    ) else {
        return;
    };
    let a = w.task_id();
    let addr = w.task_address(140);
    w.create(0, &a, addr).unwrap();
    // a "container" still running in the task's namespace
    let _holder = Killed(
        Command::new("ip")
            .args(["netns", "exec", &task_netns_name(&a), "sleep", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(answers(None, addr.address));
    w.delete(0, &a).unwrap();
    assert!(!task_netns_path(&a).exists());
    assert!(
        !ping(None, addr.address),
        "the address outlived delete_task_netns"
    );
    // the address can be given to a new task at once, and the bridge's ARP
    // cache still fits (the MAC follows the address)
    let b = w.task_id();
    w.create(0, &b, addr).unwrap();
    assert!(
        answers(None, addr.address),
        "the reused address does not answer"
    );
}

/// A child process killed and reaped on drop, failed test or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
