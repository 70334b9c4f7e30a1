"""`berth capacity plan`: the offline provisioning planner, through the real binary.

No server: each test writes an input file, runs the binary and checks the
contract (JSON fields, hourlyCost = Σ price + fee, lowerBound ≤ hourlyCost,
unplaceable reasons, exit code 2 and a message naming the field on bad input,
the table for people).
"""

import json
import os
import subprocess

import pytest

from helpers import berth_bin


def run_plan(tmp_path, doc, *extra, raw=None):
    binary = berth_bin()
    if not os.path.exists(binary):
        pytest.fail(f"berth binary not found at {binary}: build it with `cargo build -p berth` or set BERTH_BIN")
    path = tmp_path / "input.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return subprocess.run(
        [binary, "capacity", "plan", "--input", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def plan_json(tmp_path, doc):
    r = run_plan(tmp_path, doc, "--output", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_contract(plan, doc):
    assert set(plan) == {"instances", "hourlyCost", "lowerBound", "unplaceable"}
    total = 0.0
    placed = {}
    for inst in plan["instances"]:
        assert set(inst) >= {"instanceType", "hourlyPrice", "hourlyFee", "capacity", "tasks"}
        assert set(inst["capacity"]) == {"cpu", "memory", "gpu"}
        total += inst["hourlyPrice"] + inst["hourlyFee"]
        used = {"cpu": 0, "memory": 0, "gpu": 0}
        for name, k in inst["tasks"].items():
            t = next(t for t in doc["tasks"] if t["name"] == name)
            used["cpu"] += k * t["cpu"]
            used["memory"] += k * t["memory"]
            used["gpu"] += k * t.get("gpu", 0)
            placed[name] = placed.get(name, 0) + k
        for d in used:
            assert used[d] <= inst["capacity"][d], (inst, used)
    assert plan["hourlyCost"] == pytest.approx(total, abs=1e-5)
    assert plan["lowerBound"] <= plan["hourlyCost"] + 1e-9
    unplaced = {u["name"]: u["count"] for u in plan["unplaceable"]}
    for t in doc["tasks"]:
        assert placed.get(t["name"], 0) + unplaced.get(t["name"], 0) == t["count"], t["name"]


WEB = {
    "region": "us-east-1",
    "instanceRequirements": {"vCpuCount": {"min": 2, "max": 16}, "memoryMiB": {"min": 4096}},
    "capacityOptionType": "ON_DEMAND",
    "reservedMemoryMiB": 256,
    "tasks": [
        {"name": "web", "cpu": 256, "memory": 512, "gpu": 0, "count": 40, "architecture": "X86_64"},
        {"name": "worker", "cpu": 1024, "memory": 4096, "count": 10},
    ],
}


def test_json_contract(tmp_path):
    plan = plan_json(tmp_path, WEB)
    check_contract(plan, WEB)
    assert plan["unplaceable"] == []
    assert plan["instances"], plan
    for inst in plan["instances"]:
        # vCpuCount max 16 is respected; capacity is after the 256 MiB reservation.
        assert inst["capacity"]["cpu"] <= 16 * 1024
    # Within a few percent of the proven bound for this easy mix.
    assert plan["hourlyCost"] <= 1.25 * plan["lowerBound"]


def test_defaults_and_unplaceable_reasons(tmp_path):
    doc = {
        "region": "us-east-1",
        "tasks": [
            {"name": "api", "cpu": 512, "memory": 1024, "count": 20},
            {"name": "huge", "cpu": 1024, "memory": 64 * 1024 * 1024, "count": 2},
            {"name": "arm", "cpu": 512, "memory": 1024, "count": 5, "architecture": "ARM64"},
        ],
    }
    plan = plan_json(tmp_path, doc)
    check_contract(plan, doc)
    unplaceable = {u["name"]: u for u in plan["unplaceable"]}
    assert set(unplaceable) == {"huge"}
    assert unplaceable["huge"]["count"] == 2
    assert "memory" in unplaceable["huge"]["reason"]
    arm_types = {i["instanceType"] for i in plan["instances"] if "arm" in i["tasks"]}
    assert arm_types and not arm_types & {i["instanceType"] for i in plan["instances"] if "api" in i["tasks"]}


def test_gpu_and_architecture_reasons(tmp_path):
    doc = {
        "region": "us-east-1",
        "instanceRequirements": {
            "vCpuCount": {"min": 2},
            "memoryMiB": {"min": 0},
            "allowedInstanceTypes": ["c7a.*"],
        },
        "tasks": [
            {"name": "gpu", "cpu": 1024, "memory": 2048, "gpu": 1, "count": 1},
            {"name": "arm", "cpu": 256, "memory": 512, "count": 1, "architecture": "ARM64"},
            {"name": "ok", "cpu": 256, "memory": 512, "count": 1},
        ],
    }
    plan = plan_json(tmp_path, doc)
    check_contract(plan, doc)
    reasons = {u["name"]: u["reason"] for u in plan["unplaceable"]}
    assert reasons["gpu"].startswith("gpu:")
    assert "ARM64" in reasons["arm"]
    assert all(i["instanceType"].startswith("c7a.") for i in plan["instances"])


def test_spot(tmp_path):
    doc = dict(WEB, capacityOptionType="SPOT")
    plan = plan_json(tmp_path, doc)
    check_contract(plan, doc)
    on_demand = plan_json(tmp_path, WEB)
    assert plan["hourlyCost"] < on_demand["hourlyCost"]


def test_table_output(tmp_path):
    r = run_plan(tmp_path, WEB)
    assert r.returncode == 0, r.stderr
    assert "instance type" in r.stdout
    assert "hourly cost $" in r.stdout and "lower bound $" in r.stdout and "cost/bound" in r.stdout


@pytest.mark.parametrize(
    "doc,raw,needle",
    [
        ({"tasks": []}, None, "region"),
        ({"region": "us-east-1"}, None, "tasks"),
        ({"region": "us-east-1", "tasks": [{"name": "a", "memory": 512, "count": 1}]}, None, "tasks[0].cpu"),
        ({"region": "us-east-1", "tasks": [{"name": "a", "cpu": -1, "memory": 512, "count": 1}]}, None, "tasks[0].cpu"),
        ({"region": "us-east-1", "tasks": [{"name": "a", "cpu": 1, "memory": 1, "count": 1, "architecture": "MIPS"}]}, None, "tasks[0].architecture"),
        ({"region": "us-east-1", "capacityOptionType": "RESERVED", "tasks": []}, None, "capacityOptionType"),
        ({"region": "mars-north-1", "tasks": []}, None, "region"),
        ({"region": "us-east-1", "instanceRequirements": {"vCpuCount": {"min": 4, "max": 2}, "memoryMiB": {"min": 0}}, "tasks": []}, None, "instanceRequirements"),
        ({"region": "us-east-1", "tasks": [], "bogus": 1}, None, "bogus"),
        (None, "{not json", "not valid JSON"),
    ],
)
def test_bad_input_exits_2_and_names_the_field(tmp_path, doc, raw, needle):
    r = run_plan(tmp_path, doc, raw=raw)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert r.stderr.startswith("error: ")
