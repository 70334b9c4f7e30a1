"""The instance lifecycle on `berth up`, with real local instances and runc
containers: with the drain age shortened to seconds every instance is
replaced while a service keeps its minimumHealthyPercent (sampled every
200 ms), a standalone task is stopped with TerminationNotice at the hard
deadline and no instance outlives it; a new OS image version and `berth
fleet replace` roll through a fleet.

Needs root, runc and /bin/busybox (busybox-static), as test_up.py does.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BerthServer, berth_bin, clean_env, new_keys  # noqa: E402
from test_up import PROFILE, REASON, ROLE, import_busybox  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")

BRIDGE = f"btl{os.getpid() % 100000}"
RANGE = f"10.212.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-life-{os.getpid()}"
REQUIREMENTS = {"vCpuCount": {"min": 2, "max": 2}, "memoryMiB": {"min": 4096, "max": 4096}}
DRAIN_AGE = 20
MAX_LIFETIME = 40
WAIT = {"Delay": 1, "MaxAttempts": 120}
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def provider(ecs, name, tags):
    return ecs.create_capacity_provider(
        name=name,
        cluster="life",
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": ["subnet-0000000a"]},
                "instanceRequirements": REQUIREMENTS,
            },
            "infrastructureOptimization": {"scaleInAfter": 600},
        },
        tags=[{"key": k, "value": v} for k, v in tags.items()],
    )["capacityProvider"]


@pytest.fixture(scope="module")
def up(tmp_root):
    base = Path(tempfile.mkdtemp(prefix="uplife-", dir=tmp_root))
    srv = BerthServer(
        base / "data",
        base / "logs",
        keys=new_keys(),
        command="up",
        extra_args=["--bridge", BRIDGE, "--address-range", RANGE, "--cgroup-root", CGROUP_ROOT],
    )
    srv.start()
    import_busybox(srv, base)
    srv.base_dir = base
    ecs = srv.client()
    ecs.create_cluster(clusterName="life")
    provider(ecs, "short", {"berth:drain-age": f"{DRAIN_AGE}s", "berth:max-lifetime": f"{MAX_LIFETIME}s"})
    provider(ecs, "long", {})
    ecs.put_cluster_capacity_providers(
        cluster="life",
        capacityProviders=["short", "long"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "short", "weight": 1}],
    )
    ecs.register_task_definition(
        family="sleeper",
        requiresCompatibilities=["MANAGED_INSTANCES"],
        networkMode="host",
        containerDefinitions=[{"name": "main", "image": "busybox", "memory": 64, "command": SLEEP}],
    )
    yield srv
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    assert not glob.glob(f"/sys/fs/cgroup/*{CGROUP_ROOT}")


def berth_fleet(up, *args):
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = up.keys
    out = subprocess.run(
        [berth_bin(), "fleet", *args, "--endpoint", up.url], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def fleet(up):
    return json.loads(berth_fleet(up, "ls", "--cluster", "life", "--output", "json"))


def service_running(ecs, name):
    arns = ecs.list_tasks(cluster="life", serviceName=name, desiredStatus="RUNNING")["taskArns"]
    arns += ecs.list_tasks(cluster="life", serviceName=name, desiredStatus="STOPPED")["taskArns"]
    arns = sorted(set(arns))
    if not arns:
        return 0
    tasks = ecs.describe_tasks(cluster="life", tasks=arns)["tasks"]
    return sum(1 for t in tasks if t["lastStatus"] == "RUNNING")


def instances(ecs, provider_name=None):
    out = []
    for status in ("ACTIVE", "DRAINING", "DEREGISTERING", "INACTIVE"):
        arns = ecs.list_container_instances(cluster="life", status=status)["containerInstanceArns"] if status != "INACTIVE" else []
        if arns:
            out += ecs.describe_container_instances(cluster="life", containerInstances=arns)["containerInstances"]
    return [c for c in out if provider_name is None or c.get("capacityProviderName") == provider_name]


def test_every_instance_is_replaced_within_its_lifetime_while_the_service_stays_up(up):
    ecs = up.client()
    # A standalone task first: it lives on the first instance until the deadline.
    lone = ecs.run_task(cluster="life", taskDefinition="sleeper", count=1)["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(cluster="life", tasks=[lone], WaiterConfig=WAIT)
    ecs.create_service(
        cluster="life",
        serviceName="web",
        taskDefinition="sleeper",
        desiredCount=6,
        capacityProviderStrategy=[{"capacityProvider": "short", "weight": 1}],
        deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200},
    )
    ecs.get_waiter("services_stable").wait(cluster="life", services=["web"], WaiterConfig=WAIT)
    first = {c["containerInstanceArn"]: c for c in instances(ecs, "short")}
    assert first
    lone_home = ecs.describe_tasks(cluster="life", tasks=[lone])["tasks"][0]["containerInstanceArn"]

    # Sample the service every 200 ms until every first instance is gone.
    samples, stop = [], threading.Event()

    def sample():
        client = up.client()
        while not stop.is_set():
            try:
                samples.append(service_running(client, "web"))
            except Exception as e:  # a sampler must not die silently
                samples.append(f"error: {e}")
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    seen = {}
    deadline = time.monotonic() + MAX_LIFETIME + 60
    try:
        while time.monotonic() < deadline:
            now = time.time()
            for i in fleet(up)["instances"]:
                seen.setdefault(i["instanceId"], now - i["ageSeconds"])
                assert i["ageSeconds"] <= MAX_LIFETIME + 3, f"{i['instanceId']} outlived its lifetime: {i}"
            gone = ecs.describe_container_instances(cluster="life", containerInstances=list(first))["containerInstances"]
            if all(c["status"] == "INACTIVE" for c in gone):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(timeout=5)
    gone = ecs.describe_container_instances(cluster="life", containerInstances=list(first))["containerInstances"]
    assert all(c["status"] == "INACTIVE" for c in gone), [(c["ec2InstanceId"], c["status"], c.get("statusReason")) for c in gone]
    errors = [s for s in samples if isinstance(s, str)]
    assert not errors, errors[:3]
    assert len(samples) > 50
    assert min(samples) >= 6, f"service below minimumHealthyPercent: min {min(samples)} of {len(samples)} samples"
    # The standalone task ran until the hard deadline, then TerminationNotice.
    lone_t = ecs.describe_tasks(cluster="life", tasks=[lone])["tasks"][0]
    assert lone_t["lastStatus"] == "STOPPED"
    assert lone_t["stopCode"] == "TerminationNotice", lone_t
    home = next(c for c in gone if c["containerInstanceArn"] == lone_home)
    assert "lifetime" in home.get("statusReason", "").lower(), home
    # Others were drained and replaced, not expired.
    reasons = [c.get("statusReason", "") for c in gone if c["containerInstanceArn"] != lone_home]
    assert all("drained" in r.lower() for r in reasons), reasons
    # Replacement capacity came first, and pulled the service's image before its tasks moved.
    assert "replacement capacity launched ahead of the drain" in up.log(), up.log()[-3000:]
    logs = [p.read_text(errors="replace") for p in (up.base_dir / "data" / "instances").glob("*/agent.log")]
    assert any("image prefetched" in text for text in logs), "no agent prefetched an image"
    ecs.delete_service(cluster="life", service="web", force=True)
    ecs.get_waiter("services_inactive").wait(cluster="life", services=["web"], WaiterConfig=WAIT)


def test_a_new_image_and_fleet_replace_roll_through_the_fleet(up):
    ecs = up.client()
    ecs.create_service(
        cluster="life",
        serviceName="api",
        taskDefinition="sleeper",
        desiredCount=2,
        capacityProviderStrategy=[{"capacityProvider": "long", "weight": 1}],
        placementConstraints=[{"type": "distinctInstance"}],
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200},
    )
    ecs.get_waiter("services_stable").wait(cluster="life", services=["api"], WaiterConfig=WAIT)
    old = [i for i in fleet(up)["instances"] if i["capacityProvider"] == "long"]
    assert old and all(i["imageVersion"] == "1" for i in old), old
    out = berth_fleet(up, "set-image", "2")
    assert "2" in out

    def rolled():
        now = [i for i in fleet(up)["instances"] if i["capacityProvider"] == "long" and i["status"] == "ACTIVE"]
        draining = [i for i in fleet(up)["instances"] if i["capacityProvider"] == "long" and i["status"] == "DRAINING"]
        assert len(draining) <= 1, f"budget: one at a time below 9 instances, {draining}"
        return now and all(i["imageVersion"] == "2" for i in now) and not draining and now

    deadline = time.monotonic() + 120
    while not rolled() and time.monotonic() < deadline:
        time.sleep(0.5)
    now = rolled()
    assert now, json.dumps(fleet(up), indent=1) + up.log()[-3000:]
    ids = {i["instanceId"] for i in now}
    assert not ids & {i["instanceId"] for i in old}
    attrs = {
        a["name"]: a.get("value")
        for c in instances(ecs, "long")
        if c["status"] == "ACTIVE"
        for a in c["attributes"]
    }
    assert attrs.get("berth:image-version") == "2", attrs
    ecs.get_waiter("services_stable").wait(cluster="life", services=["api"], WaiterConfig=WAIT)

    # `berth fleet replace` rolls the instances it has now, though nothing changed.
    assert "will be replaced" in berth_fleet(up, "replace", "--capacity-provider", "long")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cur = [i for i in fleet(up)["instances"] if i["capacityProvider"] == "long" and i["status"] == "ACTIVE"]
        if cur and not {i["instanceId"] for i in cur} & ids and all(i["status"] == "ACTIVE" for i in cur):
            break
        time.sleep(0.5)
    cur = [i for i in fleet(up)["instances"] if i["capacityProvider"] == "long" and i["status"] == "ACTIVE"]
    assert cur and not {i["instanceId"] for i in cur} & ids, (cur, ids)
    ecs.get_waiter("services_stable").wait(cluster="life", services=["api"], WaiterConfig=WAIT)
