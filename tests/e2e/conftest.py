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

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import (  # noqa: E402
    REGION,
    BerthServer,
    clean_env,
    new_keys,
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


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None


def _aws_command() -> list[str]:
    try:
        import awscli  # noqa: F401

        return [sys.executable, "-m", "awscli"]
    except ImportError:
        exe = shutil.which("aws")
        if exe is None:
            pytest.skip("neither the awscli Python package nor the aws executable is installed")
        return [exe]


def run_aws(srv: BerthServer, args, tmp: Path, keys=None, credentials_file: str | None = None, check: bool = False):
    env = clean_env()
    env["AWS_CONFIG_FILE"] = "/dev/null"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_PAGER"] = ""
    env["AWS_MAX_ATTEMPTS"] = "1"
    env["AWS_RETRY_MODE"] = "standard"
    if credentials_file is not None:
        env["AWS_SHARED_CREDENTIALS_FILE"] = credentials_file
    else:
        creds = tmp / "aws-credentials-empty"
        if not creds.exists():
            creds.write_text("")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
        k = keys or srv.keys
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = k
    cmd = _aws_command() + [
        "--endpoint-url",
        srv.url,
        "--region",
        srv.region,
        "--output",
        "json",
        *[str(a) for a in args],
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp))
    r = CliResult(p.returncode, p.stdout, p.stderr)
    if check and r.returncode != 0:
        raise AssertionError(f"aws {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def aws(server, tmp_root):
    """aws('ecs', 'list-clusters') → CliResult(returncode, stdout, stderr, .json)."""
    tmp = Path(tempfile.mkdtemp(prefix="aws-", dir=tmp_root))

    def call(*args, check=False, keys=None, credentials_file=None):
        return run_aws(server, args, tmp, keys=keys, credentials_file=credentials_file, check=check)

    return call


@pytest.fixture
def spawn(tmp_root):
    """spawn(data_dir=None, keys=..., durability=None) → a started BerthServer; all are stopped at the end."""
    started: list[BerthServer] = []

    def start(data_dir: Path | None = None, keys="new", durability: str | None = None) -> BerthServer:
        base = Path(tempfile.mkdtemp(prefix="spawn-", dir=tmp_root))
        k = new_keys() if keys == "new" else keys
        srv = BerthServer(data_dir or base / "data", base / "logs", keys=k, durability=durability)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.kill()
