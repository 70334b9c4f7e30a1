"""TagResource, UntagResource, ListTagsForResource on every taggable resource."""

import pytest

from helpers import ACCOUNT, REGION, create_mi_cluster, expect_error, register_td, strategy, uid


@pytest.fixture(scope="module")
def resources(ecs):
    cluster, cp = create_mi_cluster(ecs, "tg")
    td = register_td(ecs)
    task = ecs.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"], capacityProviderStrategy=strategy(cp))[
        "tasks"
    ][0]
    cluster_arn = ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"]
    cp_arn = ecs.describe_capacity_providers(capacityProviders=[cp])["capacityProviders"][0]["capacityProviderArn"]
    return {
        "cluster": cluster_arn,
        "capacity-provider": cp_arn,
        "task-definition": td["taskDefinitionArn"],
        "task": task["taskArn"],
    }


def tags_of(ecs, arn):
    return sorted(ecs.list_tags_for_resource(resourceArn=arn)["tags"], key=lambda t: t["key"])


KINDS = ["cluster", "capacity-provider", "task-definition", "task"]


@pytest.mark.parametrize("kind", KINDS)
def test_tag_untag_list(ecs, resources, kind):
    arn = resources[kind]
    k1, k2 = uid("k"), uid("k")
    ecs.tag_resource(resourceArn=arn, tags=[{"key": k1, "value": "one"}, {"key": k2, "value": "two"}])
    mine = [t for t in tags_of(ecs, arn) if t["key"] in (k1, k2)]
    assert mine == sorted([{"key": k1, "value": "one"}, {"key": k2, "value": "two"}], key=lambda t: t["key"])
    # Tagging an existing key replaces its value.
    ecs.tag_resource(resourceArn=arn, tags=[{"key": k1, "value": "uno"}])
    assert {"key": k1, "value": "uno"} in tags_of(ecs, arn)
    assert {"key": k1, "value": "one"} not in tags_of(ecs, arn)
    ecs.untag_resource(resourceArn=arn, tagKeys=[k1])
    keys = [t["key"] for t in tags_of(ecs, arn)]
    assert k1 not in keys and k2 in keys
    # Untagging a key that is not there is fine.
    ecs.untag_resource(resourceArn=arn, tagKeys=[k1, uid("absent")])
    ecs.untag_resource(resourceArn=arn, tagKeys=[k2])
    assert k2 not in [t["key"] for t in tags_of(ecs, arn)]


def test_tags_show_in_describe(ecs, resources):
    key = uid("k")
    for kind in KINDS:
        ecs.tag_resource(resourceArn=resources[kind], tags=[{"key": key, "value": kind}])
    c = ecs.describe_clusters(clusters=[resources["cluster"]], include=["TAGS"])["clusters"][0]
    assert {"key": key, "value": "cluster"} in c["tags"]
    cp = ecs.describe_capacity_providers(capacityProviders=[resources["capacity-provider"]], include=["TAGS"])[
        "capacityProviders"
    ][0]
    assert {"key": key, "value": "capacity-provider"} in cp["tags"]
    td = ecs.describe_task_definition(taskDefinition=resources["task-definition"], include=["TAGS"])
    assert {"key": key, "value": "task-definition"} in td["tags"]
    t = ecs.describe_tasks(cluster=resources["cluster"], tasks=[resources["task"]], include=["TAGS"])["tasks"][0]
    assert {"key": key, "value": "task"} in t["tags"]


@pytest.mark.parametrize("kind", KINDS)
def test_reserved_prefix_refused(ecs, resources, kind):
    expect_error(
        "InvalidParameterException", ecs.tag_resource, resourceArn=resources[kind], tags=[{"key": "aws:owner", "value": "x"}]
    )
    expect_error(
        "InvalidParameterException", ecs.tag_resource, resourceArn=resources[kind], tags=[{"key": "AWS:Owner", "value": "x"}]
    )


def test_51_tags_refused(ecs, resources):
    arn = resources["cluster"]
    many = [{"key": f"k{i}", "value": "v"} for i in range(51)]
    expect_error("InvalidParameterException", ecs.tag_resource, resourceArn=arn, tags=many)
    assert not any(t["key"] == "k0" for t in tags_of(ecs, arn)), "a refused tagging changes nothing"


def test_more_than_50_in_total_refused(ecs):
    name = uid("c")
    arn = ecs.create_cluster(clusterName=name, tags=[{"key": f"a{i}", "value": "v"} for i in range(30)])["cluster"][
        "clusterArn"
    ]
    expect_error(
        "InvalidParameterException", ecs.tag_resource, resourceArn=arn, tags=[{"key": f"b{i}", "value": "v"} for i in range(21)]
    )
    assert len(tags_of(ecs, arn)) == 30
    ecs.tag_resource(resourceArn=arn, tags=[{"key": f"b{i}", "value": "v"} for i in range(20)])
    assert len(tags_of(ecs, arn)) == 50


def test_create_with_51_tags_refused(ecs):
    expect_error(
        "InvalidParameterException",
        ecs.create_cluster,
        clusterName=uid("c"),
        tags=[{"key": f"k{i}", "value": "v"} for i in range(51)],
    )


@pytest.mark.parametrize(
    "tag",
    [
        {"key": "k" * 129, "value": "v"},
        {"key": "ok", "value": "v" * 257},
        {"key": "bad#char", "value": "v"},
        {"key": "", "value": "v"},
    ],
)
def test_invalid_tags_refused(ecs_nv, resources, tag):
    expect_error("InvalidParameterException", ecs_nv.tag_resource, resourceArn=resources["cluster"], tags=[tag])


def test_unknown_resources(ecs):
    base = f"arn:aws:ecs:{REGION}:{ACCOUNT}"
    expect_error(
        ("ClusterNotFoundException", "ResourceNotFoundException"),
        ecs.list_tags_for_resource,
        resourceArn=f"{base}:cluster/{uid('nope')}",
    )
    for arn in (
        f"{base}:capacity-provider/{uid('nope')}",
        f"{base}:task-definition/{uid('nope')}:1",
        f"{base}:task/{uid('c')}/{'a' * 32}",
    ):
        expect_error("ResourceNotFoundException", ecs.list_tags_for_resource, resourceArn=arn)
        expect_error("ResourceNotFoundException", ecs.tag_resource, resourceArn=arn, tags=[{"key": "a", "value": "b"}])
        expect_error("ResourceNotFoundException", ecs.untag_resource, resourceArn=arn, tagKeys=["a"])


def test_invalid_arn(ecs):
    expect_error("InvalidParameterException", ecs.list_tags_for_resource, resourceArn="not-an-arn")
    expect_error(
        "InvalidParameterException", ecs.tag_resource, resourceArn="arn:aws:s3:::bucket", tags=[{"key": "a", "value": "b"}]
    )
