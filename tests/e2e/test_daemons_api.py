"""ECS managed daemons, the API half: daemon task definitions, daemons, their
deployments and revisions, and the daemon waiters, through boto3.

No daemon task is started by these operations (the daemon reconciler does
that), so these tests check what the API records and the statuses the
waiters read.
"""

import re

import pytest
from botocore.exceptions import WaiterError

from helpers import (
    ACCOUNT,
    REGION,
    create_mi_cluster,
    expect_error,
    uid,
)

PREFIX = f"arn:aws:ecs:{REGION}:{ACCOUNT}"
FAST = {"Delay": 1, "MaxAttempts": 3}


def container(name="agent", **kw):
    c = {"name": name, "image": "public.ecr.aws/docker/library/busybox:latest", "memory": 64}
    c.update(kw)
    return c


def register(ecs, family=None, **kw):
    family = family or uid("dtd")
    kw.setdefault("containerDefinitions", [container()])
    arn = ecs.register_daemon_task_definition(family=family, **kw)["daemonTaskDefinitionArn"]
    return family, arn


@pytest.fixture(scope="module")
def env(ecs):
    cluster, cp = create_mi_cluster(ecs, "dmn")
    family, td = register(ecs)
    return {"cluster": cluster, "cp": cp, "family": family, "td": td}


def create(ecs, env, name=None, **kw):
    kw.setdefault("clusterArn", env["cluster"])
    kw.setdefault("daemonName", name or uid("d"))
    kw.setdefault("daemonTaskDefinitionArn", env["td"])
    kw.setdefault("capacityProviderArns", [env["cp"]])
    return ecs.create_daemon(**kw)


def test_boto3_knows_the_daemon_waiters(ecs):
    for w in (
        "daemon_active",
        "daemon_deployment_successful",
        "daemon_deployment_stopped",
        "daemon_task_definition_active",
        "daemon_task_definition_deleted",
    ):
        assert w in ecs.waiter_names


def test_register_describe_and_wait_for_a_daemon_task_definition(ecs):
    family = uid("agent")
    _, arn = register(
        ecs,
        family,
        cpu="256",
        memory="512",
        containerDefinitions=[container(mountPoints=[{"sourceVolume": "logs", "containerPath": "/logs"}])],
        volumes=[{"name": "logs", "host": {"sourcePath": "/var/log"}}],
        tags=[{"key": "team", "value": "e2e"}],
    )
    assert arn == f"{PREFIX}:daemon-task-definition/{family}:1"
    ecs.get_waiter("daemon_task_definition_active").wait(daemonTaskDefinition=arn, WaiterConfig=FAST)
    for given in (family, f"{family}:1", arn):
        d = ecs.describe_daemon_task_definition(daemonTaskDefinition=given)["daemonTaskDefinition"]
        assert d["daemonTaskDefinitionArn"] == arn
        assert (d["family"], d["revision"], d["status"]) == (family, 1, "ACTIVE")
        assert (d["cpu"], d["memory"]) == ("256", "512")
        assert d["containerDefinitions"][0]["essential"] is True
        assert d["volumes"] == [{"name": "logs", "host": {"sourcePath": "/var/log"}}]
        assert d["registeredAt"]
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "e2e"}]
    _, second = register(ecs, family)
    assert second.endswith(f"/{family}:2")
    d = ecs.describe_daemon_task_definition(daemonTaskDefinition=family)["daemonTaskDefinition"]
    assert d["revision"] == 2


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"family": "no spaces"}, "family"),
        ({"containerDefinitions": [{"image": "busybox", "memory": 64}]}, "name"),
        ({"containerDefinitions": [container(), container()]}, "more than once"),
        ({"containerDefinitions": [{"name": "a", "image": "busybox"}]}, "memory"),
        (
            {"containerDefinitions": [container(mountPoints=[{"sourceVolume": "nope", "containerPath": "/x"}])]},
            "sourceVolume",
        ),
        ({"volumes": [{"name": "v", "host": {"sourcePath": "relative"}}]}, "sourcePath"),
        ({"cpu": "plenty"}, "cpu"),
    ],
)
def test_register_validation(ecs, kw, needle):
    args = {"family": uid("bad"), "containerDefinitions": [container()]}
    args.update(kw)
    e = expect_error(("InvalidParameterException", "ClientException"), ecs.register_daemon_task_definition, **args)
    assert needle in e.response["Error"]["Message"]


def test_list_daemon_task_definitions(ecs):
    stem = uid("lst")
    fams = [f"{stem}-a", f"{stem}-b"]
    for f in (fams[0], fams[1], fams[0]):
        register(ecs, f)

    def arns(**kw):
        return [s["arn"].rsplit("/", 1)[1] for s in ecs.list_daemon_task_definitions(familyPrefix=stem, **kw)["daemonTaskDefinitions"]]

    assert arns() == [f"{fams[0]}:1", f"{fams[0]}:2", f"{fams[1]}:1"]
    assert arns(sort="DESC") == [f"{fams[1]}:1", f"{fams[0]}:2", f"{fams[0]}:1"]
    assert arns(revision="LAST_REGISTERED") == [f"{fams[0]}:2", f"{fams[1]}:1"]
    exact = ecs.list_daemon_task_definitions(family=fams[1])["daemonTaskDefinitions"]
    assert [s["status"] for s in exact] == ["ACTIVE"]

    seen, token = [], None
    while True:
        kw = {"familyPrefix": stem, "maxResults": 1}
        if token:
            kw["nextToken"] = token
        page = ecs.list_daemon_task_definitions(**kw)
        assert len(page["daemonTaskDefinitions"]) <= 1
        seen += [s["arn"].rsplit("/", 1)[1] for s in page["daemonTaskDefinitions"]]
        token = page.get("nextToken")
        if not token:
            break
    assert seen == arns()


def test_delete_daemon_task_definition_and_the_waiters(ecs):
    family, arn = register(ecs)
    assert ecs.delete_daemon_task_definition(daemonTaskDefinition=arn)["daemonTaskDefinitionArn"] == arn
    ecs.get_waiter("daemon_task_definition_deleted").wait(daemonTaskDefinition=arn, WaiterConfig=FAST)
    d = ecs.describe_daemon_task_definition(daemonTaskDefinition=f"{family}:1")["daemonTaskDefinition"]
    assert d["status"] == "DELETED"
    assert d["deleteRequestedAt"]
    # Deleting again is fine; the active waiter now fails at once.
    ecs.delete_daemon_task_definition(daemonTaskDefinition=f"{family}:1")
    with pytest.raises(WaiterError):
        ecs.get_waiter("daemon_task_definition_active").wait(daemonTaskDefinition=arn, WaiterConfig=FAST)
    e = expect_error("ClientException", ecs.describe_daemon_task_definition, daemonTaskDefinition=family)
    assert e.response["Error"]["Message"] == "Unable to describe daemon task definition."
    expect_error("InvalidParameterException", ecs.delete_daemon_task_definition, daemonTaskDefinition=family)


def test_a_daemon_task_definition_in_use_is_deleted_after_its_daemon(ecs, env):
    family, arn = register(ecs)
    d = create(ecs, env, daemonTaskDefinitionArn=f"{family}:1")
    ecs.delete_daemon_task_definition(daemonTaskDefinition=arn)
    td = ecs.describe_daemon_task_definition(daemonTaskDefinition=arn)["daemonTaskDefinition"]
    assert td["status"] == "DELETE_IN_PROGRESS"
    listed = ecs.list_daemon_task_definitions(family=family, status="DELETE_IN_PROGRESS")["daemonTaskDefinitions"]
    assert [s["arn"] for s in listed] == [arn]
    ecs.delete_daemon(daemonArn=d["daemonArn"])
    ecs.delete_daemon_task_definition(daemonTaskDefinition=arn)
    ecs.get_waiter("daemon_task_definition_deleted").wait(daemonTaskDefinition=arn, WaiterConfig=FAST)


def test_create_describe_and_list_a_daemon(ecs, env):
    name = uid("logs")
    r = create(
        ecs,
        env,
        name,
        deploymentConfiguration={"drainPercent": 40.0, "bakeTimeInMinutes": 2},
        tags=[{"key": "team", "value": "e2e"}],
        propagateTags="DAEMON",
        enableExecuteCommand=True,
    )
    arn = f"{PREFIX}:daemon/{env['cluster']}/{name}"
    assert r["daemonArn"] == arn
    assert r["status"] == "ACTIVE"
    assert r["deploymentArn"].startswith(f"{PREFIX}:daemon-deployment/{env['cluster']}/{name}/")

    ecs.get_waiter("daemon_active").wait(daemonArn=arn, WaiterConfig=FAST)
    d = ecs.describe_daemon(daemonArn=arn)["daemon"]
    assert d["clusterArn"] == f"{PREFIX}:cluster/{env['cluster']}"
    assert d["status"] == "ACTIVE"
    assert d["deploymentArn"] == r["deploymentArn"]
    assert d["currentRevisions"] == []

    [dep] = ecs.describe_daemon_deployments(daemonDeploymentArns=[r["deploymentArn"]])["daemonDeployments"]
    assert dep["status"] == "PENDING"
    assert dep["deploymentConfiguration"]["drainPercent"] == 40.0
    assert dep["deploymentConfiguration"]["bakeTimeInMinutes"] == 2
    assert dep["circuitBreaker"]["status"] == "MONITORING"
    assert dep["alarms"]["status"] == "DISABLED"
    assert dep["targetDaemonRevision"]["capacityProviders"] == [
        {"arn": f"{PREFIX}:capacity-provider/{env['cp']}", "runningInstanceCount": 0, "drainingInstanceCount": 0}
    ]
    rev_arn = dep["targetDaemonRevision"]["arn"]
    assert re.match(rf"^{re.escape(PREFIX)}:daemon-revision/{env['cluster']}/{name}/[0-9a-f]{{32}}$", rev_arn)
    [rev] = ecs.describe_daemon_revisions(daemonRevisionArns=[rev_arn])["daemonRevisions"]
    assert rev["daemonTaskDefinitionArn"] == env["td"]
    assert rev["containerImages"] == [{"containerName": "agent", "image": container()["image"]}]
    assert rev["propagateTags"] == "DAEMON"
    assert rev["enableExecuteCommand"] is True

    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "team", "value": "e2e"}]
    listed = ecs.list_daemons(clusterArn=env["cluster"])["daemonSummariesList"]
    assert arn in [s["daemonArn"] for s in listed]
    by_cp = ecs.list_daemons(capacityProviderArns=[f"{PREFIX}:capacity-provider/{env['cp']}"])["daemonSummariesList"]
    assert arn in [s["daemonArn"] for s in by_cp]
    assert ecs.list_daemons(capacityProviderArns=["nobody"])["daemonSummariesList"] == []


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"daemonName": "no spaces"}, "InvalidParameterException"),
        ({"clusterArn": "no-such-cluster"}, "ClusterNotFoundException"),
        ({"daemonTaskDefinitionArn": "no-such-family"}, "InvalidParameterException"),
        ({"capacityProviderArns": []}, "InvalidParameterException"),
        ({"capacityProviderArns": ["no-such-provider"]}, "InvalidParameterException"),
        ({"deploymentConfiguration": {"drainPercent": 100.5}}, "InvalidParameterException"),
        ({"deploymentConfiguration": {"bakeTimeInMinutes": -1}}, "InvalidParameterException"),
    ],
)
def test_create_validation_errors(ecs_nv, env, overrides, code):
    expect_error(code, create, ecs_nv, env, **overrides)


def test_a_provider_of_another_cluster_is_refused(ecs, env):
    _, other_cp = create_mi_cluster(ecs, "other")
    e = expect_error("InvalidParameterException", create, ecs, env, capacityProviderArns=[other_cp])
    assert other_cp in e.response["Error"]["Message"]


def test_names_are_unique_and_client_tokens_make_retries_idempotent(ecs, env):
    name = uid("dup")
    first = create(ecs, env, name, clientToken="tok-1")
    again = create(ecs, env, name, clientToken="tok-1")
    assert again["daemonArn"] == first["daemonArn"]
    assert again["deploymentArn"] == first["deploymentArn"]
    e = expect_error("InvalidParameterException", create, ecs, env, name)
    assert e.response["Error"]["Message"] == "Creation of daemon was not idempotent."
    expect_error("InvalidParameterException", create, ecs, env, name, clientToken="tok-1", enableExecuteCommand=True)


def test_update_stops_the_deployment_it_replaces(ecs, env):
    r = create(ecs, env)
    arn, first = r["daemonArn"], r["deploymentArn"]
    _, td2 = register(ecs, env["family"])
    u = ecs.update_daemon(daemonArn=arn, daemonTaskDefinitionArn=td2, capacityProviderArns=[env["cp"]])
    assert u["daemonArn"] == arn
    assert u["status"] == "ACTIVE"
    assert u["deploymentArn"] != first
    assert u["updatedAt"] >= u["createdAt"]
    ecs.get_waiter("daemon_deployment_stopped").wait(daemonDeploymentArns=[first], WaiterConfig=FAST)
    [old] = ecs.describe_daemon_deployments(daemonDeploymentArns=[first])["daemonDeployments"]
    assert old["statusReason"] == f"Stopped: replaced by deployment {u['deploymentArn'].rsplit('/', 1)[1]}."
    # The successful waiter gives up on a stopped deployment.
    with pytest.raises(WaiterError):
        ecs.get_waiter("daemon_deployment_successful").wait(daemonDeploymentArns=[first], WaiterConfig=FAST)
    [new] = ecs.describe_daemon_deployments(daemonDeploymentArns=[u["deploymentArn"]])["daemonDeployments"]
    assert new["status"] == "PENDING"
    [source] = new["sourceDaemonRevisions"]
    [old_target] = ecs.describe_daemon_deployments(daemonDeploymentArns=[first])["daemonDeployments"]
    assert source["arn"] == old_target["targetDaemonRevision"]["arn"]

    listed = ecs.list_daemon_deployments(daemonArn=arn)["daemonDeployments"]
    assert [d["daemonDeploymentArn"] for d in listed] == [u["deploymentArn"], first]
    assert [d["status"] for d in listed] == ["PENDING", "STOPPED"]
    only = ecs.list_daemon_deployments(daemonArn=arn, status=["STOPPED"])["daemonDeployments"]
    assert [d["daemonDeploymentArn"] for d in only] == [first]
    page = ecs.list_daemon_deployments(daemonArn=arn, maxResults=1)
    assert len(page["daemonDeployments"]) == 1 and page["nextToken"]
    rest = ecs.list_daemon_deployments(daemonArn=arn, maxResults=1, nextToken=page["nextToken"])
    assert [d["daemonDeploymentArn"] for d in rest["daemonDeployments"]] == [first]

    expect_error(
        "DaemonNotFoundException",
        ecs.update_daemon,
        daemonArn=f"{PREFIX}:daemon/{env['cluster']}/nosuch",
        daemonTaskDefinitionArn=td2,
        capacityProviderArns=[env["cp"]],
    )


def test_delete_daemon(ecs, env):
    r = create(ecs, env)
    arn = r["daemonArn"]
    d = ecs.delete_daemon(daemonArn=arn)
    assert d["status"] == "DELETE_IN_PROGRESS"
    assert d["deploymentArn"] == r["deploymentArn"]
    assert ecs.delete_daemon(daemonArn=arn)["status"] == "DELETE_IN_PROGRESS"
    assert ecs.describe_daemon(daemonArn=arn)["daemon"]["status"] == "DELETE_IN_PROGRESS"
    with pytest.raises(WaiterError):
        ecs.get_waiter("daemon_active").wait(daemonArn=arn, WaiterConfig=FAST)
    ecs.get_waiter("daemon_deployment_stopped").wait(daemonDeploymentArns=[r["deploymentArn"]], WaiterConfig=FAST)
    expect_error(
        "DaemonNotActiveException",
        ecs.update_daemon,
        daemonArn=arn,
        daemonTaskDefinitionArn=env["td"],
        capacityProviderArns=[env["cp"]],
    )
    expect_error("DaemonNotFoundException", ecs.delete_daemon, daemonArn=f"{PREFIX}:daemon/{env['cluster']}/nosuch")
    expect_error("DaemonNotFoundException", ecs.describe_daemon, daemonArn=f"{PREFIX}:daemon/{env['cluster']}/nosuch")


def test_describe_history_reports_missing(ecs, env):
    r = create(ecs, env)
    missing = r["deploymentArn"].rsplit("/", 1)[0] + "/nosuch"
    out = ecs.describe_daemon_deployments(daemonDeploymentArns=[r["deploymentArn"], missing])
    assert len(out["daemonDeployments"]) == 1
    assert out["failures"] == [{"arn": missing, "reason": "MISSING"}]
    with pytest.raises(WaiterError):
        ecs.get_waiter("daemon_deployment_successful").wait(daemonDeploymentArns=[missing], WaiterConfig=FAST)
    out = ecs.describe_daemon_revisions(daemonRevisionArns=[missing])
    assert out["daemonRevisions"] == [] and out["failures"][0]["reason"] == "MISSING"
    expect_error(
        "InvalidParameterException",
        ecs.describe_daemon_deployments,
        daemonDeploymentArns=[missing] * 21,
    )
