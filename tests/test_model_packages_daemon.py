"""Exactly once, under real daemons (issue 30): three daemons on one PostgreSQL registry read the
Model Registry's events from an SQS queue on the local SageMaker. Every event arrives three times, one
arrives after a later version's, and the leader is killed between reading an event and starting the
rollout. Each approved version gets one rollout at most, the newest approved version ends up serving,
and no event is lost (the queue is drained: each message read was acted on and deleted)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from manager.db import Database
from manager.history import audit
from manager.local_sagemaker import LocalSageMaker
from manager.platforms.sagemaker import SageMakerPlatform
from manager.registry import migrate, models
from manager.registry import packages as claims
from manager.registry.tables import Endpoint, Rollout
from manager.registry.vocabulary import ACTIVE_ROLLOUT_STATES
from manager.rollout import endpoints

from .conftest import throwaway_pg_database
from .daemon_support import died_at, log_file, start_daemon
from .local_sagemaker_support import first_row
from .test_scale_out import settled, status, stop, wait_for

pytestmark = pytest.mark.slow
LEASE = 3.0
ENDPOINT = "approved-prod"
POLICY = f"""
name: approvals
target: {{endpoint: {ENDPOINT}, candidate: {{model: churn, newestApproved: true}}}}
steps: [{{setWeight: {{percent: 50}}}}, {{analysis: {{}}}}]
metrics:
  - {{name: 5xx, source: cloudwatch, measure: errors_5xx, kind: errors, higherIsBetter: false,
     role: primary, minSamples: 20, onNoData: pass}}
decisions: {{maxDuration: 5m}}
trigger:
  type: modelPackageApproved
  modelPackageApproved: {{group: churn-models, queueUrl: 'QUEUE', pollSeconds: 3600, visibilitySeconds: 5}}
"""


@contextmanager
def traffic(host: LocalSageMaker) -> Iterator[None]:
    stop_sending = threading.Event()
    client = host.client("sagemaker-runtime")

    def send() -> None:
        while not stop_sending.is_set():
            with suppress(Exception):
                client.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=first_row())

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop_sending.set()
        worker.join(timeout=5)


def _daemon(host: LocalSageMaker, url: str, folder: Path, name: str, **extra: str) -> subprocess.Popen[bytes]:
    return start_daemon(
        host.url,
        url,
        *("--instance-id", name, "--lease-ttl", str(LEASE), "--policies", str(folder / "policies")),
        stderr=log_file(folder, name) if not extra else subprocess.PIPE,
        VARIANTCTL_ENDPOINT_LEASE_SECONDS=str(LEASE),
        **extra,
    )


def _echo(sqs: Any, tap: str, queue: str, copies: int) -> list[dict[str, Any]]:
    """Every event the tap queue got, sent `copies` more times to the daemons' queue."""
    events = []
    while True:
        got = sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return events
        for message in got:
            events.append(json.loads(message["Body"]))
            for _ in range(copies):
                sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=tap, ReceiptHandle=message["ReceiptHandle"])


def _serving(database: Database) -> set[str]:
    with database.read() as session:
        endpoint = session.query(Endpoint).filter_by(name=ENDPOINT).one()
        return {v.model_version.ref for v in endpoint.current_config.variants}


def test_each_approved_version_rolls_out_once_whatever_the_events_and_the_daemons(
    tmp_path: Path, artifacts: dict[str, Path]
) -> None:
    (tmp_path / "policies").mkdir()
    with (
        throwaway_pg_database() as url,
        LocalSageMaker(tmp_path / "sagemaker", provision_delay=0.1, metric_bucket_seconds=1) as host,
    ):
        database = Database(url)
        migrate.upgrade(database)
        with database.write() as session:
            models.register(session, models.NewVersion("churn", str(artifacts["logistic"]), "sklearn"), "t")
        endpoints.create_and_wait(
            database, SageMakerPlatform(host.client("sagemaker")), ENDPOINT, "churn:1", "t", poll=0.05
        )
        sm, sqs = host.client("sagemaker"), host.client("sqs")
        tap = sqs.create_queue(QueueName="tap")["QueueUrl"]  # the test's own copy of every event
        sm.create_model_package_group(ModelPackageGroupName="churn-models")
        spec = {
            "Containers": [{"Image": "local/sklearn:1.9", "ModelDataUrl": artifacts["logistic"].as_uri()}]
        }
        arns = [
            sm.create_model_package(ModelPackageGroupName="churn-models", InferenceSpecification=spec)[
                "ModelPackageArn"
            ]
            for _ in range(4)
        ]
        # The daemons' queue, made now: the first event it gets is version 1's approval.
        queue = sqs.create_queue(QueueName="approvals")["QueueUrl"]
        (tmp_path / "policies" / "approvals.yaml").write_text(POLICY.replace("QUEUE", queue))

        def approve(index: int) -> None:
            sm.update_model_package(ModelPackageArn=arns[index], ModelApprovalStatus="Approved")

        # daemon-a alone, so that it leads when version 1 is approved: it reads the event and dies
        # before acting on it (on a loaded machine a lease may change hands, so it is not left to chance)
        doomed = _daemon(host, url, tmp_path, "daemon-a", VARIANTCTL_CRASH_AT="packages.read")
        daemons = [doomed]
        try:
            wait_for("daemon-a leads", lambda: settled(url, 1), 60, tmp_path)
            with traffic(host):
                approve(0)
                died_at(doomed, "packages.read")
                daemons += [_daemon(host, url, tmp_path, name) for name in ("daemon-b", "daemon-c")]
                wait_for(
                    "a new leader", lambda: status(url)["leader"] not in (None, "daemon-a"), 60, tmp_path
                )
                early = _echo(sqs, tap, queue, 2)  # the creations' and version 1's events, twice more each

                def started() -> list[int]:
                    with database.read() as session:
                        return sorted(
                            c.package_version
                            for c in claims.claims(session, "approvals").values()
                            if c.state == "started"
                        )

                wait_for("version 1's rollout", lambda: started() == [1], 60, tmp_path)
                approve(1)
                _echo(sqs, tap, queue, 2)
                approve(2)
                approve(3)
                later = _echo(sqs, tap, queue, 2)
                # version 1's approval once more, after the later versions' events
                late = next(
                    e
                    for e in early
                    if e["detail"]["ModelPackageVersion"] == 1
                    and e["detail"]["ModelApprovalStatus"] == "Approved"
                )
                sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(late))
                assert {3, 4} <= {e["detail"]["ModelPackageVersion"] for e in later}
                wait_for(
                    "version 4 serves",
                    lambda: _serving(database) == {"churn:" + str(_ref(database, arns[3]))},
                    180,
                    tmp_path,
                )
                # the promotion's write-back (UpdateModelPackage) makes one more event: wait until it is
                # sent, so that the queue is drained of it too, not read just before it arrives
                wait_for("the write-backs sent", lambda: _unsent(database) == 0, 60, tmp_path)
                wait_for("the queue drained", lambda: _left(sqs, queue) == 0, 60, tmp_path)
        finally:
            codes = stop(daemons[1:])
        assert codes == [0, 0]
        with database.read() as session:
            taken = claims.claims(session, "approvals")
        versions = sorted(c.package_version for c in taken.values())
        assert versions == [1, 2, 3, 4], "every approved version was dealt with, once"
        rolled = [c for c in taken.values() if c.state == "started"]
        assert len({c.rollout_id for c in rolled}) == len(rolled)
        assert {1, 4} <= {c.package_version for c in rolled}
        for skipped in (c for c in taken.values() if c.state == "skipped"):
            assert "newer" in skipped.reason
        starts = audit.history(database, audit.HistoryFilter(action="rollout.start", limit=None))
        assert len(starts) == len(rolled), "one rollout per started version, no more"
        assert _left(sqs, queue) == 0, "every event read was acted on and deleted"
        assert audit.verify(database).ok
        database.dispose()


def _left(sqs: Any, queue: str) -> int:
    """Messages in the queue, visible or in flight (read by a daemon, not yet deleted)."""
    got = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    return int(got["ApproximateNumberOfMessages"]) + int(got["ApproximateNumberOfMessagesNotVisible"])


def _unsent(database: Database) -> int:
    """Rollouts not yet ended, and write-backs not yet sent."""
    with database.read() as session:
        running = session.query(Rollout).filter(Rollout.state.in_(ACTIVE_ROLLOUT_STATES)).count()
        return running + len(claims.pending_writebacks(session))


def _ref(database: Database, arn: str) -> int:
    with database.read() as session:
        found = claims.by_arn(session, arn)
        return found.version if found is not None else -1
