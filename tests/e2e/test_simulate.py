"""`berth simulate`: days of a fleet's life under the real controllers, through the real binary.

No server: each test writes a scenario file, runs the binary and checks the
contract (the JSON report's fields, cost = instances + fee, the lifecycle's
promises on a short run, exit code 2 and a message naming the field on bad
input, the table for people with its timeline).
"""

import json
import os
import subprocess

import pytest

from helpers import berth_bin

PROVIDER = {
    "infrastructureRoleArn": "arn:aws:iam::123456789012:role/ecsInfrastructureRole",
    "instanceLaunchTemplate": {
        "ec2InstanceProfileArn": "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile",
        "networkConfiguration": {"subnets": ["subnet-0123456789abcdef0", "subnet-0000000000000000b"]},
        "instanceRequirements": {"vCpuCount": {"min": 2, "max": 4}, "memoryMiB": {"min": 4096}},
    },
}

# Three days with a one-day drain age: every instance is replaced at least
# once, and each kind of event happens.
SCENARIO = {
    "duration": "3d",
    "region": "us-east-1",
    "seed": 3,
    "capacityProvider": PROVIDER,
    "tags": {"berth:drain-age": "1d", "berth:max-lifetime": "2d"},
    "services": [
        {"name": "web", "cpu": 512, "memory": 1024, "desiredCount": 8, "minimumHealthyPercent": 100, "maximumPercent": 200}
    ],
    "standaloneTasks": [{"name": "batch", "cpu": 1024, "memory": 2048, "count": 2, "runFor": "6h"}],
    "events": [
        {"at": "6h", "kind": "scale", "service": "web", "desiredCount": 12},
        {"at": "12h", "kind": "set-image", "version": "2"},
        {"at": "30h", "kind": "instance-failure", "count": 1},
        {"at": "40h", "kind": "spot-interruption", "count": 1},
        {"at": "50h", "kind": "agent-disconnect", "count": 1, "for": "5m"},
    ],
}


def run_sim(tmp_path, doc, *extra, raw=None, path=None):
    binary = berth_bin()
    if not os.path.exists(binary):
        pytest.fail(f"berth binary not found at {binary}: build it with `cargo build -p berth` or set BERTH_BIN")
    if path is None:
        path = tmp_path / "scenario.json"
        path.write_text(raw if raw is not None else json.dumps(doc))
    return subprocess.run(
        [binary, "simulate", "--scenario", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    r = run_sim(tmp_path_factory.mktemp("sim"), SCENARIO, "--output", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_json_shape(report):
    for key in (
        "instancesLaunched",
        "instancesTerminated",
        "maxInstanceAgeSeconds",
        "maxConcurrentDrains",
        "imageVersions",
        "drains",
        "taskStops",
        "services",
        "cost",
        "wallSeconds",
    ):
        assert key in report, key
    assert set(report["drains"]) == {"lifetime", "image", "repair", "spot", "consolidation", "user"}
    assert set(report["cost"]) >= {"instanceUsd", "feeUsd", "totalUsd"}
    assert report["cost"]["totalUsd"] == pytest.approx(report["cost"]["instanceUsd"] + report["cost"]["feeUsd"], abs=0.02)
    assert report["cost"]["totalUsd"] > 0
    web = report["services"]["web"]
    assert set(web) >= {"desired", "minRunning", "maxRunning", "minRunningFraction", "secondsBelowMinimum"}
    assert web["desired"] == 12
    assert web["maxRunning"] >= 12
    assert 0 <= web["minRunningFraction"] <= 1
    assert report["wallSeconds"] > 0
    assert isinstance(report["timeline"], list) and report["timeline"]


def test_the_lifecycle_keeps_its_promises(report):
    policy = report["policy"]
    assert policy["drainAgeSeconds"] == 86400 and policy["maxLifetimeSeconds"] == 2 * 86400
    assert report["maxInstanceAgeSeconds"] <= policy["maxLifetimeSeconds"] + 1
    assert report["invariants"]["tasksRunningTwice"] == 0
    assert report["invariants"]["budgetExceeded"] == 0
    assert report["drains"]["lifetime"] > 0
    assert report["drains"]["image"] > 0
    assert report["drains"]["spot"] == 1
    assert list(report["imageVersions"]) == ["2"]
    assert report["instancesTerminated"] >= report["invariants"]["peakInstances"]
    assert report["taskStops"].get("EssentialContainerExited") == 2
    assert report["taskStops"].get("SpotInterruption", 0) > 0


def test_table_output_tells_the_story(tmp_path):
    r = run_sim(tmp_path, SCENARIO)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in ("instances launched / terminated", "oldest instance", "web", "timeline", "set-image", "scale: web from 8 to 12"):
        assert needle in out, (needle, out)


def bad(**changes):
    doc = json.loads(json.dumps(SCENARIO))
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    return doc


@pytest.mark.parametrize(
    "doc,raw,needle",
    [
        (bad(duration=None), None, "duration"),
        (bad(duration="forever"), None, "duration"),
        (bad(services=[{"name": "web", "cpu": "lots", "memory": 1024, "desiredCount": 1}]), None, "services[0].cpu"),
        (bad(services=[{"name": "web", "cpu": 256, "memory": 512}]), None, "services[0].desiredCount"),
        (bad(events=[{"at": "1h", "kind": "meteor"}]), None, "events[0].kind"),
        (bad(events=[{"at": "9d", "kind": "set-image", "version": "2"}]), None, "events[0].at"),
        (bad(events=[{"at": "1h", "kind": "scale", "service": "nope", "desiredCount": 1}]), None, "events[0].service"),
        (bad(tags={"berth:drain-age": "soon"}), None, "tags"),
        (bad(capacityProvider={"instanceLaunchTemplate": {}}), None, "capacityProvider"),
        (bad(bogus=1), None, "bogus"),
        (None, "{not json", "not valid JSON"),
    ],
)
def test_bad_input_exits_2_and_names_the_field(tmp_path, doc, raw, needle):
    r = run_sim(tmp_path, doc, raw=raw)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr
    assert r.stderr.startswith("error: "), r.stderr


def test_a_missing_file_exits_2(tmp_path):
    r = run_sim(tmp_path, None, path=tmp_path / "nope.json")
    assert r.returncode == 2, r.stderr
    assert "--scenario" in r.stderr
