"""Shared pieces of the end-to-end suite: the server process, clients, and
small builders for the shapes most tests need.

Everything here talks to loopback addresses only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import boto3
import botocore.auth
import pytest
import requests
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCOUNT = "000000000000"
TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113"
CONTENT_TYPE = "application/x-amz-json-1.1"

ROLE_ARN = "arn:aws:iam::123456789012:role/ecsInfrastructureRole"
PROFILE_ARN = "arn:aws:iam::123456789012:instance-profile/ecsInstanceProfile"
SUBNET = "subnet-0123456789abcdef0"
SECURITY_GROUP = "sg-0123456789abcdef0"

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


def berth_bin() -> str:
    """The server binary: $BERTH_BIN, else $CARGO_TARGET_DIR/debug/berth, else /work/target/debug/berth."""
    if os.environ.get("BERTH_BIN"):
        return os.environ["BERTH_BIN"]
    if os.environ.get("CARGO_TARGET_DIR"):
        return os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "berth")
    return "/work/target/debug/berth"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uid(prefix: str = "x") -> str:
    """A unique, valid ECS name: tests sharing a module's server never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_keys() -> tuple[str, str]:
    key_id = "AKIA" + uuid.uuid4().hex[:16].upper()
    secret = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    return key_id, secret


def clean_env() -> dict:
    """The test process's environment without anything that would change the server's or a client's keys."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("BERTH_") and k != "BERTH_LOG":
            del env[k]
        if k.startswith("AWS_"):
            del env[k]
    return env


class BerthServer:
    """One `berth server` process over a data dir; can be stopped, killed and restarted."""

    _counter = 0

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        keys: tuple[str, str] | None = None,
        durability: str | None = None,
        region: str = REGION,
        account_id: str = ACCOUNT,
        command: str = "server",
        extra_args: list[str] | None = None,
    ):
        self.command = command
        self.extra_args = list(extra_args or [])
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.keys = keys
        self.durability = durability
        self.region = region
        self.account_id = account_id
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self, timeout: float = READY_TIMEOUT_S) -> "BerthServer":
        binary = berth_bin()
        if not os.path.exists(binary):
            pytest.fail(f"berth binary not found at {binary}: build it with `cargo build -p berth` or set BERTH_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):
            BerthServer._counter += 1
            # `berth up` keeps its port across restarts: its agents reconnect to it.
            if self.port is None or self.command != "up":
                self.port = free_port()
            self.log_path = self.log_dir / f"berth-{os.getpid()}-{BerthServer._counter}.log"
            env = clean_env()
            if self.keys:
                env["BERTH_ACCESS_KEY_ID"], env["BERTH_SECRET_ACCESS_KEY"] = self.keys
            env.setdefault("BERTH_LOG", "info")
            cmd = [
                binary,
                self.command,
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--region",
                self.region,
                "--account-id",
                self.account_id,
            ]
            if self.durability:
                cmd += ["--durability", self.durability]
            cmd += self.extra_args
            with open(self.log_path, "wb") as logf:
                self.proc = subprocess.Popen(
                    cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            self.returncode = None
            if self._wait_ready(timeout):
                return self
            last_error = self.log()
            self.kill()
            if "in use" not in last_error.lower():
                break
        pytest.fail(f"berth did not become ready on {self.url} within {timeout}s:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = requests.get(self.url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
            return self.returncode
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.returncode = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass

    def restart(self) -> "BerthServer":
        self.stop()
        return self.start()

    # --- clients ---------------------------------------------------------

    def client(self, validate: bool = True, keys: tuple[str, str] | None = None, read_timeout: float = 30):
        key_id, secret = keys or self.keys
        return boto3.session.Session().client(
            "ecs",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=read_timeout,
                parameter_validation=validate,
            ),
        )


# --- the aws CLI ----------------------------------------------------------------


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


# --- raw signed requests ------------------------------------------------------


def signed_request(
    url: str,
    target: str | None,
    body: bytes | str | dict | None,
    keys: tuple[str, str] | None,
    region: str = REGION,
    service: str = "ecs",
    when=None,
    headers: dict | None = None,
    timeout: float = 30,
) -> requests.Response:
    """POSTs one request signed with SigV4 (or unsigned when keys is None).

    `target` is the full X-Amz-Target value; `when` (a naive UTC datetime) signs
    the request as if made at that time.
    """
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    if body is None:
        body = b""
    h = {"Content-Type": CONTENT_TYPE}
    if target is not None:
        h["X-Amz-Target"] = target
    h.update(headers or {})
    req = AWSRequest(method="POST", url=url + "/", data=body, headers=h)
    if keys is not None:
        signer = botocore.auth.SigV4Auth(Credentials(keys[0], keys[1]), service, region)
        if when is not None:
            with mock.patch("botocore.auth.get_current_datetime", return_value=when):
                signer.add_auth(req)
        else:
            signer.add_auth(req)
    prepared = req.prepare()
    return requests.post(prepared.url, data=body, headers=dict(prepared.headers), timeout=timeout)


def target(op: str) -> str:
    return f"{TARGET_PREFIX}.{op}"


# --- errors -------------------------------------------------------------------


def error_code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def expect_error(codes, fn, *args, http_status: int | None = 400, **kwargs) -> ClientError:
    """Calls fn expecting an ECS error whose code is `codes` (a name or a tuple of names)."""
    if isinstance(codes, str):
        codes = (codes,)
    with pytest.raises(ClientError) as ei:
        fn(*args, **kwargs)
    e = ei.value
    assert error_code(e) in codes, f"expected {codes}, got {error_code(e)}: {e.response['Error'].get('Message')}"
    if http_status is not None:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == http_status
    assert e.response["ResponseMetadata"]["RequestId"], "every answer carries x-amzn-RequestId"
    return e


# --- builders -----------------------------------------------------------------


def mi_provider(**overrides) -> dict:
    """The full managedInstancesProvider shape; keyword arguments replace top-level members."""
    p = {
        "infrastructureRoleArn": ROLE_ARN,
        "instanceLaunchTemplate": {
            "ec2InstanceProfileArn": PROFILE_ARN,
            "networkConfiguration": {"subnets": [SUBNET], "securityGroups": [SECURITY_GROUP]},
            "storageConfiguration": {"storageSizeGiB": 50},
            "instanceRequirements": {"vCpuCount": {"min": 2, "max": 8}, "memoryMiB": {"min": 4096}},
        },
        "infrastructureOptimization": {"scaleInAfter": 300},
    }
    p.update(overrides)
    return p


def create_mi_cluster(ecs, prefix: str = "c", default_strategy: bool = False) -> tuple[str, str]:
    """A cluster with one managed instances capacity provider; returns (cluster name, provider name)."""
    cluster = uid(prefix)
    cp = uid("mi")
    ecs.create_cluster(clusterName=cluster)
    ecs.create_capacity_provider(name=cp, cluster=cluster, managedInstancesProvider=mi_provider())
    if default_strategy:
        ecs.put_cluster_capacity_providers(
            cluster=cluster,
            capacityProviders=[cp],
            defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 1}],
        )
    return cluster, cp


def simple_container(name: str = "app", **kw) -> dict:
    c = {"name": name, "image": "public.ecr.aws/docker/library/nginx:latest", "memory": 256, "essential": True}
    c.update(kw)
    return c


def register_td(ecs, family: str | None = None, containers=None, **kw) -> dict:
    family = family or uid("fam")
    kw.setdefault("requiresCompatibilities", ["MANAGED_INSTANCES"])
    resp = ecs.register_task_definition(
        family=family, containerDefinitions=containers or [simple_container()], **kw
    )
    return resp["taskDefinition"]


def strategy(cp: str) -> list:
    return [{"capacityProvider": cp, "weight": 1, "base": 0}]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
