"""Exec instead of SSH, on `berth up` with real local instances and runc
containers: ExecuteCommand as AWS defines it (and its refusals), `berth exec`
with and without a terminal (driven through a real pty), the session-manager
data channel on streamUrl (a client written from the protocol description),
and `aws ecs execute-command` with a stand-in for session-manager-plugin — and
with the real plugin where it is installed.

Needs root, runc and /bin/busybox (busybox-static), as test_up.py does.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(__file__))

import ssm_client  # noqa: E402
from helpers import BerthServer, berth_bin, clean_env, new_keys  # noqa: E402
from ssm_client import DataChannel, HandshakeError, WebSocket  # noqa: E402
from test_up import PROFILE, REASON, ROLE, SUBNET, import_busybox  # noqa: E402

real_containers = pytest.mark.skipif(REASON is not None, reason=f"real containers need root, runc and busybox: {REASON}")

BRIDGE = f"btx{os.getpid() % 100000}"
RANGE = f"10.211.{os.getpid() % 200 + 1}.0/24"
CGROUP_ROOT = f"/berth-e2e-exec-{os.getpid()}"
CLUSTER = "exec"
TOKEN_TTL = 5
IDLE = 6
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
NOT_ENABLED = (
    "The execute command failed because execute command was not enabled when the task was run "
    "or the execute command agent isn’t running. Wait and try again or run a new task with execute "
    "command enabled and try again."
)


# --- the protocol, without a server ---------------------------------------------


def test_the_test_client_reads_the_annotated_example():
    """The data channel client agrees with the description's captured message."""
    frame = bytes.fromhex(
        "00000074"
        "696e7075745f73747265616d5f64617461202020202020202020202020202020"
        "00000001"
        "000001a214b9454e"
        "0000000000000001"
        "0000000000000000"
        "83f832cd0b44207ec62bec73d64a4c51"
        "edf7359c89077b608a6b3e8b19e63bbfc7aa724989a05ea371a9966a6e9db7cc"
        "00000003"
        "00000016"
        "7b22636f6c73223a3132302c22726f7773223a34307d"
    )
    m = ssm_client.decode(frame)
    assert m["type"] == "input_stream_data"
    assert m["seq"] == 1 and m["payload_type"] == 3 and m["payload_length"] == 22
    assert str(m["id"]) == "c62bec73-d64a-4c51-83f8-32cd0b44207e"
    assert json.loads(m["payload"]) == {"cols": 120, "rows": 40}
    again = ssm_client.encode("input_stream_data", 1, 3, m["payload"], message_id=m["id"])
    assert again[:40] == frame[:40] and again[48:] == frame[48:]  # all but the creation time


# --- the server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def up(tmp_root):
    if REASON is not None:
        pytest.skip(f"real containers need root, runc and busybox: {REASON}")
    base = Path(tempfile.mkdtemp(prefix="upexec-", dir=tmp_root))
    srv = BerthServer(
        base / "data",
        base / "logs",
        keys=new_keys(),
        command="up",
        extra_args=[
            "--bridge", BRIDGE, "--address-range", RANGE, "--cgroup-root", CGROUP_ROOT,
            "--exec-token-ttl", f"{TOKEN_TTL}s", "--exec-idle-timeout", f"{IDLE}s",
        ],
    )
    srv.start()
    import_busybox(srv, base)
    ecs = srv.client()
    ecs.create_cluster(clusterName=CLUSTER)
    ecs.create_capacity_provider(
        name="exec-mi",
        cluster=CLUSTER,
        managedInstancesProvider={
            "infrastructureRoleArn": ROLE,
            "instanceLaunchTemplate": {
                "ec2InstanceProfileArn": PROFILE,
                "networkConfiguration": {"subnets": [SUBNET]},
                "instanceRequirements": {"vCpuCount": {"min": 2, "max": 2}, "memoryMiB": {"min": 4096, "max": 4096}},
            },
            "infrastructureOptimization": {"scaleInAfter": 600},
        },
    )
    ecs.put_cluster_capacity_providers(
        cluster=CLUSTER,
        capacityProviders=["exec-mi"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "exec-mi", "weight": 1}],
    )
    srv.td = ecs.register_task_definition(
        family="shell",
        requiresCompatibilities=["MANAGED_INSTANCES"],
        networkMode="host",
        containerDefinitions=[{"name": "app", "image": "busybox", "memory": 128, "command": SLEEPER}],
    )["taskDefinition"]["taskDefinitionArn"]
    srv.base = base
    enabled = ecs.run_task(cluster=CLUSTER, taskDefinition=srv.td, enableExecuteCommand=True)["tasks"][0]["taskArn"]
    plain = ecs.run_task(cluster=CLUSTER, taskDefinition=srv.td)["tasks"][0]["taskArn"]
    wait_running(srv, ecs, [enabled, plain])
    srv.task, srv.plain = enabled, plain
    yield srv
    code = srv.stop(timeout=60)
    assert code == 0, f"berth up exited with {code}:\n{srv.log()[-4000:]}"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0


def wait_running(srv, ecs, arns, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"]
        if all(t["lastStatus"] == "RUNNING" for t in tasks):
            return tasks
        if any(t["lastStatus"] == "STOPPED" for t in tasks):
            break
        time.sleep(0.5)
    pytest.fail(f"tasks not RUNNING: {[(t['lastStatus'], t.get('stoppedReason')) for t in tasks]}\n{srv.log()[-3000:]}")


def execute(up, command, task=None, **kw):
    return up.client().execute_command(cluster=CLUSTER, task=task or up.task, interactive=True, command=command, **kw)


def berth_env(up):
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = up.keys
    env["BERTH_ENDPOINT"] = up.url
    return env


def berth_exec(up, *command, flags=(), input=None, timeout=60, task=None):
    cmd = [berth_bin(), "exec", "--cluster", CLUSTER, task or up.task, *flags, "--", *command]
    return subprocess.run(cmd, env=berth_env(up), input=input, capture_output=True, timeout=timeout)


def error_of(fn, *args, **kw):
    with pytest.raises(ClientError) as ei:
        fn(*args, **kw)
    e = ei.value.response["Error"]
    return e["Code"], e["Message"]


def native_stream(up, session, token, query="tty=false"):
    ws_url = up.url.replace("http://", "ws://") + f"/berth/v1/exec/{session}?{query}"
    return WebSocket(ws_url, headers={"Authorization": f"Bearer {token}"})


def read_native(ws, timeout=20):
    """Everything of a native stream until its exit: (stdout, stderr, exit message)."""
    out, err, deadline = b"", b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        op, data = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if op == ssm_client.OP_BINARY:
            if data[:1] == b"\x01":
                out += data[1:]
            elif data[:1] == b"\x02":
                err += data[1:]
        elif op == ssm_client.OP_TEXT:
            m = json.loads(data)
            if m["type"] == "exit":
                return out, err, m
        elif op == ssm_client.OP_CLOSE:
            break
    raise AssertionError(f"no exit message; stdout {out!r} stderr {err!r}")


# --- ExecuteCommand -------------------------------------------------------------


@real_containers
def test_describe_tasks_shows_the_exec_agent_and_runtime_ids(up):
    ecs = up.client()
    t = ecs.describe_tasks(cluster=CLUSTER, tasks=[up.task])["tasks"][0]
    assert t["enableExecuteCommand"] is True
    c = t["containers"][0]
    assert c["runtimeId"] == f"{up.task.rsplit('/', 1)[-1]}-app"
    assert c["managedAgents"][0]["name"] == "ExecuteCommandAgent"
    assert c["managedAgents"][0]["lastStatus"] == "RUNNING"
    assert "lastStartedAt" in c["managedAgents"][0]
    plain = ecs.describe_tasks(cluster=CLUSTER, tasks=[up.plain])["tasks"][0]
    assert plain["enableExecuteCommand"] is False
    assert "managedAgents" not in plain["containers"][0]
    # The instance's agent says it runs exec sessions.
    ci = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=[t["containerInstanceArn"]])["containerInstances"][0]
    assert "ecs.capability.execute-command" in {a["name"] for a in ci["attributes"]}


@real_containers
def test_execute_command_answers_a_session(up):
    r = execute(up, "/bin/sh")
    assert r["taskArn"] == up.task
    assert r["containerName"] == "app"
    assert r["interactive"] is True
    assert r["clusterArn"].endswith(":cluster/exec")
    assert r["containerArn"].startswith("arn:aws:ecs:")
    s = r["session"]
    assert s["sessionId"].startswith("ecs-execute-command-")
    port = up.url.rsplit(":", 1)[1]
    assert s["streamUrl"] == f"ws://127.0.0.1:{port}/v1/data-channel/{s['sessionId']}?role=publish_subscribe"
    assert len(s["tokenValue"]) >= 32


@real_containers
def test_refusals(up):
    ecs = up.client()
    # Not started with enableExecuteCommand: AWS's words.
    code, message = error_of(execute, up, "/bin/sh", task=up.plain)
    assert code == "InvalidParameterException" and message == NOT_ENABLED
    code, message = error_of(ecs.execute_command, cluster=CLUSTER, task=up.task, interactive=False, command="/bin/sh")
    assert code == "InvalidParameterException" and message == "Interactive is the only mode supported currently."
    code, message = error_of(execute, up, "/bin/sh", container="nope")
    assert code == "InvalidParameterException" and "nope" in message
    code, _ = error_of(execute, up, "/bin/sh", task="0123456789abcdef0123456789abcdef")
    assert code == "InvalidParameterException"
    code, message = error_of(execute, up, "sh -c 'unterminated")
    assert code == "InvalidParameterException" and "quote" in message
    code, _ = error_of(ecs.execute_command, cluster="nope", task=up.task, interactive=True, command="sh")
    assert code == "ClusterNotFoundException"
    # A stopped task.
    arn = ecs.run_task(cluster=CLUSTER, taskDefinition=up.td, enableExecuteCommand=True)["tasks"][0]["taskArn"]
    wait_running(up, ecs, [arn])
    ecs.stop_task(cluster=CLUSTER, task=arn, reason="test")
    ecs.get_waiter("tasks_stopped").wait(cluster=CLUSTER, tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    code, message = error_of(execute, up, "/bin/sh", task=arn)
    assert code == "InvalidParameterException" and "not running" in message
    t = ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]
    assert t["containers"][0]["managedAgents"][0]["lastStatus"] == "STOPPED"


@real_containers
def test_tokens_are_single_use_and_short_lived(up):
    r = execute(up, "echo first")
    sid, token = r["session"]["sessionId"], r["session"]["tokenValue"]
    # A wrong token opens nothing and does not use the right one up.
    with pytest.raises(HandshakeError) as ei:
        native_stream(up, sid, "0" * 64)
    assert ei.value.status == 403
    ws = native_stream(up, sid, token)
    out, err, end = read_native(ws)
    assert out == b"first\n" and err == b"" and end["exitCode"] == 0
    ws.close()
    # Reused: refused, on either stream.
    with pytest.raises(HandshakeError) as ei:
        native_stream(up, sid, token)
    assert ei.value.status == 403
    body = json.loads(ei.value.body)
    assert body["__type"] == "InvalidTokenException" and "already used" in body["message"]
    ch = DataChannel(r["session"]["streamUrl"], token)
    closed = ch.wait_closed(timeout=10)
    assert "already used" in closed["Output"]
    assert ch.handshake is None, "a refused channel gets no handshake"
    ch.close()
    # Unknown session.
    with pytest.raises(HandshakeError) as ei:
        native_stream(up, "ecs-execute-command-nope", token)
    assert ei.value.status == 404
    # Expired before use.
    r = execute(up, "echo late")
    time.sleep(TOKEN_TTL + 1.5)
    with pytest.raises(HandshakeError) as ei:
        native_stream(up, r["session"]["sessionId"], r["session"]["tokenValue"])
    assert ei.value.status == 403
    assert "expired" in json.loads(ei.value.body)["message"]
    # Each refused stream left an audit record, as did the session that ran.
    audit = subprocess.run([berth_bin(), "audit", "exec", "--output", "json"], env=berth_env(up), capture_output=True, timeout=30)
    assert audit.returncode == 0, audit.stderr
    doc = json.loads(audit.stdout)
    records = doc["records"] if isinstance(doc, dict) else doc
    mine = [x for x in records if x.get("sessionId") in (sid, r["session"]["sessionId"]) or x.get("command") in ("echo first", "echo late")]
    outcomes = sorted((x["command"], x["outcome"], "used" in x.get("error", "") or "expired" in x.get("error", "")) for x in mine)
    assert ("echo first", "ok", False) in outcomes, mine
    assert sum(1 for c, o, why in outcomes if c == "echo first" and o == "denied" and why) == 2, mine  # two reuses
    assert ("echo late", "denied", True) in outcomes, mine


# --- berth exec -----------------------------------------------------------------


@real_containers
def test_berth_exec_returns_the_exit_code_and_keeps_stderr_apart(up):
    p = berth_exec(up, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert p.returncode == 5, p.stderr
    assert p.stdout == b"out\n"
    assert p.stderr == b"err\n"
    # Arguments keep their spaces and quotes through ExecuteCommand's one string.
    p = berth_exec(up, "sh", "-c", 'printf "%s|" "$@"', "x", "a b", "it's", "")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"a b|it's||"
    # -i passes standard input through; its end closes the process's input.
    p = berth_exec(up, "sh", "-c", "busybox tr a-z A-Z; echo done", flags=["-i"], input=b"hello\nworld\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"HELLO\nWORLD\ndone\n"
    # Bulk both ways, past the flow-control window (256 KiB) in each direction.
    blob = os.urandom(3 * 1024 * 1024 + 17)
    p = berth_exec(up, "busybox", "wc", "-c", flags=["-i"], input=blob, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(len(blob)).encode()]
    # … and both at once: input and output windows full together must not deadlock.
    p = berth_exec(up, "cat", flags=["-i"], input=blob, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == blob
    p = berth_exec(up, "busybox", "head", "-c", "3000000", "/dev/urandom", timeout=120)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) == 3000000
    # Without -i the input is closed at once.
    p = berth_exec(up, "cat", input=b"ignored")
    assert p.returncode == 0 and p.stdout == b""
    # A command that is not there, and a signal.
    p = berth_exec(up, "no-such-command")
    assert p.returncode == 127, (p.returncode, p.stderr)
    assert b"no-such-command" in p.stderr
    p = berth_exec(up, "sh", "-c", "kill -9 $$")
    assert p.returncode == 137
    # Refused by ExecuteCommand: berth exec's own failure.
    p = berth_exec(up, "true", task=up.plain)
    assert p.returncode == 255
    assert b"execute command was not enabled" in p.stderr
    # -t without a terminal.
    p = berth_exec(up, "true", flags=["-t"])
    assert p.returncode == 255 and b"terminal" in p.stderr


class Pty:
    """A program on a real pseudo-terminal, driven like a person would."""

    def __init__(self, argv, env, cols=80, rows=24):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.set_size(cols, rows)
        self.out = b""

    def set_size(self, cols, rows):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes):
        os.write(self.fd, data)

    def expect(self, needle: bytes, timeout=20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen within {timeout}s; got {self.out[-2000:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {needle!r}; got {self.out[-2000:]!r}")
                self.out += chunk
        i = self.out.index(needle) + len(needle)
        seen, self.out = self.out[:i], self.out[i:]
        return seen

    def wait(self, timeout=20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 65536)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the program did not exit; output {self.out[-2000:]!r}")


@real_containers
def test_a_sessions_transcript_is_kept_with_the_tasks_logs(up):
    """The cluster's exec logging is DEFAULT (unset): input and output join the task's logs."""
    marker = uuid.uuid4().hex[:12]
    p = berth_exec(up, "sh", "-c", f"read x; echo out-$x; echo err-{marker} >&2", flags=["-i"], input=f"{marker}\n".encode())
    assert p.returncode == 0, p.stderr
    logs = subprocess.run(
        [berth_bin(), "logs", "--cluster", CLUSTER, up.task, "--container", "app"],
        env=berth_env(up), capture_output=True, timeout=30,
    )
    assert logs.returncode == 0, logs.stderr
    assert marker in logs.stdout.decode().splitlines(), logs.stdout  # what was typed
    assert f"out-{marker}" in logs.stdout.decode().splitlines(), logs.stdout
    assert f"err-{marker}" in logs.stderr.decode().splitlines(), logs.stderr


@real_containers
def test_berth_exec_it_is_a_terminal(up):
    p = Pty([berth_bin(), "exec", "--cluster", CLUSTER, up.task, "-it", "--", "sh"], berth_env(up), cols=80, rows=24)
    try:
        p.expect(b"# ")
        # Typed, echoed by the remote terminal, computed there.
        p.write(b"echo $((6*7))\r")
        p.expect(b"echo $((6*7))")
        p.expect(b"42\r\n")
        p.expect(b"# ")
        # The size came along, and follows the local window.
        p.write(b"busybox stty size\r")
        p.expect(b"24 80\r\n")
        p.set_size(101, 33)
        os.kill(p.pid, signal.SIGWINCH)
        time.sleep(0.5)
        p.write(b"busybox stty size\r")
        p.expect(b"33 101\r\n")
        # Ctrl-C reaches the remote foreground process, not berth exec.
        p.write(b"sleep 100\r")
        p.expect(b"sleep 100")
        time.sleep(0.5)
        p.write(b"\x03")
        p.expect(b"# ")
        p.write(b"echo after-ctrl-c\r")
        p.expect(b"after-ctrl-c\r\n")
        # A nested shell left with Ctrl-D (EOF on the terminal).
        p.write(b"sh\r")
        time.sleep(0.3)
        p.write(b"\x04")
        p.write(b"echo outer-$((1+1))\r")
        p.expect(b"outer-2\r\n")
        # The remote exit code is the local one.
        p.write(b"exit 3\r")
        assert p.wait() == 3
    finally:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(p.fd)


@real_containers
def test_the_process_goes_when_the_client_does(up):
    marker = f"sleep {1000 + os.getpid() % 1000}"
    proc = subprocess.Popen(
        [berth_bin(), "exec", "--cluster", CLUSTER, up.task, "--", "sh", "-c", f"echo started; exec {marker}"],
        env=berth_env(up),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline() == b"started\n"
    ps = berth_exec(up, "busybox", "ps", "-o", "args")
    assert marker.encode() in ps.stdout, ps.stdout
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ps = berth_exec(up, "busybox", "ps", "-o", "args")
        if marker.encode() not in ps.stdout:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the exec'd process outlived its client:\n{ps.stdout.decode()}")
    assert "exec session ended" in up.log()


@real_containers
def test_an_idle_session_ends(up):
    began = time.monotonic()
    p = berth_exec(up, "sleep", "60", timeout=40)
    took = time.monotonic() - began
    assert p.returncode == 255, (p.returncode, p.stderr)
    assert b"idle" in p.stderr
    assert IDLE <= took < 30


# --- the session-manager data channel ---------------------------------------------


@real_containers
def test_the_data_channel_speaks_the_plugins_protocol(up):
    r = execute(up, "/bin/sh")
    ch = DataChannel(r["session"]["streamUrl"], r["session"]["tokenValue"], drop_outputs=2, size=(120, 40))
    try:
        # The handshake: a SessionType action, then HandshakeComplete (seq 0 and 1).
        ch.wait_for(lambda: ch.complete is not None, what="the handshake")
        hs = ch.handshake
        assert hs["RequestedClientActions"][0]["ActionType"] == "SessionType"
        assert hs["RequestedClientActions"][0]["ActionParameters"]["SessionType"] in (
            "Standard_Stream", "InteractiveCommands", "NonInteractiveCommands")
        assert len(hs["AgentVersion"].split(".")) == 4
        assert isinstance(ch.complete["HandshakeTimeToComplete"], int)
        outputs = [m for m in ch.seen if m["type"] == "output_stream_data"]
        assert [m["seq"] for m in outputs[:2]] == [0, 1]
        assert [m["payload_type"] for m in outputs[:2]] == [5, 7]
        # The shell's prompt; the first two outputs were dropped unacknowledged and came again.
        ch.wait_output(b"# ")
        assert len(ch.dropped) == 2
        assert ch.output_seqs[0] == ch.dropped[0], "the dropped message was sent again"
        resent = [m["seq"] for m in ch.seen if m["type"] == "output_stream_data" and m["seq"] == ch.dropped[0]]
        assert len(resent) >= 2
        # Keystrokes: the remote side echoes (the plugin turns its own echo off).
        ch.type("echo $((6*7))")
        ch.type("\n")
        ch.wait_output(b"42\r\n")
        # The size sent after the handshake, then a resize.
        ch.type("busybox stty size\r")
        ch.wait_output(b"40 120\r\n")
        ch.resize(132, 50)
        ch.type("busybox stty size\r")
        ch.wait_output(b"50 132\r\n")
        # Every input is acknowledged, a duplicate too, and used once; one sent ahead of its
        # turn waits for the gap.
        dup = ch.send_input(1, b"echo dup-")
        ch.send_input(1, b"echo dup-", seq=dup)
        ahead = ch.seq + 1
        ch.send_input(1, b"B\r", seq=ahead)
        ch.send_input(1, b"A")
        ch.seq = ahead + 1
        ch.wait_output(b"dup-AB\r\n")
        assert ch.acked_inputs.count(dup) >= 2
        ch.wait_for(lambda: not ch.unacked, what="every input acknowledged")
        # Ctrl-C is a byte on the terminal.
        ch.type("sleep 100\r")
        ch.wait_output(b"sleep 100")
        time.sleep(0.3)
        ch.type(b"\x03")
        ch.type("echo alive\r")
        ch.wait_output(b"alive\r\n")
        # Each output message was acknowledged exactly once by this client, in order.
        assert ch.output_seqs == sorted(set(ch.output_seqs))
        ch.type("exit\r")
        closed = ch.wait_closed()
        assert closed["Output"] == ""
        assert closed["SessionId"] == r["session"]["sessionId"]
    finally:
        ch.close()


@real_containers
def test_a_one_shot_command_over_the_data_channel(up):
    expected = berth_exec(up, "cat", "/etc/hostname").stdout
    assert expected.strip()
    r = execute(up, "cat /etc/hostname")
    ch = DataChannel(r["session"]["streamUrl"], r["session"]["tokenValue"], size=(300, 100))
    try:
        closed = ch.wait_closed()
        assert closed["Output"] == ""
        assert bytes(ch.output).replace(b"\r\n", b"\n") == expected
    finally:
        ch.close()
    # Output past the flow-control window, with the first messages dropped and resent.
    r = execute(up, "sh -c 'busybox head -c 600000 /dev/zero | busybox tr \\\\0 x; echo; echo END'")
    ch = DataChannel(r["session"]["streamUrl"], r["session"]["tokenValue"], drop_outputs=3)
    try:
        ch.wait_closed(timeout=60)
        assert bytes(ch.output).count(b"x") == 600000
        assert bytes(ch.output).endswith(b"END\r\n")
        assert ch.output_seqs == sorted(set(ch.output_seqs))
    finally:
        ch.close()
    # The client's TerminateSession flag ends a session too.
    r = execute(up, "sleep 100")
    ch = DataChannel(r["session"]["streamUrl"], r["session"]["tokenValue"])
    try:
        ch.wait_for(lambda: ch.complete is not None, what="the handshake")
        ch.pump(0.5)
        ch.send_input(10, struct.pack(">I", 2))
        ch.wait_closed(timeout=10)
    finally:
        ch.close()


def plugin_dir(up, tmp: Path) -> Path:
    d = tmp / "plugin-bin"
    d.mkdir(exist_ok=True)
    script = d / "session-manager-plugin"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
                      "import ssm_client\nsys.exit(ssm_client.plugin_main(sys.argv))\n")
    script.chmod(0o755)
    return d


def aws_execute_command(up, tmp: Path, path_dir: Path | None, command: str, extra_env=None):
    env = clean_env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = up.keys
    env["AWS_CONFIG_FILE"] = "/dev/null"
    creds = tmp / "aws-credentials-empty"
    creds.write_text("")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_PAGER"] = ""
    if path_dir is not None:
        env["PATH"] = f"{path_dir}:{env.get('PATH', '')}"
    env.update(extra_env or {})
    try:
        import awscli  # noqa: F401

        aws = [sys.executable, "-m", "awscli"]
    except ImportError:
        aws = [shutil.which("aws") or pytest.skip("the aws CLI is not installed")]
    cmd = aws + ["--endpoint-url", up.url, "--region", up.region, "ecs", "execute-command",
                 "--cluster", CLUSTER, "--task", up.task, "--interactive", "--command", command]
    # The plugin ends when its input does: keep it open until the session is over.
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp))
    try:
        out, err = _communicate_keep_stdin(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def _communicate_keep_stdin(proc, timeout):
    out, err = b"", b""
    deadline = time.monotonic() + timeout
    streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    while streams and time.monotonic() < deadline:
        r, _, _ = select.select(list(streams), [], [], 0.2)
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                del streams[fd]
            elif streams[fd] == "out":
                out += chunk
            else:
                err += chunk
    proc.wait(timeout=max(1, deadline - time.monotonic()))
    return out, err


@real_containers
def test_aws_execute_command_runs_the_plugin_with_the_right_target(up, tmp_path):
    expected = berth_exec(up, "cat", "/etc/hostname").stdout.strip()
    log = tmp_path / "plugin-argv.json"
    code, out, err = aws_execute_command(up, tmp_path, plugin_dir(up, tmp_path), "cat /etc/hostname",
                                         {"FAKE_PLUGIN_LOG": str(log)})
    assert code == 0, err.decode()
    assert expected in out, out
    argv = json.loads(log.read_text())
    session = json.loads(argv[0])
    assert session["sessionId"].startswith("ecs-execute-command-")
    assert argv[1] == up.region and argv[2] == "StartSession"
    task_id = up.task.rsplit("/", 1)[-1]
    runtime_id = up.client().describe_tasks(cluster=CLUSTER, tasks=[up.task])["tasks"][0]["containers"][0]["runtimeId"]
    assert json.loads(argv[4]) == {"Target": f"ecs:{CLUSTER}_{task_id}_{runtime_id}"}
    assert argv[5].rstrip("/") == up.url
    assert f"Exiting session with sessionId: {session['sessionId']}.".encode() in out


@real_containers
@pytest.mark.skipif(shutil.which("session-manager-plugin") is None, reason="session-manager-plugin is not installed")
def test_aws_execute_command_with_the_real_plugin(up, tmp_path):
    expected = berth_exec(up, "cat", "/etc/hostname").stdout.strip()
    code, out, err = aws_execute_command(up, tmp_path, None, "cat /etc/hostname")
    assert code == 0, err.decode()
    assert expected in out, out
    assert b"Exiting session with sessionId" in out
