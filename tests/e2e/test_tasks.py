"""Tasks: RunTask, StopTask, DescribeTasks, ListTasks."""

import re

import pytest

from helpers import (
    ACCOUNT,
    REGION,
    create_mi_cluster,
    expect_error,
    register_td,
    simple_container,
    strategy,
    uid,
)

REFUSED = ("ClientException", "InvalidParameterException")
TASK_ARN = re.compile(rf"^arn:aws:ecs:{REGION}:{ACCOUNT}:task/(?P<cluster>[A-Za-z0-9_-]+)/(?P<id>[0-9a-f]{{32}})$")


@pytest.fixture(scope="module")
def env(ecs):
    """One cluster with a managed instances provider, and a two-container task definition."""
    cluster, cp = create_mi_cluster(ecs, "tasks")
    family = uid("web")
    td = register_td(
        ecs,
        family,
        containers=[simple_container("app"), simple_container("sidecar", essential=False, memory=64)],
    )
    return {"cluster": cluster, "cp": cp, "family": family, "td": td}


def run(ecs, env, **kw):
    kw.setdefault("cluster", env["cluster"])
    kw.setdefault("taskDefinition", env["td"]["taskDefinitionArn"])
    if "launchType" not in kw:
        kw.setdefault("capacityProviderStrategy", strategy(env["cp"]))
    return ecs.run_task(**kw)


def test_run_three_tasks(ecs, env):
    resp = run(
        ecs,
        env,
        count=3,
        enableExecuteCommand=True,
        startedBy="e2e-runner",
        tags=[{"key": "purpose", "value": "e2e"}],
    )
    assert resp["failures"] == []
    tasks = resp["tasks"]
    assert len(tasks) == 3
    assert len({t["taskArn"] for t in tasks}) == 3
    for t in tasks:
        m = TASK_ARN.match(t["taskArn"])
        assert m, t["taskArn"]
        assert m["cluster"] == env["cluster"]
        assert t["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{env['cluster']}"
        assert t["taskDefinitionArn"] == env["td"]["taskDefinitionArn"]
        assert t["lastStatus"] == "PROVISIONING"
        assert t["desiredStatus"] == "RUNNING"
        assert t["launchType"] == "MANAGED_INSTANCES"
        assert t["capacityProviderName"] == env["cp"]
        assert t["group"] == f"family:{env['family']}"
        assert t["enableExecuteCommand"] is True
        assert t["startedBy"] == "e2e-runner"
        assert sorted(c["name"] for c in t["containers"]) == ["app", "sidecar"]
        for c in t["containers"]:
            assert c["taskArn"] == t["taskArn"]
            assert c.get("image")
        assert t.get("createdAt") is not None
        assert "stoppedAt" not in t
    described = ecs.describe_tasks(cluster=env["cluster"], tasks=[t["taskArn"] for t in tasks], include=["TAGS"])
    assert described["failures"] == []
    assert sorted(t["taskArn"] for t in described["tasks"]) == sorted(t["taskArn"] for t in tasks)
    for t in described["tasks"]:
        assert t["tags"] == [{"key": "purpose", "value": "e2e"}]
        assert t["lastStatus"] == "PROVISIONING"
        assert t["enableExecuteCommand"] is True
    plain = ecs.describe_tasks(cluster=env["cluster"], tasks=[tasks[0]["taskArn"]])["tasks"][0]
    assert not plain.get("tags"), "tags only with include TAGS"


def test_describe_by_task_id(ecs, env):
    t = run(ecs, env)["tasks"][0]
    task_id = t["taskArn"].rsplit("/", 1)[1]
    got = ecs.describe_tasks(cluster=env["cluster"], tasks=[task_id])
    assert [x["taskArn"] for x in got["tasks"]] == [t["taskArn"]]


def test_count_bounds(ecs, ecs_nv, env):
    expect_error("InvalidParameterException", run, ecs_nv, env, count=11)
    expect_error("InvalidParameterException", run, ecs_nv, env, count=0)
    assert len(run(ecs, env, count=10)["tasks"]) == 10


@pytest.mark.parametrize("launch_type", ["FARGATE", "EC2", "EXTERNAL", "MANAGED_INSTANCES"])
def test_launch_type_refused(ecs, env, launch_type):
    expect_error("InvalidParameterException", run, ecs, env, launchType=launch_type)


def test_launch_type_with_strategy_refused(ecs, env):
    expect_error(
        "InvalidParameterException",
        ecs.run_task,
        cluster=env["cluster"],
        taskDefinition=env["td"]["taskDefinitionArn"],
        launchType="MANAGED_INSTANCES",
        capacityProviderStrategy=strategy(env["cp"]),
    )


def test_no_strategy_and_no_cluster_default(ecs, env):
    e = expect_error(
        "InvalidParameterException", ecs.run_task, cluster=env["cluster"], taskDefinition=env["td"]["taskDefinitionArn"]
    )
    assert e.response["Error"]["Message"]


def test_cluster_default_strategy(ecs):
    cluster, cp = create_mi_cluster(ecs, "dflt")
    td = register_td(ecs)
    expect_error("InvalidParameterException", ecs.run_task, cluster=cluster, taskDefinition=td["taskDefinitionArn"])
    c = ecs.put_cluster_capacity_providers(
        cluster=cluster,
        capacityProviders=[cp],
        defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 1, "base": 0}],
    )["cluster"]
    assert c["defaultCapacityProviderStrategy"][0]["capacityProvider"] == cp
    tasks = ecs.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"], count=2)["tasks"]
    assert [t["capacityProviderName"] for t in tasks] == [cp, cp]
    assert all(t["launchType"] == "MANAGED_INSTANCES" for t in tasks)


def test_strategy_naming_a_provider_of_another_cluster(ecs, env):
    _, other_cp = create_mi_cluster(ecs, "other")
    expect_error("InvalidParameterException", run, ecs, env, capacityProviderStrategy=strategy(other_cp))
    expect_error("InvalidParameterException", run, ecs, env, capacityProviderStrategy=strategy(uid("nope")))


def test_strategy_spreads_over_two_providers(ecs):
    cluster, cp1 = create_mi_cluster(ecs, "two")
    from helpers import mi_provider

    cp2 = uid("mi")
    ecs.create_capacity_provider(name=cp2, cluster=cluster, managedInstancesProvider=mi_provider())
    td = register_td(ecs)
    tasks = ecs.run_task(
        cluster=cluster,
        taskDefinition=td["taskDefinitionArn"],
        count=6,
        capacityProviderStrategy=[
            {"capacityProvider": cp1, "weight": 1, "base": 2},
            {"capacityProvider": cp2, "weight": 1},
        ],
    )["tasks"]
    names = [t["capacityProviderName"] for t in tasks]
    assert names.count(cp1) == 4 and names.count(cp2) == 2, names


def test_inactive_task_definition_refused(ecs, env):
    td = register_td(ecs)
    ecs.deregister_task_definition(taskDefinition=td["taskDefinitionArn"])
    expect_error(REFUSED, run, ecs, env, taskDefinition=td["taskDefinitionArn"])


def test_unknown_task_definition_refused(ecs, env):
    expect_error(REFUSED, run, ecs, env, taskDefinition=uid("nope"))
    expect_error(REFUSED, run, ecs, env, taskDefinition=f"{env['family']}:99")


def test_task_definition_not_for_managed_instances_refused(ecs, env):
    td = ecs.register_task_definition(
        family=uid("bridge"), networkMode="bridge", containerDefinitions=[simple_container()]
    )["taskDefinition"]
    expect_error(REFUSED, run, ecs, env, taskDefinition=td["taskDefinitionArn"])


def test_run_by_family_uses_latest_active_revision(ecs, env):
    family = uid("latest")
    register_td(ecs, family)
    second = register_td(ecs, family)
    register_td(ecs, family)
    ecs.deregister_task_definition(taskDefinition=f"{family}:3")
    t = run(ecs, env, taskDefinition=family)["tasks"][0]
    assert t["taskDefinitionArn"] == second["taskDefinitionArn"]


def test_unknown_container_override_refused(ecs, env):
    expect_error(
        "InvalidParameterException",
        run,
        ecs,
        env,
        overrides={"containerOverrides": [{"name": "not-a-container", "command": ["true"]}]},
    )


def test_container_overrides_are_kept(ecs, env):
    t = run(
        ecs,
        env,
        overrides={
            "containerOverrides": [
                {"name": "app", "command": ["echo", "hi"], "environment": [{"name": "X", "value": "1"}]}
            ]
        },
    )["tasks"][0]
    described = ecs.describe_tasks(cluster=env["cluster"], tasks=[t["taskArn"]])["tasks"][0]
    app = [o for o in described["overrides"]["containerOverrides"] if o["name"] == "app"][0]
    assert app["command"] == ["echo", "hi"]
    assert app["environment"] == [{"name": "X", "value": "1"}]


def test_group_and_started_by(ecs, env):
    t = run(ecs, env, group="batch-7", startedBy="scheduler")["tasks"][0]
    assert t["group"] == "batch-7"
    assert t["startedBy"] == "scheduler"


def test_bad_tags_refused(ecs, env):
    expect_error("InvalidParameterException", run, ecs, env, tags=[{"key": "aws:x", "value": "y"}])


def test_cluster_not_found(ecs, env):
    expect_error("ClusterNotFoundException", run, ecs, env, cluster=uid("nope"))
    expect_error("ClusterNotFoundException", ecs.describe_tasks, cluster=uid("nope"), tasks=["abc"])
    expect_error("ClusterNotFoundException", ecs.stop_task, cluster=uid("nope"), task="abc")


# --- clientToken --------------------------------------------------------------


def test_client_token_is_idempotent(ecs, env):
    token = uid("tok")
    a = run(ecs, env, count=2, clientToken=token, startedBy="idem")["tasks"]
    b = run(ecs, env, count=2, clientToken=token, startedBy="idem")["tasks"]
    assert [t["taskArn"] for t in a] == [t["taskArn"] for t in b]
    listed = ecs.list_tasks(cluster=env["cluster"], startedBy="idem")["taskArns"]
    assert sorted(listed) == sorted(t["taskArn"] for t in a), "the retry started nothing new"


def test_client_token_with_a_different_request_conflicts(ecs, env):
    token = uid("tok")
    run(ecs, env, count=1, clientToken=token)
    expect_error("ConflictException", run, ecs, env, count=2, clientToken=token)
    expect_error("ConflictException", run, ecs, env, count=1, clientToken=token, startedBy="someone-else")


# --- stop ---------------------------------------------------------------------


def test_stop_task_with_reason(ecs, env):
    t = run(ecs, env)["tasks"][0]
    reason = "Scaling down: e2e — reason with ünïcode and 'quotes'"
    stopped = ecs.stop_task(cluster=env["cluster"], task=t["taskArn"], reason=reason)["task"]
    assert stopped["taskArn"] == t["taskArn"]
    assert stopped["desiredStatus"] == "STOPPED"
    assert stopped["stopCode"] == "UserInitiated"
    assert stopped["stoppedReason"] == reason
    # Never placed, so it is stopped at once.
    assert stopped["lastStatus"] == "STOPPED"
    ecs.get_waiter("tasks_stopped").wait(
        cluster=env["cluster"], tasks=[t["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 5}
    )
    d = ecs.describe_tasks(cluster=env["cluster"], tasks=[t["taskArn"]])["tasks"][0]
    assert d["lastStatus"] == "STOPPED"
    assert d["desiredStatus"] == "STOPPED"
    assert d["stoppedReason"] == reason
    assert d["stopCode"] == "UserInitiated"
    assert d.get("stoppedAt") is not None
    assert all(c["lastStatus"] == "STOPPED" for c in d["containers"])


def test_stop_twice_keeps_the_first_reason(ecs, env):
    t = run(ecs, env)["tasks"][0]
    ecs.stop_task(cluster=env["cluster"], task=t["taskArn"], reason="first")
    again = ecs.stop_task(cluster=env["cluster"], task=t["taskArn"], reason="second")["task"]
    assert again["desiredStatus"] == "STOPPED"
    assert again["stoppedReason"] == "first"


def test_stop_by_id(ecs, env):
    t = run(ecs, env)["tasks"][0]
    task_id = t["taskArn"].rsplit("/", 1)[1]
    assert ecs.stop_task(cluster=env["cluster"], task=task_id)["task"]["desiredStatus"] == "STOPPED"


def test_stop_unknown_task(ecs, env):
    expect_error("InvalidParameterException", ecs.stop_task, cluster=env["cluster"], task="0" * 32)


def test_stop_task_of_another_cluster(ecs, env):
    other, cp = create_mi_cluster(ecs, "o")
    t = ecs.run_task(cluster=other, taskDefinition=env["td"]["taskDefinitionArn"], capacityProviderStrategy=strategy(cp))[
        "tasks"
    ][0]
    expect_error("InvalidParameterException", ecs.stop_task, cluster=env["cluster"], task=t["taskArn"])


# --- describe / list -------------------------------------------------------------


def test_describe_missing_failures(ecs, env):
    t = run(ecs, env)["tasks"][0]
    missing_id = "f" * 32
    missing_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{env['cluster']}/{'e' * 32}"
    resp = ecs.describe_tasks(cluster=env["cluster"], tasks=[t["taskArn"], missing_id, missing_arn])
    assert [x["taskArn"] for x in resp["tasks"]] == [t["taskArn"]]
    assert sorted((f["arn"], f["reason"]) for f in resp["failures"]) == sorted(
        [
            (f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{env['cluster']}/{missing_id}", "MISSING"),
            (missing_arn, "MISSING"),
        ]
    )


def test_list_filters(ecs):
    cluster, cp = create_mi_cluster(ecs, "lf")
    fam_a, fam_b = uid("fa"), uid("fb")
    td_a, td_b = register_td(ecs, fam_a), register_td(ecs, fam_b)
    a = ecs.run_task(cluster=cluster, taskDefinition=td_a["taskDefinitionArn"], capacityProviderStrategy=strategy(cp), count=3, startedBy="alice")["tasks"]
    b = ecs.run_task(cluster=cluster, taskDefinition=td_b["taskDefinitionArn"], capacityProviderStrategy=strategy(cp), count=2, startedBy="bob")["tasks"]
    arns_a = sorted(t["taskArn"] for t in a)
    arns_b = sorted(t["taskArn"] for t in b)

    assert sorted(ecs.list_tasks(cluster=cluster)["taskArns"]) == sorted(arns_a + arns_b)
    assert sorted(ecs.list_tasks(cluster=cluster, family=fam_a)["taskArns"]) == arns_a
    assert sorted(ecs.list_tasks(cluster=cluster, family=fam_b)["taskArns"]) == arns_b
    assert sorted(ecs.list_tasks(cluster=cluster, startedBy="bob")["taskArns"]) == arns_b
    assert ecs.list_tasks(cluster=cluster, startedBy="nobody")["taskArns"] == []
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == []

    ecs.stop_task(cluster=cluster, task=a[0]["taskArn"], reason="done")
    assert ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"] == [a[0]["taskArn"]]
    running = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]
    assert a[0]["taskArn"] not in running and len(running) == 4
    assert a[0]["taskArn"] not in ecs.list_tasks(cluster=cluster)["taskArns"], "RUNNING is the default desiredStatus"
    assert sorted(ecs.list_tasks(cluster=cluster, family=fam_a, desiredStatus="STOPPED")["taskArns"]) == [a[0]["taskArn"]]
    assert ecs.list_tasks(cluster=cluster, launchType="FARGATE")["taskArns"] == []
    assert len(ecs.list_tasks(cluster=cluster, launchType="MANAGED_INSTANCES")["taskArns"]) == 4


def test_list_pagination_over_25_tasks(ecs, env):
    cluster, cp = create_mi_cluster(ecs, "pg")
    td = env["td"]["taskDefinitionArn"]
    started = []
    for n in (10, 10, 5):
        started += [t["taskArn"] for t in ecs.run_task(cluster=cluster, taskDefinition=td, capacityProviderStrategy=strategy(cp), count=n)["tasks"]]
    seen = []
    pages = 0
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, PaginationConfig={"PageSize": 7}):
        pages += 1
        assert len(page["taskArns"]) <= 7
        seen += page["taskArns"]
    assert len(seen) == 25 and len(set(seen)) == 25
    assert sorted(seen) == sorted(started)
    assert pages >= 4


def test_list_bad_arguments(ecs, ecs_nv, env):
    expect_error("InvalidParameterException", ecs_nv.list_tasks, cluster=env["cluster"], maxResults=0)
    expect_error("InvalidParameterException", ecs_nv.list_tasks, cluster=env["cluster"], maxResults=101)
    expect_error("InvalidParameterException", ecs.list_tasks, cluster=env["cluster"], nextToken="garbage")


def test_propagate_tags_from_task_definition(ecs, env):
    td = register_td(ecs, tags=[{"key": "owner", "value": "td"}, {"key": "both", "value": "td"}])
    t = run(
        ecs, env, taskDefinition=td["taskDefinitionArn"], propagateTags="TASK_DEFINITION", tags=[{"key": "both", "value": "task"}]
    )["tasks"][0]
    tags = ecs.describe_tasks(cluster=env["cluster"], tasks=[t["taskArn"]], include=["TAGS"])["tasks"][0]["tags"]
    assert sorted(tags, key=lambda x: x["key"]) == [{"key": "both", "value": "task"}, {"key": "owner", "value": "td"}]


def test_cpu_and_memory_overrides(ecs, env):
    t = run(ecs, env, overrides={"cpu": "512", "memory": "1GB"})["tasks"][0]
    assert t["cpu"] == "512"
    assert t["memory"] == "1024"


def test_network_configuration_checks(ecs, ecs_nv, env):
    ok = run(
        ecs,
        env,
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": ["subnet-0123456789abcdef0"], "securityGroups": ["sg-0123456789abcdef0"]}
        },
    )["tasks"][0]
    assert ok["lastStatus"] == "PROVISIONING"
    expect_error(
        "InvalidParameterException",
        run,
        ecs,
        env,
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-nothex"]}},
    )
    expect_error(
        "InvalidParameterException",
        run,
        ecs_nv,
        env,
        networkConfiguration={"awsvpcConfiguration": {"subnets": []}},
    )


def test_request_limits(ecs, ecs_nv, env):
    expect_error("InvalidParameterException", run, ecs, env, startedBy="s" * 129)
    expect_error("InvalidParameterException", run, ecs, env, clientToken="t" * 65)
    expect_error(
        "InvalidParameterException", run, ecs_nv, env, capacityProviderStrategy=[{"capacityProvider": env["cp"], "weight": 1001}]
    )
    expect_error("InvalidParameterException", ecs.describe_tasks, cluster=env["cluster"], tasks=[f"{i:032x}" for i in range(101)])


def test_container_overrides_over_8192_characters_refused(ecs, env):
    # ECS: "Container Overrides length must be at most 8192" (InvalidParameterException).
    big = [{"name": f"V{i:03d}", "value": "x" * 90} for i in range(100)]
    e = expect_error(
        "InvalidParameterException",
        run,
        ecs,
        env,
        overrides={"containerOverrides": [{"name": "app", "environment": big}]},
    )
    assert e.response["Error"]["Message"]
    small = [{"name": f"V{i:03d}", "value": "x" * 90} for i in range(20)]
    assert run(ecs, env, overrides={"containerOverrides": [{"name": "app", "environment": small}]})["tasks"]
