"""Users, roles and the audit log against a real server: `berth user` and
`berth audit`, and boto3 and the aws CLI signed with the users' keys."""

import datetime
import json
import os
import stat
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

from helpers import berth_bin, clean_env, expect_error, mi_provider, register_td, strategy, uid

# aws CLI v2 exits 254 when the service answers an error; v1 exits 255.
CLI_ERROR_EXIT = (254, 255)


def berth(server, *args, keys=None):
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = keys or server.keys
    return subprocess.run(
        [berth_bin(), *args, "--endpoint", server.url], capture_output=True, text=True, env=env, timeout=30
    )


def create_user(server, role, name=None):
    name = name or uid(role)
    out = berth(server, "user", "create", name, "--role", role, "--output", "json")
    assert out.returncode == 0, out.stderr
    u = json.loads(out.stdout)
    assert u["name"] == name and u["role"] == role
    return name, (u["accessKeyId"], u["secretAccessKey"])


def audit(server, kind, *args):
    out = berth(server, "audit", kind, "--output", "json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["records"]


def setup_cluster(ecs):
    cluster, cp = uid("acl"), uid("mi")
    ecs.create_cluster(clusterName=cluster)
    ecs.create_capacity_provider(name=cp, cluster=cluster, managedInstancesProvider=mi_provider())
    td = register_td(ecs)
    return cluster, cp, td


def test_user_create_shows_the_secret_once_and_ls_never(server):
    name = uid("alice")
    out = berth(server, "user", "create", name, "--role", "viewer")
    assert out.returncode == 0, out.stderr
    lines = dict(
        line.split(" = ", 1) for line in out.stdout.splitlines() if line.startswith("aws_")
    )
    key, secret = lines["aws_access_key_id"], lines["aws_secret_access_key"]
    assert key.startswith("AKIA") and len(key) == 20
    assert len(secret) == 40

    _, (key2, secret2) = create_user(server, "operator")
    assert key2 != key and secret2 != secret

    ls = berth(server, "user", "ls", "--output", "json")
    assert ls.returncode == 0, ls.stderr
    users = {u["name"]: u for u in json.loads(ls.stdout)["users"]}
    assert users[name]["accessKeyId"] == key
    assert users[name]["role"] == "viewer"
    assert secret not in ls.stdout and secret2 not in ls.stdout
    table = berth(server, "user", "ls")
    assert table.returncode == 0, table.stderr
    assert name in table.stdout and "viewer" in table.stdout and secret not in table.stdout

    # The new key signs with boto3 and with the aws CLI.
    assert "clusterArns" in server.client(keys=(key, secret)).list_clusters()


def test_viewer_reads_and_every_write_is_refused_and_audited(server, ecs, aws):
    cluster, cp, td = setup_cluster(ecs)
    viewer, keys = create_user(server, "viewer")
    v = server.client(keys=keys)
    assert cluster.split("/")[-1] in " ".join(v.list_clusters()["clusterArns"])
    assert v.describe_clusters(clusters=[cluster])["clusters"][0]["status"] == "ACTIVE"
    v.describe_task_definition(taskDefinition=td["taskDefinitionArn"])

    e = expect_error(
        "AccessDeniedException",
        v.run_task,
        cluster=cluster,
        taskDefinition=td["taskDefinitionArn"],
        capacityProviderStrategy=strategy(cp),
        http_status=400,
    )
    assert "RunTask" in e.response["Error"]["Message"]
    assert viewer in e.response["Error"]["Message"]
    e = expect_error("AccessDeniedException", v.create_cluster, clusterName=uid("no"), http_status=400)
    assert "CreateCluster" in e.response["Error"]["Message"]
    expect_error("AccessDeniedException", v.delete_cluster, cluster=cluster)

    r = aws("ecs", "stop-task", "--cluster", cluster, "--task", "0123456789abcdef", keys=keys)
    assert r.returncode in CLI_ERROR_EXIT, r.stdout
    assert "AccessDeniedException" in r.stderr and "StopTask" in r.stderr

    out = berth(server, "user", "create", uid("sneaky"), "--role", "admin", keys=keys)
    assert out.returncode == 2
    assert "AccessDeniedException" in out.stderr and "CreateUser" in out.stderr
    out = berth(server, "audit", "api", keys=keys)
    assert out.returncode == 2 and "AccessDeniedException" in out.stderr

    records = [r for r in audit(server, "api") if r["principal"]["user"] == viewer]
    ops = [(r["operation"], r["outcome"]) for r in records]
    assert ops == [
        ("ecs:RunTask", "denied"),
        ("ecs:CreateCluster", "denied"),
        ("ecs:DeleteCluster", "denied"),
        ("ecs:StopTask", "denied"),
        ("berth:CreateUser", "denied"),
        ("berth:ListAuditRecords", "denied"),
    ], records
    run = records[0]
    assert run["principal"]["accessKeyId"] == keys[0]
    assert run["principal"]["role"] == "viewer"
    assert run["cluster"] == cluster
    assert run["errorCode"] == "AccessDeniedException"
    # Reads leave no record.
    assert not any(r["operation"].startswith(("ecs:List", "ecs:Describe")) for r in audit(server, "api"))


def test_operator_runs_stops_and_execs_but_cannot_administer(server, ecs):
    cluster, cp, td = setup_cluster(ecs)
    operator, keys = create_user(server, "operator")
    o = server.client(keys=keys)
    task = o.run_task(
        cluster=cluster, taskDefinition=td["taskDefinitionArn"], capacityProviderStrategy=strategy(cp)
    )["tasks"][0]["taskArn"]
    o.stop_task(cluster=cluster, task=task, reason="operator")
    register_td(o)
    with pytest.raises(ClientError) as ei:
        o.execute_command(cluster=cluster, task=task, command="sh", interactive=True)
    assert ei.value.response["Error"]["Code"] != "AccessDeniedException"

    expect_error("AccessDeniedException", o.create_cluster, clusterName=uid("no"))
    expect_error("AccessDeniedException", o.delete_capacity_provider, capacityProvider=cp)
    expect_error("AccessDeniedException", o.put_account_setting, name="containerInsights", value="enabled")
    out = berth(server, "user", "ls", keys=keys)
    assert out.returncode == 2 and "AccessDeniedException" in out.stderr

    records = [r for r in audit(server, "api") if r["principal"]["user"] == operator]
    ops = [(r["operation"], r["outcome"]) for r in records]
    assert ops[:4] == [
        ("ecs:RunTask", "ok"),
        ("ecs:StopTask", "ok"),
        ("ecs:RegisterTaskDefinition", "ok"),
        ("ecs:ExecuteCommand", "error"),
    ], records
    assert records[1]["target"] == task
    assert [o for o, outcome in ops[4:]] == [
        "ecs:CreateCluster",
        "ecs:DeleteCapacityProvider",
        "ecs:PutAccountSetting",
        "berth:ListUsers",
    ]
    assert all(outcome == "denied" for _, outcome in ops[4:])


def test_errors_are_audited_with_their_code(server, ecs):
    name = uid("gone")
    expect_error("ClusterNotFoundException", ecs.delete_cluster, cluster=name)
    mine = [r for r in audit(server, "api") if r.get("target") == name]
    assert len(mine) == 1
    assert mine[0]["operation"] == "ecs:DeleteCluster"
    assert mine[0]["outcome"] == "error"
    assert mine[0]["errorCode"] == "ClusterNotFoundException"
    assert mine[0]["principal"]["user"] == "root"


def test_a_removed_user_is_refused_at_once(server):
    name, keys = create_user(server, "operator")
    c = server.client(keys=keys)
    c.list_clusters()
    out = berth(server, "user", "rm", name)
    assert out.returncode == 0, out.stderr
    assert name in out.stdout
    expect_error("UnrecognizedClientException", c.list_clusters, http_status=403)
    ls = json.loads(berth(server, "user", "ls", "--output", "json").stdout)
    assert name not in [u["name"] for u in ls["users"]]
    out = berth(server, "user", "rm", name)
    assert out.returncode == 2 and "ResourceNotFoundException" in out.stderr


def test_bad_input_is_refused(server):
    out = berth(server, "user", "create", "bad name", "--role", "viewer")
    assert out.returncode == 2 and "InvalidParameterException" in out.stderr
    out = berth(server, "user", "create", "x", "--role", "god")
    assert out.returncode == 2  # clap refuses the role
    name, _ = create_user(server, "viewer")
    out = berth(server, "user", "create", name, "--role", "viewer")
    assert out.returncode == 2 and "ConflictException" in out.stderr
    out = berth(server, "audit", "exec", "--since", "last tuesday")
    assert out.returncode == 1 and "--since" in out.stderr


def test_audit_exec_lists_nothing_until_exec_runs_and_since_filters_api_records(server, ecs):
    assert audit(server, "exec") == []
    assert audit(server, "exec", "--since", "1h") == []
    table = berth(server, "audit", "exec")
    assert table.returncode == 0 and "COMMAND" in table.stdout

    first = uid("early")
    ecs.create_cluster(clusterName=first)
    time.sleep(1.1)
    mark = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.1)
    second = uid("late")
    ecs.create_cluster(clusterName=second)
    targets = [r.get("target") for r in audit(server, "api", "--since", mark)]
    assert second in targets and first not in targets
    targets = [r.get("target") for r in audit(server, "api", "--since", "1h")]
    assert first in targets and second in targets
    table = berth(server, "audit", "api", "--since", mark)
    assert table.returncode == 0 and second in table.stdout


def test_users_survive_a_restart_and_the_store_is_private(spawn):
    srv = spawn()
    name, keys = create_user(srv, "viewer")
    srv.restart()
    assert "clusterArns" in srv.client(keys=keys).list_clusters()
    expect_error("AccessDeniedException", srv.client(keys=keys).create_cluster, clusterName=uid("no"))
    mode = stat.S_IMODE(os.stat(srv.data_dir / "berth.db").st_mode)
    assert mode == 0o600, oct(mode)
    records = audit(srv, "api")
    assert [r["operation"] for r in records] == ["berth:CreateUser", "ecs:CreateCluster"]
    assert records[0]["target"] == name and records[1]["outcome"] == "denied"
