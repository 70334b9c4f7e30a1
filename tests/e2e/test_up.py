"""`berth up` runs tasks for real: local instances (network namespaces and
cgroups) with a real agent each, real runc containers from an image built out
of busybox-static, driven with boto3 like ECS.

Needs root, runc and /bin/busybox (busybox-static); CI installs them. Without
them the module is skipped with a loud message.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BerthServer, berth_bin, clean_env, new_keys  # noqa: E402

BRIDGE = f"bte{os.getpid() % 100000}"
RANGE = f"10.215.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-{os.getpid()}"
ROLE = "arn:aws:iam::123456789012:role/ecsInfrastructureRole"
PROFILE = "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile"
SUBNET = "subnet-0123456789abcdef0"
APPLETS = ["sh", "sleep", "echo", "cat", "ip", "ls", "id", "head", "tail", "dd", "true", "false", "hostname", "env", "ping", "grep"]


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("runc"):
        return "runc is not installed (apt-get install runc)"
    if not os.path.exists("/bin/busybox"):
        return "busybox-static is not installed (apt-get install busybox-static)"
    return None


REASON = _why_skip()
if REASON:
    print(f"\n*** SKIPPING the real-container suite: {REASON} ***\n", file=sys.stderr)
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")


def busybox_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def import_busybox(srv, base: Path) -> None:
    """Builds the busybox root file system under `base` and imports it into `srv` as busybox:latest."""
    rootfs = busybox_rootfs(base / "rootfs")
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = srv.keys
    out = subprocess.run(
        [berth_bin(), "image", "import", "--rootfs", str(rootfs), "--tag", "busybox:latest", "--endpoint", srv.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, f"image import failed:\n{out.stdout}\n{out.stderr}"


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def up(tmp_root):
    base = Path(tempfile.mkdtemp(prefix="up-", dir=tmp_root))
    srv = BerthServer(
        base / "data",
        base / "logs",
        keys=new_keys(),
        command="up",
        extra_args=["--bridge", BRIDGE, "--address-range", RANGE, "--cgroup-root", CGROUP_ROOT],
    )
    srv.start()
    import_busybox(srv, base)
    ecs = srv.client()
    ecs.create_cluster(clusterName="up")
    ecs.create_capacity_provider(
        name="up-mi",
        cluster="up",
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": [SUBNET]},
                "instanceRequirements": {"vCpuCount": {"min": 2, "max": 4}, "memoryMiB": {"min": 4096, "max": 16384}},
            },
        },
    )
    ecs.put_cluster_capacity_providers(
        cluster="up",
        capacityProviders=["up-mi"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "up-mi", "weight": 1}],
    )
    yield srv
    ecs_end = srv.client()
    ours = set()
    for status in ("ACTIVE", "DRAINING", "REGISTERING"):
        arns = ecs_end.list_container_instances(cluster="up", status=status)["containerInstanceArns"]
        if arns:
            for ci in ecs_end.describe_container_instances(cluster="up", containerInstances=arns)["containerInstances"]:
                ours.add(ci["ec2InstanceId"])
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"
    # Nothing is left behind: no namespace, bridge or cgroup of this run.
    left = [i for i in ours if f"berth-{i}" in netns_list()]
    assert not left, netns_list()
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    left_cgroups = glob.glob(f"/sys/fs/cgroup/*{CGROUP_ROOT}")
    assert not left_cgroups, f"cgroups left behind in every hierarchy runc touched: {left_cgroups}"


@pytest.fixture(scope="module")
def ecs(up):
    return up.client()


def register(ecs, family, command, network_mode="host", **container):
    c = {"name": "main", "image": "busybox", "memory": 64, "command": command}
    c.update(container)
    return ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["MANAGED_INSTANCES"],
        networkMode=network_mode,
        containerDefinitions=[c],
    )["taskDefinition"]["taskDefinitionArn"]


def run(ecs, td, count=1, **kw):
    r = ecs.run_task(cluster="up", taskDefinition=td, count=count, **kw)
    assert r["failures"] == [], r["failures"]
    return [t["taskArn"] for t in r["tasks"]]


def describe(ecs, arns):
    return ecs.describe_tasks(cluster="up", tasks=arns)["tasks"]


def wait_status(ecs, arn, status, timeout=90):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = describe(ecs, [arn])[0]
        if last["lastStatus"] == status:
            return last
        if last["lastStatus"] == "STOPPED" and status != "STOPPED":
            pytest.fail(f"task stopped while waiting for {status}: {last.get('stoppedReason')} {last['containers']}")
        time.sleep(0.2)
    pytest.fail(f"task not {status} within {timeout}s: {last}")


def test_exit_code_three_stops_the_task_as_essential_container_exited(ecs):
    td = register(ecs, "exit3", ["sh", "-c", "echo bye; exit 3"])
    [arn] = run(ecs, td)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["stoppedReason"] == "Essential container in task exited"
    assert t["containers"][0]["exitCode"] == 3
    assert t["containers"][0]["runtimeId"]
    for field in ("createdAt", "pullStartedAt", "pullStoppedAt", "startedAt", "stoppingAt", "executionStoppedAt", "stoppedAt"):
        assert field in t, f"{field} missing: {t}"
    assert t["launchType"] == "MANAGED_INSTANCES"
    assert t["capacityProviderName"] == "up-mi"
    assert t["containerInstanceArn"]


def test_stop_task_stops_a_sleeping_task_with_the_users_reason_and_waiters_work(ecs):
    td = register(ecs, "sleeper", ["sleep", "3600"])
    [arn] = run(ecs, td)
    ecs.get_waiter("tasks_running").wait(cluster="up", tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    t = describe(ecs, [arn])[0]
    assert t["lastStatus"] == "RUNNING"
    assert t["containers"][0]["lastStatus"] == "RUNNING"
    stopping = ecs.stop_task(cluster="up", task=arn, reason="done with it")["task"]
    assert stopping["desiredStatus"] == "STOPPED"
    assert stopping["lastStatus"] == "DEACTIVATING", stopping["lastStatus"]
    ecs.get_waiter("tasks_stopped").wait(cluster="up", tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 90})
    t = describe(ecs, [arn])[0]
    assert t["stopCode"] == "UserInitiated"
    assert t["stoppedReason"] == "done with it"
    assert t["containers"][0]["exitCode"] in (143, 137)


def test_two_tasks_share_one_instance_and_remaining_resources_count_both(ecs):
    td = register(ecs, "pair", ["sleep", "3600"], memory=200)
    arns = run(ecs, td, count=2)
    for a in arns:
        wait_status(ecs, a, "RUNNING")
    tasks = describe(ecs, arns)
    instances = {t["containerInstanceArn"] for t in tasks}
    assert len(instances) == 1, instances
    ci = ecs.describe_container_instances(cluster="up", containerInstances=list(instances))["containerInstances"][0]
    assert ci["agentConnected"] is True
    assert ci["status"] == "ACTIVE"
    reg = {r["name"]: r.get("integerValue") for r in ci["registeredResources"]}
    rem = {r["name"]: r.get("integerValue") for r in ci["remainingResources"]}
    # Every non-stopped task on the instance reserves its memory; these two 200 MiB each at least.
    assert reg["MEMORY"] - rem["MEMORY"] >= 400
    assert ci["runningTasksCount"] >= 2
    assert ci["versionInfo"]["agentVersion"]
    attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert attrs["ecs.availability-zone"].startswith("us-east-1")
    assert "ecs.instance-type" in attrs
    for a in arns:
        ecs.stop_task(cluster="up", task=a)
    for a in arns:
        wait_status(ecs, a, "STOPPED")


def eni_address(task) -> str | None:
    for a in task.get("attachments", []):
        if a["type"] == "ElasticNetworkInterface":
            for d in a.get("details", []):
                if d["name"] == "privateIPv4Address":
                    return d["value"]
    return None


def test_net_admin_lets_a_task_add_an_address_to_its_own_interface(ecs):
    script = ["sh", "-c", "ip addr add 10.99.0.1/32 dev eth0 && ip addr show eth0 | grep -q 10.99.0.1"]
    with_cap = register(
        ecs, "netadmin", script, network_mode="awsvpc", linuxParameters={"capabilities": {"add": ["NET_ADMIN"]}}
    )
    without = register(ecs, "nonetadmin", script, network_mode="awsvpc")
    [a] = run(ecs, with_cap)
    [b] = run(ecs, without)
    ta = wait_status(ecs, a, "STOPPED")
    tb = wait_status(ecs, b, "STOPPED")
    assert ta["containers"][0]["exitCode"] == 0, ta
    assert tb["containers"][0]["exitCode"] != 0, tb


def test_awsvpc_tasks_have_their_own_address_and_reach_each_other(up, ecs):
    server = register(ecs, "vpc-server", ["sleep", "3600"], network_mode="awsvpc")
    [srv] = run(ecs, server)
    t = wait_status(ecs, srv, "RUNNING")
    ip = eni_address(t)
    assert ip, t["attachments"]
    net = RANGE.rsplit(".", 1)[0] + "."
    assert ip.startswith(net), (ip, RANGE)
    assert t["attachments"][0]["status"] == "ATTACHED"
    assert t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == ip
    client = register(
        ecs, "vpc-client", ["sh", "-c", f"ip -4 -o addr show eth0; ping -c 1 -W 3 {ip}"], network_mode="awsvpc"
    )
    [cli] = run(ecs, client)
    tc = wait_status(ecs, cli, "STOPPED")
    own = eni_address(tc)
    assert own and own != ip
    assert tc["containers"][0]["exitCode"] == 0, f"the client could not reach {ip}: {tc}"
    ecs.stop_task(cluster="up", task=srv)
    wait_status(ecs, srv, "STOPPED")


def test_a_container_over_its_memory_limit_is_reported_as_oom(ecs):
    td = register(ecs, "hog", ["sh", "-c", "head -c 200m /dev/zero | tail"], memory=32)
    [arn] = run(ecs, td)
    t = wait_status(ecs, arn, "STOPPED")
    c = t["containers"][0]
    assert c["exitCode"] == 137, c
    assert c["reason"] == "OutOfMemoryError: Container killed due to memory usage", c


def test_a_missing_image_fails_to_start_naming_the_image(ecs):
    td = register(ecs, "noimage", ["true"], image="no-such-image:1")
    [arn] = run(ecs, td)
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stopCode"] == "TaskFailedToStart"
    assert "no-such-image" in t["stoppedReason"]


def test_logs_come_back_through_berth_logs(up, ecs):
    td = register(ecs, "talker", ["sh", "-c", "echo hello from berth; echo to stderr >&2"])
    [arn] = run(ecs, td)
    wait_status(ecs, arn, "STOPPED")
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = up.keys
    deadline = time.monotonic() + 20
    out = None
    while time.monotonic() < deadline:
        out = subprocess.run(
            [berth_bin(), "logs", "--cluster", "up", arn.rsplit("/", 1)[1], "--endpoint", up.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        if "hello from berth" in out.stdout and "to stderr" in out.stderr:
            break
        time.sleep(0.5)
    assert out is not None and out.returncode == 0, out
    assert "hello from berth" in out.stdout
    assert "to stderr" in out.stderr


def agent_of(ecs, container_instance_arn) -> tuple[int, str]:
    """The pid and instance id of the agent of a container instance."""
    ci = ecs.describe_container_instances(cluster="up", containerInstances=[container_instance_arn])
    instance_id = ci["containerInstances"][0]["ec2InstanceId"]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"agent" in cmd and instance_id.encode() in cmd:
            return int(pid), instance_id
    pytest.fail(f"no agent process for {instance_id}")


def test_an_agent_restart_does_not_restart_containers(up, ecs):
    td = register(ecs, "steady", ["sleep", "3600"])
    [arn] = run(ecs, td)
    before = wait_status(ecs, arn, "RUNNING")
    pid, instance_id = agent_of(ecs, before["containerInstanceArn"])
    cmd = [c.decode() for c in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") if c]
    env = dict(
        kv.decode().split("=", 1) for kv in open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in kv
    )
    cgroup = env.get("BERTH_CGROUP")
    os.kill(pid, signal.SIGKILL)  # the agent dies hard; its shims and containers do not
    time.sleep(1)
    # Start it again as the instance's init system would: same command, same namespace and cgroup.
    # Only the network namespace: `ip netns exec` would also remount /sys, hiding the cgroup mounts.
    new = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/berth-{instance_id}", "--"] + cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if cgroup:
        for controller in ("memory", "cpu"):
            procs = f"/sys/fs/cgroup/{controller}{cgroup}/cgroup.procs"
            if os.path.exists(procs):
                with open(procs, "w") as f:
                    f.write(str(new.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ci = ecs.describe_container_instances(cluster="up", containerInstances=[before["containerInstanceArn"]])
        if ci["containerInstances"][0]["agentConnected"]:
            break
        time.sleep(0.5)
    after = describe(ecs, [arn])[0]
    assert after["lastStatus"] == "RUNNING"
    assert after["startedAt"] == before["startedAt"], "the container was not started again"
    assert after["containers"][0]["runtimeId"] == before["containers"][0]["runtimeId"]
    ecs.stop_task(cluster="up", task=arn, reason="after agent restart")
    t = wait_status(ecs, arn, "STOPPED")
    assert t["stoppedReason"] == "after agent restart"
    assert t["containers"][0]["exitCode"] in (143, 137)


def test_host_tasks_report_their_port_bindings(ecs):
    td = register(ecs, "ported", ["sleep", "3600"], portMappings=[{"containerPort": 8080, "hostPort": 8080}])
    [arn] = run(ecs, td)
    t = wait_status(ecs, arn, "RUNNING")
    assert t["containers"][0]["networkBindings"] == [
        {"bindIP": "0.0.0.0", "containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}
    ]
    ecs.stop_task(cluster="up", task=arn)
    wait_status(ecs, arn, "STOPPED")


def test_a_server_kill_does_not_stop_running_containers(up, ecs):
    td = register(ecs, "survivor", ["sleep", "3600"])
    [arn] = run(ecs, td)
    before = wait_status(ecs, arn, "RUNNING")
    up.kill()  # kill -9: the agents and their containers live on
    time.sleep(1)
    up.start()
    ecs2 = up.client()
    # The agent reconnects and the same container is still the one running.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ci = ecs2.describe_container_instances(cluster="up", containerInstances=[before["containerInstanceArn"]])
        if ci["containerInstances"] and ci["containerInstances"][0]["agentConnected"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the agent did not reconnect: {ci}")
    after = describe(ecs2, [arn])[0]
    assert after["lastStatus"] == "RUNNING"
    assert after["startedAt"] == before["startedAt"]
    assert after["containers"][0]["runtimeId"] == before["containers"][0]["runtimeId"]
    ecs2.stop_task(cluster="up", task=arn, reason="after restart")
    t = wait_status(ecs2, arn, "STOPPED")
    assert t["stoppedReason"] == "after restart"


def test_a_service_keeps_its_tasks_running_and_drains_on_delete(ecs):
    td = register(ecs, "svc-sleeper", ["sleep", "3600"])
    ecs.create_service(cluster="up", serviceName="keeper", taskDefinition=td, desiredCount=2)
    ecs.get_waiter("services_stable").wait(cluster="up", services=["keeper"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    svc = ecs.describe_services(cluster="up", services=["keeper"])["services"][0]
    assert svc["runningCount"] == 2
    assert svc["deployments"][0]["rolloutState"] == "COMPLETED"
    arns = ecs.list_tasks(cluster="up", serviceName="keeper", desiredStatus="RUNNING")["taskArns"]
    assert len(arns) == 2
    for t in describe(ecs, arns):
        assert t["lastStatus"] == "RUNNING"
        assert t["group"] == "service:keeper"
    # A task stopped from outside is replaced.
    ecs.stop_task(cluster="up", task=arns[0], reason="chaos")
    wait_status(ecs, arns[0], "STOPPED")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = ecs.list_tasks(cluster="up", serviceName="keeper", desiredStatus="RUNNING")["taskArns"]
        if len(now) == 2 and arns[0] not in now and all(t["lastStatus"] == "RUNNING" for t in describe(ecs, now)):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the stopped task was not replaced: {now}")
    ecs.delete_service(cluster="up", service="keeper", force=True)
    ecs.get_waiter("services_inactive").wait(cluster="up", services=["keeper"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert ecs.list_tasks(cluster="up", serviceName="keeper", desiredStatus="RUNNING")["taskArns"] == []


def service_tasks(ecs, name):
    """The service's tasks not yet STOPPED (desired RUNNING or on their way out).

    The two listings are not one snapshot: a task the scheduler stops between
    them is in both, so tasks are counted once, by ARN."""
    arns = []
    for desired in ("RUNNING", "STOPPED"):
        arns += ecs.list_tasks(cluster="up", serviceName=name, desiredStatus=desired)["taskArns"]
    arns = list(dict.fromkeys(arns))
    out = []
    for i in range(0, len(arns), 100):
        out += [t for t in describe(ecs, arns[i : i + 100]) if t["lastStatus"] != "STOPPED"]
    return out


def test_a_service_scales_rolls_within_its_percentages_and_rolls_back_a_crashing_revision(ecs):
    import threading

    v1 = register(ecs, "roller", ["sleep", "3600"])
    ecs.create_service(
        cluster="up",
        serviceName="roller",
        taskDefinition=v1,
        desiredCount=3,
        deploymentConfiguration={
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
    )
    stable = ecs.get_waiter("services_stable")
    stable.wait(cluster="up", services=["roller"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ecs.update_service(cluster="up", service="roller", desiredCount=5)
    stable.wait(cluster="up", services=["roller"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    assert len([t for t in service_tasks(ecs, "roller") if t["lastStatus"] == "RUNNING"]) == 5

    # A new revision, sampled throughout: never under 100 % running, never over 200 % in all.
    v2 = register(ecs, "roller", ["sleep", "3601"])
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            ts = service_tasks(ecs, "roller")
            samples.append((sum(t["lastStatus"] == "RUNNING" for t in ts), len(ts)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        ecs.update_service(cluster="up", service="roller", taskDefinition=v2)
        time.sleep(1)
        stable.wait(cluster="up", services=["roller"], WaiterConfig={"Delay": 1, "MaxAttempts": 180})
    finally:
        stop.set()
        sampler.join()
    assert samples, "the sampler took no sample"
    assert min(r for r, _ in samples) >= 5, samples
    assert max(n for _, n in samples) <= 10, samples
    ts = service_tasks(ecs, "roller")
    assert {t["taskDefinitionArn"] for t in ts} == {v2}, ts
    assert sum(t["lastStatus"] == "RUNNING" for t in ts) == 5

    # A revision that crashes on start trips the circuit breaker and rolls back to v2.
    v3 = register(ecs, "roller", ["sh", "-c", "exit 1"])
    ecs.update_service(cluster="up", service="roller", taskDefinition=v3)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        svc = ecs.describe_services(cluster="up", services=["roller"])["services"][0]
        primary = [d for d in svc["deployments"] if d["status"] == "PRIMARY"][0]
        if primary["taskDefinition"] == v2 and len(svc["deployments"]) == 1 and svc["runningCount"] == 5:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no rollback: {svc['deployments']} {[e['message'] for e in svc['events'][:5]]}")
    assert svc["taskDefinition"] == v2
    ecs.delete_service(cluster="up", service="roller", force=True)
    ecs.get_waiter("services_inactive").wait(cluster="up", services=["roller"], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
