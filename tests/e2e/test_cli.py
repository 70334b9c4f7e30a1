"""The real aws CLI against berth: what a user types, and what they see when it fails."""

import json

from helpers import PROFILE_ARN, ROLE_ARN, SECURITY_GROUP, SUBNET, mi_provider, uid

# aws CLI v2 exits 254 when the service answers an error; v1 exits 255.
CLI_ERROR_EXIT = (254, 255)


def test_full_sequence(aws, tmp_path):
    cluster, cp, family = uid("cli"), uid("mi"), uid("clifam")

    r = aws("ecs", "create-cluster", "--cluster-name", cluster, "--tags", "key=team,value=cli", check=True)
    assert r.json["cluster"]["clusterName"] == cluster
    assert r.json["cluster"]["status"] == "ACTIVE"

    r = aws(
        "ecs",
        "create-capacity-provider",
        "--name",
        cp,
        "--cluster",
        cluster,
        "--managed-instances-provider",
        json.dumps(mi_provider()),
        check=True,
    )
    assert r.json["capacityProvider"]["name"] == cp
    assert r.json["capacityProvider"]["status"] == "ACTIVE"

    spec = {
        "family": family,
        "requiresCompatibilities": ["MANAGED_INSTANCES"],
        "cpu": "512",
        "memory": "1GB",
        "containerDefinitions": [
            {
                "name": "web",
                "image": "public.ecr.aws/docker/library/nginx:latest",
                "essential": True,
                "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
                "environment": [{"name": "GREETING", "value": "hello"}],
            }
        ],
    }
    spec_file = tmp_path / "td.json"
    spec_file.write_text(json.dumps(spec))
    r = aws("ecs", "register-task-definition", "--cli-input-json", f"file://{spec_file}", check=True)
    td = r.json["taskDefinition"]
    assert td["family"] == family and td["revision"] == 1
    assert td["memory"] == "1024"
    assert td["networkMode"] == "awsvpc"

    r = aws(
        "ecs",
        "register-task-definition",
        "--family",
        family,
        "--container-definitions",
        json.dumps([{"name": "web", "image": "nginx:latest", "memory": 128, "essential": True}]),
        "--requires-compatibilities",
        "MANAGED_INSTANCES",
        check=True,
    )
    assert r.json["taskDefinition"]["revision"] == 2

    r = aws(
        "ecs",
        "run-task",
        "--cluster",
        cluster,
        "--task-definition",
        f"{family}:1",
        "--count",
        "2",
        "--capacity-provider-strategy",
        f"capacityProvider={cp},weight=1,base=0",
        "--enable-execute-command",
        "--started-by",
        "cli-user",
        check=True,
    )
    tasks = r.json["tasks"]
    assert len(tasks) == 2 and r.json["failures"] == []
    assert all(t["lastStatus"] == "PROVISIONING" and t["capacityProviderName"] == cp for t in tasks)
    arns = [t["taskArn"] for t in tasks]

    r = aws("ecs", "describe-tasks", "--cluster", cluster, "--tasks", *arns, check=True)
    assert sorted(t["taskArn"] for t in r.json["tasks"]) == sorted(arns)
    assert all(t["desiredStatus"] == "RUNNING" for t in r.json["tasks"])

    r = aws("ecs", "list-tasks", "--cluster", cluster, "--started-by", "cli-user", check=True)
    assert sorted(r.json["taskArns"]) == sorted(arns)

    r = aws("ecs", "stop-task", "--cluster", cluster, "--task", arns[0], "--reason", "done via cli", check=True)
    assert r.json["task"]["desiredStatus"] == "STOPPED"
    assert r.json["task"]["stoppedReason"] == "done via cli"

    r = aws("ecs", "wait", "tasks-stopped", "--cluster", cluster, "--tasks", arns[0])
    assert r.returncode == 0, r.stderr

    r = aws("ecs", "list-task-definitions", "--family-prefix", family, check=True)
    assert [a.rsplit("/", 1)[1] for a in r.json["taskDefinitionArns"]] == [f"{family}:1", f"{family}:2"]

    r = aws("ecs", "list-task-definitions", "--family-prefix", family, "--sort", "DESC", check=True)
    assert [a.rsplit("/", 1)[1] for a in r.json["taskDefinitionArns"]] == [f"{family}:2", f"{family}:1"]

    r = aws("ecs", "describe-clusters", "--clusters", cluster, "--include", "TAGS", check=True)
    c = r.json["clusters"][0]
    assert cp in c["capacityProviders"]
    assert c["tags"] == [{"key": "team", "value": "cli"}]


def test_cli_paginates_list_clusters(aws):
    prefix = uid("clip")
    names = [f"{prefix}-{i}" for i in range(5)]
    for n in names:
        aws("ecs", "create-cluster", "--cluster-name", n, check=True)
    # The CLI follows nextToken on its own; --page-size makes it take several pages.
    r = aws("ecs", "list-clusters", "--page-size", "2", check=True)
    ours = [a for a in r.json["clusterArns"] if f"/{prefix}-" in a]
    assert sorted(a.rsplit("/", 1)[1] for a in ours) == sorted(names)


def test_error_prints_ecs_error_name_and_exits_non_zero(aws):
    r = aws("ecs", "describe-task-definition", "--task-definition", uid("nope"))
    assert r.returncode in CLI_ERROR_EXIT, (r.returncode, r.stderr)
    assert "ClientException" in r.stderr
    assert "DescribeTaskDefinition" in r.stderr


def test_invalid_parameter_error(aws):
    r = aws("ecs", "create-cluster", "--cluster-name", "bad name with spaces")
    assert r.returncode in CLI_ERROR_EXIT, (r.returncode, r.stderr)
    assert "InvalidParameterException" in r.stderr


def test_cluster_not_found_error(aws):
    r = aws("ecs", "list-tasks", "--cluster", uid("nope"))
    assert r.returncode in CLI_ERROR_EXIT, (r.returncode, r.stderr)
    assert "ClusterNotFoundException" in r.stderr


def test_capacity_provider_error(aws):
    cluster = uid("cli")
    aws("ecs", "create-cluster", "--cluster-name", cluster, check=True)
    bad = mi_provider(infrastructureOptimization={"scaleInAfter": 5000})
    r = aws(
        "ecs", "create-capacity-provider", "--name", uid("mi"), "--cluster", cluster, "--managed-instances-provider", json.dumps(bad)
    )
    assert r.returncode in CLI_ERROR_EXIT, (r.returncode, r.stderr)
    assert "InvalidParameterException" in r.stderr


def test_bad_secret_error(aws, server):
    r = aws("ecs", "list-clusters", keys=(server.keys[0], "x" * 40))
    assert r.returncode in CLI_ERROR_EXIT, (r.returncode, r.stderr)
    assert "InvalidSignatureException" in r.stderr


def test_minimal_capacity_provider(aws):
    # Only the members the model requires.
    cluster = uid("cli")
    aws("ecs", "create-cluster", "--cluster-name", cluster, check=True)
    provider = {
        "infrastructureRoleArn": ROLE_ARN,
        "instanceLaunchTemplate": {
            "ec2InstanceProfileArn": PROFILE_ARN,
            "networkConfiguration": {"subnets": [SUBNET], "securityGroups": [SECURITY_GROUP]},
        },
    }
    r = aws(
        "ecs",
        "create-capacity-provider",
        "--name",
        uid("mi"),
        "--cluster",
        cluster,
        "--managed-instances-provider",
        json.dumps(provider),
        check=True,
    )
    assert r.json["capacityProvider"]["managedInstancesProvider"]["infrastructureRoleArn"] == ROLE_ARN
