"""The root key: generated into DATA_DIR/credentials when no BERTH_* keys are set, and usable from there."""

import configparser
import os
import stat

import boto3
import botocore.session
import pytest

from helpers import run_aws, uid


def read_key(path):
    cp = configparser.ConfigParser()
    cp.read(path)
    return cp["default"]["aws_access_key_id"], cp["default"]["aws_secret_access_key"]


def client_from_file(srv, path):
    """A boto3 client that finds its keys only through the shared-credentials file."""
    bs = botocore.session.Session()
    bs.set_config_variable("credentials_file", str(path))
    bs.set_config_variable("config_file", "/dev/null")
    bs.set_config_variable("profile", "default")
    return boto3.session.Session(botocore_session=bs).client("ecs", endpoint_url=srv.url, region_name=srv.region)


@pytest.fixture
def generated(spawn):
    srv = spawn(keys=None)
    return srv, srv.data_dir / "credentials"


def test_credentials_file_is_generated_private_and_announced(generated):
    srv, path = generated
    assert path.exists(), f"no credentials file in {srv.data_dir}; log:\n{srv.log()}"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, oct(mode)
    key_id, secret = read_key(path)
    assert key_id and secret
    assert str(path) in srv.log(), "the server prints where the credentials file is"
    assert secret not in srv.log(), "the secret is never printed"


def test_aws_cli_with_the_generated_credentials_file(generated, tmp_path):
    srv, path = generated
    name = uid("cred")
    r = run_aws(srv, ["ecs", "create-cluster", "--cluster-name", name], tmp_path, credentials_file=str(path))
    assert r.returncode == 0, r.stderr
    assert r.json["cluster"]["clusterName"] == name
    r = run_aws(srv, ["ecs", "list-clusters"], tmp_path, credentials_file=str(path))
    assert r.returncode == 0, r.stderr
    assert any(a.endswith(f"/{name}") for a in r.json["clusterArns"])


def test_boto3_with_the_generated_credentials_file(generated):
    srv, path = generated
    ecs = client_from_file(srv, path)
    name = uid("cred")
    ecs.create_cluster(clusterName=name)
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"


def test_credentials_file_is_reused_across_restarts(generated, tmp_path):
    srv, path = generated
    before = path.read_text()
    key = read_key(path)
    assert srv.stop() == 0
    srv.start()
    assert path.read_text() == before, "the same key after a restart"
    assert read_key(path) == key
    r = run_aws(srv, ["ecs", "list-clusters"], tmp_path, credentials_file=str(path))
    assert r.returncode == 0, r.stderr


def test_another_key_is_refused(generated, tmp_path):
    srv, _ = generated
    r = run_aws(srv, ["ecs", "list-clusters"], tmp_path, keys=("AKIAIOSFODNN7EXAMPLE", "x" * 40))
    assert r.returncode != 0
    assert "UnrecognizedClientException" in r.stderr


def test_env_keys_take_precedence_and_write_no_file(spawn, tmp_path):
    srv = spawn()
    assert not (srv.data_dir / "credentials").exists()
    r = run_aws(srv, ["ecs", "list-clusters"], tmp_path)
    assert r.returncode == 0, r.stderr
