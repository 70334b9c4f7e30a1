"""Fixtures of the end-to-end suite.

* `server`: a fresh `berth server` per test module (free loopback port, temp
  data dir, explicit BERTH_ACCESS_KEY_ID / BERTH_SECRET_ACCESS_KEY), ready on
  /healthz, stopped at the end of the module.
* `ecs`: a boto3 ECS client for it; `ecs_nv` the same without client-side
  parameter validation, to send what boto3 would refuse to.
* `aws(*args)`: runs the real aws CLI against it and returns the result.
* `raw(op, body, ...)`: one raw SigV4-signed request.
* `spawn(...)`: more servers (own data dirs) for persistence and crash tests.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import (  # noqa: E402
    REGION,
    BerthServer,
    new_keys,
    run_aws,
    signed_request,
    target,
)

# Keep boto3 in this process away from any config, credentials or metadata of the machine.
os.environ["AWS_CONFIG_FILE"] = "/dev/null"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
    os.environ.pop(_k, None)


@pytest.fixture(scope="session")
def tmp_root():
    d = Path(tempfile.mkdtemp(prefix="berth-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_root, request):
    name = request.module.__name__.rsplit(".", 1)[-1]
    base = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp_root))
    srv = BerthServer(base / "data", base / "logs", keys=new_keys())
    srv.start()
    yield srv
    code = srv.stop()
    if code not in (0, None):
        print(f"berth exited with {code}; log:\n{srv.log()}", file=sys.stderr)


@pytest.fixture(scope="module")
def ecs(server):
    return server.client()


@pytest.fixture(scope="module")
def ecs_nv(server):
    """A client that skips botocore's parameter validation, to reach the server's own checks."""
    return server.client(validate=False)


@pytest.fixture(scope="module")
def raw(server):
    """raw(op, body, keys=..., region=..., when=..., headers=..., target=...) → requests.Response."""

    def call(op=None, body=None, *, keys="default", region=REGION, when=None, headers=None, target_header=None):
        k = server.keys if keys == "default" else keys
        t = target_header if target_header is not None else (target(op) if op else None)
        return signed_request(server.url, t, body if body is not None else {}, k, region=region, when=when, headers=headers)

    return call


@pytest.fixture(scope="module")
def aws(server, tmp_root):
    """aws('ecs', 'list-clusters') → CliResult(returncode, stdout, stderr, .json)."""
    tmp = Path(tempfile.mkdtemp(prefix="aws-", dir=tmp_root))

    def call(*args, check=False, keys=None, credentials_file=None):
        return run_aws(server, args, tmp, keys=keys, credentials_file=credentials_file, check=check)

    return call


@pytest.fixture
def spawn(tmp_root):
    """spawn(data_dir=None, keys=..., durability=None, region=..., account_id=...) → a started BerthServer; all are killed at the end."""
    started: list[BerthServer] = []

    def start(data_dir: Path | None = None, keys="new", durability: str | None = None, **options) -> BerthServer:
        base = Path(tempfile.mkdtemp(prefix="spawn-", dir=tmp_root))
        k = new_keys() if keys == "new" else keys
        srv = BerthServer(data_dir or base / "data", base / "logs", keys=k, durability=durability, **options)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.kill()
