"""Task definitions: register, describe, list, deregister, delete."""

import pytest

from helpers import ACCOUNT, REGION, expect_error, register_td, simple_container, uid

REFUSED = ("ClientException", "InvalidParameterException")


def td_arn(family, rev):
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{rev}"


def assert_contains(actual, expected, path="$"):
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing from {sorted(actual)}"
            assert_contains(actual[k], v, f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_contains(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


RICH_APP = {
    "name": "app",
    "image": "public.ecr.aws/docker/library/nginx:1.27",
    "cpu": 512,
    "memory": 1024,
    "memoryReservation": 512,
    "essential": True,
    "portMappings": [
        {"containerPort": 80, "hostPort": 80, "protocol": "tcp", "name": "http"},
        {"containerPort": 8125, "hostPort": 8125, "protocol": "udp"},
    ],
    "environment": [{"name": "MODE", "value": "production"}, {"name": "EMPTY", "value": ""}],
    "entryPoint": ["/docker-entrypoint.sh"],
    "command": ["nginx", "-g", "daemon off;"],
    "workingDirectory": "/srv",
    "user": "101:101",
    "linuxParameters": {
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
        "initProcessEnabled": True,
    },
    "healthCheck": {
        "command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
        "interval": 15,
        "timeout": 4,
        "retries": 5,
        "startPeriod": 20,
    },
    "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"},
    },
    "privileged": True,
    "readonlyRootFilesystem": True,
    "dependsOn": [{"containerName": "sidecar", "condition": "START"}],
    "stopTimeout": 45,
    "dockerLabels": {"com.example.team": "web"},
    "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False}],
}

RICH_SIDECAR = {
    "name": "sidecar",
    "image": "public.ecr.aws/docker/library/busybox:latest",
    "memory": 64,
    "essential": False,
    "command": ["sleep", "infinity"],
}


def test_register_round_trips_a_rich_definition(ecs):
    family = uid("rich")
    given = dict(
        family=family,
        taskRoleArn="arn:aws:iam::123456789012:role/appTaskRole",
        executionRoleArn="arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        networkMode="awsvpc",
        containerDefinitions=[RICH_APP, RICH_SIDECAR],
        volumes=[{"name": "scratch", "host": {"sourcePath": "/var/scratch"}}],
        requiresCompatibilities=["MANAGED_INSTANCES"],
        cpu="1024",
        memory="2048",
        tags=[{"key": "team", "value": "web"}],
    )
    resp = ecs.register_task_definition(**given)
    td = resp["taskDefinition"]
    assert td["family"] == family
    assert td["revision"] == 1
    assert td["taskDefinitionArn"] == td_arn(family, 1)
    assert td["status"] == "ACTIVE"
    assert td["networkMode"] == "awsvpc"
    assert td["cpu"] == "1024" and td["memory"] == "2048"
    assert td["taskRoleArn"] == given["taskRoleArn"]
    assert td["executionRoleArn"] == given["executionRoleArn"]
    assert td["requiresCompatibilities"] == ["MANAGED_INSTANCES"]
    assert "MANAGED_INSTANCES" in td["compatibilities"]
    assert resp["tags"] == [{"key": "team", "value": "web"}]
    assert_contains(td["volumes"], given["volumes"])
    assert [c["name"] for c in td["containerDefinitions"]] == ["app", "sidecar"]
    assert_contains(td["containerDefinitions"][0], RICH_APP, "$.app")
    assert_contains(td["containerDefinitions"][1], RICH_SIDECAR, "$.sidecar")
    assert td.get("registeredAt") is not None

    described = ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert_contains(described["containerDefinitions"][0], RICH_APP, "$.described.app")
    assert_contains(described["containerDefinitions"][1], RICH_SIDECAR, "$.described.sidecar")
    assert described == td, "describe gives back what register answered"


def test_revisions_count_up(ecs):
    family = uid("rev")
    revs = [register_td(ecs, family)["revision"] for _ in range(3)]
    assert revs == [1, 2, 3]
    arns = [td_arn(family, r) for r in revs]
    listed = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert listed == arns


def test_managed_instances_defaults_network_mode_to_awsvpc(ecs):
    td = register_td(ecs, requiresCompatibilities=["MANAGED_INSTANCES"])
    assert td["networkMode"] == "awsvpc"
    assert "MANAGED_INSTANCES" in td["compatibilities"]
    assert td["requiresCompatibilities"] == ["MANAGED_INSTANCES"]


def test_host_network_mode_is_kept(ecs):
    td = register_td(ecs, networkMode="host", requiresCompatibilities=["MANAGED_INSTANCES"])
    assert td["networkMode"] == "host"
    assert "MANAGED_INSTANCES" in td["compatibilities"]


def test_bridge_with_managed_instances_refused(ecs):
    e = expect_error(
        "ClientException",
        ecs.register_task_definition,
        family=uid("br"),
        networkMode="bridge",
        requiresCompatibilities=["MANAGED_INSTANCES"],
        containerDefinitions=[simple_container()],
    )
    assert "MANAGED_INSTANCES" in e.response["Error"]["Message"]


def test_bridge_without_requirement_is_not_managed_instances_compatible(ecs):
    td = ecs.register_task_definition(
        family=uid("br"), networkMode="bridge", containerDefinitions=[simple_container()]
    )["taskDefinition"]
    assert td["networkMode"] == "bridge"
    assert "MANAGED_INSTANCES" not in td["compatibilities"]


def test_no_essential_container_refused(ecs):
    expect_error(
        "ClientException",
        ecs.register_task_definition,
        family=uid("ne"),
        containerDefinitions=[simple_container("a", essential=False), simple_container("b", essential=False)],
    )


def test_container_without_memory_and_no_task_memory_refused(ecs):
    c = simple_container()
    del c["memory"]
    expect_error("ClientException", ecs.register_task_definition, family=uid("nm"), containerDefinitions=[c])


def test_container_without_memory_but_task_memory_accepted(ecs):
    c = simple_container()
    del c["memory"]
    td = ecs.register_task_definition(family=uid("tm"), containerDefinitions=[c], memory="512", cpu="256")[
        "taskDefinition"
    ]
    assert td["memory"] == "512"


def test_memory_and_cpu_units_are_normalised(ecs):
    td = ecs.register_task_definition(
        family=uid("units"),
        containerDefinitions=[simple_container()],
        memory="2GB",
        cpu="1 vCPU",
        requiresCompatibilities=["MANAGED_INSTANCES"],
    )["taskDefinition"]
    assert td["memory"] == "2048"
    assert td["cpu"] == "1024"
    described = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])["taskDefinition"]
    assert described["memory"] == "2048" and described["cpu"] == "1024"


@pytest.mark.parametrize("memory", ["lots", "0", "-5", "1TB"])
def test_bad_task_memory_refused(ecs, memory):
    expect_error(REFUSED, ecs.register_task_definition, family=uid("bm"), containerDefinitions=[simple_container()], memory=memory)


def test_container_memory_above_task_memory_refused(ecs):
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("over"),
        containerDefinitions=[simple_container(memory=4096)],
        memory="1024",
    )


def test_duplicate_container_names_refused(ecs):
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("dup"),
        containerDefinitions=[simple_container("same"), simple_container("same")],
    )


def test_empty_container_list_refused(ecs):
    expect_error(REFUSED, ecs.register_task_definition, family=uid("empty"), containerDefinitions=[])


@pytest.mark.parametrize("family", ["has space", "colon:no", "x" * 256])
def test_invalid_family_refused(ecs, family):
    expect_error(REFUSED, ecs.register_task_definition, family=family, containerDefinitions=[simple_container()])


def test_awsvpc_host_port_must_match(ecs):
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("pm"),
        networkMode="awsvpc",
        containerDefinitions=[simple_container(portMappings=[{"containerPort": 80, "hostPort": 8080}])],
    )


def test_awsvpc_host_port_defaults_to_container_port(ecs):
    td = ecs.register_task_definition(
        family=uid("pm"),
        networkMode="awsvpc",
        containerDefinitions=[simple_container(portMappings=[{"containerPort": 8080}])],
    )["taskDefinition"]
    pm = td["containerDefinitions"][0]["portMappings"][0]
    assert pm["containerPort"] == 8080 and pm["hostPort"] == 8080 and pm["protocol"] == "tcp"


# --- describe -----------------------------------------------------------------


def test_describe_by_family_revision_and_arn(ecs):
    family = uid("desc")
    for _ in range(3):
        register_td(ecs, family)
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 3
    assert ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]["revision"] == 2
    got = ecs.describe_task_definition(taskDefinition=td_arn(family, 1))["taskDefinition"]
    assert got["revision"] == 1 and got["taskDefinitionArn"] == td_arn(family, 1)


def test_describe_include_tags(ecs):
    td = register_td(ecs, tags=[{"key": "k1", "value": "v1"}])
    plain = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])
    assert not plain.get("tags")
    tagged = ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"], include=["TAGS"])
    assert tagged["tags"] == [{"key": "k1", "value": "v1"}]


def test_describe_unknown(ecs):
    expect_error("ClientException", ecs.describe_task_definition, taskDefinition=uid("nope"))
    family = uid("known")
    register_td(ecs, family)
    expect_error("ClientException", ecs.describe_task_definition, taskDefinition=f"{family}:9")
    expect_error(REFUSED, ecs.describe_task_definition, taskDefinition=f"{family}:zero")


# --- list ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def listing(ecs):
    """Two families under one unique prefix: PREFIX-a with 5 revisions, PREFIX-b with 2 (revision 1 deregistered)."""
    prefix = uid("ls")
    a, b = f"{prefix}-a", f"{prefix}-b"
    for _ in range(5):
        register_td(ecs, a)
    for _ in range(2):
        register_td(ecs, b)
    ecs.deregister_task_definition(taskDefinition=f"{b}:1")
    return prefix, a, b


def test_list_family_ascending_and_descending(ecs, listing):
    _, a, _ = listing
    asc = ecs.list_task_definitions(familyPrefix=a)["taskDefinitionArns"]
    assert asc == [td_arn(a, r) for r in range(1, 6)]
    desc = ecs.list_task_definitions(familyPrefix=a, sort="DESC")["taskDefinitionArns"]
    assert desc == list(reversed(asc))


def test_list_family_prefix_is_the_full_family_name(ecs):
    # ECS: "familyPrefix: the full family name ... limits the listed task definitions
    # to task definition revisions that belong to that family."
    base = uid("fp")
    register_td(ecs, base)
    register_td(ecs, base + "-longer")
    listed = ecs.list_task_definitions(familyPrefix=base)["taskDefinitionArns"]
    assert listed == [td_arn(base, 1)]


def test_list_status_filter(ecs, listing):
    _, _, b = listing
    active = ecs.list_task_definitions(familyPrefix=b, status="ACTIVE")["taskDefinitionArns"]
    assert active == [td_arn(b, 2)]
    inactive = ecs.list_task_definitions(familyPrefix=b, status="INACTIVE")["taskDefinitionArns"]
    assert inactive == [td_arn(b, 1)]
    default = ecs.list_task_definitions(familyPrefix=b)["taskDefinitionArns"]
    assert default == active, "ACTIVE is the default status"


def test_list_with_paginator(ecs, listing):
    _, a, _ = listing
    seen = []
    for page in ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=a, PaginationConfig={"PageSize": 2}
    ):
        assert len(page["taskDefinitionArns"]) <= 2
        seen += page["taskDefinitionArns"]
    assert seen == [td_arn(a, r) for r in range(1, 6)]
    seen_desc = []
    for page in ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=a, sort="DESC", PaginationConfig={"PageSize": 2}
    ):
        seen_desc += page["taskDefinitionArns"]
    assert seen_desc == [td_arn(a, r) for r in range(5, 0, -1)]


def test_list_everything_with_paginator_lists_each_once(ecs, listing):
    prefix, a, b = listing
    seen = []
    for page in ecs.get_paginator("list_task_definitions").paginate(PaginationConfig={"PageSize": 3}):
        seen += page["taskDefinitionArns"]
    assert len(seen) == len(set(seen))
    ours = [s for s in seen if f"/{prefix}-" in s]
    assert sorted(ours) == sorted([td_arn(a, r) for r in range(1, 6)] + [td_arn(b, 2)])


def test_list_max_results_bounds(ecs_nv):
    expect_error("InvalidParameterException", ecs_nv.list_task_definitions, maxResults=0)
    expect_error("InvalidParameterException", ecs_nv.list_task_definitions, maxResults=101)


def test_list_families_by_status(ecs):
    prefix = uid("fs")
    active, inactive = f"{prefix}-on", f"{prefix}-off"
    register_td(ecs, active)
    register_td(ecs, inactive)
    ecs.deregister_task_definition(taskDefinition=f"{inactive}:1")

    def families(status=None):
        kw = {"familyPrefix": prefix}
        if status:
            kw["status"] = status
        out = []
        for page in ecs.get_paginator("list_task_definition_families").paginate(**kw):
            out += page["families"]
        return out

    assert families("ACTIVE") == [active]
    assert families("INACTIVE") == [inactive]
    assert sorted(families("ALL")) == sorted([active, inactive])
    assert sorted(families()) == sorted([active, inactive]), "ALL is the default"


def test_list_families_paginates(ecs):
    prefix = uid("fpg")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        register_td(ecs, n)
    seen = []
    for page in ecs.get_paginator("list_task_definition_families").paginate(
        familyPrefix=prefix, PaginationConfig={"PageSize": 2}
    ):
        assert len(page["families"]) <= 2
        seen += page["families"]
    assert seen == sorted(names)


# --- deregister / delete -------------------------------------------------------


def test_deregister_makes_inactive_and_family_falls_back(ecs):
    family = uid("dereg")
    register_td(ecs, family)
    register_td(ecs, family)
    td = ecs.deregister_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]
    assert td["status"] == "INACTIVE"
    assert td["revision"] == 2
    assert td.get("deregisteredAt") is not None
    # An INACTIVE revision can still be described by revision.
    assert ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]["status"] == "INACTIVE"
    # The family alone names the latest ACTIVE revision.
    assert ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["revision"] == 1
    # Deregistering again is harmless.
    assert ecs.deregister_task_definition(taskDefinition=td_arn(family, 2))["taskDefinition"]["status"] == "INACTIVE"


def test_deregister_needs_a_revision_and_an_existing_one(ecs):
    family = uid("dereg")
    register_td(ecs, family)
    expect_error(REFUSED, ecs.deregister_task_definition, taskDefinition=family)
    expect_error(REFUSED, ecs.deregister_task_definition, taskDefinition=f"{family}:7")
    expect_error(REFUSED, ecs.deregister_task_definition, taskDefinition=f"{uid('nope')}:1")


def test_describe_family_with_no_active_revision(ecs):
    family = uid("allgone")
    register_td(ecs, family)
    ecs.deregister_task_definition(taskDefinition=f"{family}:1")
    expect_error("ClientException", ecs.describe_task_definition, taskDefinition=family)


def test_delete_refuses_active_and_deletes_inactive(ecs):
    family = uid("del")
    for _ in range(3):
        register_td(ecs, family)
    ecs.deregister_task_definition(taskDefinition=f"{family}:3")
    resp = ecs.delete_task_definitions(taskDefinitions=[f"{family}:1", f"{family}:3"])
    assert [t["taskDefinitionArn"] for t in resp["taskDefinitions"]] == [td_arn(family, 3)]
    assert resp["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS"
    assert len(resp["failures"]) == 1
    assert resp["failures"][0]["arn"] in (f"{family}:1", td_arn(family, 1))
    assert resp["failures"][0].get("reason")
    # The ACTIVE one is untouched.
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "ACTIVE"
    # The deleted one is DELETE_IN_PROGRESS and no longer listed as INACTIVE.
    inactive = ecs.list_task_definitions(familyPrefix=family, status="INACTIVE")["taskDefinitionArns"]
    assert td_arn(family, 3) not in inactive
    status = ecs.list_task_definitions(familyPrefix=family, status="DELETE_IN_PROGRESS")["taskDefinitionArns"]
    assert status == [td_arn(family, 3)]


def test_delete_unknown_is_a_failure(ecs):
    family = uid("delu")
    resp = ecs.delete_task_definitions(taskDefinitions=[f"{family}:1"])
    assert resp["taskDefinitions"] == []
    assert len(resp["failures"]) == 1


def test_delete_needs_a_revision(ecs):
    family = uid("delr")
    register_td(ecs, family)
    resp = ecs.delete_task_definitions(taskDefinitions=[family])
    assert resp["taskDefinitions"] == []
    assert len(resp["failures"]) == 1


def test_delete_takes_at_most_ten(ecs):
    expect_error(
        "InvalidParameterException",
        ecs.delete_task_definitions,
        taskDefinitions=[f"{uid('x')}:{i}" for i in range(1, 12)],
    )


def test_revision_numbers_are_never_reused(ecs):
    family = uid("reuse")
    register_td(ecs, family)
    register_td(ecs, family)
    ecs.deregister_task_definition(taskDefinition=f"{family}:2")
    ecs.delete_task_definitions(taskDefinitions=[f"{family}:2"])
    assert register_td(ecs, family)["revision"] == 3
    # Even with every revision deleted.
    for r in (1, 3):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{r}")
    ecs.delete_task_definitions(taskDefinitions=[f"{family}:1", f"{family}:3"])
    assert register_td(ecs, family)["revision"] == 4


@pytest.mark.parametrize(
    "cpu,memory,want_cpu,want_memory",
    [
        ("1 vCPU", "2GB", "1024", "2048"),
        ("2 vcpu", "1 GB", "2048", "1024"),
        ("0.5 vCPU", "0.5GB", "512", "512"),
        ("256", "512", "256", "512"),
    ],
)
def test_unit_forms(ecs, cpu, memory, want_cpu, want_memory):
    td = ecs.register_task_definition(
        family=uid("u"), containerDefinitions=[simple_container(memory=128)], cpu=cpu, memory=memory
    )["taskDefinition"]
    assert (td["cpu"], td["memory"]) == (want_cpu, want_memory)


def test_task_definition_over_64_kib_refused(ecs):
    # ECS caps a task definition at 64 KiB ("Actual length: ... Max allowed length is '65536' bytes").
    env = [{"name": f"VAR_{i:04d}", "value": "v" * 100} for i in range(800)]
    e = expect_error(
        "ClientException",
        ecs.register_task_definition,
        family=uid("big"),
        containerDefinitions=[simple_container(environment=env)],
    )
    assert e.response["Error"]["Message"]


def test_task_definition_under_64_kib_accepted(ecs):
    env = [{"name": f"VAR_{i:04d}", "value": "v" * 100} for i in range(300)]
    td = ecs.register_task_definition(family=uid("mid"), containerDefinitions=[simple_container(environment=env)])[
        "taskDefinition"
    ]
    assert td["containerDefinitions"][0]["environment"] == env


def test_container_checks(ecs, ecs_nv):
    no_image = {"name": "app", "memory": 128}
    expect_error(REFUSED, ecs_nv.register_task_definition, family=uid("ci"), containerDefinitions=[no_image])
    expect_error(
        REFUSED, ecs.register_task_definition, family=uid("ci"), containerDefinitions=[simple_container("bad name")]
    )
    expect_error(
        REFUSED, ecs.register_task_definition, family=uid("ci"), containerDefinitions=[simple_container(memory=4)]
    )
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("ci"),
        containerDefinitions=[simple_container(portMappings=[{"containerPort": 70000}])],
    )
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("ci"),
        containerDefinitions=[simple_container(memory=128, memoryReservation=256)],
    )
    expect_error(
        REFUSED,
        ecs.register_task_definition,
        family=uid("ci"),
        containerDefinitions=[simple_container(f"c{i}") for i in range(11)],
    )


def test_deleted_revision_describes_as_delete_in_progress(ecs):
    family = uid("dip")
    register_td(ecs, family)
    ecs.deregister_task_definition(taskDefinition=f"{family}:1")
    ecs.delete_task_definitions(taskDefinitions=[td_arn(family, 1)])
    td = ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]
    assert td["status"] == "DELETE_IN_PROGRESS"
    # Deleting it again is not a failure.
    again = ecs.delete_task_definitions(taskDefinitions=[f"{family}:1"])
    assert again["failures"] == []
    assert again["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS"
