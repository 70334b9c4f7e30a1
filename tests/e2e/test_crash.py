"""Crash safety: with --durability full, every acknowledged write survives `kill -9`.

A writer thread registers task definitions and runs tasks, one acknowledged
request at a time, recording what the server acknowledged. The server is
killed with SIGKILL at a random moment while writes are in flight, restarted
on the same data dir, and every acknowledged revision and task must be there,
intact; nothing half-written may be visible. Three kill/restart cycles.

The kill moments come from a seeded generator: set BERTH_CRASH_SEED to replay
a run (the seed is printed).
"""

import os
import random
import threading
import time

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

from helpers import create_mi_cluster, strategy, uid, wait_for

WRITES_PER_CYCLE = 300
CYCLES = 3
IMAGE = "public.ecr.aws/docker/library/busybox:latest"


class Writer(threading.Thread):
    """Alternates RegisterTaskDefinition and RunTask; records each acknowledged result."""

    def __init__(self, srv, cluster, cp, family, cycle, last_td):
        super().__init__(daemon=True)
        self.client = srv.client(read_timeout=20)
        self.cluster, self.cp, self.family, self.cycle = cluster, cp, family, cycle
        self.last_td = last_td
        self.tds = {}  # task definition ARN → the marker it was registered with
        self.tasks = {}  # task ARN → (task definition ARN, startedBy)
        self.acked = 0
        self.completed_all = False
        self.connection_error = None
        self.unexpected = []

    def run(self):
        c = self.client
        for i in range(WRITES_PER_CYCLE):
            marker = f"{self.cycle}-{i}"
            try:
                if i % 2 == 0 or self.last_td is None:
                    td = c.register_task_definition(
                        family=self.family,
                        requiresCompatibilities=["MANAGED_INSTANCES"],
                        containerDefinitions=[
                            {
                                "name": "app",
                                "image": IMAGE,
                                "memory": 64,
                                "essential": True,
                                "environment": [{"name": "MARKER", "value": marker}],
                                "command": ["echo", marker],
                            }
                        ],
                    )["taskDefinition"]
                    self.tds[td["taskDefinitionArn"]] = marker
                    self.last_td = td["taskDefinitionArn"]
                else:
                    resp = c.run_task(
                        cluster=self.cluster,
                        taskDefinition=self.last_td,
                        capacityProviderStrategy=strategy(self.cp),
                        count=1 + i % 3,
                        startedBy=marker,
                    )
                    for t in resp["tasks"]:
                        self.tasks[t["taskArn"]] = (self.last_td, marker)
                self.acked += 1
            except (BotoConnectionError, HTTPClientError) as e:
                # The server died under this request: it was never acknowledged.
                self.connection_error = e
                return
            except ClientError as e:
                self.unexpected.append(f"write {marker}: {e}")
                return
        self.completed_all = True


def describe_all_tasks(ecs, cluster, arns):
    found, failures = {}, []
    arns = list(arns)
    for i in range(0, len(arns), 100):
        resp = ecs.describe_tasks(cluster=cluster, tasks=arns[i : i + 100])
        for t in resp["tasks"]:
            found[t["taskArn"]] = t
        failures += resp["failures"]
    return found, failures


def list_all(ecs, paginator, key, **kw):
    out = []
    for page in ecs.get_paginator(paginator).paginate(**kw):
        out += page[key]
    return out


def check_store(ecs, cluster, family, acked_tds, acked_tasks):
    """Every acknowledged write is present and intact; nothing listed is half-written."""
    # Every acknowledged task definition revision, intact.
    for arn, marker in acked_tds.items():
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        assert td["taskDefinitionArn"] == arn
        assert td["status"] == "ACTIVE"
        assert td["family"] == family
        c = td["containerDefinitions"]
        assert len(c) == 1 and c[0]["image"] == IMAGE, td
        assert c[0]["environment"] == [{"name": "MARKER", "value": marker}], td
        assert c[0]["command"] == ["echo", marker], td

    # Every listed revision describes fully, and revisions have no holes.
    listed = list_all(ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family)
    assert set(acked_tds) <= set(listed), sorted(set(acked_tds) - set(listed))[:5]
    revisions = sorted(int(a.rsplit(":", 1)[1]) for a in listed)
    assert revisions == list(range(1, len(revisions) + 1)), f"revisions with holes or repeats: {revisions}"
    for arn in listed:
        if arn in acked_tds:
            continue
        # Committed but never acknowledged (the kill hit between commit and answer): must still be whole.
        td = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        c = td["containerDefinitions"]
        assert len(c) == 1 and c[0]["image"] == IMAGE and c[0]["environment"][0]["name"] == "MARKER", td

    # Every acknowledged task, intact.
    found, failures = describe_all_tasks(ecs, cluster, acked_tasks)
    assert failures == [], f"acknowledged tasks lost: {failures[:5]}"
    for arn, (td_arn, started_by) in acked_tasks.items():
        t = found[arn]
        assert t["taskDefinitionArn"] == td_arn, t
        assert t["startedBy"] == started_by, t
        assert t["desiredStatus"] == "RUNNING" and t["lastStatus"] == "PROVISIONING", t
        assert [c["name"] for c in t["containers"]] == ["app"], t

    # Every listed task describes fully and points at a task definition that exists.
    listed_tasks = list_all(ecs, "list_tasks", "taskArns", cluster=cluster)
    assert set(acked_tasks) <= set(listed_tasks)
    found, failures = describe_all_tasks(ecs, cluster, listed_tasks)
    assert failures == []
    known_tds = set(listed)
    for t in found.values():
        assert t["taskDefinitionArn"] in known_tds, t
        assert t["containers"] and t["containers"][0]["name"] == "app", t
        assert t["capacityProviderName"], t
    return max(revisions) if revisions else 0


def test_kill9_keeps_every_acknowledged_write(spawn):
    seed = int(os.environ.get("BERTH_CRASH_SEED", random.randrange(1 << 30)))
    print(f"BERTH_CRASH_SEED={seed}")
    rng = random.Random(seed)

    srv = spawn(durability="full")
    ecs = srv.client()
    cluster, cp = create_mi_cluster(ecs, "crash")
    family = uid("crash")
    acked_tds, acked_tasks = {}, {}
    last_td = None
    max_revision = 0
    mid_flight_kills = 0

    for cycle in range(CYCLES):
        writer = Writer(srv, cluster, cp, family, cycle, last_td)
        started = time.monotonic()
        writer.start()
        # Let some writes through, then kill at a random moment while the writer is busy: after a
        # random number of acknowledged writes, or around one second in, whichever comes first.
        wait_for(lambda: writer.acked >= 4 or not writer.is_alive(), timeout=30, what="first acknowledged writes")
        kill_after_writes = rng.randint(20, WRITES_PER_CYCLE - 20)
        kill_at = started + rng.uniform(0.8, 1.2)
        while time.monotonic() < kill_at and writer.acked < kill_after_writes and writer.is_alive():
            time.sleep(0.001)
        if writer.is_alive():
            mid_flight_kills += 1
        srv.kill()
        writer.join(timeout=30)
        assert not writer.is_alive(), "the writer is stuck on a dead server"
        assert writer.unexpected == [], writer.unexpected

        # The first revision written in this cycle continues the numbering: nothing reused.
        if writer.tds:
            first = min(int(a.rsplit(":", 1)[1]) for a in writer.tds)
            assert first > max_revision, f"cycle {cycle}: revision {first} reuses a number ≤ {max_revision}"

        acked_tds.update(writer.tds)
        acked_tasks.update(writer.tasks)
        if writer.tds:
            last_td = max(writer.tds, key=lambda a: int(a.rsplit(":", 1)[1]))

        srv.start()
        ecs = srv.client()
        max_revision = check_store(ecs, cluster, family, acked_tds, acked_tasks)
        print(
            f"cycle {cycle}: {writer.acked} acknowledged writes, "
            f"killed {'mid-flight' if not writer.completed_all else 'after the last write'}; "
            f"{len(acked_tds)} revisions, {len(acked_tasks)} tasks so far"
        )

    assert acked_tds and acked_tasks, "the writer got nothing acknowledged"
    assert mid_flight_kills >= CYCLES - 1, f"only {mid_flight_kills} of {CYCLES} kills landed while writes were in flight"
    # The cluster and its provider (written before the first kill) are still whole.
    c = ecs.describe_clusters(clusters=[cluster])["clusters"][0]
    assert c["status"] == "ACTIVE" and cp in c["capacityProviders"]
    assert ecs.describe_capacity_providers(capacityProviders=[cp])["capacityProviders"][0]["status"] == "ACTIVE"
