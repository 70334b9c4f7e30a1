"""Task scale-in protection: UpdateTaskProtection and GetTaskProtection.

The server runs no scheduler here, so tasks stay PROVISIONING; a StopTask of
a never-placed task stops it at once.
"""

import time
from datetime import datetime, timezone

import pytest

from helpers import (
    ACCOUNT,
    REGION,
    create_mi_cluster,
    expect_error,
    register_td,
    strategy,
    uid,
)

# Seconds of slack between this process's clock and the server's answer.
SLACK = 30


@pytest.fixture(scope="module")
def env(ecs):
    cluster, cp = create_mi_cluster(ecs, "prot")
    td = register_td(ecs)
    return {"cluster": cluster, "cp": cp, "td": td}


def run(ecs, env, count=1):
    resp = ecs.run_task(
        cluster=env["cluster"],
        taskDefinition=env["td"]["taskDefinitionArn"],
        capacityProviderStrategy=strategy(env["cp"]),
        count=count,
    )
    assert resp["failures"] == []
    return [t["taskArn"] for t in resp["tasks"]]


def epoch(value) -> float:
    """expirationDate as boto3 gives it (a datetime) or as the CLI prints it (a number or ISO 8601 text)."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def test_enable_with_the_default_expiry_of_two_hours(ecs, env):
    (arn,) = run(ecs, env)
    before = time.time()
    resp = ecs.update_task_protection(cluster=env["cluster"], tasks=[arn], protectionEnabled=True)
    assert resp["failures"] == []
    (p,) = resp["protectedTasks"]
    assert p["taskArn"] == arn
    assert p["protectionEnabled"] is True
    assert abs(epoch(p["expirationDate"]) - (before + 120 * 60)) < SLACK

    got = ecs.get_task_protection(cluster=env["cluster"], tasks=[arn])
    assert got["failures"] == []
    (g,) = got["protectedTasks"]
    assert g["taskArn"] == arn and g["protectionEnabled"] is True
    assert epoch(g["expirationDate"]) == epoch(p["expirationDate"])


def test_custom_expiry_by_task_id_and_cluster_arn(ecs, env):
    (arn,) = run(ecs, env)
    task_id = arn.rsplit("/", 1)[1]
    cluster_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{env['cluster']}"
    before = time.time()
    resp = ecs.update_task_protection(cluster=cluster_arn, tasks=[task_id], protectionEnabled=True, expiresInMinutes=15)
    (p,) = resp["protectedTasks"]
    assert p["taskArn"] == arn
    assert abs(epoch(p["expirationDate"]) - (before + 15 * 60)) < SLACK
    # Calling again resets the expiry.
    resp = ecs.update_task_protection(cluster=env["cluster"], tasks=[arn], protectionEnabled=True, expiresInMinutes=600)
    assert abs(epoch(resp["protectedTasks"][0]["expirationDate"]) - (before + 600 * 60)) < SLACK


def test_disable(ecs, env):
    arns = run(ecs, env, count=2)
    ecs.update_task_protection(cluster=env["cluster"], tasks=arns, protectionEnabled=True)
    resp = ecs.update_task_protection(cluster=env["cluster"], tasks=[arns[0]], protectionEnabled=False)
    (p,) = resp["protectedTasks"]
    assert p["taskArn"] == arns[0]
    assert p["protectionEnabled"] is False
    assert "expirationDate" not in p
    got = ecs.get_task_protection(cluster=env["cluster"], tasks=arns)["protectedTasks"]
    assert [(g["taskArn"], g["protectionEnabled"]) for g in got] == [(arns[0], False), (arns[1], True)]
    assert "expirationDate" not in got[0]


def test_get_of_a_never_protected_task_reads_false(ecs, env):
    (arn,) = run(ecs, env)
    got = ecs.get_task_protection(cluster=env["cluster"], tasks=[arn])
    assert got["failures"] == []
    assert got["protectedTasks"] == [{"taskArn": arn, "protectionEnabled": False}]


@pytest.mark.parametrize("minutes", [1, 2880])
def test_expiry_bounds_accepted(ecs, env, minutes):
    (arn,) = run(ecs, env)
    before = time.time()
    resp = ecs.update_task_protection(
        cluster=env["cluster"], tasks=[arn], protectionEnabled=True, expiresInMinutes=minutes
    )
    assert resp["failures"] == []
    assert abs(epoch(resp["protectedTasks"][0]["expirationDate"]) - (before + minutes * 60)) < SLACK


@pytest.mark.parametrize("minutes", [0, 2881, -5])
def test_expiry_out_of_range_refused(ecs_nv, env, minutes):
    (arn,) = run(ecs_nv, env)
    e = expect_error(
        "InvalidParameterException",
        ecs_nv.update_task_protection,
        cluster=env["cluster"],
        tasks=[arn],
        protectionEnabled=True,
        expiresInMinutes=minutes,
    )
    assert "expiresInMinutes" in e.response["Error"]["Message"]
    assert "2880" in e.response["Error"]["Message"]
    # Nothing changed.
    got = ecs_nv.get_task_protection(cluster=env["cluster"], tasks=[arn])["protectedTasks"]
    assert got[0]["protectionEnabled"] is False


def test_unknown_task_is_a_missing_failure(ecs, env):
    (arn,) = run(ecs, env)
    ghost = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{env['cluster']}/{'0' * 32}"
    resp = ecs.update_task_protection(cluster=env["cluster"], tasks=[arn, ghost], protectionEnabled=True)
    assert [p["taskArn"] for p in resp["protectedTasks"]] == [arn]
    assert len(resp["failures"]) == 1
    f = resp["failures"][0]
    assert f["arn"] == ghost and f["reason"] == "MISSING"

    got = ecs.get_task_protection(cluster=env["cluster"], tasks=[ghost])
    assert got["protectedTasks"] == []
    assert got["failures"][0]["arn"] == ghost and got["failures"][0]["reason"] == "MISSING"


def test_stopped_task_is_a_failure(ecs, env):
    (arn,) = run(ecs, env)
    stopped = ecs.stop_task(cluster=env["cluster"], task=arn)["task"]
    assert stopped["lastStatus"] == "STOPPED"
    resp = ecs.update_task_protection(cluster=env["cluster"], tasks=[arn], protectionEnabled=True)
    assert resp["protectedTasks"] == []
    (f,) = resp["failures"]
    assert f["arn"] == arn
    assert f["reason"] == "TASK_NOT_VALID"
    assert "stopped" in f["detail"]
    got = ecs.get_task_protection(cluster=env["cluster"], tasks=[arn])["protectedTasks"]
    assert got == [{"taskArn": arn, "protectionEnabled": False}]


def test_more_than_ten_tasks_refused(ecs_nv, env):
    arns = run(ecs_nv, env, count=10)
    ok = ecs_nv.update_task_protection(cluster=env["cluster"], tasks=arns, protectionEnabled=True)
    assert len(ok["protectedTasks"]) == 10 and ok["failures"] == []
    e = expect_error(
        "InvalidParameterException",
        ecs_nv.update_task_protection,
        cluster=env["cluster"],
        tasks=arns + [arns[0]],
        protectionEnabled=True,
    )
    assert "10" in e.response["Error"]["Message"]
    expect_error("InvalidParameterException", ecs_nv.update_task_protection, cluster=env["cluster"], tasks=[], protectionEnabled=True)


def test_missing_protection_enabled_refused(raw, env, ecs):
    (arn,) = run(ecs, env)
    r = raw("UpdateTaskProtection", {"cluster": env["cluster"], "tasks": [arn]})
    assert r.status_code == 400
    body = r.json()
    assert body["__type"].split("#")[-1] == "InvalidParameterException"
    assert "protectionEnabled" in body["message"]


def test_unknown_cluster(ecs):
    expect_error(
        "ClusterNotFoundException",
        ecs.update_task_protection,
        cluster=uid("nope"),
        tasks=["abc"],
        protectionEnabled=True,
    )
    expect_error("ClusterNotFoundException", ecs.get_task_protection, cluster=uid("nope"), tasks=["abc"])


def test_aws_cli(aws, ecs, env):
    """The aws CLI's update-task-protection and get-task-protection (skipped when the CLI is not installed)."""
    (arn,) = run(ecs, env)
    before = time.time()
    r = aws(
        "ecs",
        "update-task-protection",
        "--cluster",
        env["cluster"],
        "--tasks",
        arn,
        "--protection-enabled",
        "--expires-in-minutes",
        "60",
        check=True,
    )
    assert r.json["failures"] == []
    (p,) = r.json["protectedTasks"]
    assert p["taskArn"] == arn and p["protectionEnabled"] is True
    assert abs(epoch(p["expirationDate"]) - (before + 3600)) < SLACK

    r = aws("ecs", "get-task-protection", "--cluster", env["cluster"], "--tasks", arn, check=True)
    assert r.json["protectedTasks"][0]["protectionEnabled"] is True

    r = aws("ecs", "update-task-protection", "--cluster", env["cluster"], "--tasks", arn, "--no-protection-enabled", check=True)
    assert r.json["protectedTasks"][0]["protectionEnabled"] is False

    r = aws(
        "ecs",
        "update-task-protection",
        "--cluster",
        env["cluster"],
        "--tasks",
        arn,
        "--protection-enabled",
        "--expires-in-minutes",
        "2881",
    )
    assert r.returncode != 0
    assert "InvalidParameterException" in r.stderr
