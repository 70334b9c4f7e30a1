"""`berth server` options: region, account id, durability."""

import json

from helpers import new_keys, register_td, signed_request, target, uid


def test_region_and_account_id(spawn):
    srv = spawn(region="eu-west-1", account_id="123456789012")
    ecs = srv.client()
    name = uid("c")
    c = ecs.create_cluster(clusterName=name)["cluster"]
    assert c["clusterArn"] == f"arn:aws:ecs:eu-west-1:123456789012:cluster/{name}"
    td = register_td(ecs)
    assert td["taskDefinitionArn"].startswith("arn:aws:ecs:eu-west-1:123456789012:task-definition/")
    # Requests signed for another region are refused.
    r = signed_request(srv.url, target("ListClusters"), {}, srv.keys, region="us-east-1")
    assert r.status_code == 403
    assert json.loads(r.content)["__type"].split("#")[-1] == "InvalidSignatureException"
    # ARNs of the default region/account do not name this server's resources.
    resp = ecs.describe_clusters(clusters=[f"arn:aws:ecs:us-east-1:000000000000:cluster/{name}"])
    assert resp["clusters"] == [] and resp["failures"][0]["reason"] == "MISSING"


def test_durability_process_survives_a_restart(spawn):
    srv = spawn(durability="process")
    ecs = srv.client()
    name = uid("c")
    ecs.create_cluster(clusterName=name)
    td = register_td(ecs)
    assert srv.stop() == 0
    srv.start()
    ecs = srv.client()
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    assert ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])["taskDefinition"]["revision"] == 1


def test_durability_process_survives_kill_9(spawn):
    # "Survive a crash of the server process": an acknowledged write outlives SIGKILL.
    srv = spawn(durability="process")
    ecs = srv.client()
    names = [uid("c") for _ in range(20)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    srv.kill()
    srv.start()
    resp = srv.client().describe_clusters(clusters=names)
    assert resp["failures"] == []
    assert sorted(c["clusterName"] for c in resp["clusters"]) == sorted(names)


def test_keys_from_environment(spawn):
    keys = new_keys()
    srv = spawn(keys=keys)
    assert srv.client(keys=keys).list_clusters()["clusterArns"] == []
    r = signed_request(srv.url, target("ListClusters"), {}, new_keys())
    assert r.status_code == 403
