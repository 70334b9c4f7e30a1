"""Concurrent clients: every write is one transaction, so racing requests neither lose nor duplicate anything."""

from concurrent.futures import ThreadPoolExecutor

from helpers import create_mi_cluster, register_td, strategy, uid

THREADS = 8


def in_parallel(server, n, fn):
    """Runs fn(client, i) for i in range(n) over THREADS threads, each with its own client."""
    clients = [server.client() for _ in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(fn, clients[i % THREADS], i) for i in range(n)]
        return [f.result() for f in futures]


def test_concurrent_registrations_get_distinct_revisions(server, ecs):
    family = uid("race")
    revs = in_parallel(server, 80, lambda c, i: register_td(c, family)["revision"])
    assert sorted(revs) == list(range(1, 81))
    listed = []
    for page in ecs.get_paginator("list_task_definitions").paginate(familyPrefix=family):
        listed += page["taskDefinitionArns"]
    assert len(listed) == 80


def test_concurrent_create_cluster_same_name(server, ecs):
    name = uid("race")
    arns = in_parallel(server, 24, lambda c, i: c.create_cluster(clusterName=name)["cluster"]["clusterArn"])
    assert len(set(arns)) == 1
    listed = []
    for page in ecs.get_paginator("list_clusters").paginate():
        listed += page["clusterArns"]
    assert listed.count(arns[0]) == 1


def test_concurrent_run_task_with_one_client_token(server, ecs):
    cluster, cp = create_mi_cluster(ecs, "race")
    td = register_td(ecs)
    token = uid("tok")

    def go(c, i):
        resp = c.run_task(
            cluster=cluster,
            taskDefinition=td["taskDefinitionArn"],
            capacityProviderStrategy=strategy(cp),
            count=2,
            clientToken=token,
        )
        return tuple(t["taskArn"] for t in resp["tasks"])

    results = in_parallel(server, 16, go)
    assert len(set(results)) == 1, "every retry with the token gets the same tasks"
    assert sorted(ecs.list_tasks(cluster=cluster)["taskArns"]) == sorted(results[0]), "exactly one set of tasks started"


def test_concurrent_run_and_stop(server, ecs):
    cluster, cp = create_mi_cluster(ecs, "race")
    td = register_td(ecs)

    def go(c, i):
        t = c.run_task(cluster=cluster, taskDefinition=td["taskDefinitionArn"], capacityProviderStrategy=strategy(cp))[
            "tasks"
        ][0]["taskArn"]
        if i % 2:
            c.stop_task(cluster=cluster, task=t, reason=f"stop {i}")
        return t, bool(i % 2)

    results = in_parallel(server, 40, go)
    running = sorted(t for t, stopped in results if not stopped)
    stopped = sorted(t for t, s in results if s)
    listed_running = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster):
        listed_running += page["taskArns"]
    listed_stopped = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus="STOPPED"):
        listed_stopped += page["taskArns"]
    assert sorted(listed_running) == running
    assert sorted(listed_stopped) == stopped


def test_concurrent_tagging_keeps_every_tag(server, ecs):
    arn = ecs.create_cluster(clusterName=uid("race"))["cluster"]["clusterArn"]
    in_parallel(server, 40, lambda c, i: c.tag_resource(resourceArn=arn, tags=[{"key": f"k{i:02d}", "value": str(i)}]))
    tags = ecs.list_tags_for_resource(resourceArn=arn)["tags"]
    assert sorted(t["key"] for t in tags) == [f"k{i:02d}" for i in range(40)]
