"""Metered cost on `berth up` with real local instances and runc
containers: after a short run, `berth cost --output json` bills each
instance its metered seconds (at least the 60 s minimum) times the rates of
the price table and fee given on the command line (`--price-table`,
`--fee-percent`), shows where they came from, splits the bill between the
task and idle capacity, and prices the task on Fargate.

Needs root, runc and /bin/busybox (busybox-static), as test_up.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import BerthServer, berth_bin, clean_env, new_keys  # noqa: E402
from test_up import PROFILE, REASON, ROLE, import_busybox  # noqa: E402

pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")

BRIDGE = f"btc{os.getpid() % 100000}"
RANGE = f"10.211.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-cost-{os.getpid()}"
# Only c7i.large has a price in the table below, so it is what the planner launches.
TYPE = "c7i.large"
PRICE = 0.36
FEE_PERCENT = 10
FEE = PRICE * FEE_PERCENT / 100
WAIT = {"Delay": 1, "MaxAttempts": 120}
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture(scope="module")
def up(tmp_root):
    base = Path(tempfile.mkdtemp(prefix="upcost-", dir=tmp_root))
    prices = base / "prices.csv"
    prices.write_text(f"region,instance_type,usd_per_hour,source,as_of\nus-east-1,{TYPE},{PRICE},test-quote,2026-10-01\n")
    srv = BerthServer(
        base / "data",
        base / "logs",
        keys=new_keys(),
        command="up",
        extra_args=[
            "--bridge", BRIDGE, "--address-range", RANGE, "--cgroup-root", CGROUP_ROOT,
            "--price-table", str(prices), "--fee-percent", str(FEE_PERCENT),
        ],
    )
    srv.start()
    import_busybox(srv, base)
    ecs = srv.client()
    ecs.create_cluster(clusterName="cost")
    ecs.create_capacity_provider(
        name="cost-mi",
        cluster="cost",
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": ["subnet-0000000a"]},
                "instanceRequirements": {"vCpuCount": {"min": 2, "max": 2}, "memoryMiB": {"min": 4096, "max": 4096}},
            },
            "infrastructureOptimization": {"scaleInAfter": 600},
        },
    )
    ecs.put_cluster_capacity_providers(
        cluster="cost",
        capacityProviders=["cost-mi"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "cost-mi", "weight": 1}],
    )
    ecs.register_task_definition(
        family="sleeper",
        requiresCompatibilities=["MANAGED_INSTANCES"],
        networkMode="host",
        cpu="512",
        memory="1024",
        containerDefinitions=[{"name": "main", "image": "busybox", "memory": 64, "command": SLEEP}],
    )
    yield srv
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"


def berth_cost(up, *args):
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = up.keys
    out = subprocess.run(
        [berth_bin(), "cost", *args, "--endpoint", up.url], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cost_after_a_short_run_is_metered_seconds_times_the_rates(up):
    ecs = up.client()
    started = time.time()
    task = ecs.run_task(cluster="cost", taskDefinition="sleeper", count=1)["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_running").wait(cluster="cost", tasks=[task], WaiterConfig=WAIT)
    time.sleep(3)
    ecs.stop_task(cluster="cost", task=task, reason="done")
    ecs.get_waiter("tasks_stopped").wait(cluster="cost", tasks=[task], WaiterConfig=WAIT)
    time.sleep(2)

    before = time.time()
    doc = json.loads(berth_cost(up, "--cluster", "cost", "--by", "instance", "--output", "json"))
    after = time.time()
    rows = doc["rows"]
    assert len(rows) == 1, doc
    row = rows[0]
    assert row["instanceType"] == TYPE
    assert row["key"] == row["instanceId"]
    assert row["purchaseOption"] == "ON_DEMAND"
    seconds = row["seconds"]
    # A running instance is billed up to now (its 60 s minimum accrues
    # within its first minute, so a young one has accrued its age).
    assert 1 <= seconds <= after - started + 2, doc
    # Exactly the metered seconds times the catalog rates given to berth up.
    assert row["instanceUsd"] == pytest.approx(seconds * PRICE / 3600, rel=1e-9, abs=1e-12)
    assert row["feeUsd"] == pytest.approx(seconds * FEE / 3600, rel=1e-9, abs=1e-12)
    assert row["totalUsd"] == pytest.approx(seconds * (PRICE + FEE) / 3600, rel=1e-9, abs=1e-12)
    assert round(row["totalUsd"], 2) == round(seconds * (PRICE + FEE) / 3600, 2)
    assert doc["instanceSeconds"] == seconds
    assert doc["totalUsd"] == pytest.approx(row["totalUsd"])
    assert doc["instanceUsd"] + doc["feeUsd"] == pytest.approx(doc["totalUsd"])
    assert "test-quote" in doc["priceTable"]["source"] and doc["priceTable"]["date"] == "2026-10-01"
    assert "--fee-percent 10" in doc["feeTable"]["source"]
    assert before > started

    # The task's share plus idle capacity is the bill; Fargate prices the task.
    tasks = json.loads(berth_cost(up, "--cluster", "cost", "--by", "task", "--output", "json"))
    assert [r["key"] for r in tasks["rows"]] == [task], tasks
    t = tasks["rows"][0]
    assert 0 < t["seconds"] <= seconds
    assert t["totalUsd"] + tasks["idleUsd"] == pytest.approx(tasks["totalUsd"], rel=1e-9)
    # 512 CPU units and 1 GiB of a 2 vCPU / 4 GiB instance: a share of 0.25.
    assert t["totalUsd"] == pytest.approx(t["seconds"] * 0.25 * (PRICE + FEE) / 3600, rel=1e-9)
    # 0.5 vCPU and 1 GB on Fargate (x86), billed at least a minute.
    fargate_seconds = max(60, t["seconds"])
    assert t["fargateUsd"] == pytest.approx(fargate_seconds * (0.5 * 0.04048 + 1 * 0.004445) / 3600, rel=1e-9)
    assert tasks["fargateUnpricedTasks"] == 0

    # People get a table with the same figures and the tables' provenance.
    text = berth_cost(up, "--cluster", "cost", "--by", "day")
    assert "test-quote" in text and "idle capacity" in text and "Fargate" in text
