"""Services (API and store slice): CreateService, UpdateService, DeleteService,
DescribeServices, ListServices, and the service history operations.

No task is started for a service yet (the reconciler is the next slice), so
these tests check what the API records, not what runs.
"""

import re

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

PREFIX = f"arn:aws:ecs:{REGION}:{ACCOUNT}"
DEPLOYMENT_ID = re.compile(r"^ecs-svc/\d{19}$")


@pytest.fixture(scope="module")
def env(ecs):
    cluster, cp = create_mi_cluster(ecs, "svc")
    family = uid("web")
    td = register_td(ecs, family)
    return {"cluster": cluster, "cp": cp, "family": family, "td": td}


def create(ecs, env, name=None, **kw):
    kw.setdefault("cluster", env["cluster"])
    kw.setdefault("serviceName", name or uid("s"))
    kw.setdefault("taskDefinition", env["family"])
    kw.setdefault("desiredCount", 1)
    kw.setdefault("capacityProviderStrategy", strategy(env["cp"]))
    return ecs.create_service(**kw)["service"]


def test_create_records_service_revision_and_deployment(ecs, env):
    name = uid("api")
    s = create(
        ecs,
        env,
        name,
        desiredCount=2,
        tags=[{"key": "team", "value": "e2e"}],
        enableExecuteCommand=True,
        propagateTags="SERVICE",
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 150,
        },
        placementStrategy=[{"type": "spread", "field": "attribute:ecs.availability-zone"}],
    )
    assert s["serviceArn"] == f"{PREFIX}:service/{env['cluster']}/{name}"
    assert s["status"] == "ACTIVE"
    assert (s["desiredCount"], s["runningCount"], s["pendingCount"]) == (2, 0, 0)
    assert s["events"] == []
    assert s["taskDefinition"] == env["td"]["taskDefinitionArn"]
    assert s["deploymentConfiguration"]["maximumPercent"] == 150
    assert s["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert s["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert s["propagateTags"] == "SERVICE"
    assert s["enableExecuteCommand"] is True
    [d] = s["deployments"]
    assert DEPLOYMENT_ID.match(d["id"]), d["id"]
    assert d["status"] == "PRIMARY"
    assert d["rolloutState"] == "IN_PROGRESS"
    assert d["taskDefinition"] == env["td"]["taskDefinitionArn"]

    dep_arn = s["currentServiceDeployment"]
    assert dep_arn.startswith(f"{PREFIX}:service-deployment/{env['cluster']}/{name}/")
    [sd] = ecs.describe_service_deployments(serviceDeploymentArns=[dep_arn])["serviceDeployments"]
    assert sd["status"] == "IN_PROGRESS"
    assert sd["serviceArn"] == s["serviceArn"]
    rev_arn = sd["targetServiceRevision"]["arn"]
    assert re.match(rf"^{re.escape(PREFIX)}:service-revision/{env['cluster']}/{name}/\d{{19}}$", rev_arn)
    [rev] = ecs.describe_service_revisions(serviceRevisionArns=[rev_arn])["serviceRevisions"]
    assert rev["taskDefinition"] == env["td"]["taskDefinitionArn"]
    missing = ecs.describe_service_revisions(serviceRevisionArns=[rev_arn.rsplit("/", 1)[0] + "/1"])
    assert missing["failures"][0]["reason"] == "MISSING"

    [desc] = ecs.describe_services(cluster=env["cluster"], services=[name], include=["TAGS"])["services"]
    assert desc["tags"] == [{"key": "team", "value": "e2e"}]
    [plain] = ecs.describe_services(cluster=env["cluster"], services=[name])["services"]
    assert "tags" not in plain


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"serviceName": "no spaces"}, "InvalidParameterException"),
        ({"desiredCount": -1}, "InvalidParameterException"),
        ({"schedulingStrategy": "DAEMON"}, "InvalidParameterException"),
        ({"taskDefinition": "does-not-exist"}, "ClientException"),
        ({"cluster": "no-such-cluster"}, "ClusterNotFoundException"),
        ({"launchType": "FARGATE"}, "InvalidParameterException"),
        ({"deploymentConfiguration": {"minimumHealthyPercent": 150}}, "InvalidParameterException"),
        ({"deploymentConfiguration": {"maximumPercent": 20}}, "InvalidParameterException"),
        ({"placementStrategy": [{"type": "binpack", "field": "nonsense"}]}, "InvalidParameterException"),
        (
            {"networkConfiguration": {"awsvpcConfiguration": {"subnets": ["not-a-subnet"]}}},
            "InvalidParameterException",
        ),
        ({"capacityProviderStrategy": [{"capacityProvider": "nope", "weight": 1}]}, "InvalidParameterException"),
    ],
)
def test_create_validation_errors(ecs, env, overrides, code):
    kw = {
        "cluster": env["cluster"],
        "serviceName": uid("bad"),
        "taskDefinition": env["family"],
        "desiredCount": 1,
        "capacityProviderStrategy": strategy(env["cp"]),
    }
    kw.update(overrides)
    expect_error(code, ecs.create_service, **kw)


def test_daemon_error_points_to_managed_daemons(ecs, env):
    e = expect_error(
        "InvalidParameterException",
        ecs.create_service,
        cluster=env["cluster"],
        serviceName=uid("d"),
        taskDefinition=env["family"],
        schedulingStrategy="DAEMON",
    )
    assert "daemon" in e.response["Error"]["Message"].lower()


def test_same_name_is_not_idempotent_unless_retried_with_the_token(ecs, env):
    name = uid("dup")
    first = create(ecs, env, name, clientToken="token-1")
    again = create(ecs, env, name, clientToken="token-1")
    assert again["serviceArn"] == first["serviceArn"]
    assert again["deployments"] == first["deployments"]
    e = expect_error("InvalidParameterException", create, ecs, env, name, desiredCount=5)
    assert e.response["Error"]["Message"] == "Creation of service was not idempotent."


def test_list_pages_and_describe_reports_missing(ecs):
    cluster, cp = create_mi_cluster(ecs, "svclist")
    family = uid("fam")
    register_td(ecs, family)
    names = sorted(uid("p") for _ in range(5))
    for n in names:
        ecs.create_service(
            cluster=cluster,
            serviceName=n,
            taskDefinition=family,
            desiredCount=0,
            capacityProviderStrategy=strategy(cp),
        )
    pages = list(ecs.get_paginator("list_services").paginate(cluster=cluster, PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    arns = [a for p in pages for a in p["serviceArns"]]
    assert arns == [f"{PREFIX}:service/{cluster}/{n}" for n in names]
    assert ecs.list_services(cluster=cluster, launchType="FARGATE")["serviceArns"] == []
    assert len(ecs.list_services(cluster=cluster, schedulingStrategy="REPLICA")["serviceArns"]) == 5
    expect_error("InvalidParameterException", ecs.list_services, cluster=cluster, maxResults=101)

    resp = ecs.describe_services(cluster=cluster, services=[names[0], arns[1], "ghost"])
    assert [s["serviceName"] for s in resp["services"]] == names[:2]
    assert resp["failures"] == [{"arn": f"{PREFIX}:service/{cluster}/ghost", "reason": "MISSING"}]
    expect_error(
        "InvalidParameterException", ecs.describe_services, cluster=cluster, services=[f"s{i}" for i in range(11)]
    )

    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["activeServicesCount"] == 5


def test_update_with_a_new_revision_keeps_two_deployments(ecs, env):
    name = uid("upd")
    first = create(ecs, env, name)
    td2 = register_td(ecs, env["family"])
    s = ecs.update_service(cluster=env["cluster"], service=name, desiredCount=3)["service"]
    assert s["desiredCount"] == 3 and len(s["deployments"]) == 1
    s = ecs.update_service(
        cluster=env["cluster"],
        service=name,
        taskDefinition=td2["taskDefinitionArn"],
        deploymentConfiguration={"minimumHealthyPercent": 50},
        healthCheckGracePeriodSeconds=60,
        enableExecuteCommand=True,
    )["service"]
    assert s["taskDefinition"] == td2["taskDefinitionArn"]
    assert [d["status"] for d in s["deployments"]] == ["PRIMARY", "ACTIVE"]
    assert s["deployments"][0]["taskDefinition"] == td2["taskDefinitionArn"]
    assert s["deployments"][1]["id"] == first["deployments"][0]["id"]
    assert s["deploymentConfiguration"]["minimumHealthyPercent"] == 50
    assert s["healthCheckGracePeriodSeconds"] == 60
    assert s["enableExecuteCommand"] is True

    briefs = ecs.list_service_deployments(cluster=env["cluster"], service=name)["serviceDeployments"]
    assert len(briefs) == 2
    assert briefs[0]["serviceDeploymentArn"] == s["currentServiceDeployment"]
    assert briefs[1]["serviceDeploymentArn"] == first["currentServiceDeployment"]
    assert briefs[1]["status"] == "STOPPED"
    [sd] = ecs.describe_service_deployments(serviceDeploymentArns=[s["currentServiceDeployment"]])[
        "serviceDeployments"
    ]
    assert [r["arn"] for r in sd["sourceServiceRevisions"]] == [first["currentServiceRevisions"][0]["arn"]]

    s = ecs.update_service(cluster=env["cluster"], service=name, forceNewDeployment=True)["service"]
    assert [d["status"] for d in s["deployments"]] == ["PRIMARY", "ACTIVE", "ACTIVE"]
    expect_error("ServiceNotFoundException", ecs.update_service, cluster=env["cluster"], service="ghost")


def test_delete_with_and_without_force(ecs, env):
    name = uid("del")
    create(ecs, env, name, desiredCount=2)
    e = expect_error("InvalidParameterException", ecs.delete_service, cluster=env["cluster"], service=name)
    assert "scaled above 0" in e.response["Error"]["Message"]
    s = ecs.delete_service(cluster=env["cluster"], service=name, force=True)["service"]
    assert s["status"] in ("DRAINING", "INACTIVE")
    assert s["desiredCount"] == 0
    ecs.get_waiter("services_inactive").wait(
        cluster=env["cluster"], services=[name], WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    assert name not in " ".join(ecs.list_services(cluster=env["cluster"])["serviceArns"])
    expect_error("ServiceNotActiveException", ecs.delete_service, cluster=env["cluster"], service=name)

    zero = uid("zero")
    create(ecs, env, zero, desiredCount=0)
    assert ecs.delete_service(cluster=env["cluster"], service=zero)["service"]["desiredCount"] == 0
    # The name is free again.
    assert create(ecs, env, zero)["status"] == "ACTIVE"


def test_tags_on_services(ecs, env):
    s = create(ecs, env, desiredCount=0)
    arn = s["serviceArn"]
    ecs.tag_resource(resourceArn=arn, tags=[{"key": "a", "value": "1"}])
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "a", "value": "1"}]
    ecs.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert ecs.list_tags_for_resource(resourceArn=arn)["tags"] == []


def test_cluster_with_services_cannot_be_deleted(ecs):
    cluster, cp = create_mi_cluster(ecs, "svcdel")
    family = uid("fam")
    register_td(ecs, family)
    ecs.create_service(
        cluster=cluster, serviceName="only", taskDefinition=family, desiredCount=1, capacityProviderStrategy=strategy(cp)
    )
    expect_error("ClusterContainsServicesException", ecs.delete_cluster, cluster=cluster)
    ecs.delete_service(cluster=cluster, service="only", force=True)
    ecs.delete_capacity_provider(capacityProvider=cp)
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"


def test_aws_cli_create_describe_and_wait(aws, ecs, env):
    name = uid("cli")
    r = aws(
        "ecs",
        "create-service",
        "--cluster",
        env["cluster"],
        "--service-name",
        name,
        "--task-definition",
        env["family"],
        "--desired-count",
        "1",
        "--capacity-provider-strategy",
        f"capacityProvider={env['cp']},weight=1",
    )
    assert r.returncode == 0, r.stderr
    assert r.json["service"]["status"] == "ACTIVE"
    r = aws("ecs", "describe-services", "--cluster", env["cluster"], "--services", name)
    assert r.returncode == 0, r.stderr
    assert r.json["services"][0]["serviceName"] == name
    assert r.json["failures"] == []
    r = aws("ecs", "delete-service", "--cluster", env["cluster"], "--service", name, "--force")
    assert r.returncode == 0, r.stderr
    r = aws("ecs", "wait", "services-inactive", "--cluster", env["cluster"], "--services", name)
    assert r.returncode == 0, r.stderr
