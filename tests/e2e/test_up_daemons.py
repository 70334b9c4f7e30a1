"""Managed daemons on `berth up`, with real local instances and runc
containers, driven with boto3: a privileged daemon with a host mount runs
exactly one task on every instance of its capacity provider (an instance
launched later included), starts before the application tasks there, rolls
to a new revision, and stops when deleted. The AWS model's daemon waiters
succeed.

Needs root, runc and /bin/busybox (busybox-static), as test_up.py does.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, WaiterError

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BerthServer, new_keys  # noqa: E402
from test_up import PROFILE, REASON, ROLE, import_busybox  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")

BRIDGE = f"btd{os.getpid() % 100000}"
RANGE = f"10.214.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-dmn-{os.getpid()}"
# 4 GiB instances: one 3 GiB application task each.
REQUIREMENTS = {"vCpuCount": {"min": 2, "max": 2}, "memoryMiB": {"min": 4096, "max": 4096}}
WAIT = {"Delay": 1, "MaxAttempts": 120}


@pytest.fixture(scope="module")
def up(tmp_root):
    base = Path(tempfile.mkdtemp(prefix="updmn-", dir=tmp_root))
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
    ecs.create_cluster(clusterName="dmn")
    cp = ecs.create_capacity_provider(
        name="dmn-mi",
        cluster="dmn",
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": ["subnet-0000000a"]},
                "instanceRequirements": REQUIREMENTS,
            },
            "infrastructureOptimization": {"scaleInAfter": 600},
        },
    )["capacityProvider"]
    ecs.put_cluster_capacity_providers(
        cluster="dmn",
        capacityProviders=["dmn-mi"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "dmn-mi", "weight": 1}],
    )
    srv.cp_arn = cp["capacityProviderArn"]
    srv.host_dir = base / "host-out"
    srv.host_dir.mkdir()
    yield srv
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    assert not glob.glob(f"/sys/fs/cgroup/*{CGROUP_ROOT}")


def live(ecs):
    out = []
    for desired in ("RUNNING", "STOPPED"):
        arns = ecs.list_tasks(cluster="dmn", desiredStatus=desired)["taskArns"]
        if arns:
            out += [t for t in ecs.describe_tasks(cluster="dmn", tasks=arns)["tasks"] if t["lastStatus"] != "STOPPED"]
    return out


def daemon_tasks(ecs):
    return [t for t in live(ecs) if t.get("group", "").startswith("daemon:")]


def active_instances(ecs):
    arns = ecs.list_container_instances(cluster="dmn", status="ACTIVE")["containerInstanceArns"]
    return arns


def register_daemon(ecs, up, tag):
    return ecs.register_daemon_task_definition(
        family="shipper",
        cpu="128",
        memory="64",
        containerDefinitions=[
            {
                "name": "ship",
                "image": "busybox",
                "privileged": True,
                "command": ["sh", "-c", f"echo {tag} > /out/{tag}-$(cat /proc/sys/kernel/random/uuid); trap 'exit 0' TERM; sleep 3600 & wait"],
                "mountPoints": [{"sourceVolume": "out", "containerPath": "/out"}],
            }
        ],
        volumes=[{"name": "out", "host": {"sourcePath": str(up.host_dir)}}],
    )["daemonTaskDefinitionArn"]


def wait_running(up, ecs, arns):
    try:
        ecs.get_waiter("tasks_running").wait(cluster="dmn", tasks=arns, WaiterConfig=WAIT)
    except WaiterError:
        state = [
            (t["taskArn"][-8:], t.get("group"), t["lastStatus"], t.get("stoppedReason"), [c.get("reason") for c in t["containers"]])
            for t in live(ecs) + ecs.describe_tasks(cluster="dmn", tasks=arns)["tasks"]
        ]
        pytest.fail(f"tasks not RUNNING: {state}\n{up.log()[-3000:]}")


def wait_for(pred, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"{what} not met within {timeout}s (last: {last})")


def one_daemon_per_instance(ecs, revision_suffix):
    ds = daemon_tasks(ecs)
    per = Counter(t["containerInstanceArn"] for t in ds)
    insts = set(active_instances(ecs))
    ok = (
        set(per) == insts
        and all(n == 1 for n in per.values())
        and all(t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"].endswith(revision_suffix) for t in ds)
    )
    return ok and (per, insts)


def test_a_daemon_runs_once_on_every_instance_first_rolls_and_stops(up):
    ecs = up.client()
    assert "daemon_deployment_successful" in ecs.waiter_names
    td1 = register_daemon(ecs, up, "r1")
    ecs.get_waiter("daemon_task_definition_active").wait(daemonTaskDefinition=td1, WaiterConfig=WAIT)
    created = ecs.create_daemon(
        clusterArn="dmn", daemonName="shipper", daemonTaskDefinitionArn=td1, capacityProviderArns=[up.cp_arn]
    )
    daemon = created["daemonArn"]
    ecs.get_waiter("daemon_active").wait(daemonArn=daemon, WaiterConfig=WAIT)
    ecs.get_waiter("daemon_deployment_successful").wait(
        daemonDeploymentArns=[created["deploymentArn"]], WaiterConfig=WAIT
    )

    # Two application tasks of 3 GiB: two 4 GiB instances, each with the daemon.
    app = ecs.register_task_definition(
        family="app",
        requiresCompatibilities=["MANAGED_INSTANCES"],
        networkMode="host",
        containerDefinitions=[{"name": "main", "image": "busybox", "memory": 3000, "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}],
    )["taskDefinition"]["taskDefinitionArn"]
    r = ecs.run_task(cluster="dmn", taskDefinition=app, count=2)
    assert r["failures"] == [], r
    apps = [t["taskArn"] for t in r["tasks"]]
    wait_running(up, ecs, apps)
    per, insts = wait_for(lambda: one_daemon_per_instance(ecs, "shipper:1"), what="one daemon per instance")
    assert len(insts) == 2
    # The daemon started before the application on each instance.
    by_ci = {t["containerInstanceArn"]: t for t in daemon_tasks(ecs)}
    for t in ecs.describe_tasks(cluster="dmn", tasks=apps)["tasks"]:
        d = by_ci[t["containerInstanceArn"]]
        assert d["startedAt"] <= t["startedAt"], (d["startedAt"], t["startedAt"])
        assert d["group"] == "daemon:shipper"
    # Privileged, with the host directory mounted: each wrote its file there.
    files = wait_for(lambda: len(list(up.host_dir.glob("r1-*"))) == 2 and list(up.host_dir.glob("r1-*")))
    assert all(f.read_text().strip() == "r1" for f in files)

    # An instance launched later gets the daemon too.
    r = ecs.run_task(cluster="dmn", taskDefinition=app, count=1)
    apps += [t["taskArn"] for t in r["tasks"]]
    wait_running(up, ecs, apps)
    per, insts = wait_for(lambda: one_daemon_per_instance(ecs, "shipper:1"), what="daemon on the new instance")
    assert len(insts) == 3
    d = ecs.describe_daemon(daemonArn=daemon)["daemon"]
    assert d["currentRevisions"][0]["totalRunningCount"] == 3, d

    # A new revision rolls in place on every instance.
    td2 = register_daemon(ecs, up, "r2")
    dep = ecs.update_daemon(daemonArn=daemon, daemonTaskDefinitionArn=td2, capacityProviderArns=[up.cp_arn])[
        "deploymentArn"
    ]
    ecs.get_waiter("daemon_deployment_successful").wait(daemonDeploymentArns=[dep], WaiterConfig=WAIT)
    wait_for(lambda: one_daemon_per_instance(ecs, "shipper:2"), what="revision 2 everywhere")
    assert len(list(up.host_dir.glob("r2-*"))) == 3
    # The application tasks were left alone.
    assert all(t["lastStatus"] == "RUNNING" for t in ecs.describe_tasks(cluster="dmn", tasks=apps)["tasks"])

    # Delete: its tasks stop, then the daemon is gone.
    ecs.delete_daemon(daemonArn=daemon)
    wait_for(lambda: not daemon_tasks(ecs), what="daemon tasks stopped")

    def gone():
        try:
            ecs.describe_daemon(daemonArn=daemon)
            return False
        except ClientError as e:
            return e.response["Error"]["Code"] == "DaemonNotFoundException"

    wait_for(gone, what="daemon removed")
    for a in apps:
        ecs.stop_task(cluster="dmn", task=a)
    ecs.get_waiter("tasks_stopped").wait(cluster="dmn", tasks=apps, WaiterConfig=WAIT)
