"""State survives a graceful stop (SIGTERM / SIGINT) and a restart on the same data dir."""

import signal

from helpers import create_mi_cluster, mi_provider, register_td, simple_container, strategy, uid


def snapshot(ecs, world):
    """Everything a user could see about what `build` created."""
    cluster = world["cluster"]
    snap = {}
    snap["cluster"] = ecs.describe_clusters(
        clusters=[cluster], include=["SETTINGS", "TAGS", "CONFIGURATIONS", "STATISTICS"]
    )["clusters"]
    snap["providers"] = ecs.describe_capacity_providers(capacityProviders=world["cps"], include=["TAGS"])[
        "capacityProviders"
    ]
    snap["tds"] = [
        ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"]) for arn in world["td_arns"]
    ]
    for d in snap["tds"]:
        d.pop("ResponseMetadata", None)
    snap["td_lists"] = {
        s: ecs.list_task_definitions(familyPrefix=world["family"], status=s)["taskDefinitionArns"]
        for s in ("ACTIVE", "INACTIVE", "DELETE_IN_PROGRESS")
    }
    snap["families"] = ecs.list_task_definition_families(familyPrefix=world["family"])["families"]
    snap["tasks"] = sorted(
        ecs.describe_tasks(cluster=cluster, tasks=world["task_arns"], include=["TAGS"])["tasks"],
        key=lambda t: t["taskArn"],
    )
    snap["running"] = sorted(ecs.list_tasks(cluster=cluster)["taskArns"])
    snap["stopped"] = sorted(ecs.list_tasks(cluster=cluster, desiredStatus="STOPPED")["taskArns"])
    snap["settings"] = ecs.list_account_settings(name="awsvpcTrunking")["settings"]
    snap["default_setting"] = ecs.list_account_settings(name="containerInsights", effectiveSettings=True)["settings"]
    snap["deleted_cluster"] = ecs.describe_clusters(clusters=[world["deleted_cluster"]])
    snap["deleted_cluster"].pop("ResponseMetadata", None)
    snap["cluster_listed"] = world["deleted_cluster"] not in " ".join(ecs.list_clusters()["clusterArns"])
    return snap


def build(ecs):
    cluster, cp = create_mi_cluster(ecs, "persist")
    ecs.tag_resource(
        resourceArn=ecs.describe_clusters(clusters=[cluster])["clusters"][0]["clusterArn"],
        tags=[{"key": "env", "value": "prod"}],
    )
    ecs.update_cluster_settings(cluster=cluster, settings=[{"name": "containerInsights", "value": "enabled"}])
    cp2 = uid("mi")
    ecs.create_capacity_provider(
        name=cp2, cluster=cluster, managedInstancesProvider=mi_provider(), tags=[{"key": "tier", "value": "2"}]
    )
    ecs.put_cluster_capacity_providers(
        cluster=cluster,
        capacityProviders=[cp, cp2],
        defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 3}, {"capacityProvider": cp2, "weight": 1}],
    )
    family = uid("pfam")
    td_arns = []
    for i in range(4):
        td = register_td(
            ecs,
            family,
            containers=[simple_container("app", environment=[{"name": "REV", "value": str(i + 1)}])],
            tags=[{"key": "rev", "value": str(i + 1)}],
            memory="1GB",
        )
        td_arns.append(td["taskDefinitionArn"])
    ecs.deregister_task_definition(taskDefinition=td_arns[1])
    ecs.deregister_task_definition(taskDefinition=td_arns[2])
    ecs.delete_task_definitions(taskDefinitions=[td_arns[2]])
    tasks = ecs.run_task(
        cluster=cluster,
        taskDefinition=td_arns[0],
        count=3,
        capacityProviderStrategy=strategy(cp),
        tags=[{"key": "job", "value": "x"}],
        clientToken="persist-token",
        enableExecuteCommand=True,
    )["tasks"]
    task_arns = [t["taskArn"] for t in tasks]
    task_arns.append(ecs.run_task(cluster=cluster, taskDefinition=family)["tasks"][0]["taskArn"])
    ecs.stop_task(cluster=cluster, task=task_arns[0], reason="stopped before the restart")
    ecs.put_account_setting(name="awsvpcTrunking", value="enabled")
    ecs.put_account_setting_default(name="containerInsights", value="enhanced")
    deleted = uid("gone")
    ecs.create_cluster(clusterName=deleted)
    ecs.delete_cluster(cluster=deleted)
    return {
        "cluster": cluster,
        "cps": [cp, cp2],
        "family": family,
        "td_arns": td_arns,
        "task_arns": task_arns,
        "deleted_cluster": deleted,
        "first_run": task_arns[:3],
    }


def test_everything_survives_sigterm_and_restart(spawn):
    srv = spawn()
    ecs = srv.client()
    world = build(ecs)
    before = snapshot(ecs, world)
    # Sanity: the snapshot saw what was built.
    assert len(before["tasks"]) == 4 and len(before["providers"]) == 2
    assert before["stopped"] == [world["task_arns"][0]]

    assert srv.stop() == 0, f"SIGTERM is a graceful exit 0; log:\n{srv.log()}"
    srv.start()
    ecs = srv.client()
    after = snapshot(ecs, world)
    for key in before:
        assert after[key] == before[key], f"{key} changed across the restart"

    # What comes next continues from the stored state.
    assert register_td(ecs, world["family"])["revision"] == 5, "revision numbers are not reused after a restart"
    again = ecs.run_task(
        cluster=world["cluster"],
        taskDefinition=world["td_arns"][0],
        count=3,
        capacityProviderStrategy=strategy(world["cps"][0]),
        tags=[{"key": "job", "value": "x"}],
        clientToken="persist-token",
        enableExecuteCommand=True,
    )["tasks"]
    assert [t["taskArn"] for t in again] == world["first_run"], "client tokens survive a restart"
    assert ecs.create_cluster(clusterName=world["cluster"])["cluster"]["clusterArn"].endswith("/" + world["cluster"])


def test_sigint_is_a_graceful_exit_too(spawn):
    srv = spawn()
    ecs = srv.client()
    name = uid("int")
    ecs.create_cluster(clusterName=name)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=15) == 0, srv.log()
    srv.start()
    assert srv.client().describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"


def test_two_restarts_in_a_row(spawn):
    srv = spawn()
    family = uid("twice")
    register_td(srv.client(), family)
    for expected in (2, 3):
        assert srv.stop() == 0
        srv.start()
        assert register_td(srv.client(), family)["revision"] == expected
