"""Managed instances capacity providers: create, describe, update, delete, and every refusal."""

import pytest

from helpers import (
    ACCOUNT,
    PROFILE_ARN,
    REGION,
    ROLE_ARN,
    SECURITY_GROUP,
    SUBNET,
    expect_error,
    mi_provider,
    uid,
)

REFUSED = ("InvalidParameterException", "ClientException")


def cp_arn(name):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:capacity-provider/{name}"


def cluster_arn(name):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"


def assert_contains(actual, expected, path="$"):
    """Every member of `expected` is in `actual` with an equal value (recursively for objects)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing from {actual!r}"
            assert_contains(actual[k], v, f"{path}.{k}")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module")
def cluster(ecs):
    name = uid("cpc")
    ecs.create_cluster(clusterName=name)
    return name


def make(ecs, cluster, name=None, **kw):
    name = name or uid("mi")
    return ecs.create_capacity_provider(name=name, cluster=cluster, managedInstancesProvider=mi_provider(), **kw)[
        "capacityProvider"
    ]


def test_create_with_the_full_shape(ecs, cluster):
    name = uid("mi")
    given = mi_provider()
    cp = ecs.create_capacity_provider(
        name=name, cluster=cluster, managedInstancesProvider=given, tags=[{"key": "team", "value": "infra"}]
    )["capacityProvider"]
    assert cp["name"] == name
    assert cp["capacityProviderArn"] == cp_arn(name)
    assert cp["status"] == "ACTIVE"
    assert cp.get("type") == "MANAGED_INSTANCES"
    assert cp.get("cluster") in (cluster, cluster_arn(cluster))
    assert_contains(cp["managedInstancesProvider"], given)
    assert "autoScalingGroupProvider" not in cp
    described = ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"][0]
    assert_contains(described["managedInstancesProvider"], given)
    assert described["capacityProviderArn"] == cp_arn(name)


def test_appears_in_describe_clusters(ecs, cluster):
    cp = make(ecs, cluster)
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert cp["name"] in c["capacityProviders"]


def test_cluster_scoped_describe(ecs, cluster):
    mine = make(ecs, cluster)
    other_cluster = uid("cpo")
    ecs.create_cluster(clusterName=other_cluster)
    theirs = make(ecs, other_cluster)
    names = [c["name"] for c in ecs.describe_capacity_providers(cluster=other_cluster)["capacityProviders"]]
    assert theirs["name"] in names
    assert mine["name"] not in names


def test_describe_by_name_and_arn_with_missing_failures(ecs, cluster):
    cp = make(ecs, cluster)
    missing = uid("gone")
    missing_arn = cp_arn(uid("gone"))
    resp = ecs.describe_capacity_providers(capacityProviders=[cp["name"], cp["capacityProviderArn"], missing, missing_arn])
    assert [c["name"] for c in resp["capacityProviders"]] == [cp["name"], cp["name"]]
    failures = {f["arn"]: f["reason"] for f in resp["failures"]}
    assert failures == {cp_arn(missing): "MISSING", missing_arn: "MISSING"}


def test_describe_include_tags(ecs, cluster):
    name = uid("mi")
    ecs.create_capacity_provider(
        name=name,
        cluster=cluster,
        managedInstancesProvider=mi_provider(),
        tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
    )
    plain = ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"][0]
    assert not plain.get("tags")
    tagged = ecs.describe_capacity_providers(capacityProviders=[name], include=["TAGS"])["capacityProviders"][0]
    assert sorted(tagged["tags"], key=lambda t: t["key"]) == [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]


def test_describe_pages_through_all(ecs):
    c = uid("cpp")
    ecs.create_cluster(clusterName=c)
    names = {make(ecs, c)["name"] for _ in range(5)}
    seen = []
    token = None
    while True:
        kw = {"cluster": c, "maxResults": 2}
        if token:
            kw["nextToken"] = token
        resp = ecs.describe_capacity_providers(**kw)
        assert len(resp["capacityProviders"]) <= 2
        seen += [x["name"] for x in resp["capacityProviders"]]
        token = resp.get("nextToken")
        if not token:
            break
    assert sorted(seen) == sorted(names)


# --- refusals ---------------------------------------------------------------


def test_missing_name(ecs_nv, cluster):
    expect_error(REFUSED, ecs_nv.create_capacity_provider, cluster=cluster, managedInstancesProvider=mi_provider())


def test_missing_managed_instances_provider(ecs, cluster):
    expect_error(REFUSED, ecs.create_capacity_provider, name=uid("mi"), cluster=cluster)


def test_missing_cluster(ecs):
    expect_error(REFUSED, ecs.create_capacity_provider, name=uid("mi"), managedInstancesProvider=mi_provider())


def test_missing_infrastructure_role(ecs_nv, cluster):
    p = mi_provider()
    del p["infrastructureRoleArn"]
    expect_error(REFUSED, ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p)


def test_missing_launch_template(ecs_nv, cluster):
    p = mi_provider()
    del p["instanceLaunchTemplate"]
    expect_error(REFUSED, ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p)


def test_missing_instance_profile(ecs_nv, cluster):
    p = mi_provider()
    del p["instanceLaunchTemplate"]["ec2InstanceProfileArn"]
    expect_error(REFUSED, ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p)


def test_missing_network_configuration(ecs_nv, cluster):
    p = mi_provider()
    del p["instanceLaunchTemplate"]["networkConfiguration"]
    expect_error(REFUSED, ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p)


@pytest.mark.parametrize(
    "role",
    [
        "not-an-arn",
        "arn:aws:iam::123456789012:user/someone",
        "arn:aws:iam::12345:role/short-account",
        "arn:aws:s3:::bucket/role",
        PROFILE_ARN,
    ],
)
def test_bad_role_arn(ecs, cluster, role):
    e = expect_error(
        "InvalidParameterException",
        ecs.create_capacity_provider,
        name=uid("mi"),
        cluster=cluster,
        managedInstancesProvider=mi_provider(infrastructureRoleArn=role),
    )
    assert "infrastructureRoleArn" in e.response["Error"]["Message"]


def test_bad_instance_profile_arn(ecs, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["ec2InstanceProfileArn"] = ROLE_ARN
    expect_error(
        "InvalidParameterException", ecs.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


@pytest.mark.parametrize("subnet", ["subnet-xyz", "subnet-0123456789abcdefg", "sg-0123456789abcdef0", "0123456789abcdef0"])
def test_bad_subnet_id(ecs, cluster, subnet):
    p = mi_provider()
    p["instanceLaunchTemplate"]["networkConfiguration"]["subnets"] = [subnet]
    expect_error(
        "InvalidParameterException", ecs.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


def test_no_subnets(ecs_nv, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["networkConfiguration"]["subnets"] = []
    expect_error(REFUSED, ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p)


def test_bad_security_group_id(ecs, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["networkConfiguration"]["securityGroups"] = ["sg-nothex!"]
    expect_error(
        "InvalidParameterException", ecs.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


def test_short_ids_are_accepted(ecs, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["networkConfiguration"] = {"subnets": ["subnet-0a1b2c3d"], "securityGroups": ["sg-0a1b2c3d"]}
    cp = ecs.create_capacity_provider(name=uid("mi"), cluster=cluster, managedInstancesProvider=p)["capacityProvider"]
    assert cp["managedInstancesProvider"]["instanceLaunchTemplate"]["networkConfiguration"]["subnets"] == ["subnet-0a1b2c3d"]


@pytest.mark.parametrize("value", [5000, 3601, -2])
def test_scale_in_after_out_of_range(ecs_nv, cluster, value):
    e = expect_error(
        "InvalidParameterException",
        ecs_nv.create_capacity_provider,
        name=uid("mi"),
        cluster=cluster,
        managedInstancesProvider=mi_provider(infrastructureOptimization={"scaleInAfter": value}),
    )
    assert "scaleInAfter" in e.response["Error"]["Message"]


@pytest.mark.parametrize("value", [-1, 0, 3600])
def test_scale_in_after_bounds_accepted(ecs, cluster, value):
    cp = ecs.create_capacity_provider(
        name=uid("mi"),
        cluster=cluster,
        managedInstancesProvider=mi_provider(infrastructureOptimization={"scaleInAfter": value}),
    )["capacityProvider"]
    assert cp["managedInstancesProvider"]["infrastructureOptimization"]["scaleInAfter"] == value


def test_storage_size_out_of_range(ecs_nv, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["storageConfiguration"] = {"storageSizeGiB": 0}
    expect_error(
        "InvalidParameterException", ecs_nv.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


def test_duplicate_name(ecs, cluster):
    cp = make(ecs, cluster)
    e = expect_error(REFUSED, make, ecs, cluster, name=cp["name"])
    assert cp["name"] in e.response["Error"]["Message"] or "exist" in e.response["Error"]["Message"]
    # Also when the duplicate is asked for in another cluster.
    other = uid("cpo")
    ecs.create_cluster(clusterName=other)
    expect_error(REFUSED, make, ecs, other, name=cp["name"])


@pytest.mark.parametrize("prefix", ["aws", "ecs", "fargate"])
def test_reserved_prefix(ecs, cluster, prefix):
    expect_error("InvalidParameterException", make, ecs, cluster, name=f"{prefix}-{uid('p')}")


@pytest.mark.parametrize("bad", ["has space", "slash/x", "x" * 256])
def test_invalid_name(ecs, cluster, bad):
    expect_error("InvalidParameterException", make, ecs, cluster, name=bad)


def test_requirements_nothing_satisfies(ecs, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["instanceRequirements"] = {"vCpuCount": {"min": 1000}, "memoryMiB": {"min": 4096}}
    expect_error(
        "InvalidParameterException", ecs.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


def test_requirements_min_above_max(ecs, cluster):
    p = mi_provider()
    p["instanceLaunchTemplate"]["instanceRequirements"] = {"vCpuCount": {"min": 8, "max": 2}, "memoryMiB": {"min": 4096}}
    expect_error(
        "InvalidParameterException", ecs.create_capacity_provider, name=uid("mi"), cluster=cluster, managedInstancesProvider=p
    )


def test_auto_scaling_group_provider_refused(ecs, cluster):
    expect_error(
        ("InvalidParameterException", "ClientException", "UnsupportedFeatureException"),
        ecs.create_capacity_provider,
        name=uid("asg"),
        cluster=cluster,
        autoScalingGroupProvider={
            "autoScalingGroupArn": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:"
            "0b1e7d4c-0000-4000-8000-000000000000:autoScalingGroupName/asg",
            "managedScaling": {"status": "ENABLED", "targetCapacity": 100},
        },
    )


def test_unknown_cluster(ecs):
    expect_error("ClusterNotFoundException", make, ecs, uid("nope"))


def test_bad_tags(ecs, cluster):
    expect_error("InvalidParameterException", make, ecs, cluster, tags=[{"key": "aws:reserved", "value": "x"}])


def test_a_refused_create_leaves_nothing(ecs, cluster):
    name = uid("mi")
    expect_error(
        "InvalidParameterException",
        ecs.create_capacity_provider,
        name=name,
        cluster=cluster,
        managedInstancesProvider=mi_provider(infrastructureOptimization={"scaleInAfter": 5000}),
    )
    resp = ecs.describe_capacity_providers(capacityProviders=[name])
    assert resp["capacityProviders"] == []
    assert [f["reason"] for f in resp["failures"]] == ["MISSING"]
    # The name is still free.
    assert make(ecs, cluster, name=name)["name"] == name


# --- update -----------------------------------------------------------------


def test_update_scale_in_and_requirements(ecs, cluster):
    cp = make(ecs, cluster)
    new_req = {"vCpuCount": {"min": 4, "max": 16}, "memoryMiB": {"min": 8192, "max": 65536}}
    updated = ecs.update_capacity_provider(
        name=cp["name"],
        cluster=cluster,
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE_ARN,
            "instanceLaunchTemplate": {"instanceRequirements": new_req},
            "infrastructureOptimization": {"scaleInAfter": 900},
        },
    )["capacityProvider"]
    assert updated["name"] == cp["name"]
    described = ecs.describe_capacity_providers(capacityProviders=[cp["name"]])["capacityProviders"][0]
    mi = described["managedInstancesProvider"]
    assert mi["infrastructureOptimization"]["scaleInAfter"] == 900
    assert_contains(mi["instanceLaunchTemplate"]["instanceRequirements"], new_req)
    # What was not updated is kept.
    lt = mi["instanceLaunchTemplate"]
    assert lt["ec2InstanceProfileArn"] == PROFILE_ARN
    assert lt["networkConfiguration"]["subnets"] == [SUBNET]
    assert lt["networkConfiguration"]["securityGroups"] == [SECURITY_GROUP]
    assert lt["storageConfiguration"]["storageSizeGiB"] == 50
    assert described.get("updateStatus") in (None, "UPDATE_COMPLETE")


def test_update_refusals(ecs, ecs_nv, cluster):
    cp = make(ecs, cluster)
    before = ecs.describe_capacity_providers(capacityProviders=[cp["name"]])["capacityProviders"][0]
    expect_error(
        "InvalidParameterException",
        ecs.update_capacity_provider,
        name=cp["name"],
        cluster=cluster,
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE_ARN,
            "instanceLaunchTemplate": {},
            "infrastructureOptimization": {"scaleInAfter": 5000},
        },
    )
    expect_error(
        "InvalidParameterException",
        ecs.update_capacity_provider,
        name=cp["name"],
        cluster=cluster,
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE_ARN,
            "instanceLaunchTemplate": {"instanceRequirements": {"vCpuCount": {"min": 1000}, "memoryMiB": {"min": 1}}},
        },
    )
    expect_error(
        "InvalidParameterException",
        ecs.update_capacity_provider,
        name=cp["name"],
        cluster=cluster,
        managedInstancesProvider={"infrastructureRoleArn": "bad", "instanceLaunchTemplate": {}},
    )
    after = ecs.describe_capacity_providers(capacityProviders=[cp["name"]])["capacityProviders"][0]
    assert after["managedInstancesProvider"] == before["managedInstancesProvider"], "a refused update changes nothing"


def test_update_unknown_provider(ecs, cluster):
    expect_error(
        REFUSED,
        ecs.update_capacity_provider,
        name=uid("nope"),
        cluster=cluster,
        managedInstancesProvider={"infrastructureRoleArn": ROLE_ARN, "instanceLaunchTemplate": {}},
    )


# --- delete -----------------------------------------------------------------


def test_delete_then_missing(ecs, cluster):
    cp = make(ecs, cluster)
    deleted = ecs.delete_capacity_provider(capacityProvider=cp["name"])["capacityProvider"]
    assert deleted["name"] == cp["name"]
    assert deleted["status"] in ("INACTIVE", "DEPROVISIONING")
    resp = ecs.describe_capacity_providers(capacityProviders=[cp["name"]])
    assert resp["capacityProviders"] == [] or resp["capacityProviders"][0]["status"] == "INACTIVE"
    if not resp["capacityProviders"]:
        assert [(f["arn"], f["reason"]) for f in resp["failures"]] == [(cp_arn(cp["name"]), "MISSING")]
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert cp["name"] not in c["capacityProviders"]


def test_delete_by_arn(ecs, cluster):
    cp = make(ecs, cluster)
    ecs.delete_capacity_provider(capacityProvider=cp["capacityProviderArn"])
    resp = ecs.describe_capacity_providers(capacityProviders=[cp["name"]])
    assert [c for c in resp["capacityProviders"] if c["status"] == "ACTIVE"] == []


def test_delete_unknown(ecs):
    expect_error(REFUSED, ecs.delete_capacity_provider, capacityProvider=uid("nope"))


def test_name_reusable_after_delete(ecs, cluster):
    cp = make(ecs, cluster)
    ecs.delete_capacity_provider(capacityProvider=cp["name"])
    again = make(ecs, cluster, name=cp["name"])
    assert again["status"] == "ACTIVE"

