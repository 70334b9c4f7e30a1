"""Clusters: create, describe, list, update, delete, and their errors."""

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


def cluster_arn(name):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"


def describe_one(ecs, name, include=None):
    kw = {"clusters": [name]}
    if include is not None:
        kw["include"] = include
    resp = ecs.describe_clusters(**kw)
    assert resp["failures"] == [], resp["failures"]
    assert len(resp["clusters"]) == 1
    return resp["clusters"][0]


def all_cluster_arns(ecs):
    arns = []
    for page in ecs.get_paginator("list_clusters").paginate():
        arns += page["clusterArns"]
    return arns


def test_create_returns_the_cluster(ecs):
    name = uid("c")
    c = ecs.create_cluster(clusterName=name)["cluster"]
    assert c["clusterName"] == name
    assert c["clusterArn"] == cluster_arn(name)
    assert c["status"] == "ACTIVE"
    assert c["registeredContainerInstancesCount"] == 0
    assert c["runningTasksCount"] == 0
    assert c["pendingTasksCount"] == 0
    assert c["activeServicesCount"] == 0


def test_create_is_idempotent_by_name(ecs):
    name = uid("c")
    a = ecs.create_cluster(clusterName=name)["cluster"]
    b = ecs.create_cluster(clusterName=name)["cluster"]
    assert a["clusterArn"] == b["clusterArn"] == cluster_arn(name)
    assert b["status"] == "ACTIVE"
    assert all_cluster_arns(ecs).count(cluster_arn(name)) == 1


def test_create_without_a_name_creates_default(ecs):
    c = ecs.create_cluster()["cluster"]
    assert c["clusterName"] == "default"
    assert c["clusterArn"] == cluster_arn("default")
    # DescribeClusters without clusters describes "default".
    resp = ecs.describe_clusters()
    assert [x["clusterArn"] for x in resp["clusters"]] == [cluster_arn("default")]


def test_describe_by_name_and_by_arn(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    by_name = describe_one(ecs, name)
    by_arn = describe_one(ecs, cluster_arn(name))
    assert by_name["clusterArn"] == by_arn["clusterArn"] == cluster_arn(name)


def test_describe_include_members(ecs):
    name = uid("c")
    ecs.create_cluster(
        clusterName=name,
        tags=[{"key": "team", "value": "core"}, {"key": "env", "value": "test"}],
        settings=[{"name": "containerInsights", "value": "enabled"}],
        configuration={"executeCommandConfiguration": {"logging": "DEFAULT"}},
    )
    plain = describe_one(ecs, name)
    # Without include, the optional members carry nothing.
    for member in ("tags", "settings", "configuration", "statistics"):
        assert not plain.get(member), f"{member} given without include: {plain.get(member)}"

    with_settings = describe_one(ecs, name, ["SETTINGS"])
    assert {"name": "containerInsights", "value": "enabled"} in with_settings["settings"]
    assert not with_settings.get("tags")

    with_tags = describe_one(ecs, name, ["TAGS"])
    assert sorted(with_tags["tags"], key=lambda t: t["key"]) == [
        {"key": "env", "value": "test"},
        {"key": "team", "value": "core"},
    ]
    assert not with_tags.get("settings")

    with_conf = describe_one(ecs, name, ["CONFIGURATIONS"])
    assert with_conf["configuration"]["executeCommandConfiguration"]["logging"] == "DEFAULT"

    with_stats = describe_one(ecs, name, ["STATISTICS"])
    stats = with_stats["statistics"]
    assert stats, "STATISTICS gives the statistics"
    assert all(set(s) == {"name", "value"} for s in stats), stats

    everything = describe_one(ecs, name, ["SETTINGS", "TAGS", "STATISTICS", "CONFIGURATIONS"])
    assert everything["settings"] and everything["tags"] and everything["statistics"] and everything["configuration"]


def test_container_insights_defaults_to_disabled(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    c = describe_one(ecs, name, ["SETTINGS"])
    assert {"name": "containerInsights", "value": "disabled"} in c["settings"]


def test_describe_missing_gives_failures(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    missing = uid("nope")
    missing_arn = cluster_arn(uid("gone"))
    resp = ecs.describe_clusters(clusters=[name, missing, missing_arn])
    assert [c["clusterName"] for c in resp["clusters"]] == [name]
    failures = {f["arn"]: f["reason"] for f in resp["failures"]}
    assert failures == {cluster_arn(missing): "MISSING", missing_arn: "MISSING"}


def test_list_with_paginator_gives_every_cluster_once(ecs):
    prefix = uid("pg")
    names = [f"{prefix}-{i:02d}" for i in range(25)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    seen = []
    pages = 0
    for page in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 7}):
        pages += 1
        assert len(page["clusterArns"]) <= 7
        seen += page["clusterArns"]
    ours = [a for a in seen if a.split("/", 1)[1].startswith(prefix)]
    assert sorted(ours) == sorted(cluster_arn(n) for n in names)
    assert len(ours) == len(set(ours)) == 25
    assert len(seen) == len(set(seen)), "no cluster is listed twice"
    assert pages >= 4


def test_list_max_results_bounds(ecs, ecs_nv):
    expect_error("InvalidParameterException", ecs_nv.list_clusters, maxResults=0)
    expect_error("InvalidParameterException", ecs_nv.list_clusters, maxResults=101)
    resp = ecs.list_clusters(maxResults=1)
    assert len(resp["clusterArns"]) <= 1


def test_list_bad_next_token(ecs):
    expect_error("InvalidParameterException", ecs.list_clusters, nextToken="not-a-token")


def test_update_cluster_settings(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    c = ecs.update_cluster_settings(cluster=name, settings=[{"name": "containerInsights", "value": "enabled"}])[
        "cluster"
    ]
    assert {"name": "containerInsights", "value": "enabled"} in c["settings"]
    described = describe_one(ecs, name, ["SETTINGS"])
    assert {"name": "containerInsights", "value": "enabled"} in described["settings"]
    assert [s for s in described["settings"] if s["name"] == "containerInsights"] == [
        {"name": "containerInsights", "value": "enabled"}
    ]
    ecs.update_cluster_settings(cluster=cluster_arn(name), settings=[{"name": "containerInsights", "value": "disabled"}])
    described = describe_one(ecs, name, ["SETTINGS"])
    assert {"name": "containerInsights", "value": "disabled"} in described["settings"]


def test_update_cluster_settings_invalid_value(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    expect_error(
        "InvalidParameterException",
        ecs.update_cluster_settings,
        cluster=name,
        settings=[{"name": "containerInsights", "value": "sometimes"}],
    )
    expect_error(
        "InvalidParameterException",
        ecs.create_cluster,
        clusterName=uid("c"),
        settings=[{"name": "containerInsights", "value": "maybe"}],
    )


def test_update_cluster(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    c = ecs.update_cluster(
        cluster=name,
        settings=[{"name": "containerInsights", "value": "enhanced"}],
        configuration={"executeCommandConfiguration": {"logging": "NONE"}},
    )["cluster"]
    assert c["clusterArn"] == cluster_arn(name)
    d = describe_one(ecs, name, ["SETTINGS", "CONFIGURATIONS"])
    assert {"name": "containerInsights", "value": "enhanced"} in d["settings"]
    assert d["configuration"]["executeCommandConfiguration"]["logging"] == "NONE"


@pytest.mark.parametrize("bad", ["has space", "slash/name", "x" * 256, "star*", "dots.are.bad", ""])
def test_invalid_names_are_refused(ecs_nv, bad):
    expect_error("InvalidParameterException", ecs_nv.create_cluster, clusterName=bad)


def test_longest_valid_name(ecs):
    name = "L" + uid("x").replace("-", "_") + "x" * 200
    name = name[:255]
    c = ecs.create_cluster(clusterName=name)["cluster"]
    assert c["clusterName"] == name


def test_delete_makes_it_inactive_and_unlisted(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    c = ecs.delete_cluster(cluster=name)["cluster"]
    assert c["status"] == "INACTIVE"
    assert c["clusterArn"] == cluster_arn(name)
    assert cluster_arn(name) not in all_cluster_arns(ecs)
    resp = ecs.describe_clusters(clusters=[name])
    statuses = [x["status"] for x in resp["clusters"]]
    # A deleted cluster describes as INACTIVE (or, once forgotten, as MISSING).
    assert statuses == ["INACTIVE"] or [f["reason"] for f in resp["failures"]] == ["MISSING"]


def test_delete_twice_is_cluster_not_found(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    ecs.delete_cluster(cluster=name)
    expect_error("ClusterNotFoundException", ecs.delete_cluster, cluster=name)


def test_recreate_after_delete(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    ecs.delete_cluster(cluster=name)
    c = ecs.create_cluster(clusterName=name)["cluster"]
    assert c["status"] == "ACTIVE"
    assert c["clusterArn"] == cluster_arn(name)
    assert cluster_arn(name) in all_cluster_arns(ecs)


def test_delete_refused_while_a_capacity_provider_exists(ecs):
    cluster, cp = create_mi_cluster(ecs)
    e = expect_error("ClusterContainsCapacityProviderException", ecs.delete_cluster, cluster=cluster)
    assert e.response["Error"]["Message"]
    assert describe_one(ecs, cluster)["status"] == "ACTIVE"
    ecs.delete_capacity_provider(capacityProvider=cp)
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"


def test_delete_refused_while_a_task_is_not_stopped(ecs):
    cluster, cp = create_mi_cluster(ecs)
    td = register_td(ecs)
    task = ecs.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"], capacityProviderStrategy=strategy(cp))[
        "tasks"
    ][0]
    expect_error("ClusterContainsTasksException", ecs.delete_cluster, cluster=cluster)
    assert describe_one(ecs, cluster)["status"] == "ACTIVE"
    ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="cleanup")
    ecs.delete_capacity_provider(capacityProvider=cp)
    assert ecs.delete_cluster(cluster=cluster)["cluster"]["status"] == "INACTIVE"


def test_task_counts_in_describe(ecs):
    cluster, cp = create_mi_cluster(ecs)
    td = register_td(ecs)
    ecs.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"], capacityProviderStrategy=strategy(cp), count=2)
    c = describe_one(ecs, cluster)
    # Not yet placed: the tasks are pending, none is running.
    assert c["runningTasksCount"] == 0
    assert c["pendingTasksCount"] == 2


def test_cluster_not_found_errors(ecs):
    missing = uid("nope")
    expect_error("ClusterNotFoundException", ecs.delete_cluster, cluster=missing)
    expect_error(
        "ClusterNotFoundException",
        ecs.update_cluster_settings,
        cluster=missing,
        settings=[{"name": "containerInsights", "value": "enabled"}],
    )
    expect_error("ClusterNotFoundException", ecs.update_cluster, cluster=missing, settings=[])
    expect_error(
        "ClusterNotFoundException",
        ecs.put_cluster_capacity_providers,
        cluster=missing,
        capacityProviders=[],
        defaultCapacityProviderStrategy=[],
    )
    expect_error("ClusterNotFoundException", ecs.list_tasks, cluster=missing)
    expect_error("ClusterNotFoundException", ecs.list_container_instances, cluster=missing)
    expect_error("ClusterNotFoundException", ecs.delete_cluster, cluster=cluster_arn(missing))


def test_put_cluster_capacity_providers_unknown_provider(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    expect_error(
        "InvalidParameterException",
        ecs.put_cluster_capacity_providers,
        cluster=name,
        capacityProviders=[uid("nope")],
        defaultCapacityProviderStrategy=[],
    )


def test_put_cluster_capacity_providers_strategy_must_name_an_associated_provider(ecs):
    cluster, cp = create_mi_cluster(ecs)
    other = uid("nope")
    expect_error(
        "InvalidParameterException",
        ecs.put_cluster_capacity_providers,
        cluster=cluster,
        capacityProviders=[cp],
        defaultCapacityProviderStrategy=[{"capacityProvider": other, "weight": 1}],
    )
    c = ecs.put_cluster_capacity_providers(
        cluster=cluster,
        capacityProviders=[cp],
        defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 2, "base": 1}],
    )["cluster"]
    assert c["capacityProviders"] == [cp]
    assert c["defaultCapacityProviderStrategy"] == [{"capacityProvider": cp, "weight": 2, "base": 1}]
    d = describe_one(ecs, cluster)
    assert d["defaultCapacityProviderStrategy"] == [{"capacityProvider": cp, "weight": 2, "base": 1}]


def test_describe_more_than_100_refused(ecs):
    expect_error("InvalidParameterException", ecs.describe_clusters, clusters=[f"c{i}" for i in range(101)])


def test_create_again_returns_the_existing_cluster_unchanged(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "enabled"}])
    again = ecs.create_cluster(clusterName=name, settings=[{"name": "containerInsights", "value": "disabled"}])["cluster"]
    assert again["clusterArn"] == cluster_arn(name)
    d = describe_one(ecs, name, ["SETTINGS"])
    assert {"name": "containerInsights", "value": "enabled"} in d["settings"]


def test_arn_of_another_region_or_account_is_missing(ecs):
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    for arn in (f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/{name}", f"arn:aws:ecs:{REGION}:111122223333:cluster/{name}"):
        resp = ecs.describe_clusters(clusters=[arn])
        assert resp["clusters"] == []
        assert [(f["arn"], f["reason"]) for f in resp["failures"]] == [(arn, "MISSING")]
        expect_error("ClusterNotFoundException", ecs.list_tasks, cluster=arn)


def test_list_skips_deleted_clusters_across_pages(ecs):
    prefix = uid("pgd")
    names = [f"{prefix}-{i:02d}" for i in range(21)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    deleted = names[::3]
    for n in deleted:
        ecs.delete_cluster(cluster=n)
    seen = []
    for page in ecs.get_paginator("list_clusters").paginate(PaginationConfig={"PageSize": 5}):
        seen += page["clusterArns"]
    ours = [a for a in seen if a.split("/", 1)[1].startswith(prefix)]
    assert sorted(ours) == sorted(cluster_arn(n) for n in names if n not in deleted)
    assert len(ours) == len(set(ours))


def test_deleting_a_provider_drops_it_from_the_cluster_strategy(ecs):
    cluster, cp = create_mi_cluster(ecs, default_strategy=True)
    d = describe_one(ecs, cluster)
    assert d["defaultCapacityProviderStrategy"][0]["capacityProvider"] == cp
    ecs.delete_capacity_provider(capacityProvider=cp)
    d = describe_one(ecs, cluster)
    assert cp not in d["capacityProviders"]
    assert all(i["capacityProvider"] != cp for i in d.get("defaultCapacityProviderStrategy", []))


def test_provider_of_another_cluster_cannot_be_associated(ecs):
    _, cp = create_mi_cluster(ecs)
    other = uid("c")
    ecs.create_cluster(clusterName=other)
    expect_error(
        "InvalidParameterException",
        ecs.put_cluster_capacity_providers,
        cluster=other,
        capacityProviders=[cp],
        defaultCapacityProviderStrategy=[],
    )
    assert describe_one(ecs, other)["capacityProviders"] == []


def test_strategy_limits(ecs, ecs_nv):
    cluster, cp = create_mi_cluster(ecs)
    for item in (
        {"capacityProvider": cp, "weight": 1001},
        {"capacityProvider": cp, "weight": 1, "base": 100001},
    ):
        expect_error(
            "InvalidParameterException",
            ecs_nv.put_cluster_capacity_providers,
            cluster=cluster,
            capacityProviders=[cp],
            defaultCapacityProviderStrategy=[item],
        )
    expect_error(
        "InvalidParameterException",
        ecs.put_cluster_capacity_providers,
        cluster=cluster,
        capacityProviders=[cp],
        defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 1}, {"capacityProvider": cp, "weight": 2}],
    )
