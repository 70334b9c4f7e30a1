"""Managed capacity on `berth up`, with real local instances and runc
containers: a mix of 20 tasks launches the fleet `berth capacity plan`
plans for the same tasks, and once idle for the capacity provider's
`scaleInAfter` the instances are terminated and leave nothing behind.

Needs root, runc and /bin/busybox (busybox-static), as test_up.py does.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BerthServer, berth_bin, new_keys  # noqa: E402
from test_up import PROFILE, REASON, ROLE, import_busybox, netns_list  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")

BRIDGE = f"btc{os.getpid() % 100000}"
RANGE = f"10.216.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-cap-{os.getpid()}"
SUBNETS = ["subnet-0000000a", "subnet-0000000b", "subnet-0000000c"]
# Small types: the local provider refuses instances beyond the host's memory.
REQUIREMENTS = {"vCpuCount": {"min": 2, "max": 4}, "memoryMiB": {"min": 4096, "max": 8192}}
SCALE_IN_AFTER = 5
# (family, cpu units, MiB, count): CPU-heavy and memory-heavy tasks, 8 GiB of
# instances at most.
MIX = [("cpu-heavy", 256, 64, 10), ("mem-heavy", 64, 300, 10)]


@pytest.fixture(scope="module")
def up(tmp_root):
    base = Path(tempfile.mkdtemp(prefix="upcap-", dir=tmp_root))
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
    ecs.create_cluster(clusterName="cap")
    ecs.create_capacity_provider(
        name="cap-mi",
        cluster="cap",
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": SUBNETS},
                "instanceRequirements": REQUIREMENTS,
            },
            "infrastructureOptimization": {"scaleInAfter": SCALE_IN_AFTER},
        },
    )
    ecs.put_cluster_capacity_providers(
        cluster="cap",
        capacityProviders=["cap-mi"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "cap-mi", "weight": 1}],
    )
    yield srv
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    assert not glob.glob(f"/sys/fs/cgroup/*{CGROUP_ROOT}")


def instances(ecs, status):
    arns = ecs.list_container_instances(cluster="cap", status=status)["containerInstanceArns"]
    if not arns:
        return []
    return ecs.describe_container_instances(cluster="cap", containerInstances=arns)["containerInstances"]


def attr(ci, name):
    return next((a.get("value") for a in ci["attributes"] if a["name"] == name), None)


def test_a_mix_of_tasks_launches_the_planned_fleet_and_idle_instances_scale_in(up):
    ecs = up.client()
    # The offline plan for the same tasks.
    plan_input = {
        "region": "us-east-1",
        "instanceRequirements": REQUIREMENTS,
        "capacityOptionType": "ON_DEMAND",
        "reservedMemoryMiB": 256,
        "tasks": [{"name": f, "cpu": c, "memory": m, "count": n} for f, c, m, n in MIX],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(plan_input, f)
    out = subprocess.run(
        [berth_bin(), "capacity", "plan", "--input", f.name, "--output", "json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert not plan["unplaceable"], plan
    planned = Counter(i["instanceType"] for i in plan["instances"])

    arns = []
    for family, cpu, memory, count in MIX:
        td = ecs.register_task_definition(
            family=family,
            requiresCompatibilities=["MANAGED_INSTANCES"],
            networkMode="host",
            containerDefinitions=[
                {"name": "main", "image": "busybox", "cpu": cpu, "memory": memory, "command": ["sleep", "3600"]}
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        r = ecs.run_task(cluster="cap", taskDefinition=td, count=count)
        assert r["failures"] == [], r["failures"]
        arns += [t["taskArn"] for t in r["tasks"]]
    ecs.get_waiter("tasks_running").wait(cluster="cap", tasks=arns[:10], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ecs.get_waiter("tasks_running").wait(cluster="cap", tasks=arns[10:], WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    active = instances(ecs, "ACTIVE")
    launched = Counter(attr(ci, "ecs.instance-type") for ci in active)
    assert launched == planned, f"launched {launched}, planned {planned}"
    zones = {attr(ci, "ecs.availability-zone") for ci in active}
    assert len(zones) == min(3, len(active)), zones
    homes = {t["containerInstanceArn"] for t in ecs.describe_tasks(cluster="cap", tasks=arns)["tasks"]}
    assert homes == {ci["containerInstanceArn"] for ci in active}
    ids = [ci["ec2InstanceId"] for ci in active]
    assert all(f"berth-{i}" in netns_list() for i in ids)

    # Idle: every instance is terminated after scaleInAfter, and leaves nothing behind.
    for a in arns:
        ecs.stop_task(cluster="cap", task=a, reason="scale-in test")
    ecs.get_waiter("tasks_stopped").wait(cluster="cap", tasks=arns[:10], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    ecs.get_waiter("tasks_stopped").wait(cluster="cap", tasks=arns[10:], WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    stopped_at = time.monotonic()
    deadline = stopped_at + SCALE_IN_AFTER + 30
    arns_ci = [ci["containerInstanceArn"] for ci in active]
    while True:
        gone = ecs.describe_container_instances(cluster="cap", containerInstances=arns_ci)["containerInstances"]
        if {ci["status"] for ci in gone} == {"INACTIVE"} or time.monotonic() > deadline:
            break
        if any(ci["status"] == "DEREGISTERING" for ci in gone):
            # Out of placement while it is terminated.
            assert not [c for c in instances(ecs, "ACTIVE") if c["status"] == "DEREGISTERING"]
        time.sleep(0.5)
    assert time.monotonic() - stopped_at >= SCALE_IN_AFTER - 1, "scaled in before scaleInAfter"
    assert {ci["ec2InstanceId"] for ci in gone} == set(ids)
    assert {ci["status"] for ci in gone} == {"INACTIVE"}, gone
    for ci in gone:
        assert "Scaled in" in ci.get("statusReason", "") or "idle" in ci.get("statusReason", ""), ci
    left = [i for i in ids if f"berth-{i}" in netns_list()]
    assert not left, netns_list()
    left_cgroups = [p for i in ids for p in glob.glob(f"/sys/fs/cgroup/*{CGROUP_ROOT}/{i}")]
    assert not left_cgroups, left_cgroups
    # The agents' containers are gone from runc too.
    runc = subprocess.run(["runc", "list", "-q"], capture_output=True, text=True).stdout.split()
    assert not [c for c in runc if any(a.rsplit("/", 1)[-1] in c for a in arns)], runc
