"""The AWS JSON 1.1 protocol at the edge: targets, bodies, errors, request ids."""

import json

import pytest

from helpers import TARGET_PREFIX, uid


def body_of(r):
    return json.loads(r.content)


def assert_error(r, status, type_name):
    assert r.status_code == status, (r.status_code, r.text)
    b = body_of(r)
    # The JSON protocol allows a namespace prefix ("ns#Name"); clients read what follows '#'.
    assert b["__type"].split("#")[-1] == type_name, b
    assert isinstance(b.get("message"), str) and b["message"], b
    assert r.headers.get("x-amzn-RequestId"), r.headers
    return b


def test_valid_request_answers_json_with_request_id(raw):
    r = raw("ListClusters", {})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-amzn-RequestId")
    assert r.headers.get("Content-Type", "").startswith("application/x-amz-json-1.1")
    assert "clusterArns" in body_of(r)


def test_request_ids_are_unique(raw):
    ids = {raw("ListClusters", {}).headers["x-amzn-RequestId"] for _ in range(5)}
    assert len(ids) == 5


def test_empty_body_is_an_empty_request(raw):
    r = raw("ListClusters", "")
    assert r.status_code == 200, r.text


def test_unknown_target_is_unknown_operation(raw):
    r = raw(target_header=f"{TARGET_PREFIX}.FlyToTheMoon", body={})
    b = assert_error(r, 400, "UnknownOperationException")
    assert "FlyToTheMoon" in b["message"]


def test_target_of_another_service_is_unknown_operation(raw):
    r = raw(target_header="DynamoDB_20120810.ListTables", body={})
    assert_error(r, 400, "UnknownOperationException")


def test_missing_target_is_unknown_operation(raw):
    r = raw(target_header=None, body={})
    assert_error(r, 400, "UnknownOperationException")


def test_malformed_json_is_serialization_exception(raw):
    r = raw("CreateCluster", '{"clusterName": "x",')
    assert_error(r, 400, "SerializationException")


def test_non_object_body_is_serialization_exception(raw):
    r = raw("ListClusters", "[1, 2, 3]")
    assert_error(r, 400, "SerializationException")


def test_wrong_typed_member_is_serialization_exception(raw):
    r = raw("CreateCluster", {"clusterName": 42})
    assert_error(r, 400, "SerializationException")
    r = raw("ListClusters", {"maxResults": "ten"})
    assert_error(r, 400, "SerializationException")
    r = raw("DescribeClusters", {"clusters": "not-a-list"})
    assert_error(r, 400, "SerializationException")


def test_unknown_members_are_ignored(raw, ecs):
    name = uid("proto")
    r = raw("CreateCluster", {"clusterName": name, "someFutureMember": {"x": [1, 2]}, "another": True})
    assert r.status_code == 200, r.text
    assert body_of(r)["cluster"]["clusterName"] == name
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"


def test_body_over_one_mib_is_413(raw):
    big = json.dumps({"clusterName": "x", "padding": "a" * (1024 * 1024 + 10)})
    r = raw("CreateCluster", big)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert r.headers.get("x-amzn-RequestId")


def test_body_just_under_one_mib_is_read(raw):
    # Unknown members are ignored, so a large but valid body is accepted.
    body = json.dumps({"padding": "a" * (1024 * 1024 - 100)})
    assert len(body) <= 1024 * 1024
    r = raw("ListClusters", body)
    assert r.status_code == 200, (r.status_code, r.text[:200])


def test_unimplemented_operation_is_unsupported_feature_naming_it(raw):
    r = raw("CreateTaskSet", {"service": "web", "cluster": "c", "taskDefinition": "x"})
    b = assert_error(r, 400, "UnsupportedFeatureException")
    assert "CreateTaskSet" in b["message"]


def test_unimplemented_operation_through_boto3(ecs):
    from botocore.exceptions import ClientError
    import pytest

    with pytest.raises(ClientError) as ei:
        ecs.list_services_by_namespace(namespace="default")
    assert ei.value.response["Error"]["Code"] == "UnsupportedFeatureException"
    assert "ListServicesByNamespace" in ei.value.response["Error"]["Message"]


def test_error_answers_carry_request_id_and_errortype(raw):
    r = raw("DescribeTaskDefinition", {"taskDefinition": "nope-" + uid()})
    assert r.status_code == 400
    assert r.headers.get("x-amzn-RequestId")
    assert body_of(r)["__type"].split("#")[-1] == "ClientException"


def test_missing_required_member_is_refused(raw):
    r = raw("DescribeTaskDefinition", {})
    assert r.status_code == 400, r.text
    assert body_of(r)["__type"].split("#")[-1] in ("InvalidParameterException", "ClientException")


def test_get_on_api_root_is_not_ok(server):
    import requests

    r = requests.get(server.url + "/", timeout=5)
    assert r.status_code >= 400


def test_healthz(server):
    import requests

    r = requests.get(server.url + "/healthz", timeout=5)
    assert r.status_code == 200


def test_null_members_read_as_absent(raw):
    r = raw("ListClusters", {"maxResults": None, "nextToken": None})
    assert r.status_code == 200, r.text


def test_wrong_typed_nested_member_is_serialization_exception(raw):
    r = raw("CreateCluster", {"clusterName": uid("c"), "tags": [{"key": 1, "value": "x"}]})
    assert_error(r, 400, "SerializationException")
    r = raw("RegisterTaskDefinition", {"family": uid("f"), "containerDefinitions": [{"name": "a", "memory": "lots"}]})
    assert_error(r, 400, "SerializationException")


def test_integer_out_of_range_is_serialization_exception(raw):
    r = raw("ListClusters", {"maxResults": 10**20})
    assert_error(r, 400, "SerializationException")


def test_non_utf8_body_is_serialization_exception(raw):
    r = raw("ListClusters", b'{"nextToken": "\xff\xfe"}')
    assert_error(r, 400, "SerializationException")


def test_deeply_nested_member_is_not_fatal(raw, server):
    # Ignored (200) or refused (400), but never a crash or a 500.
    body = '{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = raw("ListClusters", body)
    assert r.status_code in (200, 400), r.status_code
    body = '{"tags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = raw("CreateCluster", body)
    assert r.status_code == 400, r.status_code
    assert json.loads(r.content)["__type"].split("#")[-1] == "SerializationException"
    assert r.headers.get("x-amzn-RequestId")
    assert server.running()
    assert raw("ListClusters", {}).status_code == 200


def test_unsupported_operations_are_all_named(raw):
    for op in ("CreateTaskSet", "UpdateTaskSet", "DescribeTaskSets", "StartTask", "RegisterContainerInstance", "SubmitTaskStateChange"):
        r = raw(op, {})
        b = assert_error(r, 400, "UnsupportedFeatureException")
        assert op in b["message"], (op, b)


@pytest.mark.parametrize(
    "kind",
    ["ok", "unknown-op", "serialization", "unsupported", "client-error", "too-large", "unsigned"],
)
def test_request_id_on_every_kind_of_answer(raw, server, kind):
    import requests

    if kind == "ok":
        r = raw("ListClusters", {})
    elif kind == "unknown-op":
        r = raw("Nope", {})
    elif kind == "serialization":
        r = raw("ListClusters", "{")
    elif kind == "unsupported":
        r = raw("DeleteTaskSet", {"cluster": "c", "service": "x", "taskSet": "t"})
    elif kind == "client-error":
        r = raw("DescribeTaskDefinition", {"taskDefinition": uid("nope")})
    elif kind == "too-large":
        r = raw("ListClusters", "x" * (1024 * 1024 + 1))
    else:
        r = requests.post(server.url + "/", data=b"{}", headers={"X-Amz-Target": "x"}, timeout=10)
    rid = r.headers.get("x-amzn-RequestId")
    assert rid and len(rid) >= 16, (kind, r.status_code, r.headers)
