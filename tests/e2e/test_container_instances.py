"""Container instances and attributes before any agent has registered."""

import pytest

from helpers import ACCOUNT, REGION, expect_error, uid


@pytest.fixture(scope="module")
def cluster(ecs):
    name = uid("ci")
    ecs.create_cluster(clusterName=name)
    return name


def ci_arn(cluster, ci_id):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/{cluster}/{ci_id}"


def test_list_is_empty(ecs, cluster):
    assert ecs.list_container_instances(cluster=cluster)["containerInstanceArns"] == []
    assert ecs.list_container_instances(cluster=cluster, status="ACTIVE")["containerInstanceArns"] == []
    assert ecs.list_container_instances(cluster=cluster, status="DRAINING")["containerInstanceArns"] == []
    pages = list(ecs.get_paginator("list_container_instances").paginate(cluster=cluster))
    assert sum(len(p["containerInstanceArns"]) for p in pages) == 0


def test_describe_unknown_is_missing(ecs, cluster):
    ci_id = "0123456789abcdef0123456789abcdef"
    other_arn = ci_arn(cluster, "fedcba9876543210fedcba9876543210")
    resp = ecs.describe_container_instances(cluster=cluster, containerInstances=[ci_id, other_arn])
    assert resp["containerInstances"] == []
    assert sorted((f["arn"], f["reason"]) for f in resp["failures"]) == sorted(
        [(ci_arn(cluster, ci_id), "MISSING"), (other_arn, "MISSING")]
    )


def test_cluster_counts_no_instances(ecs, cluster):
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["registeredContainerInstancesCount"] == 0


def test_unknown_cluster(ecs):
    expect_error("ClusterNotFoundException", ecs.list_container_instances, cluster=uid("nope"))
    expect_error(
        "ClusterNotFoundException", ecs.describe_container_instances, cluster=uid("nope"), containerInstances=["x"]
    )


def test_update_state_of_unknown_instance(ecs, cluster):
    resp = ecs.update_container_instances_state(
        cluster=cluster, containerInstances=["0123456789abcdef0123456789abcdef"], status="DRAINING"
    )
    assert resp["containerInstances"] == []
    assert [f["reason"] for f in resp["failures"]] == ["MISSING"]


def test_update_state_to_invalid_status(ecs_nv, cluster):
    expect_error(
        "InvalidParameterException",
        ecs_nv.update_container_instances_state,
        cluster=cluster,
        containerInstances=["0123456789abcdef0123456789abcdef"],
        status="REGISTERING",
    )


def test_deregister_unknown_instance(ecs, cluster):
    expect_error(
        ("InvalidParameterException", "ClientException"),
        ecs.deregister_container_instance,
        cluster=cluster,
        containerInstance="0123456789abcdef0123456789abcdef",
    )


def test_list_with_filter_expression_is_not_supported_yet(ecs, cluster):
    e = expect_error(
        ("UnsupportedFeatureException", "InvalidParameterException"),
        ecs.list_container_instances,
        cluster=cluster,
        filter="attribute:ecs.instance-type == t3.micro",
    )
    assert e.response["Error"]["Message"]


# --- attributes -----------------------------------------------------------------


def test_put_attributes_on_unknown_target(ecs, cluster):
    e = expect_error(
        "TargetNotFoundException",
        ecs.put_attributes,
        cluster=cluster,
        attributes=[{"name": "stack", "value": "prod", "targetId": "0123456789abcdef0123456789abcdef"}],
    )
    assert e.response["Error"]["Message"]
    expect_error(
        "TargetNotFoundException",
        ecs.put_attributes,
        cluster=cluster,
        attributes=[
            {
                "name": "stack",
                "value": "prod",
                "targetType": "container-instance",
                "targetId": ci_arn(cluster, "0123456789abcdef0123456789abcdef"),
            }
        ],
    )


def test_delete_attributes_on_unknown_target(ecs, cluster):
    expect_error(
        "TargetNotFoundException",
        ecs.delete_attributes,
        cluster=cluster,
        attributes=[{"name": "stack", "targetId": "0123456789abcdef0123456789abcdef"}],
    )


def test_put_attributes_validation(ecs, ecs_nv, cluster):
    expect_error("InvalidParameterException", ecs_nv.put_attributes, cluster=cluster, attributes=[])
    expect_error(
        "InvalidParameterException",
        ecs.put_attributes,
        cluster=cluster,
        attributes=[{"name": "bad name!", "value": "x", "targetId": "0123456789abcdef0123456789abcdef"}],
    )
    expect_error(
        "InvalidParameterException",
        ecs.put_attributes,
        cluster=cluster,
        attributes=[{"name": "no-target", "value": "x"}],
    )


def test_list_attributes_empty(ecs, cluster):
    resp = ecs.list_attributes(cluster=cluster, targetType="container-instance")
    assert resp["attributes"] == []
    resp = ecs.list_attributes(cluster=cluster, targetType="container-instance", attributeName="stack")
    assert resp["attributes"] == []


def test_list_attributes_value_needs_name(ecs, cluster):
    expect_error(
        "InvalidParameterException",
        ecs.list_attributes,
        cluster=cluster,
        targetType="container-instance",
        attributeValue="prod",
    )


def test_attributes_unknown_cluster(ecs):
    expect_error(
        "ClusterNotFoundException",
        ecs.put_attributes,
        cluster=uid("nope"),
        attributes=[{"name": "a", "targetId": "0123456789abcdef0123456789abcdef"}],
    )
    expect_error("ClusterNotFoundException", ecs.list_attributes, cluster=uid("nope"), targetType="container-instance")
