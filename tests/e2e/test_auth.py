"""SigV4 authentication: every refusal a client can run into, with the AWS error names."""

import datetime
import json

import pytest
import requests
from botocore.exceptions import ClientError

from helpers import CONTENT_TYPE, REGION, new_keys, target


def error_type(r):
    return json.loads(r.content)["__type"].split("#")[-1]


def test_signed_request_is_accepted(raw):
    r = raw("ListClusters", {})
    assert r.status_code == 200, r.text


def test_no_authorization_is_missing_authentication_token(server):
    r = requests.post(
        server.url + "/",
        data=b"{}",
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target("ListClusters")},
        timeout=10,
    )
    assert r.status_code == 403, r.text
    assert error_type(r) == "MissingAuthenticationTokenException"
    assert r.headers.get("x-amzn-RequestId")


def test_unknown_access_key_is_unrecognized_client(raw):
    r = raw("ListClusters", {}, keys=new_keys())
    assert r.status_code == 403, r.text
    assert error_type(r) == "UnrecognizedClientException"
    assert r.headers.get("x-amzn-RequestId")


def test_wrong_secret_is_invalid_signature(raw, server):
    key_id, _ = server.keys
    r = raw("ListClusters", {}, keys=(key_id, "not-the-secret-" + "x" * 25))
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"
    assert r.headers.get("x-amzn-RequestId")


def test_request_signed_twenty_minutes_ago_is_invalid_signature(raw):
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    r = raw("ListClusters", {}, when=past)
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"
    assert "expired" in json.loads(r.content)["message"].lower()


def test_request_signed_twenty_minutes_ahead_is_invalid_signature(raw):
    future = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(minutes=20)
    r = raw("ListClusters", {}, when=future)
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"


def test_request_signed_a_few_minutes_ago_is_accepted(raw):
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=5)
    r = raw("ListClusters", {}, when=past)
    assert r.status_code == 200, r.text


def test_region_mismatch_in_scope_is_invalid_signature(raw):
    r = raw("ListClusters", {}, region="eu-west-1")
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"


def test_body_changed_after_signing_is_invalid_signature(server):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b'{"clusterName":"a"}',
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target("CreateCluster")},
    )
    SigV4Auth(Credentials(*server.keys), "ecs", REGION).add_auth(req)
    p = req.prepare()
    r = requests.post(p.url, data=b'{"clusterName":"b"}', headers=dict(p.headers), timeout=10)
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"


def test_auth_is_checked_before_the_operation(raw):
    # Even an unknown operation is refused first for a bad key.
    r = raw("NoSuchOperation", {}, keys=new_keys())
    assert r.status_code == 403
    assert error_type(r) == "UnrecognizedClientException"


def test_boto3_with_wrong_secret_raises_invalid_signature(server):
    key_id, _ = server.keys
    c = server.client(keys=(key_id, "wrong-secret-wrong-secret-wrong-secret-00"))
    with pytest.raises(ClientError) as ei:
        c.list_clusters()
    assert ei.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_boto3_with_unknown_key_raises_unrecognized_client(server):
    c = server.client(keys=new_keys())
    with pytest.raises(ClientError) as ei:
        c.list_clusters()
    assert ei.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_malformed_authorization_is_incomplete_signature(server):
    r = requests.post(
        server.url + "/",
        data=b"{}",
        headers={
            "Content-Type": CONTENT_TYPE,
            "X-Amz-Target": target("ListClusters"),
            "X-Amz-Date": "20260101T000000Z",
            "Authorization": "AWS4-HMAC-SHA256 garbage",
        },
        timeout=10,
    )
    assert r.status_code in (400, 403), r.text
    assert error_type(r) == "IncompleteSignatureException"
    assert r.headers.get("x-amzn-RequestId")


def test_service_mismatch_in_scope_is_invalid_signature(server):
    from helpers import signed_request

    r = signed_request(server.url, target("ListClusters"), {}, server.keys, service="s3")
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"


def test_unsigned_target_header_is_refused(server):
    # The signature must cover X-Amz-Target: changing the operation after signing is refused.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=b"{}",
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": target("ListClusters")},
    )
    SigV4Auth(Credentials(*server.keys), "ecs", REGION).add_auth(req)
    headers = dict(req.prepare().headers)
    headers["X-Amz-Target"] = target("DeleteCluster")
    r = requests.post(server.url + "/", data=b"{}", headers=headers, timeout=10)
    assert r.status_code == 403, r.text
    assert error_type(r) == "InvalidSignatureException"
